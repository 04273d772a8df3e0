// POST /v1/report on the HTTP door: a client's report of an adaptive rule's
// backend signal (docs/DESIGN.md, "Load-adaptive limits"; docs/ENVOY.md,
// "Adaptive limits"). The body:
//   {"domain": "api", "rule": "backend", "value": 83.5, "count": 120}
// `rule` is the limit's `name`; `value` the signal averaged over `count`
// requests (latency_ms: their mean latency in ms; error_rate: their errors /
// count, 0..1); `count` defaults to 1 and must be every request the value
// covers. Answers: 200 {"result":"accepted"}; 404 when no adaptive limit of
// that name is in force here; 400 for anything malformed or out of range.
#ifndef TALLY_DAEMON_RLS_V1_REPORT_H_
#define TALLY_DAEMON_RLS_V1_REPORT_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tally::rls {

struct V1Report {
  std::string domain;
  std::string rule;
  double value = 0;
  uint64_t count = 1;
};

// False with `*error` (for the client) when the body is not such an object.
// Range checks of value and count are the adaptive host's (they depend on
// the rule's signal).
bool ParseV1Report(std::string_view body, V1Report* report, std::string* error);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_V1_REPORT_H_

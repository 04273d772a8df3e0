// POST /v1/check on the HTTP door (docs/ENVOY.md, "HTTP"): the JSON of one
// check in either of two forms, and the answers in the fields of
// `tally check --json`. Pure: no I/O.
//
//   explicit: {"user_id","endpoint","limit","window_ms","hits"} (hits
//     optional, default 1; "request_id" optional): one check, decided as the
//     Cap'n Proto door decides it. Answer:
//     {"allowed","remaining","retry_after_ms","reset_after_ms","limit",
//      "status":"ok","request_id"}; retry_after_ms is -1 when the hits can
//     never fit (as the CLI prints kNeverFits).
//   rules: {"domain","descriptors":[{"entries":[{"key","value"}]}],
//     "hits_addend"} (the RateLimitRequest of POST /json): resolved through
//     the rules. Answer: {"allowed", "status":"ok", "descriptors":[one per
//     request descriptor, same order: {"allowed","remaining",
//     "retry_after_ms","reset_after_ms","limit","name","unit"}]}; a
//     descriptor no rule limits has "limit":null and "remaining":0, as the
//     gRPC door's answer. "allowed" is false when any descriptor is over.
//   An error (any form): {"allowed":false,"status":"<status name>","error":"..."}.
#ifndef TALLY_DAEMON_RLS_V1_CHECK_H_
#define TALLY_DAEMON_RLS_V1_CHECK_H_

#include <string>
#include <string_view>

#include "daemon/rls/rls_mapping.h"
#include "tally/types.h"

namespace tally::rls {

enum class V1Form { kExplicit, kRules };

struct V1Request {
  V1Form form = V1Form::kExplicit;
  CheckRequest check;  // kExplicit, validated with ValidateRequest
  RlsRequest rules;    // kRules, as ParseJsonRequest reads it
};

// False with `*error` (a 400) for anything but one of the two forms: bad
// JSON, wrong types, unknown fields, both forms at once, invalid checks.
bool ParseV1Request(std::string_view body, V1Request* request, std::string* error);

std::string FormatV1Result(const CheckResult& result);
std::string FormatV1Answer(const RlsAnswer& answer);
std::string FormatV1Error(Status status, std::string_view error);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_V1_CHECK_H_

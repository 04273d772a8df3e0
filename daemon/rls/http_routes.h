// The HTTP door's operations and check paths beside POST /json and
// GET /healthcheck (daemon/rls/rls_server.cc):
//
//   GET  /          the status page; GET /status.json: what it shows
//                   (daemon/rls/status_page.h)
//   GET  /metrics   Prometheus text format 0.0.4 (daemon/io/metrics_text.h)
//   GET  /healthz   200 "ok" while the process serves
//   GET  /readyz    200 "ready" when this node should get traffic; 503 with
//                   the reason otherwise (not owning keys, e.g. warming up
//                   after a join; no seed answered the join)
//   POST /v1/check  one check, explicit or through the rules
//                   (daemon/rls/v1_check.h); 200 with the decision in the
//                   body (allowed true or false), 400 for bad input, 503
//                   when no decision could be had
//   POST /v1/report an adaptive rule's backend signal (daemon/rls/v1_report.h)
//
// Routing only: what the answers say comes from the hooks.
// Thread safety: Route() may run on any thread; `respond` is called exactly
// once, maybe on another thread (the cluster's) and maybe before Route returns.
#ifndef TALLY_DAEMON_RLS_HTTP_ROUTES_H_
#define TALLY_DAEMON_RLS_HTTP_ROUTES_H_

#include <functional>
#include <string>
#include <string_view>

#include "daemon/core/adaptive_host.h"
#include "daemon/rls/rls_mapping.h"
#include "tally/types.h"

namespace tally::io {
class CheckGateway;
class DoorMetrics;
}  // namespace tally::io

namespace tally::rls {

struct HttpReply {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
};
using HttpRespond = std::function<void(HttpReply)>;

// Called with the outcome of a rules-form check: kOk and the answer, or an
// error status and why (the answer is then null).
using RulesDone = std::function<void(Status, const std::string&, const RlsAnswer*)>;

struct HttpRouteHooks {
  std::function<std::string()> metrics;           // the /metrics body
  std::function<std::string()> not_ready_reason;  // "" when ready
  std::function<std::string()> status_json;       // the /status.json body
  // Decides a rules-form request as POST /json does (counts included).
  std::function<void(RlsRequest, RulesDone)> decide_rules;
  // Takes a POST /v1/report (Daemon::ReportSignal); null: answered 503.
  std::function<core::AdaptiveHost::ReportResult(std::string_view domain, std::string_view rule,
                                                 double value, uint64_t count)>
      report_signal;
  io::CheckGateway* gateway = nullptr;      // the explicit form's decision path
  io::DoorMetrics* door_metrics = nullptr;  // null: not counted
};

// The paths the door serves, for 404 answers.
inline constexpr std::string_view kHttpPaths =
    "POST /json, POST /v1/check, POST /v1/report, GET /, GET /status.json, GET /metrics, "
    "GET /healthz, GET /readyz, GET /healthcheck";

// Handles `target` if it is one of the paths above (then true: `respond`
// is or will be called); false for any other target.
bool RouteHttp(const HttpRouteHooks& hooks, std::string_view method, std::string_view target,
               std::string_view body, const HttpRespond& respond);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_HTTP_ROUTES_H_

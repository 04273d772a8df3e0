#include "daemon/rls/http_routes.h"

#include <chrono>
#include <memory>
#include <span>
#include <utility>

#include "daemon/io/check_gateway.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/metrics_text.h"
#include "daemon/rls/rls_json.h"
#include "daemon/rls/status_page.h"
#include "daemon/rls/v1_check.h"
#include "daemon/rls/v1_report.h"

namespace tally::rls {
namespace {

unsigned HttpStatusOf(Status status) {
  switch (status) {
    case Status::kOk:
      return 200;
    case Status::kInvalidArgument:
    case Status::kMalformed:
    case Status::kUnsupportedVersion:
      return 400;
    case Status::kOverCapacity:
    case Status::kUnavailable:
      return 503;
    default:
      return 500;
  }
}

HttpReply MethodNotAllowed(std::string_view use) {
  return {405, FormatJsonError("use " + std::string(use)), "application/json"};
}

void CheckExplicit(const HttpRouteHooks& hooks, const CheckRequest& check,
                   const HttpRespond& respond) {
  const auto start = std::chrono::steady_clock::now();
  io::DoorMetrics* metrics = hooks.door_metrics;
  const CheckRequestRef ref(check);
  hooks.gateway->Decide(
      std::span<const CheckRequestRef>(&ref, 1),
      [respond, metrics, start](std::span<const CheckResult> results) {
        const CheckResult& r = results.front();
        if (metrics != nullptr) {
          metrics->ObserveLatency(
              io::Door::kHttp,
              static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now() - start)
                                        .count()));
          metrics->CountResults(io::Door::kHttp, results);
        }
        respond({HttpStatusOf(r.status), FormatV1Result(r), "application/json"});
      });
}

void Report(const HttpRouteHooks& hooks, std::string_view body, const HttpRespond& respond) {
  V1Report report;
  std::string error;
  if (!ParseV1Report(body, &report, &error)) {
    respond({400, FormatJsonError(error), "application/json"});
    return;
  }
  if (!hooks.report_signal) {
    respond({503, FormatJsonError("no adaptive limits here"), "application/json"});
    return;
  }
  switch (hooks.report_signal(report.domain, report.rule, report.value, report.count)) {
    case core::AdaptiveHost::ReportResult::kAccepted:
      respond({200, "{\"result\":\"accepted\"}", "application/json"});
      return;
    case core::AdaptiveHost::ReportResult::kUnknownRule:
      respond({404,
               FormatJsonError("no adaptive limit named '" + report.rule + "' in domain '" +
                               report.domain + "' in the rules in force"),
               "application/json"});
      return;
    case core::AdaptiveHost::ReportResult::kInvalid:
      respond({400,
               FormatJsonError("value or count out of range for the rule's signal (latency_ms: "
                               "0 to 86400000; error_rate: 0 to 1; count at least 1)"),
               "application/json"});
      return;
  }
}

}  // namespace

bool RouteHttp(const HttpRouteHooks& hooks, std::string_view method, std::string_view target,
               std::string_view body, const HttpRespond& respond) {
  const bool get = method == "GET" || method == "HEAD";
  if (target == "/healthz") {
    respond(get ? HttpReply{200, "ok\n", "text/plain; charset=utf-8"} : MethodNotAllowed("GET"));
    return true;
  }
  if (target == "/readyz") {
    if (!get) {
      respond(MethodNotAllowed("GET"));
      return true;
    }
    const std::string reason = hooks.not_ready_reason ? hooks.not_ready_reason() : "";
    respond(reason.empty()
                ? HttpReply{200, "ready\n", "text/plain; charset=utf-8"}
                : HttpReply{503, "not ready: " + reason + "\n", "text/plain; charset=utf-8"});
    return true;
  }
  if (target == "/") {
    respond(get ? HttpReply{200, std::string(StatusPageHtml()), "text/html; charset=utf-8"}
                : MethodNotAllowed("GET"));
    return true;
  }
  if (target == "/status.json") {
    if (!get) {
      respond(MethodNotAllowed("GET"));
      return true;
    }
    respond({200, hooks.status_json ? hooks.status_json() : std::string("{}"), "application/json"});
    return true;
  }
  if (target == "/metrics") {
    if (!get) {
      respond(MethodNotAllowed("GET"));
      return true;
    }
    respond({200, hooks.metrics ? hooks.metrics() : std::string(),
             std::string(io::kMetricsContentType)});
    return true;
  }
  if (target == "/v1/report") {
    if (method != "POST") {
      respond(MethodNotAllowed("POST"));
      return true;
    }
    Report(hooks, body, respond);
    return true;
  }
  if (target != "/v1/check") return false;
  if (method != "POST") {
    respond(MethodNotAllowed("POST"));
    return true;
  }
  auto request = std::make_shared<V1Request>();
  std::string error;
  if (!ParseV1Request(body, request.get(), &error)) {
    if (hooks.door_metrics != nullptr) {
      hooks.door_metrics->Count(io::Door::kHttp, io::Decision::kInvalid);
    }
    respond({400, FormatV1Error(Status::kInvalidArgument, error), "application/json"});
    return true;
  }
  if (request->form == V1Form::kExplicit) {
    if (hooks.gateway == nullptr) {
      respond({503, FormatV1Error(Status::kUnavailable, "no decision path"), "application/json"});
      return true;
    }
    CheckExplicit(hooks, request->check, respond);
    return true;
  }
  hooks.decide_rules(std::move(request->rules), [respond](Status status, const std::string& why,
                                                          const RlsAnswer* answer) {
    if (status != Status::kOk || answer == nullptr) {
      respond({HttpStatusOf(status), FormatV1Error(status, why), "application/json"});
      return;
    }
    respond({200, FormatV1Answer(*answer), "application/json"});
  });
  return true;
}

}  // namespace tally::rls

// RlsServer: tallyd's doors for Envoy (docs/ENVOY.md): the gRPC service
// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit and an HTTP/JSON
// door (POST /json, GET /healthcheck, and the paths of http_routes.h:
// /v1/check, /metrics, /healthz, /readyz, the status page / and /status.json)
// with Boost.Beast, both answering through
// the rules (rules/) and the daemon's one decision path (CheckGateway).
//
// Rules: loaded at Start from `rules_path` (a file or a directory); reloaded
// on SIGHUP and when the file or directory changes (inotify, debounced). A
// reload that fails keeps the rules in force, logs every error as
// file:line:column and counts a failed reload. Calls take the current rule
// set's shared_ptr once, so a call in flight finishes on the rules it
// started with, never a mix.
//
// Threads: gRPC runs its own (callback API); the HTTP door, signals and
// inotify run on one thread of this class's own io_context. The Cap'n Proto
// doors' descriptor checks come in on the daemon's I/O threads
// (DecideDescriptors). Decisions run on
// the daemon (its Limiter, or its ClusterDriver and I/O threads).
#ifndef TALLY_DAEMON_RLS_RLS_SERVER_H_
#define TALLY_DAEMON_RLS_RLS_SERVER_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "daemon/core/adaptive_host.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/message_processor.h"
#include "wire/codec.h"

namespace tally::io {
class CheckGateway;
class DoorMetrics;
class PublishedOverrides;
struct StatusTrackers;
}  // namespace tally::io

namespace tally::rls {

struct RlsServerOptions {
  std::string grpc_listen;   // HOST:PORT; "" disables; port 0 picks a free port
  std::string http_listen;   // HOST:PORT; "" disables; port 0 picks a free port
  std::string rules_path;    // "" = no rules (only limit overrides are enforced)
  bool shadow_mode = false;  // every limit in shadow mode
  bool watch_rules = true;   // reload on file changes (inotify), besides SIGHUP
  // Reload on SIGHUP through a signal handler of its own. Beside a Daemon
  // with handle_signals it never fires (the signal is blocked everywhere and
  // taken by the daemon's signal thread): tallyd turns it off and calls
  // Reload from there (Daemon::SetReloadHook).
  bool handle_sighup = true;
  // Which server speaks gRPC: kNghttp2, tallyd's own over nghttp2 and Asio
  // (grpc_h2_server.h: 5-10x less CPU per call than gRPC's), or kGrpc, gRPC's
  // C++ server (callback API), the door's first implementation.
  enum class GrpcServerKind { kNghttp2, kGrpc };
  GrpcServerKind grpc_server = GrpcServerKind::kNghttp2;
  size_t grpc_threads = 1;  // kNghttp2's threads
  // Add RateLimit-Limit, -Remaining and -Reset (rls_mapping.h,
  // RateLimitHeaders) to gRPC response_headers_to_add and to /json answers.
  bool rate_limit_headers = false;
  // Called at Start with the rules' digest and after every reload attempt
  // with the digest in force and why the reload failed ("" if it did not),
  // on the thread that (re)loaded, under the rule set's lock: it must be
  // quick and must not call back into this class. Optional.
  std::function<void(const std::string& digest, const std::string& error)> on_rules;
  // Called with every rule set that takes force (at start and after each
  // reload that changed it), under the rules lock: tallyd hands its adaptive
  // limits to the daemon (Daemon::SetAdaptiveRules). Keep it short.
  std::function<void(const rules::RuleSet&)> on_rule_set;
  // POST /v1/report's path (Daemon::ReportSignal); null answers 503.
  std::function<core::AdaptiveHost::ReportResult(std::string_view domain, std::string_view rule,
                                                 double value, uint64_t count)>
      report_signal;
  size_t max_request_bytes = 64 * 1024;            // gRPC message / HTTP body
  std::chrono::milliseconds http_timeout{10'000};  // per HTTP request (read + answer)
  size_t max_http_connections = 1024;
  // For GET /metrics and /readyz (daemon/rls/http_routes.h): the daemon's
  // status (null: those answer without it), its door counters (null: the
  // gRPC and HTTP doors do not count by door) and --max-keys.
  std::function<wire::StatusReport()> status;
  io::DoorMetrics* door_metrics = nullptr;
  uint64_t key_capacity = 0;
  // Counts HTTP accepts that failed for want of a file descriptor (the door
  // then backs off, daemon/io/accept_backoff.h). Null: not counted.
  std::atomic<uint64_t>* accept_fd_exhausted = nullptr;
  // For the status page (GET /, GET /status.json): the daemon's rate
  // history, busiest keys and membership events. Null: those stay empty.
  const io::StatusTrackers* trackers = nullptr;
  // The descriptor-form runtime limit overrides in force on this member
  // (Daemon::published_overrides; cluster mode), applied to every
  // descriptor check (rls_mapping.h). Null: none. Borrowed.
  const io::PublishedOverrides* overrides = nullptr;
};

struct RlsStats {
  uint64_t grpc_requests = 0, http_requests = 0;
  uint64_t capnp_requests = 0;  // descriptor checks from the Cap'n Proto doors
  uint64_t over_limit = 0;      // responses OVER_LIMIT
  uint64_t shadow_denials = 0;  // limits that denied in shadow mode (answered OK)
  uint64_t invalid = 0;         // rejected requests (INVALID_ARGUMENT / HTTP 4xx)
  uint64_t failed = 0;          // no decision (daemon over capacity, unavailable)
  uint64_t reloads = 0, reload_failures = 0;
  // The gRPC server rebuilt after its listener stopped accepting
  // (daemon/rls/grpc_listener_probe.h).
  uint64_t grpc_listener_restarts = 0;
  // Descriptors a runtime limit override limited (rls_mapping.h).
  uint64_t runtime_overrides = 0;
};

class RlsServer {
 public:
  // `gateway` is borrowed and must outlive this object.
  RlsServer(RlsServerOptions options, io::CheckGateway* gateway);
  ~RlsServer();  // Stop()s
  RlsServer(const RlsServer&) = delete;
  RlsServer& operator=(const RlsServer&) = delete;

  // Loads the rules (an invalid file fails the start) and binds the enabled
  // doors. False with `*error` on failure. Call once.
  bool Start(std::string* error);
  // Stops accepting, finishes or cancels calls in flight, joins the thread.
  // Idempotent.
  void Stop();

  // A descriptor check from a Cap'n Proto door (check.capnp protocol 4,
  // daemon/io/message_processor.h), decided as ShouldRateLimit is: the same
  // rules, validation, shadow mode, per-rule and per-door counters (under
  // `door`). `done` is called exactly once, maybe on another thread (the
  // cluster's), maybe before this returns: with the answer (errors in its
  // status: invalidArgument for a bad request, over capacity or unavailable
  // when no decision could be had), or, when the answer could exceed
  // `max_reply_bytes`, with padding_required_bytes > 0 and nothing decided.
  // Any thread, after Start.
  void DecideDescriptors(const wire::DescriptorQuery& query, io::Door door, size_t max_reply_bytes,
                         io::DescriptorDoor::Done done);

  // After Start: "127.0.0.1:PORT" of each door, "" when disabled.
  std::string grpc_address() const;
  std::string http_address() const;

  // Reloads the rules now (what SIGHUP does). True if the new rules are in
  // force. Any thread.
  bool Reload();
  // The digest of the rules in force (32 hex digits). Any thread.
  std::string rules_digest() const;
  RlsStats stats() const;
  // The /metrics text and the /readyz reason ("" when ready). Any thread.
  std::string MetricsText() const;
  std::string NotReadyReason() const;
  // The /status.json body (daemon/rls/status_page.h). Any thread.
  std::string StatusJson() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_RLS_SERVER_H_

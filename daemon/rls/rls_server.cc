#include "daemon/rls/rls_server.h"

#include <absl/synchronization/mutex.h>
#include <google/protobuf/arena.h>
#include <grpcpp/grpcpp.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>

#include "daemon/io/accept_backoff.h"
#include "daemon/io/check_gateway.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/metrics_text.h"
#include "daemon/io/process_stats.h"
#include "daemon/io/published_overrides.h"
#include "daemon/io/sockets.h"
#include "daemon/io/status_trackers.h"
#include "daemon/io/tcp_listen.h"
#include "daemon/rls/descriptor_wire.h"
#include "daemon/rls/grpc_h2_server.h"
#include "daemon/rls/grpc_listener_probe.h"
#include "daemon/rls/http_routes.h"
#include "daemon/rls/rls_json.h"
#include "daemon/rls/rls_mapping.h"
#include "daemon/rls/rule_counters.h"
#include "daemon/rls/status_page.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "rules/load_files.h"

namespace tally::rls {
namespace {

// A steady-clock reading in ms (the per-rule peak periods).
int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
namespace rlsv3 = envoy::service::ratelimit::v3;

bool Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

// One call through either door: the request, the rules it resolves against
// (held for the whole call) and the plan that points into both.
struct Call {
  io::Door door = io::Door::kGrpc;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  RlsRequest request;
  std::shared_ptr<const rules::RuleSet> rules;
  std::shared_ptr<const RuleCounters::Table> rule_table;  // `rules`' per-rule counters
  RlsPlan plan;
  RlsAnswer answer;
};

// Called once with the outcome: kOk (answer filled in) or an error status.
using Finish = std::function<void(Status, const std::string&)>;

grpc::StatusCode GrpcCode(Status status) {
  switch (status) {
    case Status::kInvalidArgument:
      return grpc::StatusCode::INVALID_ARGUMENT;
    case Status::kOverCapacity:
      return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Status::kUnavailable:
      return grpc::StatusCode::UNAVAILABLE;
    default:
      return grpc::StatusCode::INTERNAL;
  }
}

GrpcStatusCode H2Code(Status status) {
  switch (status) {
    case Status::kInvalidArgument:
      return GrpcStatusCode::kInvalidArgument;
    case Status::kOverCapacity:
      return GrpcStatusCode::kResourceExhausted;
    case Status::kUnavailable:
      return GrpcStatusCode::kUnavailable;
    default:
      return GrpcStatusCode::kInternal;
  }
}

constexpr std::string_view kShouldRateLimitPath =
    "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

http::status HttpCode(Status status) {
  switch (status) {
    case Status::kInvalidArgument:
      return http::status::bad_request;
    case Status::kOverCapacity:
    case Status::kUnavailable:
      return http::status::service_unavailable;
    default:
      return http::status::internal_server_error;
  }
}

// proto -> RlsRequest. False with `*error` beyond the bounds (checked before
// copying, so a large request costs little).
bool FromProto(const rlsv3::RateLimitRequest& in, RlsRequest* out, std::string* error) {
  if (in.descriptors_size() > static_cast<int>(kMaxDescriptors)) {
    return Fail(error, "more than 64 descriptors");
  }
  out->domain = in.domain();
  out->hits_addend = in.hits_addend();
  out->descriptors.resize(static_cast<size_t>(in.descriptors_size()));
  for (int i = 0; i < in.descriptors_size(); ++i) {
    const auto& d = in.descriptors(i);
    if (d.entries_size() > static_cast<int>(kMaxEntriesPerDescriptor)) {
      return Fail(error, "a descriptor has more than 16 entries");
    }
    RlsDescriptor& descriptor = out->descriptors[static_cast<size_t>(i)];
    descriptor.entries.reserve(static_cast<size_t>(d.entries_size()));
    for (const auto& e : d.entries()) descriptor.entries.push_back({e.key(), e.value()});
    if (d.has_limit()) {
      descriptor.limit = rules::LimitOverride{d.limit().requests_per_unit(),
                                              static_cast<rules::Unit>(d.limit().unit())};
    }
  }
  return true;
}

void ToProto(const RlsAnswer& in, bool rate_limit_headers, rlsv3::RateLimitResponse* out) {
  out->set_overall_code(static_cast<rlsv3::RateLimitResponse::Code>(in.overall_code));
  for (const RlsStatus& s : in.statuses) {
    auto* status = out->add_statuses();
    status->set_code(static_cast<rlsv3::RateLimitResponse::Code>(s.code));
    if (s.current_limit) {
      auto* limit = status->mutable_current_limit();
      limit->set_requests_per_unit(s.current_limit->requests_per_unit);
      limit->set_unit(
          static_cast<rlsv3::RateLimitResponse::RateLimit::Unit>(s.current_limit->unit));
      limit->set_name(s.current_limit->name);
    }
    status->set_limit_remaining(s.limit_remaining);
    if (s.duration_until_reset_ms != 0) {
      auto* d = status->mutable_duration_until_reset();
      d->set_seconds(static_cast<int64_t>(s.duration_until_reset_ms / 1000));
      d->set_nanos(static_cast<int32_t>(s.duration_until_reset_ms % 1000) * 1'000'000);
    }
  }
  if (rate_limit_headers) {
    for (RateLimitHeader& h : RateLimitHeaders(in)) {
      auto* header = out->add_response_headers_to_add();
      header->set_key(std::move(h.name));
      header->set_value(std::move(h.value));
    }
  }
}

}  // namespace

struct RlsServer::Impl {
  Impl(RlsServerOptions o, io::CheckGateway* g)
      : options(std::move(o)),
        gateway(g),
        accept_backoff("http", options.accept_fd_exhausted),
        accept_retry_timer(io),
        grpc_probe_timer(io),
        signals(io),
        reload_timer(io),
        inotify(io) {}

  std::shared_ptr<const rules::RuleSet> CurrentRules() const {
    std::lock_guard<std::mutex> lock(rules_mu);
    return rules;
  }
  // The rules in force and their counter table, taken together.
  void TakeRules(Call* call) const {
    std::lock_guard<std::mutex> lock(rules_mu);
    call->rules = rules;
    call->rule_table = rule_table;
  }
  bool LoadRules(bool at_start, std::string* error);
  // Decide = Plan (take the rules, validate, resolve; an invalid request is
  // counted and finished) then Execute (decide the checks, fold the answer).
  void Decide(const std::shared_ptr<Call>& call, Finish finish);
  bool Plan(const std::shared_ptr<Call>& call, const Finish& finish);
  void Execute(const std::shared_ptr<Call>& call, Finish finish);
  // Builds and starts the gRPC server on `listen` (HOST:PORT; port 0 picks one).
  bool StartGrpc(const std::string& listen, std::string* error);
  // The nghttp2 door (GrpcServerKind::kNghttp2).
  bool StartGrpcH2(std::string* error);
  void OnGrpcH2Call(std::string message, GrpcH2Server::Responder respond);
  // Every GrpcListenerProbe::kInterval on `thread`: probe the gRPC listener,
  // rebuild the server after kSilencesBeforeRestart silent probes.
  void ArmGrpcProbe();
  void OnGrpcProbe(ProbeResult result);
  void RestartGrpc();
  bool StartHttp(std::string* error);
  void Accept();
  void WaitForSighup();
  bool StartWatch(std::string* error);
  void ReadWatch();
  // Door and per-rule counters of one decided call (answer filled in).
  void CountDecided(const Call& call, std::span<const CheckResult> results);

  RlsServerOptions options;
  io::CheckGateway* gateway;

  mutable std::mutex rules_mu;
  std::shared_ptr<const rules::RuleSet> rules = rules::RuleSet::Empty();
  std::shared_ptr<const RuleCounters::Table> rule_table =  // guarded by rules_mu
      std::make_shared<RuleCounters::Table>();

  std::atomic<uint64_t> grpc_requests{0}, http_requests{0}, capnp_requests{0}, over_limit{0},
      shadow_denials{0}, invalid{0}, failed{0}, reloads{0}, reload_failures{0},
      runtime_overrides{0};
  std::atomic<size_t> http_connections{0};
  std::atomic<bool> last_reload_ok{true};

  // Per rule limit, by (rule stats key, limit name): bounded by the rules
  // files. Counted without a lock through the table held with the rules.
  RuleCounters rule_counters;
  HttpRouteHooks http_hooks;

  // Both doors decide through Decide(); the HTTP sessions point at this one.
  std::function<void(const std::shared_ptr<Call>&, Finish)> http_decide;
  // The gRPC server and its service: replaced by RestartGrpc (on `thread`)
  // and shut down by Stop (the caller's thread), both under grpc_mu.
  std::mutex grpc_mu;
  std::unique_ptr<grpc::Service> service;
  std::unique_ptr<grpc::Server> grpc_server;
  std::unique_ptr<GrpcH2Server> h2_server;
  bool grpc_stopping = false;                      // guarded by grpc_mu
  std::optional<tcp::endpoint> grpc_probe_target;  // set at start; `thread` only after
  int grpc_silences = 0;                           // `thread` only
  std::atomic<uint64_t> grpc_listener_restarts{0};
  std::string grpc_address, http_address;

  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  std::thread thread;
  std::optional<tcp::acceptor> acceptor;
  io::AcceptBackoff accept_backoff;  // used on `thread` only
  asio::steady_timer accept_retry_timer;
  asio::steady_timer grpc_probe_timer;  // `thread` only
  asio::signal_set signals;
  asio::steady_timer reload_timer;
  asio::posix::stream_descriptor inotify;
  std::array<char, 4096> inotify_buffer{};
  std::string watched_file;  // the rules file's name; empty when the rules path is a directory
  bool started = false, stopped = false;
};

bool RlsServer::Impl::LoadRules(bool at_start, std::string* error) {
  if (options.rules_path.empty()) return true;
  rules::BuildResult result = rules::LoadRules(options.rules_path);
  if (!result.ok()) {
    std::string all;
    for (const rules::RuleError& e : result.errors) {
      spdlog::error("rules: {}", e.ToString());
      if (all.empty()) all = e.ToString();
    }
    if (!at_start) {
      last_reload_ok.store(false, std::memory_order_relaxed);
      reload_failures.fetch_add(1, std::memory_order_relaxed);
      std::string in_force;
      {
        // Reported under the lock, so that concurrent reloads report in the
        // order their rules took force.
        std::lock_guard<std::mutex> lock(rules_mu);
        in_force = rules->DigestHex();
        if (options.on_rules) options.on_rules(in_force, all.empty() ? "invalid rules" : all);
      }
      spdlog::error("rules: reload of {} rejected ({} errors); the previous rules ({}) stay",
                    options.rules_path, result.errors.size(), in_force);
    }
    return Fail(error, all.empty() ? "invalid rules" : all);
  }
  const std::string digest = result.rules->DigestHex();
  std::shared_ptr<const RuleCounters::Table> table = rule_counters.TableFor(*result.rules);
  {
    std::lock_guard<std::mutex> lock(rules_mu);
    if (!at_start && rules->digest() == result.rules->digest()) {
      spdlog::debug("rules: {} unchanged ({})", options.rules_path, digest);
      if (options.on_rules) options.on_rules(digest, "");  // an earlier failure is over
      return true;
    }
    rules = result.rules;
    rule_table = std::move(table);
    if (!at_start && options.on_rules) options.on_rules(digest, "");
    if (options.on_rule_set) options.on_rule_set(*rules);
  }
  last_reload_ok.store(true, std::memory_order_relaxed);
  if (!at_start) reloads.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("rules: {} {}: {} domains, {} descriptors, digest {}",
               at_start ? "loaded" : "reloaded", options.rules_path, result.rules->domain_count(),
               result.rules->descriptor_count(), digest);
  return true;
}

void RlsServer::Impl::Decide(const std::shared_ptr<Call>& call, Finish finish) {
  if (Plan(call, finish)) Execute(call, std::move(finish));
}

bool RlsServer::Impl::Plan(const std::shared_ptr<Call>& call, const Finish& finish) {
  TakeRules(call.get());
  std::string error;
  // Held for Build only: the plan copies what it takes from the table.
  const std::shared_ptr<const crdt::DescriptorOverrideTable> overrides =
      options.overrides != nullptr ? options.overrides->Load() : nullptr;
  const bool built =
      call->plan.Build(*call->rules, call->request, options.shadow_mode, &error, overrides.get());
  if (call->plan.runtime_overrides() > 0) {
    runtime_overrides.fetch_add(call->plan.runtime_overrides(), std::memory_order_relaxed);
  }
  if (!built) {
    invalid.fetch_add(1, std::memory_order_relaxed);
    if (options.door_metrics != nullptr) {
      options.door_metrics->Count(call->door, io::Decision::kInvalid);
    }
    finish(Status::kInvalidArgument, error);
    return false;
  }
  return true;
}

void RlsServer::Impl::Execute(const std::shared_ptr<Call>& call, Finish finish) {
  auto answer = [this, call, finish = std::move(finish)](std::span<const CheckResult> results) {
    std::string why;
    const Status status = call->plan.Answer(results, &call->answer, &why);
    CountDecided(*call, results);
    if (status != Status::kOk) {
      (status == Status::kInvalidArgument ? invalid : failed)
          .fetch_add(1, std::memory_order_relaxed);
    } else {
      if (call->answer.overall_code == Code::kOverLimit) {
        over_limit.fetch_add(1, std::memory_order_relaxed);
      }
      shadow_denials.fetch_add(call->answer.shadow_denials, std::memory_order_relaxed);
    }
    finish(status, why);
  };
  if (call->plan.checks().empty()) {
    answer({});
    return;
  }
  gateway->Decide(call->plan.checks(), std::move(answer));
}

void RlsServer::Impl::CountDecided(const Call& call, std::span<const CheckResult> results) {
  const std::span<const rules::ResolvedLimit> limits = call.plan.resolution().limits();
  if (io::DoorMetrics* m = options.door_metrics; m != nullptr) {
    m->ObserveLatency(call.door,
                      static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                std::chrono::steady_clock::now() - call.start)
                                                .count()));
    for (size_t i = 0; i < results.size() && i < limits.size(); ++i) {
      const CheckResult& r = results[i];
      io::Decision d = io::DecisionOf(r);
      if (d == io::Decision::kDenied && (call.plan.global_shadow() || limits[i].shadow_mode)) {
        d = io::Decision::kShadow;
      }
      m->Count(call.door, d);
    }
  }
  // Per rule limit, as envoyproxy/ratelimit's stats: in hits.
  if (limits.empty() || results.size() != limits.size()) return;
  const uint64_t hits = call.request.hits_addend == 0 ? 1 : call.request.hits_addend;
  const RuleCounters::Table& table = *call.rule_table;
  const int64_t period = RuleCounters::PeriodAt(SteadyMs());
  for (const rules::ResolvedDescriptor& d : call.plan.resolution().descriptors()) {
    if (d.outcome != rules::Outcome::kLimited) continue;
    for (uint32_t i = d.first_limit; i < d.first_limit + d.limit_count; ++i) {
      const rules::ResolvedLimit& l = limits[i];
      // A request's own limit (an override) is no rule's: rule_limit is out of range.
      if (l.rule_limit >= table.size()) continue;
      const CheckResult& r = results[i];
      if (r.status != Status::kOk) continue;
      RuleCounters::Count(*table[l.rule_limit], hits, r.allowed,
                          call.plan.global_shadow() || l.shadow_mode, r.limit, r.remaining,
                          l.window_ms, period);
    }
  }
}

// ---- gRPC ----

namespace {

// A request or answer of a few descriptors fits in this, so the protobuf
// messages of a call live on the stack (a larger one spills to the heap).
constexpr size_t kArenaBlockBytes = 2048;

google::protobuf::ArenaOptions ArenaOn(char* first_block) {
  google::protobuf::ArenaOptions options;
  options.initial_block = first_block;
  options.initial_block_size = kArenaBlockBytes;
  return options;
}

// A RateLimitRequest from `parse(RateLimitRequest*) -> bool` (the door's
// bytes), into `*out` within the bounds; the error, empty when it is valid.
// The parsed request lives in an arena whose first block is on the stack:
// its descriptors and strings cost no malloc each.
template <typename Parse>
std::string ParseRateLimitRequest(Parse parse, RlsRequest* out) {
  alignas(8) char first_block[kArenaBlockBytes];
  google::protobuf::Arena arena(ArenaOn(first_block));
  auto* request = google::protobuf::Arena::CreateMessage<rlsv3::RateLimitRequest>(&arena);
  if (!parse(request)) return "cannot parse the RateLimitRequest";
  std::string error;
  FromProto(*request, out, &error);
  return error;
}

// `serialize(const RateLimitResponse&)` of `answer`'s response, built in a
// stack arena.
template <typename Serialize>
auto SerializeRateLimitResponse(const RlsAnswer& answer, bool rate_limit_headers,
                                Serialize serialize) {
  alignas(8) char first_block[kArenaBlockBytes];
  google::protobuf::Arena arena(ArenaOn(first_block));
  auto* response = google::protobuf::Arena::CreateMessage<rlsv3::RateLimitResponse>(&arena);
  ToProto(answer, rate_limit_headers, response);
  return serialize(*response);
}

// A gRPC call refused before any decision (its bytes or bounds).
void CountInvalidGrpcCall(std::atomic<uint64_t>* invalid, io::DoorMetrics* door_metrics) {
  invalid->fetch_add(1, std::memory_order_relaxed);
  if (door_metrics != nullptr) door_metrics->Count(io::Door::kGrpc, io::Decision::kInvalid);
}

// The raw (ByteBuffer) form of the method, so that a request whose bytes do
// not parse reaches us to be counted as invalid on the gRPC door (the typed
// form would refuse it inside gRPC, uncounted) and is answered
// INVALID_ARGUMENT.
class GrpcService final : public rlsv3::RateLimitService::WithRawCallbackMethod_ShouldRateLimit<
                              rlsv3::RateLimitService::Service> {
 public:
  using DecideFn = std::function<void(const std::shared_ptr<Call>&, Finish)>;
  GrpcService(DecideFn decide, bool rate_limit_headers, std::atomic<uint64_t>* requests,
              std::atomic<uint64_t>* invalid, io::DoorMetrics* door_metrics)
      : decide_(std::move(decide)),
        rate_limit_headers_(rate_limit_headers),
        requests_(requests),
        invalid_(invalid),
        door_metrics_(door_metrics) {}

  grpc::ServerUnaryReactor* ShouldRateLimit(grpc::CallbackServerContext* context,
                                            const grpc::ByteBuffer* request_bytes,
                                            grpc::ByteBuffer* response_bytes) override {
    requests_->fetch_add(1, std::memory_order_relaxed);
    grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
    auto call = std::make_shared<Call>();
    const std::string error = ParseRateLimitRequest(
        [request_bytes](rlsv3::RateLimitRequest* request) {
          grpc::ByteBuffer bytes(*request_bytes);  // Deserialize consumes it; slices are shared
          return grpc::SerializationTraits<rlsv3::RateLimitRequest>::Deserialize(&bytes, request)
              .ok();
        },
        &call->request);
    if (!error.empty()) {
      CountInvalidGrpcCall(invalid_, door_metrics_);
      reactor->Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, error));
      return reactor;
    }
    decide_(call, [headers = rate_limit_headers_, call, reactor, response_bytes](
                      Status status, const std::string& why) {
      if (status != Status::kOk) {
        reactor->Finish(grpc::Status(GrpcCode(status), why));
        return;
      }
      reactor->Finish(SerializeRateLimitResponse(
          call->answer, headers, [response_bytes](const rlsv3::RateLimitResponse& response) {
            bool own_buffer = false;
            return grpc::SerializationTraits<rlsv3::RateLimitResponse>::Serialize(
                response, response_bytes, &own_buffer);
          }));
    });
    return reactor;
  }

 private:
  DecideFn decide_;
  const bool rate_limit_headers_;
  std::atomic<uint64_t>* requests_;
  std::atomic<uint64_t>* invalid_;
  io::DoorMetrics* door_metrics_;
};

std::string HostOf(const std::string& host_port) {
  const size_t colon = host_port.rfind(':');
  return colon == std::string::npos ? host_port : host_port.substr(0, colon);
}

}  // namespace

bool RlsServer::Impl::StartGrpcH2(std::string* error) {
  GrpcH2ServerOptions o;
  o.listen = options.grpc_listen;
  o.threads = options.grpc_threads;
  o.max_connections = options.max_http_connections;
  o.limits.max_message_bytes = options.max_request_bytes;
  // Not options.accept_fd_exhausted: that is the HTTP door's count
  // (door="http"); the gRPC door's shortages are logged (AcceptBackoff).
  h2_server = std::make_unique<GrpcH2Server>(
      std::move(o), [](std::string_view path) { return path == kShouldRateLimitPath; },
      [this](std::string_view, std::string message, GrpcH2Server::Responder respond) {
        OnGrpcH2Call(std::move(message), std::move(respond));
      });
  if (!h2_server->Start(error)) {
    h2_server.reset();
    return false;
  }
  grpc_address = h2_server->address();
  return true;
}

// As GrpcService::ShouldRateLimit, with the message's bytes from nghttp2.
void RlsServer::Impl::OnGrpcH2Call(std::string message, GrpcH2Server::Responder respond) {
  grpc_requests.fetch_add(1, std::memory_order_relaxed);
  auto call = std::make_shared<Call>();
  const std::string error = ParseRateLimitRequest(
      [&message](rlsv3::RateLimitRequest* request) { return request->ParseFromString(message); },
      &call->request);
  if (!error.empty()) {
    CountInvalidGrpcCall(&invalid, options.door_metrics);
    respond(GrpcStatusCode::kInvalidArgument, error, {});
    return;
  }
  Decide(call, [headers = options.rate_limit_headers, call, respond = std::move(respond)](
                   Status status, const std::string& why) {
    if (status != Status::kOk) {
      respond(H2Code(status), why, {});
      return;
    }
    std::string bytes;
    if (!SerializeRateLimitResponse(call->answer, headers,
                                    [&bytes](const rlsv3::RateLimitResponse& response) {
                                      return response.SerializeToString(&bytes);
                                    })) {
      respond(GrpcStatusCode::kInternal, "cannot serialize the RateLimitResponse", {});
      return;
    }
    respond(GrpcStatusCode::kOk, {}, std::move(bytes));
  });
}

bool RlsServer::Impl::StartGrpc(const std::string& listen, std::string* error) {
  std::string why;
  if (!io::ParseHostPort(listen, &why)) return Fail(error, "grpc: " + why);
  service = std::make_unique<GrpcService>(
      [this](const std::shared_ptr<Call>& call, Finish finish) { Decide(call, std::move(finish)); },
      options.rate_limit_headers, &grpc_requests, &invalid, options.door_metrics);
  // Debian's abseil is built without NDEBUG, so every absl::Mutex lock in
  // gRPC also updates a lock-order graph (deadlock detection, a debugging
  // aid): a few percent of each call's CPU. tallyd runs gRPC's code, not
  // its development checks.
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(service.get());
  builder.SetMaxReceiveMessageSize(static_cast<int>(options.max_request_bytes));
  grpc_server = builder.BuildAndStart();
  if (grpc_server == nullptr || port == 0) {
    grpc_server.reset();
    return Fail(error, "grpc: cannot listen on " + listen);
  }
  grpc_address = HostOf(listen) + ":" + std::to_string(port);
  // Where the probe connects: the bound address, or loopback for a wildcard.
  boost::system::error_code ec;
  std::string host = HostOf(listen);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  asio::ip::address address = asio::ip::make_address(host, ec);
  if (!ec) {
    if (address.is_unspecified()) {
      address = address.is_v6() ? asio::ip::address(asio::ip::address_v6::loopback())
                                : asio::ip::address(asio::ip::address_v4::loopback());
    }
    grpc_probe_target = tcp::endpoint(address, static_cast<uint16_t>(port));
  }
  return true;
}

void RlsServer::Impl::ArmGrpcProbe() {
  if (!grpc_probe_target) return;  // a host name: nothing to probe by address
  grpc_probe_timer.expires_after(GrpcListenerProbe::kInterval);
  grpc_probe_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // stopping
    bool have_server;
    {
      std::lock_guard<std::mutex> lock(grpc_mu);
      if (grpc_stopping) return;
      have_server = grpc_server != nullptr;
    }
    if (!have_server) {
      RestartGrpc();  // the last rebuild failed (still short of descriptors?)
      ArmGrpcProbe();
      return;
    }
    GrpcListenerProbe::Probe(io, *grpc_probe_target, GrpcListenerProbe::kTimeout,
                             [this](ProbeResult result) { OnGrpcProbe(result); });
  });
}

void RlsServer::Impl::OnGrpcProbe(ProbeResult result) {
  switch (result) {
    case ProbeResult::kAnswered:
      grpc_silences = 0;
      break;
    case ProbeResult::kCannotProbe:
      break;  // our own shortage or a refused connect: says nothing
    case ProbeResult::kSilent:
      if (++grpc_silences >= GrpcListenerProbe::kSilencesBeforeRestart) {
        grpc_silences = 0;
        spdlog::warn(
            "grpc: the listener at {} stopped accepting new connections (gRPC before 1.57 "
            "stops for good after running out of file descriptors, grpc issue 20418); "
            "rebuilding the gRPC server on the same port",
            grpc_address);
        RestartGrpc();
      }
      break;
  }
  ArmGrpcProbe();
}

void RlsServer::Impl::RestartGrpc() {
  std::lock_guard<std::mutex> lock(grpc_mu);
  if (grpc_stopping) return;
  if (grpc_server) {
    // Calls in flight on the old server get a second, as at Stop.
    grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    grpc_server.reset();
    service.reset();
  }
  std::string error;
  if (!StartGrpc(grpc_address, &error)) {
    spdlog::warn("grpc: rebuilding the server failed ({}); trying again in {} ms", error,
                 GrpcListenerProbe::kInterval.count());
    return;
  }
  grpc_listener_restarts.fetch_add(1, std::memory_order_relaxed);
  spdlog::info("grpc: serving again at {}", grpc_address);
}

// ---- HTTP ----

namespace {

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  using DecideFn = std::function<void(const std::shared_ptr<Call>&, Finish)>;
  HttpSession(tcp::socket socket, const RlsServerOptions& options, DecideFn* decide,
              const HttpRouteHooks* routes, std::atomic<uint64_t>* requests,
              std::atomic<uint64_t>* invalid, std::atomic<size_t>* connections)
      : stream_(std::move(socket)),
        options_(options),
        decide_(decide),
        routes_(routes),
        requests_(requests),
        invalid_(invalid),
        connections_(connections) {}
  ~HttpSession() { connections_->fetch_sub(1, std::memory_order_relaxed); }

  void Read() {
    parser_.emplace();
    parser_->body_limit(options_.max_request_bytes);
    parser_->header_limit(8 * 1024);
    stream_.expires_after(options_.http_timeout);
    http::async_read(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout ||
        ec == asio::error::operation_aborted || ec == asio::error::connection_reset) {
      Close();
      return;
    }
    // A request that does not parse as HTTP (or breaks its bounds) is an
    // invalid request on this door, as a body that does not parse is.
    if (ec) CountInvalid();
    if (ec == http::error::body_limit) {
      Reply(http::status::payload_too_large, FormatJsonError("request body too large"), false);
      return;
    }
    if (ec == http::error::header_limit) {
      Reply(http::status::request_header_fields_too_large, FormatJsonError("headers too large"),
            false);
      return;
    }
    if (ec) {
      Reply(http::status::bad_request, FormatJsonError("bad HTTP request: " + ec.message()), false);
      return;
    }
    requests_->fetch_add(1, std::memory_order_relaxed);
    request_ = parser_->release();
    const bool keep_alive = request_.keep_alive();
    const std::string_view target(request_.target().data(), request_.target().size());
    if (target == "/healthcheck") {
      if (request_.method() != http::verb::get && request_.method() != http::verb::head) {
        Reply(http::status::method_not_allowed, FormatJsonError("use GET"), keep_alive);
        return;
      }
      Reply(http::status::ok, "OK", keep_alive, "text/plain");
      return;
    }
    if (RouteHttp(*routes_, std::string_view(request_.method_string()), target, request_.body(),
                  [self = shared_from_this(), keep_alive](HttpReply reply) {
                    // May run on a cluster I/O thread: hop back to this stream's.
                    asio::post(self->stream_.get_executor(), [self, keep_alive,
                                                              reply = std::move(reply)]() mutable {
                      self->Reply(static_cast<http::status>(reply.status), std::move(reply.body),
                                  keep_alive, std::move(reply.content_type));
                    });
                  })) {
      return;
    }
    if (target != "/json") {
      Reply(http::status::not_found,
            FormatJsonError("not found; paths: " + std::string(kHttpPaths)), keep_alive);
      return;
    }
    if (request_.method() != http::verb::post) {
      Reply(http::status::method_not_allowed, FormatJsonError("use POST"), keep_alive);
      return;
    }
    auto call = std::make_shared<Call>();
    call->door = io::Door::kHttp;
    std::string error;
    if (!ParseJsonRequest(request_.body(), &call->request, &error)) {
      CountInvalid();
      Reply(http::status::bad_request, FormatJsonError(error), keep_alive);
      return;
    }
    // The decision may finish on another thread: hop back to this stream's.
    (*decide_)(
        call, [self = shared_from_this(), call, keep_alive](Status status, const std::string& why) {
          std::string body =
              status == Status::kOk ? FormatJsonAnswer(call->answer) : FormatJsonError(why);
          http::status code = HttpCode(status);
          std::vector<RateLimitHeader> headers;
          // As envoyproxy/ratelimit's /json: 429 when over the limit.
          if (status == Status::kOk) {
            code = call->answer.overall_code == Code::kOverLimit ? http::status::too_many_requests
                                                                 : http::status::ok;
            if (self->options_.rate_limit_headers) headers = RateLimitHeaders(call->answer);
          }
          asio::post(self->stream_.get_executor(), [self, code, body = std::move(body), keep_alive,
                                                    headers = std::move(headers)]() mutable {
            self->next_headers_ = std::move(headers);
            self->Reply(code, std::move(body), keep_alive);
          });
        });
  }

  void CountInvalid() {
    if (options_.door_metrics != nullptr) {
      options_.door_metrics->Count(io::Door::kHttp, io::Decision::kInvalid);
    }
    invalid_->fetch_add(1, std::memory_order_relaxed);
  }

  void Reply(http::status code, std::string body, bool keep_alive,
             std::string content_type = "application/json") {
    response_ = {};
    response_.result(code);
    response_.version(11);
    response_.set(http::field::server, "tallyd");
    response_.set(http::field::content_type, content_type);
    response_.keep_alive(keep_alive);
    for (const RateLimitHeader& h : next_headers_) response_.set(h.name, h.value);
    next_headers_.clear();
    response_.body() = std::move(body);
    response_.prepare_payload();
    http::async_write(stream_, response_,
                      [self = shared_from_this(), keep_alive](beast::error_code ec, size_t) {
                        if (ec || !keep_alive) {
                          self->Close();
                          return;
                        }
                        self->Read();
                      });
  }

  void Close() {
    beast::error_code ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
    stream_.socket().close(ignored);
  }

  beast::tcp_stream stream_;
  const RlsServerOptions& options_;
  DecideFn* decide_;
  const HttpRouteHooks* routes_;
  std::atomic<uint64_t>* requests_;
  std::atomic<uint64_t>* invalid_;
  std::atomic<size_t>* connections_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  std::vector<RateLimitHeader> next_headers_;  // for the next Reply only (--rls-headers)
};

}  // namespace

bool RlsServer::Impl::StartHttp(std::string* error) {
  acceptor.emplace(io);
  return io::ListenTcp(options.http_listen, "http", &*acceptor, &http_address, error);
}

void RlsServer::Impl::Accept() {
  acceptor->async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor->is_open()) return;
    if (ec) {
      // Out of descriptors the listener stays readable: accepting again at
      // once would spin. (Asio retries EINTR, EAGAIN and ECONNABORTED itself.)
      const int error_number = ec.category() == boost::system::system_category() ? ec.value() : EIO;
      accept_retry_timer.expires_after(
          accept_backoff.Failed(error_number, std::chrono::steady_clock::now()));
      accept_retry_timer.async_wait([this](const boost::system::error_code& timer_ec) {
        if (!timer_ec && acceptor->is_open()) Accept();
      });
      return;
    }
    accept_backoff.Succeeded();
    if (http_connections.fetch_add(1, std::memory_order_relaxed) >= options.max_http_connections) {
      http_connections.fetch_sub(1, std::memory_order_relaxed);
      boost::system::error_code ignored;
      socket.close(ignored);  // over the connection bound: refuse
    } else {
      auto session =
          std::make_shared<HttpSession>(std::move(socket), options, &http_decide, &http_hooks,
                                        &http_requests, &invalid, &http_connections);
      session->Read();
    }
    Accept();
  });
}

// ---- reload: SIGHUP and inotify ----

void RlsServer::Impl::WaitForSighup() {
  signals.async_wait([this](const boost::system::error_code& ec, int) {
    if (ec) return;
    spdlog::info("received SIGHUP, reloading rules from {}", options.rules_path);
    LoadRules(false, nullptr);
    WaitForSighup();
  });
}

bool RlsServer::Impl::StartWatch(std::string* error) {
  // Watch the directory (or the file's directory): editors and Kubernetes
  // replace files by renaming, which a watch on the file itself would miss.
  std::error_code fs_error;
  std::filesystem::path dir(options.rules_path);
  if (!std::filesystem::is_directory(dir, fs_error)) {
    watched_file = dir.filename().string();
    dir = dir.parent_path();
  }
  if (dir.empty()) dir = ".";
  const int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd < 0) return Fail(error, "inotify_init1 failed");
  if (inotify_add_watch(fd, dir.c_str(),
                        IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE |
                            IN_ATTRIB | IN_MODIFY) < 0) {
    ::close(fd);
    return Fail(error, "cannot watch " + dir.string() + " for rule changes");
  }
  inotify.assign(fd);
  ReadWatch();
  return true;
}

void RlsServer::Impl::ReadWatch() {
  inotify.async_read_some(
      asio::buffer(inotify_buffer), [this](const boost::system::error_code& ec, size_t bytes) {
        if (ec) return;
        // Only changes that can change the rules reload them: a log or any
        // other file written beside a rules file must not reload it (and a
        // failing reload's own log line would then trigger the next).
        bool concerns_rules = false;
        for (size_t at = 0; at + sizeof(inotify_event) <= bytes && !concerns_rules;) {
          inotify_event event;
          std::memcpy(&event, inotify_buffer.data() + at, sizeof event);
          const size_t name_at = at + sizeof event;
          if ((event.mask & IN_Q_OVERFLOW) != 0 || name_at + event.len > bytes) {
            concerns_rules = true;  // events were lost: reload to be sure
            break;
          }
          std::string_view name(inotify_buffer.data() + name_at, event.len);
          name = name.substr(0, name.find('\0'));
          concerns_rules = rules::ChangeConcernsRules(name, watched_file);
          at = name_at + event.len;
        }
        if (concerns_rules) {
          // Debounce: a burst of events (write, rename, ConfigMap swap) reloads once.
          reload_timer.expires_after(std::chrono::milliseconds(200));
          reload_timer.async_wait([this](const boost::system::error_code& timer_ec) {
            if (!timer_ec) LoadRules(false, nullptr);
          });
        }
        ReadWatch();
      });
}

// ---- RlsServer ----

RlsServer::RlsServer(RlsServerOptions options, io::CheckGateway* gateway)
    : impl_(std::make_unique<Impl>(std::move(options), gateway)) {}

RlsServer::~RlsServer() { Stop(); }

bool RlsServer::Start(std::string* error) {
  Impl& d = *impl_;
  if (d.started) return Fail(error, "already started");
  if (d.gateway == nullptr) return Fail(error, "no decision path (echo mode?)");
  if (!d.LoadRules(true, error)) return false;
  if (d.options.on_rules) d.options.on_rules(d.CurrentRules()->DigestHex(), "");
  d.http_decide = [&d](const std::shared_ptr<Call>& call, Finish finish) {
    d.Decide(call, std::move(finish));
  };
  d.http_hooks.metrics = [this] { return MetricsText(); };
  d.http_hooks.not_ready_reason = [this] { return NotReadyReason(); };
  d.http_hooks.status_json = [this] { return StatusJson(); };
  d.http_hooks.gateway = d.gateway;
  d.http_hooks.door_metrics = d.options.door_metrics;
  d.http_hooks.report_signal = d.options.report_signal;
  d.http_hooks.decide_rules = [&d](RlsRequest request, RulesDone done) {
    auto call = std::make_shared<Call>();
    call->door = io::Door::kHttp;
    call->request = std::move(request);
    d.Decide(call, [call, done = std::move(done)](Status status, const std::string& why) {
      done(status, why, status == Status::kOk ? &call->answer : nullptr);
    });
  };
  if (!d.options.grpc_listen.empty()) {
    const bool grpc_ok = d.options.grpc_server == RlsServerOptions::GrpcServerKind::kNghttp2
                             ? d.StartGrpcH2(error)
                             : d.StartGrpc(d.options.grpc_listen, error);
    if (!grpc_ok) return false;
  }
  if (!d.options.http_listen.empty() && !d.StartHttp(error)) {
    if (d.grpc_server) d.grpc_server->Shutdown();
    if (d.h2_server) d.h2_server->Stop();
    return false;
  }
  if (!d.options.rules_path.empty()) {
    if (d.options.handle_sighup) {
      d.signals.add(SIGHUP);
      d.WaitForSighup();
    }
    std::string why;
    if (d.options.watch_rules && !d.StartWatch(&why)) {
      spdlog::warn("rules: {}; reload with SIGHUP", why);
    }
  }
  if (d.acceptor) d.Accept();
  if (d.grpc_server) d.ArmGrpcProbe();
  d.work.emplace(d.io.get_executor());
  d.thread = std::thread([&d] {
    try {
      d.io.run();
    } catch (const std::exception& e) {
      spdlog::critical("rls: I/O handler failed: {}", e.what());
    }
  });
  d.started = true;
  return true;
}

void RlsServer::Stop() {
  Impl& d = *impl_;
  if (!d.started || d.stopped) return;
  d.stopped = true;
  // Calls in flight get a second to finish, then are cancelled.
  {
    std::lock_guard<std::mutex> lock(d.grpc_mu);
    d.grpc_stopping = true;
    if (d.grpc_server) {
      d.grpc_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
    }
  }
  if (d.h2_server) d.h2_server->Stop();
  asio::post(d.io, [&d] {
    boost::system::error_code ignored;
    d.grpc_probe_timer.cancel();
    if (d.acceptor) d.acceptor->close(ignored);
    d.accept_retry_timer.cancel();
    d.signals.cancel(ignored);
    d.reload_timer.cancel();
    if (d.inotify.is_open()) d.inotify.close(ignored);
    d.work.reset();
    d.io.stop();
  });
  if (d.thread.joinable()) d.thread.join();
}

void RlsServer::DecideDescriptors(const wire::DescriptorQuery& query, io::Door door,
                                  size_t max_reply_bytes, io::DescriptorDoor::Done done) {
  Impl& d = *impl_;
  d.capnp_requests.fetch_add(1, std::memory_order_relaxed);
  auto call = std::make_shared<Call>();
  call->door = door;
  call->request = FromWire(query);
  const uint64_t request_id = query.request_id;
  Finish finish = [call, request_id, done](Status status, const std::string& why) {
    if (status == Status::kOk) {
      done(ToWire(call->answer, request_id), 0);
      return;
    }
    wire::DescriptorReport report;
    report.request_id = request_id;
    report.status = status;
    report.error = why;
    done(report, 0);
  };
  if (!d.Plan(call, finish)) return;
  // Resolved, nothing decided yet: an answer that could break the door's
  // reply bound asks for a padded query instead (check.capnp, protocol 4),
  // so the retry is the first time anything is counted.
  if (const size_t bound = AnswerBoundOf(call->plan); bound > max_reply_bytes) {
    done(wire::DescriptorReport{}, static_cast<uint32_t>(wire::PaddedQueryBytes(bound)));
    return;
  }
  d.Execute(call, std::move(finish));
}

std::string RlsServer::grpc_address() const { return impl_->grpc_address; }
std::string RlsServer::http_address() const { return impl_->http_address; }

bool RlsServer::Reload() { return impl_->LoadRules(false, nullptr); }

std::string RlsServer::rules_digest() const { return impl_->CurrentRules()->DigestHex(); }

RlsStats RlsServer::stats() const {
  const Impl& d = *impl_;
  RlsStats s;
  s.grpc_requests = d.grpc_requests.load(std::memory_order_relaxed);
  s.http_requests = d.http_requests.load(std::memory_order_relaxed);
  s.capnp_requests = d.capnp_requests.load(std::memory_order_relaxed);
  s.over_limit = d.over_limit.load(std::memory_order_relaxed);
  s.shadow_denials = d.shadow_denials.load(std::memory_order_relaxed);
  s.invalid = d.invalid.load(std::memory_order_relaxed);
  s.failed = d.failed.load(std::memory_order_relaxed);
  s.reloads = d.reloads.load(std::memory_order_relaxed);
  s.reload_failures = d.reload_failures.load(std::memory_order_relaxed);
  s.grpc_listener_restarts = d.grpc_listener_restarts.load(std::memory_order_relaxed);
  s.runtime_overrides = d.runtime_overrides.load(std::memory_order_relaxed);
  return s;
}

std::string RlsServer::MetricsText() const {
  const Impl& d = *impl_;
  io::MetricsInput in;
  // The one call that holds the Node's lock, as `tally status` does.
  if (d.options.status) in.status = d.options.status();
  if (d.options.door_metrics != nullptr) in.doors = d.options.door_metrics->Snapshot();
  in.key_capacity = d.options.key_capacity;
  in.process = io::ReadProcessStats();
  io::RulesMetrics& r = in.rules.emplace();
  r.reloads = d.reloads.load(std::memory_order_relaxed);
  r.reload_failures = d.reload_failures.load(std::memory_order_relaxed);
  r.last_reload_ok = d.last_reload_ok.load(std::memory_order_relaxed);
  if (!d.options.grpc_listen.empty()) {
    in.grpc_listener_restarts = d.grpc_listener_restarts.load(std::memory_order_relaxed);
  }
  for (RuleCounters::Totals& t : d.rule_counters.Snapshot()) {
    r.rules.push_back(
        {std::move(t.rule), std::move(t.name), t.hits, t.over_limit, t.near_limit, t.shadow_mode});
  }
  // As the rules path applies it (RlsPlan::Build): published, within [min, max].
  const std::shared_ptr<const rules::RuleSet> rules = d.CurrentRules();
  const std::shared_ptr<const crdt::DescriptorOverrideTable> published =
      d.options.overrides != nullptr ? d.options.overrides->Load() : nullptr;
  for (const rules::RuleSet::AdaptiveRule& a : rules->adaptive_rules()) {
    uint64_t limit = a.start;
    if (published != nullptr) {
      if (const crdt::OverrideValue* o = published->FindAdaptive(a.domain, a.name)) {
        limit = std::clamp<uint64_t>(o->limit, a.spec.min, a.spec.max);
      }
    }
    r.adaptive.push_back({std::string(a.domain), std::string(a.name), limit});
  }
  return io::RenderMetrics(in);
}

std::string RlsServer::StatusJson() const {
  const Impl& d = *impl_;
  StatusPageInput in;
  // The one call that holds the Node's lock, as `tally status` does.
  if (d.options.status) in.status = d.options.status();
  in.key_capacity = d.options.key_capacity;
  in.now_wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
  if (d.options.door_metrics != nullptr) in.doors = d.options.door_metrics->Snapshot();
  if (const io::StatusTrackers* t = d.options.trackers; t != nullptr) {
    in.rates = t->rates.Samples();
    in.busiest_keys = t->keys.Top(kMaxShownKeys);
    in.key_sample_period = t->keys.sample_period();
    in.events = t->events.Recent();
  }
  for (const RuleCounters::Totals& t :
       d.rule_counters.Snapshot(RuleCounters::PeriodAt(SteadyMs()))) {
    in.rules.push_back(RuleUse{t.rule, t.name, t.limit, t.window_ms, t.peak_used, t.hits,
                               t.over_limit, t.near_limit, t.shadow_mode});
  }
  return RenderStatusJson(in);
}

std::string RlsServer::NotReadyReason() const {
  const Impl& d = *impl_;
  if (!d.options.status) return "";
  const wire::StatusReport s = d.options.status();
  for (const auto& [name, value] : s.counters) {
    if (name == "seeds_unanswered" && value > 0) {
      return "join warning: " + std::to_string(value) +
             " seed(s) unanswered; serving as a cluster of one";
    }
  }
  if (!s.owning) {
    return "not owning keys" + (s.not_owning_reason.empty() ? "" : ": " + s.not_owning_reason);
  }
  return "";
}

}  // namespace tally::rls

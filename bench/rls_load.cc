#include "bench/rls_load.h"

#include <absl/synchronization/mutex.h>
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <memory>
#include <string_view>
#include <utility>
#include <vector>

#include "bench/rls_load_internal.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace tally::load {
namespace {

namespace rlsv3 = envoy::service::ratelimit::v3;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
// ---- gRPC ----

struct GrpcCall {
  grpc::ClientContext context;
  rlsv3::RateLimitRequest request;
  rlsv3::RateLimitResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rlsv3::RateLimitResponse>> rpc;
  Clock::time_point started;
};

// ---- HTTP ----

// What the connections of one HTTP run share (one thread uses it).
struct HttpRun {
  std::string host_header;
  std::string body_prefix;  // {"domain":D,"descriptors":[{"entries":[{"key":K,"value":
  uint64_t values = 1;
  uint64_t next_value = 0;
  std::chrono::milliseconds timeout{1000};
  Clock::time_point end;
  std::vector<uint32_t> latencies_us;
  RlsLoadResult* result = nullptr;
  int connected = 0;
  std::string connect_error;
};

// One keep-alive connection with one POST /v1/check outstanding at a time.
class HttpCaller : public std::enable_shared_from_this<HttpCaller> {
 public:
  HttpCaller(asio::io_context& io, HttpRun* run) : stream_(io), run_(run) {}

  // Connects within `timeout`; counts itself in run->connected, or sets
  // run->connect_error.
  void Connect(const asio::ip::tcp::resolver::results_type& endpoints,
               std::chrono::milliseconds timeout) {
    stream_.expires_after(timeout);
    stream_.async_connect(endpoints, [self = shared_from_this()](beast::error_code ec,
                                                                 const asio::ip::tcp::endpoint&) {
      if (ec) {
        if (self->run_->connect_error.empty()) self->run_->connect_error = ec.message();
        return;
      }
      ++self->run_->connected;
    });
  }

  // Sends calls until run->end (REQUIRES: connected).
  void Start() { Send(); }

 private:
  void Send() {
    request_ = {http::verb::post, "/v1/check", 11};
    request_.set(http::field::host, run_->host_header);
    request_.set(http::field::content_type, "application/json");
    request_.keep_alive(true);
    request_.body() =
        run_->body_prefix + "\"" + DescriptorValue(&run_->next_value, run_->values) + "\"}]}]}";
    request_.prepare_payload();
    started_ = Clock::now();
    stream_.expires_after(run_->timeout);
    http::async_write(stream_, request_, [self = shared_from_this()](beast::error_code ec, size_t) {
      if (ec) return self->Fail(ec);
      self->Receive();
    });
  }

  void Receive() {
    response_ = {};
    http::async_read(stream_, buffer_, response_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       if (ec) return self->Fail(ec);
                       self->Done();
                     });
  }

  // A 200 is a decision; its first "allowed" is the whole call's.
  void Done() {
    const Clock::time_point now = Clock::now();
    RlsLoadResult* result = run_->result;
    const std::string& body = response_.body();
    constexpr std::string_view kAllowed = "\"allowed\":";
    const size_t at = body.find(kAllowed);
    const std::string_view answer = at == std::string::npos
                                        ? std::string_view()
                                        : std::string_view(body).substr(at + kAllowed.size());
    if (response_.result_int() != 200) {
      CountError(result, "HTTP " + std::to_string(response_.result_int()) + " " + body);
    } else if (answer.starts_with("true")) {
      ++result->ok;
      run_->latencies_us.push_back(ElapsedUs(started_, now));
    } else if (answer.starts_with("false")) {
      ++result->over_limit;
      run_->latencies_us.push_back(ElapsedUs(started_, now));
    } else {
      CountError(result, "HTTP 200 without \"allowed\": " + body);
    }
    if (now < run_->end) Send();
  }

  void Fail(beast::error_code ec) {
    CountError(run_->result,
               ec == beast::error::timeout
                   ? "no answer within " + std::to_string(run_->timeout.count()) + " ms"
                   : ec.message());
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  http::request<http::string_body> request_;
  http::response<http::string_body> response_;
  HttpRun* run_;
  Clock::time_point started_;
};

}  // namespace

bool ValidOptions(const RlsLoadOptions& o, std::string* error) {
  if (o.values < 1 || o.in_flight < 1 || o.channels < 1 || !(o.seconds > 0) ||
      o.timeout.count() < 1) {
    *error = "values, in_flight, channels, seconds and timeout must be positive";
    return false;
  }
  return true;
}

uint32_t ElapsedUs(Clock::time_point from, Clock::time_point to) {
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(to - from).count();
  return static_cast<uint32_t>(std::clamp<int64_t>(us, 0, UINT32_MAX));
}

// Fills the rates and percentiles of `*result` from the run's samples.
void Summarize(std::vector<uint32_t>* latencies_us, double seconds, RlsLoadResult* result) {
  result->calls = result->ok + result->over_limit + result->errors;
  result->seconds = seconds;
  result->calls_per_s = seconds > 0 ? static_cast<double>(result->calls) / seconds : 0;
  std::sort(latencies_us->begin(), latencies_us->end());
  auto rank = [&](double q) -> double {
    if (latencies_us->empty()) return 0;
    const double n = static_cast<double>(latencies_us->size());
    const size_t at = static_cast<size_t>(std::max(1.0, std::ceil(q * n))) - 1;
    return (*latencies_us)[std::min(at, latencies_us->size() - 1)];
  };
  result->p50_us = rank(0.50);
  result->p99_us = rank(0.99);
  result->p999_us = rank(0.999);
}

void CountError(RlsLoadResult* result, const std::string& what) {
  if (result->errors++ == 0) result->first_error = what;
}

std::string DescriptorValue(uint64_t* next_value, uint64_t values) {
  return "v" + std::to_string((*next_value)++ % values);
}

std::string JsonQuoted(std::string_view text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

bool ParseHostPort(const std::string& target, std::string* host, uint16_t* port) {
  const size_t colon = target.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  std::string h = target.substr(0, colon);
  if (h.front() == '[') {
    if (h.size() < 3 || h.back() != ']') return false;
    h = h.substr(1, h.size() - 2);
  } else if (h.find(':') != std::string::npos) {
    return false;  // a V6 address needs its brackets
  }
  unsigned value = 0;
  const char* begin = target.data() + colon + 1;
  const char* end = target.data() + target.size();
  const auto [stop, ec] = std::from_chars(begin, end, value);
  if (ec != std::errc() || stop != end || begin == end || value < 1 || value > 65535) return false;
  *host = h;
  *port = static_cast<uint16_t>(value);
  return true;
}

bool RunGrpcLoad(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error) {
  *result = {};
  if (!ValidOptions(options, error)) return false;
  if (options.grpc_client == RlsLoadOptions::GrpcClient::kNghttp2) {
    return RunGrpcLoadNghttp2(options, result, error);
  }
  std::string host;
  uint16_t port = 0;
  if (!ParseHostPort(options.target, &host, &port)) {
    *error = "not HOST:PORT: " + options.target;
    return false;
  }
  // Debian's abseil is built without NDEBUG, so every absl::Mutex lock in
  // gRPC updates a lock-order graph (a debugging aid): a few percent of the
  // client's CPU (perf: GraphCycles). Measure gRPC, not its development checks.
  static const bool kDeadlockDetectionOff = [] {
    absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
    return true;
  }();
  (void)kDeadlockDetectionOff;

  const auto connect_deadline =
      std::chrono::system_clock::now() + std::max(options.timeout, kMinConnectTimeout);
  std::vector<std::unique_ptr<rlsv3::RateLimitService::Stub>> stubs;
  for (int c = 0; c < options.channels; ++c) {
    grpc::ChannelArguments arguments;
    arguments.SetInt("tally.load.channel", c);  // its own connection
    auto channel =
        grpc::CreateCustomChannel(options.target, grpc::InsecureChannelCredentials(), arguments);
    if (!channel->WaitForConnected(connect_deadline)) {
      *error = "cannot connect to " + options.target + " (gRPC channel " + std::to_string(c) +
               " not ready within " +
               std::to_string(std::max(options.timeout, kMinConnectTimeout).count()) + " ms)";
      return false;
    }
    stubs.push_back(rlsv3::RateLimitService::NewStub(channel));
  }
  result->connections = options.channels;

  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<GrpcCall>> calls(static_cast<size_t>(options.in_flight));
  uint64_t next_value = 0;
  auto launch = [&](size_t i) {
    auto call = std::make_unique<GrpcCall>();
    call->request.set_domain(options.domain);
    auto* entry = call->request.add_descriptors()->add_entries();
    entry->set_key(options.key);
    entry->set_value(DescriptorValue(&next_value, options.values));
    call->context.set_deadline(std::chrono::system_clock::now() + options.timeout);
    call->started = Clock::now();
    call->rpc =
        stubs[i % stubs.size()]->PrepareAsyncShouldRateLimit(&call->context, call->request, &cq);
    call->rpc->StartCall();
    call->rpc->Finish(&call->response, &call->status, reinterpret_cast<void*>(i));
    calls[i] = std::move(call);
  };

  std::vector<uint32_t> latencies_us;
  latencies_us.reserve(1 << 20);
  const Clock::time_point start = Clock::now();
  const Clock::time_point end = start + std::chrono::duration_cast<Clock::duration>(
                                            std::chrono::duration<double>(options.seconds));
  for (size_t i = 0; i < calls.size(); ++i) launch(i);
  size_t outstanding = calls.size();
  bool stopping = false;
  void* tag = nullptr;
  bool got = false;
  while (outstanding > 0 && cq.Next(&tag, &got)) {
    const size_t i = reinterpret_cast<size_t>(tag);
    const GrpcCall& call = *calls[i];
    const Clock::time_point now = Clock::now();
    if (!call.status.ok()) {
      CountError(result, "gRPC status " + std::to_string(call.status.error_code()) + ": " +
                             call.status.error_message());
    } else if (call.response.overall_code() == rlsv3::RateLimitResponse::OVER_LIMIT) {
      ++result->over_limit;
      latencies_us.push_back(ElapsedUs(call.started, now));
    } else if (call.response.overall_code() == rlsv3::RateLimitResponse::OK) {
      ++result->ok;
      latencies_us.push_back(ElapsedUs(call.started, now));
    } else {
      CountError(result, "overall_code " + std::to_string(call.response.overall_code()));
    }
    stopping = stopping || now >= end;
    if (stopping) {
      --outstanding;
      calls[i].reset();
    } else {
      launch(i);
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  // A completion queue must be drained after Shutdown before it is destroyed.
  cq.Shutdown();
  while (cq.Next(&tag, &got)) {
  }
  Summarize(&latencies_us, elapsed, result);
  return true;
}

bool RunHttpLoad(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error) {
  *result = {};
  if (!ValidOptions(options, error)) return false;
  std::string host;
  uint16_t port = 0;
  if (!ParseHostPort(options.target, &host, &port)) {
    *error = "not HOST:PORT: " + options.target;
    return false;
  }
  asio::io_context io(1);
  beast::error_code ec;
  asio::ip::tcp::resolver resolver(io);
  const auto endpoints = resolver.resolve(host, std::to_string(port), ec);
  if (ec) {
    *error = "cannot resolve " + host + ": " + ec.message();
    return false;
  }

  HttpRun run;
  run.host_header = options.target;
  run.body_prefix = "{\"domain\":" + JsonQuoted(options.domain) +
                    ",\"descriptors\":[{\"entries\":[{\"key\":" + JsonQuoted(options.key) +
                    ",\"value\":";
  run.values = options.values;
  run.timeout = options.timeout;
  run.result = result;
  run.latencies_us.reserve(1 << 20);

  // Every connection is open before the clock starts.
  std::vector<std::shared_ptr<HttpCaller>> callers;
  for (int i = 0; i < options.in_flight; ++i) {
    callers.push_back(std::make_shared<HttpCaller>(io, &run));
    callers.back()->Connect(endpoints, std::max(options.timeout, kMinConnectTimeout));
  }
  io.run();
  if (run.connected != options.in_flight) {
    *error = "cannot connect to " + options.target + " (" + std::to_string(run.connected) + " of " +
             std::to_string(options.in_flight) + " connections): " + run.connect_error;
    return false;
  }
  result->connections = options.in_flight;
  io.restart();

  const Clock::time_point start = Clock::now();
  run.end = start + std::chrono::duration_cast<Clock::duration>(
                        std::chrono::duration<double>(options.seconds));
  for (auto& caller : callers) caller->Start();
  callers.clear();  // each caller lives as long as its own handlers
  io.run();
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  Summarize(&run.latencies_us, elapsed, result);
  return true;
}

}  // namespace tally::load

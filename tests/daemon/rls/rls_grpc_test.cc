// tallyd's Envoy doors through a real grpc++ client against real tallyd
// processes (port 0): the draft-IETF RateLimit-* headers (--rls-headers) and
// the rules digest in status answers (`tally status`). The Python grpcio test
// (rls_client_test.py) covers the rest of the protocol from outside.
#include <arpa/inet.h>
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <future>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "client/admin.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_status.h"
#include "tests/support/http_request.h"

namespace tally::testing {
namespace {

// A minute window frees its hits with their sub-bucket: up to a tenth of the
// window (the default 10 buckets per window) after the minute (docs/ENVOY.md).
constexpr int kMinuteResetBoundS = 66;

namespace rlsv3 = envoy::service::ratelimit::v3;

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: tier
    rate_limits:
      - {unit: second, requests_per_unit: 50, name: burst}
      - {unit: hour, requests_per_unit: 2, name: hourly}
)";

void WriteFile(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::trunc) << text;
}

// Sends `bytes` on a new connection to `address` ("ip:port") and returns
// everything the server answers until it closes (or 10 s pass).
std::string RawExchange(const std::string& address, const std::string& bytes) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr);
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval timeout{static_cast<time_t>(ScaledWait(std::chrono::seconds(10)).count() / 1000), 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  std::string answer;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(bytes.size())) {
    char buffer[4096];
    for (ssize_t n; (n = recv(fd, buffer, sizeof buffer, 0)) > 0;) answer.append(buffer, n);
  }
  close(fd);
  return answer;
}

// The value of the sample `name_and_labels` in a /metrics text; -1 if absent.
double MetricValue(const std::string& text, const std::string& name_and_labels) {
  const std::string prefix = "\n" + name_and_labels + " ";
  const size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  return std::stod(text.substr(at + prefix.size()));
}

class RlsGrpcTest : public ::testing::Test {
 protected:
  // `http`: the HTTP door's address ("none": off).
  void StartTallyd(const std::vector<std::string>& extra, const std::string& http = "none") {
    rules_path_ = dir_.File("rules.yaml");
    WriteFile(rules_path_, kRules);
    std::vector<std::string> args = {"--udp",
                                     "127.0.0.1:0",
                                     "--unix",
                                     "none",
                                     "--unix-seq",
                                     "none",
                                     "--grpc",
                                     "127.0.0.1:0",
                                     "--http",
                                     http,
                                     "--rules",
                                     rules_path_,
                                     "--stats-interval-s",
                                     "0"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string error;
    ASSERT_TRUE(tallyd_.Start(args, &error)) << error;
    ASSERT_FALSE(tallyd_.grpc_address().empty()) << tallyd_.listening_line();
    channel_ = grpc::CreateChannel(tallyd_.grpc_address(), grpc::InsecureChannelCredentials());
    stub_ = rlsv3::RateLimitService::NewStub(channel_);
  }

  // One ShouldRateLimit of descriptors given as {{key, value}, ...} each.
  rlsv3::RateLimitResponse Ask(
      const std::vector<std::vector<std::pair<std::string, std::string>>>& descriptors) {
    rlsv3::RateLimitRequest request;
    request.set_domain("edge");
    for (const auto& entries : descriptors) {
      auto* d = request.add_descriptors();
      for (const auto& [key, value] : entries) {
        auto* e = d->add_entries();
        e->set_key(key);
        e->set_value(value);
      }
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + ScaledWait(std::chrono::seconds(10)));
    rlsv3::RateLimitResponse response;
    const grpc::Status status = stub_->ShouldRateLimit(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  static std::vector<std::pair<std::string, std::string>> Headers(
      const rlsv3::RateLimitResponse& r) {
    std::vector<std::pair<std::string, std::string>> out;
    for (const auto& h : r.response_headers_to_add()) out.emplace_back(h.key(), h.value());
    return out;
  }

  std::string UdpAddress() const {
    return tallyd_.udp_host() + ":" + std::to_string(tallyd_.udp_port());
  }

  std::optional<wire::StatusReport> Status() { return UdpStatus(tallyd_); }

  // Polls status until `done` holds (a reload runs on tallyd's own thread).
  template <typename Pred>
  std::optional<wire::StatusReport> StatusWhen(Pred done) {
    const auto deadline = std::chrono::steady_clock::now() + ScaledWait(std::chrono::seconds(10));
    std::optional<wire::StatusReport> s;
    while (std::chrono::steady_clock::now() < deadline) {
      s = Status();
      if (s && done(*s)) return s;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return std::nullopt;
  }

  TempDir dir_;
  std::string rules_path_;
  DaemonProcess tallyd_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<rlsv3::RateLimitService::Stub> stub_;
};

TEST_F(RlsGrpcTest, NoRateLimitHeadersByDefault) {
  StartTallyd({});
  const rlsv3::RateLimitResponse r = Ask({{{"remote_address", "a"}}});
  EXPECT_EQ(r.overall_code(), rlsv3::RateLimitResponse::OK);
  EXPECT_EQ(r.statuses(0).limit_remaining(), 2u);
  EXPECT_TRUE(Headers(r).empty());
}

TEST_F(RlsGrpcTest, RateLimitHeadersDescribeTheDescriptorNearestItsLimit) {
  StartTallyd({"--rls-headers"});
  for (uint32_t remaining : {2u, 1u, 0u}) {
    const rlsv3::RateLimitResponse r = Ask({{{"remote_address", "a"}}});
    EXPECT_EQ(r.overall_code(), rlsv3::RateLimitResponse::OK);
    const auto headers = Headers(r);
    ASSERT_EQ(headers.size(), 3u);
    EXPECT_EQ(headers[0], std::make_pair(std::string("RateLimit-Limit"), std::string("3")));
    EXPECT_EQ(headers[1],
              std::make_pair(std::string("RateLimit-Remaining"), std::to_string(remaining)));
    EXPECT_EQ(headers[2].first, "RateLimit-Reset");
    const int reset_s = std::stoi(headers[2].second);
    EXPECT_GE(reset_s, 1);
    EXPECT_LE(reset_s, kMinuteResetBoundS);
  }
  // Over the limit: the denying descriptor is reported, with the time until
  // a hit fits again (at most the minute window).
  rlsv3::RateLimitResponse over = Ask({{{"remote_address", "a"}}, {{"remote_address", "b"}}});
  EXPECT_EQ(over.overall_code(), rlsv3::RateLimitResponse::OVER_LIMIT);
  auto headers = Headers(over);
  ASSERT_EQ(headers.size(), 3u);
  EXPECT_EQ(headers[1].second, "0");
  EXPECT_GE(std::stoi(headers[2].second), 1);
  EXPECT_LE(std::stoi(headers[2].second), kMinuteResetBoundS);
  // Two limits on one descriptor: the hourly one (2 per hour) is nearer its
  // limit than the burst one (50 per second).
  const rlsv3::RateLimitResponse tier = Ask({{{"tier", "gold"}}});
  headers = Headers(tier);
  ASSERT_EQ(headers.size(), 3u);
  EXPECT_EQ(headers[0].second, "2");
  EXPECT_EQ(headers[1].second, "1");
  // Nothing limited (no rule matches, or unlimited): no headers, as
  // envoyproxy/ratelimit.
  EXPECT_TRUE(Headers(Ask({{{"nothing", "here"}}, {{"path", "/free"}}})).empty());
}

TEST_F(RlsGrpcTest, StatusCarriesTheRulesDigestThroughReloads) {
  StartTallyd({});
  std::optional<wire::StatusReport> s = Status();
  ASSERT_TRUE(s);
  const std::string first = s->rules_digest;
  ASSERT_EQ(first.size(), 32u);
  EXPECT_EQ(first.find_first_not_of("0123456789abcdef"), std::string::npos) << first;
  EXPECT_TRUE(s->rules_error.empty()) << s->rules_error;

  // `tally status` shows it.
  ProcessResult cli =
      RunProcess(std::string(TALLY_BIN_DIR) + "/tally", {"status", "--udp", UdpAddress()});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_NE(cli.out.find("rules: digest " + first), std::string::npos) << cli.out;
  ProcessResult json = RunProcess(std::string(TALLY_BIN_DIR) + "/tally",
                                  {"status", "--json", "--udp", UdpAddress()});
  EXPECT_NE(json.out.find("\"rules_digest\":\"" + first + "\""), std::string::npos) << json.out;

  // A changed file: a new digest once reloaded (SIGHUP; inotify may be first).
  WriteFile(rules_path_, std::string(kRules) +
                             "  - key: extra\n"
                             "    rate_limit: {unit: second, "
                             "requests_per_unit: 1}\n");
  ASSERT_TRUE(tallyd_.Signal(SIGHUP));
  s = StatusWhen([&](const wire::StatusReport& r) { return r.rules_digest != first; });
  ASSERT_TRUE(s) << "the digest did not change after a reload";
  const std::string second = s->rules_digest;
  EXPECT_EQ(second.size(), 32u);
  EXPECT_TRUE(s->rules_error.empty());

  // A broken file: rejected whole, the digest in force stays, status says why.
  WriteFile(rules_path_, "domain: edge\ndescriptors:\n  - rate_limit: {unit: fortnight}\n");
  ASSERT_TRUE(tallyd_.Signal(SIGHUP));
  s = StatusWhen([](const wire::StatusReport& r) { return !r.rules_error.empty(); });
  ASSERT_TRUE(s) << "no rules error in status after a broken reload";
  EXPECT_EQ(s->rules_digest, second);
  EXPECT_NE(s->rules_error.find("rules.yaml:"), std::string::npos) << s->rules_error;
  cli = RunProcess(std::string(TALLY_BIN_DIR) + "/tally", {"status", "--udp", UdpAddress()});
  EXPECT_NE(cli.out.find("rules reload FAILED"), std::string::npos) << cli.out;

  // Fixed again: the error clears.
  WriteFile(rules_path_, kRules);
  ASSERT_TRUE(tallyd_.Signal(SIGHUP));
  s = StatusWhen([&](const wire::StatusReport& r) {
    return r.rules_error.empty() && r.rules_digest == first;
  });
  EXPECT_TRUE(s) << "the error did not clear after a good reload";
  EXPECT_EQ(tallyd_.Stop(), 0);
}

// The rules file's directory is watched (editors and Kubernetes replace files
// by renaming), but only changes to the rules reload them: a log written
// beside a broken rules file does not retry the reload (each failure, logged
// beside it, used to trigger the next).
TEST_F(RlsGrpcTest, FilesBesideTheRulesDoNotReloadThem) {
  StartTallyd({}, "127.0.0.1:0");
  auto failures = [&]() -> std::optional<uint64_t> {
    const std::string metrics = HttpGet(tallyd_.http_address(), "/metrics").body;
    const std::string name = "\ntally_rules_reload_failures_total ";
    const size_t at = metrics.find(name);
    if (at == std::string::npos) return std::nullopt;
    return std::stoull(metrics.substr(at + name.size()));
  };
  ASSERT_EQ(failures(), std::optional<uint64_t>(0));
  // A broken rules file: inotify reloads it once, and the reload fails.
  WriteFile(rules_path_, "domain: edge\ndescriptors:\n  - rate_limit: {unit: fortnight}\n");
  std::optional<wire::StatusReport> s =
      StatusWhen([](const wire::StatusReport& r) { return !r.rules_error.empty(); });
  ASSERT_TRUE(s) << "inotify did not reload the broken file";
  const std::optional<uint64_t> after_break = failures();
  ASSERT_TRUE(after_break.has_value());
  EXPECT_GE(*after_break, 1u);
  // Other files in the directory: no reload. An event that must not happen
  // has no condition to wait for: give it five reload debounces (200 ms
  // each) to show up.
  for (int i = 0; i < 5; ++i) {
    WriteFile(dir_.File("tallyd.log"), "line " + std::to_string(i) + "\n");
    WriteFile(dir_.File(".rules.yaml.swp"), "x");
  }
  const auto quiet_until = std::chrono::steady_clock::now() + ScaledWait(std::chrono::seconds(1));
  while (std::chrono::steady_clock::now() < quiet_until) {
    ASSERT_EQ(failures(), after_break) << "a file beside the rules reloaded them";
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  // The rules file itself still reloads.
  WriteFile(rules_path_, kRules);
  s = StatusWhen([](const wire::StatusReport& r) { return r.rules_error.empty(); });
  EXPECT_TRUE(s) << "inotify did not reload the fixed file";
  EXPECT_EQ(tallyd_.Stop(), 0);
}

// Requests that do not parse, or break the bounds, are counted as invalid on
// their door (tally_checks_total{decision="invalid"}), and answered
// INVALID_ARGUMENT (gRPC) or 400 (HTTP).
TEST_F(RlsGrpcTest, UnparsableRequestsCountAsInvalidOnTheirDoor) {
  StartTallyd({}, "127.0.0.1:0");
  const std::string http = tallyd_.http_address();
  ASSERT_FALSE(http.empty()) << tallyd_.listening_line();
  auto invalid = [&](const std::string& door) {
    const std::string metrics =
        RawExchange(http, "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    return MetricValue(metrics, "tally_checks_total{door=\"" + door + "\",decision=\"invalid\"}");
  };
  ASSERT_EQ(invalid("grpc"), 0);
  ASSERT_EQ(invalid("http"), 0);

  // gRPC: bytes that are no RateLimitRequest (field 1 as a varint, then a
  // truncated length) ...
  grpc::GenericStub generic(channel_);
  auto raw_call = [&](const std::string& bytes) {
    grpc::Slice slice(bytes);
    grpc::ByteBuffer request(&slice, 1), response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + ScaledWait(std::chrono::seconds(10)));
    std::promise<grpc::Status> done;
    generic.UnaryCall(&context, "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
                      grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status status) { done.set_value(std::move(status)); });
    return done.get_future().get();
  };
  grpc::Status status = raw_call(std::string("\x08\x01\x12\x7f\x0a", 5));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  // ... and a well-formed one over the bounds (65 descriptors).
  rlsv3::RateLimitRequest too_many;
  too_many.set_domain("edge");
  for (int i = 0; i < 65; ++i) too_many.add_descriptors()->add_entries()->set_key("k");
  status = raw_call(too_many.SerializeAsString());
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << status.error_message();
  // A good one still works and is not invalid.
  EXPECT_EQ(Ask({{{"remote_address", "a"}}}).overall_code(), rlsv3::RateLimitResponse::OK);
  EXPECT_EQ(invalid("grpc"), 2);

  // HTTP: no HTTP at all, a body that is no JSON (both check paths).
  EXPECT_EQ(RawExchange(http, "NOT HTTP AT ALL\r\n\r\n").substr(0, 12), "HTTP/1.1 400");
  for (const char* path : {"/json", "/v1/check"}) {
    const std::string body = "{not json";
    EXPECT_EQ(RawExchange(http, std::string("POST ") + path +
                                    " HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                                    "Content-Type: application/json\r\nContent-Length: " +
                                    std::to_string(body.size()) + "\r\n\r\n" + body)
                  .substr(0, 12),
              "HTTP/1.1 400")
        << path;
  }
  EXPECT_EQ(invalid("http"), 3);
  EXPECT_EQ(invalid("grpc"), 2);
  EXPECT_EQ(tallyd_.Stop(), 0);
}

TEST(RlsStatusTest, NoDigestWithoutTheDoors) {
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none"}, &error))
      << error;
  DaemonAddress e;
  e.host = d.udp_host();
  e.port = d.udp_port();
  wire::StatusReport report;
  ASSERT_TRUE(QueryStatus(e, ClientOptions(), &report, &error)) << error;
  EXPECT_EQ(report.rules_digest, "");
  EXPECT_EQ(d.Stop(), 0);
}

}  // namespace
}  // namespace tally::testing

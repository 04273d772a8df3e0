// A tallyd out of file descriptors (RLIMIT_NOFILE lowered with prlimit(1),
// then filled by idle HTTP connections): the HTTP, seqpacket and peer-stream
// acceptors count each failed accept (tally_accept_fd_exhausted_total, read
// here from the status answer over UDP, which needs no descriptor), back off
// instead of spinning (held to AcceptBackoff's schedule by counting failed
// accepts, not by timing them), and serve new connections once descriptors
// are free again.
//
// Under a sanitizer the child writes its reports to stderr (this test's
// output) instead of the stage's report files: a runtime that must open a
// file to report anything would find no descriptor and die with "Can't open
// file" instead of saying what it saw. UBSan's vptr check is suppressed in
// the child (a suppressions file in the test's folder): on a type-cache miss
// it tests whether the vtable is readable by writing it into a pipe
// (sanitizer_common's IsAccessibleMemoryRange); with no descriptor left that
// fails, so a valid object is reported as having an "invalid vptr" and the
// daemon aborts (seen on boost::system::error_category, in CI and here). The
// check cannot work without descriptors; every other check stays on.
#include <arpa/inet.h>
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/io/accept_backoff.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "tally/client.h"
#include "tests/support/daemon_process.h"
#include "tests/support/daemon_status.h"
#include "tests/support/http_request.h"

namespace tally::testing {
namespace {

using Clock = std::chrono::steady_clock;

// Enough for tallyd to start in cluster mode with its doors, few enough to
// fill with connections quickly.
constexpr int kFdLimit = 96;
// More connections than the limit leaves room for: the rest wait in the backlog.
constexpr int kFillConnections = 160;

// "host:port" -> a connected TCP socket (blocking), or -1.
int ConnectTcp(const std::string& address) {
  const size_t colon = address.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(std::stoi(address.substr(colon + 1))));
  if (inet_pton(AF_INET, address.substr(0, colon).c_str(), &addr.sin_addr) != 1) return -1;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

int ConnectSeqpacket(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

// Sets `name` to its value with `extra` appended (a sanitizer's last flag
// wins) while in scope, when it is set at all; restores it after.
class SanitizerOptionsForChild {
 public:
  SanitizerOptionsForChild(const char* name, const std::string& extra) : name_(name) {
    if (const char* value = std::getenv(name)) {
      saved_ = value;
      setenv(name, (*saved_ + extra).c_str(), 1);
    }
  }
  ~SanitizerOptionsForChild() {
    if (saved_) setenv(name_, saved_->c_str(), 1);
  }
  SanitizerOptionsForChild(const SanitizerOptionsForChild&) = delete;
  SanitizerOptionsForChild& operator=(const SanitizerOptionsForChild&) = delete;

 private:
  const char* name_;
  std::optional<std::string> saved_;
};

// Writes a UBSan suppressions file that turns the vptr check off (see the
// top of this file) into `dir`; its path.
std::string VptrSuppressions(const TempDir& dir) {
  const std::string path = dir.File("ubsan.supp");
  std::ofstream(path) << "vptr:*\n";
  return path;
}

class AcceptFdExhaustionTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (int fd : client_fds_) close(fd);
  }

  TempDir dir_;
  // Only for the child's start: exec copies the environment.
  SanitizerOptionsForChild asan_options_{"ASAN_OPTIONS", ":log_path=stderr"};
  SanitizerOptionsForChild ubsan_options_{
      "UBSAN_OPTIONS", ":log_path=stderr:suppressions=" + VptrSuppressions(dir_)};
  SanitizerOptionsForChild tsan_options_{"TSAN_OPTIONS", ":log_path=stderr"};

  uint64_t Counter(const std::string& name) {
    std::optional<wire::StatusReport> s = UdpStatus(tallyd_);
    if (!s) return 0;
    const std::optional<uint64_t> value = StatusCounter(*s, name);
    if (!value) ADD_FAILURE() << "no counter " << name << " in status";
    return value.value_or(0);
  }

  // Polls status until `name` reaches `at_least`; its last value.
  uint64_t WaitForCounter(const std::string& name, uint64_t at_least) {
    const auto deadline = Clock::now() + ScaledWait(std::chrono::seconds(8));
    uint64_t value = 0;
    while (Clock::now() < deadline) {
      value = Counter(name);
      if (value >= at_least) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return value;
  }

  void CheckGrpcDoorRecovers(const std::string& server);

  DaemonProcess tallyd_;
  std::vector<int> client_fds_;
};

TEST_F(AcceptFdExhaustionTest, DoorsBackOffCountAndResume) {
  const std::string seq_path = dir_.File("d.seq");
  std::string error;
  ASSERT_TRUE(tallyd_.Start({"--nofile=" + std::to_string(kFdLimit),
                             TallydPath(),
                             "--udp",
                             "127.0.0.1:0",
                             "--unix",
                             "none",
                             "--unix-seq",
                             seq_path,
                             "--grpc",
                             "none",
                             "--http",
                             "127.0.0.1:0",
                             "--gossip",
                             "127.0.0.1:0",
                             "--node-id",
                             "n1",
                             "--state-dir",
                             "none",
                             "--stats-interval-s",
                             "0"},
                            &error, std::chrono::seconds(15), "/usr/bin/prlimit"))
      << error;
  ASSERT_FALSE(tallyd_.http_address().empty()) << tallyd_.listening_line();
  ASSERT_FALSE(tallyd_.gossip_address().empty()) << tallyd_.listening_line();
  ASSERT_EQ(Counter("accept_fd_exhausted_http"), 0u);

  // Fill tallyd's descriptors with idle HTTP connections (each accepted one
  // holds one there until the door's 10 s idle timeout).
  const Clock::time_point fill_start = Clock::now();
  for (int i = 0; i < kFillConnections; ++i) {
    const int fd = ConnectTcp(tallyd_.http_address());
    ASSERT_GE(fd, 0) << strerror(errno);
    client_fds_.push_back(fd);
  }
  // A few failed accepts in a row: each came after the previous one's delay.
  constexpr uint64_t kFailures = 5;  // >= 10 + 20 + 40 + 80 ms after the first
  const uint64_t http_failures = WaitForCounter("accept_fd_exhausted_http", kFailures);
  const auto elapsed =
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - fill_start);
  ASSERT_GE(http_failures, kFailures);
  // A door that accepted again at once would have failed thousands of times
  // by now; one that backs off, at most as often as its schedule allows.
  EXPECT_LE(http_failures, io::AcceptBackoff::MaxFailuresWithin(elapsed))
      << "in " << elapsed.count() << " ms";

  // The other doors meet the same shortage on their next connection.
  const int seq_fd = ConnectSeqpacket(seq_path);
  ASSERT_GE(seq_fd, 0) << strerror(errno);
  client_fds_.push_back(seq_fd);
  const int peer_fd = ConnectTcp(tallyd_.gossip_address());
  ASSERT_GE(peer_fd, 0) << strerror(errno);
  client_fds_.push_back(peer_fd);
  EXPECT_GE(WaitForCounter("accept_fd_exhausted_seqpacket", 2), 2u);
  EXPECT_GE(WaitForCounter("accept_fd_exhausted_peer", 2), 2u);

  // Free them: the doors accept again within their longest delay.
  for (int fd : client_fds_) close(fd);
  client_fds_.clear();
  EXPECT_EQ(HttpGet(tallyd_.http_address(), "/healthz").status, 200);

  ClientOptions options;
  options.timeout = std::chrono::milliseconds(1000);
  options.attempts = 5;
  std::unique_ptr<Client> client = Client::Connect(DaemonAddress::Unix(seq_path), options, &error);
  ASSERT_NE(client, nullptr) << error;
  CheckRequest request;
  request.user_id = "u";
  request.endpoint = "e";
  request.limit = 10;
  request.window_ms = 60'000;
  const CheckResult result = client->Check(request);
  EXPECT_EQ(result.status, tally::Status::kOk);
  EXPECT_TRUE(result.allowed);

  // The shortage is over: no door fails any more.
  const uint64_t http_after = Counter("accept_fd_exhausted_http");
  EXPECT_EQ(HttpGet(tallyd_.http_address(), "/healthz").status, 200);
  EXPECT_EQ(Counter("accept_fd_exhausted_http"), http_after);
  EXPECT_EQ(tallyd_.Stop(), 0);
}

}  // namespace
}  // namespace tally::testing

namespace tally::testing {
namespace {

namespace rlsv3 = envoy::service::ratelimit::v3;

// One ShouldRateLimit on a new channel (a new connection), within `deadline`.
grpc::Status CallOnNewChannel(const std::string& address, std::chrono::milliseconds deadline) {
  grpc::ChannelArguments arguments;
  // A distinct argument keeps gRPC from reusing an earlier channel's connection.
  static int channel_number = 0;
  arguments.SetInt("tally.test.channel", ++channel_number);
  auto channel = grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), arguments);
  auto stub = rlsv3::RateLimitService::NewStub(channel);
  rlsv3::RateLimitRequest request;
  request.set_domain("edge");
  auto* entry = request.add_descriptors()->add_entries();
  entry->set_key("remote_address");
  entry->set_value("10.0.0.1");
  rlsv3::RateLimitResponse response;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + deadline);
  return stub->ShouldRateLimit(&context, request, &response);
}

// Out of descriptors, the gRPC door stops accepting and serves new
// connections again once descriptors are free. tallyd's own server (nghttp2)
// backs off like the other doors. gRPC's server before 1.57 (Debian 12 ships
// 1.51) stops accepting for good once an accept fails for want of a
// descriptor (grpc issue 20418); tallyd notices (daemon/rls/
// grpc_listener_probe.h) and rebuilds it on the same port.
void AcceptFdExhaustionTest::CheckGrpcDoorRecovers(const std::string& server) {
  const std::string rules = dir_.File("rules.yaml");
  std::ofstream(rules) << "domain: edge\ndescriptors:\n  - key: remote_address\n"
                          "    rate_limit: {unit: second, requests_per_unit: 1000}\n";
  std::string error;
  ASSERT_TRUE(tallyd_.Start({"--nofile=" + std::to_string(kFdLimit),
                             TallydPath(),
                             "--udp",
                             "127.0.0.1:0",
                             "--unix",
                             "none",
                             "--unix-seq",
                             "none",
                             "--grpc",
                             "127.0.0.1:0",
                             "--grpc-server",
                             server,
                             "--http",
                             "127.0.0.1:0",
                             "--rules",
                             rules,
                             "--state-dir",
                             "none",
                             "--stats-interval-s",
                             "0"},
                            &error, std::chrono::seconds(15), "/usr/bin/prlimit"))
      << error;
  const std::string grpc_address = tallyd_.grpc_address();
  ASSERT_FALSE(grpc_address.empty()) << tallyd_.listening_line();
  ASSERT_TRUE(CallOnNewChannel(grpc_address, ScaledWait(std::chrono::seconds(5))).ok());

  // Out of descriptors, a new gRPC connection waits in the backlog and
  // gRPC's accept of it fails.
  for (int i = 0; i < kFillConnections; ++i) {
    const int fd = ConnectTcp(tallyd_.http_address());
    ASSERT_GE(fd, 0) << strerror(errno);
    client_fds_.push_back(fd);
  }
  ASSERT_GE(WaitForCounter("accept_fd_exhausted_http", 1), 1u);
  // A descriptor can come free meanwhile (the probe's own socket closing, one
  // the HTTP door's backoff left unclaimed) and gRPC take it, so a call may
  // still get through: then fill more, until one fails, as it must once
  // gRPC's accept has failed for want of a descriptor.
  bool refused = false;
  for (int round = 0; round < 20 && !refused; ++round) {
    refused = !CallOnNewChannel(grpc_address, std::chrono::milliseconds(500)).ok();
    for (int i = 0; i < 8 && !refused; ++i) {
      const int fd = ConnectTcp(tallyd_.http_address());
      ASSERT_GE(fd, 0) << strerror(errno);
      client_fds_.push_back(fd);
    }
  }
  EXPECT_TRUE(refused) << "gRPC kept accepting with the descriptors exhausted";

  // Descriptors free again: a new connection is served within the probe's
  // schedule (two silent probes, then a rebuild).
  for (int fd : client_fds_) close(fd);
  client_fds_.clear();
  const auto deadline = Clock::now() + ScaledWait(std::chrono::seconds(20));
  bool served = false;
  while (!served && Clock::now() < deadline) {
    served = CallOnNewChannel(grpc_address, std::chrono::milliseconds(500)).ok();
  }
  EXPECT_TRUE(served);
  const std::string metrics = HttpGet(tallyd_.http_address(), "/metrics").body;
  const std::string kRestarts = "\ntally_grpc_listener_restarts_total ";
  const size_t at = metrics.find(kRestarts);
  ASSERT_NE(at, std::string::npos) << metrics;
  // Only gRPC's own server needs rebuilding.
  EXPECT_EQ(std::stoull(metrics.substr(at + kRestarts.size())) >= 1, server == "grpc") << metrics;
  EXPECT_EQ(tallyd_.Stop(), 0);
}

TEST_F(AcceptFdExhaustionTest, TheGrpcDoorAcceptsNewConnectionsAgainAfterwards) {
  CheckGrpcDoorRecovers("nghttp2");
}

TEST_F(AcceptFdExhaustionTest, GrpcsOwnServerIsRebuiltToAcceptAgain) {
  CheckGrpcDoorRecovers("grpc");
}

}  // namespace
}  // namespace tally::testing

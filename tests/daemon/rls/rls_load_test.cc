// tally-load --grpc and --http (bench/rls_load.h) against a real tallyd with
// a rules file: what they count is what tallyd decided. Each value of a
// descriptor key has a limit of 7 per hour, so a run over --keys 3 values gets
// exactly 21 OKs and every other call is over the limit, through either door.
// Correctness only: nothing here depends on how fast a run is.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;

const std::string kTallyLoad = std::string(TALLY_BIN_DIR) + "/tally-load";

// One key per door, so each run sees only its own counts.
constexpr const char* kRules = R"(domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 7, name: per_address}
  - key: client_id
    rate_limit: {unit: hour, requests_per_unit: 7, name: per_client}
)";

constexpr uint64_t kValues = 3;
constexpr uint64_t kAllowedPerValue = 7;

class RlsLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::ofstream(dir_.File("rules.yaml")) << kRules;
    std::string error;
    ASSERT_TRUE(
        tallyd_.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none",
                       "--state-dir", "none", "--stats-interval-s", "0", "--grpc", "127.0.0.1:0",
                       "--http", "127.0.0.1:0", "--rules", dir_.File("rules.yaml")},
                      &error))
        << error;
    ASSERT_FALSE(tallyd_.grpc_address().empty()) << tallyd_.listening_line();
    ASSERT_FALSE(tallyd_.http_address().empty()) << tallyd_.listening_line();
  }
  void TearDown() override { EXPECT_EQ(tallyd_.Stop(), 0); }

  // Runs tally-load with a generous per-call timeout (a slow call under a
  // sanitizer must not become an error) and parses its one JSON object.
  json::object Run(const std::string& door, const std::string& address, const std::string& key,
                   const std::vector<std::string>& more = {}) {
    std::vector<std::string> args = {
        "--" + door,    address, "--descriptor-key", key, "--keys",       std::to_string(kValues),
        "--duration-s", "0.5",   "--in-flight",      "8", "--timeout-ms", "30000",
        "--json"};
    args.insert(args.end(), more.begin(), more.end());
    ProcessResult r = RunProcess(kTallyLoad, args, std::chrono::seconds(60));
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    json::value v;
    try {
      v = json::parse(r.out);
    } catch (const std::exception& e) {
      ADD_FAILURE() << "not JSON: " << r.out << r.err;
      return {};
    }
    EXPECT_TRUE(v.is_object()) << r.out;
    return v.is_object() ? v.as_object() : json::object{};
  }

  static uint64_t Count(const json::object& o, const char* field) {
    const json::value* v = o.if_contains(field);
    EXPECT_TRUE(v != nullptr && v->is_number()) << field << " in " << json::serialize(o);
    return v != nullptr && v->is_number() ? v->to_number<uint64_t>() : 0;
  }

  // The whole contract of one decided run on a fresh key.
  void ExpectExactlyTheLimit(const json::object& o, const std::string& door) {
    const uint64_t calls = Count(o, "calls");
    EXPECT_EQ(o.at("door"), door.c_str());
    EXPECT_EQ(Count(o, "errors"), 0u) << json::serialize(o);
    EXPECT_EQ(Count(o, "ok"), kValues * kAllowedPerValue) << json::serialize(o);
    EXPECT_GT(calls, kValues * kAllowedPerValue) << json::serialize(o);
    EXPECT_EQ(Count(o, "over_limit"), calls - kValues * kAllowedPerValue) << json::serialize(o);
    EXPECT_EQ(Count(o, "in_flight"), 8u);
    for (const char* field : {"seconds", "throughput_rps", "p50_us", "p99_us", "p999_us"}) {
      ASSERT_TRUE(o.contains(field)) << field;
      EXPECT_TRUE(o.at(field).is_number()) << field;
    }
  }

  TempDir dir_;
  DaemonProcess tallyd_;
};

TEST_F(RlsLoadTest, GrpcCountsExactlyWhatTallydDecided) {
  json::object o = Run("grpc", tallyd_.grpc_address(), "remote_address");
  ExpectExactlyTheLimit(o, "grpc");
  EXPECT_EQ(Count(o, "channels"), 4u);  // the default
}

// The same contract through gRPC's own C++ client (the default is nghttp2).
TEST_F(RlsLoadTest, GrpcPlusPlusClientCountsExactlyWhatTallydDecided) {
  json::object o = Run("grpc", tallyd_.grpc_address(), "remote_address",
                       {"--grpc-client", "grpc++", "--channels", "2"});
  ExpectExactlyTheLimit(o, "grpc");
  EXPECT_EQ(Count(o, "channels"), 2u);
}

// More calls in flight than one connection's share, over one connection:
// nghttp2's client keeps them all open as streams of that connection.
TEST_F(RlsLoadTest, NghttpClientOnOneConnectionCountsExactly) {
  json::object o = Run("grpc", tallyd_.grpc_address(), "remote_address", {"--channels", "1"});
  ExpectExactlyTheLimit(o, "grpc");
  EXPECT_EQ(Count(o, "channels"), 1u);
}

TEST_F(RlsLoadTest, HttpCountsExactlyWhatTallydDecided) {
  json::object o = Run("http", tallyd_.http_address(), "client_id");
  ExpectExactlyTheLimit(o, "http");
  EXPECT_EQ(Count(o, "channels"), 8u);  // one connection per call in flight
}

TEST_F(RlsLoadTest, BothDoorsCountIntoTheSameLimits) {
  // gRPC first uses up remote_address's three values; HTTP on the same key
  // then finds every value over the limit.
  ExpectExactlyTheLimit(Run("grpc", tallyd_.grpc_address(), "remote_address"), "grpc");
  ProcessResult r = RunProcess(kTallyLoad,
                               {"--http", tallyd_.http_address(), "--keys", "3", "--duration-s",
                                "0.2", "--in-flight", "4", "--timeout-ms", "30000", "--json"},
                               std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  json::object o = json::parse(r.out).as_object();
  EXPECT_EQ(Count(o, "ok"), 0u) << r.out;
  EXPECT_EQ(Count(o, "errors"), 0u) << r.out;
  EXPECT_EQ(Count(o, "over_limit"), Count(o, "calls")) << r.out;
}

TEST_F(RlsLoadTest, AKeyNoRuleLimitsIsAlwaysOk) {
  for (const auto& [door, address] :
       {std::pair<std::string, std::string>{"grpc", tallyd_.grpc_address()},
        {"http", tallyd_.http_address()}}) {
    json::object o = Run(door, address, "nothing");
    EXPECT_EQ(Count(o, "errors"), 0u) << door;
    EXPECT_EQ(Count(o, "over_limit"), 0u) << door;
    EXPECT_EQ(Count(o, "ok"), Count(o, "calls")) << door;
    EXPECT_GT(Count(o, "calls"), 0u) << door;
  }
}

TEST_F(RlsLoadTest, HumanOutputIsOneLine) {
  ProcessResult r =
      RunProcess(kTallyLoad,
                 {"--grpc", tallyd_.grpc_address(), "--descriptor-key", "nothing", "--duration-s",
                  "0.2", "--in-flight", "2", "--channels", "2", "--timeout-ms", "30000"},
                 std::chrono::seconds(60));
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.find('\n'), r.out.size() - 1) << r.out;
  for (const char* field : {"grpc ", "calls=", "throughput_rps=", "p50_us=", "p99_us=", "p999_us=",
                            "ok=", "over_limit=0 ", "errors=0 ", "channels=2"}) {
    EXPECT_THAT(r.out, HasSubstr(field));
  }
}

struct UsageCase {
  std::vector<std::string> args;
  std::string message;
};

TEST(RlsLoadUsageTest, BadFlagsExitTwoWithAMessage) {
  const std::vector<UsageCase> cases = {
      {{"--grpc", "127.0.0.1:8081", "--udp", "127.0.0.1:7070"}, "excludes --udp and --unix"},
      {{"--http", "127.0.0.1:8080", "--unix", "/tmp/x.sock"}, "excludes --udp and --unix"},
      {{"--grpc", "127.0.0.1:8081", "--http", "127.0.0.1:8080"}, "exclude each other"},
      {{"--grpc", "127.0.0.1:8081", "--channels", "0"}, "--channels must be 1..256"},
      {{"--http", "127.0.0.1:8080", "--channels", "2"}, "--channels is for --grpc"},
      {{"--grpc", "localhost"}, "bad --grpc address"},
      {{"--http", "127.0.0.1:0"}, "bad --http address"},
      {{"--grpc", "127.0.0.1:8081", "--keys", "0"}, "--keys must be"},
      {{"--grpc", "127.0.0.1:8081", "--domain", ""}, "--domain must not be empty"},
      {{"--grpc", "127.0.0.1:8081", "--batch", "4"}, "--batch is for the Cap'n Proto doors"},
      {{"--udp", "127.0.0.1:7070", "--domain", "edge"}, "--domain is for --grpc and --http"},
      {{"--channels", "2"}, "--channels is for --grpc and --http"},
      {{"--grpc", "127.0.0.1:8081", "--grpc-client", "grpc"}, "must be nghttp2 or grpc++"},
      {{"--http", "127.0.0.1:8080", "--grpc-client", "grpc++"}, "--grpc-client is for --grpc"},
      {{"--udp", "127.0.0.1:7070", "--grpc-client", "nghttp2"}, "--grpc-client is for --grpc"},
  };
  for (const UsageCase& c : cases) {
    ProcessResult r = RunProcess(kTallyLoad, c.args);
    std::string joined;
    for (const std::string& a : c.args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr(c.message)) << joined;
  }
}

// A TCP socket bound on loopback, listening or not, closed on destruction:
// a door that refuses connections, or one that accepts and never answers.
class LoopbackSocket {
 public:
  explicit LoopbackSocket(bool listening) : fd_(socket(AF_INET, SOCK_STREAM, 0)) {
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
        (listening && listen(fd_, 16) != 0) ||
        getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      return;
    }
    target_ = "127.0.0.1:" + std::to_string(ntohs(address.sin_port));
  }
  ~LoopbackSocket() {
    if (fd_ >= 0) close(fd_);
  }
  // HOST:PORT, or "" if the socket could not be set up.
  const std::string& target() const { return target_; }

 private:
  int fd_;
  std::string target_;
};

// A door nobody answers on is a setup error (2), not a run of errors.
TEST(RlsLoadUsageTest, HttpDoorThatRefusesIsASetupError) {
  // A bound TCP socket that does not listen: connecting to it is refused.
  const LoopbackSocket door(/*listening=*/false);
  const std::string& target = door.target();
  ASSERT_FALSE(target.empty());
  ProcessResult r = RunProcess(kTallyLoad, {"--http", target, "--duration-s", "0.2"});
  EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
  EXPECT_THAT(r.err, HasSubstr("cannot connect to " + target));
}

// A gRPC door that accepts connections but never speaks HTTP/2 (a listening
// socket nobody accepts on: the kernel completes the handshake, no SETTINGS
// ever come) is a setup error with either client, not a run of errors.
TEST(RlsLoadUsageTest, GrpcDoorThatNeverSpeaksIsASetupError) {
  const LoopbackSocket door(/*listening=*/true);
  const std::string& target = door.target();
  ASSERT_FALSE(target.empty());
  for (const char* client : {"nghttp2", "grpc++"}) {
    ProcessResult r = RunProcess(
        kTallyLoad,
        {"--grpc", target, "--grpc-client", client, "--duration-s", "0.2", "--channels", "1"},
        std::chrono::seconds(60));
    EXPECT_EQ(r.exit_code, 2) << client << r.out << r.err;
    EXPECT_THAT(r.err, HasSubstr("cannot connect to " + target)) << client;
  }
}

}  // namespace
}  // namespace tally::testing

// tally-load smoke runs: it works end to end (not how fast).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally {
namespace {

using testing::DaemonProcess;
using testing::ProcessResult;
using testing::TempDir;

const std::string kLoad = std::string(TALLY_BIN_DIR) + "/tally-load";

boost::json::object ParseObject(const std::string& text) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(text, ec);
  EXPECT_FALSE(ec) << "not JSON: " << text;
  EXPECT_TRUE(value.is_object()) << text;
  return value.is_object() ? value.as_object() : boost::json::object();
}

double Throughput(boost::json::object& object, const char* run) {
  if (!object[run].is_object()) return 0;
  return object[run].as_object()["throughput_rps"].to_number<double>();
}

class LoadSmokeTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(daemon_.Start(
        {"--udp", "127.0.0.1:0", "--unix", dir_.File("d.sock"), "--unix-seq", dir_.File("d.seq")},
        &error))
        << error;
    udp_ = "127.0.0.1:" + std::to_string(daemon_.udp_port());
  }

  TempDir dir_;
  DaemonProcess daemon_;
  std::string udp_;
};

TEST_F(LoadSmokeTest, UdpPlainOutput) {
  ProcessResult result = testing::RunProcess(
      kLoad, {"--udp", udp_, "--duration-s", "0.3", "--in-flight", "8", "--keys", "1000"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  size_t at = result.out.find("throughput_rps=");
  ASSERT_NE(at, std::string::npos) << result.out;
  EXPECT_GT(std::stod(result.out.substr(at + 15)), 0) << result.out;
}

TEST_F(LoadSmokeTest, UdpCompareEchoJson) {
  ProcessResult result = testing::RunProcess(
      kLoad, {"--udp", udp_, "--duration-s", "0.3", "--compare-echo", "--json", "--dist", "zipf",
              "--keys", "10000", "--threads", "2", "--batch", "4", "--limit", "5"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_GT(Throughput(object, "echo"), 0) << result.out;
  EXPECT_GT(object["throughput_ratio"].to_number<double>(), 0);
  EXPECT_GT(object["p99_ratio"].to_number<double>(), 0);
  EXPECT_TRUE(object["note"].is_string());
  // A hot zipf key with limit 5 gets denied.
  EXPECT_GT(object["tallyd"].as_object()["denied"].to_number<int64_t>(), 0) << result.out;
}

TEST_F(LoadSmokeTest, UnixSeqpacketCompareEcho) {
  ProcessResult result =
      testing::RunProcess(kLoad, {"--unix", daemon_.seq_path(), "--duration-s", "0.3",
                                  "--compare-echo", "--json", "--in-flight", "16"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_GT(Throughput(object, "echo"), 0) << result.out;
  EXPECT_EQ(object["config"].as_object()["transport"], "unix-seqpacket");
}

TEST_F(LoadSmokeTest, UnixDatagram) {
  ProcessResult result = testing::RunProcess(
      kLoad, {"--unix", daemon_.unix_path(), "--duration-s", "0.3", "--json", "--in-flight", "4"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_EQ(object["config"].as_object()["transport"], "unix-dgram");
}

// A single node owns every key: `local` keeps the first K candidates, `remote`
// finds none and fails before any load (the cluster case:
// tests/cluster/load_owner_filter_test.cc).
TEST_F(LoadSmokeTest, OwnerFilterOnASingleNode) {
  ProcessResult local = testing::RunProcess(kLoad, {"--udp", udp_, "--duration-s", "0.2", "--json",
                                                    "--keys", "50", "--owner-filter", "local"});
  ASSERT_EQ(local.exit_code, 0) << local.err;
  boost::json::object object = ParseObject(local.out);
  boost::json::object& config = object["config"].as_object();
  EXPECT_EQ(config["owner_filter"], "local");
  EXPECT_EQ(config["keys"].to_number<int64_t>(), 50);
  EXPECT_EQ(config["keys_examined"].to_number<int64_t>(), 50);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << local.out;

  ProcessResult plain = testing::RunProcess(
      kLoad, {"--udp", udp_, "--duration-s", "0.1", "--keys", "5", "--owner-filter", "local"});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(plain.out.find("owner_filter=local kept=5 examined=5"), std::string::npos) << plain.out;

  ProcessResult remote = testing::RunProcess(
      kLoad, {"--udp", udp_, "--duration-s", "0.1", "--keys", "3", "--owner-filter", "remote"});
  EXPECT_EQ(remote.exit_code, 2) << remote.out;
  EXPECT_NE(remote.err.find("only 0 of the 192 keys examined pass the owner filter 'remote'"),
            std::string::npos)
      << remote.err;

  ProcessResult bad = testing::RunProcess(kLoad, {"--udp", udp_, "--owner-filter", "mine"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.err.find("--owner-filter"), std::string::npos) << bad.err;
}

TEST(LoadEchoServerTest, ServesLoadAndStopsOnSigterm) {
  TempDir dir;
  DaemonProcess echo;
  std::string error;
  ASSERT_TRUE(echo.Start({"--echo-server", "--echo-kind", "daemon", "--udp", "127.0.0.1:0",
                          "--unix-seq", dir.File("e.seq")},
                         &error, std::chrono::seconds(15), kLoad))
      << error;
  ASSERT_NE(echo.udp_port(), 0);
  ProcessResult result = testing::RunProcess(
      kLoad,
      {"--udp", "127.0.0.1:" + std::to_string(echo.udp_port()), "--duration-s", "0.2", "--json"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_EQ(echo.Stop(), 0);
}

// The plain echo server (the wire's floor) as a process of its own: UDP and
// seqpacket, each answering a real load run, and stopping on SIGTERM.
TEST(LoadEchoServerTest, PlainEchoServesUdpAndSeqpacket) {
  TempDir dir;
  std::string error;
  DaemonProcess udp;
  ASSERT_TRUE(
      udp.Start({"--echo-server", "--udp", "127.0.0.1:0"}, &error, std::chrono::seconds(15), kLoad))
      << error;
  ASSERT_NE(udp.udp_port(), 0);
  ProcessResult result =
      testing::RunProcess(kLoad, {"--udp", "127.0.0.1:" + std::to_string(udp.udp_port()),
                                  "--duration-s", "0.2", "--json", "--in-flight", "8"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_EQ(udp.Stop(), 0);

  DaemonProcess seq;
  ASSERT_TRUE(seq.Start({"--echo-server", "--unix-seq", dir.File("plain.seq")}, &error,
                        std::chrono::seconds(15), kLoad))
      << error;
  result = testing::RunProcess(kLoad, {"--unix", dir.File("plain.seq"), "--duration-s", "0.2",
                                       "--json", "--in-flight", "4"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  object = ParseObject(result.out);
  EXPECT_GT(Throughput(object, "tallyd"), 0) << result.out;
  EXPECT_EQ(object["config"].as_object()["transport"], "unix-seqpacket");
  EXPECT_EQ(seq.Stop(), 0);

  // One transport at a time.
  ProcessResult two = testing::RunProcess(
      kLoad, {"--echo-server", "--udp", "127.0.0.1:0", "--unix-seq", dir.File("x.seq")});
  EXPECT_EQ(two.exit_code, 2);
  EXPECT_NE(two.err.find("one of"), std::string::npos) << two.err;
}

TEST_F(LoadSmokeTest, CompareWithEitherEchoKind) {
  for (const char* kind : {"plain", "daemon"}) {
    ProcessResult result = testing::RunProcess(
        kLoad, {"--unix", daemon_.unix_path(), "--duration-s", "0.2", "--compare-echo",
                "--echo-kind", kind, "--json", "--in-flight", "4"});
    ASSERT_EQ(result.exit_code, 0) << kind << ": " << result.err;
    boost::json::object object = ParseObject(result.out);
    EXPECT_GT(Throughput(object, "echo"), 0) << result.out;
    EXPECT_NE(std::string(object["note"].as_string())
                  .find(std::string(kind) == "plain" ? "plain echo server" : "--echo mode"),
              std::string::npos)
        << result.out;
  }
  ProcessResult pinned = testing::RunProcess(
      kLoad, {"--udp", udp_, "--duration-s", "0.1", "--compare-echo", "--echo-cpu", "0", "--json"});
  ASSERT_EQ(pinned.exit_code, 0) << pinned.err;
  EXPECT_NE(pinned.out.find("cpu 0"), std::string::npos) << pinned.out;
  ProcessResult bad = testing::RunProcess(kLoad, {"--udp", udp_, "--echo-kind", "fast"});
  EXPECT_EQ(bad.exit_code, 2);
}

TEST(LoadUsageTest, BadFlagsExitTwo) {
  for (const std::vector<std::string>& args :
       std::vector<std::vector<std::string>>{{"--dist", "pareto"},
                                             {"--in-flight", "0"},
                                             {"--duration-s", "-1"},
                                             {"--udp", "127.0.0.1:0"},
                                             {"--batch", "0"},
                                             {"--nope"},
                                             {"--help"}}) {
    SCOPED_TRACE(args[0]);
    EXPECT_EQ(testing::RunProcess(kLoad, args).exit_code, 2);
  }
  // A dead target fails fast with a message, not a silent run of timeouts.
  ProcessResult dead =
      testing::RunProcess(kLoad, {"--unix", "/nonexistent/t.sock", "--duration-s", "0.1"});
  EXPECT_EQ(dead.exit_code, 2);
  EXPECT_NE(dead.err.find("/nonexistent/t.sock"), std::string::npos) << dead.err;
}

}  // namespace
}  // namespace tally

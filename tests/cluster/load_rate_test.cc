// tally-load --rate (open loop) against a real tallyd: the schedule is kept
// (checks sent = rate x duration, whatever the replies), and a target that
// stalls (SIGSTOP) does not slow the sending: its unanswered checks count as
// timeouts. The soak (bench/soak.sh) relies on both.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <string>
#include <thread>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

const std::string kLoad = std::string(TALLY_BIN_DIR) + "/tally-load";

boost::json::object Json(const ProcessResult& result) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(result.out, ec);
  EXPECT_FALSE(ec) << "not JSON: " << result.out << result.err;
  return value.is_object() ? value.as_object() : boost::json::object();
}

int64_t Field(boost::json::object& o, const char* name) {
  return o["tallyd"].as_object()[name].to_number<int64_t>();
}

class LoadRateTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(daemon_.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none",
                               "--node-id", "solo", "--threads", "1", "--stats-interval-s", "0"},
                              &error))
        << error;
  }
  // 2000 checks/s for `seconds`: 2000 x seconds checks are due.
  ProcessResult Run(const std::string& timeout_ms, const std::string& seconds = "2") {
    return RunProcess(
        kLoad,
        {"--udp", "127.0.0.1:" + std::to_string(daemon_.udp_port()), "--rate", "2000",
         "--duration-s", seconds, "--keys", "1000", "--timeout-ms", timeout_ms, "--json"},
        std::chrono::seconds(20));
  }

  DaemonProcess daemon_;
};

TEST_F(LoadRateTest, SendsTheRateAskedAndCountsTheReplies) {
  ProcessResult r = Run("1000");
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  boost::json::object o = Json(r);
  EXPECT_EQ(o["config"].as_object()["rate"].to_number<double>(), 2000.0);
  const int64_t sent = Field(o, "sent");
  // Datagram k is due at k x 0.5 ms, for k x 0.5 ms < 2 s: 4000, each sent
  // (or counted as a failed send in errors) even if the sender fell behind.
  EXPECT_LE(sent, 4000);
  EXPECT_GE(sent + Field(o, "errors"), 4000);
  EXPECT_GT(Field(o, "completed"), 0);
  EXPECT_LE(Field(o, "completed") + Field(o, "timeouts"), sent);
  // sent_rps is sent over the run's wall time (which a busy machine
  // stretches past 2 s, so it is not compared with the rate itself).
  const double elapsed_s = o["tallyd"].as_object()["elapsed_s"].to_number<double>();
  EXPECT_NEAR(o["tallyd"].as_object()["sent_rps"].to_number<double>(),
              static_cast<double>(sent) / elapsed_s, 1.0);  // elapsed_s is rounded to 1 ms
}

TEST_F(LoadRateTest, KeepsSendingWhileTheTargetIsStopped) {
  // tallyd stopped for 0.8 s once the run is under way (it has decided 200
  // checks: 0.1 s in, after tally-load's start and probe): a closed loop
  // would send nothing meanwhile; the open loop sends on, and what it sent
  // in the first 0.5 s of the stop gets no reply within 300 ms (1000
  // checks), counted as timeouts while the run goes on (4 s in all).
  const DaemonAddress address =
      *DaemonAddress::ParseUdp("127.0.0.1:" + std::to_string(daemon_.udp_port()));
  std::atomic<bool> stopped{false};
  std::thread stall([&] {
    stopped = PollUntil(std::chrono::seconds(10), [&] {
      std::optional<wire::StatusReport> s = QueryStatusHere(address);
      return s.has_value() && CounterIn(*s, "checks") >= 200;
    });
    if (!stopped) return;
    daemon_.Signal(SIGSTOP);
    std::this_thread::sleep_for(std::chrono::milliseconds(800));  // the fault's length
    daemon_.Signal(SIGCONT);
  });
  ProcessResult r = Run("300", "4");
  stall.join();
  ASSERT_TRUE(stopped) << "the run never reached 200 checks";
  ASSERT_EQ(r.exit_code, 0) << r.err << r.out;
  boost::json::object o = Json(r);
  EXPECT_LE(Field(o, "sent"), 8000);
  EXPECT_GE(Field(o, "sent") + Field(o, "errors"), 8000);
  // Half the 1000: the stop lands a few ms after the poll saw 200.
  EXPECT_GE(Field(o, "timeouts"), 500) << r.out;
}

}  // namespace
}  // namespace tally::testing

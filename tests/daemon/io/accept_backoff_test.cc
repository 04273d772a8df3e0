// AcceptBackoff (daemon/io/accept_backoff.h): the delay schedule after failed
// accepts, what it counts, and the bound a real acceptor is held to. The
// doors using it are tested against a tallyd short of descriptors in
// tests/daemon/rls/accept_fd_exhaustion_test.cc.
#include "daemon/io/accept_backoff.h"

#include <gtest/gtest.h>
#include <spdlog/sinks/ringbuffer_sink.h>
#include <spdlog/spdlog.h>

#include <cerrno>
#include <vector>

namespace tally::io {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

TEST(AcceptBackoffTest, DelayDoublesFromTenMillisecondsToOneSecond) {
  std::atomic<uint64_t> exhausted{0};
  AcceptBackoff backoff("test", &exhausted);
  const Clock::time_point t0{};
  std::vector<int64_t> delays;
  for (int i = 0; i < 10; ++i) delays.push_back(backoff.Failed(EMFILE, t0).count());
  EXPECT_EQ(delays, (std::vector<int64_t>{10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000}));
  EXPECT_EQ(exhausted.load(), 10u);
}

TEST(AcceptBackoffTest, AnAcceptedConnectionStartsTheScheduleOver) {
  AcceptBackoff backoff("test", nullptr);  // nothing to count: no crash
  const Clock::time_point t0{};
  backoff.Failed(ENFILE, t0);
  backoff.Failed(ENFILE, t0);
  EXPECT_EQ(backoff.Failed(ENFILE, t0), milliseconds(40));
  backoff.Succeeded();
  EXPECT_EQ(backoff.Failed(ENFILE, t0), milliseconds(10));
}

TEST(AcceptBackoffTest, CountsOnlyWantOfDescriptors) {
  std::atomic<uint64_t> exhausted{0};
  AcceptBackoff backoff("test", &exhausted);
  const Clock::time_point t0{};
  // Kernel memory shortage backs off too, but is not fd exhaustion.
  EXPECT_EQ(backoff.Failed(ENOBUFS, t0), milliseconds(10));
  EXPECT_EQ(backoff.Failed(ENOMEM, t0), milliseconds(20));
  EXPECT_EQ(exhausted.load(), 0u);
  backoff.Failed(EMFILE, t0);
  backoff.Failed(ENFILE, t0);
  EXPECT_EQ(exhausted.load(), 2u);
  EXPECT_TRUE(AcceptBackoff::IsFdExhaustion(EMFILE));
  EXPECT_TRUE(AcceptBackoff::IsFdExhaustion(ENFILE));
  EXPECT_FALSE(AcceptBackoff::IsFdExhaustion(ENOBUFS));
}

TEST(AcceptBackoffTest, LogsAtMostOnceAMinute) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(100);
  const std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("accept_backoff_test", sink));
  AcceptBackoff backoff("test", nullptr);
  const Clock::time_point t0{};
  for (int i = 0; i < 50; ++i) backoff.Failed(EMFILE, t0 + std::chrono::seconds(i));
  backoff.Failed(EMFILE, t0 + std::chrono::seconds(60));
  const std::vector<std::string> lines = sink->last_formatted();
  spdlog::set_default_logger(previous);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[0].find("test accept failed"), std::string::npos) << lines[0];
  // The second line says how many failures it stands for.
  EXPECT_NE(lines[1].find("50 failures since the last such line"), std::string::npos) << lines[1];
}

TEST(AcceptBackoffTest, MaxFailuresWithinFollowsTheSchedule) {
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(0)), 1u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(9)), 1u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(10)), 2u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(29)), 2u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(30)), 3u);
  // 10+20+...+640 = 1270 ms for 8 failures, then one a second.
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(1270)), 8u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(2270)), 9u);
  EXPECT_EQ(AcceptBackoff::MaxFailuresWithin(milliseconds(60'000)), 8u + 58u);
}

}  // namespace
}  // namespace tally::io

#include "daemon/core/forward_rtt.h"

#include <gtest/gtest.h>

namespace tally::core {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kFloor = 30 * kMs;
constexpr int64_t kMax = 120 * kMs;

TEST(ForwardRttTest, WithoutSamplesTheTimeoutIsTheFloor) {
  ForwardRtt rtt;
  EXPECT_EQ(rtt.samples(), 0u);
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), kFloor);
}

TEST(ForwardRttTest, TheFirstSampleSetsSrttAndHalfItAsDeviation) {
  // RFC 6298 2.2: srtt = R, rttvar = R / 2, so the timeout is 3 R.
  ForwardRtt rtt;
  rtt.Sample(20 * kMs);
  EXPECT_EQ(rtt.srtt_ns(), 20 * kMs);
  EXPECT_EQ(rtt.rttvar_ns(), 10 * kMs);
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), 60 * kMs);
}

TEST(ForwardRttTest, TheTimeoutIsClampedToTheFloorAndTheMaximum) {
  ForwardRtt fast;
  fast.Sample(1 * kMs);  // 3 ms, below the floor
  EXPECT_EQ(fast.TimeoutNs(kFloor, kMax), kFloor);
  ForwardRtt slow;
  slow.Sample(100 * kMs);  // 300 ms, above the maximum
  EXPECT_EQ(slow.TimeoutNs(kFloor, kMax), kMax);
  // A maximum at the floor is a fixed timeout.
  EXPECT_EQ(slow.TimeoutNs(kFloor, kFloor), kFloor);
}

TEST(ForwardRttTest, SteadySamplesConvergeAndTheDeviationDecays) {
  ForwardRtt rtt;
  for (int i = 0; i < 100; ++i) rtt.Sample(10 * kMs);
  EXPECT_EQ(rtt.srtt_ns(), 10 * kMs);
  EXPECT_LT(rtt.rttvar_ns(), kMs / 100);  // 5 ms x (3/4)^99, integer steps
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), kFloor);
  EXPECT_EQ(rtt.samples(), 100u);
}

TEST(ForwardRttTest, SmoothingFollowsRfc6298) {
  ForwardRtt rtt;
  rtt.Sample(40 * kMs);  // srtt 40, rttvar 20
  rtt.Sample(24 * kMs);  // rttvar = 3/4 20 + 1/4 16 = 19; srtt = 40 - 16/8 = 38
  EXPECT_EQ(rtt.rttvar_ns(), 19 * kMs);
  EXPECT_EQ(rtt.srtt_ns(), 38 * kMs);
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), 114 * kMs);
}

TEST(ForwardRttTest, JitteryRoundTripsKeepTheTimeoutAboveTheirSpread) {
  // Round trips alternating 25 and 35 ms: srtt settles near 30 and the
  // deviation near 5, so the timeout stays near 50 ms, above every sample,
  // where a fixed 30 ms gives up on half of them.
  ForwardRtt rtt;
  for (int i = 0; i < 200; ++i) rtt.Sample((i % 2 == 0 ? 25 : 35) * kMs);
  EXPECT_NEAR(static_cast<double>(rtt.srtt_ns()), 30.0 * kMs, 1.0 * kMs);
  EXPECT_NEAR(static_cast<double>(rtt.rttvar_ns()), 5.0 * kMs, 0.5 * kMs);
  EXPECT_GT(rtt.TimeoutNs(kFloor, kMax), 45 * kMs);
  EXPECT_LT(rtt.TimeoutNs(kFloor, kMax), 55 * kMs);
}

TEST(ForwardRttTest, ADeviationSpikeRaisesTheTimeoutAndDecaysAfter) {
  ForwardRtt rtt;
  for (int i = 0; i < 50; ++i) rtt.Sample(5 * kMs);
  rtt.Sample(45 * kMs);  // one slow reply: rttvar += (40 - rttvar) / 4
  const int64_t after_spike = rtt.TimeoutNs(kFloor, kMax);
  EXPECT_GT(after_spike, 45 * kMs);
  for (int i = 0; i < 30; ++i) rtt.Sample(5 * kMs);
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), kFloor);
}

TEST(ForwardRttTest, AbsurdSamplesNeitherOverflowNorGoNegative) {
  ForwardRtt rtt;
  rtt.Sample(-5 * kMs);  // a driver's clock handed backwards: 0
  EXPECT_EQ(rtt.srtt_ns(), 0);
  rtt.Sample(INT64_MAX);
  rtt.Sample(INT64_MAX);
  EXPECT_GT(rtt.srtt_ns(), 0);
  EXPECT_EQ(rtt.TimeoutNs(kFloor, kMax), kMax);
}

}  // namespace
}  // namespace tally::core

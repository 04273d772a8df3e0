// The AIMD law of an adaptive limit (rules/adaptive.h): one step per closed
// interval, its bounds and its holds, and the reports it refuses.
#include "rules/adaptive.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace tally::rules {
namespace {

using Step = AdaptiveLimit::Step;
using Report = AdaptiveLimit::ReportResult;

// Latency, target 50 ms, limits 10..1000 per second, 1 s intervals.
AdaptiveConfig Latency() {
  AdaptiveConfig c;
  c.min_limit = 10;
  c.max_limit = 1000;
  c.signal = AdaptiveSignal::kLatencyMs;
  c.target = 50;
  c.window_ms = 1000;
  c.interval_ms = 1000;
  c.increase_step = 10;
  c.decrease_factor = 0.9;
  c.min_samples = 20;
  return c;
}

TEST(AdaptiveLimitTest, DefaultsFollowTheRule) {
  const AdaptiveConfig c =
      AdaptiveConfigFor(AdaptiveSpec{5, 2050, AdaptiveSignal::kErrorRate, 0.05}, 60000);
  EXPECT_TRUE(c.Valid());
  EXPECT_EQ(c.min_limit, 5u);
  EXPECT_EQ(c.max_limit, 2050u);
  EXPECT_EQ(c.signal, AdaptiveSignal::kErrorRate);
  EXPECT_EQ(c.target, 0.05);
  EXPECT_EQ(c.window_ms, 60000u);
  EXPECT_EQ(c.interval_ms, 1000u);
  EXPECT_EQ(c.increase_step, 21u);  // ceil(2050 / 100)
  EXPECT_EQ(c.decrease_factor, 0.9);
  EXPECT_EQ(c.min_samples, 20u);
  EXPECT_EQ(DefaultIncreaseStep(1), 1u);
  EXPECT_EQ(DefaultIncreaseStep(100), 1u);
  EXPECT_EQ(DefaultIncreaseStep(101), 2u);
  EXPECT_EQ(DefaultIncreaseStep(UINT32_MAX), 42949673u);
}

TEST(AdaptiveLimitTest, TheIntervalClosesOnlyWhenItHasLasted) {
  AdaptiveLimit a(Latency(), 500, 10000);
  EXPECT_EQ(a.limit(), 500u);
  EXPECT_EQ(a.Report(100, 500, 10000), Report::kAccepted);
  EXPECT_EQ(a.Tick(10999).step, Step::kOpen);
  EXPECT_EQ(a.Tick(5000).step, Step::kOpen);  // time going back closes nothing
  EXPECT_EQ(a.limit(), 500u);
  const AdaptiveLimit::TickResult r = a.Tick(11000);
  EXPECT_EQ(r.step, Step::kDecreased);
  EXPECT_EQ(r.samples, 500u);
  EXPECT_EQ(r.signal, 100);
  EXPECT_EQ(a.interval_start_ms(), 11000u);
  // A report dated before the new interval belongs to a closed one.
  EXPECT_EQ(a.Report(1, 500, 10999), Report::kStale);
  EXPECT_EQ(a.Tick(11999).step, Step::kOpen);
}

TEST(AdaptiveLimitTest, DecreasesByTheFactorDownToMinAndNoFurther) {
  AdaptiveLimit a(Latency(), 500, 0);
  uint64_t now = 0;
  uint32_t expected = 500;
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(a.Report(51, 1000, now), Report::kAccepted);
    now += 1000;
    const AdaptiveLimit::TickResult r = a.Tick(now);
    const uint32_t before = expected;
    expected = std::max<uint32_t>(10, static_cast<uint32_t>(std::floor(expected * 0.9)));
    ASSERT_EQ(r.step, Step::kDecreased) << i;
    ASSERT_EQ(r.limit, expected) << i;
    ASSERT_EQ(r.changed, expected != before) << i;
  }
  EXPECT_EQ(a.limit(), 10u);
  // At the bottom a small limit still decreases by at least one: 11 -> 10,
  // and from 10 it holds at min, reported as unchanged.
  AdaptiveLimit small(Latency(), 11, 0);
  small.Report(60, 11, 0);
  EXPECT_EQ(small.Tick(1000).limit, 10u);
  small.Report(60, 10, 1000);
  const AdaptiveLimit::TickResult r = small.Tick(2000);
  EXPECT_EQ(r.step, Step::kDecreased);
  EXPECT_EQ(r.limit, 10u);
  EXPECT_FALSE(r.changed);
}

TEST(AdaptiveLimitTest, IncreasesByTheStepUpToMaxAndNoFurther) {
  AdaptiveLimit a(Latency(), 975, 0);
  a.Report(50, 975, 0);  // at the target counts as good
  AdaptiveLimit::TickResult r = a.Tick(1000);
  EXPECT_EQ(r.step, Step::kIncreased);
  EXPECT_EQ(r.limit, 985u);
  EXPECT_TRUE(r.changed);
  a.Report(10, 985, 1000);
  EXPECT_EQ(a.Tick(2000).limit, 995u);
  a.Report(10, 995, 2000);
  EXPECT_EQ(a.Tick(3000).limit, 1000u);
  a.Report(10, 1000, 3000);
  r = a.Tick(4000);
  EXPECT_EQ(r.step, Step::kIncreased);
  EXPECT_EQ(r.limit, 1000u);
  EXPECT_FALSE(r.changed);

  // No overflow at the top of the range.
  AdaptiveConfig big = Latency();
  big.max_limit = UINT32_MAX;
  big.increase_step = 0;  // the default, ceil(max / 100)
  // A month's window: the 1 s interval's share of 2^32 is about 1657, so
  // 1000 reports are more than half of it (the limit is in use).
  big.window_ms = 30ull * 86400000;
  AdaptiveLimit b(big, UINT32_MAX - 5, 0);
  b.Report(1, 1000, 0);
  const AdaptiveLimit::TickResult top = b.Tick(1000);
  EXPECT_EQ(top.step, Step::kIncreased);
  EXPECT_EQ(top.limit, UINT32_MAX);
}

TEST(AdaptiveLimitTest, HoldsWithoutSamples) {
  AdaptiveLimit a(Latency(), 500, 0);
  for (uint64_t now = 1000; now <= 10000; now += 1000) {
    const AdaptiveLimit::TickResult r = a.Tick(now);
    EXPECT_EQ(r.step, Step::kNoSamples);
    EXPECT_EQ(r.limit, 500u);
    EXPECT_FALSE(r.changed);
    EXPECT_EQ(r.samples, 0u);
  }
}

TEST(AdaptiveLimitTest, HoldsWithTooFewSamplesEitherWay) {
  AdaptiveLimit a(Latency(), 500, 0);
  a.Report(1000, 19, 0);  // very bad, but 19 < min_samples 20
  AdaptiveLimit::TickResult r = a.Tick(1000);
  EXPECT_EQ(r.step, Step::kTooFew);
  EXPECT_EQ(r.limit, 500u);
  a.Report(1000, 10, 1000);
  a.Report(1000, 10, 1500);  // 20 reports in all: enough
  r = a.Tick(2000);
  EXPECT_EQ(r.step, Step::kDecreased);
  EXPECT_EQ(r.limit, 450u);
}

TEST(AdaptiveLimitTest, ASmallLimitNeedsFewerSamples) {
  // At 10 per second an interval admits 10: needing 20 would pin it at min
  // forever. It needs ceil(10 / 2) = 5 instead.
  AdaptiveLimit a(Latency(), 10, 0);
  a.Report(1, 4, 0);
  EXPECT_EQ(a.Tick(1000).step, Step::kTooFew);
  a.Report(1, 5, 1000);
  const AdaptiveLimit::TickResult r = a.Tick(2000);
  EXPECT_EQ(r.step, Step::kIncreased);
  EXPECT_EQ(r.limit, 20u);
  // A per-minute limit with 1 s intervals: 600 per minute is 10 per interval.
  AdaptiveConfig minute = Latency();
  minute.window_ms = 60000;
  AdaptiveLimit m(minute, 600, 0);
  m.Report(100, 5, 0);
  EXPECT_EQ(m.Tick(1000).step, Step::kDecreased);
}

TEST(AdaptiveLimitTest, DoesNotGrowALimitNobodyReaches) {
  AdaptiveLimit a(Latency(), 500, 0);
  a.Report(1, 249, 0);  // good, enough samples, but under half of 500 used
  AdaptiveLimit::TickResult r = a.Tick(1000);
  EXPECT_EQ(r.step, Step::kIdle);
  EXPECT_EQ(r.limit, 500u);
  a.Report(1, 250, 1000);  // half used: grows
  r = a.Tick(2000);
  EXPECT_EQ(r.step, Step::kIncreased);
  EXPECT_EQ(r.limit, 510u);
  // A bad signal at low use still decreases: the backend is hurting.
  a.Report(100, 30, 2000);
  EXPECT_EQ(a.Tick(3000).step, Step::kDecreased);
}

TEST(AdaptiveLimitTest, TheSignalIsTheMeanOverRequests) {
  AdaptiveLimit a(Latency(), 500, 0);
  a.Report(10, 300, 0);
  a.Report(130, 100, 10);  // (3000 + 13000) / 400 = 40: good
  AdaptiveLimit::TickResult r = a.Tick(1000);
  EXPECT_DOUBLE_EQ(r.signal, 40);
  EXPECT_EQ(r.max, 130);
  EXPECT_EQ(r.step, Step::kIncreased);
  a.Report(10, 100, 1000);
  a.Report(130, 100, 1000);  // 70: bad
  r = a.Tick(2000);
  EXPECT_DOUBLE_EQ(r.signal, 70);
  EXPECT_EQ(r.step, Step::kDecreased);

  AdaptiveConfig errors = Latency();
  errors.signal = AdaptiveSignal::kErrorRate;
  errors.target = 0.05;
  AdaptiveLimit e(errors, 500, 0);
  e.Report(0, 450, 0);
  e.Report(1, 50, 0);  // 50 errors in 500: 0.1
  r = e.Tick(1000);
  EXPECT_DOUBLE_EQ(r.signal, 0.1);
  EXPECT_EQ(r.step, Step::kDecreased);
  e.Report(0.04, 500, 1000);  // 20 errors in 500
  EXPECT_EQ(e.Tick(2000).step, Step::kIncreased);
}

TEST(AdaptiveLimitTest, RefusesBadReportsWithoutCountingThem) {
  AdaptiveLimit a(Latency(), 500, 0);
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  for (double bad : {nan, inf, -inf, -1.0, -0.001, kMaxAdaptiveReportLatencyMs * 1.01}) {
    EXPECT_EQ(a.Report(bad, 1000, 0), Report::kInvalid) << bad;
  }
  EXPECT_EQ(a.Report(5, 0, 0), Report::kInvalid);
  EXPECT_EQ(a.Report(kMaxAdaptiveReportLatencyMs, 1, 0), Report::kAccepted);
  EXPECT_EQ(a.Tick(1000).samples, 1u);

  AdaptiveConfig errors = Latency();
  errors.signal = AdaptiveSignal::kErrorRate;
  errors.target = 0.05;
  AdaptiveLimit e(errors, 500, 0);
  EXPECT_EQ(e.Report(1.0001, 10, 0), Report::kInvalid);
  EXPECT_EQ(e.Report(1, 10, 0), Report::kAccepted);
  EXPECT_EQ(e.Report(0, UINT32_MAX, 0), Report::kAccepted);
  const AdaptiveLimit::TickResult r = e.Tick(1000);
  EXPECT_EQ(r.samples, uint64_t{10} + UINT32_MAX);
  EXPECT_TRUE(std::isfinite(r.signal));
}

TEST(AdaptiveLimitTest, ALateTickTakesOneStep) {
  AdaptiveLimit a(Latency(), 500, 0);
  a.Report(100, 500, 0);
  const AdaptiveLimit::TickResult r = a.Tick(60000);  // 60 intervals late
  EXPECT_EQ(r.step, Step::kDecreased);
  EXPECT_EQ(r.limit, 450u);
  EXPECT_EQ(a.interval_start_ms(), 60000u);
  EXPECT_EQ(a.Tick(60999).step, Step::kOpen);
}

TEST(AdaptiveLimitTest, AnInvalidConfigIsClampedIntoRange) {
  AdaptiveConfig c = Latency();
  EXPECT_TRUE(c.Valid());
  c.min_limit = 0;
  c.max_limit = 0;
  c.target = std::numeric_limits<double>::quiet_NaN();
  c.window_ms = 0;
  c.interval_ms = 1;
  c.decrease_factor = 1.5;
  c.min_samples = 0;
  c.increase_step = 0;
  EXPECT_FALSE(c.Valid());
  AdaptiveLimit a(c, 7, 0);
  EXPECT_TRUE(a.config().Valid());
  EXPECT_EQ(a.config().min_limit, 1u);
  EXPECT_EQ(a.config().max_limit, 1u);
  EXPECT_EQ(a.limit(), 1u);  // the start clamped into [min, max]
  EXPECT_EQ(a.config().interval_ms, kMinAdaptiveIntervalMs);
  EXPECT_EQ(a.config().min_samples, 1u);
  EXPECT_EQ(a.config().increase_step, 1u);
  EXPECT_GE(a.config().decrease_factor, 0.5);
  EXPECT_LT(a.config().decrease_factor, 1.0);
  // The start is clamped with a valid config too.
  EXPECT_EQ(AdaptiveLimit(Latency(), 0, 0).limit(), 10u);
  EXPECT_EQ(AdaptiveLimit(Latency(), 5000, 0).limit(), 1000u);
}

}  // namespace
}  // namespace tally::rules

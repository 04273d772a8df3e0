// The simulator's own guarantees: a seed replays exactly, the oracles catch a
// deliberately broken cluster, and its building blocks (clocks, network,
// window counting) do what they claim.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>

#include "membership/timing.h"
#include "sim/clock.h"
#include "sim/network.h"
#include "sim/oracles.h"
#include "sim/random.h"
#include "sim/scenarios.h"

namespace tally::sim {
namespace {

const OracleResult* Find(const Outcome& o, const std::string& name) {
  for (const OracleResult& r : o.results) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

Outcome RunSim(const std::string& scenario, uint64_t seed, size_t nodes, double seconds,
               bool drop_replication = false) {
  ScenarioParams p;
  p.seed = seed;
  p.nodes = nodes;
  p.duration_s = seconds;
  p.drop_replication = drop_replication;
  return RunScenario(*FindScenario(scenario), p, false);
}

TEST(SimDeterminism, SameSeedSameTrace) {
  const Outcome a = RunSim("crash_owner", 7, 6, 40);
  const Outcome b = RunSim("crash_owner", 7, 6, 40);
  EXPECT_EQ(a.trace_hash, b.trace_hash);
  EXPECT_EQ(a.events, b.events);
  EXPECT_NE(a.events, 0u);
  const Outcome c = RunSim("crash_owner", 8, 6, 40);
  EXPECT_NE(a.trace_hash, c.trace_hash);
}

TEST(SimDeterminism, LossyRunReplays) {
  const Outcome a = RunSim("lossy_20pct", 3, 5, 30);
  const Outcome b = RunSim("lossy_20pct", 3, 5, 30);
  EXPECT_EQ(a.trace_hash, b.trace_hash);
}

TEST(SimOracles, FaultFreePasses) {
  const Outcome o = RunSim("fault_free", 1, 5, 25);
  for (const OracleResult& r : o.results)
    EXPECT_TRUE(r.pass) << r.name << ": " << r.value << " " << r.detail;
  const OracleResult* exact = Find(o, "exact");
  ASSERT_NE(exact, nullptr);
  EXPECT_EQ(exact->value_num, 1.0);
}

TEST(SimOracles, DroppedReplicationFailsConvergence) {
  // Replicas never hear of any count: they cannot converge with the owner.
  const Outcome o = RunSim("fault_free", 1, 5, 25, /*drop_replication=*/true);
  const OracleResult* conv = Find(o, "convergence");
  ASSERT_NE(conv, nullptr);
  EXPECT_FALSE(conv->pass) << conv->value;
  EXPECT_FALSE(o.pass);
}

TEST(SimOracles, DroppedReplicationFailsExcessOnFailover) {
  // With nothing replicated, the replica that takes over from a crashed
  // owner starts from zero and admits a second limit inside the window.
  const Outcome o = RunSim("crash_owner", 1, 6, 40, /*drop_replication=*/true);
  const OracleResult* excess = Find(o, "excess");
  ASSERT_NE(excess, nullptr);
  EXPECT_FALSE(excess->pass) << excess->value;
}

TEST(SimClock, MonotonicInverseIsExact) {
  for (int64_t ppb : {-150'000, 0, 1, 99'999}) {
    NodeClock c(250, ppb, 5'000'000'000);
    for (TrueNs t : {TrueNs{0}, TrueNs{1}, TrueNs{999'999}, TrueNs{12'345'678'901}}) {
      const int64_t mono = c.At(t).monotonic.count();
      const TrueNs back = c.TrueTimeOfMonotonic(mono);
      EXPECT_LE(back, t);
      EXPECT_EQ(c.At(back).monotonic.count(), mono);
      if (back > 0) {
        EXPECT_LT(c.At(back - 1).monotonic.count(), mono);
      }
    }
  }
}

TEST(SimClock, JumpsMoveWallOnly) {
  NodeClock c(0, 0, 1000);
  const Instant before = c.At(5 * kNsPerS);
  c.Jump(-120'000);
  const Instant after = c.At(5 * kNsPerS);
  EXPECT_EQ(after.monotonic, before.monotonic);
  EXPECT_EQ(after.wall.count(), before.wall.count() - 120'000);
}

TEST(SimNetwork, StreamsKeepOrderDatagramsMayNot) {
  LinkConfig link;
  link.jitter_median_ns = 2'000'000;  // wide jitter: datagrams reorder
  Network net(link, 42);
  net.AddHost();
  net.AddHost();
  std::vector<TrueNs> d;
  TrueNs last = 0;
  bool reordered = false;
  TrueNs last_dgram = 0;
  for (int i = 0; i < 200; ++i) {
    net.Route(0, 1, true, i * 1000, &d);
    ASSERT_EQ(d.size(), 1u);
    EXPECT_GT(d[0], last);
    last = d[0];
    net.Route(0, 1, false, i * 1000, &d);
    ASSERT_EQ(d.size(), 1u);
    reordered = reordered || d[0] < last_dgram;
    last_dgram = std::max(last_dgram, d[0]);
  }
  EXPECT_TRUE(reordered);
}

TEST(SimNetwork, PartitionsCutByDirection) {
  Network net(LinkConfig{}, 1);
  for (int i = 0; i < 3; ++i) net.AddHost();
  Network::Matrix m{};
  m[0][0] = m[1][1] = m[2][2] = true;
  m[1][0] = true;                                // B -> A only
  m[2][0] = m[0][2] = m[2][1] = m[1][2] = true;  // host 2 bridges
  net.Partition({0, 1, 2}, m);
  EXPECT_FALSE(net.CanSend(0, 1));
  EXPECT_TRUE(net.CanSend(1, 0));
  EXPECT_TRUE(net.CanSend(0, 2) && net.CanSend(2, 1));
  std::vector<TrueNs> d;
  net.Route(0, 1, true, 0, &d);
  EXPECT_TRUE(d.empty());  // a cut stream drops too
  net.Heal();
  EXPECT_TRUE(net.CanSend(0, 1));
}

TEST(SimOracleMath, MaxInWindowIsHalfOpen) {
  // (t - W, t]: hits exactly W apart are in different windows.
  std::vector<std::pair<TrueNs, uint64_t>> e = {{0, 1}, {10, 1}, {100, 1}, {109, 1}, {110, 1}};
  EXPECT_EQ(MaxInWindow(e, 100), 3u);  // 10, 100, 109 (0 is out at 100)
  EXPECT_EQ(MaxInWindow(e, 101), 4u);  // 10..110
  EXPECT_EQ(MaxInWindow({}, 5), 0u);
}

TEST(SimOracleMath, FirstSuspicionExpectation) {
  for (size_t n : {5, 10, 100}) {
    double mean = 0, sd = 0;
    ExpectedFirstSuspicion(n, &mean, &sd);
    EXPECT_NEAR(mean, 1 + membership::timing::ExpectedFirstProbeRoundRobin(n), 1e-12);
    EXPECT_GT(sd, 0.1);
    EXPECT_LT(sd, 1.0);
  }
}

TEST(SimOracleMath, FirstSuspicionMeanIntervalFollowsTheSkewedTail) {
  // One crash: the model's own quantiles. The tail is long (swarm seeds 589
  // and 1225 judged one crash each, 3.41 s at 3 nodes and 5.62 s at 13,
  // beyond mean + 3 sd but inside the distribution: P 0.54% and 0.35%).
  for (size_t n : {3, 13, 100}) {
    double mean = 0, sd = 0, lo = 0, hi = 0;
    ExpectedFirstSuspicion(n, &mean, &sd);
    FirstSuspicionMeanInterval(n, 1, 0.00135, &lo, &hi);
    EXPECT_GE(lo, 1.0) << n;  // one round at least
    EXPECT_LT(lo, mean - 0.5 * sd) << n;
    EXPECT_GT(hi, mean + 3 * sd) << n;                     // the skew: wider above
    EXPECT_LE(hi, 2.0 * static_cast<double>(n - 1)) << n;  // within the worst case, 2(n-1)-1 + 1
  }
  double lo = 0, hi = 0;
  FirstSuspicionMeanInterval(3, 1, 0.00135, &lo, &hi);
  EXPECT_GT(hi, 3.41);
  EXPECT_LT(hi, 3.8);
  FirstSuspicionMeanInterval(13, 1, 0.00135, &lo, &hi);
  EXPECT_GT(hi, 5.62);
  // Many crashes: the mean's interval narrows to about +- 3 standard errors.
  double mean = 0, sd = 0;
  ExpectedFirstSuspicion(10, &mean, &sd);
  FirstSuspicionMeanInterval(10, 100, 0.00135, &lo, &hi);
  EXPECT_NEAR(hi - mean, 3 * sd / 10, 0.35 * 3 * sd / 10);
  EXPECT_NEAR(mean - lo, 3 * sd / 10, 0.35 * 3 * sd / 10);
  // Deterministic: an oracle must judge a seed the same way every time.
  double lo2 = 0, hi2 = 0;
  FirstSuspicionMeanInterval(10, 100, 0.00135, &lo2, &hi2);
  EXPECT_EQ(lo, lo2);
  EXPECT_EQ(hi, hi2);
}

TEST(SimOracleMath, FirstSuspicionMeanBoundIsNeverNarrowerThanTheModelsQuantiles) {
  // Conservative: at a tail the 40000 draws resolve, the bound holds the
  // sampled interval (k = 1 is exact: equal up to the sampling's noise).
  for (size_t n : {3, 13, 100}) {
    for (size_t k : {1, 2, 5, 40}) {
      double lo = 0, hi = 0, lo_b = 0, hi_b = 0;
      FirstSuspicionMeanInterval(n, k, 0.00135, &lo, &hi);
      FirstSuspicionMeanBound(n, k, 0.00135, &lo_b, &hi_b);
      if (k == 1) {
        // 54 of the 40000 draws lie beyond the sampled quantile: its noise.
        EXPECT_NEAR(lo_b, lo, 0.05) << n;
        EXPECT_NEAR(hi_b, hi, 0.15) << n;
      } else {
        EXPECT_LE(lo_b, lo + 0.02) << n << " " << k;
        EXPECT_GE(hi_b, hi - 0.02) << n << " " << k;
      }
      // Within the model's support, 1 .. 2(n - 1) probe periods.
      EXPECT_GE(lo_b, 1.0);
      EXPECT_LE(hi_b, 2.0 * static_cast<double>(n - 1) + 1e-9);
      // Smaller tails widen it.
      double lo_t = 0, hi_t = 0;
      FirstSuspicionMeanBound(n, k, kOneRunDetectionTail, &lo_t, &hi_t);
      EXPECT_LE(lo_t, lo_b) << n << " " << k;
      EXPECT_GE(hi_t, hi_b) << n << " " << k;
    }
  }
  // Many crashes still narrow it around the mean: at k = 100 the 1e-7 bound
  // is within a few standard errors, not the support.
  double mean = 0, sd = 0, lo = 0, hi = 0;
  ExpectedFirstSuspicion(10, &mean, &sd);
  FirstSuspicionMeanBound(10, 100, kOneRunDetectionTail, &lo, &hi);
  EXPECT_LT(hi - mean, 8 * sd / 10);
  EXPECT_LT(mean - lo, 8 * sd / 10);
  // Swarm seed 4129 (3 nodes, one crash, probe interval 1 s): 3.75 periods,
  // past the old one-run bound of 3.70 and inside this one.
  FirstSuspicionMeanBound(3, 1, kOneRunDetectionTail, &lo, &hi);
  EXPECT_GT(hi, 3.75);
  double lo2 = 0, hi2 = 0;
  FirstSuspicionMeanBound(3, 1, kOneRunDetectionTail, &lo2, &hi2);
  EXPECT_EQ(lo, lo2);  // deterministic
  EXPECT_EQ(hi, hi2);
}

TEST(SimOracleMath, PooledFirstSuspicionIsHeldToTenPercentOrThreeStandardErrors) {
  double mean = 0, sd = 0;
  ExpectedFirstSuspicion(13, &mean, &sd);
  const double cv = sd / mean;
  EXPECT_GT(cv, 0.3);
  EXPECT_LT(cv, 0.6);
  // About 40 judged crashes (a 300-seed swarm): 10% would be ~1.4 standard
  // errors; the band is three. The means seen on fresh ranges with the model
  // right (0.851, 0.885, 1.114; 0.992 pooled over 1600 seeds) pass, a 30%
  // bias does not.
  const std::vector<double> cvs40(40, cv);
  const auto with_mean = [](size_t k, double m) { return std::vector<double>(k, m); };
  PooledSuspicion p = JudgePooledFirstSuspicion(with_mean(40, 1.114), cvs40);
  EXPECT_TRUE(p.judged);
  EXPECT_GT(p.allowed, 3 * cv / std::sqrt(40.0));
  EXPECT_LT(p.allowed, 3.5 * cv / std::sqrt(40.0));
  EXPECT_TRUE(p.pass);
  EXPECT_TRUE(JudgePooledFirstSuspicion(with_mean(40, 0.851), cvs40).pass);
  EXPECT_FALSE(JudgePooledFirstSuspicion(with_mean(40, 1.30), cvs40).pass);
  EXPECT_FALSE(JudgePooledFirstSuspicion(with_mean(40, 0.70), cvs40).pass);
  // The band holds the model's own 99.73% interval for the mean of 40
  // crashes, skewed tail included, at every size.
  double lo = 0, hi = 0;
  for (size_t n : {3, 13, 100}) {
    ExpectedFirstSuspicion(n, &mean, &sd);
    FirstSuspicionMeanInterval(n, 40, 0.00135, &lo, &hi);
    const PooledSuspicion at_n =
        JudgePooledFirstSuspicion(with_mean(40, 1.0), std::vector<double>(40, sd / mean));
    EXPECT_LE(1 - at_n.allowed, lo / mean) << n;
    EXPECT_GE(1 + at_n.allowed, hi / mean) << n;
  }
  // Many crashes: 10% is the wider and governs.
  const std::vector<double> cvs400(400, cv);
  p = JudgePooledFirstSuspicion(with_mean(400, 1.12), cvs400);
  EXPECT_DOUBLE_EQ(p.allowed, 0.10);
  EXPECT_FALSE(p.pass);
  EXPECT_TRUE(JudgePooledFirstSuspicion(with_mean(400, 1.08), cvs400).pass);
  // Too few to judge: reported, never failed.
  p = JudgePooledFirstSuspicion(with_mean(29, 2.0), std::vector<double>(29, cv));
  EXPECT_FALSE(p.judged);
  EXPECT_TRUE(p.pass);
}

TEST(SimRandom, SamplersAreBoundedAndReplay) {
  Random a(9), b(9);
  const DiscreteSampler zipf(ZipfWeights(50, 1.1));
  std::vector<int> counts(50, 0);
  for (int i = 0; i < 20000; ++i) {
    const uint64_t x = a.Below(7);
    EXPECT_LT(x, 7u);
    EXPECT_EQ(x, b.Below(7));
    const size_t k = zipf.Sample(a);
    EXPECT_EQ(k, zipf.Sample(b));
    ASSERT_LT(k, 50u);
    ++counts[k];
  }
  // Rank 1 is about 2^1.1 = 2.1 times as popular as rank 2.
  EXPECT_NEAR(static_cast<double>(counts[0]) / counts[1], 2.14, 0.3);
}

}  // namespace
}  // namespace tally::sim

// Table tests of the SWIM + Lifeguard timing math, and a Monte Carlo check of
// the expected-time-to-first-probe formulas in membership/timing.h.
#include "membership/timing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <vector>

#include "membership/random.h"

namespace tally::membership::timing {
namespace {

using std::chrono::milliseconds;

TEST(TimingTest, SuspicionMinTimeoutTable) {
  struct Row {
    int mult;
    size_t n;
    int64_t interval_ms;
    int64_t want_ms;
  };
  const Row rows[] = {
      {4, 0, 1000, 4000},  {4, 1, 1000, 4000},    {4, 5, 1000, 4000},     {4, 10, 1000, 4000},
      {4, 20, 1000, 5204}, {4, 100, 1000, 8000},  {4, 1000, 1000, 12000}, {4, 50, 200, 1358},
      {5, 10, 1000, 5000}, {1, 10000, 500, 2000},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(SuspicionMinTimeout(r.mult, r.n, milliseconds(r.interval_ms)).count(), r.want_ms)
        << "mult " << r.mult << " n " << r.n;
  }
  EXPECT_EQ(SuspicionMaxTimeout(6, milliseconds(4000)).count(), 24000);
}

TEST(TimingTest, ExpectedConfirmationsTable) {
  // k = mult - 2, or 0 when fewer than k + 2 members are up.
  EXPECT_EQ(ExpectedConfirmations(4, 1), 0);
  EXPECT_EQ(ExpectedConfirmations(4, 3), 0);
  EXPECT_EQ(ExpectedConfirmations(4, 4), 2);
  EXPECT_EQ(ExpectedConfirmations(4, 100), 2);
  EXPECT_EQ(ExpectedConfirmations(5, 4), 0);
  EXPECT_EQ(ExpectedConfirmations(5, 5), 3);
  EXPECT_EQ(ExpectedConfirmations(2, 100), 0);
  EXPECT_EQ(ExpectedConfirmations(1, 100), 0);
}

TEST(TimingTest, SuspicionTimeoutShrinksWithConfirmations) {
  const milliseconds min(4000), max(24000);
  struct Row {
    int k, c;
    int64_t want_ms;
  };
  const Row rows[] = {
      {2, 0, 24000}, {2, 1, 11381}, {2, 2, 4000}, {2, 3, 4000}, {2, -1, 24000}, {3, 0, 24000},
      {3, 1, 14000}, {3, 2, 8150},  {3, 3, 4000}, {0, 0, 4000}, {0, 5, 4000},   {-1, 0, 4000},
  };
  for (const Row& r : rows) {
    EXPECT_EQ(SuspicionTimeout(min, max, r.k, r.c).count(), r.want_ms) << r.k << " " << r.c;
  }
  // Monotone in c and never below min.
  for (int k = 1; k < 10; ++k) {
    for (int c = 0; c < k; ++c) {
      EXPECT_GE(SuspicionTimeout(min, max, k, c), SuspicionTimeout(min, max, k, c + 1));
      EXPECT_GE(SuspicionTimeout(min, max, k, c), min);
    }
  }
}

TEST(TimingTest, RetransmitLimitTable) {
  const std::pair<size_t, int> rows[] = {{0, 0},  {1, 4},    {9, 4},    {10, 8},   {50, 8},
                                         {99, 8}, {100, 12}, {200, 12}, {999, 12}, {1000, 16}};
  for (auto [n, want] : rows) EXPECT_EQ(RetransmitLimit(4, n), want) << n;
  EXPECT_EQ(RetransmitLimit(3, 100), 9);
}

TEST(TimingTest, HealthScaling) {
  EXPECT_EQ(ClampHealth(-1, 8), 0);
  EXPECT_EQ(ClampHealth(3, 8), 3);
  EXPECT_EQ(ClampHealth(8, 8), 7);
  EXPECT_EQ(ClampHealth(100, 8), 7);
  EXPECT_EQ(ClampHealth(5, 1), 0);
  EXPECT_EQ(ScaleByHealth(milliseconds(1000), 0).count(), 1000);
  EXPECT_EQ(ScaleByHealth(milliseconds(500), 3).count(), 2000);
  EXPECT_EQ(ScaleByHealth(milliseconds(1000), 7).count(), 8000);
}

TEST(TimingTest, PushPullScale) {
  const milliseconds base(30000);
  EXPECT_EQ(PushPullInterval(base, 1).count(), 30000);
  EXPECT_EQ(PushPullInterval(base, 32).count(), 30000);
  EXPECT_EQ(PushPullInterval(base, 33).count(), 60000);
  EXPECT_EQ(PushPullInterval(base, 64).count(), 60000);
  EXPECT_EQ(PushPullInterval(base, 65).count(), 90000);
  EXPECT_EQ(PushPullInterval(base, 1000).count(), 6 * 30000);  // ceil(9.97 - 5) + 1
}

TEST(TimingTest, RoundRobinSurvivalClosedForm) {
  for (size_t n : {3, 5, 10, 40}) {
    const double m = static_cast<double>(n - 1);
    EXPECT_DOUBLE_EQ(RoundRobinNoProbeProbability(n, 0), 1.0);
    for (size_t j = 0; j <= n - 1; ++j) {
      const double jd = static_cast<double>(j);
      EXPECT_NEAR(RoundRobinNoProbeProbability(n, j),
                  1 - jd / m + (jd * jd * jd - jd) / (6 * m * m * m), 1e-12)
          << n << " " << j;
    }
    EXPECT_NEAR(RoundRobinNoProbeProbability(n, 2 * (n - 1) - 1), 0.0, 1e-12);
  }
  EXPECT_DOUBLE_EQ(ExpectedFirstProbeRoundRobinPeriods(2), 1.0);
  EXPECT_DOUBLE_EQ(ExpectedFirstProbeRoundRobin(2), 0.5);
  EXPECT_NEAR(ExpectedFirstProbeUniformPeriods(1.0), 1.5820, 1e-4);
  EXPECT_DOUBLE_EQ(WorstCaseFirstProbeRoundRobinPeriods(5), 7.0);
}

// Simulates the process the formulas describe, from scratch rather than from
// the derivation: m probers with random phases (or all in step), each
// walking its own passes of the m targets in fresh shuffles from time 0; a
// crash at a uniform time well past the start; the first probe of the dead
// member by anyone after it. Returns the mean delay in periods.
double SimulateRoundRobin(size_t n, bool in_step, int trials, Rng& rng) {
  const size_t m = n - 1;
  double total = 0;
  std::vector<size_t> order(m);
  for (int t = 0; t < trials; ++t) {
    const double crash = static_cast<double>(2 * m) + UniformUnit(rng) * static_cast<double>(m);
    double first = 1e300;
    for (size_t p = 0; p < m; ++p) {
      const double phase = in_step ? 0.0 : UniformUnit(rng);
      // Slot i fires at time phase + i; passes are slots [k m, (k + 1) m).
      for (size_t pass = 0;; ++pass) {
        for (size_t i = 0; i < m; ++i) order[i] = i;
        Shuffle(rng, &order);
        bool found = false;
        for (size_t i = 0; i < m; ++i) {
          const double when = phase + static_cast<double>(pass * m + i);
          if (when >= crash && order[i] == 0) {  // target 0 is the dead member
            first = std::min(first, when);
            found = true;
            break;
          }
        }
        if (found) break;
      }
    }
    // In step, count whole periods: the crash period's remainder is period 1.
    total += in_step ? std::ceil(first - crash) : first - crash;
  }
  return total / trials;
}

TEST(TimingTest, RoundRobinFirstProbeMatchesMonteCarlo) {
  Rng rng(42);
  for (size_t n : {3, 5, 10, 20}) {
    const double sim_cont = SimulateRoundRobin(n, false, 12000, rng);
    const double sim_step = SimulateRoundRobin(n, true, 12000, rng);
    const double f_cont = ExpectedFirstProbeRoundRobin(n);
    const double f_step = ExpectedFirstProbeRoundRobinPeriods(n);
    const double m = static_cast<double>(n - 1);
    std::printf(
        "n=%zu  round-robin E[first probe]/T: formula %.4f, MC %.4f | in-step periods: "
        "formula %.4f, MC %.4f | fixed order m/(m+1) %.4f | random in-step %.4f\n",
        n, f_cont, sim_cont, f_step, sim_step, m / (m + 1), 1.0 / (1.0 - std::pow(1 - 1 / m, m)));
    EXPECT_NEAR(sim_cont, f_cont, 0.03 * f_cont) << n;
    EXPECT_NEAR(sim_step, f_step, 0.03 * f_step) << n;
  }
}

TEST(TimingTest, UniformRandomFirstProbeMatchesMonteCarlo) {
  // Probers in step, each picking a uniformly random target per period;
  // q = 1 and n large enough that (1 - 1/m)^m is e^-1 to 0.3%.
  Rng rng(7);
  const size_t n = 200;
  const int trials = 20000;
  double total = 0;
  for (int t = 0; t < trials; ++t) {
    for (int period = 1;; ++period) {
      bool hit = false;
      for (size_t p = 0; p + 1 < n && !hit; ++p) hit = UniformBelow(rng, n - 1) == 0;
      if (hit) {
        total += period;
        break;
      }
    }
  }
  const double mc = total / trials;
  std::printf("uniform random, n=%zu: MC %.4f periods, T/(1-e^-q) %.4f\n", n, mc,
              ExpectedFirstProbeUniformPeriods(1.0));
  EXPECT_NEAR(mc, ExpectedFirstProbeUniformPeriods(1.0), 0.03 * 1.58);
}

}  // namespace
}  // namespace tally::membership::timing

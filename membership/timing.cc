#include "membership/timing.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace tally::membership::timing {
namespace {

// G(j) of the header's derivation, for m targets per prober.
double RoundRobinSurvival(size_t m, size_t j) {
  const double md = static_cast<double>(m);
  double sum = 0;
  for (size_t s = 0; s < m; ++s) {
    const double later = std::max(0.0, md - static_cast<double>(s) - static_cast<double>(j));
    const double next_pass =
        std::clamp(2 * md - static_cast<double>(j) - static_cast<double>(s), 0.0, md);
    sum += later / md + static_cast<double>(s) * next_pass / (md * md);
  }
  return sum / md;
}

}  // namespace

milliseconds SuspicionMinTimeout(int suspicion_mult, size_t n, milliseconds probe_interval) {
  const double scale = std::max(1.0, std::log10(std::max(1.0, static_cast<double>(n))));
  const auto scale_milli = static_cast<int64_t>(scale * 1000);
  return milliseconds(suspicion_mult * scale_milli * probe_interval.count() / 1000);
}

milliseconds SuspicionMaxTimeout(int suspicion_max_timeout_mult, milliseconds min) {
  return suspicion_max_timeout_mult * min;
}

int ExpectedConfirmations(int suspicion_mult, size_t n) {
  const int k = suspicion_mult - 2;
  if (k < 1 || static_cast<int64_t>(n) - 2 < k) return 0;
  return k;
}

milliseconds SuspicionTimeout(milliseconds min, milliseconds max, int k, int confirmations) {
  if (k < 1) return min;
  const int c = std::clamp(confirmations, 0, k);
  const double frac = std::log(c + 1.0) / std::log(k + 1.0);
  const double raw_ms =
      static_cast<double>(max.count()) - frac * static_cast<double>(max.count() - min.count());
  return std::max(min, milliseconds(static_cast<int64_t>(std::floor(raw_ms))));
}

int RetransmitLimit(int retransmit_mult, size_t n) {
  return retransmit_mult * static_cast<int>(std::ceil(std::log10(static_cast<double>(n) + 1)));
}

int ClampHealth(int score, int awareness_max_multiplier) {
  return std::clamp(score, 0, std::max(0, awareness_max_multiplier - 1));
}

milliseconds ScaleByHealth(milliseconds base, int score) { return base * (score + 1); }

milliseconds PushPullInterval(milliseconds base, size_t n) {
  constexpr double kThreshold = 32;
  if (static_cast<double>(n) <= kThreshold) return base;
  const double mult = std::ceil(std::log2(static_cast<double>(n)) - std::log2(kThreshold)) + 1;
  return base * static_cast<int64_t>(mult);
}

double ExpectedFirstProbeUniformPeriods(double q) { return 1.0 / (1.0 - std::exp(-q)); }

double ExpectedFirstProbeRoundRobinPeriods(size_t n) {
  if (n < 2) return 0;
  const size_t m = n - 1;
  double sum = 0;
  for (size_t j = 0; j + 1 < 2 * m; ++j) sum += std::pow(RoundRobinSurvival(m, j), m);
  return sum;
}

double ExpectedFirstProbeRoundRobin(size_t n) {
  if (n < 2) return 0;
  const size_t m = n - 1;
  const double md = static_cast<double>(m);
  double sum = 0;
  double g = 1;  // G(0)
  for (size_t j = 0; j + 1 < 2 * m; ++j) {
    const double next = RoundRobinSurvival(m, j + 1);
    if (g - next < 1e-15) {
      sum += std::pow(g, md);
    } else {
      sum += (std::pow(g, md + 1) - std::pow(next, md + 1)) / ((md + 1) * (g - next));
    }
    g = next;
  }
  return sum;
}

double RoundRobinNoProbeProbability(size_t n, size_t j) {
  if (n < 2) return 0;
  return RoundRobinSurvival(n - 1, j);
}

double WorstCaseFirstProbeRoundRobinPeriods(size_t n) {
  if (n < 2) return 0;
  return 2.0 * static_cast<double>(n - 1) - 1;
}

}  // namespace tally::membership::timing

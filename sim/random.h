// Reproducible randomness for the simulator. std::mt19937_64's output is fixed
// by the standard, but the std:: distributions are implementation-defined, so
// every distribution here is written out: a seed replays identically on any
// standard library (with the same libm for the few transcendental helpers).
#ifndef TALLY_SIM_RANDOM_H_
#define TALLY_SIM_RANDOM_H_

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <random>
#include <vector>

namespace tally::sim {

// SplitMix64: derives independent stream seeds from (seed, tag).
inline uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

inline uint64_t DeriveSeed(uint64_t seed, uint64_t tag) {
  return SplitMix64(SplitMix64(seed) ^ SplitMix64(tag * 0x632be59bd9b4e019ull + 1));
}

class Random {
 public:
  explicit Random(uint64_t seed) : engine_(seed) {}

  uint64_t Next() { return engine_(); }

  // Uniform in [0, bound), unbiased (Lemire). REQUIRES: bound > 0.
  uint64_t Below(uint64_t bound) {
    unsigned __int128 m = static_cast<unsigned __int128>(engine_()) * bound;
    auto low = static_cast<uint64_t>(m);
    if (low < bound) {
      const uint64_t threshold = (0 - bound) % bound;
      while (low < threshold) {
        m = static_cast<unsigned __int128>(engine_()) * bound;
        low = static_cast<uint64_t>(m);
      }
    }
    return static_cast<uint64_t>(m >> 64);
  }

  // Uniform in [lo, hi]. REQUIRES: lo <= hi.
  int64_t Range(int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(Below(static_cast<uint64_t>(hi - lo) + 1));
  }

  // Uniform in [0, 1) with 53 random bits.
  double Unit() { return static_cast<double>(engine_() >> 11) * 0x1.0p-53; }

  bool Chance(double p) { return p > 0 && Unit() < p; }

  // Exponential with the given mean (inverse CDF; 1 - Unit() is in (0, 1]).
  double Exponential(double mean) { return -mean * std::log(1.0 - Unit()); }

  // Standard normal by Box-Muller (one value per call, the other discarded to
  // keep the stream position independent of call history).
  double Normal() {
    const double u1 = 1.0 - Unit();
    const double u2 = Unit();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }

  // exp(N(log(median), sigma^2)): a right-skewed latency tail.
  double LogNormal(double median, double sigma) { return median * std::exp(sigma * Normal()); }

  template <typename T>
  void Shuffle(std::vector<T>* v) {
    for (size_t i = v->size(); i > 1; --i) {
      const size_t j = static_cast<size_t>(Below(i));
      std::swap((*v)[i - 1], (*v)[j]);
    }
  }

 private:
  std::mt19937_64 engine_;
};

// Samples indexes 0..n-1 with P(i) proportional to weights[i], by binary
// search over the cumulative sums (exact and deterministic).
class DiscreteSampler {
 public:
  DiscreteSampler() = default;
  explicit DiscreteSampler(const std::vector<double>& weights) {
    cumulative_.reserve(weights.size());
    double sum = 0;
    for (double w : weights) {
      sum += w;
      cumulative_.push_back(sum);
    }
    total_ = sum;
  }
  size_t Sample(Random& rng) const {
    const double x = rng.Unit() * total_;
    size_t lo = 0, hi = cumulative_.size() - 1;
    while (lo < hi) {
      const size_t mid = (lo + hi) / 2;
      if (cumulative_[mid] > x) {
        hi = mid;
      } else {
        lo = mid + 1;
      }
    }
    return lo;
  }
  double Probability(size_t i) const {
    return (cumulative_[i] - (i == 0 ? 0 : cumulative_[i - 1])) / total_;
  }
  size_t size() const { return cumulative_.size(); }

 private:
  std::vector<double> cumulative_;
  double total_ = 0;
};

// Zipf weights 1 / (i + 1)^s.
inline std::vector<double> ZipfWeights(size_t n, double s) {
  std::vector<double> w(n);
  for (size_t i = 0; i < n; ++i) w[i] = 1.0 / std::pow(static_cast<double>(i + 1), s);
  return w;
}

}  // namespace tally::sim

#endif  // TALLY_SIM_RANDOM_H_

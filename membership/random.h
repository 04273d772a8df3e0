// Reproducible randomness. std::mt19937_64's output sequence is fixed by the
// standard, but std::uniform_int_distribution and std::shuffle are
// implementation-defined, so a seed would replay differently on another
// standard library. These helpers are fully specified here.
#ifndef TALLY_MEMBERSHIP_RANDOM_H_
#define TALLY_MEMBERSHIP_RANDOM_H_

#include <cassert>
#include <cstddef>
#include <cstdint>
#include <random>
#include <utility>
#include <vector>

namespace tally::membership {

using Rng = std::mt19937_64;

// Uniform in [0, bound). Lemire's multiply-and-reject: unbiased, and usually
// one draw. REQUIRES: bound > 0.
inline uint64_t UniformBelow(Rng& rng, uint64_t bound) {
  assert(bound > 0);
  unsigned __int128 m = static_cast<unsigned __int128>(rng()) * bound;
  auto low = static_cast<uint64_t>(m);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      m = static_cast<unsigned __int128>(rng()) * bound;
      low = static_cast<uint64_t>(m);
    }
  }
  return static_cast<uint64_t>(m >> 64);
}

// Uniform in [0, 1) with 53 random bits.
inline double UniformUnit(Rng& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

// Fisher-Yates, specified (unlike std::shuffle).
template <typename T>
void Shuffle(Rng& rng, std::vector<T>* v) {
  for (size_t i = v->size(); i > 1; --i) {
    size_t j = static_cast<size_t>(UniformBelow(rng, i));
    std::swap((*v)[i - 1], (*v)[j]);
  }
}

// Up to `k` distinct elements of `v` chosen uniformly (partial Fisher-Yates on
// a copy); order is random.
template <typename T>
std::vector<T> Sample(Rng& rng, std::vector<T> v, size_t k) {
  if (k > v.size()) k = v.size();
  for (size_t i = 0; i < k; ++i) {
    size_t j = i + static_cast<size_t>(UniformBelow(rng, v.size() - i));
    std::swap(v[i], v[j]);
  }
  v.resize(k);
  return v;
}

// The positions Sample(rng, v, k) would pick from any `v` of `size`
// elements, drawing the same random numbers: Sample over [0, size) without
// building it (the swaps are kept sparsely), O(k^2) instead of O(size).
inline std::vector<size_t> SampleIndexes(Rng& rng, size_t size, size_t k) {
  if (k > size) k = size;
  std::vector<std::pair<size_t, size_t>> moved;  // position -> value, where not identity
  auto at = [&moved](size_t pos) {
    for (const auto& [p, v] : moved) {
      if (p == pos) return v;
    }
    return pos;
  };
  auto set = [&moved](size_t pos, size_t value) {
    for (auto& [p, v] : moved) {
      if (p == pos) {
        v = value;
        return;
      }
    }
    moved.emplace_back(pos, value);
  };
  for (size_t i = 0; i < k; ++i) {
    const size_t j = i + static_cast<size_t>(UniformBelow(rng, size - i));
    const size_t vi = at(i), vj = at(j);
    set(i, vj);
    set(j, vi);
  }
  std::vector<size_t> picked(k);
  for (size_t i = 0; i < k; ++i) picked[i] = at(i);
  return picked;
}

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_RANDOM_H_

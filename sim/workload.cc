#include "sim/workload.h"

#include <algorithm>
#include <cmath>

namespace tally::sim {
namespace {
double MeanHits(const WorkloadConfig& c) {
  double sum = 0, weight = 0;
  for (const auto& [hits, w] : c.hits) {
    sum += static_cast<double>(hits) * w;
    weight += w;
  }
  return weight > 0 ? sum / weight : 1;
}
}  // namespace

Workload::Workload(const WorkloadConfig& config, uint64_t seed)
    : config_(config), rng_(seed), last_(config.start_ns) {
  const size_t n = std::max<size_t>(config_.keys, 1);
  std::vector<double> weights =
      config_.zipf ? ZipfWeights(n, config_.zipf_s) : std::vector<double>(n, 1.0);
  // Zipf ranks are shuffled so the busiest keys are not always the first ids.
  if (config_.zipf) rng_.Shuffle(&weights);
  double total = 0;
  for (double w : weights) total += w;
  if (config_.hot_key_share > 0 && n > 1) {
    // Key 0 takes hot_key_share; the others share the rest in proportion.
    const double rest = total - weights[0];
    for (size_t i = 1; i < n; ++i) weights[i] *= (1 - config_.hot_key_share) / rest;
    weights[0] = config_.hot_key_share;
    total = 1;
  }
  popularity_ = DiscreteSampler(weights);
  const double batch_mean = (1.0 + static_cast<double>(std::max<size_t>(config_.max_batch, 1))) / 2;
  keys_.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    KeySpec k;
    k.user_id = "user-" + std::to_string(i);
    k.endpoint = "/api/v1/" + std::to_string(rng_.Below(8));
    k.share = weights[i] / total;
    if (i == 0 && config_.hot_key_share > 0) {
      k.window_ms = config_.hot_key_window_ms;
      k.limit = config_.hot_key_limit;
    } else {
      k.window_ms = config_.windows_ms[rng_.Below(config_.windows_ms.size())];
      const double hits_per_window = config_.rate_per_s * batch_mean * k.share * MeanHits(config_) *
                                     static_cast<double>(k.window_ms) / 1000.0;
      static constexpr double kFactors[] = {0.25, 0.5, 1.0, 2.0};
      const double f = kFactors[rng_.Below(4)];
      k.limit = std::max<uint64_t>(1, static_cast<uint64_t>(std::llround(hits_per_window * f)));
    }
    k.id = crdt::HashKey(k.user_id, k.endpoint, k.window_ms);
    keys_.push_back(std::move(k));
  }
  phase_end_ = config_.start_ns;
}

bool Workload::NextArrival(TrueNs* t) {
  if (config_.rate_per_s <= 0) return false;
  for (;;) {
    double rate = config_.rate_per_s;
    if (config_.bursty) {
      if (last_ >= phase_end_) {
        burst_on_ = !burst_on_;
        const double mean_ms = burst_on_ ? config_.burst_on_ms : config_.burst_off_ms;
        phase_end_ = last_ + static_cast<TrueNs>(rng_.Exponential(mean_ms) * 1e6) + 1;
      }
      // Same long-run mean: on x factor, off at the remainder.
      const double on = config_.burst_on_ms, off = config_.burst_off_ms;
      const double on_rate = config_.burst_factor * rate;
      const double off_rate = std::max(0.0, (rate * (on + off) - on_rate * on) / off);
      rate = burst_on_ ? on_rate : std::max(off_rate, rate * 0.05);
    }
    const auto gap = static_cast<TrueNs>(rng_.Exponential(1e9 / rate)) + 1;
    if (config_.bursty && last_ + gap > phase_end_) {
      last_ = phase_end_;  // memoryless: restart the draw at the phase change
      continue;
    }
    last_ += gap;
    if (last_ >= config_.end_ns) return false;
    *t = last_;
    return true;
  }
}

uint64_t Workload::DrawHits() {
  uint64_t total = 0;
  for (const auto& [hits, w] : config_.hits) total += w;
  if (total == 0) return 1;
  uint64_t r = rng_.Below(total);
  for (const auto& [hits, w] : config_.hits) {
    if (r < w) return hits;
    r -= w;
  }
  return 1;
}

void Workload::MakeBatch(std::vector<Check>* checks) {
  checks->clear();
  const size_t n = 1 + rng_.Below(std::max<size_t>(config_.max_batch, 1));
  for (size_t i = 0; i < n; ++i) checks->push_back(Check{popularity_.Sample(rng_), DrawHits()});
}

}  // namespace tally::sim

#include "sim/network.h"

#include <algorithm>

namespace tally::sim {

Network::Network(const LinkConfig& config, uint64_t seed) : config_(config), rng_(seed) {}

void Network::AddHost() {
  access_ns_.push_back(rng_.Range(config_.access_min_ns, config_.access_max_ns));
  group_.push_back(0);
}

void Network::Partition(const std::vector<int>& group_of, const Matrix& allowed) {
  std::fill(group_.begin(), group_.end(), 0);
  for (size_t h = 0; h < group_of.size() && h < group_.size(); ++h) group_[h] = group_of[h];
  allowed_ = allowed;
  partitioned_ = true;
}

void Network::Heal() {
  partitioned_ = false;
  std::fill(group_.begin(), group_.end(), 0);
}

int64_t Network::Latency(size_t from, size_t to) {
  const auto jitter = static_cast<int64_t>(
      rng_.LogNormal(static_cast<double>(config_.jitter_median_ns), config_.jitter_sigma));
  return access_ns_[from] + access_ns_[to] + std::min(jitter, config_.jitter_cap_ns);
}

int64_t Network::MaxLatencyNs() const { return 2 * config_.access_max_ns + config_.jitter_cap_ns; }

void Network::Route(size_t from, size_t to, bool stream, TrueNs now,
                    std::vector<TrueNs>* deliveries) {
  deliveries->clear();
  ++stats_.sent;
  if (!CanSend(from, to)) {
    ++stats_.cut;
    return;
  }
  if (stream) {
    // One TCP connection per ordered pair: in order, never lost.
    TrueNs at = now + Latency(from, to);
    TrueNs& tail = stream_tail_[(static_cast<uint64_t>(from) << 32) | to];
    at = std::max(at, tail + 1);
    tail = at;
    deliveries->push_back(at);
    return;
  }
  if (rng_.Chance(config_.loss)) {
    ++stats_.lost;
    return;
  }
  deliveries->push_back(now + Latency(from, to));
  if (rng_.Chance(config_.duplicate)) {
    ++stats_.duplicated;
    deliveries->push_back(now + Latency(from, to));
  }
}

}  // namespace tally::sim

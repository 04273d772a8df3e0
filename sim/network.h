// Network: the simulated links between hosts.
//
// Latency of a packet from a to b: access[a] + access[b] (each host's distance
// to the switch, drawn once) plus a log-normal jitter capped at jitter_cap
// (reordering comes from the jitter). Datagrams are lost with probability
// `loss` and duplicated with probability `duplicate` (the copy gets its own
// latency). Stream packets model one TCP connection per ordered pair: never
// lost or duplicated, delivered in order, but dropped while the pair is cut.
//
// Partitions: each host is in a group (0..kMaxGroups-1) and a matrix says
// which group may send to which; the default is one group that reaches
// itself. Halves, a bridge that sees both sides, one-way cuts and an isolated
// node are all group assignments plus a matrix. A packet is dropped if its
// direction is cut when sent or when it would arrive.
//
// Deterministic: all randomness comes from the seeded Random; the pair map is
// only looked up, never iterated.
#ifndef TALLY_SIM_NETWORK_H_
#define TALLY_SIM_NETWORK_H_

#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <string>
#include <vector>

#include "sim/clock.h"
#include "sim/random.h"

namespace tally::sim {

struct LinkConfig {
  int64_t access_min_ns = 100'000;  // per host, one way, drawn uniformly
  int64_t access_max_ns = 400'000;
  int64_t jitter_median_ns = 60'000;
  double jitter_sigma = 1.0;
  int64_t jitter_cap_ns = 5'000'000;  // keeps fault-free RTT far below the forward timeout
  double loss = 0;
  double duplicate = 0;
};

class Network {
 public:
  static constexpr int kMaxGroups = 8;

  Network(const LinkConfig& config, uint64_t seed);

  // Registers host `host` (0, 1, 2, ... in order).
  void AddHost();
  size_t hosts() const { return access_ns_.size(); }

  void SetLoss(double loss) { config_.loss = loss; }
  void SetDuplicate(double duplicate) { config_.duplicate = duplicate; }
  double loss() const { return config_.loss; }
  // Reordering: the jitter's median and cap from now on.
  void SetJitter(int64_t median_ns, int64_t cap_ns) {
    config_.jitter_median_ns = median_ns;
    config_.jitter_cap_ns = cap_ns;
  }

  // Partition: group_of[h] for every host (missing hosts stay in group 0) and
  // allowed[from][to].
  using Matrix = std::array<std::array<bool, kMaxGroups>, kMaxGroups>;
  void Partition(const std::vector<int>& group_of, const Matrix& allowed);
  void Heal();
  bool partitioned() const { return partitioned_; }
  bool CanSend(size_t from, size_t to) const {
    return !partitioned_ || allowed_[group_[from]][group_[to]];
  }
  int group(size_t host) const { return group_[host]; }

  // Delivery times of one packet sent at `now` (0, 1 or 2 of them).
  // `stream` packets keep per-pair order.
  void Route(size_t from, size_t to, bool stream, TrueNs now, std::vector<TrueNs>* deliveries);

  // The largest one-way latency a fault-free datagram can have, ns.
  int64_t MaxLatencyNs() const;

  struct Stats {
    uint64_t sent = 0, lost = 0, duplicated = 0, cut = 0;
  };
  const Stats& stats() const { return stats_; }
  void CountCutOnArrival() { ++stats_.cut; }

 private:
  int64_t Latency(size_t from, size_t to);

  LinkConfig config_;
  Random rng_;
  std::vector<int64_t> access_ns_;
  std::vector<int> group_;
  Matrix allowed_{};
  bool partitioned_ = false;
  boost::unordered_flat_map<uint64_t, TrueNs> stream_tail_;  // (from, to) -> last arrival
  Stats stats_;
};

}  // namespace tally::sim

#endif  // TALLY_SIM_NETWORK_H_

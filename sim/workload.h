// Workload: which keys clients check, how often, and with what limits.
//
// Keys have windows from `windows_ms` and a limit set from their expected
// load (a quarter to twice what arrives per window), so some keys sit far
// below their limit, some at it and some far above. Popularity is uniform or
// Zipf, optionally with one hot key taking a fixed share. Arrivals are a
// Poisson process, or bursty: an on/off modulated Poisson process (bursts at
// burst_factor x the rate, calm at a fraction of it, same mean).
#ifndef TALLY_SIM_WORKLOAD_H_
#define TALLY_SIM_WORKLOAD_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "crdt/key_id.h"
#include "sim/clock.h"
#include "sim/random.h"
#include "tally/types.h"

namespace tally::sim {

struct KeySpec {
  std::string user_id;
  std::string endpoint;
  uint64_t window_ms = 0;
  uint64_t limit = 0;
  crdt::KeyId id;
  double share = 0;  // fraction of requests

  // The check a client sends for this key (views into this KeySpec).
  CheckRequestRef Check(uint64_t request_id, uint64_t hits) const {
    CheckRequestRef ref;
    ref.request_id = request_id;
    ref.user_id = user_id;
    ref.endpoint = endpoint;
    ref.limit = limit;
    ref.window_ms = window_ms;
    ref.hits = hits;
    return ref;
  }
};

struct WorkloadConfig {
  size_t keys = 200;
  bool zipf = true;  // else uniform
  double zipf_s = 1.1;
  double hot_key_share = 0;  // > 0: key 0 takes this share of all requests
  uint64_t hot_key_limit = 100;
  uint64_t hot_key_window_ms = 1000;
  double rate_per_s = 500;  // mean arrivals (datagrams) per second, whole cluster
  bool bursty = false;
  double burst_factor = 4;
  double burst_on_ms = 300;
  double burst_off_ms = 1500;
  std::vector<uint64_t> windows_ms = {1000, 5000, 60000};
  size_t max_batch = 1;  // checks per datagram, uniform in 1..max_batch
  // Hits per check as (hits, weight): 0 asks without consuming.
  std::vector<std::pair<uint64_t, uint32_t>> hits = {{1, 80}, {2, 10}, {5, 5}, {0, 5}};
  TrueNs start_ns = 0;
  TrueNs end_ns = 0;
};

class Workload {
 public:
  struct Check {
    size_t key = 0;
    uint64_t hits = 1;
  };

  Workload(const WorkloadConfig& config, uint64_t seed);

  const std::vector<KeySpec>& keys() const { return keys_; }
  const WorkloadConfig& config() const { return config_; }

  // The next arrival time after the previous one; false once past end_ns.
  bool NextArrival(TrueNs* t);
  // The checks of one datagram.
  void MakeBatch(std::vector<Check>* checks);

 private:
  uint64_t DrawHits();

  WorkloadConfig config_;
  Random rng_;
  std::vector<KeySpec> keys_;
  DiscreteSampler popularity_;
  TrueNs last_ = 0;
  bool burst_on_ = false;
  TrueNs phase_end_ = 0;
};

}  // namespace tally::sim

#endif  // TALLY_SIM_WORKLOAD_H_

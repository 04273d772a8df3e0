// LimiterCore: the decision of one shard of keys. Pure and single-threaded:
// it takes requests and the current Instant and returns answers; it never
// reads a clock, blocks or does I/O (tests/meta/purity_test.cc).
//
// The decision for a request (limit L, window W, hits h) at wall time t:
//   i = bucket of t; S = hits counted in buckets i - span .. newest (all slots).
//   admit iff S + h <= L; on admit, h is added to (local slot, i).
// Because buckets i - span .. i cover every sliding interval of length W that
// ends at t, no such interval ever holds more than L admitted hits
// (tests/daemon/core/decision_oracle_test.cc checks it against a brute-force log).
//
// Clocks: wall time that goes backwards is clamped to the highest value seen,
// monotonic time likewise, so callers on several threads that read clocks
// before taking the shard lock cannot make the state go back.
#ifndef TALLY_DAEMON_CORE_LIMITER_CORE_H_
#define TALLY_DAEMON_CORE_LIMITER_CORE_H_

#include <chrono>
#include <cstdint>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "daemon/core/dedup_cache.h"
#include "tally/limiter.h"
#include "tally/types.h"

namespace tally::core {

struct LimiterCoreOptions {
  uint32_t buckets_per_window = 10;
  size_t max_keys = 1'000'000;
  std::chrono::milliseconds dedup_ttl{10'000};
  size_t max_dedup_entries = 100'000;
};

class LimiterCore {
 public:
  explicit LimiterCore(const LimiterCoreOptions& options,
                       const crdt::ReplicaSlot& local_slot = {"local", 1});

  // Validates, hashes and decides one request.
  CheckResult Check(const CheckRequestRef& request, Instant now);

  // Decides a request already validated and hashed to `key` (the sharded
  // facade hashes once to pick the shard). REQUIRES: ValidateRequest passed
  // and key == HashKey(user_id, endpoint, window_ms).
  CheckResult CheckKey(const CheckRequestRef& request, const crdt::KeyId& key, Instant now);

  // Reclaims expired keys and dedup entries. Returns keys reclaimed.
  size_t Sweep(Instant now);

  crdt::KeyStore& store() { return store_; }
  const crdt::KeyStore& store() const { return store_; }
  const LimiterStats& stats() const { return stats_; }
  crdt::SlotIndex local_slot() const { return local_slot_; }

 private:
  Instant Clamp(Instant now);
  // Fills remaining / retry_after_ms / reset_after_ms from the counter state.
  void Describe(const crdt::WindowCounter& counter, const CheckRequestRef& request,
                int64_t now_wall_ms, bool allowed, CheckResult* result) const;

  crdt::KeyStore store_;
  DedupCache dedup_;
  crdt::SlotIndex local_slot_;
  Instant high_water_;
  LimiterStats stats_;
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_LIMITER_CORE_H_

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
// Clocks: wall time that goes backwards by up to max_clock_regression_ms is
// clamped to the highest value seen, monotonic time always, so callers on
// several threads that read clocks before taking the shard lock cannot make
// the state go back. A larger wall step back is a real clock step (an
// operator or NTP fixing a clock that was ahead): the core follows it, since
// freezing time until the clock catches up would stop every window from
// sliding for as long as the step, and a cluster member whose time is frozen
// ahead would reclaim keys its peers still hold. Hits counted while the clock
// was ahead are moved to the bucket of the new time (one O(keys) pass per
// step): they keep counting for a full window from the step, never less than
// from their admission, so the step can only deny more; and the state holds
// no buckets from the future, which peers would refuse.
#ifndef TALLY_DAEMON_CORE_LIMITER_CORE_H_
#define TALLY_DAEMON_CORE_LIMITER_CORE_H_

#include <chrono>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

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
  // A wall clock step back larger than this is followed, not clamped.
  int64_t max_clock_regression_ms = 1000;
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

  // Decides a batch: *results is replaced by one result per request, in
  // request order, and the results, stats and state are exactly those of
  // calling Check(requests[i], now) for i = 0, 1, ... in turn (duplicate keys,
  // dedup ids, invalid requests and a full table included). It is faster for
  // many distinct keys because lookups are split in passes over up to
  // kBatchChunk requests: hash all and prefetch their table slots, then probe
  // all and prefetch their counter blocks, then decide in order, so the cache
  // misses of the whole chunk overlap instead of costing one after another.
  void CheckBatch(std::span<const CheckRequestRef> requests, Instant now,
                  std::vector<CheckResult>* results);

  // CheckBatch for requests already validated and hashed (the sharded facade).
  // REQUIRES: keys.size() == requests.size(), each as for CheckKey, and
  // `results` points at requests.size() results (overwritten).
  void CheckKeyBatch(std::span<const CheckRequestRef> requests, std::span<const crdt::KeyId> keys,
                     Instant now, CheckResult* results);

  // Requests per prefetch round: enough to overlap the misses (a core tracks
  // ~16 outstanding lines), few enough that the lines are still in L1 when
  // the decision reads them.
  static constexpr size_t kBatchChunk = 64;

  // Reclaims expired keys and dedup entries. Returns keys reclaimed.
  size_t Sweep(Instant now);

  crdt::KeyStore& store() { return store_; }
  const crdt::KeyStore& store() const { return store_; }
  const LimiterStats& stats() const { return stats_; }
  crdt::SlotIndex local_slot() const { return local_slot_; }
  // The bucket the last request that added hits put them in (the cell a
  // replication delta must carry). Meaningful only right after a check whose
  // result was allowed with hits > 0 and that was not a retry.
  int64_t last_added_bucket() const { return last_added_bucket_; }

 private:
  Instant Clamp(Instant now);
  // The result of an invalid request (counted in stats).
  void Invalid(const CheckRequestRef& request, std::string why, CheckResult* result);
  // CheckKey's decision at an already clamped `now`. `entry`, when not null,
  // is the store entry of `key` found earlier with no layout change since
  // (it saves the probe); null means look it up (or create it) now.
  void Decide(const CheckRequestRef& request, const crdt::KeyId& key, Instant now,
              crdt::KeyStore::Entry* entry, CheckResult* result);
  // Fills remaining / retry_after_ms / reset_after_ms from the counter state
  // after the decision: `bucket` is the bucket of now, `used` the hits
  // counted there (Sum(bucket)), `added` whether this request added hits.
  void Describe(const crdt::WindowCounter& counter, const crdt::Geometry& geometry, int64_t bucket,
                uint64_t used, const CheckRequestRef& request, int64_t now_wall_ms, bool allowed,
                bool added, CheckResult* result) const;
  // store_.GeometryOf(window_ms), memoized for the last window seen (two
  // 64-bit divisions per check otherwise).
  const crdt::Geometry& GeometryOf(uint64_t window_ms) {
    if (window_ms != memo_window_ms_) {
      memo_geometry_ = store_.GeometryOf(window_ms);
      memo_window_ms_ = window_ms;
    }
    return memo_geometry_;
  }

  crdt::KeyStore store_;
  DedupCache dedup_;
  crdt::SlotIndex local_slot_;
  int64_t max_clock_regression_ms_;
  Instant high_water_;
  LimiterStats stats_;
  uint64_t memo_window_ms_ = 0;  // 0: no valid window, nothing memoized
  crdt::Geometry memo_geometry_;
  int64_t last_added_bucket_ = 0;
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_LIMITER_CORE_H_

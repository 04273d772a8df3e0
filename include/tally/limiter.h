// tally::Limiter: the in-process, thread-safe sliding-window limiter that
// tallyd serves. Embed it directly when the callers live in one process.
//
// Semantics (docs/DESIGN.md, "The decision"):
//   * A counter is identified by (user_id, endpoint, window_ms); `limit` is
//     applied at decision time, so a changed limit takes effect at once.
//   * In every sliding interval of length window_ms (in the limiter's wall
//     time) the admitted hits never exceed the limit of the deciding request.
//   * Only admitted hits are counted; a denied request consumes nothing.
//   * A request whose request_id (non-zero) was seen for the same key within
//     the dedup TTL gets the first answer again and is not counted twice.
//
// Time is injected: every call takes an Instant read by the caller. Wall time
// that goes backwards is clamped to the highest value seen (the limiter then
// behaves as if time stood still, which can only deny more).
#ifndef TALLY_LIMITER_H_
#define TALLY_LIMITER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "tally/types.h"

namespace tally {

struct LimiterOptions {
  // Sub-buckets per window: accuracy vs memory. A key may stay under its limit
  // by at most one sub-bucket's worth of window (1/buckets_per_window).
  uint32_t buckets_per_window = 10;
  // Hard cap on live keys (all shards together). A new key beyond it, once
  // expired keys have been reclaimed, gets Status::kOverCapacity.
  size_t max_keys = 4'000'000;
  // How long a request id is remembered for deduplication, and how many.
  std::chrono::milliseconds dedup_ttl{10'000};
  size_t max_dedup_entries = 1'000'000;
  // Independent lock stripes; keys are spread over them by hash.
  size_t shards = 64;
};

struct LimiterStats {
  uint64_t checks = 0;
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t invalid = 0;
  uint64_t over_capacity = 0;
  uint64_t dedup_hits = 0;
  uint64_t keys_reclaimed = 0;
  uint64_t live_keys = 0;
  // Wall clock steps back larger than the regression the core clamps.
  uint64_t clock_steps_back = 0;
  // Keys whose counter a peer had shaped for another window: started afresh
  // by a check instead of failing it (docs/DESIGN.md, "Validating peer state").
  uint64_t geometry_repairs = 0;
};

// Thread safety: all methods may be called concurrently from any thread.
// Checks on keys in different shards never contend.
class Limiter {
 public:
  // REQUIRES: 1 <= buckets_per_window <= 1000, shards >= 1, max_keys >= 1.
  explicit Limiter(const LimiterOptions& options);
  ~Limiter();
  Limiter(const Limiter&) = delete;
  Limiter& operator=(const Limiter&) = delete;

  // Decides one request at `now`. Never throws on bad input: invalid
  // requests get Status::kInvalidArgument and consume nothing.
  CheckResult Check(const CheckRequestRef& request, Instant now);

  // Decides a batch at `now` (e.g. one datagram's checks): *results is
  // replaced by one result per request, in request order. Requests are
  // grouped by shard; each shard's lock is taken once per call (never two at
  // a time) and its requests are decided in request order by
  // LimiterCore::CheckKeyBatch, which overlaps their cache misses. (With 64
  // shards a batch of 64 is ~1 request per shard: it then saves the lock and
  // call overhead of repeated keys, but overlaps few misses.)
  // Thread safety: may run concurrently with every other method. Each
  // request is decided atomically under its key's shard lock, exactly as by
  // Check, so per-key exactness holds against any concurrent callers; the
  // batch as a whole is not atomic (other callers may be decided between
  // two of its shards). With no concurrent caller the results, stats and
  // state equal those of calling Check on each request in order.
  void CheckBatch(std::span<const CheckRequestRef> requests, Instant now,
                  std::vector<CheckResult>* results);

  // Reclaims expired keys and dedup entries of one shard (round-robin over
  // calls). The daemon calls it from a timer; cheap enough to call often.
  void SweepOneShard(Instant now);

  size_t shard_count() const;
  LimiterStats GetStats() const;
  const LimiterOptions& options() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_LIMITER_H_

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
// Clocks. The Limiter reads no clock: every call takes an Instant read by the
// caller, and tally::ReadClock() below reads the same clocks tallyd hands its
// limiter. Its two halves are used apart:
//   * now.wall (ms since the Unix epoch; std::chrono::system_clock) names the
//     sub-buckets and so decides what falls in a window. retry_after_ms and
//     reset_after_ms are durations from now.wall: add them to the now.wall you
//     passed to get absolute times. Each shard keeps the highest wall time it
//     has decided at; a call whose wall time is behind it by at most 1000 ms
//     (threads that read the clock before taking the shard lock) is decided at
//     that highest time, as if time stood still, which can only deny more. A
//     step back of more than 1000 ms is a real clock step and is followed:
//     hits counted while the clock was ahead move to the new time's bucket
//     and count a full window from it, so a step back can only deny more too
//     (LimiterStats::clock_steps_back counts such steps; docs/DESIGN.md,
//     "Time"). A step forward of more than a window forgets that window early.
//   * now.monotonic (ns, any fixed origin; std::chrono::steady_clock) only
//     ages request ids for deduplication (dedup_ttl). Each shard clamps it to
//     the highest value seen, so it must never go back.
#ifndef TALLY_LIMITER_H_
#define TALLY_LIMITER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string_view>
#include <vector>

#include "tally/types.h"

namespace tally {

namespace internal {
class LimiterAccess;  // tallyd's snapshots (daemon/limiter_access.h); not an API
}  // namespace internal

// Reads the clocks the Limiter expects, as tallyd does: wall = system_clock
// in ms since the Unix epoch, monotonic = steady_clock in ns. Use it (or your
// own Instant with the same meaning, e.g. a fake clock in tests) for Check,
// CheckBatch and SweepOneShard, and keep the Instant you passed to turn
// retry_after_ms / reset_after_ms into absolute times.
// Thread safety: may be called from any thread. Never fails.
Instant ReadClock();

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

  // Decides one request at `now` (see "Clocks" above). The request's views
  // are read during the call only. Never throws on bad input: invalid
  // requests get Status::kInvalidArgument and consume nothing; a full key
  // table gives Status::kOverCapacity.
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
  // calls) at `now` (same clocks as Check); shard_count() calls cover every
  // shard. A full shard also reclaims expired keys itself before refusing a
  // new one; sweeping keeps memory and the dedup cache small meanwhile. The
  // daemon calls it from a timer; it is cheap enough to call often.
  // Thread safety: takes that shard's lock only.
  void SweepOneShard(Instant now);

  // options.shards, as given to the constructor.
  size_t shard_count() const;
  // Counters summed over all shards. Each shard is read under its lock, one
  // at a time: the total is not one atomic snapshot under concurrent checks.
  LimiterStats GetStats() const;
  // The options given to the constructor; valid as long as the Limiter.
  const LimiterOptions& options() const;

 private:
  friend class internal::LimiterAccess;
  // Counts this process's hits in the replica slot (slot_node_id,
  // slot_generation); the public constructor's is ("local", 1).
  Limiter(const LimiterOptions& options, std::string_view slot_node_id, uint64_t slot_generation);

  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally

#endif  // TALLY_LIMITER_H_

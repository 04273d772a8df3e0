#include "daemon/core/limiter_core.h"

#include <algorithm>
#include <cassert>

namespace tally::core {

LimiterCore::LimiterCore(const LimiterCoreOptions& options, const crdt::ReplicaSlot& local_slot)
    : store_(crdt::KeyStoreOptions{options.max_keys, options.buckets_per_window}),
      dedup_(options.dedup_ttl, options.max_dedup_entries),
      local_slot_(store_.slots().Intern(local_slot)),
      max_clock_regression_ms_(options.max_clock_regression_ms) {}

Instant LimiterCore::Clamp(Instant now) {
  if (now.wall.count() < high_water_.wall.count() - max_clock_regression_ms_) {
    high_water_.wall = now.wall;  // a clock step, not a race between threads
    ++stats_.clock_steps_back;
    // Hits counted while the clock ran ahead move to now's bucket: they
    // count a full window from now, and peers, which drop state from beyond
    // the clock allowance (docs/DESIGN.md), accept this node's state again.
    store_.PullBack(now.wall.count());
  } else {
    high_water_.wall = std::max(high_water_.wall, now.wall);
  }
  high_water_.monotonic = std::max(high_water_.monotonic, now.monotonic);
  return high_water_;
}

void LimiterCore::Invalid(const CheckRequestRef& request, std::string why, CheckResult* result) {
  ++stats_.checks;
  ++stats_.invalid;
  *result = CheckResult{};
  result->request_id = request.request_id;
  result->status = Status::kInvalidArgument;
  result->limit = request.limit;
  result->error = std::move(why);
}

CheckResult LimiterCore::Check(const CheckRequestRef& request, Instant now) {
  CheckResult result;
  std::string why;
  if (ValidateRequest(request, &why) != Status::kOk) {
    Invalid(request, std::move(why), &result);
    return result;
  }
  // Invalid requests do not clamp: only a decided request moves the high water.
  Decide(request, crdt::HashKey(request.user_id, request.endpoint, request.window_ms), Clamp(now),
         nullptr, &result);
  return result;
}

CheckResult LimiterCore::CheckKey(const CheckRequestRef& request, const crdt::KeyId& key,
                                  Instant now) {
  CheckResult result;
  Decide(request, key, Clamp(now), nullptr, &result);
  return result;
}

// Both batch entry points share the shape of one chunk:
//   pass 1: (validate and hash,) prefetch each key's table slot;
//   pass 2: probe each key (the slot is in flight or cached) and prefetch the
//           counter block it points to;
//   pass 3: decide in request order, reusing the pass-2 entry while the
//           store's layout is unchanged (a growth or sweep in pass 3 voids
//           the rest, which then look up again; a key absent in pass 2 is
//           always looked up again, so duplicates and creations keep the
//           sequential semantics exactly).
// Clamp(now) is idempotent for one `now`, so clamping once before the first
// decision equals clamping before each; a batch with no valid request must not
// clamp at all, as Check would not.

void LimiterCore::CheckBatch(std::span<const CheckRequestRef> requests, Instant now,
                             std::vector<CheckResult>* results) {
  results->resize(requests.size());
  crdt::KeyId keys[kBatchChunk];
  bool valid[kBatchChunk];
  crdt::KeyStore::Entry* found[kBatchChunk];
  bool clamped = false;
  std::string why;
  for (size_t base = 0; base < requests.size(); base += kBatchChunk) {
    const size_t n = std::min(kBatchChunk, requests.size() - base);
    const CheckRequestRef* req = requests.data() + base;
    CheckResult* out = results->data() + base;
    bool any_valid = false;
    for (size_t i = 0; i < n; ++i) {
      valid[i] = ValidateRequest(req[i], &why) == Status::kOk;
      if (!valid[i]) {
        Invalid(req[i], std::move(why), &out[i]);
        why.clear();
        continue;
      }
      any_valid = true;
      keys[i] = crdt::HashKey(req[i].user_id, req[i].endpoint, req[i].window_ms);
      store_.PrefetchSlot(keys[i]);
    }
    if (!any_valid) continue;
    if (!clamped) {
      now = Clamp(now);
      clamped = true;
    }
    const uint64_t epoch = store_.layout_epoch();
    for (size_t i = 0; i < n; ++i) {
      if (!valid[i]) continue;
      found[i] = store_.Find(keys[i]);
      if (found[i] != nullptr) found[i]->counter.Prefetch();
    }
    for (size_t i = 0; i < n; ++i) {
      if (!valid[i]) continue;
      Decide(req[i], keys[i], now, store_.layout_epoch() == epoch ? found[i] : nullptr, &out[i]);
    }
  }
}

void LimiterCore::CheckKeyBatch(std::span<const CheckRequestRef> requests,
                                std::span<const crdt::KeyId> keys, Instant now,
                                CheckResult* results) {
  assert(keys.size() == requests.size());
  if (requests.empty()) return;
  now = Clamp(now);
  crdt::KeyStore::Entry* found[kBatchChunk];
  for (size_t base = 0; base < requests.size(); base += kBatchChunk) {
    const size_t n = std::min(kBatchChunk, requests.size() - base);
    const CheckRequestRef* req = requests.data() + base;
    const crdt::KeyId* key = keys.data() + base;
    CheckResult* out = results + base;
    for (size_t i = 0; i < n; ++i) store_.PrefetchSlot(key[i]);
    const uint64_t epoch = store_.layout_epoch();
    for (size_t i = 0; i < n; ++i) {
      found[i] = store_.Find(key[i]);
      if (found[i] != nullptr) found[i]->counter.Prefetch();
    }
    for (size_t i = 0; i < n; ++i) {
      Decide(req[i], key[i], now, store_.layout_epoch() == epoch ? found[i] : nullptr, &out[i]);
    }
  }
}

void LimiterCore::Decide(const CheckRequestRef& request, const crdt::KeyId& key, Instant now,
                         crdt::KeyStore::Entry* entry, CheckResult* result) {
  ++stats_.checks;
  result->request_id = request.request_id;
  result->status = Status::kOk;
  result->limit = request.limit;
  result->error.clear();
  const int64_t now_ms = now.wall.count();

  // A retry of an already decided request: same decision, nothing counted.
  std::optional<bool> seen;
  if (request.request_id != 0) seen = dedup_.Find(request.request_id, key, now.monotonic);

  if (entry == nullptr) {
    crdt::KeyStore::Lookup how;
    entry = store_.FindOrCreate(key, request.window_ms, now_ms, &how);
  }
  auto fail = [result](Status status, const char* why) {
    result->status = status;
    result->allowed = false;
    result->remaining = 0;
    result->retry_after_ms = 0;
    result->reset_after_ms = 0;
    result->error = why;
  };
  if (entry == nullptr) {
    ++stats_.over_capacity;
    fail(Status::kOverCapacity, "key table full");
    return;
  }
  crdt::WindowCounter& counter = entry->counter;
  if (!(counter.geometry() == GeometryOf(request.window_ms))) {
    // The key id hashes the window, so the window's geometry is the key's.
    // A counter shaped otherwise came from a faulty peer's state, unless a
    // check here confirmed that shape, which only a 128-bit hash collision
    // between two windows allows.
    if (counter.geometry_confirmed()) {
      fail(Status::kInternal, "key id collision");
      return;
    }
    // Its counts were never this key's: start the key afresh.
    counter = crdt::WindowCounter(GeometryOf(request.window_ms));
    store_.MarkChanged(entry);
    ++stats_.geometry_repairs;
  }
  if (!counter.geometry_confirmed()) counter.ConfirmGeometry();
  const crdt::Geometry geometry = counter.geometry();
  const int64_t bucket = crdt::BucketOf(now_ms, geometry);

  // `used` is Sum(bucket) after the decision (not asserted here: assertions
  // stay on in benchmarked builds; tests/daemon/core/check_batch_test.cc
  // compares every field with the pre-batching implementation). Adding h hits at `bucket` adds
  // exactly h to it: the hits land in max(bucket, newest - span), which the
  // sum at `bucket` counts, and moving newest forward only clears buckets
  // older than bucket - span, which it does not count.
  uint64_t used = counter.Sum(bucket);
  bool allowed;
  bool added = false;
  if (seen.has_value()) {
    ++stats_.dedup_hits;
    allowed = *seen;
  } else {
    allowed = used + request.hits <= request.limit;
    if (allowed && request.hits > 0) {
      last_added_bucket_ = counter.Add(local_slot_, bucket, static_cast<uint32_t>(request.hits));
      store_.MarkChanged(entry);
      used += request.hits;
      added = true;
    }
    if (request.request_id != 0) dedup_.Insert(request.request_id, key, allowed, now.monotonic);
  }
  if (allowed) {
    ++stats_.allowed;
  } else {
    ++stats_.denied;
  }
  Describe(counter, geometry, bucket, used, request, now_ms, allowed, added, result);
}

void LimiterCore::Describe(const crdt::WindowCounter& counter, const crdt::Geometry& g,
                           int64_t bucket, uint64_t used, const CheckRequestRef& request,
                           int64_t now_ms, bool allowed, bool added, CheckResult* result) const {
  result->allowed = allowed;
  result->remaining = used >= request.limit ? 0 : request.limit - used;
  if (allowed) {
    result->retry_after_ms = 0;
  } else {
    std::optional<int64_t> fits = counter.FirstFittingBucket(bucket, request.limit, request.hits);
    result->retry_after_ms =
        fits.has_value() ? static_cast<uint64_t>(std::max<int64_t>(1, *fits * g.bucket_ms - now_ms))
                         : kNeverFits;
  }
  // Having just added hits at `bucket`, when that is the newest bucket it is
  // the last non-empty one: no need to scan the ring.
  std::optional<int64_t> last =
      added && bucket == counter.newest_bucket() ? bucket : counter.LastNonEmptyBucket(bucket);
  result->reset_after_ms =
      last.has_value()
          ? static_cast<uint64_t>((*last + static_cast<int64_t>(g.span) + 1) * g.bucket_ms - now_ms)
          : 0;
}

size_t LimiterCore::Sweep(Instant now) {
  now = Clamp(now);
  dedup_.Expire(now.monotonic);
  size_t removed = store_.Sweep(now.wall.count());
  stats_.keys_reclaimed += removed;
  return removed;
}

}  // namespace tally::core

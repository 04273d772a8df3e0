#include "daemon/core/limiter_core.h"

#include <algorithm>
#include <cassert>

namespace tally::core {

LimiterCore::LimiterCore(const LimiterCoreOptions& options, const crdt::ReplicaSlot& local_slot)
    : store_(crdt::KeyStoreOptions{options.max_keys, options.buckets_per_window}),
      dedup_(options.dedup_ttl, options.max_dedup_entries),
      local_slot_(store_.slots().Intern(local_slot)) {}

Instant LimiterCore::Clamp(Instant now) {
  high_water_.wall = std::max(high_water_.wall, now.wall);
  high_water_.monotonic = std::max(high_water_.monotonic, now.monotonic);
  return high_water_;
}

CheckResult LimiterCore::Check(const CheckRequestRef& request, Instant now) {
  std::string why;
  if (ValidateRequest(request, &why) != Status::kOk) {
    ++stats_.checks;
    ++stats_.invalid;
    CheckResult result;
    result.request_id = request.request_id;
    result.status = Status::kInvalidArgument;
    result.limit = request.limit;
    result.error = std::move(why);
    return result;
  }
  return CheckKey(request, crdt::HashKey(request.user_id, request.endpoint, request.window_ms),
                  now);
}

CheckResult LimiterCore::CheckKey(const CheckRequestRef& request, const crdt::KeyId& key,
                                  Instant now) {
  now = Clamp(now);
  ++stats_.checks;
  CheckResult result;
  result.request_id = request.request_id;
  result.limit = request.limit;
  const int64_t now_ms = now.wall.count();

  // A retry of an already decided request: same decision, nothing counted.
  std::optional<bool> seen = dedup_.Find(request.request_id, key, now.monotonic);

  crdt::KeyStore::Lookup how;
  crdt::KeyStore::Entry* entry = store_.FindOrCreate(key, request.window_ms, now_ms, &how);
  if (entry == nullptr) {
    ++stats_.over_capacity;
    result.status = Status::kOverCapacity;
    result.error = "key table full";
    return result;
  }
  crdt::WindowCounter& counter = entry->counter;
  const crdt::Geometry geometry = counter.geometry();
  if (!(geometry == store_.GeometryOf(request.window_ms))) {
    // Only a 128-bit hash collision between two windows can get here.
    result.status = Status::kInternal;
    result.error = "key id collision";
    return result;
  }
  const int64_t bucket = crdt::BucketOf(now_ms, geometry);

  bool allowed;
  if (seen.has_value()) {
    ++stats_.dedup_hits;
    allowed = *seen;
  } else {
    allowed = counter.Sum(bucket) + request.hits <= request.limit;
    if (allowed && request.hits > 0) {
      counter.Add(local_slot_, bucket, static_cast<uint32_t>(request.hits));
      store_.MarkChanged(entry);
    }
    if (request.request_id != 0) dedup_.Insert(request.request_id, key, allowed, now.monotonic);
  }
  if (allowed) {
    ++stats_.allowed;
  } else {
    ++stats_.denied;
  }
  Describe(counter, request, now_ms, allowed, &result);
  return result;
}

void LimiterCore::Describe(const crdt::WindowCounter& counter, const CheckRequestRef& request,
                           int64_t now_ms, bool allowed, CheckResult* result) const {
  const crdt::Geometry g = counter.geometry();
  const int64_t bucket = crdt::BucketOf(now_ms, g);
  const uint64_t used = counter.Sum(bucket);
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
  std::optional<int64_t> last = counter.LastNonEmptyBucket(bucket);
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

// tally::Limiter: LimiterCore shards behind one mutex each. A check hashes its
// key once, picks the shard from the hash and decides under that shard's
// lock, so the check-and-increment of one key is atomic (linearizable) and
// keys in different shards never contend. A batch is validated and hashed
// outside any lock, grouped by shard (a counting sort that keeps request
// order within a shard), and each shard's group is decided under one lock.
#include "tally/limiter.h"

#include <atomic>
#include <cassert>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <vector>

#include "crdt/key_id.h"
#include "daemon/core/limiter_core.h"
#include "daemon/limiter_access.h"

namespace tally {

Instant ReadClock() {
  Instant now;
  now.wall = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  now.monotonic = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now().time_since_epoch());
  return now;
}

struct Limiter::Impl {
  struct alignas(64) Shard {
    Shard(const core::LimiterCoreOptions& o, const crdt::ReplicaSlot& slot) : core(o, slot) {}
    std::mutex mu;
    core::LimiterCore core;
  };
  LimiterOptions options;
  std::vector<std::unique_ptr<Shard>> shards;
  std::atomic<size_t> next_sweep{0};
  std::atomic<uint64_t> invalid{0};

  // The high half picks the shard; the low half indexes within the shard's map.
  size_t ShardIndexOf(const crdt::KeyId& key) const { return key.high % shards.size(); }
  Shard& ShardOf(const crdt::KeyId& key) { return *shards[ShardIndexOf(key)]; }
};

Limiter::Limiter(const LimiterOptions& options) : Limiter(options, "local", 1) {}

Limiter::Limiter(const LimiterOptions& options, std::string_view slot_node_id,
                 uint64_t slot_generation)
    : impl_(std::make_unique<Impl>()) {
  assert(options.shards >= 1);
  assert(options.max_keys >= 1);
  impl_->options = options;
  core::LimiterCoreOptions core_options;
  core_options.buckets_per_window = options.buckets_per_window;
  core_options.max_keys = std::max<size_t>(1, options.max_keys / options.shards);
  core_options.dedup_ttl = options.dedup_ttl;
  core_options.max_dedup_entries = options.max_dedup_entries / options.shards;
  impl_->shards.reserve(options.shards);
  const crdt::ReplicaSlot slot{std::string(slot_node_id), slot_generation};
  for (size_t i = 0; i < options.shards; ++i) {
    impl_->shards.push_back(std::make_unique<Impl::Shard>(core_options, slot));
  }
}

Limiter::~Limiter() = default;

CheckResult Limiter::Check(const CheckRequestRef& request, Instant now) {
  std::string why;
  if (ValidateRequest(request, &why) != Status::kOk) {
    impl_->invalid.fetch_add(1, std::memory_order_relaxed);
    CheckResult result;
    result.request_id = request.request_id;
    result.status = Status::kInvalidArgument;
    result.limit = request.limit;
    result.error = std::move(why);
    return result;
  }
  crdt::KeyId key = crdt::HashKey(request.user_id, request.endpoint, request.window_ms);
  Impl::Shard& shard = impl_->ShardOf(key);
  std::lock_guard<std::mutex> lock(shard.mu);
  return shard.core.CheckKey(request, key, now);
}

void Limiter::CheckBatch(std::span<const CheckRequestRef> requests, Instant now,
                         std::vector<CheckResult>* results) {
  const size_t n = requests.size();
  results->resize(n);
  if (n == 1) {  // the common one-check datagram: nothing to group
    (*results)[0] = Check(requests[0], now);
    return;
  }
  // Per-thread scratch, reused across calls so a batch allocates nothing once
  // warm. The requests of shard s end up at [start[s], start[s + 1]) of
  // refs/keys/out, in request order; order[] maps those positions back.
  struct Scratch {
    std::vector<crdt::KeyId> key_of;    // per request
    std::vector<uint32_t> shard_of;     // per request; kNone when invalid
    std::vector<uint32_t> start;        // per shard + 1
    std::vector<uint32_t> fill;         // per shard: next free grouped position
    std::vector<uint32_t> visit;        // shards with requests, by first appearance
    std::vector<uint32_t> order;        // grouped position -> request index
    std::vector<CheckRequestRef> refs;  // grouped
    std::vector<crdt::KeyId> keys;      // grouped
    std::vector<CheckResult> out;       // grouped
  };
  constexpr uint32_t kNone = UINT32_MAX;
  thread_local Scratch s;
  const size_t shard_count = impl_->shards.size();
  s.key_of.resize(n);
  s.shard_of.resize(n);
  s.start.assign(shard_count + 1, 0);
  s.visit.clear();
  std::string why;
  uint64_t invalid = 0;
  for (size_t i = 0; i < n; ++i) {
    const CheckRequestRef& request = requests[i];
    if (ValidateRequest(request, &why) != Status::kOk) {
      ++invalid;
      CheckResult& r = (*results)[i];
      r = CheckResult{};
      r.request_id = request.request_id;
      r.status = Status::kInvalidArgument;
      r.limit = request.limit;
      r.error = std::move(why);
      why.clear();
      s.shard_of[i] = kNone;
      continue;
    }
    s.key_of[i] = crdt::HashKey(request.user_id, request.endpoint, request.window_ms);
    s.shard_of[i] = static_cast<uint32_t>(impl_->ShardIndexOf(s.key_of[i]));
    if (s.start[s.shard_of[i] + 1]++ == 0) s.visit.push_back(s.shard_of[i]);
  }
  if (invalid > 0) impl_->invalid.fetch_add(invalid, std::memory_order_relaxed);
  for (size_t sh = 0; sh < shard_count; ++sh) s.start[sh + 1] += s.start[sh];
  const size_t valid = s.start[shard_count];
  if (valid == 0) return;
  s.order.resize(valid);
  s.refs.resize(valid);
  s.keys.resize(valid);
  s.out.resize(valid);
  s.fill.assign(s.start.begin(), s.start.end() - 1);
  for (size_t i = 0; i < n; ++i) {
    if (s.shard_of[i] == kNone) continue;
    const uint32_t pos = s.fill[s.shard_of[i]]++;
    s.order[pos] = static_cast<uint32_t>(i);
    s.refs[pos] = requests[i];
    s.keys[pos] = s.key_of[i];
  }
  // Shards in order of first appearance, not by index: concurrent batches
  // walking every shard in the same order would queue behind each other on
  // lock after lock (a convoy). Only one lock is held at a time, so any order
  // is deadlock-free.
  for (const uint32_t sh : s.visit) {
    const size_t from = s.start[sh], count = s.start[sh + 1] - from;
    Impl::Shard& shard = *impl_->shards[sh];
    std::lock_guard<std::mutex> lock(shard.mu);
    shard.core.CheckKeyBatch(std::span(s.refs).subspan(from, count),
                             std::span(s.keys).subspan(from, count), now, s.out.data() + from);
  }
  for (size_t pos = 0; pos < valid; ++pos) (*results)[s.order[pos]] = std::move(s.out[pos]);
}

void Limiter::SweepOneShard(Instant now) {
  size_t index = impl_->next_sweep.fetch_add(1, std::memory_order_relaxed) % impl_->shards.size();
  Impl::Shard& shard = *impl_->shards[index];
  std::lock_guard<std::mutex> lock(shard.mu);
  shard.core.Sweep(now);
}

size_t Limiter::shard_count() const { return impl_->shards.size(); }

const LimiterOptions& Limiter::options() const { return impl_->options; }

LimiterStats Limiter::GetStats() const {
  LimiterStats total;
  for (const auto& shard : impl_->shards) {
    std::lock_guard<std::mutex> lock(shard->mu);
    const LimiterStats& s = shard->core.stats();
    total.checks += s.checks;
    total.allowed += s.allowed;
    total.denied += s.denied;
    total.over_capacity += s.over_capacity;
    total.dedup_hits += s.dedup_hits;
    total.keys_reclaimed += s.keys_reclaimed;
    total.clock_steps_back += s.clock_steps_back;
    total.geometry_repairs += s.geometry_repairs;
    total.live_keys += shard->core.store().size();
  }
  uint64_t invalid = impl_->invalid.load(std::memory_order_relaxed);
  total.invalid += invalid;
  total.checks += invalid;
  return total;
}

namespace internal {

std::unique_ptr<Limiter> LimiterAccess::Make(const LimiterOptions& options,
                                             const crdt::ReplicaSlot& local_slot) {
  return std::unique_ptr<Limiter>(new Limiter(options, local_slot.node_id, local_slot.incarnation));
}

size_t LimiterAccess::ShardOf(const Limiter& limiter, const crdt::KeyId& key) {
  return limiter.impl_->ShardIndexOf(key);
}

std::unique_lock<std::mutex> LimiterAccess::LockShard(Limiter& limiter, size_t shard) {
  return std::unique_lock<std::mutex>(limiter.impl_->shards[shard]->mu);
}

crdt::KeyStore& LimiterAccess::ShardStore(Limiter& limiter, size_t shard) {
  return limiter.impl_->shards[shard]->core.store();
}

}  // namespace internal
}  // namespace tally

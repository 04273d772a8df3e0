// tally::Limiter: LimiterCore shards behind one mutex each. A check hashes its
// key once, picks the shard from the hash and decides under that shard's
// lock, so the check-and-increment of one key is atomic (linearizable) and
// keys in different shards never contend.
#include "tally/limiter.h"

#include <atomic>
#include <cassert>
#include <mutex>
#include <vector>

#include "crdt/key_id.h"
#include "daemon/core/limiter_core.h"

namespace tally {

struct Limiter::Impl {
  struct alignas(64) Shard {
    explicit Shard(const core::LimiterCoreOptions& o) : core(o) {}
    std::mutex mu;
    core::LimiterCore core;
  };
  LimiterOptions options;
  std::vector<std::unique_ptr<Shard>> shards;
  std::atomic<size_t> next_sweep{0};
  std::atomic<uint64_t> invalid{0};

  Shard& ShardOf(const crdt::KeyId& key) {
    // The high half picks the shard; the low half indexes within the shard's map.
    return *shards[key.high % shards.size()];
  }
};

Limiter::Limiter(const LimiterOptions& options) : impl_(std::make_unique<Impl>()) {
  assert(options.shards >= 1);
  assert(options.max_keys >= 1);
  impl_->options = options;
  core::LimiterCoreOptions core_options;
  core_options.buckets_per_window = options.buckets_per_window;
  core_options.max_keys = std::max<size_t>(1, options.max_keys / options.shards);
  core_options.dedup_ttl = options.dedup_ttl;
  core_options.max_dedup_entries = options.max_dedup_entries / options.shards;
  impl_->shards.reserve(options.shards);
  for (size_t i = 0; i < options.shards; ++i) {
    impl_->shards.push_back(std::make_unique<Impl::Shard>(core_options));
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
    total.live_keys += shard->core.store().size();
  }
  uint64_t invalid = impl_->invalid.load(std::memory_order_relaxed);
  total.invalid += invalid;
  total.checks += invalid;
  return total;
}

}  // namespace tally


#include "daemon/core/dedup_cache.h"

#include <cassert>

namespace tally::core {

DedupCache::DedupCache(std::chrono::nanoseconds ttl, size_t max_entries)
    : ttl_ns_(ttl.count()), max_entries_(max_entries) {}

std::optional<bool> DedupCache::Find(uint64_t request_id, const crdt::KeyId& key,
                                     std::chrono::nanoseconds now_mono) {
  if (request_id == 0 || map_.empty()) return std::nullopt;
  Expire(now_mono);
  auto it = map_.find(Id{request_id, key});
  if (it == map_.end()) return std::nullopt;
  return it->second;
}

void DedupCache::Insert(uint64_t request_id, const crdt::KeyId& key, bool allowed,
                        std::chrono::nanoseconds now_mono) {
  assert(request_id != 0);
  if (max_entries_ == 0 || ttl_ns_ <= 0) return;
  while (map_.size() >= max_entries_) EvictOldest();
  Id id{request_id, key};
  bool inserted = map_.emplace(id, allowed).second;
  assert(inserted);
  // Monotonic time never goes back, so appending keeps order_ sorted.
  assert(order_.empty() || order_.back().expires_ns <= now_mono.count() + ttl_ns_);
  order_.push_back(Pending{id, now_mono.count() + ttl_ns_});
}

void DedupCache::Expire(std::chrono::nanoseconds now_mono) {
  while (!order_.empty() && order_.front().expires_ns <= now_mono.count()) EvictOldest();
}

void DedupCache::EvictOldest() {
  assert(!order_.empty());
  map_.erase(order_.front().id);
  order_.pop_front();
}

}  // namespace tally::core

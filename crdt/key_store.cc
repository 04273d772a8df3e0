#include "crdt/key_store.h"

#include <cassert>

namespace tally::crdt {

SlotIndex SlotTable::Intern(const ReplicaSlot& slot) {
  for (size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i] == slot) return static_cast<SlotIndex>(i);
  }
  slots_.push_back(slot);
  return static_cast<SlotIndex>(slots_.size() - 1);
}

KeyStore::KeyStore(const KeyStoreOptions& options) : options_(options) {
  assert(options_.max_keys >= 1);
  assert(options_.buckets_per_window >= 1 && options_.buckets_per_window <= 1000);
}

KeyStore::Entry* KeyStore::Find(const KeyId& id) {
  auto it = map_.find(id);
  return it == map_.end() ? nullptr : &it->second;
}

const KeyStore::Entry* KeyStore::Find(const KeyId& id) const {
  auto it = map_.find(id);
  return it == map_.end() ? nullptr : &it->second;
}

KeyStore::Entry* KeyStore::FindOrCreate(const KeyId& id, uint64_t window_ms, int64_t now_wall_ms,
                                        Lookup* how) {
  if (auto it = map_.find(id); it != map_.end()) {
    *how = Lookup::kFound;
    return &it->second;
  }
  if (map_.size() >= options_.max_keys) {
    if (!swept_when_full_ || now_wall_ms < last_full_sweep_ms_ ||
        now_wall_ms - last_full_sweep_ms_ >= options_.full_sweep_interval_ms) {
      swept_when_full_ = true;
      last_full_sweep_ms_ = now_wall_ms;
      Sweep(now_wall_ms);
    }
    if (map_.size() >= options_.max_keys) {
      *how = Lookup::kFull;
      return nullptr;
    }
  }
  auto [it, inserted] = map_.try_emplace(id, Entry{WindowCounter(GeometryOf(window_ms)), 0});
  assert(inserted);
  *how = Lookup::kCreated;
  return &it->second;
}

bool KeyStore::Merge(const KeyId& id, const WindowCounter& remote, int64_t now_wall_ms) {
  if (remote.is_null()) return false;
  Entry* entry = Find(id);
  if (entry == nullptr) {
    if (remote.Expired(BucketOf(now_wall_ms, remote.geometry()))) return true;  // nothing live
    if (map_.size() >= options_.max_keys) {
      Sweep(now_wall_ms);
      if (map_.size() >= options_.max_keys) return false;
    }
    entry = &map_.try_emplace(id, Entry{WindowCounter(remote.geometry()), 0}).first->second;
  }
  if (!(entry->counter.geometry() == remote.geometry())) return false;
  if (entry->counter.Join(remote)) MarkChanged(entry);
  return true;
}

size_t KeyStore::Sweep(int64_t now_wall_ms) {
  size_t removed = boost::unordered::erase_if(map_, [now_wall_ms](const auto& kv) {
    const WindowCounter& c = kv.second.counter;
    return c.Expired(BucketOf(now_wall_ms, c.geometry()));
  });
  reclaimed_ += removed;
  return removed;
}

size_t KeyStore::MemoryBytes() const {
  size_t bytes = map_.bucket_count() * sizeof(std::pair<const KeyId, Entry>);
  for (const auto& [id, entry] : map_) bytes += entry.counter.HeapBytes();
  return bytes;
}

}  // namespace tally::crdt

#include "persist/restore.h"

#include <cassert>

namespace tally::persist {

std::vector<crdt::SlotIndex>& Restorer::SlotMap(const crdt::KeyStore* store) {
  for (auto& [s, map] : slot_maps_) {
    if (s == store) return map;
  }
  slot_maps_.emplace_back(store, std::vector<crdt::SlotIndex>(snapshot_.slots.size(), UINT32_MAX));
  return slot_maps_.back().second;
}

void Restorer::RestoreKey(size_t index, int64_t now_wall_ms, crdt::KeyStore* store) {
  assert(snapshot_.ok() && index < snapshot_.keys.size());
  const RestoredKey& key = snapshot_.keys[index];
  const crdt::Geometry& g = key.geometry;
  std::vector<crdt::SlotIndex>& slot_map = SlotMap(store);
  crdt::WindowCounter counter(g);
  const int64_t oldest = key.newest_bucket - static_cast<int64_t>(key.depth) + 1;
  for (uint32_t r = key.first_row; r < key.first_row + key.row_count; ++r) {
    const RestoredRow& row = snapshot_.rows[r];
    crdt::SlotIndex& slot = slot_map[row.slot];
    if (slot == UINT32_MAX) {
      slot = store->slots().Intern(snapshot_.slots[row.slot]);
      // A bounded slot table may refuse a new slot (an index past its size).
      if (slot >= store->slots().size()) {
        slot = UINT32_MAX;
        ++stats_.keys_refused;
        return;
      }
    }
    // Newest first: the ring moves once, to the key's newest bucket.
    for (int64_t k = key.depth - 1; k >= 0; --k) {
      counter.MergeBucket(slot, oldest + k, snapshot_.counts[row.first_count + k]);
    }
  }
  if (counter.Expired(crdt::BucketOf(now_wall_ms, g))) {
    ++stats_.keys_expired;
    return;
  }
  if (store->Merge(key.id, counter, now_wall_ms)) {
    ++stats_.keys_merged;
  } else {
    ++stats_.keys_refused;
  }
}

RestoreStats RestoreSnapshot(const DecodedSnapshot& snapshot, int64_t now_wall_ms,
                             crdt::KeyStore* store) {
  return RestoreSnapshot(snapshot, now_wall_ms, [store](const crdt::KeyId&) { return store; });
}

}  // namespace tally::persist

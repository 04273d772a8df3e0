// Restoring a decoded snapshot into key stores (docs/DESIGN.md, "Snapshots").
//
// The rule: restored counts come back as rows of the replica slots the
// snapshot names, the slots of the processes that counted them (for this
// node, an earlier generation). The restarted process counts in its own new
// slot, so no restored row is ever incremented again, and each expires with
// its buckets like any dead slot's row. Restoring is a join (pointwise max),
// the same merge replication uses, so when replicas hold and send the same
// rows nothing is counted twice, and restoring twice changes nothing.
#ifndef TALLY_PERSIST_RESTORE_H_
#define TALLY_PERSIST_RESTORE_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "crdt/key_store.h"
#include "persist/snapshot.h"

namespace tally::persist {

struct RestoreStats {
  uint64_t keys_merged = 0;   // joined into a store (new or existing key)
  uint64_t keys_expired = 0;  // nothing live any more at now
  uint64_t keys_refused = 0;  // store full, another geometry for the key, or no slot left
};

// Joins decoded keys into stores, interning the snapshot's slots in each
// store's slot table once. Thread safety: none; the caller holds the lock of
// each store it passes (restoring usually runs before serving).
class Restorer {
 public:
  // REQUIRES: snapshot.ok(); it must outlive the Restorer.
  explicit Restorer(const DecodedSnapshot& snapshot) : snapshot_(snapshot) {}

  // Joins key `index` of the snapshot into `store` at `now_wall_ms`.
  void RestoreKey(size_t index, int64_t now_wall_ms, crdt::KeyStore* store);
  const RestoreStats& stats() const { return stats_; }

 private:
  // Snapshot slot index -> `store`'s index (UINT32_MAX: not interned yet).
  std::vector<crdt::SlotIndex>& SlotMap(const crdt::KeyStore* store);

  const DecodedSnapshot& snapshot_;
  RestoreStats stats_;
  std::vector<std::pair<const crdt::KeyStore*, std::vector<crdt::SlotIndex>>> slot_maps_;
};

// Joins every key of `snapshot` into `store`.
RestoreStats RestoreSnapshot(const DecodedSnapshot& snapshot, int64_t now_wall_ms,
                             crdt::KeyStore* store);

// Joins every key into the store `store_for(const crdt::KeyId&)` returns (a
// crdt::KeyStore*; the sharded limiter's shard of the key).
//
// A snapshot lists keys in its table's slot order. Inserting them in that
// order into a smaller, still growing linear-probing table piles them into
// long runs (it was most of a restore's time at 300k keys), so each store is
// first grown to hold its share (KeyStore::Reserve); then the keys go in in
// the snapshot's order, which also walks each table nearly sequentially.
template <typename StoreFor>
RestoreStats RestoreSnapshot(const DecodedSnapshot& snapshot, int64_t now_wall_ms,
                             StoreFor&& store_for) {
  std::vector<std::pair<crdt::KeyStore*, size_t>> shares;
  for (const RestoredKey& key : snapshot.keys) {
    crdt::KeyStore* store = store_for(key.id);
    auto it = std::find_if(shares.begin(), shares.end(),
                           [store](const auto& share) { return share.first == store; });
    if (it == shares.end()) it = shares.insert(shares.end(), {store, 0});
    ++it->second;
  }
  for (auto& [store, share] : shares) {
    store->Reserve(std::min(store->options().max_keys, store->size() + share));
  }
  Restorer restorer(snapshot);
  for (size_t i = 0; i < snapshot.keys.size(); ++i) {
    restorer.RestoreKey(i, now_wall_ms, store_for(snapshot.keys[i].id));
  }
  return restorer.stats();
}

}  // namespace tally::persist

#endif  // TALLY_PERSIST_RESTORE_H_

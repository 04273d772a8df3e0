// KeyStore: every live key's WindowCounter, bounded in number, with idle keys
// reclaimed once their window has passed and a version per change so deltas
// can be extracted for replication.
//
// Memory per live key (buckets_per_window = 10): a 32-byte map slot (KeyId,
// counter pointer, version) at load factor <= 0.875, plus one 64-byte heap
// block (80 bytes with malloc's header): about 120 bytes, measured in
// docs/PERFORMANCE.md.
//
// Thread safety: none. The daemon shards stores by key hash and locks each.
#ifndef TALLY_CRDT_KEY_STORE_H_
#define TALLY_CRDT_KEY_STORE_H_

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/window_counter.h"

namespace tally::crdt {

// A replica slot: the identity under which one process start counts hits.
// A restarted node takes a new incarnation, hence a fresh slot, so it never
// reuses counts it can no longer see (docs/DESIGN.md, "Replica slots").
struct ReplicaSlot {
  std::string node_id;
  uint64_t incarnation = 0;
  friend bool operator==(const ReplicaSlot&, const ReplicaSlot&) = default;
};

// Interns ReplicaSlots as small indexes used inside counters.
class SlotTable {
 public:
  SlotIndex Intern(const ReplicaSlot& slot);
  const ReplicaSlot& Get(SlotIndex index) const { return slots_.at(index); }
  size_t size() const { return slots_.size(); }

 private:
  std::vector<ReplicaSlot> slots_;
};

struct KeyStoreOptions {
  size_t max_keys = 1'000'000;
  uint32_t buckets_per_window = 10;
  // When full, a sweep for expired keys runs at most this often.
  int64_t full_sweep_interval_ms = 100;
};

class KeyStore {
 public:
  struct Entry {
    WindowCounter counter;
    uint64_t version = 0;  // store version of the last change
  };
  enum class Lookup { kFound, kCreated, kFull };

  explicit KeyStore(const KeyStoreOptions& options);

  // Finds the entry of `id`, creating an empty counter for `window_ms` when
  // absent. When the store is full it first reclaims expired keys (rate
  // limited); if still full returns nullptr and *how = kFull.
  // The pointer is valid until the next non-const call.
  Entry* FindOrCreate(const KeyId& id, uint64_t window_ms, int64_t now_wall_ms, Lookup* how);
  Entry* Find(const KeyId& id);
  const Entry* Find(const KeyId& id) const;

  // Records that `entry` changed: gives it the next version.
  void MarkChanged(Entry* entry) { entry->version = ++version_; }

  // Joins a remote counter into `id` (creating it). Returns false when the
  // store is full or the geometry does not match (nothing changes then).
  bool Merge(const KeyId& id, const WindowCounter& remote, int64_t now_wall_ms);

  // Removes every key whose counts have all expired at `now_wall_ms`.
  // Returns how many were removed.
  size_t Sweep(int64_t now_wall_ms);

  // Calls fn(const KeyId&, const Entry&) for every key changed after `since`.
  template <typename Fn>
  void ForEachChangedSince(uint64_t since, Fn&& fn) const {
    for (const auto& [id, entry] : map_) {
      if (entry.version > since) fn(id, entry);
    }
  }
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (const auto& [id, entry] : map_) fn(id, entry);
  }

  Geometry GeometryOf(uint64_t window_ms) const {
    return GeometryFor(window_ms, options_.buckets_per_window);
  }
  size_t size() const { return map_.size(); }
  uint64_t version() const { return version_; }
  uint64_t reclaimed() const { return reclaimed_; }
  const KeyStoreOptions& options() const { return options_; }
  SlotTable& slots() { return slots_; }
  const SlotTable& slots() const { return slots_; }
  // Approximate bytes held: map slots plus counter blocks.
  size_t MemoryBytes() const;

 private:
  KeyStoreOptions options_;
  boost::unordered_flat_map<KeyId, Entry, KeyIdHash> map_;
  SlotTable slots_;
  uint64_t version_ = 0;
  uint64_t reclaimed_ = 0;
  bool swept_when_full_ = false;
  int64_t last_full_sweep_ms_ = 0;
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_KEY_STORE_H_

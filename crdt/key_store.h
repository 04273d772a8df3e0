// KeyStore: every live key's WindowCounter, bounded in number, with idle keys
// reclaimed once their window has passed and a version per change so deltas
// can be extracted for replication.
//
// The table is a purpose-built open-addressing hash table (linear probing,
// backward-shift deletion, no tombstones) rather than boost::unordered_flat_map:
// a lookup touches one 32-byte slot (id, counter pointer, version) and, when
// the key is found, the counter's heap block: two dependent cache misses per
// key instead of three (boost keeps its group metadata in a separate array),
// and the slot's address is known from the hash alone, so a batch can
// prefetch it (PrefetchSlot) before probing (LimiterCore::CheckBatch).
//
// Memory per live key (buckets_per_window = 10): a 32-byte slot at load
// factor <= 7/8 (capacity is a power of two: 2^21 slots, load 0.48, at 1M
// keys), plus one 64-byte heap block (80 bytes with malloc's header): about
// 147 bytes at 1M keys, measured in docs/PERFORMANCE.md.
//
// Table invariants (the cheap ones asserted; CheckInvariants() checks all):
//   * capacity is 0 or a power of two >= kMinCapacity; size <= capacity * 7/8,
//     so every probe sequence reaches an empty slot.
//   * a slot is empty iff its counter is null (a stored counter never is).
//   * every key sits in the run of occupied slots that starts at its home
//     slot (id.low & mask): no empty slot between its home and itself.
//   * ids are unique.
//
// Thread safety: none. The daemon shards stores by key hash and locks each.
#ifndef TALLY_CRDT_KEY_STORE_H_
#define TALLY_CRDT_KEY_STORE_H_

#include <boost/unordered/unordered_flat_map.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
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

struct ReplicaSlotHash {
  size_t operator()(const ReplicaSlot& s) const noexcept {
    return static_cast<size_t>(HashSlot(s.node_id, s.incarnation));
  }
};

// Interns ReplicaSlots as small indexes used inside counters. Slots are never
// freed (counters hold their indexes), so the table is bounded: peers can
// name slots, and a faulty one must not grow it without end.
class SlotTable {
 public:
  static constexpr size_t kMaxSlots = size_t{1} << 16;
  static constexpr SlotIndex kNoSlot = UINT32_MAX;

  // The index of `slot`, interning it if new; kNoSlot when it is new and the
  // table holds kMaxSlots already. O(1).
  SlotIndex Intern(const ReplicaSlot& slot);
  // The index of `slot` if interned.
  std::optional<SlotIndex> Find(const ReplicaSlot& slot) const;
  const ReplicaSlot& Get(SlotIndex index) const { return slots_.at(index); }
  size_t size() const { return slots_.size(); }
  bool full() const { return slots_.size() >= kMaxSlots; }

 private:
  std::vector<ReplicaSlot> slots_;
  boost::unordered_flat_map<ReplicaSlot, SlotIndex, ReplicaSlotHash> index_;
};

struct KeyStoreOptions {
  size_t max_keys = 1'000'000;
  uint32_t buckets_per_window = 10;
  // When full, a sweep for expired keys runs at most this often, whether the
  // new key came from a check or from a replica's merge.
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
  // Entry pointers stay valid while layout_epoch() is unchanged (creating a
  // key moves no other entry unless the table grows).
  Entry* FindOrCreate(const KeyId& id, uint64_t window_ms, int64_t now_wall_ms, Lookup* how);
  Entry* Find(const KeyId& id);
  const Entry* Find(const KeyId& id) const;

  // Records that `entry` changed: gives it the next version.
  void MarkChanged(Entry* entry) { entry->version = ++version_; }

  enum class MergeOutcome {
    kMerged,            // joined (possibly without change)
    kExpired,           // nothing in `remote` is live at now: nothing to do
    kFull,              // a new key, and the store is full: nothing changed
    kGeometryMismatch,  // the key exists with another geometry: nothing changed
    kRowsRefused,       // joined, but some rows were left out (kMaxMergedRows)
  };

  // Joins a remote counter into `id` (creating it). Returns false when the
  // store is full or the geometry does not match (nothing changes then);
  // *outcome (if not null) says which, or what happened otherwise.
  bool Merge(const KeyId& id, const WindowCounter& remote, int64_t now_wall_ms,
             MergeOutcome* outcome = nullptr);

  // After the wall clock stepped back to `now_wall_ms`: pulls every key's
  // counts in buckets after now's back into now's (WindowCounter::PullBack).
  // O(keys); returns how many keys changed (each gets a new version).
  size_t PullBack(int64_t now_wall_ms);

  // Removes every key whose counts have all expired at `now_wall_ms`.
  // Returns how many were removed.
  size_t Sweep(int64_t now_wall_ms);

  // Grows the table now so that `keys` keys fit without growing again (a
  // bulk load: restoring a snapshot). Never shrinks; changes layout_epoch()
  // when it grows.
  void Reserve(size_t keys);

  // Calls fn(const KeyId&, const Entry&) for every key changed after `since`.
  template <typename Fn>
  void ForEachChangedSince(uint64_t since, Fn&& fn) const {
    for (size_t i = 0; i < capacity_; ++i) {
      const Slot& s = table_[i];
      if (!s.empty() && s.entry.version > since) fn(s.id, s.entry);
    }
  }
  template <typename Fn>
  void ForEach(Fn&& fn) const {
    for (size_t i = 0; i < capacity_; ++i) {
      const Slot& s = table_[i];
      if (!s.empty()) fn(s.id, s.entry);
    }
  }
  // Calls fn(const KeyId&, const Entry&) for every key whose home slot
  // (id.low & (capacity() - 1)) is in [begin, end), each once. REQUIRES:
  // begin <= end <= capacity(). O(end - begin + the run after end). A key's
  // home changes only when capacity() does, so a caller can walk the store
  // in home ranges across calls while keys come, go and move (snapshots).
  template <typename Fn>
  void ForEachWithHomeIn(size_t begin, size_t end, Fn&& fn) const {
    if (begin >= end || size_ == 0) return;
    // A key sits at or after its home with no empty slot between: the keys
    // homed in [begin, end) are in [begin, end) and the run continuing it.
    for (size_t i = begin, n = 0; n < capacity_; i = Next(i), ++n) {
      const Slot& s = table_[i];
      if (s.empty()) {
        if (n >= end - begin) return;
        continue;
      }
      const size_t home = Home(s.id);
      if (home >= begin && home < end) fn(s.id, s.entry);
    }
  }

  // ---- batched lookups (LimiterCore::CheckBatch) ----
  // A hint: starts loading the cache line of `id`'s home slot, where a
  // lookup of `id` usually ends (the expected probe length of a present key
  // is ~1.5 slots at load 1/2). Also prefetching the next slot's line was
  // measured slower at 1M keys. No effect on state.
  void PrefetchSlot(const KeyId& id) const {
    if (capacity_ != 0) __builtin_prefetch(&table_[Home(id)]);
  }
  // Changes whenever entries may have moved or been removed (the table grew,
  // or a sweep removed keys). While it is unchanged, every Entry pointer
  // handed out stays valid and keeps naming the same key.
  uint64_t layout_epoch() const { return layout_epoch_; }
  // Verifies the table invariants above (O(capacity)); for tests.
  bool CheckInvariants() const;

  Geometry GeometryOf(uint64_t window_ms) const {
    return GeometryFor(window_ms, options_.buckets_per_window);
  }
  size_t size() const { return size_; }
  size_t capacity() const { return capacity_; }
  uint64_t version() const { return version_; }
  uint64_t reclaimed() const { return reclaimed_; }
  // Sweeps run because the table was full (paced by full_sweep_interval_ms):
  // the whole table up to kMinFullSweepSlots slots, above that a sixteenth
  // of it (at least kMinFullSweepSlots) from a cursor.
  uint64_t full_sweeps() const { return full_sweeps_; }
  const KeyStoreOptions& options() const { return options_; }
  SlotTable& slots() { return slots_; }
  const SlotTable& slots() const { return slots_; }
  // Approximate bytes held: table slots plus counter blocks.
  size_t MemoryBytes() const;

 private:
  // Sweep, at most once per full_sweep_interval_ms while the table is full.
  void SweepWhenFull(int64_t now_wall_ms);
  // Removes the expired keys in slots [begin, end) (and those a removal
  // shifts into it); returns how many.
  size_t SweepSlots(size_t begin, size_t end, int64_t now_wall_ms);
  static constexpr size_t kMinFullSweepSlots = 16'384;  // 512 KiB of slots
  // One table slot: 32 bytes and 32-aligned, so none straddles a cache line.
  struct alignas(32) Slot {
    KeyId id;
    Entry entry;  // entry.counter.is_null() <=> the slot is empty
    bool empty() const { return entry.counter.is_null(); }
  };
  static_assert(sizeof(Slot) == 32, "two slots per cache line");
  static constexpr size_t kMinCapacity = 16;
  // The table grows when an insert would take it above 7/8 full.
  static bool Overloaded(size_t size, size_t capacity) { return size * 8 > capacity * 7; }

  size_t Home(const KeyId& id) const { return static_cast<size_t>(id.low) & mask_; }
  size_t Next(size_t i) const { return (i + 1) & mask_; }
  // The slot holding `id`, or nullptr.
  Slot* FindSlot(const KeyId& id) const;
  // Inserts `id` (REQUIRES: absent) with `entry`; grows first if needed.
  Entry* Insert(const KeyId& id, Entry entry);
  // Moves every entry into a table of `capacity` slots (a power of two).
  void Rehash(size_t capacity);
  // Empties slot i and shifts the rest of its run back so no key is left
  // behind an empty slot (no tombstones).
  void EraseAt(size_t i);

  // The table's memory: 64-aligned; tables of 2 MiB and more are 2 MiB
  // aligned and marked for transparent huge pages (a hint), because a random
  // probe into a big table otherwise also misses the TLB.
  struct FreeTable {
    size_t capacity;  // no initializer: unique_ptr needs it complete in-class
    void operator()(Slot* table) const;
  };
  using Table = std::unique_ptr<Slot[], FreeTable>;
  static Table AllocateTable(size_t capacity);

  KeyStoreOptions options_;
  Table table_;  // capacity_ slots, or null when 0
  size_t capacity_ = 0;
  size_t mask_ = 0;  // capacity_ - 1 (0 when empty, unused then)
  size_t size_ = 0;
  uint64_t layout_epoch_ = 0;
  SlotTable slots_;
  uint64_t version_ = 0;
  uint64_t reclaimed_ = 0;
  uint64_t full_sweeps_ = 0;
  bool swept_when_full_ = false;
  int64_t last_full_sweep_ms_ = 0;
  size_t full_sweep_cursor_ = 0;
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_KEY_STORE_H_

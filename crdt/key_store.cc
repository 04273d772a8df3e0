#include "crdt/key_store.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>
#include <memory>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace tally::crdt {

SlotIndex SlotTable::Intern(const ReplicaSlot& slot) {
  if (auto it = index_.find(slot); it != index_.end()) return it->second;
  if (full()) return kNoSlot;
  const auto index = static_cast<SlotIndex>(slots_.size());
  slots_.push_back(slot);
  index_.emplace(slot, index);
  return index;
}

std::optional<SlotIndex> SlotTable::Find(const ReplicaSlot& slot) const {
  auto it = index_.find(slot);
  if (it == index_.end()) return std::nullopt;
  return it->second;
}

KeyStore::KeyStore(const KeyStoreOptions& options) : options_(options) {
  assert(options_.max_keys >= 1);
  assert(options_.buckets_per_window >= 1 && options_.buckets_per_window <= 1000);
}

// ---- the table ----

namespace {
constexpr size_t kHugePageBytes = size_t{2} << 20;
size_t TableAlignment(size_t bytes) { return bytes >= kHugePageBytes ? kHugePageBytes : 64; }
}  // namespace

KeyStore::Table KeyStore::AllocateTable(size_t capacity) {
  const size_t bytes = capacity * sizeof(Slot);
  // bytes is a power of two >= 512, so a multiple of the alignment.
  void* memory = std::aligned_alloc(TableAlignment(bytes), bytes);
  if (memory == nullptr) throw std::bad_alloc();
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  // Before the first touch, so the faults map huge pages. Only a hint: when
  // THP is off this fails harmlessly and the table uses 4 KiB pages. `bytes`
  // is a power of two >= 2 MiB here, so no huge page is partly unused.
  if (bytes >= kHugePageBytes) ::madvise(memory, bytes, MADV_HUGEPAGE);
#endif
  Slot* table = static_cast<Slot*>(memory);
  std::uninitialized_value_construct_n(table, capacity);
  return Table(table, FreeTable{capacity});
}

void KeyStore::FreeTable::operator()(Slot* table) const {
  std::destroy_n(table, capacity);
  std::free(table);
}

KeyStore::Slot* KeyStore::FindSlot(const KeyId& id) const {
  if (size_ == 0) return nullptr;
  // Terminates: the table is never full (size <= 7/8 capacity).
  for (size_t i = Home(id);; i = Next(i)) {
    Slot& s = table_[i];
    if (s.empty()) return nullptr;
    if (s.id == id) return &s;
  }
}

KeyStore::Entry* KeyStore::Insert(const KeyId& id, Entry entry) {
  assert(!entry.counter.is_null());
  assert(FindSlot(id) == nullptr);
  if (capacity_ == 0 || Overloaded(size_ + 1, capacity_)) {
    Rehash(capacity_ == 0 ? kMinCapacity : 2 * capacity_);
  }
  size_t i = Home(id);
  while (!table_[i].empty()) i = Next(i);
  table_[i].id = id;
  table_[i].entry = std::move(entry);
  ++size_;
  assert(!Overloaded(size_, capacity_));
  return &table_[i].entry;
}

void KeyStore::Rehash(size_t capacity) {
  assert(capacity >= kMinCapacity && (capacity & (capacity - 1)) == 0);
  assert(!Overloaded(size_, capacity));
  Table old = std::move(table_);
  const size_t old_capacity = capacity_;
  table_ = AllocateTable(capacity);
  capacity_ = capacity;
  mask_ = capacity - 1;
  for (size_t j = 0; j < old_capacity; ++j) {
    Slot& from = old[j];
    if (from.empty()) continue;
    size_t i = Home(from.id);
    while (!table_[i].empty()) i = Next(i);
    table_[i].id = from.id;
    table_[i].entry = std::move(from.entry);
  }
  ++layout_epoch_;
}

void KeyStore::EraseAt(size_t i) {
  assert(i < capacity_ && !table_[i].empty());
  table_[i].entry = Entry{};
  --size_;
  // Backward shift: walk the rest of the run; a key may fill the hole iff its
  // home is not cyclically inside (hole, j], i.e. it probed past the hole.
  size_t hole = i;
  for (size_t j = Next(i); !table_[j].empty(); j = Next(j)) {
    const size_t home = Home(table_[j].id);
    if (((j - home) & mask_) >= ((j - hole) & mask_)) {
      table_[hole].id = table_[j].id;
      table_[hole].entry = std::move(table_[j].entry);  // leaves j's counter null: empty
      hole = j;
    }
  }
}

bool KeyStore::CheckInvariants() const {
  if (capacity_ == 0) return size_ == 0 && table_ == nullptr;
  if (capacity_ < kMinCapacity || (capacity_ & (capacity_ - 1)) != 0) return false;
  if (mask_ != capacity_ - 1 || Overloaded(size_, capacity_)) return false;
  size_t occupied = 0;
  for (size_t j = 0; j < capacity_; ++j) {
    if (table_[j].empty()) continue;
    ++occupied;
    // No empty slot between the key's home and the key.
    for (size_t i = Home(table_[j].id); i != j; i = Next(i)) {
      if (table_[i].empty()) return false;
    }
    // Unique: the first match probing from home is this very slot.
    if (FindSlot(table_[j].id) != &table_[j]) return false;
  }
  return occupied == size_;
}

// ---- the store ----

KeyStore::Entry* KeyStore::Find(const KeyId& id) {
  Slot* s = FindSlot(id);
  return s == nullptr ? nullptr : &s->entry;
}

const KeyStore::Entry* KeyStore::Find(const KeyId& id) const {
  const Slot* s = FindSlot(id);
  return s == nullptr ? nullptr : &s->entry;
}

KeyStore::Entry* KeyStore::FindOrCreate(const KeyId& id, uint64_t window_ms, int64_t now_wall_ms,
                                        Lookup* how) {
  if (Slot* s = FindSlot(id); s != nullptr) {
    *how = Lookup::kFound;
    return &s->entry;
  }
  if (size_ >= options_.max_keys) {
    SweepWhenFull(now_wall_ms);
    if (size_ >= options_.max_keys) {
      *how = Lookup::kFull;
      return nullptr;
    }
  }
  *how = Lookup::kCreated;
  return Insert(id, Entry{WindowCounter(GeometryOf(window_ms)), 0});
}

bool KeyStore::Merge(const KeyId& id, const WindowCounter& remote, int64_t now_wall_ms,
                     MergeOutcome* outcome) {
  MergeOutcome ignored;
  if (outcome == nullptr) outcome = &ignored;
  if (remote.is_null()) {
    *outcome = MergeOutcome::kFull;
    return false;
  }
  Entry* entry = Find(id);
  if (entry == nullptr) {
    if (remote.Expired(BucketOf(now_wall_ms, remote.geometry()))) {
      *outcome = MergeOutcome::kExpired;  // nothing live
      return true;
    }
    if (size_ >= options_.max_keys) {
      // Paced like a new local key: a replica at capacity receiving a stream
      // of new keys must not walk its whole table for each of them.
      SweepWhenFull(now_wall_ms);
      if (size_ >= options_.max_keys) {
        *outcome = MergeOutcome::kFull;
        return false;
      }
    }
    entry = Insert(id, Entry{WindowCounter(remote.geometry()), 0});
  }
  if (!(entry->counter.geometry() == remote.geometry())) {
    *outcome = MergeOutcome::kGeometryMismatch;
    return false;
  }
  size_t refused = 0;
  if (entry->counter.Join(remote, &refused)) MarkChanged(entry);
  *outcome = refused == 0 ? MergeOutcome::kMerged : MergeOutcome::kRowsRefused;
  return true;
}

size_t KeyStore::PullBack(int64_t now_wall_ms) {
  size_t changed = 0;
  for (size_t i = 0; i < capacity_; ++i) {
    Slot& s = table_[i];
    if (s.empty()) continue;
    WindowCounter& c = s.entry.counter;
    if (c.PullBack(BucketOf(now_wall_ms, c.geometry()))) {
      MarkChanged(&s.entry);
      ++changed;
    }
  }
  return changed;
}

void KeyStore::SweepWhenFull(int64_t now_wall_ms) {
  if (swept_when_full_ && now_wall_ms >= last_full_sweep_ms_ &&
      now_wall_ms - last_full_sweep_ms_ < options_.full_sweep_interval_ms) {
    return;
  }
  swept_when_full_ = true;
  last_full_sweep_ms_ = now_wall_ms;
  ++full_sweeps_;
  // A slice from a cursor in a large table, not all of it: a full table of
  // live keys receiving new keys would otherwise be walked whole under the
  // caller's lock every interval (about 1 ms at 100,000 keys, every 100 ms:
  // a full cluster member's p99 rose 1.6-1.8x). The owner's periodic sweeps
  // still walk the whole table.
  const size_t slice = std::max(kMinFullSweepSlots, capacity_ / 16);
  if (slice >= capacity_) {
    Sweep(now_wall_ms);
    return;
  }
  if (full_sweep_cursor_ >= capacity_) full_sweep_cursor_ = 0;
  const size_t end = std::min(capacity_, full_sweep_cursor_ + slice);
  SweepSlots(full_sweep_cursor_, end, now_wall_ms);
  full_sweep_cursor_ = end == capacity_ ? 0 : end;
}

size_t KeyStore::Sweep(int64_t now_wall_ms) { return SweepSlots(0, capacity_, now_wall_ms); }

size_t KeyStore::SweepSlots(size_t begin, size_t end, int64_t now_wall_ms) {
  // Erasing shifts later keys of the run back into slot i, so i is examined
  // again before moving on. A shift never moves a key not yet examined to
  // below i (holes only move forward through the run); keys of a run that
  // wrapped past the end may be examined twice, which is harmless.
  size_t removed = 0;
  for (size_t i = begin; i < end;) {
    const Slot& s = table_[i];
    if (!s.empty() && s.entry.counter.Expired(BucketOf(now_wall_ms, s.entry.counter.geometry()))) {
      EraseAt(i);
      ++removed;
    } else {
      ++i;
    }
  }
  if (removed > 0) ++layout_epoch_;
  reclaimed_ += removed;
  return removed;
}

void KeyStore::Reserve(size_t keys) {
  size_t capacity = kMinCapacity;
  while (Overloaded(keys, capacity)) capacity *= 2;
  if (capacity > capacity_) Rehash(capacity);
}

size_t KeyStore::MemoryBytes() const {
  size_t bytes = capacity_ * sizeof(Slot);
  for (size_t i = 0; i < capacity_; ++i) bytes += table_[i].entry.counter.HeapBytes();
  return bytes;
}

}  // namespace tally::crdt

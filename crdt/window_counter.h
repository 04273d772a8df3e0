// WindowCounter: the windowed G-Counter CRDT of one key.
//
// State: for each replica slot s (a node id + incarnation, interned by the
// store as a SlotIndex) and each sub-bucket k, a count c[s][k] of admitted
// hits. Only the ring of buckets [newest - span, newest] is held; everything
// older is by definition zero (expired). Every node cuts time the same way:
// bucket k covers wall time [k * bucket_ms, (k + 1) * bucket_ms).
//
// Join is pointwise max over (slot, bucket) followed by dropping the buckets
// that fall out of the ring of the larger `newest`. Because dropping is a
// projection that commutes with max, join is commutative, associative and
// idempotent (tests/crdt/window_counter_test.cc checks it on random states).
//
// Reading at bucket i counts buckets i - span .. newest: together they cover
// every sliding interval of length window_ms that ends in bucket i, so a
// decision based on Sum() never lets a window exceed its limit. The price is
// that up to one extra bucket of history is counted (see docs/DESIGN.md).
//
// Invariants (asserted):
//   * newest_bucket - span .. newest_bucket is the live ring, span + 1 slots.
//   * rows are sorted by slot and slots are unique.
#ifndef TALLY_CRDT_WINDOW_COUNTER_H_
#define TALLY_CRDT_WINDOW_COUNTER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>

namespace tally::crdt {

// How a window is cut into sub-buckets.
struct Geometry {
  int64_t bucket_ms = 1;  // width of one sub-bucket, >= 1
  uint32_t span = 1;      // buckets i - span .. i cover any window ending in bucket i
  uint32_t ring() const { return span + 1; }
  friend bool operator==(const Geometry&, const Geometry&) = default;
};

// bucket_ms = ceil(window_ms / buckets_per_window), span = ceil(window_ms / bucket_ms),
// so span <= buckets_per_window.
// REQUIRES: window_ms >= 1, 1 <= buckets_per_window <= 1000.
Geometry GeometryFor(uint64_t window_ms, uint32_t buckets_per_window);

inline int64_t BucketOf(int64_t wall_ms, const Geometry& g) {
  return wall_ms >= 0 ? wall_ms / g.bucket_ms : -((-wall_ms + g.bucket_ms - 1) / g.bucket_ms);
}

using SlotIndex = uint32_t;

// Move-only; one heap block per counter keeps a live key near 80 bytes.
// Thread safety: none (a value type).
class WindowCounter {
 public:
  WindowCounter() = default;  // a null counter; only assignable
  explicit WindowCounter(const Geometry& geometry);
  WindowCounter(WindowCounter&&) noexcept = default;
  WindowCounter& operator=(WindowCounter&&) noexcept = default;
  WindowCounter Clone() const;

  bool is_null() const { return block_ == nullptr; }
  Geometry geometry() const;
  int64_t newest_bucket() const;
  size_t row_count() const;
  SlotIndex row_slot(size_t row) const;
  // The count of (row, bucket); 0 outside the live ring.
  uint32_t count(size_t row, int64_t bucket) const;
  // The count of (slot, bucket); 0 when the slot has no row.
  uint32_t CountOfSlot(SlotIndex slot, int64_t bucket) const;
  // Copies row `row`'s counts of buckets newest - span .. newest, oldest
  // first (span + 1 values), to `out`: one division for the whole row
  // (snapshots read every cell of every key).
  void CopyRow(size_t row, uint32_t* out) const;

  // Hits still counted when reading at `now_bucket` (all rows, every bucket
  // >= now_bucket - span, including any ahead of now).
  uint64_t Sum(int64_t now_bucket) const;

  // Adds `hits` to (slot, bucket). A bucket older than the ring (time went
  // back by more than a window) is recorded in the oldest live bucket, which
  // counts it for longer, never shorter.
  void Add(SlotIndex slot, int64_t bucket, uint32_t hits);

  // Raises (slot, bucket) to at least `count` (a remote delta). Ignored when
  // the bucket is older than the ring.
  void MergeBucket(SlotIndex slot, int64_t bucket, uint32_t count);

  // this = join(this, other). REQUIRES: same geometry, slots in the same
  // index space. Returns true when this changed.
  bool Join(const WindowCounter& other);

  // True when nothing is counted any more at `now_bucket`.
  bool Expired(int64_t now_bucket) const {
    return newest_bucket() + static_cast<int64_t>(geometry().span) < now_bucket;
  }

  // The first bucket index >= now_bucket at which Sum() + hits <= limit,
  // or nullopt when hits > limit (it can never fit).
  std::optional<int64_t> FirstFittingBucket(int64_t now_bucket, uint64_t limit,
                                            uint64_t hits) const;

  // The newest bucket >= now_bucket - span with a non-zero count, if any.
  std::optional<int64_t> LastNonEmptyBucket(int64_t now_bucket) const;

  // Heap bytes held (the block), for memory accounting.
  size_t HeapBytes() const;

  // A hint: starts loading the block's first 64 bytes (the header and, with
  // one slot and span <= 10, the whole block; it may straddle two cache lines)
  // so that a batch of checks can overlap the misses of many counters
  // (LimiterCore::CheckBatch). No effect on state; never faults.
  void Prefetch() const {
    const auto p = reinterpret_cast<uintptr_t>(block_.get());
    __builtin_prefetch(reinterpret_cast<const void*>(p));
    __builtin_prefetch(reinterpret_cast<const void*>(p + 63));
  }

  // Exact equality of the live state (same geometry, newest, rows, counts).
  bool SameState(const WindowCounter& other) const;

 private:
  // Block layout in 32-bit words:
  //   [0,1] newest bucket (int64)  [2] bucket_ms  [3] span (low 16) | rows (high 16)
  //   then per row: [slot] [count of ring position 0 .. span]
  static constexpr size_t kHeaderWords = 4;
  uint32_t* row_ptr(size_t row) const { return block_.get() + kHeaderWords + row * row_words(); }
  size_t row_words() const { return 1 + geometry().ring(); }
  void set_newest(int64_t bucket);
  void set_rows(size_t rows);
  size_t FindRow(SlotIndex slot) const;  // row_count() when absent
  size_t InsertRow(SlotIndex slot);      // keeps rows sorted
  void AdvanceTo(int64_t bucket);        // moves newest forward, clearing stale ring slots
  uint64_t ColumnSum(int64_t bucket) const;
  size_t Pos(int64_t bucket) const;

  std::unique_ptr<uint32_t[]> block_;
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_WINDOW_COUNTER_H_

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
//
// Untrusted numbers: bucket indexes and counts may come from a peer's
// message. Every operation's work is bounded by the ring and the row count,
// never by the value of an index: a bucket outside the domain
// [-MaxBucket, MaxBucket] is ignored by merges (so bucket x bucket_ms never
// overflows, and bucket +- span neither), and moving the ring forward by any
// distance clears at most one ring. Merges never take a counter past
// kMaxMergedRows rows (docs/DESIGN.md, "Validating peer state").
#ifndef TALLY_CRDT_WINDOW_COUNTER_H_
#define TALLY_CRDT_WINDOW_COUNTER_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

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

// True when `g` is what GeometryFor(w, buckets_per_window) gives for some
// window 1 <= w <= max_window_ms. Constant time; any input is safe.
bool GeometryValid(const Geometry& g, uint32_t buckets_per_window, uint64_t max_window_ms);

// REQUIRES: g.bucket_ms >= 1 and wall_ms > INT64_MIN + g.bucket_ms.
inline int64_t BucketOf(int64_t wall_ms, const Geometry& g) {
  return wall_ms >= 0 ? wall_ms / g.bucket_ms : -((-wall_ms + g.bucket_ms - 1) / g.bucket_ms);
}

// The bucket domain: |bucket| <= MaxBucket(g) keeps |bucket x bucket_ms| <=
// 2^61 ms (73 million years), so a bucket's start time, and any bucket within
// a few rings of it, never overflows.
inline int64_t MaxBucket(const Geometry& g) { return (int64_t{1} << 61) / g.bucket_ms; }
inline bool InDomain(int64_t bucket, const Geometry& g) {
  return bucket >= -MaxBucket(g) && bucket <= MaxBucket(g);
}

using SlotIndex = uint32_t;

// Merges (MergeBucket, Join) never add a row to a counter that already has
// this many (after dropping rows with nothing live): a key is decided by a
// few processes per window, and this bounds what a faulty peer can make one
// key cost (memory, and the Sum of every check). One more row is always left
// for the local slot's Add.
inline constexpr size_t kMaxMergedRows = 255;

// Move-only; one heap block per counter keeps a live key near 80 bytes.
// Thread safety: none (a value type).
class WindowCounter {
 public:
  WindowCounter() = default;  // a null counter; only assignable
  explicit WindowCounter(const Geometry& geometry);
  WindowCounter(WindowCounter&&) noexcept = default;
  WindowCounter& operator=(WindowCounter&&) noexcept = default;
  WindowCounter Clone() const;

  // One row of a remote state: `counts` holds buckets newest - span ..
  // newest, oldest first (span + 1 of them).
  struct StateRow {
    SlotIndex slot = 0;
    const uint32_t* counts = nullptr;
  };
  // The counter of a remote state, built in one allocation: rows of the same
  // slot are joined, rows with no count dropped, rows past kMaxMergedRows
  // (in slot order) left out, and its newest bucket is the newest holding a
  // count (as merging cell by cell would leave it). A `newest` outside the
  // domain gives an empty counter. REQUIRES: each row's counts hold g.ring()
  // values.
  static WindowCounter FromState(const Geometry& g, int64_t newest, std::span<const StateRow> rows);

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
  // counts it for longer, never shorter. A bucket outside the domain (a
  // broken clock) is clamped into it. Returns the bucket the hits went to
  // (`bucket` itself when `hits` is 0).
  int64_t Add(SlotIndex slot, int64_t bucket, uint32_t hits);

  // Raises (slot, bucket) to at least `count` (a remote delta). Ignored when
  // the bucket is older than the ring or outside the domain. Returns false
  // when it was refused because the slot has no row and the counter has
  // kMaxMergedRows rows with something live.
  bool MergeBucket(SlotIndex slot, int64_t bucket, uint32_t count);

  // Moves every count in a bucket after `latest` into bucket `latest`, which
  // becomes the newest: hits counted while a clock ran ahead then count for
  // a full window from `latest` (never less than from when they were
  // admitted), and the state is no longer from the future for peers. Work:
  // one ring per row. Returns true when the state changed.
  bool PullBack(int64_t latest);

  // this = join(this, other). REQUIRES: same geometry, slots in the same
  // index space. Returns true when this changed. Rows of `other` that would
  // take this past kMaxMergedRows are left out; *rows_refused (if not null)
  // is increased by their number.
  bool Join(const WindowCounter& other, size_t* rows_refused = nullptr);

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

  // Whether a local check confirmed the geometry (its window's). Not part of
  // the replicated state: a counter a peer's state created starts without
  // it, so a check that finds another geometry knows the peer shaped it
  // (LimiterCore starts it afresh) rather than a real id collision.
  bool geometry_confirmed() const { return (block_[3] & kConfirmedBit) != 0; }
  void ConfirmGeometry() { block_[3] |= kConfirmedBit; }

 private:
  // Block layout in 32-bit words:
  //   [0,1] newest bucket (int64)  [2] bucket_ms
  //   [3] span (low 15) | geometry confirmed (bit 15) | rows (high 16)
  //   then per row: [slot] [count of ring position 0 .. span]
  static constexpr size_t kHeaderWords = 4;
  static constexpr uint32_t kSpanMask = 0x7FFF;
  static constexpr uint32_t kConfirmedBit = 0x8000;
  uint32_t* row_ptr(size_t row) const { return block_.get() + kHeaderWords + row * row_words(); }
  size_t row_words() const { return 1 + geometry().ring(); }
  void set_newest(int64_t bucket);
  void set_rows(size_t rows);
  size_t FindRow(SlotIndex slot) const;  // row_count() when absent
  size_t InsertRow(SlotIndex slot);      // keeps rows sorted
  // Inserts empty rows for `slots` (sorted, none present) in one allocation.
  void InsertRows(const std::vector<SlotIndex>& slots);
  // Drops rows with no non-zero count (nothing live). Returns rows dropped.
  size_t DropEmptyRows();
  // True when a merge may add a row (after dropping empty rows if needed).
  bool RoomForMergedRow();
  void AdvanceTo(int64_t bucket);  // moves newest forward, clearing stale ring slots
  uint64_t ColumnSum(int64_t bucket) const;
  size_t Pos(int64_t bucket) const;

  std::unique_ptr<uint32_t[]> block_;
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_WINDOW_COUNTER_H_

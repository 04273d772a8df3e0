#include "crdt/window_counter.h"

#include <algorithm>
#include <cassert>
#include <cstring>
#include <vector>

namespace tally::crdt {

Geometry GeometryFor(uint64_t window_ms, uint32_t buckets_per_window) {
  assert(window_ms >= 1);
  assert(buckets_per_window >= 1 && buckets_per_window <= 1000);
  Geometry g;
  g.bucket_ms = static_cast<int64_t>((window_ms + buckets_per_window - 1) / buckets_per_window);
  g.span = static_cast<uint32_t>((window_ms + g.bucket_ms - 1) / g.bucket_ms);
  assert(g.span >= 1 && g.span <= buckets_per_window);
  return g;
}

bool GeometryValid(const Geometry& g, uint32_t buckets_per_window, uint64_t max_window_ms) {
  if (buckets_per_window < 1 || max_window_ms < 1) return false;
  if (g.bucket_ms < 1 || g.span < 1 || g.span > buckets_per_window) return false;
  if (static_cast<uint64_t>(g.bucket_ms) > max_window_ms) return false;
  // GeometryFor(w, B) = (b, s) iff ceil(w / B) = b and ceil(w / b) = s, i.e.
  // w in [(b - 1) B + 1, b B] and w in [(s - 1) b + 1, s b]. With b <=
  // max_window_ms <= 2^64 / 2^11 and B, s <= 1000 nothing below overflows
  // for any window of at most 2^53 ms; larger maxima are capped first.
  const uint64_t b = static_cast<uint64_t>(g.bucket_ms);
  const uint64_t s = g.span;
  const uint64_t big_b = buckets_per_window;
  if (buckets_per_window > 1000 || b > (uint64_t{1} << 53)) return false;
  const uint64_t lo = std::max((b - 1) * big_b + 1, (s - 1) * b + 1);
  const uint64_t hi = std::min({b * big_b, s * b, max_window_ms});
  return lo <= hi;
}

WindowCounter::WindowCounter(const Geometry& geometry) {
  assert(geometry.bucket_ms >= 1 && geometry.bucket_ms <= UINT32_MAX);
  assert(geometry.span >= 1 && geometry.span <= kSpanMask);
  block_ = std::make_unique<uint32_t[]>(kHeaderWords);
  block_[2] = static_cast<uint32_t>(geometry.bucket_ms);
  block_[3] = geometry.span;
  set_newest(INT64_MIN / 2);  // nothing live yet; far in the past
}

WindowCounter WindowCounter::Clone() const {
  WindowCounter copy;
  if (block_ == nullptr) return copy;
  size_t words = kHeaderWords + row_count() * row_words();
  copy.block_ = std::make_unique<uint32_t[]>(words);
  std::memcpy(copy.block_.get(), block_.get(), words * sizeof(uint32_t));
  return copy;
}

Geometry WindowCounter::geometry() const {
  assert(block_ != nullptr);
  return Geometry{static_cast<int64_t>(block_[2]), block_[3] & kSpanMask};
}

int64_t WindowCounter::newest_bucket() const {
  uint64_t v = static_cast<uint64_t>(block_[0]) | (static_cast<uint64_t>(block_[1]) << 32);
  return static_cast<int64_t>(v);
}

void WindowCounter::set_newest(int64_t bucket) {
  auto v = static_cast<uint64_t>(bucket);
  block_[0] = static_cast<uint32_t>(v);
  block_[1] = static_cast<uint32_t>(v >> 32);
}

size_t WindowCounter::row_count() const { return block_[3] >> 16; }

void WindowCounter::set_rows(size_t rows) {
  assert(rows < 0xFFFF);
  block_[3] = (block_[3] & 0xFFFF) | (static_cast<uint32_t>(rows) << 16);
}

SlotIndex WindowCounter::row_slot(size_t row) const {
  assert(row < row_count());
  return row_ptr(row)[0];
}

size_t WindowCounter::Pos(int64_t bucket) const {
  int64_t ring = geometry().ring();
  int64_t m = bucket % ring;
  return static_cast<size_t>(m < 0 ? m + ring : m);
}

uint32_t WindowCounter::count(size_t row, int64_t bucket) const {
  int64_t newest = newest_bucket();
  if (bucket > newest || bucket < newest - static_cast<int64_t>(geometry().span)) return 0;
  return row_ptr(row)[1 + Pos(bucket)];
}

uint32_t WindowCounter::CountOfSlot(SlotIndex slot, int64_t bucket) const {
  size_t row = FindRow(slot);
  return row == row_count() ? 0 : count(row, bucket);
}

void WindowCounter::CopyRow(size_t row, uint32_t* out) const {
  assert(row < row_count());
  const size_t ring = geometry().ring();
  const size_t start = Pos(newest_bucket() - static_cast<int64_t>(geometry().span));
  const uint32_t* cells = row_ptr(row) + 1;
  std::memcpy(out, cells + start, (ring - start) * sizeof(uint32_t));
  std::memcpy(out + (ring - start), cells, start * sizeof(uint32_t));
}

size_t WindowCounter::FindRow(SlotIndex slot) const {
  size_t rows = row_count();
  for (size_t r = 0; r < rows; ++r) {
    if (row_ptr(r)[0] == slot) return r;
  }
  return rows;
}

size_t WindowCounter::InsertRow(SlotIndex slot) {
  size_t rows = row_count();
  size_t words_per_row = row_words();
  size_t at = 0;
  while (at < rows && row_ptr(at)[0] < slot) ++at;
  assert(at == rows || row_ptr(at)[0] != slot);
  size_t old_words = kHeaderWords + rows * words_per_row;
  auto grown = std::make_unique<uint32_t[]>(old_words + words_per_row);
  size_t split = kHeaderWords + at * words_per_row;
  std::memcpy(grown.get(), block_.get(), split * sizeof(uint32_t));
  std::memset(grown.get() + split, 0, words_per_row * sizeof(uint32_t));
  grown[split] = slot;
  std::memcpy(grown.get() + split + words_per_row, block_.get() + split,
              (old_words - split) * sizeof(uint32_t));
  block_ = std::move(grown);
  set_rows(rows + 1);
  return at;
}

void WindowCounter::AdvanceTo(int64_t bucket) {
  const int64_t newest = newest_bucket();
  if (bucket <= newest) return;
  const uint32_t ring = geometry().ring();
  const size_t rows = row_count();
  // The distance in unsigned arithmetic: bucket - newest may not fit in an
  // int64 (a counter that never held anything sits at INT64_MIN / 2).
  const uint64_t distance = static_cast<uint64_t>(bucket) - static_cast<uint64_t>(newest);
  if (distance >= ring) {
    for (size_t r = 0; r < rows; ++r) std::memset(row_ptr(r) + 1, 0, ring * sizeof(uint32_t));
  } else {
    // distance < ring: at most one ring of positions, and no overflow.
    size_t pos = Pos(newest);
    for (uint64_t step = 0; step < distance; ++step) {
      pos = pos + 1 == ring ? 0 : pos + 1;
      for (size_t r = 0; r < rows; ++r) row_ptr(r)[1 + pos] = 0;
    }
  }
  set_newest(bucket);
}

size_t WindowCounter::DropEmptyRows() {
  const size_t rows = row_count();
  const size_t words_per_row = row_words();
  size_t kept = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint32_t* cells = row_ptr(r) + 1;
    bool live = false;
    for (size_t p = 0; p + 1 < words_per_row && !live; ++p) live = cells[p] != 0;
    if (!live) continue;
    if (kept != r) std::memmove(row_ptr(kept), row_ptr(r), words_per_row * sizeof(uint32_t));
    ++kept;
  }
  if (kept == rows) return 0;
  // Shrink the block: HeapBytes stays what the rows need.
  const size_t words = kHeaderWords + kept * words_per_row;
  auto shrunk = std::make_unique<uint32_t[]>(words);
  std::memcpy(shrunk.get(), block_.get(), words * sizeof(uint32_t));
  block_ = std::move(shrunk);
  set_rows(kept);
  return rows - kept;
}

bool WindowCounter::RoomForMergedRow() {
  if (row_count() < kMaxMergedRows) return true;
  DropEmptyRows();
  return row_count() < kMaxMergedRows;
}

uint64_t WindowCounter::ColumnSum(int64_t bucket) const {
  uint64_t sum = 0;
  size_t pos = Pos(bucket);
  size_t rows = row_count();
  for (size_t r = 0; r < rows; ++r) sum += row_ptr(r)[1 + pos];
  return sum;
}

uint64_t WindowCounter::Sum(int64_t now_bucket) const {
  int64_t newest = newest_bucket();
  int64_t span = geometry().span;
  int64_t from = std::max(now_bucket - span, newest - span);
  if (from > newest) return 0;
  // Buckets from..newest sit at consecutive ring positions from Pos(from),
  // wrapping at most once: one division instead of one per bucket (the
  // divisions were most of the cost of a check on a hot key).
  const size_t ring = geometry().ring();
  const size_t buckets = static_cast<size_t>(newest - from) + 1;  // <= ring
  const size_t start = Pos(from);
  const size_t head = std::min(buckets, ring - start);
  const size_t rows = row_count();
  uint64_t sum = 0;
  for (size_t r = 0; r < rows; ++r) {
    const uint32_t* cells = row_ptr(r) + 1;
    for (size_t p = start; p < start + head; ++p) sum += cells[p];
    for (size_t p = 0; p < buckets - head; ++p) sum += cells[p];
  }
  return sum;
}

int64_t WindowCounter::Add(SlotIndex slot, int64_t bucket, uint32_t hits) {
  if (hits == 0) return bucket;
  const int64_t max_bucket = MaxBucket(geometry());
  bucket = std::clamp(bucket, -max_bucket, max_bucket);
  AdvanceTo(bucket);
  int64_t oldest = newest_bucket() - static_cast<int64_t>(geometry().span);
  bucket = std::max(bucket, oldest);
  size_t row = FindRow(slot);
  if (row == row_count()) row = InsertRow(slot);
  uint32_t& cell = row_ptr(row)[1 + Pos(bucket)];
  assert(static_cast<uint64_t>(cell) + hits <= UINT32_MAX);  // callers cap at the limit
  cell += hits;
  return bucket;
}

bool WindowCounter::MergeBucket(SlotIndex slot, int64_t bucket, uint32_t value) {
  if (value == 0 || !InDomain(bucket, geometry())) return true;
  if (bucket < newest_bucket() - static_cast<int64_t>(geometry().span)) return true;
  size_t row = FindRow(slot);
  if (row == row_count()) {
    if (!RoomForMergedRow()) return false;
    row = InsertRow(slot);
  }
  AdvanceTo(bucket);
  uint32_t& cell = row_ptr(row)[1 + Pos(bucket)];
  cell = std::max(cell, value);
  return true;
}

bool WindowCounter::Join(const WindowCounter& other, size_t* rows_refused) {
  assert(geometry() == other.geometry());
  bool changed = false;
  int64_t before = newest_bucket();
  int64_t target = std::max(before, other.newest_bucket());
  if (target != before) {
    // Only a change of state if something live was dropped or newest moved
    // while rows exist; an empty counter moving forward reads the same.
    changed = row_count() > 0;
    AdvanceTo(target);
  }
  int64_t span = geometry().span;
  const int64_t other_newest = other.newest_bucket();
  int64_t from = std::max(target - span, other_newest - span);
  if (from > other_newest) return changed;
  // Every k in from..other_newest is live in both rings, and the same
  // geometry puts it at the same position in both: walk positions instead
  // of dividing per cell.
  const size_t ring = geometry().ring();
  const size_t start = Pos(from);
  const size_t live = static_cast<size_t>(other_newest - from) + 1;  // <= ring
  auto has_live = [&](const uint32_t* cells) {
    for (size_t i = 0, pos = start; i < live; ++i, pos = pos + 1 == ring ? 0 : pos + 1) {
      if (cells[pos] != 0) return true;
    }
    return false;
  };
  // Rows to add (other's rows are sorted, so these are too), inserted in one
  // allocation: one per row would copy the block once per row.
  std::vector<SlotIndex> added;
  for (size_t orow = 0; orow < other.row_count(); ++orow) {
    const SlotIndex slot = other.row_slot(orow);
    if (FindRow(slot) == row_count() && has_live(other.row_ptr(orow) + 1)) added.push_back(slot);
  }
  if (!added.empty()) {
    if (row_count() + added.size() > kMaxMergedRows) DropEmptyRows();
    const size_t room = kMaxMergedRows > row_count() ? kMaxMergedRows - row_count() : 0;
    if (added.size() > room) {
      if (rows_refused != nullptr) *rows_refused += added.size() - room;
      added.resize(room);
    }
    InsertRows(added);
  }
  // Both row lists are sorted by slot: walk them together.
  size_t row = 0;
  for (size_t orow = 0; orow < other.row_count(); ++orow) {
    const SlotIndex slot = other.row_slot(orow);
    while (row < row_count() && row_slot(row) < slot) ++row;
    if (row == row_count() || row_slot(row) != slot) continue;  // refused, or nothing live
    const uint32_t* theirs_row = other.row_ptr(orow) + 1;
    uint32_t* mine_row = row_ptr(row) + 1;
    for (size_t i = 0, pos = start; i < live; ++i, pos = pos + 1 == ring ? 0 : pos + 1) {
      if (theirs_row[pos] > mine_row[pos]) {
        mine_row[pos] = theirs_row[pos];
        changed = true;
      }
    }
  }
  return changed;
}

void WindowCounter::InsertRows(const std::vector<SlotIndex>& slots) {
  if (slots.empty()) return;
  const size_t rows = row_count();
  const size_t words_per_row = row_words();
  auto grown = std::make_unique<uint32_t[]>(kHeaderWords + (rows + slots.size()) * words_per_row);
  std::memcpy(grown.get(), block_.get(), kHeaderWords * sizeof(uint32_t));
  // Merge the two sorted lists of rows.
  size_t mine = 0, next = 0, out = 0;
  while (mine < rows || next < slots.size()) {
    uint32_t* to = grown.get() + kHeaderWords + out * words_per_row;
    if (next == slots.size() || (mine < rows && row_ptr(mine)[0] < slots[next])) {
      std::memcpy(to, row_ptr(mine), words_per_row * sizeof(uint32_t));
      ++mine;
    } else {
      assert(mine == rows || row_ptr(mine)[0] != slots[next]);
      std::memset(to, 0, words_per_row * sizeof(uint32_t));
      to[0] = slots[next];
      ++next;
    }
    ++out;
  }
  block_ = std::move(grown);
  set_rows(rows + slots.size());
}

WindowCounter WindowCounter::FromState(const Geometry& g, int64_t newest,
                                       std::span<const StateRow> rows) {
  WindowCounter c(g);
  if (rows.empty() || !InDomain(newest, g) || !InDomain(newest - g.span, g)) return c;
  std::vector<SlotIndex> slots;
  slots.reserve(rows.size());
  for (const StateRow& r : rows) slots.push_back(r.slot);
  std::sort(slots.begin(), slots.end());
  slots.erase(std::unique(slots.begin(), slots.end()), slots.end());
  if (slots.size() > kMaxMergedRows) slots.resize(kMaxMergedRows);
  c.InsertRows(slots);
  c.set_newest(newest);
  const size_t ring = g.ring();
  const size_t first = c.Pos(newest - g.span);
  for (const StateRow& r : rows) {
    auto it = std::lower_bound(slots.begin(), slots.end(), r.slot);
    if (it == slots.end() || *it != r.slot) continue;
    uint32_t* cells = c.row_ptr(static_cast<size_t>(it - slots.begin())) + 1;
    for (size_t k = 0, pos = first; k < ring; ++k, pos = pos + 1 == ring ? 0 : pos + 1) {
      cells[pos] = std::max(cells[pos], r.counts[k]);
    }
  }
  // Newest is the newest bucket holding a count, as merging cell by cell
  // would leave it: a state's empty newest buckets drop nothing of ours.
  size_t last = 0;
  bool any = false;
  for (size_t r = 0; r < c.row_count(); ++r) {
    const uint32_t* cells = c.row_ptr(r) + 1;
    for (size_t k = ring; k-- > 0;) {
      if (cells[(first + k) % ring] != 0) {
        if (!any || k > last) last = k;
        any = true;
        break;
      }
    }
  }
  if (!any) return WindowCounter(g);
  c.set_newest(newest - static_cast<int64_t>(g.span) + static_cast<int64_t>(last));
  c.DropEmptyRows();
  return c;
}

bool WindowCounter::PullBack(int64_t latest) {
  const int64_t newest = newest_bucket();
  latest = std::max(latest, -MaxBucket(geometry()));
  if (latest >= newest) return false;
  const size_t ring = geometry().ring();
  const size_t rows = row_count();
  // newest <= MaxBucket and latest >= -MaxBucket: the distance fits.
  const uint64_t distance = static_cast<uint64_t>(newest) - static_cast<uint64_t>(latest);
  const size_t moved = static_cast<size_t>(std::min<uint64_t>(distance, ring));
  const size_t latest_pos = Pos(latest);
  for (size_t r = 0; r < rows; ++r) {
    uint32_t* cells = row_ptr(r) + 1;
    // Buckets newest - moved + 1 .. newest; their positions become those of
    // the buckets the new ring gains at its old end, which hold nothing.
    uint64_t sum = 0;
    size_t pos = Pos(newest);
    for (size_t i = 0; i < moved; ++i, pos = pos == 0 ? ring - 1 : pos - 1) {
      sum += cells[pos];
      cells[pos] = 0;
    }
    sum += cells[latest_pos];  // 0 unless latest was in the old ring
    cells[latest_pos] = static_cast<uint32_t>(std::min<uint64_t>(sum, UINT32_MAX));
  }
  set_newest(latest);
  return rows > 0;
}

std::optional<int64_t> WindowCounter::FirstFittingBucket(int64_t now_bucket, uint64_t limit,
                                                         uint64_t hits) const {
  if (hits > limit) return std::nullopt;
  uint64_t sum = Sum(now_bucket);
  if (sum + hits <= limit) return now_bucket;
  int64_t newest = newest_bucket();
  int64_t span = geometry().span;
  for (int64_t k = std::max(now_bucket - span, newest - span); k <= newest; ++k) {
    sum -= ColumnSum(k);
    // Bucket k stops being counted once the reader is at k + span + 1.
    if (sum + hits <= limit) return std::max(now_bucket, k + span + 1);
  }
  assert(false && "with hits <= limit the request fits once all buckets expire");
  return newest + span + 1;
}

std::optional<int64_t> WindowCounter::LastNonEmptyBucket(int64_t now_bucket) const {
  int64_t newest = newest_bucket();
  int64_t span = geometry().span;
  int64_t from = std::max(now_bucket - span, newest - span);
  if (from > newest) return std::nullopt;
  const size_t ring = geometry().ring();
  const size_t rows = row_count();
  size_t pos = Pos(newest);
  for (int64_t k = newest; k >= from; --k, pos = pos == 0 ? ring - 1 : pos - 1) {
    for (size_t r = 0; r < rows; ++r) {
      if (row_ptr(r)[1 + pos] != 0) return k;
    }
  }
  return std::nullopt;
}

size_t WindowCounter::HeapBytes() const {
  if (block_ == nullptr) return 0;
  return (kHeaderWords + row_count() * row_words()) * sizeof(uint32_t);
}

bool WindowCounter::SameState(const WindowCounter& other) const {
  if (is_null() || other.is_null()) return is_null() == other.is_null();
  if (!(geometry() == other.geometry())) return false;
  // Compare the live content: (slot, bucket) -> count over the union of rows,
  // ignoring rows that are all zero.
  int64_t newest = std::max(newest_bucket(), other.newest_bucket());
  int64_t from = newest - static_cast<int64_t>(geometry().span);
  auto covers = [&](const WindowCounter& a, const WindowCounter& b) {
    for (size_t r = 0; r < a.row_count(); ++r) {
      SlotIndex slot = a.row_slot(r);
      for (int64_t k = from; k <= newest; ++k) {
        if (a.count(r, k) != b.CountOfSlot(slot, k)) return false;
      }
    }
    return true;
  };
  return covers(*this, other) && covers(other, *this);
}

}  // namespace tally::crdt

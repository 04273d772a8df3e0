#include "crdt/window_counter.h"

#include <algorithm>
#include <cassert>
#include <cstring>

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

WindowCounter::WindowCounter(const Geometry& geometry) {
  assert(geometry.bucket_ms >= 1 && geometry.bucket_ms <= UINT32_MAX);
  assert(geometry.span >= 1 && geometry.span < 0xFFFF);
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
  return Geometry{static_cast<int64_t>(block_[2]), block_[3] & 0xFFFF};
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
  int64_t newest = newest_bucket();
  if (bucket <= newest) return;
  uint32_t ring = geometry().ring();
  size_t rows = row_count();
  if (bucket - newest >= static_cast<int64_t>(ring)) {
    for (size_t r = 0; r < rows; ++r) std::memset(row_ptr(r) + 1, 0, ring * sizeof(uint32_t));
  } else {
    for (int64_t k = newest + 1; k <= bucket; ++k) {
      size_t pos = Pos(k);
      for (size_t r = 0; r < rows; ++r) row_ptr(r)[1 + pos] = 0;
    }
  }
  set_newest(bucket);
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

void WindowCounter::Add(SlotIndex slot, int64_t bucket, uint32_t hits) {
  if (hits == 0) return;
  AdvanceTo(bucket);
  int64_t oldest = newest_bucket() - static_cast<int64_t>(geometry().span);
  bucket = std::max(bucket, oldest);
  size_t row = FindRow(slot);
  if (row == row_count()) row = InsertRow(slot);
  uint32_t& cell = row_ptr(row)[1 + Pos(bucket)];
  assert(static_cast<uint64_t>(cell) + hits <= UINT32_MAX);  // callers cap at the limit
  cell += hits;
}

void WindowCounter::MergeBucket(SlotIndex slot, int64_t bucket, uint32_t value) {
  if (value == 0) return;
  AdvanceTo(bucket);
  if (bucket < newest_bucket() - static_cast<int64_t>(geometry().span)) return;
  size_t row = FindRow(slot);
  if (row == row_count()) row = InsertRow(slot);
  uint32_t& cell = row_ptr(row)[1 + Pos(bucket)];
  cell = std::max(cell, value);
}

bool WindowCounter::Join(const WindowCounter& other) {
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
  for (size_t orow = 0; orow < other.row_count(); ++orow) {
    SlotIndex slot = other.row_slot(orow);
    const uint32_t* theirs_row = other.row_ptr(orow) + 1;
    size_t row = FindRow(slot);
    size_t pos = start;
    for (int64_t k = from; k <= other_newest; ++k, pos = pos + 1 == ring ? 0 : pos + 1) {
      uint32_t theirs = theirs_row[pos];
      if (theirs == 0) continue;
      if (row == row_count()) row = InsertRow(slot);
      uint32_t& mine = row_ptr(row)[1 + pos];
      if (theirs > mine) {
        mine = theirs;
        changed = true;
      }
    }
  }
  return changed;
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

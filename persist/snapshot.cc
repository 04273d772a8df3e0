#include "persist/snapshot.h"

#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <boost/archive/archive_exception.hpp>
#include <boost/archive/binary_iarchive.hpp>
#include <boost/archive/binary_oarchive.hpp>
#include <boost/serialization/level.hpp>
#include <boost/serialization/split_member.hpp>
#include <boost/serialization/tracking.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cassert>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <stdexcept>
#include <streambuf>
#include <utility>

#include "tally/types.h"

namespace tally::persist {

static_assert(std::endian::native == std::endian::little,
              "the payload is a native binary archive; this format is defined little-endian");

namespace {

// ------------------------------------------------------------ byte streams

// Appends everything written to a byte vector. No put area: each sputn is
// one append (the archive writes a field or a row of counts at a time), a
// memcpy into room made ahead (Reserve), never a vector insert per field.
class ByteSink : public std::streambuf {
 public:
  // Takes `buffer`'s memory (its content is dropped).
  void Adopt(std::vector<std::byte> buffer) {
    bytes_ = std::move(buffer);
    bytes_.resize(bytes_.capacity());  // pages a reused buffer has mapped already
    used_ = 0;
  }
  size_t size() const { return used_; }
  // Makes room for `more` bytes beyond what is written (at least doubling).
  void Reserve(size_t more) {
    if (bytes_.size() - used_ >= more) return;
    bytes_.resize(std::max(2 * bytes_.size(), used_ + more));
  }
  // What was written; the sink is empty afterwards.
  std::vector<std::byte> Take() {
    bytes_.resize(used_);
    used_ = 0;
    return std::move(bytes_);
  }

 protected:
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    const auto count = static_cast<size_t>(n);
    Reserve(count);
    std::memcpy(bytes_.data() + used_, s, count);
    used_ += count;
    return n;
  }
  int_type overflow(int_type c) override {
    if (traits_type::eq_int_type(c, traits_type::eof())) return traits_type::not_eof(c);
    const char ch = traits_type::to_char_type(c);
    xsputn(&ch, 1);
    return c;
  }

 private:
  std::vector<std::byte> bytes_;  // [0, used_) written, the rest room
  size_t used_ = 0;
};

// Reads a span; reading past its end yields short reads, which the archive
// turns into archive_exception (input_stream_error).
class ByteSource : public std::streambuf {
 public:
  explicit ByteSource(std::span<const std::byte> bytes) {
    // The get area is only read from; std::streambuf wants non-const pointers.
    char* begin = const_cast<char*>(reinterpret_cast<const char*>(bytes.data()));
    setg(begin, begin, begin + bytes.size());
  }
  bool at_end() const { return gptr() == egptr(); }
  size_t remaining() const { return static_cast<size_t>(egptr() - gptr()); }
};

constexpr unsigned kArchiveFlags =
    boost::archive::no_header | boost::archive::no_codecvt | boost::archive::no_tracking;

// A payload that breaks the format's rules (thrown inside loads, caught by
// DecodeSnapshot).
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------- payload records

// The fixed part of a key record. Serialized field by field: the archive
// defines the bytes, not the struct's layout.
struct KeyRecordHead {
  uint64_t high = 0;
  uint64_t low = 0;
  uint32_t bucket_ms = 0;
  uint16_t span = 0;
  int64_t newest = 0;
  uint16_t depth = 0;  // buckets newest - depth + 1 .. newest are stored
  uint16_t rows = 0;
  template <class Archive>
  void serialize(Archive& ar, const unsigned /*version*/) {
    ar& high& low& bucket_ms& span& newest& depth& rows;
  }
};

// A replica slot: node id (u16 length + bytes) and incarnation. The loader
// bounds the length before it allocates (Boost's own std::string loader
// would resize to whatever length the bytes claim).
struct SlotRecord {
  std::string node_id;
  uint64_t incarnation = 0;
  template <class Archive>
  void save(Archive& ar, const unsigned /*version*/) const {
    const auto length = static_cast<uint16_t>(node_id.size());
    ar << length;
    ar.save_binary(node_id.data(), length);
    ar << incarnation;
  }
  template <class Archive>
  void load(Archive& ar, const unsigned /*version*/) {
    uint16_t length = 0;
    ar >> length;
    if (length > kMaxSnapshotNameBytes) throw FormatError("slot node id longer than the limit");
    node_id.resize(length);
    ar.load_binary(node_id.data(), length);
    ar >> incarnation;
  }
  BOOST_SERIALIZATION_SPLIT_MEMBER()
};

// ------------------------------------------------------- override records

// The smallest override record: every text empty, no descriptor entries.
constexpr size_t kMinOverrideRecordBytes = 1 + 2 + 1 + 2 + 2 + 8 + 1 + 8 + 8 + 8 + 4 + 8;

void SaveText(boost::archive::binary_oarchive& ar, const std::string& text) {
  const auto length = static_cast<uint16_t>(text.size());  // Validate bounds it first
  ar << length;
  ar.save_binary(text.data(), length);
}

// Bounds the length before it allocates, as SlotRecord does.
std::string LoadText(boost::archive::binary_iarchive& ar, const char* what) {
  uint16_t length = 0;
  ar >> length;
  if (length > crdt::kMaxSelectorText) {
    throw FormatError(std::string("override ") + what + " longer than " +
                      std::to_string(crdt::kMaxSelectorText) + " bytes");
  }
  std::string text(length, '\0');
  ar.load_binary(text.data(), length);
  return text;
}

void SaveOverride(boost::archive::binary_oarchive& ar, const crdt::OverrideEntry& e) {
  const crdt::Selector& s = e.selector;
  ar << static_cast<uint8_t>(s.kind);
  SaveText(ar, s.domain);
  ar << static_cast<uint8_t>(s.entries.size());  // Validate bounds it first
  for (const auto& entry : s.entries) {
    SaveText(ar, entry.first);
    SaveText(ar, entry.second);
  }
  // An adaptive selector's rule name takes the user's place: the record
  // keeps its layout, and a reader that does not know kind 3 drops it
  // (Validate) instead of misreading it.
  SaveText(ar, s.kind == crdt::Selector::Kind::kAdaptive ? s.rule : s.user);
  SaveText(ar, s.endpoint);
  ar << s.window_ms;
  ar << static_cast<uint8_t>(e.value.removed ? 1 : 0);
  ar << e.value.limit << e.value.window_ms;
  ar << e.stamp.wall_ms << e.stamp.logical << e.writer;
}

// Reads one record whole (the archive must be consumed) into `*e`. False
// when it decodes but is not a valid entry (the caller drops it).
bool LoadOverride(boost::archive::binary_iarchive& ar, crdt::OverrideEntry* e) {
  uint8_t kind = 0, entry_count = 0, removed = 0;
  ar >> kind;
  e->selector.kind = static_cast<crdt::Selector::Kind>(kind);
  e->selector.domain = LoadText(ar, "domain");
  ar >> entry_count;
  if (entry_count > crdt::kMaxSelectorEntries) {
    throw FormatError("override with " + std::to_string(entry_count) +
                      " descriptor entries, more than " +
                      std::to_string(crdt::kMaxSelectorEntries));
  }
  e->selector.entries.clear();
  for (uint8_t i = 0; i < entry_count; ++i) {
    std::string key = LoadText(ar, "descriptor key");
    std::string value = LoadText(ar, "descriptor value");
    e->selector.entries.emplace_back(std::move(key), std::move(value));
  }
  e->selector.user = LoadText(ar, "user");
  if (e->selector.kind == crdt::Selector::Kind::kAdaptive) e->selector.rule.swap(e->selector.user);
  e->selector.endpoint = LoadText(ar, "endpoint");
  ar >> e->selector.window_ms;
  ar >> removed;
  ar >> e->value.limit >> e->value.window_ms;
  ar >> e->stamp.wall_ms >> e->stamp.logical >> e->writer;
  e->value.removed = removed != 0;
  return removed <= 1 && crdt::Validate(*e).empty();
}

}  // namespace
}  // namespace tally::persist

// Plain records: no class information and no object tracking in the archive.
BOOST_CLASS_IMPLEMENTATION(tally::persist::KeyRecordHead, boost::serialization::object_serializable)
BOOST_CLASS_TRACKING(tally::persist::KeyRecordHead, boost::serialization::track_never)
BOOST_CLASS_IMPLEMENTATION(tally::persist::SlotRecord, boost::serialization::object_serializable)
BOOST_CLASS_TRACKING(tally::persist::SlotRecord, boost::serialization::track_never)

namespace tally::persist {
namespace {

// ------------------------------------------------------------------ header

constexpr char kMagic[8] = {'T', 'A', 'L', 'L', 'Y', 'S', 'N', 'P'};
// magic, version, header bytes, payload bytes, payload hash, generation,
// written wall ms, key count, slot count, buckets_per_window.
constexpr size_t kFixedHeaderBytes = 8 + 4 + 4 + 8 + 8 + 8 + 8 + 8 + 4 + 4;
constexpr size_t kMinHeaderBytes = kFixedHeaderBytes + 2 + 2 + 8;
constexpr size_t kMaxHeaderBytes = kMinHeaderBytes + 2 * kMaxSnapshotNameBytes;
// The smallest key record (one row of one count) and slot record: they bound
// the counts a payload of a given size can hold.
constexpr size_t kMinKeyRecordBytes = 8 + 8 + 4 + 2 + 8 + 2 + 2 + 4 + 4;
constexpr size_t kMinSlotRecordBytes = 2 + 8;
constexpr uint32_t kMaxBucketsPerWindow = 1000;

void PutLe(std::vector<std::byte>* out, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out->push_back(static_cast<std::byte>(v >> (8 * i)));
}

uint64_t GetLe(std::span<const std::byte> in, size_t at, size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) v |= static_cast<uint64_t>(in[at + i]) << (8 * i);
  return v;
}

void SetLe(std::span<std::byte> out, size_t at, uint64_t v, size_t bytes) {
  for (size_t i = 0; i < bytes; ++i) out[at + i] = static_cast<std::byte>(v >> (8 * i));
}

uint64_t Hash(std::span<const std::byte> bytes) { return XXH3_64bits(bytes.data(), bytes.size()); }

// Field offsets in the fixed header.
enum : size_t {
  kAtVersion = 8,
  kAtHeaderBytes = 12,
  kAtPayloadBytes = 16,
  kAtPayloadHash = 24,
  kAtGeneration = 32,
  kAtWrittenWallMs = 40,
  kAtKeyCount = 48,
  kAtSlotCount = 56,
  kAtBucketsPerWindow = 60,
};
static_assert(kAtBucketsPerWindow + 4 == kFixedHeaderBytes);

std::vector<std::byte> BuildHeader(const SnapshotHeader& h, std::span<const std::byte> payload,
                                   uint64_t key_count, uint32_t slot_count) {
  // Names longer than the limit are cut: the reader would refuse them whole.
  const std::string_view cluster =
      std::string_view(h.cluster_name).substr(0, kMaxSnapshotNameBytes);
  const std::string_view node = std::string_view(h.node_id).substr(0, kMaxSnapshotNameBytes);
  const size_t header_bytes = kMinHeaderBytes + cluster.size() + node.size();
  std::vector<std::byte> out;
  out.reserve(header_bytes);
  for (char c : kMagic) out.push_back(static_cast<std::byte>(c));
  PutLe(&out, kSnapshotFormatVersion, 4);
  PutLe(&out, header_bytes, 4);
  PutLe(&out, payload.size(), 8);
  PutLe(&out, Hash(payload), 8);
  PutLe(&out, h.generation, 8);
  PutLe(&out, static_cast<uint64_t>(h.written_wall_ms), 8);
  PutLe(&out, key_count, 8);
  PutLe(&out, slot_count, 4);
  PutLe(&out, h.buckets_per_window, 4);
  for (std::string_view name : {cluster, node}) {
    PutLe(&out, name.size(), 2);
    for (char c : name) out.push_back(static_cast<std::byte>(c));
  }
  PutLe(&out, Hash(out), 8);
  assert(out.size() == header_bytes);
  return out;
}

// A name as it may appear in a log line: at most 64 bytes, non-printable
// bytes escaped.
std::string Printable(std::string_view s) {
  std::string out = "'";
  for (size_t i = 0; i < s.size() && i < 64; ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c < 0x7f && c != '\'' && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  if (s.size() > 64) out += "...";
  return out + "'";
}

// True when some window 1 <= w <= max_window_ms has GeometryFor(w, B) == g.
// bucket_ms = ceil(w / B) and span = ceil(w / bucket_ms) put w in both
// ((bucket_ms - 1) B, bucket_ms B] and ((span - 1) bucket_ms, span bucket_ms].
bool GeometryPossible(const crdt::Geometry& g, uint32_t buckets_per_window,
                      uint64_t max_window_ms) {
  if (buckets_per_window < 1 || buckets_per_window > kMaxBucketsPerWindow) return false;
  if (g.bucket_ms < 1 || static_cast<uint64_t>(g.bucket_ms) > max_window_ms) return false;
  if (g.span < 1 || g.span > buckets_per_window) return false;
  const auto b = static_cast<uint64_t>(g.bucket_ms);  // <= 2^32, so no product overflows
  const uint64_t lo = std::max((b - 1) * buckets_per_window, (g.span - 1) * b) + 1;
  const uint64_t hi = std::min(b * buckets_per_window, g.span * b);
  if (lo > hi || lo > max_window_ms) return false;
  return crdt::GeometryFor(lo, buckets_per_window) == g;
}

struct SlotIdentityHash {
  size_t operator()(const crdt::ReplicaSlot& s) const noexcept {
    return static_cast<size_t>(crdt::HashSlot(s.node_id, s.incarnation));
  }
};

DecodedSnapshot Refuse(DecodedSnapshot d, SnapshotStatus status, std::string reason) {
  d.status = status;
  d.reason = std::move(reason);
  d.slots.clear();
  d.keys.clear();
  d.rows.clear();
  d.counts.clear();
  d.overrides.clear();
  d.override_clock = {};
  return d;
}

}  // namespace

// ------------------------------------------------------------------ encoder

std::vector<std::byte> EncodedSnapshot::Joined() const {
  std::vector<std::byte> out;
  out.reserve(size());
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), payload.begin(), payload.end());
  return out;
}

struct SnapshotEncoder::Impl {
  ByteSink sink;
  boost::archive::binary_oarchive archive{sink, kArchiveFlags};
  // Snapshot slot indexes: by identity, and in order.
  boost::unordered_flat_map<crdt::ReplicaSlot, uint32_t, SlotIdentityHash> slot_index;
  std::vector<crdt::ReplicaSlot> slots;
  // Per call: the store's slot index -> the snapshot's (UINT32_MAX: not yet).
  std::vector<uint32_t> store_to_snapshot;
  std::vector<uint32_t> cells;      // one key's live rows, span + 1 counts each
  std::vector<uint32_t> live_rows;  // their row numbers in the counter
  std::vector<crdt::OverrideEntry> overrides;
  crdt::HlcTimestamp override_clock;
  bool finished = false;

  void BeginStore(const crdt::KeyStore& store) {
    store_to_snapshot.assign(store.slots().size(), UINT32_MAX);
  }

  // UINT32_MAX when the slot cannot be written (a name over the limit, or
  // the snapshot names kMaxSnapshotSlots already).
  uint32_t SnapshotSlot(const crdt::KeyStore& store, crdt::SlotIndex index) {
    if (index < store_to_snapshot.size() && store_to_snapshot[index] != UINT32_MAX) {
      return store_to_snapshot[index];
    }
    const crdt::ReplicaSlot& slot = store.slots().Get(index);
    if (slot.node_id.size() > kMaxSnapshotNameBytes) return UINT32_MAX;
    auto it = slot_index.find(slot);
    if (it == slot_index.end()) {
      if (slots.size() >= kMaxSnapshotSlots) return UINT32_MAX;
      it = slot_index.emplace(slot, static_cast<uint32_t>(slots.size())).first;
      slots.push_back(slot);
    }
    if (index >= store_to_snapshot.size()) store_to_snapshot.resize(index + 1, UINT32_MAX);
    store_to_snapshot[index] = it->second;
    return it->second;
  }

  // Writes one key; false when it holds no count (nothing written).
  bool AddKey(const crdt::KeyStore& store, const crdt::KeyId& id, const crdt::WindowCounter& c,
              uint64_t min_window_ms) {
    if (c.is_null() || c.row_count() == 0) return false;
    const crdt::Geometry g = c.geometry();
    if (static_cast<uint64_t>(g.bucket_ms) * g.span < min_window_ms) return false;
    const size_t ring = g.ring();
    live_rows.clear();
    // Ring positions (0 = oldest) of the oldest and newest non-zero counts.
    size_t oldest = ring, newest = 0;
    for (size_t r = 0; r < c.row_count() && live_rows.size() < kMaxSnapshotRowsPerKey; ++r) {
      // Rows with nothing live (dead slots) are skipped, so are rows whose
      // slot cannot be named; the cells of live rows are kept in order.
      if (cells.size() < (live_rows.size() + 1) * ring) cells.resize((live_rows.size() + 1) * ring);
      uint32_t* row = cells.data() + live_rows.size() * ring;
      c.CopyRow(r, row);
      size_t first = 0;
      while (first < ring && row[first] == 0) ++first;
      if (first == ring) continue;
      if (SnapshotSlot(store, c.row_slot(r)) == UINT32_MAX) continue;
      size_t last = ring - 1;
      while (row[last] == 0) --last;
      oldest = std::min(oldest, first);
      newest = std::max(newest, last);
      live_rows.push_back(static_cast<uint32_t>(r));
    }
    if (live_rows.empty()) return false;
    KeyRecordHead head;
    head.high = id.high;
    head.low = id.low;
    head.bucket_ms = static_cast<uint32_t>(g.bucket_ms);
    head.span = static_cast<uint16_t>(g.span);
    head.newest = c.newest_bucket() - static_cast<int64_t>(ring - 1 - newest);
    head.depth = static_cast<uint16_t>(newest - oldest + 1);
    head.rows = static_cast<uint16_t>(live_rows.size());
    archive << head;
    for (size_t i = 0; i < live_rows.size(); ++i) {
      const uint32_t slot = store_to_snapshot[c.row_slot(live_rows[i])];
      archive << slot;
      archive.save_binary(cells.data() + i * ring + oldest, head.depth * sizeof(uint32_t));
    }
    return true;
  }
};

SnapshotEncoder::SnapshotEncoder(const SnapshotEncoderOptions& options,
                                 std::vector<std::byte> buffer)
    : impl_(std::make_unique<Impl>()), options_(options) {
  impl_->sink.Adopt(std::move(buffer));
}

SnapshotEncoder::~SnapshotEncoder() = default;

size_t SnapshotEncoder::payload_bytes() const { return impl_->sink.size(); }

void SnapshotEncoder::SetOverrides(std::vector<crdt::OverrideEntry> entries,
                                   crdt::HlcTimestamp clock) {
  std::erase_if(entries, [](const crdt::OverrideEntry& e) { return !crdt::Validate(e).empty(); });
  if (entries.size() > kMaxSnapshotOverrides) entries.resize(kMaxSnapshotOverrides);
  impl_->overrides = std::move(entries);
  impl_->override_clock = clock;
}

void SnapshotEncoder::AddAll(const crdt::KeyStore& store) {
  AddHomeRange(store, 0, store.capacity());
}

void SnapshotEncoder::AddHomeRange(const crdt::KeyStore& store, size_t begin, size_t end) {
  assert(!impl_->finished);
  impl_->BeginStore(store);
  // Room for the keys of this range at once (about 48 bytes each with one
  // row and a few buckets): the payload's growth by doubling otherwise
  // copies it and faults in fresh pages several times over, which was most
  // of an encode's time at 1M keys.
  if (store.capacity() > 0) {
    impl_->sink.Reserve(store.size() * (end - begin) / store.capacity() * 64);
  }
  // Each counter is a cache miss of its own; encoding one takes long enough
  // that the core does not overlap the next miss, so counters are prefetched
  // in batches and encoded once their lines have had time to arrive (3-4x
  // faster at 1M keys, where the walk is otherwise a miss per key).
  constexpr size_t kBatch = 16;
  std::array<std::pair<crdt::KeyId, const crdt::WindowCounter*>, kBatch> batch;
  size_t queued = 0;
  auto drain = [&] {
    for (size_t i = 0; i < queued; ++i) {
      if (impl_->AddKey(store, batch[i].first, *batch[i].second, options_.min_window_ms)) ++keys_;
    }
    queued = 0;
  };
  store.ForEachWithHomeIn(begin, end, [&](const crdt::KeyId& id, const crdt::KeyStore::Entry& e) {
    e.counter.Prefetch();
    batch[queued++] = {id, &e.counter};
    if (queued == kBatch) drain();
  });
  drain();
}

EncodedSnapshot SnapshotEncoder::Finish(const SnapshotHeader& header) {
  assert(!impl_->finished);
  impl_->finished = true;
  // The slot table follows the keys (they name slots as they go).
  for (const crdt::ReplicaSlot& slot : impl_->slots) {
    const SlotRecord record{slot.node_id, slot.incarnation};
    impl_->archive << record;
  }
  // Then the overrides (format version 2).
  const auto override_count = static_cast<uint32_t>(impl_->overrides.size());
  impl_->archive << override_count << impl_->override_clock.wall_ms
                 << impl_->override_clock.logical;
  for (const crdt::OverrideEntry& e : impl_->overrides) SaveOverride(impl_->archive, e);
  EncodedSnapshot out;
  out.payload = impl_->sink.Take();
  out.keys = keys_;
  out.overrides = override_count;
  out.header = BuildHeader(header, out.payload, keys_, static_cast<uint32_t>(impl_->slots.size()));
  return out;
}

bool StorePass::Step(const crdt::KeyStore& store, size_t max_slots, SnapshotEncoder* encoder) {
  const size_t capacity = store.capacity();
  if (!started_) {
    started_ = true;
    capacity_ = capacity;
    if (capacity > 0) pending_.push_back({0, capacity});
  } else if (capacity != capacity_) {
    if (capacity_ == 0 || capacity < capacity_ || capacity % capacity_ != 0) {
      // Not a growth of the table we were walking (it never shrinks): walk
      // it all again; keys met twice are joined when restored.
      pending_.assign(capacity > 0 ? 1 : 0, Range{0, capacity});
    } else {
      // Growth by a factor f: home h becomes one of h, h + C, ..., h + (f-1) C
      // (the next bits of id.low), so each range not walked yet becomes f
      // ranges, and no key walked already is met again.
      const size_t factor = capacity / capacity_;
      std::vector<Range> mapped;
      mapped.reserve(pending_.size() * factor);
      for (size_t k = 0; k < factor; ++k) {
        for (const Range& r : pending_) {
          mapped.push_back({r.begin + k * capacity_, r.end + k * capacity_});
        }
      }
      pending_ = std::move(mapped);
    }
    capacity_ = capacity;
  }
  size_t budget = std::max<size_t>(max_slots, 1);
  while (budget > 0 && !pending_.empty()) {
    Range& r = pending_.back();
    const size_t n = std::min(budget, r.end - r.begin);
    encoder->AddHomeRange(store, r.begin, r.begin + n);
    r.begin += n;
    budget -= n;
    if (r.begin == r.end) pending_.pop_back();
  }
  return pending_.empty();
}

EncodedSnapshot EncodeSnapshot(const crdt::KeyStore& store, const SnapshotHeader& header,
                               const SnapshotEncoderOptions& options) {
  SnapshotEncoder encoder(options);
  encoder.AddAll(store);
  return encoder.Finish(header);
}

// ------------------------------------------------------------------ decoder

const char* SnapshotStatusName(SnapshotStatus status) {
  switch (status) {
    case SnapshotStatus::kOk:
      return "ok";
    case SnapshotStatus::kTruncated:
      return "truncated";
    case SnapshotStatus::kNotASnapshot:
      return "not a snapshot";
    case SnapshotStatus::kOtherVersion:
      return "other format version";
    case SnapshotStatus::kCorrupt:
      return "corrupt";
    case SnapshotStatus::kOtherCluster:
      return "other cluster";
    case SnapshotStatus::kOtherNode:
      return "other node";
    case SnapshotStatus::kSameGeneration:
      return "same generation";
    case SnapshotStatus::kFromTheFuture:
      return "from the future";
    case SnapshotStatus::kTooLarge:
      return "too large";
  }
  return "unknown";
}

namespace {

// Reads the overrides section (format version 2) into `d`, dropping and
// counting entries that are not valid or stamped too late.
void ReadOverrides(boost::archive::binary_iarchive& archive, const ByteSource& source,
                   DecodedSnapshot* d) {
  uint32_t count = 0;
  crdt::HlcTimestamp clock;
  archive >> count >> clock.wall_ms >> clock.logical;
  d->override_count = count;
  if (count > kMaxSnapshotOverrides || count > source.remaining() / kMinOverrideRecordBytes) {
    throw FormatError(std::to_string(count) + " overrides: more than " +
                      std::to_string(kMaxSnapshotOverrides) + " or than the payload holds");
  }
  // Every stamp the writer held was issued or accepted (HybridClock::Observe)
  // at most kMaxAheadMs ahead of its wall clock, which had not passed the
  // write time. (Saturating: written_wall_ms was checked against now only.)
  const int64_t written_ms = d->header.written_wall_ms;
  const int64_t latest_ms = written_ms > INT64_MAX - crdt::HybridClock::kMaxAheadMs
                                ? INT64_MAX
                                : written_ms + crdt::HybridClock::kMaxAheadMs;
  if (clock.wall_ms > latest_ms) {
    d->dropped_override_clock = true;
    clock = {};
  }
  d->override_clock = clock;
  d->overrides.reserve(count);
  for (uint32_t i = 0; i < count; ++i) {
    crdt::OverrideEntry entry;
    if (!LoadOverride(archive, &entry)) {
      ++d->dropped_overrides_invalid;
    } else if (entry.stamp.wall_ms > latest_ms) {
      ++d->dropped_overrides_future;
    } else {
      d->overrides.push_back(std::move(entry));
    }
  }
}

// Reads the payload after every header check and the checksum passed.
// Throws (archive_exception, FormatError, bad_alloc) on malformed content.
void ReadPayload(std::span<const std::byte> payload, const SnapshotExpectations& expect,
                 uint64_t max_window_ms, uint32_t slot_count, DecodedSnapshot* d) {
  ByteSource source(payload);
  boost::archive::binary_iarchive archive(source, kArchiveFlags);
  // Bounded by the payload's size (checked against key_count by the caller).
  d->keys.reserve(d->key_count);
  d->rows.reserve(d->key_count);
  d->counts.reserve(2 * d->key_count);
  // The latest wall time a bucket may start at (saturating).
  const int64_t ahead_ms = std::max<int64_t>(0, expect.max_clock_ahead_ms);
  const int64_t latest_wall_ms =
      expect.now_wall_ms > INT64_MAX / 2 - ahead_ms ? INT64_MAX / 2 : expect.now_wall_ms + ahead_ms;
  for (uint64_t i = 0; i < d->key_count; ++i) {
    KeyRecordHead head;
    archive >> head;
    if (head.bucket_ms == 0 || head.span == 0 || head.span > kMaxBucketsPerWindow) {
      throw FormatError("key " + std::to_string(i) + ": impossible geometry");
    }
    if (head.depth == 0 || head.depth > head.span + 1u) {
      throw FormatError("key " + std::to_string(i) + ": depth outside the ring");
    }
    if (head.rows == 0 || head.rows > kMaxSnapshotRowsPerKey) {
      throw FormatError("key " + std::to_string(i) + ": row count outside 1.." +
                        std::to_string(kMaxSnapshotRowsPerKey));
    }
    RestoredKey key;
    key.id = crdt::KeyId{head.high, head.low};
    key.geometry = crdt::Geometry{static_cast<int64_t>(head.bucket_ms), head.span};
    key.newest_bucket = head.newest;
    key.first_row = static_cast<uint32_t>(d->rows.size());
    key.depth = head.depth;
    // Read every row (the archive must be consumed) before judging the key.
    for (uint16_t r = 0; r < head.rows; ++r) {
      uint32_t slot = 0;
      archive >> slot;
      if (slot >= slot_count) {
        throw FormatError("key " + std::to_string(i) + ": row names slot " + std::to_string(slot) +
                          " of " + std::to_string(slot_count));
      }
      const size_t first = d->counts.size();
      d->counts.resize(first + head.depth);  // at most 1001 counts ahead of the bytes read
      archive.load_binary(d->counts.data() + first, head.depth * sizeof(uint32_t));
      const bool any = std::any_of(d->counts.begin() + first, d->counts.end(),
                                   [](uint32_t n) { return n != 0; });
      if (!any) {
        d->counts.resize(first);  // nothing live in this row
        continue;
      }
      d->rows.push_back(RestoredRow{slot, static_cast<uint32_t>(first)});
    }
    key.row_count = static_cast<uint16_t>(d->rows.size() - key.first_row);
    const crdt::Geometry& g = key.geometry;
    auto drop = [&](uint64_t* counter) {
      ++*counter;
      d->counts.resize(key.row_count == 0 ? d->counts.size() : d->rows[key.first_row].first_count);
      d->rows.resize(key.first_row);
    };
    if (!GeometryPossible(g, expect.buckets_per_window, max_window_ms)) {
      drop(&d->dropped_geometry);
      continue;
    }
    // Buckets so far out that bucket x bucket_ms leaves the clock's range.
    const int64_t max_bucket = (int64_t{1} << 61) / g.bucket_ms;
    if (key.newest_bucket > max_bucket) {
      drop(&d->dropped_future);
      continue;
    }
    const int64_t now_bucket = crdt::BucketOf(expect.now_wall_ms, g);
    if (key.row_count == 0 || key.newest_bucket < -max_bucket ||
        key.newest_bucket + static_cast<int64_t>(g.span) < now_bucket) {
      drop(&d->dropped_expired);
      continue;
    }
    if (key.newest_bucket > crdt::BucketOf(latest_wall_ms, g)) {
      drop(&d->dropped_future);
      continue;
    }
    d->keys.push_back(key);
  }
  d->slots.reserve(slot_count);
  for (uint32_t s = 0; s < slot_count; ++s) {
    SlotRecord record;
    archive >> record;
    d->slots.push_back(crdt::ReplicaSlot{std::move(record.node_id), record.incarnation});
  }
  if (d->version >= 2) ReadOverrides(archive, source, d);
  if (!source.at_end()) throw FormatError("bytes after the last record");
}

// Removes rows of the restoring process's own slot: it counts there now, and
// restored rows must never be written again.
void DropOwnRows(const SnapshotExpectations& expect, DecodedSnapshot* d) {
  std::vector<bool> own(d->slots.size(), false);
  bool any = false;
  for (size_t s = 0; s < d->slots.size(); ++s) {
    own[s] = d->slots[s].node_id == expect.node_id && d->slots[s].incarnation == expect.generation;
    any = any || own[s];
  }
  if (!any) return;
  std::vector<RestoredKey> keys;
  std::vector<RestoredRow> rows;
  for (RestoredKey key : d->keys) {
    const uint32_t first = static_cast<uint32_t>(rows.size());
    for (uint32_t r = key.first_row; r < key.first_row + key.row_count; ++r) {
      if (own[d->rows[r].slot]) {
        ++d->dropped_own_rows;
      } else {
        rows.push_back(d->rows[r]);
      }
    }
    key.first_row = first;
    key.row_count = static_cast<uint16_t>(rows.size() - first);
    if (key.row_count > 0) keys.push_back(key);
  }
  d->keys = std::move(keys);
  d->rows = std::move(rows);
}

}  // namespace

DecodedSnapshot DecodeSnapshot(std::span<const std::byte> bytes,
                               const SnapshotExpectations& expect) {
  DecodedSnapshot d;
  const size_t size = bytes.size();
  if (size > expect.max_bytes) {
    return Refuse(std::move(d), SnapshotStatus::kTooLarge,
                  std::to_string(size) + " bytes, more than the limit of " +
                      std::to_string(expect.max_bytes));
  }
  // (An empty span may have no data pointer at all: memcmp must not see it.)
  const size_t magic_bytes = std::min(size, sizeof kMagic);
  if (magic_bytes > 0 && std::memcmp(bytes.data(), kMagic, magic_bytes) != 0) {
    return Refuse(std::move(d), SnapshotStatus::kNotASnapshot, "no snapshot magic");
  }
  if (size < kAtVersion + 4) {
    return Refuse(std::move(d), SnapshotStatus::kTruncated,
                  std::to_string(size) + " bytes: cut within the header");
  }
  const auto version = static_cast<uint32_t>(GetLe(bytes, kAtVersion, 4));
  if (version < kOldestReadableSnapshotFormatVersion || version > kSnapshotFormatVersion) {
    return Refuse(std::move(d), SnapshotStatus::kOtherVersion,
                  "format version " + std::to_string(version) + ", this build reads " +
                      std::to_string(kOldestReadableSnapshotFormatVersion) + " to " +
                      std::to_string(kSnapshotFormatVersion));
  }
  d.version = version;
  if (size < kMinHeaderBytes) {
    return Refuse(std::move(d), SnapshotStatus::kTruncated,
                  std::to_string(size) + " bytes: cut within the header");
  }
  const uint64_t header_bytes = GetLe(bytes, kAtHeaderBytes, 4);
  if (header_bytes < kMinHeaderBytes || header_bytes > kMaxHeaderBytes) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt,
                  "header size " + std::to_string(header_bytes) + " is impossible");
  }
  if (size < header_bytes) {
    return Refuse(std::move(d), SnapshotStatus::kTruncated,
                  std::to_string(size) + " bytes: cut within the header");
  }
  const auto header = bytes.first(header_bytes);
  if (Hash(header.first(header_bytes - 8)) != GetLe(header, header_bytes - 8, 8)) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, "header checksum mismatch");
  }
  // The names: lengths must add up to the header's size exactly.
  size_t at = kFixedHeaderBytes;
  std::string names[2];
  for (std::string& name : names) {
    if (at + 2 > header_bytes - 8) {
      return Refuse(std::move(d), SnapshotStatus::kCorrupt, "header names overrun the header");
    }
    const size_t length = GetLe(header, at, 2);
    at += 2;
    if (length > kMaxSnapshotNameBytes || at + length > header_bytes - 8) {
      return Refuse(std::move(d), SnapshotStatus::kCorrupt, "header names overrun the header");
    }
    name.assign(reinterpret_cast<const char*>(header.data() + at), length);
    at += length;
  }
  if (at != header_bytes - 8) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, "header size does not match its names");
  }
  d.header_read = true;
  d.header.cluster_name = std::move(names[0]);
  d.header.node_id = std::move(names[1]);
  d.header.generation = GetLe(header, kAtGeneration, 8);
  d.header.written_wall_ms = static_cast<int64_t>(GetLe(header, kAtWrittenWallMs, 8));
  d.header.buckets_per_window = static_cast<uint32_t>(GetLe(header, kAtBucketsPerWindow, 4));
  d.key_count = GetLe(header, kAtKeyCount, 8);
  const auto slot_count = static_cast<uint32_t>(GetLe(header, kAtSlotCount, 4));
  const uint64_t payload_bytes = GetLe(header, kAtPayloadBytes, 8);

  if (d.header.cluster_name != expect.cluster_name) {
    // The reason first: it reads d, which the call then moves from.
    std::string why = "written by a member of cluster " + Printable(d.header.cluster_name) +
                      ", this node is in " + Printable(expect.cluster_name);
    return Refuse(std::move(d), SnapshotStatus::kOtherCluster, std::move(why));
  }
  if (d.header.node_id != expect.node_id) {
    std::string why = "written by node " + Printable(d.header.node_id) + ", this node is " +
                      Printable(expect.node_id);  // before d is moved from
    return Refuse(std::move(d), SnapshotStatus::kOtherNode, std::move(why));
  }
  if (d.header.generation == expect.generation) {
    return Refuse(std::move(d), SnapshotStatus::kSameGeneration,
                  "written by this process's own generation " + std::to_string(expect.generation));
  }
  const int64_t ahead_ms = std::max<int64_t>(0, expect.max_clock_ahead_ms);
  if (d.header.written_wall_ms > expect.now_wall_ms &&
      d.header.written_wall_ms - expect.now_wall_ms > ahead_ms) {
    std::string why = "written at wall time " + std::to_string(d.header.written_wall_ms) +
                      " ms, now is " + std::to_string(expect.now_wall_ms) +
                      " ms";  // before d is moved from
    return Refuse(std::move(d), SnapshotStatus::kFromTheFuture, std::move(why));
  }
  if (payload_bytes > expect.max_bytes - header_bytes) {  // header_bytes <= size <= max_bytes
    return Refuse(std::move(d), SnapshotStatus::kTooLarge,
                  "payload of " + std::to_string(payload_bytes) + " bytes, more than the limit");
  }
  if (size - header_bytes < payload_bytes) {
    return Refuse(std::move(d), SnapshotStatus::kTruncated,
                  std::to_string(size) + " bytes, the header announces " +
                      std::to_string(header_bytes + payload_bytes));
  }
  if (size - header_bytes > payload_bytes) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt,
                  std::to_string(size - header_bytes - payload_bytes) + " bytes after the payload");
  }
  if (d.header.buckets_per_window < 1 || d.header.buckets_per_window > kMaxBucketsPerWindow) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, "impossible buckets_per_window");
  }
  if (slot_count > kMaxSnapshotSlots || d.key_count > payload_bytes / kMinKeyRecordBytes ||
      slot_count > (payload_bytes - d.key_count * kMinKeyRecordBytes) / kMinSlotRecordBytes) {
    std::string why = "header counts (" + std::to_string(d.key_count) + " keys, " +
                      std::to_string(slot_count) + " slots) do not fit in " +
                      std::to_string(payload_bytes) + " payload bytes";  // before d is moved from
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, std::move(why));
  }
  const auto payload = bytes.subspan(header_bytes);
  if (Hash(payload) != GetLe(header, kAtPayloadHash, 8)) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, "payload checksum mismatch");
  }

  const uint64_t max_window_ms = expect.max_window_ms != 0 ? expect.max_window_ms : kMaxWindowMs;
  try {
    ReadPayload(payload, expect, max_window_ms, slot_count, &d);
  } catch (const boost::archive::archive_exception& e) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt,
                  std::string("payload does not decode: ") + e.what());
  } catch (const FormatError& e) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt, e.what());
  } catch (const std::exception& e) {
    return Refuse(std::move(d), SnapshotStatus::kCorrupt,
                  std::string("payload does not decode: ") + e.what());
  }
  DropOwnRows(expect, &d);
  d.status = SnapshotStatus::kOk;
  d.reason = std::to_string(d.keys.size()) + " of " + std::to_string(d.key_count) +
             " keys live (dropped: " + std::to_string(d.dropped_expired) + " expired, " +
             std::to_string(d.dropped_geometry) + " of another geometry, " +
             std::to_string(d.dropped_future) + " in the future; " +
             std::to_string(d.dropped_own_rows) + " rows of this process's slot); " +
             std::to_string(d.overrides.size()) + " of " + std::to_string(d.override_count) +
             " limit overrides (dropped: " + std::to_string(d.dropped_overrides_invalid) +
             " invalid, " + std::to_string(d.dropped_overrides_future) + " stamped too late" +
             (d.dropped_override_clock ? "; the saved clock too" : "") + ")";
  if (d.version < kSnapshotFormatVersion) {
    d.reason += "; format version " + std::to_string(d.version) + " (no overrides)";
  }
  if (d.dropped_geometry > 0 && d.header.buckets_per_window != expect.buckets_per_window) {
    d.reason += "; written with buckets_per_window " + std::to_string(d.header.buckets_per_window) +
                ", configured " + std::to_string(expect.buckets_per_window);
  }
  return d;
}

bool ResealForTesting(std::vector<std::byte>* snapshot) {
  std::span<std::byte> bytes(*snapshot);
  if (bytes.size() < kMinHeaderBytes || std::memcmp(bytes.data(), kMagic, sizeof kMagic) != 0) {
    return false;
  }
  const uint64_t header_bytes = GetLe(bytes, kAtHeaderBytes, 4);
  if (header_bytes < kMinHeaderBytes || header_bytes > bytes.size()) return false;
  const auto payload = bytes.subspan(header_bytes);
  SetLe(bytes, kAtPayloadBytes, payload.size(), 8);
  SetLe(bytes, kAtPayloadHash, Hash(payload), 8);
  SetLe(bytes, header_bytes - 8, Hash(bytes.first(header_bytes - 8)), 8);
  return true;
}

}  // namespace tally::persist

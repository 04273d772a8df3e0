// Snapshots of a node's counts and runtime limit overrides, so a restart of
// the whole cluster does not reset hourly and daily windows nor forget the
// limits an operator set (docs/DESIGN.md, "Snapshots").
//
// Pure: bytes in, bytes out. No file, no clock (the caller passes the wall
// time), no lock; daemon/io/snapshot_file.h writes and reads the files.
//
// Format, version 2 (all integers of the header little-endian):
//   header   magic "TALLYSNP" (8) | format version u32 | header bytes u32 (H,
//            this whole header) | payload bytes u64 (P) | payload XXH3-64 u64
//            | generation u64 | written wall ms i64 | key count u64 | slot
//            count u32 | buckets_per_window u32 | cluster name (u16 length +
//            bytes) | node id (u16 length + bytes) | header XXH3-64 u64 over
//            every header byte before it.
//   payload  a Boost.Serialization binary archive (no archive header, host
//            byte order: little-endian only) of
//              key count  x { key id (u64 high, u64 low), bucket_ms u32,
//                             span u16, newest i64, depth u16 (buckets kept:
//                             newest - depth + 1 .. newest), rows u16,
//                             rows x { slot u32 (index into the slots),
//                                      depth x count u32, oldest first } }
//              slot count x { node id (u16 length + bytes), incarnation u64 }
//              (the slots follow the keys: the encoder names them as keys use
//              them), then the runtime limit overrides (crdt/limit_overrides.h):
//              override count u32, hybrid clock (wall i64, logical u32),
//              override count x { kind u8, domain T, entry count u8,
//                entries x { key T, value T }, user T, endpoint T,
//                selector window_ms u64, removed u8, limit u64, window_ms u64,
//                stamp wall i64, stamp logical u32, writer u64 }
//              where T is u16 length + bytes.
//   The file is exactly H + P bytes.
// Version 1 is version 2 without the overrides (the payload ends after the
// slots); this build reads both, and a version 1 snapshot restores no
// overrides. The header is the same in both.
// `newest` is the newest bucket holding a count and `depth` reaches back to
// the oldest live one, so a key hit in one bucket costs one count per row.
//
// Nothing in a snapshot is trusted: the decoder checks the magic, the version,
// the header checksum, the cluster, node and generation, every size against
// the bytes present and `max_bytes`, then the payload checksum, and only then
// reads the payload, bounding every count before it allocates and catching
// the archive's exceptions. A refused snapshot yields a status and a reason,
// never a crash, a hang or a large allocation. Keys that decode but cannot be
// restored (a geometry the configured buckets_per_window cannot produce,
// buckets far in the future, or nothing live any more) are dropped one by
// one and counted. So are overrides outside crdt::Validate's limits or
// stamped more than HybridClock::kMaxAheadMs after the snapshot was written
// (a clock that far ahead would win every later write); a text longer than
// kMaxSelectorText, more than kMaxSelectorEntries descriptor entries or more
// than kMaxSnapshotOverrides overrides break the format (no writer makes
// them) and refuse the snapshot.
#ifndef TALLY_PERSIST_SNAPSHOT_H_
#define TALLY_PERSIST_SNAPSHOT_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "crdt/hybrid_clock.h"
#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "crdt/limit_overrides.h"
#include "crdt/window_counter.h"

namespace tally::persist {

// The version this build writes, and the oldest it reads.
inline constexpr uint32_t kSnapshotFormatVersion = 2;
inline constexpr uint32_t kOldestReadableSnapshotFormatVersion = 1;
// Longest cluster name, node id or slot node id a snapshot holds.
inline constexpr size_t kMaxSnapshotNameBytes = 1024;
// Most rows one key may have in a snapshot (a key is decided by a few
// processes per window; the store bounds merged rows lower still).
inline constexpr size_t kMaxSnapshotRowsPerKey = 255;
// Most distinct replica slots a snapshot may name.
inline constexpr size_t kMaxSnapshotSlots = size_t{1} << 16;
// Most overrides a snapshot may hold: as many as one map holds.
inline constexpr size_t kMaxSnapshotOverrides = crdt::LimitOverrides::kMaxEntries;

// Who wrote a snapshot, and when.
struct SnapshotHeader {
  std::string cluster_name;
  std::string node_id;
  uint64_t generation = 0;           // of the process that wrote it
  int64_t written_wall_ms = 0;       // its wall clock when it wrote it
  uint32_t buckets_per_window = 10;  // its configuration (explains dropped keys)
};

// A sealed snapshot, in two pieces so the payload is never copied; the file
// is header followed by payload.
struct EncodedSnapshot {
  std::vector<std::byte> header;
  std::vector<std::byte> payload;
  uint64_t keys = 0;
  uint64_t overrides = 0;
  size_t size() const { return header.size() + payload.size(); }
  std::vector<std::byte> Joined() const;
};

struct SnapshotEncoderOptions {
  // Keys whose window (bucket_ms x span) is shorter are left out: after a
  // restart they would have expired anyway. 0 keeps every key.
  uint64_t min_window_ms = 0;
};

// Payload bytes worth reserving (SnapshotEncoder's `buffer`) before encoding
// `keys` keys, so the payload does not grow, copying itself, while a caller
// holds a store's lock: a little above the 42-48 bytes a key typically takes
// (a larger snapshot still grows, by doubling).
inline size_t SnapshotPayloadReserve(uint64_t keys) {
  return static_cast<size_t>(keys) * 56 + 65536;
}

// Builds a snapshot from one or more stores (the sharded limiter has one per
// shard; the slot indexes of each store are translated by slot identity).
// Each key is read whole, under whatever lock the caller holds while it
// calls; no reference to a store is kept between calls.
// Thread safety: none (a value type).
class SnapshotEncoder {
 public:
  // `buffer` (e.g. the payload of the previous snapshot, once written) is
  // cleared and reused for the payload: its pages are already mapped, which
  // saves the page faults of a fresh buffer (a tenth of the encode at 1M).
  explicit SnapshotEncoder(const SnapshotEncoderOptions& options = {},
                           std::vector<std::byte> buffer = {});
  ~SnapshotEncoder();
  SnapshotEncoder(const SnapshotEncoder&) = delete;
  SnapshotEncoder& operator=(const SnapshotEncoder&) = delete;

  // Adds every key of `store` holding a live count.
  void AddAll(const crdt::KeyStore& store);
  // Adds the keys of `store` whose home slot is in [begin, end) of the
  // store's current capacity (KeyStore::ForEachWithHomeIn). StorePass uses
  // it to walk a store in slices.
  void AddHomeRange(const crdt::KeyStore& store, size_t begin, size_t end);

  // Keys added so far (a key added twice counts twice; restoring joins them).
  uint64_t keys() const { return keys_; }
  // Payload bytes so far.
  size_t payload_bytes() const;

  // The runtime limit overrides to write (every entry, tombstones included,
  // so a restart neither forgets a limit nor brings a removed one back) and
  // the hybrid clock that stamped them. Replaces what an earlier call set.
  // Entries outside crdt::Validate's limits (none a map holds) and any
  // beyond kMaxSnapshotOverrides are left out.
  void SetOverrides(std::vector<crdt::OverrideEntry> entries, crdt::HlcTimestamp clock);

  // Seals the snapshot: the slot table goes first in the payload, then the
  // keys; both checksums are computed. The encoder is spent afterwards.
  EncodedSnapshot Finish(const SnapshotHeader& header);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  SnapshotEncoderOptions options_;
  uint64_t keys_ = 0;
};

// A walk over one store in slices of home slots, so the thread that owns the
// store never stops for a whole snapshot: call Step under the store's lock as
// often as suits (e.g. once per timer tick) until it returns true.
// Guarantee: every key present in the store from the first Step to the last
// is encoded exactly once, as it was when its slice ran, even when keys are
// created, removed or moved in between (homes depend only on the id and the
// capacity, and when the table grows the slices not yet walked are mapped
// onto the larger table). Keys created during the pass may or may not be in.
class StorePass {
 public:
  // Encodes up to `max_slots` home slots' keys into `encoder`. Returns true
  // when the whole store has been walked. REQUIRES: the same store each call.
  bool Step(const crdt::KeyStore& store, size_t max_slots, SnapshotEncoder* encoder);
  bool done() const { return started_ && pending_.empty(); }

 private:
  struct Range {
    size_t begin, end;
  };
  bool started_ = false;
  size_t capacity_ = 0;  // of the store when pending_ was last mapped
  std::vector<Range> pending_;
};

// Encodes a whole store at once.
EncodedSnapshot EncodeSnapshot(const crdt::KeyStore& store, const SnapshotHeader& header,
                               const SnapshotEncoderOptions& options = {});

// ------------------------------------------------------------------ decoding

enum class SnapshotStatus {
  kOk,
  kTruncated,       // fewer bytes than the header or its sizes say
  kNotASnapshot,    // no magic
  kOtherVersion,    // a format this build does not read
  kCorrupt,         // a checksum fails, or content breaks the format's rules
  kOtherCluster,    // written by a member of another cluster
  kOtherNode,       // written by another node id
  kSameGeneration,  // written by the very process generation now restoring
  kFromTheFuture,   // written later than now + max_clock_ahead_ms
  kTooLarge,        // more than max_bytes
};
const char* SnapshotStatusName(SnapshotStatus status);

// What the restoring process expects and tolerates.
struct SnapshotExpectations {
  std::string cluster_name;
  std::string node_id;
  uint64_t generation = 0;  // of the restoring process (its rows are refused)
  uint32_t buckets_per_window = 10;
  int64_t now_wall_ms = 0;
  // Buckets (and the write time) may be this far ahead of now: the writer's
  // clock may have been ahead. Farther ones are absurd and dropped.
  int64_t max_clock_ahead_ms = 60'000;
  // Longest window a key may have (tally/types.h kMaxWindowMs by default).
  uint64_t max_window_ms = 0;  // 0: kMaxWindowMs
  // Largest snapshot read at all.
  uint64_t max_bytes = uint64_t{1} << 30;
};

// One restored key; its rows are rows[first_row .. first_row + row_count).
struct RestoredKey {
  crdt::KeyId id;
  crdt::Geometry geometry;
  int64_t newest_bucket = 0;
  uint32_t first_row = 0;
  uint16_t row_count = 0;
  uint16_t depth = 0;  // buckets newest - depth + 1 .. newest
};
// One row: its counts are counts[first_count .. first_count + depth), oldest
// first; `slot` indexes DecodedSnapshot::slots.
struct RestoredRow {
  uint32_t slot = 0;
  uint32_t first_count = 0;
};

struct DecodedSnapshot {
  SnapshotStatus status = SnapshotStatus::kCorrupt;
  std::string reason;  // why it was refused, or a summary when kOk
  bool ok() const { return status == SnapshotStatus::kOk; }

  // The header, once it was read (even when the snapshot is then refused).
  bool header_read = false;
  SnapshotHeader header;
  uint64_t key_count = 0;  // as the header says
  uint32_t version = 0;    // the format version, once read

  // Valid when ok(): slots by snapshot index, keys, and their rows and counts.
  std::vector<crdt::ReplicaSlot> slots;
  std::vector<RestoredKey> keys;
  std::vector<RestoredRow> rows;
  std::vector<uint32_t> counts;

  // Valid when ok(): the runtime limit overrides (none from a version 1
  // snapshot), tombstones included, each within crdt::Validate's limits and
  // stamped at most HybridClock::kMaxAheadMs after written_wall_ms, and the
  // writer's hybrid clock (zero when it broke that bound). A restorer merges
  // the entries and moves its clock past them (HybridClock::Restore).
  std::vector<crdt::OverrideEntry> overrides;
  crdt::HlcTimestamp override_clock;
  uint64_t override_count = 0;  // as the payload says

  // Keys and rows dropped while decoding an accepted snapshot.
  uint64_t dropped_expired = 0;   // nothing live at now
  uint64_t dropped_geometry = 0;  // geometry impossible for buckets_per_window
  uint64_t dropped_future = 0;    // newest bucket beyond now + max_clock_ahead_ms
  uint64_t dropped_own_rows = 0;  // rows in the restoring process's own slot
  // Overrides dropped: outside crdt::Validate's limits, or stamped too far
  // after the write; and whether the saved clock was (override_clock is zero).
  uint64_t dropped_overrides_invalid = 0;
  uint64_t dropped_overrides_future = 0;
  bool dropped_override_clock = false;
};

// Decodes and validates a snapshot. Never throws; every outcome is a status.
// Work and memory are linear in bytes.size() (which it first checks against
// max_bytes).
DecodedSnapshot DecodeSnapshot(std::span<const std::byte> bytes,
                               const SnapshotExpectations& expect);

// For tests and fuzzers: recomputes both checksums of a snapshot whose
// header is readable, so that crafted or mutated payloads reach the payload
// decoder. Returns false (changing nothing) when the header is unreadable.
bool ResealForTesting(std::vector<std::byte>* snapshot);

}  // namespace tally::persist

#endif  // TALLY_PERSIST_SNAPSHOT_H_

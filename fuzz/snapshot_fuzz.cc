// DecodeSnapshot (persist/snapshot.h) on arbitrary bytes. A mutated file
// almost never passes the checksums, so the first input byte picks a mode:
//   even: the rest is decoded as it is (the header checks and bounds);
//   odd:  the rest is resealed first (ResealForTesting recomputes both
//         checksums), so mutations reach the Boost archive reader and the
//         per-key validation behind the checksum.
// Properties: never crashes, leaks or allocates without bound (libFuzzer's
// -rss_limit_mb and -malloc_limit_mb catch that); a refusal always carries a
// reason and no keys or overrides; an accepted snapshot's keys are well
// formed, restore into a store without breaking its invariants, and
// re-encode to a snapshot that decodes to the same live counts; its limit
// overrides are valid, stamped within the bound, merge into a map, and
// re-encode to the same entries and clock.
// Seeds: fuzz/corpus/snapshot_fuzz/ (written by the real encoder; the first
// byte is the mode). scripts/fuzz.sh snapshot_fuzz SECONDS runs it.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "crdt/key_store.h"
#include "crdt/limit_overrides.h"
#include "fuzz/fuzz_check.h"
#include "persist/restore.h"
#include "persist/snapshot.h"

namespace {

using tally::persist::DecodedSnapshot;

// The seeds (fuzz/corpus/snapshot_fuzz/) are written for these expectations.
tally::persist::SnapshotExpectations Expectations() {
  tally::persist::SnapshotExpectations e;
  e.cluster_name = "prod";
  e.node_id = "node-a";
  e.generation = 1'700'000'100'000;
  e.buckets_per_window = 10;
  e.now_wall_ms = 1'700'000'060'000;
  e.max_bytes = 1 << 20;
  return e;
}

uint64_t LiveTotal(const tally::crdt::KeyStore& store, int64_t now) {
  uint64_t sum = 0;
  store.ForEach([&](const tally::crdt::KeyId&, const tally::crdt::KeyStore::Entry& e) {
    sum += e.counter.Sum(tally::crdt::BucketOf(now, e.counter.geometry()));
  });
  return sum;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const auto expect = Expectations();
  const auto input = tally::fuzz::AsBytes(data + 1, size - 1);
  std::vector<std::byte> bytes(input.begin(), input.end());
  if ((data[0] & 1) != 0) tally::persist::ResealForTesting(&bytes);
  const DecodedSnapshot d = tally::persist::DecodeSnapshot(bytes, expect);
  FUZZ_CHECK(!d.reason.empty());
  if (!d.ok()) {
    FUZZ_CHECK(d.keys.empty() && d.rows.empty() && d.counts.empty());
    FUZZ_CHECK(d.overrides.empty());
    return 0;
  }
  const int64_t latest_stamp_ms = d.header.written_wall_ms + tally::crdt::HybridClock::kMaxAheadMs;
  FUZZ_CHECK(d.override_clock == tally::crdt::HlcTimestamp{} ||
             d.override_clock.wall_ms <= latest_stamp_ms);
  FUZZ_CHECK(d.overrides.size() <= tally::persist::kMaxSnapshotOverrides);
  for (const auto& e : d.overrides) {
    FUZZ_CHECK(tally::crdt::Validate(e).empty());
    FUZZ_CHECK(e.stamp.wall_ms <= latest_stamp_ms);
  }
  {
    tally::crdt::LimitOverrides map;
    tally::crdt::HybridClock clock;
    const auto counts = tally::crdt::RestoreOverrides(d.overrides, d.override_clock, &map, &clock);
    FUZZ_CHECK(counts.refused == 0);
    FUZZ_CHECK(map.size() <= d.overrides.size());  // a selector given twice is one entry
    FUZZ_CHECK(clock.last() >= d.override_clock);
    tally::persist::SnapshotEncoder encoder;
    encoder.SetOverrides(d.overrides, d.override_clock);
    const DecodedSnapshot again = tally::persist::DecodeSnapshot(
        encoder
            .Finish({expect.cluster_name, expect.node_id, 1, d.header.written_wall_ms,
                     expect.buckets_per_window})
            .Joined(),
        expect);
    FUZZ_CHECK(again.ok());
    FUZZ_CHECK(again.override_clock == d.override_clock);
    FUZZ_CHECK(again.overrides.size() == d.overrides.size());
    for (size_t i = 0; i < d.overrides.size(); ++i) {
      FUZZ_CHECK(again.overrides[i].selector == d.overrides[i].selector);
      FUZZ_CHECK(again.overrides[i].value == d.overrides[i].value);
      FUZZ_CHECK(again.overrides[i].stamp == d.overrides[i].stamp);
      FUZZ_CHECK(again.overrides[i].writer == d.overrides[i].writer);
    }
  }
  for (const auto& key : d.keys) {
    FUZZ_CHECK(key.row_count >= 1 && key.depth >= 1);
    FUZZ_CHECK(key.depth <= key.geometry.span + 1u);
    FUZZ_CHECK(key.first_row + key.row_count <= d.rows.size());
    for (uint32_t r = key.first_row; r < key.first_row + key.row_count; ++r) {
      FUZZ_CHECK(d.rows[r].slot < d.slots.size());
      FUZZ_CHECK(d.rows[r].first_count + key.depth <= d.counts.size());
    }
  }
  tally::crdt::KeyStore store({.max_keys = 4096, .buckets_per_window = expect.buckets_per_window});
  tally::persist::RestoreSnapshot(d, expect.now_wall_ms, &store);
  FUZZ_CHECK(store.CheckInvariants());

  // What was restored survives another round trip unchanged (unless keys
  // given twice joined into more rows than one key may have in a snapshot).
  bool too_many_rows = false;
  store.ForEach([&](const tally::crdt::KeyId&, const tally::crdt::KeyStore::Entry& e) {
    too_many_rows = too_many_rows || e.counter.row_count() > tally::persist::kMaxSnapshotRowsPerKey;
  });
  if (too_many_rows) return 0;
  tally::persist::SnapshotHeader header{expect.cluster_name, expect.node_id, 1, expect.now_wall_ms,
                                        expect.buckets_per_window};
  const DecodedSnapshot again = tally::persist::DecodeSnapshot(
      tally::persist::EncodeSnapshot(store, header).Joined(), expect);
  FUZZ_CHECK(again.ok());
  tally::crdt::KeyStore second({.max_keys = 4096, .buckets_per_window = expect.buckets_per_window});
  tally::persist::RestoreSnapshot(again, expect.now_wall_ms, &second);
  FUZZ_CHECK(second.size() == store.size());
  FUZZ_CHECK(LiveTotal(second, expect.now_wall_ms) == LiveTotal(store, expect.now_wall_ms));
  return 0;
}

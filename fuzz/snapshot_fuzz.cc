// DecodeSnapshot (persist/snapshot.h) on arbitrary bytes. A mutated file
// almost never passes the checksums, so the first input byte picks a mode:
//   even: the rest is decoded as it is (the header checks and bounds);
//   odd:  the rest is resealed first (ResealForTesting recomputes both
//         checksums), so mutations reach the Boost archive reader and the
//         per-key validation behind the checksum.
// Properties: never crashes, leaks or allocates without bound (libFuzzer's
// -rss_limit_mb and -malloc_limit_mb catch that); a refusal always carries a
// reason and no keys; an accepted snapshot's keys are well formed, restore
// into a store without breaking its invariants, and re-encode to a snapshot
// that decodes to the same live counts.
// Seeds: fuzz/corpus/snapshot_fuzz/ (written by the real encoder; the first
// byte is the mode). scripts/fuzz.sh snapshot_fuzz SECONDS runs it.
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "crdt/key_store.h"
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
    return 0;
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

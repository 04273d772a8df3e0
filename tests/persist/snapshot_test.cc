#include "persist/snapshot.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "persist/restore.h"

namespace tally::persist {
namespace {

using crdt::KeyId;
using crdt::KeyStore;

constexpr int64_t kNow = 1'700'000'000'000;  // a wall time in ms
constexpr uint64_t kHour = 3'600'000;

SnapshotHeader Header(uint64_t generation = 7) {
  return SnapshotHeader{"prod", "node-a", generation, kNow, 10};
}

SnapshotExpectations Expect(int64_t now = kNow + 5'000, uint64_t generation = 8) {
  SnapshotExpectations e;
  e.cluster_name = "prod";
  e.node_id = "node-a";
  e.generation = generation;
  e.buckets_per_window = 10;
  e.now_wall_ms = now;
  return e;
}

// Adds `hits` for (slot identity, key, window) at wall time `at`.
void Hit(KeyStore* store, const crdt::ReplicaSlot& slot, const KeyId& id, uint64_t window_ms,
         int64_t at, uint32_t hits) {
  KeyStore::Lookup how;
  KeyStore::Entry* e = store->FindOrCreate(id, window_ms, at, &how);
  ASSERT_NE(e, nullptr);
  e->counter.Add(store->slots().Intern(slot), crdt::BucketOf(at, e->counter.geometry()), hits);
  store->MarkChanged(e);
}

// A store's live content, independent of its slot indexes:
// key -> (slot identity, bucket) -> count.
using Content = std::map<std::tuple<uint64_t, uint64_t, std::string, uint64_t, int64_t>, uint32_t>;
Content ContentOf(const KeyStore& store, int64_t now) {
  Content out;
  store.ForEach([&](const KeyId& id, const KeyStore::Entry& e) {
    const crdt::WindowCounter& c = e.counter;
    const int64_t now_bucket = crdt::BucketOf(now, c.geometry());
    const int64_t from = std::max(now_bucket, c.newest_bucket()) - c.geometry().span;
    for (size_t r = 0; r < c.row_count(); ++r) {
      const crdt::ReplicaSlot& s = store.slots().Get(c.row_slot(r));
      for (int64_t k = from; k <= c.newest_bucket(); ++k) {
        if (uint32_t n = c.count(r, k); n != 0) {
          out[{id.high, id.low, s.node_id, s.incarnation, k}] = n;
        }
      }
    }
  });
  return out;
}

// A store with keys of several windows, slots and bucket spreads.
KeyStore MixedStore() {
  KeyStore store({.max_keys = 10'000, .buckets_per_window = 10});
  const crdt::ReplicaSlot self{"node-a", 7}, peer{"node-b", 3}, old_self{"node-a", 2};
  for (int i = 0; i < 300; ++i) {
    const uint64_t window = (i % 3 == 0) ? 60'000 : (i % 3 == 1) ? kHour : 24 * kHour;
    const KeyId id = crdt::HashKey("user" + std::to_string(i), "/api", window);
    Hit(&store, self, id, window, kNow - (i % 7) * static_cast<int64_t>(window / 10), 1 + i % 5);
    if (i % 2 == 0) Hit(&store, peer, id, window, kNow - 3 * static_cast<int64_t>(window / 10), 2);
    if (i % 5 == 0) Hit(&store, old_self, id, window, kNow - static_cast<int64_t>(window / 20), 9);
    Hit(&store, self, id, window, kNow, 1);
  }
  return store;
}

TEST(SnapshotTest, RoundTripRestoresEveryLiveCountUnderItsSlotIdentity) {
  KeyStore store = MixedStore();
  EncodedSnapshot encoded = EncodeSnapshot(store, Header());
  EXPECT_EQ(encoded.keys, store.size());
  DecodedSnapshot decoded = DecodeSnapshot(encoded.Joined(), Expect(kNow));
  ASSERT_TRUE(decoded.ok()) << decoded.reason;
  EXPECT_EQ(decoded.keys.size(), store.size());
  EXPECT_EQ(decoded.header.node_id, "node-a");
  EXPECT_EQ(decoded.header.generation, 7u);
  EXPECT_EQ(decoded.header.written_wall_ms, kNow);
  EXPECT_EQ(decoded.slots.size(), 3u);

  KeyStore restored({.max_keys = 10'000, .buckets_per_window = 10});
  RestoreStats stats = RestoreSnapshot(decoded, kNow, &restored);
  EXPECT_EQ(stats.keys_merged, store.size());
  EXPECT_EQ(restored.size(), store.size());
  EXPECT_EQ(ContentOf(restored, kNow), ContentOf(store, kNow));
  EXPECT_TRUE(restored.CheckInvariants());
}

TEST(SnapshotTest, EmptyStoreRoundTrips) {
  KeyStore store({.max_keys = 10, .buckets_per_window = 10});
  EncodedSnapshot encoded = EncodeSnapshot(store, Header());
  DecodedSnapshot decoded = DecodeSnapshot(encoded.Joined(), Expect());
  ASSERT_TRUE(decoded.ok()) << decoded.reason;
  EXPECT_TRUE(decoded.keys.empty());
}

TEST(SnapshotTest, KeysWithNothingLiveAndDeadRowsAreNotWritten) {
  KeyStore store({.max_keys = 10, .buckets_per_window = 10});
  KeyStore::Lookup how;
  // A key created but never counted (a denied first request).
  store.FindOrCreate(crdt::HashKey("empty", "/", 1000), 1000, kNow, &how);
  const KeyId id = crdt::HashKey("u", "/", kHour);
  Hit(&store, {"dead", 1}, id, kHour, kNow - 2 * static_cast<int64_t>(kHour), 5);  // expires...
  Hit(&store, {"node-a", 7}, id, kHour, kNow, 1);  // ...when this moves the ring past it
  EncodedSnapshot encoded = EncodeSnapshot(store, Header());
  EXPECT_EQ(encoded.keys, 1u);
  DecodedSnapshot decoded = DecodeSnapshot(encoded.Joined(), Expect());
  ASSERT_TRUE(decoded.ok()) << decoded.reason;
  ASSERT_EQ(decoded.keys.size(), 1u);
  EXPECT_EQ(decoded.keys[0].row_count, 1);
  EXPECT_EQ(decoded.keys[0].depth, 1);  // one bucket holds a count: one count stored
  EXPECT_EQ(decoded.slots.size(), 1u);  // the dead slot is not even named
}

TEST(SnapshotTest, ShortWindowsCanBeLeftOut) {
  KeyStore store = MixedStore();
  EncodedSnapshot all = EncodeSnapshot(store, Header());
  EncodedSnapshot long_only = EncodeSnapshot(store, Header(), {.min_window_ms = kHour});
  EXPECT_EQ(long_only.keys, 200u);  // the 1-minute keys (a third) are left out
  EXPECT_LT(long_only.size(), all.size());
}

TEST(SnapshotTest, EveryTruncationIsReportedAsTruncated) {
  // An empty file (a span with no data pointer at all).
  EXPECT_EQ(DecodeSnapshot({}, Expect()).status, SnapshotStatus::kTruncated);
  KeyStore store = MixedStore();
  std::vector<std::byte> bytes = EncodeSnapshot(store, Header()).Joined();
  for (size_t n = 0; n < bytes.size(); n += (n < 200 ? 1 : 97)) {
    DecodedSnapshot d = DecodeSnapshot(std::span(bytes).first(n), Expect());
    EXPECT_EQ(d.status, SnapshotStatus::kTruncated) << n << " bytes: " << d.reason;
    EXPECT_FALSE(d.reason.empty());
    EXPECT_TRUE(d.keys.empty());
  }
}

TEST(SnapshotTest, EveryFlippedByteIsRefused) {
  KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  for (int i = 0; i < 5; ++i) {
    Hit(&store, {"node-a", 7}, crdt::HashKey("u" + std::to_string(i), "/", kHour), kHour, kNow, 3);
  }
  const std::vector<std::byte> good = EncodeSnapshot(store, Header()).Joined();
  for (size_t i = 0; i < good.size(); ++i) {
    for (std::byte mask : {std::byte{0x01}, std::byte{0x80}, std::byte{0xff}}) {
      std::vector<std::byte> bad = good;
      bad[i] ^= mask;
      DecodedSnapshot d = DecodeSnapshot(bad, Expect());
      EXPECT_FALSE(d.ok()) << "byte " << i;
      if (i < 8) {
        EXPECT_EQ(d.status, SnapshotStatus::kNotASnapshot);
      } else if (i < 12) {
        EXPECT_EQ(d.status, SnapshotStatus::kOtherVersion);
      } else if (i < 16) {  // the header's size: impossible, or beyond the bytes
        EXPECT_TRUE(d.status == SnapshotStatus::kCorrupt || d.status == SnapshotStatus::kTruncated)
            << SnapshotStatusName(d.status);
      } else {
        EXPECT_EQ(d.status, SnapshotStatus::kCorrupt) << "byte " << i << ": " << d.reason;
      }
      EXPECT_FALSE(d.reason.empty());
    }
  }
}

TEST(SnapshotTest, OtherVersionNodeClusterAndGenerationAreRefusedWithAReason) {
  KeyStore store = MixedStore();
  const std::vector<std::byte> bytes = EncodeSnapshot(store, Header(7)).Joined();

  // A version after this build's (a downgrade), and before the first.
  for (uint8_t version : {uint8_t{kSnapshotFormatVersion + 1}, uint8_t{0}}) {
    std::vector<std::byte> other = bytes;
    other[8] = std::byte{version};
    DecodedSnapshot d = DecodeSnapshot(other, Expect());
    EXPECT_EQ(d.status, SnapshotStatus::kOtherVersion);
    EXPECT_NE(d.reason.find("version " + std::to_string(version)), std::string::npos) << d.reason;
  }
  DecodedSnapshot d;

  SnapshotExpectations other_node = Expect();
  other_node.node_id = "node-b";
  d = DecodeSnapshot(bytes, other_node);
  EXPECT_EQ(d.status, SnapshotStatus::kOtherNode);
  EXPECT_NE(d.reason.find("'node-a'"), std::string::npos) << d.reason;
  EXPECT_TRUE(d.header_read);
  EXPECT_TRUE(d.keys.empty());

  SnapshotExpectations other_cluster = Expect();
  other_cluster.cluster_name = "staging";
  d = DecodeSnapshot(bytes, other_cluster);
  EXPECT_EQ(d.status, SnapshotStatus::kOtherCluster);
  EXPECT_NE(d.reason.find("'prod'"), std::string::npos) << d.reason;

  d = DecodeSnapshot(bytes, Expect(kNow, /*generation=*/7));
  EXPECT_EQ(d.status, SnapshotStatus::kSameGeneration);

  d = DecodeSnapshot(bytes, Expect(kNow - 10 * 60'000));  // the clock went back 10 minutes
  EXPECT_EQ(d.status, SnapshotStatus::kFromTheFuture);

  SnapshotExpectations small = Expect();
  small.max_bytes = bytes.size() - 1;
  d = DecodeSnapshot(bytes, small);
  EXPECT_EQ(d.status, SnapshotStatus::kTooLarge);

  d = DecodeSnapshot(std::vector<std::byte>(100, std::byte{'x'}), Expect());
  EXPECT_EQ(d.status, SnapshotStatus::kNotASnapshot);

  std::vector<std::byte> trailing = bytes;
  trailing.push_back(std::byte{0});
  d = DecodeSnapshot(trailing, Expect());
  EXPECT_EQ(d.status, SnapshotStatus::kCorrupt);
}

TEST(SnapshotTest, KeysOfAnotherGeometryOrFarFutureOrExpiredAreDroppedOneByOne) {
  KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  const crdt::ReplicaSlot self{"node-a", 7};
  Hit(&store, self, crdt::HashKey("live", "/", kHour), kHour, kNow, 1);
  Hit(&store, self, crdt::HashKey("minute", "/", 60'000), 60'000, kNow - 120'000, 1);  // expired
  Hit(&store, self, crdt::HashKey("ahead", "/", kHour), kHour, kNow + 2 * kHour, 1);  // clock ahead
  const std::vector<std::byte> bytes = EncodeSnapshot(store, Header()).Joined();

  DecodedSnapshot d = DecodeSnapshot(bytes, Expect(kNow));
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.keys.size(), 1u);
  EXPECT_EQ(d.dropped_expired, 1u);
  EXPECT_EQ(d.dropped_future, 1u);

  // Restarted with buckets_per_window = 20: the old geometries are impossible
  // (bucket_ms 360000 with span 10 has no window at B = 20).
  SnapshotExpectations b20 = Expect(kNow);
  b20.buckets_per_window = 20;
  d = DecodeSnapshot(bytes, b20);
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.keys.size(), 0u);
  EXPECT_EQ(d.dropped_geometry, 3u);
  EXPECT_NE(d.reason.find("buckets_per_window 10, configured 20"), std::string::npos) << d.reason;
}

TEST(SnapshotTest, RowsOfTheRestoringProcessSlotAreRefused) {
  KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  const KeyId id = crdt::HashKey("u", "/", kHour);
  Hit(&store, {"node-a", 7}, id, kHour, kNow, 4);
  Hit(&store, {"node-a", 9}, id, kHour, kNow, 2);  // a slot that is now the restorer's own
  Hit(&store, {"node-a", 9}, crdt::HashKey("v", "/", kHour), kHour, kNow, 2);
  DecodedSnapshot d = DecodeSnapshot(EncodeSnapshot(store, Header(7)).Joined(), Expect(kNow, 9));
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.dropped_own_rows, 2u);
  ASSERT_EQ(d.keys.size(), 1u);  // "v" had only the refused row
  EXPECT_EQ(d.keys[0].row_count, 1);
  EXPECT_EQ(d.slots[d.rows[d.keys[0].first_row].slot], (crdt::ReplicaSlot{"node-a", 7}));
}

TEST(SnapshotTest, ResealedGarbageNeverCrashesAndRestoresSafely) {
  KeyStore store = MixedStore();
  const std::vector<std::byte> good = EncodeSnapshot(store, Header()).Joined();
  std::mt19937_64 rng(42);
  int accepted = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<std::byte> bad = good;
    const int edits = 1 + static_cast<int>(rng() % 8);
    for (int e = 0; e < edits && bad.size() > 101; ++e) {
      const size_t at = 100 + rng() % (bad.size() - 100);  // past the header
      switch (rng() % 4) {
        case 0:
          bad[at] = static_cast<std::byte>(rng());
          break;
        case 1:
          bad.resize(at);
          break;
        case 2:
          bad.insert(bad.begin() + static_cast<long>(at), static_cast<std::byte>(rng()));
          break;
        case 3:  // a large value where a count or length may be
          for (size_t k = 0; k < 4 && at + k < bad.size(); ++k) bad[at + k] = std::byte{0xff};
          break;
      }
    }
    ASSERT_TRUE(ResealForTesting(&bad));
    DecodedSnapshot d = DecodeSnapshot(bad, Expect(kNow));
    EXPECT_TRUE(d.ok() || d.status == SnapshotStatus::kCorrupt) << SnapshotStatusName(d.status);
    if (!d.ok()) {
      EXPECT_TRUE(d.keys.empty());
      continue;
    }
    ++accepted;
    KeyStore target({.max_keys = 10'000, .buckets_per_window = 10});
    RestoreSnapshot(d, kNow, &target);
    EXPECT_TRUE(target.CheckInvariants());
  }
  // Changed counts keep the format valid: some mutants are accepted.
  EXPECT_GT(accepted, 0);
}

TEST(SnapshotTest, HeaderCountsBeyondThePayloadAreRefusedBeforeAllocating) {
  KeyStore store = MixedStore();
  std::vector<std::byte> bytes = EncodeSnapshot(store, Header()).Joined();
  // key count (offset 48) = 2^60, resealed so only the bound can catch it.
  for (size_t i = 0; i < 8; ++i) bytes[48 + i] = std::byte{0};
  bytes[55] = std::byte{0x10};
  ASSERT_TRUE(ResealForTesting(&bytes));
  DecodedSnapshot d = DecodeSnapshot(bytes, Expect());
  EXPECT_EQ(d.status, SnapshotStatus::kCorrupt);
  EXPECT_NE(d.reason.find("do not fit"), std::string::npos) << d.reason;
}

// ---- slices ----

std::multiset<std::pair<uint64_t, uint64_t>> KeysOf(const DecodedSnapshot& d) {
  std::multiset<std::pair<uint64_t, uint64_t>> out;
  for (const RestoredKey& k : d.keys) out.insert({k.id.high, k.id.low});
  return out;
}

TEST(StorePassTest, SlicedPassMeetsEveryKeyOnceWhileTheStoreGrowsAndSweeps) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    std::mt19937_64 rng(seed);
    KeyStore store({.max_keys = 100'000, .buckets_per_window = 10});
    const crdt::ReplicaSlot self{"node-a", 7};
    // Long-lived keys (present throughout) and short ones that expire and
    // are swept mid-pass (moving the keys behind them in their runs).
    std::set<std::pair<uint64_t, uint64_t>> stable;
    int64_t now = kNow;
    auto add = [&](bool lasting, bool before_pass) {
      const uint64_t window = lasting ? kHour : 1000;
      const KeyId id = crdt::HashKey(std::to_string(rng()), "/", window);
      Hit(&store, self, id, window, now, 1);
      if (lasting && before_pass) stable.insert({id.high, id.low});
    };
    for (int i = 0; i < 800; ++i) add(rng() % 2 == 0, true);  // capacity 1024
    SnapshotEncoder encoder;
    StorePass pass;
    int steps = 0;
    while (!pass.Step(store, 1 + rng() % 16, &encoder)) {
      ++steps;
      // Between slices: new keys (growing the table), time passing, sweeps.
      for (int i = 0, n = static_cast<int>(rng() % 40); i < n; ++i) add(rng() % 3 == 0, false);
      now += static_cast<int64_t>(rng() % 600);
      if (rng() % 3 == 0) store.Sweep(now);
    }
    EXPECT_GT(steps, 5);
    EXPECT_GT(store.capacity(), 1024u);  // the table grew during the pass
    // Read as of the pass's start, so that no key is dropped as expired.
    SnapshotExpectations as_of_start = Expect(kNow);
    as_of_start.max_clock_ahead_ms = 24 * kHour;
    DecodedSnapshot d = DecodeSnapshot(encoder.Finish(Header()).Joined(), as_of_start);
    ASSERT_TRUE(d.ok()) << d.reason;
    const auto met = KeysOf(d);
    EXPECT_EQ(met.size(), encoder.keys());
    for (const auto& id : stable) EXPECT_EQ(met.count(id), 1u) << "seed " << seed;
    // No key is met twice, lasting or not.
    EXPECT_EQ(std::set(met.begin(), met.end()).size(), met.size()) << "seed " << seed;
  }
}

TEST(StorePassTest, SeveralStoresShareOneSnapshotAndItsSlotTable) {
  KeyStore a({.max_keys = 100, .buckets_per_window = 10});
  KeyStore b({.max_keys = 100, .buckets_per_window = 10});
  // The same identities, interned in different orders.
  Hit(&a, {"x", 1}, crdt::HashKey("1", "/", kHour), kHour, kNow, 1);
  Hit(&a, {"y", 1}, crdt::HashKey("2", "/", kHour), kHour, kNow, 2);
  Hit(&b, {"y", 1}, crdt::HashKey("3", "/", kHour), kHour, kNow, 3);
  Hit(&b, {"x", 1}, crdt::HashKey("4", "/", kHour), kHour, kNow, 4);
  SnapshotEncoder encoder;
  encoder.AddAll(a);
  StorePass pass;
  while (!pass.Step(b, 3, &encoder)) {
  }
  DecodedSnapshot d = DecodeSnapshot(encoder.Finish(Header()).Joined(), Expect(kNow));
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.slots.size(), 2u);
  KeyStore merged({.max_keys = 100, .buckets_per_window = 10});
  RestoreSnapshot(d, kNow, &merged);
  Content expected = ContentOf(a, kNow);
  Content from_b = ContentOf(b, kNow);
  expected.insert(from_b.begin(), from_b.end());
  EXPECT_EQ(ContentOf(merged, kNow), expected);
}

}  // namespace
}  // namespace tally::persist

#include "crdt/key_store.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

#include "crdt/key_id.h"

namespace tally::crdt {
namespace {

TEST(KeyIdTest, FramingSeparatesFieldsAndWindowIsPartOfTheIdentity) {
  EXPECT_NE(HashKey("ab", "c", 1000), HashKey("a", "bc", 1000));
  EXPECT_NE(HashKey("a", "b", 1000), HashKey("a", "b", 1001));
  EXPECT_EQ(HashKey("a", "b", 1000), HashKey("a", "b", 1000));
  // Long ids take the streaming path; the framing must agree with itself.
  std::string long_user(3000, 'u');
  EXPECT_EQ(HashKey(long_user, "e", 5), HashKey(long_user, "e", 5));
  EXPECT_NE(HashKey(long_user, "e", 5), HashKey(long_user + "x", "e", 5));
}

TEST(KeyIdTest, NoCollisionsAmongManyKeys) {
  std::set<std::pair<uint64_t, uint64_t>> seen;
  for (int i = 0; i < 200000; ++i) {
    KeyId id = HashKey("user" + std::to_string(i), "/api", 1000);
    EXPECT_TRUE(seen.insert({id.high, id.low}).second);
  }
}

TEST(KeyStoreTest, CreatesFindsAndReclaimsIdleKeys) {
  KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  KeyStore::Lookup how;
  KeyId a = HashKey("a", "e", 1000), b = HashKey("b", "e", 60000);
  auto* ea = store.FindOrCreate(a, 1000, 10'000, &how);
  ASSERT_NE(ea, nullptr);
  EXPECT_EQ(how, KeyStore::Lookup::kCreated);
  ea->counter.Add(0, BucketOf(10'000, ea->counter.geometry()), 1);
  auto* eb = store.FindOrCreate(b, 60000, 10'000, &how);
  eb->counter.Add(0, BucketOf(10'000, eb->counter.geometry()), 1);
  EXPECT_EQ(store.FindOrCreate(a, 1000, 10'000, &how), ea);
  EXPECT_EQ(how, KeyStore::Lookup::kFound);
  EXPECT_EQ(store.Sweep(10'999), 0u);  // a's hit still counts (bucket 100 until 110)
  EXPECT_EQ(store.Sweep(11'100), 1u);  // a's window has passed; b's has not
  EXPECT_EQ(store.Find(a), nullptr);
  EXPECT_NE(store.Find(b), nullptr);
  EXPECT_EQ(store.reclaimed(), 1u);
}

TEST(KeyStoreTest, FullStoreReclaimsExpiredKeysBeforeRefusing) {
  KeyStore store({.max_keys = 3, .buckets_per_window = 10, .full_sweep_interval_ms = 0});
  KeyStore::Lookup how;
  for (int i = 0; i < 3; ++i) {
    auto* e = store.FindOrCreate(HashKey(std::to_string(i), "e", 1000), 1000, 0, &how);
    ASSERT_NE(e, nullptr);
    e->counter.Add(0, 0, 1);
  }
  EXPECT_EQ(store.FindOrCreate(HashKey("x", "e", 1000), 1000, 500, &how), nullptr);
  EXPECT_EQ(how, KeyStore::Lookup::kFull);
  // Once the old keys' windows pass, a new key gets in.
  EXPECT_NE(store.FindOrCreate(HashKey("x", "e", 1000), 1000, 1200, &how), nullptr);
  EXPECT_EQ(how, KeyStore::Lookup::kCreated);
  EXPECT_EQ(store.size(), 1u);
}

TEST(KeyStoreTest, AFullReplicaMergingNewKeysSweepsAtTheSamePaceAsChecks) {
  // A replica at capacity used to walk its whole table for every merged new
  // key: replication of a burst of new keys then cost O(table) each.
  KeyStore store({.max_keys = 3, .buckets_per_window = 10, .full_sweep_interval_ms = 100});
  const Geometry g = store.GeometryOf(60'000);
  WindowCounter live(g);
  live.MergeBucket(1, 0, 1);
  for (int i = 0; i < 3; ++i)
    ASSERT_TRUE(store.Merge(HashKey(std::to_string(i), "e", 60'000), live, 0));
  KeyStore::MergeOutcome outcome;
  for (int i = 0; i < 1000; ++i) {
    EXPECT_FALSE(store.Merge(HashKey("new" + std::to_string(i), "e", 60'000), live, 50, &outcome));
    EXPECT_EQ(outcome, KeyStore::MergeOutcome::kFull);
  }
  EXPECT_EQ(store.full_sweeps(), 1u);
  // New local keys share the same pace.
  KeyStore::Lookup how;
  EXPECT_EQ(store.FindOrCreate(HashKey("x", "e", 60'000), 60'000, 60, &how), nullptr);
  EXPECT_EQ(store.full_sweeps(), 1u);
  EXPECT_FALSE(store.Merge(HashKey("later", "e", 60'000), live, 200, &outcome));
  EXPECT_EQ(store.full_sweeps(), 2u);
}

TEST(KeyStoreTest, AFullLargeTableIsSweptInSlicesNotWhole) {
  // A full table of 40,000 keys sits in 65,536 slots: each paced sweep walks
  // 16,384 of them from a cursor (a quarter), so a flood of new keys into a
  // full table of live keys costs each check at most a slice, not the table.
  constexpr size_t kKeys = 40'000;
  KeyStore store({.max_keys = kKeys, .buckets_per_window = 10, .full_sweep_interval_ms = 0});
  KeyStore::Lookup how;
  for (size_t i = 0; i < kKeys; ++i) {
    auto* e = store.FindOrCreate(HashKey(std::to_string(i), "e", 1000), 1000, 0, &how);
    ASSERT_NE(e, nullptr);
    e->counter.Add(0, 0, 1);
  }
  ASSERT_EQ(store.capacity(), 65'536u);
  // Every key has expired at 2,000: the first new key frees only a slice.
  ASSERT_NE(store.FindOrCreate(HashKey("new0", "e", 1000), 1000, 2000, &how), nullptr);
  EXPECT_EQ(how, KeyStore::Lookup::kCreated);
  const size_t left = store.size() - 1;
  EXPECT_GT(left, kKeys / 2);
  EXPECT_LT(left, kKeys * 7 / 8);
  EXPECT_TRUE(store.CheckInvariants());
  // Each later sweep takes the next slice: four cover the table.
  for (int i = 1; i < 4; ++i) {
    // Fill back to the cap, then one more new key sweeps the next slice.
    for (size_t k = 0; store.size() < kKeys; ++k) {
      ASSERT_NE(store.FindOrCreate(
                    HashKey("fill" + std::to_string(i) + "-" + std::to_string(k), "e", 1000), 1000,
                    2000, &how),
                nullptr);
    }
    ASSERT_NE(store.FindOrCreate(HashKey("new" + std::to_string(i), "e", 1000), 1000, 2000, &how),
              nullptr);
  }
  size_t old_left = 0;
  for (size_t i = 0; i < kKeys; ++i) {
    old_left += store.Find(HashKey(std::to_string(i), "e", 1000)) != nullptr;
  }
  EXPECT_EQ(old_left, 0u) << "four slices cover the table";
  EXPECT_EQ(store.full_sweeps(), 4u);
  EXPECT_TRUE(store.CheckInvariants());
}

TEST(KeyStoreTest, VersionsTrackChangesForDeltas) {
  KeyStore store({.max_keys = 10, .buckets_per_window = 10});
  KeyStore::Lookup how;
  KeyId a = HashKey("a", "e", 1000), b = HashKey("b", "e", 1000);
  auto* ea = store.FindOrCreate(a, 1000, 0, &how);
  ea->counter.Add(0, 0, 1);
  store.MarkChanged(ea);
  uint64_t after_a = store.version();
  auto* eb = store.FindOrCreate(b, 1000, 0, &how);
  eb->counter.Add(0, 0, 1);
  store.MarkChanged(eb);
  std::vector<KeyId> changed;
  store.ForEachChangedSince(
      after_a, [&](const KeyId& id, const KeyStore::Entry&) { changed.push_back(id); });
  ASSERT_EQ(changed.size(), 1u);
  EXPECT_EQ(changed[0], b);
}

TEST(KeyStoreTest, MergeJoinsRemoteStateAndRejectsGeometryMismatch) {
  KeyStore store({.max_keys = 10, .buckets_per_window = 10});
  KeyId a = HashKey("a", "e", 1000);
  WindowCounter remote(store.GeometryOf(1000));
  remote.Add(5, 0, 7);
  ASSERT_TRUE(store.Merge(a, remote, 50));
  ASSERT_NE(store.Find(a), nullptr);
  EXPECT_EQ(store.Find(a)->counter.Sum(0), 7u);
  uint64_t v = store.version();
  ASSERT_TRUE(store.Merge(a, remote, 50));  // idempotent: no new version
  EXPECT_EQ(store.version(), v);
  WindowCounter other_geometry(GeometryFor(1000, 20));
  other_geometry.Add(5, 0, 1);
  EXPECT_FALSE(store.Merge(a, other_geometry, 50));
  EXPECT_EQ(store.Find(a)->counter.Sum(0), 7u);
}

TEST(KeyStoreTest, MergeSaysWhatHappened) {
  KeyStore store({.max_keys = 1, .buckets_per_window = 10});
  const Geometry g = store.GeometryOf(1000);
  WindowCounter remote(g);
  remote.MergeBucket(5, 0, 7);
  KeyStore::MergeOutcome outcome;
  EXPECT_TRUE(store.Merge(HashKey("a", "e", 1000), remote, 10'000, &outcome));
  EXPECT_EQ(outcome, KeyStore::MergeOutcome::kExpired);  // bucket 0 is long gone at 10 s
  EXPECT_EQ(store.size(), 0u);
  EXPECT_TRUE(store.Merge(HashKey("a", "e", 1000), remote, 50, &outcome));
  EXPECT_EQ(outcome, KeyStore::MergeOutcome::kMerged);
  EXPECT_FALSE(store.Merge(HashKey("b", "e", 1000), remote, 50, &outcome));
  EXPECT_EQ(outcome, KeyStore::MergeOutcome::kFull);
  WindowCounter other(GeometryFor(1000, 20));
  other.MergeBucket(5, 0, 1);
  EXPECT_FALSE(store.Merge(HashKey("a", "e", 1000), other, 50, &outcome));
  EXPECT_EQ(outcome, KeyStore::MergeOutcome::kGeometryMismatch);
  // A remote state of more rows than a merge may add: the rest is refused.
  WindowCounter wide(g);
  for (SlotIndex s = 100; s < 100 + kMaxMergedRows; ++s) wide.MergeBucket(s, 0, 1);
  EXPECT_TRUE(store.Merge(HashKey("a", "e", 1000), wide, 50, &outcome));
  EXPECT_EQ(outcome, KeyStore::MergeOutcome::kRowsRefused);
  EXPECT_EQ(store.Find(HashKey("a", "e", 1000))->counter.row_count(), kMaxMergedRows);
}

TEST(SlotTableTest, IsBoundedAndFindsInConstantTime) {
  SlotTable t;
  for (size_t i = 0; i < SlotTable::kMaxSlots; ++i) {
    ASSERT_EQ(t.Intern({"n" + std::to_string(i % 7), i}), i);
  }
  EXPECT_TRUE(t.full());
  EXPECT_EQ(t.Intern({"new", 1}), SlotTable::kNoSlot);
  EXPECT_EQ(t.size(), SlotTable::kMaxSlots);
  // Known slots are still found and interned.
  EXPECT_EQ(t.Intern({"n3", 10}), 10u);
  EXPECT_EQ(t.Find({"n3", 10}), std::optional<SlotIndex>(10));
  EXPECT_EQ(t.Find({"n3", 11}), std::nullopt);
}

TEST(SlotTableTest, InternsEachSlotOnceAndIncarnationsDiffer) {
  SlotTable t;
  SlotIndex a1 = t.Intern({"a", 1});
  SlotIndex a2 = t.Intern({"a", 2});
  EXPECT_NE(a1, a2);
  EXPECT_EQ(t.Intern({"a", 1}), a1);
  EXPECT_EQ(t.Get(a2).incarnation, 2u);
}

}  // namespace
}  // namespace tally::crdt

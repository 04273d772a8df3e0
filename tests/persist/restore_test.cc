// The restore rule (persist/restore.h) on real deciders: a node restarted
// from its snapshot decides as it did before the restart, never writes a
// restored row again, and counts nothing twice when replicas send it the
// same rows.
#include "persist/restore.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "daemon/core/limiter_core.h"
#include "persist/snapshot.h"
#include "tests/support/requests.h"
#include "tests/support/times.h"

namespace tally::persist {
namespace {

using ::tally::testing::AtWallMs;
using ::tally::testing::CheckRequestBuilder;

constexpr int64_t kStart = 1'700'000'000'000;
constexpr uint64_t kHour = 3'600'000;
constexpr uint64_t kDay = 24 * kHour;

const CheckRequestBuilder kRequest;  // on /api, no request id

core::LimiterCoreOptions Options() {
  core::LimiterCoreOptions o;
  o.buckets_per_window = 10;
  o.max_keys = 10'000;
  return o;
}

SnapshotExpectations Expect(uint64_t generation, int64_t now) {
  SnapshotExpectations e;
  e.cluster_name = "prod";
  e.node_id = "node-a";
  e.generation = generation;
  e.buckets_per_window = 10;
  e.now_wall_ms = now;
  return e;
}

DecodedSnapshot SnapshotOf(const core::LimiterCore& core, uint64_t generation, int64_t now,
                           uint64_t restoring_generation) {
  EncodedSnapshot e = EncodeSnapshot(core.store(), {"prod", "node-a", generation, now, 10});
  DecodedSnapshot d = DecodeSnapshot(e.Joined(), Expect(restoring_generation, now));
  EXPECT_TRUE(d.ok()) << d.reason;
  return d;
}

// What a zero-hit check says is left for `user` (it consumes nothing).
uint64_t Remaining(core::LimiterCore* core, const std::string& user, uint64_t limit,
                   uint64_t window_ms, int64_t now) {
  CheckResult r =
      core->Check(kRequest.User(user).Limit(limit).WindowMs(window_ms).Hits(0), AtWallMs(now));
  EXPECT_EQ(r.status, Status::kOk) << r.error;
  return r.remaining;
}

// A daily and an hourly quota used over a day, then a restart.
void UseQuotas(core::LimiterCore* core, int64_t from, int64_t to) {
  for (int64_t t = from; t < to; t += 37 * 60'000) {
    core->Check(kRequest.User("daily").Limit(1000).WindowMs(kDay).Hits(7), AtWallMs(t));
    core->Check(kRequest.User("hourly").Limit(100).WindowMs(kHour).Hits(3), AtWallMs(t));
  }
}

TEST(RestoreTest, RemainingAfterARestartEqualsRemainingBefore) {
  core::LimiterCore before(Options(), {"node-a", 1});
  UseQuotas(&before, kStart, kStart + 20 * kHour);
  const int64_t shutdown = kStart + 20 * kHour;
  const uint64_t daily = Remaining(&before, "daily", 1000, kDay, shutdown);
  const uint64_t hourly = Remaining(&before, "hourly", 100, kHour, shutdown);
  ASSERT_LT(daily, 1000u);
  ASSERT_LT(hourly, 100u);

  DecodedSnapshot snapshot = SnapshotOf(before, 1, shutdown, 2);
  core::LimiterCore after(Options(), {"node-a", 2});  // a new generation: a new slot
  RestoreStats stats = RestoreSnapshot(snapshot, shutdown, &after.store());
  EXPECT_EQ(stats.keys_merged, 2u);
  EXPECT_EQ(Remaining(&after, "daily", 1000, kDay, shutdown), daily);
  EXPECT_EQ(Remaining(&after, "hourly", 100, kHour, shutdown), hourly);

  // And later on, as the buckets expire, both still agree.
  for (int64_t t = shutdown; t < shutdown + static_cast<int64_t>(kDay + kHour); t += 13 * 60'000) {
    ASSERT_EQ(Remaining(&after, "daily", 1000, kDay, t), Remaining(&before, "daily", 1000, kDay, t))
        << "at +" << (t - shutdown) << " ms";
    ASSERT_EQ(Remaining(&after, "hourly", 100, kHour, t),
              Remaining(&before, "hourly", 100, kHour, t));
  }
}

TEST(RestoreTest, RestoredRowsAreNeverIncrementedAgain) {
  core::LimiterCore before(Options(), {"node-a", 1});
  UseQuotas(&before, kStart, kStart + 5 * kHour);
  const int64_t now = kStart + 5 * kHour;
  DecodedSnapshot snapshot = SnapshotOf(before, 1, now, 2);
  core::LimiterCore after(Options(), {"node-a", 2});
  RestoreSnapshot(snapshot, now, &after.store());

  const crdt::KeyId daily = crdt::HashKey("daily", "/api", kDay);
  const crdt::SlotIndex old_slot = *[&]() -> std::optional<crdt::SlotIndex> {
    for (size_t i = 0; i < after.store().slots().size(); ++i) {
      if (after.store().slots().Get(i) == crdt::ReplicaSlot{"node-a", 1}) return i;
    }
    return std::nullopt;
  }();
  ASSERT_NE(old_slot, after.local_slot());
  const crdt::WindowCounter& counter = after.store().Find(daily)->counter;
  const int64_t bucket = crdt::BucketOf(now, counter.geometry());
  const uint32_t restored = counter.CountOfSlot(old_slot, bucket);
  ASSERT_GT(restored, 0u);

  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(
        after.Check(kRequest.User("daily").Limit(1000).WindowMs(kDay).Hits(2), AtWallMs(now))
            .allowed);
  }
  const crdt::WindowCounter& later = after.store().Find(daily)->counter;
  EXPECT_EQ(later.CountOfSlot(old_slot, bucket), restored);
  EXPECT_EQ(later.CountOfSlot(after.local_slot(), bucket), 10u);
}

TEST(RestoreTest, RowsReplicatedAgainByAReplicaAreNotCountedTwice) {
  // The owner counted; a replica holds the same rows (replication is a join
  // of the owner's state). After a full restart the owner restores its
  // snapshot and then receives the replica's copy: the counts must read once.
  core::LimiterCore owner(Options(), {"node-a", 1});
  UseQuotas(&owner, kStart, kStart + 3 * kHour);
  const int64_t now = kStart + 3 * kHour;
  core::LimiterCore replica(Options(), {"node-b", 1});
  DecodedSnapshot as_replicated = SnapshotOf(owner, 1, now, 99);
  RestoreSnapshot(as_replicated, now, &replica.store());  // the replica's copy

  core::LimiterCore restarted(Options(), {"node-a", 2});
  RestoreSnapshot(SnapshotOf(owner, 1, now, 2), now, &restarted.store());
  const uint64_t daily = Remaining(&restarted, "daily", 1000, kDay, now);
  EXPECT_EQ(daily, Remaining(&owner, "daily", 1000, kDay, now));

  // The replica pushes its state (handoff / anti-entropy): join, by slot identity.
  replica.store().ForEach([&](const crdt::KeyId& id, const crdt::KeyStore::Entry& e) {
    crdt::WindowCounter translated(e.counter.geometry());
    for (size_t r = 0; r < e.counter.row_count(); ++r) {
      const crdt::SlotIndex slot =
          restarted.store().slots().Intern(replica.store().slots().Get(e.counter.row_slot(r)));
      const int64_t newest = e.counter.newest_bucket();
      for (int64_t k = newest; k >= newest - e.counter.geometry().span; --k) {
        translated.MergeBucket(slot, k, e.counter.count(r, k));
      }
    }
    EXPECT_TRUE(restarted.store().Merge(id, translated, now));
  });
  EXPECT_EQ(Remaining(&restarted, "daily", 1000, kDay, now), daily);
  EXPECT_EQ(Remaining(&restarted, "hourly", 100, kHour, now),
            Remaining(&owner, "hourly", 100, kHour, now));

  // Restoring the same snapshot again changes nothing either.
  RestoreSnapshot(SnapshotOf(owner, 1, now, 2), now, &restarted.store());
  EXPECT_EQ(Remaining(&restarted, "daily", 1000, kDay, now), daily);
}

TEST(RestoreTest, ExpiredBucketsAndKeysAreDropped) {
  core::LimiterCore before(Options(), {"node-a", 1});
  UseQuotas(&before, kStart, kStart + 2 * kHour);
  const int64_t shutdown = kStart + 2 * kHour;
  EncodedSnapshot e = EncodeSnapshot(before.store(), {"prod", "node-a", 1, shutdown, 10});

  // Back 90 minutes later: the hourly key has expired, the daily one partly.
  const int64_t restart = shutdown + 90 * 60'000;
  DecodedSnapshot d = DecodeSnapshot(e.Joined(), Expect(2, restart));
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.dropped_expired, 1u);
  core::LimiterCore after(Options(), {"node-a", 2});
  RestoreSnapshot(d, restart, &after.store());
  EXPECT_EQ(after.store().size(), 1u);
  EXPECT_EQ(after.store().Find(crdt::HashKey("hourly", "/api", kHour)), nullptr);
  EXPECT_EQ(Remaining(&after, "daily", 1000, kDay, restart),
            Remaining(&before, "daily", 1000, kDay, restart));

  // Once a window and a bucket have passed since the last hit, nothing is
  // left: the restored rows expired with their buckets.
  const int64_t later = shutdown + static_cast<int64_t>(kDay + kDay / 10);
  EXPECT_EQ(Remaining(&after, "daily", 1000, kDay, later), 1000u);
  EXPECT_EQ(after.Sweep(AtWallMs(later)), 1u);  // the restored daily key
}

TEST(RestoreTest, ShardedStoresEachGetTheirKeys) {
  core::LimiterCore before(Options(), {"node-a", 1});
  for (int i = 0; i < 64; ++i) {
    before.Check(kRequest.User(std::to_string(i) + "u").Limit(10).WindowMs(kHour).Hits(1 + i % 3),
                 AtWallMs(kStart));
  }
  DecodedSnapshot d = SnapshotOf(before, 1, kStart, 2);
  std::vector<crdt::KeyStore> shards;
  shards.reserve(4);
  for (int i = 0; i < 4; ++i) shards.emplace_back(crdt::KeyStoreOptions{.max_keys = 100});
  RestoreStats stats = RestoreSnapshot(
      d, kStart, [&](const crdt::KeyId& id) { return &shards[id.high % shards.size()]; });
  EXPECT_EQ(stats.keys_merged, 64u);
  size_t total = 0;
  for (size_t s = 0; s < shards.size(); ++s) {
    total += shards[s].size();
    shards[s].ForEach([&](const crdt::KeyId& id, const crdt::KeyStore::Entry&) {
      EXPECT_EQ(id.high % shards.size(), s);
    });
  }
  EXPECT_EQ(total, 64u);
}

TEST(RestoreTest, AFullStoreRefusesKeysAndCountsThem) {
  core::LimiterCore before(Options(), {"node-a", 1});
  for (int i = 0; i < 10; ++i) {
    before.Check(kRequest.User(std::to_string(i) + "u").Limit(10).WindowMs(kHour).Hits(1),
                 AtWallMs(kStart));
  }
  DecodedSnapshot d = SnapshotOf(before, 1, kStart, 2);
  crdt::KeyStore small({.max_keys = 4});
  RestoreStats stats = RestoreSnapshot(d, kStart, &small);
  EXPECT_EQ(stats.keys_merged, 4u);
  EXPECT_EQ(stats.keys_refused, 6u);
  EXPECT_TRUE(small.CheckInvariants());
}

}  // namespace
}  // namespace tally::persist

#include "daemon/core/limiter_core.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "tally/limiter.h"
#include "tests/support/requests.h"
#include "tests/support/times.h"

namespace tally::core {
namespace {

using std::chrono::milliseconds;
using ::tally::testing::AtMs;
using ::tally::testing::CheckRequestBuilder;

const CheckRequestBuilder kRequest;  // alice on /api, 1 hit

TEST(LimiterCoreTest, AdmitsUpToTheLimitThenDeniesWithRetryAndReset) {
  LimiterCore core({});
  for (int i = 0; i < 3; ++i) {
    CheckResult r = core.Check(kRequest.Limit(3).WindowMs(1000), AtMs(10'000));
    EXPECT_TRUE(r.allowed);
    EXPECT_EQ(r.remaining, 2u - i);
    EXPECT_EQ(r.limit, 3u);
    EXPECT_EQ(r.reset_after_ms, 1100u);  // bucket [10000,10100) counts until 11100
  }
  CheckResult denied = core.Check(kRequest.Limit(3).WindowMs(1000), AtMs(10'050));
  EXPECT_FALSE(denied.allowed);
  EXPECT_EQ(denied.remaining, 0u);
  EXPECT_EQ(denied.retry_after_ms, 1050u);
  EXPECT_TRUE(core.Check(kRequest.Limit(3).WindowMs(1000), AtMs(10'050 + 1050)).allowed);
}

TEST(LimiterCoreTest, DeniedRequestsConsumeNothingAndZeroHitsOnlyAsk) {
  LimiterCore core({});
  const CheckRequestBuilder five_per_s = kRequest.Limit(5).WindowMs(1000);
  EXPECT_TRUE(core.Check(five_per_s.Hits(4), AtMs(0)).allowed);
  EXPECT_FALSE(core.Check(five_per_s.Hits(2), AtMs(1)).allowed);  // would make 6
  CheckResult ask = core.Check(five_per_s.Hits(0), AtMs(2));
  EXPECT_TRUE(ask.allowed);
  EXPECT_EQ(ask.remaining, 1u);
  EXPECT_TRUE(core.Check(five_per_s, AtMs(3)).allowed);  // the denied 2 took nothing
}

TEST(LimiterCoreTest, LimitIsAppliedAtDecisionTime) {
  LimiterCore core({});
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(core.Check(kRequest.Limit(10).WindowMs(1000), AtMs(0)).allowed);
  }
  // Same key (user, endpoint, window): a lowered limit denies at once.
  CheckResult r = core.Check(kRequest.Limit(5).WindowMs(1000), AtMs(1));
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.limit, 5u);
  // Raised again: room again.
  EXPECT_TRUE(core.Check(kRequest.Limit(6).WindowMs(1000), AtMs(2)).allowed);
}

TEST(LimiterCoreTest, WindowIsPartOfTheCounterIdentity) {
  LimiterCore core({});
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(0)).allowed);
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(0)).allowed);
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(60'000), AtMs(0)).allowed);
}

TEST(LimiterCoreTest, HitsAboveTheLimitCanNeverFit) {
  LimiterCore core({});
  CheckResult r = core.Check(kRequest.Limit(3).WindowMs(1000).Hits(4), AtMs(0));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after_ms, kNeverFits);
}

TEST(LimiterCoreTest, LimitZeroDeniesEverything) {
  LimiterCore core({});
  const CheckRequestBuilder none_per_s = kRequest.Limit(0).WindowMs(1000);
  CheckResult r = core.Check(none_per_s, AtMs(0));
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.retry_after_ms, kNeverFits);
  EXPECT_TRUE(core.Check(none_per_s.Hits(0), AtMs(0)).allowed);  // asking is always fine
}

TEST(LimiterCoreTest, InvalidInputGetsAClearErrorAndCountsNothing) {
  LimiterCore core({});
  struct Case {
    CheckRequest req;
    const char* why;
  };
  std::vector<Case> cases = {
      {CheckRequest{1, "", "/e", 1, 1000, 1}, "user_id is empty"},
      {CheckRequest{1, "u", "", 1, 1000, 1}, "endpoint is empty"},
      {CheckRequest{1, std::string(4000, 'u'), std::string(97, 'e'), 1, 1000, 1},
       "user_id + endpoint exceed 4096 bytes"},
      {CheckRequest{1, "u", "/e", 1, 0, 1}, "window must be at least 1 ms"},
      {CheckRequest{1, "u", "/e", 1, kMaxWindowMs + 1, 1}, "window exceeds 31 days"},
      {CheckRequest{1, "u", "/e", kMaxLimit + 1, 1000, 1}, "limit exceeds 4294967295"},
      {CheckRequest{1, "u", "/e", 10, 1000, kMaxLimit + 1}, "hits exceed 4294967295"},
  };
  for (const auto& c : cases) {
    CheckResult r = core.Check(c.req, AtMs(0));
    EXPECT_EQ(r.status, Status::kInvalidArgument);
    EXPECT_FALSE(r.allowed);
    EXPECT_EQ(r.error, c.why);
  }
  EXPECT_EQ(core.store().size(), 0u);
  EXPECT_EQ(core.stats().invalid, cases.size());
  // Exactly at the limits is fine.
  EXPECT_EQ(core.Check(CheckRequest{1, std::string(4000, 'u'), std::string(96, 'e'), kMaxLimit,
                                    kMaxWindowMs, kMaxLimit},
                       AtMs(0))
                .status,
            Status::kOk);
}

TEST(LimiterCoreTest, RetriedRequestIdIsNotCountedTwice) {
  LimiterCore core({});
  CheckResult first = core.Check(kRequest.Limit(2).WindowMs(1000).Id(77), AtMs(0));
  CheckResult retry = core.Check(kRequest.Limit(2).WindowMs(1000).Id(77), AtMs(5));
  EXPECT_TRUE(first.allowed);
  EXPECT_TRUE(retry.allowed);
  EXPECT_EQ(retry.remaining, 1u);  // still only one hit counted
  EXPECT_EQ(core.stats().dedup_hits, 1u);
  EXPECT_TRUE(core.Check(kRequest.Limit(2).WindowMs(1000).Id(78), AtMs(6)).allowed);
  EXPECT_FALSE(core.Check(kRequest.Limit(2).WindowMs(1000).Id(79), AtMs(7)).allowed);
  // A retry of the denied one stays denied even after room appears? It
  // returns the first decision: the client already got "denied".
  EXPECT_FALSE(core.Check(kRequest.Limit(2).WindowMs(1000).Id(79), AtMs(8)).allowed);
  // The same id on another key is another request.
  EXPECT_TRUE(core.Check(kRequest.Limit(2).WindowMs(1000).Id(77).User("bob"), AtMs(9)).allowed);
}

TEST(LimiterCoreTest, DedupEntriesExpireAfterTheirTtl) {
  LimiterCore core({.dedup_ttl = milliseconds(100)});
  EXPECT_TRUE(core.Check(kRequest.Limit(5).WindowMs(100'000).Id(9), AtMs(0)).allowed);
  EXPECT_TRUE(core.Check(kRequest.Limit(5).WindowMs(100'000).Id(9), AtMs(50)).allowed);
  CheckResult later = core.Check(kRequest.Limit(5).WindowMs(100'000).Id(9), AtMs(200));
  EXPECT_EQ(later.remaining, 3u);  // past the TTL it is a new request
}

TEST(LimiterCoreTest, WallClockGoingBackNeverReopensTheWindow) {
  LimiterCore core({});
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(50'000, 1)).allowed);
  // The wall clock jumps back 10 s: the hit moves to the new time's bucket
  // and counts a full window from the step (whichever clock was right, it
  // was admitted at most that long ago).
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(40'000, 2)).allowed);
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(41'050, 3)).allowed);
  const crdt::WindowCounter& c = core.store().Find(crdt::HashKey("alice", "/api", 1000))->counter;
  EXPECT_EQ(c.newest_bucket(), crdt::BucketOf(40'000, c.geometry()));  // nothing ahead of now
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000), AtMs(41'100, 4)).allowed);
}

TEST(LimiterCoreTest, SmallRegressionsAreClampedLargeStepsAreFollowed) {
  LimiterCore core({});  // max_clock_regression_ms = 1000
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000).User("bob"), AtMs(50'000, 1)).allowed);
  // 900 ms back (threads racing for the lock, a small NTP step): clamped, so
  // the request lands in the 50'000 bucket and is denied there.
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000).User("bob"), AtMs(49'100, 2)).allowed);
  EXPECT_EQ(core.stats().clock_steps_back, 0u);
  // 10 s back: followed. Time slides from there instead of freezing at
  // 50'000 for 10 s, so a new key's window opens again after one window.
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000).User("carol"), AtMs(40'000, 3)).allowed);
  EXPECT_EQ(core.stats().clock_steps_back, 1u);
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000).User("carol"), AtMs(40'500, 4)).allowed);
  // Bob's hit moved to the step's bucket (40'000): it counts a full window
  // from the step, and a sweep keeps it meanwhile.
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000).User("bob"), AtMs(40'900, 5)).allowed);
  core.Sweep(AtMs(41'000, 6));
  EXPECT_FALSE(core.Check(kRequest.Limit(1).WindowMs(1000).User("bob"), AtMs(41'050, 7)).allowed);
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000).User("carol"), AtMs(41'100, 8)).allowed);
  EXPECT_TRUE(core.Check(kRequest.Limit(1).WindowMs(1000).User("bob"), AtMs(41'100, 9)).allowed);
}

// A counter shaped for another window (a faulty peer's state) is started
// afresh by the first check; one a check here confirmed is a real collision.
TEST(LimiterCoreTest, AForeignGeometryIsRepairedAndOnlyAOwnOneIsACollision) {
  LimiterCore core({}, crdt::ReplicaSlot{"me", 1});
  const crdt::KeyId key = crdt::HashKey("alice", "/api", 1000);
  const crdt::SlotIndex peer = core.store().slots().Intern({"peer", 1});
  const crdt::Geometry wrong = core.store().GeometryOf(60'000);
  crdt::WindowCounter remote(wrong);
  remote.Add(peer, crdt::BucketOf(10'000, wrong), 3);
  ASSERT_TRUE(core.store().Merge(key, remote, 10'000));
  for (int i = 0; i < 3; ++i) {
    CheckResult r = core.Check(kRequest.Limit(3).WindowMs(1000), AtMs(10'000));
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_TRUE(r.allowed);
  }
  EXPECT_EQ(core.stats().geometry_repairs, 1u);
  // The same id under another window, now that checks here confirmed it.
  CheckResult collision = core.CheckKey(kRequest.Limit(3).WindowMs(60'000), key, AtMs(10'001));
  EXPECT_EQ(collision.status, Status::kInternal);
  EXPECT_EQ(collision.error, "key id collision");
  EXPECT_EQ(core.stats().geometry_repairs, 1u);
  EXPECT_FALSE(core.Check(kRequest.Limit(3).WindowMs(1000), AtMs(10'002)).allowed);
}

// Fuzz finding B (docs/RELIABILITY.md): a peer's state put a key's newest
// bucket far in the future, and the next check's reply overflowed int64
// computing reset_after_ms. Buckets are bounded (|bucket x bucket_ms| <=
// 2^61, crdt::MaxBucket) and Node drops such state before it gets here; the
// core's arithmetic holds at the edge of that domain anyway (UBSan checks it).
TEST(LimiterCoreTest, AFarFutureCounterGivesFiniteRetryAndResetTimes) {
  const crdt::KeyId key = crdt::HashKey("alice", "/api", 1000);
  const crdt::Geometry g = LimiterCore({}).store().GeometryOf(1000);
  for (int64_t newest :
       {INT64_MAX, crdt::MaxBucket(g) + 1, crdt::MaxBucket(g), crdt::MaxBucket(g) / 2}) {
    LimiterCore core({}, crdt::ReplicaSlot{"me", 1});
    crdt::WindowCounter remote(g);
    remote.MergeBucket(core.store().slots().Intern({"peer", 1}), newest, 5);
    core.store().Merge(key, remote, 10'000);
    CheckResult r = core.CheckKey(kRequest.Limit(5).WindowMs(1000), key, AtMs(10'000));
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    if (newest > crdt::MaxBucket(g)) {
      // Outside the domain: ignored, the key is as if new.
      EXPECT_TRUE(r.allowed) << newest;
      EXPECT_LE(r.reset_after_ms, 1000u + static_cast<uint64_t>(g.bucket_ms));
      continue;
    }
    // Inside it: the hits count (the core cannot tell a far clock from a
    // forged bucket), and both times are what the buckets say, exactly.
    EXPECT_FALSE(r.allowed) << newest;
    const uint64_t end_ms = static_cast<uint64_t>((newest + g.span + 1) * g.bucket_ms);
    EXPECT_EQ(r.retry_after_ms, end_ms - 10'000) << newest;
    EXPECT_EQ(r.reset_after_ms, end_ms - 10'000) << newest;
  }
}

TEST(LimiterCoreTest, IdleKeysAreReclaimedAndFullTableSaysOverCapacity) {
  LimiterCore core({.max_keys = 2});
  EXPECT_TRUE(core.Check(kRequest.Limit(5).WindowMs(1000).User("a"), AtMs(0)).allowed);
  EXPECT_TRUE(core.Check(kRequest.Limit(5).WindowMs(1000).User("b"), AtMs(0)).allowed);
  CheckResult full = core.Check(kRequest.Limit(5).WindowMs(1000).User("c"), AtMs(10));
  EXPECT_EQ(full.status, Status::kOverCapacity);
  EXPECT_FALSE(full.allowed);
  EXPECT_EQ(core.Sweep(AtMs(5000)), 2u);
  EXPECT_EQ(core.store().size(), 0u);
  EXPECT_TRUE(core.Check(kRequest.Limit(5).WindowMs(1000).User("c"), AtMs(5000)).allowed);
}

TEST(LimiterFacadeTest, ConcurrentCallersOnOneKeyAdmitExactlyTheLimit) {
  Limiter limiter(LimiterOptions{});
  constexpr int kThreads = 4, kPerThread = 5000;
  constexpr uint64_t kLimit = 7777;
  std::atomic<uint64_t> admitted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        CheckRequest req{
            static_cast<uint64_t>(t * kPerThread + i + 1), "hot", "/k", kLimit, 60'000, 1};
        // Each thread's clock is a little behind or ahead of the others'.
        CheckResult r = limiter.Check(req, AtMs(1'000'000 + i / 10 + t));
        if (r.allowed) admitted.fetch_add(1);
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(admitted.load(), kLimit);
  LimiterStats stats = limiter.GetStats();
  EXPECT_EQ(stats.checks, static_cast<uint64_t>(kThreads * kPerThread));
  EXPECT_EQ(stats.allowed, kLimit);
  EXPECT_EQ(stats.live_keys, 1u);
}

TEST(LimiterFacadeTest, InvalidRequestsAreCountedAndSweepsVisitEveryShard) {
  Limiter limiter(LimiterOptions{.shards = 4});
  EXPECT_EQ(limiter.Check(CheckRequest{1, "", "/e", 1, 1000, 1}, AtMs(0)).status,
            Status::kInvalidArgument);
  for (int i = 0; i < 100; ++i) {
    limiter.Check(CheckRequest{0, "u" + std::to_string(i), "/e", 1, 1000, 1}, AtMs(0));
  }
  EXPECT_EQ(limiter.GetStats().live_keys, 100u);
  for (size_t s = 0; s < limiter.shard_count(); ++s) limiter.SweepOneShard(AtMs(10'000));
  LimiterStats stats = limiter.GetStats();
  EXPECT_EQ(stats.live_keys, 0u);
  EXPECT_EQ(stats.keys_reclaimed, 100u);
  EXPECT_EQ(stats.invalid, 1u);
}

}  // namespace
}  // namespace tally::core

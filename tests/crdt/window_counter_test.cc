// Property tests of the windowed G-Counter: join is a semilattice join on
// random states, and merging never loses a count that is still live.
#include "crdt/window_counter.h"

#include <gtest/gtest.h>

#include <random>
#include <vector>

namespace tally::crdt {
namespace {

class RandomCounters {
 public:
  explicit RandomCounters(uint64_t seed) : rng_(seed) {}

  Geometry RandomGeometry() {
    uint64_t window = std::uniform_int_distribution<uint64_t>(1, 5000)(rng_);
    uint32_t buckets = std::uniform_int_distribution<uint32_t>(1, 30)(rng_);
    return GeometryFor(window, buckets);
  }

  // A counter built by a random mix of local adds and remote merges, around
  // bucket `base` (states that overlap, lag and lead each other).
  WindowCounter Make(const Geometry& g, int64_t base) {
    WindowCounter c(g);
    int ops = std::uniform_int_distribution<int>(0, 40)(rng_);
    int64_t spread = 3 * static_cast<int64_t>(g.ring());
    for (int i = 0; i < ops; ++i) {
      SlotIndex slot = std::uniform_int_distribution<SlotIndex>(0, 4)(rng_);
      int64_t bucket = base + std::uniform_int_distribution<int64_t>(-spread, spread)(rng_);
      uint32_t n = std::uniform_int_distribution<uint32_t>(1, 1000)(rng_);
      if (rng_() % 2 == 0) {
        c.Add(slot, bucket, n);
      } else {
        c.MergeBucket(slot, bucket, n);
      }
    }
    return c;
  }

  std::mt19937_64& rng() { return rng_; }

 private:
  std::mt19937_64 rng_;
};

WindowCounter Joined(const WindowCounter& a, const WindowCounter& b) {
  WindowCounter r = a.Clone();
  r.Join(b);
  return r;
}

TEST(GeometryTest, SpanCoversTheWindowAndNeverExceedsBucketsPerWindow) {
  for (uint64_t window : {1ull, 2ull, 7ull, 19ull, 999ull, 1000ull, 1001ull, 60000ull, 86400000ull}) {
    for (uint32_t buckets : {1u, 2u, 3u, 10u, 20u, 64u, 1000u}) {
      Geometry g = GeometryFor(window, buckets);
      EXPECT_GE(g.bucket_ms, 1);
      EXPECT_LE(g.span, buckets);
      EXPECT_GE(static_cast<uint64_t>(g.span) * g.bucket_ms, window) << window << "/" << buckets;
      EXPECT_LT(static_cast<uint64_t>(g.span - 1) * g.bucket_ms, window) << window << "/" << buckets;
    }
  }
}

TEST(GeometryTest, BucketOfHandlesNegativeTimes) {
  Geometry g{10, 3};
  EXPECT_EQ(BucketOf(0, g), 0);
  EXPECT_EQ(BucketOf(9, g), 0);
  EXPECT_EQ(BucketOf(10, g), 1);
  EXPECT_EQ(BucketOf(-1, g), -1);
  EXPECT_EQ(BucketOf(-10, g), -1);
  EXPECT_EQ(BucketOf(-11, g), -2);
}

TEST(WindowCounterTest, AddSumAndExpiry) {
  Geometry g{100, 10};  // 1 s window
  WindowCounter c(g);
  EXPECT_EQ(c.Sum(50), 0u);
  c.Add(0, 50, 3);
  c.Add(1, 52, 4);
  EXPECT_EQ(c.Sum(52), 7u);
  EXPECT_EQ(c.Sum(60), 7u);  // 50 is still in 60 - 10 .. 60
  EXPECT_EQ(c.Sum(61), 4u);  // 50 fell out
  EXPECT_EQ(c.Sum(63), 0u);
  EXPECT_FALSE(c.Expired(62));
  EXPECT_TRUE(c.Expired(63));
}

TEST(WindowCounterTest, AddingFarAheadClearsTheRing) {
  Geometry g{10, 4};
  WindowCounter c(g);
  c.Add(0, 100, 5);
  c.Add(0, 1000, 1);
  EXPECT_EQ(c.count(0, 100), 0u);
  EXPECT_EQ(c.Sum(1000), 1u);
}

TEST(WindowCounterTest, AddBehindTheRingIsCountedInTheOldestBucket) {
  Geometry g{10, 4};
  WindowCounter c(g);
  c.Add(0, 100, 1);
  c.Add(0, 50, 2);  // time went back by more than a window
  EXPECT_EQ(c.count(0, 96), 2u);
  EXPECT_EQ(c.Sum(100), 3u);
}

TEST(WindowCounterTest, FirstFittingBucketAndLastNonEmpty) {
  Geometry g{100, 10};
  WindowCounter c(g);
  c.Add(0, 10, 5);
  c.Add(0, 12, 5);
  // limit 10: full at bucket 12; one more hit fits when bucket 10 expires, at 21.
  EXPECT_EQ(c.FirstFittingBucket(12, 10, 1), std::optional<int64_t>(21));
  // 6 hits need bucket 12 gone too: at 23.
  EXPECT_EQ(c.FirstFittingBucket(12, 10, 6), std::optional<int64_t>(23));
  EXPECT_EQ(c.FirstFittingBucket(12, 10, 11), std::nullopt);
  EXPECT_EQ(c.FirstFittingBucket(12, 20, 10), std::optional<int64_t>(12));
  EXPECT_EQ(c.LastNonEmptyBucket(12), std::optional<int64_t>(12));
  EXPECT_EQ(c.LastNonEmptyBucket(23), std::nullopt);
}

TEST(WindowCounterTest, RowsStaySortedAndCloneIsDeep) {
  Geometry g{10, 3};
  WindowCounter c(g);
  c.Add(7, 5, 1);
  c.Add(2, 5, 1);
  c.Add(4, 5, 1);
  ASSERT_EQ(c.row_count(), 3u);
  EXPECT_EQ(c.row_slot(0), 2u);
  EXPECT_EQ(c.row_slot(1), 4u);
  EXPECT_EQ(c.row_slot(2), 7u);
  WindowCounter d = c.Clone();
  d.Add(2, 5, 10);
  EXPECT_EQ(c.CountOfSlot(2, 5), 1u);
  EXPECT_EQ(d.CountOfSlot(2, 5), 11u);
}

constexpr int kPropertyTrials = 3000;

TEST(WindowCounterPropertyTest, JoinIsCommutative) {
  RandomCounters gen(1);
  for (int t = 0; t < kPropertyTrials; ++t) {
    Geometry g = gen.RandomGeometry();
    int64_t base = std::uniform_int_distribution<int64_t>(-50, 1000)(gen.rng());
    WindowCounter a = gen.Make(g, base), b = gen.Make(g, base + (t % 7) - 3);
    EXPECT_TRUE(Joined(a, b).SameState(Joined(b, a))) << "trial " << t;
  }
}

TEST(WindowCounterPropertyTest, JoinIsAssociative) {
  RandomCounters gen(2);
  for (int t = 0; t < kPropertyTrials; ++t) {
    Geometry g = gen.RandomGeometry();
    int64_t base = std::uniform_int_distribution<int64_t>(0, 1000)(gen.rng());
    int64_t drift = static_cast<int64_t>(g.ring());
    WindowCounter a = gen.Make(g, base), b = gen.Make(g, base + drift),
                  c = gen.Make(g, base - drift);
    EXPECT_TRUE(Joined(Joined(a, b), c).SameState(Joined(a, Joined(b, c)))) << "trial " << t;
  }
}

TEST(WindowCounterPropertyTest, JoinIsIdempotent) {
  RandomCounters gen(3);
  for (int t = 0; t < kPropertyTrials; ++t) {
    Geometry g = gen.RandomGeometry();
    WindowCounter a = gen.Make(g, 500);
    WindowCounter twice = Joined(a, a);
    EXPECT_TRUE(twice.SameState(a)) << "trial " << t;
    WindowCounter b = gen.Make(g, 501);
    WindowCounter ab = Joined(a, b);
    EXPECT_TRUE(Joined(ab, b).SameState(ab)) << "trial " << t;
    EXPECT_FALSE(ab.Clone().Join(b)) << "a repeated join reports no change, trial " << t;
  }
}

TEST(WindowCounterPropertyTest, MergedCounterNeverReadsLessThanEitherInput) {
  RandomCounters gen(4);
  for (int t = 0; t < kPropertyTrials; ++t) {
    Geometry g = gen.RandomGeometry();
    WindowCounter a = gen.Make(g, 300), b = gen.Make(g, 300 + (t % 11) - 5);
    WindowCounter ab = Joined(a, b);
    int64_t newest = std::max(a.newest_bucket(), b.newest_bucket());
    // Read at every bucket from the newest state onwards, through expiry.
    for (int64_t now = newest; now <= newest + static_cast<int64_t>(g.ring()) + 1; ++now) {
      EXPECT_GE(ab.Sum(now), a.Sum(now)) << "trial " << t << " now " << now;
      EXPECT_GE(ab.Sum(now), b.Sum(now)) << "trial " << t << " now " << now;
      // Per slot too: a replica never loses what another node admitted.
      for (size_t r = 0; r < a.row_count(); ++r) {
        for (int64_t k = now - g.span; k <= now; ++k) {
          EXPECT_GE(ab.CountOfSlot(a.row_slot(r), k), a.count(r, k));
        }
      }
    }
  }
}

TEST(WindowCounterPropertyTest, ReplicasConvergeWhateverTheDeliveryOrder) {
  // Each of 4 replicas applies the same set of states in its own random order,
  // with duplicates: all end in the same state.
  RandomCounters gen(5);
  for (int t = 0; t < 300; ++t) {
    Geometry g = gen.RandomGeometry();
    std::vector<WindowCounter> updates;
    for (int i = 0; i < 6; ++i) updates.push_back(gen.Make(g, 200 + i));
    std::vector<WindowCounter> replicas;
    for (int r = 0; r < 4; ++r) {
      std::vector<size_t> order;
      for (size_t i = 0; i < updates.size(); ++i) order.insert(order.end(), {i, i});
      std::shuffle(order.begin(), order.end(), gen.rng());
      WindowCounter state(g);
      for (size_t i : order) state.Join(updates[i]);
      replicas.push_back(std::move(state));
    }
    for (int r = 1; r < 4; ++r) EXPECT_TRUE(replicas[r].SameState(replicas[0])) << "trial " << t;
  }
}

}  // namespace
}  // namespace tally::crdt

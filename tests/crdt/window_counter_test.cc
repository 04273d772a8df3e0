// Property tests of the windowed G-Counter: join is a semilattice join on
// random states, and merging never loses a count that is still live.
#include "crdt/window_counter.h"

#include <gtest/gtest.h>

#include <random>
#include <set>
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
  for (uint64_t window :
       {1ull, 2ull, 7ull, 19ull, 999ull, 1000ull, 1001ull, 60000ull, 86400000ull}) {
    for (uint32_t buckets : {1u, 2u, 3u, 10u, 20u, 64u, 1000u}) {
      Geometry g = GeometryFor(window, buckets);
      EXPECT_GE(g.bucket_ms, 1);
      EXPECT_LE(g.span, buckets);
      EXPECT_GE(static_cast<uint64_t>(g.span) * g.bucket_ms, window) << window << "/" << buckets;
      EXPECT_LT(static_cast<uint64_t>(g.span - 1) * g.bucket_ms, window)
          << window << "/" << buckets;
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

// A remote bucket index is a number in a peer's message: no value of it may
// make an operation loop, overflow or wipe live counts (issue 9: one
// replicate with newestBucket = 2^63 - 1 looped in AdvanceTo forever).
TEST(WindowCounterTest, BucketsOutsideTheDomainAreIgnoredInBoundedWork) {
  const Geometry g{60'000, 10};
  const int64_t now = 28'333'333;  // ~ 2023 in minutes
  for (int64_t far : {INT64_MAX, INT64_MAX - 1, INT64_MIN, INT64_MIN + 1, INT64_MIN / 2,
                      INT64_MAX / 2, MaxBucket(g) + 1, -MaxBucket(g) - 1}) {
    WindowCounter c(g);
    c.Add(0, now, 3);
    c.MergeBucket(1, far, 7);
    EXPECT_EQ(c.newest_bucket(), now) << far;
    EXPECT_EQ(c.Sum(now), 3u) << far;
    EXPECT_EQ(c.row_count(), 1u) << far;
    WindowCounter empty(g);
    empty.MergeBucket(1, far, 7);
    EXPECT_EQ(empty.row_count(), 0u) << far;
    EXPECT_TRUE(empty.Expired(now)) << far;
  }
}

TEST(WindowCounterTest, ArithmeticAtTheEdgesOfTheDomainDoesNotOverflow) {
  for (const Geometry g :
       {Geometry{1, 1}, Geometry{1, 1000}, Geometry{4'294'967, 1000}, Geometry{4'294'967'295, 1}}) {
    for (int64_t edge : {MaxBucket(g), -MaxBucket(g)}) {
      WindowCounter c(g);
      c.MergeBucket(0, edge, 5);
      EXPECT_EQ(c.newest_bucket(), edge);
      EXPECT_EQ(c.Sum(edge), 5u);
      EXPECT_FALSE(c.Expired(edge));
      EXPECT_TRUE(c.Expired(edge + static_cast<int64_t>(g.span) + 1));
      auto fits = c.FirstFittingBucket(edge, 5, 1);
      ASSERT_TRUE(fits.has_value());
      EXPECT_EQ(*fits, edge + static_cast<int64_t>(g.span) + 1);
      // Its start in ms fits in an int64 (LimiterCore multiplies it out).
      EXPECT_LE(*fits, INT64_MAX / g.bucket_ms);
      EXPECT_EQ(c.LastNonEmptyBucket(edge), std::optional<int64_t>(edge));
      // Joining a state from the far other end moves the ring in bounded work.
      WindowCounter other(g);
      other.MergeBucket(1, -edge, 2);
      WindowCounter joined = c.Clone();
      joined.Join(other);
      EXPECT_EQ(joined.newest_bucket(), std::max(edge, -edge));
    }
  }
}

TEST(WindowCounterTest, AddClampsItsBucketIntoTheDomain) {
  const Geometry g{1000, 10};
  WindowCounter c(g);
  c.Add(0, INT64_MAX, 1);
  EXPECT_EQ(c.newest_bucket(), MaxBucket(g));
  EXPECT_EQ(c.Sum(MaxBucket(g)), 1u);
}

TEST(WindowCounterTest, PullBackMovesCountsAheadOfABucketIntoIt) {
  const Geometry g{10, 4};  // ring of 5
  WindowCounter c(g);
  c.Add(0, 100, 1);
  c.Add(0, 102, 2);
  c.Add(1, 104, 4);
  // Within the ring: 103 and 104 move into 102; 100 .. 102 stay.
  WindowCounter near = c.Clone();
  EXPECT_TRUE(near.PullBack(102));
  EXPECT_EQ(near.newest_bucket(), 102);
  EXPECT_EQ(near.CountOfSlot(0, 100), 1u);
  EXPECT_EQ(near.CountOfSlot(0, 102), 2u);
  EXPECT_EQ(near.CountOfSlot(1, 102), 4u);
  EXPECT_EQ(near.Sum(102), 7u);
  EXPECT_EQ(near.Sum(105), 6u);  // 100 expired, 102 counts a full window on
  EXPECT_EQ(near.Sum(107), 0u);
  // Past the ring: everything lands in the one bucket, nothing else remains.
  WindowCounter far = c.Clone();
  EXPECT_TRUE(far.PullBack(50));
  EXPECT_EQ(far.newest_bucket(), 50);
  EXPECT_EQ(far.Sum(50), 7u);
  EXPECT_EQ(far.CountOfSlot(0, 50), 3u);
  EXPECT_EQ(far.CountOfSlot(1, 50), 4u);
  for (int64_t k = 46; k < 50; ++k) EXPECT_EQ(far.CountOfSlot(0, k), 0u) << k;
  EXPECT_EQ(far.Sum(55), 0u);
  // Nothing ahead: no change.
  WindowCounter same = c.Clone();
  EXPECT_FALSE(same.PullBack(104));
  EXPECT_FALSE(same.PullBack(200));
  EXPECT_TRUE(same.SameState(c));
}

TEST(WindowCounterTest, MergesNeverTakeACounterPastTheRowCap) {
  const Geometry g{100, 10};
  WindowCounter c(g);
  for (SlotIndex s = 0; s < kMaxMergedRows + 20; ++s) c.MergeBucket(s, 50, 1);
  EXPECT_EQ(c.row_count(), kMaxMergedRows);
  EXPECT_EQ(c.Sum(50), kMaxMergedRows);
  // A join past the cap keeps the rows it already has and refuses the rest.
  WindowCounter remote(g);
  for (SlotIndex s = 1000; s < 1010; ++s) remote.MergeBucket(s, 51, 2);
  size_t refused = 0;
  c.Join(remote, &refused);
  EXPECT_EQ(refused, 10u);
  EXPECT_EQ(c.row_count(), kMaxMergedRows);
  // Rows whose counts all expired make room again.
  WindowCounter later(g);
  for (SlotIndex s = 2000; s < 2005; ++s) later.MergeBucket(s, 50 + 11 + 5, 4);
  refused = 0;
  c.Join(later, &refused);
  EXPECT_EQ(refused, 0u);
  EXPECT_EQ(c.row_count(), 5u);
  EXPECT_EQ(c.Sum(66), 20u);
  // A local Add always finds room (its slot is one, the cap is on merges).
  WindowCounter full(g);
  for (SlotIndex s = 0; s < kMaxMergedRows; ++s) full.MergeBucket(s, 50, 1);
  full.Add(99'999, 50, 1);
  EXPECT_EQ(full.row_count(), kMaxMergedRows + 1);
  EXPECT_EQ(full.Sum(50), kMaxMergedRows + 1u);
}

// GeometryValid accepts exactly the geometries GeometryFor produces for some
// window (brute force over small windows).
TEST(GeometryTest, ValidGeometriesAreExactlyThoseOfSomeWindow) {
  for (uint32_t buckets : {1u, 2u, 3u, 7u, 10u}) {
    std::set<std::pair<int64_t, uint32_t>> produced;
    const uint64_t max_window = 150;
    for (uint64_t w = 1; w <= max_window; ++w) {
      Geometry g = GeometryFor(w, buckets);
      produced.insert({g.bucket_ms, g.span});
    }
    for (int64_t b = 0; b <= 160; ++b) {
      for (uint32_t s = 0; s <= buckets + 2; ++s) {
        const bool expected = produced.contains({b, s});
        EXPECT_EQ(GeometryValid(Geometry{b, s}, buckets, max_window), expected)
            << "bucket_ms " << b << " span " << s << " B " << buckets;
      }
    }
  }
  EXPECT_TRUE(
      GeometryValid(GeometryFor(31ull * 24 * 3600 * 1000, 1000), 1000, 31ull * 24 * 3600 * 1000));
  EXPECT_FALSE(GeometryValid(Geometry{-5, 3}, 10, 1000));
  EXPECT_FALSE(GeometryValid(Geometry{INT64_MAX, 3}, 10, UINT64_MAX));
}

TEST(WindowCounterPropertyTest, FromStateEqualsMergingEveryCell) {
  RandomCounters gen(6);
  for (int t = 0; t < 1000; ++t) {
    Geometry g = gen.RandomGeometry();
    const int64_t newest = std::uniform_int_distribution<int64_t>(-100, 100'000)(gen.rng());
    const int rows = std::uniform_int_distribution<int>(0, 6)(gen.rng());
    std::vector<std::vector<uint32_t>> counts;
    std::vector<WindowCounter::StateRow> state;
    WindowCounter expected(g);
    for (int r = 0; r < rows; ++r) {
      counts.emplace_back(g.ring());
      for (uint32_t& n : counts.back()) n = gen.rng()() % 3 == 0 ? gen.rng()() % 100 : 0;
    }
    for (int r = 0; r < rows; ++r) {
      const SlotIndex slot = static_cast<SlotIndex>(gen.rng()() % 4);  // duplicates too
      state.push_back({slot, counts[r].data()});
      for (uint32_t k = 0; k < g.ring(); ++k) {
        expected.MergeBucket(slot, newest - g.span + k, counts[r][k]);
      }
    }
    WindowCounter built = WindowCounter::FromState(g, newest, state);
    EXPECT_TRUE(built.SameState(expected)) << "trial " << t;
    if (expected.row_count() > 0) {
      EXPECT_EQ(built.newest_bucket(), expected.newest_bucket()) << "trial " << t;
      EXPECT_EQ(built.Sum(newest), expected.Sum(newest)) << "trial " << t;
    }
    // Joining it into a random counter equals joining the cell-by-cell one.
    WindowCounter base = gen.Make(g, newest);
    EXPECT_TRUE(Joined(base, built).SameState(Joined(base, expected))) << "trial " << t;
  }
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

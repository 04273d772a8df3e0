// Oracle test of the decision: random request streams checked against a
// brute-force log of admitted timestamps.
//
// Two properties, every request:
//   1. Never exceed: for every admitted hit at time t, the admitted hits in
//      (t - window, t] are <= limit (so every sliding interval of the window's
//      length holds at most `limit`).
//   2. Exactly the documented rule, no more conservative: the request is
//      admitted iff (admitted hits at times >= start of bucket(t) - span) + hits
//      <= limit. With it, retry_after_ms and reset_after_ms are checked to be
//      the exact first moments at which the request fits / nothing counts.
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "crdt/window_counter.h"
#include "daemon/core/limiter_core.h"
#include "tests/support/times.h"

namespace tally::core {
namespace {

using ::tally::testing::AtWallMs;

struct Admitted {
  int64_t time_ms;
  uint64_t hits;
};

// Brute-force model of one key.
struct KeyLog {
  std::vector<Admitted> admitted;

  uint64_t HitsSince(int64_t from_ms) const {  // times >= from_ms
    uint64_t sum = 0;
    for (const auto& a : admitted) {
      if (a.time_ms >= from_ms) sum += a.hits;
    }
    return sum;
  }
  uint64_t MaxInAnyWindow(int64_t window_ms) const {
    uint64_t worst = 0;
    for (const auto& end : admitted) {
      uint64_t sum = 0;
      for (const auto& a : admitted) {
        if (a.time_ms > end.time_ms - window_ms && a.time_ms <= end.time_ms) sum += a.hits;
      }
      worst = std::max(worst, sum);
    }
    return worst;
  }
};

struct Scenario {
  uint64_t window_ms;
  uint64_t limit;
  uint32_t buckets_per_window;
};

class DecisionOracleTest : public ::testing::TestWithParam<uint64_t> {};

TEST_P(DecisionOracleTest, RandomStreamsNeverExceedAndFollowTheBucketRule) {
  const uint64_t seed = GetParam();
  std::mt19937_64 rng(seed);
  const uint32_t buckets = std::uniform_int_distribution<uint32_t>(1, 25)(rng);
  LimiterCore core({.buckets_per_window = buckets, .max_keys = 1000, .max_dedup_entries = 0});

  // A few keys with different windows and limits, sharing one clock.
  std::vector<Scenario> keys;
  for (int k = 0; k < 4; ++k) {
    uint64_t window = std::uniform_int_distribution<uint64_t>(1, 3000)(rng);
    uint64_t limit = std::uniform_int_distribution<uint64_t>(0, 30)(rng);
    keys.push_back({window, limit, buckets});
  }
  std::vector<KeyLog> logs(keys.size());
  int64_t now_ms = std::uniform_int_distribution<int64_t>(0, 1'000'000)(rng);

  for (int step = 0; step < 4000; ++step) {
    const size_t k = std::uniform_int_distribution<size_t>(0, keys.size() - 1)(rng);
    const Scenario& s = keys[k];
    const crdt::Geometry g = crdt::GeometryFor(s.window_ms, buckets);
    // Time moves in every way that matters: not at all, a little, exactly to
    // the next bucket or window boundary, or a long idle gap.
    switch (std::uniform_int_distribution<int>(0, 6)(rng)) {
      case 0: break;
      case 1: now_ms += std::uniform_int_distribution<int64_t>(1, 3)(rng); break;
      case 2: now_ms = (now_ms / g.bucket_ms + 1) * g.bucket_ms; break;
      case 3: now_ms = (now_ms / g.bucket_ms + 1) * g.bucket_ms - 1; break;
      case 4: now_ms += static_cast<int64_t>(s.window_ms); break;
      case 5: now_ms += std::uniform_int_distribution<int64_t>(0, 2 * g.bucket_ms)(rng); break;
      case 6:
        if (rng() % 20 == 0) now_ms += 50 * static_cast<int64_t>(s.window_ms);
        break;
    }
    CheckRequest req;
    req.user_id = "user" + std::to_string(k);
    req.endpoint = "/e";
    req.limit = s.limit;
    req.window_ms = s.window_ms;
    req.hits = std::uniform_int_distribution<uint64_t>(0, 4)(rng);
    if (rng() % 50 == 0) req.hits = s.limit + 1;
    CheckResult r = core.Check(req, AtWallMs(now_ms));
    ASSERT_EQ(r.status, Status::kOk);

    const int64_t bucket = crdt::BucketOf(now_ms, g);
    const int64_t counted_from = (bucket - static_cast<int64_t>(g.span)) * g.bucket_ms;
    const uint64_t used = logs[k].HitsSince(counted_from);
    const bool expect_allowed = used + req.hits <= s.limit;
    ASSERT_EQ(r.allowed, expect_allowed)
        << "seed " << seed << " step " << step << " t=" << now_ms << " used=" << used;
    if (r.allowed && req.hits > 0) logs[k].admitted.push_back({now_ms, req.hits});
    const uint64_t used_after = used + (r.allowed ? req.hits : 0);
    EXPECT_EQ(r.remaining, used_after >= s.limit ? 0 : s.limit - used_after);

    // retry_after_ms: the first later moment this request fits, exactly.
    if (!r.allowed) {
      if (req.hits > s.limit) {
        EXPECT_EQ(r.retry_after_ms, kNeverFits);
      } else {
        auto fits_at = [&](int64_t t) {
          int64_t from = (crdt::BucketOf(t, g) - static_cast<int64_t>(g.span)) * g.bucket_ms;
          return logs[k].HitsSince(from) + req.hits <= s.limit;
        };
        ASSERT_GT(r.retry_after_ms, 0u);
        EXPECT_TRUE(fits_at(now_ms + static_cast<int64_t>(r.retry_after_ms))) << "seed " << seed;
        EXPECT_FALSE(fits_at(now_ms + static_cast<int64_t>(r.retry_after_ms) - 1))
            << "seed " << seed;
      }
    } else {
      EXPECT_EQ(r.retry_after_ms, 0u);
    }
    // reset_after_ms: the first moment at which nothing is counted any more.
    auto counted_at = [&](int64_t t) {
      int64_t from = (crdt::BucketOf(t, g) - static_cast<int64_t>(g.span)) * g.bucket_ms;
      return logs[k].HitsSince(from);
    };
    if (used_after == 0) {
      EXPECT_EQ(r.reset_after_ms, 0u);
    } else {
      EXPECT_EQ(counted_at(now_ms + static_cast<int64_t>(r.reset_after_ms)), 0u);
      EXPECT_GT(counted_at(now_ms + static_cast<int64_t>(r.reset_after_ms) - 1), 0u);
    }
  }
  // The headline guarantee, on the whole log of every key.
  for (size_t k = 0; k < keys.size(); ++k) {
    EXPECT_LE(logs[k].MaxInAnyWindow(static_cast<int64_t>(keys[k].window_ms)), keys[k].limit)
        << "seed " << seed << " key " << k;
  }
}

INSTANTIATE_TEST_SUITE_P(Seeds, DecisionOracleTest, ::testing::Range<uint64_t>(1, 41));

// The price of counting whole buckets: at sustained saturation a key admits
// at least limit * window / (window + 2 * bucket_ms) per window on average.
// Measures the admitted fraction for a steady client sending 1 hit per ms.
TEST(DecisionAccuracyTest, SaturatedKeyAdmitsWithinOneBucketOfTheLimit) {
  for (uint32_t buckets : {10u, 20u, 60u}) {
    LimiterCore core({.buckets_per_window = buckets, .max_keys = 10, .max_dedup_entries = 0});
    const uint64_t window_ms = 1000, limit = 100;
    const crdt::Geometry g = crdt::GeometryFor(window_ms, buckets);
    uint64_t admitted = 0;
    const int64_t start = 1'000'000, duration_ms = 100'000;
    KeyLog log;
    for (int64_t t = start; t < start + duration_ms; ++t) {
      CheckRequest req{0, "u", "e", limit, window_ms, 1};
      if (core.Check(req, AtWallMs(t)).allowed) {
        ++admitted;
        log.admitted.push_back({t, 1});
      }
    }
    const double per_window = static_cast<double>(admitted) * window_ms / duration_ms;
    const double floor = static_cast<double>(limit) * window_ms /
                         static_cast<double>(window_ms + 2 * g.bucket_ms);
    EXPECT_LE(per_window, static_cast<double>(limit)) << buckets;
    EXPECT_GE(per_window, floor) << buckets;
    std::printf("buckets_per_window=%u admitted %.2f of %lu per window (%.1f%% of limit)\n",
                buckets, per_window, limit, 100.0 * per_window / limit);
  }
}

}  // namespace
}  // namespace tally::core

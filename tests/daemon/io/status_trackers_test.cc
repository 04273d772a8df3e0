// The status page's trackers (daemon/io/status_trackers.h): the rate
// history's intervals and bound, the busiest keys' counting, replacement,
// generations and sampling, and the membership event ring.
#include "daemon/io/status_trackers.h"

#include <gtest/gtest.h>

#include <chrono>
#include <string>
#include <vector>

namespace tally::io {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;
using Clock = std::chrono::steady_clock;

TEST(RateHistoryTest, FirstRecordIsTheBaselineThenOneIntervalPerRecord) {
  RateHistory h(/*capacity=*/10);
  h.Record(1'000'000, 5'000, 100, 10);  // totals before the history starts
  EXPECT_TRUE(h.Samples().empty());
  h.Record(1'001'000, 6'000, 130, 12);
  h.Record(1'002'500, 7'500, 130, 12);
  const std::vector<RateSample> s = h.Samples();
  ASSERT_EQ(s.size(), 2u);
  EXPECT_EQ(s[0].end_wall_ms, 1'001'000);
  EXPECT_EQ(s[0].duration_ms, 1'000);
  EXPECT_EQ(s[0].checks, 30u);
  EXPECT_EQ(s[0].denied, 2u);
  EXPECT_EQ(s[1].duration_ms, 1'500);  // a late timer: the interval says how long
  EXPECT_EQ(s[1].checks, 0u);
}

TEST(RateHistoryTest, KeepsTheNewestIntervalsAndSkipsOnesThatDidNotMoveForward) {
  RateHistory h(/*capacity=*/3);
  for (int i = 0; i <= 5; ++i) h.Record(i * 1000, i * 1000, static_cast<uint64_t>(i * 10), 0);
  std::vector<RateSample> s = h.Samples();
  ASSERT_EQ(s.size(), 3u);
  EXPECT_EQ(s.front().end_wall_ms, 3000);
  EXPECT_EQ(s.back().end_wall_ms, 5000);
  h.Record(6000, 5000, 99, 0);  // the monotonic clock did not move: no interval
  EXPECT_EQ(h.Samples().size(), 3u);
  h.Record(7000, 7000, 10, 0);  // totals went down (impossible for counters): skipped
  EXPECT_EQ(h.Samples().back().end_wall_ms, 5000);
}

CheckRequestRef Key(std::string_view user, uint64_t hits = 1, uint64_t window_ms = 60'000) {
  CheckRequestRef r;
  r.user_id = user;
  r.endpoint = "api";
  r.limit = 100;
  r.window_ms = window_ms;
  r.hits = hits;
  return r;
}

TEST(BusiestKeysTest, CountsEverySampledCheckHeaviestFirst) {
  BusiestKeys keys(/*sample_period=*/1, /*capacity=*/8, seconds(60));
  const Clock::time_point t0 = Clock::now();
  const std::vector<CheckRequestRef> batch = {Key("alice", 3), Key("bob"), Key("alice", 3),
                                              Key("alice", 3, 1000)};
  keys.Sample(batch, t0);
  keys.Sample(std::vector<CheckRequestRef>{Key("bob")}, t0);
  keys.Sample(std::vector<CheckRequestRef>{Key("bob")}, t0);
  const std::vector<KeyRate> top = keys.Top(10, t0 + seconds(10));
  ASSERT_EQ(top.size(), 3u);  // alice's 1 s window is a key of its own
  EXPECT_EQ(top[0].user_id, "bob");
  EXPECT_DOUBLE_EQ(top[0].checks_per_s, 0.3);  // 3 checks over 10 s
  EXPECT_EQ(top[1].user_id, "alice");
  EXPECT_EQ(top[1].window_ms, 60'000u);
  EXPECT_DOUBLE_EQ(top[1].checks_per_s, 0.2);
  EXPECT_DOUBLE_EQ(top[1].hits_per_s, 0.6);
  EXPECT_EQ(top[1].limit, 100u);
  EXPECT_EQ(top[2].window_ms, 1000u);
  EXPECT_EQ(keys.Top(1, t0 + seconds(10)).size(), 1u);
}

TEST(BusiestKeysTest, ANewKeyReplacesTheLightestWhenFull) {
  BusiestKeys keys(1, /*capacity=*/2, seconds(60));
  const Clock::time_point t0 = Clock::now();
  for (int i = 0; i < 5; ++i) keys.Sample(std::vector<CheckRequestRef>{Key("heavy")}, t0);
  keys.Sample(std::vector<CheckRequestRef>{Key("light")}, t0);
  keys.Sample(std::vector<CheckRequestRef>{Key("new")}, t0);  // takes light's place and count
  const std::vector<KeyRate> top = keys.Top(10, t0 + seconds(1));
  ASSERT_EQ(top.size(), 2u);
  EXPECT_EQ(top[0].user_id, "heavy");
  EXPECT_EQ(top[1].user_id, "new");
  EXPECT_DOUBLE_EQ(top[1].checks_per_s, 2.0);  // an overestimate, as Space-Saving gives
}

TEST(BusiestKeysTest, OldGenerationsAgeOut) {
  BusiestKeys keys(1, 8, seconds(60));
  const Clock::time_point t0 = Clock::now();
  keys.Sample(std::vector<CheckRequestRef>{Key("early")}, t0);
  keys.Sample(std::vector<CheckRequestRef>{Key("later")}, t0 + seconds(61));  // a new generation
  std::vector<KeyRate> top = keys.Top(10, t0 + seconds(70));
  ASSERT_EQ(top.size(), 2u);  // both generations count
  EXPECT_DOUBLE_EQ(top[0].checks_per_s, 1.0 / 70);
  // A generation later, only the newer one counts.
  top = keys.Top(10, t0 + seconds(125));
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].user_id, "later");
  // Two generations with nothing sampled: nothing is busy.
  EXPECT_TRUE(keys.Top(10, t0 + seconds(61 + 120)).empty());
  // A sample after a long pause drops both old generations.
  keys.Sample(std::vector<CheckRequestRef>{Key("fresh")}, t0 + seconds(400));
  top = keys.Top(10, t0 + seconds(401));
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].user_id, "fresh");
}

TEST(BusiestKeysTest, LongIdsAreCutForShowing) {
  BusiestKeys keys(1, 8, seconds(60));
  const std::string long_id(5000, 'x');
  const Clock::time_point t0 = Clock::now();
  keys.Sample(std::vector<CheckRequestRef>{Key(long_id)}, t0);
  const std::vector<KeyRate> top = keys.Top(10, t0);
  ASSERT_EQ(top.size(), 1u);
  EXPECT_EQ(top[0].user_id.size(), BusiestKeys::kMaxShownKeyBytes);
}

// Offer samples about one message in sample_period, and weighs each sampled
// check by sample_period: the estimate of a steady stream comes out near
// its true count.
TEST(BusiestKeysTest, OfferSamplesAboutOneMessageInThePeriod) {
  BusiestKeys keys(/*sample_period=*/16, 8, seconds(60));
  const std::vector<CheckRequestRef> one = {Key("steady")};
  const int kMessages = 32'000;
  const Clock::time_point start = Clock::now();
  for (int i = 0; i < kMessages; ++i) keys.Offer(one);
  // Top's rate is over at least one second since the first sample: take it
  // at exactly one second after `start`, so it times that second.
  const std::vector<KeyRate> top = keys.Top(1, start + seconds(1));
  ASSERT_EQ(top.size(), 1u);
  // 2000 samples expected; gaps are uniform on [1, 31], so the count's
  // standard deviation is about 2000 * 9 / 16 / sqrt(2000) ~ 25 samples
  // (400 checks): 10% is over 7 of them.
  EXPECT_NEAR(top[0].checks_per_s, kMessages, kMessages * 0.1);
}

TEST(MembershipEventLogTest, KeepsTheNewestFirstAndStampsTheTime) {
  MembershipEventLog log(/*capacity=*/2);
  log.Record({0, "n2", "joined", "", "alive", 0, 7});
  log.Record({5, "n2", "state", "alive", "suspect", 1, 7});
  log.Record({6, "n3", "forgotten", "dead", "", 2, 8});
  const std::vector<MembershipEvent> events = log.Recent();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].member, "n3");
  EXPECT_EQ(events[0].what, "forgotten");
  EXPECT_EQ(events[1].to_state, "suspect");
  EXPECT_EQ(log.total(), 3u);
  MembershipEventLog stamped;
  stamped.Record({0, "n1", "joined", "", "alive", 0, 1});
  EXPECT_GT(stamped.Recent().front().wall_ms, 1'600'000'000'000);  // after 2020
}

}  // namespace
}  // namespace tally::io

// The sliding-window checker of the fault tests, on hand-made records: it
// must accept what one correct decider admits, report any interval over
// its bound, and allow exactly one measured tail per fault.
#include "tests/cluster/request_log.h"

#include <gtest/gtest.h>

namespace tally::testing {
namespace {

RequestRecord Admitted(int64_t send_ms, int64_t latency_ms = 1, uint32_t key = 0) {
  RequestRecord r;
  r.key = key;
  r.send_us = send_ms * 1000;
  r.recv_us = (send_ms + latency_ms) * 1000;
  r.outcome = Outcome::kAllowed;
  return r;
}

RequestRecord Denied(int64_t send_ms) {
  RequestRecord r = Admitted(send_ms);
  r.outcome = Outcome::kDenied;
  return r;
}

WindowParams Params(uint64_t limit, int64_t window_ms) {
  WindowParams p;
  p.limit = limit;
  p.window_us = window_ms * 1000;
  p.bucket_us = window_ms * 100;
  p.tau_us = 210'000;
  return p;
}

TEST(SlidingWindowCheckerTest, OneCorrectDeciderPasses) {
  // Limit 10 per 1000 ms, one admitted every 100 ms (answered in 2 ms): an
  // interval of 1000 ms that starts at a send holds 11 sends, but the 11th
  // may have been decided after it ended, so it surely holds 10.
  std::vector<RequestRecord> log;
  for (int64_t t = 0; t < 5000; t += 100) log.push_back(Admitted(t, 2));
  for (int64_t t = 50; t < 5000; t += 100) log.push_back(Denied(t));
  WindowReport r = CheckSlidingWindow(log, 0, Params(10, 1000), {});
  EXPECT_TRUE(r.ok) << r.Describe();
  EXPECT_EQ(r.admitted_total, 50u);
  EXPECT_EQ(r.worst_admitted, 10u);
  EXPECT_EQ(r.worst_excess, 0u);
}

TEST(SlidingWindowCheckerTest, ReportsAnIntervalOverTheLimit) {
  std::vector<RequestRecord> log;
  for (int64_t t = 0; t < 1000; t += 50) log.push_back(Admitted(t));  // 20 in 1 s
  WindowReport r = CheckSlidingWindow(log, 0, Params(10, 1000), {});
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.violation_admitted, 20u);
  EXPECT_EQ(r.violation_bound, 10u);
  EXPECT_EQ(r.worst_excess, 10u);
}

TEST(SlidingWindowCheckerTest, IgnoresOtherKeysAndUncertainEdges) {
  std::vector<RequestRecord> log;
  for (int64_t t = 0; t < 1000; t += 50) log.push_back(Admitted(t, 1, /*key=*/1));
  // 10 admitted at 0..900 ms, and one whose answer took 2 s: it may have
  // been decided after the interval [0, 1000] ended, so it is not counted
  // there; any interval that surely holds it holds fewer of the others.
  for (int64_t t = 0; t < 1000; t += 100) log.push_back(Admitted(t));
  log.push_back(Admitted(10, 2000));
  WindowReport r = CheckSlidingWindow(log, 0, Params(10, 1000), {});
  EXPECT_TRUE(r.ok) << r.Describe();
  EXPECT_EQ(r.admitted_total, 11u);
}

TEST(SlidingWindowCheckerTest, AFaultAllowsOneMeasuredTailAndNoMore) {
  // Decider A admits 4 in its last 200 ms before a crash at 1000 ms (a
  // tail), decider B then admits the full limit of 10 again.
  std::vector<RequestRecord> log;
  for (int64_t t = 0; t < 600; t += 100) log.push_back(Admitted(t));     // 6
  for (int64_t t = 800; t < 1000; t += 50) log.push_back(Admitted(t));   // 4 in the tail
  for (int64_t t = 1100; t < 1600; t += 50) log.push_back(Admitted(t));  // 10 by B
  const WindowParams p = Params(10, 2000);
  std::vector<FaultSpan> faults = {{"crash", 1000'000, 1100'000, 0}};
  WindowReport without = CheckSlidingWindow(log, 0, p, {});
  EXPECT_FALSE(without.ok);
  // The tail is measured: the most requests that meet any 210 ms ending in
  // the fault's span [1000, 1100] ms: A's last 4 (denied requests count:
  // the key's request rate is what bounds a tail).
  WindowReport with = CheckSlidingWindow(log, 0, p, faults);
  ASSERT_EQ(with.tails.size(), 1u);
  EXPECT_EQ(with.tails[0], 4u);
  EXPECT_FALSE(with.ok) << "20 admitted in one window, bound 10 + 4: " << with.Describe();
  // B admitting 4 after the crash instead (as if it missed exactly A's
  // tail): the interval holds 14 <= 14.
  log.resize(log.size() - 6);
  WindowReport exact = CheckSlidingWindow(log, 0, p, faults);
  EXPECT_TRUE(exact.ok) << exact.Describe();
  // Denied requests in the tail raise it: two more requests at 960 and
  // 990 ms make the rate there 6 per 210 ms.
  log.push_back(Denied(960));
  log.push_back(Denied(990));
  WindowReport denser = CheckSlidingWindow(log, 0, p, faults);
  EXPECT_EQ(denser.tails[0], 6u);
  log.resize(log.size() - 2);
  // A fault far from the excess allows nothing there.
  WindowReport elsewhere = CheckSlidingWindow(log, 0, p, {{"later", 9000'000, 9100'000, 0}});
  EXPECT_FALSE(elsewhere.ok);
}

TEST(SlidingWindowCheckerTest, ClockTermIsTheHitsOfDeltaPlusABucket) {
  // Limit 10 per 1000 ms (bucket 100 ms). A decider 300 ms ahead re-admits
  // what was admitted in the oldest 400 ms of its window.
  std::vector<RequestRecord> log;
  for (int64_t t = 0; t < 1000; t += 100) log.push_back(Admitted(t));    // 10
  for (int64_t t = 1000; t < 1300; t += 75) log.push_back(Admitted(t));  // 4 early
  WindowParams p = Params(10, 1000);
  p.tau_us = 0;
  WindowReport r = CheckSlidingWindow(log, 0, p, {{"ahead", 1000'000, 1300'000, 300'000}});
  ASSERT_EQ(r.clocks.size(), 1u);
  EXPECT_GE(r.clocks[0], 4u);
  EXPECT_LE(r.clocks[0], 6u);  // 400 ms of 10 per second, plus the edge
  EXPECT_TRUE(r.ok) << r.Describe();
}

}  // namespace
}  // namespace tally::testing

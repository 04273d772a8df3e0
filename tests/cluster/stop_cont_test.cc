// SIGSTOP of a key's owner for longer than the suspicion timeout, then
// SIGCONT, with clients sending through the other members throughout
// (docs/DESIGN.md, "Failure and recovery: the bounds"; issue 9 item 7).
//
// A stopped process is the nastiest crash: it is declared dead, its keys
// move, and then it wakes up with everything it had, a backlog of stale
// datagrams, and a view in which it still owns its keys. What must hold:
//   * every client request gets a decision (no unanswered request);
//   * the stopped owner is declared dead within the detection bound; on
//     SIGCONT it refutes (same generation, higher incarnation), is alive
//     again everywhere, owns keys again and heads its keys' lists (hands
//     back);
//   * the sliding-window bound (request_log.h) holds for a key held at
//     its limit throughout, with one tail for the ownership change away
//     (the stop) and one for the change back (the return); the test keeps
//     the owner stopped for one more window after it is declared dead so
//     no interval of W holds both changes;
//   * nothing is lost: a key whose limit is never reached ends up counted,
//     through every node, as at least what clients saw admitted.
#include <gtest/gtest.h>
#include <signal.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/fault_util.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

TEST(ClusterStopContTest, OwnerStoppedPastSuspicionRefutesAndTakesItsKeysBack) {
  constexpr size_t kNodes = 4;
  constexpr uint64_t kWindowLimit = 100;
  constexpr uint64_t kWindowMs = 2000;
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(kNodes, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(20), &error)) << error;

  const std::string victim_id = "n3";
  TestNode& observer = cluster.node(0);
  TestNode* victim = &cluster.node(2);
  ASSERT_EQ(victim->id, victim_id);
  auto owned_by_victim = [&](const std::vector<std::string>& list) { return list[0] == victim_id; };
  // `window`: held at its limit the whole time (about 2x the limit is sent
  // per window). `total`: a limit never reached, to count every admission.
  const CheckRequest window =
      KeyWhere(observer, "stop-window", kWindowLimit, kWindowMs, owned_by_victim);
  const CheckRequest total = KeyWhere(observer, "stop-total", 1'000'000, 600'000, owned_by_victim);
  ASSERT_FALSE(window.user_id.empty());
  ASSERT_FALSE(total.user_id.empty());
  std::vector<TestNode*> survivors, all;
  std::vector<const TestNode*> entries;
  for (auto& n : cluster.nodes()) {
    all.push_back(n.get());
    if (n.get() == victim) continue;
    survivors.push_back(n.get());
    entries.push_back(n.get());
  }

  // 3 clients x one check per 15 ms, alternating keys: ~100 checks/s per key.
  RecordedLoad load(entries, {window, total}, milliseconds(15));
  load.Start();
  const int64_t window_us = static_cast<int64_t>(kWindowMs) * 1000;
  ASSERT_TRUE(PollUntil(seconds(30), [&] {
    return load.admitted(0) >= kWindowLimit && load.NowUs() > window_us + 500'000;
  })) << "the window key never reached its limit";

  std::optional<wire::MemberReport> before = MemberIn(observer, victim_id);
  ASSERT_TRUE(before.has_value());
  const int64_t stop_us = load.NowUs();
  ASSERT_TRUE(victim->process.Signal(SIGSTOP));
  std::string why;
  const milliseconds detect_bound = cluster.timings().DetectionBound(kNodes);
  const bool dead = PollUntil(
      detect_bound, [&] { return cluster.Converged(survivors, survivors, {victim_id}, &why); });
  const int64_t dead_us = load.NowUs();
  EXPECT_TRUE(dead) << why << " after " << (dead_us - stop_us) / 1000 << " ms (bound "
                    << detect_bound.count() << " ms)";
  // The fault's length, not a wait for a condition: stopped for one more
  // window, so the change away and the change back never share a window.
  std::this_thread::sleep_for(milliseconds(kWindowMs + 200));
  const int64_t cont_us = load.NowUs();
  ASSERT_TRUE(victim->process.Signal(SIGCONT));

  // Back: alive everywhere (same process: the generation it started with),
  // owning, and first on its keys' lists in every view.
  auto heads_its_keys = [&](std::string* why) {
    if (!cluster.Converged(all, all, {}, why)) return false;
    std::optional<wire::StatusReport> s = StatusOf(*victim);
    if (!s || !s->owning) {
      *why = victim_id + (s ? " not owning: " + s->not_owning_reason : " does not answer");
      return false;
    }
    for (TestNode* n : all) {
      for (const CheckRequest* k : {&window, &total}) {
        std::optional<wire::OwnerReport> o = OwnerOf(*n, *k);
        if (!o || o->preference_list.empty() || o->preference_list[0] != victim_id) {
          *why = n->id + " does not route " + k->user_id + " to " + victim_id;
          return false;
        }
      }
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(seconds(20), [&] { return heads_its_keys(&why); })) << why;
  const int64_t back_us = load.NowUs();
  std::optional<wire::MemberReport> after = MemberIn(observer, victim_id);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->generation, before->generation) << "the same process came back";
  EXPECT_GT(after->incarnation, before->incarnation) << "it refuted its death";
  {
    CheckRequest probe = total;
    probe.hits = 0;
    CheckResult r = CheckThrough(*victim, probe);
    EXPECT_EQ(r.status, Status::kOk) << "its own clients are answered again: " << r.error;
  }

  // Two more windows with the owner back, then stop the clients.
  ASSERT_TRUE(
      PollUntil(seconds(30), [&] { return load.NowUs() >= back_us + 2 * window_us + 500'000; }));
  load.Stop();
  const std::vector<RequestRecord> records = load.records();

  EXPECT_EQ(Unanswered(records).size(), 0u) << FirstErrors(records);
  const WindowParams params = ParamsFor(window, cluster.timings());
  const std::vector<FaultSpan> faults = {{"stop", stop_us, dead_us, 0},
                                         {"return", cont_us, back_us, 0}};
  WindowReport report = CheckSlidingWindow(records, 0, params, faults);
  EXPECT_TRUE(report.ok) << report.Describe();

  // Nothing lost: once the replicas agree, every node counts at least what
  // was admitted.
  std::optional<wire::OwnerReport> owners = OwnerOf(observer, total);
  ASSERT_TRUE(owners.has_value());
  std::vector<TestNode*> replicas;
  for (TestNode* n : all) {
    if (Contains(owners->preference_list, n->id)) replicas.push_back(n);
  }
  EXPECT_TRUE(PollUntil(seconds(10), [&] { return ReplicasAgree(replicas, total, &why); })) << why;
  const uint64_t admitted_total = AdmittedHits(records, 1);
  const uint64_t forward_timeouts = SumCounter(all, "forward_timeouts");
  CountCheck counted = NothingLost(all, total, admitted_total, forward_timeouts);
  EXPECT_TRUE(counted.ok) << counted.why;

  std::printf(
      "[figures] stop/cont: %zu requests (%.0f/s), 0 unanswered expected, %zu unanswered; "
      "p50 %.1f ms p99 %.1f ms max %.1f ms; dead everywhere %.0f ms after SIGSTOP (bound %lld); "
      "back and heading its keys %.0f ms after SIGCONT (incarnation %llu -> %llu); window key "
      "(limit %llu per %llu ms): %s; total key admitted %llu, counted %llu (forward timeouts "
      "%llu)\n",
      records.size(), records.size() / (load.NowUs() / 1e6), Unanswered(records).size(),
      LatencyPercentileMs(records, 0.5), LatencyPercentileMs(records, 0.99),
      LatencyPercentileMs(records, 1.0), (dead_us - stop_us) / 1000.0,
      static_cast<long long>(detect_bound.count()), (back_us - cont_us) / 1000.0,
      static_cast<unsigned long long>(before->incarnation),
      static_cast<unsigned long long>(after->incarnation),
      static_cast<unsigned long long>(kWindowLimit), static_cast<unsigned long long>(kWindowMs),
      report.Describe().c_str(), static_cast<unsigned long long>(admitted_total),
      static_cast<unsigned long long>(counted.counted),
      static_cast<unsigned long long>(forward_timeouts));
}

}  // namespace
}  // namespace tally::testing

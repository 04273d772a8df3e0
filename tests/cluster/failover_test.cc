// Crash and restart of a key's owner, with real processes:
//
//   * kill -9 of the owner while clients keep sending through the other
//     nodes: every request gets a decision (or a clear error) within its
//     timeout; the dead node is declared dead within the detection bound
//     (ClusterTimings::DetectionBound); a key exhausted before the kill stays
//     denied; the admitted excess of a key under steady load stays within the
//     failover bound (hits the owner decided but had not yet replicated:
//     about rate x replication interval; asserted <= limit / 10 and printed).
//   * restart of the killed node under the same name and address: it rejoins
//     alive with a new generation, gets handoff (owns keys again), and
//     nothing is counted twice or lost: every replica's copy of the key
//     converges (equal state hashes) and every node answers the same
//     `remaining`, which is exactly limit - admitted.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

std::vector<TestNode*> ByIds(ClusterHarness& c, const std::vector<std::string>& ids) {
  std::vector<TestNode*> out;
  for (const std::string& id : ids) {
    for (auto& n : c.nodes()) {
      if (n->id == id) out.push_back(n.get());
    }
  }
  return out;
}

TEST(ClusterFailoverTest, KillOwnerWhileClientsSend) {
  constexpr size_t kNodes = 4;
  constexpr uint64_t kSteadyLimit = 600;
  constexpr uint64_t kExhaustedLimit = 50;
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(kNodes, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;

  // The victim owns both keys: `steady` (under load across the kill) and
  // `exhausted` (used up before it).
  TestNode& observer = cluster.node(0);
  const std::string victim_id = "n3";
  CheckRequest steady = KeyOwnedBy(observer, victim_id, "steady", kSteadyLimit, 60'000);
  CheckRequest exhausted = KeyOwnedBy(observer, victim_id, "spent", kExhaustedLimit, 60'000);
  ASSERT_FALSE(steady.user_id.empty());
  ASSERT_FALSE(exhausted.user_id.empty());
  std::optional<wire::OwnerReport> owners = OwnerOf(observer, exhausted);
  ASSERT_TRUE(owners.has_value());
  TestNode* victim = ByIds(cluster, {victim_id})[0];
  std::vector<TestNode*> survivors;
  for (auto& n : cluster.nodes()) {
    if (n.get() != victim) survivors.push_back(n.get());
  }

  // Exhaust `exhausted` through a non-owner, then wait until all its
  // replicas hold the same counts (replication is asynchronous).
  Tally spent = Hammer(*survivors[0], exhausted, kExhaustedLimit + 10, uint64_t{9} << 40);
  ASSERT_EQ(spent.errors, 0u);
  ASSERT_EQ(spent.allowed, kExhaustedLimit);
  std::string why;
  ASSERT_TRUE(PollUntil(seconds(3), [&] {
    return ReplicasAgree(ByIds(cluster, owners->preference_list), exhausted, &why);
  })) << why;

  // One client thread per survivor at a steady pace; each also re-checks
  // the exhausted key every 10th request.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> steady_admitted{0};
  std::atomic<uint64_t> requests{0};
  std::vector<Tally> steady_tallies(survivors.size()), exhausted_tallies(survivors.size());
  std::vector<std::thread> threads;
  for (size_t t = 0; t < survivors.size(); ++t) {
    threads.emplace_back([&, t] {
      TestNode& node = *survivors[t];
      EnterNetns(node.netns);
      ClientOptions options;  // 250 ms x 3 attempts
      std::string err;
      std::unique_ptr<Client> client = Client::Connect(node.udp(), options, &err);
      if (!client) {
        steady_tallies[t].errors = 1;
        return;
      }
      CheckRequest s = steady, e = exhausted;
      for (uint64_t i = 0; !stop.load(); ++i) {
        auto start = SteadyClock::now();
        CheckRequest& r = i % 10 == 9 ? e : s;
        r.request_id = (uint64_t{t} + 1) << 40 | i;
        CheckResult result = client->Check(r);
        (i % 10 == 9 ? exhausted_tallies : steady_tallies)[t].Add(result, MsSince(start));
        if (i % 10 != 9 && result.allowed) steady_admitted.fetch_add(1);
        requests.fetch_add(1);
        std::this_thread::sleep_for(std::chrono::milliseconds(4));  // the load's pace
      }
    });
  }

  const auto load_started = SteadyClock::now();
  // Kill the owner once half the steady key is used.
  ASSERT_TRUE(PollUntil(seconds(10), [&] { return steady_admitted.load() >= kSteadyLimit / 2; }));
  const uint64_t admitted_at_kill = steady_admitted.load();
  const double rate = static_cast<double>(requests.load()) * 0.9 / (MsSince(load_started) / 1000);
  const auto killed_at = SteadyClock::now();
  EXPECT_EQ(victim->process.Kill9(), 128 + 9);

  // Every survivor marks it dead within the documented bound.
  const milliseconds bound = cluster.timings().DetectionBound(kNodes);
  bool detected =
      PollUntil(bound, [&] { return cluster.Converged(survivors, survivors, {victim_id}, &why); });
  const double detected_ms = MsSince(killed_at);
  EXPECT_TRUE(detected) << why << " after " << detected_ms << " ms (bound " << bound.count()
                        << " ms)";
  // Keep the load on until the survivors used up the steady key, and for
  // another 150 requests (all of which must be denied), then stop.
  EXPECT_TRUE(PollUntil(seconds(5), [&] { return steady_admitted.load() >= kSteadyLimit; }))
      << "admitted " << steady_admitted.load() << " of " << kSteadyLimit;
  const uint64_t requests_at_limit = requests.load();
  EXPECT_TRUE(PollUntil(seconds(5), [&] { return requests.load() >= requests_at_limit + 150; }));
  stop = true;
  for (auto& t : threads) t.join();

  Tally steady_total, exhausted_total;
  for (size_t t = 0; t < survivors.size(); ++t) {
    steady_total.Merge(steady_tallies[t]);
    exhausted_total.Merge(exhausted_tallies[t]);
  }
  // A decision, or a clear error, within the client's timeout x attempts.
  const double per_request_budget_ms = 3 * 250 + 100;
  EXPECT_LE(steady_total.max_latency_ms, per_request_budget_ms);
  EXPECT_LE(exhausted_total.max_latency_ms, per_request_budget_ms);
  for (const std::string& e : steady_total.error_texts) EXPECT_FALSE(e.empty());
  EXPECT_EQ(steady_total.errors + exhausted_total.errors, 0u)
      << (steady_total.error_texts.empty() ? "" : steady_total.error_texts[0]);
  // The exhausted key stayed denied throughout, the kill included.
  EXPECT_EQ(exhausted_total.allowed, 0u);
  EXPECT_GT(exhausted_total.denied, 0u);
  // The steady key: at most the limit plus what the owner had not replicated.
  const int64_t excess =
      static_cast<int64_t>(steady_total.allowed) - static_cast<int64_t>(kSteadyLimit);
  EXPECT_LE(excess, static_cast<int64_t>(kSteadyLimit / 10));
  EXPECT_GE(steady_total.allowed, kSteadyLimit);  // the survivors carry on to the limit
  // docs/DESIGN.md: excess <= rate x replication interval (+ the retry
  // interval when the last delta was lost); rate: the steady key's, before the kill.
  const double documented = rate * (cluster.timings().replication_interval_ms + 100) / 1000.0;
  EXPECT_LE(static_cast<double>(excess), documented);
  std::printf(
      "[figures] failover: dead everywhere after %.0f ms (bound %lld ms); steady key admitted "
      "%llu of limit %llu (excess %lld; %llu admitted at the kill; rate %.0f/s, documented "
      "bound rate x (replication + retry) = %.0f); max latency %.1f ms; errors %llu\n",
      detected_ms, static_cast<long long>(bound.count()),
      static_cast<unsigned long long>(steady_total.allowed),
      static_cast<unsigned long long>(kSteadyLimit), static_cast<long long>(excess),
      static_cast<unsigned long long>(admitted_at_kill), rate, documented,
      steady_total.max_latency_ms, static_cast<unsigned long long>(steady_total.errors));
  ::testing::Test::RecordProperty("failover_excess", static_cast<int>(excess));
  ::testing::Test::RecordProperty("detection_ms", static_cast<int>(detected_ms));

  // After the failover the exhausted key is still denied through everyone.
  for (TestNode* n : survivors) {
    CheckRequest probe = exhausted;
    probe.hits = 0;
    CheckResult r = CheckThrough(*n, probe);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.remaining, 0u) << "through " << n->id;
  }
}

TEST(ClusterFailoverTest, RestartedNodeRejoinsWithoutDoubleCounting) {
  constexpr size_t kNodes = 3;
  constexpr uint64_t kLimit = 100;
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(kNodes, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;

  const std::string victim_id = "n2";
  CheckRequest key = KeyOwnedBy(cluster.node(0), victim_id, "restart", kLimit, 60'000);
  ASSERT_FALSE(key.user_id.empty());
  TestNode* victim = ByIds(cluster, {victim_id})[0];
  std::vector<TestNode*> survivors;
  for (auto& n : cluster.nodes()) {
    if (n.get() != victim) survivors.push_back(n.get());
  }
  const uint64_t old_generation = victim->started_generation;

  // 40 hits through every node, then wait for the replicas to agree: a
  // quiet key, so the crash loses nothing.
  uint64_t admitted = 0;
  for (size_t i = 0; i < kNodes; ++i) {
    Tally t = Hammer(cluster.node(i), key, i == 0 ? 14 : 13, (uint64_t{i} + 1) << 40);
    ASSERT_EQ(t.errors, 0u);
    ASSERT_EQ(t.denied, 0u);
    admitted += t.allowed;
  }
  ASSERT_EQ(admitted, 40u);
  std::string why;
  ASSERT_TRUE(PollUntil(seconds(3), [&] { return ReplicasAgree(cluster.Running(), key, &why); }))
      << why;

  EXPECT_EQ(victim->process.Kill9(), 128 + 9);
  // 20 more while it is down (the first may wait for a forward timeout).
  for (size_t i = 0; i < survivors.size(); ++i) {
    Tally t = Hammer(*survivors[i], key, 10, (uint64_t{i} + 11) << 40);
    EXPECT_EQ(t.errors, 0u);
    EXPECT_EQ(t.denied, 0u);
    admitted += t.allowed;
  }
  ASSERT_EQ(admitted, 60u);
  ASSERT_TRUE(PollUntil(cluster.timings().DetectionBound(kNodes), [&] {
    return cluster.Converged(survivors, survivors, {victim_id}, &why);
  })) << why;

  // Same name, same address, a new process.
  const auto restarted_at = SteadyClock::now();
  ASSERT_TRUE(cluster.Restart(*victim, &error)) << error;
  EXPECT_GT(victim->started_generation, old_generation);
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;
  const double rejoined_ms = MsSince(restarted_at);

  // Every replica converges, and every node answers the same remaining.
  ASSERT_TRUE(PollUntil(seconds(5), [&] { return ReplicasAgree(cluster.Running(), key, &why); }))
      << why;
  const double converged_ms = MsSince(restarted_at);
  for (auto& n : cluster.nodes()) {
    CheckRequest probe = key;
    probe.hits = 0;
    CheckResult r = CheckThrough(*n, probe);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.remaining, kLimit - admitted) << "through " << n->id;
  }
  std::optional<wire::OwnerReport> o = OwnerOf(cluster.node(0), key);
  ASSERT_TRUE(o.has_value());
  EXPECT_EQ(o->preference_list[0], victim_id);  // it owns its keys again

  // Use up the rest through every node: exactly the limit in total.
  std::vector<Tally> tallies(kNodes);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < kNodes; ++i) {
    threads.emplace_back(
        [&, i] { tallies[i] = Hammer(cluster.node(i), key, 30, (uint64_t{i} + 21) << 40); });
  }
  for (auto& t : threads) t.join();
  Tally rest;
  for (const Tally& t : tallies) rest.Merge(t);
  EXPECT_EQ(rest.errors, 0u);
  EXPECT_EQ(admitted + rest.allowed, kLimit);
  std::printf(
      "[figures] restart: rejoined and owning after %.0f ms, replicas converged after "
      "%.0f ms; total admitted %llu of %llu\n",
      rejoined_ms, converged_ms, static_cast<unsigned long long>(admitted + rest.allowed),
      static_cast<unsigned long long>(kLimit));
}

}  // namespace
}  // namespace tally::testing

namespace tally::testing {
namespace {

// SIGTERM: the node leaves gracefully (exit 0 within the leave grace), the
// others see it `left` at once rather than after a suspicion timeout, and
// its keys stay counted: it pushed them to the members that take over.
TEST(ClusterFailoverTest, GracefulLeaveHandsKeysOver) {
  constexpr uint64_t kLimit = 100;
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(4, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(std::chrono::seconds(10), &error)) << error;
  CheckRequest key = KeyOwnedBy(cluster.node(0), "n4", "leave", kLimit, 60'000);
  ASSERT_FALSE(key.user_id.empty());
  Tally t = Hammer(cluster.node(0), key, 25, uint64_t{1} << 40);
  ASSERT_EQ(t.allowed, 25u);

  TestNode& leaver = cluster.node(3);
  const auto stopped_at = SteadyClock::now();
  EXPECT_EQ(leaver.process.Stop(), 0);
  const double exit_ms = MsSince(stopped_at);
  EXPECT_LT(exit_ms, 1000 + 500);  // the leave grace (1 s) plus shutdown
  std::vector<TestNode*> rest = {&cluster.node(0), &cluster.node(1), &cluster.node(2)};
  std::string why;
  // `left` needs no suspicion: a few gossip rounds.
  EXPECT_TRUE(PollUntil(std::chrono::milliseconds(1000), [&] {
    return cluster.Converged(rest, rest, {"n4"}, &why);
  })) << why;
  const double left_ms = MsSince(stopped_at);
  ASSERT_TRUE(PollUntil(std::chrono::seconds(3), [&] { return ReplicasAgree(rest, key, &why); }))
      << why;
  for (TestNode* n : rest) {
    CheckRequest probe = key;
    probe.hits = 0;
    CheckResult r = CheckThrough(*n, probe);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.remaining, kLimit - 25) << "through " << n->id;
  }
  std::printf(
      "[figures] graceful leave: exited after %.0f ms, seen left everywhere after %.0f ms\n",
      exit_ms, left_ms);
}

}  // namespace
}  // namespace tally::testing

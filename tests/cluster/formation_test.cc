// Cluster formation and the exact limit across nodes: 3 and 5 tallyd
// processes on loopback find each other (everyone sees everyone alive), and
// one key hammered concurrently through every node (one UDP client thread
// per node) admits exactly its limit in total: every node routes the key to
// the same owner, which decides alone.
#include <gtest/gtest.h>

#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

// Forwards are given plenty of time here: a forward that times out is
// decided by the next replica (correct under failures, but then two nodes
// decide for a while), and this test checks the failure-free exact path on
// a busy 2-core machine.
ClusterTimings ExactTimings() {
  ClusterTimings t;
  t.forward_timeout_ms = 1000;
  return t;
}

// `warmed`: hammer once every member owns keys (the exact steady state), or
// as soon as everyone sees everyone alive, while the joiners still warm up:
// then the owner and perhaps its replicas relay, each to the next on the
// list, and the first member that may own decides alone, so the total is
// still exact.
void FormAndHammer(size_t n, bool warmed) {
  constexpr uint64_t kLimit = 300;
  constexpr int kPerNode = 150;
  ClusterHarness cluster(ExactTimings());
  std::string error;
  auto start = SteadyClock::now();
  ASSERT_TRUE(cluster.StartNodes(n, {}, &error)) << error;
  if (warmed) {
    ASSERT_TRUE(cluster.WaitFormed(std::chrono::seconds(10), &error)) << error;
  } else {
    ASSERT_TRUE(cluster.WaitAllAlive(std::chrono::seconds(10), &error)) << error;
  }
  const double formed_ms = MsSince(start);

  // Every node agrees on the key's preference list.
  CheckRequest key;
  key.user_id = "hot-user";
  key.endpoint = "/hot";
  key.limit = kLimit;
  key.window_ms = 60'000;
  std::vector<std::string> list0;
  for (size_t i = 0; i < n; ++i) {
    std::optional<wire::OwnerReport> o = OwnerOf(cluster.node(i), key);
    ASSERT_TRUE(o.has_value());
    ASSERT_EQ(o->preference_list.size(), std::min<size_t>(n, 3));
    if (i == 0) list0 = o->preference_list;
    EXPECT_EQ(o->preference_list, list0) << "node " << cluster.node(i).id;
  }

  ClientOptions options;
  options.timeout = std::chrono::milliseconds(2000);  // > forward timeout: no spurious resends
  std::vector<Tally> tallies(n);
  std::vector<std::thread> threads;
  for (size_t i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      tallies[i] = Hammer(cluster.node(i), key, kPerNode, (uint64_t{i} + 1) << 40, options);
    });
  }
  for (auto& t : threads) t.join();
  Tally total;
  for (const Tally& t : tallies) total.Merge(t);
  EXPECT_EQ(total.errors, 0u) << (total.error_texts.empty() ? "" : total.error_texts[0]);
  EXPECT_EQ(total.allowed, kLimit);
  EXPECT_EQ(total.allowed + total.denied + total.errors, n * kPerNode);

  // Afterwards the key is exhausted through every node.
  for (size_t i = 0; i < n; ++i) {
    CheckRequest probe = key;
    probe.hits = 0;
    CheckResult r = CheckThrough(cluster.node(i), probe);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.remaining, 0u) << "through " << cluster.node(i).id;
  }

  // Figures: gossip + replication bytes per node per second, from status.
  double bytes_per_s = 0;
  for (size_t i = 0; i < n; ++i) {
    std::optional<wire::StatusReport> s = StatusOf(cluster.node(i));
    ASSERT_TRUE(s.has_value());
    EXPECT_TRUE(s->cluster);
    EXPECT_EQ(s->members.size(), n);
    bytes_per_s += static_cast<double>(CounterIn(*s, "peer_bytes_sent")) /
                   std::max<double>(1, static_cast<double>(s->uptime_ms)) * 1000.0 / n;
  }
  std::printf(
      "[figures] %zu nodes: formed (all alive everywhere%s) in %.0f ms; %.0f peer "
      "bytes/s "
      "sent per node (incl. the hammer); max check latency %.1f ms\n",
      n, warmed ? ", all owning" : "", formed_ms, bytes_per_s, total.max_latency_ms);
  ::testing::Test::RecordProperty("peer_bytes_per_s_per_node", static_cast<int>(bytes_per_s));
}

TEST(ClusterFormationTest, ThreeNodesFormAndAdmitExactlyTheLimit) { FormAndHammer(3, true); }

TEST(ClusterFormationTest, FiveNodesFormAndAdmitExactlyTheLimit) { FormAndHammer(5, true); }

TEST(ClusterFormationTest, FiveNodesHammeredWhileWarmingUpAdmitExactlyTheLimit) {
  FormAndHammer(5, false);
}

// Idle gossip cost: what membership alone sends per node per second.
TEST(ClusterFormationTest, IdleGossipBytesPerNode) {
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(3, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitAllAlive(std::chrono::seconds(10), &error)) << error;
  std::optional<wire::StatusReport> before = StatusOf(cluster.node(1));
  ASSERT_TRUE(before.has_value());
  auto t0 = SteadyClock::now();
  // Let a couple of probe periods pass: the figure is a rate over them.
  std::optional<wire::StatusReport> after;
  PollUntil(std::chrono::milliseconds(3000), [&] {
    after = StatusOf(cluster.node(1));
    return after && after->uptime_ms >= before->uptime_ms + 2000;
  });
  ASSERT_TRUE(after.has_value());
  const double seconds = MsSince(t0) / 1000.0;
  const double rate = static_cast<double>(CounterIn(*after, "peer_bytes_sent") -
                                          CounterIn(*before, "peer_bytes_sent")) /
                      seconds;
  std::printf(
      "[figures] idle 3-node cluster, probe 200 ms, gossip 50 ms: %.0f peer bytes/s "
      "sent per node\n",
      rate);
  EXPECT_GT(rate, 0);
  EXPECT_LT(rate, 200'000);  // sanity: membership traffic stays small
}

}  // namespace
}  // namespace tally::testing

namespace tally::testing {
namespace {

// Cluster mode serves every client transport: checks over the Unix datagram
// and seqpacket sockets are routed (and answered later, when forwarded) like
// UDP ones.
TEST(ClusterFormationTest, UnixSocketClientsInClusterMode) {
  TempDir dir;
  ClusterHarness cluster;
  std::string error;
  for (int i = 1; i <= 2; ++i) {
    std::vector<std::string> seeds;
    if (i == 2) seeds.push_back(cluster.node(0).gossip());
    std::vector<std::string> extra = {"--unix",     dir.File("n" + std::to_string(i) + ".sock"),
                                      "--unix-seq", dir.File("n" + std::to_string(i) + ".seq"),
                                      "--threads",  "2"};
    ASSERT_NE(cluster.StartNode("n" + std::to_string(i), seeds, extra, &error), nullptr) << error;
  }
  ASSERT_TRUE(cluster.WaitFormed(std::chrono::seconds(10), &error)) << error;
  constexpr uint64_t kLimit = 40;
  CheckRequest key;
  key.user_id = "unix-user";
  key.endpoint = "/e";
  key.limit = kLimit;
  key.window_ms = 60'000;
  uint64_t allowed = 0, errors = 0;
  for (int round = 0; round < 15; ++round) {
    for (int i = 0; i < 2; ++i) {
      for (const std::string& path :
           {cluster.node(i).process.unix_path(), cluster.node(i).process.seq_path()}) {
        ClientOptions options;
        options.timeout = std::chrono::milliseconds(1000);
        std::unique_ptr<Client> client = Client::Connect(DaemonAddress::Unix(path), options, &error);
        ASSERT_NE(client, nullptr) << error;
        CheckResult r = client->Check(key);
        if (r.status != Status::kOk) ++errors;
        if (r.allowed) ++allowed;
      }
    }
  }
  EXPECT_EQ(errors, 0u);
  EXPECT_EQ(allowed, kLimit);
}

}  // namespace
}  // namespace tally::testing

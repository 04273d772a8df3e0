// Two live processes with one node id (issue 9, item 3): the newer takes the
// id over and the older stops, on real processes. A second "n3" joins a
// formed cluster at another gossip port while the first still runs; the
// first hears of it, asks it at its address, gets its answer and exits with
// status 78 (Daemon::kExitSuperseded; the systemd unit does not restart it).
// The newer process says what it saw (swim_foreign_self), every member ends
// with the newer n3 alive, and a key n3 owns keeps its count through the
// takeover: it admits exactly its limit, counting hits the older n3 decided.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/io/daemon.h"
#include "tests/cluster/fault_util.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

TEST(ClusterIdentityTest, ANewerProcessOfANodeIdTakesItOverAndTheOlderExits) {
  constexpr uint64_t kLimit = 5;
  constexpr uint64_t kBeforeTakeover = 3;
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(3, {}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(20), &error)) << error;
  TestNode& entry = cluster.node(0);
  TestNode& older = cluster.node(2);
  ASSERT_EQ(older.id, "n3");

  const CheckRequest key =
      KeyWhere(entry, "identity", kLimit, 600'000,
               [](const std::vector<std::string>& list) { return list[0] == "n3"; });
  ASSERT_FALSE(key.user_id.empty());
  uint64_t admitted = 0;
  for (uint64_t i = 0; i < kBeforeTakeover; ++i) {
    CheckRequest r = key;
    r.request_id = 100 + i;
    const CheckResult result = CheckThrough(entry, r);
    ASSERT_EQ(result.status, Status::kOk) << result.error;
    admitted += result.allowed ? 1 : 0;
  }
  ASSERT_EQ(admitted, kBeforeTakeover);
  // Replicated to the other members before the takeover starts (their
  // replica is what the newer n3 warms up from).
  ASSERT_TRUE(PollUntil(milliseconds(5000), [&] {
    std::optional<wire::OwnerReport> owner = OwnerOf(older, key);
    if (!owner || !owner->holds_key) return false;
    for (size_t i = 0; i < 2; ++i) {
      std::optional<wire::OwnerReport> replica = OwnerOf(cluster.node(i), key);
      if (!replica || replica->state_hash != owner->state_hash) return false;
    }
    return true;
  }));

  // A second n3, at its own gossip port, joins through n1.
  TestNode* newer = cluster.StartNode("n3", {entry.gossip()}, {}, &error);
  ASSERT_NE(newer, nullptr) << error;
  ASSERT_NE(newer->gossip(), older.gossip());

  // The older process stops by itself, saying why in its exit status.
  EXPECT_EQ(older.process.WaitExit(ScaledWait(milliseconds(15'000))), io::Daemon::kExitSuperseded);
  // The newer one saw the older's question under its name, and answered.
  std::optional<wire::StatusReport> newer_status = StatusOf(*newer);
  ASSERT_TRUE(newer_status.has_value());
  EXPECT_GE(CounterIn(*newer_status, "swim_foreign_self"), 1u);
  EXPECT_TRUE(newer_status->owning || PollUntil(milliseconds(10'000), [&] {
                std::optional<wire::StatusReport> s = StatusOf(*newer);
                return s && s->owning;
              }));

  // Every live member sees n3 alive under the newer process's generation.
  std::vector<TestNode*> alive = {&cluster.node(0), &cluster.node(1), newer};
  std::string why;
  EXPECT_TRUE(PollUntil(milliseconds(10'000), [&] {
    return cluster.Converged(alive, alive, {}, &why);
  })) << why;

  // The count survived: the key admits exactly what is left of its limit.
  for (uint64_t i = 0; i < 2 * kLimit; ++i) {
    CheckRequest r = key;
    r.request_id = 200 + i;
    const CheckResult result = CheckThrough(cluster.node(i % 2), r);
    ASSERT_EQ(result.status, Status::kOk) << result.error;
    admitted += result.allowed ? 1 : 0;
  }
  EXPECT_EQ(admitted, kLimit);
}

}  // namespace
}  // namespace tally::testing

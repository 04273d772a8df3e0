// Load-adaptive limits across a cluster (daemon/core/node_adaptive.cc): one
// owner per rule steps the controller from every member's reports and
// publishes the limit through the override map, so every member applies the
// same one; a new owner carries on from it; after a partition one value wins.
#include <gtest/gtest.h>

#include <set>

#include "daemon/core/node.h"
#include "tests/daemon/core/adaptive_rules.h"
#include "tests/daemon/core/test_cluster.h"
#include "wire/peer_codec.h"

namespace tally::core {
namespace {

using testing::TestCluster;

AdaptiveRuleConfig Rule() { return testing::LatencyRule(); }

const std::string kKey = crdt::Selector::AdaptiveKey("api", "backend");

// The limit published in `id`'s override map, 0 if none.
uint64_t Published(TestCluster& c, const std::string& id) {
  const std::optional<crdt::OverrideValue> v = c.node(id).overrides().FindKey(kKey);
  return v.has_value() ? v->limit : 0;
}

// `seconds` of reports through `via`: every 100 ms, `count` requests of mean
// latency `latency_ms`.
void Report(TestCluster& c, const std::string& via, double latency_ms, uint64_t count,
            int seconds) {
  for (int i = 0; i < seconds * 10; ++i) {
    ASSERT_EQ(c.node(via).ReportSignal("api", "backend", latency_ms, count),
              AdaptiveHost::ReportResult::kAccepted);
    c.RunFor(100);
  }
}

std::string OwnerSeenBy(TestCluster& c, const std::string& id) {
  return c.node(id).AdaptiveOwner(0, c.Now());
}

TEST(NodeAdaptiveTest, AnOwnerStepsOnEveryMembersReportsAndEveryMemberAppliesItsLimit) {
  TestCluster c;
  c.Form(3);
  for (const char* id : {"n1", "n2", "n3"}) c.node(id).SetAdaptiveRules({Rule()});
  const std::string owner = OwnerSeenBy(c, "n1");
  for (const char* id : {"n2", "n3"}) ASSERT_EQ(OwnerSeenBy(c, id), owner);
  const std::string reporter = owner == "n1" ? "n2" : "n1";
  // A slow backend reported at a member that does not own the rule: its
  // sums reach the owner, which cuts 500 -> 450 -> 405 -> 364, one step a second.
  Report(c, reporter, 200, 300, 3);
  c.RunFor(300);
  for (const char* id : {"n1", "n2", "n3"}) EXPECT_EQ(Published(c, id), 364u) << id;
  EXPECT_GE(c.node(reporter).Status(c.Now()).counters.adaptive_sums_sent, 25u);
  const NodeStatus::Counters& o = c.node(owner).Status(c.Now()).counters;
  EXPECT_GE(o.adaptive_sums_received, 25u);
  EXPECT_EQ(o.adaptive_limits_written, 3u);
  EXPECT_EQ(o.adaptive_sums_refused, 0u);
  // Only the owner runs a controller.
  for (const char* id : {"n1", "n2", "n3"}) {
    EXPECT_EQ(c.node(id).adaptive().ControllerLimit(0).has_value(), id == owner) << id;
  }
  // A healthy backend in use: back up by 10 a second.
  Report(c, reporter, 10, 400, 2);
  c.RunFor(300);
  for (const char* id : {"n1", "n2", "n3"}) EXPECT_EQ(Published(c, id), 384u) << id;
}

TEST(NodeAdaptiveTest, ANewOwnerCarriesOnFromThePublishedLimit) {
  TestCluster c;
  c.Form(4);
  for (const char* id : {"n1", "n2", "n3", "n4"}) c.node(id).SetAdaptiveRules({Rule()});
  const std::string owner = OwnerSeenBy(c, "n1");
  std::string reporter;
  for (const char* id : {"n1", "n2", "n3", "n4"}) {
    if (id != owner) reporter = id;
  }
  Report(c, reporter, 200, 300, 2);  // 500 -> 450 -> 405
  c.RunFor(300);
  ASSERT_EQ(Published(c, reporter), 405u);
  c.Crash(owner);
  c.RunFor(8000);  // declared dead
  const std::string next = OwnerSeenBy(c, reporter);
  ASSERT_NE(next, owner);
  // Healthy and in use: the new owner adds 10 a second to 405, not to 500.
  Report(c, reporter, 10, 400, 3);
  c.RunFor(300);
  const uint64_t after = Published(c, reporter);
  EXPECT_GE(after, 415u);
  EXPECT_LE(after, 435u);
  EXPECT_GE(c.node(next).Status(c.Now()).counters.adaptive_limits_written, 1u);
}

TEST(NodeAdaptiveTest, BothSidesOfAPartitionStepAndOneLimitWinsAfterTheHeal) {
  TestCluster c;
  c.Form(3);
  for (const char* id : {"n1", "n2", "n3"}) c.node(id).SetAdaptiveRules({Rule()});
  const std::string owner = OwnerSeenBy(c, "n1");
  std::vector<std::string> others;
  for (const char* id : {"n1", "n2", "n3"}) {
    if (id != owner) others.push_back(id);
  }
  for (const std::string& o : others) c.Cut(owner, o);
  c.RunFor(8000);
  ASSERT_NE(OwnerSeenBy(c, others[0]), owner);
  ASSERT_EQ(OwnerSeenBy(c, others[0]), OwnerSeenBy(c, others[1]));
  ASSERT_EQ(OwnerSeenBy(c, owner), owner);
  // Each side's owner steps on its side's reports: one cuts, one grows.
  for (int i = 0; i < 30; ++i) {
    ASSERT_EQ(c.node(owner).ReportSignal("api", "backend", 200, 300),
              AdaptiveHost::ReportResult::kAccepted);
    ASSERT_EQ(c.node(others[0]).ReportSignal("api", "backend", 10, 400),
              AdaptiveHost::ReportResult::kAccepted);
    c.RunFor(100);
  }
  EXPECT_LT(Published(c, owner), 500u);
  EXPECT_GT(Published(c, others[0]), 500u);
  c.HealAll();
  c.RunFor(10'000);
  // One value everywhere, and one controller runs on.
  const uint64_t agreed = Published(c, "n1");
  for (const char* id : {"n2", "n3"}) EXPECT_EQ(Published(c, id), agreed) << id;
  std::set<std::string> owners;
  for (const char* id : {"n1", "n2", "n3"}) owners.insert(OwnerSeenBy(c, id));
  EXPECT_EQ(owners.size(), 1u);
  int controllers = 0;
  for (const char* id : {"n1", "n2", "n3"}) {
    controllers += c.node(id).adaptive().ControllerLimit(0).has_value();
  }
  EXPECT_EQ(controllers, 1);
  // It steers from there: a slow backend cuts what everyone holds.
  Report(c, "n1", 200, 300, 2);
  c.RunFor(300);
  const uint64_t cut = Published(c, "n1");
  EXPECT_LT(cut, agreed);
  for (const char* id : {"n2", "n3"}) EXPECT_EQ(Published(c, id), cut) << id;
}

TEST(NodeAdaptiveTest, SumsFromOutsideTheClusterMoveNothing) {
  TestCluster c;
  c.Form(3);
  for (const char* id : {"n1", "n2", "n3"}) c.node(id).SetAdaptiveRules({Rule()});
  const std::string owner = OwnerSeenBy(c, "n1");
  wire::NodeMessageValue msg;
  msg.kind = wire::NodeMessageValue::Kind::kAdaptiveReports;
  msg.adaptive_reports.push_back({"api", "backend", 300 * 500.0, 500, 500});
  std::vector<std::byte> bytes;
  wire::EncodeNodeMessage(wire::PeerHeader{"n9", "10.9.9.9:7946", 1, c.Now().wall.count()}, msg,
                          &bytes);
  for (int i = 0; i < 20; ++i) {
    c.Inject(owner, "10.9.9.9:7946", bytes);
    c.RunFor(100);
  }
  EXPECT_EQ(c.node(owner).Status(c.Now()).counters.adaptive_sums_refused, 20u);
  EXPECT_EQ(Published(c, owner), 0u);
}

}  // namespace
}  // namespace tally::core

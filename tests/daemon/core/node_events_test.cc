// Node events (daemon/core/node_events.h): what the Node says it did, once per
// change, in the Outbox of the call that made it. The daemon logs these and
// records membership changes for the status page from them alone.
#include "daemon/core/node_events.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "daemon/core/node.h"
#include "tests/daemon/core/test_cluster.h"

namespace tally::core {
namespace {

using Kind = NodeEvent::Kind;
using testing::TestCluster;

std::vector<NodeEvent> Of(const std::vector<NodeEvent>& events, Kind kind,
                          const std::string& member = "") {
  std::vector<NodeEvent> out;
  for (const NodeEvent& e : events) {
    if (e.kind == kind && (member.empty() || e.member_id == member)) out.push_back(e);
  }
  return out;
}

std::string Describe(const std::vector<NodeEvent>& events) {
  std::string s;
  for (const NodeEvent& e : events) {
    s += std::string(NodeEventKindName(e.kind)) + " " + e.member_id + " " + e.from_state + "->" +
         e.state + " " + e.text + "\n";
  }
  return s;
}

TEST(NodeEventsTest, MembersJoinFailAndRestartEachSaidOnce) {
  TestCluster c;
  c.Form(3);
  const std::vector<NodeEvent>& n1 = c.events("n1");
  EXPECT_TRUE(Of(n1, Kind::kMemberJoined, "n1").empty()) << "self is no news";
  for (const char* id : {"n2", "n3"}) {
    const std::vector<NodeEvent> joined = Of(n1, Kind::kMemberJoined, id);
    ASSERT_EQ(joined.size(), 1u) << id << "\n" << Describe(n1);
    EXPECT_EQ(joined[0].address, TestCluster::AddressOf(id));
    EXPECT_EQ(joined[0].state, "alive");
  }
  EXPECT_TRUE(Of(n1, Kind::kMemberState).empty()) << Describe(n1);
  // Nothing changes: nothing is said (the diff runs only on a change).
  const size_t settled = n1.size();
  c.RunFor(3000);
  EXPECT_EQ(c.events("n1").size(), settled) << Describe(c.events("n1"));

  // n3 dies: alive -> suspect -> dead, each once, in order.
  c.Crash("n3");
  c.RunFor(10'000);
  const std::vector<NodeEvent> states = Of(c.events("n1"), Kind::kMemberState, "n3");
  ASSERT_EQ(states.size(), 2u) << Describe(c.events("n1"));
  EXPECT_EQ(states[0].from_state, "alive");
  EXPECT_EQ(states[0].state, "suspect");
  EXPECT_EQ(states[1].from_state, "suspect");
  EXPECT_EQ(states[1].state, "dead");

  // A new process of n3 (a higher generation) is a restart, not a join.
  NodeConfig again = c.ConfigFor("n3");
  again.seeds = {TestCluster::AddressOf("n1")};
  const uint64_t old_generation = states[1].generation;
  c.AddWith(again);
  c.RunFor(5000);
  const std::vector<NodeEvent> restarted = Of(c.events("n1"), Kind::kMemberRestarted, "n3");
  ASSERT_EQ(restarted.size(), 1u) << Describe(c.events("n1"));
  EXPECT_EQ(restarted[0].previous_generation, old_generation);
  EXPECT_EQ(restarted[0].generation, again.generation);
  EXPECT_EQ(restarted[0].from_state, "dead");
  EXPECT_EQ(restarted[0].state, "alive");
  EXPECT_EQ(Of(c.events("n1"), Kind::kMemberJoined, "n3").size(), 1u);

  // A graceful leave: the others hear `left`; the leaver says its own state.
  c.Leave("n2");
  c.RunFor(2000);
  const std::vector<NodeEvent> left = Of(c.events("n1"), Kind::kMemberState, "n2");
  ASSERT_FALSE(left.empty()) << Describe(c.events("n1"));
  EXPECT_EQ(left.back().state, "left");
  const std::vector<NodeEvent> self = Of(c.events("n2"), Kind::kMemberState, "n2");
  ASSERT_EQ(self.size(), 1u) << Describe(c.events("n2"));
  EXPECT_EQ(self[0].state, "left");
}

TEST(NodeEventsTest, AJoinNobodyAnswersIsSaidOnceAndItsEndToo) {
  TestCluster c;
  NodeConfig cfg = c.ConfigFor("n2");
  cfg.seeds = {TestCluster::AddressOf("n9")};  // nobody listens there
  c.AddWith(cfg);
  c.RunFor(cfg.join_warning_ms - 100);
  EXPECT_TRUE(Of(c.events("n2"), Kind::kJoinUnanswered).empty()) << "too early";
  c.RunFor(5000);
  const std::vector<NodeEvent> warned = Of(c.events("n2"), Kind::kJoinUnanswered);
  ASSERT_EQ(warned.size(), 1u) << Describe(c.events("n2"));
  EXPECT_NE(warned[0].text.find(TestCluster::AddressOf("n9")), std::string::npos) << warned[0].text;
  EXPECT_TRUE(Of(c.events("n2"), Kind::kJoinAnswered).empty());
  c.AddWith(c.ConfigFor("n9"));
  c.RunFor(5000);
  EXPECT_EQ(Of(c.events("n2"), Kind::kJoinAnswered).size(), 1u) << Describe(c.events("n2"));
  EXPECT_EQ(Of(c.events("n2"), Kind::kJoinUnanswered).size(), 1u);
}

// A joining node starts warming up (not owning) and says when it owns; a
// wall clock that jumps stops owning (with the reason) and its peers warn
// about its offset, once, and say when it is back.
TEST(NodeEventsTest, OwningAndClockOffsetsAreSaidWhenTheyChange) {
  TestCluster c;
  c.Form(5);
  const std::vector<NodeEvent> warm = Of(c.events("n3"), Kind::kOwningChanged);
  ASSERT_EQ(warm.size(), 2u) << Describe(c.events("n3"));
  EXPECT_FALSE(warm[0].owning);
  EXPECT_NE(warm[0].text.find("warming up"), std::string::npos) << warm[0].text;
  EXPECT_TRUE(warm[1].owning);
  EXPECT_TRUE(Of(c.events("n1"), Kind::kOwningChanged).empty()) << "n1 owned from its start";

  c.RunFor(2000);  // every node has measured its peers
  c.SetWallOffset("n3", 2000);
  c.RunFor(5000);
  const std::vector<NodeEvent> owning = Of(c.events("n3"), Kind::kOwningChanged);
  ASSERT_GE(owning.size(), 3u) << Describe(c.events("n3"));
  EXPECT_FALSE(owning[2].owning);
  EXPECT_NE(owning[2].text.find("clock offset"), std::string::npos) << owning[2].text;
  for (const char* peer : {"n1", "n2", "n4", "n5"}) {
    const std::vector<NodeEvent> far = Of(c.events(peer), Kind::kClockOffsetFar, "n3");
    ASSERT_EQ(far.size(), 1u) << peer << "\n" << Describe(c.events(peer));
    EXPECT_GT(far[0].clock_offset_ms, 250);
  }
  c.SetWallOffset("n3", 0);
  c.RunFor(10'000);
  for (const char* peer : {"n1", "n2", "n4", "n5"}) {
    EXPECT_EQ(Of(c.events(peer), Kind::kClockOffsetFar, "n3").size(), 1u) << peer;
    const std::vector<NodeEvent> back = Of(c.events(peer), Kind::kClockOffsetBack, "n3");
    ASSERT_EQ(back.size(), 1u) << peer << "\n" << Describe(c.events(peer));
    EXPECT_LT(back[0].clock_offset_ms, 250);
  }
  const std::vector<NodeEvent> after = Of(c.events("n3"), Kind::kOwningChanged);
  ASSERT_FALSE(after.empty());
  EXPECT_TRUE(after.back().owning) << Describe(c.events("n3"));
}

}  // namespace
}  // namespace tally::core

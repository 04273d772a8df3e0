// Runtime limit overrides across Nodes (daemon/core/node_overrides.cc): a
// write reaches every member; writes on both sides of a partition converge
// to one after the heal (anti-entropy digests carry the map's digest);
// overrides from a non-member or stamped beyond the clock allowance are
// refused.
#include <gtest/gtest.h>

#include "crdt/limit_overrides.h"
#include "daemon/core/node.h"
#include "tests/daemon/core/test_cluster.h"
#include "wire/peer_codec.h"

namespace tally::core {
namespace {

using testing::TestCluster;
using Result = crdt::LimitOverrides::MergeResult;

crdt::Selector Address(const std::string& value) {
  crdt::Selector s;
  s.kind = crdt::Selector::Kind::kDescriptor;
  s.domain = "edge";
  s.entries = {{"remote_address", value}};
  return s;
}

crdt::OverrideValue PerMinute(uint64_t limit) {
  crdt::OverrideValue v;
  v.limit = limit;
  v.window_ms = 60'000;
  return v;
}

Result Write(TestCluster& c, const std::string& id, const crdt::Selector& s,
             const crdt::OverrideValue& v) {
  return c.Call(
      id, [&](Node& node, Instant now, Outbox* out) { return node.WriteOverride(s, v, now, out); });
}

std::optional<uint64_t> LimitAt(TestCluster& c, const std::string& id, const crdt::Selector& s) {
  const std::optional<crdt::OverrideValue> v = c.node(id).overrides().Find(s);
  if (!v.has_value()) return std::nullopt;
  return v->limit;
}

TEST(NodeOverridesTest, AWriteReachesEveryMember) {
  TestCluster c;
  c.Form(5);
  ASSERT_EQ(Write(c, "n3", Address("10.0.0.1"), PerMinute(7)), Result::kApplied);
  EXPECT_EQ(c.node("n3").Status(c.Now()).counters.overrides_sent, 4u);  // one per member
  c.RunFor(50);                                                         // one stream hop
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "n" + std::to_string(i);
    EXPECT_EQ(LimitAt(c, id, Address("10.0.0.1")), 7u) << id;
    EXPECT_EQ(c.node(id).overrides().Digest(), c.node("n3").overrides().Digest()) << id;
  }
  EXPECT_EQ(c.node("n3").Status(c.Now()).counters.overrides_written, 1u);
  EXPECT_EQ(c.node("n1").Status(c.Now()).counters.overrides_applied, 1u);
  EXPECT_EQ(c.node("n1").Status(c.Now()).overrides_live, 1u);

  // A removal spreads the same way and leaves a tombstone everywhere.
  crdt::OverrideValue removal;
  removal.removed = true;
  ASSERT_EQ(Write(c, "n5", Address("10.0.0.1"), removal), Result::kApplied);
  c.RunFor(50);
  for (int i = 1; i <= 5; ++i) {
    const std::string id = "n" + std::to_string(i);
    EXPECT_EQ(LimitAt(c, id, Address("10.0.0.1")), std::nullopt) << id;
    EXPECT_EQ(c.node(id).Status(c.Now()).overrides_held, 1u) << id;
    EXPECT_EQ(c.node(id).Status(c.Now()).overrides_live, 0u) << id;
  }
}

TEST(NodeOverridesTest, AnInvalidWriteIsRefusedAndSentNowhere) {
  TestCluster c;
  c.Form(3);
  crdt::Selector empty_domain = Address("x");
  empty_domain.domain.clear();
  EXPECT_EQ(Write(c, "n1", empty_domain, PerMinute(3)), Result::kInvalid);
  c.RunFor(50);
  for (const char* id : {"n1", "n2", "n3"}) {
    EXPECT_EQ(c.node(id).overrides().size(), 0u) << id;
  }
  EXPECT_EQ(c.node("n1").Status(c.Now()).counters.overrides_sent, 0u);
}

// Both sides of a partition change the same limit (and each another one of
// its own); after the heal every member holds the same map: the later of the
// two conflicting writes, and both others.
TEST(NodeOverridesTest, WritesOnBothSidesOfAPartitionConvergeAfterTheHeal) {
  for (uint64_t seed : {1, 2, 3}) {
    TestCluster c(seed);
    c.Form(5);
    const std::vector<std::string> a = {"n1", "n2"}, b = {"n3", "n4", "n5"};
    for (const auto& x : a) {
      for (const auto& y : b) c.Cut(x, y);
    }
    c.RunFor(3000);
    ASSERT_EQ(Write(c, "n1", Address("shared"), PerMinute(5)), Result::kApplied);
    ASSERT_EQ(Write(c, "n1", Address("only-a"), PerMinute(1)), Result::kApplied);
    c.RunFor(1000);
    ASSERT_EQ(Write(c, "n4", Address("shared"), PerMinute(9)), Result::kApplied);  // later
    ASSERT_EQ(Write(c, "n4", Address("only-b"), PerMinute(2)), Result::kApplied);
    c.RunFor(1000);
    EXPECT_EQ(LimitAt(c, "n2", Address("shared")), 5u);  // each side sees its own
    EXPECT_EQ(LimitAt(c, "n5", Address("shared")), 9u);
    EXPECT_EQ(LimitAt(c, "n2", Address("only-b")), std::nullopt);
    c.HealAll();
    c.RunFor(20'000);
    for (int i = 1; i <= 5; ++i) {
      const std::string id = "n" + std::to_string(i);
      EXPECT_EQ(LimitAt(c, id, Address("shared")), 9u) << id << " seed " << seed;
      EXPECT_EQ(LimitAt(c, id, Address("only-a")), 1u) << id << " seed " << seed;
      EXPECT_EQ(LimitAt(c, id, Address("only-b")), 2u) << id << " seed " << seed;
      EXPECT_EQ(c.node(id).overrides().Digest(), c.node("n1").overrides().Digest()) << id;
    }
  }
}

// With every member's key table full, key repairs pause everywhere, yet the
// digests still run and compare the overrides: a write one member missed
// (its stream push lost) still reaches it.
TEST(NodeOverridesTest, AMissedWriteStillSpreadsWhenEveryKeyTableIsFull) {
  TestCluster c;
  for (const char* id : {"n1", "n2", "n3"}) {
    NodeConfig config = c.ConfigFor(id);
    config.limiter.max_keys = 64;
    if (std::string(id) != "n1") config.seeds = {TestCluster::AddressOf("n1")};
    c.AddWith(config);
  }
  c.RunFor(5000);
  for (int i = 0; i < 300; ++i) {  // every table fills and refuses
    CheckRequest r;
    r.request_id = static_cast<uint64_t>(i + 1);
    r.user_id = "k" + std::to_string(i);
    r.endpoint = "/api";
    r.limit = 5;
    r.window_ms = 60'000;
    ASSERT_TRUE(c.Check("n1", r).has_value());
  }
  c.RunFor(2000);
  for (const char* id : {"n1", "n2", "n3"}) {
    EXPECT_EQ(c.node(id).Status(c.Now()).counters.key_table_full, 1u) << id;
  }
  auto repairs = [&] {
    uint64_t sum = 0;
    for (const char* id : {"n1", "n2", "n3"})
      sum += c.node(id).Status(c.Now()).counters.anti_entropy_repairs;
    return sum;
  };
  const uint64_t repairs_before = repairs();
  c.DropMessages("n1", "n3", wire::NodeMessageValue::Kind::kOverrides, 1);
  ASSERT_EQ(Write(c, "n1", Address("10.0.0.9"), PerMinute(4)), Result::kApplied);
  c.RunFor(50);
  EXPECT_EQ(LimitAt(c, "n2", Address("10.0.0.9")), 4u);
  EXPECT_EQ(LimitAt(c, "n3", Address("10.0.0.9")), std::nullopt) << "the push was lost";
  c.RunFor(10'000);  // anti-entropy rounds: one random member a second each
  EXPECT_EQ(LimitAt(c, "n3", Address("10.0.0.9")), 4u);
  EXPECT_EQ(repairs(), repairs_before) << "key repairs while every table is full";
}

// An explicit override replaces the caller's limit for that (user,
// endpoint, window) whichever member the checks enter through; other keys
// and other windows keep the caller's limit; a removal gives it back.
TEST(NodeOverridesTest, AnExplicitOverrideReplacesTheCallersLimitEverywhere) {
  TestCluster c;
  c.Form(3);
  crdt::Selector alice;
  alice.kind = crdt::Selector::Kind::kExplicit;
  alice.user = "alice";
  alice.endpoint = "/api";
  alice.window_ms = 60'000;
  crdt::OverrideValue two;
  two.limit = 2;
  ASSERT_EQ(Write(c, "n2", alice, two), Result::kApplied);
  c.RunFor(50);
  auto check = [&](const std::string& via, const std::string& user, uint64_t window_ms,
                   uint64_t id) {
    CheckRequest r;
    r.request_id = id;
    r.user_id = user;
    r.endpoint = "/api";
    r.limit = 10;
    r.window_ms = window_ms;
    std::optional<CheckResult> result = c.Check(via, r);
    EXPECT_TRUE(result.has_value());
    return result.value_or(CheckResult{});
  };
  uint64_t id = 1;
  int allowed = 0;
  for (const char* via : {"n1", "n2", "n3", "n1", "n2", "n3"}) {
    const CheckResult r = check(via, "alice", 60'000, id++);
    EXPECT_EQ(r.limit, 2u) << via;
    allowed += r.allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 2);
  EXPECT_EQ(check("n1", "bob", 60'000, id++).limit, 10u);
  EXPECT_EQ(check("n1", "alice", 30'000, id++).limit, 10u);  // another window: another key
  crdt::OverrideValue removal;
  removal.removed = true;
  ASSERT_EQ(Write(c, "n3", alice, removal), Result::kApplied);
  c.RunFor(50);
  const CheckResult back = check("n2", "alice", 60'000, id++);
  EXPECT_EQ(back.limit, 10u);
  EXPECT_TRUE(back.allowed);  // 2 counted of 10
  uint64_t used = 0;
  for (const char* n : {"n1", "n2", "n3"})
    used += c.node(n).Status(c.Now()).counters.overrides_used;
  EXPECT_EQ(used, 6u);
}

TEST(NodeOverridesTest, OverridesFromANonMemberOrFromTooFarAheadAreRefused) {
  TestCluster c;
  c.Form(3);
  wire::NodeMessageValue msg;
  msg.kind = wire::NodeMessageValue::Kind::kOverrides;
  wire::LimitOverrideValue o;
  o.kind = 1;
  o.domain = "edge";
  o.entries = {{"remote_address", "forged"}};
  o.limit = 1'000'000;
  o.window_ms = 1000;
  o.stamp_wall_ms = c.Now().wall.count();
  o.writer = 42;
  msg.overrides = {o};
  auto encode = [&](const std::string& id, const std::string& address, uint64_t generation) {
    std::vector<std::byte> bytes;
    wire::EncodeNodeMessage(wire::PeerHeader{id, address, generation, c.Now().wall.count()}, msg,
                            &bytes);
    return bytes;
  };
  // A stranger.
  c.Inject("n2", "10.9.9.9:7946", encode("n9", "10.9.9.9:7946", 1));
  EXPECT_EQ(c.node("n2").overrides().size(), 0u);
  EXPECT_EQ(c.node("n2").Status(c.Now()).counters.overrides_refused, 1u);
  // A member, stamped beyond the clock allowance: refused; within it: applied.
  const uint64_t n1_generation = c.node("n1").Status(c.Now()).generation;
  msg.overrides[0].stamp_wall_ms = c.Now().wall.count() + crdt::HybridClock::kMaxAheadMs + 1000;
  c.Inject("n2", TestCluster::AddressOf("n1"),
           encode("n1", TestCluster::AddressOf("n1"), n1_generation));
  EXPECT_EQ(c.node("n2").overrides().size(), 0u);
  EXPECT_EQ(c.node("n2").Status(c.Now()).counters.overrides_refused, 2u);
  msg.overrides[0].stamp_wall_ms = c.Now().wall.count() + 1000;
  c.Inject("n2", TestCluster::AddressOf("n1"),
           encode("n1", TestCluster::AddressOf("n1"), n1_generation));
  EXPECT_EQ(LimitAt(c, "n2", Address("forged")), 1'000'000u);
  // A later local write still wins over it: the clock took in its stamp.
  ASSERT_EQ(Write(c, "n2", Address("forged"), PerMinute(3)), Result::kApplied);
  EXPECT_EQ(LimitAt(c, "n2", Address("forged")), 3u);
}

}  // namespace
}  // namespace tally::core

#include "membership/broadcast_queue.h"

#include <gtest/gtest.h>

#include <map>
#include <string>
#include <vector>

namespace tally::membership {
namespace {

MemberUpdate U(const std::string& id, uint64_t incarnation = 0) {
  return MemberUpdate{id, id + ":7946", 1, incarnation, MemberState::kAlive, {}};
}

std::vector<std::string> Ids(const std::vector<MemberUpdate>& v) {
  std::vector<std::string> ids;
  for (const auto& u : v) ids.push_back(u.id);
  return ids;
}

TEST(BroadcastQueueTest, EachRumorIsSentExactlyTransmitLimitTimes) {
  BroadcastQueue q;
  for (int i = 0; i < 30; ++i) q.Push(U(std::to_string(i) + "m"));
  std::map<std::string, int> sent;
  const int limit = 8;
  for (int round = 0; round < 1000 && !q.empty(); ++round) {
    std::vector<MemberUpdate> out;
    q.Take(300, limit, &out);  // a few per packet
    ASSERT_FALSE(out.empty());
    for (const auto& u : out) ++sent[u.id];
  }
  EXPECT_TRUE(q.empty());
  ASSERT_EQ(sent.size(), 30u);
  for (const auto& [id, n] : sent) EXPECT_EQ(n, limit) << id;
}

TEST(BroadcastQueueTest, LeastSentFirstThenNewestFirst) {
  BroadcastQueue q;
  q.Push(U("a"));
  q.Push(U("b"));
  q.Push(U("c"));
  std::vector<MemberUpdate> out;
  q.Take(EstimatedUpdateBytes(U("a")), 10, &out);      // room for one
  EXPECT_EQ(Ids(out), std::vector<std::string>{"c"});  // newest
  out.clear();
  q.Take(1000, 10, &out);
  // b and a have 0 sends, c has 1: b (newer) then a, then c.
  EXPECT_EQ(Ids(out), (std::vector<std::string>{"b", "a", "c"}));
  EXPECT_EQ(q.TransmitsOf("c"), 2);
  EXPECT_EQ(q.TransmitsOf("zz"), -1);
}

TEST(BroadcastQueueTest, NewerRumorReplacesAndResetsCount) {
  BroadcastQueue q;
  q.Push(U("a", 1));
  std::vector<MemberUpdate> out;
  q.Take(1000, 10, &out);
  q.Take(1000, 10, &out);
  EXPECT_EQ(q.TransmitsOf("a"), 2);
  q.Push(U("a", 2));
  EXPECT_EQ(q.size(), 1u);
  EXPECT_EQ(q.TransmitsOf("a"), 0);
  out.clear();
  q.Take(1000, 10, &out);
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0].incarnation, 2u);
}

TEST(BroadcastQueueTest, BudgetIsRespectedAndBigRumorsDoNotBlockSmallOnes) {
  BroadcastQueue q;
  q.Push(U("small"));
  q.Push(U(std::string(200, 'x')));  // newest, but too big for the budget
  std::vector<MemberUpdate> out;
  const size_t budget = EstimatedUpdateBytes(U("small")) + 10;
  const size_t used = q.Take(budget, 4, &out);
  EXPECT_LE(used, budget);
  EXPECT_EQ(Ids(out), std::vector<std::string>{"small"});
  out.clear();
  q.Take(0, 4, &out);
  EXPECT_TRUE(out.empty());
  q.Drop(std::string(200, 'x'));
  q.Drop("small");
  EXPECT_TRUE(q.empty());
}

}  // namespace
}  // namespace tally::membership

// The rumor precedence rule as a table: every (current state, rumor state) at
// a lower, equal and higher incarnation and generation.
#include "membership/member_table.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tally::membership {
namespace {

constexpr MemberState kStates[] = {MemberState::kAlive, MemberState::kSuspect, MemberState::kDead,
                                   MemberState::kLeft};

Member Current(MemberState state) {
  return Member{"x", "10.0.0.1:1", /*generation=*/10, /*incarnation=*/5, state, {}};
}

MemberUpdate Rumor(MemberState state, int generation_delta, int incarnation_delta) {
  return MemberUpdate{"x",
                      "10.0.0.1:1",
                      static_cast<uint64_t>(10 + generation_delta),
                      static_cast<uint64_t>(5 + incarnation_delta),
                      state,
                      "o"};
}

TEST(PrecedenceTest, SameGenerationTable) {
  // want[current][rumor]: does the rumor win? Columns A S D L.
  struct Case {
    int incarnation_delta;
    const char* want[4];  // rows: current A, S, D, L
  };
  const Case cases[] = {
      // A lower incarnation never wins: it is old news.
      {-1, {"----", "----", "----", "----"}},
      // Equal: only a "worse" state wins (suspect over alive, dead over
      // both, left over all); equal states are duplicates or confirmations.
      {0, {"-SDL", "--DL", "---L", "----"}},
      // Higher: always wins; alive over suspect/dead is a refutation.
      {+1, {"ASDL", "ASDL", "ASDL", "ASDL"}},
  };
  const char letters[] = "ASDL";
  for (const Case& c : cases) {
    for (int cur = 0; cur < 4; ++cur) {
      for (int up = 0; up < 4; ++up) {
        const bool want = c.want[cur][up] == letters[up];
        EXPECT_EQ(Supersedes(Rumor(kStates[up], 0, c.incarnation_delta), Current(kStates[cur])),
                  want)
            << "current " << StateName(kStates[cur]) << ", rumor " << StateName(kStates[up])
            << " at incarnation delta " << c.incarnation_delta;
      }
    }
  }
}

TEST(PrecedenceTest, GenerationDominates) {
  for (MemberState cur : kStates) {
    for (MemberState up : kStates) {
      for (int inc : {-5, 0, 5}) {
        // A new process beats anything said about the old one...
        EXPECT_TRUE(Supersedes(Rumor(up, +1, inc), Current(cur)));
        // ...and nothing about an old process touches the new one.
        EXPECT_FALSE(Supersedes(Rumor(up, -1, inc), Current(cur)));
      }
    }
  }
}

TEST(PrecedenceTest, SameRumorIsEqualKey) {
  EXPECT_TRUE(SameRumor(Rumor(MemberState::kSuspect, 0, 0), Current(MemberState::kSuspect)));
  EXPECT_FALSE(SameRumor(Rumor(MemberState::kSuspect, 0, 1), Current(MemberState::kSuspect)));
  EXPECT_FALSE(SameRumor(Rumor(MemberState::kDead, 0, 0), Current(MemberState::kSuspect)));
}

TEST(MemberTableTest, UpsertFindEraseAndCounts) {
  MemberTable t;
  t.Upsert(Member{"b", "b:1", 1, 0, MemberState::kAlive, {}});
  t.Upsert(Member{"a", "a:1", 1, 0, MemberState::kSuspect, {}});
  t.Upsert(Member{"c", "c:1", 1, 0, MemberState::kDead, {}});
  t.Upsert(Member{"d", "d:1", 1, 0, MemberState::kLeft, {}});
  EXPECT_EQ(t.size(), 4u);
  EXPECT_EQ(t.CountUp(), 2u);
  EXPECT_EQ(t.CountIn(MemberState::kDead), 1u);
  auto up = t.UpMembers();
  ASSERT_EQ(up.size(), 2u);
  EXPECT_EQ(up[0]->id, "a");  // sorted by id
  EXPECT_EQ(up[1]->id, "b");
  t.Upsert(Member{"b", "b:2", 2, 0, MemberState::kAlive, {}});
  EXPECT_EQ(t.Find("b")->address, "b:2");
  t.Erase("b");
  t.Erase("nobody");
  EXPECT_EQ(t.Find("b"), nullptr);
  EXPECT_EQ(t.size(), 3u);
}

TEST(MemberTableTest, CountsFollowUpsertSetStateAndErase) {
  MemberTable t;
  t.Upsert(Member{"a", "a:1", 1, 0, MemberState::kAlive, {}});
  t.Upsert(Member{"b", "b:1", 1, 0, MemberState::kAlive, {}});
  t.Upsert(Member{"c", "c:1", 1, 0, MemberState::kSuspect, {}});
  EXPECT_EQ(t.CountUp(), 3u);
  t.SetState(t.FindMutable("b"), MemberState::kDead);
  EXPECT_EQ(t.CountUp(), 2u);
  EXPECT_EQ(t.CountIn(MemberState::kDead), 1u);
  t.Upsert(Member{"b", "b:2", 2, 0, MemberState::kAlive, {}});  // replaces the dead entry
  EXPECT_EQ(t.CountIn(MemberState::kDead), 0u);
  EXPECT_EQ(t.CountIn(MemberState::kAlive), 2u);
  t.SetState(t.FindMutable("a"), MemberState::kLeft);
  t.Erase("c");
  t.Erase("c");
  EXPECT_EQ(t.CountUp(), 1u);
  EXPECT_EQ(t.CountIn(MemberState::kLeft), 1u);
  EXPECT_EQ(t.CountIn(MemberState::kSuspect), 0u);
  // The counts always equal a walk.
  for (int s = 0; s < kMemberStateCount; ++s) {
    size_t walked = 0;
    for (const auto& [id, m] : t) walked += static_cast<int>(m.state) == s ? 1 : 0;
    EXPECT_EQ(t.CountIn(static_cast<MemberState>(s)), walked);
  }
}

// The change list: every insert, replacement, state change and erase names
// its id once, in order, until cleared; past kMaxChanges it overflows (read
// the whole table) instead of growing.
TEST(MemberTableTest, ChangesListWhatChangedUntilCleared) {
  MemberTable table;
  EXPECT_TRUE(table.changes().empty());
  table.Upsert(Member{"a", "10.0.0.1:1", 1, 0, MemberState::kAlive, {}});
  table.Upsert(Member{"b", "10.0.0.2:1", 1, 0, MemberState::kAlive, {}});
  table.SetState(table.FindMutable("a"), MemberState::kSuspect);
  table.Erase("b");
  table.Erase("nobody");  // nothing changed
  EXPECT_EQ(table.changes(), (std::vector<std::string>{"a", "b", "a", "b"}));
  EXPECT_FALSE(table.changes_overflowed());
  const MemberTable copy = table;
  EXPECT_EQ(copy.changes(), table.changes());
  table.ClearChanges();
  EXPECT_TRUE(table.changes().empty());
  table.FindMutable("a");  // a look is no change
  EXPECT_TRUE(table.changes().empty());

  for (size_t i = 0; i <= MemberTable::kMaxChanges; ++i) {
    table.SetState(table.FindMutable("a"), i % 2 ? MemberState::kAlive : MemberState::kSuspect);
  }
  EXPECT_TRUE(table.changes_overflowed());
  EXPECT_TRUE(table.changes().empty()) << "dropped, not grown past the bound";
  table.ClearChanges();
  EXPECT_FALSE(table.changes_overflowed());
}

}  // namespace
}  // namespace tally::membership

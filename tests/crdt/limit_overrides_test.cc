// The runtime limit overrides map: a last-writer-wins CRDT (merge order does
// not matter, on random histories), its tombstones, its bounds against peer
// input, and the hybrid logical clock that stamps its writes.
#include "crdt/limit_overrides.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <vector>

#include "crdt/hybrid_clock.h"

namespace tally::crdt {
namespace {

Selector Descriptor(std::string domain, std::string key, std::string value) {
  Selector s;
  s.kind = Selector::Kind::kDescriptor;
  s.domain = std::move(domain);
  s.entries = {{std::move(key), std::move(value)}};
  return s;
}

Selector Explicit(std::string user, std::string endpoint, uint64_t window_ms) {
  Selector s;
  s.kind = Selector::Kind::kExplicit;
  s.user = std::move(user);
  s.endpoint = std::move(endpoint);
  s.window_ms = window_ms;
  return s;
}

OverrideEntry Set(Selector s, uint64_t limit, int64_t wall_ms, uint64_t writer = 1,
                  uint32_t logical = 0) {
  OverrideEntry e;
  const bool explicit_form = s.kind == Selector::Kind::kExplicit;
  e.selector = std::move(s);
  e.value.limit = limit;
  e.value.window_ms = explicit_form ? 0 : 60'000;
  e.stamp = {wall_ms, logical};
  e.writer = writer;
  return e;
}

OverrideEntry Remove(Selector s, int64_t wall_ms, uint64_t writer = 1) {
  OverrideEntry e;
  e.selector = std::move(s);
  e.value.removed = true;
  e.stamp = {wall_ms, 0};
  e.writer = writer;
  return e;
}

using Result = LimitOverrides::MergeResult;

TEST(HybridClockTest, FollowsPhysicalTimeAndOrdersEventsWithinOneMillisecond) {
  HybridClock clock;
  EXPECT_EQ(clock.Now(1000), (HlcTimestamp{1000, 0}));
  EXPECT_EQ(clock.Now(1000), (HlcTimestamp{1000, 1}));
  EXPECT_EQ(clock.Now(999), (HlcTimestamp{1000, 2}));  // physical time went back: still later
  EXPECT_EQ(clock.Now(1001), (HlcTimestamp{1001, 0}));
}

TEST(HybridClockTest, AnEventAfterAReceivedStampOrdersAfterIt) {
  HybridClock behind;
  ASSERT_TRUE(behind.Observe({5000, 7}, 1000));  // a peer 4 s ahead, within the allowance
  const HlcTimestamp next = behind.Now(1001);
  EXPECT_GT(next, (HlcTimestamp{5000, 7}));
}

TEST(HybridClockTest, AStampTooFarAheadIsRefusedAndChangesNothing) {
  HybridClock clock;
  clock.Now(1000);
  EXPECT_FALSE(clock.Observe({1000 + HybridClock::kMaxAheadMs + 1, 0}, 1000));
  EXPECT_EQ(clock.last(), (HlcTimestamp{1000, 0}));
  EXPECT_TRUE(clock.Observe({1000 + HybridClock::kMaxAheadMs, 0}, 1000));
}

TEST(HybridClockTest, ARestoredStampOrdersBeforeEveryLaterEventEvenWithTheClockBack) {
  // A restart restores stamps written while the wall clock read later than
  // it reads now (it went back), beyond Observe's bound.
  HybridClock clock;
  const HlcTimestamp restored{100'000 + HybridClock::kMaxAheadMs + 5'000, 7};
  EXPECT_FALSE(clock.Observe(restored, 100'000));
  clock.Restore(restored);
  EXPECT_EQ(clock.last(), restored);
  HlcTimestamp previous = restored;
  for (int64_t now : {int64_t{100'000}, int64_t{100'001}, restored.wall_ms, restored.wall_ms + 1}) {
    const HlcTimestamp next = clock.Now(now);
    EXPECT_GT(next, previous) << now;
    previous = next;
  }
  // An older stamp restored later moves nothing back.
  clock.Restore({5, 0});
  EXPECT_EQ(clock.last(), previous);
}

TEST(HybridClockTest, LogicalOverflowBorrowsTheNextMillisecond) {
  HybridClock clock;
  ASSERT_TRUE(clock.Observe({1000, UINT32_MAX}, 1000));
  EXPECT_EQ(clock.Now(1000), (HlcTimestamp{1001, 0}));
}

TEST(SelectorTest, KeysAreCanonicalAndCannotCollideThroughText) {
  EXPECT_EQ(Descriptor("edge", "k", "v").Key(), Descriptor("edge", "k", "v").Key());
  EXPECT_NE(Descriptor("edge", "k", "v").Key(), Descriptor("edge", "kv", "").Key());
  EXPECT_NE(Descriptor("ed", "gek", "v").Key(), Descriptor("edge", "k", "v").Key());
  EXPECT_NE(Explicit("u", "e", 1000).Key(), Explicit("u", "e", 2000).Key());
  Selector two = Descriptor("edge", "a", "1");
  two.entries.push_back({"b", "2"});
  Selector swapped = Descriptor("edge", "b", "2");
  swapped.entries.push_back({"a", "1"});
  EXPECT_NE(two.Key(), swapped.Key());  // entries are ordered, as Envoy's descriptors
}

Selector Adaptive(std::string domain, std::string rule) {
  Selector s;
  s.kind = Selector::Kind::kAdaptive;
  s.domain = std::move(domain);
  s.rule = std::move(rule);
  return s;
}

TEST(SelectorTest, AdaptiveKeysNameTheDomainAndRuleAndNoOtherSelector) {
  EXPECT_EQ(Adaptive("api", "backend").Key(), Selector::AdaptiveKey("api", "backend"));
  EXPECT_NE(Adaptive("api", "backend").Key(), Adaptive("apib", "ackend").Key());
  EXPECT_NE(Adaptive("api", "backend").Key(), Descriptor("api", "backend", "").Key());
  // Valid with a window; not with another kind's fields or without a name.
  EXPECT_EQ(Validate(Set(Adaptive("api", "backend"), 10, 1)), "");
  OverrideEntry no_rule = Set(Adaptive("api", ""), 10, 1);
  OverrideEntry no_window = Set(Adaptive("api", "backend"), 10, 1);
  no_window.value.window_ms = 0;
  OverrideEntry with_user = Set(Adaptive("api", "backend"), 10, 1);
  with_user.selector.user = "alice";
  OverrideEntry descriptor_with_rule = Set(Descriptor("api", "k", "v"), 10, 1);
  descriptor_with_rule.selector.rule = "backend";
  for (const OverrideEntry& e : {no_rule, no_window, with_user, descriptor_with_rule}) {
    EXPECT_NE(Validate(e), "");
  }
}

TEST(DescriptorOverrideTableTest, HoldsAdaptiveLimitsInForceApart) {
  LimitOverrides map;
  map.Merge(Set(Adaptive("api", "backend"), 364, 1000));
  map.Merge(Set(Adaptive("api", "gone"), 5, 1000));
  map.Merge(Remove(Adaptive("api", "gone"), 2000));
  const DescriptorOverrideTable table(map);
  EXPECT_FALSE(table.empty());
  EXPECT_EQ(table.adaptive_size(), 1u);
  ASSERT_NE(table.FindAdaptive("api", "backend"), nullptr);
  EXPECT_EQ(table.FindAdaptive("api", "backend")->limit, 364u);
  EXPECT_EQ(table.FindAdaptive("api", "gone"), nullptr);
  EXPECT_EQ(table.FindAdaptive("web", "backend"), nullptr);
  // A caller's scratch key gives the same answers (and holds the key built).
  std::string scratch = "left over from a descriptor lookup";
  ASSERT_NE(table.FindAdaptive("api", "backend", &scratch), nullptr);
  EXPECT_EQ(table.FindAdaptive("api", "backend", &scratch)->limit, 364u);
  EXPECT_EQ(scratch, Selector::AdaptiveKey("api", "backend"));
  EXPECT_EQ(table.FindAdaptive("api", "gone", &scratch), nullptr);
  EXPECT_FALSE(table.MayMatch("api", 0)) << "no descriptor shape";
}

TEST(LimitOverridesTest, FindEntryAndVisitAfterSeeTombstonesInKeyOrder) {
  LimitOverrides map;
  ASSERT_EQ(map.Write(Set(Explicit("b", "/e", 1000), 5, 10)), Result::kApplied);
  ASSERT_EQ(map.Write(Set(Explicit("a", "/e", 1000), 6, 10)), Result::kApplied);
  ASSERT_EQ(map.Write(Remove(Explicit("c", "/e", 1000), 10)), Result::kApplied);
  const std::string a = Explicit("a", "/e", 1000).Key(), c = Explicit("c", "/e", 1000).Key();
  ASSERT_NE(map.FindEntry(c), nullptr);
  EXPECT_TRUE(map.FindEntry(c)->value.removed);  // Find() says none; FindEntry shows why
  EXPECT_FALSE(map.Find(Explicit("c", "/e", 1000)).has_value());
  EXPECT_EQ(map.FindEntry(Explicit("d", "/e", 1000).Key()), nullptr);
  std::vector<std::string> users;
  map.VisitAfter("", [&](const std::string&, const OverrideEntry& e) {
    users.push_back(e.selector.user);
    return true;
  });
  EXPECT_EQ(users, (std::vector<std::string>{"a", "b", "c"}));
  users.clear();
  map.VisitAfter(a, [&](const std::string&, const OverrideEntry& e) {
    users.push_back(e.selector.user);
    return false;  // stops after the first
  });
  EXPECT_EQ(users, (std::vector<std::string>{"b"}));
  users.clear();
  map.VisitAfter(c, [&](const std::string&, const OverrideEntry& e) {
    users.push_back(e.selector.user);
    return true;
  });
  EXPECT_TRUE(users.empty());
}

TEST(LimitOverridesTest, TheLaterWriteWinsWhateverTheOrder) {
  const Selector s = Descriptor("edge", "remote_address", "10.0.0.1");
  for (bool later_first : {false, true}) {
    LimitOverrides map;
    const OverrideEntry early = Set(s, 5, 1000), late = Set(s, 9, 2000);
    EXPECT_EQ(map.Merge(later_first ? late : early), Result::kApplied);
    EXPECT_EQ(map.Merge(later_first ? early : late),
              later_first ? Result::kStale : Result::kApplied);
    ASSERT_TRUE(map.Find(s).has_value());
    EXPECT_EQ(map.Find(s)->limit, 9u);
  }
}

TEST(LimitOverridesTest, RestoringKeepsTombstonesAndPutsTheClockPastEveryStamp) {
  // What a node held before a restart: a set, a removal (a tombstone), and
  // a stamp from a clock that was 40 s ahead of the clock now.
  const Selector kept = Explicit("amy", "/pay", 60'000), gone = Descriptor("api", "user", "bo");
  const std::vector<OverrideEntry> saved = {Set(kept, 3, 140'000, 1, 4), Remove(gone, 90'000),
                                            Set(gone, 8, 80'000)};  // older than the removal
  Selector bad = kept;
  bad.user.clear();  // outside Validate's limits
  std::vector<OverrideEntry> with_bad = saved;
  with_bad.push_back(Set(bad, 1, 500'000));
  LimitOverrides map;
  HybridClock clock;
  const OverrideRestoreCounts counts =
      RestoreOverrides(with_bad, HlcTimestamp{120'000, 0}, &map, &clock);
  EXPECT_EQ(counts.applied, 2u);
  EXPECT_EQ(counts.stale, 1u);
  EXPECT_EQ(counts.refused, 1u);
  EXPECT_EQ(map.Find(kept)->limit, 3u);
  EXPECT_FALSE(map.Find(gone).has_value()) << "a removal came back";
  // The refused entry's stamp moved nothing; the restored set's did.
  EXPECT_EQ(clock.last(), (HlcTimestamp{140'000, 4}));
  // A write now, with the wall clock at 100 s, still wins over the restored one.
  OverrideEntry next = Set(kept, 9, 0);
  next.stamp = clock.Now(100'000);
  EXPECT_EQ(map.Write(next), Result::kApplied);
  EXPECT_EQ(map.Find(kept)->limit, 9u);
}

TEST(LimitOverridesTest, ARemovalIsATombstoneThatAnOlderSetCannotUndo) {
  const Selector s = Explicit("alice", "/search", 60'000);
  LimitOverrides map;
  EXPECT_EQ(map.Write(Set(s, 5, 1000)), Result::kApplied);
  EXPECT_EQ(map.live(), 1u);
  EXPECT_EQ(map.Write(Remove(s, 2000)), Result::kApplied);
  EXPECT_FALSE(map.Find(s).has_value());
  EXPECT_EQ(map.live(), 0u);
  EXPECT_EQ(map.size(), 1u);
  // A member that had not heard of the removal pushes its old set back.
  EXPECT_EQ(map.Merge(Set(s, 5, 1000)), Result::kStale);
  EXPECT_FALSE(map.Find(s).has_value());
  // A set after the removal brings it back.
  EXPECT_EQ(map.Merge(Set(s, 7, 3000)), Result::kApplied);
  EXPECT_EQ(map.Find(s)->limit, 7u);
}

TEST(LimitOverridesTest, EqualStampsAreBrokenByWriterThenValue) {
  const Selector s = Descriptor("edge", "k", "v");
  LimitOverrides a, b;
  const OverrideEntry one = Set(s, 5, 1000, /*writer=*/1), two = Set(s, 3, 1000, /*writer=*/2);
  a.Merge(one);
  a.Merge(two);
  b.Merge(two);
  b.Merge(one);
  EXPECT_EQ(a.Find(s)->limit, 3u);
  EXPECT_EQ(b.Find(s)->limit, 3u);
  EXPECT_EQ(a.Digest(), b.Digest());
  // Same stamp and writer, different values (a writer that reused a stamp):
  // still one answer everywhere.
  LimitOverrides c, d;
  const OverrideEntry x = Set(s, 5, 1000, 1), y = Set(s, 6, 1000, 1);
  c.Merge(x);
  c.Merge(y);
  d.Merge(y);
  d.Merge(x);
  EXPECT_EQ(c.Find(s)->limit, d.Find(s)->limit);
  EXPECT_EQ(c.Digest(), d.Digest());
}

TEST(LimitOverridesTest, MergingTheSameEntryAgainChangesNothing) {
  LimitOverrides map;
  const OverrideEntry e = Set(Descriptor("edge", "k", "v"), 5, 1000);
  EXPECT_EQ(map.Merge(e), Result::kApplied);
  const uint64_t digest = map.Digest();
  EXPECT_EQ(map.Merge(e), Result::kStale);
  EXPECT_EQ(map.Digest(), digest);
  EXPECT_EQ(map.size(), 1u);
}

// Random histories: members write on their own (as during a partition) and
// then receive every entry in a random order; every member ends with the
// same map, which is the map of the winning entries.
TEST(LimitOverridesTest, RandomHistoriesConvergeWhateverTheDeliveryOrder) {
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    std::mt19937_64 rng(seed);
    const int members = std::uniform_int_distribution<int>(2, 5)(rng);
    const int selectors = std::uniform_int_distribution<int>(1, 6)(rng);
    std::vector<HybridClock> clocks(static_cast<size_t>(members));
    std::vector<OverrideEntry> written;
    const int writes = std::uniform_int_distribution<int>(1, 40)(rng);
    for (int w = 0; w < writes; ++w) {
      const size_t m = std::uniform_int_distribution<size_t>(0, clocks.size() - 1)(rng);
      // Members' clocks are coarse and a little apart: stamps of different
      // members collide often, so the tie-breaks are exercised.
      const int64_t now = 1000 + w / 8 + static_cast<int64_t>(m % 2) * 2;
      const Selector s = Descriptor(
          "d", "k", std::to_string(std::uniform_int_distribution<int>(0, selectors)(rng)));
      OverrideEntry e = std::uniform_int_distribution<int>(0, 3)(rng) == 0
                            ? Remove(s, 0, m + 1)
                            : Set(s, std::uniform_int_distribution<uint64_t>(0, 9)(rng), 0, m + 1);
      e.stamp = clocks[m].Now(now);
      written.push_back(e);
    }
    std::vector<LimitOverrides> maps(static_cast<size_t>(members));
    for (LimitOverrides& map : maps) {
      std::vector<OverrideEntry> order = written;
      std::shuffle(order.begin(), order.end(), rng);
      // Some entries arrive twice (gossip repeats).
      for (size_t i = 0; i < order.size() / 3; ++i) order.push_back(order[i]);
      for (const OverrideEntry& e : order) {
        ASSERT_NE(map.Merge(e), Result::kInvalid) << Validate(e);
      }
    }
    for (const LimitOverrides& map : maps) {
      EXPECT_EQ(map.Digest(), maps[0].Digest()) << "seed " << seed;
      EXPECT_EQ(map.size(), maps[0].size()) << "seed " << seed;
      EXPECT_EQ(map.live(), maps[0].live()) << "seed " << seed;
      const std::vector<OverrideEntry> mine = map.Entries(), first = maps[0].Entries();
      ASSERT_EQ(mine.size(), first.size());
      for (size_t i = 0; i < mine.size(); ++i) {
        EXPECT_EQ(mine[i].selector, first[i].selector) << "seed " << seed;
        EXPECT_EQ(mine[i].value, first[i].value) << "seed " << seed;
      }
    }
    // The winner per selector is the largest written entry for it.
    for (const OverrideEntry& e : written) {
      bool beaten_or_equal = true;
      for (const OverrideEntry& other : written) {
        if (other.selector == e.selector && Wins(other, e)) beaten_or_equal = false;
      }
      if (beaten_or_equal) {
        EXPECT_EQ(maps[0].Find(e.selector).has_value(), !e.value.removed) << "seed " << seed;
        if (!e.value.removed) {
          EXPECT_EQ(maps[0].Find(e.selector)->limit, e.value.limit);
        }
      }
    }
  }
}

TEST(LimitOverridesTest, PeerEntriesOutsideTheLimitsAreRefused) {
  LimitOverrides map;
  OverrideEntry long_value =
      Set(Descriptor("edge", "k", std::string(kMaxSelectorText + 1, 'x')), 5, 1);
  OverrideEntry no_entries = Set(Descriptor("edge", "k", "v"), 5, 1);
  no_entries.selector.entries.clear();
  OverrideEntry too_many = Set(Descriptor("edge", "k", "v"), 5, 1);
  too_many.selector.entries.assign(kMaxSelectorEntries + 1, {"k", "v"});
  OverrideEntry zero_window = Set(Explicit("u", "e", 0), 5, 1);
  OverrideEntry huge_window = Set(Descriptor("edge", "k", "v"), 5, 1);
  huge_window.value.window_ms = kMaxOverrideWindowMs + 1;
  OverrideEntry huge_limit = Set(Descriptor("edge", "k", "v"), kMaxOverrideLimit + 1, 1);
  OverrideEntry dirty_removal = Remove(Descriptor("edge", "k", "v"), 1);
  dirty_removal.value.limit = 3;
  OverrideEntry bad_kind = Set(Descriptor("edge", "k", "v"), 5, 1);
  bad_kind.selector.kind = static_cast<Selector::Kind>(9);
  OverrideEntry mixed = Set(Explicit("u", "e", 1000), 5, 1);
  mixed.selector.domain = "edge";
  for (const OverrideEntry& e : {long_value, no_entries, too_many, zero_window, huge_window,
                                 huge_limit, dirty_removal, bad_kind, mixed}) {
    EXPECT_FALSE(Validate(e).empty());
    EXPECT_EQ(map.Merge(e), Result::kInvalid) << Validate(e);
  }
  EXPECT_EQ(map.size(), 0u);
  EXPECT_EQ(map.Digest(), 0u);
}

TEST(LimitOverridesTest, TheMapIsBoundedAndLocalWritesStopFirst) {
  LimitOverrides map;
  for (size_t i = 0; i < LimitOverrides::kMaxLocalEntries; ++i) {
    ASSERT_EQ(map.Write(Set(Descriptor("d", "k", std::to_string(i)), 1, 1)), Result::kApplied);
  }
  EXPECT_EQ(map.Write(Set(Descriptor("d", "k", "one more"), 1, 1)), Result::kFull);
  // A held selector can still change, locally and from peers.
  EXPECT_EQ(map.Write(Set(Descriptor("d", "k", "0"), 2, 2)), Result::kApplied);
  // Peers' entries fit up to kMaxEntries, then new selectors are refused.
  for (size_t i = map.size(); i < LimitOverrides::kMaxEntries; ++i) {
    ASSERT_EQ(map.Merge(Set(Descriptor("d", "peer", std::to_string(i)), 1, 1)), Result::kApplied);
  }
  EXPECT_EQ(map.Merge(Set(Descriptor("d", "peer", "beyond"), 1, 1)), Result::kFull);
  EXPECT_EQ(map.size(), LimitOverrides::kMaxEntries);
  EXPECT_EQ(map.Merge(Set(Descriptor("d", "k", "0"), 3, 3)), Result::kApplied);
}

TEST(LimitOverridesTest, OldTombstonesCanBeDroppedAndTheDigestFollows) {
  LimitOverrides map, reference;
  const Selector kept = Descriptor("d", "k", "kept"), gone = Descriptor("d", "k", "gone");
  map.Merge(Set(kept, 4, 1000));
  reference.Merge(Set(kept, 4, 1000));
  map.Merge(Set(gone, 4, 1000));
  map.Merge(Remove(gone, 2000));
  map.Merge(Remove(Descriptor("d", "k", "recent"), 9000));
  EXPECT_EQ(map.DropTombstonesBefore({5000, 0}), 1u);
  EXPECT_EQ(map.size(), 2u);
  reference.Merge(Remove(Descriptor("d", "k", "recent"), 9000));
  EXPECT_EQ(map.Digest(), reference.Digest());
  EXPECT_EQ(map.Find(kept)->limit, 4u);
}

TEST(LimitOverridesTest, VersionMovesOnEveryChangeAndOnlyThen) {
  LimitOverrides map;
  EXPECT_EQ(map.version(), 0u);
  const Selector s = Descriptor("d", "k", "v");
  ASSERT_EQ(map.Write(Set(s, 4, 1000)), Result::kApplied);
  const uint64_t after_set = map.version();
  EXPECT_GT(after_set, 0u);
  EXPECT_EQ(map.Merge(Set(s, 4, 1000)), Result::kStale);
  EXPECT_EQ(map.Merge(Set(s, 9, 500)), Result::kStale);
  EXPECT_EQ(map.version(), after_set);
  ASSERT_EQ(map.Merge(Remove(s, 2000)), Result::kApplied);
  EXPECT_GT(map.version(), after_set);
  const uint64_t after_remove = map.version();
  EXPECT_EQ(map.DropTombstonesBefore({1000, 0}), 0u);
  EXPECT_EQ(map.version(), after_remove);
  EXPECT_EQ(map.DropTombstonesBefore({3000, 0}), 1u);
  EXPECT_GT(map.version(), after_remove);
}

TEST(DescriptorOverrideTableTest, HoldsTheDescriptorOverridesInForceUnderTheirKeys) {
  LimitOverrides map;
  Selector two;
  two.kind = Selector::Kind::kDescriptor;
  two.domain = "edge";
  two.entries = {{"a", "1"}, {"b", ""}};
  map.Merge(Set(two, 7, 1000));
  map.Merge(Set(Descriptor("edge", "k", "removed"), 3, 1000));
  map.Merge(Remove(Descriptor("edge", "k", "removed"), 2000));
  map.Merge(Set(Explicit("u", "/e", 1000), 5, 1000));
  const DescriptorOverrideTable table(map);
  EXPECT_EQ(table.size(), 1u);  // no tombstone, no explicit selector
  // The key built from views is the selector's Key().
  std::string key = "left over";
  Selector::DescriptorKeyStart(&key, "edge", 2);
  Selector::DescriptorKeyEntry(&key, "a", "1");
  Selector::DescriptorKeyEntry(&key, "b", "");
  EXPECT_EQ(key, two.Key());
  ASSERT_NE(table.Find(key), nullptr);
  EXPECT_EQ(table.Find(key)->limit, 7u);
  EXPECT_EQ(table.Find(Descriptor("edge", "k", "removed").Key()), nullptr);
  // MayMatch: by domain and entry count only.
  EXPECT_TRUE(table.MayMatch("edge", 2));
  EXPECT_FALSE(table.MayMatch("edge", 1));
  EXPECT_FALSE(table.MayMatch("edg", 2));
  EXPECT_FALSE(table.MayMatch("edge2", 2));
  EXPECT_FALSE(DescriptorOverrideTable().MayMatch("edge", 2));
  EXPECT_TRUE(DescriptorOverrideTable(LimitOverrides()).empty());
}

}  // namespace
}  // namespace tally::crdt

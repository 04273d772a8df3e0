// The ring: balance, minimal disruption, preference lists, determinism, and
// the measurement behind choosing rendezvous hashing over a ring of virtual
// nodes (figures quoted in membership/ring.h).
#include "membership/ring.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "membership/random.h"

namespace tally::membership {
namespace {

using crdt::KeyId;

std::vector<KeyId> RandomKeys(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<KeyId> keys(n);
  for (auto& k : keys) k = KeyId{rng(), rng()};
  return keys;
}

std::vector<RingMember> Members(size_t n) {
  std::vector<RingMember> v;
  for (size_t i = 0; i < n; ++i) {
    v.push_back({"node-" + std::to_string(i), "10.0.0." + std::to_string(i) + ":7946", 1.0});
  }
  return v;
}

// The alternative measured against: a hash ring with `vnodes` points per member.
class VnodeRing {
 public:
  VnodeRing(const std::vector<RingMember>& members, int vnodes) {
    for (size_t i = 0; i < members.size(); ++i) {
      const uint64_t h = Ring::HashMemberId(members[i].id);
      for (int v = 0; v < vnodes; ++v) {
        points_.emplace_back(Ring::Mix64(h + 0x9e3779b97f4a7c15ull * (v + 1)), i);
      }
    }
    std::sort(points_.begin(), points_.end());
    ids_.reserve(members.size());
    for (const auto& m : members) ids_.push_back(m.id);
  }
  const std::string& Owner(const KeyId& key) const {
    const uint64_t h = Ring::Mix64(key.low ^ Ring::Mix64(key.high));
    auto it = std::upper_bound(points_.begin(), points_.end(), std::make_pair(h, SIZE_MAX));
    if (it == points_.end()) it = points_.begin();
    return ids_[it->second];
  }

 private:
  std::vector<std::pair<uint64_t, size_t>> points_;
  std::vector<std::string> ids_;
};

template <typename OwnerFn>
double PeakOverMean(const std::vector<KeyId>& keys, size_t members, OwnerFn owner) {
  std::map<std::string, size_t> count;
  for (const auto& k : keys) ++count[owner(k)];
  size_t peak = 0;
  for (const auto& [id, c] : count) peak = std::max(peak, c);
  return static_cast<double>(peak) / (static_cast<double>(keys.size()) / members);
}

template <typename OwnerA, typename OwnerB>
double MovedFraction(const std::vector<KeyId>& keys, OwnerA before, OwnerB after) {
  size_t moved = 0;
  for (const auto& k : keys) moved += before(k) != after(k) ? 1 : 0;
  return static_cast<double>(moved) / keys.size();
}

TEST(RingTest, BalanceTenNodes200kKeys) {
  const auto keys = RandomKeys(200000, 1);
  Ring ring(Members(10));
  const double ratio =
      PeakOverMean(keys, 10, [&](const KeyId& k) { return ring.members()[ring.OwnerIndex(k)].id; });
  std::printf("rendezvous, 10 nodes, 200k keys: peak/mean %.4f\n", ratio);
  EXPECT_LE(ratio, 1.1);
}

TEST(RingTest, MeasuredAgainstVirtualNodeRings) {
  const auto keys = RandomKeys(200000, 2);
  auto ten = Members(10), eleven = Members(11);
  Ring r10(ten), r11(eleven);
  auto rv = [](const Ring& r) {
    return [&r](const KeyId& k) { return r.members()[r.OwnerIndex(k)].id; };
  };
  const double rv_peak = PeakOverMean(keys, 10, rv(r10));
  const double rv_moved = MovedFraction(keys, rv(r10), rv(r11));
  std::printf("rendezvous:        peak/mean %.4f, moved on join %.4f (ideal %.4f)\n", rv_peak,
              rv_moved, 1.0 / 11);
  for (int vnodes : {100, 512}) {
    VnodeRing v10(ten, vnodes), v11(eleven, vnodes);
    auto vo = [](const VnodeRing& r) { return [&r](const KeyId& k) { return r.Owner(k); }; };
    const double peak = PeakOverMean(keys, 10, vo(v10));
    const double moved = MovedFraction(keys, vo(v10), vo(v11));
    std::printf("ring, %3d vnodes:  peak/mean %.4f, moved on join %.4f\n", vnodes, peak, moved);
    EXPECT_LT(rv_peak, peak);  // the choice: rendezvous balances better
  }
}

TEST(RingTest, JoinAndLeaveMoveOnlyTheirShare) {
  const auto keys = RandomKeys(200000, 3);
  for (size_t n : {3, 10, 25}) {
    auto members = Members(n + 1);
    Ring before(std::vector<RingMember>(members.begin(), members.end() - 1));
    Ring after(members);
    const std::string& joiner = members.back().id;
    size_t moved = 0, wrong = 0;
    for (const auto& k : keys) {
      const auto& a = before.members()[before.OwnerIndex(k)].id;
      const auto& b = after.members()[after.OwnerIndex(k)].id;
      if (a != b) {
        ++moved;
        wrong += b != joiner ? 1 : 0;  // a key may only move to the joiner
      }
    }
    const double joined = static_cast<double>(moved) / keys.size();
    EXPECT_EQ(wrong, 0u);
    EXPECT_LE(joined, 1.1 / static_cast<double>(n + 1)) << n;
    // Leaving is the same change backwards: only the leaver's keys move.
    const double left = MovedFraction(
        keys, [&](const KeyId& k) { return after.members()[after.OwnerIndex(k)].id; },
        [&](const KeyId& k) { return before.members()[before.OwnerIndex(k)].id; });
    EXPECT_LE(left, 1.1 / static_cast<double>(n + 1)) << n;
    std::printf("n=%zu -> %zu: moved %.4f (ideal %.4f)\n", n, n + 1, joined, 1.0 / (n + 1));
    // Preference lists lose only the leaver: the rest keep their order.
    std::vector<uint32_t> pa, pb;
    for (size_t i = 0; i < 2000; ++i) {
      after.PreferenceList(keys[i], 3, &pa);
      before.PreferenceList(keys[i], 3, &pb);
      std::vector<std::string> without;
      for (uint32_t x : pa) {
        if (after.members()[x].id != joiner) without.push_back(after.members()[x].id);
      }
      for (size_t j = 0; j < without.size(); ++j) EXPECT_EQ(without[j], before.members()[pb[j]].id);
    }
  }
}

TEST(RingTest, PreferenceListsHaveDistinctMembers) {
  const auto keys = RandomKeys(5000, 4);
  for (size_t n = 0; n <= 6; ++n) {
    Ring ring(Members(n));
    for (size_t r : {1, 3, 5}) {
      std::vector<uint32_t> list;
      for (const auto& k : keys) {
        ring.PreferenceList(k, r, &list);
        ASSERT_EQ(list.size(), std::min(r, n));
        std::set<uint32_t> distinct(list.begin(), list.end());
        EXPECT_EQ(distinct.size(), list.size());
        if (!list.empty()) {
          EXPECT_EQ(list[0], ring.OwnerIndex(k));
        }
      }
    }
  }
  EXPECT_EQ(Ring().PreferenceIds(keys[0]).size(), 0u);
  EXPECT_EQ(Ring(Members(5)).PreferenceIds(keys[0]).size(), Ring::kDefaultReplicas);
  // A big r works too.
  std::vector<uint32_t> all;
  Ring(Members(40)).PreferenceList(keys[0], 40, &all);
  EXPECT_EQ(std::set<uint32_t>(all.begin(), all.end()).size(), 40u);
}

TEST(RingTest, AllLookupPathsAgree) {
  // Fast path (r <= 8, n <= 256), long lists and large rings must rank alike.
  const auto keys = RandomKeys(3000, 9);
  for (size_t n : {2, 10, 256, 300, 1000}) {
    Ring ring(Members(n));
    std::vector<uint32_t> three, nine;
    for (const auto& k : keys) {
      ring.PreferenceList(k, 3, &three);
      ring.PreferenceList(k, 9, &nine);
      ASSERT_EQ(three.size(), std::min<size_t>(3, n));
      EXPECT_TRUE(std::equal(three.begin(), three.end(), nine.begin())) << n;
      EXPECT_EQ(three[0], ring.OwnerIndex(k));
    }
  }
}

TEST(RingTest, DeterministicRegardlessOfInsertionOrder) {
  const auto keys = RandomKeys(20000, 5);
  auto members = Members(12);
  Ring a(members);
  Rng rng(6);
  Shuffle(rng, &members);
  members.push_back(members[3]);  // a duplicate changes nothing
  Ring b(members);
  ASSERT_EQ(a.size(), b.size());
  for (const auto& k : keys) EXPECT_EQ(a.PreferenceIds(k), b.PreferenceIds(k));
  // Pinned values: the hash is part of the cluster contract and must not
  // change between builds or platforms.
  EXPECT_EQ(Ring::HashMemberId(""), Ring::Mix64(0xcbf29ce484222325ull));
  EXPECT_EQ(Ring::Mix64(1), 0x5692161d100b05e5ull);
  EXPECT_EQ(Ring::HashMemberId("node-0"), 0x39d57125ce554e2bull);
}

TEST(RingTest, IncrementalChangesMatchARebuild) {
  // Upsert/Erase one member at a time (the node's view during a join storm)
  // must give exactly the ring built from the resulting member set.
  const auto keys = RandomKeys(2000, 11);
  auto members = Members(300);  // crosses the 256-member fast-path limit
  Rng rng(12);
  Shuffle(rng, &members);
  Ring incremental;
  std::map<std::string, RingMember> truth;
  auto check = [&] {
    std::vector<RingMember> all;
    for (const auto& [id, m] : truth) all.push_back(m);
    Ring rebuilt(all);
    ASSERT_EQ(incremental.size(), rebuilt.size());
    for (size_t i = 0; i < rebuilt.size(); ++i) {
      EXPECT_EQ(incremental.members()[i].id, rebuilt.members()[i].id);
      EXPECT_EQ(incremental.members()[i].address, rebuilt.members()[i].address);
    }
    std::vector<uint32_t> a, b;
    for (size_t k = 0; k < 200; ++k) {
      incremental.PreferenceList(keys[k], 3, &a);
      rebuilt.PreferenceList(keys[k], 3, &b);
      EXPECT_EQ(a, b);
    }
  };
  for (size_t i = 0; i < members.size(); ++i) {
    const auto [index, inserted] = incremental.Upsert(members[i]);
    EXPECT_TRUE(inserted);
    EXPECT_EQ(incremental.members()[index].id, members[i].id);
    truth[members[i].id] = members[i];
    if (i % 37 == 0) check();
  }
  check();
  // Re-upserting changes the address in place; erasing reports the index.
  RingMember moved = members[5];
  moved.address = "10.9.9.9:1";
  const auto [index, inserted] = incremental.Upsert(moved);
  EXPECT_FALSE(inserted);
  EXPECT_EQ(incremental.members()[index].address, "10.9.9.9:1");
  truth[moved.id] = moved;
  for (size_t i = 0; i < members.size(); i += 3) {
    const auto was = incremental.Erase(members[i].id);
    ASSERT_TRUE(was.has_value());
    truth.erase(members[i].id);
    if (i % 51 == 0) check();
  }
  EXPECT_FALSE(incremental.Erase("nobody").has_value());
  check();
  // A weighted member turns the weighted path on, and erasing it off again.
  RingMember heavy{"zz-heavy", "h:1", 3.0};
  incremental.Upsert(heavy);
  truth[heavy.id] = heavy;
  check();
  incremental.Erase(heavy.id);
  truth.erase(heavy.id);
  check();
}

TEST(RingTest, SortedAndUnsortedInputBuildTheSameRing) {
  auto members = Members(50);
  std::sort(members.begin(), members.end(),
            [](const RingMember& a, const RingMember& b) { return a.id < b.id; });
  Ring sorted(members);
  std::reverse(members.begin(), members.end());
  Ring reversed(members);
  ASSERT_EQ(sorted.size(), reversed.size());
  for (size_t i = 0; i < sorted.size(); ++i) {
    EXPECT_EQ(sorted.members()[i].id, reversed.members()[i].id);
  }
  for (const auto& k : RandomKeys(500, 13))
    EXPECT_EQ(sorted.PreferenceIds(k), reversed.PreferenceIds(k));
}

TEST(RingTest, FromTableUsesUpMembers) {
  MemberTable t;
  t.Upsert(Member{"a", "a:1", 1, 0, MemberState::kAlive, {}});
  t.Upsert(Member{"b", "b:1", 1, 0, MemberState::kSuspect, {}});
  t.Upsert(Member{"c", "c:1", 1, 0, MemberState::kDead, {}});
  t.Upsert(Member{"d", "d:1", 1, 0, MemberState::kLeft, {}});
  Ring ring = Ring::FromTable(t);
  ASSERT_EQ(ring.size(), 2u);
  EXPECT_EQ(ring.members()[0].id, "a");
  EXPECT_EQ(ring.members()[1].id, "b");
}

TEST(RingTest, WeightsShareKeysProportionally) {
  const auto keys = RandomKeys(100000, 7);
  auto members = Members(4);
  members[0].weight = 2.0;
  Ring ring(members);
  std::map<std::string, size_t> count;
  for (const auto& k : keys) ++count[ring.members()[ring.OwnerIndex(k)].id];
  const double share0 = static_cast<double>(count["node-0"]) / keys.size();
  EXPECT_NEAR(share0, 2.0 / 5.0, 0.01);
  EXPECT_NEAR(static_cast<double>(count["node-1"]) / keys.size(), 1.0 / 5.0, 0.01);
}

TEST(RingTest, LookupCostNote) {
  // Not an assertion: prints the figure quoted in ring.h.
  const auto keys = RandomKeys(100000, 8);
  for (size_t n : {10, 100}) {
    Ring ring(Members(n));
    std::vector<uint32_t> list;
    uint64_t sink = 0;
    const auto start = std::chrono::steady_clock::now();
    for (int rep = 0; rep < 5; ++rep) {
      for (const auto& k : keys) {
        ring.PreferenceList(k, 3, &list);
        sink += list[0];
      }
    }
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                        std::chrono::steady_clock::now() - start)
                        .count();
    std::printf("rendezvous PreferenceList(R=3), %zu members: %.1f ns/lookup (sink %llu)\n", n,
                static_cast<double>(ns) / (5.0 * keys.size()),
                static_cast<unsigned long long>(sink % 10));
  }
}

}  // namespace
}  // namespace tally::membership

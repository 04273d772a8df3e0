// RuleCounters (daemon/rls/rule_counters.h): per-rule counters indexed by
// ResolvedLimit::rule_limit, kept through reloads, counted without a lock.
#include "daemon/rls/rule_counters.h"

#include <gtest/gtest.h>

#include <string>
#include <thread>
#include <vector>

#include "rules/rules.h"

namespace tally::rls {
namespace {

std::shared_ptr<const rules::RuleSet> Build(const std::string& yaml) {
  const rules::RuleSource source{"test.yaml", yaml};
  rules::BuildResult result = rules::BuildRuleSet({&source, 1});
  for (const rules::RuleError& e : result.errors) ADD_FAILURE() << e.ToString();
  return result.rules;
}

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: tier
    rate_limits:
      - {unit: second, requests_per_unit: 50, name: burst}
      - {unit: hour, requests_per_unit: 2, name: hourly}
)";

// The rule_limit index of (rule path, name) in `rules`.
uint32_t IndexOf(const rules::RuleSet& rules, std::string_view path, std::string_view name) {
  const auto limits = rules.rule_limits();
  for (uint32_t i = 0; i < limits.size(); ++i) {
    if (limits[i].rule_path == path && limits[i].name == name) return i;
  }
  ADD_FAILURE() << "no rule limit " << path << " " << name;
  return 0;
}

TEST(RuleCountersTest, CountsHitsOverNearAndShadow) {
  RuleCounters counters;
  auto rules = Build(kRules);
  auto table = counters.TableFor(*rules);
  ASSERT_EQ(table->size(), 3u);
  RuleCounters::Cell& cell = *(*table)[IndexOf(*rules, "edge.remote_address", "")];
  RuleCounters::Count(cell, 2, /*allowed=*/true, false, 10, 9);   // 10% used
  RuleCounters::Count(cell, 1, /*allowed=*/true, false, 10, 2);   // 80% used: near
  RuleCounters::Count(cell, 3, /*allowed=*/false, false, 10, 0);  // over
  RuleCounters::Count(cell, 4, /*allowed=*/false, true, 10, 0);   // shadow
  const std::vector<RuleCounters::Totals> totals = counters.Snapshot();
  ASSERT_EQ(totals.size(), 1u);  // rules nothing counted in are left out
  EXPECT_EQ(totals[0].rule, "edge.remote_address");
  EXPECT_EQ(totals[0].name, "");
  EXPECT_EQ(totals[0].hits, 10u);
  EXPECT_EQ(totals[0].near_limit, 1u);
  EXPECT_EQ(totals[0].over_limit, 3u);
  EXPECT_EQ(totals[0].shadow_mode, 4u);
}

// The status page's "rules nearest their limits": the highest share of the
// limit one key used, over this peak period and the last one; older periods
// are forgotten, and a denial counts as the whole limit.
TEST(RuleCountersTest, PeakShareCoversThisPeriodAndTheLastOnly) {
  RuleCounters counters;
  auto rules = Build(kRules);
  auto table = counters.TableFor(*rules);
  RuleCounters::Cell& cell = *(*table)[IndexOf(*rules, "edge.remote_address", "")];
  RuleCounters::Count(cell, 1, true, false, 10, 3, 60'000, /*period=*/7);  // 70% used
  RuleCounters::Count(cell, 1, true, false, 10, 8, 60'000, 7);             // 20%: not a peak
  ASSERT_EQ(counters.Snapshot(7).size(), 1u);
  EXPECT_DOUBLE_EQ(counters.Snapshot(7)[0].peak_used, 0.7);
  EXPECT_EQ(counters.Snapshot(7)[0].limit, 10u);
  EXPECT_EQ(counters.Snapshot(7)[0].window_ms, 60'000u);
  RuleCounters::Count(cell, 1, true, false, 10, 9, 60'000, 8);  // 10% in the next period
  EXPECT_DOUBLE_EQ(counters.Snapshot(8)[0].peak_used, 0.7);     // the last period still counts
  EXPECT_DOUBLE_EQ(counters.Snapshot(9)[0].peak_used, 0.1);     // period 7 is over
  RuleCounters::Count(cell, 1, false, false, 10, 0, 60'000, 9);  // denied: the whole limit
  EXPECT_DOUBLE_EQ(counters.Snapshot(9)[0].peak_used, 1.0);
  // Period 9 reuses period 7's slot: nothing of 7 is left in it.
  EXPECT_DOUBLE_EQ(counters.Snapshot(11)[0].peak_used, 0.0);
  EXPECT_EQ(counters.Snapshot(11)[0].hits, 4u);  // counts are never forgotten
}

TEST(RuleCountersTest, ARuleKeepsItsCellThroughReloads) {
  RuleCounters counters;
  auto old_rules = Build(kRules);
  auto old_table = counters.TableFor(*old_rules);
  auto new_rules = Build(std::string(kRules) +
                         "  - key: extra\n    rate_limit: {unit: second, requests_per_unit: 1}\n");
  auto new_table = counters.TableFor(*new_rules);
  ASSERT_EQ(new_table->size(), 4u);
  // The same rule and name: the same cell, so a call finishing on the old
  // rules counts where calls on the new rules do.
  EXPECT_EQ((*old_table)[IndexOf(*old_rules, "edge.tier", "hourly")],
            (*new_table)[IndexOf(*new_rules, "edge.tier", "hourly")]);
  EXPECT_NE((*new_table)[IndexOf(*new_rules, "edge.extra", "")],
            (*new_table)[IndexOf(*new_rules, "edge.tier", "hourly")]);
}

// Two threads count on one table while a third reloads: nothing is lost.
TEST(RuleCountersTest, ConcurrentCountsAreAllKept) {
  RuleCounters counters;
  auto rules = Build(kRules);
  auto table = counters.TableFor(*rules);
  const uint32_t burst = IndexOf(*rules, "edge.tier", "burst");
  constexpr int kPerThread = 100'000;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        RuleCounters::Count(*(*table)[burst], 1, true, false, 50, 49);
      }
    });
  }
  threads.emplace_back([&] {
    for (int i = 0; i < 100; ++i) counters.TableFor(*Build(kRules));
  });
  for (std::thread& t : threads) t.join();
  bool found = false;
  for (const RuleCounters::Totals& t : counters.Snapshot()) {
    if (t.name != "burst") continue;
    found = true;
    EXPECT_EQ(t.hits, 2u * kPerThread);
  }
  EXPECT_TRUE(found);
}

}  // namespace
}  // namespace tally::rls

// AdaptiveHost: rules in force, report sums and owned controllers
// (daemon/core/adaptive_host.h).
#include "daemon/core/adaptive_host.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/daemon/core/adaptive_rules.h"

namespace tally::core {
namespace {

using Step = rules::AdaptiveLimit::Step;

AdaptiveRuleConfig Rule(std::string domain, std::string name) {
  return testing::LatencyRule(std::move(domain), std::move(name));
}

TEST(AdaptiveHostTest, ReportsToUnknownRulesOrOutOfRangeAreRefusedAndCounted) {
  AdaptiveHost host;
  host.SetRules({Rule("api", "backend")});
  using R = AdaptiveHost::ReportResult;
  EXPECT_EQ(host.Report("api", "backend", 20, 5), R::kAccepted);
  EXPECT_EQ(host.Report("api", "other", 20, 5), R::kUnknownRule);
  EXPECT_EQ(host.Report("web", "backend", 20, 5), R::kUnknownRule);
  EXPECT_EQ(host.Report("api", "backend", -1, 5), R::kInvalid);
  EXPECT_EQ(host.Report("api", "backend", std::nan(""), 5), R::kInvalid);
  EXPECT_EQ(host.Report("api", "backend", 1e9, 5), R::kInvalid);  // above a day
  EXPECT_EQ(host.Report("api", "backend", 20, 0), R::kInvalid);
  // A member's sum whose max is below its mean, or whose sum is not finite.
  EXPECT_EQ(host.Absorb("api", "backend", AdaptiveSum{100, 2, 10}), R::kInvalid);
  EXPECT_EQ(host.Absorb("api", "backend", AdaptiveSum{INFINITY, 2, 10}), R::kInvalid);
  EXPECT_EQ(host.Absorb("api", "backend", AdaptiveSum{100, 2, 60}), R::kAccepted);
  EXPECT_EQ(host.counters().reports_accepted, 2u);
  EXPECT_EQ(host.counters().reports_unknown, 2u);
  EXPECT_EQ(host.counters().reports_invalid, 6u);
  const AdaptiveSum pending = host.TakePending(0);
  EXPECT_EQ(pending.count, 7u);
  EXPECT_DOUBLE_EQ(pending.sum, 200);
  EXPECT_DOUBLE_EQ(pending.max, 60);
  EXPECT_EQ(host.TakePending(0).count, 0u) << "taken once";
}

TEST(AdaptiveHostTest, AnOwnerStepsOncePerIntervalFromWhatIsPublished) {
  AdaptiveHost host;
  host.SetRules({Rule("api", "backend")});
  // A new owner starts from the published 300, not from the rule's 500.
  AdaptiveHost::OwnedStep s = host.StepOwned(0, 300, true, 0);
  EXPECT_TRUE(s.started);
  EXPECT_EQ(s.tick.step, Step::kOpen);
  EXPECT_EQ(host.ControllerLimit(0), 300u);
  // Slow backend for the interval: 0.9 x 300.
  ASSERT_EQ(host.Report("api", "backend", 200, 400), AdaptiveHost::ReportResult::kAccepted);
  EXPECT_FALSE(s.publish.has_value()) << "300 is already in force";
  s = host.StepOwned(0, 300, true, 500);
  EXPECT_EQ(s.tick.step, Step::kOpen);
  EXPECT_FALSE(s.publish.has_value());
  s = host.StepOwned(0, 300, false, 1000);
  EXPECT_EQ(s.tick.step, Step::kDecreased);
  EXPECT_EQ(s.tick.limit, 270u);
  EXPECT_EQ(s.publish, 270u);
  // Until the map holds 270, each step publishes it again; then nothing.
  EXPECT_EQ(host.StepOwned(0, 300, false, 1100).publish, 270u);
  EXPECT_FALSE(host.StepOwned(0, 270, false, 1200).publish.has_value());
  EXPECT_EQ(host.counters().steps_decreased, 1u);
  // Not owning any more: the controller goes, the next owner starts over.
  host.TakePending(0);
  EXPECT_FALSE(host.ControllerLimit(0).has_value());
}

TEST(AdaptiveHostTest, AnotherMembersLaterWriteIsAdoptedNotFought) {
  AdaptiveHost host;
  host.SetRules({Rule("api", "backend")});
  host.StepOwned(0, std::nullopt, false, 0);
  EXPECT_EQ(host.ControllerLimit(0), 500u);
  // Our own write in the map changes nothing; another member's does.
  EXPECT_FALSE(host.StepOwned(0, 500, false, 10).adopted);
  const AdaptiveHost::OwnedStep s = host.StepOwned(0, 120, true, 20);
  EXPECT_TRUE(s.adopted);
  EXPECT_EQ(host.ControllerLimit(0), 120u);
  EXPECT_EQ(host.counters().adoptions, 1u);
}

TEST(AdaptiveHostTest, ANewRuleSetKeepsTheControllersOfUnchangedRulesOnly) {
  AdaptiveHost host;
  host.SetRules({Rule("api", "a"), Rule("api", "b")});
  host.StepOwned(0, 200, true, 0);
  host.StepOwned(1, 200, true, 0);
  AdaptiveRuleConfig changed = Rule("api", "b");
  changed.config.target = 80;
  host.SetRules({changed, Rule("api", "a"), Rule("web", "c")});
  ASSERT_EQ(host.rule_count(), 3u);
  EXPECT_EQ(host.Find("api", "a"), 0u);
  EXPECT_EQ(host.ControllerLimit(0), 200u) << "unchanged: kept";
  EXPECT_FALSE(host.ControllerLimit(1).has_value()) << "a new law starts over";
  EXPECT_FALSE(host.ControllerLimit(2).has_value());
  // Duplicates and more than the parser's bound are not kept.
  std::vector<AdaptiveRuleConfig> many;
  for (size_t i = 0; i < rules::kMaxAdaptiveLimits + 10; ++i) {
    many.push_back(Rule("d", "r" + std::to_string(i)));
  }
  many.push_back(Rule("d", "r1"));
  host.SetRules(many);
  EXPECT_EQ(host.rule_count(), rules::kMaxAdaptiveLimits);
}

TEST(AdaptiveHostTest, SumsBeyondAStepsThirtyTwoBitCountAreRefused) {
  AdaptiveHost host;
  host.SetRules({Rule("api", "backend")});
  const uint64_t most = std::numeric_limits<uint32_t>::max();
  EXPECT_EQ(host.Report("api", "backend", 1, most + 1), AdaptiveHost::ReportResult::kInvalid);
  EXPECT_EQ(host.Report("api", "backend", 1, most), AdaptiveHost::ReportResult::kAccepted);
  EXPECT_EQ(host.Report("api", "backend", 1, 1), AdaptiveHost::ReportResult::kInvalid);
  EXPECT_EQ(host.TakePending(0).count, most);
}

}  // namespace
}  // namespace tally::core

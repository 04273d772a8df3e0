// Runtime limit overrides in the rules path (daemon/rls/rls_mapping.h,
// docs/ENVOY.md "Runtime overrides"): a descriptor-form override replaces
// the limit in force for exactly its (domain, entries), over the rules and
// the request's own `limit`; a removal brings the rule back; a window that
// is no whole unit reports UNKNOWN. A real Limiter decides.
#include <gtest/gtest.h>

#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "crdt/limit_overrides.h"
#include "daemon/rls/rls_mapping.h"
#include "tally/limiter.h"

namespace tally::rls {
namespace {

using std::chrono::milliseconds;

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_ip}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: tier
    value: gold
    rate_limits:
      - {unit: second, requests_per_unit: 5, name: burst}
      - {unit: hour, requests_per_unit: 2, name: hourly}
  - key: canary
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: plan
    rate_limit: {unit: minute, requests_per_unit: 2, name: per_plan}
  - key: vip
    rate_limit: {unit: minute, requests_per_unit: 100, replaces: [{name: per_plan}]}
  - key: backend
    rate_limit:
      unit: minute
      requests_per_unit: 50
      name: adaptive_backend
      adaptive: {min: 5, max: 100, signal: latency_ms, target: 50}
)";

std::shared_ptr<const rules::RuleSet> Rules() {
  std::vector<rules::RuleSource> sources{{"edge.yaml", kRules}};
  rules::BuildResult built = rules::BuildRuleSet(sources);
  EXPECT_TRUE(built.ok()) << (built.errors.empty() ? "" : built.errors[0].ToString());
  return built.rules;
}

RlsRequest Request(std::vector<std::vector<RlsEntry>> descriptors, std::string domain = "edge") {
  RlsRequest r;
  r.domain = std::move(domain);
  for (auto& entries : descriptors) r.descriptors.push_back({std::move(entries), std::nullopt});
  return r;
}

crdt::Selector Descriptor(std::string domain,
                          std::vector<std::pair<std::string, std::string>> entries) {
  crdt::Selector s;
  s.kind = crdt::Selector::Kind::kDescriptor;
  s.domain = std::move(domain);
  s.entries = std::move(entries);
  return s;
}

class RlsOverridesTest : public ::testing::Test {
 protected:
  // Sets (or with limit = nullopt removes) an override in the map, as a
  // member's write would, and freezes the table the doors read.
  void Write(const crdt::Selector& selector, std::optional<uint64_t> limit,
             uint64_t window_ms = 60'000) {
    crdt::OverrideEntry e;
    e.selector = selector;
    e.value.removed = !limit.has_value();
    e.value.limit = limit.value_or(0);
    e.value.window_ms = limit ? window_ms : 0;
    e.stamp = {++stamp_ms_, 0};
    e.writer = 1;
    ASSERT_EQ(map_.Write(e), crdt::LimitOverrides::MergeResult::kApplied);
    table_ = std::make_unique<crdt::DescriptorOverrideTable>(map_);
  }

  // Builds against the rules and the table, decides with the Limiter, answers.
  RlsAnswer Decide(const RlsRequest& request, bool shadow = false) {
    RlsPlan plan;
    std::string error;
    EXPECT_TRUE(plan.Build(*rules_, request, shadow, &error, table_.get())) << error;
    last_runtime_ = plan.runtime_overrides();
    last_adaptive_ = plan.adaptive_limits();
    std::vector<CheckResult> results;
    if (!plan.checks().empty()) limiter_.CheckBatch(plan.checks(), now_, &results);
    RlsAnswer answer;
    EXPECT_EQ(plan.Answer(results, &answer, &error), Status::kOk) << error;
    return answer;
  }

  std::shared_ptr<const rules::RuleSet> rules_ = Rules();
  crdt::LimitOverrides map_;
  std::unique_ptr<crdt::DescriptorOverrideTable> table_;
  int64_t stamp_ms_ = 1'700'000'000'000;
  size_t last_runtime_ = 0;
  size_t last_adaptive_ = 0;
  Limiter limiter_{LimiterOptions{}};
  Instant now_{milliseconds(1'700'000'000'000), std::chrono::nanoseconds(1)};
};

TEST_F(RlsOverridesTest, OverrideReplacesTheRulesLimitAndSharesItsCounter) {
  const RlsRequest ip = Request({{{"remote_address", "10.0.0.1"}}});
  RlsAnswer a = Decide(ip);
  EXPECT_EQ(a.statuses[0].limit_remaining, 2u);
  EXPECT_EQ(last_runtime_, 0u);
  // 2 per minute from now on: same window, so the same counter: the hit
  // counted under the rule counts against the override.
  Write(Descriptor("edge", {{"remote_address", "10.0.0.1"}}), 2);
  a = Decide(ip);
  EXPECT_EQ(last_runtime_, 1u);
  ASSERT_TRUE(a.statuses[0].current_limit);
  EXPECT_EQ(a.statuses[0].code, Code::kOk);
  EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 2u);
  EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kMinute);
  EXPECT_EQ(a.statuses[0].current_limit->window_ms, 60'000u);
  EXPECT_EQ(a.statuses[0].current_limit->name, "");  // not the rule's limit
  EXPECT_EQ(a.statuses[0].limit_remaining, 0u);
  EXPECT_EQ(Decide(ip).overall_code, Code::kOverLimit);
  // Only that value: another address keeps the rule's 3.
  a = Decide(Request({{{"remote_address", "10.0.0.2"}}}));
  EXPECT_EQ(last_runtime_, 0u);
  EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 3u);
  EXPECT_EQ(a.statuses[0].current_limit->name, "per_ip");
}

// An adaptive rule's controller publishes its limit as a (domain, rule)
// override: every descriptor the rule matches takes it, within the rule's
// [min, max] here; an operator's override of one descriptor, or the
// request's own limit, still wins.
TEST_F(RlsOverridesTest, AnAdaptiveRulesPublishedLimitReplacesItsRequestsPerUnit) {
  crdt::Selector adaptive;
  adaptive.kind = crdt::Selector::Kind::kAdaptive;
  adaptive.domain = "edge";
  adaptive.rule = "adaptive_backend";
  const RlsRequest a = Request({{{"backend", "a"}}});
  const RlsRequest b = Request({{{"backend", "b"}}});
  RlsAnswer answer = Decide(a);
  EXPECT_EQ(answer.statuses[0].current_limit->requests_per_unit, 50u) << "nothing published";
  EXPECT_EQ(last_adaptive_, 0u);
  Write(adaptive, 7);
  answer = Decide(a);
  EXPECT_EQ(last_adaptive_, 1u);
  EXPECT_EQ(answer.statuses[0].current_limit->requests_per_unit, 7u);
  EXPECT_EQ(answer.statuses[0].current_limit->name, "adaptive_backend");
  EXPECT_EQ(answer.statuses[0].limit_remaining, 5u);  // its second hit of 7
  EXPECT_EQ(Decide(b).statuses[0].current_limit->requests_per_unit, 7u) << "every value";
  // Whatever a member published, within this member's bounds.
  Write(adaptive, 100'000);
  EXPECT_EQ(Decide(b).statuses[0].current_limit->requests_per_unit, 100u);
  Write(adaptive, 1);
  EXPECT_EQ(Decide(b).statuses[0].current_limit->requests_per_unit, 5u);
  // An operator's override of one descriptor wins over the adaptive limit.
  Write(Descriptor("edge", {{"backend", "b"}}), 30);
  answer = Decide(b);
  EXPECT_EQ(last_adaptive_, 0u);
  EXPECT_EQ(answer.statuses[0].current_limit->requests_per_unit, 30u);
  // Removed: the rule's requests_per_unit again.
  Write(adaptive, std::nullopt);
  EXPECT_EQ(Decide(a).statuses[0].current_limit->requests_per_unit, 50u);
}

TEST_F(RlsOverridesTest, RemovalBringsTheRuleBack) {
  const RlsRequest ip = Request({{{"remote_address", "r"}}});
  Write(Descriptor("edge", {{"remote_address", "r"}}), 0);  // deny every hit
  EXPECT_EQ(Decide(ip).overall_code, Code::kOverLimit);
  Write(Descriptor("edge", {{"remote_address", "r"}}), std::nullopt);
  EXPECT_TRUE(table_->empty());
  RlsAnswer a = Decide(ip);
  EXPECT_EQ(last_runtime_, 0u);
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 3u);
  EXPECT_EQ(a.statuses[0].current_limit->name, "per_ip");
  EXPECT_EQ(a.statuses[0].limit_remaining, 2u);
}

TEST_F(RlsOverridesTest, DescriptorNoRuleMatchesIsLimitedByItsOverride) {
  const RlsRequest none = Request({{{"nothing", "here"}}});
  EXPECT_FALSE(Decide(none).statuses[0].current_limit);
  Write(Descriptor("edge", {{"nothing", "here"}}), 1, 1000);
  EXPECT_EQ(Decide(none).overall_code, Code::kOk);
  RlsAnswer a = Decide(none);
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kSecond);
  // A domain the rules do not know at all.
  const RlsRequest elsewhere = Request({{{"k", "v"}}}, "unknown-domain");
  Write(Descriptor("unknown-domain", {{"k", "v"}}), 1);
  EXPECT_EQ(Decide(elsewhere).overall_code, Code::kOk);
  EXPECT_EQ(Decide(elsewhere).overall_code, Code::kOverLimit);
}

TEST_F(RlsOverridesTest, OverrideWinsOverTheRequestsOwnLimit) {
  RlsRequest r = Request({});
  r.descriptors.push_back(
      {{{"remote_address", "q"}}, rules::LimitOverride{100, rules::Unit::kSecond}});
  EXPECT_EQ(Decide(r).statuses[0].current_limit->requests_per_unit, 100u);
  Write(Descriptor("edge", {{"remote_address", "q"}}), 1, 3'600'000);
  RlsAnswer a = Decide(r);
  EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 1u);
  EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kHour);
  EXPECT_EQ(Decide(r).overall_code, Code::kOverLimit);
  // A request limit tally could not enforce (YEAR) no longer matters.
  RlsRequest year = Request({});
  year.descriptors.push_back(
      {{{"remote_address", "q"}}, rules::LimitOverride{1, rules::Unit::kYear}});
  RlsPlan plan;
  std::string error;
  EXPECT_TRUE(plan.Build(*rules_, year, false, &error, table_.get())) << error;
}

TEST_F(RlsOverridesTest, AWindowOfNoWholeUnitReportsUnknownAndIsEnforced) {
  const RlsRequest r = Request({{{"remote_address", "w"}}});
  Write(Descriptor("edge", {{"remote_address", "w"}}), 1, 90'000);
  RlsAnswer a = Decide(r);
  ASSERT_TRUE(a.statuses[0].current_limit);
  EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kUnknown);
  EXPECT_EQ(a.statuses[0].current_limit->window_ms, 90'000u);
  EXPECT_LE(a.statuses[0].duration_until_reset_ms, 90'000u + 9'000u);
  a = Decide(r);
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_GT(a.statuses[0].duration_until_reset_ms, 60'000u);  // the 90 s window, not a minute
  // Whole units map to their unit: a week, envoyproxy/ratelimit's 30-day month.
  EXPECT_EQ(rules::UnitOfWindow(7 * 86'400'000ull), rules::Unit::kWeek);
  EXPECT_EQ(rules::UnitOfWindow(30 * 86'400'000ull), rules::Unit::kMonth);
  EXPECT_EQ(rules::UnitOfWindow(120'000), rules::Unit::kUnknown);
  EXPECT_EQ(rules::UnitOfWindow(1), rules::Unit::kUnknown);
  EXPECT_EQ(rules::UnitOfWindow(0), rules::Unit::kUnknown);
}

TEST_F(RlsOverridesTest, AWindowBeyondTallysLongestRejectsTheRequest) {
  Write(Descriptor("edge", {{"remote_address", "long"}}), 5, 60ull * 86'400'000);
  RlsPlan plan;
  std::string error;
  EXPECT_FALSE(
      plan.Build(*rules_, Request({{{"remote_address", "long"}}}), false, &error, table_.get()));
  EXPECT_NE(error.find("31 days"), std::string::npos) << error;
}

TEST_F(RlsOverridesTest, OverrideIsEnforcedOverShadowModeAndUnlimitedButNotTheGlobalFlag) {
  // The rule is in shadow mode: its limit of 1 only counts; the override enforces.
  const RlsRequest canary = Request({{{"canary", "c"}}});
  Write(Descriptor("edge", {{"canary", "c"}}), 1);
  Decide(canary);
  RlsAnswer a = Decide(canary);
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_EQ(a.shadow_denials, 0u);
  // --shadow-mode (the deployment's dry run) still answers OK.
  a = Decide(canary, /*shadow=*/true);
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_EQ(a.shadow_denials, 1u);
  // An unlimited rule's descriptor is limited by its override.
  const RlsRequest free = Request({{{"path", "/free"}}});
  Write(Descriptor("edge", {{"path", "/free"}}), 1);
  EXPECT_EQ(Decide(free).overall_code, Code::kOk);
  EXPECT_EQ(Decide(free).overall_code, Code::kOverLimit);
}

TEST_F(RlsOverridesTest, OneLimitReplacesAllOfARulesLimitsAndItsReplaces) {
  // tier gold has two limits (burst, hourly); the override is the only one.
  const RlsRequest gold = Request({{{"tier", "gold"}}});
  Write(Descriptor("edge", {{"tier", "gold"}}), 4, 1000);
  for (uint32_t left : {3u, 2u, 1u, 0u}) {
    RlsAnswer a = Decide(gold);
    EXPECT_EQ(a.overall_code, Code::kOk);
    EXPECT_EQ(a.statuses[0].limit_remaining, left);  // not the hourly 2
  }
  EXPECT_EQ(Decide(gold).overall_code, Code::kOverLimit);
  // vip's rule replaces per_plan in the same request; an overridden vip
  // matched no rule, so per_plan (2 per minute) applies again.
  const RlsRequest both = Request({{{"plan", "p"}}, {{"vip", "v"}}});
  RlsAnswer a = Decide(both);
  EXPECT_FALSE(a.statuses[0].current_limit);  // replaced
  Write(Descriptor("edge", {{"vip", "v"}}), 50);
  a = Decide(both);
  ASSERT_TRUE(a.statuses[0].current_limit);
  EXPECT_EQ(a.statuses[0].current_limit->name, "per_plan");
  EXPECT_EQ(a.statuses[1].current_limit->requests_per_unit, 50u);
}

TEST_F(RlsOverridesTest, OnlyTheExactDescriptorMatches) {
  Write(Descriptor("edge", {{"a", "1"}, {"b", "2"}}), 0);
  EXPECT_EQ(Decide(Request({{{"a", "1"}, {"b", "2"}}})).overall_code, Code::kOverLimit);
  EXPECT_EQ(last_runtime_, 1u);
  for (const RlsRequest& r : {Request({{{"b", "2"}, {"a", "1"}}}),  // entries in another order
                              Request({{{"a", "1"}}}),              // a prefix
                              Request({{{"a", "1"}, {"b", "2"}, {"c", "3"}}}),  // deeper
                              Request({{{"a", "1"}, {"b", "22"}}}),             // another value
                              Request({{{"a", "1"}, {"b", "2"}}}, "other")}) {  // another domain
    EXPECT_EQ(Decide(r).overall_code, Code::kOk);
    EXPECT_EQ(last_runtime_, 0u);
  }
  // Explicit-form overrides never touch the rules path.
  crdt::Selector explicit_form;
  explicit_form.kind = crdt::Selector::Kind::kExplicit;
  explicit_form.user = "1/1:a=1:1";
  explicit_form.endpoint = "rls1:edge";
  explicit_form.window_ms = 60'000;
  crdt::OverrideEntry e;
  e.selector = explicit_form;
  e.value.limit = 0;
  e.stamp = {++stamp_ms_, 0};
  ASSERT_EQ(map_.Write(e), crdt::LimitOverrides::MergeResult::kApplied);
  table_ = std::make_unique<crdt::DescriptorOverrideTable>(map_);
  EXPECT_EQ(table_->size(), 1u);
}

}  // namespace
}  // namespace tally::rls

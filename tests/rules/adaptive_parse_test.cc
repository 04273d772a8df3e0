// The `adaptive:` block of a rate_limit (docs/ENVOY.md, "Load-adaptive
// limits"): what is accepted, what each rejection says and where, and that
// the digest names it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

using testing::BuildErrors;
using ::testing::HasSubstr;
using testing::MustBuild;

// One descriptor whose rate_limit is `limit` (a flow map's inside).
std::string WithLimit(const std::string& limit) {
  return "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {" + limit + "}\n";
}

std::string FirstError(const std::string& yaml) {
  const std::vector<RuleError> errors = BuildErrors(yaml, "a.yaml");
  return errors.empty() ? "(no error)" : errors[0].ToString();
}

TEST(AdaptiveParseTest, AcceptsBothSignalsAndListsThem) {
  auto rules = MustBuild(R"(domain: backend
descriptors:
  - key: route
    value: /search
    rate_limit:
      unit: second
      requests_per_unit: 500
      name: search
      adaptive: {min: 10, max: 1000, signal: latency_ms, target: 250}
  - key: route
    rate_limits:
      - unit: minute
        requests_per_unit: 600
        name: per_route
        adaptive:
          min: 600
          max: 12000
          signal: error_rate
          target: 0.05
      - {unit: hour, requests_per_unit: 100000}
)");
  ASSERT_NE(rules, nullptr);
  const auto adaptive = rules->adaptive_rules();
  ASSERT_EQ(adaptive.size(), 2u);
  // Sorted by (domain, name).
  EXPECT_EQ(adaptive[0].domain, "backend");
  EXPECT_EQ(adaptive[0].name, "per_route");
  EXPECT_EQ(adaptive[0].rule_path, "backend.route");
  EXPECT_EQ(adaptive[0].window_ms, 60000u);
  EXPECT_EQ(adaptive[0].start, 600u);
  EXPECT_EQ(adaptive[0].spec, (AdaptiveSpec{600, 12000, AdaptiveSignal::kErrorRate, 0.05}));
  EXPECT_EQ(adaptive[1].name, "search");
  EXPECT_EQ(adaptive[1].rule_path, "backend.route_/search");
  EXPECT_EQ(adaptive[1].window_ms, 1000u);
  EXPECT_EQ(adaptive[1].start, 500u);
  EXPECT_EQ(adaptive[1].spec, (AdaptiveSpec{10, 1000, AdaptiveSignal::kLatencyMs, 250}));

  // Start at either bound, and min == max (a fixed limit, accepted).
  EXPECT_NE(MustBuild(WithLimit("unit: second, requests_per_unit: 1, name: n, adaptive: "
                                "{min: 1, max: 1, signal: latency_ms, target: 0.5}")),
            nullptr);
  EXPECT_NE(MustBuild(WithLimit("unit: second, requests_per_unit: 9, name: n, adaptive: "
                                "{min: 1, max: 9, signal: latency_ms, target: 3600000}")),
            nullptr);
  // A set without adaptive limits lists none.
  EXPECT_TRUE(MustBuild(WithLimit("unit: second, requests_per_unit: 1"))->adaptive_rules().empty());
}

TEST(AdaptiveParseTest, TheResolvedLimitStartsAtRequestsPerUnit) {
  auto rules =
      MustBuild(WithLimit("unit: second, requests_per_unit: 50, name: n, "
                          "adaptive: {min: 5, max: 100, signal: error_rate, target: 0.1}"));
  ASSERT_NE(rules, nullptr);
  testing::Resolver r;
  const Resolution& res = r.Run(*rules, "d", {{{{"k", "v"}}}});
  ASSERT_EQ(res.limits().size(), 1u);
  EXPECT_EQ(res.limits()[0].requests_per_unit, 50u);
  EXPECT_EQ(res.limits()[0].name, "n");
}

TEST(AdaptiveParseTest, RejectsEachBadBlockWithItsPosition) {
  const std::string head = "unit: second, requests_per_unit: 50, name: n, adaptive: ";
  struct Case {
    std::string limit;
    std::string error;
  };
  const std::vector<Case> cases = {
      {head + "{min: 0, max: 100, signal: latency_ms, target: 1}",
       "a.yaml:4:80: adaptive min must be at least 1"},
      {head + "{min: 60, max: 100, signal: latency_ms, target: 1}",
       "a.yaml:4:64: requests_per_unit 50 (the adaptive limit's start) must be within min 60 "
       "and max 100"},
      {head + "{min: 5, max: 40, signal: latency_ms, target: 1}",
       "must be within min 5 and max 40"},
      {head + "{min: 50, max: 40, signal: latency_ms, target: 1}",
       "a.yaml:4:74: adaptive min 50 is above max 40"},
      {head + "{min: 5, max: 100, signal: cpu, target: 1}",
       "a.yaml:4:101: unknown adaptive signal 'cpu' (expected latency_ms or error_rate)"},
      {head + "{min: 5, max: 100, signal: LATENCY_MS, target: 1}", "unknown adaptive signal"},
      {head + "{min: 5, max: 100, signal: error_rate, target: 1}",
       "an error_rate target must be above 0 and below 1"},
      {head + "{min: 5, max: 100, signal: error_rate, target: 0}",
       "an error_rate target must be above 0 and below 1"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 0.0}",
       "a latency_ms target must be above 0"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 3600000.5}",
       "at most 3600000 (one hour)"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: -1}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 1e3}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: .inf}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: nan}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 1.2.3}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: .}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 1" + std::string(40, '0') + "}",
       "adaptive target must be a decimal number"},
      {head + "{min: 5, max: 100, signal: latency_ms}", "a.yaml:4:74: adaptive has no 'target'"},
      {head + "{max: 100, signal: latency_ms, target: 1}", "adaptive has no 'min'"},
      {head + "{min: 5, signal: latency_ms, target: 1}", "adaptive has no 'max'"},
      {head + "{min: 5, max: 100, target: 1}", "adaptive has no 'signal'"},
      {head + "{min: 5, max: 100, signal: latency_ms, target: 1, step: 2}",
       "unknown field 'step' in an adaptive block (expected one of: min, max, signal, target)"},
      {head + "{min: 5, min: 6, max: 100, signal: latency_ms, target: 1}",
       "field 'min' appears twice in an adaptive block"},
      {head + "[5, 100]", "an adaptive block must be a map"},
      {head + "", "a.yaml:4:64: adaptive is empty"},
      {head + "{min: x, max: 100, signal: latency_ms, target: 1}",
       "adaptive min must be a whole number"},
      // How it fits its limit.
      {"unit: second, requests_per_unit: 50, "
       "adaptive: {min: 5, max: 100, signal: latency_ms, target: 1}",
       "a.yaml:4:55: an adaptive rate limit needs a 'name' (its controller's identity)"},
      {"unlimited: true, name: n, adaptive: {min: 5, max: 100, signal: latency_ms, target: 1}",
       "an unlimited rate limit cannot be adaptive"},
  };
  for (const Case& c : cases) {
    EXPECT_THAT(FirstError(WithLimit(c.limit)), HasSubstr(c.error)) << c.limit;
  }
}

TEST(AdaptiveParseTest, AnAdaptiveNameIsUniqueInItsDomain) {
  const std::string block = "adaptive: {min: 1, max: 10, signal: latency_ms, target: 5}";
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n"
                       "  - key: a\n"
                       "    rate_limit: {unit: second, requests_per_unit: 1, name: n, " +
                       block + "}\n" +
                       "  - key: b\n"
                       "    rate_limit: {unit: second, requests_per_unit: 1, name: n, " +
                       block + "}\n"),
            "a.yaml:6:63: two adaptive rate limits named 'n' in one domain (also at line 4)");
  // A plain limit may share the name (as `replaces` targets may), and another
  // domain may use it.
  EXPECT_NE(MustBuild("domain: d\ndescriptors:\n"
                      "  - key: a\n"
                      "    rate_limit: {unit: second, requests_per_unit: 1, name: n, " +
                      block + "}\n" +
                      "  - key: b\n"
                      "    rate_limit: {unit: second, requests_per_unit: 1, name: n}\n"),
            nullptr);
  const RuleSource x{"x.yaml",
                     "domain: x\ndescriptors:\n  - key: a\n    rate_limit: {unit: "
                     "second, requests_per_unit: 1, name: n, " +
                         block + "}\n"};
  RuleSource y = x;
  y.name = "y.yaml";
  y.text.replace(y.text.find("domain: x"), 9, "domain: y");
  const std::vector<RuleSource> xy = {x, y};
  const BuildResult both = BuildRuleSet(xy);
  ASSERT_TRUE(both.ok());
  ASSERT_EQ(both.rules->adaptive_rules().size(), 2u);
  EXPECT_EQ(both.rules->adaptive_rules()[0].domain, "x");
  EXPECT_EQ(both.rules->adaptive_rules()[1].domain, "y");
}

// `count` descriptors in domain `domain`, each with an adaptive limit.
std::string ManyAdaptive(const std::string& domain, size_t count) {
  std::string yaml = "domain: " + domain + "\ndescriptors:\n";
  for (size_t i = 0; i < count; ++i) {
    yaml += "  - {key: k, value: v" + std::to_string(i) +
            ", rate_limit: {unit: second, requests_per_unit: 1, name: n" + std::to_string(i) +
            ", adaptive: {min: 1, max: 2, signal: latency_ms, target: 5}}}\n";
  }
  return yaml;
}

TEST(AdaptiveParseTest, ARuleSetHoldsAtMost256) {
  EXPECT_NE(MustBuild(ManyAdaptive("d", kMaxAdaptiveLimits)), nullptr);
  EXPECT_EQ(FirstError(ManyAdaptive("d", kMaxAdaptiveLimits + 1)),
            "a.yaml:259:88: more than 256 adaptive rate limits");
  const std::vector<RuleSource> two = {{"x.yaml", ManyAdaptive("x", 200)},
                                       {"y.yaml", ManyAdaptive("y", 57)}};
  const BuildResult both = BuildRuleSet(two);
  ASSERT_EQ(both.errors.size(), 1u);
  EXPECT_EQ(both.errors[0].ToString(),
            "(rule set): more than 256 adaptive rate limits in all files");
}

TEST(AdaptiveParseTest, TheDigestNamesTheBlock) {
  const std::string plain = "unit: second, requests_per_unit: 50, name: n";
  const std::string base =
      plain + ", adaptive: {min: 5, max: 100, signal: latency_ms, target: 250}";
  const std::string a = MustBuild(WithLimit(base))->DigestHex();
  EXPECT_NE(MustBuild(WithLimit(plain))->DigestHex(), a);
  auto changed = [&base](const std::string& from, const std::string& to) {
    std::string limit = base;
    const size_t at = limit.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    limit.replace(at, from.size(), to);
    return MustBuild(WithLimit(limit))->DigestHex();
  };
  EXPECT_NE(changed("min: 5", "min: 6"), a);
  EXPECT_NE(changed("max: 100", "max: 101"), a);
  EXPECT_NE(changed("target: 250", "target: 250.5"), a);
  EXPECT_NE(changed("signal: latency_ms, target: 250", "signal: error_rate, target: 0.25"), a);
  // The same value written otherwise, and the block's fields in another order.
  EXPECT_EQ(changed("target: 250", "target: 250.000"), a);
  EXPECT_EQ(changed("{min: 5, max: 100, signal: latency_ms, target: 250}",
                    "{target: 250, signal: latency_ms, max: 100, min: 5}"),
            a);
}

TEST(AdaptiveParseTest, ASetWithoutAdaptiveLimitsKeepsItsDigest) {
  // Members of the previous version compare digests with this one during a
  // rolling upgrade: rules without `adaptive:` must still hash alike. This is
  // the v1 digest of this file as the previous version (main at a123704)
  // computed it.
  const std::string yaml = WithLimit("unit: second, requests_per_unit: 50, name: n");
  EXPECT_EQ(MustBuild(yaml)->DigestHex(), "fdcf302c6a31fe75cbdcf2894d8dada1");
}

}  // namespace
}  // namespace tally::rules

// Parsing rules files: what is accepted, and every rejection with its
// file:line:column and reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

using testing::BuildErrors;
using ::testing::HasSubstr;
using testing::Joined;
using testing::MustBuild;
using testing::Resolver;

// The first error's "file:line:column: reason".
std::string FirstError(const std::string& yaml) {
  const std::vector<RuleError> errors = BuildErrors(yaml, "r.yaml");
  return errors.empty() ? "(no error)" : errors[0].ToString();
}

TEST(ParseTest, AcceptsEveryFieldOfTheFormat) {
  auto rules = MustBuild(R"(# comments are fine
domain: everything
descriptors:
  - key: a
    value: exact
    rate_limit:
      unit: SECOND
      requests_per_unit: 1
      name: first
      replaces:
        - name: other
    shadow_mode: true
    detailed_metric: true
    value_to_metric: false
  - key: b
    value: pre*
    share_threshold: true
    rate_limits:
      - unit: Minute
        requests_per_unit: 2
      - unit: hour
        requests_per_unit: 3
    descriptors:
      - key: c
        rate_limit:
          unlimited: true
  - key: d
)");
  ASSERT_NE(rules, nullptr);
  EXPECT_EQ(rules->domain_count(), 1u);
  EXPECT_EQ(rules->descriptor_count(), 4u);
  EXPECT_TRUE(rules->HasDomain("everything"));
  EXPECT_FALSE(rules->HasDomain("Everything"));
}

TEST(ParseTest, DomainWithoutDescriptorsIsValid) {
  auto rules = MustBuild("domain: quiet\n");
  ASSERT_NE(rules, nullptr);
  EXPECT_EQ(rules->descriptor_count(), 0u);
  auto null_list = MustBuild("domain: quiet\ndescriptors:\n");
  ASSERT_NE(null_list, nullptr);
}

TEST(ParseTest, UnitsAnyCaseWeekAndMonth) {
  Resolver r;
  const std::pair<const char*, uint64_t> cases[] = {
      {"second", 1000},  {"SECOND", 1000},  {"sEcOnD", 1000},    {"minute", 60000},
      {"hour", 3600000}, {"day", 86400000}, {"week", 604800000}, {"month", 2592000000}};
  for (const auto& [unit, window_ms] : cases) {
    auto rules = MustBuild(std::string("domain: d\ndescriptors:\n  - key: k\n    rate_limit: "
                                       "{requests_per_unit: 1, unit: ") +
                           unit + "}\n");
    ASSERT_NE(rules, nullptr) << unit;
    const ResolvedDescriptor& d = r.One(*rules, "d", {{{"k", "v"}}});
    ASSERT_EQ(d.outcome, Outcome::kLimited) << unit;
    EXPECT_EQ(r.LimitsOf(d)[0].window_ms, window_ms) << unit;
  }
}

TEST(ParseTest, UnitErrors) {
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: year\n"
                       "      requests_per_unit: 1\n"),
            "r.yaml:5:13: unit 'year' is longer than tally's longest window (31 days)");
  EXPECT_EQ(
      FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: fortnight\n"
                 "      requests_per_unit: 1\n"),
      "r.yaml:5:13: invalid rate limit unit 'fortnight' (expected second, minute, hour, "
      "day, week or month)");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: unknown\n"
                       "      requests_per_unit: 1\n"),
            "r.yaml:5:13: invalid rate limit unit 'unknown' (expected second, minute, hour, "
            "day, week or month)");
  EXPECT_THAT(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n"
                         "      requests_per_unit: 1\n"),
              HasSubstr("r.yaml:5:7: rate_limit has no 'unit'"));
}

TEST(ParseTest, UnknownFieldsAreRejectedWhereTheyAre) {
  EXPECT_EQ(FirstError("domain: d\ndescriptor: []\n"),
            "r.yaml:2:1: unknown field 'descriptor' in the file's top level (expected one of: "
            "domain, descriptors)");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limts: {}\n"),
            "r.yaml:4:5: unknown field 'rate_limts' in a descriptor (expected one of: key, "
            "value, rate_limit, rate_limits, descriptors, shadow_mode, detailed_metric, "
            "value_to_metric, share_threshold)");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
                       "      requests_per_unit: 1\n      shadow_mode: true\n"),
            "r.yaml:7:7: unknown field 'shadow_mode' in a rate_limit (expected one of: unit, "
            "requests_per_unit, unlimited, name, replaces, adaptive)");
  // A field valid elsewhere is not valid here (ratelimit only checks names).
  EXPECT_THAT(FirstError("domain: d\nunit: second\n"),
              HasSubstr("r.yaml:2:1: unknown field 'unit'"));
  EXPECT_THAT(
      FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unit: second\n"
                 "      requests_per_unit: 1\n      replaces: [{name: a, key: b}]\n"),
      HasSubstr("r.yaml:7:28: unknown field 'key' in a replaces entry"));
}

TEST(ParseTest, RepeatedFieldsAreRejected) {
  EXPECT_EQ(FirstError("domain: d\ndomain: e\n"),
            "r.yaml:2:1: field 'domain' appears twice in the file's top level");
}

TEST(ParseTest, StructureErrors) {
  EXPECT_THAT(FirstError(""), HasSubstr("r.yaml: empty file"));
  EXPECT_THAT(FirstError("# only a comment\n"), HasSubstr("r.yaml: empty file"));
  EXPECT_EQ(FirstError("- a\n- b\n"), "r.yaml:1:1: the file's top level must be a map");
  EXPECT_EQ(FirstError("just text\n"), "r.yaml:1:1: the file's top level must be a map");
  EXPECT_EQ(FirstError("descriptors: []\n"), "r.yaml:1:1: missing field 'domain'");
  EXPECT_EQ(FirstError("domain: ''\n"), "r.yaml:1:1: domain must not be empty");
  EXPECT_EQ(FirstError("domain: [a]\n"), "r.yaml:1:9: domain must be a string");
  EXPECT_EQ(FirstError("domain: d\ndescriptors: {key: k}\n"),
            "r.yaml:2:14: descriptors must be a list of maps");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - k\n"),
            "r.yaml:3:5: a descriptor must be a map");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - value: v\n"),
            "r.yaml:3:5: descriptor has no 'key'");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: ''\n"),
            "r.yaml:3:5: descriptor key must not be empty");
  EXPECT_EQ(FirstError("domain: d\n? [x]\n: y\n"),
            "r.yaml:2:3: field names in the file's top level must be strings");
  EXPECT_EQ(FirstError("domain: d\n---\ndomain: e\n"),
            "r.yaml:2:1: a rules file holds one YAML document (one domain)");
  // A trailing empty document is not a second domain.
  MustBuild("domain: d\n---\n");
}

TEST(ParseTest, YamlSyntaxErrorsHaveTheirPosition) {
  EXPECT_THAT(FirstError("domain: d\ndescriptors:\n  - key: [unclosed\n"),
              HasSubstr("r.yaml:4:1: YAML syntax: "));
  EXPECT_THAT(FirstError("domain: d\n  bad: indent\n"), HasSubstr("r.yaml:2:6: YAML syntax: "));
  EXPECT_EQ(FirstError("domain: d: e\n"), "r.yaml:1:10: YAML syntax: illegal map value");
}

TEST(ParseTest, RateLimitValueErrors) {
  const std::string head = "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n";
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: -1\n"),
            "r.yaml:6:26: requests_per_unit must be a whole number from 0 to 4294967295");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: 4294967296\n"),
            "r.yaml:6:26: requests_per_unit must be a whole number from 0 to 4294967295");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: ten\n"),
            "r.yaml:6:26: requests_per_unit must be a whole number from 0 to 4294967295");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: 1.5\n"),
            "r.yaml:6:26: requests_per_unit must be a whole number from 0 to 4294967295");
  EXPECT_EQ(FirstError(head + "      unit: second\n"),
            "r.yaml:5:7: rate_limit has no 'requests_per_unit' (write 0 to refuse every "
            "request)");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n"),
            "r.yaml:4:5: rate_limit is empty: give unit and requests_per_unit, or unlimited");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: 1\n      unlimited: "
                              "perhaps\n"),
            "r.yaml:7:18: unlimited must be true or false");
  EXPECT_EQ(FirstError(head + "      unlimited: true\n      unit: second\n"),
            "r.yaml:6:13: should not specify rate limit unit when unlimited");
  EXPECT_EQ(FirstError(head + "      unlimited: true\n      requests_per_unit: 4\n"),
            "r.yaml:6:7: should not specify requests_per_unit when unlimited");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: 1\n      replaces:\n"
                              "        - name: ''\n"),
            "r.yaml:8:11: should not have an empty replaces entry");
  EXPECT_EQ(FirstError(head + "      unit: second\n      requests_per_unit: 1\n      name: me\n"
                              "      replaces: [{name: me}]\n"),
            "r.yaml:5:7: replaces should not contain the name of the same rate limit 'me'");
  EXPECT_EQ(
      FirstError(head + "      unit: second\n      requests_per_unit: 1\n      replaces: x\n"),
      "r.yaml:7:17: replaces must be a list of {name: ...} maps");
  // Upper bound and zero are fine.
  MustBuild(head + "      unit: second\n      requests_per_unit: 4294967295\n");
  MustBuild(head + "      unit: second\n      requests_per_unit: 0\n");
}

TEST(ParseTest, BooleansAsYaml11) {
  Resolver r;
  for (const char* yes : {"true", "True", "yes", "on", "Y"}) {
    auto rules = MustBuild(std::string("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: ") +
                           yes + "\n    rate_limit: {unit: second, requests_per_unit: 1}\n");
    ASSERT_NE(rules, nullptr) << yes;
    EXPECT_TRUE(r.LimitsOf(r.One(*rules, "d", {{{"k", "v"}}}))[0].shadow_mode) << yes;
  }
  for (const char* no : {"false", "NO", "off"}) {
    auto rules = MustBuild(std::string("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: ") +
                           no + "\n    rate_limit: {unit: second, requests_per_unit: 1}\n");
    ASSERT_NE(rules, nullptr) << no;
    EXPECT_FALSE(r.LimitsOf(r.One(*rules, "d", {{{"k", "v"}}}))[0].shadow_mode) << no;
  }
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    shadow_mode: 1\n"),
            "r.yaml:4:18: shadow_mode must be true or false");
}

TEST(ParseTest, ScalarsOfOtherTypesAreTheirText) {
  Resolver r;
  auto rules = MustBuild(R"(
domain: 42
descriptors:
  - key: 7
    value: 123
    rate_limit: {unit: second, requests_per_unit: 1}
)");
  ASSERT_NE(rules, nullptr);
  EXPECT_EQ(r.One(*rules, "42", {{{"7", "123"}}}).outcome, Outcome::kLimited);
}

TEST(ParseTest, SeveralLimitsErrors) {
  const std::string head = "domain: d\ndescriptors:\n  - key: k\n";
  EXPECT_EQ(FirstError(head + "    rate_limit: {unit: second, requests_per_unit: 1}\n"
                              "    rate_limits: [{unit: hour, requests_per_unit: 1}]\n"),
            "r.yaml:5:5: a descriptor takes either rate_limit or rate_limits, not both");
  EXPECT_EQ(FirstError(head + "    rate_limits:\n      - {unit: second, requests_per_unit: 1}\n"
                              "      - {unit: SECOND, requests_per_unit: 2}\n"),
            "r.yaml:6:16: two limits with unit SECOND on one descriptor (they would share one "
            "counter)");
  EXPECT_EQ(FirstError(head + "    rate_limits: []\n"),
            "r.yaml:4:18: rate_limits must be a non-empty list of rate_limit maps");
  EXPECT_EQ(FirstError(head + "    rate_limits:\n"),
            "r.yaml:4:5: rate_limits must be a non-empty list of rate_limit maps");
  EXPECT_EQ(FirstError(head + "    rate_limits: [{unlimited: true}]\n"),
            "r.yaml:4:20: unlimited is not allowed in rate_limits: use rate_limit: {unlimited: "
            "true}");
  std::string many = head + "    rate_limits:\n";
  for (const char* u :
       {"second", "minute", "hour", "day", "week", "month", "second", "minute", "hour"}) {
    many += std::string("      - {unit: ") + u + ", requests_per_unit: 1}\n";
  }
  EXPECT_EQ(FirstError(many), "r.yaml:5:7: more than 8 limits on one descriptor");
}

TEST(ParseTest, ShareThresholdNeedsAWildcard) {
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    value: exact\n"
                       "    share_threshold: true\n"),
            "r.yaml:5:5: share_threshold needs a wildcard value (ending with '*')");
}

TEST(ParseTest, DuplicateCompositeKeysNameBothLines) {
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    value: v\n  - key: k\n"
                       "    value: v\n"),
            "r.yaml:5:5: duplicate descriptor composite key 'd.k_v' (first at line 3)");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: k\n"
                       "      - key: k\n"),
            "r.yaml:6:9: duplicate descriptor composite key 'd.a.k' (first at line 5)");
  // Same key, different values or kinds: fine; same rule under different parents: fine.
  MustBuild(
      "domain: d\ndescriptors:\n  - key: k\n  - key: k\n    value: v\n  - key: k\n"
      "    value: v*\n  - key: a\n    descriptors: [{key: k}]\n");
}

TEST(ParseTest, EveryErrorOfAFileIsReported) {
  const std::vector<RuleError> errors = BuildErrors(R"(domain: d
descriptors:
  - key: a
    rate_limit: {unit: eon, requests_per_unit: 1}
  - key: b
    colour: red
  - key: c
    rate_limit: {unit: second, requests_per_unit: many}
)",
                                                    "r.yaml");
  ASSERT_EQ(errors.size(), 3u) << Joined(errors);
  EXPECT_EQ(errors[0].line, 4u);
  EXPECT_EQ(errors[1].line, 6u);
  EXPECT_EQ(errors[2].line, 8u);
  for (const RuleError& e : errors) EXPECT_EQ(e.file, "r.yaml");
}

TEST(ParseTest, ErrorsPerFileAreCapped) {
  std::string yaml = "domain: d\ndescriptors:\n";
  for (int i = 0; i < 200; ++i) yaml += "  - key: k" + std::to_string(i) + "\n    bad: 1\n";
  const std::vector<RuleError> errors = BuildErrors(yaml);
  ASSERT_EQ(errors.size(), kMaxErrorsPerFile + 1);
  EXPECT_EQ(errors.back().reason, "150 more errors not shown");
}

// ---- bounds ----

std::string Nested(size_t depth) {
  std::string yaml = "domain: d\ndescriptors:\n";
  std::string indent = "  ";
  for (size_t i = 1; i <= depth; ++i) {
    yaml += indent + "- key: k" + std::to_string(i) + "\n";
    if (i == depth) {
      yaml += indent + "  rate_limit: {unit: second, requests_per_unit: 1}\n";
    } else {
      yaml += indent + "  descriptors:\n";
    }
    indent += "    ";
  }
  return yaml;
}

TEST(ParseTest, NestingIsBounded) {
  auto rules = MustBuild(Nested(kMaxDepth));
  ASSERT_NE(rules, nullptr);
  Resolver r;
  testing::Desc deepest;
  for (size_t i = 1; i <= kMaxDepth; ++i) deepest.entries.push_back({"k" + std::to_string(i), "v"});
  EXPECT_EQ(r.One(*rules, "d", deepest).outcome, Outcome::kLimited);
  EXPECT_THAT(FirstError(Nested(kMaxDepth + 1)),
              HasSubstr("descriptors nested deeper than 16 levels"));
}

TEST(ParseTest, DescriptorCountIsBounded) {
  std::string yaml = "domain: d\ndescriptors:\n";
  for (size_t i = 0; i <= kMaxDescriptorsPerFile; ++i) {
    yaml += "  - {key: k, value: v" + std::to_string(i) + "}\n";
  }
  const std::vector<RuleError> errors = BuildErrors(yaml, "r.yaml");
  ASSERT_EQ(errors.size(), 1u) << Joined(errors);
  EXPECT_EQ(errors[0].ToString(), "r.yaml:10003:5: more than 10000 descriptors in one file");
}

TEST(ParseTest, StringLengthsAreBounded) {
  EXPECT_EQ(FirstError("domain: " + std::string(kMaxDomainBytes + 1, 'd') + "\n"),
            "r.yaml:1:9: domain is longer than 256 bytes");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: " +
                       std::string(kMaxRuleKeyBytes + 1, 'k') + "\n"),
            "r.yaml:3:10: key is longer than 256 bytes");
  EXPECT_EQ(FirstError("domain: d\ndescriptors:\n  - key: k\n    value: " +
                       std::string(kMaxRuleValueBytes + 1, 'v') + "\n"),
            "r.yaml:4:12: value is longer than 1024 bytes");
  MustBuild("domain: " + std::string(kMaxDomainBytes, 'd') + "\n");
}

TEST(ParseTest, FileSizeIsBounded) {
  std::string yaml = "domain: d\n";
  yaml += std::string(kMaxFileBytes, '#');
  EXPECT_EQ(FirstError(yaml), "r.yaml: file is larger than 1048576 bytes");
}

TEST(ParseTest, AnchorsAndAliasesWork) {
  Resolver r;
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: a
    rate_limit: &standard {unit: minute, requests_per_unit: 60}
  - key: b
    rate_limit: *standard
)");
  ASSERT_NE(rules, nullptr);
  EXPECT_EQ(r.LimitsOf(r.One(*rules, "d", {{{"b", "1"}}}))[0].requests_per_unit, 60u);
}

TEST(ParseTest, AliasBombsAreBounded) {
  // Each level doubles the nodes a walk would visit: 2^40 without a budget.
  std::string yaml = "domain: d\ndescriptors:\n  - &a0 {key: k0}\n";
  std::string prev = "a0";
  for (int i = 1; i <= 40; ++i) {
    const std::string name = "a" + std::to_string(i);
    yaml += "  - &" + name + " {key: k" + std::to_string(i) + ", descriptors: [*" + prev + ", *" +
            prev + "]}\n";
    prev = name;
  }
  const std::vector<RuleError> errors = BuildErrors(yaml);
  EXPECT_FALSE(errors.empty());
  // Whatever the first error is (depth, count, node budget), the build stopped.
}

TEST(ParseTest, SelfReferentialAliasIsAnError) {
  EXPECT_FALSE(
      BuildErrors("domain: d\ndescriptors: &x\n  - key: k\n    descriptors: *x\n").empty());
}

TEST(ParseTest, DeepYamlNestingIsAnErrorNotACrash) {
  const size_t depth = 100000;
  const std::string flow =
      "domain: d\ndescriptors: " + std::string(depth, '[') + std::string(depth, ']') + "\n";
  EXPECT_THAT(FirstError(flow), HasSubstr("YAML syntax"));
  const std::string maps = "domain: d\nx: " + std::string(depth, '{') + "\n";
  EXPECT_FALSE(BuildErrors(maps).empty());
}

}  // namespace
}  // namespace tally::rules

// The digest names a rule set's content: equal for the same rules however
// they are written and split into files, different for any change that
// changes a decision.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

using testing::MustBuild;

const char* kBase = R"(domain: api
descriptors:
  - key: user
    value: alice
    rate_limit: {unit: second, requests_per_unit: 5, name: alice}
  - key: user
    rate_limits:
      - {unit: second, requests_per_unit: 10}
      - {unit: hour, requests_per_unit: 1000}
  - key: path
    value: /a/*
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: path
    value: /a/b*
    rate_limit: {unit: minute, requests_per_unit: 2}
)";

std::string DigestOf(const std::string& yaml) { return MustBuild(yaml)->DigestHex(); }

TEST(DigestTest, StableAndHex) {
  const std::string a = DigestOf(kBase);
  EXPECT_EQ(a.size(), 32u);
  EXPECT_EQ(a.find_first_not_of("0123456789abcdef"), std::string::npos);
  EXPECT_EQ(DigestOf(kBase), a);
  EXPECT_EQ(RuleSet::Empty()->DigestHex(), RuleSet::Empty()->DigestHex());
  EXPECT_NE(RuleSet::Empty()->DigestHex(), a);
}

TEST(DigestTest, IgnoresFormattingCommentsFileNamesAndSiblingOrder) {
  const std::string a = DigestOf(kBase);
  // Block style, comments, other unit spelling, limits and exact/key-only siblings reordered.
  EXPECT_EQ(DigestOf(R"(# the same rules
domain: api
descriptors:
  - key: path
    value: /a/*
    rate_limit:
      unit: MINUTE
      requests_per_unit: 1
  - key: user
    rate_limits:
      - {unit: hour, requests_per_unit: 1000}
      - {requests_per_unit: 10, unit: Second}
  - key: path
    value: /a/b*
    rate_limit: {unit: minute, requests_per_unit: 2}
  - value: alice
    key: user
    rate_limit: {name: alice, unit: second, requests_per_unit: 5}
)"),
            a);
  EXPECT_EQ(MustBuild(kBase, "other/name.yml")->DigestHex(), a);
}

TEST(DigestTest, ChangesWithEveryDecidingField) {
  const std::string base = kBase;
  const std::string a = DigestOf(base);
  auto changed = [&base](const std::string& from, const std::string& to) {
    std::string yaml = base;
    const size_t at = yaml.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    yaml.replace(at, from.size(), to);
    return DigestOf(yaml);
  };
  EXPECT_NE(changed("requests_per_unit: 5", "requests_per_unit: 6"), a);
  EXPECT_NE(changed("unit: hour", "unit: day"), a);
  EXPECT_NE(changed("name: alice", "name: bob"), a);
  EXPECT_NE(changed("value: alice", "value: alicia"), a);
  EXPECT_NE(changed("domain: api", "domain: api2"), a);
  EXPECT_NE(changed("    value: alice\n", "    value: alice\n    shadow_mode: true\n"), a);
  EXPECT_NE(changed("    value: alice\n", "    value: alice\n    detailed_metric: true\n"), a);
  // Wildcards of one key: their order decides which matches, so it counts.
  EXPECT_NE(changed("/a/*", "/a/c*"), a);
  std::string swapped = base;
  swapped.replace(swapped.find("/a/*"), 4, "/a/X*");
  swapped.replace(swapped.find("/a/b*"), 5, "/a/*");
  swapped.replace(swapped.find("/a/X*"), 5, "/a/b*");
  EXPECT_NE(DigestOf(swapped), a);
}

TEST(DigestTest, FileOrderDoesNotMatter) {
  const RuleSource x{"x.yaml", "domain: x\ndescriptors: [{key: k}]\n"};
  const RuleSource y{"y.yaml", "domain: y\ndescriptors: [{key: k}]\n"};
  const std::vector<RuleSource> xy = {x, y}, yx = {y, x};
  const BuildResult a = BuildRuleSet(xy), b = BuildRuleSet(yx);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(a.rules->digest(), b.rules->digest());
  EXPECT_EQ(a.rules->sources(), (std::vector<std::string>{"x.yaml", "y.yaml"}));
  // Moving a descriptor to another domain is a change.
  const RuleSource y2{"y.yaml", "domain: y\ndescriptors: [{key: k}, {key: j}]\n"};
  const std::vector<RuleSource> xy2 = {x, y2};
  EXPECT_NE(BuildRuleSet(xy2).rules->digest(), a.rules->digest());
}

}  // namespace
}  // namespace tally::rules

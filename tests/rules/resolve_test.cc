// Resolve: envoyproxy/ratelimit's matching (its README examples 1-9 and its
// config code), tally's extensions, and the counter identity.
#include <gtest/gtest.h>

#include <atomic>
#include <random>
#include <set>
#include <thread>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

using testing::Desc;
using testing::MustBuild;
using testing::Resolver;

TEST(ResolveTest, ExactValuesOnly) {  // ratelimit README example 1
  auto rules = MustBuild(R"(
domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit: {unit: second, requests_per_unit: 500}
  - key: database
    value: default
    rate_limit: {unit: second, requests_per_unit: 50}
)");
  Resolver r;
  const ResolvedDescriptor& users = r.One(*rules, "mongo_cps", {{{"database", "users"}}});
  ASSERT_EQ(users.outcome, Outcome::kLimited);
  ASSERT_EQ(users.limit_count, 1u);
  const ResolvedLimit& limit = r.LimitsOf(users)[0];
  EXPECT_EQ(limit.requests_per_unit, 500u);
  EXPECT_EQ(limit.unit, Unit::kSecond);
  EXPECT_EQ(limit.window_ms, 1000u);
  EXPECT_EQ(limit.endpoint, "rls1:mongo_cps");
  EXPECT_EQ(limit.user_id, "1/8:database=5:users");
  EXPECT_FALSE(limit.shadow_mode);
  EXPECT_FALSE(limit.from_override);
  EXPECT_EQ(users.rule_path, "mongo_cps.database_users");

  EXPECT_EQ(r.One(*rules, "mongo_cps", {{{"database", "default"}}}).outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(r.resolution().descriptors()[0])[0].requests_per_unit, 50u);
  EXPECT_EQ(r.One(*rules, "mongo_cps", {{{"database", "other"}}}).outcome, Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "mongo_cps", {{{"table", "users"}}}).outcome, Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "other_domain", {{{"database", "users"}}}).outcome, Outcome::kNoLimit);
}

const char* kMessaging = R"(
domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
)";

TEST(ResolveTest, NestedDescriptorsAndKeyOnlyMatchCountPerValue) {  // example 2
  auto rules = MustBuild(kMessaging);
  Resolver r;
  const ResolvedDescriptor& a =
      r.One(*rules, "messaging", {{{"message_type", "marketing"}, {"to_number", "2061111111"}}});
  ASSERT_EQ(a.outcome, Outcome::kLimited);
  const ResolvedLimit la = r.LimitsOf(a)[0];
  EXPECT_EQ(la.requests_per_unit, 5u);
  EXPECT_EQ(la.window_ms, 86400000u);
  EXPECT_EQ(la.user_id, "2/12:message_type=9:marketing/9:to_number=10:2061111111");
  EXPECT_EQ(a.rule_path, "messaging.message_type_marketing.to_number");
  const std::string first_user_id(la.user_id);

  // Another number: the same rule, its own counter (the actual value is in the key).
  const ResolvedDescriptor& b =
      r.One(*rules, "messaging", {{{"message_type", "marketing"}, {"to_number", "2062222222"}}});
  ASSERT_EQ(b.outcome, Outcome::kLimited);
  EXPECT_NE(r.LimitsOf(b)[0].user_id, first_user_id);

  const ResolvedDescriptor& c = r.One(*rules, "messaging", {{{"to_number", "2061111111"}}});
  ASSERT_EQ(c.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(c)[0].requests_per_unit, 100u);
  EXPECT_EQ(r.LimitsOf(c)[0].user_id, "1/9:to_number=10:2061111111");

  // The placeholder level has no limit of its own.
  EXPECT_EQ(r.One(*rules, "messaging", {{{"message_type", "marketing"}}}).outcome,
            Outcome::kNoLimit);
  // Another message type has no nested rules.
  EXPECT_EQ(r.One(*rules, "messaging", {{{"message_type", "alert"}, {"to_number", "1"}}}).outcome,
            Outcome::kNoLimit);
}

TEST(ResolveTest, ValueMatchWinsOverKeyOnly) {  // example 3
  auto rules = MustBuild(R"(
domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
)");
  Resolver r;
  const ResolvedDescriptor& any =
      r.One(*rules, "edge_proxy_per_ip", {{{"remote_address", "50.0.0.1"}}});
  ASSERT_EQ(any.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(any)[0].requests_per_unit, 10u);
  const ResolvedDescriptor& banned =
      r.One(*rules, "edge_proxy_per_ip", {{{"remote_address", "50.0.0.5"}}});
  ASSERT_EQ(banned.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(banned)[0].requests_per_unit, 0u);
}

TEST(ResolveTest, RequestMustReachARuleAtItsOwnDepth) {  // example 4
  auto shallow = MustBuild(R"(
domain: example4
descriptors:
  - key: key
    value: value
    rate_limit: {requests_per_unit: 300, unit: second}
)");
  auto deep = MustBuild(R"(
domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit: {requests_per_unit: 300, unit: second}
)");
  Resolver r;
  const Desc two{{{"key", "value"}, {"subkey", "subvalue"}}, {}};
  const Desc one{{{"key", "value"}}, {}};
  EXPECT_EQ(r.One(*shallow, "example4", two).outcome, Outcome::kNoLimit);  // longer request
  EXPECT_EQ(r.One(*shallow, "example4", one).outcome, Outcome::kLimited);
  EXPECT_EQ(r.One(*deep, "example4", two).outcome, Outcome::kLimited);
  EXPECT_EQ(r.One(*deep, "example4", one).outcome, Outcome::kNoLimit);  // shorter request
  const Desc three{{{"key", "value"}, {"subkey", "subvalue"}, {"x", "y"}}, {}};
  EXPECT_EQ(r.One(*deep, "example4", three).outcome, Outcome::kNoLimit);
}

TEST(ResolveTest, LimitsOnSeveralLevelsApplyOnlyAtTheRequestsDepth) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: a
    rate_limit: {unit: minute, requests_per_unit: 1}
    descriptors:
      - key: b
        rate_limit: {unit: minute, requests_per_unit: 2}
)");
  Resolver r;
  const ResolvedDescriptor& one = r.One(*rules, "d", {{{"a", "1"}}});
  ASSERT_EQ(one.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(one)[0].requests_per_unit, 1u);
  const ResolvedDescriptor& two = r.One(*rules, "d", {{{"a", "1"}, {"b", "2"}}});
  ASSERT_EQ(two.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(two)[0].requests_per_unit, 2u);
}

TEST(ResolveTest, UnlimitedIsOkWithoutACounter) {  // example 5
  auto rules = MustBuild(R"(
domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    rate_limit: {unit: minute, requests_per_unit: 100}
)");
  Resolver r;
  const ResolvedDescriptor& ldap = r.One(*rules, "internal", {{{"ldap", "x"}}});
  EXPECT_EQ(ldap.outcome, Outcome::kUnlimited);
  EXPECT_EQ(ldap.limit_count, 0u);
  EXPECT_TRUE(r.resolution().limits().empty());
  EXPECT_EQ(r.One(*rules, "internal", {{{"azure", "x"}}}).outcome, Outcome::kLimited);
}

TEST(ResolveTest, ShadowModeIsCarriedOnTheRulesLimits) {  // example 6
  auto rules = MustBuild(R"(
domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit: {requests_per_unit: 10, unit: second}
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit: {requests_per_unit: 20, unit: second}
)");
  Resolver r;
  const ResolvedDescriptor& a =
      r.One(*rules, "example6", {{{"service", "auth-service"}, {"user", "user-a"}}});
  ASSERT_EQ(a.outcome, Outcome::kLimited);
  EXPECT_TRUE(r.LimitsOf(a)[0].shadow_mode);
  const ResolvedDescriptor& b =
      r.One(*rules, "example6", {{{"service", "auth-service"}, {"user", "user-b"}}});
  ASSERT_EQ(b.outcome, Outcome::kLimited);
  EXPECT_FALSE(r.LimitsOf(b)[0].shadow_mode);
}

const char* kReplaces = R"(
domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
)";

TEST(ResolveTest, ReplacesDropsTheNamedLimitWithinOneRequest) {  // example 7
  auto rules = MustBuild(kReplaces);
  const Desc first{{{"key_1", "value_1"}, {"user", "bkthomps"}}, {}};
  const Desc second{{{"key_2", "value_2"}, {"user", "bkthomps"}}, {}};
  Resolver r;
  // Alone, each descriptor keeps its own limit.
  const ResolvedDescriptor& alone = r.One(*rules, "example7", first);
  ASSERT_EQ(alone.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(alone)[0].requests_per_unit, 5u);
  EXPECT_EQ(r.LimitsOf(alone)[0].name, "specific_limit");
  // Together, the replacing rule wins and the replaced one counts nothing.
  const std::vector<Desc> both = {first, second};
  const Resolution& res = r.Run(*rules, "example7", both);
  ASSERT_EQ(res.descriptors().size(), 2u);
  EXPECT_EQ(res.descriptors()[0].outcome, Outcome::kReplaced);
  EXPECT_EQ(res.descriptors()[0].limit_count, 0u);
  ASSERT_EQ(res.descriptors()[1].outcome, Outcome::kLimited);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[1])[0].requests_per_unit, 10u);
  ASSERT_EQ(res.limits().size(), 1u);
  // Order does not matter.
  const std::vector<Desc> reversed = {second, first};
  const Resolution& res2 = r.Run(*rules, "example7", reversed);
  EXPECT_EQ(res2.descriptors()[0].outcome, Outcome::kLimited);
  EXPECT_EQ(res2.descriptors()[1].outcome, Outcome::kReplaced);
}

TEST(ResolveTest, UnlimitedRulesReplaceToo) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: plan
    rate_limit: {unit: second, requests_per_unit: 5, name: per_plan}
  - key: vip
    rate_limit:
      unlimited: true
      replaces: [{name: per_plan}]
)");
  Resolver r;
  const std::vector<Desc> request = {{{{"plan", "free"}}, {}}, {{{"vip", "yes"}}, {}}};
  const Resolution& res = r.Run(*rules, "d", request);
  EXPECT_EQ(res.descriptors()[0].outcome, Outcome::kReplaced);
  EXPECT_EQ(res.descriptors()[1].outcome, Outcome::kUnlimited);
}

TEST(ResolveTest, WildcardPrefixMatchesAndCountsPerValue) {  // example 9
  auto rules = MustBuild(R"(
domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit: {unit: minute, requests_per_unit: 20}
)");
  Resolver r;
  const ResolvedDescriptor& one = r.One(*rules, "example9", {{{"key1", "value_1"}}});
  ASSERT_EQ(one.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(one)[0].requests_per_unit, 20u);
  EXPECT_EQ(r.LimitsOf(one)[0].user_id, "1/4:key1=7:value_1");
  EXPECT_EQ(one.rule_path, "example9.key1_value*");
  EXPECT_EQ(r.One(*rules, "example9", {{{"key1", "value"}}}).outcome, Outcome::kLimited);
  EXPECT_EQ(r.One(*rules, "example9", {{{"key1", "valu"}}}).outcome, Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "example9", {{{"key2", "value_1"}}}).outcome, Outcome::kNoLimit);
}

TEST(ResolveTest, ExactBeatsWildcardBeatsKeyOnlyAndFirstWildcardWins) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: path
    rate_limit: {unit: second, requests_per_unit: 1}
  - key: path
    value: /api/*
    rate_limit: {unit: second, requests_per_unit: 2}
  - key: path
    value: /api/v2/*
    rate_limit: {unit: second, requests_per_unit: 3}
  - key: path
    value: /api/login
    rate_limit: {unit: second, requests_per_unit: 4}
)");
  Resolver r;
  auto limit_of = [&](const std::string& value) -> int64_t {
    const ResolvedDescriptor& d = r.One(*rules, "d", {{{"path", value}}});
    return d.outcome == Outcome::kLimited ? r.LimitsOf(d)[0].requests_per_unit : -1;
  };
  EXPECT_EQ(limit_of("/api/login"), 4);  // exact
  EXPECT_EQ(limit_of("/api/users"), 2);  // wildcard
  EXPECT_EQ(limit_of("/api/v2/x"), 2);   // the first wildcard in file order, as ratelimit
  EXPECT_EQ(limit_of("/static/x"), 1);   // key-only
  EXPECT_EQ(limit_of(""), 1);
}

TEST(ResolveTest, StarAloneMatchesEveryValueIncludingEmpty) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: k
    value: "*"
    rate_limit: {unit: second, requests_per_unit: 7}
)");
  Resolver r;
  EXPECT_EQ(r.One(*rules, "d", {{{"k", "anything"}}}).outcome, Outcome::kLimited);
  EXPECT_EQ(r.One(*rules, "d", {{{"k", ""}}}).outcome, Outcome::kLimited);
}

TEST(ResolveTest, WildcardsAtNestedLevels) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: tenant
    value: acme-*
    descriptors:
      - key: path
        value: /upload/*
        rate_limit: {unit: hour, requests_per_unit: 9}
)");
  Resolver r;
  const ResolvedDescriptor& d =
      r.One(*rules, "d", {{{"tenant", "acme-eu"}, {"path", "/upload/big"}}});
  ASSERT_EQ(d.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(d)[0].user_id, "2/6:tenant=7:acme-eu/4:path=11:/upload/big");
  EXPECT_EQ(r.One(*rules, "d", {{{"tenant", "other"}, {"path", "/upload/big"}}}).outcome,
            Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "d", {{{"tenant", "acme-eu"}, {"path", "/download"}}}).outcome,
            Outcome::kNoLimit);
}

TEST(ResolveTest, ShareThresholdSharesOneCounterAcrossTheWildcardsValues) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 10}
  - key: other
    value: x*
    rate_limit: {unit: minute, requests_per_unit: 10}
)");
  Resolver r;
  const ResolvedDescriptor& a = r.One(*rules, "d", {{{"files", "files/a.pdf"}}});
  ASSERT_EQ(a.outcome, Outcome::kLimited);
  const std::string a_user(r.LimitsOf(a)[0].user_id);
  EXPECT_EQ(a_user, "1/5:files*6:files/");
  const ResolvedDescriptor& b = r.One(*rules, "d", {{{"files", "files/b.csv"}}});
  EXPECT_EQ(r.LimitsOf(b)[0].user_id, a_user);
  // Without share_threshold every value counts alone.
  const std::string x1(r.LimitsOf(r.One(*rules, "d", {{{"other", "x1"}}}))[0].user_id);
  const std::string x2(r.LimitsOf(r.One(*rules, "d", {{{"other", "x2"}}}))[0].user_id);
  EXPECT_NE(x1, x2);
}

TEST(ResolveTest, SeveralLimitsOnOneDescriptorAreAllEnforced) {
  auto rules = MustBuild(R"(
domain: api
descriptors:
  - key: user
    rate_limits:
      - {unit: second, requests_per_unit: 10}
      - {unit: hour, requests_per_unit: 1000, name: hourly}
    shadow_mode: true
    detailed_metric: true
)");
  Resolver r;
  const ResolvedDescriptor& d = r.One(*rules, "api", {{{"user", "bob"}}});
  ASSERT_EQ(d.outcome, Outcome::kLimited);
  ASSERT_EQ(d.limit_count, 2u);
  const auto limits = r.LimitsOf(d);
  EXPECT_EQ(limits[0].requests_per_unit, 10u);
  EXPECT_EQ(limits[0].window_ms, 1000u);
  EXPECT_EQ(limits[1].requests_per_unit, 1000u);
  EXPECT_EQ(limits[1].window_ms, 3600000u);
  EXPECT_EQ(limits[1].name, "hourly");
  // One descriptor, one identity; the windows keep the counters apart.
  EXPECT_EQ(limits[0].user_id, limits[1].user_id);
  EXPECT_EQ(limits[0].endpoint, limits[1].endpoint);
  for (const ResolvedLimit& l : limits) {
    EXPECT_TRUE(l.shadow_mode);
    EXPECT_TRUE(l.detailed_metric);
  }
}

TEST(ResolveTest, ReplacesActsOnEachOfSeveralLimits) {
  auto rules = MustBuild(R"(
domain: api
descriptors:
  - key: user
    rate_limits:
      - {unit: second, requests_per_unit: 10, name: burst}
      - {unit: day, requests_per_unit: 10000, name: daily}
  - key: premium
    rate_limit: {unit: day, requests_per_unit: 1000000, replaces: [{name: daily}]}
)");
  Resolver r;
  const std::vector<Desc> request = {{{{"user", "bob"}}, {}}, {{{"premium", "yes"}}, {}}};
  const Resolution& res = r.Run(*rules, "api", request);
  ASSERT_EQ(res.descriptors()[0].outcome, Outcome::kLimited);
  ASSERT_EQ(res.descriptors()[0].limit_count, 1u);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[0])[0].name, "burst");
  EXPECT_EQ(res.LimitsOf(res.descriptors()[1])[0].requests_per_unit, 1000000u);
}

TEST(ResolveTest, OverrideReplacesTheRulesLimitAndSharesItsCounter) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: k
    rate_limit: {unit: minute, requests_per_unit: 5, name: n}
    shadow_mode: true
)");
  Resolver r;
  const ResolvedDescriptor& rule = r.One(*rules, "d", {{{"k", "v"}}});
  const std::string rule_user(r.LimitsOf(rule)[0].user_id);
  const ResolvedDescriptor& o =
      r.One(*rules, "d", {{{"k", "v"}}, LimitOverride{42, Unit::kMinute}});
  ASSERT_EQ(o.outcome, Outcome::kLimited);
  ASSERT_EQ(o.limit_count, 1u);
  const ResolvedLimit& limit = r.LimitsOf(o)[0];
  EXPECT_EQ(limit.requests_per_unit, 42u);
  EXPECT_EQ(limit.window_ms, 60000u);
  EXPECT_TRUE(limit.from_override);
  EXPECT_FALSE(limit.shadow_mode);  // as ratelimit: an override is never shadow
  EXPECT_TRUE(limit.name.empty());
  EXPECT_EQ(limit.user_id, rule_user);
  EXPECT_EQ(limit.endpoint, "rls1:d");
}

TEST(ResolveTest, OverrideWorksWithoutAnyRule) {
  auto empty = RuleSet::Empty();
  Resolver r;
  const ResolvedDescriptor& o =
      r.One(*empty, "nodomain", {{{"a", "1"}, {"b", "2"}}, LimitOverride{3, Unit::kHour}});
  ASSERT_EQ(o.outcome, Outcome::kLimited);
  EXPECT_EQ(r.LimitsOf(o)[0].endpoint, "rls1:nodomain");
  EXPECT_EQ(r.LimitsOf(o)[0].user_id, "2/1:a=1:1/1:b=1:2");
  EXPECT_EQ(r.LimitsOf(o)[0].window_ms, 3600000u);
  // Unmatched key in a known domain too.
  auto rules = MustBuild("domain: d\n");
  EXPECT_EQ(r.One(*rules, "d", {{{"x", "1"}}, LimitOverride{1, Unit::kDay}}).outcome,
            Outcome::kLimited);
}

TEST(ResolveTest, OverrideWithAUnitTallyCannotEnforceIsInvalid) {
  auto rules = MustBuild("domain: d\n");
  Resolver r;
  for (Unit unit : {Unit::kUnknown, Unit::kYear, static_cast<Unit>(99)}) {
    const ResolvedDescriptor& d = r.One(*rules, "d", {{{"k", "v"}}, LimitOverride{1, unit}});
    EXPECT_EQ(d.outcome, Outcome::kInvalid);
    EXPECT_NE(d.error, nullptr);
  }
  EXPECT_EQ(r.One(*rules, "d", {{{"k", "v"}}, LimitOverride{1, Unit::kWeek}}).outcome,
            Outcome::kLimited);
  EXPECT_EQ(r.One(*rules, "d", {{{"k", "v"}}, LimitOverride{1, Unit::kMonth}}).outcome,
            Outcome::kLimited);
}

TEST(ResolveTest, NoBacktrackingToAKeyOnlySibling) {
  // As ratelimit: the exact match is taken at level 1 and its subtree has no
  // rule for `c`, so the key-only sibling's subtree is not tried.
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: a
    value: x
    descriptors:
      - key: b
        rate_limit: {unit: second, requests_per_unit: 1}
  - key: a
    descriptors:
      - key: c
        rate_limit: {unit: second, requests_per_unit: 2}
)");
  Resolver r;
  EXPECT_EQ(r.One(*rules, "d", {{{"a", "x"}, {"c", "1"}}}).outcome, Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "d", {{{"a", "y"}, {"c", "1"}}}).outcome, Outcome::kLimited);
}

TEST(ResolveTest, AValueRuleWithoutLimitWhitelistsOverAKeyOnlyRule) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 10}
  - key: remote_address
    value: 10.0.0.1
)");
  Resolver r;
  EXPECT_EQ(r.One(*rules, "d", {{{"remote_address", "10.0.0.1"}}}).outcome, Outcome::kNoLimit);
  EXPECT_EQ(r.One(*rules, "d", {{{"remote_address", "10.0.0.2"}}}).outcome, Outcome::kLimited);
}

TEST(ResolveTest, EmptyAndOverlongDescriptors) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: k
    rate_limit: {unit: second, requests_per_unit: 1}
)");
  Resolver r;
  EXPECT_EQ(r.One(*rules, "d", Desc{}).outcome, Outcome::kNoLimit);
  // A value so long the counter key would pass tally's 4096 bytes.
  const ResolvedDescriptor& big = r.One(*rules, "d", {{{"k", std::string(5000, 'v')}}});
  EXPECT_EQ(big.outcome, Outcome::kInvalid);
  EXPECT_NE(big.error, nullptr);
  EXPECT_TRUE(r.resolution().limits().empty());
  // Just at the bound is fine: "rls1:d" + "1/1:k=4079:" + value = 4096 bytes.
  const ResolvedDescriptor& fits = r.One(*rules, "d", {{{"k", std::string(4079, 'v')}}});
  ASSERT_EQ(fits.outcome, Outcome::kLimited);
  const ResolvedLimit& l = r.LimitsOf(fits)[0];
  EXPECT_EQ(l.user_id.size() + l.endpoint.size(), 4096u);
  // More entries than any rule can be deep: no limit, no work.
  Desc deep;
  for (int i = 0; i < 100; ++i) deep.entries.push_back({"k", "v"});
  EXPECT_EQ(r.One(*rules, "d", deep).outcome, Outcome::kNoLimit);
}

TEST(ResolveTest, SeveralDescriptorsKeepTheirOrderAndTheirOwnLimits) {
  auto rules = MustBuild(kMessaging);
  Resolver r;
  const std::vector<Desc> request = {
      {{{"message_type", "marketing"}, {"to_number", "1"}}, {}},
      {{{"unknown", "x"}}, {}},
      {{{"to_number", "1"}}, {}},
      {{{"to_number", "2"}}, LimitOverride{7, Unit::kSecond}},
  };
  const Resolution& res = r.Run(*rules, "messaging", request);
  ASSERT_EQ(res.descriptors().size(), 4u);
  EXPECT_EQ(res.descriptors()[0].outcome, Outcome::kLimited);
  EXPECT_EQ(res.descriptors()[1].outcome, Outcome::kNoLimit);
  EXPECT_EQ(res.descriptors()[2].outcome, Outcome::kLimited);
  EXPECT_EQ(res.descriptors()[3].outcome, Outcome::kLimited);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[0])[0].requests_per_unit, 5u);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[2])[0].requests_per_unit, 100u);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[3])[0].requests_per_unit, 7u);
  EXPECT_EQ(res.LimitsOf(res.descriptors()[2])[0].user_id, "1/9:to_number=1:1");
  EXPECT_EQ(res.LimitsOf(res.descriptors()[3])[0].user_id, "1/9:to_number=1:2");
  EXPECT_EQ(res.limits().size(), 3u);
  // A second call on the same Resolution starts afresh.
  const std::vector<Desc> small = {{{{"unknown", "x"}}, {}}};
  const Resolution& again = r.Run(*rules, "messaging", small);
  EXPECT_EQ(again.descriptors().size(), 1u);
  EXPECT_TRUE(again.limits().empty());
}

TEST(ResolveTest, FlagsAndRulePathPassThrough) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: k
    detailed_metric: true
    value_to_metric: true
    rate_limit: {unit: second, requests_per_unit: 1}
)");
  Resolver r;
  const ResolvedDescriptor& d = r.One(*rules, "d", {{{"k", "v"}}});
  EXPECT_TRUE(r.LimitsOf(d)[0].detailed_metric);
  EXPECT_TRUE(r.LimitsOf(d)[0].value_to_metric);
  EXPECT_EQ(d.rule_path, "d.k");
}

// ---- the counter identity ----

// Decodes CounterUserId's format; nullopt if `text` is not well formed.
std::optional<std::vector<std::pair<std::string, std::string>>> Decode(std::string_view text) {
  auto number = [&text](size_t* out) {
    size_t n = 0, digits = 0;
    while (digits < text.size() && text[digits] >= '0' && text[digits] <= '9') {
      n = n * 10 + static_cast<size_t>(text[digits] - '0');
      ++digits;
    }
    if (digits == 0 || (digits > 1 && text[0] == '0')) return false;
    text.remove_prefix(digits);
    *out = n;
    return true;
  };
  auto field = [&](std::string* out) {
    size_t len = 0;
    if (!number(&len) || text.empty() || text[0] != ':' || text.size() < len + 1) return false;
    *out = std::string(text.substr(1, len));
    text.remove_prefix(len + 1);
    return true;
  };
  size_t count = 0;
  if (!number(&count)) return std::nullopt;
  std::vector<std::pair<std::string, std::string>> entries;
  for (size_t i = 0; i < count; ++i) {
    std::string key, value;
    if (text.empty() || text[0] != '/') return std::nullopt;
    text.remove_prefix(1);
    if (!field(&key) || text.empty() || text[0] != '=') return std::nullopt;
    text.remove_prefix(1);
    if (!field(&value)) return std::nullopt;
    entries.emplace_back(key, value);
  }
  if (!text.empty()) return std::nullopt;
  return entries;
}

TEST(CounterIdentityTest, DocumentedExample) {
  const Entry entries[] = {{"remote_address", "10.0.0.1"}};
  EXPECT_EQ(CounterEndpoint("edge"), "rls1:edge");
  EXPECT_EQ(CounterUserId(entries), "1/14:remote_address=8:10.0.0.1");
  EXPECT_EQ(CounterUserId({}), "0");
}

TEST(CounterIdentityTest, EncodingRoundTripsSoItCannotCollide) {
  // Entries full of the format's own punctuation and digits.
  std::mt19937_64 rng(11);
  const std::string alphabet = "/:=*0123456789ab";
  std::set<std::string> seen;
  std::set<std::vector<std::pair<std::string, std::string>>> inputs;
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::pair<std::string, std::string>> entries(rng() % 4);
    for (auto& [k, v] : entries) {
      for (size_t n = rng() % 5; n > 0; --n) k += alphabet[rng() % alphabet.size()];
      for (size_t n = rng() % 5; n > 0; --n) v += alphabet[rng() % alphabet.size()];
    }
    std::vector<Entry> views;
    for (const auto& [k, v] : entries) views.push_back(Entry{k, v});
    const std::string encoded = CounterUserId(views);
    const auto decoded = Decode(encoded);
    ASSERT_TRUE(decoded.has_value()) << encoded;
    ASSERT_EQ(*decoded, entries) << encoded;
    // Distinct inputs give distinct encodings.
    if (inputs.insert(entries).second) {
      EXPECT_TRUE(seen.insert(encoded).second) << encoded;
    }
  }
  const Entry ab_c[] = {{"ab", "c"}};
  const Entry a_bc[] = {{"a", "bc"}};
  const Entry two[] = {{"a", ""}, {"b", ""}};
  const Entry one[] = {{"a", "/1:b=0:"}};
  EXPECT_NE(CounterUserId(ab_c), CounterUserId(a_bc));
  EXPECT_NE(CounterUserId(two), CounterUserId(one));
}

TEST(CounterIdentityTest, ResolveWritesWhatCounterUserIdWrites) {
  auto rules = MustBuild(R"(
domain: d
descriptors:
  - key: a
    descriptors:
      - key: b
        value: x*
        descriptors:
          - key: c
            rate_limit: {unit: second, requests_per_unit: 1}
)");
  Resolver r;
  const Desc d{{{"a", "1:2"}, {"b", "x/y"}, {"c", "=="}}, {}};
  const ResolvedDescriptor& res = r.One(*rules, "d", d);
  ASSERT_EQ(res.outcome, Outcome::kLimited);
  std::vector<Entry> views;
  for (const auto& [k, v] : d.entries) views.push_back(Entry{k, v});
  EXPECT_EQ(r.LimitsOf(res)[0].user_id, CounterUserId(views));
  EXPECT_EQ(r.LimitsOf(res)[0].endpoint, CounterEndpoint("d"));
}

// ---- reload: a check sees the old or the new rules, never a mix ----

TEST(ReloadTest, ConcurrentResolvesSeeOneRuleSetPerRequest) {
  auto make = [](int limit) {
    const std::string n = std::to_string(limit);
    return MustBuild(
        "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, "
        "requests_per_unit: " +
        n +
        "}\n  - key: b\n    rate_limit: {unit: "
        "second, requests_per_unit: " +
        n + "}\n");
  };
  std::vector<std::shared_ptr<const RuleSet>> generations;
  for (int i = 1; i <= 4; ++i) generations.push_back(make(i));
  std::atomic<std::shared_ptr<const RuleSet>> current(generations[0]);
  std::atomic<bool> stop{false};
  std::atomic<int> mixes{0}, checks{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&] {
      Resolver r;
      const std::vector<Desc> request = {{{{"a", "1"}}, {}}, {{{"b", "1"}}, {}}};
      while (!stop.load()) {
        const std::shared_ptr<const RuleSet> rules = current.load();
        const Resolution& res = r.Run(*rules, "d", request);
        if (res.limits().size() != 2 ||
            res.limits()[0].requests_per_unit != res.limits()[1].requests_per_unit) {
          ++mixes;
        }
        ++checks;
      }
    });
  }
  for (int swap = 0; swap < 2000 || checks.load() < 1000; ++swap) {
    current.store(generations[swap % generations.size()]);
    std::this_thread::yield();
  }
  stop = true;
  for (auto& t : readers) t.join();
  EXPECT_EQ(mixes.load(), 0);
  EXPECT_GT(checks.load(), 0);
}

// Per-rule counters index RuleSet::rule_limits() by ResolvedLimit::rule_limit:
// each resolved limit names its own rule and limit there; overrides name none.
TEST(ResolveTest, EachLimitNamesItsRuleLimit) {
  auto rules = MustBuild(R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: path
    value: /free
    rate_limit: {unlimited: true}
  - key: tier
    rate_limits:
      - {unit: second, requests_per_unit: 50, name: burst}
      - {unit: hour, requests_per_unit: 2, name: hourly}
    descriptors:
      - key: user
        rate_limit: {unit: day, requests_per_unit: 7, name: daily}
)");
  EXPECT_EQ(rules->rule_limits().size(), 5u);  // the unlimited one included
  Resolver r;
  const Resolution& res = r.Run(*rules, "edge",
                                {Desc{{{"tier", "gold"}}}, Desc{{{"tier", "gold"}, {"user", "u"}}},
                                 Desc{{{"remote_address", "a"}}},
                                 Desc{{{"remote_address", "a"}}, LimitOverride{9, Unit::kSecond}}});
  ASSERT_EQ(res.limits().size(), 5u);
  std::set<uint32_t> seen;
  for (const ResolvedDescriptor& d : res.descriptors()) {
    for (const ResolvedLimit& l : res.LimitsOf(d)) {
      if (l.from_override) {
        EXPECT_EQ(l.rule_limit, UINT32_MAX);
        continue;
      }
      ASSERT_LT(l.rule_limit, rules->rule_limits().size());
      EXPECT_EQ(rules->rule_limits()[l.rule_limit].rule_path, d.rule_path);
      EXPECT_EQ(rules->rule_limits()[l.rule_limit].name, l.name);
      seen.insert(l.rule_limit);
    }
  }
  EXPECT_EQ(seen.size(), 4u);  // burst, hourly, daily, the minute one
  EXPECT_EQ(RuleSet::Empty()->rule_limits().size(), 0u);
}

}  // namespace
}  // namespace tally::rules

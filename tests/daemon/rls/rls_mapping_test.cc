// The mapping between Envoy's rate limit requests and tally's checks
// (daemon/rls/rls_mapping.h), with a real Limiter deciding.
#include "daemon/rls/rls_mapping.h"

#include <gtest/gtest.h>

#include <limits>

#include "daemon/rls/rls_json.h"
#include "tally/limiter.h"

namespace tally::rls {
namespace {

// A minute window frees its hits with their sub-bucket: up to a tenth of the
// window (the default 10 buckets per window) after the minute (docs/ENVOY.md).
constexpr int kMinuteResetBoundS = 66;

using std::chrono::milliseconds;

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3}
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
)";

std::shared_ptr<const rules::RuleSet> Rules() {
  std::vector<rules::RuleSource> sources{{"edge.yaml", kRules}};
  rules::BuildResult built = rules::BuildRuleSet(sources);
  EXPECT_TRUE(built.ok()) << (built.errors.empty() ? "" : built.errors[0].ToString());
  return built.rules;
}

RlsRequest Request(std::vector<std::vector<RlsEntry>> descriptors, uint32_t hits = 0) {
  RlsRequest r;
  r.domain = "edge";
  r.hits_addend = hits;
  for (auto& entries : descriptors) r.descriptors.push_back({std::move(entries), std::nullopt});
  return r;
}

class RlsMappingTest : public ::testing::Test {
 protected:
  // Builds, decides with the Limiter at `now_`, answers. Fails the test on an error.
  RlsAnswer Decide(const RlsRequest& request, bool shadow = false) {
    RlsPlan plan;
    std::string error;
    EXPECT_TRUE(plan.Build(*rules_, request, shadow, &error)) << error;
    std::vector<CheckResult> results;
    if (!plan.checks().empty()) limiter_.CheckBatch(plan.checks(), now_, &results);
    RlsAnswer answer;
    EXPECT_EQ(plan.Answer(results, &answer, &error), Status::kOk) << error;
    return answer;
  }

  std::shared_ptr<const rules::RuleSet> rules_ = Rules();
  Limiter limiter_{LimiterOptions{}};
  Instant now_{milliseconds(1'700'000'000'000), std::chrono::nanoseconds(1)};
};

TEST_F(RlsMappingTest, LimitedDescriptorCountsDownThenGoesOverLimit) {
  const RlsRequest request = Request({{{"remote_address", "10.0.0.1"}}});
  for (uint32_t expected_remaining : {2u, 1u, 0u}) {
    RlsAnswer a = Decide(request);
    ASSERT_EQ(a.statuses.size(), 1u);
    EXPECT_EQ(a.overall_code, Code::kOk);
    EXPECT_EQ(a.statuses[0].code, Code::kOk);
    ASSERT_TRUE(a.statuses[0].current_limit);
    EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 3u);
    EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kMinute);
    EXPECT_EQ(a.statuses[0].limit_remaining, expected_remaining);
    EXPECT_GT(a.statuses[0].duration_until_reset_ms, 0u);
    // A hit leaves the window when its sub-bucket does: up to one sub-bucket
    // (a tenth of the window by default) after the window's length.
    EXPECT_LE(a.statuses[0].duration_until_reset_ms, 60'000u + 6'000u);
  }
  RlsAnswer over = Decide(request);
  EXPECT_EQ(over.overall_code, Code::kOverLimit);
  EXPECT_EQ(over.statuses[0].code, Code::kOverLimit);
  EXPECT_EQ(over.statuses[0].limit_remaining, 0u);
  EXPECT_GT(over.statuses[0].duration_until_reset_ms, 0u);
  // Another value is another counter.
  EXPECT_EQ(Decide(Request({{{"remote_address", "10.0.0.2"}}})).overall_code, Code::kOk);
}

TEST_F(RlsMappingTest, HitsAddendCountsThatManyAndZeroMeansOne) {
  RlsAnswer a = Decide(Request({{{"remote_address", "h"}}}, 2));
  EXPECT_EQ(a.statuses[0].limit_remaining, 1u);
  a = Decide(Request({{{"remote_address", "h"}}}, 0));
  EXPECT_EQ(a.statuses[0].limit_remaining, 0u);
  // More hits than the limit can ever hold: over, reset = the window.
  a = Decide(Request({{{"remote_address", "h2"}}}, 4));
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_EQ(a.statuses[0].duration_until_reset_ms, 60'000u);
}

TEST_F(RlsMappingTest, UnknownDescriptorAndDomainAreOkWithoutLimit) {
  RlsAnswer a = Decide(Request({{{"nothing", "here"}}}));
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_FALSE(a.statuses[0].current_limit);
  EXPECT_EQ(a.statuses[0].limit_remaining, 0u);
  RlsRequest other = Request({{{"remote_address", "x"}}});
  other.domain = "nobody";
  a = Decide(other);
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_FALSE(a.statuses[0].current_limit);
}

TEST_F(RlsMappingTest, UnlimitedIsOkWithMaximalRemaining) {
  for (int i = 0; i < 10; ++i) {
    RlsAnswer a = Decide(Request({{{"path", "/free"}}}));
    EXPECT_EQ(a.statuses[0].code, Code::kOk);
    EXPECT_FALSE(a.statuses[0].current_limit);
    EXPECT_EQ(a.statuses[0].limit_remaining, std::numeric_limits<uint32_t>::max());
  }
}

TEST_F(RlsMappingTest, SeveralLimitsOnOneDescriptorAreAllEnforced) {
  const RlsRequest gold = Request({{{"tier", "gold"}}});
  RlsAnswer a = Decide(gold);
  // The hourly limit has fewer remaining: it is the one reported.
  ASSERT_TRUE(a.statuses[0].current_limit);
  EXPECT_EQ(a.statuses[0].current_limit->name, "hourly");
  EXPECT_EQ(a.statuses[0].limit_remaining, 1u);
  EXPECT_EQ(Decide(gold).statuses[0].limit_remaining, 0u);
  a = Decide(gold);  // burst allows (3rd of 5) but hourly denies
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_EQ(a.statuses[0].current_limit->name, "hourly");
}

TEST_F(RlsMappingTest, SeveralDescriptorsOverIfAnyIsOverAndOthersStillCount) {
  const RlsRequest both = Request({{{"remote_address", "m"}}, {{"tier", "gold"}}});
  Decide(both);
  Decide(both);
  RlsAnswer a = Decide(both);  // remote 3rd of 3 ok; gold hourly over
  ASSERT_EQ(a.statuses.size(), 2u);
  EXPECT_EQ(a.statuses[0].code, Code::kOk);
  EXPECT_EQ(a.statuses[0].limit_remaining, 0u);
  EXPECT_EQ(a.statuses[1].code, Code::kOverLimit);
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
}

TEST_F(RlsMappingTest, ShadowModeAnswersOkButCountsTheDenial) {
  const RlsRequest canary = Request({{{"canary", "c"}}});
  EXPECT_EQ(Decide(canary).shadow_denials, 0u);
  RlsAnswer a = Decide(canary);
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_EQ(a.statuses[0].code, Code::kOk);
  EXPECT_EQ(a.shadow_denials, 1u);
  // The global flag puts every limit in shadow mode.
  const RlsRequest remote = Request({{{"remote_address", "s"}}}, 3);
  EXPECT_EQ(Decide(remote).overall_code, Code::kOk);
  a = Decide(remote, /*shadow=*/true);
  EXPECT_EQ(a.overall_code, Code::kOk);
  EXPECT_EQ(a.shadow_denials, 1u);
  EXPECT_EQ(Decide(remote).overall_code, Code::kOverLimit);
}

TEST_F(RlsMappingTest, LimitOverrideWorksWithoutRules) {
  RlsRequest r;
  r.domain = "anything";
  r.descriptors.push_back({{{"user", "u"}}, rules::LimitOverride{1, rules::Unit::kSecond}});
  EXPECT_EQ(Decide(r).overall_code, Code::kOk);
  RlsAnswer a = Decide(r);
  EXPECT_EQ(a.overall_code, Code::kOverLimit);
  EXPECT_EQ(a.statuses[0].current_limit->requests_per_unit, 1u);
  EXPECT_EQ(a.statuses[0].current_limit->unit, rules::Unit::kSecond);
}

TEST_F(RlsMappingTest, InvalidRequestsAreRejectedWhole) {
  std::string error;
  RlsPlan plan;
  RlsRequest r = Request({{{"remote_address", "x"}}});
  r.domain.clear();
  EXPECT_FALSE(plan.Build(*rules_, r, false, &error));
  EXPECT_NE(error.find("domain"), std::string::npos);
  EXPECT_FALSE(plan.Build(*rules_, Request({}), false, &error));
  EXPECT_FALSE(plan.Build(*rules_, Request({{}}), false, &error));
  EXPECT_FALSE(plan.Build(*rules_, Request({{{"", "v"}}}), false, &error));
  RlsRequest many = Request({});
  many.descriptors.resize(kMaxDescriptors + 1, RlsDescriptor{{{"k", "v"}}, std::nullopt});
  EXPECT_FALSE(plan.Build(*rules_, many, false, &error));
  RlsRequest year;
  year.domain = "edge";
  year.descriptors.push_back({{{"k", "v"}}, rules::LimitOverride{1, rules::Unit::kYear}});
  EXPECT_FALSE(plan.Build(*rules_, year, false, &error));
}

TEST_F(RlsMappingTest, AFailedDecisionGivesNoAnswer) {
  RlsPlan plan;
  std::string error;
  ASSERT_TRUE(plan.Build(*rules_, Request({{{"remote_address", "f"}}}), false, &error));
  ASSERT_EQ(plan.checks().size(), 1u);
  std::vector<CheckResult> results(1);
  results[0].status = Status::kOverCapacity;
  RlsAnswer answer;
  EXPECT_EQ(plan.Answer(results, &answer, &error), Status::kOverCapacity);
  EXPECT_EQ(plan.Answer({}, &answer, &error), Status::kInternal);
}

TEST(RlsJsonTest, ParsesBothFieldSpellingsAndRejectsJunk) {
  RlsRequest r;
  std::string error;
  ASSERT_TRUE(ParseJsonRequest(
      R"({"domain":"edge","hitsAddend":"3","descriptors":[{"entries":[{"key":"a","value":"b"}],
          "limit":{"requests_per_unit":5,"unit":"MINUTE"}}]})",
      &r, &error))
      << error;
  EXPECT_EQ(r.domain, "edge");
  EXPECT_EQ(r.hits_addend, 3u);
  ASSERT_EQ(r.descriptors.size(), 1u);
  EXPECT_EQ(r.descriptors[0].entries[0].key, "a");
  ASSERT_TRUE(r.descriptors[0].limit);
  EXPECT_EQ(r.descriptors[0].limit->requests_per_unit, 5u);
  EXPECT_EQ(r.descriptors[0].limit->unit, rules::Unit::kMinute);
  for (const char* bad :
       {"", "[]", "{", R"({"domain":1})", R"({"domian":"x"})", R"({"hits_addend":-1})",
        R"({"hits_addend":4294967296})", R"({"descriptors":{}})",
        R"({"descriptors":[{"entries":[{"key":"a","value":"b","x":1}]}]})",
        R"({"descriptors":[{"limit":{"unit":"FORTNIGHT"}}]})"}) {
    EXPECT_FALSE(ParseJsonRequest(bad, &r, &error)) << bad;
    EXPECT_FALSE(error.empty());
  }
  std::string deep(100, '[');
  EXPECT_FALSE(ParseJsonRequest(deep, &r, &error));
  // The domain's bound is the parser's too (http_json_fuzz found an accepted
  // 257-byte domain, refused only later by RlsPlan::Build).
  const std::string at_bound(kMaxDomainBytes, 'd');
  EXPECT_TRUE(ParseJsonRequest(R"({"domain":")" + at_bound + R"("})", &r, &error)) << error;
  EXPECT_FALSE(ParseJsonRequest(R"({"domain":")" + at_bound + R"(d"})", &r, &error));
  EXPECT_EQ(error, "rate limit domain exceeds 256 bytes");
  // Escapes count as the bytes they decode to.
  EXPECT_FALSE(
      ParseJsonRequest(R"({"domain":")" + std::string(255, 'd') + R"(\u0e00"})", &r, &error));
}

TEST(RlsJsonTest, FormatsLikeProto3Json) {
  RlsAnswer a;
  a.overall_code = Code::kOverLimit;
  a.statuses.push_back({Code::kOverLimit, RlsLimit{10, rules::Unit::kMinute, "n"}, 0, 1500});
  a.statuses.push_back({Code::kOk, std::nullopt, 0, 0});
  EXPECT_EQ(FormatJsonAnswer(a),
            R"({"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":)"
            R"({"name":"n","requestsPerUnit":10,"unit":"MINUTE"},"durationUntilReset":"1.500s"},)"
            R"({"code":"OK"}]})");
  EXPECT_EQ(FormatJsonError("x\"y"), R"({"error":"x\"y"})");
}

TEST_F(RlsMappingTest, RateLimitHeadersReportTheStatusNearestItsLimit) {
  using Headers = std::vector<std::pair<std::string, std::string>>;
  auto headers = [](const RlsAnswer& a) {
    Headers out;
    for (const RateLimitHeader& h : RateLimitHeaders(a)) out.emplace_back(h.name, h.value);
    return out;
  };
  // One limited descriptor: its limit, what is left, the reset in whole
  // seconds rounded up (the sliding window frees a hit within the minute).
  const Headers one = headers(Decide(Request({{{"remote_address", "a"}}})));
  ASSERT_EQ(one.size(), 3u);
  EXPECT_EQ(one[0], (std::pair<std::string, std::string>("RateLimit-Limit", "3")));
  EXPECT_EQ(one[1], (std::pair<std::string, std::string>("RateLimit-Remaining", "2")));
  EXPECT_EQ(one[2].first, "RateLimit-Reset");
  EXPECT_GE(std::stoi(one[2].second), 1);
  EXPECT_LE(std::stoi(one[2].second), kMinuteResetBoundS);
  // Several descriptors: the fewest remaining wins (tier's hourly: 1 left).
  const Headers several =
      headers(Decide(Request({{{"remote_address", "b"}}, {{"tier", "gold"}}, {{"x", "y"}}})));
  ASSERT_EQ(several.size(), 3u);
  EXPECT_EQ(several[0].second, "2");
  EXPECT_EQ(several[1].second, "1");
  // An OVER_LIMIT descriptor is the one reported (the unlimited one before
  // it has no current_limit and never is).
  for (int i = 0; i < 3; ++i) Decide(Request({{{"remote_address", "c"}}}));
  const RlsAnswer over = Decide(Request({{{"path", "/free"}}, {{"remote_address", "c"}}}));
  ASSERT_EQ(over.overall_code, Code::kOverLimit);
  const Headers denied = headers(over);
  ASSERT_EQ(denied.size(), 3u);
  EXPECT_EQ(denied[0].second, "3");
  EXPECT_EQ(denied[1].second, "0");
  EXPECT_GE(std::stoi(denied[2].second), 1);
  // Nothing limited: no headers.
  EXPECT_TRUE(headers(Decide(Request({{{"path", "/free"}}, {{"nope", "x"}}}))).empty());
  // Rounding: 1 ms until reset is 1 s, 1000 ms is 1 s, 1001 ms is 2 s.
  RlsAnswer made;
  made.statuses.push_back(RlsStatus{Code::kOk, RlsLimit{10, rules::Unit::kSecond, ""}, 4, 1});
  EXPECT_EQ(headers(made)[2].second, "1");
  made.statuses[0].duration_until_reset_ms = 1000;
  EXPECT_EQ(headers(made)[2].second, "1");
  made.statuses[0].duration_until_reset_ms = 1001;
  EXPECT_EQ(headers(made)[2].second, "2");
  made.statuses[0].duration_until_reset_ms = 0;
  EXPECT_EQ(headers(made)[2].second, "0");
}

}  // namespace
}  // namespace tally::rls

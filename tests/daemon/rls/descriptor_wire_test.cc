// The Cap'n Proto form of a rules check (daemon/rls/descriptor_wire.h): the
// query becomes the doors' RlsRequest, the answer the fields POST /v1/check
// gives, each check carries an id derived from the request's, and the
// answer's bound holds before anything is decided.
#include "daemon/rls/descriptor_wire.h"

#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "tally/limiter.h"

namespace tally::rls {
namespace {

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: tier
    value: gold
    rate_limits:
      - {unit: second, requests_per_unit: 5, name: burst}
      - {unit: hour, requests_per_unit: 2, name: a_rather_long_name_for_the_hourly_limit}
  - key: canary
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: canary}
)";

std::shared_ptr<const rules::RuleSet> Rules() {
  std::vector<rules::RuleSource> sources{{"edge.yaml", kRules}};
  rules::BuildResult built = rules::BuildRuleSet(sources);
  EXPECT_TRUE(built.ok()) << (built.errors.empty() ? "" : built.errors[0].ToString());
  return built.rules;
}

wire::DescriptorQuery Query(uint64_t request_id) {
  wire::DescriptorQuery q;
  q.request_id = request_id;
  q.domain = "edge";
  q.hits_addend = 2;
  q.descriptors.push_back({{{"tier", "gold"}}});
  q.descriptors.push_back({{{"canary", "x"}}});
  q.descriptors.push_back({{{"none", "y"}}});
  q.descriptors.push_back({{{"own", "z"}}, true, 7, 2});
  return q;
}

TEST(DescriptorWireTest, QueryBecomesTheDoorsRequest) {
  const RlsRequest r = FromWire(Query(9));
  EXPECT_EQ(r.request_id, 9u);
  EXPECT_EQ(r.domain, "edge");
  EXPECT_EQ(r.hits_addend, 2u);
  ASSERT_EQ(r.descriptors.size(), 4u);
  EXPECT_EQ(r.descriptors[0].entries[0].key, "tier");
  EXPECT_EQ(r.descriptors[0].entries[0].value, "gold");
  EXPECT_FALSE(r.descriptors[0].limit.has_value());
  ASSERT_TRUE(r.descriptors[3].limit.has_value());
  EXPECT_EQ(r.descriptors[3].limit->requests_per_unit, 7u);
  EXPECT_EQ(r.descriptors[3].limit->unit, rules::Unit::kMinute);
}

TEST(DescriptorWireTest, ChecksCarryDistinctIdsDerivedFromTheRequests) {
  auto rules = Rules();
  const RlsRequest with_id = FromWire(Query(41));
  RlsPlan plan;
  std::string error;
  ASSERT_TRUE(plan.Build(*rules, with_id, false, &error)) << error;
  ASSERT_EQ(plan.checks().size(), 4u);  // burst, hourly, canary, the override
  std::set<uint64_t> ids;
  for (const CheckRequestRef& c : plan.checks()) {
    EXPECT_NE(c.request_id, 0u);
    EXPECT_NE(c.request_id, 41u);
    EXPECT_NE(c.request_id, 42u);  // not a client's next sequential id
    ids.insert(c.request_id);
  }
  EXPECT_EQ(ids.size(), 4u);
  // The same request planned again (a retry) gets the same ids.
  RlsPlan again;
  ASSERT_TRUE(again.Build(*rules, with_id, false, &error));
  for (size_t i = 0; i < 4; ++i)
    EXPECT_EQ(again.checks()[i].request_id, plan.checks()[i].request_id);
  // Without an id (gRPC, HTTP): no dedup.
  RlsPlan none;
  ASSERT_TRUE(none.Build(*rules, FromWire(Query(0)), false, &error));
  for (const CheckRequestRef& c : none.checks()) EXPECT_EQ(c.request_id, 0u);
}

TEST(DescriptorWireTest, AnswerHasTheV1FieldsAndFitsItsBound) {
  auto rules = Rules();
  Limiter limiter(LimiterOptions{});
  const Instant now = ReadClock();
  wire::DescriptorReport report;
  size_t bound = 0;
  // Twice: the second time gold's hourly limit of 2 is spent (2 hits each)
  // and the canary (1 a minute, shadow) denies, answered ok. Two request
  // ids: the same one again would be a retry, answered from the dedup cache.
  for (int round = 0; round < 2; ++round) {
    const RlsRequest request = FromWire(Query(5 + static_cast<uint64_t>(round)));
    RlsPlan plan;
    std::string error;
    ASSERT_TRUE(plan.Build(*rules, request, false, &error)) << error;
    bound = AnswerBoundOf(plan);
    std::vector<CheckResult> results;
    limiter.CheckBatch(plan.checks(), now, &results);
    RlsAnswer answer;
    ASSERT_EQ(plan.Answer(results, &answer, &error), Status::kOk) << error;
    report = ToWire(answer, request.request_id);
  }
  EXPECT_EQ(report.request_id, 6u);
  EXPECT_EQ(report.status, Status::kOk);
  EXPECT_EQ(report.overall_code, wire::RateCode::kOverLimit);
  ASSERT_EQ(report.results.size(), 4u);
  const wire::DescriptorOutcome& gold = report.results[0];
  EXPECT_EQ(gold.code, wire::RateCode::kOverLimit);
  EXPECT_TRUE(gold.has_limit);
  EXPECT_EQ(gold.limit, 2u);
  EXPECT_EQ(gold.unit, static_cast<uint8_t>(rules::Unit::kHour));
  EXPECT_EQ(gold.name, "a_rather_long_name_for_the_hourly_limit");
  EXPECT_GT(gold.retry_after_ms, 0u);
  EXPECT_EQ(gold.retry_after_ms, gold.reset_after_ms);
  const wire::DescriptorOutcome& canary = report.results[1];
  EXPECT_EQ(canary.code, wire::RateCode::kOk);  // shadow mode
  EXPECT_EQ(canary.retry_after_ms, 0u);
  EXPECT_FALSE(report.results[2].has_limit);  // no rule
  EXPECT_TRUE(report.results[3].has_limit);   // the override
  EXPECT_EQ(report.results[3].limit, 7u);
  std::vector<std::byte> bytes;
  wire::EncodeDescriptorCheckResponse(report, &bytes);
  EXPECT_LE(bytes.size(), bound);
}

}  // namespace
}  // namespace tally::rls

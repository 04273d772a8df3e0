// POST /v1/check's JSON (daemon/rls/v1_check.h): both forms, their answers
// in the fields of `tally check --json`, and errors.
#include "daemon/rls/v1_check.h"

#include <gtest/gtest.h>

#include <boost/json.hpp>

namespace tally::rls {
namespace {

namespace json = boost::json;

TEST(V1CheckTest, ParsesTheExplicitForm) {
  V1Request r;
  std::string error;
  ASSERT_TRUE(ParseV1Request(
      R"({"user_id":"u","endpoint":"e","limit":10,"window_ms":1000,"hits":3,"request_id":7})", &r,
      &error))
      << error;
  EXPECT_EQ(r.form, V1Form::kExplicit);
  EXPECT_EQ(r.check.user_id, "u");
  EXPECT_EQ(r.check.endpoint, "e");
  EXPECT_EQ(r.check.limit, 10u);
  EXPECT_EQ(r.check.window_ms, 1000u);
  EXPECT_EQ(r.check.hits, 3u);
  EXPECT_EQ(r.check.request_id, 7u);
  ASSERT_TRUE(
      ParseV1Request(R"({"user_id":"u","endpoint":"e","limit":0,"window_ms":5})", &r, &error));
  EXPECT_EQ(r.check.hits, 1u);  // the default
}

TEST(V1CheckTest, ParsesTheRulesForm) {
  V1Request r;
  std::string error;
  ASSERT_TRUE(ParseV1Request(
      R"({"domain":"d","hits_addend":4,"descriptors":[{"entries":[{"key":"k","value":"v"}]}]})", &r,
      &error))
      << error;
  EXPECT_EQ(r.form, V1Form::kRules);
  EXPECT_EQ(r.rules.domain, "d");
  EXPECT_EQ(r.rules.hits_addend, 4u);
  ASSERT_EQ(r.rules.descriptors.size(), 1u);
  EXPECT_EQ(r.rules.descriptors[0].entries[0].key, "k");
  EXPECT_EQ(r.rules.descriptors[0].entries[0].value, "v");
}

TEST(V1CheckTest, RejectsWhatIsNeitherForm) {
  for (const char* body : {
           "",
           "{",
           "1",
           "\"x\"",
           "{}",
           R"({"limit":1})",
           R"({"user_id":"u","endpoint":"e","limit":1,"window_ms":1,"domain":"d"})",
           R"({"user_id":"u","endpoint":"e","limit":1})",
           R"({"user_id":5,"endpoint":"e","limit":1,"window_ms":1})",
           R"({"user_id":"u","endpoint":"e","limit":1.5,"window_ms":1})",
           R"({"user_id":"u","endpoint":"e","limit":1,"window_ms":1,"hits":-2})",
           R"({"user_id":"u","endpoint":"e","limit":1,"window_ms":99999999999999})",
           R"({"user_id":"u","endpoint":"e","limit":1,"window_ms":1,"why":1})",
           R"({"domain":"d","descriptors":[{"entries":[{"key":"k"}],"bogus":1}]})",
       }) {
    V1Request r;
    std::string error;
    EXPECT_FALSE(ParseV1Request(body, &r, &error)) << body;
    EXPECT_FALSE(error.empty()) << body;
  }
}

TEST(V1CheckTest, FormatsResultsAsTallyCheckJson) {
  CheckResult r;
  r.allowed = false;
  r.remaining = 0;
  r.retry_after_ms = kNeverFits;
  r.reset_after_ms = 250;
  r.limit = 5;
  r.request_id = 3;
  const json::value v = json::parse(FormatV1Result(r));
  EXPECT_EQ(v.at("allowed"), false);
  EXPECT_EQ(v.at("retry_after_ms").to_number<int64_t>(), -1);
  EXPECT_EQ(v.at("reset_after_ms").to_number<int64_t>(), 250);
  EXPECT_EQ(v.at("limit").to_number<int64_t>(), 5);
  EXPECT_EQ(v.at("status"), "ok");
  EXPECT_EQ(v.at("request_id").to_number<int64_t>(), 3);

  r.status = Status::kOverCapacity;
  r.error = "full \"table\"";
  const json::value e = json::parse(FormatV1Result(r));
  EXPECT_EQ(e.at("allowed"), false);
  EXPECT_EQ(e.at("status"), "over_capacity");
  EXPECT_EQ(e.at("error"), "full \"table\"");
}

TEST(V1CheckTest, FormatsAnAnswerPerDescriptor) {
  RlsAnswer a;
  a.overall_code = Code::kOverLimit;
  RlsStatus over;
  over.code = Code::kOverLimit;
  over.current_limit = RlsLimit{5, rules::Unit::kMinute, "burst"};
  over.duration_until_reset_ms = 1200;
  RlsStatus unlimited;  // no rule: OK, no limit
  a.statuses = {over, unlimited};
  const json::value v = json::parse(FormatV1Answer(a));
  EXPECT_EQ(v.at("allowed"), false);
  const json::array& d = v.at("descriptors").as_array();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].at("allowed"), false);
  EXPECT_EQ(d[0].at("limit").to_number<int64_t>(), 5);
  EXPECT_EQ(d[0].at("retry_after_ms").to_number<int64_t>(), 1200);
  EXPECT_EQ(d[0].at("name"), "burst");
  EXPECT_EQ(d[0].at("unit"), "minute");
  EXPECT_EQ(d[1].at("allowed"), true);
  EXPECT_TRUE(d[1].at("limit").is_null());
}

}  // namespace
}  // namespace tally::rls

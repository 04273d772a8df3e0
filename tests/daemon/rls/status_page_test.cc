// The status page's JSON (daemon/rls/status_page.h) from a made-up snapshot,
// and its two routes (daemon/rls/http_routes.h): GET / serves the embedded,
// self-contained page; GET /status.json serves the hook's JSON.
#include "daemon/rls/status_page.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <limits>
#include <optional>
#include <regex>
#include <string>

#include "daemon/rls/http_routes.h"

namespace tally::rls {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;
using ::testing::Not;

StatusPageInput Snapshot() {
  StatusPageInput in;
  wire::StatusReport& s = in.status;
  s.node_id = "n1";
  s.generation = 11;
  s.cluster = true;
  s.owning = false;
  s.not_owning_reason = "warming up";
  s.key_share = 0.3333333;
  s.live_keys = 42;
  s.uptime_ms = 90'000;
  s.cluster_name = "prod";
  wire::MemberReport self{"n1", "alive", 0, 11, "127.0.0.1:1"};
  wire::MemberReport peer{"n2", "suspect", 3, 12, "127.0.0.1:2", -1.25, 0.5};
  wire::MemberReport unprobed{"n3", "alive", 0, 13, "127.0.0.1:3"};  // offset, RTT unknown
  self.rules_digest = std::string(32, 'a');
  peer.rules_digest = std::string(32, 'b');  // other rules; n3 has not told its own yet
  s.members = {self, peer, unprobed};
  in.key_capacity = 1000;
  in.now_wall_ms = 1'700'000'060'000;
  in.doors.checks[0][static_cast<size_t>(io::Decision::kAllowed)] = 70;
  in.doors.checks[0][static_cast<size_t>(io::Decision::kDenied)] = 20;
  in.doors.checks[4][static_cast<size_t>(io::Decision::kDenied)] = 10;
  // 70 one-second intervals: 5 checks/s, 1 denied/s, except the newest ten:
  // 20 checks/s, 4 denied/s.
  for (int i = 0; i < 70; ++i) {
    const bool recent = i >= 60;
    in.rates.push_back(
        io::RateSample{1'700'000'000'000 + i * 1000, 1000, recent ? 20u : 5u, recent ? 4u : 1u});
  }
  in.busiest_keys = {{"alice", "api", 60'000, 10, 12.5, 25}, {"bob", "api", 1000, 5, 1, 1}};
  in.key_sample_period = 16;
  for (int i = 0; i < 12; ++i) {
    in.rules.push_back(RuleUse{"edge.tier_" + std::to_string(i), "", 100, 60'000, i * 0.05,
                               static_cast<uint64_t>(i), 0, 0, 0});
  }
  in.rules.push_back(RuleUse{"edge.tier_gold", "burst", 5, 60'000, 1.0, 9, 4, 2, 0});
  in.events = {{1'700'000'050'000, "n2", "state", "alive", "suspect", 3, 12},
               {1'700'000'010'000, "n2", "joined", "", "alive", 0, 12}};
  return in;
}

TEST(StatusPageJsonTest, CarriesEverythingThePageShows) {
  const json::value v = json::parse(RenderStatusJson(Snapshot()));
  const json::object& root = v.as_object();

  const json::object& node = root.at("node").as_object();
  EXPECT_EQ(node.at("id").as_string(), "n1");
  EXPECT_EQ(node.at("owning").as_bool(), false);
  EXPECT_EQ(node.at("not_owning_reason").as_string(), "warming up");
  EXPECT_DOUBLE_EQ(node.at("key_share").to_number<double>(), 0.333);
  EXPECT_EQ(node.at("live_keys").to_number<uint64_t>(), 42u);
  EXPECT_EQ(node.at("key_capacity").to_number<uint64_t>(), 1000u);
  EXPECT_EQ(node.at("cluster_name").as_string(), "prod");
  EXPECT_EQ(root.at("now_ms").to_number<int64_t>(), 1'700'000'060'000);

  const json::array& members = root.at("members").as_array();
  ASSERT_EQ(members.size(), 3u);
  EXPECT_EQ(members[0].at("self").as_bool(), true);
  const json::object& n2 = members[1].as_object();
  EXPECT_EQ(n2.at("id").as_string(), "n2");
  EXPECT_EQ(n2.at("state").as_string(), "suspect");
  EXPECT_EQ(n2.at("incarnation").to_number<uint64_t>(), 3u);
  EXPECT_DOUBLE_EQ(n2.at("clock_offset_ms").to_number<double>(), -1.25);
  EXPECT_DOUBLE_EQ(n2.at("rtt_ms").to_number<double>(), 0.5);
  EXPECT_TRUE(members[2].at("rtt_ms").is_null());  // unknown, not NaN (invalid JSON)
  EXPECT_TRUE(members[2].at("clock_offset_ms").is_null());
  EXPECT_EQ(members[0].at("rules_digest").as_string(), std::string(32, 'a'));
  EXPECT_FALSE(members[0].at("rules_differ").as_bool());
  EXPECT_EQ(n2.at("rules_digest").as_string(), std::string(32, 'b'));
  EXPECT_TRUE(n2.at("rules_differ").as_bool());
  EXPECT_EQ(members[2].at("rules_digest").as_string(), "");
  EXPECT_TRUE(members[2].at("rules_differ").as_bool());
  EXPECT_EQ(json::serialize(node.at("rules_differ")), R"(["n2","n3"])");

  const json::object& rates = root.at("rates").as_object();
  EXPECT_EQ(rates.at("samples").as_array().size(), 70u);
  const json::array& newest = rates.at("samples").as_array().back().as_array();
  EXPECT_EQ(newest[0].to_number<int64_t>(), 1'700'000'069'000);
  EXPECT_EQ(newest[2].to_number<uint64_t>(), 20u);
  EXPECT_DOUBLE_EQ(rates.at("checks_per_s_10s").to_number<double>(), 20);
  EXPECT_DOUBLE_EQ(rates.at("denied_per_s_10s").to_number<double>(), 4);
  // The newest 60 s: ten at 20/s and fifty at 5/s.
  EXPECT_DOUBLE_EQ(rates.at("checks_per_s_1m").to_number<double>(), 7.5);
  EXPECT_DOUBLE_EQ(rates.at("denied_per_s_1m").to_number<double>(), 1.5);

  const json::object& totals = root.at("totals").as_object();
  EXPECT_EQ(totals.at("allowed").to_number<uint64_t>(), 70u);
  EXPECT_EQ(totals.at("denied").to_number<uint64_t>(), 30u);  // summed over doors
  EXPECT_EQ(totals.at("all").to_number<uint64_t>(), 100u);

  const json::object& keys = root.at("busiest_keys").as_object();
  EXPECT_EQ(keys.at("sample_period").to_number<uint32_t>(), 16u);
  ASSERT_EQ(keys.at("keys").as_array().size(), 2u);
  const json::object& alice = keys.at("keys").as_array()[0].as_object();
  EXPECT_EQ(alice.at("user_id").as_string(), "alice");
  EXPECT_EQ(alice.at("window_ms").to_number<uint64_t>(), 60'000u);
  EXPECT_DOUBLE_EQ(alice.at("checks_per_s").to_number<double>(), 12.5);
  EXPECT_DOUBLE_EQ(alice.at("hits_per_s").to_number<double>(), 25);

  // Nearest their limits first, at most kMaxShownRules.
  const json::array& rules = root.at("rules").as_array();
  ASSERT_EQ(rules.size(), kMaxShownRules);
  EXPECT_EQ(rules[0].at("rule").as_string(), "edge.tier_gold");
  EXPECT_EQ(rules[0].at("name").as_string(), "burst");
  EXPECT_DOUBLE_EQ(rules[0].at("peak_used").to_number<double>(), 1.0);
  EXPECT_EQ(rules[0].at("over_limit").to_number<uint64_t>(), 4u);
  EXPECT_EQ(rules[1].at("rule").as_string(), "edge.tier_11");
  EXPECT_EQ(rules.back().at("rule").as_string(), "edge.tier_3");

  const json::array& events = root.at("events").as_array();
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0].at("what").as_string(), "state");
  EXPECT_EQ(events[0].at("from").as_string(), "alive");
  EXPECT_EQ(events[0].at("to").as_string(), "suspect");
  EXPECT_EQ(events[0].at("time_ms").to_number<int64_t>(), 1'700'000'050'000);
}

TEST(StatusPageJsonTest, EmptySnapshotIsValidJson) {
  const json::value v = json::parse(RenderStatusJson(StatusPageInput{}));
  EXPECT_TRUE(v.at("members").as_array().empty());
  EXPECT_TRUE(v.at("rates").at("samples").as_array().empty());
  EXPECT_EQ(v.at("rates").at("checks_per_s_10s").to_number<double>(), 0);
  EXPECT_TRUE(v.at("events").as_array().empty());
}

TEST(StatusPageJsonTest, RatePerSecondUsesTheNewestSamplesCoveringTheSpan) {
  const std::vector<io::RateSample> samples = {
      {1000, 1000, 100, 0}, {3000, 2000, 10, 2}, {4000, 1000, 30, 1}};
  EXPECT_DOUBLE_EQ(RatePerSecond(samples, 1000, false), 30);
  EXPECT_DOUBLE_EQ(RatePerSecond(samples, 2000, false), 40.0 / 3);  // two samples, 3 s
  EXPECT_DOUBLE_EQ(RatePerSecond(samples, 2000, true), 1);
  EXPECT_DOUBLE_EQ(RatePerSecond(samples, 60'000, false), 35);  // all there is: 140 in 4 s
  EXPECT_DOUBLE_EQ(RatePerSecond({}, 10'000, false), 0);
}

TEST(StatusPageJsonTest, EscapesWhatClientsAndPeersSent) {
  StatusPageInput in;
  in.busiest_keys = {{"</script><script>alert(1)</script>\"\n", "api", 1000, 1, 1, 1}};
  const std::string text = RenderStatusJson(in);
  const json::value v = json::parse(text);
  EXPECT_EQ(v.at("busiest_keys").at("keys").as_array()[0].at("user_id").as_string(),
            "</script><script>alert(1)</script>\"\n");
  EXPECT_THAT(text, Not(HasSubstr("\n")));
}

std::optional<HttpReply> Route(const HttpRouteHooks& hooks, std::string_view method,
                               std::string_view target) {
  std::optional<HttpReply> reply;
  if (!RouteHttp(hooks, method, target, "", [&](HttpReply r) { reply = std::move(r); })) {
    return std::nullopt;
  }
  return reply;
}

TEST(StatusPageRouteTest, ServesTheSelfContainedPageAtTheRoot) {
  const HttpRouteHooks hooks;
  const std::optional<HttpReply> page = Route(hooks, "GET", "/");
  ASSERT_TRUE(page.has_value());
  EXPECT_EQ(page->status, 200u);
  EXPECT_EQ(page->content_type, "text/html; charset=utf-8");
  EXPECT_EQ(page->body, StatusPageHtml());
  const std::string& html = page->body;
  EXPECT_THAT(html, HasSubstr("<!DOCTYPE html>"));
  EXPECT_THAT(html, HasSubstr("fetch(\"/status.json\""));
  EXPECT_THAT(html, HasSubstr("</html>"));
  // Nothing from elsewhere: no script or style files, no fonts, no images,
  // no absolute URLs but the SVG namespace name.
  EXPECT_FALSE(std::regex_search(html, std::regex(R"(<script[^>]*\bsrc\s*=)")));
  EXPECT_FALSE(std::regex_search(html, std::regex(R"(<link\b|@import|@font-face|url\s*\()")));
  EXPECT_FALSE(std::regex_search(html, std::regex(R"(<img\b|<iframe\b)")));
  const std::string without_svg_ns =
      std::regex_replace(html, std::regex(R"(http://www\.w3\.org/2000/svg)"), "");
  EXPECT_FALSE(
      std::regex_search(without_svg_ns, std::regex(R"(https?://|//[a-z0-9.-]+\.[a-z]{2,}/)")));
  // Keys and member ids are untrusted: the page never parses them as HTML.
  EXPECT_THAT(html, Not(HasSubstr("innerHTML")));

  const std::optional<HttpReply> head = Route(hooks, "HEAD", "/");
  ASSERT_TRUE(head.has_value());
  EXPECT_EQ(head->status, 200u);
  const std::optional<HttpReply> post = Route(hooks, "POST", "/");
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 405u);
}

TEST(StatusPageRouteTest, ServesTheHooksJson) {
  HttpRouteHooks hooks;
  int calls = 0;
  hooks.status_json = [&] {
    ++calls;
    return RenderStatusJson(Snapshot());
  };
  const std::optional<HttpReply> reply = Route(hooks, "GET", "/status.json");
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(reply->status, 200u);
  EXPECT_EQ(reply->content_type, "application/json");
  EXPECT_EQ(calls, 1);
  EXPECT_EQ(json::parse(reply->body).at("node").at("id").as_string(), "n1");
  const std::optional<HttpReply> post = Route(hooks, "POST", "/status.json");
  ASSERT_TRUE(post.has_value());
  EXPECT_EQ(post->status, 405u);
  EXPECT_EQ(calls, 1);
  // Without a hook (a server without a daemon behind it): still JSON.
  EXPECT_EQ(Route(HttpRouteHooks{}, "GET", "/status.json")->body, "{}");
  // Other paths are not the page's.
  EXPECT_FALSE(Route(hooks, "GET", "/index.html").has_value());
  EXPECT_FALSE(Route(hooks, "GET", "/status.json?x=1").has_value());
}

}  // namespace
}  // namespace tally::rls

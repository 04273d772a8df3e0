// The HTTP door's operations and check paths (daemon/rls/http_routes.h)
// against real tallyd processes: GET /metrics moves by exactly what was
// sent and passes `promtool check metrics`; /healthz, /readyz (ready, and
// 503 with the join warning); POST /v1/check in both forms and bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/wait.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ip/udp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tally/client.h"
#include "tests/cluster/cluster_harness.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_request.h"
#include "tests/support/prometheus_text.h"

namespace tally::testing {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using ::testing::HasSubstr;

// The HTTP door's flag (DaemonProcess adds "--grpc none" and "--http none" unless given).
constexpr const char* kHttpFlag = "--http";

HttpResult Get(const std::string& address, const std::string& target) {
  return HttpGet(address, target);
}
HttpResult Post(const std::string& address, const std::string& target, const std::string& body) {
  return HttpPost(address, target, body);
}

constexpr const char* kRules = R"(domain: edge
descriptors:
  - key: tier
    value: gold
    rate_limits:
      - {unit: minute, requests_per_unit: 5, name: burst}
  - key: canary
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: canary}
)";

class HttpOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::ofstream(dir_.File("rules.yaml")) << kRules;
    std::string error;
    ASSERT_TRUE(tallyd_.Start({"--udp", "127.0.0.1:0", "--unix", dir_.File("d.sock"), kHttpFlag,
                               "127.0.0.1:0", "--rules", dir_.File("rules.yaml"), "--threads", "2"},
                              &error))
        << error;
    http_ = tallyd_.http_address();
    ASSERT_FALSE(http_.empty()) << tallyd_.listening_line();
  }
  void TearDown() override { EXPECT_EQ(tallyd_.Stop(), 0); }

  CheckResult CheckUdp(const std::string& user, uint64_t limit) {
    DaemonAddress e;
    e.port = tallyd_.udp_port();
    std::string error;
    auto client = Client::Connect(e, ClientOptions{}, &error);
    EXPECT_TRUE(client != nullptr) << error;
    if (!client) return {};
    CheckRequest r;
    r.user_id = user;
    r.endpoint = "api";
    r.limit = limit;
    r.window_ms = 60'000;
    return client->Check(r);
  }

  TempDir dir_;
  DaemonProcess tallyd_;
  std::string http_;
};

TEST_F(HttpOpsTest, MetricsMoveByExactlyWhatWasSentAndPassPromtool) {
  const HttpResult before_scrape = Get(http_, "/metrics");
  ASSERT_EQ(before_scrape.status, 200) << before_scrape.body;
  EXPECT_EQ(before_scrape.content_type, "text/plain; version=0.0.4; charset=utf-8");
  const auto before = ParseSamples(before_scrape.body);

  // UDP: 3 allowed then 2 denied on a limit of 3; 1 invalid (limit 0 is fine,
  // an empty user is not).
  for (int i = 0; i < 5; ++i) CheckUdp("alice", 3);
  EXPECT_EQ(CheckUdp("", 3).status, Status::kInvalidArgument);
  // HTTP /v1/check explicit: 2 allowed, 1 denied on a limit of 2.
  const std::string bob = R"({"user_id":"bob","endpoint":"api","limit":2,"window_ms":60000})";
  for (int i = 0; i < 3; ++i) EXPECT_EQ(Post(http_, "/v1/check", bob).status, 200);
  // HTTP rules form: tier=gold, 5 per minute: 7 requests -> 5 allowed, 2 denied;
  // canary (shadow, 1 per minute): 2 requests -> 1 allowed, 1 shadow.
  const std::string gold =
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"tier","value":"gold"}]}]})";
  for (int i = 0; i < 7; ++i) EXPECT_EQ(Post(http_, "/v1/check", gold).status, 200);
  const std::string canary =
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"canary","value":"x"}]}]})";
  for (int i = 0; i < 2; ++i) EXPECT_EQ(Post(http_, "/json", canary).status, 200);
  // A bad body: one invalid on the HTTP door.
  EXPECT_EQ(Post(http_, "/v1/check", "{").status, 400);

  const HttpResult after_scrape = Get(http_, "/metrics");
  ASSERT_EQ(after_scrape.status, 200);
  const auto after = ParseSamples(after_scrape.body);
  auto moved = [&](const std::string& key) { return Sample(after, key) - Sample(before, key); };
  auto checks = [](const char* door, const char* decision) {
    return std::string("tally_checks_total{door=\"") + door + "\",decision=\"" + decision + "\"}";
  };
  EXPECT_EQ(moved(checks("udp", "allowed")), 3);
  EXPECT_EQ(moved(checks("udp", "denied")), 2);
  EXPECT_EQ(moved(checks("udp", "invalid")), 1);
  EXPECT_EQ(moved(checks("http", "allowed")), 2 + 5 + 1);
  EXPECT_EQ(moved(checks("http", "denied")), 1 + 2);
  EXPECT_EQ(moved(checks("http", "shadow")), 1);
  EXPECT_EQ(moved(checks("http", "invalid")), 1);
  EXPECT_EQ(moved(checks("grpc", "allowed")), 0);
  EXPECT_EQ(moved(checks("unix", "allowed")), 0);
  // Latency: one observation per UDP message, one per decided HTTP request.
  EXPECT_EQ(moved("tally_check_duration_seconds_count{door=\"udp\"}"), 6);
  EXPECT_EQ(moved("tally_check_duration_seconds_count{door=\"http\"}"), 3 + 7 + 2);
  EXPECT_EQ(moved("tally_check_duration_seconds_bucket{door=\"http\",le=\"+Inf\"}"), 3 + 7 + 2);
  // The limiter saw every decided check, whatever the door.
  EXPECT_EQ(moved("tally_limiter_decisions_total{decision=\"allowed\"}"), 3 + 8);
  EXPECT_EQ(moved("tally_limiter_decisions_total{decision=\"denied\"}"), 2 + 4);
  // Per rule, in hits: gold saw 7 hits, 2 over the limit, near limit (>= 4
  // of 5 used) for the 4th and 5th; canary 2 hits, 1 in shadow mode.
  EXPECT_EQ(Sample(after, "tally_rule_hits_total{rule=\"edge.tier_gold\",name=\"burst\"}"), 7);
  EXPECT_EQ(
      Sample(after, "tally_rule_over_limit_hits_total{rule=\"edge.tier_gold\",name=\"burst\"}"), 2);
  EXPECT_EQ(
      Sample(after, "tally_rule_near_limit_hits_total{rule=\"edge.tier_gold\",name=\"burst\"}"), 2);
  EXPECT_EQ(Sample(after, "tally_rule_hits_total{rule=\"edge.canary\",name=\"canary\"}"), 2);
  EXPECT_EQ(
      Sample(after, "tally_rule_shadow_mode_hits_total{rule=\"edge.canary\",name=\"canary\"}"), 1);
  EXPECT_EQ(Sample(after, "tally_rule_over_limit_hits_total{rule=\"edge.canary\",name=\"canary\"}"),
            0);
  EXPECT_EQ(Sample(after, "tally_live_keys"), 4);  // alice, bob, gold, canary
  EXPECT_EQ(Sample(after, "tally_key_capacity"), 4'000'000);
  EXPECT_GT(Sample(after, "process_resident_memory_bytes"), 0);
  EXPECT_GT(Sample(after, "process_open_fds"), 0);
  EXPECT_EQ(Sample(after, "tally_rules_reload_failures_total"), 0);

  // CI installs promtool (scripts/install-deps.sh): a missing one fails.
  std::string output;
  EXPECT_EQ(Promtool(after_scrape.body, dir_, &output), 0) << output;
}

TEST_F(HttpOpsTest, HealthAndReadiness) {
  HttpResult r = Get(http_, "/healthz");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "ok\n");
  r = Get(http_, "/readyz");
  EXPECT_EQ(r.status, 200) << r.body;
  r = Get(http_, "/healthcheck");  // Envoy ratelimit's, unchanged
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "OK");
  r = Post(http_, "/healthz", "{}");
  EXPECT_EQ(r.status, 405);
  r = Get(http_, "/nope");
  EXPECT_EQ(r.status, 404);
  EXPECT_THAT(r.body, HasSubstr("/v1/check"));
  EXPECT_THAT(r.body, HasSubstr("/metrics"));
  EXPECT_THAT(r.body, HasSubstr("/readyz"));
}

TEST_F(HttpOpsTest, V1CheckExplicitForm) {
  const std::string body =
      R"({"user_id":"carol","endpoint":"pay","limit":1,"window_ms":1000,"hits":1,"request_id":9})";
  HttpResult r = Post(http_, "/v1/check", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json::object o = json::parse(r.body).as_object();
  EXPECT_EQ(o.at("allowed"), true);
  EXPECT_EQ(o.at("remaining").to_number<int64_t>(), 0);
  EXPECT_EQ(o.at("limit").to_number<int64_t>(), 1);
  EXPECT_EQ(o.at("status"), "ok");
  EXPECT_EQ(o.at("request_id").to_number<int64_t>(), 9);
  EXPECT_TRUE(o.contains("retry_after_ms"));
  EXPECT_TRUE(o.contains("reset_after_ms"));
  // The same request id again is a retry: the deduplication cache answers it.
  r = Post(http_, "/v1/check", body);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("allowed"), true);
  // A new one is over the limit.
  r = Post(http_, "/v1/check",
           R"({"user_id":"carol","endpoint":"pay","limit":1,"window_ms":1000,"request_id":10})");
  ASSERT_EQ(r.status, 200) << r.body;
  o = json::parse(r.body).as_object();
  EXPECT_EQ(o.at("allowed"), false);
  EXPECT_GT(o.at("retry_after_ms").to_number<int64_t>(), 0);
  // More hits than the limit can ever hold: -1, as `tally check --json`.
  r = Post(http_, "/v1/check",
           R"({"user_id":"carol","endpoint":"big","limit":1,"window_ms":1000,"hits":2})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(json::parse(r.body).at("retry_after_ms").to_number<int64_t>(), -1);
}

TEST_F(HttpOpsTest, V1CheckRulesFormPerDescriptor) {
  const std::string body = R"({"domain":"edge","hits_addend":2,"descriptors":[
      {"entries":[{"key":"tier","value":"gold"}]},
      {"entries":[{"key":"unknown","value":"x"}]}]})";
  HttpResult r = Post(http_, "/v1/check", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json::object o = json::parse(r.body).as_object();
  EXPECT_EQ(o.at("allowed"), true);
  const json::array& d = o.at("descriptors").as_array();
  ASSERT_EQ(d.size(), 2u);
  EXPECT_EQ(d[0].at("allowed"), true);
  EXPECT_EQ(d[0].at("limit").to_number<int64_t>(), 5);
  EXPECT_EQ(d[0].at("remaining").to_number<int64_t>(), 3);
  EXPECT_EQ(d[0].at("name"), "burst");
  EXPECT_EQ(d[0].at("unit"), "minute");
  EXPECT_TRUE(d[1].at("limit").is_null());
  EXPECT_EQ(d[1].at("allowed"), true);
  // 2 + 2 = 4 of 5; 2 more do not fit: over, and so is the whole answer.
  Post(http_, "/v1/check", body);
  r = Post(http_, "/v1/check", body);
  ASSERT_EQ(r.status, 200) << r.body;
  o = json::parse(r.body).as_object();
  EXPECT_EQ(o.at("allowed"), false);
  EXPECT_EQ(o.at("descriptors").as_array()[0].at("allowed"), false);
  EXPECT_GT(o.at("descriptors").as_array()[0].at("retry_after_ms").to_number<int64_t>(), 0);
}

TEST_F(HttpOpsTest, V1CheckBadInputIs400WithJsonError) {
  const std::vector<std::string> bad = {
      "",
      "{",
      "[]",
      "null",
      R"({"user_id":"a"})",
      R"({"user_id":"a","endpoint":"b","limit":1})",
      R"({"user_id":"","endpoint":"b","limit":1,"window_ms":1000})",
      R"({"user_id":"a","endpoint":"b","limit":-1,"window_ms":1000})",
      R"({"user_id":"a","endpoint":"b","limit":1,"window_ms":0})",
      R"({"user_id":"a","endpoint":"b","limit":1,"window_ms":"1000"})",
      R"({"user_id":"a","endpoint":"b","limit":1,"window_ms":1000,"extra":1})",
      R"({"user_id":"a","endpoint":"b","limit":1,"window_ms":1000,"domain":"edge"})",
      R"({"domain":"edge"})",
      R"({"domain":"edge","descriptors":[]})",
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"","value":"x"}]}]})",
      R"({"domain":"edge","descriptors":"x"})",
      R"({"user_id":"a","endpoint":"b","limit":1,"window_ms":1e400})",
      std::string(100, '[') + std::string(100, ']'),
  };
  for (const std::string& body : bad) {
    const HttpResult r = Post(http_, "/v1/check", body);
    EXPECT_EQ(r.status, 400) << body << " -> " << r.body;
    if (r.status != 400) continue;
    json::error_code ec;
    const json::value v = json::parse(r.body, ec);
    ASSERT_FALSE(ec) << r.body;
    EXPECT_EQ(v.at("status"), "invalid_argument") << r.body;
    EXPECT_FALSE(v.at("error").as_string().empty());
  }
  EXPECT_EQ(Get(http_, "/v1/check").status, 405);
  // Beyond max_request_bytes (64 KiB): 413, and the door still serves.
  const HttpResult big =
      Post(http_, "/v1/check", R"({"user_id":")" + std::string(70'000, 'a') + R"("})");
  EXPECT_EQ(big.status, 413);
  EXPECT_EQ(Get(http_, "/healthz").status, 200);
}

// A node whose only seed never answers is not ready: after join_warning_ms
// (3 s) /readyz says so. Polled, not slept.
TEST(HttpOpsClusterTest, ReadyzReportsTheJoinWarning) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  // A seed nobody serves: a UDP port we hold but never read from.
  asio::io_context io;
  asio::ip::udp::socket silent(io, {asio::ip::make_address("127.0.0.1"), 0});
  const std::string seed = "127.0.0.1:" + std::to_string(silent.local_endpoint().port());
  DaemonProcess tallyd;
  std::string error;
  ASSERT_TRUE(
      tallyd.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("d.sock"), "--gossip", "127.0.0.1:0",
                    "--node-id", "lone", "--join", seed, kHttpFlag, "127.0.0.1:0"},
                   &error))
      << error;
  const std::string http = tallyd.http_address();
  ASSERT_FALSE(http.empty()) << tallyd.listening_line();
  EXPECT_EQ(Get(http, "/healthz").status, 200);  // alive throughout
  HttpResult r;
  PollUntil(std::chrono::seconds(20), [&] {
    r = Get(http, "/readyz");
    return r.body.find("join warning") != std::string::npos;
  });
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_THAT(r.body, HasSubstr("join warning: 1 seed(s) unanswered"));
  // Serving alone, it decides; the UDP door is counted in cluster mode too
  // (the driver decodes the node's replies).
  DaemonAddress e;
  e.port = tallyd.udp_port();
  auto client = Client::Connect(e, ClientOptions{}, &error);
  ASSERT_TRUE(client != nullptr) << error;
  CheckRequest check;
  check.user_id = "dave";
  check.endpoint = "api";
  check.limit = 1;
  check.window_ms = 60'000;
  EXPECT_TRUE(client->Check(check).allowed);
  check.request_id = 0;
  EXPECT_FALSE(client->Check(check).allowed);
  const HttpResult metrics = Get(http, "/metrics");
  EXPECT_THAT(metrics.body, HasSubstr("tally_checks_total{door=\"udp\",decision=\"allowed\"} 1\n"));
  EXPECT_THAT(metrics.body, HasSubstr("tally_checks_total{door=\"udp\",decision=\"denied\"} 1\n"));
  EXPECT_THAT(metrics.body, HasSubstr("tally_check_duration_seconds_count{door=\"udp\"} 2\n"));
  EXPECT_THAT(metrics.body, HasSubstr("tally_cluster_join_seeds_unanswered 1\n"));
  EXPECT_THAT(metrics.body, HasSubstr("tally_cluster_members{state=\"alive\"} 1\n"));
  std::string output;
  EXPECT_EQ(Promtool(metrics.body, dir, &output), 0) << output;
  EXPECT_EQ(tallyd.Stop(), 0);
}

// Three members: checks entering member n1 for keys other members own are
// forwarded; n1's UDP door counts each decision once, exactly, and its
// scrape (three members alive) passes promtool.
TEST(HttpOpsClusterTest, ThreeMembersCountForwardedChecksOnceAtTheDoor) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  ClusterHarness c;
  std::string error;
  ASSERT_TRUE(c.StartNodes(3, {kHttpFlag, "127.0.0.1:0"}, &error)) << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  const std::string http = c.node(0).process.http_address();
  ASSERT_FALSE(http.empty());
  // Ready once formed and owning: polled, the handoff may still be finishing.
  ASSERT_TRUE(PollUntil(std::chrono::seconds(15), [&] {
    return Get(http, "/readyz").status == 200;
  })) << Get(http, "/readyz").body;

  const auto before = ParseSamples(Get(http, "/metrics").body);
  int remote = 0;
  const int kChecks = 12;
  for (int i = 0; i < kChecks; ++i) {
    CheckRequest r;
    r.user_id = "user" + std::to_string(i);
    r.endpoint = "api";
    r.limit = 1;
    r.window_ms = 60'000;
    const std::optional<wire::OwnerReport> owner = OwnerOf(c.node(0), r);
    ASSERT_TRUE(owner.has_value());
    ASSERT_FALSE(owner->preference_list.empty());
    if (owner->preference_list.front() != "n1") ++remote;
    EXPECT_TRUE(CheckThrough(c.node(0), r).allowed) << i;
    EXPECT_FALSE(CheckThrough(c.node(0), r).allowed) << i;
  }
  const HttpResult scrape = Get(http, "/metrics");
  const auto after = ParseSamples(scrape.body);
  auto moved = [&](const std::string& key) { return Sample(after, key) - Sample(before, key); };
  EXPECT_EQ(moved("tally_checks_total{door=\"udp\",decision=\"allowed\"}"), kChecks);
  EXPECT_EQ(moved("tally_checks_total{door=\"udp\",decision=\"denied\"}"), kChecks);
  EXPECT_EQ(moved("tally_check_duration_seconds_count{door=\"udp\"}"), 2 * kChecks);
  ASSERT_GT(remote, 0) << "no key owned elsewhere among " << kChecks;
  EXPECT_GE(moved("tally_cluster_forwards_total"), 1);
  EXPECT_EQ(Sample(after, "tally_cluster_members{state=\"alive\"}"), 3);
  EXPECT_EQ(Sample(after, "tally_cluster_owning"), 1);
  EXPECT_GT(Sample(after, "tally_cluster_key_share"), 0);
  EXPECT_GT(moved("tally_cluster_gossip_datagrams_total{direction=\"in\"}"), 0);
  // Traffic by message kind: each remote key cost one forward out and one reply in.
  EXPECT_EQ(moved("tally_cluster_peer_messages_by_kind_total{direction=\"out\",kind=\"forward\"}"),
            2 * remote);
  EXPECT_EQ(
      moved("tally_cluster_peer_messages_by_kind_total{direction=\"in\",kind=\"forward_reply\"}"),
      2 * remote);
  EXPECT_GT(Sample(after, "tally_cluster_peer_bytes_by_kind_total{direction=\"in\",kind=\"swim\"}"),
            0);
  // The keys n1 owns were replicated, and the acknowledgements timed. Replication
  // leaves at the next replication interval, so both are polled.
  if (remote < kChecks) {
    EXPECT_TRUE(PollUntil(std::chrono::seconds(5), [&] {
      return Sample(ParseSamples(Get(http, "/metrics").body),
                    "tally_cluster_replication_bytes_sent_total") >
             Sample(before, "tally_cluster_replication_bytes_sent_total");
    }));
    EXPECT_TRUE(PollUntil(std::chrono::seconds(5), [&] {
      return Sample(ParseSamples(Get(http, "/metrics").body),
                    "tally_cluster_replication_ack_delay_seconds_count") > 0;
    }));
  }
  std::string output;
  EXPECT_EQ(Promtool(scrape.body, dir, &output), 0) << output;
}

}  // namespace
}  // namespace tally::testing

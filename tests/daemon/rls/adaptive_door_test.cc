// Load-adaptive limits on real tallyd processes (docs/DESIGN.md,
// "Load-adaptive limits"): POST /v1/report feeds an adaptive rule's
// controller and the rules path enforces the limit it publishes, on a single
// node and across three members (reports at one, checks at another).
// Reports are sent every 100 ms of real time and the checks polled; the
// control law itself is tested with injected time (tests/rules,
// tests/daemon/core).
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "tally/client.h"
#include "tests/cluster/cluster_harness.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_request.h"
#include "tests/support/prometheus_text.h"

namespace tally::testing {
namespace {

namespace json = boost::json;
using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr const char* kRules = R"(domain: api
descriptors:
  - key: backend
    rate_limit:
      unit: second
      requests_per_unit: 500
      name: backend
      adaptive: {min: 10, max: 1000, signal: latency_ms, target: 50}
)";

const std::string kCheck = R"({"domain":"api","descriptors":[{"entries":[{"key":"backend","value":"x"}]}]})";

// The limit the rules path answers with for the backend descriptor; -1 when
// the answer is not one.
int64_t LimitInForce(const std::string& http) {
  const HttpResult r = HttpPost(http, "/v1/check", kCheck);
  if (r.status != 200) return -1;
  const json::value v = json::parse(r.body);
  const json::value& limit = v.at("descriptors").as_array()[0].at("limit");
  return limit.is_null() ? -1 : limit.to_number<int64_t>();
}

// Calls `report` (a slow backend's report through some door) every 100 ms
// until the limit at `check_http` falls below 500, or `timeout`.
template <typename Report>
bool ReportsCutTheLimit(Report&& report, const std::string& check_http, seconds timeout) {
  return PollUntil(
      timeout,
      [&] {
        report();
        const int64_t limit = LimitInForce(check_http);
        return limit > 0 && limit < 500;
      },
      milliseconds(100));
}

// The same through the HTTP door at `http`: 300 requests of 200 ms.
bool SlowBackendCutsTheLimit(const std::string& http, const std::string& check_http,
                             seconds timeout) {
  return ReportsCutTheLimit(
      [&] {
        const HttpResult r = HttpPost(
            http, "/v1/report", R"({"domain":"api","rule":"backend","value":200,"count":300})");
        EXPECT_EQ(r.status, 200) << r.body;
      },
      check_http, timeout);
}

// A rules file with the adaptive rule in a fresh directory, and a single
// tallyd serving it on UDP, its Unix socket and HTTP.
class AdaptiveDoorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::ofstream(dir_.File("rules.yaml")) << kRules;
  }
  void StartSingleNode() {
    std::string error;
    ASSERT_TRUE(tallyd_.Start({"--udp", "127.0.0.1:0", "--unix", dir_.File("d.sock"), "--http",
                               "127.0.0.1:0", "--rules", dir_.File("rules.yaml")},
                              &error))
        << error;
  }
  TempDir dir_;
  DaemonProcess tallyd_;
};

TEST_F(AdaptiveDoorTest, ASingleNodeFollowsReportsAndRefusesBadOnes) {
  ASSERT_NO_FATAL_FAILURE(StartSingleNode());
  const std::string http = tallyd_.http_address();
  EXPECT_EQ(LimitInForce(http), 500) << "requests_per_unit until a law step";
  // What the door refuses, and why.
  HttpResult r = HttpPost(http, "/v1/report", R"({"domain":"api","rule":"nope","value":1})");
  EXPECT_EQ(r.status, 404) << r.body;
  EXPECT_NE(r.body.find("no adaptive limit named 'nope'"), std::string::npos) << r.body;
  r = HttpPost(http, "/v1/report", R"({"domain":"api","rule":"backend","value":-3})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = HttpPost(http, "/v1/report", R"({"domain":"api","rule":"backend","value":1,"count":0})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = HttpPost(http, "/v1/report", R"({"domain":"api","rule":"backend","value":"fast"})");
  EXPECT_EQ(r.status, 400) << r.body;
  r = HttpPost(http, "/v1/report", R"({"domain":"api","rule":"backend","value":1,"extra":2})");
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(HttpGet(http, "/v1/report").status, 405);
  EXPECT_EQ(LimitInForce(http), 500) << "refused reports moved nothing";
  // A slow backend: the limit falls within a few control intervals (1 s).
  ASSERT_TRUE(SlowBackendCutsTheLimit(http, http, seconds(15))) << LimitInForce(http);
  const int64_t cut = LimitInForce(http);
  EXPECT_GE(cut, 10);
  EXPECT_LE(cut, 450);
  // What the operator sees: the limit in force, the reports and the steps.
  const HttpResult scrape = HttpGet(http, "/metrics");
  const auto m = ParseSamples(scrape.body);
  EXPECT_EQ(Sample(m, "tally_adaptive_limit{domain=\"api\",name=\"backend\"}"), cut);
  EXPECT_GE(Sample(m, "tally_adaptive_reports_total{result=\"accepted\"}"), 2);
  EXPECT_EQ(Sample(m, "tally_adaptive_reports_total{result=\"unknown_rule\"}"), 1);
  EXPECT_EQ(Sample(m, "tally_adaptive_reports_total{result=\"invalid\"}"), 2)
      << "-3 and count 0 (the malformed bodies never reached the controllers)";
  EXPECT_GE(Sample(m, "tally_adaptive_steps_total{step=\"decreased\"}"), 1);
  EXPECT_GE(Sample(m, "tally_adaptive_limit_writes_total"), 1);
  std::string output;
  EXPECT_EQ(Promtool(scrape.body, dir_, &output), 0) << output;
  EXPECT_EQ(tallyd_.Stop(), 0);
}

// The other doors: the C++ client library (here over loopback UDP) and
// `tally report` (over the Unix socket), with what they refuse.
TEST_F(AdaptiveDoorTest, TheClientLibraryAndTheCliReportToo) {
  ASSERT_NO_FATAL_FAILURE(StartSingleNode());
  const std::string tally = std::string(TALLY_BIN_DIR) + "/tally";
  ProcessResult cli = RunProcess(tally, {"report", "--unix", dir_.File("d.sock"), "--domain", "api",
                                         "--rule", "backend", "--value", "12.5", "--count", "40"});
  EXPECT_EQ(cli.exit_code, 0) << cli.err;
  EXPECT_EQ(cli.out, "accepted\n");
  cli = RunProcess(tally, {"report", "--unix", dir_.File("d.sock"), "--json", "--domain", "api",
                           "--rule", "nope", "--value", "1"});
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_NE(cli.out.find("no adaptive limit"), std::string::npos) << cli.out;
  cli = RunProcess(tally, {"report", "--unix", dir_.File("d.sock"), "--domain", "api", "--rule",
                           "backend", "--value", "1", "--count", "0"});
  EXPECT_EQ(cli.exit_code, 2) << "a usage error";
  DaemonAddress udp;
  udp.port = tallyd_.udp_port();
  SignalReportOutcome outcome = SignalReportOutcome::kNone;
  std::string error;
  EXPECT_EQ(ReportSignal(udp, ClientOptions{}, {"api", "backend", -1, 3}, &outcome, &error),
            Status::kInvalidArgument);
  EXPECT_EQ(outcome, SignalReportOutcome::kInvalid);
  // A slow backend reported through the library cuts the limit.
  const std::string http = tallyd_.http_address();
  ASSERT_TRUE(ReportsCutTheLimit(
      [&] {
        EXPECT_EQ(ReportSignal(udp, ClientOptions{}, {"api", "backend", 200, 300}, &outcome,
                               &error),
                  Status::kOk)
            << error;
        EXPECT_EQ(outcome, SignalReportOutcome::kAccepted);
      },
      http, seconds(15)))
      << LimitInForce(http);
  EXPECT_EQ(tallyd_.Stop(), 0);
}

TEST_F(AdaptiveDoorTest, ReportsAtOneMemberMoveTheLimitEveryMemberEnforces) {
  ClusterHarness c;
  std::string error;
  ASSERT_TRUE(c.StartNodes(3, {"--http", "127.0.0.1:0", "--rules", dir_.File("rules.yaml")}, &error))
      << error;
  ASSERT_TRUE(c.WaitFormed(seconds(15), &error)) << error;
  const std::string report_at = c.node(0).process.http_address();
  const std::string check_at = c.node(2).process.http_address();
  ASSERT_EQ(LimitInForce(check_at), 500);
  ASSERT_TRUE(SlowBackendCutsTheLimit(report_at, check_at, seconds(20))) << LimitInForce(check_at);
  // One controller published it: the three members answer with one limit
  // (polled: the write reaches the third member within a stream push).
  ASSERT_TRUE(PollUntil(seconds(5), [&] {
    const int64_t a = LimitInForce(c.node(0).process.http_address());
    return a == LimitInForce(c.node(1).process.http_address()) && a == LimitInForce(check_at);
  }));
}

}  // namespace
}  // namespace tally::testing

// Descriptor checks on the Cap'n Proto doors (check.capnp protocol 4):
// Client::CheckDescriptors and `tally check --domain` against a real tallyd
// with a rules file, on UDP, Unix datagram and seqpacket, answered through
// the same RlsServer path as POST /v1/check (the same answers, the same
// per-rule counters); a tallyd without the rules doors says so.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "client/admin.h"
#include "tally/client.h"
#include "tests/cluster/cluster_harness.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_request.h"

namespace tally::testing {
namespace {

namespace json = boost::json;
using ::testing::HasSubstr;

const std::string kTally = std::string(TALLY_BIN_DIR) + "/tally";

constexpr const char* kRules = R"(domain: shop
descriptors:
  - key: user
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_user}
  - key: path
    value: /login
    descriptors:
      - key: user
        rate_limit: {unit: hour, requests_per_unit: 2, name: login_per_user}
  - key: tier
    value: gold
    rate_limits:
      - {unit: second, requests_per_unit: 50, name: burst}
      - {unit: hour, requests_per_unit: 4, name: hourly}
  - key: canary
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1, name: canary}
  - key: free
    rate_limit: {unlimited: true}
  - key: long
    rate_limit:
      unit: minute
      requests_per_unit: 3
      name: nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn
)";

RateLimitDescriptor Descriptor(std::vector<DescriptorEntry> entries) {
  RateLimitDescriptor d;
  d.entries = std::move(entries);
  return d;
}

DescriptorCheckRequest Request(std::vector<RateLimitDescriptor> descriptors,
                               uint32_t hits_addend = 0) {
  DescriptorCheckRequest r;
  r.domain = "shop";
  r.descriptors = std::move(descriptors);
  r.hits_addend = hits_addend;
  return r;
}

class DescriptorCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::ofstream(dir_.File("rules.yaml")) << kRules;
    std::string error;
    ASSERT_TRUE(tallyd_.Start(
        {"--udp", "127.0.0.1:0", "--unix", dir_.File("d.sock"), "--unix-seq", dir_.File("d.seq"),
         "--http", "127.0.0.1:0", "--rules", dir_.File("rules.yaml")},
        &error))
        << error;
    http_ = tallyd_.http_address();
    ASSERT_FALSE(http_.empty()) << tallyd_.listening_line();
  }
  void TearDown() override { EXPECT_EQ(tallyd_.Stop(), 0); }

  std::unique_ptr<Client> Connect(const DaemonAddress& address) {
    std::string error;
    std::unique_ptr<Client> client = Client::Connect(address, ClientOptions{}, &error);
    EXPECT_TRUE(client != nullptr) << error;
    return client;
  }
  std::unique_ptr<Client> Udp() {
    DaemonAddress a;
    a.port = tallyd_.udp_port();
    return Connect(a);
  }

  ProcessResult Cli(std::vector<std::string> args) {
    std::vector<std::string> full = {"check", "--udp",
                                     "127.0.0.1:" + std::to_string(tallyd_.udp_port())};
    full.insert(full.end(), args.begin(), args.end());
    return RunProcess(kTally, full);
  }

  TempDir dir_;
  DaemonProcess tallyd_;
  std::string http_;
};

TEST_F(DescriptorCheckTest, PerDescriptorLimitCountsAndDenies) {
  auto client = Udp();
  ASSERT_TRUE(client);
  for (int i = 0; i < 3; ++i) {
    DescriptorCheckResult r = client->CheckDescriptors(Request({Descriptor({{"user", "ann"}})}));
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_TRUE(r.allowed);
    ASSERT_EQ(r.descriptors.size(), 1u);
    EXPECT_TRUE(r.descriptors[0].has_limit);
    EXPECT_EQ(r.descriptors[0].limit, 3u);
    EXPECT_EQ(r.descriptors[0].unit, RateLimitUnit::kMinute);
    EXPECT_EQ(r.descriptors[0].name, "per_user");
    EXPECT_EQ(r.descriptors[0].remaining, static_cast<uint32_t>(2 - i));
    EXPECT_EQ(r.descriptors[0].retry_after_ms, 0u);
    EXPECT_GT(r.descriptors[0].reset_after_ms, 0u);
  }
  DescriptorCheckResult denied = client->CheckDescriptors(Request({Descriptor({{"user", "ann"}})}));
  ASSERT_EQ(denied.status, Status::kOk) << denied.error;
  EXPECT_FALSE(denied.allowed);
  EXPECT_FALSE(denied.descriptors[0].allowed);
  EXPECT_GT(denied.descriptors[0].retry_after_ms, 0u);
  // Another value of the key has its own count.
  EXPECT_TRUE(client->CheckDescriptors(Request({Descriptor({{"user", "bob"}})})).allowed);
}

TEST_F(DescriptorCheckTest, NestedDescriptorAndHitsAddend) {
  auto client = Udp();
  ASSERT_TRUE(client);
  // Two hits of a limit of two per hour: the first fills it, the next is over.
  const auto login = Request({Descriptor({{"path", "/login"}, {"user", "cy"}})}, 2);
  DescriptorCheckResult r = client->CheckDescriptors(login);
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.descriptors[0].name, "login_per_user");
  EXPECT_EQ(r.descriptors[0].unit, RateLimitUnit::kHour);
  EXPECT_EQ(r.descriptors[0].remaining, 0u);
  EXPECT_FALSE(client->CheckDescriptors(Request(login.descriptors, 1)).allowed);
  // Only the path: no rule at that depth limits it.
  r = client->CheckDescriptors(Request({Descriptor({{"path", "/login"}})}));
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_TRUE(r.allowed);
  EXPECT_FALSE(r.descriptors[0].has_limit);
}

TEST_F(DescriptorCheckTest, SeveralLimitsShadowNoMatchAndUnlimited) {
  auto client = Udp();
  ASSERT_TRUE(client);
  // gold: 50 per second and 4 per hour; the hourly one runs out first.
  for (int i = 0; i < 4; ++i) {
    DescriptorCheckResult r = client->CheckDescriptors(Request({Descriptor({{"tier", "gold"}})}));
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_TRUE(r.allowed) << i;
    EXPECT_EQ(r.descriptors[0].name, "hourly");  // the fewest remaining
    EXPECT_EQ(r.descriptors[0].remaining, static_cast<uint32_t>(3 - i));
  }
  DescriptorCheckResult over = client->CheckDescriptors(Request({Descriptor({{"tier", "gold"}})}));
  EXPECT_FALSE(over.allowed);
  EXPECT_EQ(over.descriptors[0].name, "hourly");

  // A shadow rule over its limit answers allowed.
  for (int i = 0; i < 3; ++i) {
    DescriptorCheckResult r = client->CheckDescriptors(Request({Descriptor({{"canary", "x"}})}));
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_TRUE(r.allowed);
    EXPECT_TRUE(r.descriptors[0].allowed);
  }
  // No rule matches: ok with no limit; unlimited: ok, remaining 2^32-1.
  DescriptorCheckResult r = client->CheckDescriptors(
      Request({Descriptor({{"nothing", "here"}}), Descriptor({{"free", "y"}})}));
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_TRUE(r.allowed);
  ASSERT_EQ(r.descriptors.size(), 2u);
  EXPECT_FALSE(r.descriptors[0].has_limit);
  EXPECT_EQ(r.descriptors[1].remaining, UINT32_MAX);
  // An unknown domain: nothing matches.
  DescriptorCheckRequest other = Request({Descriptor({{"user", "ann"}})});
  other.domain = "elsewhere";
  r = client->CheckDescriptors(other);
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_TRUE(r.allowed);
  EXPECT_FALSE(r.descriptors[0].has_limit);
}

TEST_F(DescriptorCheckTest, OverrideLimitApplies) {
  auto client = Udp();
  ASSERT_TRUE(client);
  RateLimitDescriptor d = Descriptor({{"anything", "z"}});
  d.limit = RateLimitDescriptor::Limit{1, RateLimitUnit::kMinute};
  EXPECT_TRUE(client->CheckDescriptors(Request({d})).allowed);
  DescriptorCheckResult r = client->CheckDescriptors(Request({d}));
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.descriptors[0].limit, 1u);
}

TEST_F(DescriptorCheckTest, BadRequestsGetClearErrors) {
  auto client = Udp();
  ASSERT_TRUE(client);
  DescriptorCheckResult r = client->CheckDescriptors(Request({Descriptor({{"", "v"}})}));
  EXPECT_EQ(r.status, Status::kInvalidArgument);
  EXPECT_THAT(r.error, HasSubstr("empty key"));
  r = client->CheckDescriptors(Request({}));
  EXPECT_EQ(r.status, Status::kInvalidArgument);
  EXPECT_THAT(r.error, HasSubstr("descriptor list must not be empty"));
  DescriptorCheckRequest no_domain = Request({Descriptor({{"user", "ann"}})});
  no_domain.domain.clear();
  r = client->CheckDescriptors(no_domain);
  EXPECT_EQ(r.status, Status::kInvalidArgument);
  EXPECT_THAT(r.error, HasSubstr("domain"));
  std::vector<RateLimitDescriptor> many(65, Descriptor({{"k", "v"}}));
  r = client->CheckDescriptors(Request(many));
  EXPECT_EQ(r.status, Status::kInvalidArgument);
  EXPECT_THAT(r.error, HasSubstr("more than 64 descriptors"));
  // The daemon is still fine.
  EXPECT_TRUE(client->CheckDescriptors(Request({Descriptor({{"user", "dee"}})})).allowed);
}

// The Unix datagram and seqpacket doors answer the same, counting into the
// same keys.
TEST_F(DescriptorCheckTest, EveryDoorSharesTheCounts) {
  auto udp = Udp();
  auto unix_dgram = Connect(DaemonAddress::Unix(tallyd_.unix_path()));
  auto seq = Connect(DaemonAddress::Unix(tallyd_.seq_path()));
  ASSERT_TRUE(udp && unix_dgram && seq);
  const auto req = Request({Descriptor({{"user", "eve"}})});
  EXPECT_EQ(udp->CheckDescriptors(req).descriptors.at(0).remaining, 2u);
  EXPECT_EQ(unix_dgram->CheckDescriptors(req).descriptors.at(0).remaining, 1u);
  EXPECT_EQ(seq->CheckDescriptors(req).descriptors.at(0).remaining, 0u);
  DescriptorCheckResult r = seq->CheckDescriptors(req);
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_FALSE(r.allowed);
}

// Rule names long enough that the answer would exceed 3x the request:
// the UDP door asks for padding before deciding, the client resends padded,
// and the hit is counted once. Seqpacket answers at once.
TEST_F(DescriptorCheckTest, LargeAnswerAsksForPaddingAndCountsOnce) {
  DaemonAddress a;
  a.port = tallyd_.udp_port();
  // queries_padding_required from a status answer (status queries learn
  // their own padding on the first call; later ones go padded at once).
  auto padding_asked = [&a] {
    wire::StatusReport status;
    std::string error;
    EXPECT_TRUE(QueryStatus(a, ClientOptions{}, &status, &error)) << error;
    for (const auto& [name, value] : status.counters) {
      if (name == "queries_padding_required") return value;
    }
    return uint64_t{0};
  };
  padding_asked();
  const uint64_t before = padding_asked();
  auto client = Udp();
  ASSERT_TRUE(client);
  // About 256 bytes of request, about 960 of answer.
  const auto req = Request(
      {Descriptor({{"long", "a"}}), Descriptor({{"long", "b"}}), Descriptor({{"long", "c"}})});
  DescriptorCheckResult r = client->CheckDescriptors(req);
  ASSERT_EQ(r.status, Status::kOk) << r.error;
  ASSERT_EQ(r.descriptors.size(), 3u);
  for (const DescriptorStatus& d : r.descriptors) {
    EXPECT_EQ(d.name, std::string(250, 'n'));
    EXPECT_EQ(d.remaining, 2u);  // asked for padding, then counted once
  }
  EXPECT_EQ(padding_asked() - before, 1u);
  // The client keeps the padded size: the next one goes padded at once.
  EXPECT_EQ(client->CheckDescriptors(req).descriptors.at(0).remaining, 1u);
  EXPECT_EQ(padding_asked() - before, 1u);
  // Seqpacket peers cannot be forged: answered at once.
  auto seq = Connect(DaemonAddress::Unix(tallyd_.seq_path()));
  ASSERT_TRUE(seq);
  EXPECT_EQ(seq->CheckDescriptors(req).descriptors.at(0).remaining, 0u);
  EXPECT_EQ(padding_asked() - before, 1u);
}

// A retry with the same request id (a lost answer) is not counted again.
TEST_F(DescriptorCheckTest, SameRequestIdIsCountedOnce) {
  auto client = Udp();
  ASSERT_TRUE(client);
  DescriptorCheckRequest req = Request({Descriptor({{"user", "fay"}})});
  req.request_id = 4242;
  for (int i = 0; i < 3; ++i) {
    DescriptorCheckResult r = client->CheckDescriptors(req);
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.request_id, 4242u);
    EXPECT_TRUE(r.allowed);
  }
  req.request_id = 0;
  EXPECT_EQ(client->CheckDescriptors(req).descriptors.at(0).remaining, 1u);
}

// The CLI's --json answer has the fields of POST /v1/check's descriptor form,
// and both doors count into the same limits.
TEST_F(DescriptorCheckTest, CliJsonMatchesV1Check) {
  ProcessResult cli = Cli({"--json", "--domain", "shop", "--descriptor", "tier=gold",
                           "--descriptor", "nothing=here", "--hits", "1"});
  ASSERT_EQ(cli.exit_code, 0) << cli.out << cli.err;
  const std::string v1 = HttpPost(http_, "/v1/check", R"({"domain":"shop","descriptors":[
      {"entries":[{"key":"tier","value":"gold"}]},{"entries":[{"key":"nothing","value":"here"}]}]})")
                             .body;
  json::object a = json::parse(cli.out).as_object();
  json::object b = json::parse(v1).as_object();
  EXPECT_TRUE(a.contains("request_id"));
  a.erase("request_id");
  ASSERT_EQ(a.size(), b.size()) << cli.out << "\n" << v1;
  EXPECT_EQ(a.at("allowed"), b.at("allowed"));
  EXPECT_EQ(a.at("status"), b.at("status"));
  const json::array& da = a.at("descriptors").as_array();
  const json::array& db = b.at("descriptors").as_array();
  ASSERT_EQ(da.size(), 2u);
  ASSERT_EQ(db.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    const json::object& x = da[i].as_object();
    const json::object& y = db[i].as_object();
    ASSERT_EQ(x.size(), y.size()) << i;
    for (const auto& kv : y) {
      ASSERT_TRUE(x.contains(kv.key())) << kv.key();
      if (kv.key() == "reset_after_ms") continue;  // time passes between the two
      if (kv.key() == "remaining") continue;       // checked below
      EXPECT_EQ(x.at(kv.key()), kv.value()) << kv.key();
    }
  }
  // The CLI took one of gold's four an hour, /v1/check the next.
  EXPECT_EQ(da[0].at("remaining").to_number<int64_t>(), 3);
  EXPECT_EQ(db[0].at("remaining").to_number<int64_t>(), 2);
  EXPECT_EQ(da[0].at("name"), "hourly");
  EXPECT_EQ(da[0].at("unit"), "hour");
  EXPECT_TRUE(da[1].at("limit").is_null());
}

TEST_F(DescriptorCheckTest, CliHumanOutputExitCodesAndUsage) {
  ProcessResult ok =
      Cli({"--domain", "shop", "--descriptor", "path=/login,user=gil", "--hits", "2"});
  EXPECT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_THAT(ok.out, HasSubstr("allowed\n"));
  EXPECT_THAT(ok.out, HasSubstr("descriptor 1: allowed limit=2/hour name=\"login_per_user\""));
  ProcessResult denied = Cli({"--domain", "shop", "--descriptor", "path=/login,user=gil"});
  EXPECT_EQ(denied.exit_code, 1) << denied.err;
  EXPECT_THAT(denied.out, HasSubstr("denied\n"));
  ProcessResult none = Cli({"--domain", "shop", "--descriptor", "x=y"});
  EXPECT_EQ(none.exit_code, 0);
  EXPECT_THAT(none.out, HasSubstr("(no limit)"));

  ProcessResult bad = Cli({"--domain", "shop", "--descriptor", "novalue"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("key=value"));
  bad = Cli({"--domain", "shop"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.err, HasSubstr("--descriptor"));
  bad = Cli({"--domain", "shop", "--descriptor", "a=b", "u", "e", "1", "1"});
  EXPECT_EQ(bad.exit_code, 2);
  bad = Cli({"--json", "--domain", "shop", "--descriptor", "=v"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_THAT(bad.out, HasSubstr("\"status\":\"invalid_argument\""));
  // The daemon's own refusal (an empty key cannot come from the CLI; a bad
  // override unit cannot either): an empty domain.
  bad = Cli({"--json", "--domain", "", "--descriptor", "a=b"});
  EXPECT_EQ(bad.exit_code, 2);
  // The explicit form still works beside it.
  ProcessResult explicit_form = Cli({"hal", "api", "1", "60"});
  EXPECT_EQ(explicit_form.exit_code, 0) << explicit_form.err;
}

// Per-rule counters move for the Cap'n Proto doors as for HTTP's.
TEST_F(DescriptorCheckTest, PerRuleCountersCountCapnpChecks) {
  auto client = Udp();
  ASSERT_TRUE(client);
  for (int i = 0; i < 2; ++i) client->CheckDescriptors(Request({Descriptor({{"canary", "c"}})}));
  {
    const HttpResult metrics = HttpGet(http_, "/metrics");
    ASSERT_EQ(metrics.status, 200) << metrics.body;
    const std::string& text = metrics.body;
    // Two hits on the canary rule, one of them over its limit (shadow),
    // counted by rule and under the UDP door.
    EXPECT_THAT(text, HasSubstr("tally_rule_hits_total{rule=\"shop.canary\",name=\"canary\"} 2\n"));
    EXPECT_THAT(
        text,
        HasSubstr("tally_rule_shadow_mode_hits_total{rule=\"shop.canary\",name=\"canary\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tally_checks_total{door=\"udp\",decision=\"shadow\"} 1\n"));
    EXPECT_THAT(text, HasSubstr("tally_checks_total{door=\"udp\",decision=\"allowed\"} 1\n"));
  }
}

TEST(DescriptorCheckWithoutRulesTest, AnswersUnavailableWithTheReason) {
  TempDir dir;
  DaemonProcess tallyd;
  std::string error;
  ASSERT_TRUE(tallyd.Start({"--udp", "127.0.0.1:0"}, &error)) << error;
  DaemonAddress a;
  a.port = tallyd.udp_port();
  auto client = Client::Connect(a, ClientOptions{}, &error);
  ASSERT_TRUE(client) << error;
  DescriptorCheckResult r = client->CheckDescriptors(Request({Descriptor({{"user", "ann"}})}));
  EXPECT_EQ(r.status, Status::kUnavailable);
  EXPECT_THAT(r.error, HasSubstr("--grpc or --http"));
  ProcessResult cli = RunProcess(kTally, {"check", "--udp", "127.0.0.1:" + std::to_string(a.port),
                                          "--domain", "shop", "--descriptor", "user=ann"});
  EXPECT_EQ(cli.exit_code, 2);
  EXPECT_THAT(cli.err, HasSubstr("rules doors"));
  EXPECT_EQ(tallyd.Stop(), 0);
}

// Three members with the same rules: a descriptor's counter lives with its
// owner, so descriptor checks entering any member are forwarded there and
// share one count: a limit of 3 a minute is spent through three different
// members and then denied through a fourth ask.
TEST(DescriptorCheckClusterTest, MembersShareEachDescriptorsCount) {
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  std::ofstream(dir.File("rules.yaml")) << kRules;
  ClusterHarness c;
  std::string error;
  ASSERT_TRUE(c.StartNodes(3, {"--http", "127.0.0.1:0", "--rules", dir.File("rules.yaml")}, &error))
      << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  std::vector<std::unique_ptr<Client>> clients;
  for (int n = 0; n < 3; ++n) {
    DaemonAddress a;
    a.port = c.node(n).process.udp_port();
    clients.push_back(Client::Connect(a, ClientOptions{}, &error));
    ASSERT_TRUE(clients.back()) << error;
  }
  const std::string http = c.node(0).process.http_address();
  ASSERT_FALSE(http.empty());
  // Ready once formed and owning: polled, the handoff may still be finishing.
  for (int n = 0; n < 3; ++n) {
    const std::string member = c.node(n).process.http_address();
    ASSERT_TRUE(PollUntil(std::chrono::seconds(15), [&] {
      return HttpGet(member, "/readyz").status == 200;
    })) << HttpGet(member, "/readyz").body;
  }
  for (int i = 0; i < 6; ++i) {
    const auto req = Request({Descriptor({{"user", "member" + std::to_string(i)}})});
    for (int n = 0; n < 3; ++n) {
      DescriptorCheckResult r = clients[static_cast<size_t>(n)]->CheckDescriptors(req);
      ASSERT_EQ(r.status, Status::kOk) << r.error;
      EXPECT_TRUE(r.allowed) << i << " via n" << n + 1;
      EXPECT_EQ(r.descriptors.at(0).remaining, static_cast<uint32_t>(2 - n)) << i;
    }
    DescriptorCheckResult over = clients[static_cast<size_t>(i % 3)]->CheckDescriptors(req);
    ASSERT_EQ(over.status, Status::kOk) << over.error;
    EXPECT_FALSE(over.allowed) << i;
  }
  // Some of those went to another member (n1's view).
  const std::string metrics = HttpGet(http, "/metrics").body;
  const size_t at = metrics.find("\ntally_cluster_forwards_total ");
  ASSERT_NE(at, std::string::npos) << metrics.substr(0, 500);
  EXPECT_GT(std::stod(metrics.substr(at + 30)), 0);
}

}  // namespace
}  // namespace tally::testing

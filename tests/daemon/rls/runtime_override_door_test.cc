// A runtime limit override written on a running daemon (a single node, and
// a cluster of one: io::Daemon in process) changes what its rules doors
// answer at once: ShouldRateLimit on the gRPC door and descriptorCheck on
// the UDP door, both on loopback port 0 (docs/ENVOY.md "Runtime
// overrides"). The write goes through Daemon::WriteOverride (a member's
// Node::WriteOverride, a single node's LocalOverrides), which republishes
// the table the doors read.
#include <grpcpp/grpcpp.h>
#include <gtest/gtest.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "crdt/limit_overrides.h"
#include "daemon/io/daemon.h"
#include "daemon/io/published_overrides.h"
#include "daemon/rls/rls_server.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"
#include "tally/client.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

namespace rlsv3 = envoy::service::ratelimit::v3;

constexpr const char* kRules = R"(
domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: minute, requests_per_unit: 3, name: per_ip}
)";

crdt::Selector Selector(const std::string& key, const std::string& value) {
  crdt::Selector s;
  s.kind = crdt::Selector::Kind::kDescriptor;
  s.domain = "edge";
  s.entries = {{key, value}};
  return s;
}

// Both daemons the rules doors run in: a single node (its own LocalOverrides)
// and a cluster of one (a Node holds the overrides).
class RuntimeOverrideDoorTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    ASSERT_FALSE(dir_.path().empty());
    std::ofstream(dir_.File("rules.yaml")) << kRules;
    io::DaemonOptions o;
    o.udp = "127.0.0.1:0";
    o.threads = 2;
    o.stats_interval = std::chrono::seconds(0);
    o.handle_signals = false;
    if (GetParam()) o.cluster.gossip = "127.0.0.1:0";
    daemon_ = std::make_unique<io::Daemon>(o);
    std::string error;
    ASSERT_TRUE(daemon_->Start(&error)) << error;
    ASSERT_NE(daemon_->published_overrides(), nullptr);
    rls::RlsServerOptions r;
    r.grpc_listen = "127.0.0.1:0";
    r.rules_path = dir_.File("rules.yaml");
    r.watch_rules = false;
    r.overrides = daemon_->published_overrides();
    rls_ = std::make_unique<rls::RlsServer>(r, daemon_->gateway());
    ASSERT_TRUE(rls_->Start(&error)) << error;
    daemon_->SetDescriptorChecks([rls = rls_.get()](const wire::DescriptorQuery& query,
                                                    io::Door door, size_t max_reply_bytes,
                                                    io::DescriptorDoor::Done done) {
      rls->DecideDescriptors(query, door, max_reply_bytes, std::move(done));
    });
    runner_ = std::thread([this] { daemon_->Run(); });
    stub_ = rlsv3::RateLimitService::NewStub(
        grpc::CreateChannel(rls_->grpc_address(), grpc::InsecureChannelCredentials()));
    DaemonAddress a;
    const std::string udp = daemon_->udp_address();
    a.port = static_cast<uint16_t>(std::stoi(udp.substr(udp.rfind(':') + 1)));
    client_ = Client::Connect(a, ClientOptions{}, &error);
    ASSERT_NE(client_, nullptr) << error;
  }

  void TearDown() override {
    if (daemon_) daemon_->SetDescriptorChecks({});
    if (rls_) rls_->Stop();
    if (daemon_) daemon_->Stop();
    if (runner_.joinable()) runner_.join();
  }

  rlsv3::RateLimitResponse Grpc(const std::string& address) {
    rlsv3::RateLimitRequest request;
    request.set_domain("edge");
    auto* e = request.add_descriptors()->add_entries();
    e->set_key("remote_address");
    e->set_value(address);
    rlsv3::RateLimitResponse response;
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + ScaledWait(std::chrono::seconds(10)));
    const grpc::Status status = stub_->ShouldRateLimit(&context, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response;
  }

  DescriptorCheckResult Capnp(const std::string& address) {
    DescriptorCheckRequest request;
    request.domain = "edge";
    RateLimitDescriptor d;
    d.entries = {{"remote_address", address}};
    request.descriptors = {d};
    return client_->CheckDescriptors(request);
  }

  void Write(const crdt::Selector& selector, std::optional<uint64_t> limit, uint64_t window_ms) {
    crdt::OverrideValue v;
    v.removed = !limit.has_value();
    v.limit = limit.value_or(0);
    v.window_ms = limit ? window_ms : 0;
    EXPECT_EQ(daemon_->WriteOverride(selector, v),
              std::optional(crdt::LimitOverrides::MergeResult::kApplied));
  }

  TempDir dir_;
  std::unique_ptr<io::Daemon> daemon_;
  std::unique_ptr<rls::RlsServer> rls_;
  std::thread runner_;
  std::unique_ptr<rlsv3::RateLimitService::Stub> stub_;
  std::unique_ptr<Client> client_;
};

TEST_P(RuntimeOverrideDoorTest, WritingAnOverrideChangesWhatBothDoorsAnswer) {
  // The rule: 3 per minute.
  rlsv3::RateLimitResponse g = Grpc("10.0.0.1");
  ASSERT_EQ(g.statuses_size(), 1);
  EXPECT_EQ(g.overall_code(), rlsv3::RateLimitResponse::OK);
  EXPECT_EQ(g.statuses(0).current_limit().requests_per_unit(), 3u);
  EXPECT_EQ(g.statuses(0).current_limit().name(), "per_ip");
  EXPECT_EQ(g.statuses(0).limit_remaining(), 2u);

  // 1 per 90 s for this address: no whole unit (UNKNOWN), its own counter.
  Write(Selector("remote_address", "10.0.0.1"), 1, 90'000);
  g = Grpc("10.0.0.1");
  EXPECT_EQ(g.overall_code(), rlsv3::RateLimitResponse::OK);
  EXPECT_EQ(g.statuses(0).current_limit().requests_per_unit(), 1u);
  EXPECT_EQ(g.statuses(0).current_limit().unit(), rlsv3::RateLimitResponse::RateLimit::UNKNOWN);
  EXPECT_EQ(g.statuses(0).current_limit().name(), "");
  EXPECT_EQ(g.statuses(0).limit_remaining(), 0u);
  DescriptorCheckResult c = Capnp("10.0.0.1");
  ASSERT_EQ(c.status, Status::kOk) << c.error;
  EXPECT_FALSE(c.allowed);
  ASSERT_EQ(c.descriptors.size(), 1u);
  EXPECT_EQ(c.descriptors[0].limit, 1u);
  EXPECT_EQ(c.descriptors[0].unit, RateLimitUnit::kUnknown);
  EXPECT_EQ(Grpc("10.0.0.1").overall_code(), rlsv3::RateLimitResponse::OVER_LIMIT);
  // Another address still has the rule.
  EXPECT_EQ(Capnp("10.0.0.2").descriptors[0].limit, 3u);

  // The same selector again, now 10 per minute: the rule's counter (1 hit so far).
  Write(Selector("remote_address", "10.0.0.1"), 10, 60'000);
  g = Grpc("10.0.0.1");
  EXPECT_EQ(g.overall_code(), rlsv3::RateLimitResponse::OK);
  EXPECT_EQ(g.statuses(0).current_limit().requests_per_unit(), 10u);
  EXPECT_EQ(g.statuses(0).current_limit().unit(), rlsv3::RateLimitResponse::RateLimit::MINUTE);
  EXPECT_EQ(g.statuses(0).limit_remaining(), 8u);

  // Removed: the rule again, on the counter it shares with the last
  // override: the minute holds 2 hits, so the third is the last one.
  Write(Selector("remote_address", "10.0.0.1"), std::nullopt, 0);
  c = Capnp("10.0.0.1");
  ASSERT_EQ(c.status, Status::kOk) << c.error;
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.descriptors[0].limit, 3u);
  EXPECT_EQ(c.descriptors[0].name, "per_ip");
  EXPECT_EQ(c.descriptors[0].remaining, 0u);
  EXPECT_EQ(Grpc("10.0.0.1").overall_code(), rlsv3::RateLimitResponse::OVER_LIMIT);
  // Four answers came from an override.
  EXPECT_EQ(rls_->stats().runtime_overrides, 4u);
}

TEST_P(RuntimeOverrideDoorTest, AnOverrideLimitsADescriptorNoRuleMatches) {
  DescriptorCheckRequest request;
  request.domain = "edge";
  RateLimitDescriptor d;
  d.entries = {{"country", "nowhere"}};
  request.descriptors = {d};
  DescriptorCheckResult c = client_->CheckDescriptors(request);
  ASSERT_EQ(c.status, Status::kOk) << c.error;
  EXPECT_TRUE(c.allowed);
  EXPECT_FALSE(c.descriptors[0].has_limit);
  Write(Selector("country", "nowhere"), 0, 1000);  // deny every hit
  c = client_->CheckDescriptors(request);
  ASSERT_EQ(c.status, Status::kOk) << c.error;
  EXPECT_FALSE(c.allowed);
  EXPECT_TRUE(c.descriptors[0].has_limit);
  EXPECT_EQ(c.descriptors[0].limit, 0u);
  EXPECT_EQ(c.descriptors[0].unit, RateLimitUnit::kSecond);
}

INSTANTIATE_TEST_SUITE_P(Daemons, RuntimeOverrideDoorTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "ClusterOfOne" : "SingleNode";
                         });

}  // namespace
}  // namespace tally::testing

// --join dns:NAME[:PORT]: parsing, expansion of every A/AAAA address through
// an injected resolver, and a node that starts alone (the name resolves to
// nothing yet, as for the first pods of a StatefulSet) and joins once the
// name resolves, because it re-resolves while alone.
#include "daemon/io/resolver.h"

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "client/admin.h"
#include "daemon/io/daemon.h"
#include "tally/client.h"
#include "tests/support/daemon_process.h"

namespace tally::io {
namespace {

// Answers from a table the test changes while a daemon runs.
class FakeResolver : public Resolver {
 public:
  void Set(const std::string& name, std::vector<std::string> addresses) {
    std::lock_guard<std::mutex> lock(mu_);
    table_[name] = std::move(addresses);
  }
  std::vector<std::string> Resolve(const std::string& name, std::string* error) override {
    std::lock_guard<std::mutex> lock(mu_);
    ++calls_;
    auto it = table_.find(name);
    if (it == table_.end() || it->second.empty()) {
      *error = name + ": NXDOMAIN";
      return {};
    }
    return it->second;
  }
  int calls() {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }

 private:
  std::mutex mu_;
  std::map<std::string, std::vector<std::string>> table_;
  int calls_ = 0;
};

TEST(ResolverTest, ParsesNameAndOptionalPort) {
  std::string error;
  auto a = ParseDnsSeed("tally-headless.default.svc.cluster.local", &error);
  ASSERT_TRUE(a) << error;
  EXPECT_EQ(a->name, "tally-headless.default.svc.cluster.local");
  EXPECT_EQ(a->port, 0);
  auto b = ParseDnsSeed("tally:7946", &error);
  ASSERT_TRUE(b) << error;
  EXPECT_EQ(b->name, "tally");
  EXPECT_EQ(b->port, 7946);
  for (const char* bad :
       {"", ":7946", "tally:", "tally:0", "tally:65536", "tally:x", "a b", "fd00::1"}) {
    EXPECT_FALSE(ParseDnsSeed(bad, &error)) << bad;
  }
}

TEST(ResolverTest, ExpandsEveryAddressWithTheDefaultOrGivenPort) {
  FakeResolver fake;
  fake.Set("svc", {"10.0.0.2", "10.0.0.1", "fd00::7", "10.0.0.1"});
  fake.Set("other", {"10.0.0.9"});
  std::string errors;
  std::vector<std::string> seeds = ResolveDnsSeeds(
      fake, {{"svc", 0}, {"other", 8000}, {"missing", 0}}, /*default_port=*/7946, &errors);
  EXPECT_EQ(seeds, (std::vector<std::string>{"10.0.0.1:7946", "10.0.0.2:7946", "10.0.0.9:8000",
                                             "[fd00::7]:7946"}));
  EXPECT_NE(errors.find("missing"), std::string::npos) << errors;
}

TEST(ResolverTest, SystemResolverResolvesLocalhost) {
  std::string error;
  std::vector<std::string> addresses = SystemResolver()->Resolve("localhost", &error);
  ASSERT_FALSE(addresses.empty()) << error;
  bool loopback = false;
  for (const std::string& a : addresses) loopback |= a == "127.0.0.1" || a == "::1";
  EXPECT_TRUE(loopback);
}

DaemonOptions ClusterNode(const std::string& id) {
  DaemonOptions o;
  o.udp = "127.0.0.1:0";
  o.threads = 1;
  o.handle_signals = false;
  o.stats_interval = std::chrono::seconds(0);
  o.node_id = id;
  o.cluster.gossip = "127.0.0.1:0";
  o.cluster.node.swim.probe_interval_ms = 100;
  o.cluster.node.swim.probe_timeout_ms = 50;
  o.cluster.node.swim.reconnect_interval_ms = 200;
  return o;
}

std::string StateOf(const std::string& udp, const std::string& id) {
  DaemonAddress e;
  e.kind = DaemonAddress::Kind::kUdp;
  e.host = "127.0.0.1";
  e.port = static_cast<uint16_t>(std::stoi(udp.substr(udp.rfind(':') + 1)));
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(200);
  wire::StatusReport status;
  std::string error;
  if (!QueryStatus(e, options, &status, &error)) return "";
  for (const wire::MemberReport& m : status.members) {
    if (m.id == id) return m.state;
  }
  return "";
}

TEST(ResolverTest, NodeAloneReResolvesAndJoinsWhenTheNameAppears) {
  Daemon a(ClusterNode("a"));
  std::string error;
  ASSERT_TRUE(a.Start(&error)) << error;
  std::thread run_a([&] { a.Run(); });
  const std::string a_port = a.gossip_address().substr(a.gossip_address().rfind(':') + 1);

  auto fake = std::make_shared<FakeResolver>();  // "tally-headless" resolves to nothing yet
  DaemonOptions ob = ClusterNode("b");
  ob.cluster.dns_seeds = {"tally-headless:" + a_port};
  ob.cluster.resolver = fake;
  ob.cluster.dns_interval = std::chrono::milliseconds(50);
  Daemon b(std::move(ob));
  ASSERT_TRUE(b.Start(&error)) << error;
  std::thread run_b([&] { b.Run(); });
  EXPECT_GE(fake->calls(), 1);  // resolved once at start
  EXPECT_EQ(StateOf(b.udp_address(), "a"), "");

  // The Service gets its endpoint (b's own address too, as for a pod).
  fake->Set("tally-headless", {"127.0.0.1"});
  bool joined = false;
  const auto deadline =
      std::chrono::steady_clock::now() + testing::ScaledWait(std::chrono::seconds(10));
  while (!joined && std::chrono::steady_clock::now() < deadline) {
    joined = StateOf(b.udp_address(), "a") == "alive" && StateOf(a.udp_address(), "b") == "alive";
    if (!joined) std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll pacing
  }
  EXPECT_TRUE(joined);

  b.Stop();
  run_b.join();
  a.Stop();
  run_a.join();
}

}  // namespace
}  // namespace tally::io

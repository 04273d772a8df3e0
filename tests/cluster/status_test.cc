// `tally status` and `tally owner` against real daemons: a single-node tallyd
// answers as a cluster of one (itself, alive, key share 1), a cluster member
// lists every member; --json carries the documented fields.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <cmath>
#include <csignal>
#include <fstream>
#include <string>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

std::string CliPath() { return std::string(TALLY_BIN_DIR) + "/tally"; }

boost::json::object Json(const ProcessResult& result) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(result.out, ec);
  EXPECT_FALSE(ec) << "not JSON: " << result.out << result.err;
  return value.is_object() ? value.as_object() : boost::json::object();
}

std::string UdpOf(const DaemonProcess& d) {
  return d.udp_host() + ":" + std::to_string(d.udp_port());
}

TEST(StatusTest, SingleNodeIsAClusterOfOne) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("d.sock"), "--unix-seq",
                       dir.File("d.seq"), "--node-id", "solo", "--threads", "1"},
                      &error))
      << error;
  // The single-node listening line is unchanged (no gossip= / node=).
  EXPECT_EQ(d.listening_line().find("gossip="), std::string::npos) << d.listening_line();
  EXPECT_TRUE(d.gossip_address().empty());

  ProcessResult check = RunProcess(CliPath(), {"check", "--udp", UdpOf(d), "u", "/e", "10", "60"});
  ASSERT_EQ(check.exit_code, 0) << check.err;

  for (const std::string& via : {std::string("--udp"), std::string("--unix")}) {
    std::string where = via == "--udp" ? UdpOf(d) : dir.File("d.seq");
    ProcessResult r = RunProcess(CliPath(), {"status", via, where, "--json"});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    boost::json::object o = Json(r);
    EXPECT_EQ(o["node_id"].as_string(), "solo");
    EXPECT_FALSE(o["cluster"].as_bool());
    EXPECT_TRUE(o["owning"].as_bool());
    EXPECT_DOUBLE_EQ(o["key_share"].to_number<double>(), 1.0);
    EXPECT_EQ(o["live_keys"].to_number<int64_t>(), 1);
    ASSERT_TRUE(o.contains("partition_policy"));
    boost::json::array& members = o["members"].as_array();
    ASSERT_EQ(members.size(), 1u);
    boost::json::object& self = members[0].as_object();
    EXPECT_EQ(self["id"].as_string(), "solo");
    EXPECT_EQ(self["state"].as_string(), "alive");
    EXPECT_EQ(self["incarnation"].to_number<int64_t>(), 0);
    EXPECT_TRUE(self["clock_offset_ms"].is_null());
    EXPECT_TRUE(self.contains("address") && self.contains("rtt_ms") && self.contains("generation"));
    EXPECT_EQ(o["counters"].as_object()["allowed"].to_number<int64_t>(), 1);
  }

  ProcessResult table = RunProcess(CliPath(), {"status", "--udp", UdpOf(d)});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("solo"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("single node"), std::string::npos) << table.out;

  ProcessResult owner =
      RunProcess(CliPath(), {"owner", "--udp", UdpOf(d), "--json", "u", "/e", "60"});
  ASSERT_EQ(owner.exit_code, 0) << owner.err;
  boost::json::object oo = Json(owner);
  EXPECT_EQ(oo["owner"].as_string(), "solo");

  ProcessResult bad = RunProcess(CliPath(), {"owner", "--udp", UdpOf(d), "u", "/e", "0"});
  EXPECT_EQ(bad.exit_code, 2);
  ProcessResult none = RunProcess(CliPath(), {"status", "--udp", "127.0.0.1:9", "--timeout-ms",
                                              "50", "--attempts", "1", "--json"});
  EXPECT_EQ(none.exit_code, 2);
  EXPECT_EQ(Json(none)["status"].as_string(), "unavailable");
  EXPECT_EQ(d.Stop(), 0);
}

TEST(StatusTest, ClusterMemberListsEveryMember) {
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(3, {"--partition-policy", "proportional"}, &error)) << error;
  ASSERT_TRUE(cluster.WaitAllAlive(std::chrono::seconds(10), &error)) << error;
  TestNode& n2 = cluster.node(1);
  // Round trips and clock offsets are known once n2 has probed both peers.
  ASSERT_TRUE(PollUntil(std::chrono::seconds(5), [&] {
    std::optional<wire::StatusReport> s = StatusOf(n2);
    if (!s) return false;
    for (const wire::MemberReport& m : s->members) {
      if (m.id != "n2" && (std::isnan(m.rtt_ms) || std::isnan(m.clock_offset_ms))) return false;
    }
    return true;
  }));
  EXPECT_NE(n2.process.listening_line().find(" gossip=" + n2.gossip() + " node=n2"),
            std::string::npos)
      << n2.process.listening_line();

  ProcessResult r = RunProcess(CliPath(), {"status", "--udp", UdpOf(n2.process), "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  boost::json::object o = Json(r);
  EXPECT_EQ(o["node_id"].as_string(), "n2");
  EXPECT_TRUE(o["cluster"].as_bool());
  EXPECT_EQ(o["partition_policy"].as_string(), "proportional");
  EXPECT_EQ(o["gossip_address"].as_string(), n2.gossip());
  double share = o["key_share"].to_number<double>();
  EXPECT_GT(share, 0.2);
  EXPECT_LT(share, 0.5);
  boost::json::array& members = o["members"].as_array();
  ASSERT_EQ(members.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    boost::json::object& m = members[i].as_object();
    EXPECT_EQ(m["id"].as_string(), cluster.node(i).id);
    EXPECT_EQ(m["state"].as_string(), "alive");
    EXPECT_EQ(m["address"].as_string(), cluster.node(i).gossip());
    EXPECT_EQ(m["generation"].to_number<uint64_t>(), cluster.node(i).started_generation);
    if (i != 1) {  // peers have been probed: rtt and offset are known
      EXPECT_TRUE(m["rtt_ms"].is_number()) << boost::json::serialize(m);
      EXPECT_TRUE(m["clock_offset_ms"].is_number()) << boost::json::serialize(m);
    }
  }

  ProcessResult table = RunProcess(CliPath(), {"status", "--udp", UdpOf(n2.process)});
  ASSERT_EQ(table.exit_code, 0);
  EXPECT_NE(table.out.find("n3"), std::string::npos) << table.out;

  // `tally owner` answers the same list on every node.
  std::string first;
  for (size_t i = 0; i < 3; ++i) {
    ProcessResult w = RunProcess(
        CliPath(), {"owner", "--udp", UdpOf(cluster.node(i).process), "--json", "u", "/e", "60"});
    ASSERT_EQ(w.exit_code, 0) << w.err;
    std::string list = boost::json::serialize(Json(w)["preference_list"]);
    if (i == 0) first = list;
    EXPECT_EQ(list, first);
  }
}

// Issue 11: members gossip their rules digests, and `tally status` on any
// member lists the members whose rules differ from its own, until a reload
// makes them equal again.
TEST(StatusTest, ListsTheMembersWhoseRulesDiffer) {
  TempDir dir;
  const std::string rules =
      "domain: edge\n"
      "descriptors:\n"
      "  - key: path\n"
      "    rate_limit: {unit: second, requests_per_unit: 10}\n";
  const std::string other_rules =
      "domain: edge\n"
      "descriptors:\n"
      "  - key: path\n"
      "    rate_limit: {unit: second, requests_per_unit: 20}\n";
  auto write = [&](const std::string& name, const std::string& text) {
    std::ofstream(dir.File(name), std::ios::trunc) << text;
  };
  write("n1.yaml", rules);
  write("n2.yaml", rules);
  write("n3.yaml", other_rules);
  ClusterHarness cluster;
  std::string error;
  for (int i = 1; i <= 3; ++i) {
    const std::string id = "n" + std::to_string(i);
    std::vector<std::string> seeds;
    if (i > 1) seeds.push_back(cluster.node(0).gossip());
    ASSERT_NE(cluster.StartNode(
                  id, seeds, {"--http", "127.0.0.1:0", "--rules", dir.File(id + ".yaml")}, &error),
              nullptr)
        << error;
  }
  ASSERT_TRUE(cluster.WaitAllAlive(std::chrono::seconds(10), &error)) << error;

  // What `node` lists (ids), by the library's view of its status; nullopt
  // while it has not heard every member's digest (those are listed as
  // unknown until the first ping or ack from them).
  auto differing = [&](const TestNode& node) -> std::optional<std::vector<std::string>> {
    std::optional<wire::StatusReport> s = StatusOf(node);
    if (!s) return std::nullopt;
    for (const wire::MemberReport& m : s->members) {
      if (m.rules_digest.empty()) return std::nullopt;
    }
    std::vector<std::string> ids;
    for (const wire::MemberReport* m : wire::MembersWithOtherRules(*s)) ids.push_back(m->id);
    return ids;
  };
  const std::vector<std::string> only_n3{"n3"}, n1_n2{"n1", "n2"}, none;
  ASSERT_TRUE(PollUntil(std::chrono::seconds(10), [&] {
    return differing(cluster.node(0)) == only_n3 && differing(cluster.node(1)) == only_n3 &&
           differing(cluster.node(2)) == n1_n2;
  })) << "the members did not learn each other's digests";

  const std::string n1_digest = StatusOf(cluster.node(0))->rules_digest;
  const std::string n3_digest = StatusOf(cluster.node(2))->rules_digest;
  ASSERT_EQ(n1_digest.size(), 32u);
  ASSERT_NE(n1_digest, n3_digest);
  ProcessResult table = RunProcess(CliPath(), {"status", "--udp", UdpOf(cluster.node(1).process)});
  ASSERT_EQ(table.exit_code, 0) << table.err;
  EXPECT_NE(table.out.find("\nrules differ: n3 (digest " + n3_digest + ")\n"), std::string::npos)
      << table.out;
  table = RunProcess(CliPath(), {"status", "--udp", UdpOf(cluster.node(2).process)});
  EXPECT_NE(table.out.find("\nrules differ: n1 (digest " + n1_digest + "), n2 (digest " +
                           n1_digest + ")\n"),
            std::string::npos)
      << table.out;
  ProcessResult json =
      RunProcess(CliPath(), {"status", "--json", "--udp", UdpOf(cluster.node(0).process)});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  boost::json::object o = Json(json);
  EXPECT_EQ(boost::json::serialize(o["rules_differ"]), "[\"n3\"]");
  for (boost::json::value& m : o["members"].as_array()) {
    const std::string id(m.as_object()["id"].as_string());
    EXPECT_EQ(m.as_object()["rules_digest"].as_string(), id == "n3" ? n3_digest : n1_digest) << id;
  }

  // n3 gets n1's rules (a reload: inotify, or SIGHUP): nobody is listed.
  write("n3.yaml", rules);
  ASSERT_TRUE(cluster.node(2).process.Signal(SIGHUP));
  ASSERT_TRUE(PollUntil(std::chrono::seconds(10), [&] {
    return differing(cluster.node(0)) == none && differing(cluster.node(1)) == none &&
           differing(cluster.node(2)) == none;
  })) << "the members still see different rules after the reload";
  for (size_t i = 0; i < 3; ++i) {
    table = RunProcess(CliPath(), {"status", "--udp", UdpOf(cluster.node(i).process)});
    ASSERT_EQ(table.exit_code, 0) << table.err;
    EXPECT_EQ(table.out.find("rules differ"), std::string::npos) << table.out;
    EXPECT_NE(table.out.find("rules: digest " + n1_digest), std::string::npos) << table.out;
  }
}

}  // namespace
}  // namespace tally::testing

// tally-load --owner-filter against a real 3-node cluster: `local` keys are
// decided by the node the load is sent to (it forwards none), `remote` keys
// are all forwarded, `node=ID` keys all go to ID. Checks the target's own
// counters, not only tally-load's word.
#include <gtest/gtest.h>

#include <boost/json.hpp>
#include <string>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

const std::string kLoad = std::string(TALLY_BIN_DIR) + "/tally-load";

boost::json::object Json(const ProcessResult& result) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(result.out, ec);
  EXPECT_FALSE(ec) << "not JSON: " << result.out << result.err;
  return value.is_object() ? value.as_object() : boost::json::object();
}

class LoadOwnerFilterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(cluster_.StartNodes(3, {}, &error)) << error;
    ASSERT_TRUE(cluster_.WaitFormed(std::chrono::seconds(15), &error)) << error;
  }

  // Runs a short load with `filter` through node 0; returns its JSON and the
  // deltas of node 0's "forwarded" and node `peer`'s "decided_for_peers".
  boost::json::object Run(const std::string& filter, uint64_t* forwarded, size_t peer = 1,
                          uint64_t* decided_for_peers = nullptr) {
    TestNode& target = cluster_.node(0);
    auto before = StatusOf(target);
    auto peer_before = StatusOf(cluster_.node(peer));
    ProcessResult r = RunProcess(
        kLoad,
        {"--udp", target.process.udp_host() + ":" + std::to_string(target.process.udp_port()),
         "--owner-filter", filter, "--keys", "300", "--duration-s", "0.3", "--in-flight", "4",
         "--json"});
    EXPECT_EQ(r.exit_code, 0) << r.err << r.out;
    auto after = StatusOf(target);
    auto peer_after = StatusOf(cluster_.node(peer));
    EXPECT_TRUE(before && after && peer_before && peer_after);
    if (before && after) {
      *forwarded = CounterIn(*after, "forwarded") - CounterIn(*before, "forwarded");
    }
    if (decided_for_peers != nullptr && peer_before && peer_after) {
      *decided_for_peers = CounterIn(*peer_after, "decided_for_peers") -
                           CounterIn(*peer_before, "decided_for_peers");
    }
    return Json(r);
  }

  ClusterHarness cluster_;
};

uint64_t Completed(boost::json::object& o) {
  return static_cast<uint64_t>(o["tallyd"].as_object()["completed"].to_number<int64_t>());
}

TEST_F(LoadOwnerFilterTest, LocalKeysAreNotForwarded) {
  uint64_t forwarded = 0;
  boost::json::object o = Run("local", &forwarded);
  boost::json::object& config = o["config"].as_object();
  EXPECT_EQ(config["owner_filter"].as_string(), "local");
  EXPECT_EQ(config["keys"].to_number<int64_t>(), 300);
  EXPECT_EQ(config["owner_answerer"].as_string(), "n1");
  // About a third of the examined keys are n1's.
  EXPECT_GT(config["keys_examined"].to_number<int64_t>(), 300 * 2);
  EXPECT_EQ(config["owners_examined"].as_object()["n1"].to_number<int64_t>(), 300);
  EXPECT_GT(Completed(o), 0u);
  EXPECT_EQ(forwarded, 0u);
}

TEST_F(LoadOwnerFilterTest, RemoteKeysAreAllForwarded) {
  uint64_t forwarded = 0;
  boost::json::object o = Run("remote", &forwarded);
  EXPECT_EQ(o["config"].as_object()["owner_filter"].as_string(), "remote");
  uint64_t completed = Completed(o);
  EXPECT_GT(completed, 0u);
  // Every answered check was forwarded (plus the probe, which may be n1's or
  // not, and checks sent but unanswered when the run ended).
  EXPECT_GE(forwarded, completed);
  EXPECT_LE(forwarded, completed + 1 + 4);
}

TEST_F(LoadOwnerFilterTest, NodeKeysAllGoToThatNode) {
  uint64_t forwarded = 0, decided_for_peers = 0;
  boost::json::object o = Run("node=n3", &forwarded, 2, &decided_for_peers);
  EXPECT_EQ(o["config"].as_object()["owners_examined"].as_object()["n3"].to_number<int64_t>(), 300);
  uint64_t completed = Completed(o);
  EXPECT_GT(completed, 0u);
  EXPECT_GE(decided_for_peers, completed);
  EXPECT_LE(decided_for_peers, completed + 1 + 4);
}

TEST_F(LoadOwnerFilterTest, ANonMemberOwnsNothing) {
  TestNode& target = cluster_.node(0);
  ProcessResult r = RunProcess(
      kLoad, {"--udp", target.process.udp_host() + ":" + std::to_string(target.process.udp_port()),
              "--owner-filter", "node=nobody", "--keys", "2", "--duration-s", "0.1"});
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.err.find("only 0 of the 128 keys examined"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tally::testing

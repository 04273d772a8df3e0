// tallyd's cluster flags and config-file keys: accepted, range-checked, and
// rejected with a clear message when they make no sense.
#include <gtest/gtest.h>

#include <fstream>
#include <string>

#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

TEST(ClusterConfigTest, FlagsAndConfigFileAreAccepted) {
  ProcessResult r = RunTallyd({"--check-config",
                               "--gossip",
                               "127.0.0.1:0",
                               "--node-id",
                               "a-1",
                               "--join",
                               "127.0.0.1:7946,127.0.0.1:7947",
                               "--replicas",
                               "2",
                               "--partition-policy",
                               "closed",
                               "--max-clock-offset-ms",
                               "200",
                               "--forward-timeout-ms",
                               "50",
                               "--forward-timeout-max-ms",
                               "200",
                               "--replication-interval-ms",
                               "5",
                               "--probe-interval-ms",
                               "300",
                               "--probe-timeout-ms",
                               "150",
                               "--suspicion-mult",
                               "5"});
  EXPECT_EQ(r.exit_code, 0) << r.err;

  TempDir dir;
  std::string path = dir.File("tallyd.conf");
  std::ofstream(path)
      << "gossip = 127.0.0.1:0\nnode-id = from-file\njoin = 127.0.0.1:7946\n"
         "partition-policy = proportional\nprobe-interval-ms = 250\nprobe-timeout-ms = 100\n";
  ProcessResult f = RunTallyd({"--check-config", "--config", path});
  EXPECT_EQ(f.exit_code, 0) << f.err;

  ProcessResult help = RunTallyd({"--help"});
  EXPECT_EQ(help.exit_code, 0);
  for (const char* flag :
       {"--gossip", "--join", "--replicas", "--partition-policy", "--max-clock-offset-ms",
        "--forward-timeout-ms", "--forward-timeout-max-ms", "--replication-interval-ms",
        "--probe-interval-ms", "--probe-timeout-ms", "--suspicion-mult", "--node-id"}) {
    EXPECT_NE(help.out.find(flag), std::string::npos) << flag;
  }
}

TEST(ClusterConfigTest, BadValuesAreRejected) {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"--join", "127.0.0.1:7946"}, "needs --gossip"},
      {{"--gossip", "localhost:7946"}, "--gossip"},
      {{"--gossip", "127.0.0.1:0", "--join", "127.0.0.1:0"}, "--join"},
      {{"--gossip", "127.0.0.1:0", "--partition-policy", "majority"}, "--partition-policy"},
      {{"--gossip", "127.0.0.1:0", "--replicas", "0"}, "--replicas"},
      {{"--gossip", "127.0.0.1:0", "--probe-interval-ms", "-5"}, "--probe-interval-ms"},
      {{"--node-id", "has space"}, "--node-id"},
      {{"--gossip", "127.0.0.1:0", "--probe-interval-ms", "100", "--probe-timeout-ms", "500"},
       "membership"},
  };
  for (const Case& c : cases) {
    std::vector<std::string> args = c.args;
    args.insert(args.begin(), "--check-config");
    ProcessResult r = RunTallyd(args);
    EXPECT_EQ(r.exit_code, 2) << c.args[0];
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
  }
}

TEST(ClusterConfigTest, WildcardGossipNeedsAdvertise) {
  DaemonProcess d;
  std::string error;
  // (--insecure-peers: a wildcard gossip address without a keyring needs it.)
  EXPECT_FALSE(d.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none", "--gossip",
                        "0.0.0.0:0", "--insecure-peers"},
                       &error));
  DaemonProcess ok;
  ASSERT_TRUE(ok.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none", "--gossip",
                        "0.0.0.0:0", "--insecure-peers", "--advertise", "127.0.0.1:7999",
                        "--node-id", "adv", "--threads", "1"},
                       &error))
      << error;
  EXPECT_EQ(ok.gossip_address(), "127.0.0.1:7999");
  EXPECT_EQ(ok.node_id(), "adv");
  EXPECT_EQ(ok.Stop(), 0);
}

}  // namespace
}  // namespace tally::testing

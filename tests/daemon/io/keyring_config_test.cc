// tallyd's peer-authentication settings: --keyring and --cluster-name (flags
// and config file) and what --check-config says.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>

#include "daemon/io/config.h"
#include "daemon/io/keyring.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

io::FlagsOutcome Parse(std::vector<const char*> argv, io::TallydConfig* config, std::string* error,
                       const std::string& file_text = "") {
  argv.insert(argv.begin(), "tallyd");
  std::istringstream text(file_text);
  std::string output;
  return io::ParseTallydFlags(static_cast<int>(argv.size()), argv.data(),
                              file_text.empty() ? nullptr : &text, config, &output, error);
}

TEST(KeyringConfigTest, FlagsAndFileSetThePeerAuthOptions) {
  io::TallydConfig c;
  std::string error;
  ASSERT_EQ(Parse({"--gossip", "127.0.0.1:0"}, &c, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_EQ(c.daemon.cluster.peer_auth.keyring_file, "");
  EXPECT_EQ(c.daemon.cluster.peer_auth.cluster_name, "tally");

  ASSERT_EQ(Parse({"--gossip", "10.0.0.1:0", "--keyring", "/etc/tally/keyring", "--cluster-name",
                   "prod-eu"},
                  &c, &error),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(c.daemon.cluster.peer_auth.keyring_file, "/etc/tally/keyring");
  EXPECT_EQ(c.daemon.cluster.peer_auth.cluster_name, "prod-eu");

  ASSERT_EQ(Parse({"--config", "x.conf"}, &c, &error,
                  "gossip = 10.0.0.1:7946\nkeyring = /k\ncluster-name = c\n"),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(c.daemon.cluster.peer_auth.keyring_file, "/k");
  EXPECT_EQ(c.daemon.cluster.peer_auth.cluster_name, "c");
}

TEST(KeyringConfigTest, BadValuesAreUsageErrors) {
  io::TallydConfig c;
  std::string error;
  EXPECT_EQ(Parse({"--keyring", "/k"}, &c, &error), io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("needs --gossip"), std::string::npos) << error;
  // A cluster name alone is accepted (it also names snapshots; a single node
  // ignores it), but it is still checked.
  EXPECT_EQ(Parse({"--cluster-name", "c"}, &c, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_EQ(Parse({"--cluster-name", "has space"}, &c, &error), io::FlagsOutcome::kBadUsage);
  EXPECT_EQ(Parse({"--gossip", "127.0.0.1:0", "--cluster-name", "has space"}, &c, &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("--cluster-name"), std::string::npos) << error;
  EXPECT_EQ(Parse({"--gossip", "127.0.0.1:0", "--cluster-name", std::string(65, 'x').c_str()}, &c,
                  &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_EQ(Parse({"--gossip", "127.0.0.1:0", "--keyring", ""}, &c, &error),
            io::FlagsOutcome::kBadUsage);
}

TEST(KeyringConfigTest, CheckConfigLoadsTheKeyring) {
  TempDir dir;
  const std::string good = dir.File("good"), bad = dir.File("bad");
  std::ofstream(good) << io::NewKeyringText();
  std::ofstream(bad) << "AAAA\n";
  auto check = [](std::vector<std::string> args) {
    args.push_back("--check-config");
    return RunTallyd(args);
  };
  EXPECT_EQ(check({"--gossip", "127.0.0.1:0"}).exit_code, 0);
  EXPECT_EQ(check({"--gossip", "10.9.9.9:0", "--keyring", good}).exit_code, 0);
  // Plain mode off loopback only when asked for (tallyd then warns loudly).
  EXPECT_EQ(check({"--gossip", "10.9.9.9:0"}).exit_code, 2);
  EXPECT_EQ(check({"--gossip", "10.9.9.9:0", "--insecure-peers"}).exit_code, 0);
  EXPECT_EQ(check({"--insecure-peers"}).exit_code, 2) << "needs cluster mode";
  ProcessResult malformed = check({"--gossip", "127.0.0.1:0", "--keyring", bad});
  EXPECT_EQ(malformed.exit_code, 2);
  EXPECT_NE(malformed.err.find("line 1"), std::string::npos) << malformed.err;
  EXPECT_EQ(check({"--gossip", "127.0.0.1:0", "--keyring", dir.File("none")}).exit_code, 2);
}

}  // namespace
}  // namespace tally::testing

// tallyd's flags and --config file, end to end, plus --check-config on the
// shipped example.
#include "daemon/io/config.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/daemon/io/raw_client.h"
#include "tests/support/daemon_process.h"
#include "tests/support/requests.h"

namespace tally::testing {
namespace {

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& text) {
  std::string path = dir.File(name);
  std::ofstream(path) << text;
  return path;
}

const CheckRequestBuilder kRequest = CheckRequestBuilder().Endpoint("/e");

TEST(ConfigTest, FileValuesTakeEffect) {
  TempDir dir;
  // One shard holding one key, and no dedup: both are observable.
  std::string conf = WriteFile(dir, "tallyd.conf",
                               "# comment\n"
                               "udp = 127.0.0.1:0\n"
                               "unix = " +
                                   dir.File("file.sock") +
                                   "\n"
                                   "unix-seq = none\n"
                                   "shards = 1\n"
                                   "max-keys = 1\n"
                                   "dedup-ttl-ms = 0\n"
                                   "stats-interval-s = 0\n"
                                   "log-level = warn\n");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--config", conf}, &error)) << error;
  EXPECT_EQ(d.unix_path(), dir.File("file.sock"));
  EXPECT_EQ(d.seq_path(), "");
  auto client = ConnectTo(d, Transport::kUdp);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1).User("a")).status, Status::kOk);
  EXPECT_EQ(client->Check(kRequest.Id(2).User("b")).status, Status::kOverCapacity);
  // dedup-ttl-ms = 0: the same id counts again.
  EXPECT_EQ(client->Check(kRequest.Id(1).User("a")).remaining, 8u);
  EXPECT_EQ(d.Stop(), 0);
}

TEST(ConfigTest, FlagsOverrideTheFile) {
  TempDir dir;
  std::string conf = WriteFile(dir, "tallyd.conf",
                               "udp = 127.0.0.1:1\n"  // overridden below
                               "unix = " +
                                   dir.File("file.sock") +
                                   "\n"
                                   "unix-seq = " +
                                   dir.File("file.seq") +
                                   "\n"
                                   "shards = 1\n"
                                   "max-keys = 1\n"
                                   "stats-interval-s = 0\n");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--config", conf, "--udp", "127.0.0.1:0", "--unix-seq", dir.File("flag.seq"),
                       "--max-keys", "100"},
                      &error))
      << error;
  EXPECT_NE(d.udp_port(), 1);
  EXPECT_EQ(d.unix_path(), dir.File("file.sock"));
  EXPECT_EQ(d.seq_path(), dir.File("flag.seq"));
  auto client = ConnectTo(d, Transport::kSeqpacket);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1).User("a")).status, Status::kOk);
  EXPECT_EQ(client->Check(kRequest.Id(2).User("b")).status, Status::kOk);  // max-keys 100 wins
  EXPECT_EQ(d.Stop(), 0);
}

TEST(ConfigTest, BadValuesExitTwoWithAMessage) {
  TempDir dir;
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--threads", "abc"}, "--threads"},
      {{"--threads", "-1"}, "--threads"},
      {{"--buckets-per-window", "0"}, "--buckets-per-window"},
      {{"--buckets-per-window", "1001"}, "--buckets-per-window"},
      {{"--shards", "0"}, "--shards"},
      {{"--max-keys", "0"}, "--max-keys"},
      {{"--sweep-interval-ms", "0"}, "--sweep-interval-ms"},
      {{"--stats-interval-s", "1e3"}, "--stats-interval-s"},
      {{"--dedup-ttl-ms", "99999999999"}, "--dedup-ttl-ms"},
      {{"--udp", "localhost:7070"}, "--udp"},
      {{"--udp", "127.0.0.1:70000"}, "--udp"},
      {{"--udp", "127.0.0.1"}, "--udp"},
      {{"--unix", std::string(200, 'p')}, "--unix"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--echo=maybe"}, "--echo"},
      {{"--frobnicate"}, "frobnicate"},
      {{"--config", dir.File("missing.conf")}, "cannot open"},
      {{"--udp", "none", "--unix", "none", "--unix-seq", "none"}, "disabled"},
  };
  for (const Case& c : cases) {
    ProcessResult r = RunTallyd(c.args);
    std::string joined;
    for (const auto& a : c.args) joined += a + " ";
    EXPECT_EQ(r.exit_code, 2) << joined << "\n" << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << joined << "\n" << r.err;
    EXPECT_EQ(r.out, "") << joined;
  }
}

TEST(ConfigTest, BadValueInFileExitsTwo) {
  TempDir dir;
  for (const std::string text : {"threads = many\n", "no-such-option = 1\n", "udp\n"}) {
    std::string conf = WriteFile(dir, "bad.conf", text);
    ProcessResult r = RunTallyd({"--config", conf});
    EXPECT_EQ(r.exit_code, 2) << text << r.err;
    EXPECT_FALSE(r.err.empty()) << text;
  }
}

TEST(ConfigTest, CheckConfigAcceptsTheShippedExample) {
  std::string example = std::string(TALLY_SOURCE_DIR) + "/packaging/tallyd.conf.example";
  ProcessResult r = RunTallyd({"--config", example, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("OK"), std::string::npos) << r.out;
}

TEST(ConfigTest, ExampleDocumentsEveryOptionWithAValidDefault) {
  // Uncomment every "# name = value" line of the example: the result must
  // still validate, and name every setting tallyd knows.
  std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/packaging/tallyd.conf.example");
  ASSERT_TRUE(in);
  std::regex setting(R"(^#\s*([a-z-]+)\s*=\s*(.*)$)");
  std::ostringstream uncommented;
  std::set<std::string> names;
  std::string line;
  while (std::getline(in, line)) {
    std::smatch m;
    if (std::regex_match(line, m, setting)) {
      uncommented << m[1] << " = " << m[2] << "\n";
      names.insert(m[1]);
    }
  }
  for (const char* name :
       {"udp", "unix", "unix-seq", "threads", "buckets-per-window", "max-keys", "dedup-ttl-ms",
        "max-dedup-entries", "shards", "sweep-interval-ms", "stats-interval-s", "log-level", "echo",
        "grpc", "http", "shadow-mode", "rls-headers", "grpc-server"}) {
    EXPECT_TRUE(names.count(name)) << "example lacks " << name;
  }
  TempDir dir;
  std::string conf = WriteFile(dir, "all.conf", uncommented.str());
  ProcessResult r = RunTallyd({"--config", conf, "--check-config"});
  EXPECT_EQ(r.exit_code, 0) << uncommented.str() << r.err;

  // And the defaults it documents are the ones the parser applies.
  io::TallydConfig from_file, builtin;
  std::string output, error;
  const char* file_argv[] = {"tallyd", "--config", conf.c_str()};
  ASSERT_EQ(io::ParseTallydFlags(3, file_argv, &from_file, &output, &error), io::FlagsOutcome::kRun)
      << error;
  const char* bare_argv[] = {"tallyd"};
  ASSERT_EQ(io::ParseTallydFlags(1, bare_argv, &builtin, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(from_file.daemon.udp, builtin.daemon.udp);
  EXPECT_EQ(from_file.daemon.threads, builtin.daemon.threads);
  EXPECT_EQ(from_file.daemon.limiter.buckets_per_window, builtin.daemon.limiter.buckets_per_window);
  EXPECT_EQ(from_file.daemon.limiter.max_keys, builtin.daemon.limiter.max_keys);
  EXPECT_EQ(from_file.daemon.limiter.dedup_ttl, builtin.daemon.limiter.dedup_ttl);
  EXPECT_EQ(from_file.daemon.limiter.max_dedup_entries, builtin.daemon.limiter.max_dedup_entries);
  EXPECT_EQ(from_file.daemon.limiter.shards, builtin.daemon.limiter.shards);
  EXPECT_EQ(from_file.daemon.sweep_interval, builtin.daemon.sweep_interval);
  EXPECT_EQ(from_file.daemon.stats_interval, builtin.daemon.stats_interval);
  EXPECT_EQ(from_file.daemon.echo, builtin.daemon.echo);
  EXPECT_EQ(from_file.log_level, builtin.log_level);
  EXPECT_EQ(from_file.grpc_listen, builtin.grpc_listen);
  EXPECT_EQ(from_file.http_listen, builtin.http_listen);
  EXPECT_EQ(from_file.shadow_mode, builtin.shadow_mode);
  EXPECT_EQ(from_file.rls_headers, builtin.rls_headers);
  EXPECT_EQ(from_file.grpc_nghttp2, builtin.grpc_nghttp2);
}

TEST(ConfigTest, CheckConfigRejectsBadFile) {
  TempDir dir;
  std::string conf = WriteFile(dir, "bad.conf", "shards = 0\n");
  ProcessResult r = RunTallyd({"--config", conf, "--check-config"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("--shards"), std::string::npos) << r.err;
}

TEST(ConfigTest, ParsesFlagsInProcess) {
  io::TallydConfig config;
  std::string output, error;
  const char* argv[] = {"tallyd", "--udp",  "[::1]:0",
                        "--unix", "none",   "--threads",
                        "3",      "--echo", "--sweep-interval-ms",
                        "7"};
  ASSERT_EQ(io::ParseTallydFlags(10, argv, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.udp, "[::1]:0");
  EXPECT_EQ(config.daemon.unix_path, "");
  EXPECT_EQ(config.daemon.unix_seq_path, DefaultUnixSeqpacketPath());
  EXPECT_EQ(config.daemon.threads, 3);
  EXPECT_TRUE(config.daemon.echo);
  EXPECT_EQ(config.daemon.sweep_interval, std::chrono::milliseconds(7));
}

// A peer stream a partition stalled is aborted after --stream-stall-timeout-ms
// (TCP_USER_TIMEOUT; tests/cluster/stream_stall_test.cc shows what it buys).
TEST(ConfigTest, StreamStallTimeoutDefaultsToThreeSecondsAndZeroKeepsTheKernels) {
  std::string output, error;
  io::TallydConfig builtin;
  const char* bare[] = {"tallyd"};
  ASSERT_EQ(io::ParseTallydFlags(1, bare, &builtin, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(builtin.daemon.cluster.stream_stall_timeout, std::chrono::milliseconds(3000));
  for (const char* value : {"0", "500"}) {
    io::TallydConfig config;
    const char* argv[] = {"tallyd", "--stream-stall-timeout-ms", value};
    ASSERT_EQ(io::ParseTallydFlags(3, argv, &config, &output, &error), io::FlagsOutcome::kRun)
        << error;
    EXPECT_EQ(config.daemon.cluster.stream_stall_timeout,
              std::chrono::milliseconds(std::atoll(value)));
  }
  io::TallydConfig refused;
  const char* negative[] = {"tallyd", "--stream-stall-timeout-ms", "-1"};
  EXPECT_EQ(io::ParseTallydFlags(3, negative, &refused, &output, &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("--stream-stall-timeout-ms"), std::string::npos) << error;
}

// Under systemd ($STATE_DIRECTORY) the state dir is the default in both
// modes: a single node keeps its runtime limit overrides there.
TEST(ConfigTest, SystemdStateDirectoryIsTheDefaultForASingleNodeToo) {
  const char* before = std::getenv("STATE_DIRECTORY");
  const std::optional<std::string> saved =
      before != nullptr ? std::optional<std::string>(before) : std::nullopt;
  ASSERT_EQ(setenv("STATE_DIRECTORY", "/var/lib/tally-config-test", 1), 0);
  std::string output, error;
  io::TallydConfig single;
  const char* bare[] = {"tallyd"};
  ASSERT_EQ(io::ParseTallydFlags(1, bare, &single, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(single.daemon.cluster.state_dir, "/var/lib/tally-config-test");
  io::TallydConfig cluster;
  const char* gossip[] = {"tallyd", "--gossip", "127.0.0.1:0"};
  ASSERT_EQ(io::ParseTallydFlags(3, gossip, &cluster, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(cluster.daemon.cluster.state_dir, "/var/lib/tally-config-test");
  io::TallydConfig off;
  const char* none[] = {"tallyd", "--state-dir", "none"};
  ASSERT_EQ(io::ParseTallydFlags(3, none, &off, &output, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_EQ(off.daemon.cluster.state_dir, "");
  if (saved) {
    setenv("STATE_DIRECTORY", saved->c_str(), 1);
  } else {
    unsetenv("STATE_DIRECTORY");
  }
  // Without systemd, no state dir unless asked for.
  io::TallydConfig plain;
  ASSERT_EQ(io::ParseTallydFlags(1, bare, &plain, &output, &error), io::FlagsOutcome::kRun)
      << error;
  if (!saved) EXPECT_EQ(plain.daemon.cluster.state_dir, "");
}

// Issue 9: who may connect to the Unix sockets is the operator's choice.
TEST(ConfigTest, UnixModeAndGroup) {
  io::TallydConfig config;
  std::string output, error;
  const char* defaults[] = {"tallyd"};
  ASSERT_EQ(io::ParseTallydFlags(1, defaults, &config, &output, &error), io::FlagsOutcome::kRun);
  EXPECT_EQ(config.daemon.unix_access.mode, 0660u);
  EXPECT_EQ(config.daemon.unix_access.gid, -1);
  const char* set[] = {"tallyd", "--unix-mode", "600", "--unix-group", "root"};
  ASSERT_EQ(io::ParseTallydFlags(5, set, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_access.mode, 0600u);
  EXPECT_EQ(config.daemon.unix_access.gid, 0);
  const char* number[] = {"tallyd", "--unix-mode", "0666", "--unix-group", "4321"};
  ASSERT_EQ(io::ParseTallydFlags(5, number, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_access.mode, 0666u);
  EXPECT_EQ(config.daemon.unix_access.gid, 4321);
  for (const char* bad : {"0777", "0460", "066", "rw", "", "06600", "9"}) {
    const char* argv[] = {"tallyd", "--unix-mode", bad};
    EXPECT_EQ(io::ParseTallydFlags(3, argv, &config, &output, &error), io::FlagsOutcome::kBadUsage)
        << bad;
    EXPECT_NE(error.find("--unix-mode"), std::string::npos) << error;
  }
  const char* unknown[] = {"tallyd", "--unix-group", "no-such-group-tally"};
  EXPECT_EQ(io::ParseTallydFlags(3, unknown, &config, &output, &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("no group named 'no-such-group-tally'"), std::string::npos) << error;
}

// Group names go through the lookup the caller gives (the system's by
// default), so the fuzzer and tests need no directory service.
TEST(ConfigTest, UnixGroupUsesTheGivenLookup) {
  const auto lookup = [](const std::string& name) -> std::optional<int64_t> {
    if (name == "limiters") return 777;
    return std::nullopt;
  };
  io::TallydConfig config;
  std::string output, error;
  const char* named[] = {"tallyd", "--unix-group", "limiters"};
  ASSERT_EQ(io::ParseTallydFlags(3, named, nullptr, &config, &output, &error, lookup),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_access.gid, 777);
  const char* root[] = {"tallyd", "--unix-group", "root"};
  EXPECT_EQ(io::ParseTallydFlags(3, root, nullptr, &config, &output, &error, lookup),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("no group named 'root'"), std::string::npos) << error;
}

// Boost.Program_options never finished wording an error whose option name or
// value held its own placeholder ("%canonical_option%"): one config line hung
// tallyd at start. Such text is refused up front, from the file and argv.
TEST(ConfigTest, PlaceholderTextIsRefusedNotLoopedOn) {
  io::TallydConfig config;
  std::string output, error;
  for (const char* line :
       {"swoption '%canonical_option%'s-interval-s = 60\n", "log-level = %value%\n",
        "%option% = 1\n", "node-id = a%original_token%b\n", "udp = %prefix%\n",
        "l%%%invalid_line%%\n"}) {
    std::istringstream file(std::string("udp = 127.0.0.1:7070\n") + line);
    const char* argv[] = {"tallyd", "--config", "t.conf"};
    EXPECT_EQ(io::ParseTallydFlags(3, argv, &file, &config, &output, &error),
              io::FlagsOutcome::kBadUsage)
        << line;
    EXPECT_NE(error.find("t.conf holds '%"), std::string::npos) << error;
  }
  for (const char* arg : {"--x%canonical_option%", "--log-level=%value%", "%option%"}) {
    const char* argv[] = {"tallyd", arg};
    EXPECT_EQ(io::ParseTallydFlags(2, argv, &config, &output, &error), io::FlagsOutcome::kBadUsage)
        << arg;
    EXPECT_NE(error.find("argument 1 holds '%"), std::string::npos) << error;
    EXPECT_NE(error.find("cannot report on"), std::string::npos) << error;
  }
  // A lone percent sign, or one not closing a name, is ordinary text.
  std::istringstream file("udp = 127.0.0.1:7070\nnode-id = 100%-a%b c\n");
  const char* argv[] = {"tallyd", "--config", "t.conf"};
  EXPECT_EQ(io::ParseTallydFlags(3, argv, &file, &config, &output, &error),
            io::FlagsOutcome::kBadUsage);  // the space makes the node id invalid
  EXPECT_NE(error.find("--node-id"), std::string::npos) << error;
  std::istringstream good("udp = 127.0.0.1:7070\nnode-id = 100%-a%\n");
  ASSERT_EQ(io::ParseTallydFlags(3, argv, &good, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.node_id, "100%-a%");
  std::istringstream empty("");
  EXPECT_EQ(io::ParseTallydFlags(3, argv, &empty, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
}

TEST(ConfigTest, SeqpacketSocketFollowsUnixPath) {
  io::TallydConfig config;
  std::string output, error;
  const char* argv[] = {"tallyd", "--unix", "/tmp/a/one.sock"};
  ASSERT_EQ(io::ParseTallydFlags(3, argv, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_seq_path, "/tmp/a/one.seq.sock");
  const char* other[] = {"tallyd", "--unix", "/tmp/a/two"};
  ASSERT_EQ(io::ParseTallydFlags(3, other, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_seq_path, "/tmp/a/two.seq");
  // An explicit --unix-seq still wins.
  const char* both[] = {"tallyd", "--unix", "/tmp/a/one.sock", "--unix-seq", "/tmp/b/s"};
  ASSERT_EQ(io::ParseTallydFlags(5, both, &config, &output, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.daemon.unix_seq_path, "/tmp/b/s");
}

TEST(ConfigTest, TwoDaemonsWithTheirOwnUnixPathsBothStart) {
  TempDir dir;
  DaemonProcess a, b;
  std::string error;
  ASSERT_TRUE(a.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("a.sock")}, &error)) << error;
  ASSERT_TRUE(b.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("b.sock")}, &error)) << error;
  EXPECT_EQ(a.seq_path(), dir.File("a.seq.sock"));
  EXPECT_EQ(b.seq_path(), dir.File("b.seq.sock"));
  for (DaemonProcess* d : {&a, &b}) {
    auto client = ConnectTo(*d, Transport::kSeqpacket);
    ASSERT_NE(client, nullptr);
    EXPECT_EQ(client->Check(kRequest.Id(1).User("a")).status, Status::kOk);
  }
  EXPECT_EQ(a.Stop(), 0);
  EXPECT_EQ(b.Stop(), 0);
}

// Parses `args` (and `file`, as the --config file's text, when not empty).
io::FlagsOutcome Parse(std::vector<std::string> args, io::TallydConfig* config, std::string* error,
                       const std::string& file = "") {
  args.insert(args.begin(), "tallyd");
  if (!file.empty()) args.insert(args.end(), {"--config", "in-memory.conf"});
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::istringstream text(file);
  std::string output;
  return io::ParseTallydFlags(static_cast<int>(argv.size()), argv.data(),
                              file.empty() ? nullptr : &text, config, &output, error);
}

TEST(ConfigTest, EnvoyDoorsAreOnByDefaultAndNoneDisablesThem) {
  io::TallydConfig config;
  std::string error;
  ASSERT_EQ(Parse({}, &config, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_EQ(config.grpc_listen, "127.0.0.1:8081");
  EXPECT_EQ(config.http_listen, "127.0.0.1:8080");
  EXPECT_FALSE(config.rls_headers);
  ASSERT_EQ(Parse({"--grpc", "none", "--http", "[::1]:0"}, &config, &error), io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "");
  EXPECT_EQ(config.http_listen, "[::1]:0");
  ASSERT_EQ(Parse({"--grpc", "0.0.0.0:9081", "--http", "none", "--rls-headers"}, &config, &error),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "0.0.0.0:9081");
  EXPECT_EQ(config.http_listen, "");
  EXPECT_TRUE(config.rls_headers);
  EXPECT_EQ(Parse({"--grpc", "localhost"}, &config, &error), io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("--grpc"), std::string::npos) << error;
}

TEST(ConfigTest, GrpcServerIsNghttp2UnlessGrpcIsAsked) {
  io::TallydConfig config;
  std::string error;
  ASSERT_EQ(Parse({}, &config, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_TRUE(config.grpc_nghttp2);
  ASSERT_EQ(Parse({"--grpc-server", "grpc"}, &config, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_FALSE(config.grpc_nghttp2);
  io::TallydConfig again;
  ASSERT_EQ(Parse({"--grpc-server", "nghttp2"}, &again, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_TRUE(again.grpc_nghttp2);
  EXPECT_EQ(Parse({"--grpc-server", "grpc++"}, &config, &error), io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("--grpc-server"), std::string::npos) << error;
}

TEST(ConfigTest, EchoModeLeavesTheDoorsOff) {
  io::TallydConfig config;
  std::string error;
  // The echo server decides nothing: the default doors do not apply...
  ASSERT_EQ(Parse({"--echo"}, &config, &error), io::FlagsOutcome::kRun) << error;
  EXPECT_EQ(config.grpc_listen, "");
  EXPECT_EQ(config.http_listen, "");
  ASSERT_EQ(Parse({"--echo", "--grpc", "none", "--http", "none"}, &config, &error),
            io::FlagsOutcome::kRun)
      << error;
  // ... and asking for a door in echo mode is an error.
  EXPECT_EQ(Parse({"--echo", "--grpc", "127.0.0.1:0"}, &config, &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("--echo"), std::string::npos) << error;
  EXPECT_EQ(Parse({"--echo", "--rls-headers"}, &config, &error), io::FlagsOutcome::kBadUsage);
}

TEST(ConfigTest, RulesNeedADoor) {
  io::TallydConfig config;
  std::string error;
  EXPECT_EQ(Parse({"--rules", "/nonexistent", "--grpc", "none", "--http", "none"}, &config, &error),
            io::FlagsOutcome::kBadUsage);
  EXPECT_NE(error.find("need --grpc or --http"), std::string::npos) << error;
  ASSERT_EQ(Parse({"--rules", "/etc/tally/rules", "--http", "none"}, &config, &error),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.rules_path, "/etc/tally/rules");
}

TEST(ConfigTest, DeprecatedListenNamesStillWorkOnTheCommandLineAndInTheFile) {
  io::TallydConfig config;
  std::string error;
  ASSERT_EQ(Parse({"--grpc-listen", "127.0.0.1:0", "--http-listen", "none"}, &config, &error),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "127.0.0.1:0");
  EXPECT_EQ(config.http_listen, "");
  ASSERT_EQ(Parse({}, &config, &error, "grpc-listen = 127.0.0.1:9\nhttp = none\n"),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "127.0.0.1:9");
  EXPECT_EQ(config.http_listen, "");
  ASSERT_EQ(Parse({}, &config, &error,
                  "grpc = 127.0.0.1:9\nhttp-listen = 127.0.0.1:10\n"
                  "rls-headers = true\n"),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "127.0.0.1:9");
  EXPECT_EQ(config.http_listen, "127.0.0.1:10");
  EXPECT_TRUE(config.rls_headers);
  // The command line wins over the file whichever name either uses.
  ASSERT_EQ(Parse({"--grpc", "127.0.0.1:1", "--http-listen", "127.0.0.1:2"}, &config, &error,
                  "grpc-listen = 127.0.0.1:9\nhttp = 127.0.0.1:10\n"),
            io::FlagsOutcome::kRun)
      << error;
  EXPECT_EQ(config.grpc_listen, "127.0.0.1:1");
  EXPECT_EQ(config.http_listen, "127.0.0.1:2");
  // Both names of one door on the command line: given twice.
  EXPECT_EQ(Parse({"--grpc", "127.0.0.1:1", "--grpc-listen", "127.0.0.1:2"}, &config, &error),
            io::FlagsOutcome::kBadUsage);
}

TEST(ConfigTest, DoorsListenWhereToldUnderEitherName) {
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none", "--grpc",
                       "127.0.0.1:0", "--http", "127.0.0.1:0"},
                      &error))
      << error;
  EXPECT_EQ(d.grpc_address().rfind("127.0.0.1:", 0), 0u) << d.listening_line();
  EXPECT_EQ(d.http_address().rfind("127.0.0.1:", 0), 0u) << d.listening_line();
  EXPECT_NE(d.grpc_address(), "127.0.0.1:0");
  // gRPC's shutdown is slow under a sanitizer and load: wait as long as scaled.
  EXPECT_EQ(d.Stop(ScaledWait(std::chrono::seconds(5))), 0);

  DaemonProcess alias;
  ASSERT_TRUE(alias.Start({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none",
                           "--grpc-listen", "127.0.0.1:0", "--http-listen", "none"},
                          &error))
      << error;
  EXPECT_EQ(alias.grpc_address().rfind("127.0.0.1:", 0), 0u) << alias.listening_line();
  EXPECT_EQ(alias.http_address(), "") << alias.listening_line();
  EXPECT_EQ(alias.Stop(ScaledWait(std::chrono::seconds(5))), 0);
}

// tallyd on its defaults: UDP 7070, gRPC 8081 and HTTP 8080 on loopback. In a
// network namespace of its own, so that no other tallyd (or test) on this
// machine can hold those ports.
TEST(ConfigTest, DefaultsListenOnUdp7070Grpc8081Http8080) {
  if (RunProcess("/usr/bin/unshare", {"--net", "true"}).exit_code != 0) {
    GTEST_SKIP() << "cannot create a network namespace (unshare --net)";
  }
  TempDir dir;
  // Only the socket files move (their defaults are per user, not per
  // namespace); every network setting is tallyd's default.
  const std::string command = "ip link set lo up && exec " + TallydPath() + " --unix " +
                              dir.File("t.sock") + " --unix-seq " + dir.File("t.seq");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--net", "/bin/sh", "-c", command}, &error, std::chrono::seconds(15),
                      "/usr/bin/unshare"))
      << error;
  EXPECT_EQ(d.udp_port(), 7070) << d.listening_line();
  EXPECT_EQ(d.grpc_address(), "127.0.0.1:8081") << d.listening_line();
  EXPECT_EQ(d.http_address(), "127.0.0.1:8080") << d.listening_line();
  EXPECT_EQ(d.Stop(ScaledWait(std::chrono::seconds(5))), 0);
}

}  // namespace
}  // namespace tally::testing

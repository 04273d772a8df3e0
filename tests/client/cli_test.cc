// The `tally` CLI against a real tallyd: exit codes, plain and JSON output.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>
#include <memory>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally {
namespace {

using testing::DaemonProcess;
using testing::ProcessResult;
using testing::TempDir;

const std::string kTally = std::string(TALLY_BIN_DIR) + "/tally";

// A UDP port nothing listens on: bound, read back, closed.
uint16_t ClosedUdpPort() {
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

// tallyd counts in sub-buckets (10 per window by default), so a hit stays
// counted until its whole sub-bucket has left the window: up to one
// sub-bucket longer than the window itself.
int64_t MaxResetMs(int64_t window_ms) { return window_ms + (window_ms + 9) / 10; }

class CliTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new TempDir();
    daemon_ = new DaemonProcess();
    std::string error;
    ASSERT_TRUE(daemon_->Start(
        {"--udp", "127.0.0.1:0", "--unix", dir_->File("d.sock"), "--unix-seq", dir_->File("d.seq")},
        &error))
        << error;
  }
  static void TearDownTestSuite() {
    delete daemon_;
    delete dir_;
    daemon_ = nullptr;
    dir_ = nullptr;
  }
  void SetUp() override {
    ASSERT_NE(daemon_, nullptr);
    ASSERT_TRUE(daemon_->running());
  }

  static std::string Udp() { return "127.0.0.1:" + std::to_string(daemon_->udp_port()); }

  // Runs `tally check --udp <daemon> args...`.
  static ProcessResult Check(std::vector<std::string> args) {
    std::vector<std::string> full = {"check", "--udp", Udp()};
    full.insert(full.end(), args.begin(), args.end());
    return testing::RunProcess(kTally, full);
  }

  // Parses stdout as exactly one JSON object.
  static boost::json::object Json(const ProcessResult& result) {
    boost::system::error_code ec;
    boost::json::value value = boost::json::parse(result.out, ec);
    EXPECT_FALSE(ec) << "not JSON: " << result.out;
    EXPECT_TRUE(value.is_object()) << result.out;
    return value.is_object() ? value.as_object() : boost::json::object();
  }

  static TempDir* dir_;
  static DaemonProcess* daemon_;
};

TempDir* CliTest::dir_ = nullptr;
DaemonProcess* CliTest::daemon_ = nullptr;

TEST_F(CliTest, ExitZeroWhileAllowedThenOneWhenDenied) {
  ProcessResult first = Check({"cli-deny", "/x", "2", "60"});
  EXPECT_EQ(first.exit_code, 0) << first.err;
  EXPECT_EQ(first.out.rfind("allowed remaining=1 retry_after_ms=0 reset_after_ms=", 0), 0u)
      << first.out;
  EXPECT_NE(first.out.find(" limit=2\n"), std::string::npos) << first.out;
  EXPECT_EQ(Check({"cli-deny", "/x", "2", "60"}).exit_code, 0);
  ProcessResult third = Check({"cli-deny", "/x", "2", "60"});
  EXPECT_EQ(third.exit_code, 1) << third.err;
  EXPECT_EQ(third.out.rfind("denied remaining=0 retry_after_ms=", 0), 0u) << third.out;
  EXPECT_TRUE(third.err.empty()) << third.err;
}

TEST_F(CliTest, BadInputExitsTwo) {
  const std::vector<std::vector<std::string>> bad = {
      {"", "/x", "2", "1"},             // empty user
      {"u", "", "2", "1"},              // empty endpoint
      {"u", "/x", "2", "0"},            // window 0
      {"u", "/x", "2", "0.0004"},       // window < 1 ms
      {"u", "/x", "2", "-1"},           // negative window
      {"u", "/x", "2", "2678400.001"},  // > 31 days
      {"u", "/x", "2", "1e3"},          // not a plain number
      {"u", "/x", "2", "nan"},
      {"u", "/x", "2", "abc"},
      {"u", "/x", "4294967296", "1"},  // limit > 2^32-1
      {"u", "/x", "-2", "1"},
      {"u", "/x", "2x", "1"},
      {"u", "/x", "2"},  // missing WINDOW_SECONDS
      {"u", "/x", "2", "1", "extra"},
      {"--hits", "x", "u", "/x", "2", "1"},
      {"--timeout-ms", "0", "u", "/x", "2", "1"},
      {"--attempts", "0", "u", "/x", "2", "1"},
      {"--bogus", "u", "/x", "2", "1"},
      {"--unix", "/tmp/x", "u", "/x", "2", "1"},  // with --udp from Check()
  };
  for (const auto& args : bad) {
    std::string joined;
    for (const auto& a : args) joined += "'" + a + "' ";
    SCOPED_TRACE(joined);
    ProcessResult result = Check(args);
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_TRUE(result.out.empty()) << result.out;
    EXPECT_FALSE(result.err.empty());
  }
  // The largest valid values pass.
  EXPECT_EQ(Check({"cli-max", "/x", "4294967295", "2678400"}).exit_code, 0);
}

TEST_F(CliTest, UnreachableExitsTwo) {
  std::string addr = "127.0.0.1:" + std::to_string(ClosedUdpPort());
  ProcessResult result = testing::RunProcess(
      kTally, {"check", "--udp", addr, "--timeout-ms", "200", "u", "/x", "2", "1"});
  EXPECT_EQ(result.exit_code, 2);
  EXPECT_NE(result.err.find(addr), std::string::npos) << result.err;
  ProcessResult json = testing::RunProcess(
      kTally, {"check", "--json", "--udp", addr, "--timeout-ms", "200", "u", "/x", "2", "1"});
  EXPECT_EQ(json.exit_code, 2);
  boost::json::object object = Json(json);
  EXPECT_EQ(object["status"], "unavailable");
  EXPECT_EQ(object["allowed"], false);
  EXPECT_TRUE(object["error"].is_string());

  ProcessResult missing = testing::RunProcess(
      kTally, {"check", "--unix", dir_->File("none.sock"), "u", "/x", "2", "1"});
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_NE(missing.err.find("none.sock"), std::string::npos) << missing.err;
}

TEST_F(CliTest, HelpAndUnknownSubcommandExitTwo) {
  ProcessResult help = testing::RunProcess(kTally, {"--help"});
  EXPECT_EQ(help.exit_code, 2);
  EXPECT_NE(help.out.find("check"), std::string::npos);
  ProcessResult check_help = testing::RunProcess(kTally, {"check", "--help"});
  EXPECT_EQ(check_help.exit_code, 2);
  EXPECT_NE(check_help.out.find("WINDOW_SECONDS"), std::string::npos);
  ProcessResult unknown = testing::RunProcess(kTally, {"frobnicate"});
  EXPECT_EQ(unknown.exit_code, 2);
  EXPECT_NE(unknown.err.find("frobnicate"), std::string::npos);
  EXPECT_EQ(testing::RunProcess(kTally, {}).exit_code, 2);
}

TEST_F(CliTest, JsonHasTheFieldsWithTheRightTypes) {
  ProcessResult result = Check({"--json", "cli-json", "/x", "3", "2.5"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  boost::json::object object = Json(result);
  ASSERT_TRUE(object["allowed"].is_bool());
  EXPECT_TRUE(object["allowed"].as_bool());
  ASSERT_TRUE(object["remaining"].is_number());
  EXPECT_EQ(object["remaining"].to_number<int64_t>(), 2);
  EXPECT_EQ(object["retry_after_ms"].to_number<int64_t>(), 0);
  ASSERT_TRUE(object["reset_after_ms"].is_number());
  int64_t reset = object["reset_after_ms"].to_number<int64_t>();
  EXPECT_GT(reset, 0);
  EXPECT_LE(reset, MaxResetMs(2500));
  EXPECT_EQ(object["limit"].to_number<int64_t>(), 3);
  EXPECT_EQ(object["status"], "ok");
  ASSERT_TRUE(object["request_id"].is_number());
  EXPECT_NE(object["request_id"].to_number<uint64_t>(), 0u);
  EXPECT_EQ(object.size(), 7u);

  // Exhaust the limit: denied with a positive retry.
  EXPECT_EQ(Check({"--hits", "2", "cli-json", "/x", "3", "2.5"}).exit_code, 0);
  ProcessResult denied = Check({"--json", "cli-json", "/x", "3", "2.5"});
  EXPECT_EQ(denied.exit_code, 1);
  boost::json::object d = Json(denied);
  EXPECT_EQ(d["allowed"], false);
  EXPECT_EQ(d["status"], "ok");
  EXPECT_GT(d["retry_after_ms"].to_number<int64_t>(), 0);

  // More hits than the limit can ever admit: retry_after_ms is -1.
  ProcessResult never = Check({"--json", "--hits", "5", "cli-never", "/x", "3", "1"});
  EXPECT_EQ(never.exit_code, 1);
  EXPECT_EQ(Json(never)["retry_after_ms"].to_number<int64_t>(), -1);
}

TEST_F(CliTest, JsonErrorsAreEscapedObjects) {
  std::string nasty = "a\"b\\c\n\x01";
  ProcessResult result = Check({"--json", "u", "/x", "2", nasty});
  EXPECT_EQ(result.exit_code, 2);
  boost::json::object object = Json(result);
  EXPECT_EQ(object["allowed"], false);
  EXPECT_EQ(object["status"], "invalid_argument");
  ASSERT_TRUE(object["error"].is_string());
  EXPECT_NE(std::string(object["error"].as_string()).find(nasty), std::string::npos);

  // Invalid UTF-8 in an echoed argument still yields valid JSON; valid UTF-8 survives.
  ProcessResult bytes = Check({"--json", "u", "/x", "2", "\xff\xc3\xa9\xed\xa0\x80"});
  EXPECT_EQ(bytes.exit_code, 2);
  boost::json::object bytes_object = Json(bytes);
  ASSERT_TRUE(bytes_object["error"].is_string());
  EXPECT_NE(std::string(bytes_object["error"].as_string()).find("\xef\xbf\xbd\xc3\xa9"),
            std::string::npos);

  ProcessResult empty_user = Check({"--json", "", "/x", "2", "1"});
  EXPECT_EQ(empty_user.exit_code, 2);
  EXPECT_EQ(Json(empty_user)["status"], "invalid_argument");
  ProcessResult bad_flag = Check({"--json", "--nope", "u", "/x", "2", "1"});
  EXPECT_EQ(bad_flag.exit_code, 2);
  EXPECT_EQ(Json(bad_flag)["status"], "invalid_argument");
}

TEST_F(CliTest, FractionalWindow) {
  ProcessResult result = Check({"--json", "cli-frac", "/x", "1", "0.5"});
  ASSERT_EQ(result.exit_code, 0) << result.err;
  EXPECT_LE(Json(result)["reset_after_ms"].to_number<int64_t>(), MaxResetMs(500));
  ProcessResult dot = Check({"--json", "cli-frac2", "/x", "1", ".25"});
  ASSERT_EQ(dot.exit_code, 0) << dot.err;
  EXPECT_LE(Json(dot)["reset_after_ms"].to_number<int64_t>(), MaxResetMs(250));
}

TEST_F(CliTest, UnixDatagramAndSeqpacketWork) {
  for (const std::string& path : {daemon_->unix_path(), daemon_->seq_path()}) {
    SCOPED_TRACE(path);
    std::string user = "cli-unix-" + std::to_string(path.size());
    ProcessResult first =
        testing::RunProcess(kTally, {"check", "--unix", path, user, "/x", "1", "60"});
    EXPECT_EQ(first.exit_code, 0) << first.err;
    ProcessResult second =
        testing::RunProcess(kTally, {"check", "--unix", path, user, "/x", "1", "60"});
    EXPECT_EQ(second.exit_code, 1) << second.err;
  }
}

// ---- tally limit ----

ProcessResult LimitCli(std::vector<std::string> args) {
  args.insert(args.begin(), "limit");
  return testing::RunProcess(kTally, args);
}

TEST_F(CliTest, LimitUsageErrorsExitTwo) {
  const std::vector<std::string> key = {"--user",           "u", "--endpoint", "/e",
                                        "--window-seconds", "60"};
  auto with_key = [&](std::vector<std::string> head) {
    head.insert(head.end(), key.begin(), key.end());
    return head;
  };
  const std::vector<std::vector<std::string>> bad = {
      {},                                 // no verb
      {"frob"},                           // unknown verb
      {"set", "--udp", Udp()},            // no selector
      with_key({"set", "--udp", Udp()}),  // no --limit
      with_key({"set", "--udp", Udp(), "--limit", "-1"}),
      with_key({"set", "--udp", Udp(), "--limit", "4294967296"}),
      with_key({"set", "--udp", Udp(), "--limit", "1", "--unit", "minute"}),  // unit: descriptors
      with_key({"get", "--udp", Udp(), "--limit", "1"}),                      // --limit: set only
      with_key({"list", "--udp", Udp()}),                                     // list: no selector
      with_key({"set", "--udp", Udp(), "--limit", "1", "--domain", "d"}),     // both forms
      {"set", "--udp", Udp(), "--domain", "d", "--limit", "1", "--unit",
       "second"},  // no descriptor
      {"set", "--udp", Udp(), "--domain", "d", "--descriptor", "a=b", "--limit", "1"},  // no unit
      {"set", "--udp", Udp(), "--domain", "d", "--descriptor", "a=b", "--limit", "1", "--unit",
       "fortnight"},
      {"set", "--udp", Udp(), "--domain", "d", "--descriptor", "=b", "--limit", "1", "--unit",
       "second"},
      {"get", "--udp", Udp(), "--user", "u", "--endpoint", "/e"},  // no window
      {"get", "--udp", Udp(), "--user", "u", "--endpoint", "/e", "--window-seconds", "0"},
      with_key({"get", "--udp", Udp(), "--unix", "/tmp/x"}),
  };
  for (const auto& args : bad) {
    std::string joined;
    for (const auto& a : args) joined += "'" + a + "' ";
    SCOPED_TRACE(joined);
    ProcessResult result = LimitCli(args);
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_TRUE(result.out.empty()) << result.out;
    EXPECT_NE(result.err.find("tally limit --help"), std::string::npos) << result.err;
  }
  // --json errors are one object.
  ProcessResult json = LimitCli({"set", "--json", "--udp", Udp()});
  EXPECT_EQ(json.exit_code, 2);
  EXPECT_EQ(Json(json)["status"].as_string(), "invalid_argument");
  EXPECT_EQ(LimitCli({"--help"}).exit_code, 2);
}

TEST_F(CliTest, LimitSetGetListRemoveOnASingleNode) {
  const std::vector<std::string> key = {"--user", "cli-limit",        "--endpoint",
                                        "/x",     "--window-seconds", "60"};
  auto cmd = [&](std::vector<std::string> head, bool with_key = true) {
    if (with_key) head.insert(head.end(), key.begin(), key.end());
    return LimitCli(head);
  };
  EXPECT_EQ(Check({"cli-limit", "/x", "10", "60"}).exit_code, 0);
  ProcessResult none = cmd({"get", "--udp", Udp()});
  EXPECT_EQ(none.exit_code, 1) << none.err;
  EXPECT_EQ(none.out.rfind("no override on ", 0), 0u) << none.out;

  // Set through the Unix datagram socket, read through UDP.
  ProcessResult set = cmd({"set", "--unix", dir_->File("d.sock"), "--limit", "1"});
  ASSERT_EQ(set.exit_code, 0) << set.err;
  EXPECT_NE(set.out.find("set on "), std::string::npos) << set.out;
  ProcessResult denied = Check({"cli-limit", "/x", "10", "60"});
  EXPECT_EQ(denied.exit_code, 1) << denied.out;  // 1 hit already spent of the 1 allowed
  EXPECT_NE(denied.out.find(" limit=1\n"), std::string::npos) << denied.out;
  ProcessResult got = cmd({"get", "--udp", Udp(), "--json"});
  ASSERT_EQ(got.exit_code, 0) << got.err;
  boost::json::object o = Json(got);
  boost::json::object& override_object = o["override"].as_object();
  EXPECT_EQ(override_object["user"].as_string(), "cli-limit");
  EXPECT_EQ(override_object["limit"].to_number<int64_t>(), 1);
  EXPECT_EQ(override_object["window_ms"].to_number<int64_t>(), 60'000);
  EXPECT_FALSE(override_object["removed"].as_bool());

  // A descriptor-form override, listed with the other.
  ProcessResult d = LimitCli({"set", "--udp", Udp(), "--json", "--domain", "edge", "--descriptor",
                              "tier=gold,path=/a", "--limit", "7", "--unit", "hour"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  EXPECT_EQ(Json(d)["outcome"].as_string(), "applied");
  ProcessResult list = LimitCli({"list", "--udp", Udp(), "--json"});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  boost::json::array all = Json(list)["overrides"].as_array();
  ASSERT_EQ(all.size(), 2u) << list.out;
  bool saw_descriptor = false;
  for (auto& v : all) {
    boost::json::object& e = v.as_object();
    if (!e.contains("domain")) continue;
    saw_descriptor = true;
    EXPECT_EQ(e["domain"].as_string(), "edge");
    EXPECT_EQ(e["descriptor"].as_array().size(), 2u);
    EXPECT_EQ(e["window_ms"].to_number<int64_t>(), 3'600'000);
  }
  EXPECT_TRUE(saw_descriptor);
  ProcessResult plain = LimitCli({"list", "--unix", dir_->File("d.seq")});
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_NE(plain.out.find("domain=edge descriptor=tier=gold,path=/a limit=7"), std::string::npos)
      << plain.out;

  // rm gives the caller's limit back.
  ASSERT_EQ(cmd({"rm", "--udp", Udp()}).exit_code, 0);
  ProcessResult back = Check({"cli-limit", "/x", "10", "60"});
  EXPECT_EQ(back.exit_code, 0) << back.out;
  EXPECT_NE(back.out.find(" limit=10\n"), std::string::npos) << back.out;
  EXPECT_EQ(cmd({"get", "--udp", Udp()}).exit_code, 1);
  ASSERT_EQ(
      LimitCli({"rm", "--udp", Udp(), "--domain", "edge", "--descriptor", "tier=gold,path=/a"})
          .exit_code,
      0);
}

}  // namespace
}  // namespace tally

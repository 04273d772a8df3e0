// tallyd under systemd: the sd_notify protocol against a fake NOTIFY_SOCKET
// (READY=1 once serving, STATUS= lines, WATCHDOG=1 at WatchdogSec/2,
// STOPPING=1 on SIGTERM), and `systemd-analyze verify` of the shipped unit.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

// A bound Unix datagram socket playing systemd's notify socket.
class FakeNotifySocket {
 public:
  explicit FakeNotifySocket(const std::string& path) : path_(path) {
    fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    bound_ = fd_ >= 0 && bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  }
  ~FakeNotifySocket() {
    if (fd_ >= 0) close(fd_);
    unlink(path_.c_str());
  }
  bool bound() const { return bound_; }

  // The next datagram, or "" when none arrives within `timeout`.
  std::string Receive(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(ScaledWait(timeout).count())) <= 0) return "";
    char buf[4096];
    ssize_t n = recv(fd_, buf, sizeof(buf), 0);
    return n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  }

 private:
  std::string path_;
  int fd_ = -1;
  bool bound_ = false;
};

bool HasLine(const std::string& message, const std::string& prefix) {
  std::istringstream in(message);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) return true;
  }
  return false;
}

TEST(SystemdTest, NotifiesReadyStatusWatchdogAndStopping) {
  TempDir dir;
  FakeNotifySocket notify(dir.File("notify"));
  ASSERT_TRUE(notify.bound());
  DaemonProcess d;
  std::string error;
  // WATCHDOG_USEC as systemd sets it for WatchdogSec=200ms (no WATCHDOG_PID:
  // sd_watchdog_enabled then accepts any pid, and /usr/bin/env execs in place).
  ASSERT_TRUE(d.Start({"NOTIFY_SOCKET=" + dir.File("notify"), "WATCHDOG_USEC=200000", TallydPath(),
                       "--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none", "--threads",
                       "1", "--stats-interval-s", "0"},
                      &error, std::chrono::seconds(15), "/usr/bin/env"))
      << error;

  std::string ready = notify.Receive(std::chrono::seconds(5));
  EXPECT_TRUE(HasLine(ready, "READY=1")) << ready;
  EXPECT_TRUE(HasLine(ready, "STATUS=tallyd listening udp=127.0.0.1:")) << ready;

  // At least three watchdog pings, each with a status line: one per 100 ms
  // (half of WATCHDOG_USEC); the bound only guards against a dead loop.
  int watchdogs = 0;
  for (int i = 0; i < 20 && watchdogs < 3; ++i) {
    std::string m = notify.Receive(std::chrono::seconds(2));
    if (m.empty()) break;
    if (HasLine(m, "WATCHDOG=1")) {
      ++watchdogs;
      EXPECT_TRUE(HasLine(m, "STATUS=serving: checks=")) << m;
    }
  }
  EXPECT_EQ(watchdogs, 3);

  EXPECT_TRUE(d.Signal(SIGTERM));
  bool stopping = false;
  for (int i = 0; i < 20 && !stopping; ++i) {
    std::string m = notify.Receive(std::chrono::seconds(2));
    if (m.empty()) break;
    stopping = HasLine(m, "STOPPING=1");
  }
  EXPECT_TRUE(stopping);
  EXPECT_EQ(d.WaitExit(std::chrono::seconds(10)), 0);
}

TEST(SystemdTest, LogsCarryNoTimestampUnderJournald) {
  // A start failure (an address not on this host) is the cheapest log line.
  ProcessResult fail =
      RunProcess("/usr/bin/env", {"JOURNAL_STREAM=8:12345", TallydPath(), "--udp",
                                  "203.0.113.1:7070", "--unix", "none", "--unix-seq", "none"});
  EXPECT_EQ(fail.exit_code, 1) << fail.err;
  // "<3>error [tid] cannot start: ...": a syslog priority, no date.
  EXPECT_EQ(fail.err.rfind("<3>error [", 0), 0u) << fail.err;
  ProcessResult plain = RunProcess(
      TallydPath(), {"--udp", "203.0.113.1:7070", "--unix", "none", "--unix-seq", "none"});
  EXPECT_EQ(plain.exit_code, 1);
  EXPECT_EQ(plain.err.rfind("20", 0), 0u) << plain.err;  // "2026-..."
}

// The shipped unit, with ExecStart pointing at this build's tallyd.
TEST(SystemdTest, UnitPassesSystemdAnalyzeVerify) {
  const char* analyze = "/usr/bin/systemd-analyze";
  if (access(analyze, X_OK) != 0) GTEST_SKIP() << "systemd-analyze not installed";
  TempDir dir;
  std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/packaging/tallyd.service");
  ASSERT_TRUE(in);
  std::stringstream text;
  text << in.rdbuf();
  std::string unit = text.str();
  EXPECT_NE(unit.find("\nType=notify\n"), std::string::npos);
  EXPECT_NE(unit.find("\nWatchdogSec="), std::string::npos);
  EXPECT_NE(unit.find("\nStateDirectory=tally\n"), std::string::npos);
  for (size_t at; (at = unit.find("/usr/bin/tallyd")) != std::string::npos;) {
    unit.replace(at, std::strlen("/usr/bin/tallyd"), TallydPath());
  }
  const std::string path = dir.File("tallyd.service");
  std::ofstream(path) << unit;
  ProcessResult r = RunProcess(analyze, {"verify", path});
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err.find("tallyd.service"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tally::testing

// tallyd as a process: start-up, signals, exit codes and socket files.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>

#include "tests/daemon/io/raw_client.h"
#include "tests/support/daemon_process.h"
#include "tests/support/requests.h"

namespace tally::testing {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

const CheckRequestBuilder kRequest = CheckRequestBuilder().Endpoint("/e").User("u");

TEST(LifecycleTest, SigtermExitsZeroAndRemovesSocketFiles) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  EXPECT_EQ(d.udp_host(), "127.0.0.1");
  EXPECT_NE(d.udp_port(), 0);
  EXPECT_EQ(d.unix_path(), dir.File("d.sock"));
  EXPECT_EQ(d.seq_path(), dir.File("s.sock"));
  EXPECT_TRUE(Exists(d.unix_path()));
  EXPECT_TRUE(Exists(d.seq_path()));
  // It serves before we stop it.
  auto client = ConnectTo(d, Transport::kUdp);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1)).status, Status::kOk);
  EXPECT_EQ(d.Stop(), 0);
  EXPECT_FALSE(Exists(dir.File("d.sock")));
  EXPECT_FALSE(Exists(dir.File("s.sock")));
}

TEST(LifecycleTest, SigintExitsZero) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  ASSERT_TRUE(d.Signal(SIGINT));
  EXPECT_EQ(d.WaitExit(std::chrono::seconds(5)), 0);
  EXPECT_FALSE(Exists(dir.File("d.sock")));
}

TEST(LifecycleTest, SigtermWithOpenSeqpacketConnectionsStillExitsZero) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto a = ConnectTo(d, Transport::kSeqpacket);
  auto b = ConnectTo(d, Transport::kSeqpacket);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(a->Check(kRequest.Id(1)).status, Status::kOk);
  EXPECT_EQ(d.Stop(), 0);
  // The daemon closed our connection.
  EXPECT_FALSE(a->Receive(std::chrono::seconds(2)).has_value());
  EXPECT_TRUE(a->eof());
}

TEST(LifecycleTest, PortZeroGivesTwoDaemonsDifferentPorts) {
  TempDir dir1, dir2;
  DaemonProcess d1, d2;
  std::string error;
  ASSERT_TRUE(d1.Start(IsolatedArgs(dir1), &error)) << error;
  ASSERT_TRUE(d2.Start(IsolatedArgs(dir2), &error)) << error;
  EXPECT_NE(d1.udp_port(), d2.udp_port());
  // Each answers on its own port, from its own limiter.
  auto c1 = ConnectTo(d1, Transport::kUdp);
  auto c2 = ConnectTo(d2, Transport::kUdp);
  EXPECT_EQ(c1->Check(kRequest.Id(1)).remaining, 9u);
  EXPECT_EQ(c1->Check(kRequest.Id(2)).remaining, 8u);
  EXPECT_EQ(c2->Check(kRequest.Id(1)).remaining, 9u);
  EXPECT_EQ(d1.Stop(), 0);
  EXPECT_EQ(d2.Stop(), 0);
}

TEST(LifecycleTest, TransportsCanBeDisabled) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", "none", "--unix", dir.File("d.sock"), "--unix-seq", "none",
                       "--stats-interval-s", "0"},
                      &error))
      << error;
  EXPECT_EQ(d.udp_port(), 0);
  EXPECT_EQ(d.seq_path(), "");
  EXPECT_NE(d.listening_line().find("udp=- "), std::string::npos) << d.listening_line();
  EXPECT_NE(d.listening_line().find(" seq=-"), std::string::npos) << d.listening_line();
  auto client = ConnectTo(d, Transport::kUnixDgram);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1)).status, Status::kOk);
  EXPECT_EQ(d.Stop(), 0);
}

TEST(LifecycleTest, CreatesMissingParentDirectories) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  std::string nested = dir.File("a/b/d.sock");
  ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", nested, "--unix-seq", "none"}, &error))
      << error;
  struct stat st;
  ASSERT_EQ(stat(dir.File("a/b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_TRUE(Exists(nested));
  EXPECT_EQ(d.Stop(), 0);
}

TEST(LifecycleTest, ReplacesStaleSocketFile) {
  TempDir dir;
  std::string path = dir.File("d.sock");
  {
    // A socket file nobody listens on any more, as a crashed daemon leaves it.
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    memcpy(addr.sun_path, path.data(), path.size());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    close(fd);
  }
  ASSERT_TRUE(Exists(path));
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto client = ConnectTo(d, Transport::kUnixDgram);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1)).status, Status::kOk);
  EXPECT_EQ(d.Stop(), 0);
}

TEST(LifecycleTest, RefusesToReplaceNonSocketFile) {
  TempDir dir;
  std::string path = dir.File("d.sock");
  { std::ofstream(path) << "precious"; }
  ProcessResult r = RunTallyd(IsolatedArgs(dir));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("non-socket"), std::string::npos) << r.err;
  std::ifstream in(path);
  std::string content;
  in >> content;
  EXPECT_EQ(content, "precious");
  // Nothing half-created is left behind either.
  EXPECT_FALSE(Exists(dir.File("s.sock")));
}

TEST(LifecycleTest, RefusesSocketOfARunningDaemon) {
  TempDir dir;
  DaemonProcess first;
  std::string error;
  ASSERT_TRUE(first.Start(IsolatedArgs(dir), &error)) << error;
  ProcessResult r = RunTallyd(IsolatedArgs(dir));
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("in use"), std::string::npos) << r.err;
  // The first daemon is unharmed: its socket file is still there and answers.
  auto client = ConnectTo(first, Transport::kUnixDgram);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->Check(kRequest.Id(1)).status, Status::kOk);
  EXPECT_EQ(first.Stop(), 0);
}

TEST(LifecycleTest, UdpPortInUseFailsWithExitOne) {
  int fd = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  TempDir dir;
  ProcessResult r = RunTallyd({"--udp", "127.0.0.1:" + std::to_string(ntohs(addr.sin_port)),
                               "--unix", dir.File("d.sock"), "--unix-seq", "none"});
  close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("bind udp"), std::string::npos) << r.err;
  EXPECT_FALSE(Exists(dir.File("d.sock")));
}

TEST(LifecycleTest, IPv6Loopback) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  if (!d.Start({"--udp", "[::1]:0", "--unix", "none", "--unix-seq", "none"}, &error)) {
    GTEST_SKIP() << "no IPv6 loopback here: " << error;
  }
  EXPECT_EQ(d.udp_host(), "::1");
  EXPECT_NE(d.udp_port(), 0);
  EXPECT_EQ(d.Stop(), 0);
}

TEST(LifecycleTest, VersionAndHelpExitZero) {
  ProcessResult v = RunTallyd({"--version"});
  EXPECT_EQ(v.exit_code, 0);
  EXPECT_EQ(v.out.rfind("tallyd ", 0), 0u) << v.out;
  ProcessResult h = RunTallyd({"--help"});
  EXPECT_EQ(h.exit_code, 0);
  EXPECT_NE(h.out.find("--unix-seq"), std::string::npos);
}

}  // namespace
}  // namespace tally::testing

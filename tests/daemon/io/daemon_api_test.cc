// tally::io::Daemon used as a library (as the load generator does), and echo
// mode through the real binary.
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "client/admin.h"
#include "daemon/io/counters.h"
#include "daemon/io/cpu_quota.h"
#include "daemon/io/daemon.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/seqpacket_server.h"
#include "daemon/io/sockets.h"
#include "tests/daemon/io/raw_client.h"
#include "tests/support/crafted_checks.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

bool Exists(const std::string& path) {
  struct stat st;
  return lstat(path.c_str(), &st) == 0;
}

// Counters are bumped just after the kernel takes a reply, so a client can see
// the reply first: re-read until `done` or a generous deadline.
template <typename Pred>
io::DaemonStats StatsWhen(const io::Daemon& daemon, Pred done) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  io::DaemonStats s = daemon.stats();
  while (!done(s) && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
    s = daemon.stats();
  }
  return s;
}

io::DaemonOptions Options(const TempDir& dir) {
  io::DaemonOptions o;
  o.udp = "127.0.0.1:0";
  o.unix_path = dir.File("d.sock");
  o.unix_seq_path = dir.File("s.sock");
  o.threads = 2;
  o.stats_interval = std::chrono::seconds(0);
  o.handle_signals = false;
  return o;
}

TEST(DaemonApiTest, StartServeStopInProcess) {
  TempDir dir;
  io::Daemon daemon(Options(dir));
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::string address = daemon.udp_address();
  ASSERT_EQ(address.rfind("127.0.0.1:", 0), 0u) << address;
  uint16_t port = static_cast<uint16_t>(std::stoi(address.substr(10)));
  EXPECT_NE(port, 0);
  EXPECT_EQ(daemon.unix_path(), dir.File("d.sock"));
  EXPECT_EQ(daemon.unix_seq_path(), dir.File("s.sock"));
  std::thread runner([&] { daemon.Run(); });

  auto udp = RawClient::Udp("127.0.0.1", port);
  auto dgram = RawClient::UnixDgram(daemon.unix_path());
  auto seq = RawClient::Seqpacket(daemon.unix_seq_path());
  ASSERT_TRUE(udp && dgram && seq);
  CheckRequest r;
  r.user_id = "u";
  r.endpoint = "/e";
  r.limit = 5;
  r.window_ms = 1000;
  for (RawClient* c : {udp.get(), dgram.get(), seq.get()}) {
    r.request_id++;
    EXPECT_TRUE(c->Check(r).allowed);
  }
  ASSERT_TRUE(udp->Send(std::vector<std::byte>(16)));
  EXPECT_FALSE(udp->ReceiveResults(std::chrono::seconds(5)).empty());

  io::DaemonStats stats =
      StatsWhen(daemon, [](const io::DaemonStats& s) { return s.datagrams_out >= 4; });
  EXPECT_EQ(stats.datagrams_in, 4u);
  EXPECT_EQ(stats.datagrams_out, 4u);
  EXPECT_EQ(stats.malformed, 1u);
  EXPECT_EQ(stats.send_errors, 0u);
  EXPECT_EQ(stats.limiter.checks, 3u);
  EXPECT_EQ(stats.limiter.allowed, 3u);

  daemon.Stop();
  runner.join();
  EXPECT_FALSE(Exists(dir.File("d.sock")));
  EXPECT_FALSE(Exists(dir.File("s.sock")));
}

TEST(DaemonApiTest, UnboundUnixSenderIsDroppedAndCounted) {
  TempDir dir;
  io::Daemon daemon(Options(dir));
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::thread runner([&] { daemon.Run(); });
  auto anonymous = RawClient::UnixDgram(daemon.unix_path(), /*bind_address=*/false);
  ASSERT_NE(anonymous, nullptr);
  CheckRequest r;
  r.request_id = 1;
  r.user_id = "u";
  r.endpoint = "/e";
  r.limit = 5;
  r.window_ms = 1000;
  ASSERT_TRUE(anonymous->Send(EncodeRequests({r})));
  // A bound client's check afterwards proves the first one was processed
  // (one socket, one queue, in order) without being counted.
  auto bound = RawClient::UnixDgram(daemon.unix_path());
  r.request_id = 2;
  r.hits = 0;
  CheckResult result = bound->Check(r);
  EXPECT_EQ(result.remaining, 5u);
  io::DaemonStats stats = daemon.stats();
  EXPECT_EQ(stats.send_errors, 1u);
  EXPECT_EQ(stats.datagrams_in, 2u);
  daemon.Stop();
  runner.join();
}

TEST(DaemonApiTest, StopBeforeRunReturnsAtOnce) {
  TempDir dir;
  io::Daemon daemon(Options(dir));
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  daemon.Stop();
  daemon.Run();
  EXPECT_FALSE(Exists(dir.File("d.sock")));
}

TEST(DaemonApiTest, DestructorCleansUpWithoutRun) {
  TempDir dir;
  {
    io::Daemon daemon(Options(dir));
    std::string error;
    ASSERT_TRUE(daemon.Start(&error)) << error;
    EXPECT_TRUE(Exists(dir.File("d.sock")));
  }
  EXPECT_FALSE(Exists(dir.File("d.sock")));
  EXPECT_FALSE(Exists(dir.File("s.sock")));
}

// Signals go to a thread of the daemon's own (sigtimedwait), never to a
// handler on an I/O thread: SIGHUP runs the reload hook, SIGTERM stops Run().
// Each test runs in its own process (gtest_discover_tests), so the signals
// sent here reach only this one.
TEST(DaemonApiTest, SignalsAreTakenByTheSignalThread) {
  io::BlockDaemonSignals();  // as tallyd does before starting any thread
  TempDir dir;
  io::DaemonOptions o = Options(dir);
  o.handle_signals = true;
  io::Daemon daemon(o);
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::atomic<int> reloads{0};
  daemon.SetReloadHook([&reloads] { reloads.fetch_add(1); });
  std::thread runner([&] { daemon.Run(); });

  ASSERT_EQ(kill(getpid(), SIGHUP), 0);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (reloads.load() == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(reloads.load(), 1);
  daemon.SetReloadHook({});

  // Run() returns on SIGTERM alone (a single node stops at the first).
  ASSERT_EQ(kill(getpid(), SIGTERM), 0);
  runner.join();
  EXPECT_EQ(reloads.load(), 1);
}

TEST(DaemonApiTest, StartFailsOnBadOptions) {
  TempDir dir;
  io::DaemonOptions o = Options(dir);
  o.udp = "127.0.0.1:x";
  io::Daemon bad_udp(o);
  std::string error;
  EXPECT_FALSE(bad_udp.Start(&error));
  EXPECT_NE(error.find("udp"), std::string::npos) << error;
  EXPECT_FALSE(Exists(dir.File("d.sock")));

  o = Options(dir);
  o.limiter.buckets_per_window = 0;
  io::Daemon bad_buckets(o);
  EXPECT_FALSE(bad_buckets.Start(&error));
}

// --threads 0: half the CPUs the process may use, at least one (a 2-core
// machine shared with the clients was faster with one I/O thread than two).
TEST(DaemonApiTest, DefaultIoThreadsAreHalfTheUsableCpus) {
  EXPECT_EQ(io::DefaultIoThreads(1), 1);
  EXPECT_EQ(io::DefaultIoThreads(2), 1);
  EXPECT_EQ(io::DefaultIoThreads(3), 1);
  EXPECT_EQ(io::DefaultIoThreads(4), 2);
  EXPECT_EQ(io::DefaultIoThreads(64), 32);
  // Usable CPUs follow the affinity mask (taskset, a cpuset), not the host's count.
  cpu_set_t saved;
  ASSERT_EQ(sched_getaffinity(0, sizeof(saved), &saved), 0);
  const int quota = io::CgroupCpuLimit();  // this machine's, if any
  EXPECT_EQ(io::UsableCpus(), quota > 0 ? std::min(quota, CPU_COUNT(&saved)) : CPU_COUNT(&saved));
  cpu_set_t one;
  CPU_ZERO(&one);
  for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
    if (CPU_ISSET(cpu, &saved)) {
      CPU_SET(cpu, &one);
      break;
    }
  }
  ASSERT_EQ(sched_setaffinity(0, sizeof(one), &one), 0);
  EXPECT_EQ(io::UsableCpus(), 1);
  ASSERT_EQ(sched_setaffinity(0, sizeof(saved), &saved), 0);
}

TEST(DaemonApiTest, ParseHostPort) {
  std::string why;
  auto v4 = io::ParseHostPort("10.1.2.3:80", &why);
  ASSERT_TRUE(v4);
  EXPECT_EQ(v4->host, "10.1.2.3");
  EXPECT_EQ(v4->port, 80);
  EXPECT_FALSE(v4->v6);
  auto v6 = io::ParseHostPort("[::1]:0", &why);
  ASSERT_TRUE(v6);
  EXPECT_EQ(v6->host, "::1");
  EXPECT_TRUE(v6->v6);
  for (const char* bad : {"", ":80", "1.2.3.4", "1.2.3.4:", "1.2.3.4:65536", "::1:80", "[::1]80",
                          "[::1", "host:80", "1.2.3.4:-1", "1.2.3.4:8x"}) {
    EXPECT_FALSE(io::ParseHostPort(bad, &why)) << bad;
  }
}

TEST(DaemonApiTest, RepliesTooBigForOneDatagramAreSplit) {
  TempDir dir;
  io::Daemon daemon(Options(dir));
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::thread runner([&] { daemon.Run(); });
  // 1000 invalid checks fit one request datagram, but each result carries an
  // error text, so the answers need more than one datagram.
  std::vector<CheckRequest> batch(1000);
  for (size_t i = 0; i < batch.size(); ++i) {
    batch[i].request_id = i + 1;
    batch[i].endpoint = "e";
    batch[i].limit = 1;
    batch[i].window_ms = 1000;
  }
  ASSERT_LE(EncodeRequests(batch).size(), wire::kMaxDatagramBytes);
  auto udp = RawClient::Udp("127.0.0.1",
                            static_cast<uint16_t>(std::stoi(daemon.udp_address().substr(10))));
  std::vector<CheckResult> results = udp->CheckBatch(batch);
  for (size_t i = 0; i < batch.size(); ++i) {
    ASSERT_EQ(results[i].request_id, i + 1);
    EXPECT_EQ(results[i].status, Status::kInvalidArgument);
  }
  io::DaemonStats stats =
      StatsWhen(daemon, [](const io::DaemonStats& s) { return s.datagrams_out >= 2; });
  EXPECT_EQ(stats.datagrams_in, 1u);
  EXPECT_GE(stats.datagrams_out, 2u);
  daemon.Stop();
  runner.join();
}

// Issue 9, end to end on a running daemon: a raw unpadded status query on
// each datagram door gets paddingRequired within 3x, on the seqpacket door the
// answer; the client library pads by itself on every door.
TEST(DaemonApiTest, StatusQueriesArePaddedOnDatagramDoors) {
  TempDir dir;
  io::Daemon daemon(Options(dir));
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::thread runner([&] { daemon.Run(); });
  const uint16_t port = static_cast<uint16_t>(std::stoi(daemon.udp_address().substr(10)));
  std::vector<std::byte> request;
  wire::EncodeStatusRequest(&request);
  struct Door {
    std::unique_ptr<RawClient> raw;
    wire::MessageKind expected;
  };
  std::vector<Door> doors;
  doors.push_back({RawClient::Udp("127.0.0.1", port), wire::MessageKind::kPaddingRequired});
  doors.push_back({RawClient::UnixDgram(dir.File("d.sock")), wire::MessageKind::kPaddingRequired});
  doors.push_back({RawClient::Seqpacket(dir.File("s.sock")), wire::MessageKind::kStatusResponse});
  for (Door& door : doors) {
    ASSERT_TRUE(door.raw->Send(request));
    std::optional<std::vector<std::byte>> reply = door.raw->Receive(std::chrono::seconds(5));
    ASSERT_TRUE(reply.has_value());
    wire::ClientMessageReader reader;
    ASSERT_EQ(reader.Decode(*reply, &error), Status::kOk) << error;
    EXPECT_EQ(reader.kind(), door.expected);
    if (door.expected == wire::MessageKind::kPaddingRequired) {
      EXPECT_LE(reply->size(), 3 * request.size());
    }
  }
  for (const DaemonAddress& e :
       {*DaemonAddress::ParseUdp("127.0.0.1:" + std::to_string(port)),
        DaemonAddress::Unix(dir.File("d.sock")), DaemonAddress::Unix(dir.File("s.sock"))}) {
    wire::StatusReport report;
    EXPECT_TRUE(QueryStatus(e, ClientOptions(), &report, &error)) << e.ToString() << error;
    EXPECT_FALSE(report.counters.empty());
    wire::OwnerReport owner;
    EXPECT_TRUE(QueryOwner(e, ClientOptions(), wire::OwnerQuery{"u", "/e", 1000}, &owner, &error))
        << e.ToString() << error;
    EXPECT_EQ(owner.status, Status::kOk);
  }
  daemon.Stop();
  runner.join();
}

// Issue 9: the socket files were 0666, so any local user could spend other
// users' limits. Owner and group only, whatever the umask.
TEST(UnixSocketFileTest, SocketFilesAreOwnerAndGroupOnly) {
  TempDir dir;
  for (mode_t mask : {mode_t{022}, mode_t{077}, mode_t{0}}) {
    for (int type : {SOCK_DGRAM, SOCK_SEQPACKET}) {
      const mode_t old_mask = umask(mask);
      io::UnixSocketFile file;
      std::string error;
      const std::string path = dir.File("m" + std::to_string(mask) + "-" + std::to_string(type));
      const bool bound = file.Bind(path, type, &error);
      umask(old_mask);
      ASSERT_TRUE(bound) << error;
      struct stat st;
      ASSERT_EQ(stat(path.c_str(), &st), 0);
      EXPECT_TRUE(S_ISSOCK(st.st_mode));
      EXPECT_EQ(st.st_mode & 07777, 0660u) << "umask " << mask << " type " << type;
    }
  }
}

// --unix-mode and --unix-group reach the files, whatever the umask; a chown
// that fails fails the bind (a root-only test: only root may give a file to
// any group).
TEST(UnixSocketFileTest, ModeAndGroupAreTheOperators) {
  TempDir dir;
  const mode_t old_mask = umask(077);
  io::UnixSocketFile wide, narrow;
  std::string error;
  const bool bound = wide.Bind(dir.File("wide"), SOCK_DGRAM, &error, {0666, -1}) &&
                     narrow.Bind(dir.File("narrow"), SOCK_SEQPACKET, &error, {0600, -1});
  umask(old_mask);
  ASSERT_TRUE(bound) << error;
  struct stat st;
  ASSERT_EQ(stat(dir.File("wide").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  ASSERT_EQ(stat(dir.File("narrow").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // Execute and special bits never reach the file.
  io::UnixSocketFile masked;
  ASSERT_TRUE(masked.Bind(dir.File("masked"), SOCK_DGRAM, &error, {04777, -1})) << error;
  ASSERT_EQ(stat(dir.File("masked").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0666u);

  if (geteuid() != 0) GTEST_SKIP() << "giving a file to another group needs root";
  io::UnixSocketFile grouped;
  ASSERT_TRUE(grouped.Bind(dir.File("grouped"), SOCK_DGRAM, &error, {0660, 4321})) << error;
  ASSERT_EQ(stat(dir.File("grouped").c_str(), &st), 0);
  EXPECT_EQ(st.st_gid, 4321u);
  EXPECT_EQ(st.st_mode & 07777, 0660u);
}

// Issue 9, amplification on the client port of a single node: 64 KiB of
// empty checks got 2.56 MB of per-entry errors back (39x). A datagram whose
// checks could not have been written in its bytes gets one error.
TEST(MessageProcessorTest, RepliesAreAtMostThreeTimesTheRequest) {
  Limiter limiter(LimiterOptions{});
  io::Counters counters;
  io::MessageProcessor processor(&limiter, /*echo=*/false, &counters);
  const Instant now{std::chrono::milliseconds(1'700'000'000'000), std::chrono::nanoseconds(1)};
  for (auto [n, words] : {std::pair<uint32_t, size_t>{1, 5}, {2, 5}, {2000, 512}, {30'000, 8192}}) {
    const std::vector<std::byte> request = tally::testing::EmptyStructChecks(n, words);
    std::vector<io::Reply> replies;
    processor.Reset();
    ASSERT_EQ(processor.Handle(request, false, now, 0, &replies), io::Handled::kAnswered);
    size_t bytes = 0;
    for (const io::Reply& r : replies) bytes += r.bytes.size();
    EXPECT_LE(bytes, 3 * request.size()) << n << " checks: " << bytes << " bytes";
    ASSERT_EQ(replies.size(), 1u) << n;
    wire::ClientMessageReader reader;
    std::string why;
    ASSERT_EQ(reader.Decode(replies[0].bytes, &why), Status::kOk) << why;
    EXPECT_EQ(reader.responses().size(), 1u) << n;
  }
}

// Issue 9: a status answer is ~20x an unpadded 24-byte query. On a datagram
// door a query too small for its answer gets paddingRequired (itself within
// 3x); padded to the size asked, it gets the answer, still within 3x.
TEST(MessageProcessorTest, QueriesOnDatagramDoorsArePaddedToThreeTimesTheReply) {
  Limiter limiter(LimiterOptions{});
  io::Counters counters;
  const io::DaemonIdentity identity{"a-rather-long-node-name", 17, std::chrono::seconds(1),
                                    "127.0.0.1:7070"};
  const Instant now{std::chrono::milliseconds(1'700'000'000'000), std::chrono::seconds(5)};
  const wire::OwnerQuery owner_query{"alice", "/api", 60'000};
  for (io::Door door : {io::Door::kUdp, io::Door::kUnix}) {
    io::ProcessorContext context;
    context.limiter = &limiter;
    context.identity = &identity;
    context.counters = &counters;
    context.door = door;
    io::MessageProcessor processor(context);
    for (const bool status : {true, false}) {
      SCOPED_TRACE(std::string(status ? "status" : "owner") + " door " +
                   std::to_string(static_cast<int>(door)));
      const auto encode = [&](size_t min_bytes, std::vector<std::byte>* out) {
        if (status) {
          wire::EncodeStatusRequest(out, min_bytes);
        } else {
          wire::EncodeOwnerRequest(owner_query, out, min_bytes);
        }
      };
      std::vector<std::byte> request;
      encode(0, &request);
      const uint64_t refused_before = counters.queries_padding_required.load();
      std::vector<io::Reply> replies;
      processor.Reset();
      ASSERT_EQ(processor.Handle(request, false, now, 0, &replies), io::Handled::kAnswered);
      ASSERT_EQ(replies.size(), 1u);
      EXPECT_LE(replies[0].bytes.size(), 3 * request.size());
      wire::ClientMessageReader reader;
      std::string why;
      ASSERT_EQ(reader.Decode(replies[0].bytes, &why), Status::kOk) << why;
      const wire::MessageKind answer =
          status ? wire::MessageKind::kStatusResponse : wire::MessageKind::kOwnerResponse;
      if (reader.kind() == answer) continue;  // this answer fits an unpadded query
      ASSERT_EQ(reader.kind(), wire::MessageKind::kPaddingRequired);
      EXPECT_EQ(counters.queries_padding_required.load(), refused_before + 1);
      const size_t asked = reader.padding_required_bytes();
      EXPECT_GT(asked, request.size());
      encode(asked, &request);
      EXPECT_GE(request.size(), asked);
      EXPECT_LE(request.size(), asked + 16);  // a word for the padding struct, one to round
      processor.Reset();
      replies.clear();
      ASSERT_EQ(processor.Handle(request, false, now, 0, &replies), io::Handled::kAnswered);
      ASSERT_EQ(replies.size(), 1u);
      EXPECT_LE(replies[0].bytes.size(), 3 * request.size());
      ASSERT_EQ(reader.Decode(replies[0].bytes, &why), Status::kOk) << why;
      ASSERT_EQ(reader.kind(), answer);
      if (status) {
        EXPECT_EQ(reader.status_report().node_id, "a-rather-long-node-name");
        EXPECT_EQ(reader.padding_required_bytes(), 0u);
      }
    }
  }
  // The status answer of any daemon is more than 3x 24 bytes: it was refused
  // on both datagram doors.
  EXPECT_GE(counters.queries_padding_required.load(), 2u);
}

// A seqpacket peer cannot be forged: its queries are answered unpadded.
TEST(MessageProcessorTest, SeqpacketQueriesNeedNoPadding) {
  Limiter limiter(LimiterOptions{});
  io::Counters counters;
  io::ProcessorContext context;
  context.limiter = &limiter;
  context.counters = &counters;
  context.door = io::Door::kSeqpacket;
  io::MessageProcessor processor(context);
  std::vector<std::byte> request;
  wire::EncodeStatusRequest(&request);
  std::vector<io::Reply> replies;
  const Instant now{std::chrono::milliseconds(1'700'000'000'000), std::chrono::seconds(5)};
  ASSERT_EQ(processor.Handle(request, false, now, 0, &replies), io::Handled::kAnswered);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_GT(replies[0].bytes.size(), 3 * request.size());
  wire::ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(replies[0].bytes, &why), Status::kOk) << why;
  EXPECT_EQ(reader.kind(), wire::MessageKind::kStatusResponse);
  EXPECT_EQ(counters.queries_padding_required.load(), 0u);
}

TEST(SeqpacketServerTest, RefusesConnectionsBeyondTheCap) {
  TempDir dir;
  io::UnixSocketFile file;
  std::string error;
  ASSERT_TRUE(file.Bind(dir.File("s.sock"), SOCK_SEQPACKET, &error)) << error;
  boost::asio::io_context io;
  io::Counters counters;
  io::SeqpacketServer server(io, file.ReleaseFd(), nullptr, /*echo=*/true, &counters,
                             /*max_connections=*/2);
  server.Start();
  std::thread runner([&] {
    auto guard = boost::asio::make_work_guard(io);
    io.run();
  });
  auto a = RawClient::Seqpacket(dir.File("s.sock"));
  auto b = RawClient::Seqpacket(dir.File("s.sock"));
  std::vector<std::byte> ping(8, std::byte{1});
  // Round trips prove both were accepted before the third arrives.
  ASSERT_TRUE(a->Send(ping));
  ASSERT_TRUE(a->Receive(std::chrono::seconds(5)).has_value());
  ASSERT_TRUE(b->Send(ping));
  ASSERT_TRUE(b->Receive(std::chrono::seconds(5)).has_value());
  EXPECT_EQ(server.connection_count(), 2u);
  auto c = RawClient::Seqpacket(dir.File("s.sock"));
  ASSERT_NE(c, nullptr);  // the kernel completes the handshake ...
  EXPECT_FALSE(c->Receive(std::chrono::seconds(5)).has_value());
  EXPECT_TRUE(c->eof());  // ... and the server closes it at once
  // Closing one frees a slot.
  a.reset();
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (server.connection_count() != 1 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::yield();
  }
  EXPECT_EQ(server.connection_count(), 1u);
  auto d = RawClient::Seqpacket(dir.File("s.sock"));
  ASSERT_TRUE(d->Send(ping));
  EXPECT_TRUE(d->Receive(std::chrono::seconds(5)).has_value());
  io.stop();
  runner.join();
  server.Close();
}

class EchoTest : public ::testing::TestWithParam<Transport> {};

TEST_P(EchoTest, ReturnsBytesUnchanged) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir, {"--echo"}), &error)) << error;
  auto client = ConnectTo(d, GetParam());
  ASSERT_NE(client, nullptr);
  std::mt19937 rng(7);
  for (size_t size : {1u, 7u, 8u, 100u, 1500u, 60000u}) {
    std::vector<std::byte> msg(size);
    for (auto& b : msg) b = static_cast<std::byte>(rng());
    ASSERT_TRUE(client->Send(msg));
    auto reply = client->Receive(std::chrono::seconds(5));
    ASSERT_TRUE(reply.has_value()) << size;
    EXPECT_EQ(*reply, msg) << size;
  }
  // Even a well-formed check is just echoed, not decided.
  CheckRequest r;
  r.request_id = 1;
  r.user_id = "u";
  r.endpoint = "/e";
  r.limit = 1;
  r.window_ms = 1000;
  std::vector<std::byte> check = EncodeRequests({r});
  ASSERT_TRUE(client->Send(check));
  auto reply = client->Receive(std::chrono::seconds(5));
  ASSERT_TRUE(reply.has_value());
  EXPECT_EQ(*reply, check);
  EXPECT_EQ(d.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, EchoTest,
                         ::testing::Values(Transport::kUdp, Transport::kUnixDgram,
                                           Transport::kSeqpacket),
                         [](const auto& info) { return TransportName(info.param); });

}  // namespace
}  // namespace tally::testing

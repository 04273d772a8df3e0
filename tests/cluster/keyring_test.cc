// Peer authentication with real processes (docs/RELIABILITY.md, "Peer
// authentication"):
//   * a 3-node cluster with a keyring (made by `tally keyring generate`)
//     forms, decides, and says so in `tally status`;
//   * a node with another key, or with the right key but another cluster
//     name, cannot join, and its packets are counted as rejected;
//   * rotation on a running cluster (install, promote, remove; each step a
//     file edit and SIGHUP on every member) with checks served throughout, no
//     member lost and no packet refused; a malformed file on reload keeps
//     the old keys;
//   * a forged unsealed `replicate` (UDP and TCP) is dropped and counted,
//     never decoded;
//   * without a keyring, tallyd keeps working in plain mode, also on a
//     non-loopback address (warned in the log), and status says so; a bad
//     keyring stops the start and fails --check-config.
#include "daemon/io/keyring.h"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <atomic>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "daemon/io/sockets.h"
#include "tests/cluster/cluster_harness.h"
#include "wire/peer_codec.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

std::string CliPath() { return std::string(TALLY_BIN_DIR) + "/tally"; }

// Writes a keyring file of `keys` (primary first), mode 0600, replacing it.
void WriteKeyring(const std::string& path, const std::vector<io::PeerKey>& keys) {
  std::string text = "# test keyring\n";
  for (const io::PeerKey& k : keys) text += io::EncodeKey(k) + "\n";
  std::string tmp = path + ".tmp";
  std::ofstream(tmp, std::ios::trunc) << text;
  chmod(tmp.c_str(), 0600);
  rename(tmp.c_str(), path.c_str());  // as an editor that saves atomically
}

std::vector<std::string> Ids(const std::vector<io::PeerKey>& keys) {
  std::vector<std::string> ids;
  for (const io::PeerKey& k : keys) ids.push_back(io::FormatKeyId(io::ComputeKeyId(k)));
  return ids;
}

uint64_t Rejected(const wire::StatusReport& s) {
  uint64_t total = 0;
  for (const auto& [name, value] : s.counters) {
    if (name.rfind("peer_rejected_", 0) == 0) total += value;
  }
  return total;
}

CheckRequest Key(const std::string& user, uint64_t limit) {
  CheckRequest r;
  r.user_id = user;
  r.endpoint = "/api";
  r.limit = limit;
  r.window_ms = 60'000;
  return r;
}

TEST(ClusterKeyringTest, SealedClusterFormsDecidesAndReports) {
  TempDir dir;
  const std::string keyring = dir.File("keyring");
  ProcessResult gen = RunProcess(CliPath(), {"keyring", "generate", "--out", keyring});
  ASSERT_EQ(gen.exit_code, 0) << gen.err;
  struct stat st {};
  ASSERT_EQ(stat(keyring.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  // Never overwritten.
  EXPECT_EQ(RunProcess(CliPath(), {"keyring", "generate", "--out", keyring}).exit_code, 2);
  ProcessResult list = RunProcess(CliPath(), {"keyring", "list", keyring});
  ASSERT_EQ(list.exit_code, 0) << list.err;
  const std::string id = list.out.substr(0, 8);
  EXPECT_EQ(list.out, id + "  primary\n");

  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(3, {"--keyring", keyring, "--cluster-name", "test-a"}, &error))
      << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;

  // A key decided across the cluster: 5 admitted, then denied, via any node.
  CheckRequest key = Key("sealed-user", 5);
  Tally t;
  for (int i = 0; i < 8; ++i) {
    key.request_id = 1000 + static_cast<uint64_t>(i);
    t.Add(CheckThrough(cluster.node(static_cast<size_t>(i) % 3), key), 0);
  }
  EXPECT_EQ(t.errors, 0u) << (t.error_texts.empty() ? "" : t.error_texts[0]);
  EXPECT_EQ(t.allowed, 5u);
  EXPECT_EQ(t.denied, 3u);

  for (size_t i = 0; i < 3; ++i) {
    std::optional<wire::StatusReport> s = StatusOf(cluster.node(i));
    ASSERT_TRUE(s);
    EXPECT_EQ(s->peer_auth, "sealed");
    EXPECT_EQ(s->cluster_name, "test-a");
    EXPECT_EQ(s->key_ids, std::vector<std::string>{id});
    EXPECT_GT(CounterIn(*s, "peer_opened"), 0u);
    EXPECT_GT(CounterIn(*s, "peer_sealed"), 0u);
    EXPECT_EQ(Rejected(*s), 0u) << cluster.node(i).id;
  }
  const std::string udp =
      cluster.node(0).process.udp_host() + ":" + std::to_string(cluster.node(0).process.udp_port());
  ProcessResult table = RunProcess(CliPath(), {"status", "--udp", udp});
  EXPECT_NE(table.out.find("peers: sealed, cluster 'test-a', keys " + id + " (primary)"),
            std::string::npos)
      << table.out;
}

// Starts n1, n2 with `keyring` and an intruder n3 with `intruder_args`
// joining n1; returns when n1 has refused at least 5 of its packets under
// `reason`. The intruder must then be unknown to n1 and n2 and see nobody.
void ExpectIntruderKeptOut(const std::string& keyring,
                           const std::vector<std::string>& intruder_args,
                           const std::string& reason) {
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(2, {"--keyring", keyring}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;
  TestNode* intruder = cluster.StartNode("n3", {cluster.node(0).gossip()}, intruder_args, &error);
  ASSERT_NE(intruder, nullptr) << error;
  // The intruder keeps trying (join retries, probes, push-pulls): wait for
  // n1 to have refused a good number of its packets.
  ASSERT_TRUE(PollUntil(seconds(10), [&] {
    std::optional<wire::StatusReport> s = StatusOf(cluster.node(0));
    return s && CounterIn(*s, "peer_rejected_" + reason) >= 5;
  }));
  for (size_t i = 0; i < 2; ++i) {
    std::optional<wire::StatusReport> s = StatusOf(cluster.node(i));
    ASSERT_TRUE(s);
    EXPECT_EQ(StateIn(*s, "n3"), "") << cluster.node(i).id << " knows the intruder";
    EXPECT_EQ(s->members.size(), 2u);
    // Refused packets are never decoded.
    EXPECT_EQ(CounterIn(*s, "malformed_peer"), 0u);
  }
  std::optional<wire::StatusReport> in = StatusOf(*intruder);
  ASSERT_TRUE(in);
  EXPECT_NE(StateIn(*in, "n1"), "alive");
  EXPECT_NE(StateIn(*in, "n2"), "alive");
  // The members still serve.
  CheckRequest key = Key("after-intruder", 3);
  key.request_id = 77;
  EXPECT_TRUE(CheckThrough(cluster.node(1), key).allowed);
}

TEST(ClusterKeyringTest, NodeWithAnotherKeyCannotJoin) {
  TempDir dir;
  const std::string ours = dir.File("ours"), theirs = dir.File("theirs");
  WriteKeyring(ours, {io::GenerateKey()});
  WriteKeyring(theirs, {io::GenerateKey()});
  ExpectIntruderKeptOut(ours, {"--keyring", theirs}, "unknown_key");
}

TEST(ClusterKeyringTest, NodeOfAnotherClusterNameCannotJoinWithTheSameKey) {
  TempDir dir;
  const std::string ours = dir.File("ours");
  WriteKeyring(ours, {io::GenerateKey()});
  ExpectIntruderKeptOut(ours, {"--keyring", ours, "--cluster-name", "other"}, "wrong_cluster");
}

TEST(ClusterKeyringTest, RotationOnARunningClusterLosesNothing) {
  TempDir dir;
  const io::PeerKey old_key = io::GenerateKey(), new_key = io::GenerateKey();
  // Each member has its own copy of the file, as on separate hosts.
  ClusterHarness cluster;
  std::string error;
  for (int i = 1; i <= 3; ++i) {
    const std::string file = dir.File("n" + std::to_string(i) + ".keyring");
    WriteKeyring(file, {old_key});
    std::vector<std::string> seeds;
    if (i > 1) seeds.push_back(cluster.node(0).gossip());
    ASSERT_NE(cluster.StartNode("n" + std::to_string(i), seeds, {"--keyring", file}, &error),
              nullptr)
        << error;
  }
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;
  std::vector<TestNode*> all = cluster.Running();

  // Clients through every node for the whole rotation; the limit is never
  // reached, so every answer must be "allowed".
  std::atomic<bool> stop{false};
  std::vector<Tally> tallies(3);
  std::vector<std::thread> clients;
  for (size_t t = 0; t < 3; ++t) {
    clients.emplace_back([&, t] {
      std::string err;
      std::unique_ptr<Client> client = Client::Connect(cluster.node(t).udp(), {}, &err);
      CheckRequest key = Key("rotation-" + std::to_string(t), 1'000'000);
      for (uint64_t i = 0; !stop.load(); ++i) {
        key.request_id = (uint64_t{t} + 1) << 40 | i;
        auto start = SteadyClock::now();
        tallies[t].Add(client ? client->Check(key) : Unreachable(err), MsSince(start));
        std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the load's pace
      }
    });
  }

  // Installs `keys` on every member (file + SIGHUP), waits until all report
  // them, then until each has opened more peer traffic under them.
  auto step = [&](const std::string& name, const std::vector<io::PeerKey>& keys) {
    SCOPED_TRACE(name);
    std::vector<uint64_t> opened_before;
    for (int i = 1; i <= 3; ++i) {
      WriteKeyring(dir.File("n" + std::to_string(i) + ".keyring"), keys);
      ASSERT_TRUE(cluster.node(static_cast<size_t>(i - 1)).process.Signal(SIGHUP));
    }
    std::string why;
    ASSERT_TRUE(PollUntil(seconds(5), [&] {
      for (TestNode* n : all) {
        std::optional<wire::StatusReport> s = StatusOf(*n);
        if (!s || s->key_ids != Ids(keys)) {
          why = n->id + " does not show the new keys yet";
          return false;
        }
      }
      return true;
    })) << why;
    for (TestNode* n : all) opened_before.push_back(CounterIn(*StatusOf(*n), "peer_opened"));
    ASSERT_TRUE(PollUntil(seconds(5), [&] {
      for (size_t i = 0; i < all.size(); ++i) {
        std::optional<wire::StatusReport> s = StatusOf(*all[i]);
        if (!s || CounterIn(*s, "peer_opened") < opened_before[i] + 50) return false;
      }
      return true;
    }));
    EXPECT_TRUE(cluster.Converged(all, all, {}, &why)) << why;
  };

  // A malformed file on reload: the old keys stay, status says why.
  {
    const std::string file = dir.File("n1.keyring");
    std::ofstream(file, std::ios::trunc) << "this is not a key\n";
    ASSERT_TRUE(cluster.node(0).process.Signal(SIGHUP));
    ASSERT_TRUE(PollUntil(seconds(5), [&] {
      std::optional<wire::StatusReport> s = StatusOf(cluster.node(0));
      return s && !s->keyring_error.empty();
    }));
    std::optional<wire::StatusReport> s = StatusOf(cluster.node(0));
    ASSERT_TRUE(s);
    EXPECT_NE(s->keyring_error.find("line 1"), std::string::npos) << s->keyring_error;
    EXPECT_EQ(s->key_ids, Ids({old_key}));
    EXPECT_EQ(CounterIn(*s, "keyring_reload_failures"), 1u);
  }
  step("1: install the new key", {old_key, new_key});
  step("2: make it primary", {new_key, old_key});
  step("3: remove the old key", {new_key});
  stop = true;
  for (auto& c : clients) c.join();

  Tally total;
  for (const Tally& t : tallies) total.Merge(t);
  EXPECT_EQ(total.errors, 0u) << (total.error_texts.empty() ? "" : total.error_texts[0]);
  EXPECT_EQ(total.denied, 0u);
  EXPECT_GT(total.allowed, 100u);
  std::string why;
  EXPECT_TRUE(cluster.Converged(all, all, {}, &why)) << why;
  for (TestNode* n : all) {
    std::optional<wire::StatusReport> s = StatusOf(*n);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->key_ids, Ids({new_key}));
    EXPECT_TRUE(s->keyring_error.empty()) << s->keyring_error;
    EXPECT_EQ(CounterIn(*s, "keyring_reloads"), 3u);
    // No packet was refused at any step: each step reached every member
    // before the next began.
    EXPECT_EQ(Rejected(*s), 0u) << n->id;
  }
}

// Sends `bytes` as one UDP datagram to `address` (HOST:PORT).
bool SendDatagram(const std::string& address, const std::vector<std::byte>& bytes) {
  sockaddr_storage addr;
  socklen_t len = 0;
  if (!io::ParseSockaddr(address, &addr, &len)) return false;
  int fd = socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  bool ok = sendto(fd, bytes.data(), bytes.size(), 0, reinterpret_cast<sockaddr*>(&addr), len) ==
            static_cast<ssize_t>(bytes.size());
  close(fd);
  return ok;
}

// Sends `bytes` as one stream frame (4-byte big-endian length) over TCP.
bool SendFrame(const std::string& address, const std::vector<std::byte>& bytes) {
  sockaddr_storage addr;
  socklen_t len = 0;
  if (!io::ParseSockaddr(address, &addr, &len)) return false;
  int fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  std::vector<std::byte> frame(4);
  const uint32_t n = htonl(static_cast<uint32_t>(bytes.size()));
  std::memcpy(frame.data(), &n, 4);
  frame.insert(frame.end(), bytes.begin(), bytes.end());
  bool ok =
      connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
      send(fd, frame.data(), frame.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(frame.size());
  close(fd);
  return ok;
}

TEST(ClusterKeyringTest, ForgedUnsealedReplicateIsDroppedAndCounted) {
  TempDir dir;
  const std::string keyring = dir.File("keyring");
  WriteKeyring(keyring, {io::GenerateKey()});
  ClusterHarness cluster;
  std::string error;
  ASSERT_TRUE(cluster.StartNodes(2, {"--keyring", keyring}, &error)) << error;
  ASSERT_TRUE(cluster.WaitFormed(seconds(10), &error)) << error;
  TestNode& target = cluster.node(0);
  TestNode& claimed = cluster.node(1);
  std::optional<wire::StatusReport> before = StatusOf(target);
  ASSERT_TRUE(before);

  // A replicate that claims to come from n2 and would deny a key everywhere
  // (a huge count in a made-up slot): issue 9's forgery.
  wire::NodeMessageValue msg;
  msg.kind = wire::NodeMessageValue::Kind::kReplicate;
  msg.replicate.seq = 1;
  msg.replicate.slots.push_back({"forger", 1});
  wire::CounterValue counter;
  counter.key_high = 1;
  counter.key_low = 2;
  counter.bucket_ms = 6000;
  counter.span = 10;
  counter.newest_bucket = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count() /
                          6000;
  counter.rows.push_back({0, std::vector<uint32_t>(11, 1'000'000)});
  msg.replicate.counters.push_back(counter);
  std::vector<std::byte> bytes;
  wire::EncodeNodeMessage(
      wire::PeerHeader{claimed.id, claimed.gossip(), claimed.started_generation, 0}, msg, &bytes);
  ASSERT_TRUE(SendDatagram(target.gossip(), bytes));
  ASSERT_TRUE(SendFrame(target.gossip(), bytes));
  // And junk that looks sealed.
  std::vector<std::byte> junk(200, std::byte{7});
  junk[0] = std::byte{0xA1};
  ASSERT_TRUE(SendDatagram(target.gossip(), junk));

  ASSERT_TRUE(PollUntil(seconds(5), [&] {
    std::optional<wire::StatusReport> s = StatusOf(target);
    return s && CounterIn(*s, "peer_rejected_unsealed") >= 2 &&
           CounterIn(*s, "peer_rejected_wrong_cluster") >= 1;
  }));
  std::optional<wire::StatusReport> after = StatusOf(target);
  ASSERT_TRUE(after);
  // Never decoded: neither merged nor counted as a malformed peer message.
  EXPECT_EQ(CounterIn(*after, "malformed_peer"), CounterIn(*before, "malformed_peer"));
  EXPECT_EQ(CounterIn(*after, "peer_rejected_unsealed"), 2u);
  EXPECT_EQ(CounterIn(*after, "peer_rejected_wrong_cluster"), 1u);
  std::string why;
  EXPECT_TRUE(cluster.Converged(cluster.Running(), cluster.Running(), {}, &why)) << why;
}

TEST(ClusterKeyringTest, WithoutAKeyringPublicGossipNeedsInsecurePeersThenRunsPlainAndSaysSo) {
  TempDir dir;
  std::vector<std::string> base = {"--udp",       "127.0.0.1:0", "--unix",    "none",
                                   "--unix-seq",  "none",        "--gossip",  "0.0.0.0:0",
                                   "--advertise", "127.0.0.1:1", "--node-id", "pub"};
  // Refused (a flags error, also for --check-config) until the operator says so.
  ProcessResult refused = RunTallyd(base);
  EXPECT_EQ(refused.exit_code, 2);
  EXPECT_NE(refused.err.find("--insecure-peers"), std::string::npos) << refused.err;
  std::vector<std::string> check = base;
  check.push_back("--check-config");
  EXPECT_EQ(RunTallyd(check).exit_code, 2);
  base.push_back("--insecure-peers");
  check = base;
  check.push_back("--check-config");
  EXPECT_EQ(RunTallyd(check).exit_code, 0);
  // Loopback gossip needs neither.
  EXPECT_EQ(RunTallyd({"--udp", "127.0.0.1:0", "--unix", "none", "--unix-seq", "none", "--gossip",
                       "127.0.0.1:0", "--node-id", "lo", "--check-config"})
                .exit_code,
            0);

  // A bad keyring fails --check-config and the start.
  const std::string bad = dir.File("bad");
  std::ofstream(bad) << "# nothing here\n";
  std::vector<std::string> with_bad = base;
  with_bad.insert(with_bad.end(), {"--keyring", bad});
  ProcessResult start_bad = RunTallyd(with_bad);
  EXPECT_EQ(start_bad.exit_code, 1);
  EXPECT_NE(start_bad.err.find("no keys"), std::string::npos) << start_bad.err;
  with_bad.push_back("--check-config");
  EXPECT_EQ(RunTallyd(with_bad).exit_code, 2);

  DaemonProcess plain;
  std::string error;
  ASSERT_TRUE(plain.Start(base, &error)) << error;
  wire::StatusReport s;
  std::string why;
  DaemonAddress e;
  e.kind = DaemonAddress::Kind::kUdp;
  e.host = plain.udp_host();
  e.port = plain.udp_port();
  ASSERT_TRUE(QueryStatus(e, QueryOptions(), &s, &why)) << why;
  EXPECT_EQ(s.peer_auth, "unsealed");
  EXPECT_TRUE(s.key_ids.empty());
  ProcessResult table =
      RunProcess(CliPath(), {"status", "--udp", e.host + ":" + std::to_string(e.port)});
  EXPECT_NE(table.out.find("peers: NOT AUTHENTICATED"), std::string::npos) << table.out;
  EXPECT_EQ(plain.Stop(), 0);
}

}  // namespace
}  // namespace tally::testing

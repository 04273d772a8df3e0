// `tally limit` against real tallyd processes: a 3-member cluster on
// loopback (set on one member, checks through another obey it, the third
// lists it, rm restores the callers' limit), a write from a non-loopback UDP
// source refused, and overrides (removals too) kept across a restart of a
// single node (even a crash) and of every member of a cluster, even a crash
// of every member a few seconds after the write, and across a change between
// single-node and cluster mode on one state dir (docs/DESIGN.md, "Snapshots").
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <signal.h>

#include <boost/json.hpp>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "daemon/io/snapshot_file.h"
#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

std::string CliPath() { return std::string(TALLY_BIN_DIR) + "/tally"; }

std::string UdpOf(const TestNode& n) {
  return n.process.udp_host() + ":" + std::to_string(n.process.udp_port());
}

boost::json::object Json(const ProcessResult& result) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(result.out, ec);
  EXPECT_FALSE(ec) << "not JSON: " << result.out << result.err;
  return value.is_object() ? value.as_object() : boost::json::object();
}

const std::vector<std::string> kKey = {"--user",           "carol", "--endpoint", "/pay",
                                       "--window-seconds", "60"};

ProcessResult Limit(const std::string& verb, const std::string& udp,
                    std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"limit", verb, "--udp", udp, "--json"};
  args.insert(args.end(), more.begin(), more.end());
  return RunProcess(CliPath(), args);
}

// The limit `tally limit get` reports through `udp`: -1 when none is in
// force, -2 when it did not answer.
int64_t LimitSeen(const std::string& udp) {
  ProcessResult r = Limit("get", udp, kKey);
  if (r.exit_code == 1) return -1;
  if (r.exit_code != 0) return -2;
  boost::json::object o = Json(r);
  if (!o["override"].is_object()) return -1;
  return o["override"].as_object()["limit"].to_number<int64_t>();
}

TEST(LimitOverrideTest, SetOnOneMemberIsObeyedThroughAnotherAndListedOnTheThird) {
  ClusterHarness c;
  std::string error;
  ASSERT_TRUE(c.StartNodes(3, {}, &error)) << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  TestNode& n1 = c.node(0);
  TestNode& n2 = c.node(1);
  TestNode& n3 = c.node(2);
  const CheckRequest base{0, "carol", "/pay", 100, 60'000, 1};

  // Before: the caller's limit.
  CheckResult before = CheckThrough(n2, base);
  ASSERT_EQ(before.status, Status::kOk) << before.error;
  EXPECT_EQ(before.limit, 100u);

  ProcessResult set =
      Limit("set", UdpOf(n1),
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "3"});
  ASSERT_EQ(set.exit_code, 0) << set.out << set.err;
  boost::json::object o = Json(set);
  EXPECT_EQ(o["outcome"].as_string(), "applied");
  EXPECT_EQ(o["node_id"].as_string(), "n1");

  // It reaches n2 over one stream hop; poll rather than sleep.
  ASSERT_TRUE(PollUntil(std::chrono::seconds(5), [&] { return LimitSeen(UdpOf(n2)) == 3; }))
      << "n2 never held the override";
  // One hit was spent before: two more are allowed, then denied, whoever owns the key.
  for (int i = 0; i < 2; ++i) {
    CheckResult r = CheckThrough(n2, base);
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.limit, 3u);
    EXPECT_TRUE(r.allowed) << i;
  }
  CheckResult denied = CheckThrough(n2, base);
  EXPECT_EQ(denied.limit, 3u);
  EXPECT_FALSE(denied.allowed);

  // The third member lists it.
  ASSERT_TRUE(PollUntil(std::chrono::seconds(5), [&] {
    ProcessResult list = Limit("list", UdpOf(n3));
    if (list.exit_code != 0) return false;
    boost::json::object l = Json(list);
    boost::json::array& all = l["overrides"].as_array();
    return all.size() == 1 && all[0].as_object()["user"].as_string() == "carol" &&
           all[0].as_object()["limit"].to_number<int64_t>() == 3;
  })) << "n3 never listed the override";
  std::optional<wire::StatusReport> s3 = StatusOf(n3);
  ASSERT_TRUE(s3.has_value());
  EXPECT_EQ(CounterIn(*s3, "overrides_live"), 1u);
  EXPECT_GE(CounterIn(*s3, "overrides_applied"), 1u);
  std::optional<wire::StatusReport> s1 = StatusOf(n1);
  ASSERT_TRUE(s1.has_value());
  EXPECT_EQ(CounterIn(*s1, "overrides_written"), 1u);
  EXPECT_GE(CounterIn(*s1, "overrides_sent"), 2u);
  ProcessResult status = RunProcess(CliPath(), {"status", "--udp", UdpOf(n3)});
  EXPECT_NE(status.out.find("limit overrides: 1 in force"), std::string::npos) << status.out;

  // rm on the third member restores the caller's limit through n2.
  ProcessResult rm = Limit("rm", UdpOf(n3), kKey);
  ASSERT_EQ(rm.exit_code, 0) << rm.out << rm.err;
  ASSERT_TRUE(PollUntil(std::chrono::seconds(5), [&] { return LimitSeen(UdpOf(n2)) == -1; }))
      << "n2 never heard of the removal";
  CheckResult after = CheckThrough(n2, base);
  ASSERT_EQ(after.status, Status::kOk) << after.error;
  EXPECT_EQ(after.limit, 100u);
  EXPECT_TRUE(after.allowed);
  ProcessResult list = Limit("list", UdpOf(n1));
  ASSERT_EQ(list.exit_code, 0) << list.err;
  EXPECT_TRUE(Json(list)["overrides"].as_array().empty()) << list.out;
}

// This host's first non-loopback IPv4 address, or "" if it has none.
std::string NonLoopbackAddress() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return "";
  std::string found;
  for (ifaddrs* a = list; a != nullptr && found.empty(); a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char text[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof(text)) != nullptr) found = text;
  }
  freeifaddrs(list);
  return found;
}

TEST(LimitOverrideTest, WritesFromANonLoopbackSourceAreRefused) {
  const std::string address = NonLoopbackAddress();
  if (address.empty()) GTEST_SKIP() << "no non-loopback IPv4 address on this host";
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", address + ":0", "--unix", dir.File("d.sock"), "--unix-seq",
                       dir.File("d.seq"), "--node-id", "solo", "--threads", "1"},
                      &error))
      << error;
  const std::string udp = address + ":" + std::to_string(d.udp_port());
  // Sent to our own non-loopback address, the datagram's source is that address.
  ProcessResult set =
      Limit("set", udp,
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "3"});
  EXPECT_EQ(set.exit_code, 2) << set.out;
  boost::json::object o = Json(set);
  EXPECT_EQ(o["status"].as_string(), "permission_denied");
  EXPECT_NE(std::string(o["error"].as_string()).find("loopback"), std::string::npos);
  // Reads are answered from there; the write did not happen.
  EXPECT_EQ(Limit("get", udp, kKey).exit_code, 1);
  // The Unix socket takes it.
  ProcessResult via_unix =
      RunProcess(CliPath(), {"limit", "set", "--unix", dir.File("d.seq"), "--user", "carol",
                             "--endpoint", "/pay", "--window-seconds", "60", "--limit", "3"});
  EXPECT_EQ(via_unix.exit_code, 0) << via_unix.err;
  EXPECT_EQ(LimitSeen(udp), 3);
}

// ---- restarts (docs/DESIGN.md, "Snapshots" and "Runtime limit overrides") ----

const std::vector<std::string> kGoneKey = {"--user",           "dave", "--endpoint", "/pay",
                                           "--window-seconds", "60"};

// The limit `tally limit get` reports for a descriptor selector: as LimitSeen.
int64_t DescriptorLimitSeen(const std::string& udp) {
  ProcessResult r = Limit("get", udp, {"--domain", "edge", "--descriptor", "tier=gold"});
  if (r.exit_code == 1) return -1;
  if (r.exit_code != 0) return -2;
  boost::json::object o = Json(r);
  if (!o["override"].is_object()) return -1;
  return o["override"].as_object()["limit"].to_number<int64_t>();
}

// Writes what a restart must keep through `udp`: carol's key at 2, an
// hourly descriptor override at 7, and dave's key set and then removed (a
// tombstone the restart must not resurrect).
void WriteOverridesToKeep(const std::string& udp) {
  ProcessResult r =
      Limit("set", udp,
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Limit("set", udp,
            {"--domain", "edge", "--descriptor", "tier=gold", "--limit", "7", "--unit", "hour"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Limit("set", udp,
            {"--user", "dave", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  r = Limit("rm", udp, kGoneKey);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
}

// What a restarted node must show through `udp`, and its decisions obey.
void ExpectOverridesKept(const std::string& udp,
                         const std::function<CheckResult(CheckRequest)>& check) {
  EXPECT_EQ(LimitSeen(udp), 2);
  EXPECT_EQ(DescriptorLimitSeen(udp), 7);
  EXPECT_EQ(Limit("get", udp, kGoneKey).exit_code, 1) << "a removed override came back";
  // Decisions: the caller asks for 100, the override allows 2 per minute.
  const CheckRequest key{0, "carol", "/pay", 100, 60'000, 1};
  for (int i = 0; i < 2; ++i) {
    CheckResult r = check(key);
    ASSERT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.limit, 2u);
    EXPECT_TRUE(r.allowed) << i;
  }
  CheckResult denied = check(key);
  EXPECT_EQ(denied.limit, 2u);
  EXPECT_FALSE(denied.allowed);
  // dave's removal holds: the caller's limit.
  CheckResult dave = check(CheckRequest{0, "dave", "/pay", 100, 60'000, 1});
  EXPECT_EQ(dave.limit, 100u);
  EXPECT_TRUE(dave.allowed);
}

DaemonAddress SoloAddress(const DaemonProcess& d) {
  return *DaemonAddress::ParseUdp("127.0.0.1:" + std::to_string(d.udp_port()));
}

TEST(LimitOverrideRestartTest, ASingleNodeKeepsItsOverridesAcrossACrashAndAStop) {
  TempDir dir;
  const std::string state = dir.File("state");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("solo.sock"), "--node-id", "solo",
                       "--threads", "1", "--stats-interval-s", "0", "--state-dir", state},
                      &error))
      << error;
  auto udp = [&] { return "127.0.0.1:" + std::to_string(d.udp_port()); };
  WriteOverridesToKeep(udp());
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot"));

  // A crash: every acknowledged write was saved before it was answered.
  EXPECT_EQ(d.Kill9(), 128 + SIGKILL);
  ASSERT_TRUE(d.Restart(&error)) << error;
  ExpectOverridesKept(udp(), [&](CheckRequest r) { return CheckHere(SoloAddress(d), r); });
  std::optional<wire::StatusReport> s = QueryStatusHere(SoloAddress(d));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "overrides_restored"), 3u);  // two sets and a removal
  EXPECT_EQ(CounterIn(*s, "overrides_live"), 2u);

  // A write after the restart orders after the restored ones (the clock
  // was restored too), and a graceful stop keeps it.
  ProcessResult r =
      Limit("set", udp(),
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["outcome"].as_string(), "applied");
  EXPECT_EQ(d.Stop(std::chrono::seconds(10)), 0);
  ASSERT_TRUE(d.Restart(&error)) << error;
  EXPECT_EQ(LimitSeen(udp()), 5);
  EXPECT_EQ(DescriptorLimitSeen(udp()), 7);

  // A corrupt file is reported, kept aside, and the node starts with none.
  EXPECT_EQ(d.Stop(std::chrono::seconds(10)), 0);
  {
    std::fstream f(state + "/overrides.snapshot", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-3, std::ios::end);
    f.put('\x5a');
  }
  ASSERT_TRUE(d.Restart(&error)) << error;
  EXPECT_EQ(LimitSeen(udp()), -1);
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot.rejected"));
}

TEST(LimitOverrideRestartTest, AClusterWhoseEveryMemberRestartsKeepsItsOverrides) {
  TempDir dir;
  ClusterHarness c;
  std::string error;
  for (int i = 1; i <= 3; ++i) {
    std::vector<std::string> seeds;
    if (c.size() > 0) seeds.push_back(c.node(0).gossip());
    ASSERT_NE(c.StartNode(
                  "n" + std::to_string(i), seeds,
                  {"--state-dir", dir.File("n" + std::to_string(i)), "--snapshot-interval-s", "0"},
                  &error),
              nullptr)
        << error;
  }
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  WriteOverridesToKeep(UdpOf(c.node(0)));
  std::vector<TestNode*> all = c.Running();
  for (TestNode* n : all) {
    ASSERT_TRUE(PollUntil(std::chrono::seconds(5),
                          [&] {
                            return LimitSeen(UdpOf(*n)) == 2 &&
                                   DescriptorLimitSeen(UdpOf(*n)) == 7 &&
                                   Limit("get", UdpOf(*n), kGoneKey).exit_code == 1;
                          }))
        << n->id << " never held the overrides";
  }

  // Every member stopped (each writes its snapshot), then every one restarted.
  for (TestNode* n : all) EXPECT_EQ(n->process.Stop(std::chrono::seconds(10)), 0) << n->id;
  for (TestNode* n : all) ASSERT_TRUE(c.Restart(*n, &error)) << n->id << ": " << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  for (TestNode* n : all) {
    // Each from its own snapshot, not from a peer.
    std::optional<wire::StatusReport> s = StatusOf(*n);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(CounterIn(*s, "snapshot_restored_overrides"), 3u) << n->id;
    EXPECT_EQ(CounterIn(*s, "snapshot_restore_dropped_overrides"), 0u) << n->id;
    EXPECT_EQ(CounterIn(*s, "overrides_live"), 2u) << n->id;
  }
  // Shown and obeyed wherever a check enters (each routes to the key's owner).
  ExpectOverridesKept(UdpOf(c.node(1)), [&](CheckRequest r) { return CheckThrough(c.node(1), r); });
  for (TestNode* n : all) {
    EXPECT_EQ(LimitSeen(UdpOf(*n)), 2) << n->id;
    EXPECT_EQ(Limit("get", UdpOf(*n), kGoneKey).exit_code, 1) << n->id;
  }

  // A new write after the restart wins everywhere over the restored one.
  ProcessResult r =
      Limit("set", UdpOf(c.node(2)),
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "4"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(Json(r)["outcome"].as_string(), "applied");
  for (TestNode* n : all) {
    EXPECT_TRUE(PollUntil(std::chrono::seconds(5), [&] { return LimitSeen(UdpOf(*n)) == 4; }))
        << n->id;
  }
}

// Whether the snapshot at `path` (of member `id`) holds what
// WriteOverridesToKeep leaves: carol's key at 2, the descriptor at 7, dave's
// removal, and nothing else.
bool SnapshotHoldsKeptOverrides(const std::string& path, const std::string& id) {
  persist::SnapshotExpectations expect;
  expect.cluster_name = "tally";
  expect.node_id = id;
  expect.generation = 1;  // no process runs as generation 1: none of its rows is refused
  expect.now_wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::system_clock::now().time_since_epoch())
                           .count();
  io::SnapshotReadResult read = io::ReadSnapshotFile(path, expect);
  if (read.outcome != io::SnapshotReadResult::Outcome::kLoaded) return false;
  int kept = 0;
  for (const crdt::OverrideEntry& e : read.snapshot.overrides) {
    const bool key = e.selector.kind == crdt::Selector::Kind::kExplicit;
    if (key && e.selector.user == "carol" && !e.value.removed && e.value.limit == 2) ++kept;
    if (!key && e.selector.domain == "edge" && !e.value.removed && e.value.limit == 7) ++kept;
    if (key && e.selector.user == "dave" && e.value.removed) ++kept;
  }
  return kept == 3 && read.snapshot.overrides.size() == 3;
}

TEST(LimitOverrideRestartTest, OverridesAreOnDiskWithinSecondsSoACrashOfEveryMemberKeepsThem) {
  TempDir dir;
  ClusterHarness c;
  std::string error;
  for (int i = 1; i <= 3; ++i) {
    std::vector<std::string> seeds;
    if (c.size() > 0) seeds.push_back(c.node(0).gossip());
    // Periodic snapshots an hour apart: none comes during the test.
    ASSERT_NE(c.StartNode("n" + std::to_string(i), seeds,
                          {"--state-dir", dir.File("n" + std::to_string(i)),
                           "--snapshot-interval-s", "3600"},
                          &error),
              nullptr)
        << error;
  }
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  const auto wrote = std::chrono::steady_clock::now();
  WriteOverridesToKeep(UdpOf(c.node(0)));
  std::vector<TestNode*> all = c.Running();
  // Every member writes a snapshot soon after the changes reach it, with no
  // stop and no periodic write (docs/DESIGN.md: within about a second).
  for (TestNode* n : all) {
    const std::string path = dir.File(n->id) + "/counts.snapshot";
    ASSERT_TRUE(PollUntil(std::chrono::seconds(10),
                          [&] { return SnapshotHoldsKeptOverrides(path, n->id); }))
        << n->id << " never wrote the overrides to " << path;
  }
  // Coalesced: four changes on n1 cost at most one write per second after
  // the first (every write of n1 so far was for them: nothing else changed).
  std::optional<wire::StatusReport> s1 = StatusOf(c.node(0));
  ASSERT_TRUE(s1.has_value());
  const auto elapsed_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                              std::chrono::steady_clock::now() - wrote)
                              .count();
  EXPECT_GE(CounterIn(*s1, "snapshot_writes"), 1u);
  EXPECT_LE(CounterIn(*s1, "snapshot_writes"), 1u + static_cast<uint64_t>(elapsed_ms / 1000))
      << "in " << elapsed_ms << " ms";
  EXPECT_EQ(CounterIn(*s1, "snapshot_write_errors"), 0u);
  // The counters are published just after the file's rename, so a status read
  // in between (the poll above saw the file) still shows the previous write.
  const uint64_t n1_bytes = std::filesystem::file_size(dir.File("n1") + "/counts.snapshot");
  uint64_t reported_bytes = 0;
  EXPECT_TRUE(PollUntil(std::chrono::seconds(5),
                        [&] {
                          std::optional<wire::StatusReport> s = StatusOf(c.node(0));
                          reported_bytes = s ? CounterIn(*s, "snapshot_last_bytes") : 0;
                          return reported_bytes == n1_bytes;
                        }))
      << "status says " << reported_bytes << " bytes, the file holds " << n1_bytes;

  // Every member crashes, then every one restarts from its own snapshot.
  for (TestNode* n : all) EXPECT_EQ(n->process.Kill9(), 128 + SIGKILL) << n->id;
  for (TestNode* n : all) ASSERT_TRUE(c.Restart(*n, &error)) << n->id << ": " << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  for (TestNode* n : all) {
    std::optional<wire::StatusReport> s = StatusOf(*n);
    ASSERT_TRUE(s.has_value());
    EXPECT_EQ(CounterIn(*s, "snapshot_restored_overrides"), 3u) << n->id;
    EXPECT_EQ(CounterIn(*s, "overrides_live"), 2u) << n->id;
  }
  ExpectOverridesKept(UdpOf(c.node(1)), [&](CheckRequest r) { return CheckThrough(c.node(1), r); });
}

// ---- moving between single-node and cluster mode with one state dir ----

TEST(LimitOverrideModeChangeTest, ASingleNodesOverridesCarryIntoClusterModeAndSpread) {
  TempDir dir;
  const std::string state = dir.File("state");
  {
    DaemonProcess solo;
    std::string error;
    ASSERT_TRUE(
        solo.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("solo.sock"), "--node-id", "solo",
                    "--threads", "1", "--stats-interval-s", "0", "--state-dir", state},
                   &error))
        << error;
    WriteOverridesToKeep("127.0.0.1:" + std::to_string(solo.udp_port()));
    EXPECT_EQ(solo.Stop(std::chrono::seconds(10)), 0);
  }
  ASSERT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot"));

  // The same state dir as cluster member n1 (another node id: the import
  // takes it anyway), with n2 on a fresh one.
  ClusterHarness c;
  std::string error;
  TestNode* n1 =
      c.StartNode("n1", {}, {"--state-dir", state, "--snapshot-interval-s", "0"}, &error);
  ASSERT_NE(n1, nullptr) << error;
  ASSERT_NE(c.StartNode("n2", {n1->gossip()},
                        {"--state-dir", dir.File("n2"), "--snapshot-interval-s", "0"}, &error),
            nullptr)
      << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  std::optional<wire::StatusReport> s = StatusOf(*n1);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "snapshot_imported_overrides"), 3u);  // two sets and a removal
  // The single node's count snapshot is another node id's counts: refused.
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  // Written into the member's snapshot before the file was set aside.
  EXPECT_FALSE(std::filesystem::exists(state + "/overrides.snapshot"));
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot.imported"));
  EXPECT_TRUE(SnapshotHoldsKeptOverrides(state + "/counts.snapshot", "n1"));
  // Anti-entropy brings them to n2, which had none.
  ASSERT_TRUE(PollUntil(std::chrono::seconds(10), [&] {
    return LimitSeen(UdpOf(c.node(1))) == 2 && DescriptorLimitSeen(UdpOf(c.node(1))) == 7 &&
           Limit("get", UdpOf(c.node(1)), kGoneKey).exit_code == 1;
  })) << "n2 never held the imported overrides";
  ExpectOverridesKept(UdpOf(c.node(1)), [&](CheckRequest r) { return CheckThrough(c.node(1), r); });

  // A crash of n1 and a restart: from its own snapshot, nothing imported
  // again, not even a copy of the old file put back (older than the
  // snapshot, which holds overrides: a leftover, left alone).
  EXPECT_EQ(n1->process.Kill9(), 128 + SIGKILL);
  std::filesystem::copy_file(state + "/overrides.snapshot.imported", state + "/overrides.snapshot");
  ASSERT_TRUE(c.Restart(*n1, &error)) << error;
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot"));
  s = StatusOf(*n1);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "snapshot_restored_overrides"), 3u);
  EXPECT_EQ(CounterIn(*s, "snapshot_imported_overrides"), 0u);
  EXPECT_EQ(LimitSeen(UdpOf(*n1)), 2);
}

TEST(LimitOverrideModeChangeTest, AMembersOverridesCarryIntoSingleModeAndBack) {
  TempDir dir;
  const std::string state = dir.File("state");
  std::string error;
  {
    ClusterHarness c;  // a cluster of one
    TestNode* n1 =
        c.StartNode("n1", {}, {"--state-dir", state, "--snapshot-interval-s", "0"}, &error);
    ASSERT_NE(n1, nullptr) << error;
    WriteOverridesToKeep(UdpOf(*n1));
    EXPECT_EQ(n1->process.Stop(std::chrono::seconds(10)), 0);
  }
  ASSERT_TRUE(std::filesystem::is_regular_file(state + "/counts.snapshot"));

  // A single node (host-name-like id) on that dir: the cluster snapshot's overrides.
  DaemonProcess solo;
  ASSERT_TRUE(
      solo.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("solo.sock"), "--node-id", "solo",
                  "--threads", "1", "--stats-interval-s", "0", "--state-dir", state},
                 &error))
      << error;
  auto udp = [&] { return "127.0.0.1:" + std::to_string(solo.udp_port()); };
  ExpectOverridesKept(udp(), [&](CheckRequest r) { return CheckHere(SoloAddress(solo), r); });
  std::optional<wire::StatusReport> s = QueryStatusHere(SoloAddress(solo));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "overrides_restored"), 3u);
  // Saved in its own file at once: a crash keeps them, read from there.
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot"));
  // The member's counts are another node id's: refused and set aside (the
  // overrides were imported from them first).
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/counts.snapshot.rejected"));
  EXPECT_EQ(solo.Kill9(), 128 + SIGKILL);
  ASSERT_TRUE(solo.Restart(&error)) << error;
  EXPECT_EQ(LimitSeen(udp()), 2);
  // A change made as a single node...
  ProcessResult r =
      Limit("set", udp(),
            {"--user", "carol", "--endpoint", "/pay", "--window-seconds", "60", "--limit", "5"});
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(solo.Stop(std::chrono::seconds(10)), 0);

  // ...and every override comes back when the dir goes back to cluster mode.
  // The counts snapshot there is now the single node's ("solo": refused by
  // n1, as n1's was by solo), so the overrides come from the single node's
  // file, which holds the imported ones and the change (carol at 5).
  ClusterHarness c;
  TestNode* n1 =
      c.StartNode("n1", {}, {"--state-dir", state, "--snapshot-interval-s", "0"}, &error);
  ASSERT_NE(n1, nullptr) << error;
  s = StatusOf(*n1);
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  EXPECT_EQ(CounterIn(*s, "snapshot_restored_overrides"), 0u);
  EXPECT_EQ(CounterIn(*s, "snapshot_imported_overrides"), 3u);
  EXPECT_EQ(LimitSeen(UdpOf(*n1)), 5);
  EXPECT_EQ(DescriptorLimitSeen(UdpOf(*n1)), 7);
  EXPECT_EQ(Limit("get", UdpOf(*n1), kGoneKey).exit_code, 1);
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/overrides.snapshot.imported"));
}

}  // namespace
}  // namespace tally::testing

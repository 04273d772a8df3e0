// Snapshots on real processes (docs/DESIGN.md, "Snapshots"): a full restart
// of a 3-node cluster keeps a daily window's count (it continues, it is not
// reset, and nothing is counted twice although every replica restores the
// same rows); a corrupt, truncated or other node's snapshot is reported in
// the status counters and the node starts clean.
#include <gtest/gtest.h>
#include <signal.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

constexpr uint64_t kDayMs = 24ull * 3600 * 1000;

CheckRequest DailyKey(uint64_t limit) {
  CheckRequest r;
  r.user_id = "daily-user";
  r.endpoint = "/api/quota";
  r.limit = limit;
  r.window_ms = kDayMs;
  return r;
}

std::vector<std::string> StateArgs(const std::string& dir) {
  // No periodic snapshot: the test is about the one written at shutdown.
  return {"--state-dir", dir, "--snapshot-interval-s", "0"};
}

// One check with a fresh request id; fails the test unless it is answered.
CheckResult CheckOnce(const TestNode& node, CheckRequest r, uint64_t request_id) {
  r.request_id = request_id;
  CheckResult result = CheckThrough(node, r);
  EXPECT_EQ(result.status, Status::kOk) << result.error;
  return result;
}

TEST(SnapshotClusterTest, FullRestartKeepsADailyCountAndCountsNothingTwice) {
  TempDir dir;
  ClusterHarness c;
  std::string error;
  std::vector<std::string> dirs;
  for (int i = 1; i <= 3; ++i) {
    dirs.push_back(dir.File("n" + std::to_string(i)));
    std::vector<std::string> seeds;
    if (c.size() > 0) seeds.push_back(c.node(0).gossip());
    ASSERT_NE(c.StartNode("n" + std::to_string(i), seeds, StateArgs(dirs.back()), &error), nullptr)
        << error;
  }
  ASSERT_TRUE(c.WaitFormed(milliseconds(15000), &error)) << error;
  for (TestNode* n : c.Running()) {
    std::optional<wire::StatusReport> s = StatusOf(*n);
    ASSERT_TRUE(s);
    EXPECT_EQ(CounterIn(*s, "snapshot_restore_missing"), 1u) << n->id;
  }

  constexpr uint64_t kLimit = 1000;
  const CheckRequest key = DailyKey(kLimit);
  // Hits through every node (each routes to the key's owner).
  uint64_t next_id = 1;
  for (size_t i = 0; i < 3; ++i) {
    Tally t = Hammer(c.node(i), key, 10, next_id);
    next_id += 10;
    ASSERT_EQ(t.allowed, 10u) << (t.error_texts.empty() ? "" : t.error_texts[0]);
  }
  std::vector<TestNode*> all = c.Running();
  std::string why;
  ASSERT_TRUE(PollUntil(milliseconds(5000), [&] { return ReplicasAgree(all, key, &why); })) << why;
  const CheckResult before = CheckOnce(c.node(0), key, next_id++);
  ASSERT_TRUE(before.allowed);
  ASSERT_EQ(before.remaining, kLimit - 31);

  // Every node SIGTERMed (graceful: leave, final snapshot, exit 0).
  for (TestNode* n : all) {
    EXPECT_EQ(n->process.Stop(std::chrono::seconds(10)), 0) << n->id;
    EXPECT_TRUE(std::filesystem::is_regular_file(dirs[n->id[1] - '1'] + "/counts.snapshot"))
        << n->id;
  }
  // The same state dirs and addresses; n1 first (it has no seed), the
  // others join it again.
  for (TestNode* n : all) ASSERT_TRUE(c.Restart(*n, &error)) << n->id << ": " << error;
  ASSERT_TRUE(c.WaitFormed(milliseconds(15000), &error)) << error;
  for (TestNode* n : all) {
    std::optional<wire::StatusReport> s = StatusOf(*n);
    ASSERT_TRUE(s);
    EXPECT_EQ(CounterIn(*s, "snapshot_restore_loaded"), 1u) << n->id;
    EXPECT_EQ(CounterIn(*s, "snapshot_restored_keys"), 1u) << n->id;
    EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 0u) << n->id;
  }

  // The count continues: 31 before the restart, each replica restored the
  // same rows (a join, not a sum), so the next hit is the 32nd wherever it
  // enters and whichever node decides it.
  for (size_t i = 0; i < 3; ++i) {
    const CheckResult after = CheckOnce(c.node(i), key, next_id++);
    EXPECT_TRUE(after.allowed);
    EXPECT_EQ(after.remaining, kLimit - 32 - i) << "through " << c.node(i).id;
  }
  ASSERT_TRUE(PollUntil(milliseconds(5000), [&] { return ReplicasAgree(all, key, &why); })) << why;
}

DaemonAddress SoloAt(const DaemonProcess& d) {
  return *DaemonAddress::ParseUdp("127.0.0.1:" + std::to_string(d.udp_port()));
}

// Starts a single node (no --gossip) named `node_id` on `state_dir`.
bool StartSolo(DaemonProcess* d, const std::string& node_id, const std::string& state_dir,
               int snapshot_interval_s, std::string* error) {
  return d->Start(
      {"--udp", "127.0.0.1:0", "--node-id", node_id, "--threads", "1", "--stats-interval-s", "0",
       "--state-dir", state_dir, "--snapshot-interval-s", std::to_string(snapshot_interval_s)},
      error);
}

// Rewrites `file` (a stopped node's snapshot) through `mutate`.
template <typename Mutate>
void RewriteFile(const std::string& file, Mutate&& mutate) {
  std::vector<char> bytes;
  {
    std::ifstream in(file, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  EXPECT_GT(bytes.size(), 64u) << file;
  mutate(&bytes);
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A single node (no --gossip: the sharded limiter, no Node) snapshots its
// counts too: a graceful stop writes them, a crash loses at most the last
// interval, and each restart continues the daily count.
TEST(SnapshotSingleNodeTest, AStopAndACrashKeepADailyCount) {
  TempDir dir;
  const std::string state = dir.File("state");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(StartSolo(&d, "solo", state, 1, &error)) << error;
  constexpr uint64_t kLimit = 1000;
  CheckRequest key = DailyKey(kLimit);
  uint64_t next_id = 1;
  auto hit = [&] {
    key.request_id = next_id++;
    const CheckResult r = CheckHere(SoloAt(d), key);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_TRUE(r.allowed);
    return r.remaining;
  };
  auto status = [&] {
    std::optional<wire::StatusReport> s = QueryStatusHere(SoloAt(d));
    EXPECT_TRUE(s.has_value());
    return s.value_or(wire::StatusReport{});
  };
  EXPECT_EQ(CounterIn(status(), "snapshot_restore_missing"), 1u);
  for (int i = 0; i < 5; ++i) hit();

  EXPECT_EQ(d.Stop(std::chrono::seconds(10)), 0);
  EXPECT_TRUE(std::filesystem::is_regular_file(state + "/counts.snapshot"));
  ASSERT_TRUE(d.Restart(&error)) << error;
  wire::StatusReport s = status();
  EXPECT_EQ(CounterIn(s, "snapshot_restore_loaded"), 1u);
  EXPECT_EQ(CounterIn(s, "snapshot_restored_keys"), 1u);
  EXPECT_EQ(hit(), kLimit - 6);

  // Three more, then a periodic write that holds them, then kill -9.
  for (int i = 0; i < 3; ++i) hit();
  const uint64_t writes_before = CounterIn(status(), "snapshot_writes");
  ASSERT_TRUE(PollUntil(milliseconds(10000), [&] {
    return CounterIn(status(), "snapshot_writes") >= writes_before + 2;
  })) << "no periodic snapshot";
  EXPECT_EQ(d.Kill9(), 128 + SIGKILL);
  ASSERT_TRUE(d.Restart(&error)) << error;
  EXPECT_EQ(CounterIn(status(), "snapshot_restore_loaded"), 1u);
  EXPECT_EQ(hit(), kLimit - 10);
}

// Counts belong to a node id, not to a mode: a cluster member and a single
// node under the same id on one state dir continue each other's counts.
TEST(SnapshotSingleNodeTest, UnderTheSameNodeIdCountsCarryAcrossModes) {
  TempDir dir;
  const std::string state = dir.File("state");
  std::string error;
  constexpr uint64_t kLimit = 1000;
  CheckRequest key = DailyKey(kLimit);
  ClusterHarness c;  // a cluster of one
  TestNode* n1 =
      c.StartNode("n1", {}, {"--state-dir", state, "--snapshot-interval-s", "0"}, &error);
  ASSERT_NE(n1, nullptr) << error;
  for (uint64_t id = 1; id <= 4; ++id) CheckOnce(*n1, key, id);
  EXPECT_EQ(n1->process.Stop(std::chrono::seconds(10)), 0);

  DaemonProcess solo;
  ASSERT_TRUE(StartSolo(&solo, "n1", state, 0, &error)) << error;
  key.request_id = 5;
  CheckResult r = CheckHere(SoloAt(solo), key);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, kLimit - 5);
  EXPECT_EQ(solo.Stop(std::chrono::seconds(10)), 0);

  ASSERT_TRUE(c.Restart(*n1, &error)) << error;
  r = CheckOnce(*n1, key, 6);
  EXPECT_TRUE(r.allowed);
  EXPECT_EQ(r.remaining, kLimit - 6);
}

// A refused snapshot on a single node: reported, set aside, a clean start.
TEST(SnapshotSingleNodeTest, ACorruptSnapshotIsReportedAndTheNodeStartsClean) {
  TempDir dir;
  const std::string state = dir.File("state");
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(StartSolo(&d, "solo", state, 0, &error)) << error;
  CheckRequest key = DailyKey(10);
  key.hits = 7;
  key.request_id = 1;
  ASSERT_TRUE(CheckHere(SoloAt(d), key).allowed);
  EXPECT_EQ(d.Stop(std::chrono::seconds(10)), 0);
  const std::string file = state + "/counts.snapshot";
  RewriteFile(file, [](std::vector<char>* bytes) {
    if (bytes->size() > 64) (*bytes)[bytes->size() - 5] ^= 0x10;
  });
  ASSERT_TRUE(d.Restart(&error)) << error;
  std::optional<wire::StatusReport> s = QueryStatusHere(SoloAt(d));
  ASSERT_TRUE(s.has_value());
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  EXPECT_EQ(CounterIn(*s, "snapshot_restored_keys"), 0u);
  EXPECT_TRUE(std::filesystem::is_regular_file(file + ".rejected"));
  key.request_id = 2;
  const CheckResult r = CheckHere(SoloAt(d), key);
  EXPECT_TRUE(r.allowed);  // 7 of 10 again: the 7 before were not restored
  EXPECT_EQ(r.remaining, 3u);
}

// Stops `node`, rewrites its snapshot with `mutate`, restarts it and returns
// its status (the test fails if it does not come back).
template <typename Mutate>
std::optional<wire::StatusReport> RestartWith(ClusterHarness& c, TestNode& node,
                                              const std::string& file, Mutate&& mutate) {
  EXPECT_EQ(node.process.Stop(std::chrono::seconds(10)), 0);
  RewriteFile(file, std::forward<Mutate>(mutate));
  std::string error;
  EXPECT_TRUE(c.Restart(node, &error)) << error;
  return StatusOf(node);
}

TEST(SnapshotClusterTest, BadSnapshotsAreReportedAndTheNodeStartsClean) {
  TempDir dir;
  ClusterHarness c;
  std::string error;
  const std::string state = dir.File("state");
  const std::string file = state + "/counts.snapshot";
  TestNode* node = c.StartNode("solo", {}, StateArgs(state), &error);
  ASSERT_NE(node, nullptr) << error;
  const CheckRequest key = DailyKey(100);
  uint64_t next_id = 1;

  struct Case {
    const char* name;
    const char* counter;
    std::function<void(std::vector<char>*)> mutate;
  };
  const Case cases[] = {
      {"flipped payload byte", "snapshot_restore_rejected",
       [](std::vector<char>* b) { (*b)[b->size() - 5] ^= 0x40; }},
      {"truncated", "snapshot_restore_rejected",
       [](std::vector<char>* b) { b->resize(b->size() / 2); }},
      {"not a snapshot", "snapshot_restore_rejected",
       [](std::vector<char>* b) { std::fill(b->begin(), b->end(), 'x'); }},
  };
  for (const Case& k : cases) {
    SCOPED_TRACE(k.name);
    // Three hits, then a restart with the damaged file: a clean start.
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(CheckOnce(*node, key, next_id++).allowed);
    std::optional<wire::StatusReport> s = RestartWith(c, *node, file, k.mutate);
    ASSERT_TRUE(s);
    EXPECT_EQ(CounterIn(*s, k.counter), 1u);
    EXPECT_EQ(CounterIn(*s, "snapshot_restore_loaded"), 0u);
    EXPECT_EQ(CounterIn(*s, "snapshot_restored_keys"), 0u);
    EXPECT_TRUE(std::filesystem::is_regular_file(file + ".rejected"));
    EXPECT_EQ(CheckOnce(*node, key, next_id++).remaining, 99u);
  }

  // An intact snapshot restores (the control for the cases above) ...
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(CheckOnce(*node, key, next_id++).allowed);
  std::optional<wire::StatusReport> s = RestartWith(c, *node, file, [](std::vector<char>*) {});
  ASSERT_TRUE(s);
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_loaded"), 1u);
  EXPECT_EQ(CheckOnce(*node, key, next_id++).remaining, 100u - 5);

  // ... but not into another node: same file, another --node-id.
  EXPECT_EQ(node->process.Stop(std::chrono::seconds(10)), 0);
  TestNode* other = c.StartNode("other", {}, StateArgs(state), &error);
  ASSERT_NE(other, nullptr) << error;
  s = StatusOf(*other);
  ASSERT_TRUE(s);
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  EXPECT_EQ(CheckOnce(*other, key, next_id++).remaining, 99u);
  EXPECT_EQ(other->process.Stop(std::chrono::seconds(10)), 0);

  // Nor into another cluster: "other"'s own snapshot, under another --cluster-name.
  std::vector<std::string> args = StateArgs(state);
  args.insert(args.end(), {"--cluster-name", "elsewhere"});
  TestNode* foreign = c.StartNode("other", {}, args, &error);
  ASSERT_NE(foreign, nullptr) << error;
  s = StatusOf(*foreign);
  ASSERT_TRUE(s);
  EXPECT_EQ(CounterIn(*s, "snapshot_restore_rejected"), 1u);
  EXPECT_EQ(CheckOnce(*foreign, key, next_id++).remaining, 99u);
}

}  // namespace
}  // namespace tally::testing

// Network partitions between real tallyd processes, one test per partition
// policy. Topology: two network namespaces joined by a veth pair,
//
//   side A (10.201.0.1): n1, n2  <-- veth -->  side B (10.201.0.2): n3
//
// The cut is an nftables input drop rule inside each namespace for the other
// side's address; healing deletes the rules. Each side's admissions for a
// fresh key during the cut are checked against the policy (limit L, last
// known membership 3):
//   availability  A admits L,        B admits L      (each side the full limit)
//   proportional  A admits L * 2/3,  B admits L * 1/3
//   closed        A admits L,        B admits 0      (B has no majority)
// After healing, every member sees every member alive again, and every
// replica of each key converges (equal state hashes; the same `remaining`
// through every node) within the documented time: the reconnect interval
// (when the sides find each other) plus two anti-entropy intervals, plus slack.
//
// Needs root (network namespaces, nftables); skipped with a message
// otherwise. Namespaces and processes are removed in TearDown even when the
// test fails; namespaces of crashed earlier runs (their pid gone) are reaped.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

constexpr const char* kHostA = "10.201.0.1";
constexpr const char* kHostB = "10.201.0.2";
constexpr const char* kNamespacePrefix = "tally-part-";

// Runs `ip`/`nft` commands; returns the exit code (output on failure in `*out`).
int RunCommand(const std::vector<std::string>& argv, std::string* out = nullptr) {
  std::vector<std::string> args(argv.begin() + 1, argv.end());
  ProcessResult r = RunProcess(argv[0], args, seconds(10));
  if (out != nullptr) *out = r.out + r.err;
  return r.exit_code;
}

// Namespaces named tally-part-<pid>-x whose pid is gone: left by a crash.
void ReapStaleNamespaces(const std::string& ip) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
    std::string name = entry.path().filename().string();
    if (name.rfind(kNamespacePrefix, 0) != 0) continue;
    std::string rest = name.substr(std::string(kNamespacePrefix).size());
    pid_t pid = static_cast<pid_t>(std::atoi(rest.c_str()));
    if (pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH) {
      RunCommand({ip, "netns", "del", name});
    }
  }
}

class PartitionTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "partition tests need root (network namespaces, nft)";
    ip_ = IpBinary();
    nft_ = "/usr/sbin/nft";
    if (ip_.empty()) GTEST_SKIP() << "iproute2 'ip' not found";
    if (access(nft_.c_str(), X_OK) != 0) GTEST_SKIP() << "nft not found";
    ReapStaleNamespaces(ip_);
    const std::string base = kNamespacePrefix + std::to_string(getpid()) + "-";
    ns_a_ = base + "a";
    ns_b_ = base + "b";
    std::string out;
    if (RunCommand({ip_, "netns", "add", ns_a_}, &out) != 0) {
      GTEST_SKIP() << "ip netns add failed (no namespace support here?): " << out;
    }
    created_.push_back(ns_a_);
    ASSERT_EQ(RunCommand({ip_, "netns", "add", ns_b_}, &out), 0) << out;
    created_.push_back(ns_b_);
    const std::vector<std::vector<std::string>> setup = {
        {ip_, "link", "add", "va", "netns", ns_a_, "type", "veth", "peer", "name", "vb", "netns",
         ns_b_},
        {ip_, "-n", ns_a_, "addr", "add", std::string(kHostA) + "/24", "dev", "va"},
        {ip_, "-n", ns_b_, "addr", "add", std::string(kHostB) + "/24", "dev", "vb"},
        {ip_, "-n", ns_a_, "link", "set", "lo", "up"},
        {ip_, "-n", ns_b_, "link", "set", "lo", "up"},
        {ip_, "-n", ns_a_, "link", "set", "va", "up"},
        {ip_, "-n", ns_b_, "link", "set", "vb", "up"},
    };
    for (const auto& cmd : setup) {
      if (RunCommand(cmd, &out) != 0) GTEST_SKIP() << "namespace setup failed: " << out;
    }
    // Both ends must have carrier before nodes talk across.
    ASSERT_TRUE(PollUntil(seconds(5), [&] {
      std::string a, b;
      RunCommand({ip_, "-n", ns_a_, "-o", "link", "show", "va"}, &a);
      RunCommand({ip_, "-n", ns_b_, "-o", "link", "show", "vb"}, &b);
      return a.find("LOWER_UP") != std::string::npos && b.find("LOWER_UP") != std::string::npos;
    })) << "veth link did not come up";
  }

  void TearDown() override {
    cluster_.reset();  // stops every process by pid
    for (const std::string& ns : created_) RunCommand({ip_, "netns", "del", ns});
  }

  // Drops, on each side, everything that comes from the other side.
  void Cut() {
    for (const auto& [ns, other] : {std::pair{ns_a_, kHostB}, std::pair{ns_b_, kHostA}}) {
      std::string out;
      ASSERT_EQ(
          RunCommand({ip_, "netns", "exec", ns, nft_, "add", "table", "inet", "tally_cut"}, &out),
          0)
          << out;
      ASSERT_EQ(RunCommand({ip_, "netns", "exec", ns, nft_, "add", "chain", "inet", "tally_cut",
                            "in", "{ type filter hook input priority 0; }"},
                           &out),
                0)
          << out;
      ASSERT_EQ(RunCommand({ip_, "netns", "exec", ns, nft_, "add", "rule", "inet", "tally_cut",
                            "in", "ip", "saddr", other, "drop"},
                           &out),
                0)
          << out;
    }
  }

  void Heal() {
    for (const std::string& ns : {ns_a_, ns_b_}) {
      std::string out;
      ASSERT_EQ(RunCommand({ip_, "netns", "exec", ns, nft_, "delete", "table", "inet", "tally_cut"},
                           &out),
                0)
          << out;
    }
  }

  // Admissions of `count` checks of `key` through each node of `side`,
  // concurrently (one client thread per node).
  Tally HammerSide(const std::vector<TestNode*>& side, const CheckRequest& key, int count,
                   uint64_t id_base) {
    std::vector<Tally> tallies(side.size());
    std::vector<std::thread> threads;
    for (size_t i = 0; i < side.size(); ++i) {
      threads.emplace_back(
          [&, i] { tallies[i] = Hammer(*side[i], key, count, id_base + (uint64_t{i} << 32)); });
    }
    for (auto& t : threads) t.join();
    Tally total;
    for (const Tally& t : tallies) total.Merge(t);
    return total;
  }

  void RunPolicy(const std::string& policy, uint64_t expect_a, uint64_t expect_b);

  std::string ip_, nft_, ns_a_, ns_b_;
  std::vector<std::string> created_;
  std::unique_ptr<ClusterHarness> cluster_;
};

void PartitionTest::RunPolicy(const std::string& policy, uint64_t expect_a, uint64_t expect_b) {
  constexpr uint64_t kLimit = 30;
  cluster_ = std::make_unique<ClusterHarness>();
  ClusterHarness& c = *cluster_;
  const std::vector<std::string> extra = {"--partition-policy", policy};
  std::string error;
  TestNode* n1 = c.StartNode("n1", {}, extra, &error, kHostA, ns_a_);
  ASSERT_NE(n1, nullptr) << error;
  TestNode* n2 = c.StartNode("n2", {n1->gossip()}, extra, &error, kHostA, ns_a_);
  ASSERT_NE(n2, nullptr) << error;
  TestNode* n3 = c.StartNode("n3", {n1->gossip()}, extra, &error, kHostB, ns_b_);
  ASSERT_NE(n3, nullptr) << error;
  ASSERT_TRUE(c.WaitFormed(seconds(10), &error)) << error;
  const std::vector<TestNode*> side_a = {n1, n2}, side_b = {n3}, all = {n1, n2, n3};

  Cut();
  const auto cut_at = SteadyClock::now();
  std::string why;
  const milliseconds detect_bound = c.timings().DetectionBound(3);
  ASSERT_TRUE(PollUntil(detect_bound,
                        [&] {
                          return c.Converged(side_a, side_a, {"n3"}, &why) &&
                                 c.Converged(side_b, side_b, {"n1", "n2"}, &why);
                        }))
      << why << " (bound " << detect_bound.count() << " ms)";
  const double split_ms = MsSince(cut_at);

  // A fresh key hammered on both sides at once (2L checks per node).
  CheckRequest key;
  key.user_id = "split-" + policy;
  key.endpoint = "/both-sides";
  key.limit = kLimit;
  key.window_ms = 60'000;
  Tally a, b;
  std::thread ta([&] { a = HammerSide(side_a, key, 2 * kLimit, uint64_t{1} << 48); });
  std::thread tb([&] { b = HammerSide(side_b, key, 2 * kLimit, uint64_t{2} << 48); });
  ta.join();
  tb.join();
  EXPECT_EQ(a.errors + b.errors, 0u) << (a.error_texts.empty() ? "" : a.error_texts[0])
                                     << (b.error_texts.empty() ? "" : b.error_texts[0]);
  EXPECT_EQ(a.allowed, expect_a) << "side A (2 of 3 members), policy " << policy;
  EXPECT_EQ(b.allowed, expect_b) << "side B (1 of 3 members), policy " << policy;
  // Keys used on one side only, to check that healing merges them.
  CheckRequest only_a = key, only_b = key;
  only_a.user_id += "-a";
  only_b.user_id += "-b";
  Tally oa = HammerSide({n1}, only_a, 5, uint64_t{3} << 48);
  Tally ob = HammerSide(side_b, only_b, 3, uint64_t{4} << 48);
  EXPECT_EQ(oa.errors + ob.errors, 0u);

  Heal();
  const auto healed_at = SteadyClock::now();
  ASSERT_TRUE(c.WaitAllAlive(seconds(10), &error)) << error;
  const double rejoined_ms = MsSince(healed_at);
  const milliseconds converge_bound(c.timings().reconnect_interval_ms +
                                    2 * c.timings().anti_entropy_interval_ms + 3000);
  for (const CheckRequest* k : {&key, &only_a, &only_b}) {
    EXPECT_TRUE(PollUntil(
        converge_bound - std::chrono::duration_cast<milliseconds>(SteadyClock::now() - healed_at),
        [&] {
          std::optional<wire::OwnerReport> o = OwnerOf(*n1, *k);
          if (!o) return false;
          std::vector<TestNode*> replicas;
          for (const std::string& id : o->preference_list) {
            for (TestNode* n : all) {
              if (n->id == id) replicas.push_back(n);
            }
          }
          return ReplicasAgree(replicas, *k, &why);
        }))
        << k->user_id << ": " << why << " (bound " << converge_bound.count() << " ms)";
  }
  const double converged_ms = MsSince(healed_at);
  // The same answer through every node; the merged counts are the sum of
  // both sides' (distinct replica slots), so the split key is used up.
  const std::pair<const CheckRequest*, uint64_t> expected[] = {
      {&key, kLimit - std::min(kLimit, a.allowed + b.allowed)},
      {&only_a, kLimit - oa.allowed},
      {&only_b, kLimit - ob.allowed}};
  for (const auto& [k, remaining] : expected) {
    for (TestNode* n : all) {
      CheckRequest probe = *k;
      probe.hits = 0;
      CheckResult r = CheckThrough(*n, probe);
      EXPECT_EQ(r.status, Status::kOk) << r.error;
      EXPECT_EQ(r.remaining, remaining) << k->user_id << " through " << n->id;
    }
  }
  std::printf(
      "[figures] partition (%s): sides split after %.0f ms (bound %lld); admitted A=%llu "
      "B=%llu of limit %llu; alive again %.0f ms after healing, replicas converged "
      "after %.0f ms (bound %lld)\n",
      policy.c_str(), split_ms, static_cast<long long>(detect_bound.count()),
      static_cast<unsigned long long>(a.allowed), static_cast<unsigned long long>(b.allowed),
      static_cast<unsigned long long>(kLimit), rejoined_ms, converged_ms,
      static_cast<long long>(converge_bound.count()));
}

TEST_F(PartitionTest, AvailabilityEachSideAdmitsTheFullLimit) { RunPolicy("availability", 30, 30); }

TEST_F(PartitionTest, ProportionalEachSideAdmitsItsShare) { RunPolicy("proportional", 20, 10); }

TEST_F(PartitionTest, ClosedMinorityAdmitsNothing) { RunPolicy("closed", 30, 0); }

}  // namespace
}  // namespace tally::testing

// Helpers for the cluster tests: real tallyd processes in cluster mode on
// loopback (or inside network namespaces), polled through the status and
// owner queries with deadlines. Nothing waits by sleeping for a condition:
// PollUntil re-asks every few milliseconds until the condition holds or the
// deadline passes.
//
//   ClusterHarness c;
//   ASSERT_TRUE(c.StartNodes(3, {}, &error)) << error;
//   ASSERT_TRUE(c.WaitAllAlive(std::chrono::seconds(10), &error)) << error;
//   CheckResult r = c.CheckThrough(c.node(0), request);
//
// Every process is stopped by pid (DaemonProcess) when the harness goes away.
//
// Thread safety: a harness is driven from the test's main thread; the
// free functions (Check, Status, Owner, InNetns) may run on any thread.
#ifndef TALLY_TESTS_CLUSTER_CLUSTER_HARNESS_H_
#define TALLY_TESTS_CLUSTER_CLUSTER_HARNESS_H_

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "client/admin.h"
#include "membership/timing.h"
#include "tally/client.h"
#include "tally/types.h"
#include "tests/support/daemon_process.h"
#include "wire/codec.h"

namespace tally::testing {

using std::chrono::milliseconds;
using SteadyClock = std::chrono::steady_clock;

// The timings the cluster tests run with (fast, so failures are seen in
// well under a second) and the bounds they imply.
struct ClusterTimings {
  int64_t probe_interval_ms = 200;
  int64_t probe_timeout_ms = 100;
  int suspicion_mult = 4;
  int suspicion_max_timeout_mult = 3;
  int64_t gossip_interval_ms = 50;
  int64_t reconnect_interval_ms = 500;
  int64_t push_pull_interval_ms = 2000;
  int64_t anti_entropy_interval_ms = 500;
  int64_t replication_interval_ms = 10;
  int64_t forward_timeout_ms = 100;
  // The daemon's default: a forward to a peer measured slow waits up to this
  // (at or below forward_timeout_ms: a fixed forward_timeout_ms).
  int64_t forward_timeout_max_ms = 120;
  int64_t handoff_timeout_ms = 2000;

  // The longest an entry waits for a forward's answer.
  int64_t LongestForwardWaitMs() const {
    return std::max(forward_timeout_ms, forward_timeout_max_ms);
  }

  std::vector<std::string> Args() const {
    const std::pair<const char*, int64_t> flags[] = {
        {"--probe-interval-ms", probe_interval_ms},
        {"--probe-timeout-ms", probe_timeout_ms},
        {"--suspicion-mult", suspicion_mult},
        {"--suspicion-max-timeout-mult", suspicion_max_timeout_mult},
        {"--gossip-interval-ms", gossip_interval_ms},
        {"--reconnect-interval-ms", reconnect_interval_ms},
        {"--push-pull-interval-ms", push_pull_interval_ms},
        {"--anti-entropy-interval-ms", anti_entropy_interval_ms},
        {"--replication-interval-ms", replication_interval_ms},
        {"--forward-timeout-ms", forward_timeout_ms},
        {"--forward-timeout-max-ms", forward_timeout_max_ms},
        {"--handoff-timeout-ms", handoff_timeout_ms},
    };
    std::vector<std::string> args;
    for (const auto& [flag, value] : flags) {
      args.push_back(flag);
      args.push_back(std::to_string(value));
    }
    return args;
  }

  // The documented detection bound (docs/DESIGN.md, membership/timing.h) for
  // a crash among `n` members (n counts the dead one): some live member
  // probes it within the round-robin worst case of (2n - 3) probe periods,
  // suspects it when that probe round ends (one more period), and the
  // suspicion expires after at most the unconfirmed maximum timeout; the
  // dead rumor then spreads with the next gossip rounds. Local health
  // (Lifeguard) can stretch probe periods; `slack` covers that and the
  // dissemination.
  milliseconds DetectionBound(size_t n, milliseconds slack = milliseconds(1500)) const {
    namespace timing = membership::timing;
    const milliseconds period(probe_interval_ms);
    const milliseconds min_timeout = timing::SuspicionMinTimeout(suspicion_mult, n, period);
    const milliseconds max_timeout =
        timing::SuspicionMaxTimeout(suspicion_max_timeout_mult, min_timeout);
    const auto first_probe_periods =
        static_cast<int64_t>(timing::WorstCaseFirstProbeRoundRobinPeriods(n) + 0.999);
    return period * (first_probe_periods + 1) + max_timeout + slack;
  }
};

// Polls `condition` every `every` until it returns true or `deadline`
// passes. Returns whether it held (it is evaluated once more at the deadline).
template <typename Condition>
bool PollUntilDeadline(SteadyClock::time_point deadline, Condition&& condition,
                       milliseconds every = milliseconds(25)) {
  for (;;) {
    if (condition()) return true;
    if (SteadyClock::now() >= deadline) return condition();
    std::this_thread::sleep_for(every);  // pacing between polls, not a wait for the condition
  }
}

// Polls `condition` every `every` until it returns true or `timeout`
// (scaled under a sanitizer: ScaledWait) passes.
template <typename Condition>
bool PollUntil(milliseconds timeout, Condition&& condition, milliseconds every = milliseconds(25)) {
  return PollUntilDeadline(SteadyClock::now() + tally::testing::ScaledWait(timeout),
                           std::forward<Condition>(condition), every);
}

// Polls until `bound` (scaled: ScaledWait) after `since`: a bound that counts
// from an event in the past, e.g. convergence from a heal. Scaling the time
// that is left instead would leave nothing under a sanitizer whenever the
// steps before the poll took the unscaled bound.
template <typename Condition>
bool PollUntilSince(SteadyClock::time_point since, milliseconds bound, Condition&& condition,
                    milliseconds every = milliseconds(25)) {
  return PollUntilDeadline(since + tally::testing::ScaledWait(bound),
                           std::forward<Condition>(condition), every);
}

inline double MsSince(SteadyClock::time_point start) {
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - start).count();
}

// Enters `netns` for the rest of the calling thread's life ("" = no-op).
inline void EnterNetns(const std::string& netns) {
  if (netns.empty()) return;
  std::string path = "/run/netns/" + netns;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "setns %s: %s\n", path.c_str(), strerror(errno));
    std::abort();  // a test talking to the wrong network would lie
  }
  close(fd);
}

// Runs `fn` in network namespace `netns` ("" = ours) on a fresh thread, so
// the caller's namespace is untouched; returns what `fn` returns.
template <typename Fn>
auto InNetns(const std::string& netns, Fn&& fn) -> decltype(fn()) {
  if (netns.empty()) return fn();
  using Result = decltype(fn());
  std::optional<std::conditional_t<std::is_void_v<Result>, int, Result>> result;
  std::thread t([&] {
    EnterNetns(netns);
    if constexpr (std::is_void_v<Result>) {
      fn();
      result = 0;
    } else {
      result = fn();
    }
  });
  t.join();
  if constexpr (!std::is_void_v<Result>) return std::move(*result);
}

inline std::string IpBinary() {
  for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// One tallyd cluster member.
struct TestNode {
  std::string id;
  std::string host = "127.0.0.1";  // where it binds UDP and gossip
  std::string netns;               // "" = the test's namespace
  DaemonProcess process;
  uint64_t started_generation = 0;  // from its own status after start

  DaemonAddress udp() const {
    DaemonAddress e;
    e.kind = DaemonAddress::Kind::kUdp;
    e.host = process.udp_host();
    e.port = process.udp_port();
    return e;
  }
  const std::string& gossip() const { return process.gossip_address(); }
};

inline ClientOptions QueryOptions() {
  ClientOptions o;
  o.timeout = milliseconds(200);
  o.attempts = 2;
  return o;
}

// Status of `node` (nullopt if it does not answer). Any thread in the
// node's namespace; use StatusOf from elsewhere.
inline std::optional<wire::StatusReport> QueryStatusHere(const DaemonAddress& e) {
  wire::StatusReport r;
  std::string error;
  if (!QueryStatus(e, QueryOptions(), &r, &error)) return std::nullopt;
  return r;
}

inline std::optional<wire::StatusReport> StatusOf(const TestNode& node) {
  DaemonAddress e = node.udp();
  return InNetns(node.netns, [&] { return QueryStatusHere(e); });
}

inline std::optional<wire::OwnerReport> OwnerOf(const TestNode& node, const CheckRequest& key) {
  DaemonAddress e = node.udp();
  return InNetns(node.netns, [&]() -> std::optional<wire::OwnerReport> {
    wire::OwnerQuery q{key.user_id, key.endpoint, key.window_ms};
    wire::OwnerReport r;
    std::string error;
    if (!QueryOwner(e, QueryOptions(), q, &r, &error)) return std::nullopt;
    return r;
  });
}

// The state `node` reports for member `id`, "" if unknown.
inline std::string StateIn(const wire::StatusReport& status, const std::string& id,
                           uint64_t* generation = nullptr) {
  for (const wire::MemberReport& m : status.members) {
    if (m.id == id) {
      if (generation != nullptr) *generation = m.generation;
      return m.state;
    }
  }
  return "";
}

inline uint64_t CounterIn(const wire::StatusReport& status, const std::string& name) {
  for (const auto& [n, v] : status.counters) {
    if (n == name) return v;
  }
  return 0;
}

// What a check reports when no client could be made (`error` says why).
inline CheckResult Unreachable(const std::string& error) {
  CheckResult r;
  r.status = Status::kUnavailable;
  r.error = error;
  return r;
}

// One check through `e` with a fresh client (any thread in e's namespace).
inline CheckResult CheckHere(const DaemonAddress& e, const CheckRequest& request,
                             milliseconds timeout = milliseconds(500)) {
  ClientOptions o;
  o.timeout = timeout;
  o.attempts = 3;
  std::string error;
  std::unique_ptr<Client> client = Client::Connect(e, o, &error);
  if (!client) return Unreachable(error);
  return client->Check(request);
}

inline CheckResult CheckThrough(const TestNode& node, const CheckRequest& request) {
  DaemonAddress e = node.udp();
  return InNetns(node.netns, [&] { return CheckHere(e, request); });
}

// Tallies of a stream of checks.
struct Tally {
  uint64_t allowed = 0, denied = 0, errors = 0;
  double max_latency_ms = 0;
  std::vector<std::string> error_texts;  // the first few
  void Add(const CheckResult& r, double latency_ms) {
    max_latency_ms = std::max(max_latency_ms, latency_ms);
    if (r.status != Status::kOk) {
      ++errors;
      if (error_texts.size() < 5)
        error_texts.push_back(std::string(StatusName(r.status)) + ": " + r.error);
    } else if (r.allowed) {
      ++allowed;
    } else {
      ++denied;
    }
  }
  void Merge(const Tally& o) {
    allowed += o.allowed;
    denied += o.denied;
    errors += o.errors;
    max_latency_ms = std::max(max_latency_ms, o.max_latency_ms);
    for (const auto& e : o.error_texts) {
      if (error_texts.size() < 5) error_texts.push_back(e);
    }
  }
};

// Sends `count` checks of `base` through `node` from one client, request ids
// `first_id`, `first_id + 1`, ... (so concurrent hammers must use disjoint
// ranges). Runs on its own thread when called via std::thread.
inline Tally Hammer(const TestNode& node, CheckRequest base, int count, uint64_t first_id,
                    ClientOptions options = {}) {
  DaemonAddress e = node.udp();
  return InNetns(node.netns, [&] {
    Tally t;
    std::string error;
    std::unique_ptr<Client> client = Client::Connect(e, options, &error);
    for (int i = 0; i < count; ++i) {
      base.request_id = first_id + static_cast<uint64_t>(i);
      auto start = SteadyClock::now();
      CheckResult r = client ? client->Check(base) : Unreachable(error);
      t.Add(r, MsSince(start));
    }
    return t;
  });
}

class ClusterHarness {
 public:
  explicit ClusterHarness(ClusterTimings timings = {}) : timings_(timings) {}
  ~ClusterHarness() { StopAll(); }
  ClusterHarness(const ClusterHarness&) = delete;
  ClusterHarness& operator=(const ClusterHarness&) = delete;

  const ClusterTimings& timings() const { return timings_; }
  size_t size() const { return nodes_.size(); }
  TestNode& node(size_t i) { return *nodes_[i]; }
  std::vector<std::unique_ptr<TestNode>>& nodes() { return nodes_; }

  // The arguments node `n` starts with (its gossip port: `gossip_port`).
  std::vector<std::string> ArgsFor(const TestNode& n, const std::string& gossip_port,
                                   const std::vector<std::string>& seeds,
                                   const std::vector<std::string>& extra) const {
    auto given = [&](const char* flag) {
      return std::find(extra.begin(), extra.end(), flag) != extra.end();
    };
    std::vector<std::string> args = {
        "--udp",     n.host + ":0", "--stats-interval-s", "0",
        "--node-id", n.id,          "--gossip",           n.host + ":" + gossip_port};
    for (const char* flag : {"--unix", "--unix-seq"}) {
      if (!given(flag)) args.insert(args.end(), {flag, "none"});
    }
    if (!given("--threads")) args.insert(args.end(), {"--threads", "1"});
    // Namespaced nodes gossip on non-loopback addresses; tests that want
    // authenticated peers pass --keyring themselves.
    if (!given("--keyring") && n.host.rfind("127.", 0) != 0 && n.host != "::1") {
      args.push_back("--insecure-peers");
    }
    if (!seeds.empty()) {
      std::string joined;
      for (const std::string& s : seeds) joined += (joined.empty() ? "" : ",") + s;
      args.push_back("--join");
      args.push_back(joined);
    }
    // A timing flag given in `extra` replaces the harness's (tallyd refuses
    // a flag given twice).
    const std::vector<std::string> timing_args = timings_.Args();
    for (size_t i = 0; i + 1 < timing_args.size(); i += 2) {
      if (given(timing_args[i].c_str())) continue;
      args.push_back(timing_args[i]);
      args.push_back(timing_args[i + 1]);
    }
    for (const std::string& a : extra) args.push_back(a);
    return args;
  }

  // Starts one member named `id` that joins through `seeds` (gossip
  // addresses; empty: a cluster of one). Inside `netns` when not empty;
  // with the variables `env` ("NAME=value") added to its environment when
  // not empty (through /usr/bin/env, which execs tallyd in place, so the
  // pid is tallyd's: SIGSTOP, SIGKILL and Stop reach the daemon itself).
  TestNode* StartNode(const std::string& id, const std::vector<std::string>& seeds,
                      const std::vector<std::string>& extra, std::string* error,
                      const std::string& host = "127.0.0.1", const std::string& netns = "",
                      const std::vector<std::string>& env = {}) {
    auto node = std::make_unique<TestNode>();
    node->id = id;
    node->host = host;
    node->netns = netns;
    std::vector<std::string> args = ArgsFor(*node, "0", seeds, extra);
    std::string binary = TallydPath();
    if (!env.empty()) {
      args.insert(args.begin(), binary);
      args.insert(args.begin(), env.begin(), env.end());
      binary = "/usr/bin/env";
    }
    if (!netns.empty()) {
      args.insert(args.begin(), {"netns", "exec", netns, binary});
      binary = IpBinary();
    }
    if (!node->process.Start(args, error, std::chrono::seconds(15), binary)) return nullptr;
    if (auto s = StatusOf(*node)) node->started_generation = s->generation;
    nodes_.push_back(std::move(node));
    return nodes_.back().get();
  }

  // Starts `n` members n1..nN; each joins through the first one.
  bool StartNodes(size_t n, const std::vector<std::string>& extra, std::string* error) {
    for (size_t i = 0; i < n; ++i) {
      std::vector<std::string> seeds;
      if (!nodes_.empty()) seeds.push_back(nodes_[0]->gossip());
      if (StartNode("n" + std::to_string(nodes_.size() + 1), seeds, extra, error) == nullptr) {
        return false;
      }
    }
    return true;
  }

  // Restarts a stopped member with its old arguments but its resolved
  // gossip port, so it comes back at the same address under the same name.
  bool Restart(TestNode& n, std::string* error) {
    std::vector<std::string> args = n.process.last_args();
    std::string gossip = n.gossip();
    for (size_t i = 0; i + 1 < args.size(); ++i) {
      if (args[i] == "--gossip") args[i + 1] = gossip;
    }
    if (!n.process.Restart(error, &args)) return false;
    if (auto s = StatusOf(n)) n.started_generation = s->generation;
    return true;
  }

  // True iff every running member sees every member of `expect_alive` alive
  // (with its current generation) and everyone in `expect_dead` dead or left.
  bool Converged(const std::vector<TestNode*>& observers, const std::vector<TestNode*>& alive,
                 const std::vector<std::string>& dead, std::string* why) {
    for (TestNode* o : observers) {
      std::optional<wire::StatusReport> s = StatusOf(*o);
      if (!s) {
        *why = o->id + " does not answer status";
        return false;
      }
      for (TestNode* a : alive) {
        uint64_t generation = 0;
        std::string state = StateIn(*s, a->id, &generation);
        if (state != "alive" || generation != a->started_generation) {
          *why = o->id + " sees " + a->id + " as '" + state + "' generation " +
                 std::to_string(generation) + " (want alive, generation " +
                 std::to_string(a->started_generation) + ")";
          return false;
        }
      }
      for (const std::string& d : dead) {
        std::string state = StateIn(*s, d);
        if (state != "dead" && state != "left") {
          *why = o->id + " sees " + d + " as '" + state + "' (want dead)";
          return false;
        }
      }
    }
    return true;
  }

  std::vector<TestNode*> Running() {
    std::vector<TestNode*> out;
    for (auto& n : nodes_) {
      if (n->process.running()) out.push_back(n.get());
    }
    return out;
  }

  bool WaitAllAlive(milliseconds timeout, std::string* error) {
    std::string why;
    std::vector<TestNode*> running = Running();
    bool ok = PollUntil(timeout, [&] { return Converged(running, running, {}, &why); });
    if (!ok) *error = "members did not all see each other alive: " + why;
    return ok;
  }

  // True iff every node in `nodes` says it owns keys (a joiner warms up
  // until handoff completes, or handoff_timeout_ms).
  static bool AllOwning(const std::vector<TestNode*>& nodes, std::string* why) {
    for (TestNode* n : nodes) {
      std::optional<wire::StatusReport> s = StatusOf(*n);
      if (!s || !s->owning) {
        *why = n->id + (s ? " not owning: " + s->not_owning_reason : " does not answer");
        return false;
      }
    }
    return true;
  }

  // All alive everywhere, and every member owning (done warming up).
  bool WaitFormed(milliseconds timeout, std::string* error) {
    auto deadline = SteadyClock::now() + tally::testing::ScaledWait(timeout);
    if (!WaitAllAlive(timeout, error)) return false;
    std::string why;
    std::vector<TestNode*> running = Running();
    bool ok = PollUntil(std::chrono::duration_cast<milliseconds>(deadline - SteadyClock::now()),
                        [&] { return AllOwning(running, &why); });
    if (!ok) *error = "members did not all finish warming up: " + why;
    return ok;
  }

  void StopAll() {
    for (auto& n : nodes_) n->process.Stop(std::chrono::seconds(3));
  }

 private:
  ClusterTimings timings_;
  std::vector<std::unique_ptr<TestNode>> nodes_;
};

// A key whose owner (first of the preference list, as `observer` sees it) is
// `owner_id`: tries user ids prefix-0, prefix-1, ... Empty user_id if none
// of `tries` matched.
inline CheckRequest KeyOwnedBy(const TestNode& observer, const std::string& owner_id,
                               const std::string& prefix, uint64_t limit, uint64_t window_ms,
                               int tries = 200) {
  for (int i = 0; i < tries; ++i) {
    CheckRequest r;
    r.user_id = prefix + "-" + std::to_string(i);
    r.endpoint = "/api";
    r.limit = limit;
    r.window_ms = window_ms;
    std::optional<wire::OwnerReport> o = OwnerOf(observer, r);
    if (o && !o->preference_list.empty() && o->preference_list[0] == owner_id) return r;
  }
  return CheckRequest{};
}

// True iff every node in `replicas` reports the same state hash for `key`
// (0: holds no live count, which is agreement too when nothing was admitted).
inline bool ReplicasAgree(const std::vector<TestNode*>& replicas, const CheckRequest& key,
                          std::string* why) {
  std::optional<uint64_t> hash;
  for (TestNode* n : replicas) {
    std::optional<wire::OwnerReport> o = OwnerOf(*n, key);
    if (!o) {
      *why = n->id + " does not answer owner queries";
      return false;
    }
    if (hash && *hash != o->state_hash) {
      *why = n->id + " state hash differs" + (o->holds_key ? "" : " (it holds no copy)");
      return false;
    }
    hash = o->state_hash;
  }
  return true;
}

// True iff the replicas of `key` (the preference list as `observer` sees it,
// those of `members` it names) agree, as ReplicasAgree says.
inline bool PreferenceListAgrees(const TestNode& observer, const std::vector<TestNode*>& members,
                                 const CheckRequest& key, std::string* why) {
  std::optional<wire::OwnerReport> o = OwnerOf(observer, key);
  if (!o) {
    *why = observer.id + " does not answer owner queries";
    return false;
  }
  std::vector<TestNode*> replicas;
  for (const std::string& id : o->preference_list) {
    for (TestNode* n : members) {
      if (n->id == id) replicas.push_back(n);
    }
  }
  return ReplicasAgree(replicas, key, why);
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_CLUSTER_CLUSTER_HARNESS_H_

#include "sim/scenarios.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <optional>

#include "membership/message.h"
#include "membership/ring.h"
#include "membership/timing.h"

namespace tally::sim {
namespace {

using Kind = FaultAction::Kind;

TrueNs S(double seconds) { return static_cast<TrueNs>(std::llround(seconds * 1e9)); }

}  // namespace

TrueNs Warmup(size_t nodes) {
  // Joins spread over start_spread, then gossip and handoff (3 s) settle;
  // at 1000 members the join rumors need tens of seconds of gossip.
  if (nodes <= 100) return S(6);
  if (nodes <= 300) return S(12);
  return S(40);
}

// Rumors ride every gossip round (3 members per 200 ms) and every probe,
// each retransmitted RetransmitLimit(n) times.
TrueNs Dissemination(const SimConfig& c, size_t n) {
  const auto& sw = c.node.swim;
  return (membership::timing::RetransmitLimit(sw.retransmit_mult, n) * sw.gossip_interval_ms +
          2 * sw.probe_interval_ms) *
         kNsPerMs;
}

// With membership settled, state converges once the last deltas are resent
// (replication_retry_ms, a few rounds) and anti-entropy repairs the rest.
TrueNs ConvergenceBase(const SimConfig& c) {
  return (c.node.replication_interval_ms + 3 * c.node.replication_retry_ms +
          2 * c.node.anti_entropy_interval_ms) *
         kNsPerMs;
}

// Sides of a healed partition meet again through the periodic reconnect to
// a dead member or seed (memberlist 222), then refutations spread.
TrueNs Reconnect(const SimConfig& c, size_t n) {
  return c.node.swim.reconnect_interval_ms * kNsPerMs + 2 * Dissemination(c, n);
}

// Hits an owner admitted but had not yet replicated when it failed: one
// replication interval plus the delta's flight (DESIGN, "owner crashes").
TrueNs Tail(const SimConfig& c) {
  const Network probe(c.link, 0);
  return c.node.replication_interval_ms * kNsPerMs + probe.MaxLatencyNs() + kNsPerMs;
}

namespace {

ScenarioCase Base(const ScenarioParams& p, size_t nodes, double duration_s) {
  ScenarioCase sc;
  SimConfig& c = sc.config;
  c.seed = p.seed;
  c.nodes = nodes;
  c.duration_ns = S(duration_s);
  c.node.replicas = 3;
  c.node.record_decisions = true;
  c.start_spread_ns = nodes <= 100 ? S(2) : S(5);
  const TrueNs warmup = Warmup(nodes);
  c.workload.keys = std::clamp<size_t>(20 * nodes, 100, 4000);
  c.workload.rate_per_s = 40.0 * static_cast<double>(nodes);
  c.workload.start_ns = warmup;
  c.quiesce_ns = S(0.75 * duration_s);
  c.workload.end_ns = c.quiesce_ns;
  c.cost_from_ns = warmup + S(2);
  c.cost_to_ns = c.quiesce_ns;
  c.inspect_interval_ns = nodes <= 100 ? 50 * kNsPerMs : nodes <= 300 ? 200 * kNsPerMs : kNsPerS;
  c.ownership_sample_keys = nodes <= 100 ? 64 : 16;
  c.drop_replication = p.drop_replication;
  c.dump_key = p.dump_key;
  Bounds& b = sc.bounds;
  b.convergence_ns = ConvergenceBase(c);
  // The last membership change is the start unless a fault follows: the
  // cluster must agree before traffic begins.
  b.membership_ns = warmup;
  b.no_false_suspicions = true;
  b.no_false_deaths = true;
  return sc;
}

std::vector<KeySpec> KeysOf(const SimConfig& c) {
  return Workload(c.workload, WorkloadSeed(c.seed)).keys();
}

std::vector<size_t> Busiest(const std::vector<KeySpec>& keys) {
  std::vector<size_t> order(keys.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return keys[a].share > keys[b].share; });
  return order;
}

// The owner of `key` among the hosts `up` (by the same ring every node builds).
uint32_t OwnerOf(const KeySpec& key, const std::vector<uint32_t>& up) {
  std::vector<membership::RingMember> members;
  for (uint32_t i : up) members.push_back({HostIdOf(i), HostAddressOf(i, 0), 1.0});
  const membership::Ring ring(std::move(members));
  const std::string id = ring.PreferenceIds(key.id, 1).front();
  return static_cast<uint32_t>(std::stoul(id.substr(1)));
}

std::vector<uint32_t> AllHosts(size_t n) {
  std::vector<uint32_t> v(n);
  for (uint32_t i = 0; i < n; ++i) v[i] = i;
  return v;
}

void Erase(std::vector<uint32_t>* v, uint32_t x) {
  v->erase(std::remove(v->begin(), v->end(), x), v->end());
}

FaultAction Fault(Kind kind, TrueNs at, int host, std::string label) {
  FaultAction f;
  f.kind = kind;
  f.at_ns = at;
  f.host = host;
  f.label = std::move(label);
  return f;
}

FaultAction PartitionFault(TrueNs at, std::vector<int> groups, Network::Matrix allowed,
                           std::string label) {
  FaultAction f = Fault(Kind::kPartition, at, -1, std::move(label));
  f.groups = std::move(groups);
  f.allowed = allowed;
  return f;
}

Network::Matrix Isolated(int groups) {
  Network::Matrix m{};
  for (int g = 0; g < groups; ++g) m[g][g] = true;
  return m;
}

std::string Id(uint32_t host) { return HostIdOf(host); }

// ---------------------------------------------------------------- scenarios

// fault_free
// Goal: with no faults the cluster decides exactly like one central limiter,
// never exceeds a limit, and its replicas converge.
// Method: N nodes join, settle, then take Zipf traffic at every node for the
// middle of the run on ideal clocks and a clean network; oracles exact,
// excess (limit x 1), convergence after traffic stops, no false suspicions,
// ownership agreement.
ScenarioCase FaultFree(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  sc.bounds.exact = true;
  return sc;
}

// crash_owner
// Goal: when the owner of the busiest keys crashes, the next replica takes
// over from replicated counts (excess <= one unreplicated tail per crash),
// the crash is suspected as fast as round-robin probing predicts, and every
// live member marks it dead.
// Method: crash the current owner of the busiest key, then of the next
// busiest, every 10 s (16 s above 20 nodes) while keeping a majority alive;
// no restarts. Oracles excess (limit + tails), detection (mean first
// suspicion vs. timing.h, all mark dead), convergence, ownership.
ScenarioCase CrashOwner(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  const auto keys = Busiest(KeysOf(c));
  const auto all = KeysOf(c);
  std::vector<uint32_t> up = AllHosts(n);
  // Each crash is marked dead everywhere (min suspicion timeout plus
  // dissemination) before the next, so detection samples do not overlap.
  const TrueNs gap = n <= 20 ? S(10) : S(16);
  const size_t keep = std::max<size_t>(3, n / 2 + 1);
  TrueNs at = c.workload.start_ns + S(4);
  int crashes = 0;
  for (size_t i = 0; up.size() > keep && at + S(8) <= c.quiesce_ns; ++i, at += gap) {
    const uint32_t victim = OwnerOf(all[keys[i % keys.size()]], up);
    c.faults.push_back(
        Fault(Kind::kCrash, at, static_cast<int>(victim),
              "crash " + Id(victim) + " (owner of " + all[keys[i % keys.size()]].user_id + ")"));
    Erase(&up, victim);
    ++crashes;
  }
  Bounds& b = sc.bounds;
  b.failovers = crashes;
  b.tail_ns = Tail(c);
  b.detection = true;
  b.detection_mean = true;
  const TrueNs last_dead = S(LastDeadBoundS(c, n));
  b.membership_ns = last_dead;
  const TrueNs last_crash = c.faults.empty() ? 0 : c.faults.back().at_ns;
  b.convergence_ns += std::max<TrueNs>(0, last_crash + last_dead - c.quiesce_ns);
  return sc;
}

// crash_restart
// Goal: a node that crashes and restarts empty (same id, new generation,
// sometimes a new address) is accepted back at once (memberlist 157), warms
// up through handoff, and never hides or loses counts (fresh replica slot).
// Method: three cycles of crash -> restart 3-6 s later, alternating the owner
// of the busiest key and a random node, every other restart at a new
// address; bursty arrivals. Oracles excess (limit + one tail per crash),
// first suspicion, convergence, ownership.
ScenarioCase CrashRestart(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.workload.bursty = true;
  Random rng(DeriveSeed(p.seed, 77));
  const auto all = KeysOf(c);
  const auto keys = Busiest(all);
  const std::vector<uint32_t> up = AllHosts(n);
  TrueNs at = c.workload.start_ns + S(4);
  const TrueNs cycle = S(std::max(8.0, (static_cast<double>(c.quiesce_ns - at) / 1e9 - 4) / 3));
  int crashes = 0;
  for (int i = 0; i < 3 && at + S(7) <= c.quiesce_ns; ++i, at += cycle) {
    const uint32_t victim =
        i % 2 == 0 ? OwnerOf(all[keys[i]], up) : static_cast<uint32_t>(rng.Below(n));
    const TrueNs back = at + S(3) + static_cast<TrueNs>(rng.Below(3000)) * kNsPerMs;
    c.faults.push_back(Fault(Kind::kCrash, at, static_cast<int>(victim), "crash " + Id(victim)));
    FaultAction r = Fault(Kind::kRestart, back, static_cast<int>(victim),
                          "restart " + Id(victim) + (i % 2 == 1 ? " (new address)" : ""));
    r.new_address = i % 2 == 1;
    c.faults.push_back(r);
    ++crashes;
  }
  std::sort(c.faults.begin(), c.faults.end(),
            [](const FaultAction& a, const FaultAction& b) { return a.at_ns < b.at_ns; });
  Bounds& b = sc.bounds;
  b.failovers = crashes;
  b.tail_ns = Tail(c);
  b.detection = true;
  b.detection_mean = true;
  b.membership_ns = S(LastDeadBoundS(c, n));
  return sc;
}

// Partitions: traffic runs through the partition and stops at the heal, so
// convergence is measured from the heal.
void PartitionTimeline(ScenarioCase* sc, double d) {
  SimConfig& c = sc->config;
  c.quiesce_ns = S(0.55 * d);
  c.workload.end_ns = c.quiesce_ns;
  c.cost_to_ns = c.quiesce_ns;
  Bounds& b = sc->bounds;
  b.sides = 2;
  b.convergence_ns = ConvergenceBase(c) + Reconnect(c, c.nodes);
  b.membership_ns = Reconnect(c, c.nodes) + Dissemination(c, c.nodes);
}

// The hosts in an order drawn from the scenario seed's stream `stream`.
std::vector<uint32_t> ShuffledHosts(const ScenarioParams& p, uint64_t stream, size_t n) {
  Random rng(DeriveSeed(p.seed, stream));
  std::vector<uint32_t> order = AllHosts(n);
  rng.Shuffle(&order);
  return order;
}

// Group 1: the first half of `order`; group 0: the rest.
std::vector<int> Halves(const std::vector<uint32_t>& order) {
  std::vector<int> groups(order.size(), 0);
  for (size_t i = 0; i < order.size() / 2; ++i) groups[order[i]] = 1;
  return groups;
}

// The partition timeline's cut: from 4 s after traffic starts until quiesce.
void CutThenHeal(ScenarioCase* sc, std::vector<int> groups, Network::Matrix allowed,
                 std::string label) {
  SimConfig& c = sc->config;
  c.faults.push_back(PartitionFault(c.workload.start_ns + S(4), std::move(groups), allowed,
                                    std::move(label)));
  c.faults.push_back(Fault(Kind::kHeal, c.quiesce_ns, -1, "heal"));
}

// partition_halves
// Goal: two halves that cannot reach each other each enforce the full limit
// (availability policy: total <= limit x 2), and after the heal they find
// each other again and their replicas converge.
// Method: a random half of the nodes is cut off from the other (both
// directions) from 4 s after traffic starts until 55% of the run, when the
// partition heals and traffic stops. Oracles excess (limit x 2),
// convergence from the heal, ownership, no false positives within a side.
ScenarioCase PartitionHalves(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  PartitionTimeline(&sc, d);
  CutThenHeal(&sc, Halves(ShuffledHosts(p, 78, n)), Isolated(2), "partition: halves");
  return sc;
}

// partition_bridge
// Goal: with one bridge node that sees both sides (the sides cannot see each
// other), indirect probes through the bridge keep some members alive across
// the cut; decisions stay within limit x 3 (each side and the bridge) and
// everything converges.
// Method: random sides A and B plus one bridge reaching both, from 4 s after
// traffic starts until 55% of the run. Oracles as partition_halves.
ScenarioCase PartitionBridge(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  PartitionTimeline(&sc, d);
  const std::vector<uint32_t> order = ShuffledHosts(p, 79, n);
  std::vector<int> groups(n, 0);
  for (size_t i = 0; i + 1 < n; ++i) groups[order[i]] = i < (n - 1) / 2 ? 0 : 1;
  groups[order[n - 1]] = 2;
  Network::Matrix m = Isolated(3);
  m[0][2] = m[2][0] = m[1][2] = m[2][1] = true;
  CutThenHeal(&sc, std::move(groups), m, "partition: bridge " + Id(order[n - 1]));
  // The bridge is a group of its own: it may decide beside each side's own
  // decider while the rumors it relays change views (DESIGN, "Partitions").
  sc.bounds.sides = 3;
  return sc;
}

// partition_asymmetric
// Goal: a one-way cut (A's packets to B are lost, B's to A arrive) is handled
// like a partition: both sides suspect each other, limits hold within
// limit x 2, and the cluster converges after the heal.
// Method: random halves, A -> B dropped, B -> A delivered, from 4 s after
// traffic starts until 55% of the run.
ScenarioCase PartitionAsymmetric(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  PartitionTimeline(&sc, d);
  Network::Matrix m = Isolated(2);
  m[1][0] = true;  // B -> A still works
  CutThenHeal(&sc, Halves(ShuffledHosts(p, 80, n)), m, "partition: A -> B cut");
  return sc;
}

// isolated_node
// Goal: the owner of the busiest key, cut off alone, keeps deciding on its
// own (its side of two) while the rest fail its keys over; limit x 2 holds
// and the node rejoins cleanly after the heal.
// Method: isolate the busiest key's owner from 4 s after traffic starts until
// 55% of the run; clients keep arriving at it too.
ScenarioCase IsolatedNode(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  PartitionTimeline(&sc, d);
  const auto all = KeysOf(sc.config);
  const uint32_t victim = OwnerOf(all[Busiest(all)[0]], AllHosts(n));
  std::vector<int> groups(n, 0);
  groups[victim] = 1;
  CutThenHeal(&sc, std::move(groups), Isolated(2), "isolate " + Id(victim));
  return sc;
}

// Loss on every datagram link for the whole run (streams stay reliable).
ScenarioCase Lossy(const ScenarioParams& p, size_t n, double d, double loss) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.link.loss = loss;
  c.link.duplicate = loss / 10;
  Bounds& b = sc.bounds;
  // A forward lost on the way is decided by the next replica, whose state
  // lags by one tail plus the resend of a lost delta (DESIGN, "owner
  // crashes" / "lost datagrams"); episodes within a window overlap.
  b.failovers = 1;
  b.tail_ns = Tail(c) + c.node.replication_retry_ms * kNsPerMs;
  b.no_false_suspicions = false;
  // A member whose rumors were all lost is still learned first-hand when it
  // probes us, which round-robin does within 2n - 3 probe periods.
  b.membership_ns =
      c.start_spread_ns +
      static_cast<TrueNs>(membership::timing::WorstCaseFirstProbeRoundRobinPeriods(n) *
                          static_cast<double>(c.node.swim.probe_interval_ms)) *
          kNsPerMs;
  return sc;
}

// lossy_5pct
// Goal: 5% datagram loss (and 0.5% duplication, reordering from jitter)
// causes no false deaths (Lifeguard's indirect probes and refutation), keeps
// limits within one lagged failover, and replicas converge through resends.
// Method: loss from the start to the end; otherwise as fault_free.
ScenarioCase Lossy5(const ScenarioParams& p, size_t n, double d) { return Lossy(p, n, d, 0.05); }

// lossy_20pct
// Goal: 20% loss is survivable: decisions keep flowing, replicas converge,
// excess stays within one lagged failover per window; false suspicions and
// deaths are reported (SWIM is not expected to be perfect here).
// Method: as lossy_5pct with 20% loss and 2% duplication.
ScenarioCase Lossy20(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Lossy(p, n, d, 0.20);
  sc.bounds.no_false_deaths = false;
  return sc;
}

// clock_skew
// Goal: offsets under max_clock_offset_ms do not matter in steady state (one
// owner, one clock); a node whose clock is 1.5 s off stops owning keys; any
// change of decider stays within DESIGN's clock term.
// Method: every node gets an offset in +-200 ms and a drift in +-100 ppm; the
// last node is set 1500 ms ahead. Oracles excess (limit + decider changes x
// limit x (delta + bucket) / window), clock gate, convergence.
ScenarioCase ClockSkew(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.clock_offset_max_ms = 200;
  c.clock_drift_max_ppm = 100;
  c.clock_offsets_ms.push_back({static_cast<int>(n - 1), 1500});
  sc.bounds.clock_terms = true;
  sc.bounds.must_not_own.push_back(Id(static_cast<uint32_t>(n - 1)));
  return sc;
}

// clock_jump
// Goal: wall clocks that step forward or back by up to minutes cost at most
// DESIGN's clock term per step; the stepped node stops owning while it
// disagrees with its peers and owns again once restored.
// Method: the busiest key's owner jumps +90 s, the second's -120 s, a random
// node +3 s; the first two are restored 12 s later. Oracles excess (limit +
// per step min(limit, limit x (|step| + bucket) / window) + decider
// changes), clock gate for the node left off, convergence.
ScenarioCase ClockJump(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  const auto all = KeysOf(c);
  const auto busy = Busiest(all);
  const auto up = AllHosts(n);
  Random rng(DeriveSeed(p.seed, 81));
  const uint32_t a = OwnerOf(all[busy[0]], up);
  uint32_t b_host = OwnerOf(all[busy[1]], up);
  if (b_host == a) b_host = (a + 1) % static_cast<uint32_t>(n);
  uint32_t third = static_cast<uint32_t>(rng.Below(n));
  while (third == a || third == b_host) third = (third + 1) % static_cast<uint32_t>(n);
  const TrueNs t0 = c.workload.start_ns + S(4);
  auto jump = [&](TrueNs at, uint32_t host, int64_t ms) {
    FaultAction f =
        Fault(Kind::kClockJump, at, static_cast<int>(host),
              "clock " + Id(host) + (ms > 0 ? " +" : " ") + std::to_string(ms / 1000) + " s");
    f.value_ms = ms;
    c.faults.push_back(f);
    sc.bounds.clock_steps_ms.push_back(ms);
  };
  jump(t0, a, 90'000);
  jump(t0 + S(4), b_host, -120'000);
  jump(t0 + S(8), third, 3'000);
  jump(t0 + S(12), a, -90'000);
  jump(t0 + S(16), b_host, 120'000);
  sc.bounds.clock_terms = true;
  sc.bounds.must_not_own.push_back(Id(third));
  return sc;
}

// slow_node
// Goal: Lifeguard's case: a node that stalls (1.2 s pauses every 4 s, 2 ms
// per input, timers 100 ms late) is suspected and refutes, but neither it nor
// anyone else declares healthy members dead; its keys fail over during
// stalls within the lagged-failover bound.
// Method: the busiest key's owner is slowed from 4 s after traffic starts
// until 5 s before quiesce. Oracles excess (limit + two tails per stall, the
// owner's and the replica's), no false deaths (suspicions reported), convergence.
ScenarioCase SlowNode(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  const auto all = KeysOf(c);
  const uint32_t victim = OwnerOf(all[Busiest(all)[0]], AllHosts(n));
  FaultAction f = Fault(Kind::kSlow, c.workload.start_ns + S(4), static_cast<int>(victim),
                        "slow " + Id(victim));
  f.service_ns = 2 * kNsPerMs;
  f.tick_lag_ns = 100 * kNsPerMs;
  f.stall_every_ns = 4 * kNsPerS;
  f.stall_ns = 1200 * kNsPerMs;
  const TrueNs until = c.quiesce_ns - S(5);
  c.faults.push_back(f);
  c.faults.push_back(Fault(Kind::kUnslow, until, static_cast<int>(victim), "fast " + Id(victim)));
  Bounds& b = sc.bounds;
  b.failovers = static_cast<int>(2 * ((until - f.at_ns) / f.stall_every_ns + 1));
  // The replica decides from counts replicated before the stall; the owner,
  // resuming, from counts the replica sent it: each lags by a tail plus the
  // stalled owner's late timers and the forward timeout (at most its
  // maximum: the entries' round trips to the owner may have raised it).
  b.tail_ns = Tail(c) + f.tick_lag_ns +
              std::max(c.node.forward_timeout_ms, c.node.forward_timeout_max_ms) * kNsPerMs;
  b.no_false_suspicions = false;
  b.membership_ns = b.membership_ns + Dissemination(c, n);
  return sc;
}

// join_leave
// Goal: nodes that join warm up through handoff before owning (decisions
// continue from replicated counts), and a graceful leave hands its keys over
// (excess <= one tail per change); ownership agrees after each change.
// Method: two new nodes join 4 s and 8 s after traffic starts; the busiest
// key's owner leaves at 14 s and a random node at 20 s; uniform keys.
// Oracles excess, convergence, ownership, no false positives.
ScenarioCase JoinLeave(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.workload.zipf = false;  // uniform keys: every node owns a fair share
  const auto all = KeysOf(c);
  Random rng(DeriveSeed(p.seed, 82));
  const TrueNs t0 = c.workload.start_ns;
  c.faults.push_back(Fault(Kind::kJoin, t0 + S(4), -1, "join " + Id(static_cast<uint32_t>(n))));
  c.faults.push_back(Fault(Kind::kJoin, t0 + S(8), -1, "join " + Id(static_cast<uint32_t>(n + 1))));
  std::vector<uint32_t> up = AllHosts(n + 2);
  const uint32_t owner = OwnerOf(all[Busiest(all)[0]], up);
  c.faults.push_back(
      Fault(Kind::kLeave, t0 + S(14), static_cast<int>(owner), "leave " + Id(owner)));
  Erase(&up, owner);
  uint32_t other = static_cast<uint32_t>(rng.Below(n));
  if (other == owner) other = (other + 1) % static_cast<uint32_t>(n);
  c.faults.push_back(
      Fault(Kind::kLeave, t0 + S(20), static_cast<int>(other), "leave " + Id(other)));
  Bounds& b = sc.bounds;
  b.failovers = 4;
  b.tail_ns = Tail(c);
  b.membership_ns = Dissemination(c, n + 2) + c.node.handoff_timeout_ms * kNsPerMs;
  return sc;
}

// hot_key
// Goal: one key taking half of all traffic, arriving in bursts at every
// node in batches of up to 4 checks, is still decided exactly as by one
// central limiter (forward batching and the owner's single clock).
// Method: hot key limit 100 per 1 s window with 50% of requests, the rest
// Zipf; bursty on/off arrivals. Oracles exact, excess (limit x 1), convergence.
ScenarioCase HotKey(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.workload.hot_key_share = 0.5;
  c.workload.hot_key_limit = 100;
  c.workload.hot_key_window_ms = 1000;
  c.workload.bursty = true;
  c.workload.burst_factor = 4;
  c.workload.max_batch = 4;
  sc.bounds.exact = true;
  return sc;
}

// Anti-entropy rounds after which every member holds the winner of a
// partition's override writes (docs/DESIGN.md, "Runtime limit overrides"):
// once at least half the members hold it, a member without it stays without
// through one round (every member digests one random peer per interval, and
// a differing digest carries the whole map both ways) with probability at
// most 1/2 (its own pick) x e^(-1/2) (no holder picks it) < 0.31; over the
// other n/2 members all hold it after R rounds but with probability
// (n/2) x 0.31^R <= 1e-6.
int OverrideRepairRounds(size_t n) {
  const double miss = 0.5 * std::exp(-0.5);
  const double members = std::max(1.0, static_cast<double>(n) / 2);
  return static_cast<int>(std::ceil(std::log(members / 1e-6) / std::log(1 / miss)));
}

// runtime_override
// Goal: an override written on one member is held by every live member
// within one stream push; writes of different limits for one key on both
// sides of a partition converge to the later one (hybrid time) within the
// repair bound after the heal; checks are decided with the limit their
// entry node holds; a removal brings the key's own limit back.
// Method: 4 s into traffic a random member writes limit/2 for the busiest
// key (its explicit selector and a descriptor twin); 6 s later the cluster
// splits into halves; the smaller side writes limit/4, 2 s later the larger
// side limit x 3/4; heal 12 s after the cut; once the repair bound has
// passed a random member removes the override; traffic until 8 s later.
// Oracles override spread (push, and after the heal), override use (every
// decision of the key used the limit its entry node held), excess (limit
// x 2: the override values stay below the key's limit), convergence,
// ownership.
ScenarioCase RuntimeOverride(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  const auto all = KeysOf(c);
  const uint32_t key = static_cast<uint32_t>(Busiest(all)[0]);
  const uint64_t limit = all[key].limit;
  auto part = [limit](uint64_t num, uint64_t den) {
    return std::max<uint64_t>(1, limit * num / den);
  };
  const std::vector<uint32_t> order = ShuffledHosts(p, 83, n);
  Random rng(DeriveSeed(p.seed, 84));
  auto write = [&](TrueNs at, uint32_t host, std::optional<uint64_t> value) {
    FaultAction f = Fault(Kind::kWriteOverride, at, static_cast<int>(host),
                          "override " + all[key].user_id + " on " + Id(host) + ": " +
                              (value ? std::to_string(*value) : std::string("removed")));
    f.override_key = key;
    f.override_limit = value.value_or(0);
    f.override_remove = !value.has_value();
    c.faults.push_back(f);
  };
  const TrueNs max_latency = Network(c.link, 0).MaxLatencyNs();
  Bounds& b = sc.bounds;
  b.override_push_ns = max_latency + c.inspect_interval_ns + kNsPerMs;
  b.override_heal_ns = Reconnect(c, n) +
                       (OverrideRepairRounds(n) + 1) * c.node.anti_entropy_interval_ms * kNsPerMs +
                       3 * max_latency + c.inspect_interval_ns;
  const TrueNs t0 = c.workload.start_ns + S(4);
  write(t0, static_cast<uint32_t>(rng.Below(n)), part(1, 2));
  // Halves(order): group 1 is order's first n/2 (the smaller side A),
  // group 0 the rest (B, at least half: it writes last, so it wins).
  const TrueNs cut = t0 + S(6);
  c.faults.push_back(PartitionFault(cut, Halves(order), Isolated(2), "partition: halves"));
  write(cut + S(5), order[0], part(1, 4));
  write(cut + S(7), order[n - 1], part(3, 4));
  const TrueNs heal = cut + S(12);
  c.faults.push_back(Fault(Kind::kHeal, heal, -1, "heal"));
  const TrueNs removal = heal + b.override_heal_ns + S(2);
  write(removal, static_cast<uint32_t>(rng.Below(n)), std::nullopt);
  c.quiesce_ns = removal + S(8);
  c.workload.end_ns = c.quiesce_ns;
  c.cost_to_ns = c.quiesce_ns;
  c.duration_ns = std::max(c.duration_ns, c.quiesce_ns + S(25));
  b.sides = 2;
  b.convergence_ns = ConvergenceBase(c) + Reconnect(c, n);
  b.membership_ns = Reconnect(c, n) + Dissemination(c, n);
  return sc;
}

// scale
// Goal: messages and bytes per node per second stay flat as the cluster
// grows from 10 to 100 to 1000 nodes (SWIM's constant per-member load, one
// digest per second, replication proportional to the node's own traffic).
// Method: fault-free runs at each size up to --nodes, 20 checks per node per
// second, measured after membership settled; each run also passes exact and
// excess. Bound: the largest size's messages <= 1.25x the smallest's; bytes
// <= 1.25x plus the push-pull full-state exchange, which grows as
// n / PushPullInterval(n) by design (memberlist's pushPullScale).
ScenarioCase Scale(const ScenarioParams& p, size_t n, double d) {
  ScenarioCase sc = Base(p, n, d);
  SimConfig& c = sc.config;
  c.workload.rate_per_s = 20.0 * static_cast<double>(n);
  // Long enough to settle (1000 join rumors take ~50 s of gossip to drain)
  // and then measure for at least 15 s.
  c.duration_ns = std::max(c.duration_ns, Warmup(n) + S(n > 300 ? 40 : 20));
  c.quiesce_ns = c.duration_ns - S(5);
  c.workload.end_ns = c.quiesce_ns;
  c.cost_from_ns = Warmup(n) + S(2);
  c.cost_to_ns = c.quiesce_ns;
  c.cost_after_quiet = true;
  sc.bounds.exact = true;
  return sc;
}

std::vector<size_t> ScaleLegs(size_t nodes) {
  std::vector<size_t> legs;
  for (size_t size : {size_t{10}, size_t{100}, size_t{1000}}) {
    if (size <= nodes) legs.push_back(size);
  }
  if (legs.empty() || legs.back() != nodes) legs.push_back(nodes);
  return legs;
}

template <ScenarioCase (*F)(const ScenarioParams&, size_t, double)>
std::function<ScenarioCase(const ScenarioParams&)> Make(size_t default_nodes, double default_s) {
  return [default_nodes, default_s](const ScenarioParams& p) {
    return F(p, p.nodes > 0 ? p.nodes : default_nodes, p.duration_s > 0 ? p.duration_s : default_s);
  };
}

std::vector<Scenario> Build() {
  std::vector<Scenario> v;
  auto add = [&](std::string name, std::string goal, size_t nodes, double seconds, double min_s,
                 std::function<ScenarioCase(const ScenarioParams&)> build) {
    Scenario s;
    s.name = std::move(name);
    s.goal = std::move(goal);
    s.default_nodes = nodes;
    s.default_duration_s = seconds;
    s.min_duration_s = min_s;
    s.build = std::move(build);
    v.push_back(std::move(s));
  };
  add("fault_free", "no faults: decisions equal one central limiter's, 0 excess, replicas converge",
      10, 60, 20, Make<FaultFree>(10, 60));
  add("crash_owner", "owners crash: failover within one tail, detection as timing.h predicts", 10,
      60, 40, Make<CrashOwner>(10, 60));
  add("crash_restart",
      "crash and restart empty (new generation, new address): accepted, no lost counts", 10, 60, 40,
      Make<CrashRestart>(10, 60));
  add("partition_halves",
      "two halves each enforce the limit (<= 2x), then find each other and converge", 10, 60, 50,
      Make<PartitionHalves>(10, 60));
  add("partition_bridge", "a bridge node sees both sides: <= 3x, membership settles after the heal",
      10, 60, 50, Make<PartitionBridge>(10, 60));
  add("partition_asymmetric", "one-way cut behaves as a partition: <= 2x, converges after the heal",
      10, 60, 50, Make<PartitionAsymmetric>(10, 60));
  add("isolated_node", "the busiest owner cut off alone: <= 2x, rejoins cleanly", 10, 60, 50,
      Make<IsolatedNode>(10, 60));
  add("lossy_5pct", "5% loss: no false deaths, excess within one lagged failover, converges", 10,
      60, 30, Make<Lossy5>(10, 60));
  add("lossy_20pct", "20% loss: still deciding and converging; false positives reported", 10, 60,
      30, Make<Lossy20>(10, 60));
  add("clock_skew",
      "+-200 ms offsets, drift, one node 1.5 s off: that node stops owning, no excess", 10, 60, 30,
      Make<ClockSkew>(10, 60));
  add("clock_jump", "wall clocks step +-minutes: excess within DESIGN's clock term per step", 10,
      60, 40, Make<ClockJump>(10, 60));
  add("slow_node", "Lifeguard: a stalling owner is suspected, refutes, nobody healthy dies", 10, 60,
      40, Make<SlowNode>(10, 60));
  add("join_leave", "joins warm up through handoff, leaves hand keys over: excess within one tail",
      10, 60, 40, Make<JoinLeave>(10, 60));
  add("hot_key", "one key with half the traffic, bursty, batched: still exact", 10, 60, 20,
      Make<HotKey>(10, 60));
  add("runtime_override",
      "overrides spread within a push, converge after a partition heals, and decide checks", 10, 60,
      30, Make<RuntimeOverride>(10, 60));
  add("scale", "messages and bytes per node per second flat from 10 to 100 to 1000 nodes", 1000, 30,
      20, Make<Scale>(1000, 30));
  v.back().legs = ScaleLegs;
  return v;
}

// Full-state push-pull bytes per node per second at n members: each node
// sends its table and receives one (request and reply) every
// PushPullInterval(n).
double PushPullAllowance(const SimConfig& c, size_t n) {
  membership::MemberUpdate u;
  u.id = HostIdOf(static_cast<uint32_t>(n));
  u.address = HostAddressOf(static_cast<uint32_t>(n), 0);
  u.generation = UINT64_MAX;
  u.incarnation = 1000;
  const double table_bytes =
      static_cast<double>(n) * static_cast<double>(membership::EstimatedUpdateBytes(u));
  const auto interval = membership::timing::PushPullInterval(
      std::chrono::milliseconds(c.node.swim.push_pull_interval_ms), n);
  return 2 * table_bytes / (static_cast<double>(interval.count()) / 1000.0);
}

}  // namespace

const std::vector<Scenario>& Scenarios() {
  static const std::vector<Scenario> scenarios = Build();
  return scenarios;
}

const Scenario* FindScenario(const std::string& name) {
  for (const Scenario& s : Scenarios()) {
    if (s.name == name) return &s;
  }
  return nullptr;
}

std::string ReproduceCommand(const Outcome& o) {
  char buf[256];
  std::snprintf(buf, sizeof(buf), "tally-sim --scenario %s --nodes %zu --seed %llu --duration %g%s",
                o.scenario.c_str(), o.nodes, static_cast<unsigned long long>(o.seed), o.duration_s,
                o.drop_replication ? " --drop-replication" : "");
  return buf;
}

Outcome RunScenario(const Scenario& scenario, const ScenarioParams& params, bool keep_record) {
  Outcome o;
  o.scenario = scenario.name;
  o.seed = params.seed;
  o.nodes = params.nodes > 0 ? params.nodes : scenario.default_nodes;
  o.duration_s = params.duration_s > 0 ? params.duration_s : scenario.default_duration_s;
  o.drop_replication = params.drop_replication;
  std::vector<size_t> sizes = scenario.legs ? scenario.legs(o.nodes) : std::vector<size_t>{o.nodes};
  uint64_t hash = 0;
  for (size_t size : sizes) {
    ScenarioParams p = params;
    p.nodes = size;
    p.duration_s = o.duration_s;
    ScenarioCase sc = scenario.build(p);
    Simulator sim(sc.config);
    RunRecord run = sim.Run();
    Figures fig;
    std::vector<OracleResult> results = Evaluate(run, sc.bounds, &fig);
    hash = SplitMix64(hash ^ run.trace_hash);
    o.events += run.events;
    o.debug += run.debug;
    o.simulated_s += static_cast<double>(run.end_ns) / 1e9;
    if (sizes.size() > 1) {
      for (OracleResult& r : results) r.name = std::to_string(size) + " nodes: " + r.name;
    }
    o.results.insert(o.results.end(), results.begin(), results.end());
    LegOutcome leg;
    leg.nodes = size;
    leg.cost = run.cost;
    leg.pushpull_allowance_bytes = PushPullAllowance(sc.config, size);
    o.legs.push_back(leg);
    o.figures = fig;
    o.bounds = sc.bounds;
    if (keep_record) o.record = std::move(run);
  }
  if (sizes.size() > 1) {
    // ---- 6. cost stays flat with cluster size.
    const LegOutcome& small = o.legs.front();
    const LegOutcome& large = o.legs.back();
    bool measured = true;
    for (const LegOutcome& leg : o.legs) measured = measured && leg.cost.from_ns >= 0;
    OracleResult m{"cost: messages/node/s"};
    char buf[160];
    std::snprintf(buf, sizeof(buf), "%.1f at %zu -> %.1f at %zu", small.cost.messages_per_node_s,
                  small.nodes, large.cost.messages_per_node_s, large.nodes);
    m.value = buf;
    m.value_num = large.cost.messages_per_node_s / std::max(1e-9, small.cost.messages_per_node_s);
    m.bound_num = 1.25;
    std::snprintf(buf, sizeof(buf), "<= %.1f (1.25x)", 1.25 * small.cost.messages_per_node_s);
    m.bound = buf;
    m.pass = measured && m.value_num <= m.bound_num;
    if (!measured) m.detail = "a leg never reached a quiet membership before its end";
    OracleResult by{"cost: bytes/node/s"};
    std::snprintf(buf, sizeof(buf), "%.0f at %zu -> %.0f at %zu", small.cost.bytes_per_node_s,
                  small.nodes, large.cost.bytes_per_node_s, large.nodes);
    by.value = buf;
    const double limit = 1.25 * small.cost.bytes_per_node_s + large.pushpull_allowance_bytes;
    std::snprintf(buf, sizeof(buf), "<= %.0f (1.25x + push-pull %.0f)", limit,
                  large.pushpull_allowance_bytes);
    by.bound = buf;
    by.value_num = large.cost.bytes_per_node_s;
    by.bound_num = limit;
    by.pass = measured && by.value_num <= limit;
    o.results.push_back(m);
    o.results.push_back(by);
  }
  o.trace_hash = hash;
  o.pass =
      std::all_of(o.results.begin(), o.results.end(), [](const OracleResult& r) { return r.pass; });
  return o;
}

}  // namespace tally::sim

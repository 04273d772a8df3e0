#include "sim/swarm.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>

#include "membership/ring.h"
#include "membership/timing.h"
#include "sim/scenarios.h"

namespace tally::sim {
namespace {

using Kind = SwarmFault::Kind;
using Shape = SwarmFault::Shape;
using core::PartitionPolicy;

TrueNs S(double seconds) { return static_cast<TrueNs>(std::llround(seconds * 1e9)); }
TrueNs Ms(int64_t ms) { return ms * kNsPerMs; }

// Streams of a seed's draw (DeriveSeed(seed, tag)), apart from the
// simulator's own (1, 2, 3, 100+, 10'000+).
constexpr uint64_t kStreamSize = 0x5a17'0001;
constexpr uint64_t kStreamPolicy = 0x5a17'0002;
constexpr uint64_t kStreamWorkload = 0x5a17'0003;
constexpr uint64_t kStreamNetwork = 0x5a17'0004;
constexpr uint64_t kStreamClocks = 0x5a17'0005;
constexpr uint64_t kStreamFaults = 0x5a17'0006;

std::string Fmt(const char* format, ...) __attribute__((format(printf, 1, 2)));
std::string Fmt(const char* format, ...) {
  char buf[512];
  va_list args;
  va_start(args, format);
  std::vsnprintf(buf, sizeof(buf), format, args);
  va_end(args);
  return buf;
}

std::string Sec(TrueNs ns) { return Fmt("%.3f s", static_cast<double>(ns) / 1e9); }

// The configuration every swarm run shares (node defaults, R = 3), without
// the timeline: what the timing terms are computed from.
SimConfig BaseConfig(const SwarmCase& c) {
  SimConfig s;
  s.seed = c.seed;
  s.nodes = c.nodes;
  s.node.replicas = 3;
  s.node.record_decisions = true;
  s.node.partition_policy = c.policy;
  s.link = c.link;
  s.start_spread_ns = c.nodes <= 100 ? S(2) : S(5);
  return s;
}

size_t Joins(const SwarmCase& c) {
  return static_cast<size_t>(std::count_if(
      c.faults.begin(), c.faults.end(), [](const SwarmFault& f) { return f.kind == Kind::kJoin; }));
}

// Every host the run will ever have: the timing terms use it as n (they grow with n).
size_t MaxHosts(const SwarmCase& c) { return c.nodes + Joins(c); }

TrueNs ProbeNs(const SimConfig& s) { return s.node.swim.probe_interval_ms * kNsPerMs; }

TrueNs LastDeadNs(const SimConfig& s, size_t n) { return S(LastDeadBoundS(s, n)); }

// When the sides of an episode have found each other again.
TrueNs MergeNs(const SimConfig& s, size_t n, TrueNs heal) {
  return heal + Reconnect(s, n) + Dissemination(s, n);
}

// When a fault and what it set off are over (traffic runs until the last).
TrueNs RecoveryEnd(const SwarmFault& f, const SimConfig& s, size_t n) {
  const TrueNs handoff = s.node.handoff_timeout_ms * kNsPerMs;
  switch (f.kind) {
    case Kind::kPartition:
      return MergeNs(s, n, f.until_ns);
    case Kind::kCrash:
      return f.until_ns >= 0 ? f.until_ns + handoff + Dissemination(s, n) : f.at_ns + S(2);
    case Kind::kLeave:
      return f.at_ns + S(5) + Dissemination(s, n);
    case Kind::kJoin:
      return f.at_ns + handoff + Dissemination(s, n);
    case Kind::kLoss:
    case Kind::kDuplicate:
    case Kind::kJitter:
      return f.until_ns + s.node.replication_retry_ms * kNsPerMs + S(1);
    case Kind::kClockStep:
      return (f.until_ns >= 0 ? f.until_ns : f.at_ns) + S(1);
    case Kind::kDrift:
      return f.at_ns;
    case Kind::kSlow:
      return f.until_ns + 3 * ProbeNs(s);
  }
  return f.at_ns;
}

// The convergence bound, measured from quiesce (the scenarios' formula):
// ConvergenceBase, plus what remains at quiesce of a partition's reconnect
// and of a crash's detection (until every member marks it dead).
TrueNs ConvergenceBound(const SwarmCase& c, const SimConfig& s, TrueNs quiesce) {
  const size_t n = MaxHosts(c);
  TrueNs remaining = 0;
  for (const SwarmFault& f : c.faults) {
    if (f.kind == Kind::kPartition) {
      remaining = std::max(remaining, f.until_ns + Reconnect(s, n) - quiesce);
    } else if (f.kind == Kind::kCrash && f.until_ns < 0) {
      remaining = std::max(remaining, f.at_ns + LastDeadNs(s, n) - quiesce);
    }
  }
  return ConvergenceBase(s) + remaining;
}

bool Overlap(TrueNs a0, TrueNs a1, TrueNs b0, TrueNs b1) { return a0 <= b1 && b0 <= a1; }

// Host h serves (up, or leaving for at most 5 s) at some time in [from, to]?
bool ServingDuring(const SwarmCase& c, uint32_t h, TrueNs from, TrueNs to) {
  if (h >= c.nodes) return true;                // a joined host: no faults of its own
  std::vector<std::pair<TrueNs, TrueNs>> down;  // [a, b)
  for (const SwarmFault& f : c.faults) {
    if (f.host < 0 || static_cast<uint32_t>(f.host) != h) continue;
    if (f.kind == Kind::kCrash) down.push_back({f.at_ns, f.until_ns >= 0 ? f.until_ns : INT64_MAX});
    if (f.kind == Kind::kLeave) down.push_back({f.at_ns + S(5), INT64_MAX});
  }
  std::sort(down.begin(), down.end());
  TrueNs covered = from;  // every instant in [from, covered) is down
  for (const auto& [a, b] : down) {
    if (a > covered) return true;
    covered = std::max(covered, b);
    if (covered > to) return false;
  }
  return true;
}

size_t ServingAt(const SwarmCase& c, TrueNs t) {
  size_t n = 0;
  for (uint32_t h = 0; h < c.nodes; ++h) n += ServingDuring(c, h, t, t) ? 1 : 0;
  for (const SwarmFault& f : c.faults) n += f.kind == Kind::kJoin && f.at_ns <= t ? 1 : 0;
  return n;
}

Network::Matrix MatrixOf(const SwarmFault& f) {
  Network::Matrix m{};
  const int k = static_cast<int>(f.groups.size());
  for (int g = 0; g < k; ++g) m[g][g] = true;
  if (f.shape == Shape::kBridge) {
    for (int g = 0; g + 1 < k; ++g) m[g][k - 1] = m[k - 1][g] = true;
  } else if (f.shape == Shape::kOneWay) {
    m[1][0] = true;  // group 1 still reaches group 0; 0 -> 1 is cut
  }
  return m;
}

std::vector<PartitionEpisode> EpisodesOf(const SwarmCase& c) {
  const SimConfig s = BaseConfig(c);
  const size_t hosts = MaxHosts(c);
  std::vector<PartitionEpisode> out;
  for (const SwarmFault& f : c.faults) {
    if (f.kind != Kind::kPartition) continue;
    PartitionEpisode e;
    e.cut_ns = f.at_ns;
    e.heal_ns = f.until_ns;
    e.merge_ns = MergeNs(s, hosts, f.until_ns);
    const size_t n = std::max<size_t>(2, ServingAt(c, f.at_ns));
    const double periods = membership::timing::WorstCaseFirstProbeRoundRobinPeriods(n) + 1;
    e.detect_ns = f.at_ns + static_cast<TrueNs>(periods * static_cast<double>(ProbeNs(s))) +
                  Dissemination(s, n);
    const Network::Matrix m = MatrixOf(f);
    std::vector<bool> serving(f.groups.size(), false);
    for (size_t g = 0; g < f.groups.size(); ++g) {
      for (uint32_t h : f.groups[g]) {
        if (ServingDuring(c, h, f.at_ns, f.until_ns)) serving[g] = true;
      }
      e.groups += serving[g] ? 1 : 0;
    }
    // A bridge: a serving group that both reaches and hears two serving
    // groups that cannot reach each other both ways.
    const int k = static_cast<int>(f.groups.size());
    for (int g = 0; g < k; ++g) {
      if (!serving[g]) continue;
      bool bridge = false;
      for (int x = 0; x < k && !bridge; ++x) {
        for (int y = x + 1; y < k && !bridge; ++y) {
          if (x == g || y == g || !serving[x] || !serving[y]) continue;
          const bool sees_both = m[g][x] && m[x][g] && m[g][y] && m[y][g];
          const bool apart = !(m[x][y] && m[y][x]);
          bridge = sees_both && apart;
        }
      }
      e.bridges += bridge ? 1 : 0;
    }
    out.push_back(e);
  }
  return out;
}

const char* PolicyName(PartitionPolicy p) {
  switch (p) {
    case PartitionPolicy::kAvailability:
      return "availability";
    case PartitionPolicy::kProportional:
      return "proportional";
    case PartitionPolicy::kClosed:
      return "closed";
  }
  return "?";
}

std::string ShapeName(const SwarmFault& f) {
  switch (f.shape) {
    case Shape::kBridge:
      return "bridge";
    case Shape::kOneWay:
      return "one-way";
    case Shape::kSides:
      break;
  }
  if (f.groups.size() >= 3) return "sides";
  const size_t a = f.groups[0].size(), b = f.groups[1].size();
  if ((a == 1 || b == 1) && a + b > 3) return "isolated";
  if (a == b || a + 1 == b || b + 1 == a) return "halves";
  return "uneven";
}

std::string HostList(const std::vector<uint32_t>& hosts, size_t most) {
  std::string s = "{";
  for (size_t i = 0; i < hosts.size() && i < most; ++i) s += (i ? " " : "") + HostIdOf(hosts[i]);
  if (hosts.size() > most) s += Fmt(" +%zu more", hosts.size() - most);
  return s + "}";
}

// The workload's keys and the host owning each of the busiest (initial ring).
std::vector<KeySpec> KeysOfCase(const SwarmCase& c) {
  WorkloadConfig w = c.workload;
  return Workload(w, WorkloadSeed(c.seed)).keys();
}

uint32_t OwnerAmong(const KeySpec& key, size_t nodes) {
  std::vector<membership::RingMember> members;
  for (uint32_t i = 0; i < nodes; ++i) members.push_back({HostIdOf(i), HostAddressOf(i, 0), 1.0});
  const membership::Ring ring(std::move(members));
  const std::string id = ring.PreferenceIds(key.id, 1).front();
  return static_cast<uint32_t>(std::stoul(id.substr(1)));
}

// ---- drawing helpers

int64_t LogUniform(Random& r, int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  const double x = std::exp(
      std::log(static_cast<double>(lo)) +
      r.Unit() * (std::log(static_cast<double>(hi) + 1) - std::log(static_cast<double>(lo))));
  return std::clamp<int64_t>(static_cast<int64_t>(x), lo, hi);
}

size_t Pick(Random& r, const std::vector<uint32_t>& weights) {
  uint64_t total = 0;
  for (uint32_t w : weights) total += w;
  uint64_t x = r.Below(total);
  for (size_t i = 0; i < weights.size(); ++i) {
    if (x < weights[i]) return i;
    x -= weights[i];
  }
  return weights.size() - 1;
}

// Uniform in [lo, hi] ms, as ns.
TrueNs AtMs(Random& r, TrueNs lo, TrueNs hi) {
  return Ms(r.Range(lo / kNsPerMs, std::max(lo, hi) / kNsPerMs));
}

std::vector<std::vector<uint32_t>> Split(const std::vector<uint32_t>& order,
                                         const std::vector<size_t>& sizes) {
  std::vector<std::vector<uint32_t>> groups;
  size_t i = 0;
  for (size_t s : sizes) {
    std::vector<uint32_t> g(order.begin() + static_cast<std::ptrdiff_t>(i),
                            order.begin() + static_cast<std::ptrdiff_t>(i + s));
    std::sort(g.begin(), g.end());
    groups.push_back(std::move(g));
    i += s;
  }
  return groups;
}

// k positive sizes summing to n, random cut points.
std::vector<size_t> RandomSizes(Random& r, size_t n, size_t k) {
  std::vector<size_t> cuts;
  std::set<size_t> used;
  while (cuts.size() + 1 < k) {
    const size_t c = 1 + static_cast<size_t>(r.Below(n - 1));
    if (used.insert(c).second) cuts.push_back(c);
  }
  std::sort(cuts.begin(), cuts.end());
  std::vector<size_t> sizes;
  size_t prev = 0;
  for (size_t c : cuts) {
    sizes.push_back(c - prev);
    prev = c;
  }
  sizes.push_back(n - prev);
  return sizes;
}

SwarmFault DrawPartition(Random& r, size_t n, uint32_t busy_owner, TrueNs from, TrueNs to) {
  SwarmFault f;
  f.kind = Kind::kPartition;
  f.at_ns = AtMs(r, from, to);
  f.until_ns = f.at_ns + AtMs(r, S(3), S(15));
  std::vector<uint32_t> order(n);
  for (uint32_t i = 0; i < n; ++i) order[i] = i;
  r.Shuffle(&order);
  // halves, uneven, k sides, bridge, one-way, isolated node
  const size_t shape = Pick(r, {18, 14, 14, 20, 16, 18});
  switch (shape) {
    case 0:
      f.groups = Split(order, {n / 2, n - n / 2});
      break;
    case 1:
      f.groups = Split(order, RandomSizes(r, n, 2));
      break;
    case 2: {
      const size_t k = n < 3 ? 2 : static_cast<size_t>(r.Range(3, std::min<int64_t>(6, n)));
      f.groups = Split(order, RandomSizes(r, n, k));
      break;
    }
    case 3: {
      f.shape = Shape::kBridge;
      const size_t bridge = static_cast<size_t>(r.Range(1, std::max<int64_t>(1, n / 5)));
      const size_t sides = n - bridge >= 5 && r.Chance(0.3) ? 3 : 2;
      std::vector<size_t> sizes = RandomSizes(r, n - bridge, sides);
      sizes.push_back(bridge);
      f.groups = Split(order, sizes);
      break;
    }
    case 4:
      f.shape = Shape::kOneWay;
      f.groups = Split(
          order, r.Chance(0.5) ? std::vector<size_t>{n / 2, n - n / 2} : RandomSizes(r, n, 2));
      break;
    default: {
      const uint32_t alone = r.Chance(0.5) ? busy_owner : static_cast<uint32_t>(r.Below(n));
      std::vector<uint32_t> rest;
      for (uint32_t i = 0; i < n; ++i) {
        if (i != alone) rest.push_back(i);
      }
      f.groups = {rest, {alone}};
      break;
    }
  }
  return f;
}

SwarmFault DrawFault(Random& r, const SwarmCase& c, const std::vector<uint32_t>& busy_owners,
                     TrueNs from, TrueNs to) {
  const size_t n = c.nodes;
  auto victim = [&]() -> int {
    if (!busy_owners.empty() && r.Chance(0.5)) {
      return static_cast<int>(busy_owners[r.Below(busy_owners.size())]);
    }
    return static_cast<int>(r.Below(n));
  };
  SwarmFault f;
  // partition, crash, leave, join, loss, duplicate, jitter, clock step, drift, slow
  const size_t kind = Pick(r, {24, 22, 6, 6, 9, 4, 5, 9, 4, 11});
  switch (kind) {
    case 0:
      return DrawPartition(r, n, busy_owners.empty() ? 0 : busy_owners[0], from, to);
    case 1:
      f.kind = Kind::kCrash;
      f.host = victim();
      f.at_ns = AtMs(r, from, to);
      if (r.Chance(0.65)) {
        f.until_ns = f.at_ns + AtMs(r, S(2), S(10));
        f.new_address = r.Chance(0.5);
      }
      return f;
    case 2:
      f.kind = Kind::kLeave;
      f.host = victim();
      f.at_ns = AtMs(r, from, to);
      return f;
    case 3:
      f.kind = Kind::kJoin;
      f.at_ns = AtMs(r, from, to);
      return f;
    case 4: {
      static constexpr int kLossPerMille[] = {10, 30, 50, 100, 200, 300};
      f.kind = Kind::kLoss;
      f.rate = kLossPerMille[r.Below(std::size(kLossPerMille))] / 1000.0;
      f.at_ns = AtMs(r, from, to);
      f.until_ns = f.at_ns + AtMs(r, S(2), S(15));
      return f;
    }
    case 5:
      f.kind = Kind::kDuplicate;
      f.rate = static_cast<double>(r.Range(5, 100)) / 1000.0;
      f.at_ns = AtMs(r, from, to);
      f.until_ns = f.at_ns + AtMs(r, S(2), S(15));
      return f;
    case 6:
      f.kind = Kind::kJitter;
      f.jitter_median_ns = r.Range(200, 3000) * 1000;
      f.jitter_cap_ns = std::max<int64_t>(3 * f.jitter_median_ns, r.Range(5, 40) * kNsPerMs);
      f.at_ns = AtMs(r, from, to);
      f.until_ns = f.at_ns + AtMs(r, S(2), S(15));
      return f;
    case 7: {
      f.kind = Kind::kClockStep;
      f.host = victim();
      const size_t size = Pick(r, {40, 30, 30});
      const int64_t magnitude = size == 0   ? r.Range(100, 900)
                                : size == 1 ? r.Range(1000, 5000)
                                            : r.Range(30'000, 120'000);
      f.step_ms = r.Chance(0.5) ? magnitude : -magnitude;
      f.at_ns = AtMs(r, from, to);
      if (r.Chance(0.6)) f.until_ns = f.at_ns + AtMs(r, S(2), S(12));
      return f;
    }
    case 8:
      f.kind = Kind::kDrift;
      f.host = victim();
      f.drift_ppm = static_cast<double>(r.Range(20, 500) * (r.Chance(0.5) ? 1 : -1));
      f.at_ns = AtMs(r, from, to);
      return f;
    default:
      f.kind = Kind::kSlow;
      f.host = victim();
      f.service_ns = r.Chance(0.7) ? r.Range(100, 3000) * 1000 : 0;
      f.tick_lag_ns = r.Chance(0.7) ? r.Range(5, 200) * kNsPerMs : 0;
      if (r.Chance(0.6)) {
        f.stall_every_ns = r.Range(2000, 6000) * kNsPerMs;
        f.stall_ns = r.Range(200, 1500) * kNsPerMs;
      }
      if (f.service_ns == 0 && f.tick_lag_ns == 0 && f.stall_ns == 0) f.service_ns = kNsPerMs;
      f.at_ns = AtMs(r, from, to);
      f.until_ns = f.at_ns + AtMs(r, S(3), S(15));
      return f;
  }
}

void SortFaults(std::vector<SwarmFault>* faults) {
  std::stable_sort(faults->begin(), faults->end(),
                   [](const SwarmFault& a, const SwarmFault& b) { return a.at_ns < b.at_ns; });
}

// Slow episodes' stalls as decider movers: 2 per stall (away and back), a
// slow episode without stalls as one stall.
int StallMoves(const SwarmFault& f) {
  int64_t stalls = 1;
  if (f.stall_every_ns > 0 && f.stall_ns > 0) {
    stalls = std::max<int64_t>(1, (f.until_ns - f.at_ns) / f.stall_every_ns + 1);
  }
  return static_cast<int>(2 * stalls);
}

bool HasKind(const SwarmCase& c, Kind k) {
  return std::any_of(c.faults.begin(), c.faults.end(),
                     [k](const SwarmFault& f) { return f.kind == k; });
}

bool HasClockFaults(const SwarmCase& c) {
  return c.clock_offset_max_ms > 0 || c.clock_drift_max_ppm > 0 || !c.clock_offsets_ms.empty() ||
         HasKind(c, Kind::kClockStep) || HasKind(c, Kind::kDrift);
}

}  // namespace

// ---------------------------------------------------------------- drawing

SwarmCase DrawCase(uint64_t seed, size_t max_nodes) {
  max_nodes = std::max<size_t>(3, max_nodes);
  SwarmCase c;
  c.seed = seed;
  {
    Random r(DeriveSeed(seed, kStreamSize));
    const auto top = static_cast<int64_t>(max_nodes);
    const size_t band = Pick(r, {60, 30, 10});
    const int64_t lo = band == 0 ? 3 : band == 1 ? 17 : 65;
    const int64_t hi = band == 0 ? 16 : band == 1 ? 64 : top;
    c.nodes = static_cast<size_t>(LogUniform(r, std::min(lo, top), std::min(hi, top)));
    if (lo > top) c.nodes = static_cast<size_t>(LogUniform(r, 3, top));
  }
  {
    Random r(DeriveSeed(seed, kStreamPolicy));
    const size_t p = Pick(r, {80, 10, 10});
    c.policy = p == 0   ? PartitionPolicy::kAvailability
               : p == 1 ? PartitionPolicy::kProportional
                        : PartitionPolicy::kClosed;
  }
  {
    Random r(DeriveSeed(seed, kStreamWorkload));
    WorkloadConfig& w = c.workload;
    w.keys = static_cast<size_t>(LogUniform(r, 10, 2000));
    w.zipf = r.Chance(0.7);
    w.zipf_s = w.zipf ? static_cast<double>(r.Range(60, 160)) / 100.0 : 1.1;
    static constexpr uint64_t kWindows[] = {1000, 2000, 5000, 10000, 30000, 60000};
    w.windows_ms.clear();
    const size_t nw = 1 + static_cast<size_t>(r.Below(3));
    while (w.windows_ms.size() < nw) {
      const uint64_t x = kWindows[r.Below(std::size(kWindows))];
      if (std::find(w.windows_ms.begin(), w.windows_ms.end(), x) == w.windows_ms.end()) {
        w.windows_ms.push_back(x);
      }
    }
    std::sort(w.windows_ms.begin(), w.windows_ms.end());
    if (r.Chance(0.3)) {
      static constexpr uint64_t kHotLimits[] = {1, 3, 10, 50, 200};
      w.hot_key_share = static_cast<double>(r.Range(10, 60)) / 100.0;
      w.hot_key_limit = kHotLimits[r.Below(std::size(kHotLimits))];
      w.hot_key_window_ms = w.windows_ms[r.Below(w.windows_ms.size())];
    }
    const int64_t per_node = LogUniform(r, 3, 40);
    w.rate_per_s =
        static_cast<double>(std::min<int64_t>(per_node * static_cast<int64_t>(c.nodes), 1200));
    w.bursty = r.Chance(0.4);
    if (w.bursty) {
      w.burst_factor = static_cast<double>(r.Range(2, 8));
      w.burst_on_ms = static_cast<double>(r.Range(100, 600));
      w.burst_off_ms = static_cast<double>(r.Range(400, 3000));
    }
    w.max_batch = r.Chance(0.5) ? 1 : static_cast<size_t>(r.Range(2, 4));
    switch (Pick(r, {40, 20, 25, 15})) {
      case 0:
        w.hits = {{1, 80}, {2, 10}, {5, 5}, {0, 5}};
        break;
      case 1:
        w.hits = {{1, 1}};
        break;
      case 2:
        w.hits = {{1, 50}, {3, 20}, {10, 10}, {0, 20}};
        break;
      default:
        w.hits = {{0, 50}, {1, 50}};
        break;
    }
  }
  {
    Random r(DeriveSeed(seed, kStreamNetwork));
    c.link.jitter_median_ns = r.Range(20, 200) * 1000;
    c.link.jitter_sigma = static_cast<double>(r.Range(50, 150)) / 100.0;
  }
  {
    Random r(DeriveSeed(seed, kStreamClocks));
    if (r.Chance(0.4)) c.clock_offset_max_ms = r.Range(20, 200);
    if (r.Chance(0.4)) c.clock_drift_max_ppm = r.Range(5, 100);
    if (r.Chance(0.1)) {
      const int host = static_cast<int>(r.Below(c.nodes));
      const int64_t ms = r.Range(1000, 3000);
      c.clock_offsets_ms.push_back({host, r.Chance(0.5) ? ms : -ms});
    }
  }
  {
    Random r(DeriveSeed(seed, kStreamFaults));
    const SwarmTimeline t0 = TimelineOf(c);
    // 6% of seeds run fault-free (and are held to the exact oracle when
    // their clocks are ideal); the rest draw 1..8 faults.
    const size_t count = Pick(r, {6, 20, 24, 18, 13, 9, 5, 3, 2});
    const TrueNs from = t0.warmup_ns + S(1);
    const TrueNs phase = S(std::min<double>(6 + 3 * static_cast<double>(count), 24));
    std::vector<uint32_t> busy_owners;
    {
      const std::vector<KeySpec> keys = KeysOfCase(c);
      std::vector<size_t> order(keys.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t a, size_t b) { return keys[a].share > keys[b].share; });
      for (size_t i = 0; i < order.size() && i < 5; ++i) {
        busy_owners.push_back(OwnerAmong(keys[order[i]], c.nodes));
      }
    }
    for (size_t i = 0; i < count; ++i) {
      for (int attempt = 0; attempt < 30; ++attempt) {
        SwarmCase next = c;
        next.faults.push_back(DrawFault(r, c, busy_owners, from, from + phase));
        SortFaults(&next.faults);
        std::string why;
        if (ValidCase(next, &why)) {
          c = std::move(next);
          break;
        }
      }
    }
  }
  return c;
}

// ---------------------------------------------------------------- timeline

SwarmTimeline TimelineOf(const SwarmCase& c) {
  const SimConfig s = BaseConfig(c);
  const size_t n = MaxHosts(c);
  SwarmTimeline t;
  t.warmup_ns = Warmup(c.nodes);
  TrueNs last = t.warmup_ns + S(4);
  for (const SwarmFault& f : c.faults) last = std::max(last, RecoveryEnd(f, s, n));
  t.quiesce_ns = last + S(1);
  const TrueNs conv = ConvergenceBound(c, s, t.quiesce_ns);
  t.end_ns = t.quiesce_ns + std::min(conv, S(30)) + S(2);
  t.settle_ns = t.quiesce_ns + S(1);
  // Small clusters also watch a permanent crash until every member must
  // have marked it dead (the all-mark-dead oracle); large ones cannot afford it.
  if (c.nodes <= 16) {
    for (const SwarmFault& f : c.faults) {
      if (f.kind == Kind::kCrash && f.until_ns < 0) {
        t.settle_ns = std::max(t.settle_ns, f.at_ns + LastDeadNs(s, n) + S(1));
      }
    }
  }
  t.end_ns = std::max(t.end_ns, t.settle_ns);
  return t;
}

bool ValidCase(const SwarmCase& c, std::string* why) {
  auto fail = [&](std::string s) {
    if (why != nullptr) *why = std::move(s);
    return false;
  };
  if (c.nodes < 3) return fail("fewer than 3 nodes");
  if (c.workload.keys == 0 || c.workload.windows_ms.empty()) return fail("no keys or windows");
  const SimConfig s = BaseConfig(c);
  const size_t hosts = MaxHosts(c);
  const TrueNs earliest = Warmup(c.nodes) + S(1);
  for (size_t i = 0; i < c.faults.size(); ++i) {
    const SwarmFault& f = c.faults[i];
    const std::string at = "fault " + std::to_string(i + 1) + " (" + Sec(f.at_ns) + "): ";
    if (f.at_ns < earliest) return fail(at + "before the cluster formed");
    if (i > 0 && f.at_ns < c.faults[i - 1].at_ns) return fail(at + "faults out of order");
    const bool needs_host = f.kind == Kind::kCrash || f.kind == Kind::kLeave ||
                            f.kind == Kind::kClockStep || f.kind == Kind::kDrift ||
                            f.kind == Kind::kSlow;
    if (needs_host && (f.host < 0 || static_cast<size_t>(f.host) >= c.nodes)) {
      return fail(at + "no such initial host");
    }
    const bool needs_until = f.kind == Kind::kPartition || f.kind == Kind::kLoss ||
                             f.kind == Kind::kDuplicate || f.kind == Kind::kJitter ||
                             f.kind == Kind::kSlow;
    if (needs_until && f.until_ns <= f.at_ns) return fail(at + "ends before it starts");
    if (!needs_until && f.until_ns >= 0 && f.until_ns <= f.at_ns) {
      return fail(at + "restores before it starts");
    }
    if ((f.kind == Kind::kLoss || f.kind == Kind::kDuplicate) && !(f.rate > 0 && f.rate < 1)) {
      return fail(at + "rate outside (0, 1)");
    }
    if (f.kind == Kind::kJitter &&
        (f.jitter_median_ns <= 0 || f.jitter_cap_ns < f.jitter_median_ns)) {
      return fail(at + "bad jitter");
    }
    if (f.kind == Kind::kPartition) {
      const size_t k = f.groups.size();
      if (k < 2 || k > static_cast<size_t>(Network::kMaxGroups)) return fail(at + "2 to 8 groups");
      if (f.shape == Shape::kOneWay && k != 2) return fail(at + "a one-way cut has 2 groups");
      if (f.shape == Shape::kBridge && k < 3) return fail(at + "a bridge needs 2 sides");
      std::set<uint32_t> seen;
      for (const auto& g : f.groups) {
        if (g.empty()) return fail(at + "empty group");
        for (uint32_t h : g) {
          if (h >= c.nodes || !seen.insert(h).second) return fail(at + "bad host in groups");
        }
      }
      if (seen.size() != c.nodes) return fail(at + "every initial host must be in a group");
    }
  }
  // Partition episodes apart; no join or restart during one.
  std::vector<std::pair<TrueNs, TrueNs>> episodes;
  for (const SwarmFault& f : c.faults) {
    if (f.kind == Kind::kPartition) episodes.push_back({f.at_ns, MergeNs(s, hosts, f.until_ns)});
  }
  for (size_t i = 1; i < episodes.size(); ++i) {
    if (episodes[i].first <= episodes[i - 1].second) {
      return fail("partitions at " + Sec(episodes[i - 1].first) + " and " + Sec(episodes[i].first) +
                  " overlap (merge allowance included)");
    }
  }
  for (const SwarmFault& f : c.faults) {
    std::vector<TrueNs> starts;
    if (f.kind == Kind::kJoin) starts.push_back(f.at_ns);
    if (f.kind == Kind::kCrash && f.until_ns >= 0) starts.push_back(f.until_ns);
    for (TrueNs t : starts) {
      for (const auto& [cut, merge] : episodes) {
        if (t >= cut - S(1) && t <= merge) {
          return fail("a join or restart at " + Sec(t) + " inside the partition episode from " +
                      Sec(cut));
        }
      }
    }
  }
  // Per host: crashes, restarts and leaves consistent; slow and clock
  // episodes on one host apart; network episodes apart.
  std::map<int, std::vector<std::pair<TrueNs, TrueNs>>> down;  // host -> [from, to)
  for (const SwarmFault& f : c.faults) {
    if (f.kind == Kind::kCrash) {
      down[f.host].push_back({f.at_ns, f.until_ns >= 0 ? f.until_ns : INT64_MAX});
    } else if (f.kind == Kind::kLeave) {
      down[f.host].push_back({f.at_ns, INT64_MAX});
    }
  }
  for (auto& [host, v] : down) {
    std::sort(v.begin(), v.end());
    for (size_t i = 1; i < v.size(); ++i) {
      if (v[i].first <= v[i - 1].second) {
        return fail(HostIdOf(static_cast<uint32_t>(host)) + " crashes or leaves while down");
      }
    }
  }
  // A majority of the initial hosts up at every instant.
  std::vector<std::pair<TrueNs, int>> edges;
  for (const auto& [host, v] : down) {
    for (const auto& [a, b] : v) {
      edges.push_back({a, +1});
      if (b != INT64_MAX) edges.push_back({b, -1});
    }
  }
  std::sort(edges.begin(), edges.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : a.second < b.second;  // ups first
  });
  int now_down = 0;
  const int most_down = static_cast<int>((c.nodes - 1) / 2);
  for (const auto& [t, d] : edges) {
    now_down += d;
    if (now_down > most_down) {
      return fail("at " + Sec(t) + " " + std::to_string(now_down) + " of " +
                  std::to_string(c.nodes) + " initial nodes are down (a majority must stay up)");
    }
  }
  auto apart = [&](Kind kind, bool per_host) -> bool {
    std::map<int, std::vector<std::pair<TrueNs, TrueNs>>> by;
    for (const SwarmFault& f : c.faults) {
      if (f.kind != kind) continue;
      by[per_host ? f.host : 0].push_back({f.at_ns, f.until_ns >= 0 ? f.until_ns : f.at_ns});
    }
    for (auto& [h, v] : by) {
      std::sort(v.begin(), v.end());
      for (size_t i = 1; i < v.size(); ++i) {
        if (v[i].first <= v[i - 1].second) return false;
      }
    }
    return true;
  };
  if (!apart(Kind::kLoss, false) || !apart(Kind::kDuplicate, false) ||
      !apart(Kind::kJitter, false)) {
    return fail("two loss, duplication or jitter episodes overlap");
  }
  if (!apart(Kind::kSlow, true) || !apart(Kind::kClockStep, true)) {
    return fail("two slow or clock-step episodes of one host overlap");
  }
  return true;
}

SimConfig ConfigOf(const SwarmCase& c) {
  SimConfig s = BaseConfig(c);
  const SwarmTimeline t = TimelineOf(c);
  s.duration_ns = t.end_ns;
  s.end_when_settled_ns = t.settle_ns;
  s.clock_offset_max_ms = c.clock_offset_max_ms;
  s.clock_drift_max_ppm = c.clock_drift_max_ppm;
  s.clock_offsets_ms = c.clock_offsets_ms;
  s.workload = c.workload;
  s.workload.start_ns = t.warmup_ns;
  s.workload.end_ns = t.quiesce_ns;
  s.quiesce_ns = t.quiesce_ns;
  s.inspect_interval_ns = c.nodes <= 100   ? 50 * kNsPerMs
                          : c.nodes <= 300 ? 200 * kNsPerMs
                                           : kNsPerS;
  s.ownership_sample_keys = c.nodes <= 100 ? 64 : 16;
  uint32_t next_join = static_cast<uint32_t>(c.nodes);
  using FK = FaultAction::Kind;
  auto action = [](FK kind, TrueNs at, int host, std::string label) {
    FaultAction a;
    a.kind = kind;
    a.at_ns = at;
    a.host = host;
    a.label = std::move(label);
    return a;
  };
  for (const SwarmFault& f : c.faults) {
    const std::string host = f.host >= 0 ? HostIdOf(static_cast<uint32_t>(f.host)) : "";
    switch (f.kind) {
      case Kind::kPartition: {
        FaultAction a = action(FK::kPartition, f.at_ns, -1, "partition: " + ShapeName(f));
        a.groups.assign(c.nodes, 0);
        for (size_t g = 0; g < f.groups.size(); ++g) {
          for (uint32_t h : f.groups[g]) a.groups[h] = static_cast<int>(g);
        }
        a.allowed = MatrixOf(f);
        s.faults.push_back(a);
        s.faults.push_back(action(FK::kHeal, f.until_ns, -1, "heal"));
        break;
      }
      case Kind::kCrash:
        s.faults.push_back(action(FK::kCrash, f.at_ns, f.host, "crash " + host));
        if (f.until_ns >= 0) {
          FaultAction a = action(FK::kRestart, f.until_ns, f.host,
                                 "restart " + host + (f.new_address ? " (new address)" : ""));
          a.new_address = f.new_address;
          s.faults.push_back(a);
        }
        break;
      case Kind::kLeave:
        s.faults.push_back(action(FK::kLeave, f.at_ns, f.host, "leave " + host));
        break;
      case Kind::kJoin:
        s.faults.push_back(action(FK::kJoin, f.at_ns, -1, "join " + HostIdOf(next_join++)));
        break;
      case Kind::kLoss: {
        FaultAction a = action(FK::kSetLoss, f.at_ns, -1, Fmt("loss %g%%", 100 * f.rate));
        a.value = f.rate;
        s.faults.push_back(a);
        FaultAction b = action(FK::kSetLoss, f.until_ns, -1, "loss off");
        b.value = c.link.loss;
        s.faults.push_back(b);
        break;
      }
      case Kind::kDuplicate: {
        FaultAction a = action(FK::kSetDuplicate, f.at_ns, -1, Fmt("duplicate %g%%", 100 * f.rate));
        a.value = f.rate;
        s.faults.push_back(a);
        FaultAction b = action(FK::kSetDuplicate, f.until_ns, -1, "duplicate off");
        b.value = c.link.duplicate;
        s.faults.push_back(b);
        break;
      }
      case Kind::kJitter: {
        FaultAction a = action(FK::kSetJitter, f.at_ns, -1, "jitter up");
        a.jitter_median_ns = f.jitter_median_ns;
        a.jitter_cap_ns = f.jitter_cap_ns;
        s.faults.push_back(a);
        FaultAction b = action(FK::kSetJitter, f.until_ns, -1, "jitter back");
        b.jitter_median_ns = c.link.jitter_median_ns;
        b.jitter_cap_ns = c.link.jitter_cap_ns;
        s.faults.push_back(b);
        break;
      }
      case Kind::kClockStep: {
        FaultAction a =
            action(FK::kClockJump, f.at_ns, f.host,
                   Fmt("clock %s %+lld ms", host.c_str(), static_cast<long long>(f.step_ms)));
        a.value_ms = f.step_ms;
        s.faults.push_back(a);
        if (f.until_ns >= 0) {
          FaultAction b =
              action(FK::kClockJump, f.until_ns, f.host,
                     Fmt("clock %s %+lld ms", host.c_str(), static_cast<long long>(-f.step_ms)));
          b.value_ms = -f.step_ms;
          s.faults.push_back(b);
        }
        break;
      }
      case Kind::kDrift: {
        FaultAction a = action(FK::kSetDrift, f.at_ns, f.host,
                               Fmt("drift %s %+g ppm", host.c_str(), f.drift_ppm));
        a.value = f.drift_ppm;
        s.faults.push_back(a);
        break;
      }
      case Kind::kSlow: {
        FaultAction a = action(FK::kSlow, f.at_ns, f.host, "slow " + host);
        a.service_ns = f.service_ns;
        a.tick_lag_ns = f.tick_lag_ns;
        a.stall_every_ns = f.stall_every_ns;
        a.stall_ns = f.stall_ns;
        s.faults.push_back(a);
        s.faults.push_back(action(FK::kUnslow, f.until_ns, f.host, "fast " + host));
        break;
      }
    }
  }
  std::stable_sort(s.faults.begin(), s.faults.end(),
                   [](const FaultAction& a, const FaultAction& b) { return a.at_ns < b.at_ns; });
  return s;
}

// ---------------------------------------------------------------- the rule

std::vector<DeciderPiece> DeciderPiecesFor(const std::vector<PartitionEpisode>& episodes,
                                           PartitionPolicy policy) {
  std::vector<DeciderPiece> pieces;
  for (const PartitionEpisode& e : episodes) {
    const double groups = std::max(1, e.groups);
    if (policy == PartitionPolicy::kAvailability) {
      pieces.push_back({e.cut_ns, e.merge_ns, groups});
      continue;
    }
    pieces.push_back({e.cut_ns, e.merge_ns, 1.0 + e.bridges});
    // Until every side noticed the cut, each believes it holds the cluster.
    pieces.push_back({e.cut_ns, std::min(e.detect_ns, e.merge_ns), groups});
  }
  return pieces;
}

ExcessRule ExcessRuleFor(const SwarmCase& c) {
  const SimConfig s = BaseConfig(c);
  ExcessRule rule;
  rule.episodes = EpisodesOf(c);
  rule.pieces = DeciderPiecesFor(rule.episodes, c.policy);
  bool loss = c.link.loss > 0;
  int64_t jitter_cap = c.link.jitter_cap_ns;
  int64_t slow_lag = -1;
  int movers = 0;
  for (const SwarmFault& f : c.faults) {
    switch (f.kind) {
      case Kind::kPartition:
        ++movers;
        break;  // its heal
      case Kind::kCrash:
        movers += f.until_ns >= 0 ? 2 : 1;
        break;
      case Kind::kLeave:
      case Kind::kJoin:
        ++movers;
        break;
      case Kind::kLoss:
        loss = true;
        break;
      case Kind::kJitter:
        jitter_cap = std::max(jitter_cap, f.jitter_cap_ns);
        break;
      case Kind::kClockStep:
        rule.clock_steps_ms.push_back(f.step_ms);
        ++movers;
        if (f.until_ns >= 0) {
          rule.clock_steps_ms.push_back(-f.step_ms);
          ++movers;
        }
        break;
      case Kind::kSlow:
        movers += StallMoves(f);
        slow_lag = std::max(slow_lag, f.tick_lag_ns);
        break;
      case Kind::kDuplicate:
      case Kind::kDrift:
        break;
    }
  }
  // A forward unanswered within its wait fails over whether it was lost or
  // is merely slow: the entry cannot tell (DESIGN, "Routing"). An entry waits
  // at least forward_timeout_ms, and without such a timeout no relay (whose
  // wait is shorter) is made but by movers (crashes, heals, warming joiners,
  // clock steps), so a run whose worst round trip (two of the largest one-way
  // latency; slow nodes are movers already) stays within the floor never
  // fails over this way.
  const int64_t one_way_max_ns = 2 * s.link.access_max_ns + jitter_cap;
  const bool slow_forwards = 2 * one_way_max_ns > s.node.forward_timeout_ms * kNsPerMs;
  rule.failover_cap = movers + (loss || slow_forwards ? 1 : 0);
  rule.tail_ns = s.node.replication_interval_ms * kNsPerMs + one_way_max_ns + kNsPerMs;
  if (loss) rule.tail_ns += s.node.replication_retry_ms * kNsPerMs;
  // Entries keep waiting on a stalled owner up to their forward timeout for
  // it, which its measured round trips may have raised to the maximum.
  if (slow_lag >= 0) {
    rule.tail_ns +=
        slow_lag + std::max(s.node.forward_timeout_ms, s.node.forward_timeout_max_ms) * kNsPerMs;
  }
  rule.clock_terms = HasClockFaults(c);
  return rule;
}

Bounds BoundsOf(const SwarmCase& c) {
  const SimConfig s = BaseConfig(c);
  const SwarmTimeline t = TimelineOf(c);
  const size_t n = MaxHosts(c);
  const TrueNs probe = ProbeNs(s);
  const TrueNs dissemination = Dissemination(s, n);
  const TrueNs handoff = s.node.handoff_timeout_ms * kNsPerMs;
  const TrueNs last_dead = LastDeadNs(s, n);
  Bounds b;
  const ExcessRule rule = ExcessRuleFor(c);
  b.decider_pieces = rule.pieces;
  b.failovers = rule.failover_cap;
  b.tail_ns = rule.tail_ns;
  b.clock_terms = rule.clock_terms;
  b.clock_steps_ms = rule.clock_steps_ms;
  b.exact = c.faults.empty() && !HasClockFaults(c);
  b.convergence_ns = ConvergenceBound(c, s, t.quiesce_ns);
  // The formula's "remaining crash detection" generalised: with membership
  // still settling at quiesce (a join or restart under loss), replicas
  // converge within ConvergenceBase once it agreed.
  b.convergence_after_agreement_ns = ConvergenceBase(s);
  b.unwatched_not_judged = true;

  const bool loss = HasKind(c, Kind::kLoss) || c.link.loss > 0;
  const bool slow = HasKind(c, Kind::kSlow);
  const bool partition = HasKind(c, Kind::kPartition);
  // False suspicions and deaths: none where nothing but crashes, joins,
  // leaves, clocks, duplication or jitter happen.
  b.no_false_deaths = !loss && !slow && !partition;
  b.no_false_suspicions = b.no_false_deaths;

  // Membership must agree once the last membership fault settled (the
  // scenarios' bound per kind, the latest of them); under loss a member
  // may be learned only first-hand, within round-robin's worst case.
  const TrueNs worst_probe = static_cast<TrueNs>(
      membership::timing::WorstCaseFirstProbeRoundRobinPeriods(n) * static_cast<double>(probe));
  TrueNs deadline = s.start_spread_ns + t.warmup_ns;
  std::vector<std::pair<TrueNs, TrueNs>> loss_spans;
  for (const SwarmFault& f : c.faults) {
    if (f.kind == Kind::kLoss) loss_spans.push_back({f.at_ns, f.until_ns});
  }
  for (const SwarmFault& f : c.faults) {
    TrueNs due = -1;
    switch (f.kind) {
      case Kind::kPartition:
        due = MergeNs(s, n, f.until_ns);
        break;
      case Kind::kCrash:
        due = (f.until_ns >= 0 ? f.until_ns : f.at_ns) + last_dead;
        break;
      case Kind::kLeave:
        due = f.at_ns + S(5) + dissemination + handoff;
        break;
      case Kind::kJoin:
        due = f.at_ns + dissemination + handoff;
        break;
      case Kind::kSlow:
        due = f.until_ns + dissemination;
        break;
      case Kind::kLoss:
        due = f.until_ns + worst_probe + dissemination;
        break;
      default:
        break;
    }
    if (due < 0) continue;
    for (const auto& [a, z] : loss_spans) {
      if (f.kind != Kind::kLoss && Overlap(f.at_ns, due, a, z)) due += worst_probe;
    }
    deadline = std::max(deadline, due);
  }
  b.membership_deadline_ns = deadline;

  // Detection: crashes whose detection overlapped no other membership fault
  // or loss (from 3 probe periods before the crash to its restart, or to
  // every member marking it dead).
  for (size_t i = 0; i < c.faults.size(); ++i) {
    const SwarmFault& d = c.faults[i];
    if (d.kind != Kind::kCrash) continue;
    b.detection = true;
    b.detection_mean = true;
    const TrueNs from = d.at_ns - 3 * probe;
    const TrueNs to = d.until_ns >= 0 ? d.until_ns : d.at_ns + last_dead;
    bool clean = true;
    for (size_t j = 0; j < c.faults.size() && clean; ++j) {
      if (j == i) continue;
      const SwarmFault& f = c.faults[j];
      TrueNs a = f.at_ns, z = -1;
      switch (f.kind) {
        case Kind::kCrash:
          z = f.until_ns >= 0 ? f.until_ns + 3 * probe : f.at_ns + last_dead;
          break;
        case Kind::kLeave:
          z = f.at_ns + S(5) + dissemination;
          break;
        case Kind::kJoin:
          z = f.at_ns + handoff + dissemination;
          break;
        case Kind::kPartition:
          z = MergeNs(s, n, f.until_ns);
          break;
        case Kind::kSlow:
          z = f.until_ns + 3 * probe;
          break;
        case Kind::kLoss:
          z = f.until_ns;
          break;
        default:
          break;
      }
      if (z >= 0 && Overlap(from, to, a, z)) clean = false;
    }
    if (!clean) b.detection_excluded_ns.push_back(d.at_ns);
  }

  // The clock gate: an initial host up at the end whose clock (far offset
  // plus steps still applied) is beyond max_clock_offset from most of the
  // others, by more than the random offsets and drift could close, and has
  // been so long enough for it to have probed every peer since.
  if (HasClockFaults(c)) {
    std::vector<int64_t> net(c.nodes, 0);
    std::vector<TrueNs> since(c.nodes, 0);
    std::vector<bool> up(c.nodes, true);
    for (const auto& [h, ms] : c.clock_offsets_ms) {
      if (h >= 0 && static_cast<size_t>(h) < c.nodes) net[h] = ms;
    }
    double drift_ppm = static_cast<double>(c.clock_drift_max_ppm);
    for (const SwarmFault& f : c.faults) {
      if (f.host < 0) continue;
      if (f.kind == Kind::kClockStep) {
        net[f.host] += f.step_ms;
        since[f.host] = std::max(since[f.host], f.at_ns);
        if (f.until_ns >= 0) {
          net[f.host] -= f.step_ms;
          since[f.host] = std::max(since[f.host], f.until_ns);
        }
      } else if (f.kind == Kind::kCrash) {
        if (f.until_ns < 0) up[f.host] = false;
        since[f.host] = std::max(since[f.host], f.until_ns);
      } else if (f.kind == Kind::kLeave) {
        up[f.host] = false;
      } else if (f.kind == Kind::kDrift) {
        drift_ppm = std::max(drift_ppm, std::fabs(f.drift_ppm));
      }
    }
    const double margin = static_cast<double>(s.node.max_clock_offset_ms) +
                          2.0 * static_cast<double>(c.clock_offset_max_ms) +
                          2.0 * drift_ppm * static_cast<double>(t.end_ns) / 1e9 / 1000.0 + 50.0;
    // The gate decides on the host's own estimates of its peers, one per
    // probe: none cross a cut, and after a partition, loss or slowness its
    // Lifeguard health may stretch the probe period up to 8x, recovering in
    // at most 8 + 7 + ... + 2 = 35 periods. So the clock must have stood
    // still since all that, and then for a probe of every peer.
    TrueNs quiet = 0;
    for (const SwarmFault& f : c.faults) {
      if (f.kind == Kind::kPartition) quiet = std::max(quiet, MergeNs(s, n, f.until_ns));
      if (f.kind == Kind::kLoss || f.kind == Kind::kSlow) quiet = std::max(quiet, f.until_ns);
    }
    if (quiet > 0) quiet += 36 * probe;
    // A host is off against its peers' clocks as much as its own: a peer's
    // step changes that too, and the host learns of it only from new samples
    // of that peer (smoothed: a few probes), so every up host's clock must
    // have stood still (swarm seed 2113005082: two of three members stepped
    // +0.8 s, the second 3 s before the end; the third, never stepped, was
    // judged off and expected to have stopped owning already).
    TrueNs clocks_still = quiet;
    for (uint32_t h = 0; h < c.nodes; ++h) {
      if (up[h]) clocks_still = std::max(clocks_still, since[h]);
    }
    const TrueNs settle = static_cast<TrueNs>(n + 5) * probe;
    for (uint32_t h = 0; h < c.nodes; ++h) {
      if (!up[h] || clocks_still > t.settle_ns - settle) continue;
      size_t far = 0, others = 0;
      for (uint32_t o = 0; o < c.nodes; ++o) {
        if (o == h || !up[o]) continue;
        ++others;
        if (static_cast<double>(std::llabs(net[h] - net[o])) > margin) ++far;
      }
      if (others > 0 && far * 2 > others + 1) b.must_not_own.push_back(HostIdOf(h));
    }
  }
  return b;
}

// ---------------------------------------------------------------- running

std::vector<std::string> FaultClasses(const SwarmCase& c) {
  std::set<std::string> classes;
  for (const SwarmFault& f : c.faults) {
    switch (f.kind) {
      case Kind::kPartition:
        classes.insert("partition:" + ShapeName(f));
        break;
      case Kind::kCrash:
        classes.insert(f.until_ns < 0  ? "crash"
                       : f.new_address ? "crash-restart:new-address"
                                       : "crash-restart");
        break;
      case Kind::kLeave:
        classes.insert("leave");
        break;
      case Kind::kJoin:
        classes.insert("join");
        break;
      case Kind::kLoss:
        classes.insert("loss");
        break;
      case Kind::kDuplicate:
        classes.insert("duplicate");
        break;
      case Kind::kJitter:
        classes.insert("jitter");
        break;
      case Kind::kClockStep:
        classes.insert("clock-step");
        break;
      case Kind::kDrift:
        classes.insert("drift");
        break;
      case Kind::kSlow:
        classes.insert(f.stall_ns > 0 ? "slow:stalls" : "slow");
        break;
    }
  }
  if (c.clock_offset_max_ms > 0 || c.clock_drift_max_ppm > 0 || !c.clock_offsets_ms.empty()) {
    classes.insert("clock-offset");
  }
  if (classes.empty()) classes.insert("none");
  std::vector<std::string> out(classes.begin(), classes.end());
  if (c.policy != PartitionPolicy::kAvailability)
    out.push_back(std::string("policy:") + PolicyName(c.policy));
  return out;
}

SwarmOutcome RunCase(const SwarmCase& c, const SwarmRunOptions& options) {
  SwarmOutcome o;
  o.swarm = c;
  o.timeline = TimelineOf(c);
  SimConfig config = ConfigOf(c);
  config.dump_key = options.dump_key;
  config.drop_replication = options.drop_replication;
  o.bounds = BoundsOf(c);
  Simulator sim(config);
  RunRecord run = sim.Run();
  o.results = Evaluate(run, o.bounds, &o.figures);
  o.trace_hash = run.trace_hash;
  o.events = run.events;
  o.simulated_s = static_cast<double>(run.end_ns) / 1e9;
  o.debug = std::move(run.debug);
  o.classes = FaultClasses(c);
  {
    // Windows over the limit, attributed to the faults in play then.
    const size_t n = MaxHosts(c);
    std::vector<std::pair<TrueNs, TrueNs>> spans;
    std::vector<std::vector<std::string>> names;
    for (const SwarmFault& f : c.faults) {
      spans.push_back({f.at_ns, RecoveryEnd(f, config, n)});
      SwarmCase one;
      one.faults = {f};
      names.push_back(FaultClasses(one));
    }
    const auto admitted = AdmittedByKey(run);
    for (size_t k = 0; k < run.keys.size() && k < o.figures.key_extra.size(); ++k) {
      const KeySpec& key = run.keys[k];
      const TrueNs length = static_cast<TrueNs>(key.window_ms) * kNsPerMs;
      for (const WindowSample& w : WindowSamples(admitted[k], length, key.limit, o.bounds.sides,
                                                 o.bounds.decider_pieces, o.figures.key_extra[k])) {
        if (w.sum <= key.limit) continue;
        const double ratio = static_cast<double>(w.sum) / static_cast<double>(key.limit);
        const double fill = static_cast<double>(w.sum) / static_cast<double>(w.bound);
        auto note = [&](const std::string& name) {
          SwarmOutcome::ClassExcess& e = o.excess_by_class[name];
          if (ratio > e.ratio) {
            e.ratio = ratio;
            e.bound_ratio = static_cast<double>(w.bound) / static_cast<double>(key.limit);
            e.key = key.user_id;
          }
          e.fill = std::max(e.fill, fill);
        };
        bool any = false;
        for (size_t i = 0; i < spans.size(); ++i) {
          if (!Overlap(w.end_ns - length + 1, w.end_ns, spans[i].first, spans[i].second)) continue;
          any = true;
          for (const std::string& name : names[i]) note(name);
        }
        if (!any) note("none");
      }
    }
  }
  o.pass =
      std::all_of(o.results.begin(), o.results.end(), [](const OracleResult& r) { return r.pass; });
  return o;
}

// ---------------------------------------------------------------- words

std::string DescribeFaults(const SwarmCase& c) {
  std::string out;
  uint32_t next_join = static_cast<uint32_t>(c.nodes);
  for (const SwarmFault& f : c.faults) {
    const std::string host = f.host >= 0 ? HostIdOf(static_cast<uint32_t>(f.host)) : "";
    std::string what;
    switch (f.kind) {
      case Kind::kPartition: {
        const std::string shape = ShapeName(f);
        what = "partition (" + shape + "): ";
        for (size_t g = 0; g < f.groups.size(); ++g) {
          const bool bridge = f.shape == Shape::kBridge && g + 1 == f.groups.size();
          what +=
              (g ? " | " : "") + std::string(bridge ? "bridge " : "") + HostList(f.groups[g], 8);
        }
        if (f.shape == Shape::kOneWay) what += " (the first cannot send to the second)";
        what += "; heals at " + Sec(f.until_ns);
        break;
      }
      case Kind::kCrash:
        what = "crash " + host;
        what += f.until_ns < 0 ? "; stays down"
                               : "; restarts at " + Sec(f.until_ns) +
                                     (f.new_address ? " at a new address" : " (same address)");
        break;
      case Kind::kLeave:
        what = host + " leaves gracefully";
        break;
      case Kind::kJoin:
        what = "a new node joins (" + HostIdOf(next_join++) + ")";
        break;
      case Kind::kLoss:
        what =
            Fmt("datagram loss %g%% on every link until %s", 100 * f.rate, Sec(f.until_ns).c_str());
        break;
      case Kind::kDuplicate:
        what = Fmt("datagram duplication %g%% until %s", 100 * f.rate, Sec(f.until_ns).c_str());
        break;
      case Kind::kJitter:
        what = Fmt("jitter (reordering) median %.2f ms, cap %.1f ms until %s",
                   static_cast<double>(f.jitter_median_ns) / 1e6,
                   static_cast<double>(f.jitter_cap_ns) / 1e6, Sec(f.until_ns).c_str());
        break;
      case Kind::kClockStep:
        what = Fmt("%s's wall clock steps %+.3f s", host.c_str(),
                   static_cast<double>(f.step_ms) / 1e3);
        what += f.until_ns < 0 ? "; stays" : "; steps back at " + Sec(f.until_ns);
        break;
      case Kind::kDrift:
        what = Fmt("%s's clock drifts %+g ppm from now on", host.c_str(), f.drift_ppm);
        break;
      case Kind::kSlow: {
        what = host + " slow:";
        if (f.service_ns > 0)
          what += Fmt(" %.1f ms per input,", static_cast<double>(f.service_ns) / 1e6);
        if (f.tick_lag_ns > 0)
          what += Fmt(" timers %.0f ms late,", static_cast<double>(f.tick_lag_ns) / 1e6);
        if (f.stall_ns > 0) {
          what += Fmt(" %.1f s stalls every %.1f s,", static_cast<double>(f.stall_ns) / 1e9,
                      static_cast<double>(f.stall_every_ns) / 1e9);
        }
        what += " until " + Sec(f.until_ns);
        break;
      }
    }
    out += Fmt("  %9.3f s  ", static_cast<double>(f.at_ns) / 1e9) + what + "\n";
  }
  if (c.faults.empty()) out += "  (no faults)\n";
  return out;
}

std::string DescribeCase(const SwarmCase& c) {
  const SwarmTimeline t = TimelineOf(c);
  const WorkloadConfig& w = c.workload;
  std::string out;
  out +=
      Fmt("  %zu nodes, policy %s; traffic %.1f s -> %.1f s (quiesce), run ends once settled "
          "from %.1f s, at %.1f s at the latest\n",
          c.nodes, PolicyName(c.policy), static_cast<double>(t.warmup_ns) / 1e9,
          static_cast<double>(t.quiesce_ns) / 1e9, static_cast<double>(t.settle_ns) / 1e9,
          static_cast<double>(t.end_ns) / 1e9);
  std::string windows;
  for (uint64_t x : w.windows_ms)
    windows += (windows.empty() ? "" : "/") + Fmt("%g", static_cast<double>(x) / 1000);
  std::string hits;
  for (const auto& [h, wt] : w.hits)
    hits += Fmt("%s%llu:%u", hits.empty() ? "" : " ", static_cast<unsigned long long>(h), wt);
  out += Fmt(
      "  workload: %zu keys, %s, %s%.0f checks/s %s, batches 1-%zu, windows %s s, hits %s\n",
      w.keys, w.zipf ? Fmt("Zipf s=%.2f", w.zipf_s).c_str() : "uniform",
      w.hot_key_share > 0 ? Fmt("hot key %.0f%% (limit %llu per %llu ms), ", 100 * w.hot_key_share,
                                static_cast<unsigned long long>(w.hot_key_limit),
                                static_cast<unsigned long long>(w.hot_key_window_ms))
                                .c_str()
                          : "",
      w.rate_per_s,
      w.bursty
          ? Fmt("bursty x%g (on %g ms, off %g ms)", w.burst_factor, w.burst_on_ms, w.burst_off_ms)
                .c_str()
          : "Poisson",
      w.max_batch, windows.c_str(), hits.c_str());
  out += Fmt("  network: jitter median %.0f us (sigma %.2f, cap %.0f ms)",
             static_cast<double>(c.link.jitter_median_ns) / 1e3, c.link.jitter_sigma,
             static_cast<double>(c.link.jitter_cap_ns) / 1e6);
  out += Fmt("; clocks: offsets +-%lld ms, drift +-%lld ppm",
             static_cast<long long>(c.clock_offset_max_ms),
             static_cast<long long>(c.clock_drift_max_ppm));
  for (const auto& [h, ms] : c.clock_offsets_ms) {
    out += Fmt(", %s at %+lld ms", HostIdOf(static_cast<uint32_t>(h)).c_str(),
               static_cast<long long>(ms));
  }
  out += "\n";
  return out;
}

// ---------------------------------------------------------------- text

namespace {

std::string Join(const std::vector<uint32_t>& v, char sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? std::string(1, sep) : "") + std::to_string(v[i]);
  return s;
}

std::string Num(double v) { return Fmt("%.10g", v); }

}  // namespace

std::string FormatCase(const SwarmCase& c) {
  std::string out;
  out += Fmt("swarm seed=%llu nodes=%zu policy=%s\n", static_cast<unsigned long long>(c.seed),
             c.nodes, PolicyName(c.policy));
  const WorkloadConfig& w = c.workload;
  std::string windows, hits;
  for (uint64_t x : w.windows_ms) windows += (windows.empty() ? "" : ",") + std::to_string(x);
  for (const auto& [h, wt] : w.hits) {
    hits += (hits.empty() ? "" : ",") + std::to_string(h) + ":" + std::to_string(wt);
  }
  out += "workload keys=" + std::to_string(w.keys) + " zipf=" + (w.zipf ? Num(w.zipf_s) : "0") +
         " hot=" + Num(w.hot_key_share) + " hot_limit=" + std::to_string(w.hot_key_limit) +
         " hot_window=" + std::to_string(w.hot_key_window_ms) + " rate=" + Num(w.rate_per_s) +
         " bursty=" + (w.bursty ? Num(w.burst_factor) : "0") + " on=" + Num(w.burst_on_ms) +
         " off=" + Num(w.burst_off_ms) + " batch=" + std::to_string(w.max_batch) +
         " windows=" + windows + " hits=" + hits + "\n";
  out += "network jitter=" + std::to_string(c.link.jitter_median_ns) +
         " sigma=" + Num(c.link.jitter_sigma) + " cap=" + std::to_string(c.link.jitter_cap_ns) +
         "\n";
  out += "clocks offset=" + std::to_string(c.clock_offset_max_ms) +
         " drift=" + std::to_string(c.clock_drift_max_ppm);
  for (const auto& [h, ms] : c.clock_offsets_ms)
    out += Fmt(" far=%d:%lld", h, static_cast<long long>(ms));
  out += "\n";
  for (const SwarmFault& f : c.faults) {
    const long long at = f.at_ns / kNsPerMs, until = f.until_ns < 0 ? -1 : f.until_ns / kNsPerMs;
    switch (f.kind) {
      case Kind::kPartition: {
        std::string groups;
        for (size_t g = 0; g < f.groups.size(); ++g)
          groups += (g ? "/" : "") + Join(f.groups[g], '.');
        out += Fmt("fault partition at=%lld until=%lld shape=%s groups=", at, until,
                   f.shape == Shape::kBridge   ? "bridge"
                   : f.shape == Shape::kOneWay ? "oneway"
                                               : "sides") +
               groups + "\n";
        break;
      }
      case Kind::kCrash:
        out += Fmt("fault crash at=%lld until=%lld host=%d new_address=%d\n", at, until, f.host,
                   f.new_address ? 1 : 0);
        break;
      case Kind::kLeave:
        out += Fmt("fault leave at=%lld host=%d\n", at, f.host);
        break;
      case Kind::kJoin:
        out += Fmt("fault join at=%lld\n", at);
        break;
      case Kind::kLoss:
        out += Fmt("fault loss at=%lld until=%lld rate=", at, until) + Num(f.rate) + "\n";
        break;
      case Kind::kDuplicate:
        out += Fmt("fault duplicate at=%lld until=%lld rate=", at, until) + Num(f.rate) + "\n";
        break;
      case Kind::kJitter:
        out += Fmt("fault jitter at=%lld until=%lld median=%lld cap=%lld\n", at, until,
                   static_cast<long long>(f.jitter_median_ns),
                   static_cast<long long>(f.jitter_cap_ns));
        break;
      case Kind::kClockStep:
        out += Fmt("fault step at=%lld until=%lld host=%d step=%lld\n", at, until, f.host,
                   static_cast<long long>(f.step_ms));
        break;
      case Kind::kDrift:
        out += Fmt("fault drift at=%lld host=%d ppm=", at, f.host) + Num(f.drift_ppm) + "\n";
        break;
      case Kind::kSlow:
        out += Fmt(
            "fault slow at=%lld until=%lld host=%d service=%lld lag=%lld every=%lld stall=%lld\n",
            at, until, f.host, static_cast<long long>(f.service_ns),
            static_cast<long long>(f.tick_lag_ns), static_cast<long long>(f.stall_every_ns),
            static_cast<long long>(f.stall_ns));
        break;
    }
  }
  return out;
}

bool ParseCase(const std::string& text, SwarmCase* out, std::string* error) {
  SwarmCase c;
  c.workload.windows_ms.clear();
  bool header = false;
  std::string normalized = text;
  std::replace(normalized.begin(), normalized.end(), ';', '\n');
  std::istringstream lines(normalized);
  std::string line;
  int number = 0;
  auto fail = [&](const std::string& why) {
    *error = "line " + std::to_string(number) + ": " + why;
    return false;
  };
  while (std::getline(lines, line)) {
    ++number;
    const size_t hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string head;
    if (!(words >> head)) continue;
    std::string sub;
    if (head == "fault" && !(words >> sub)) return fail("fault needs a kind");
    std::map<std::string, std::string> kv;
    std::string word;
    while (words >> word) {
      const size_t eq = word.find('=');
      if (eq == std::string::npos) return fail("expected key=value, got " + word);
      const std::string key = word.substr(0, eq);
      if (key == "far") {
        kv["far"] += (kv["far"].empty() ? "" : " ") + word.substr(eq + 1);
      } else {
        kv[key] = word.substr(eq + 1);
      }
    }
    bool bad = false;
    std::string bad_key;
    auto num = [&](const std::string& key, double fallback) -> double {
      auto it = kv.find(key);
      if (it == kv.end()) return fallback;
      char* end = nullptr;
      const double v = std::strtod(it->second.c_str(), &end);
      if (end == nullptr || *end != '\0' || it->second.empty()) {
        bad = true;
        bad_key = key;
      }
      return v;
    };
    auto integer = [&](const std::string& key, int64_t fallback) -> int64_t {
      auto it = kv.find(key);
      if (it == kv.end()) return fallback;
      char* end = nullptr;
      const long long v = std::strtoll(it->second.c_str(), &end, 10);
      if (end == nullptr || *end != '\0' || it->second.empty()) {
        bad = true;
        bad_key = key;
      }
      return v;
    };
    auto ns_of_ms = [&](const std::string& key) -> TrueNs {
      const int64_t v = integer(key, -1);
      return v < 0 ? -1 : Ms(v);
    };
    if (head == "swarm") {
      header = true;
      c.seed = static_cast<uint64_t>(integer("seed", 1));
      c.nodes = static_cast<size_t>(integer("nodes", 3));
      const std::string policy = kv.count("policy") ? kv["policy"] : "availability";
      auto p = core::ParsePartitionPolicy(policy);
      if (!p) return fail("unknown policy " + policy);
      c.policy = *p;
    } else if (head == "workload") {
      WorkloadConfig& w = c.workload;
      w.keys = static_cast<size_t>(integer("keys", 200));
      const double z = num("zipf", 0);
      w.zipf = z > 0;
      w.zipf_s = z > 0 ? z : 1.1;
      w.hot_key_share = num("hot", 0);
      w.hot_key_limit = static_cast<uint64_t>(integer("hot_limit", 100));
      w.hot_key_window_ms = static_cast<uint64_t>(integer("hot_window", 1000));
      w.rate_per_s = num("rate", 500);
      const double bursty = num("bursty", 0);
      w.bursty = bursty > 0;
      if (w.bursty) w.burst_factor = bursty;
      w.burst_on_ms = num("on", w.burst_on_ms);
      w.burst_off_ms = num("off", w.burst_off_ms);
      w.max_batch = static_cast<size_t>(integer("batch", 1));
      w.windows_ms.clear();
      std::istringstream ws(kv.count("windows") ? kv["windows"] : "");
      std::string x;
      while (std::getline(ws, x, ','))
        w.windows_ms.push_back(std::strtoull(x.c_str(), nullptr, 10));
      if (kv.count("hits")) {
        w.hits.clear();
        std::istringstream hs(kv["hits"]);
        while (std::getline(hs, x, ',')) {
          const size_t colon = x.find(':');
          if (colon == std::string::npos) return fail("hits are value:weight");
          w.hits.push_back(
              {std::strtoull(x.substr(0, colon).c_str(), nullptr, 10),
               static_cast<uint32_t>(std::strtoul(x.substr(colon + 1).c_str(), nullptr, 10))});
        }
      }
    } else if (head == "network") {
      c.link.jitter_median_ns = integer("jitter", c.link.jitter_median_ns);
      c.link.jitter_sigma = num("sigma", c.link.jitter_sigma);
      c.link.jitter_cap_ns = integer("cap", c.link.jitter_cap_ns);
    } else if (head == "clocks") {
      c.clock_offset_max_ms = integer("offset", 0);
      c.clock_drift_max_ppm = integer("drift", 0);
      std::istringstream fs(kv.count("far") ? kv["far"] : "");
      std::string x;
      while (fs >> x) {
        const size_t colon = x.find(':');
        if (colon == std::string::npos) return fail("far is host:ms");
        c.clock_offsets_ms.push_back({std::atoi(x.substr(0, colon).c_str()),
                                      std::strtoll(x.substr(colon + 1).c_str(), nullptr, 10)});
      }
    } else if (head == "fault") {
      SwarmFault f;
      f.at_ns = ns_of_ms("at");
      f.until_ns = ns_of_ms("until");
      f.host = static_cast<int>(integer("host", -1));
      if (f.at_ns < 0) return fail("fault needs at=MS");
      if (sub == "partition") {
        f.kind = Kind::kPartition;
        const std::string shape = kv["shape"];
        f.shape = shape == "bridge"   ? Shape::kBridge
                  : shape == "oneway" ? Shape::kOneWay
                                      : Shape::kSides;
        if (shape != "bridge" && shape != "oneway" && shape != "sides")
          return fail("unknown shape " + shape);
        std::istringstream gs(kv["groups"]);
        std::string g;
        while (std::getline(gs, g, '/')) {
          std::vector<uint32_t> hosts;
          std::istringstream hs(g);
          std::string h;
          while (std::getline(hs, h, '.'))
            hosts.push_back(static_cast<uint32_t>(std::strtoul(h.c_str(), nullptr, 10)));
          f.groups.push_back(std::move(hosts));
        }
      } else if (sub == "crash") {
        f.kind = Kind::kCrash;
        f.new_address = integer("new_address", 0) != 0;
      } else if (sub == "leave") {
        f.kind = Kind::kLeave;
      } else if (sub == "join") {
        f.kind = Kind::kJoin;
      } else if (sub == "loss" || sub == "duplicate") {
        f.kind = sub == "loss" ? Kind::kLoss : Kind::kDuplicate;
        f.rate = num("rate", 0);
      } else if (sub == "jitter") {
        f.kind = Kind::kJitter;
        f.jitter_median_ns = integer("median", 0);
        f.jitter_cap_ns = integer("cap", 0);
      } else if (sub == "step") {
        f.kind = Kind::kClockStep;
        f.step_ms = integer("step", 0);
      } else if (sub == "drift") {
        f.kind = Kind::kDrift;
        f.drift_ppm = num("ppm", 0);
      } else if (sub == "slow") {
        f.kind = Kind::kSlow;
        f.service_ns = integer("service", 0);
        f.tick_lag_ns = integer("lag", 0);
        f.stall_every_ns = integer("every", 0);
        f.stall_ns = integer("stall", 0);
      } else {
        return fail("unknown fault " + sub);
      }
      c.faults.push_back(std::move(f));
    } else {
      return fail("unknown line " + head);
    }
    if (bad) return fail("bad number for " + bad_key);
  }
  if (!header) {
    *error = "no 'swarm seed=S nodes=N' line";
    return false;
  }
  if (c.workload.windows_ms.empty()) c.workload.windows_ms = {1000, 5000, 60000};
  SortFaults(&c.faults);
  std::string why;
  if (!ValidCase(c, &why)) {
    *error = "invalid schedule: " + why;
    return false;
  }
  *out = std::move(c);
  return true;
}

// ---------------------------------------------------------------- shrinking

namespace {

// The case on the first `nodes` initial hosts: faults on the others go,
// partition groups lose them (a partition left with fewer than two groups
// goes too).
SwarmCase OnNodes(const SwarmCase& c, size_t nodes) {
  SwarmCase out = c;
  out.nodes = nodes;
  out.faults.clear();
  for (SwarmFault f : c.faults) {
    if (f.host >= static_cast<int>(nodes)) continue;
    if (f.kind == Kind::kPartition) {
      std::vector<std::vector<uint32_t>> groups;
      for (auto& g : f.groups) {
        g.erase(std::remove_if(g.begin(), g.end(), [&](uint32_t h) { return h >= nodes; }),
                g.end());
        if (!g.empty()) groups.push_back(std::move(g));
      }
      if (groups.size() < 2) continue;
      if (f.shape == Shape::kOneWay && groups.size() != 2) continue;
      if (f.shape == Shape::kBridge && groups.size() < 3) continue;
      f.groups = std::move(groups);
    }
    out.faults.push_back(std::move(f));
  }
  out.clock_offsets_ms.erase(
      std::remove_if(out.clock_offsets_ms.begin(), out.clock_offsets_ms.end(),
                     [&](const auto& x) { return x.first >= static_cast<int>(nodes); }),
      out.clock_offsets_ms.end());
  return out;
}

SwarmCase Shifted(const SwarmCase& c, TrueNs by) {
  SwarmCase out = c;
  for (SwarmFault& f : out.faults) {
    f.at_ns -= by;
    if (f.until_ns >= 0) f.until_ns -= by;
  }
  return out;
}

}  // namespace

SwarmCase Shrink(const SwarmCase& failing, const std::function<bool(const SwarmCase&)>& fails,
                 const std::function<void(const std::string&)>& progress) {
  SwarmCase best = failing;
  auto note = [&](const std::string& what) {
    if (progress) progress(what);
  };
  auto attempt = [&](const SwarmCase& candidate, const std::string& what) {
    if (!ValidCase(candidate, nullptr)) return false;
    if (!fails(candidate)) return false;
    best = candidate;
    note(what);
    return true;
  };
  for (int round = 0; round < 3; ++round) {
    const size_t before_faults = best.faults.size();
    const size_t before_nodes = best.nodes;
    // 1. Drop faults one at a time, until none can go.
    for (bool dropped = true; dropped;) {
      dropped = false;
      for (size_t i = 0; i < best.faults.size(); ++i) {
        SwarmCase candidate = best;
        candidate.faults.erase(candidate.faults.begin() + static_cast<std::ptrdiff_t>(i));
        if (attempt(candidate,
                    Fmt("dropped fault %zu: %zu left", i + 1, candidate.faults.size()))) {
          dropped = true;
          break;
        }
      }
    }
    // 2. Fewer nodes: halve while it still fails, then smaller steps.
    for (size_t step = std::max<size_t>(1, best.nodes / 2); step >= 1;) {
      if (best.nodes > 3 && best.nodes - 3 >= step &&
          attempt(OnNodes(best, best.nodes - step), Fmt("%zu nodes", best.nodes - step))) {
        continue;
      }
      if (step == 1) break;
      step /= 2;
    }
    // 3. Shorter: every fault earlier (the run ends sooner), then each
    // fault's episode shorter.
    const TrueNs earliest = Warmup(best.nodes) + S(1);
    for (TrueNs by = best.faults.empty() ? 0 : best.faults.front().at_ns - earliest; by >= S(1);
         by /= 2) {
      if (attempt(Shifted(best, by), Fmt("faults %.1f s earlier", static_cast<double>(by) / 1e9)))
        break;
    }
    for (size_t i = 0; i < best.faults.size(); ++i) {
      for (int k = 0; k < 4; ++k) {
        const SwarmFault& f = best.faults[i];
        if (f.until_ns < 0 || f.until_ns - f.at_ns < S(2)) break;
        SwarmCase candidate = best;
        SwarmFault& g = candidate.faults[i];
        g.until_ns = g.at_ns + (g.until_ns - g.at_ns) / 2;
        if (!attempt(candidate, Fmt("fault %zu lasts %.1f s", i + 1,
                                    static_cast<double>(g.until_ns - g.at_ns) / 1e9))) {
          break;
        }
      }
    }
    // 4. A smaller workload.
    while (best.workload.keys > 10) {
      SwarmCase candidate = best;
      candidate.workload.keys = std::max<size_t>(10, best.workload.keys / 2);
      if (!attempt(candidate, Fmt("%zu keys", candidate.workload.keys))) break;
    }
    if (best.faults.size() == before_faults && best.nodes == before_nodes) break;
  }
  return best;
}

}  // namespace tally::sim

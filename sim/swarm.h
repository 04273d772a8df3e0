// Swarm testing (FoundationDB's simulation, TigerBeetle's VOPR): every seed
// draws its own cluster, fault schedule, workload and partition policy, runs
// them in the Simulator, and judges the run against the bounds that
// docs/DESIGN.md states for the faults that run actually injected.
//
// A seed's draw (DrawCase) uses streams derived from the seed only, so a
// seed is its own reproducer; a case can also be written out (FormatCase)
// and read back (ParseCase), which is how a shrunk schedule is replayed.
//
// The excess bound is computed by one function, ExcessRuleFor (see its
// comment for the rules, quoted in docs/SIMULATION.md "Swarm").
#ifndef TALLY_SIM_SWARM_H_
#define TALLY_SIM_SWARM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "daemon/core/node.h"
#include "sim/oracles.h"
#include "sim/simulator.h"

namespace tally::sim {

// One fault of a swarm schedule, with its own recovery: what the shrinker
// drops as a unit.
struct SwarmFault {
  enum class Kind : uint8_t {
    kPartition,  // groups cut from at_ns, healed at until_ns
    kCrash,      // host crashes at at_ns; restarts at until_ns (-1: stays down)
    kLeave,      // host leaves gracefully at at_ns
    kJoin,       // a new host joins at at_ns
    kLoss,       // datagram loss `rate` on every link from at_ns to until_ns
    kDuplicate,  // datagram duplication `rate` from at_ns to until_ns
    kJitter,     // reordering: jitter median/cap from at_ns to until_ns
    kClockStep,  // host's wall clock steps by step_ms at at_ns, back at until_ns (-1: never)
    kDrift,      // host's oscillator runs drift_ppm off from at_ns on
    kSlow,       // host slow (service time, late timers, stalls) from at_ns to until_ns
  };
  // Partition shapes: how the groups see each other.
  //   kSides:  every group sees only itself (halves, uneven, k sides, isolated node)
  //   kBridge: the last group sees every other group; the others only themselves
  //   kOneWay: group 0 cannot send to group 1; group 1 still reaches group 0
  enum class Shape : uint8_t { kSides, kBridge, kOneWay };

  Kind kind = Kind::kCrash;
  TrueNs at_ns = 0;
  TrueNs until_ns = -1;
  int host = -1;
  bool new_address = false;  // kCrash: the restart comes back at a new address
  Shape shape = Shape::kSides;
  std::vector<std::vector<uint32_t>> groups;  // kPartition: hosts per group
  double rate = 0;                            // kLoss, kDuplicate
  int64_t jitter_median_ns = 0, jitter_cap_ns = 0;
  int64_t step_ms = 0;
  double drift_ppm = 0;
  int64_t service_ns = 0, tick_lag_ns = 0, stall_every_ns = 0, stall_ns = 0;
};

struct SwarmCase {
  uint64_t seed = 1;
  size_t nodes = 3;
  core::PartitionPolicy policy = core::PartitionPolicy::kAvailability;
  WorkloadConfig workload;  // start_ns and end_ns are set by the timeline
  LinkConfig link;
  int64_t clock_offset_max_ms = 0;
  int64_t clock_drift_max_ppm = 0;
  std::vector<std::pair<int, int64_t>> clock_offsets_ms;  // far-off clocks (host, ms)
  std::vector<SwarmFault> faults;                         // sorted by at_ns
};

// Draws seed's case. Sizes are 3..max_nodes from a mix of log-uniform bands
// (60% in 3..16, 30% in 17..64, 10% in 65..max_nodes, clipped to
// max_nodes), so most seeds are cheap and a tenth exercise large clusters.
SwarmCase DrawCase(uint64_t seed, size_t max_nodes);

// The timeline a case implies (start, quiesce, end), from its faults.
struct SwarmTimeline {
  TrueNs warmup_ns = 0;   // traffic starts
  TrueNs quiesce_ns = 0;  // traffic stops: after every fault's recovery
  // The run ends at the first inspection from settle_ns on at which replicas
  // converged and membership agrees, or at end_ns (convergence watched up
  // to its bound, capped at 30 s; small clusters also watch a permanent
  // crash until every member must have marked it dead).
  TrueNs settle_ns = 0;
  TrueNs end_ns = 0;
};
SwarmTimeline TimelineOf(const SwarmCase& c);

// Whether the schedule keeps the swarm's promises: faults within the run
// (every recovery before quiesce), a majority of the initial nodes up at all
// times, partitions' episodes (cut to heal plus the merge allowance) apart,
// no join or restart during an episode, valid hosts and groups. On false,
// *why says which rule.
bool ValidCase(const SwarmCase& c, std::string* why);

// The simulator configuration of a case.
SimConfig ConfigOf(const SwarmCase& c);

// ---- the excess rule (docs/DESIGN.md "Partitions"; docs/SIMULATION.md "Swarm")

// One partition as the excess rule sees it.
struct PartitionEpisode {
  TrueNs cut_ns = 0;
  TrueNs heal_ns = 0;
  TrueNs merge_ns = 0;   // heal + Reconnect(n) + Dissemination(n): the sides found each other
  TrueNs detect_ns = 0;  // cut + every side noticed the cut (see ExcessRuleFor)
  int groups = 0;        // groups holding a serving node at some time from cut to heal
  int bridges = 0;       // of those, bridge groups (they see two groups that cannot see each other)
};

struct ExcessRule {
  std::vector<DeciderPiece> pieces;  // D per window, 1 outside them
  int failover_cap = 0;              // F is min(decider changes of the key, this)
  TrueNs tail_ns = 0;
  bool clock_terms = false;
  std::vector<int64_t> clock_steps_ms;
  std::vector<PartitionEpisode> episodes;  // as computed, for the report
};

// THE EXCESS RULE. Per key and per sliding window (t - W, t] of true time:
//   admitted <= limit x D + F x min(limit, A(tail)) + clock terms
// where
//   D, deciders at once: 1 without a partition. A partition episode lasts
//     from its cut until its heal plus a merge allowance (Reconnect(n) +
//     Dissemination(n), sim/scenarios.h: the sides must rediscover each
//     other). For a window that overlaps an episode, under `availability` D
//     is the number of partition groups holding a serving node during it (a
//     bridge group counts as its own group: halves 2, a bridge 3, k sides k,
//     an isolated node 2, a one-way cut 2). Under `proportional` and
//     `closed` D is 1 + the number of bridge groups, except for windows that
//     overlap the first `detect` of the episode after its cut, where D is as
//     under availability (before a side notices the cut it still believes it
//     holds the whole cluster); detect is the worst-case round-robin first
//     probe (timing::WorstCaseFirstProbeRoundRobinPeriods(n) probe periods)
//     + one probe period + the suspicion rumor's Dissemination(n), n the
//     members serving at the cut. A window overlapping several episodes
//     takes the largest D (the schedule keeps episodes apart, merge
//     allowance included, so each starts from merged counts: total <= max D
//     x limit).
//   F, failovers: the key's decider changes (as the excess oracle counts
//     them), capped by the events that can move a decider: crashes,
//     restarts, leaves, joins, heals, clock steps (each step and each
//     restore), slow-node stalls (2 per stall, the owner's and the
//     replica's, as slow_node; a slow episode without stalls counts as one
//     stall), plus 1 if the run has any loss or a round trip that can
//     exceed the forward timeout's floor (2 x (2 access_max + the largest
//     jitter cap) > forward_timeout_ms): a forward unanswered in time fails
//     over whether it was lost or is merely slow.
//   tail: one replication interval + the largest one-way latency of the run
//     (its largest jitter cap) + 1 ms, + replication_retry when the run has
//     loss, + the slowest node's timer lag + forward_timeout_max when a
//     node is slow. A(tail) is the most hits requested for the key in any interval of
//     that length.
//   clock terms (when the run has clock offsets, drift or steps): per step
//     min(limit, the most hits admitted in any |step| + bucket_ms), and per
//     decider change min(limit, the most admitted in any delta + bucket_ms),
//     delta the spread of the deciders' clock errors (sim/oracles.h).
ExcessRule ExcessRuleFor(const SwarmCase& c);

// D's pieces for episodes under a policy (part of the rule above; exposed
// for tests).
std::vector<DeciderPiece> DeciderPiecesFor(const std::vector<PartitionEpisode>& episodes,
                                           core::PartitionPolicy policy);

// The oracles' bounds for a case (ExcessRuleFor plus replies, convergence,
// detection, ownership, false positives and the clock gate; see the .cc).
Bounds BoundsOf(const SwarmCase& c);

// ---- running

struct SwarmOutcome {
  SwarmCase swarm;
  SwarmTimeline timeline;
  std::vector<OracleResult> results;
  Figures figures;
  Bounds bounds;
  bool pass = true;
  uint64_t trace_hash = 0;
  uint64_t events = 0;
  double simulated_s = 0;
  std::string debug;
  std::vector<std::string> classes;  // fault classes present (for the summary)
  // Per fault class, the windows over the limit that overlapped a fault of
  // the class (from its start to its recovery; "none": no fault): the
  // largest admitted / limit (with the bound / limit of that window) and
  // the largest admitted / bound.
  struct ClassExcess {
    double ratio = 0, bound_ratio = 0, fill = 0;
    std::string key;
  };
  std::map<std::string, ClassExcess> excess_by_class;
};

struct SwarmRunOptions {
  std::string dump_key;
  bool drop_replication = false;  // test switch: a broken cluster (SimConfig)
};

SwarmOutcome RunCase(const SwarmCase& c, const SwarmRunOptions& options = {});

// The fault classes of a case, as named in the summary: partition shapes
// ("partition:halves", ...), crash, restart, leave, join, loss, duplicate,
// jitter, clock-step, drift, clock-offset, slow, policy:<name>, none.
std::vector<std::string> FaultClasses(const SwarmCase& c);

// ---- words and text

// One line per fault, "  12.000 s  crash n0004; restarts at 15.000 s at a new address".
std::string DescribeFaults(const SwarmCase& c);
// Size, timeline, policy, network, clocks and workload in a few lines.
std::string DescribeCase(const SwarmCase& c);
// The case as text ParseCase reads back (one line each: header, workload,
// network, clocks, faults). Inline form: lines joined with ';'.
std::string FormatCase(const SwarmCase& c);
bool ParseCase(const std::string& text, SwarmCase* out, std::string* error);

// ---- shrinking

// Reduces a failing case to a smaller one for which `fails` still holds:
// drops faults one at a time (greedily, until none can go), then halves the
// cluster, the fault phase (moving faults earlier), the workload's keys and
// rate. Every candidate is ValidCase. `progress` (may be empty) hears each
// accepted step. Returns the smallest failing case found.
SwarmCase Shrink(const SwarmCase& failing, const std::function<bool(const SwarmCase&)>& fails,
                 const std::function<void(const std::string&)>& progress);

}  // namespace tally::sim

#endif  // TALLY_SIM_SWARM_H_

// Oracles: judge one RunRecord against the bounds docs/DESIGN.md states
// ("Failure and recovery: the bounds", "Partitions", "Clock skew").
//
//   exact        fault-free: every decision equals a central LimiterCore's fed
//                the same requests in the order and at the wall times their
//                owners saw them (100%).
//   excess       per key, every sliding interval of length window in true time:
//                admitted hits <= limit x sides + per failover
//                min(limit, hits requested in the unreplicated interval)
//                + per clock step or decider change between clocks delta apart
//                min(limit, limit x (delta + bucket_ms) / window).
//   replies      every client datagram to a node that stayed up got exactly one reply.
//   convergence  after quiesce, all preference-list members of every key hold
//                identical state (Node::StateHash) within the bound.
//   detection    crash -> first suspicion (mean vs. the analytical expectation of
//                membership/timing.h), crash -> last live member marking it dead;
//                false suspicions and false deaths of healthy members.
//   ownership    once membership is stable, every member's preference list of
//                every sampled key equals the ring of the true membership.
//   override     runtime limit overrides: every live member holds each write
//   spread       (or a later one) within the push bound, or within the heal
//                bound after the heal when a partition kept it from the writer.
//   override use every check of an overridden key is decided with the limit
//                its entry node held (the override's, or the key's own once
//                removed or before any write).
// The cost oracle compares several runs (sim/scenarios.cc, scenario scale).
#ifndef TALLY_SIM_ORACLES_H_
#define TALLY_SIM_ORACLES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "sim/simulator.h"

namespace tally::sim {

// While a window (t - W, t] overlaps [from_ns, to_ns] of true time, up to
// `deciders` nodes may decide a key at once (a partition's sides), so the
// excess oracle allows limit x deciders there (sim/swarm.h builds these).
struct DeciderPiece {
  TrueNs from_ns = 0;
  TrueNs to_ns = 0;
  double deciders = 1;
};

// The deciders the excess oracle allows for the window (from, to]: `base`,
// or the largest `deciders` of the pieces the window overlaps (a window
// overlaps [a, b] when to >= a and from < b).
double DecidersInWindow(const std::vector<DeciderPiece>& pieces, double base, TrueNs from,
                        TrueNs to);

struct Bounds {
  bool exact = false;
  double sides = 1;  // availability policy: k sides may each admit the limit
  // Time-varying sides: windows overlapping a piece allow its deciders
  // (sides stays the floor). Empty: `sides` for every window.
  std::vector<DeciderPiece> decider_pieces;
  // Ownership changes that can lose an unreplicated tail (per key at most
  // the number of times its decider changed).
  int failovers = 0;
  TrueNs tail_ns = 0;  // the unreplicated interval of one failover
  bool clock_terms = false;
  std::vector<int64_t> clock_steps_ms;  // wall clock jumps (magnitudes)
  TrueNs convergence_ns = 0;
  TrueNs membership_ns = 0;  // stable + agreed after the last membership change
  bool detection = false;
  bool detection_mean = false;  // compare the mean with the expectation (no loss)
  double detection_tolerance = 0.10;
  bool no_false_suspicions = false;
  bool no_false_deaths = true;
  std::vector<std::string> must_not_own;  // hosts whose clocks are beyond the maximum
  // Crashes (by crash time) the detection oracles leave out: their detection
  // overlapped other membership faults or loss (sim/swarm.h).
  std::vector<TrueNs> detection_excluded_ns;
  // Ownership: when >= 0, the last membership epoch must agree by this true
  // time (instead of membership_ns after the last change).
  TrueNs membership_deadline_ns = -1;
  // Convergence and ownership that had not happened when the run ended, but
  // whose bound reaches past the end, are reported as not judged instead of
  // failed (a swarm run cannot always watch a 200-node crash to its bound).
  bool unwatched_not_judged = false;
  // When >= 0: replicas may also take this long to converge after the last
  // membership epoch agreed (preference lists were still moving at
  // quiesce: a join or restart under loss, a crash still being detected).
  TrueNs convergence_after_agreement_ns = -1;
  // Runtime limit overrides (RunRecord::override_writes), judged when >= 0:
  // a host that was up and could reach the writer holds the write (or an
  // entry that wins over it) within override_push_ns of the write; one cut
  // off from the writer, within override_heal_ns of the next heal
  // (docs/DESIGN.md, "Runtime limit overrides").
  TrueNs override_push_ns = -1;
  TrueNs override_heal_ns = -1;
};

struct OracleResult {
  OracleResult() = default;
  explicit OracleResult(std::string n) : name(std::move(n)) {}
  std::string name;
  std::string value;
  std::string bound;
  bool pass = true;
  std::string detail;  // when failed: what, where
  double value_num = 0;
  double bound_num = 0;
  bool judged = true;  // false: the run could not decide it (reported, passes)
};

// Figures other tools (the summary, JSON, SVG, seed sweeps) reuse.
struct Figures {
  double max_excess_ratio = 0;  // admitted / limit, worst key and window
  std::string worst_key;
  uint64_t excess_hits = 0;     // sum over keys of (max window - limit)+
  double exact_agreement = -1;  // fraction, -1 when not applicable
  double convergence_s = -1;
  std::vector<double> first_suspicion_s;  // samples
  double expected_first_suspicion_s = 0;
  double expected_first_suspicion_sd_s = 0;
  double last_dead_s = -1;
  double membership_s = -1;
  uint64_t requests = 0, admitted = 0, decisions = 0;
  std::vector<uint64_t> key_peak;   // per key: most admitted in one window
  std::vector<uint64_t> key_bound;  // per key: the excess oracle's bound
  std::vector<uint64_t> key_extra;  // per key: the bound's tails and clock terms
  // The window of the worst excess ratio: its end and the bound there (x limit).
  TrueNs worst_window_end_ns = -1;
  double worst_bound_ratio = 0;
  double max_fill = 0;  // admitted / bound, the fullest window of any key
};

std::vector<OracleResult> Evaluate(const RunRecord& run, const Bounds& bounds, Figures* figures);

// The analytical time from a crash to the first suspicion: a live member first
// probes it after D (timing::ExpectedFirstProbeRoundRobin, continuous time,
// n members including the crashed one), and suspects it one probe interval
// later when the round ends without an ack. Returns mean and standard
// deviation in units of the probe interval.
void ExpectedFirstSuspicion(size_t n, double* mean_periods, double* sd_periods);

// The interval that the mean of k such first suspicions (n members each)
// falls in with probability 1 - 2 x tail, in probe intervals: the model's
// quantiles of the mean, from 40000 draws of k samples each from the
// distribution above with a fixed seed. Its tail is long (close to an
// exponential's: the first of n - 1 probers), so for a few crashes mean
// +- 3 standard errors is not the 0.27% two-sided test it would be for a
// normal: one sample beyond mean + 3 sd has probability 0.8% at n = 3 and
// 1.8% at n = 100 (docs/SIMULATION.md, "detection").
void FirstSuspicionMeanInterval(size_t n, size_t k, double tail, double* lo_periods,
                                double* hi_periods);

// A rigorous interval for the mean of k first suspicions (n members each)
// that the model leaves with probability at most `tail` on each side, in
// probe intervals, for the one-run check, which must not fail a right model
// by chance: FirstSuspicionMeanInterval's 40000 draws resolve tails down to
// about 1e-4 only, and at 0.00135 a right model failed one judged
// single-crash run in about 740 (swarm seed 4129: 3.75 periods at 3 nodes
// against 3.70). k = 1: the model's exact quantiles (inverting its survival
// function). k >= 2: Chernoff's bound, P(mean >= x) <= exp(-k I(x)) with I
// the rate function of the model's distribution (on a grid of 1/64 period,
// cells counted at their far edge, so the bound stays conservative), which
// is wider than the true quantile, never narrower. The distribution's power
// lies in the pooled test below, which this does not replace.
void FirstSuspicionMeanBound(size_t n, size_t k, double tail, double* lo_periods,
                             double* hi_periods);
// The tail the one-run detection check uses on each side.
inline constexpr double kOneRunDetectionTail = 1e-7;

// The pooled test of first suspicions over many runs (a scenario's seed sweep,
// a swarm): each sample as a multiple of its run's expectation, with the
// coefficient of variation (sd / mean) the model gives that run's size. The
// mean of the k ratios must lie within 10% of 1 or, when wider, within three
// standard errors of the mean the model predicts for those k samples,
// sqrt(sum cv_i^2) / k, widened for the tail's skew (Cornish-Fisher at z = 3
// with an exponential's skewness 2 / sqrt(k)): at the ~40 judged crashes of a
// 300-seed swarm (cv ~0.45 each) 10% is only 1.4 standard errors, which a
// right model misses about one range in six; from ~200 crashes on, 10% is
// the wider and governs.
// Not judged below `min_samples`.
struct PooledSuspicion {
  size_t samples = 0;
  double mean_ratio = 0;
  double allowed = 0;  // the half-width the mean was held to
  bool judged = false;
  bool pass = true;
};
PooledSuspicion JudgePooledFirstSuspicion(const std::vector<double>& ratios,
                                          const std::vector<double>& cvs, size_t min_samples = 30);

// The latest a crashed member of an n-member cluster is marked dead by every
// live member, seconds: the worst-case first probe of round-robin probing
// (timing::WorstCaseFirstProbeRoundRobinPeriods) and its round, the longest
// (unconfirmed) suspicion timeout, then the dead rumor's retransmissions on
// the gossip timer.
double LastDeadBoundS(const SimConfig& config, size_t n);

// Admitted hit events per key, (true time, hits), sorted by time: what clients
// were told was allowed (or, without a reply, what a node counted).
std::vector<std::vector<std::pair<TrueNs, uint64_t>>> AdmittedByKey(const RunRecord& run);

// The largest sum of hits in any interval (t - length, t] of sorted events.
uint64_t MaxInWindow(const std::vector<std::pair<TrueNs, uint64_t>>& events, TrueNs length_ns);

// Sorted events against a bound that varies with the window:
//   admitted(t - length, t] <= floor(limit x DecidersInWindow(pieces, sides,
//                                    t - length, t)) + extra
// for every t. Returns the largest sum (and the bound of its window) and the
// window that fills its bound the most.
struct WindowCheck {
  uint64_t most = 0;  // the largest sum in one window
  TrueNs most_end_ns = -1;
  uint64_t bound_at_most = 0;
  double worst_fill = 0;  // sum / bound, largest
  uint64_t worst_sum = 0, worst_bound = 0;
  TrueNs worst_end_ns = -1;
  bool violated = false;
};
struct WindowSample {
  TrueNs end_ns = 0;  // the window (end - length, end]
  uint64_t sum = 0;   // admitted in it (> 0)
  uint64_t bound = 0;
};
// Every window end where the sum peaks or the bound drops, with its sum
// and bound (the windows CheckWindows judges).
std::vector<WindowSample> WindowSamples(const std::vector<std::pair<TrueNs, uint64_t>>& events,
                                        TrueNs length_ns, uint64_t limit, double sides,
                                        const std::vector<DeciderPiece>& pieces, uint64_t extra);
WindowCheck CheckWindows(const std::vector<std::pair<TrueNs, uint64_t>>& events, TrueNs length_ns,
                         uint64_t limit, double sides, const std::vector<DeciderPiece>& pieces,
                         uint64_t extra);

}  // namespace tally::sim

#endif  // TALLY_SIM_ORACLES_H_

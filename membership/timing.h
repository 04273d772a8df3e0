// The timing math of SWIM + Lifeguard as pure functions, so the numbers the
// protocol runs on can be table-tested and quoted (docs/DESIGN.md). The
// formulas follow HashiCorp memberlist (suspicion.go, util.go, awareness.go),
// whose defaults SwimConfig uses.
//
// n is the number of members not known dead or left, self included.
#ifndef TALLY_MEMBERSHIP_TIMING_H_
#define TALLY_MEMBERSHIP_TIMING_H_

#include <chrono>
#include <cstddef>

namespace tally::membership::timing {

using std::chrono::milliseconds;

// Lifeguard's minimum suspicion timeout:
//   suspicion_mult * max(1, log10(n)) * probe_interval,
// with the scale truncated to 1/1000 as memberlist does.
milliseconds SuspicionMinTimeout(int suspicion_mult, size_t n, milliseconds probe_interval);

// The maximum, where a suspicion starts: suspicion_max_timeout_mult * min.
milliseconds SuspicionMaxTimeout(int suspicion_max_timeout_mult, milliseconds min);

// k, the independent confirmations a suspicion expects: suspicion_mult - 2
// (so that with one confirmation per probe interval the nominal timeout is
// reached two intervals early), or 0 when n - 2 < k (too few members to
// confirm; the suspicion then runs for the minimum).
int ExpectedConfirmations(int suspicion_mult, size_t n);

// The suspicion timeout, measured from when the suspicion started, after
// `confirmations` (c) of k:
//   max - (max - min) * log(c + 1) / log(k + 1),
// truncated to whole ms and floored at min. k < 1 gives min; c is clamped to
// [0, k], so confirmations beyond k change nothing.
milliseconds SuspicionTimeout(milliseconds min, milliseconds max, int k, int confirmations);

// How many times each rumor is piggybacked: retransmit_mult * ceil(log10(n + 1)).
int RetransmitLimit(int retransmit_mult, size_t n);

// Lifeguard local health: the score lives in [0, awareness_max_multiplier - 1]
// and stretches the probe interval and timeout to base * (score + 1).
int ClampHealth(int score, int awareness_max_multiplier);
milliseconds ScaleByHealth(milliseconds base, int score);

// memberlist's pushPullScale: above 32 members the push-pull interval grows
// with log2(n) so full-state traffic per node stays bounded.
milliseconds PushPullInterval(milliseconds base, size_t n);

// ---- Expected time to first detection ----
//
// "First probe" is when some live member first pings a crashed one; the
// prober suspects it one (health-scaled) probe interval later, when the probe
// round ends without an ack. All results are in units of the probe interval T.
//
// Uniform random targets (SWIM paper): each of the m = n - 1 live probers
// picks the dead member with probability 1/m per period; with a fraction q of
// members live, no one picks it in a period with probability
// (1 - 1/m)^(q m) -> e^(-q), so the expected number of periods up to and
// including the first probe is 1 / (1 - e^(-q)) (about 1.58 for q = 1).
double ExpectedFirstProbeUniformPeriods(double q);

// Round-robin over a list reshuffled every pass (what Swim does). Derivation:
// m = n - 1 live probers, each with a list of m targets (everyone but itself,
// the dead member included), probing one target per period, its phase in the
// period independent of the others. A pass takes m periods. At the crash a
// prober has used s slots of its current pass, s uniform on {0..m-1}; the
// dead member sits at position P, uniform on {1..m}, independent of s (the
// shuffle does not know the time). Let K be the number of the prober's slots
// from its next one up to and including the one that probes the dead member:
//   P > s:  K = P - s                      (later in this pass)
//   P <= s: K = m - s + P', P' uniform     (already probed: next pass)
// Summing over s and P,
//   G(j) = P(K > j) = (1/m) sum_{s=0}^{m-1} [ max(0, m - s - j) / m
//                                             + s * clamp(2m - j - s, 0, m) / m^2 ],
// which equals 1 - j/m + (j^3 - j) / (6 m^3) for j <= m. Note K is not
// uniform: a uniformly random crash lands in a long gap between two probes
// more often than in a short one (length bias), which the second term adds.
//
// (a) Periods counted as in SWIM (all probers tick together, count the
//     periods up to the first probe): P(N > j) = G(j)^m, so
//       E[N] = sum_{j=0}^{2m-2} G(j)^m.
double ExpectedFirstProbeRoundRobinPeriods(size_t n);
// G(j) above for n members: the chance that one prober has not reached the
// dead member within its next j probe slots.
double RoundRobinNoProbeProbability(size_t n, size_t j);
// (b) Continuous time with independent phases: the prober's wait
//     W = phase + (K - 1) T has P(W > t) = G interpolated linearly at t / T,
//     and D = min over the m probers, so with g_j = G(j)
//       E[D] / T = sum_j (g_j^(m+1) - g_{j+1}^(m+1)) / ((m + 1)(g_j - g_{j+1})).
//     (A fixed, never reshuffled order makes each wait uniform on (0, mT), and
//     E[D] / T = m / (m + 1): the "min of uniform positions" picture.)
double ExpectedFirstProbeRoundRobin(size_t n);
// As n grows G(j)^m -> e^(-j), so in expectation round-robin is no faster
// than random probing (both -> 1.58 periods, or -> 1 T in continuous time).
// What it buys is the worst case: a prober's two probes of one target are at
// most 2m - 1 slots apart, so someone probes the dead member within
// (2m - 1) = (2n - 3) periods (random probing has no such bound).
double WorstCaseFirstProbeRoundRobinPeriods(size_t n);

}  // namespace tally::membership::timing

#endif  // TALLY_MEMBERSHIP_TIMING_H_

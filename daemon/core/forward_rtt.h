// ForwardRtt: one peer's smoothed forward round trip and its deviation, and
// the forward timeout they give (RFC 6298's estimator: alpha 1/8, beta 1/4,
// timeout srtt + 4 rttvar), clamped between a floor and a maximum.
//
// Sans-IO: samples are durations the caller measured on its injected
// monotonic clock. Integer nanoseconds, so every run of the same inputs
// computes the same timeouts (the simulator replays seeds).
#ifndef TALLY_DAEMON_CORE_FORWARD_RTT_H_
#define TALLY_DAEMON_CORE_FORWARD_RTT_H_

#include <cstdint>

namespace tally::core {

class ForwardRtt {
 public:
  // One forward's round trip, send to reply. A negative sample (a driver
  // handing time backwards) counts as 0.
  void Sample(int64_t rtt_ns);

  // The forward timeout: srtt + 4 rttvar, within [floor_ns, max_ns]; the
  // floor until the first sample. REQUIRES: floor_ns <= max_ns.
  int64_t TimeoutNs(int64_t floor_ns, int64_t max_ns) const;

  uint64_t samples() const { return samples_; }
  int64_t srtt_ns() const { return srtt_ns_; }
  int64_t rttvar_ns() const { return rttvar_ns_; }

 private:
  // Far beyond any timeout a config allows (60 s): keeps 4 rttvar and the
  // sums below from overflowing whatever a peer's replies (or a driver's
  // clock) make of a sample.
  static constexpr int64_t kMaxSampleNs = int64_t{3600} * 1'000'000'000;

  uint64_t samples_ = 0;
  int64_t srtt_ns_ = 0;
  int64_t rttvar_ns_ = 0;
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_FORWARD_RTT_H_

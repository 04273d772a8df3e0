// ClockOffsetEstimator: a member's wall-clock offset from ours, measured from
// ping/ack exchanges (Cristian's algorithm). For a ping sent at local
// monotonic t0 and its ack received at t1 carrying the responder's wall time
// W, with rtt = t1 - t0 and L our wall time at t1:
//   offset = W + rtt/2 - L,   uncertainty rtt/2
// (the true offset lies within offset +- rtt/2 whatever the path asymmetry).
// A positive offset means the member's clock is ahead of ours.
//
// Samples with rtt > max(2 * min_rtt, 10 ms) are dropped: a long round trip
// is mostly queueing, which is rarely symmetric. The kept samples are
// smoothed (EWMA, weight 1/4). min_rtt is the smallest rtt seen; after 16
// rejections in a row it is reset to the current rtt, so a route that got
// permanently slower does not starve the estimate forever.
#ifndef TALLY_MEMBERSHIP_CLOCK_OFFSET_H_
#define TALLY_MEMBERSHIP_CLOCK_OFFSET_H_

#include <chrono>
#include <cstdint>

namespace tally::membership {

struct ClockEstimate {
  double offset_ms = 0;       // smoothed; member wall - our wall
  double uncertainty_ms = 0;  // smoothed rtt/2 of the kept samples + 1 ms (wall ms)
  double rtt_ms = 0;          // smoothed rtt of the kept samples
  double min_rtt_ms = 0;
  uint64_t samples = 0;   // kept
  uint64_t rejected = 0;  // dropped for a long round trip
};

class ClockOffsetEstimator {
 public:
  static constexpr double kMinRejectRttMs = 10;
  static constexpr int kResetAfterRejections = 16;

  // Feeds one exchange. Returns true iff the sample was kept.
  bool AddSample(std::chrono::nanoseconds rtt, int64_t remote_wall_ms, int64_t local_wall_ms);

  // Our own wall clock stepped by -delta_ms (we saw it against the monotonic
  // clock): every offset measured before moves by delta_ms at once, instead of
  // a quarter per sample, so a node whose clock jumped knows it is off now.
  void Shift(double delta_ms) { estimate_.offset_ms += delta_ms; }

  bool has_estimate() const { return estimate_.samples > 0; }
  const ClockEstimate& estimate() const { return estimate_; }

 private:
  ClockEstimate estimate_;
  int rejections_in_a_row_ = 0;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_CLOCK_OFFSET_H_

// NodeClock: what one simulated machine's clocks read at a true time.
//
// Both clocks run off one oscillator with a drift (ppb, integer math so the
// mapping is exact and invertible); SetDrift changes it from a true time on
// (a machine warming up, an NTP slew), piecewise and continuous. The
// monotonic clock is base + elapsed(t) and never steps. The wall clock adds an offset and any
// steps (jumps, forward or back) the fault schedule applies, the way NTP or
// an operator steps a real clock.
#ifndef TALLY_SIM_CLOCK_H_
#define TALLY_SIM_CLOCK_H_

#include <chrono>
#include <cstdint>
#include <vector>

#include "tally/types.h"

namespace tally::sim {

using TrueNs = int64_t;  // the simulator's true time, ns since the run began

// Wall time of true time 0: 2024-01-01T00:00:00Z, so bucket names look real.
inline constexpr int64_t kEpochWallMs = 1'704'067'200'000;

class NodeClock {
 public:
  NodeClock() = default;
  NodeClock(int64_t offset_ms, int64_t drift_ppb, int64_t monotonic_base_ns)
      : offset_ms_(offset_ms),
        drift_ppb_(drift_ppb),
        monotonic_base_ns_(monotonic_base_ns),
        current_{0, 0, drift_ppb} {}

  Instant At(TrueNs t) const {
    const int64_t elapsed = Elapsed(t);
    Instant now;
    now.monotonic = std::chrono::nanoseconds(monotonic_base_ns_ + elapsed);
    now.wall = std::chrono::milliseconds(kEpochWallMs + offset_ms_ + FloorDiv(elapsed, 1'000'000));
    return now;
  }

  // The earliest true time at which the monotonic clock reads >= mono_ns.
  TrueNs TrueTimeOfMonotonic(int64_t mono_ns) const {
    const int64_t want = mono_ns - monotonic_base_ns_;
    if (want <= 0) return 0;
    Segment seg = current_;
    if (want < seg.elapsed_at_from) {
      for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
        seg = *it;
        if (want >= seg.elapsed_at_from) break;
      }
    }
    auto t = seg.from + static_cast<int64_t>(
                            (static_cast<__int128>(want - seg.elapsed_at_from) * 1'000'000'000) /
                            (1'000'000'000 + seg.drift_ppb));
    while (Elapsed(t) < want) ++t;
    while (t > 0 && Elapsed(t - 1) >= want) --t;
    return t;
  }

  // From true time `from` on the oscillator runs drift_ppb off (both clocks
  // stay continuous). REQUIRES: from is not before the previous change.
  void SetDrift(TrueNs from, int64_t drift_ppb) {
    const Segment next{from, Elapsed(from), drift_ppb};
    history_.push_back(current_);
    current_ = next;
    drift_ppb_ = drift_ppb;
  }

  // Steps the wall clock (not the monotonic one).
  void Jump(int64_t delta_ms) { offset_ms_ += delta_ms; }
  int64_t offset_ms() const { return offset_ms_; }
  int64_t drift_ppb() const { return drift_ppb_; }

  // Wall offset from true time at t, ms (offset plus accumulated drift).
  double ErrorMs(TrueNs t) const {
    return static_cast<double>(offset_ms_) + static_cast<double>(Elapsed(t) - t) / 1e6;
  }

 private:
  // One piece of the oscillator: from true time `from` (elapsed_at_from
  // then) it runs drift_ppb off.
  struct Segment {
    TrueNs from = 0;
    int64_t elapsed_at_from = 0;
    int64_t drift_ppb = 0;
  };

  int64_t Elapsed(TrueNs t) const {
    const Segment* seg = &current_;
    if (t < current_.from) {
      for (auto it = history_.rbegin(); it != history_.rend(); ++it) {
        seg = &*it;
        if (t >= seg->from) break;
      }
    }
    const int64_t d = t - seg->from;
    return seg->elapsed_at_from + d +
           static_cast<int64_t>((static_cast<__int128>(d) * seg->drift_ppb) / 1'000'000'000);
  }
  static int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

  int64_t offset_ms_ = 0;
  int64_t drift_ppb_ = 0;
  int64_t monotonic_base_ns_ = 0;
  Segment current_;
  std::vector<Segment> history_;  // earlier pieces, oldest first (usually none)
};

}  // namespace tally::sim

#endif  // TALLY_SIM_CLOCK_H_

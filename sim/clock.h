// NodeClock: what one simulated machine's clocks read at a true time.
//
// Both clocks run off one oscillator with a fixed drift (ppb, integer math so
// the mapping is exact and invertible). The monotonic clock is
// base + elapsed(t) and never steps. The wall clock adds an offset and any
// steps (jumps, forward or back) the fault schedule applies, the way NTP or
// an operator steps a real clock.
#ifndef TALLY_SIM_CLOCK_H_
#define TALLY_SIM_CLOCK_H_

#include <chrono>
#include <cstdint>

#include "tally/types.h"

namespace tally::sim {

using TrueNs = int64_t;  // the simulator's true time, ns since the run began

// Wall time of true time 0: 2024-01-01T00:00:00Z, so bucket names look real.
inline constexpr int64_t kEpochWallMs = 1'704'067'200'000;

class NodeClock {
 public:
  NodeClock() = default;
  NodeClock(int64_t offset_ms, int64_t drift_ppb, int64_t monotonic_base_ns)
      : offset_ms_(offset_ms), drift_ppb_(drift_ppb), monotonic_base_ns_(monotonic_base_ns) {}

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
    auto t = static_cast<int64_t>((static_cast<__int128>(want) * 1'000'000'000) /
                                  (1'000'000'000 + drift_ppb_));
    while (Elapsed(t) < want) ++t;
    while (t > 0 && Elapsed(t - 1) >= want) --t;
    return t;
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
  int64_t Elapsed(TrueNs t) const {
    return t + static_cast<int64_t>((static_cast<__int128>(t) * drift_ppb_) / 1'000'000'000);
  }
  static int64_t FloorDiv(int64_t a, int64_t b) { return a >= 0 ? a / b : -((-a + b - 1) / b); }

  int64_t offset_ms_ = 0;
  int64_t drift_ppb_ = 0;
  int64_t monotonic_base_ns_ = 0;
};

}  // namespace tally::sim

#endif  // TALLY_SIM_CLOCK_H_

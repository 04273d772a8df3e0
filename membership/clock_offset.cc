#include "membership/clock_offset.h"

#include <algorithm>

namespace tally::membership {
namespace {
constexpr double kWeight = 0.25;
// Wall times travel in whole ms: each end truncates by up to 1 ms.
constexpr double kWallResolutionMs = 1;
}  // namespace

bool ClockOffsetEstimator::AddSample(std::chrono::nanoseconds rtt, int64_t remote_wall_ms,
                                     int64_t local_wall_ms) {
  const double rtt_ms = std::max(0.0, static_cast<double>(rtt.count()) / 1e6);
  ClockEstimate& e = estimate_;
  if (e.samples == 0 && e.rejected == 0) e.min_rtt_ms = rtt_ms;
  e.min_rtt_ms = std::min(e.min_rtt_ms, rtt_ms);
  if (rtt_ms > std::max(2 * e.min_rtt_ms, kMinRejectRttMs)) {
    ++e.rejected;
    if (++rejections_in_a_row_ >= kResetAfterRejections) {
      e.min_rtt_ms = rtt_ms;
      rejections_in_a_row_ = 0;
    }
    return false;
  }
  rejections_in_a_row_ = 0;
  const double offset = static_cast<double>(remote_wall_ms - local_wall_ms) + rtt_ms / 2;
  if (e.samples == 0) {
    e.offset_ms = offset;
    e.rtt_ms = rtt_ms;
  } else {
    e.offset_ms += kWeight * (offset - e.offset_ms);
    e.rtt_ms += kWeight * (rtt_ms - e.rtt_ms);
  }
  e.uncertainty_ms = e.rtt_ms / 2 + kWallResolutionMs;
  ++e.samples;
  return true;
}

}  // namespace tally::membership

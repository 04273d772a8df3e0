#include "daemon/io/snapshot_schedule.h"

#include <algorithm>

namespace tally::io {

SnapshotSchedule::SnapshotSchedule(std::chrono::milliseconds interval, uint64_t seed, Time now)
    : interval_(interval), rng_(seed), last_end_(now - kOverrideSpacing) {
  next_periodic_ = interval_.count() > 0 ? now + NextWait() : Time::max();
}

std::chrono::milliseconds SnapshotSchedule::NextWait() {
  // The interval +-10%, so members started together (a deploy) do not all
  // write, and stall their disks, at the same moment.
  std::uniform_int_distribution<int64_t> jitter(-interval_.count() / 10, interval_.count() / 10);
  return interval_ + std::chrono::milliseconds(jitter(rng_));
}

SnapshotSchedule::Time SnapshotSchedule::Due() const {
  if (!overrides_pending_) return next_periodic_;
  return std::min(next_periodic_, last_end_ + (last_ok_ ? kOverrideSpacing : kRetrySpacing));
}

SnapshotSchedule::Kind SnapshotSchedule::Begin(Time now) {
  const bool periodic = now >= next_periodic_;
  writing_overrides_ = overrides_pending_;
  overrides_pending_ = false;
  return periodic || !writing_overrides_ ? Kind::kPeriodic : Kind::kOverrides;
}

void SnapshotSchedule::Finished(Time now, bool ok) {
  last_end_ = now;
  last_ok_ = ok;
  if (!ok && writing_overrides_) overrides_pending_ = true;
  writing_overrides_ = false;
  // Any written snapshot is as fresh as a periodic one: the next periodic
  // write is an interval after it. A failed one is retried an interval later.
  if (interval_.count() > 0) next_periodic_ = now + NextWait();
}

}  // namespace tally::io

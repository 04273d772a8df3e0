// When a cluster member's snapshot writer thread writes (docs/DESIGN.md,
// "Snapshots"): every interval (+-10%), and soon after a change of the
// runtime limit overrides, coalesced so that a burst of changes costs at
// most one extra write per kOverrideSpacing. Time is injected (the thread
// passes the steady clock), so the rule is tested without sleeping.
//
// Not thread-safe: the writer thread and the callers of OverridesChanged
// share it under one mutex (ClusterDriver::Impl::snapshot_mu).
#ifndef TALLY_DAEMON_IO_SNAPSHOT_SCHEDULE_H_
#define TALLY_DAEMON_IO_SNAPSHOT_SCHEDULE_H_

#include <chrono>
#include <cstdint>
#include <random>

namespace tally::io {

class SnapshotSchedule {
 public:
  using Clock = std::chrono::steady_clock;
  using Time = Clock::time_point;

  // An override write starts no sooner than this after the end of the
  // previous write (of either kind): a burst of `tally limit set` writes at
  // most once a second, however long the burst.
  static constexpr std::chrono::milliseconds kOverrideSpacing{1000};
  // After a failed write (a full or read-only disk), a pending override
  // change is retried no sooner than this: one error line per 10 s, not per
  // second.
  static constexpr std::chrono::milliseconds kRetrySpacing{10'000};

  enum class Kind { kPeriodic, kOverrides };

  // interval 0: no periodic writes (override writes still happen). The
  // first periodic write is due one jittered interval after `now`.
  SnapshotSchedule(std::chrono::milliseconds interval, uint64_t seed, Time now);

  // The override map changed and the change is in no written snapshot yet.
  void OverridesChanged() { overrides_pending_ = true; }
  bool overrides_pending() const { return overrides_pending_; }

  // When the next write is due; Time::max() when none is (interval 0 and no
  // pending change).
  Time Due() const;

  // A write starts now (now >= Due()): what it is for. Clears the pending
  // change: one that comes while the write runs is pending again, for the
  // next write (the map is copied late in a write, so it may already hold
  // it; one write too many, never one too few).
  Kind Begin(Time now);
  // The write that Begin started ended at `now`; `ok`: it was written. A
  // failed write leaves the change it carried pending.
  void Finished(Time now, bool ok);

 private:
  std::chrono::milliseconds NextWait();

  std::chrono::milliseconds interval_;
  std::mt19937_64 rng_;
  Time next_periodic_;
  Time last_end_;        // end of the last write (or construction)
  bool last_ok_ = true;  // the last write succeeded
  bool overrides_pending_ = false;
  bool writing_overrides_ = false;  // the running write carries a change
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SNAPSHOT_SCHEDULE_H_

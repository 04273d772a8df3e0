#include "daemon/io/local_snapshots.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "daemon/io/limit_door.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/io/snapshot_writer.h"
#include "daemon/limiter_access.h"
#include "persist/restore.h"
#include "persist/snapshot.h"

namespace tally::io {

using internal::LimiterAccess;

LocalSnapshots::LocalSnapshots(Limiter* limiter, LocalSnapshotOptions options)
    : limiter_(limiter), options_(std::move(options)) {}

LocalSnapshots::~LocalSnapshots() { StopThread(); }

SnapshotIdentity LocalSnapshots::Identity() const {
  return SnapshotIdentity{options_.cluster_name, options_.node_id, options_.generation,
                          options_.buckets_per_window};
}

void LocalSnapshots::Restore(Instant now) {
  const std::filesystem::path path = SnapshotPath(options_.state_dir);
  SnapshotReadResult read =
      ReadSnapshotFile(path, ExpectSnapshot(Identity(), now.wall.count(), options_.max_bytes));
  SnapshotCounters c;
  if (read.outcome == SnapshotReadResult::Outcome::kLoaded) {
    persist::RestoreStats restored;
    {
      // Nothing serves yet; the locks keep the stores' contract all the same.
      std::vector<std::unique_lock<std::mutex>> locks;
      locks.reserve(limiter_->shard_count());
      for (size_t s = 0; s < limiter_->shard_count(); ++s) {
        locks.push_back(LimiterAccess::LockShard(*limiter_, s));
      }
      restored =
          persist::RestoreSnapshot(read.snapshot, now.wall.count(), [this](const crdt::KeyId& key) {
            return &LimiterAccess::ShardStore(*limiter_, LimiterAccess::ShardOf(*limiter_, key));
          });
    }
    CountRestoredKeys(read.snapshot, restored, &c);
    spdlog::info(
        "{}; restored {} keys written by generation {} {} ms ago ({} refused by the store); "
        "a single node's limit overrides are in {}",
        read.message, restored.keys_merged, read.snapshot.header.generation,
        now.wall.count() - read.snapshot.header.written_wall_ms, restored.keys_refused,
        LocalOverrides::kOverridesFileName);
  } else {
    ReportUnloadedSnapshot(read, path, &c);
  }
  std::lock_guard<std::mutex> lock(stats_mu_);
  stats_ = c;
}

void LocalSnapshots::Start(uint64_t seed) {
  if (options_.interval.count() <= 0 || thread_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = false;
    schedule_.emplace(options_.interval, seed, SnapshotSchedule::Clock::now());
  }
  thread_ = std::thread([this] { Loop(); });
}

bool LocalSnapshots::WriteFinal() {
  StopThread();
  return Write("shutdown");
}

SnapshotCounters LocalSnapshots::counters() const {
  std::lock_guard<std::mutex> lock(stats_mu_);
  return stats_;
}

bool LocalSnapshots::Write(const char* why) {
  std::lock_guard<std::mutex> write_lock(write_mu_);
  SnapshotWriter writer(&buffer_, limiter_->GetStats().live_keys);
  // Shard after shard, each in slices of home slots under its own lock, so a
  // check waits at most one slice of one shard.
  for (size_t s = 0; s < limiter_->shard_count(); ++s) {
    persist::StorePass pass;
    for (bool done = false; !done;) {
      {
        std::unique_lock<std::mutex> lock = LimiterAccess::LockShard(*limiter_, s);
        const SnapshotWriter::Steady::time_point slice = SnapshotWriter::Steady::now();
        done = pass.Step(LimiterAccess::ShardStore(*limiter_, s), options_.slice_slots,
                         writer.encoder());
        writer.RecordHold(SnapshotWriter::Steady::now() - slice);
      }
      std::this_thread::yield();
    }
  }
  return writer.Finish(why, Identity(), ReadClock().wall.count(), SnapshotPath(options_.state_dir),
                       &stats_mu_, &stats_);
}

void LocalSnapshots::Loop() {
  using Clock = SnapshotSchedule::Clock;
  std::unique_lock<std::mutex> lock(mu_);
  SnapshotSchedule& schedule = *schedule_;
  for (;;) {
    if (stop_) return;
    const SnapshotSchedule::Time due = schedule.Due();
    if (Clock::now() < due) {
      cv_.wait_until(lock, due);
      continue;
    }
    schedule.Begin(Clock::now());
    lock.unlock();
    const bool ok = Write("periodic");
    lock.lock();
    schedule.Finished(Clock::now(), ok);
  }
}

void LocalSnapshots::StopThread() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

}  // namespace tally::io

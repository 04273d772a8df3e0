#include "daemon/io/local_snapshots.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

#include "daemon/io/limit_door.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/limiter_access.h"
#include "persist/restore.h"
#include "persist/snapshot.h"

namespace tally::io {

using internal::LimiterAccess;

LocalSnapshots::LocalSnapshots(Limiter* limiter, LocalSnapshotOptions options)
    : limiter_(limiter), options_(std::move(options)) {}

LocalSnapshots::~LocalSnapshots() { StopThread(); }

void LocalSnapshots::Restore(Instant now) {
  const std::filesystem::path path = SnapshotPath(options_.state_dir);
  persist::SnapshotExpectations expect;
  expect.cluster_name = options_.cluster_name;
  expect.node_id = options_.node_id;
  expect.generation = options_.generation;
  expect.buckets_per_window = options_.buckets_per_window;
  expect.now_wall_ms = now.wall.count();
  expect.max_bytes = options_.max_bytes;
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  SnapshotCounters c;
  switch (read.outcome) {
    case SnapshotReadResult::Outcome::kLoaded: {
      persist::RestoreStats restored;
      {
        // Nothing serves yet; the locks keep the stores' contract all the same.
        std::vector<std::unique_lock<std::mutex>> locks;
        locks.reserve(limiter_->shard_count());
        for (size_t s = 0; s < limiter_->shard_count(); ++s) {
          locks.push_back(LimiterAccess::LockShard(*limiter_, s));
        }
        restored = persist::RestoreSnapshot(
            read.snapshot, now.wall.count(), [this](const crdt::KeyId& key) {
              return &LimiterAccess::ShardStore(*limiter_, LimiterAccess::ShardOf(*limiter_, key));
            });
      }
      const persist::DecodedSnapshot& d = read.snapshot;
      c.restore_loaded = 1;
      c.restored_keys = restored.keys_merged;
      c.restore_dropped = d.dropped_expired + d.dropped_geometry + d.dropped_future +
                          restored.keys_expired + restored.keys_refused;
      spdlog::info(
          "{}; restored {} keys written by generation {} {} ms ago ({} refused by the store); "
          "a single node's limit overrides are in {}",
          read.message, restored.keys_merged, d.header.generation,
          now.wall.count() - d.header.written_wall_ms, restored.keys_refused,
          LocalOverrides::kOverridesFileName);
      break;
    }
    case SnapshotReadResult::Outcome::kMissing:
      c.restore_missing = 1;
      spdlog::info("{}", read.message);
      break;
    case SnapshotReadResult::Outcome::kUnreadable:
    case SnapshotReadResult::Outcome::kRejected:
      (read.outcome == SnapshotReadResult::Outcome::kRejected ? c.restore_rejected
                                                              : c.restore_unreadable) = 1;
      spdlog::warn("{}{}", read.message, MoveRejectedAside(path));
      break;
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
  using Steady = std::chrono::steady_clock;
  auto us = [](Steady::duration d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  std::lock_guard<std::mutex> write_lock(write_mu_);
  const Steady::time_point start = Steady::now();
  // Room for every live key before any lock is taken: growing the payload
  // inside a slice copied all of it under that shard's lock (32 ms at 1M keys).
  buffer_.reserve(persist::SnapshotPayloadReserve(limiter_->GetStats().live_keys));
  persist::SnapshotEncoder encoder({}, std::move(buffer_));
  Steady::duration longest{0};
  // Shard after shard, each in slices of home slots under its own lock, so a
  // check waits at most one slice of one shard.
  for (size_t s = 0; s < limiter_->shard_count(); ++s) {
    persist::StorePass pass;
    for (bool done = false; !done;) {
      {
        std::unique_lock<std::mutex> lock = LimiterAccess::LockShard(*limiter_, s);
        const Steady::time_point slice = Steady::now();
        done = pass.Step(LimiterAccess::ShardStore(*limiter_, s), options_.slice_slots, &encoder);
        longest = std::max(longest, Steady::now() - slice);
      }
      std::this_thread::yield();
    }
  }
  persist::SnapshotHeader header;
  header.cluster_name = options_.cluster_name;
  header.node_id = options_.node_id;
  header.generation = options_.generation;
  header.written_wall_ms = ReadClock().wall.count();
  header.buckets_per_window = options_.buckets_per_window;
  persist::EncodedSnapshot sealed = encoder.Finish(header);
  const Steady::time_point encoded = Steady::now();
  const std::filesystem::path path = SnapshotPath(options_.state_dir);
  std::string error;
  const bool ok = WriteSnapshotFile(path, sealed, &error);
  const Steady::time_point written = Steady::now();
  const size_t bytes = sealed.size();  // before the payload goes back to the buffer
  buffer_ = std::move(sealed.payload);
  {
    std::lock_guard<std::mutex> lock(stats_mu_);
    SnapshotCounters& c = stats_;
    c.longest_slice_us = std::max(c.longest_slice_us, us(longest));
    if (ok) {
      ++c.writes;
      c.last_keys = sealed.keys;
      c.last_bytes = bytes;
      c.last_overrides = 0;
      c.last_encode_us = us(encoded - start);
      c.last_write_us = us(written - encoded);
    } else {
      ++c.write_errors;
    }
  }
  if (!ok) {
    spdlog::error("{} snapshot not written: {}", why, error);
    return false;
  }
  spdlog::log(std::string_view(why) == "periodic" ? spdlog::level::debug : spdlog::level::info,
              "{} snapshot: {} keys, {} bytes to {} (encode {} ms, longest lock hold {} us, "
              "write {} ms)",
              why, sealed.keys, bytes, path.string(), us(encoded - start) / 1000, us(longest),
              us(written - encoded) / 1000);
  return true;
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

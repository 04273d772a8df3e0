// ClusterDriver: snapshots (docs/DESIGN.md, "Snapshots"). Restore at start,
// sliced writes, and the writer thread (periodic, and soon after an
// override change: SnapshotSchedule).
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <thread>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/limit_door.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/io/snapshot_schedule.h"
#include "daemon/io/snapshot_writer.h"
#include "persist/snapshot.h"

namespace tally::io {

SnapshotIdentity ClusterDriver::Impl::Identity() const {
  return SnapshotIdentity{options.peer_auth.cluster_name, options.node.node_id,
                          options.node.generation, options.node.limiter.buckets_per_window};
}

persist::SnapshotExpectations ClusterDriver::Impl::ExpectedSnapshot(const Instant& now) const {
  return ExpectSnapshot(Identity(), now.wall.count(), options.max_snapshot_bytes);
}

void ClusterDriver::Impl::RestoreSnapshot(const Instant& now) {
  const std::filesystem::path path = SnapshotPath(options.state_dir);
  persist::SnapshotExpectations expect = ExpectedSnapshot(now);
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  SnapshotCounters c;
  // Published last, and not under `mu` (StatusLocked takes them in the other order).
  struct Publish {
    Impl* impl;
    SnapshotCounters* c;
    ~Publish() {
      std::lock_guard<std::mutex> stats_lock(impl->snapshot_stats_mu);
      impl->snapshot_stats = *c;
    }
  } publish{this, &c};
  switch (read.outcome) {
    case SnapshotReadResult::Outcome::kLoaded: {
      persist::RestoreStats restored;
      crdt::OverrideRestoreCounts overrides;
      {
        std::lock_guard<std::mutex> lock(mu);
        restored = node->Restore(read.snapshot, now);
        overrides = node->RestoreOverrides(read.snapshot);
        // The rules doors read descriptor overrides from the table, from the first request.
        PublishOverridesLocked();
      }
      const persist::DecodedSnapshot& d = read.snapshot;
      restored_written_wall_ms = d.header.written_wall_ms;
      CountRestoredKeys(d, restored, &c);
      c.restored_overrides = overrides.applied + overrides.stale;
      c.restore_dropped_overrides =
          d.dropped_overrides_invalid + d.dropped_overrides_future + overrides.refused;
      spdlog::info(
          "{}; restored {} keys written by generation {} {} ms ago ({} refused by the store) "
          "and {} limit overrides ({} refused by the map)",
          read.message, restored.keys_merged, d.header.generation,
          now.wall.count() - d.header.written_wall_ms, restored.keys_refused,
          overrides.applied + overrides.stale, overrides.refused);
      return;
    }
    case SnapshotReadResult::Outcome::kMissing:
    case SnapshotReadResult::Outcome::kUnreadable:
    case SnapshotReadResult::Outcome::kRejected:
      ReportUnloadedSnapshot(read, path, &c);
      return;
  }
}

void ClusterDriver::Impl::ImportSingleNodeOverrides(const Instant& now) {
  const std::filesystem::path path =
      std::filesystem::path(options.state_dir) / LocalOverrides::kOverridesFileName;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return;
  persist::SnapshotExpectations expect = ExpectedSnapshot(now);
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  if (read.outcome == SnapshotReadResult::Outcome::kRejected &&
      read.snapshot.status == persist::SnapshotStatus::kOtherNode) {
    // Overrides are the cluster's, not a node's: a single node often ran
    // under its host name, a member under --node-id. Every other check holds.
    expect.node_id = read.snapshot.header.node_id;
    read = ReadSnapshotFile(path, expect);
  }
  if (read.outcome != SnapshotReadResult::Outcome::kLoaded) {
    spdlog::warn("single-node limit overrides not imported (the file is left as it is): {}",
                 read.message);
    return;
  }
  const int64_t file_written_ms = read.snapshot.header.written_wall_ms;
  crdt::OverrideRestoreCounts counts;
  {
    std::lock_guard<std::mutex> lock(mu);
    // A file older than a snapshot that holds overrides is a leftover (this
    // member has run in cluster mode since): its entries were superseded.
    if (node->overrides().size() > 0 && restored_written_wall_ms &&
        file_written_ms <= *restored_written_wall_ms) {
      spdlog::info(
          "{} not imported: older than {}, which holds this member's limit overrides; delete it "
          "if it is not needed",
          path.string(), SnapshotPath(options.state_dir).string());
      return;
    }
    counts = node->RestoreOverrides(read.snapshot);
    PublishOverridesLocked();
  }
  {
    std::lock_guard<std::mutex> stats_lock(snapshot_stats_mu);
    snapshot_stats.imported_overrides = counts.applied + counts.stale;
  }
  // In counts.snapshot before the file is renamed, so a crash in between
  // imports it again (the same join) rather than losing it.
  std::filesystem::path imported = path;
  imported += ".imported";
  std::string where;
  if (!WriteSnapshot("import")) {
    where =
        "; not written to the snapshot, so the file stays and is imported again at the next "
        "start";
  } else if (std::filesystem::rename(path, imported, ec); ec) {
    where = "; could not rename it to " + imported.string() + ": " + ec.message();
  } else {
    where = "; renamed to " + imported.string();
  }
  spdlog::info(
      "imported {} limit overrides ({} refused by the map) written by the single node {} {} ms "
      "ago from {}; they spread to the members by anti-entropy{}",
      counts.applied + counts.stale, counts.refused, read.snapshot.header.node_id,
      now.wall.count() - file_written_ms, path.string(), where);
}

bool ClusterDriver::Impl::WriteSnapshot(const char* why) {
  using Steady = SnapshotWriter::Steady;
  std::lock_guard<std::mutex> write_lock(snapshot_write_mu);
  size_t keys = 0;
  {
    std::lock_guard<std::mutex> lock(mu);
    keys = node->store().size();
  }
  SnapshotWriter writer(&snapshot_buffer, keys);
  persist::StorePass pass;
  for (bool done = false; !done;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      const Steady::time_point slice = Steady::now();
      done = pass.Step(node->store(), options.snapshot_slice_slots, writer.encoder());
      writer.RecordHold(Steady::now() - slice);
    }
    // Let the I/O threads waiting for the Node in before the next slice.
    std::this_thread::yield();
  }
  {
    // The whole override map (at most LimitOverrides::kMaxEntries) in one hold.
    std::lock_guard<std::mutex> lock(mu);
    const Steady::time_point hold = Steady::now();
    writer.encoder()->SetOverrides(node->overrides().Entries(), node->override_clock());
    writer.RecordHold(Steady::now() - hold);
  }
  return writer.Finish(why, Identity(), ReadClock().wall.count(), SnapshotPath(options.state_dir),
                       &snapshot_stats_mu, &snapshot_stats);
}

void ClusterDriver::Impl::SnapshotLoop() {
  using Clock = SnapshotSchedule::Clock;
  std::unique_lock<std::mutex> lock(snapshot_mu);
  SnapshotSchedule& schedule = *snapshot_schedule;
  for (;;) {
    if (snapshot_stop) return;
    // Re-evaluated after every wake: a stop, an override change, or the time.
    const SnapshotSchedule::Time due = schedule.Due();
    if (due == SnapshotSchedule::Time::max()) {
      snapshot_cv.wait(lock);
      continue;
    }
    if (Clock::now() < due) {
      snapshot_cv.wait_until(lock, due);
      continue;
    }
    const SnapshotSchedule::Kind kind = schedule.Begin(Clock::now());
    lock.unlock();
    const bool ok =
        WriteSnapshot(kind == SnapshotSchedule::Kind::kPeriodic ? "periodic" : "overrides");
    lock.lock();
    schedule.Finished(Clock::now(), ok);
  }
}

void ClusterDriver::Impl::OverridesChangedLocked() {
  {
    std::lock_guard<std::mutex> lock(snapshot_mu);
    // No schedule: no state dir, or still restoring (the file holds them).
    if (!snapshot_schedule || snapshot_schedule->overrides_pending()) return;
    snapshot_schedule->OverridesChanged();
  }
  snapshot_cv.notify_all();
}

void ClusterDriver::Impl::StopSnapshotThread() {
  {
    std::lock_guard<std::mutex> lock(snapshot_mu);
    snapshot_stop = true;
  }
  snapshot_cv.notify_all();
  if (snapshot_thread.joinable()) snapshot_thread.join();
}

}  // namespace tally::io

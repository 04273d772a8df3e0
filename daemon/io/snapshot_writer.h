// What every count snapshot shares, whoever takes it: a cluster member
// (ClusterDriver) or a single node (LocalSnapshots). Both encode their own
// stores in slices under their own locks; the identity a snapshot carries,
// its sealing, the atomic write, the counters and the log lines are here,
// once (docs/DESIGN.md, "Snapshots").
//
// Thread safety: SnapshotWriter is used by one writing thread at a time (its
// owner serializes writes); Finish takes `stats_mu` to publish. The free
// functions are reentrant.
#ifndef TALLY_DAEMON_IO_SNAPSHOT_WRITER_H_
#define TALLY_DAEMON_IO_SNAPSHOT_WRITER_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/io/snapshot_counters.h"
#include "daemon/io/snapshot_file.h"
#include "persist/restore.h"
#include "persist/snapshot.h"

namespace tally::io {

// Whose counts a snapshot holds: written into its header, and required of a
// snapshot restored.
struct SnapshotIdentity {
  std::string cluster_name;
  std::string node_id;
  uint64_t generation = 0;  // this process's
  uint32_t buckets_per_window = 10;
};

// What a snapshot must be to be restored now (persist::DecodeSnapshot).
persist::SnapshotExpectations ExpectSnapshot(const SnapshotIdentity& identity, int64_t now_wall_ms,
                                             uint64_t max_bytes);

// Counts a restore whose outcome was not kLoaded: missing (logged), or
// unreadable or refused (logged as a warning, and the file moved aside as
// counts.snapshot.rejected so the evidence survives the next write).
void ReportUnloadedSnapshot(const SnapshotReadResult& read, const std::filesystem::path& path,
                            SnapshotCounters* counters);

// Counts a loaded snapshot's keys: joined, or dropped (by the decoder or the store).
void CountRestoredKeys(const persist::DecodedSnapshot& snapshot,
                       const persist::RestoreStats& restored, SnapshotCounters* counters);

// One snapshot write. The owner encodes into encoder() in slices, each under
// its store's lock, reporting each hold with RecordHold; Finish seals, writes
// and reports.
class SnapshotWriter {
 public:
  using Steady = std::chrono::steady_clock;

  // `buffer` (the last write's payload, reused: its pages are mapped) is
  // reserved for `keys` before any lock is taken: growing the payload inside
  // a slice copied all of it under a store's lock (32 ms at 1M keys). It must
  // outlive this object and gets the payload back at Finish.
  SnapshotWriter(std::vector<std::byte>* buffer, size_t keys);
  SnapshotWriter(const SnapshotWriter&) = delete;
  SnapshotWriter& operator=(const SnapshotWriter&) = delete;

  persist::SnapshotEncoder* encoder() { return &encoder_; }
  // How long one slice held a lock (the longest is reported).
  void RecordHold(Steady::duration held) { longest_hold_ = std::max(longest_hold_, held); }

  // Seals the snapshot under `identity` at `written_wall_ms`, writes it to
  // `path` atomically (WriteSnapshotFile), updates `*stats` under
  // `*stats_mu`, and logs (at debug for "periodic", info otherwise; an error
  // when the write failed). Returns whether the file was written. Call once.
  bool Finish(const char* why, const SnapshotIdentity& identity, int64_t written_wall_ms,
              const std::filesystem::path& path, std::mutex* stats_mu, SnapshotCounters* stats);

 private:
  std::vector<std::byte>* const buffer_;
  const Steady::time_point start_;
  persist::SnapshotEncoder encoder_;
  Steady::duration longest_hold_{0};
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SNAPSHOT_WRITER_H_

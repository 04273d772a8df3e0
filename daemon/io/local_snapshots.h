// LocalSnapshots: count snapshots of a single node (no --gossip: the sharded
// tally::Limiter, no Node), so a restart keeps hourly and daily quotas as a
// cluster member's does (docs/DESIGN.md, "Snapshots"). The same file
// (STATE_DIR/counts.snapshot), format and restore rule as a member's
// (ClusterDriver): counted hits come back as rows of the old process's
// replica slot, never incremented again, expiring with their buckets. The
// node's runtime limit overrides are not in it: a single node keeps them in
// overrides.snapshot, saved at every change (LocalOverrides).
//
// Thread safety: Restore before serving, from one thread; the writer thread
// (Start) and WriteFinal take each shard's lock only for one slice of its
// store at a time; counters() from any thread.
#ifndef TALLY_DAEMON_IO_LOCAL_SNAPSHOTS_H_
#define TALLY_DAEMON_IO_LOCAL_SNAPSHOTS_H_

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "daemon/io/snapshot_counters.h"
#include "daemon/io/snapshot_schedule.h"
#include "daemon/io/snapshot_writer.h"
#include "tally/limiter.h"
#include "tally/types.h"

namespace tally::io {

struct LocalSnapshotOptions {
  std::filesystem::path state_dir;  // REQUIRED: exists (EnsureStateDir)
  std::string cluster_name;         // written, and required of a restored snapshot
  std::string node_id;              // this node's id (a restored snapshot's must match)
  // This process's generation: its limiter counts in slot (node_id, generation).
  uint64_t generation = 0;
  uint32_t buckets_per_window = 10;
  // Periodic writes (each wait +-10%); 0: only at WriteFinal.
  std::chrono::milliseconds interval{60'000};
  // Home slots encoded per hold of a shard's lock: the longest pause a
  // snapshot imposes on the checks of that shard.
  size_t slice_slots = 16384;
  uint64_t max_bytes = uint64_t{1} << 32;  // largest snapshot read at Restore
};

class LocalSnapshots {
 public:
  // `limiter` counts in slot (node_id, generation) (internal::LimiterAccess)
  // and outlives this object.
  LocalSnapshots(Limiter* limiter, LocalSnapshotOptions options);
  // Stops the writer thread (no final write: WriteFinal does that).
  ~LocalSnapshots();
  LocalSnapshots(const LocalSnapshots&) = delete;
  LocalSnapshots& operator=(const LocalSnapshots&) = delete;

  // Reads STATE_DIR/counts.snapshot and joins its keys into the limiter's
  // shards (under their locks). Missing: a first start. Unreadable or
  // refused (truncated, corrupt, another version, node or cluster, ...):
  // logged, counted, renamed to counts.snapshot.rejected; the node starts
  // clean. Never throws. Call once, before serving.
  void Restore(Instant now);

  // Starts the writer thread when the interval is not 0. `seed` jitters it.
  void Start(uint64_t seed);

  // Stops the writer thread and writes once more, for a graceful stop: call
  // after the client sockets closed, so nothing is counted after it.
  // Returns false (logged and counted) when the write failed.
  bool WriteFinal();

  SnapshotCounters counters() const;

 private:
  SnapshotIdentity Identity() const;
  bool Write(const char* why);
  void Loop();
  void StopThread();

  Limiter* const limiter_;
  const LocalSnapshotOptions options_;

  std::thread thread_;
  std::mutex mu_;  // guards stop_, schedule_
  std::condition_variable cv_;
  bool stop_ = false;
  std::optional<SnapshotSchedule> schedule_;

  std::mutex write_mu_;            // one write at a time; guards buffer_
  std::vector<std::byte> buffer_;  // the last payload, reused (its pages are mapped)
  mutable std::mutex stats_mu_;
  SnapshotCounters stats_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_LOCAL_SNAPSHOTS_H_

// What a node's count snapshots did (docs/DESIGN.md, "Snapshots"): one set
// of counters for a cluster member (ClusterDriver) and a single node
// (LocalSnapshots), reported under the same status and metric names.
#ifndef TALLY_DAEMON_IO_SNAPSHOT_COUNTERS_H_
#define TALLY_DAEMON_IO_SNAPSHOT_COUNTERS_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace tally::io {

struct SnapshotCounters {
  // At start: 1 in exactly one of loaded / missing / rejected / unreadable
  // when a state dir is set.
  uint64_t restore_loaded = 0, restore_missing = 0, restore_rejected = 0, restore_unreadable = 0;
  uint64_t restored_keys = 0;    // joined into the store
  uint64_t restore_dropped = 0;  // decoded but expired, refused or impossible
  // Runtime limit overrides (tombstones included) merged from the snapshot,
  // and those dropped (invalid, stamped too late, or refused by the map).
  // A single node keeps its overrides in a file of their own: always 0 there.
  uint64_t restored_overrides = 0, restore_dropped_overrides = 0;
  // Entries merged at start from a single node's overrides.snapshot in the
  // same state dir (ClusterDriver::Impl::ImportSingleNodeOverrides).
  uint64_t imported_overrides = 0;
  uint64_t writes = 0, write_errors = 0;
  uint64_t last_keys = 0, last_bytes = 0, last_overrides = 0;
  uint64_t last_encode_us = 0;    // the whole sliced pass, wall time
  uint64_t last_write_us = 0;     // write + fsync + rename
  uint64_t longest_slice_us = 0;  // the longest single hold of a store's lock, ever
};

// Appends the counters as status counters named snapshot_*.
inline void AppendSnapshotCounters(const SnapshotCounters& c,
                                   std::vector<std::pair<std::string, uint64_t>>* out) {
  const std::pair<const char*, uint64_t> all[] = {
      {"snapshot_restore_loaded", c.restore_loaded},
      {"snapshot_restore_missing", c.restore_missing},
      {"snapshot_restore_rejected", c.restore_rejected},
      {"snapshot_restore_unreadable", c.restore_unreadable},
      {"snapshot_restored_keys", c.restored_keys},
      {"snapshot_restore_dropped_keys", c.restore_dropped},
      {"snapshot_restored_overrides", c.restored_overrides},
      {"snapshot_restore_dropped_overrides", c.restore_dropped_overrides},
      {"snapshot_imported_overrides", c.imported_overrides},
      {"snapshot_writes", c.writes},
      {"snapshot_write_errors", c.write_errors},
      {"snapshot_last_keys", c.last_keys},
      {"snapshot_last_bytes", c.last_bytes},
      {"snapshot_last_overrides", c.last_overrides},
      {"snapshot_last_encode_us", c.last_encode_us},
      {"snapshot_last_write_us", c.last_write_us},
      {"snapshot_longest_lock_hold_us", c.longest_slice_us},
  };
  for (const auto& [name, value] : all) out->emplace_back(name, value);
}

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SNAPSHOT_COUNTERS_H_

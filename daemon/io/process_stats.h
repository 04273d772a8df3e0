// ProcessStats: this process's resource use, read from /proc/self, for
// GET /metrics (the process_* metrics Prometheus client libraries export).
// I/O helper of the daemon, not of the core.
#ifndef TALLY_DAEMON_IO_PROCESS_STATS_H_
#define TALLY_DAEMON_IO_PROCESS_STATS_H_

#include <cstdint>
#include <optional>

namespace tally::io {

struct ProcessStats {
  double cpu_seconds = 0;              // user + system
  uint64_t resident_memory_bytes = 0;  // RSS
  uint64_t virtual_memory_bytes = 0;
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;           // the soft RLIMIT_NOFILE
  double start_time_seconds = 0;  // since the Unix epoch
};

// Reads /proc/self/stat, /proc/self/fd and the boot time (/proc/stat).
// nullopt when /proc is not readable. Cost: a few syscalls and one directory
// walk (O(open fds)); call per scrape, not per check.
std::optional<ProcessStats> ReadProcessStats();

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_PROCESS_STATS_H_

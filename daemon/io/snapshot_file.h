// Snapshot files in --state-dir: atomic writes, bounded reads, and where the
// state directory is by default (docs/DESIGN.md, "Snapshots"). The encoding
// and every check of the content live in persist/ (pure); this is the I/O.
//
// Thread safety: free functions, reentrant. Two writers of the same path
// never see each other's temporary files (each makes its own), and the last
// rename wins.
#ifndef TALLY_DAEMON_IO_SNAPSHOT_FILE_H_
#define TALLY_DAEMON_IO_SNAPSHOT_FILE_H_

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "persist/snapshot.h"

namespace tally::io {

// The snapshot's file name inside the state directory.
inline constexpr const char* kSnapshotFileName = "counts.snapshot";
inline std::filesystem::path SnapshotPath(const std::filesystem::path& state_dir) {
  return state_dir / kSnapshotFileName;
}

// Writes `pieces`, concatenated, to `path` so that a reader (or a restart
// after a crash or power loss at any moment) finds either the old file or
// the whole new one: a temporary file in the same directory, written,
// fsync()ed, renamed over `path`, and the directory fsync()ed. On failure
// returns false with `*error` set (naming the path and the errno text), and
// leaves `path` as it was and no temporary file behind.
bool WriteFileAtomically(const std::filesystem::path& path,
                         std::span<const std::span<const std::byte>> pieces, std::string* error);

// Writes a sealed snapshot to `path` (WriteFileAtomically).
bool WriteSnapshotFile(const std::filesystem::path& path, const persist::EncodedSnapshot& snapshot,
                       std::string* error);

enum class ReadFileStatus { kOk, kMissing, kTooLarge, kError };

// Reads the whole regular file at `path` into `*bytes` if it holds at most
// `max_bytes` (checked before reading, and again while reading in case it
// grows). kMissing when there is no such file; kTooLarge and kError with
// `*error` set.
ReadFileStatus ReadFileBounded(const std::filesystem::path& path, uint64_t max_bytes,
                               std::vector<std::byte>* bytes, std::string* error);

struct SnapshotReadResult {
  enum class Outcome {
    kLoaded,      // decoded and accepted: `snapshot` holds the keys
    kMissing,     // no snapshot file: a first start
    kUnreadable,  // the file could not be read (or is larger than max_bytes)
    kRejected,    // read, but DecodeSnapshot refused it (snapshot.status says why)
  };
  Outcome outcome = Outcome::kMissing;
  std::string message;  // one line for the log, naming the path
  persist::DecodedSnapshot snapshot;
};

// Reads and decodes the snapshot at `path`. Never throws; every outcome is
// reported, and the caller starts clean unless the outcome is kLoaded.
SnapshotReadResult ReadSnapshotFile(const std::filesystem::path& path,
                                    const persist::SnapshotExpectations& expect);

// Renames a refused snapshot to `path` + ".rejected", so the evidence
// survives the next write for a post-mortem. Returns the end of a log line
// saying where it went, or why it could not be moved.
std::string MoveRejectedAside(const std::filesystem::path& path);

// Where --state-dir points by default, in order:
//   $STATE_DIRECTORY (set by systemd for StateDirectory=tally; the first
//   entry when it lists several), /var/lib/tally when running as root,
//   $XDG_STATE_HOME/tally (when absolute), $HOME/.local/state/tally.
// nullopt when none applies (no root, no usable variables).
// `getenv` is injected for tests; the second overload reads the process's.
std::optional<std::filesystem::path> DefaultStateDir(
    const std::function<const char*(const char*)>& getenv, uid_t euid);
std::optional<std::filesystem::path> DefaultStateDir();

// Creates `dir` and missing parents (new ones with mode 0700: counts are
// the operator's business). True if it exists as a directory afterwards.
bool EnsureStateDir(const std::filesystem::path& dir, std::string* error);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SNAPSHOT_FILE_H_

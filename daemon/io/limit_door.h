// The client protocol's doors to runtime limit overrides (check.capnp
// protocol 5: limitWrite, limitGet, limitList; `tally limit`), for the
// single-node daemon and cluster members alike.
//
//   * A write is stamped and merged by the cluster's Node
//     (Node::WriteOverride, which spreads it to every member), or in a
//     single-node daemon by LocalOverrides, which keeps the same map and
//     applies explicit overrides to checks before they reach the Limiter,
//     as the Node does at the entry node.
//   * Access: the Unix doors accept writes (their file mode decides who may
//     connect); UDP accepts them only from a loopback source address, since
//     any local or remote process can send UDP and a limit is the operator's.
//     Anything else is answered permissionDenied and nothing is written.
//
// See docs/DESIGN.md, "Runtime limit overrides".
#ifndef TALLY_DAEMON_IO_LIMIT_DOOR_H_
#define TALLY_DAEMON_IO_LIMIT_DOOR_H_

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "crdt/hybrid_clock.h"
#include "crdt/limit_overrides.h"
#include "daemon/io/published_overrides.h"
#include "persist/snapshot.h"
#include "tally/types.h"
#include "wire/codec.h"

namespace tally::io {

// The override map of a single-node daemon (no Node): written and read by
// the doors, consulted by every checks datagram. Thread-safe.
//
// With a state directory the map survives a restart: it is kept in a
// snapshot file of its own (persist/snapshot.h with no keys, the overrides
// only; kOverridesFileName), rewritten atomically (WriteFileAtomically)
// after every write that changed the map, before the write is answered, so
// an acknowledged `tally limit set` or `rm` is on disk. Writes are an
// operator's, rare and small (at most kMaxLocalEntries entries, about 70
// bytes each), so no interval or writer thread is needed. See
// docs/DESIGN.md, "Runtime limit overrides".
class LocalOverrides {
 public:
  // The file in --state-dir.
  static constexpr const char* kOverridesFileName = "overrides.snapshot";

  explicit LocalOverrides(std::string node_id);

  // Merges the overrides of an accepted snapshot, removals included, and
  // moves the clock past them (crdt::RestoreOverrides); republishes. Call
  // before serving. REQUIRES: snapshot.ok().
  crdt::OverrideRestoreCounts Restore(const persist::DecodedSnapshot& snapshot);
  // From now on every write that changes the map rewrites `path` (a
  // snapshot with `header`; its written time is set at each write). Call
  // once, before serving.
  void EnablePersistence(std::filesystem::path path, persist::SnapshotHeader header);
  // Writes the map to the file unless the file already holds this version
  // of it. True when the file is current; false with `*error` (the next
  // change, or the daemon at shutdown, tries again). No-op without
  // persistence. Any thread; writes are serialized, newest last.
  bool Persist(int64_t now_wall_ms, std::string* error);

  // As Node::WriteOverride, without peers: validates, stamps with a hybrid
  // clock at `now_wall_ms`, merges. With `persist` (an operator's write) the
  // file is rewritten before returning; without (an adaptive controller's
  // batch) the caller calls Persist once after the batch.
  crdt::LimitOverrides::MergeResult Write(const crdt::Selector& selector,
                                          const crdt::OverrideValue& value, int64_t now_wall_ms,
                                          bool persist = true);
  // Calls `read` with the map under the lock.
  template <typename Read>
  void ReadLocked(Read&& read) const {
    std::lock_guard<std::mutex> lock(mu_);
    read(overrides_);
  }
  // Copies `checks` into `*out` with the limit of each check an explicit
  // override selects replaced by the override's; false (and `*out`
  // untouched) when none is (the common case: no lock taken while no
  // explicit override is in force).
  bool Apply(std::span<const CheckRequestRef> checks, std::vector<CheckRequestRef>* out);

  // The descriptor-form overrides in force, republished after every write
  // that changed the map: what the rules doors read without the lock.
  // Valid for this object's life. Any thread.
  const PublishedOverrides* published() const { return &published_; }

  // Status counters, named as a cluster member's (overrides_*).
  void AppendCounters(std::vector<std::pair<std::string, uint64_t>>* out) const;

 private:
  // Refreshes live_explicit_ and, if the map changed, the published table. Under mu_.
  void PublishLocked();

  const uint64_t writer_;
  // Persistence: file_mu_ serializes file writes (taken before mu_, never
  // the other way); the map is encoded under mu_ and written without it,
  // so checks are not held up by the disk.
  std::mutex file_mu_;
  std::filesystem::path path_;      // empty: not persisted; set before serving
  persist::SnapshotHeader header_;  // under file_mu_
  uint64_t persisted_version_ = 0;  // under file_mu_: the map version on disk
  bool persisted_any_ = false;      // under file_mu_
  std::atomic<uint64_t> saves_{0}, save_errors_{0};
  uint64_t restored_ = 0, restore_refused_ = 0;  // under mu_
  mutable std::mutex mu_;
  crdt::LimitOverrides overrides_;
  crdt::HybridClock clock_;
  uint64_t written_ = 0;
  std::atomic<size_t> live_explicit_{0};
  std::atomic<uint64_t> used_{0};
  uint64_t published_version_ = 0;  // overrides_.version() last published; under mu_
  PublishedOverrides published_;
};

// check.capnp's selector <-> the map's.
crdt::Selector SelectorFromWire(const wire::LimitSelectorValue& w);
wire::LimitSelectorValue SelectorToWire(const crdt::Selector& s);

// The value a write asks for: a removal, or its limit and (descriptor form)
// its window from `unit` (second, minute, hour, day, week; month as 30 days
// like the rules) or else `window_ms`. False with `*error` for a unit with no
// fixed length (year) or one we do not know.
bool WriteValueFromWire(const wire::LimitWriteQuery& query, crdt::OverrideValue* out,
                        std::string* error);

// One override as get and list report it.
wire::LimitOverrideReport OverrideReportOf(const crdt::OverrideEntry& entry);

// Whether a UDP source address may write: 127.0.0.0/8, ::1, or ::ffff:127.x.
bool IsLoopbackSource(const sockaddr_storage& addr, socklen_t len);

// The error a refused write gets.
inline constexpr const char* kWriteRefused =
    "limit writes are accepted on tallyd's Unix sockets and from loopback UDP sources only";

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_LIMIT_DOOR_H_

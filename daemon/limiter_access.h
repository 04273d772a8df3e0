// What tallyd needs of a tally::Limiter beyond its public API, for a single
// node's count snapshots (daemon/io/local_snapshots.h): a replica slot named
// after the process, so counts restored from an earlier process stay in that
// process's slot and are never incremented again (docs/DESIGN.md,
// "Snapshots"), and each shard's store under the shard's lock. Not part of
// the public API (include/ holds that).
#ifndef TALLY_DAEMON_LIMITER_ACCESS_H_
#define TALLY_DAEMON_LIMITER_ACCESS_H_

#include <cstddef>
#include <memory>
#include <mutex>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "tally/limiter.h"

namespace tally::internal {

class LimiterAccess {
 public:
  // A Limiter that counts this process's hits in `local_slot` (a node id and
  // this process's generation) instead of the public constructor's slot.
  // REQUIRES: as Limiter's constructor.
  static std::unique_ptr<Limiter> Make(const LimiterOptions& options,
                                       const crdt::ReplicaSlot& local_slot);

  // The shard holding `key`, in [0, limiter.shard_count()).
  static size_t ShardOf(const Limiter& limiter, const crdt::KeyId& key);
  // Takes shard `shard`'s lock: checks on its keys wait until it is released.
  static std::unique_lock<std::mutex> LockShard(Limiter& limiter, size_t shard);
  // Shard `shard`'s store. REQUIRES: the caller holds LockShard(shard) for
  // as long as it uses the store.
  static crdt::KeyStore& ShardStore(Limiter& limiter, size_t shard);
};

}  // namespace tally::internal

#endif  // TALLY_DAEMON_LIMITER_ACCESS_H_

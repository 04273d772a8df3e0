// DedupCache: remembers, for a short time, which (request id, key) pairs were
// already decided and whether they were admitted, so a client retry after a
// lost reply is answered the same way and never counted twice.
//
// Bounded two ways: entries older than `ttl` are dropped, and when
// `max_entries` is reached the oldest entry goes first. Under a load of R
// requests per second the effective memory of the cache is therefore
// min(ttl, max_entries / R); clients retry within a few hundred ms.
//
// Thread safety: none. Pure: time is passed in.
#ifndef TALLY_DAEMON_CORE_DEDUP_CACHE_H_
#define TALLY_DAEMON_CORE_DEDUP_CACHE_H_

#include <boost/unordered/unordered_flat_map.hpp>
#include <chrono>
#include <cstdint>
#include <deque>
#include <optional>

#include "crdt/key_id.h"

namespace tally::core {

class DedupCache {
 public:
  DedupCache(std::chrono::nanoseconds ttl, size_t max_entries);

  // The remembered decision (admitted or not) for this pair, if still fresh.
  std::optional<bool> Find(uint64_t request_id, const crdt::KeyId& key,
                           std::chrono::nanoseconds now_mono);
  // Remembers a decision. REQUIRES: request_id != 0 and not already present.
  void Insert(uint64_t request_id, const crdt::KeyId& key, bool allowed,
              std::chrono::nanoseconds now_mono);
  // Drops expired entries.
  void Expire(std::chrono::nanoseconds now_mono);
  size_t size() const { return map_.size(); }

 private:
  struct Id {
    uint64_t request_id;
    crdt::KeyId key;
    friend bool operator==(const Id&, const Id&) = default;
  };
  struct IdHash {
    size_t operator()(const Id& id) const noexcept {
      // request ids are sequential per client: mix them with the key hash.
      uint64_t x = id.request_id * 0x9E3779B97F4A7C15ull ^ id.key.low;
      return static_cast<size_t>(x ^ (x >> 29));
    }
  };
  struct Pending {
    Id id;
    int64_t expires_ns;
  };
  void EvictOldest();

  int64_t ttl_ns_;
  size_t max_entries_;
  boost::unordered_flat_map<Id, bool, IdHash> map_;
  std::deque<Pending> order_;  // insertion order == expiry order
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_DEDUP_CACHE_H_

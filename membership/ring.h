// Ring: which members own a key. Weighted rendezvous hashing (highest random
// weight, HRW): every up member gets a score for the key, a fast 64-bit mix
// of the key's hash and the member's id hash, and the key's preference list
// is the R members with the highest scores, best first (the first owns the
// key, the next R - 1 hold its replicas).
//
// Why rendezvous and not a ring of virtual nodes (measured in
// tests/membership/ring_test.cc, 10 members, 200k random keys):
//                              peak/mean keys   moved when an 11th joins
//   ring, 100 vnodes per node      1.10             0.083 (ideal 1/11 = 0.091)
//   ring, 512 vnodes per node      1.06             0.095
//   rendezvous                     1.01-1.02        0.090 (only to the joiner)
// Rendezvous balances best with no tables to tune (its peak/mean is just
// the binomial noise of the key sample), and its disruption is minimal by
// construction: a key moves only if the joiner outranks its owner, or its
// owner left; the top R are R distinct members for free. The price is O(n)
// per lookup: PreferenceList(R = 3) ~50 ns at 10 members and ~450 ns at 100,
// OwnerIndex ~25 ns and ~200 ns (one core of the shared 2-core build VM),
// small next to a network round trip and against the ~10 members a cluster
// of rate limiters has.
//
// The hash functions are part of the cluster contract: every node must rank
// members identically, so they are spelled out here (FNV-1a over the id, then
// the SplitMix64 finalizer), never std::hash or boost::hash.
//
// Deterministic: the same member set (in any insertion order) gives the same
// lists. Immutable once built; safe to share across threads for reading.
#ifndef TALLY_MEMBERSHIP_RING_H_
#define TALLY_MEMBERSHIP_RING_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "crdt/key_id.h"
#include "membership/member_table.h"

namespace tally::membership {

struct RingMember {
  std::string id;
  std::string address;
  double weight = 1.0;  // relative share of keys; > 0
};

class Ring {
 public:
  static constexpr size_t kDefaultReplicas = 3;
  // Lookups with r and size() up to these take the allocation-free path.
  static constexpr size_t kMaxFastReplicas = 8;
  static constexpr size_t kMaxFastMembers = 256;

  Ring() = default;
  // Builds from `members`; a repeated id keeps its last entry.
  // REQUIRES: every weight > 0 and finite.
  explicit Ring(std::vector<RingMember> members);
  // The up (alive or suspect) members of `table`, weight 1.
  static Ring FromTable(const MemberTable& table);

  // Incremental changes, for a view that follows membership one member at a
  // time (O(n) moves, no rebuild). Upsert inserts `member` in id order, or
  // replaces the entry with its id; returns its index and whether it was
  // inserted (then the indexes from it on moved up by one). Erase removes
  // the member with `id` and returns the index it had (the later ones moved
  // down by one), or nullopt when there is none.
  // REQUIRES: member.weight > 0 and finite.
  std::pair<size_t, bool> Upsert(RingMember member);
  std::optional<size_t> Erase(std::string_view id);

  size_t size() const { return members_.size(); }
  bool empty() const { return members_.empty(); }
  // Sorted by id.
  const std::vector<RingMember>& members() const { return members_; }

  // Replaces `*out` with the indexes into members() of the min(r, size())
  // highest-ranked members for `key`, best first, all distinct.
  void PreferenceList(const crdt::KeyId& key, size_t r, std::vector<uint32_t>* out) const;
  // The same as member ids.
  std::vector<std::string> PreferenceIds(const crdt::KeyId& key, size_t r = kDefaultReplicas) const;
  // The index of the key's owner. REQUIRES: !empty().
  uint32_t OwnerIndex(const crdt::KeyId& key) const;

  static uint64_t HashMemberId(std::string_view id);
  static uint64_t Mix64(uint64_t x);
  // A member's score for a key: Mix64(key_hash ^ member_hash) | 1 (never 0).
  static uint64_t Score64(uint64_t key_hash, uint64_t member_hash);

 private:
  double Score(uint64_t key_hash, size_t i) const;
  // The index of `id` if present, else where it would be inserted.
  size_t LowerBound(std::string_view id) const;
  void RecomputeWeighted();

  std::vector<RingMember> members_;
  std::vector<uint64_t> hashes_;
  bool weighted_ = false;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_RING_H_

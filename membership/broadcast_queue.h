// BroadcastQueue: the rumors waiting to be piggybacked, at most one per
// member (a newer rumor about a member replaces the queued one, as
// memberlist's named broadcasts do).
//
// Each rumor is sent `transmit_limit` times in total (the caller passes
// timing::RetransmitLimit(n) with the current n), least-transmitted first and,
// among equals, newest first, so fresh news spreads before old news is
// repeated.
//
// Thread safety: none.
#ifndef TALLY_MEMBERSHIP_BROADCAST_QUEUE_H_
#define TALLY_MEMBERSHIP_BROADCAST_QUEUE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "membership/message.h"

namespace tally::membership {

class BroadcastQueue {
 public:
  // Queues `update`, replacing (and resetting the count of) any queued rumor
  // about the same member.
  void Push(MemberUpdate update);

  // Appends to `out` queued rumors, in priority order, whose estimated
  // encoded sizes (EstimatedUpdateBytes) fit in `budget_bytes` together;
  // a rumor too large for what is left is skipped, not blocking smaller ones.
  // Counts one transmission for each rumor taken and forgets those that have
  // now been sent `transmit_limit` times. Returns the bytes used.
  // REQUIRES: transmit_limit >= 1.
  size_t Take(size_t budget_bytes, int transmit_limit, std::vector<MemberUpdate>* out);

  // Forgets the queued rumor about `id`, if any.
  void Drop(std::string_view id);

  bool empty() const { return by_id_.empty(); }
  size_t size() const { return by_id_.size(); }
  // How often the queued rumor about `id` has been sent; -1 when none is queued.
  int TransmitsOf(std::string_view id) const;

 private:
  struct Entry {
    int transmits = 0;
    uint64_t seq = 0;  // push order; higher is newer
    MemberUpdate update;
  };
  // The priority order's key, kept in the set's own nodes so that ordering
  // never reads an entry: (transmits, then newest first).
  struct Key {
    int transmits = 0;
    uint64_t age = 0;  // ~seq: smaller is newer
    Entry* entry = nullptr;
    bool operator<(const Key& o) const {
      return transmits != o.transmits ? transmits < o.transmits : age < o.age;
    }
  };
  static Key KeyOf(Entry* e) { return Key{e->transmits, ~e->seq, e}; }
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view id) const { return std::hash<std::string_view>()(id); }
  };
  struct IdEq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };

  // Node-based: entries never move, so order_ may point at them.
  std::unordered_map<std::string, Entry, IdHash, IdEq> by_id_;
  std::set<Key> order_;
  uint64_t next_seq_ = 0;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_BROADCAST_QUEUE_H_

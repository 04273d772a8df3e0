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
#include <map>
#include <set>
#include <string>
#include <string_view>
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
  struct Order {
    bool operator()(const Entry* a, const Entry* b) const {
      if (a->transmits != b->transmits) return a->transmits < b->transmits;
      return a->seq > b->seq;
    }
  };

  std::map<std::string, Entry, std::less<>> by_id_;
  std::set<Entry*, Order> order_;
  uint64_t next_seq_ = 0;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_BROADCAST_QUEUE_H_

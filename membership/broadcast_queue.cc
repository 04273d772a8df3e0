#include "membership/broadcast_queue.h"

#include <cassert>

namespace tally::membership {
namespace {
// An update with one-byte id and address and no origin.
const size_t kSmallestUpdateBytes = EstimatedUpdateBytes(MemberUpdate{"i", "a", 0, 0, {}, {}});
}  // namespace

void BroadcastQueue::Push(MemberUpdate update) {
  auto it = by_id_.find(update.id);
  if (it == by_id_.end()) {
    std::string key = update.id;
    it = by_id_.emplace(std::move(key), Entry{}).first;
  } else {
    order_.erase(KeyOf(&it->second));
  }
  Entry& e = it->second;
  e.transmits = 0;
  e.seq = next_seq_++;
  e.update = std::move(update);
  order_.insert(KeyOf(&e));
}

size_t BroadcastQueue::Take(size_t budget_bytes, int transmit_limit,
                            std::vector<MemberUpdate>* out) {
  assert(transmit_limit >= 1);
  std::vector<Entry*> taken;
  size_t used = 0;
  for (const Key& key : order_) {
    Entry* e = key.entry;
    if (budget_bytes - used < kSmallestUpdateBytes) break;
    const size_t bytes = EstimatedUpdateBytes(e->update);
    if (used + bytes > budget_bytes) continue;
    used += bytes;
    taken.push_back(e);
    out->push_back(e->update);
  }
  for (Entry* e : taken) {
    order_.erase(KeyOf(e));
    if (++e->transmits >= transmit_limit) {
      by_id_.erase(by_id_.find(e->update.id));
    } else {
      order_.insert(KeyOf(e));
    }
  }
  return used;
}

void BroadcastQueue::Drop(std::string_view id) {
  auto it = by_id_.find(id);
  if (it == by_id_.end()) return;
  order_.erase(KeyOf(&it->second));
  by_id_.erase(it);
}

int BroadcastQueue::TransmitsOf(std::string_view id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? -1 : it->second.transmits;
}

}  // namespace tally::membership

// Node: replication of the hits this node decided. Dirty keys per peer
// (with sloppy-quorum stand-ins and co-deciders), the periodic round with
// resends of what was not acknowledged, and state messages.
#include <algorithm>
#include <tuple>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::kMaxFrozenLifetimeMs;
using node_internal::kMaxFrozenPerPeer;
using node_internal::kPushBudgetBytes;
using node_internal::Ms;

}  // namespace

Node::PeerState& Node::ReplicationPeer(const std::string& address) {
  replication_peers_.insert(address);
  return peers_[address];
}

void Node::MarkDirty(const crdt::KeyId& key, int64_t now_ns) {
  // The key's list gets our deltas, reachable or not (what an unreachable
  // member misses is resent until it acknowledges or leaves the view).
  ring_.PreferenceList(key, config_.replicas, &dirty_targets_);
  const size_t wanted = ListLength() - 1;
  size_t reachable = 0;
  for (uint32_t i : dirty_targets_) {
    if (i == self_index_) continue;
    const PeerView& p = view_[i];
    ReplicationPeer(p.address).dirty.insert(key);
    if (Reachable(p, now_ns)) ++reachable;
  }
  if (reachable < wanted && dirty_targets_.size() < view_.size()) {
    // Some of the list cannot be reached (a partition, a member just cut
    // off): the next reachable members of the ranking stand in for them, as
    // a sloppy quorum does. They are the members that decide if we fail, or
    // beside us while entry nodes' views disagree (membership rumors crossing
    // a bridge), so a change of decider costs one replication lag, not every
    // hit this decider admitted.
    ring_.PreferenceList(key, view_.size(), &dirty_targets_);
    for (size_t pos = config_.replicas; pos < dirty_targets_.size() && reachable < wanted; ++pos) {
      const uint32_t i = dirty_targets_[pos];
      if (i == self_index_ || !Reachable(view_[i], now_ns)) continue;
      ReplicationPeer(view_[i].address).dirty.insert(key);
      ++reachable;
    }
  }
  if (co_deciders_.empty()) return;
  auto it = co_deciders_.find(key);
  if (it == co_deciders_.end()) return;
  for (const CoDecider& d : it->second) {
    // A co-decider on our list already got the key above; dirty is a set.
    if (d.expires_ns > now_ns) ReplicationPeer(d.address).dirty.insert(key);
  }
}

void Node::Replicate(Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  // Sorted: the set's order is not part of the contract, the trace's is.
  std::vector<std::string> addresses(replication_peers_.begin(), replication_peers_.end());
  std::sort(addresses.begin(), addresses.end());
  // Co-deciders may be members our view does not hold yet.
  boost::unordered_flat_set<std::string> co_decider_addresses;
  for (const auto& [key, co] : co_deciders_) {
    for (const CoDecider& d : co) co_decider_addresses.insert(d.address);
  }
  for (const std::string& address : addresses) {
    PeerState& peer = peers_[address];
    // Resend what was not acknowledged in time (current state: join is idempotent).
    boost::unordered::erase_if(peer.unacked, [&](const auto& kv) {
      if (now_ns < kv.second.resend_at_ns) return false;
      auto& resend = kv.second.push ? peer.push_dirty : peer.dirty;
      for (const auto& key : kv.second.keys) resend.insert(key);
      return true;
    });
    if (!peer.dirty.empty() || !peer.push_dirty.empty()) {
      if (!view_by_address_.contains(address) && !co_decider_addresses.contains(address)) {
        // Not a member any more: its successors on the lists get the keys
        // when the ring changes (PushKeysForChangedTargets) or by anti-entropy.
        // (Frozen copies stay: they may be the only copy left, and the member
        // may come back before they expire.)
        peer.dirty.clear();
        peer.push_dirty.clear();
        peer.unacked.clear();
      } else {
        std::vector<crdt::KeyId> keys(peer.dirty.begin(), peer.dirty.end());
        std::vector<crdt::KeyId> pushes(peer.push_dirty.begin(), peer.push_dirty.end());
        peer.dirty.clear();
        peer.push_dirty.clear();
        if (!keys.empty()) SendState(address, std::move(keys), true, now, out);
        if (!pushes.empty()) SendState(address, std::move(pushes), false, now, out);
      }
    }
    // SendState may have rehashed peers_: look the peer up again.
    PeerState& after = peers_[address];
    if (!after.frozen.empty()) {
      if (now_ns >= after.frozen_expires_ns) {
        after.frozen.clear();
      } else if (view_by_address_.contains(address)) {
        SendFrozen(address, &after, now, out);
      }
    }
    if (after.dirty.empty() && after.push_dirty.empty() && after.unacked.empty() &&
        after.frozen.empty()) {
      replication_peers_.erase(address);
    }
  }
}

wire::CounterValue Node::ToWire(
    const crdt::KeyId& key, const crdt::WindowCounter& counter, std::vector<wire::SlotValue>* slots,
    boost::unordered_flat_map<crdt::SlotIndex, uint16_t>* slot_map) const {
  wire::CounterValue value;
  value.key_high = key.high;
  value.key_low = key.low;
  crdt::Geometry g = counter.geometry();
  value.bucket_ms = static_cast<uint32_t>(g.bucket_ms);
  value.span = static_cast<uint16_t>(g.span);
  value.newest_bucket = counter.newest_bucket();
  for (size_t r = 0; r < counter.row_count(); ++r) {
    crdt::SlotIndex slot = counter.row_slot(r);
    auto [it, inserted] = slot_map->try_emplace(slot, static_cast<uint16_t>(slots->size()));
    if (inserted) {
      const crdt::ReplicaSlot& rs = core_.store().slots().Get(slot);
      slots->push_back(wire::SlotValue{rs.node_id, rs.incarnation});
    }
    wire::CounterValue::Row row;
    row.slot = it->second;
    bool any = false;
    for (int64_t k = value.newest_bucket - g.span; k <= value.newest_bucket; ++k) {
      uint32_t n = counter.count(r, k);
      any = any || n != 0;
      row.counts.push_back(n);
    }
    if (any) value.rows.push_back(std::move(row));
  }
  return value;
}

std::vector<Node::PackedState> Node::PackState(const std::vector<crdt::KeyId>& keys,
                                               size_t budget_bytes) const {
  std::vector<PackedState> packed;
  size_t i = 0;
  while (i < keys.size()) {
    PackedState p;
    boost::unordered_flat_map<crdt::SlotIndex, uint16_t> slot_map;
    size_t bytes = 128;
    for (; i < keys.size(); ++i) {
      const crdt::KeyStore::Entry* entry = core_.store().Find(keys[i]);
      if (entry == nullptr) continue;  // reclaimed meanwhile: nothing live to send
      size_t slots_before = p.state.slots.size();
      wire::CounterValue value = ToWire(keys[i], entry->counter, &p.state.slots, &slot_map);
      size_t cost = wire::EncodedCounterBound(value);
      for (size_t s = slots_before; s < p.state.slots.size(); ++s) {
        cost += 24 + p.state.slots[s].node_id.size();
      }
      // Receivers refuse more slots or counters than the decoder's bounds.
      if (!p.keys.empty() &&
          (bytes + cost > budget_bytes || p.state.slots.size() > wire::kMaxSlotsPerMessage ||
           p.state.counters.size() >= wire::kMaxCountersPerMessage)) {
        // Undo the slot additions of the counter that did not fit.
        for (size_t s = p.state.slots.size(); s > slots_before; --s) {
          slot_map.erase(std::find_if(slot_map.begin(), slot_map.end(), [&](const auto& kv) {
                           return kv.second == s - 1;
                         })->first);
        }
        p.state.slots.resize(slots_before);
        break;
      }
      bytes += cost;
      p.state.counters.push_back(std::move(value));
      p.keys.push_back(keys[i]);
    }
    if (!p.keys.empty()) packed.push_back(std::move(p));
  }
  return packed;
}

void Node::SendState(const std::string& address, std::vector<crdt::KeyId> keys, bool acked,
                     Instant now, Outbox* out) {
  const size_t budget = acked ? config_.max_packet_bytes : kPushBudgetBytes;
  for (PackedState& p : PackState(keys, budget)) {
    wire::NodeMessageValue msg;
    msg.kind = acked ? Kind::kReplicate : Kind::kStatePush;
    msg.replicate = std::move(p.state);
    msg.replicate.seq = next_replicate_seq_++;
    // Both kinds are acknowledged: a replicate is resent soon (a lost
    // datagram), a push later (a stream of bulk state takes longer).
    const int64_t retry_ms = acked ? config_.replication_retry_ms : config_.push_retry_ms;
    ReplicationPeer(address).unacked[msg.replicate.seq] = UnackedReplicate{
        std::move(p.keys), now.monotonic.count(), now.monotonic.count() + Ms(retry_ms), !acked};
    if (acked) {
      ++counters_.replicate_sent;
    } else {
      ++counters_.state_pushes;
    }
    SendNode(address, msg, !acked, now, out);
  }
}

void Node::FreezeOwedState(Instant now) {
  const int64_t now_ns = now.monotonic.count();
  // Sorted: each copy draws its seq here, and the trace must not depend on
  // the set's order.
  std::vector<std::string> addresses(replication_peers_.begin(), replication_peers_.end());
  std::sort(addresses.begin(), addresses.end());
  for (const std::string& address : addresses) {
    PeerState& peer = peers_[address];
    boost::unordered_flat_set<crdt::KeyId, crdt::KeyIdHash> owed(peer.dirty.begin(),
                                                                 peer.dirty.end());
    owed.insert(peer.push_dirty.begin(), peer.push_dirty.end());
    for (const auto& [seq, u] : peer.unacked) owed.insert(u.keys.begin(), u.keys.end());
    if (owed.empty()) continue;
    std::vector<crdt::KeyId> keys(owed.begin(), owed.end());
    std::sort(keys.begin(), keys.end(), [](const crdt::KeyId& a, const crdt::KeyId& b) {
      return std::tie(a.high, a.low) < std::tie(b.high, b.low);
    });
    int64_t longest_window_ms = 0;
    for (PackedState& p : PackState(keys, kPushBudgetBytes)) {
      if (peer.frozen.size() >= kMaxFrozenPerPeer) {
        // A bound on what a peer that never answers costs us; what does not
        // fit is left to anti-entropy, and counted.
        counters_.frozen_keys_dropped += p.keys.size();
        continue;
      }
      for (const wire::CounterValue& c : p.state.counters) {
        longest_window_ms = std::max<int64_t>(
            longest_window_ms, static_cast<int64_t>(c.bucket_ms) * (int64_t{c.span} + 1));
      }
      // One seq per copy, kept on every resend: the copy never changes, so
      // any acknowledgement of it, however late, proves delivery.
      p.state.seq = next_replicate_seq_++;
      peer.frozen.push_back(std::move(p.state));
    }
    peer.frozen_resend_at_ns = 0;
    // Past the longest window the copies hold nothing live for a peer whose
    // clock was where ours was before the step; past kMaxFrozenLifetimeMs a
    // peer that still has not taken them (its clock far behind: it refuses
    // them as future) learns them by anti-entropy instead.
    const int64_t lifetime_ms =
        std::min<int64_t>(longest_window_ms + config_.push_retry_ms, kMaxFrozenLifetimeMs);
    peer.frozen_expires_ns = std::max(peer.frozen_expires_ns, now_ns + Ms(lifetime_ms));
  }
}

void Node::SendFrozen(const std::string& address, PeerState* peer, Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  if (now_ns < peer->frozen_resend_at_ns) return;
  peer->frozen_resend_at_ns = now_ns + Ms(config_.push_retry_ms);
  for (const wire::ReplicateValue& state : peer->frozen) {
    wire::NodeMessageValue msg;
    msg.kind = Kind::kStatePush;
    msg.replicate = state;
    ++counters_.state_pushes;
    ++counters_.frozen_pushes;
    SendNode(address, msg, true, now, out);
  }
}

}  // namespace tally::core

// Node: replication of the hits this node decided. Dirty keys per peer
// (with sloppy-quorum stand-ins and co-deciders), the periodic round with
// resends of what was not acknowledged, and state messages.
#include <algorithm>
#include <tuple>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"
#include "wire/peer_codec.h"

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

void Node::MarkDirty(const crdt::KeyId& key, int64_t bucket, int64_t now_ns) {
  auto [from, inserted] = delta_from_bucket_.try_emplace(key, bucket);
  if (!inserted) from->second = std::min(from->second, bucket);
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
      // Whole: a stand-in must be able to decide from everything we
      // admitted in the window, not from this round's cells.
      ReplicationPeer(view_[i].address).whole_dirty.insert(key);
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
  const bool stepped_back = core_.stats().clock_steps_back != steps_back_at_last_round_;
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
      auto& resend = kv.second.push ? peer.push_dirty : peer.whole_dirty;
      for (const auto& key : kv.second.keys) resend.insert(key);
      return true;
    });
    if (!peer.dirty.empty() || !peer.push_dirty.empty() || !peer.whole_dirty.empty()) {
      if (!view_by_address_.contains(address) && !co_decider_addresses.contains(address)) {
        // Not a member any more: its successors on the lists get the keys
        // when the ring changes (PushKeysForChangedTargets) or by anti-entropy.
        // (Frozen copies stay: they may be the only copy left, and the member
        // may come back before they expire.)
        peer.dirty.clear();
        peer.push_dirty.clear();
        peer.whole_dirty.clear();
        peer.unacked.clear();
      } else {
        // Whole state for what was lost and for a stand-in (it covers this
        // round's cells of the same keys too), and for a peer older than
        // deltas; deltas for the rest, unless our clock stepped back since
        // the last round and moved our counts.
        const bool deltas = peer.protocol_version >= 2 && !stepped_back;
        std::vector<crdt::KeyId> whole(peer.whole_dirty.begin(), peer.whole_dirty.end());
        std::vector<crdt::KeyId> changed;
        for (const crdt::KeyId& key : peer.dirty) {
          if (peer.whole_dirty.contains(key)) continue;
          (deltas ? changed : whole).push_back(key);
        }
        std::vector<crdt::KeyId> pushes(peer.push_dirty.begin(), peer.push_dirty.end());
        peer.dirty.clear();
        peer.whole_dirty.clear();
        peer.push_dirty.clear();
        if (!changed.empty()) SendDeltas(address, changed, now, out);
        if (!whole.empty()) SendState(address, std::move(whole), true, now, out);
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
    if (after.dirty.empty() && after.push_dirty.empty() && after.whole_dirty.empty() &&
        after.unacked.empty() && after.frozen.empty()) {
      replication_peers_.erase(address);
    }
  }
  // Every peer's dirty keys went out above: the next round's deltas start
  // from the next decisions.
  delta_from_bucket_.clear();
  steps_back_at_last_round_ = core_.stats().clock_steps_back;
}

void Node::SendDeltas(const std::string& address, const std::vector<crdt::KeyId>& keys, Instant now,
                      Outbox* out) {
  const crdt::SlotIndex own = core_.local_slot();
  const crdt::ReplicaSlot& own_slot = core_.store().slots().Get(own);
  // PeerMessage header, the slot and the list pointer, with room to spare.
  const size_t fixed_bytes = 160 + 2 * own_slot.node_id.size() + config_.gossip_address.size();
  const size_t cells_per_message = std::clamp<size_t>(
      (config_.max_packet_bytes - std::min(config_.max_packet_bytes, fixed_bytes)) /
          wire::kEncodedDeltaCellBytes,
      1, wire::kMaxDeltaCellsPerMessage);
  std::vector<crdt::KeyId> whole;
  wire::NodeMessageValue msg;
  msg.kind = Kind::kReplicateDelta;
  msg.delta.slot = wire::SlotValue{own_slot.node_id, own_slot.incarnation};
  const auto peer = peers_.find(address);
  msg.delta.relative_buckets =
      peer != peers_.end() && peer->second.protocol_version >= wire::kRelativeBucketsSinceVersion;
  msg.delta.compact_cells =
      peer != peers_.end() && peer->second.protocol_version >= wire::kCompactCellsSinceVersion;
  std::vector<crdt::KeyId> carried;
  std::vector<wire::DeltaCellValue> key_cells;
  auto send = [&] {
    if (msg.delta.cells.empty()) return;
    msg.delta.seq = next_replicate_seq_++;
    const int64_t now_ns = now.monotonic.count();
    ReplicationPeer(address).unacked[msg.delta.seq] = UnackedReplicate{
        std::move(carried), now_ns, now_ns + Ms(config_.replication_retry_ms), false};
    carried.clear();
    ++counters_.replicate_sent;
    counters_.delta_cells_sent += msg.delta.cells.size();
    SendNode(address, msg, false, now, out);
    msg.delta.cells.clear();
  };
  for (const crdt::KeyId& key : keys) {
    const crdt::KeyStore::Entry* entry = core_.store().Find(key);
    if (entry == nullptr) continue;  // reclaimed meanwhile: nothing live to send
    auto from = delta_from_bucket_.find(key);
    if (from == delta_from_bucket_.end()) {
      whole.push_back(key);  // not one of this round's decisions: cannot tell its cells
      continue;
    }
    const crdt::WindowCounter& counter = entry->counter;
    if (counter.row_count() != 1 || counter.row_slot(0) != own) {
      // Rows of other deciders too (a failover, a partition, a co-decider):
      // whole state, as before deltas, so a replica that lacks some of
      // theirs gets them from us at once, not only from anti-entropy once
      // the key settles.
      whole.push_back(key);
      continue;
    }
    const crdt::Geometry g = counter.geometry();
    const int64_t newest = counter.newest_bucket();
    key_cells.clear();
    for (int64_t b = std::max(from->second, newest - static_cast<int64_t>(g.span)); b <= newest;
         ++b) {
      const uint32_t n = counter.CountOfSlot(own, b);
      if (n == 0) continue;
      key_cells.push_back(wire::DeltaCellValue{key.high, key.low, b, n,
                                               static_cast<uint32_t>(g.bucket_ms),
                                               static_cast<uint16_t>(g.span)});
    }
    if (key_cells.empty()) continue;
    if (key_cells.size() > cells_per_message) {
      whole.push_back(key);  // more cells than a datagram holds: its state is smaller
      continue;
    }
    if (msg.delta.cells.size() + key_cells.size() > cells_per_message) send();
    msg.delta.cells.insert(msg.delta.cells.end(), key_cells.begin(), key_cells.end());
    carried.push_back(key);
  }
  send();
  if (!whole.empty()) SendState(address, std::move(whole), true, now, out);
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
    owed.insert(peer.whole_dirty.begin(), peer.whole_dirty.end());
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

// Node: peer input. Decoding a peer datagram, dispatching node messages by
// kind, and validating replicated state before it is merged (DESIGN,
// "Validating peer state").
#include <algorithm>
#include <cmath>
#include <span>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::Ms;

// The median peer clock offset is an estimate from pings; beyond an hour it is
// no longer a clock offset but a broken clock, and is not trusted further.
constexpr int64_t kMaxPlausibleOffsetMs = 3'600'000;

// A replication delta is merged this many cells at a time (each expands to a
// one-cell row of span + 1 counts): at most ~1 MB of scratch at the largest
// span, whatever the message holds.
constexpr size_t kDeltaCellsPerChunk = 256;

}  // namespace

void Node::OnPeerMessage(const std::string& from_address, std::span<const std::byte> bytes,
                         Instant now, Outbox* out) {
  TakePeerMessage(from_address, bytes, now, out);
  NoteEvents(now, out);
}

void Node::TakePeerMessage(const std::string& from_address, std::span<const std::byte> bytes,
                           Instant now, Outbox* out) {
  // Before anything reads the peers' clock offsets: a step of our own wall
  // clock since the last tick must move them first, or ApplyState takes rows
  // from the future by the offsets of the clock we had (swarm seed 7812130:
  // just after our clock stepped 97 s forward to true time, a replicate 54.8
  // s ahead was taken by the stale "majority 97 s ahead of us", and no
  // member with a true clock would ever take it back: the replicas never
  // converged).
  ObserveWallStep(now);
  wire::PeerMessageReader reader;
  std::string why;
  if (reader.Decode(bytes, &why) != tally::Status::kOk) {
    ++counters_.malformed_peer;
    return;
  }
  {
    // Heard from: routing may use this peer again.
    const std::string& sender =
        reader.sender_address().empty() ? from_address : reader.sender_address();
    auto it = peers_.find(sender);
    if (it == peers_.end() && view_by_address_.contains(sender)) {
      it = peers_.try_emplace(sender).first;  // bounded by the view
    }
    if (it != peers_.end()) {
      // What it speaks now (a restart may have brought an older build):
      // deltas only to a member that reads them.
      it->second.protocol_version = reader.version();
      it->second.skip_until_ns = 0;
      it->second.skip_ms = 0;
      it->second.timeouts_unheard = 0;
    }
  }
  if (reader.is_swim()) {
    NodeStatus::Counters::Traffic& t = counters_.received_by_kind[kSwimKindIndex];
    ++t.messages;
    t.bytes += bytes.size();
    std::vector<membership::Outbound> swim_out;
    swim_.OnMessage(from_address, reader.swim(), now, &swim_out, bytes.size());
    SendSwim(swim_out, now, out);
    RefreshView(now, out);
    return;
  }
  wire::NodeMessageValue msg;
  if (!reader.ReadNode(&msg, &why)) {
    ++counters_.malformed_peer;
    return;
  }
  {
    NodeStatus::Counters::Traffic& t = counters_.received_by_kind[PeerKindIndex(msg.kind)];
    ++t.messages;
    t.bytes += bytes.size();
  }
  const PeerSender sender{reader.sender_address().empty() ? from_address : reader.sender_address(),
                          from_address, reader.sender_id(), reader.sender_generation()};
  {
    // A newer process than our table holds (a restart whose rumor passed
    // us by) sends us its deltas: they are refused until our view takes it in,
    // so fetch its table now rather than at the next random push-pull.
    std::vector<membership::Outbound> swim_out;
    swim_.OnPeerHeard(sender.id, sender.generation, sender.address, now, &swim_out);
    SendSwim(swim_out, now, out);
  }
  RefreshView(now, out);
  HandleNodeMessage(sender, msg, now, out);
}

std::optional<size_t> Node::MemberIndex(const PeerSender& sender) const {
  auto it = view_by_address_.find(sender.address);
  if (it == view_by_address_.end() || it->second == self_index_) return std::nullopt;
  const PeerView& member = view_[it->second];
  if (member.id != sender.id || member.generation != sender.generation) return std::nullopt;
  return it->second;
}

void Node::HandleNodeMessage(const PeerSender& sender, const wire::NodeMessageValue& msg,
                             Instant now, Outbox* out) {
  const std::string& from = sender.address;
  switch (msg.kind) {
    case Kind::kForward:
      HandleForward(from, msg.forwards, now, out);
      break;
    case Kind::kForwardReply:
      HandleForwardReply(from, msg.results, now, out);
      break;
    case Kind::kReplicate: {
      ++counters_.replicate_received;
      // Not acknowledged when dropped whole (a sender we do not count as a
      // member yet resends, and is heard once our view holds it) or when a
      // counter was ahead of our clock allowance (resent until it is not).
      if (!ApplyState(sender, msg.replicate, true, now)) break;
      QueueAck(from, msg.replicate.seq);
      break;
    }
    case Kind::kReplicateDelta: {
      ++counters_.replicate_received;
      // Each cell as a one-cell row of a whole state, so one validation and
      // merge path serves both; in chunks, so the expansion (span + 1 counts
      // a cell) stays small whatever the message holds.
      bool acknowledge = true;
      const wire::ReplicateDeltaValue& delta = msg.delta;
      wire::ReplicateValue state;
      state.seq = delta.seq;
      state.slots.push_back(delta.slot);
      size_t i = 0;
      do {  // at least once: an empty delta is acknowledged only to a member
        state.counters.clear();
        for (size_t end = std::min(delta.cells.size(), i + kDeltaCellsPerChunk); i < end; ++i) {
          const wire::DeltaCellValue& cell = delta.cells[i];
          wire::CounterValue& c = state.counters.emplace_back();
          c.key_high = cell.key_high;
          c.key_low = cell.key_low;
          c.bucket_ms = cell.bucket_ms;
          c.span = cell.span;
          c.newest_bucket = cell.bucket;
          wire::CounterValue::Row& row = c.rows.emplace_back();
          row.slot = 0;
          row.counts.assign(size_t{cell.span} + 1, 0);
          row.counts.back() = cell.count;
        }
        const uint64_t non_member_before = counters_.rejected_peer_state.non_member;
        if (!ApplyState(sender, state, true, now)) {
          acknowledge = false;
          // Not a member: the rest would be refused alike (counted once).
          if (counters_.rejected_peer_state.non_member != non_member_before) break;
        }
      } while (i < delta.cells.size());
      if (!acknowledge) break;
      QueueAck(from, delta.seq);
      break;
    }
    case Kind::kStatePush: {
      // Acknowledged like a replicate, so a push lost to a cut is resent;
      // not when dropped whole (a sender not yet in our view resends).
      if (!ApplyState(sender, msg.replicate, false, now)) break;
      QueueAck(from, msg.replicate.seq);
      break;
    }
    case Kind::kReplicateAck: {
      auto it = peers_.find(from);
      if (it == peers_.end()) break;
      const std::span<const uint64_t> seqs =
          msg.ack_seqs.empty() ? std::span<const uint64_t>(&msg.ack_seq, 1) : msg.ack_seqs;
      for (const uint64_t seq : seqs) {
        auto unacked = it->second.unacked.find(seq);
        if (unacked == it->second.unacked.end()) {
          // A frozen copy's push (FreezeOwedState), or resent meanwhile, or a duplicate.
          std::erase_if(it->second.frozen, [&](const wire::ReplicateValue& f) {
            return f.seq == seq;  // seqs start at 1
          });
          continue;
        }
        if (!unacked->second.push) {  // a push's acknowledgement comes after its stream's bulk
          ++counters_.replicate_acks;
          counters_.replicate_ack_ns += static_cast<uint64_t>(
              std::max<int64_t>(0, now.monotonic.count() - unacked->second.sent_ns));
        }
        it->second.unacked.erase(unacked);
      }
      break;
    }
    case Kind::kDigest:
      HandleDigest(sender, msg, now, out);
      break;
    case Kind::kOverrides:
      HandleOverrides(sender, msg.overrides, now);
      break;
    case Kind::kAdaptiveReports:
      HandleAdaptiveReports(sender, msg.adaptive_reports);
      break;
    case Kind::kHandoffRequest:
      HandleHandoffRequest(sender, now, out);
      break;
    case Kind::kHandoffDone:
      handoff_waiting_.erase(from);
      if (warming_ && handoff_waiting_.empty()) {
        // Keep relaying a little longer: the members that decided for our
        // keys while we warmed replicate those hits within one interval.
        const int64_t grace_ns =
            Ms(2 * config_.replication_interval_ms + config_.forward_timeout_ms);
        warming_until_ns_ = std::min(warming_until_ns_, now.monotonic.count() + grace_ns);
      }
      break;
  }
}

bool Node::ApplyState(const PeerSender& sender, const wire::ReplicateValue& state,
                      bool from_decider, Instant now) {
  NodeStatus::Counters::RejectedPeerState& rejected = counters_.rejected_peer_state;
  // A decider's deltas only from an up member (it resends what we do not
  // acknowledge); bulk state also from a member in any state, of the same
  // process: a leaving member's handoff arrives over its stream after its
  // `left` rumor.
  // (Deltas too from a member in any state: a decider we hold suspect, or
  // one our view has not taken in yet, still decides for its keys, and
  // refusing its deltas kept replicas apart past the convergence bound in
  // join_leave at 25 and 50 nodes.)
  bool member = MemberIndex(sender).has_value();
  if (!member && sender.id != config_.node_id) {
    const membership::Member* m = swim_.members().Find(sender.id);
    member = m != nullptr && m->generation == sender.generation && m->address == sender.address;
  }
  if (!member) {
    ++rejected.non_member;
    return false;
  }
  const std::string& from = sender.address;
  crdt::KeyStore& store = core_.store();
  const int64_t now_ns = now.monotonic.count();
  const int64_t now_ms = now.wall.count();

  // Slots: each must be one this node holds already (its own included: a
  // replica may hold hits of ours we dropped when our clock stepped), or a
  // known member's (any state) of a generation not newer than the member's.
  constexpr crdt::SlotIndex kRejected = crdt::SlotTable::kNoSlot;
  std::vector<crdt::SlotIndex> slots(state.slots.size(), kRejected);
  std::vector<bool> slot_full(state.slots.size(), false);
  for (size_t i = 0; i < state.slots.size(); ++i) {
    const wire::SlotValue& s = state.slots[i];
    const crdt::ReplicaSlot slot{s.node_id, s.generation};
    if (auto known = store.slots().Find(slot)) {
      slots[i] = *known;
      continue;
    }
    const membership::Member* m = swim_.members().Find(s.node_id);
    const uint64_t known_generation =
        s.node_id == config_.node_id ? config_.generation : (m == nullptr ? 0 : m->generation);
    // An id we never heard of is taken (from a member: ApplyState checked the
    // sender): a member that left before we joined is unknown to us, yet its
    // rows are real, and refusing them kept replicas apart for good. A known
    // member's generation newer than the one we know is refused.
    if (m != nullptr || s.node_id == config_.node_id) {
      if (s.generation > known_generation) continue;
    }
    slots[i] = store.slots().Intern(slot);
    slot_full[i] = slots[i] == crdt::SlotTable::kNoSlot;
  }

  // Time: a state's newest bucket may be ahead of our clock by what a
  // correct decider's clock can be ahead of the cluster's (the offset at
  // which it stops owning, plus the regression its core clamps), plus how
  // far a strict majority of the view's clocks, ours included, are all ahead
  // of ours (ours may be the one behind; one peer alone never widens the
  // bound: UpdateClockHealth); further ahead it would drop live counts of
  // ours (it moves the ring). A state with nothing
  // live at our time changes nothing and is dropped.
  const double majority_ahead = std::isfinite(majority_ahead_ms_) ? majority_ahead_ms_ : 0.0;
  const int64_t ahead_ms =
      std::max<int64_t>(0, config_.max_clock_offset_ms) +
      std::max<int64_t>(0, config_.limiter.max_clock_regression_ms) +
      std::clamp<int64_t>(std::llround(majority_ahead), 0, kMaxPlausibleOffsetMs);
  const uint32_t buckets_per_window = config_.limiter.buckets_per_window;

  bool acknowledge = true;
  std::vector<uint32_t> targets;
  std::vector<crdt::WindowCounter::StateRow> rows;
  for (const wire::CounterValue& c : state.counters) {
    const crdt::Geometry g{static_cast<int64_t>(c.bucket_ms), c.span};
    if (!crdt::GeometryValid(g, buckets_per_window, tally::kMaxWindowMs)) {
      ++rejected.geometry;
      continue;
    }
    const crdt::KeyId key{c.key_high, c.key_low};
    const crdt::KeyStore::Entry* existing = store.Find(key);
    if (existing != nullptr && !(existing->counter.geometry() == g)) {
      ++rejected.geometry_mismatch;
      continue;
    }
    // g is valid, so bucket_ms >= 1 and both sides of each comparison are in
    // range: now_ms and ahead_ms are real times, newest is compared, never
    // offset.
    const int64_t latest = crdt::BucketOf(now_ms + ahead_ms, g);
    if (c.newest_bucket > latest) {
      ++rejected.future;
      acknowledge = false;  // resent until our clock reaches it
      continue;
    }
    const int64_t span = g.span;
    if (c.newest_bucket < crdt::BucketOf(now_ms, g) - span) {
      ++rejected.expired;
      continue;
    }
    // Rows: of accepted slots, and no row may hold more hits over its live
    // buckets than one decider can admit in a window (limit <= 2^32 - 1; the
    // limit itself travels with checks, not state: docs/DESIGN.md).
    rows.clear();
    for (const auto& row : c.rows) {
      const crdt::SlotIndex slot = slots[row.slot];  // the decoder checked row.slot
      if (slot == kRejected) {
        ++(slot_full[row.slot] ? rejected.slot_table_full : rejected.unknown_slot);
        continue;
      }
      uint64_t sum = 0;
      for (uint32_t n : row.counts) sum += n;
      if (sum > tally::kMaxLimit) {
        ++rejected.count;
        continue;
      }
      if (sum == 0) continue;
      rows.push_back({slot, row.counts.data()});  // the decoder checked counts.size()
    }
    if (rows.empty()) continue;
    // Our own hits back from a peer, with counts we lack: a clock step made
    // us sweep them (forward) or move them (PullBack, back), and with them
    // what we owed the list (a resend of moved rows is dropped as expired,
    // yet acknowledged). They are pushed on below.
    // Only buckets that can still merge count: an older copy than ours
    // carries buckets we rotated out, which read 0 here.
    bool own_returned = false;
    const int64_t mergeable_from =
        std::max(crdt::BucketOf(now_ms, g),
                 existing != nullptr ? existing->counter.newest_bucket() : INT64_MIN) -
        span;
    for (const auto& row : rows) {
      if (row.slot != core_.local_slot()) continue;
      for (int64_t k = 0; k <= span && !own_returned; ++k) {
        const int64_t bucket = c.newest_bucket - span + k;
        if (bucket < mergeable_from) continue;
        const uint32_t mine =
            existing == nullptr ? 0 : existing->counter.CountOfSlot(row.slot, bucket);
        own_returned = row.counts[k] > mine;
      }
    }
    crdt::WindowCounter counter = crdt::WindowCounter::FromState(g, c.newest_bucket, rows);
    const uint64_t version_before = existing != nullptr ? existing->version : 0;
    crdt::KeyStore::MergeOutcome outcome;
    store.Merge(key, counter, now_ms, &outcome);
    switch (outcome) {
      case crdt::KeyStore::MergeOutcome::kMerged:
        break;
      case crdt::KeyStore::MergeOutcome::kExpired:
        ++rejected.expired;
        continue;
      case crdt::KeyStore::MergeOutcome::kFull:
        ++rejected.store_full;
        continue;
      case crdt::KeyStore::MergeOutcome::kGeometryMismatch:
        ++rejected.geometry_mismatch;
        continue;
      case crdt::KeyStore::MergeOutcome::kRowsRefused:
        ++rejected.rows;
        break;
    }
    const crdt::KeyStore::Entry* merged = store.Find(key);
    const bool grew =
        merged != nullptr && (existing == nullptr || merged->version != version_before);
    // The key's list only when something reads it: a bulk push or repair
    // that changed nothing costs no ring lookup.
    if (!grew && !from_decider) continue;
    ring_.PreferenceList(key, config_.replicas, &targets);
    const bool on_list = Holds(targets, self_index_);
    const bool sender_listed = std::any_of(targets.begin(), targets.end(),
                                           [&](uint32_t i) { return view_[i].address == from; });
    // Rows that grew here are pushed on to the rest of the key's list when
    // the list may lack them (a push is not passed on again, and only growth
    // queues one: this terminates):
    // - we are off the list: a sloppy stand-in for an unreachable list
    //   member, or a member the sender's view ranks differently. The rows may
    //   be the only copy (their decider can leave or crash before the list is
    //   reachable, taking its resends along): a hinted handoff. Swarm seed 551.
    // - we are on it and a decider off it in our view (one leaving, or a view
    //   that lags ours) sent them: it replicates to the list it knows, which
    //   may lack a member ours has (join_leave at 100 nodes, seed 1333523: a
    //   leaving decider's last admission reached the old list only, and the
    //   new member lacked it for good).
    // - our own hits came back (above): a list member lacks them, or we would
    //   not have lost our duty to resend them (swarm seed 293850863: a
    //   resend moved by a step back was dropped as expired and acknowledged;
    //   a member then lacked a hit until anti-entropy paired it with us).
    if (grew && (!on_list || own_returned || (from_decider && !sender_listed))) {
      for (uint32_t i : targets) {
        if (i != self_index_ && view_[i].address != from) {
          ReplicationPeer(view_[i].address).push_dirty.insert(key);
          ++counters_.hints_queued;
        }
      }
    }
    if (!from_decider || sender_listed) continue;
    // The sender decides this key but is not on its list in our view: send
    // it our deltas for the key too, so neither decides on half the counts.
    std::vector<CoDecider>& co = co_deciders_[key];
    auto it =
        std::find_if(co.begin(), co.end(), [&](const CoDecider& d) { return d.address == from; });
    if (it == co.end()) it = co.insert(co.end(), CoDecider{from, 0});
    it->expires_ns = now_ns + Ms(config_.co_decider_ttl_ms);
  }
  return acknowledge;
}

}  // namespace tally::core

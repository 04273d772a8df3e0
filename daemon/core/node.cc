// Node: construction, lifecycle (start, leave), timers (Tick, Flush, the
// next deadline) and the encoding of what it sends. The other concerns live
// in node_view.cc, node_routing.cc, node_peer_input.cc, node_replication.cc,
// node_anti_entropy.cc, node_handoff.cc and node_status.cc.
#include "daemon/core/node.h"

#include <algorithm>
#include <cassert>
#include <cstdlib>

#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::Ms;

}  // namespace

std::string_view PartitionPolicyName(PartitionPolicy policy) {
  switch (policy) {
    case PartitionPolicy::kAvailability:
      return "availability";
    case PartitionPolicy::kProportional:
      return "proportional";
    case PartitionPolicy::kClosed:
      return "closed";
  }
  return "unknown";
}

std::optional<PartitionPolicy> ParsePartitionPolicy(std::string_view name) {
  if (name == "availability") return PartitionPolicy::kAvailability;
  if (name == "proportional") return PartitionPolicy::kProportional;
  if (name == "closed") return PartitionPolicy::kClosed;
  return std::nullopt;
}

Node::Node(const NodeConfig& config)
    : config_(config),
      core_(config.limiter, crdt::ReplicaSlot{config.node_id, config.generation}),
      swim_(config.swim,
            membership::Swim::Self{config.node_id, config.gossip_address, config.generation},
            config.seeds, config.rng_seed),
      rng_(config.rng_seed ^ 0x5bd1e995u) {
  assert(!config_.node_id.empty());
  assert(config_.replicas >= 1);
  override_writer_ =
      crdt::HashSlot(config_.node_id, 0);  // the id alone: one writer across restarts
}

// ---------------------------------------------------------------- lifecycle

persist::RestoreStats Node::Restore(const persist::DecodedSnapshot& snapshot, Instant now) {
  return persist::RestoreSnapshot(snapshot, now.wall.count(), &core_.store());
}

void Node::Start(Instant now, Outbox* out) {
  started_ = true;
  started_ns_ = now.monotonic.count();
  last_tick_wall_ms_ = now.wall.count();
  std::vector<membership::Outbound> swim_out;
  swim_.Start(now, &swim_out);
  SendSwim(swim_out, now, out);
  // A node that joins an existing cluster (it has seeds) must not decide for
  // its keys before it has their counts: it relays until handoff completes.
  warming_ = !config_.seeds.empty();
  warming_until_ns_ = started_ns_ + Ms(config_.handoff_timeout_ms);
  next_handoff_retry_ns_ = started_ns_ + Ms(config_.swim.probe_interval_ms / 2);
  next_replication_ns_ = started_ns_ + Ms(config_.replication_interval_ms);
  next_anti_entropy_ns_ = started_ns_ + Ms(config_.anti_entropy_interval_ms);
  RefreshView(now, out);
  NoteEvents(now, out);
}

void Node::Leave(Instant now, Outbox* out) {
  // Hand our keys to the members that stay, then say goodbye.
  std::vector<PeerView> others;
  for (const PeerView& p : view_) {
    if (p.id != config_.node_id) others.push_back(p);
  }
  if (!others.empty()) {
    membership::Ring after = RingOf(others);
    boost::unordered_flat_map<std::string, std::vector<crdt::KeyId>> by_address;
    core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry&) {
      for (size_t i : TargetsIn(after, key)) {
        by_address[others[i].address].push_back(key);
      }
    });
    for (auto& [address, keys] : by_address) SendState(address, std::move(keys), false, now, out);
  }
  std::vector<membership::Outbound> swim_out;
  swim_.Leave(now, &swim_out);
  SendSwim(swim_out, now, out);
  if (!leave_deadline_ns_) {
    leave_deadline_ns_ = now.monotonic.count() + config_.leave_grace_ms * 1'000'000;
  }
  NoteEvents(now, out);
}

Node::LeaveProgress Node::LeaveState(Instant now, bool transport_idle) const {
  if (!leave_deadline_ns_) return LeaveProgress::kNotLeaving;
  // Alone, there is nobody to tell.
  bool alone = true;
  for (const auto& [id, m] : swim_.members()) {
    if (id != config_.node_id && m.up()) alone = false;
  }
  if ((alone || swim_.LeaveFlushed()) && transport_idle) return LeaveProgress::kFlushed;
  if (now.monotonic.count() >= *leave_deadline_ns_) return LeaveProgress::kGraceOver;
  return LeaveProgress::kLeaving;
}

// ---------------------------------------------------------------- timers

namespace {

constexpr int64_t kNsPerMs = 1'000'000;
// A wall clock that moved this much more (or less) than the monotonic clock
// between two readings jumped (a step by NTP or an operator). Slewing and
// drift move it by well under a millisecond a second.
constexpr int64_t kWallStepMs = 20;

}  // namespace

void Node::ObserveWallStep(Instant now) {
  const int64_t monotonic_ns = now.monotonic.count();
  const int64_t wall_ms = now.wall.count();
  if (step_reference_monotonic_ns_ >= 0) {
    const int64_t step_ms = (wall_ms - step_reference_wall_ms_) -
                            (monotonic_ns - step_reference_monotonic_ns_) / kNsPerMs;
    // A step back beyond what racing threads explain is a clock correction:
    // Tick re-syncs (its own test compares two ticks' wall times, and misses
    // a 2 s step back when the ticks are more than a second apart, as under
    // load: ClusterClockFaultTest saw it).
    if (step_ms < -config_.limiter.max_clock_regression_ms) wall_stepped_back_ = true;
    if (std::abs(step_ms) >= kWallStepMs) {
      // Peers' offsets were measured against the wall clock we had: move
      // them by the jump now, so a node whose clock jumped stops owning (or
      // owns again, when the jump corrected it) at once rather than after a
      // few probe rounds of smoothing, deciding meanwhile at the wrong time.
      ++counters_.wall_steps;
      swim_.OnOwnWallStep(static_cast<double>(step_ms));
      UpdateClockHealth(now);
      // Forward, the new time expires (sweeps, or advances past) counts that
      // are live for our peers, and with them what we still owed the keys'
      // lists: a resend carries current state. One cut off from us then
      // lacked our last hits for good if our clock never came back (swarm
      // seed 1411008591). Keep them as they are now, for those peers.
      if (step_ms > 0) FreezeOwedState(now);
    }
  }
  step_reference_wall_ms_ = wall_ms;
  step_reference_monotonic_ns_ = monotonic_ns;
}

void Node::PushHeldKeysToLists(Instant now, Outbox* out) {
  if (ring_.empty()) return;
  boost::unordered_flat_map<std::string, std::vector<crdt::KeyId>> by_address;
  std::vector<uint32_t> targets;
  core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry&) {
    ring_.PreferenceList(key, config_.replicas, &targets);
    for (uint32_t i : targets) {
      if (i != self_index_) by_address[view_[i].address].push_back(key);
    }
  });
  for (auto& [address, keys] : by_address) SendState(address, std::move(keys), false, now, out);
}

void Node::Tick(Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  ObserveWallStep(now);
  std::vector<membership::Outbound> swim_out;
  swim_.Tick(now, &swim_out);
  SendSwim(swim_out, now, out);
  RefreshView(now, out);
  if (now_ns >= next_clock_check_ns_) {
    UpdateClockHealth(now);
    reachable_members_ = ReachableMembers(now);
    next_clock_check_ns_ = now_ns + Ms(config_.clock_check_interval_ms);
  }
  if (wall_stepped_back_ ||
      now.wall.count() < last_tick_wall_ms_ - config_.limiter.max_clock_regression_ms) {
    wall_stepped_back_ = false;
    // Our wall clock stepped back: while it ran ahead we expired (and swept)
    // counts that are still live for our replicas. Fetch them again, as a
    // joining node does, and relay checks for our keys until we have them.
    ++counters_.clock_resyncs;
    // Move the hits we counted while ahead to the new time now, not at the
    // next check or sweep: until then our resent replicates (current state)
    // stay in our replicas' future and they keep refusing them.
    core_.Sweep(now);
    // And push what moved to the keys' other list members: they hold our
    // hits at the old buckets, we now hold them at the new ones, and only
    // anti-entropy (one random peer a second) would otherwise tell them.
    PushHeldKeysToLists(now, out);
    StartHandoff(now, out);
    resync_push_pending_ = true;
  }
  last_tick_wall_ms_ = now.wall.count();
  if (warming_ && now_ns >= warming_until_ns_) {
    warming_ = false;
    handoff_asked_.clear();
    next_handoff_reask_ns_ = now_ns + Ms(HandoffReaskIntervalMs());
    if (resync_push_pending_) {
      // While our clock ran ahead we swept keys whose deltas some list
      // member had not acknowledged yet (one cut off by a partition): the
      // sweep dropped those resends with the key. The handoff brought the
      // rows back from the members that had them; the members that never
      // got them learn them only here, not after anti-entropy pairs us
      // (about N/2 intervals). Swarm seed 2113001962.
      resync_push_pending_ = false;
      PushHeldKeysToLists(now, out);
    }
  }
  if (warming_ && now_ns >= next_handoff_retry_ns_) {
    // A member that did not see us alive yet ignored our request: ask again.
    for (const std::string& address : handoff_waiting_) {
      wire::NodeMessageValue request;
      request.kind = Kind::kHandoffRequest;
      SendNode(address, request, false, now, out);
    }
    next_handoff_retry_ns_ = now_ns + Ms(config_.swim.probe_interval_ms / 2);
  }
  if (!warming_ && !handoff_waiting_.empty() && now_ns >= next_handoff_reask_ns_) {
    // Members the warm-up could not reach (cut off, or down and not yet
    // declared dead) still hold what we asked for: rows of ours that a
    // clock step back moved here while they kept them at the old buckets
    // (swarm seed 290010168: a partition hid both replicas for the whole
    // handoff, and the decider never learned its rows back, so it and its
    // replicas stayed apart until anti-entropy happened to pair them).
    boost::unordered::erase_if(handoff_waiting_, [&](const std::string& address) {
      return !view_by_address_.contains(address);
    });
    for (const std::string& address : handoff_waiting_) {
      wire::NodeMessageValue request;
      request.kind = Kind::kHandoffRequest;
      ++counters_.handoff_reasks;
      SendNode(address, request, false, now, out);
    }
    next_handoff_reask_ns_ = now_ns + Ms(HandoffReaskIntervalMs());
  }
  ExpireForwards(now, out);
  if (now_ns >= next_replication_ns_) {
    Replicate(now, out);
    next_replication_ns_ = now_ns + Ms(config_.replication_interval_ms);
  }
  if (now_ns >= next_anti_entropy_ns_) {
    settled_version_ = version_at_last_round_;
    version_at_last_round_ = core_.store().version();
    StartAntiEntropy(now, out);
    core_.Sweep(now);
    known_members_ = LastKnownMembers(now);  // dead members age out of it
    boost::unordered::erase_if(co_deciders_, [&](auto& kv) {
      std::erase_if(kv.second, [&](const CoDecider& d) { return d.expires_ns <= now_ns; });
      return kv.second.empty();
    });
    next_anti_entropy_ns_ = now_ns + Ms(config_.anti_entropy_interval_ms);
  }
  if (adaptive_.rule_count() > 0 && now_ns >= next_adaptive_ns_) {
    AdaptiveRound(now, out);
    next_adaptive_ns_ = now_ns + Ms(config_.adaptive_flush_interval_ms);
  }
  Flush(now, out);
  NoteEvents(now, out);
}

void Node::Flush(Instant now, Outbox* out) {
  std::vector<std::string> addresses;
  addresses.swap(flush_list_);
  for (const std::string& address : addresses) {
    // Taken out of peers_ while sending: SendNode does not touch peers_, but
    // moving the queues keeps that an implementation detail.
    PeerState& peer = peers_[address];
    peer.flush_listed = false;
    std::vector<wire::ForwardValue> forwards = std::move(peer.forward_queue);
    std::vector<wire::ForwardResultValue> replies = std::move(peer.reply_queue);
    std::vector<uint64_t> acks = std::move(peer.ack_queue);
    const bool ack_lists = peer.protocol_version >= wire::kAckListsSinceVersion;
    const bool shared_endpoints = peer.protocol_version >= wire::kSharedEndpointsSinceVersion;
    peer.forward_queue.clear();
    peer.reply_queue.clear();
    peer.ack_queue.clear();
    size_t i = 0;
    while (i < forwards.size()) {
      wire::NodeMessageValue msg;
      msg.kind = Kind::kForward;
      msg.shared_endpoints = shared_endpoints;
      size_t bytes = 160;
      while (i < forwards.size()) {
        size_t cost = wire::EncodedForwardBound(forwards[i].check);
        if (!msg.forwards.empty() && bytes + cost > config_.max_packet_bytes) break;
        bytes += cost;
        msg.forwards.push_back(std::move(forwards[i++]));
      }
      SendNode(address, msg, false, now, out);
    }
    i = 0;
    while (i < replies.size()) {
      wire::NodeMessageValue msg;
      msg.kind = Kind::kForwardReply;
      size_t bytes = 160;
      while (i < replies.size()) {
        size_t cost = wire::kEncodedForwardResultBound + replies[i].result.error.size();
        if (!msg.results.empty() && bytes + cost > config_.max_packet_bytes) break;
        bytes += cost;
        msg.results.push_back(std::move(replies[i++]));
      }
      SendNode(address, msg, false, now, out);
    }
    // One message for the batch's acknowledgements (a single one as
    // replicateAck, smaller than a list of one), or one each to a member
    // older than lists.
    const size_t acks_per_message = std::clamp<size_t>(
        (config_.max_packet_bytes - std::min<size_t>(config_.max_packet_bytes, 160)) / 8, 1,
        wire::kMaxAcksPerMessage);
    for (i = 0; i < acks.size();) {
      wire::NodeMessageValue msg;
      msg.kind = Kind::kReplicateAck;
      const size_t n = ack_lists ? std::min(acks_per_message, acks.size() - i) : 1;
      if (n == 1) {
        msg.ack_seq = acks[i];
      } else {
        msg.ack_seqs.assign(acks.begin() + static_cast<std::ptrdiff_t>(i),
                            acks.begin() + static_cast<std::ptrdiff_t>(i + n));
      }
      i += n;
      SendNode(address, msg, false, now, out);
    }
  }
}

std::chrono::nanoseconds Node::NextDeadline() const {
  int64_t next = swim_.NextDeadline().count();
  // Replication wakes us only when there is something to send or resend.
  if (!replication_peers_.empty()) next = std::min(next, next_replication_ns_);
  next = std::min(next, next_anti_entropy_ns_);
  next = std::min(next, next_forward_expiry_ns_);
  if (warming_) next = std::min({next, warming_until_ns_, next_handoff_retry_ns_});
  if (!warming_ && !handoff_waiting_.empty()) next = std::min(next, next_handoff_reask_ns_);
  if (adaptive_.rule_count() > 0) next = std::min(next, next_adaptive_ns_);
  return std::chrono::nanoseconds(next);
}

// ---------------------------------------------------------------- encoding

void Node::SendNode(const std::string& address, const wire::NodeMessageValue& msg, bool stream,
                    Instant now, Outbox* out) {
  Outbox::PeerPacket packet{address, {}, stream, msg.kind};
  // Packed only to a member whose last message said it reads packing.
  auto peer = peers_.find(address);
  const bool packed =
      peer != peers_.end() && peer->second.protocol_version >= wire::kPackedSinceVersion;
  wire::EncodeNodeMessage(wire::PeerHeader{config_.node_id, config_.gossip_address,
                                           config_.generation, now.wall.count()},
                          msg, &packet.bytes, packed);
  counters_.peer_bytes_sent += packet.bytes.size();
  ++counters_.peer_messages_sent;
  NodeStatus::Counters::Traffic& t = counters_.sent_by_kind[PeerKindIndex(msg.kind)];
  ++t.messages;
  t.bytes += packet.bytes.size();
  if (msg.kind == Kind::kReplicate || msg.kind == Kind::kReplicateDelta) {
    counters_.replicate_bytes_sent += packet.bytes.size();
  }
  out->peer.push_back(std::move(packet));
}

void Node::SendSwim(std::vector<membership::Outbound>& swim_out, Instant now, Outbox* out) {
  for (membership::Outbound& o : swim_out) {
    Outbox::PeerPacket packet{o.to_address, {}, o.stream, std::nullopt, o.msg.kind()};
    wire::EncodeSwim(o.msg, &packet.bytes);
    counters_.peer_bytes_sent += packet.bytes.size();
    ++counters_.peer_messages_sent;
    NodeStatus::Counters::Traffic& t = counters_.sent_by_kind[kSwimKindIndex];
    ++t.messages;
    t.bytes += packet.bytes.size();
    out->peer.push_back(std::move(packet));
  }
  swim_out.clear();
}

}  // namespace tally::core

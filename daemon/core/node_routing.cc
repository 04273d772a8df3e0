// Node: client checks. Validation, routing to a key's decider (forwards,
// relays, their expiry and replies), local decisions, the reply datagrams,
// and the per-peer queues of forwards and forward replies.
#include <algorithm>
#include <cassert>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Ms;

CheckResult ErrorResult(uint64_t request_id, tally::Status status, std::string why) {
  CheckResult r;
  r.request_id = request_id;
  r.status = status;
  r.error = std::move(why);
  return r;
}

}  // namespace

void Node::OnClientDatagram(uint64_t reply_token, std::span<const std::byte> bytes, Instant now,
                            Outbox* out) {
  ObserveWallStep(now);
  std::string why;
  tally::Status status = client_reader_.Decode(bytes, &why);
  if (status == tally::Status::kOk && client_reader_.kind() != wire::MessageKind::kChecks) {
    status = tally::Status::kMalformed;
    why = "expected a checks message";
  }
  if (status != tally::Status::kOk) {
    ++counters_.malformed_client;
    CheckResult r = ErrorResult(0, status, why);
    Outbox::ClientReply reply{reply_token, {}, {}};
    reply.decisions.Add(r);
    wire::EncodeResponses(std::span<const CheckResult>(&r, 1), &reply.bytes);
    out->client.push_back(std::move(reply));
    return;
  }
  DecideChecks(reply_token, client_reader_.checks(), bytes.size(), now, out);
}

void Node::OnClientChecks(uint64_t reply_token, std::span<const CheckRequestRef> checks,
                          size_t request_bytes, Instant now, Outbox* out) {
  ObserveWallStep(now);
  DecideChecks(reply_token, checks, request_bytes, now, out);
}

void Node::DecideChecks(uint64_t reply_token, std::span<const CheckRequestRef> checks,
                        size_t request_bytes, Instant now, Outbox* out) {
  if (!wire::ResultsFitReplyFactor(checks.size(), request_bytes)) {
    // More checks than their bytes could hold as our encoders write them
    // (empty structs): one error, nothing decided, nothing amplified.
    ++counters_.malformed_client;
    CheckResult r = ErrorResult(
        0, tally::Status::kMalformed,
        std::to_string(checks.size()) + " checks in " + std::to_string(request_bytes) + " bytes");
    Outbox::ClientReply reply{reply_token, {}, {}};
    reply.decisions.Add(r);
    wire::EncodeResponses(std::span<const CheckResult>(&r, 1), &reply.bytes);
    out->client.push_back(std::move(reply));
    return;
  }
  RefreshView(now, out);
  if (checks.empty()) {
    // Nothing to decide, but every datagram is answered (and no batch may
    // wait for items that will never complete).
    Outbox::ClientReply reply{reply_token, {}, {}};
    wire::EncodeResponses(std::span<const CheckResult>(), &reply.bytes);
    out->client.push_back(std::move(reply));
    return;
  }
  const uint64_t batch_id = next_batch_id_++;
  PendingBatch& batch = batches_[batch_id];
  batch.reply_token = reply_token;
  batch.results.resize(checks.size());
  batch.outstanding = checks.size();
  // The checks' views live during this call only: checks decided now use
  // them in place, and Route copies only those it forwards.
  for (size_t i = 0; i < checks.size(); ++i) {
    const CheckRequestRef& check = checks[i];
    std::string invalid;
    if (ValidateRequest(check, &invalid) != tally::Status::kOk) {
      CheckResult r = ErrorResult(check.request_id, tally::Status::kInvalidArgument, invalid);
      r.limit = check.limit;
      CompleteItem(batch_id, i, std::move(r), out);
      continue;
    }
    crdt::KeyId key = crdt::HashKey(check.user_id, check.endpoint, check.window_ms);
    // A runtime override of this key's limit replaces the caller's, here at
    // the entry node, so a forward carries it to the decider.
    if (overrides_.live_explicit() > 0) {
      if (const std::optional<crdt::OverrideValue> o = overrides_.FindKey(
              crdt::Selector::ExplicitKey(check.user_id, check.endpoint, check.window_ms))) {
        CheckRequestRef overridden = check;
        overridden.limit = o->limit;
        ++counters_.overrides_used;
        Route(batch_id, i, overridden, key, RouteCursor{}, 1, now, out);
        continue;
      }
    }
    Route(batch_id, i, check, key, RouteCursor{}, 1, now, out);
  }
}

void Node::Route(uint64_t batch_id, size_t index, const CheckRequestRef& check,
                 const crdt::KeyId& key, RouteCursor cursor, uint8_t hops, Instant now,
                 Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  if (cursor.view_version != view_version_) {
    // The ranking changed since the last attempt (a member died or joined):
    // start over on the new one. Members that just timed out are passed over
    // in the first cycle, and the attempts made so far still count.
    cursor.position = 0;
    cursor.cycle = 0;
    cursor.member_attempts = 0;
    cursor.view_version = view_version_;
  }
  const size_t pref = ListLength();
  // The common case ranks R members; the whole ranking only on demand (the
  // list did not answer). Route never re-enters itself, so one scratch
  // vector serves every check.
  std::vector<uint32_t>& ranking = route_ranking_;
  ring_.PreferenceList(key, cursor.position < pref ? pref : view_.size(), &ranking);
  for (;; ++cursor.position, cursor.member_attempts = 0) {
    if (cursor.position == pref) {
      // A cycle over the preference list ended without an answer. Go round
      // again while forwards are left and a member there is alive per SWIM
      // (a loss, not a partition); otherwise walk on down the ranking.
      const bool any_alive = std::any_of(ranking.begin(), ranking.begin() + pref, [&](uint32_t i) {
        return i != self_index_ && SwimAlive(view_[i].id);
      });
      if (cursor.attempts < config_.route_attempts && any_alive) {
        cursor.position = 0;
        ++cursor.cycle;
      } else if (ranking.size() < view_.size()) {
        ring_.PreferenceList(key, view_.size(), &ranking);
      }
    }
    if (cursor.position >= ranking.size()) break;
    const size_t i = ranking[cursor.position];
    if (i == self_index_) {
      // On the list, a node that may not own (warming up, clock off) passes
      // the check on, as a receiver would relay it. Past the list the first
      // member reached decides whatever its state: every node of a side
      // reaches the same one, which is what keeps one decider per side.
      if (MayOwn() || hops >= MaxHops() || cursor.position >= pref) break;
      continue;
    }
    const PeerView& target = view_[i];
    // On the list the first cycle passes over peers that timed out lately;
    // later cycles retry those SWIM holds alive. Past the list a peer that
    // timed out is retried while SWIM holds it alive and forwards are left
    // (RetriesPastList): there a lost datagram must not move the decider.
    bool pass;
    if (cursor.position < pref) {
      pass = cursor.cycle > 0 ? !SwimAlive(target.id) : Skipped(target.address, now_ns);
    } else {
      pass = Skipped(target.address, now_ns) && !RetriesPastList(target, cursor);
    }
    if (pass) continue;
    ++cursor.attempts;
    if (cursor.position >= pref) {
      ++counters_.routed_past_list;
      ++cursor.member_attempts;
    }
    InFlightForward f;
    f.batch_id = batch_id;
    f.index = index;
    f.check = CheckRequest{check.request_id,
                           std::string(check.user_id),
                           std::string(check.endpoint),
                           check.limit,
                           check.window_ms,
                           check.hits};
    f.key = key;
    f.cursor = cursor;
    f.peer_address = target.address;
    f.sent_ns = now_ns;
    // At least forward_timeout_ms: a receiver that relays waits
    // forward_timeout_ms >> hops (half of it from here), so it still answers
    // before we give up on it whatever this peer's round trips made ours.
    f.deadline_ns = now_ns + ForwardTimeoutNs(target.address);
    f.hops = hops;
    const uint64_t forward_id = next_forward_id_++;
    f.forward_id = forward_id;
    Enqueue(target.address, wire::ForwardValue{forward_id, hops, f.check});
    next_forward_expiry_ns_ = std::min(next_forward_expiry_ns_, f.deadline_ns);
    in_flight_.emplace(forward_id, std::move(f));
    ++counters_.forwarded;
    return;
  }
  // We are the first reachable member of the ranking (or nobody else is left).
  if (cursor.position >= pref) ++counters_.routed_past_list;
  CompleteItem(batch_id, index, DecideLocally(check, key, now, out), out);
}

bool Node::RetriesPastList(const PeerView& peer, const RouteCursor& cursor) const {
  // Past the key's list the first member a side reaches decides for the
  // whole side, and every entry of the side must reach the same one. A
  // forward lost on the way (or its reply) says nothing about which member
  // that is, so while SWIM holds the member alive and forwards are left it is
  // asked again rather than passed over: passing over it made each entry that
  // lost a datagram reach a different member, and each of them decided from
  // none of the counts (swarm seed 1275704690: 20% loss during a partition,
  // four deciders on a side, 5 admitted against a bound of 4). A member on
  // the other side of a partition costs the same forwards until SWIM
  // suspects it, but only until route_attempts forwards to it timed out
  // with nothing heard from it in between, whichever checks they carried: an
  // entry pays that once per unreachable member, not once per check, and
  // the walk then passes over it as before (until it is heard from). The
  // budget is per member: the list's cycles may have spent the check's.
  if (cursor.member_attempts >= config_.route_attempts || !SwimAlive(peer.id)) return false;
  auto it = peers_.find(peer.address);
  return it == peers_.end() || it->second.timeouts_unheard < config_.route_attempts;
}

bool Node::SwimAlive(const std::string& id) const {
  const membership::Member* m = swim_.members().Find(id);
  return m != nullptr && m->state == membership::MemberState::kAlive;
}

bool Node::Reachable(const PeerView& peer, int64_t now_ns) const {
  return SwimAlive(peer.id) && !Skipped(peer.address, now_ns);
}

bool Node::RelayReachable(const PeerView& peer, int64_t now_ns) const {
  const membership::Member* m = swim_.members().Find(peer.id);
  return m != nullptr && m->up() && !Skipped(peer.address, now_ns);
}

bool Node::Skipped(const std::string& address, int64_t now_ns) const {
  auto it = peers_.find(address);
  return it != peers_.end() && it->second.skip_until_ns > now_ns;
}

Node::PeerState& Node::FlushPeer(const std::string& address) {
  PeerState& peer = peers_[address];
  if (!peer.flush_listed) {
    peer.flush_listed = true;
    flush_list_.push_back(address);
  }
  return peer;
}

CheckResult Node::DecideLocally(const CheckRequestRef& check, const crdt::KeyId& key, Instant now,
                                Outbox* out) {
  CheckRequestRef effective = check;
  const size_t alive = reachable_members_;
  const size_t known = known_members_;
  if (alive < known) {
    switch (config_.partition_policy) {
      case PartitionPolicy::kAvailability:
        break;
      case PartitionPolicy::kProportional:
        effective.limit = check.limit * alive / known;
        break;
      case PartitionPolicy::kClosed:
        if (alive * 2 <= known) {
          // A minority side admits nothing; asking (hits = 0) still answers.
          effective.limit = 0;
        }
        break;
    }
  }
  const uint64_t dedup_before = core_.stats().dedup_hits;
  CheckResult r = core_.CheckKey(effective, key, now);
  const bool retry = core_.stats().dedup_hits != dedup_before;
  if (r.allowed && check.hits > 0 && !retry) {
    MarkDirty(key, core_.last_added_bucket(), now.monotonic.count());
  }
  if (config_.record_decisions && r.status == tally::Status::kOk && !retry) {
    out->decisions.push_back(Outbox::Decision{key, check.request_id, check.limit, check.window_ms,
                                              r.allowed ? check.hits : 0, now.wall.count(),
                                              r.allowed});
  }
  return r;
}

void Node::CompleteItem(uint64_t batch_id, size_t index, CheckResult result, Outbox* out) {
  auto it = batches_.find(batch_id);
  assert(it != batches_.end());
  PendingBatch& batch = it->second;
  assert(index < batch.results.size() && batch.outstanding > 0);
  batch.results[index] = std::move(result);
  if (--batch.outstanding > 0) return;
  // All answered: one reply datagram per batch (split if it would not fit).
  // Batches are never empty (OnClientDatagram answers an empty one at once).
  assert(!batch.results.empty());
  wire::ForEachResponseDatagram(batch.results, [&](std::span<const CheckResult> run) {
    Outbox::ClientReply reply{batch.reply_token, {}, {}};
    for (const CheckResult& r : run) reply.decisions.Add(r);
    wire::EncodeResponses(run, &reply.bytes);
    out->client.push_back(std::move(reply));
  });
  batches_.erase(it);
}

void Node::Enqueue(const std::string& address, wire::ForwardValue value) {
  FlushPeer(address).forward_queue.push_back(std::move(value));
}

void Node::QueueReply(const std::string& address, wire::ForwardResultValue value) {
  // The forwarder answers its client with the request id of its own record
  // (HandleForwardReply; every version has), so the answer leaves it out:
  // 8 bytes that packing cannot shrink on every forwarded check.
  value.result.request_id = 0;
  FlushPeer(address).reply_queue.push_back(std::move(value));
}

void Node::QueueAck(const std::string& address, uint64_t seq) {
  FlushPeer(address).ack_queue.push_back(seq);
}

void Node::ExpireForwards(Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  if (now_ns >= next_late_forget_ns_) {
    next_late_forget_ns_ = INT64_MAX;
    boost::unordered::erase_if(late_forwards_, [&](const auto& kv) {
      if (kv.second.forget_ns <= now_ns) return true;
      next_late_forget_ns_ = std::min(next_late_forget_ns_, kv.second.forget_ns);
      return false;
    });
  }
  if (now_ns < next_forward_expiry_ns_) return;
  std::vector<InFlightForward> expired;
  next_forward_expiry_ns_ = INT64_MAX;
  boost::unordered::erase_if(in_flight_, [&](auto& kv) {
    if (kv.second.deadline_ns <= now_ns) {
      expired.push_back(std::move(kv.second));
      return true;
    }
    next_forward_expiry_ns_ = std::min(next_forward_expiry_ns_, kv.second.deadline_ns);
    return false;
  });
  // Deterministic order (the map's order depends on ids, not on time).
  std::sort(expired.begin(), expired.end(), [](const InFlightForward& a, const InFlightForward& b) {
    return a.deadline_ns != b.deadline_ns ? a.deadline_ns < b.deadline_ns : a.index < b.index;
  });
  const int64_t forget_ns = now_ns + Ms(std::max(config_.forward_timeout_max_ms, int64_t{1}));
  for (InFlightForward& f : expired) {
    ++counters_.forward_timeouts;
    // Its reply may still come and measure the peer (ids are never reused).
    late_forwards_.emplace(f.forward_id, LateForward{f.peer_address, f.sent_ns, forget_ns});
    next_late_forget_ns_ = std::min(next_late_forget_ns_, forget_ns);
    // Later checks pass over this peer until it is heard from again, for
    // longer each time a retry after a pass also times out.
    PeerState& peer = peers_[f.peer_address];
    ++peer.timeouts_unheard;
    if (now_ns >= peer.skip_until_ns) {
      peer.skip_ms = peer.skip_ms == 0 ? config_.forward_skip_ms
                                       : std::min(2 * peer.skip_ms, config_.forward_skip_max_ms);
      peer.skip_until_ns = now_ns + Ms(peer.skip_ms);
    }
    if (f.batch_id != 0) {
      RouteCursor next = f.cursor;
      // Past the list the same member is asked again while it may still be
      // the side's decider; elsewhere the walk moves on.
      auto at = view_by_address_.find(f.peer_address);
      const bool retry = next.view_version == view_version_ && next.position >= ListLength() &&
                         at != view_by_address_.end() && RetriesPastList(view_[at->second], next);
      if (!retry) {
        ++next.position;
        next.member_attempts = 0;
      }
      Route(f.batch_id, f.index, f.check, f.key, next, f.hops, now, out);
    } else {
      // A relay that timed out: decide ourselves rather than fail the origin.
      CheckResult r = DecideLocally(f.check, f.key, now, out);
      QueueReply(f.relay_origin, {f.relay_forward_id, std::move(r)});
    }
  }
}

void Node::HandleForward(const std::string& from, const std::vector<wire::ForwardValue>& items,
                         Instant now, Outbox* out) {
  for (const wire::ForwardValue& item : items) {
    std::string invalid;
    if (ValidateRequest(item.check, &invalid) != tally::Status::kOk) {
      CheckResult r = ErrorResult(item.check.request_id, tally::Status::kInvalidArgument, invalid);
      QueueReply(from, {item.forward_id, std::move(r)});
      continue;
    }
    crdt::KeyId key = crdt::HashKey(item.check.user_id, item.check.endpoint, item.check.window_ms);
    std::vector<uint32_t>& targets = route_ranking_;  // HandleForward never calls Route
    ring_.PreferenceList(key, config_.replicas, &targets);
    auto self_pos = std::find(targets.begin(), targets.end(), self_index_);
    size_t pos = targets.size();  // the list member to relay to, if any
    int64_t timeout_ms = config_.forward_timeout_ms;
    // The sender's rank on the list (the list's size when it is off it).
    size_t sender_pos = targets.size();
    for (size_t p = 0; p < targets.size(); ++p) {
      if (view_[targets[p]].address == from) sender_pos = p;
    }
    const size_t self_rank = static_cast<size_t>(self_pos - targets.begin());
    if (item.hops < MaxHops()) {
      // Off the key's list, or on it past its first member with the sender
      // below us or off it (a retry: the sender timed out on those ranked
      // above us), the best member above us that we reach decides, not us.
      // Off the list we would decide from none of the counts (swarm seed
      // 689643: five deciders beside the owner just after a heal, 3.6x the
      // limit); on it ours lag the owner's by up to a replication interval,
      // and a forward that was merely slow reached the owner too (seed
      // 700041: the owner denied what the next member then admitted). A
      // check that came down to us (a warming member's relay) never goes
      // back up: relays go up, then down, never round. Within half the time
      // the sender gives us (forward_timeout_ms >> hops: it gave us half of
      // what it was given), so that if no one above answers we still decide
      // before the sender walks on. The entry's own wait adapts to our round
      // trips (ForwardRtt) but never drops below forward_timeout_ms, so this
      // fixed share of the floor stays inside it. A suspect counts as reached: just after a
      // heal the other side's suspicions of the whole list arrive before the
      // list's refutations (runtime_override seed 7 at 50 nodes: an off-list
      // member that reached the list decided a third admission 40 ms later).
      const size_t above = self_pos == targets.end() ? targets.size() : self_rank;
      if (self_pos == targets.end() || sender_pos > self_rank) {
        const int64_t now_ns = now.monotonic.count();
        for (size_t p = 0; p < above; ++p) {
          const PeerView& member = view_[targets[p]];
          if (member.address != from && RelayReachable(member, now_ns)) {
            pos = p;
            // hops < MaxHops(), but R is configurable: keep the shift defined.
            const int shift = std::min<int>(item.hops, 62);
            timeout_ms = std::max<int64_t>(config_.forward_timeout_ms >> shift, 1);
            break;
          }
        }
      }
      if (pos == targets.size() && self_pos != targets.end() && !MayOwn() &&
          self_pos + 1 != targets.end()) {
        pos = self_rank + 1;
      }
    }
    if (pos == targets.size()) {
      ++counters_.decided_for_peers;
      // Decide before touching peers_: DecideLocally may insert peers (MarkDirty)
      // and a rehash would invalidate a reference taken first.
      CheckResult decided = DecideLocally(item.check, key, now, out);
      QueueReply(from, {item.forward_id, std::move(decided)});
      continue;
    }
    // Relay to the best member above us that we reach (or, warming, to the
    // next after us); it decides or relays in turn.
    ++counters_.relayed;
    const PeerView& target = view_[targets[pos]];
    InFlightForward f;
    f.batch_id = 0;
    f.check = item.check;
    f.key = key;
    f.cursor.position = pos;
    f.peer_address = target.address;
    f.sent_ns = now.monotonic.count();
    f.deadline_ns = f.sent_ns + Ms(timeout_ms);
    f.hops = static_cast<uint8_t>(item.hops + 1);
    f.relay_origin = from;
    f.relay_forward_id = item.forward_id;
    const uint64_t forward_id = next_forward_id_++;
    f.forward_id = forward_id;
    Enqueue(target.address, wire::ForwardValue{forward_id, f.hops, item.check});
    next_forward_expiry_ns_ = std::min(next_forward_expiry_ns_, f.deadline_ns);
    in_flight_.emplace(forward_id, std::move(f));
  }
}

int64_t Node::ForwardTimeoutNs(const std::string& address) const {
  const int64_t floor_ns = Ms(config_.forward_timeout_ms);
  const int64_t max_ns = std::max(floor_ns, Ms(config_.forward_timeout_max_ms));
  auto it = peers_.find(address);
  return it == peers_.end() ? floor_ns : it->second.rtt.TimeoutNs(floor_ns, max_ns);
}

void Node::SampleForwardRtt(const std::string& address, int64_t sent_ns, int64_t now_ns) {
  peers_[address].rtt.Sample(now_ns - sent_ns);
  ++counters_.forward_rtt_samples;
}

void Node::HandleForwardReply(const std::string& from,
                              const std::vector<wire::ForwardResultValue>& items, Instant now,
                              Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  for (const wire::ForwardResultValue& item : items) {
    auto it = in_flight_.find(item.forward_id);
    if (it == in_flight_.end()) {
      // Late (we already moved on; it still measures the peer) or bogus.
      auto late = late_forwards_.find(item.forward_id);
      if (late != late_forwards_.end() && late->second.peer_address == from) {
        SampleForwardRtt(from, late->second.sent_ns, now_ns);
        late_forwards_.erase(late);
      }
      continue;
    }
    if (it->second.peer_address != from) {
      // Only the peer we forwarded to answers (a relay answers its own
      // forwarder): anyone else is guessing forward ids.
      ++counters_.forward_results_refused;
      continue;
    }
    InFlightForward f = std::move(it->second);
    in_flight_.erase(it);
    SampleForwardRtt(from, f.sent_ns, now_ns);
    CheckResult result = item.result;
    result.request_id = f.check.request_id;
    if (f.batch_id != 0) {
      CompleteItem(f.batch_id, f.index, std::move(result), out);
    } else {
      QueueReply(f.relay_origin, {f.relay_forward_id, std::move(result)});
    }
  }
}

}  // namespace tally::core

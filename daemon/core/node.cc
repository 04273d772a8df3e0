#include "daemon/core/node.h"

#include <algorithm>
#include <cassert>
#include <cmath>

namespace tally::core {
namespace {

using Kind = wire::NodeMessageValue::Kind;

int64_t Ms(int64_t ms) { return ms * 1'000'000; }

// The median peer clock offset is an estimate from pings; beyond an hour it is
// no longer a clock offset but a broken clock, and is not trusted further.
constexpr int64_t kMaxPlausibleOffsetMs = 3'600'000;

CheckResult ErrorResult(uint64_t request_id, tally::Status status, std::string why) {
  CheckResult r;
  r.request_id = request_id;
  r.status = status;
  r.error = std::move(why);
  return r;
}

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
}

// ---------------------------------------------------------------- lifecycle

persist::RestoreStats Node::Restore(const persist::DecodedSnapshot& snapshot, Instant now) {
  return persist::RestoreSnapshot(snapshot, now.wall.count(), &core_.store());
}

void Node::Start(Instant now, Outbox* out) {
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
}

void Node::StartHandoff(Instant now, Outbox* out) {
  warming_ = true;
  warming_until_ns_ = now.monotonic.count() + Ms(config_.handoff_timeout_ms);
  next_handoff_retry_ns_ = now.monotonic.count() + Ms(config_.swim.probe_interval_ms / 2);
  handoff_waiting_.clear();
  handoff_asked_.clear();  // a new warm-up: everyone is asked once again
  for (const PeerView& p : view_) {
    if (p.id == config_.node_id || !handoff_waiting_.insert(p.address).second) continue;
    handoff_asked_.insert(p.address);
    wire::NodeMessageValue request;
    request.kind = Kind::kHandoffRequest;
    SendNode(p.address, request, false, now, out);
  }
}

// ---------------------------------------------------------------- membership

void Node::RefreshView(Instant now, Outbox* out) {
  if (swim_.alive_set_version() == view_version_) return;
  view_version_ = swim_.alive_set_version();
  // Keys change targets only if we hold some: only then is the old ring kept.
  std::optional<membership::Ring> old_ring;
  if (!view_.empty() && core_.store().size() > 0) old_ring = ring_;
  // Most refreshes follow a rumor or two about single members: update the
  // view by those (a join storm brings n changes to each of n nodes, and a
  // rebuild each time made it O(n^2) per node). A push-pull that brought
  // many at once rebuilds from the member table instead.
  const std::vector<std::string>& changes = swim_.up_set_changes();
  // One change costs O(n) moves of small entries, a rebuild O(n) lookups
  // and copies about ten times dearer.
  const bool rebuild = view_.empty() || swim_.up_set_changes_overflowed() ||
                       changes.size() > std::max<size_t>(4, view_.size() / 8);
  std::vector<std::string> changed_ids;  // for the handoff requests below
  if (rebuild) {
    RebuildView();
  } else {
    for (const std::string& id : changes) ApplyViewChange(id);
    if (warming_) changed_ids = changes;
  }
  swim_.ClearUpSetChanges();
  known_members_ = LastKnownMembers(now);
  reachable_members_ = ReachableMembers(now);

  // A warming node asks every member it has not asked yet for its keys,
  // once: a member that answered (HandoffDone) sent all it had for us, and
  // later moves of keys to us are its PushKeysForChangedTargets. (Asking
  // again whoever had answered, at every view change, kept a joining node
  // warming until handoff_timeout_ms through a join storm and had every
  // member scan its store again for each of them.)
  if (warming_) {
    auto ask = [&](const PeerView& p) {
      if (p.id == config_.node_id || !handoff_asked_.insert(p.address).second) return;
      handoff_waiting_.insert(p.address);
      wire::NodeMessageValue request;
      request.kind = Kind::kHandoffRequest;
      SendNode(p.address, request, false, now, out);
    };
    if (rebuild) {
      for (const PeerView& p : view_) ask(p);
    } else {
      for (const std::string& id : changed_ids) {
        auto it =
            std::lower_bound(view_.begin(), view_.end(), id,
                             [](const PeerView& p, const std::string& v) { return p.id < v; });
        if (it != view_.end() && it->id == id) ask(*it);
      }
    }
  }
  if (old_ring) PushKeysForChangedTargets(*old_ring, now, out);
}

void Node::RebuildView() {
  view_.clear();
  std::vector<membership::RingMember> ring_members;
  const membership::MemberTable& table = swim_.members();
  view_.reserve(table.up().size() + 1);
  ring_members.reserve(table.up().size() + 1);
  // The up members in id order (the view's and the ring's), and us in our
  // place whatever our state (from the table if we are in it).
  const membership::Member* self = table.Find(config_.node_id);
  PeerView self_view = self != nullptr
                           ? PeerView{self->id, self->address, self->generation}
                           : PeerView{config_.node_id, config_.gossip_address, config_.generation};
  bool self_placed = false;
  auto add = [&](const PeerView& p) {
    view_.push_back(p);
    ring_members.push_back(membership::RingMember{p.id, p.address, 1.0});
  };
  for (const membership::Member* m : table.up()) {
    if (!self_placed && !(m->id < config_.node_id)) {
      add(self_view);
      self_placed = true;
      if (m->id == config_.node_id) continue;
    }
    add(PeerView{m->id, m->address, m->generation});
  }
  if (!self_placed) add(self_view);
  ring_ = membership::Ring(std::move(ring_members));  // sorted: no map
  IndexAddresses();
}

void Node::IndexAddresses() {
  view_by_address_.clear();
  for (size_t i = 0; i < view_.size(); ++i) {
    view_by_address_[view_[i].address] = i;  // a repeated address maps to its last member
    if (view_[i].id == config_.node_id) self_index_ = i;
  }
}

void Node::ApplyViewChange(const std::string& id) {
  const membership::Member* m = swim_.members().Find(id);
  const bool self = id == config_.node_id;
  std::optional<PeerView> want;
  if (m != nullptr && (m->up() || self)) {
    want = PeerView{m->id, m->address, m->generation};
  } else if (self) {
    want = PeerView{config_.node_id, config_.gossip_address, config_.generation};
  }
  const size_t pos = static_cast<size_t>(
      std::lower_bound(view_.begin(), view_.end(), id,
                       [](const PeerView& p, const std::string& v) { return p.id < v; }) -
      view_.begin());
  const bool present = pos < view_.size() && view_[pos].id == id;
  // The address index shifts in place while addresses are unique (always, but
  // for a stale member whose address another one took); otherwise reindex.
  const bool unique = view_by_address_.size() == view_.size();
  auto shift_from = [&](size_t from, bool up) {
    for (auto& [address, index] : view_by_address_) {
      if (index >= from) index = up ? index + 1 : index - 1;
    }
  };
  if (want && present) {
    PeerView& p = view_[pos];
    if (p.address == want->address && p.generation == want->generation) return;
    const std::string old_address = p.address;
    p = *want;
    ring_.Upsert(membership::RingMember{p.id, p.address, 1.0});
    if (old_address == p.address) return;
    if (unique && !view_by_address_.contains(p.address)) {
      view_by_address_.erase(old_address);
      view_by_address_[p.address] = pos;
    } else {
      IndexAddresses();
    }
  } else if (want) {
    const bool fast = unique && !view_by_address_.contains(want->address);
    view_.insert(view_.begin() + static_cast<std::ptrdiff_t>(pos), *want);
    [[maybe_unused]] const auto [ring_pos, inserted] =
        ring_.Upsert(membership::RingMember{want->id, want->address, 1.0});
    assert(ring_pos == pos && inserted);
    if (fast) {
      shift_from(pos, true);
      view_by_address_[view_[pos].address] = pos;
      if (self_index_ >= pos && !self) ++self_index_;
      if (self) self_index_ = pos;
    } else {
      IndexAddresses();
    }
  } else if (present) {
    const std::string address = view_[pos].address;
    view_.erase(view_.begin() + static_cast<std::ptrdiff_t>(pos));
    [[maybe_unused]] const auto ring_pos = ring_.Erase(id);
    assert(ring_pos && *ring_pos == pos);
    if (unique) {
      view_by_address_.erase(address);
      shift_from(pos + 1, false);
      if (self_index_ > pos) --self_index_;
    } else {
      IndexAddresses();
    }
  }
}

membership::Ring Node::RingOf(const std::vector<PeerView>& view) {
  std::vector<membership::RingMember> members;
  members.reserve(view.size());
  for (const PeerView& p : view) members.push_back(membership::RingMember{p.id, p.address, 1.0});
  // The ring sorts by id, as view_ is sorted: its indexes are view_'s.
  return membership::Ring(std::move(members));
}

std::vector<size_t> Node::Targets(const crdt::KeyId& key) const { return TargetsIn(ring_, key); }

std::vector<size_t> Node::TargetsIn(const membership::Ring& ring, const crdt::KeyId& key) const {
  std::vector<uint32_t> indexes;
  ring.PreferenceList(key, config_.replicas, &indexes);
  return std::vector<size_t>(indexes.begin(), indexes.end());
}

std::vector<std::string> Node::PreferenceList(const crdt::KeyId& key) const {
  std::vector<std::string> ids;
  for (size_t i : Targets(key)) ids.push_back(view_[i].id);
  return ids;
}

bool Node::MayOwn() const { return !warming_ && clock_ok_; }

size_t Node::LastKnownMembers(Instant now) const {
  const membership::MemberTable& table = swim_.members();
  if (table.CountIn(membership::MemberState::kDead) == 0) {
    // No dead member to age out (the usual case): the up members, from the
    // table's counts, without a walk per view change.
    const size_t up = table.CountUp() + (table.Find(config_.node_id) == nullptr ? 1 : 0);
    return std::max<size_t>(up, 1);
  }
  size_t count = 0;
  bool self_seen = false;
  for (const auto& [id, m] : swim_.members()) {
    if (m.id == config_.node_id) self_seen = true;
    switch (m.state) {
      case membership::MemberState::kAlive:
      case membership::MemberState::kSuspect:
        ++count;
        break;
      case membership::MemberState::kDead:
        if (now.monotonic.count() - m.since.monotonic.count() < Ms(config_.partition_memory_ms))
          ++count;
        break;
      case membership::MemberState::kLeft:
        break;
    }
  }
  if (!self_seen) ++count;
  return std::max<size_t>(count, 1);
}

size_t Node::ReachableMembers(Instant now) const {
  // Only the conservative policies read it: availability skips the walk.
  if (config_.partition_policy == PartitionPolicy::kAvailability) return view_.size();
  size_t count = 1;  // ourselves
  for (const PeerView& p : view_) {
    if (p.id != config_.node_id && Reachable(p, now.monotonic.count())) ++count;
  }
  return count;
}

void Node::UpdateClockHealth(Instant now) {
  // A function of the estimates and the view only: skip it while neither moved.
  if (clock_health_inputs_ == std::pair(swim_.clock_version(), view_version_)) return;
  clock_health_inputs_ = {swim_.clock_version(), view_version_};
  // The offsets of the view's members (but us) that have an estimate: walk
  // the estimators, the members probed so far, not the whole view.
  std::vector<double> offsets;
  for (const auto& [id, estimator] : swim_.clock_estimators()) {
    if (id == config_.node_id || !estimator.has_estimate()) continue;
    auto it = std::lower_bound(view_.begin(), view_.end(), id,
                               [](const PeerView& p, const std::string& v) { return p.id < v; });
    const bool in_view = it != view_.end() && it->id == id;
    if (in_view) offsets.push_back(estimator.estimate().offset_ms);
  }
  if (offsets.empty()) {
    clock_ok_ = true;
    median_offset_ms_ = 0;
    majority_ahead_ms_ = 0;
    return;
  }
  std::sort(offsets.begin(), offsets.end());
  median_offset_ms_ = offsets[offsets.size() / 2];
  // How far a strict majority of peers are all ahead of us (0 if they are
  // not): half of them cannot widen what we take from the future
  // (ApplyState); with one peer, that peer can.
  majority_ahead_ms_ = std::max(0.0, offsets[(offsets.size() - 1) / 2]);
  size_t far = static_cast<size_t>(std::count_if(offsets.begin(), offsets.end(), [&](double o) {
    return std::abs(o) > static_cast<double>(config_.max_clock_offset_ms);
  }));
  // We stop owning when we disagree with most peers: then it is our clock.
  clock_ok_ = !(far * 2 > offsets.size());
}

// ---------------------------------------------------------------- checks

void Node::OnClientDatagram(uint64_t reply_token, std::span<const std::byte> bytes, Instant now,
                            Outbox* out) {
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
  const auto& checks = client_reader_.checks();
  if (!wire::ResultsFitReplyFactor(checks.size(), bytes.size())) {
    // More checks than their bytes could hold as our encoders write them
    // (empty structs): one error, nothing decided, nothing amplified.
    ++counters_.malformed_client;
    CheckResult r = ErrorResult(
        0, tally::Status::kMalformed,
        std::to_string(checks.size()) + " checks in " + std::to_string(bytes.size()) + " bytes");
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
  // client_reader_'s views live until the next client datagram: checks decided
  // now use them in place, and Route copies only those it forwards.
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
    cursor.view_version = view_version_;
  }
  const size_t pref = std::min<size_t>(config_.replicas, view_.size());
  // The common case ranks R members; the whole ranking only on demand (the
  // list did not answer). Route never re-enters itself, so one scratch
  // vector serves every check.
  std::vector<uint32_t>& ranking = route_ranking_;
  ring_.PreferenceList(key, cursor.position < pref ? pref : view_.size(), &ranking);
  for (;; ++cursor.position) {
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
    // The first cycle passes over peers that timed out lately; later cycles
    // retry those SWIM holds alive.
    const bool pass = cursor.position < pref && cursor.cycle > 0 ? !SwimAlive(target.id)
                                                                 : Skipped(target.address, now_ns);
    if (pass) continue;
    ++cursor.attempts;
    if (cursor.position >= pref) ++counters_.routed_past_list;
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
    f.deadline_ns = now_ns + Ms(config_.forward_timeout_ms);
    f.hops = hops;
    const uint64_t forward_id = next_forward_id_++;
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

bool Node::SwimAlive(const std::string& id) const {
  const membership::Member* m = swim_.members().Find(id);
  return m != nullptr && m->state == membership::MemberState::kAlive;
}

bool Node::Reachable(const PeerView& peer, int64_t now_ns) const {
  return SwimAlive(peer.id) && !Skipped(peer.address, now_ns);
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

Node::PeerState& Node::ReplicationPeer(const std::string& address) {
  replication_peers_.insert(address);
  return peers_[address];
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
  if (r.allowed && check.hits > 0 && !retry) MarkDirty(key, now.monotonic.count());
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
  std::span<const CheckResult> all(batch.results);
  size_t start = 0;
  while (start < all.size()) {
    size_t bytes = wire::kMessageOverheadBytes, end = start;
    while (end < all.size()) {
      size_t next = wire::EncodedResponseBound(all[end].error.size());
      if (end > start && bytes + next > wire::kMaxDatagramBytes) break;
      bytes += next;
      ++end;
    }
    Outbox::ClientReply reply{batch.reply_token, {}, {}};
    for (size_t i = start; i < end; ++i) reply.decisions.Add(all[i]);
    wire::EncodeResponses(all.subspan(start, end - start), &reply.bytes);
    out->client.push_back(std::move(reply));
    start = end;
  }
  batches_.erase(it);
}

void Node::Enqueue(const std::string& address, wire::ForwardValue value) {
  FlushPeer(address).forward_queue.push_back(std::move(value));
}

void Node::QueueReply(const std::string& address, wire::ForwardResultValue value) {
  FlushPeer(address).reply_queue.push_back(std::move(value));
}

void Node::ExpireForwards(Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
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
  for (InFlightForward& f : expired) {
    ++counters_.forward_timeouts;
    // Later checks pass over this peer until it is heard from again, for
    // longer each time a retry after a pass also times out.
    PeerState& peer = peers_[f.peer_address];
    if (now_ns >= peer.skip_until_ns) {
      peer.skip_ms = peer.skip_ms == 0 ? config_.forward_skip_ms
                                       : std::min(2 * peer.skip_ms, config_.forward_skip_max_ms);
      peer.skip_until_ns = now_ns + Ms(peer.skip_ms);
    }
    if (f.batch_id != 0) {
      RouteCursor next = f.cursor;
      ++next.position;
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
    const bool can_relay = !MayOwn() && item.hops < MaxHops() && self_pos != targets.end() &&
                           self_pos + 1 != targets.end();
    if (!can_relay) {
      ++counters_.decided_for_peers;
      // Decide before touching peers_: DecideLocally may insert peers (MarkDirty)
      // and a rehash would invalidate a reference taken first.
      CheckResult decided = DecideLocally(item.check, key, now, out);
      QueueReply(from, {item.forward_id, std::move(decided)});
      continue;
    }
    // Relay to the next member after us; it decides or relays in turn.
    ++counters_.relayed;
    size_t pos = static_cast<size_t>(self_pos - targets.begin()) + 1;
    const PeerView& target = view_[targets[pos]];
    InFlightForward f;
    f.batch_id = 0;
    f.check = item.check;
    f.key = key;
    f.cursor.position = pos;
    f.peer_address = target.address;
    f.deadline_ns = now.monotonic.count() + Ms(config_.forward_timeout_ms);
    f.hops = static_cast<uint8_t>(item.hops + 1);
    f.relay_origin = from;
    f.relay_forward_id = item.forward_id;
    const uint64_t forward_id = next_forward_id_++;
    Enqueue(target.address, wire::ForwardValue{forward_id, f.hops, item.check});
    next_forward_expiry_ns_ = std::min(next_forward_expiry_ns_, f.deadline_ns);
    in_flight_.emplace(forward_id, std::move(f));
  }
}

void Node::HandleForwardReply(const std::string& from,
                              const std::vector<wire::ForwardResultValue>& items, Outbox* out) {
  for (const wire::ForwardResultValue& item : items) {
    auto it = in_flight_.find(item.forward_id);
    if (it == in_flight_.end()) continue;  // late (we already moved on) or bogus
    if (it->second.peer_address != from) {
      // Only the peer we forwarded to answers (a relay answers its own
      // forwarder): anyone else is guessing forward ids.
      ++counters_.forward_results_refused;
      continue;
    }
    InFlightForward f = std::move(it->second);
    in_flight_.erase(it);
    CheckResult result = item.result;
    result.request_id = f.check.request_id;
    if (f.batch_id != 0) {
      CompleteItem(f.batch_id, f.index, std::move(result), out);
    } else {
      QueueReply(f.relay_origin, {f.relay_forward_id, std::move(result)});
    }
  }
}

// ---------------------------------------------------------------- peer input

void Node::OnPeerMessage(const std::string& from_address, std::span<const std::byte> bytes,
                         Instant now, Outbox* out) {
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
    if (it != peers_.end()) {
      it->second.skip_until_ns = 0;
      it->second.skip_ms = 0;
    }
  }
  if (reader.is_swim()) {
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
  RefreshView(now, out);
  const PeerSender sender{reader.sender_address().empty() ? from_address : reader.sender_address(),
                          from_address, reader.sender_id(), reader.sender_generation()};
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
      HandleForwardReply(from, msg.results, out);
      break;
    case Kind::kReplicate: {
      ++counters_.replicate_received;
      // Not acknowledged when dropped whole (a sender we do not count as a
      // member yet resends, and is heard once our view holds it) or when a
      // counter was ahead of our clock allowance (resent until it is not).
      if (!ApplyState(sender, msg.replicate, true, now)) break;
      wire::NodeMessageValue ack;
      ack.kind = Kind::kReplicateAck;
      ack.ack_seq = msg.replicate.seq;
      SendNode(from, ack, false, now, out);
      break;
    }
    case Kind::kStatePush: {
      // Acknowledged like a replicate, so a push lost to a cut is resent;
      // not when dropped whole (a sender not yet in our view resends).
      if (!ApplyState(sender, msg.replicate, false, now)) break;
      wire::NodeMessageValue ack;
      ack.kind = Kind::kReplicateAck;
      ack.ack_seq = msg.replicate.seq;
      SendNode(from, ack, false, now, out);
      break;
    }
    case Kind::kReplicateAck: {
      auto it = peers_.find(from);
      if (it != peers_.end()) it->second.unacked.erase(msg.ack_seq);
      break;
    }
    case Kind::kDigest:
      HandleDigest(sender, msg, now, out);
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
  // far a strict majority of peers' clocks are all ahead of ours (ours may be
  // the one behind; from three members on, one peer alone cannot widen the
  // bound); further ahead it
  // would drop live counts of ours (it moves the ring). A state with nothing
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
    crdt::WindowCounter counter = crdt::WindowCounter::FromState(g, c.newest_bucket, rows);
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
    if (!from_decider) continue;
    ring_.PreferenceList(key, config_.replicas, &targets);
    const bool listed = std::any_of(targets.begin(), targets.end(),
                                    [&](uint32_t i) { return view_[i].address == from; });
    if (listed) continue;
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

// ---------------------------------------------------------------- replication

void Node::MarkDirty(const crdt::KeyId& key, int64_t now_ns) {
  // The key's list gets our deltas, reachable or not (what an unreachable
  // member misses is resent until it acknowledges or leaves the view).
  ring_.PreferenceList(key, config_.replicas, &dirty_targets_);
  const size_t wanted = std::min<size_t>(config_.replicas, view_.size()) - 1;
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
      for (const auto& key : kv.second.keys) peer.dirty.insert(key);
      return true;
    });
    if (!peer.dirty.empty()) {
      if (!view_by_address_.contains(address) && !co_decider_addresses.contains(address)) {
        peer.dirty.clear();  // not a member any more; anti-entropy covers its successor
        peer.unacked.clear();
      } else {
        std::vector<crdt::KeyId> keys(peer.dirty.begin(), peer.dirty.end());
        peer.dirty.clear();
        SendState(address, std::move(keys), true, now, out);
      }
    }
    // SendState may have rehashed peers_: look the peer up again.
    const PeerState& after = peers_[address];
    if (after.dirty.empty() && after.unacked.empty()) replication_peers_.erase(address);
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

void Node::SendState(const std::string& address, std::vector<crdt::KeyId> keys, bool acked,
                     Instant now, Outbox* out) {
  const size_t budget = acked ? config_.max_packet_bytes : 256 * 1024;
  size_t i = 0;
  while (i < keys.size()) {
    wire::NodeMessageValue msg;
    msg.kind = acked ? Kind::kReplicate : Kind::kStatePush;
    msg.replicate.seq = next_replicate_seq_++;
    boost::unordered_flat_map<crdt::SlotIndex, uint16_t> slot_map;
    std::vector<crdt::KeyId> sent;
    size_t bytes = 128;
    for (; i < keys.size(); ++i) {
      const crdt::KeyStore::Entry* entry = core_.store().Find(keys[i]);
      if (entry == nullptr) continue;  // reclaimed meanwhile: nothing live to send
      size_t slots_before = msg.replicate.slots.size();
      wire::CounterValue value = ToWire(keys[i], entry->counter, &msg.replicate.slots, &slot_map);
      size_t cost = wire::EncodedCounterBound(value);
      for (size_t s = slots_before; s < msg.replicate.slots.size(); ++s) {
        cost += 24 + msg.replicate.slots[s].node_id.size();
      }
      // Receivers refuse more slots or counters than the decoder's bounds.
      if (!sent.empty() &&
          (bytes + cost > budget || msg.replicate.slots.size() > wire::kMaxSlotsPerMessage ||
           msg.replicate.counters.size() >= wire::kMaxCountersPerMessage)) {
        // Undo the slot additions of the counter that did not fit.
        for (size_t s = msg.replicate.slots.size(); s > slots_before; --s) {
          slot_map.erase(std::find_if(slot_map.begin(), slot_map.end(), [&](const auto& kv) {
                           return kv.second == s - 1;
                         })->first);
        }
        msg.replicate.slots.resize(slots_before);
        break;
      }
      bytes += cost;
      msg.replicate.counters.push_back(std::move(value));
      sent.push_back(keys[i]);
    }
    if (sent.empty()) continue;
    // Both kinds are acknowledged: a replicate is resent soon (a lost
    // datagram), a push later (a stream of bulk state takes longer).
    const int64_t retry_ms = acked ? config_.replication_retry_ms : config_.push_retry_ms;
    ReplicationPeer(address).unacked[msg.replicate.seq] =
        UnackedReplicate{std::move(sent), now.monotonic.count() + Ms(retry_ms)};
    if (acked) {
      ++counters_.replicate_sent;
    } else {
      ++counters_.state_pushes;
    }
    SendNode(address, msg, !acked, now, out);
  }
}

uint64_t Node::StateHash(const crdt::KeyId& key, Instant now) const {
  const crdt::KeyStore::Entry* entry = core_.store().Find(key);
  if (entry == nullptr) return 0;
  const crdt::WindowCounter& c = entry->counter;
  const crdt::Geometry g = c.geometry();
  const int64_t now_bucket = crdt::BucketOf(now.wall.count(), g);
  const int64_t from = std::max(now_bucket - static_cast<int64_t>(g.span),
                                c.newest_bucket() - static_cast<int64_t>(g.span));
  uint64_t h = 0;
  for (size_t r = 0; r < c.row_count(); ++r) {
    const crdt::ReplicaSlot& slot = core_.store().slots().Get(c.row_slot(r));
    const uint64_t slot_hash = crdt::HashSlot(slot.node_id, slot.incarnation);
    for (int64_t k = from; k <= c.newest_bucket(); ++k) {
      uint32_t n = c.count(r, k);
      if (n == 0) continue;
      // XOR of per-cell hashes: independent of row order and local indexes.
      h ^= crdt::Mix64(slot_hash ^ crdt::Mix64(static_cast<uint64_t>(k) * 31 + n) ^ key.low);
    }
  }
  return h;
}

std::vector<uint64_t> Node::Digest(size_t peer, Instant now) const {
  std::vector<uint64_t> ranges(64, 0);
  std::vector<uint32_t> targets;  // one scratch list for the whole scan
  core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry& entry) {
    if (!Settled(entry)) return;
    ring_.PreferenceList(key, config_.replicas, &targets);
    if (Holds(targets, self_index_) && Holds(targets, peer)) {
      ranges[RangeOf(key)] ^= StateHash(key, now);
    }
  });
  return ranges;
}

void Node::StartAntiEntropy(Instant now, Outbox* out) {
  if (view_.size() < 2) return;
  size_t pick = static_cast<size_t>(rng_() % (view_.size() - 1));
  if (pick >= self_index_) ++pick;
  wire::NodeMessageValue msg;
  msg.kind = Kind::kDigest;
  msg.digest = Digest(pick, now);
  msg.digest_is_reply = false;
  ++counters_.digests;
  SendNode(view_[pick].address, msg, false, now, out);
}

namespace {

// The host of an "ip:port" (or "[v6]:port") address: what a datagram's
// source keeps when a port is translated.
std::string_view HostOf(std::string_view address) {
  const size_t colon = address.rfind(':');
  return colon == std::string_view::npos ? address : address.substr(0, colon);
}

}  // namespace

void Node::HandleDigest(const PeerSender& sender, const wire::NodeMessageValue& msg, Instant now,
                        Outbox* out) {
  const std::optional<size_t> member = MemberIndex(sender);
  if (!member.has_value() || msg.digest.size() != 64) {
    ++counters_.digests_refused;
    return;
  }
  // A digest costs a scan of every key: at most one of each kind per half
  // interval from one member (it sends one per interval, and replies to ours).
  const std::string& from = sender.address;
  const int64_t now_ns = now.monotonic.count();
  if (digests_seen_.size() > 2 * view_.size() + 16) {
    boost::unordered::erase_if(
        digests_seen_, [&](const auto& kv) { return !view_by_address_.contains(kv.first); });
  }
  DigestSeen& seen = digests_seen_[from];
  int64_t& last_ns = msg.digest_is_reply ? seen.reply_ns : seen.request_ns;
  if (last_ns != INT64_MIN && now_ns - last_ns < Ms(config_.anti_entropy_interval_ms) / 2) {
    ++counters_.digests_refused;
    return;
  }
  last_ns = now_ns;
  const size_t peer = *member;
  std::vector<uint64_t> mine = Digest(peer, now);
  std::vector<bool> differs(64, false);
  bool any = false;
  for (size_t i = 0; i < 64; ++i) {
    differs[i] = mine[i] != msg.digest[i];
    any = any || differs[i];
  }
  if (any) {
    std::vector<crdt::KeyId> keys;
    std::vector<uint32_t> targets;
    core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry& entry) {
      if (!differs[RangeOf(key)] || !Settled(entry)) return;
      ring_.PreferenceList(key, config_.replicas, &targets);
      if (Holds(targets, peer)) keys.push_back(key);
    });
    SendState(from, std::move(keys), false, now, out);
  }
  if (!msg.digest_is_reply && any) {
    wire::NodeMessageValue reply;
    reply.kind = Kind::kDigest;
    reply.digest = std::move(mine);
    reply.digest_is_reply = true;
    SendNode(from, reply, false, now, out);
  }
}

void Node::HandleHandoffRequest(const PeerSender& sender, Instant now, Outbox* out) {
  // Our keys go only to an up member whose datagram came from its own host
  // (a forged request cannot aim a push at a member), once per generation of
  // it per handoff timeout (a request repeated while it waits, or forged,
  // costs nothing). Not up in our view yet: it asks again.
  const std::optional<size_t> member = MemberIndex(sender);
  if (!member.has_value() || HostOf(sender.transport_address) != HostOf(sender.address)) {
    ++counters_.handoffs_refused;
    return;
  }
  const int64_t now_ns = now.monotonic.count();
  if (handoffs_served_.size() > 2 * view_.size() + 16) {
    boost::unordered::erase_if(handoffs_served_, [&](const auto& kv) {
      return now_ns - kv.second.at_ns >= Ms(config_.handoff_timeout_ms);
    });
  }
  auto [served, first] = handoffs_served_.try_emplace(sender.id);
  if (!first && served->second.generation == sender.generation &&
      now_ns - served->second.at_ns < Ms(config_.handoff_timeout_ms)) {
    ++counters_.handoffs_refused;
    return;
  }
  served->second = HandoffServed{sender.generation, now_ns};
  ++counters_.handoffs_served;
  const std::string& from = sender.address;
  const size_t requester = *member;
  std::vector<crdt::KeyId> keys;
  std::vector<uint32_t> targets;
  core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry&) {
    ring_.PreferenceList(key, config_.replicas, &targets);
    if (Holds(targets, requester)) keys.push_back(key);
  });
  SendState(from, std::move(keys), false, now, out);
  wire::NodeMessageValue done;
  done.kind = Kind::kHandoffDone;
  SendNode(from, done, true, now, out);  // on the stream, after the state it follows
}

void Node::PushKeysForChangedTargets(const membership::Ring& old_ring, Instant now, Outbox* out) {
  boost::unordered_flat_map<std::string, std::vector<crdt::KeyId>> pushes;
  std::vector<uint32_t> before, after;
  core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry&) {
    old_ring.PreferenceList(key, config_.replicas, &before);
    ring_.PreferenceList(key, config_.replicas, &after);
    for (size_t i : after) {
      if (i == self_index_) continue;
      const std::string& id = view_[i].id;
      bool was = std::any_of(before.begin(), before.end(),
                             [&](size_t j) { return old_ring.members()[j].id == id; });
      if (!was) pushes[view_[i].address].push_back(key);
    }
  });
  for (auto& [address, keys] : pushes) SendState(address, std::move(keys), false, now, out);
}

// ---------------------------------------------------------------- timers

void Node::Tick(Instant now, Outbox* out) {
  const int64_t now_ns = now.monotonic.count();
  std::vector<membership::Outbound> swim_out;
  swim_.Tick(now, &swim_out);
  SendSwim(swim_out, now, out);
  RefreshView(now, out);
  if (now_ns >= next_clock_check_ns_) {
    UpdateClockHealth(now);
    reachable_members_ = ReachableMembers(now);
    next_clock_check_ns_ = now_ns + Ms(config_.clock_check_interval_ms);
  }
  if (now.wall.count() < last_tick_wall_ms_ - config_.limiter.max_clock_regression_ms) {
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
    if (!ring_.empty()) {
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
    StartHandoff(now, out);
  }
  last_tick_wall_ms_ = now.wall.count();
  if (warming_ && now_ns >= warming_until_ns_) {
    warming_ = false;
    handoff_asked_.clear();
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
  Flush(now, out);
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
    peer.forward_queue.clear();
    peer.reply_queue.clear();
    size_t i = 0;
    while (i < forwards.size()) {
      wire::NodeMessageValue msg;
      msg.kind = Kind::kForward;
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
  }
}

std::chrono::nanoseconds Node::NextDeadline() const {
  int64_t next = swim_.NextDeadline().count();
  // Replication wakes us only when there is something to send or resend.
  if (!replication_peers_.empty()) next = std::min(next, next_replication_ns_);
  next = std::min(next, next_anti_entropy_ns_);
  next = std::min(next, next_forward_expiry_ns_);
  if (warming_) next = std::min({next, warming_until_ns_, next_handoff_retry_ns_});
  return std::chrono::nanoseconds(next);
}

// ---------------------------------------------------------------- encoding

void Node::SendNode(const std::string& address, const wire::NodeMessageValue& msg, bool stream,
                    Instant now, Outbox* out) {
  Outbox::PeerPacket packet{address, {}, stream};
  wire::EncodeNodeMessage(wire::PeerHeader{config_.node_id, config_.gossip_address,
                                           config_.generation, now.wall.count()},
                          msg, &packet.bytes);
  counters_.peer_bytes_sent += packet.bytes.size();
  ++counters_.peer_messages_sent;
  out->peer.push_back(std::move(packet));
}

void Node::SendSwim(std::vector<membership::Outbound>& swim_out, Instant now, Outbox* out) {
  for (membership::Outbound& o : swim_out) {
    Outbox::PeerPacket packet{o.to_address, {}, o.stream};
    wire::EncodeSwim(o.msg, &packet.bytes);
    counters_.peer_bytes_sent += packet.bytes.size();
    ++counters_.peer_messages_sent;
    out->peer.push_back(std::move(packet));
  }
  swim_out.clear();
}

// ---------------------------------------------------------------- status

NodeStatus Node::Status(Instant now) const {
  NodeStatus s;
  s.node_id = config_.node_id;
  s.generation = config_.generation;
  s.owning = MayOwn();
  if (warming_) s.not_owning_reason = "warming up: waiting for handoff";
  if (!clock_ok_) {
    s.not_owning_reason = "clock offset " + std::to_string(median_offset_ms_) +
                          " ms from most peers exceeds the maximum";
  }
  if (!config_.seeds.empty() && swim_.members().size() <= 1 &&
      now.monotonic.count() - started_ns_ >= Ms(config_.join_warning_ms)) {
    s.seeds_unanswered = config_.seeds.size();
    s.join_warning = "no seed answered in " +
                     std::to_string((now.monotonic.count() - started_ns_) / 1'000'000) + " ms (";
    for (size_t i = 0; i < config_.seeds.size(); ++i) {
      s.join_warning += (i == 0 ? "" : ", ") + config_.seeds[i];
    }
    s.join_warning += "); serving alone and still trying";
  }
  s.live_keys = core_.store().size();
  s.partition_policy = std::string(PartitionPolicyName(config_.partition_policy));
  s.last_known_members = LastKnownMembers(now);
  s.limiter = core_.stats();
  s.limiter.live_keys = core_.store().size();
  s.counters = counters_;
  s.counters.co_deciders = co_deciders_.size();
  s.swim = swim_.stats();
  // Our share of the key space: the owner of 4096 fixed pseudo-random keys.
  size_t owned = 0;
  constexpr size_t kSamples = 4096;
  for (size_t i = 0; i < kSamples; ++i) {
    crdt::KeyId sample{crdt::Mix64(i * 2 + 1), crdt::Mix64(i * 2 + 2)};
    if (!ring_.empty() && ring_.OwnerIndex(sample) == self_index_) ++owned;
  }
  s.key_share = static_cast<double>(owned) / kSamples;
  for (const auto& [id, m] : swim_.members()) {
    MemberStatus ms;
    ms.id = m.id;
    ms.state = std::string(membership::StateName(m.state));
    ms.incarnation = m.incarnation;
    ms.generation = m.generation;
    ms.address = m.address;
    ms.clock_offset_ms = swim_.ClockOffsetMs(m.id);
    if (const membership::ClockEstimate* e = swim_.ClockEstimateOf(m.id)) ms.rtt_ms = e->rtt_ms;
    s.members.push_back(std::move(ms));
  }
  return s;
}

}  // namespace tally::core

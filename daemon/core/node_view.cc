// Node: the membership view (members up, in id order), the ring over it,
// a key's targets, member counts for the partition policies, and clock health.
#include <algorithm>
#include <cassert>
#include <cmath>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::Ms;

}  // namespace

void Node::RefreshView(Instant now, Outbox* out) {
  // A suspicion (or its refutation) leaves the up set, and so the view, as
  // it was, but changes whom a side can reach: the proportional and closed
  // policies must see it at once, not at the next periodic refresh (the
  // share of a side that had just suspected the other was a member too
  // large for up to clock_check_interval_ms; PartitionTest's seven-node
  // side admitted 21 of its 17 when hammered right after suspecting).
  const size_t alive_members = swim_.members().CountIn(membership::MemberState::kAlive);
  if (alive_members != alive_members_seen_) {
    alive_members_seen_ = alive_members;
    reachable_members_ = ReachableMembers(now);
  }
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
  key_share_.reset();
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
    key_share_.reset();
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
    key_share_.reset();
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
    key_share_.reset();
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

bool Node::MayOwn() const {
  // Superseded: a newer process has our node id (Swim::superseded_by()).
  return !warming_ && clock_ok_ && !swim_.superseded_by();
}

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
  // How far a strict majority of the view's members, us included, are all
  // ahead of us (0 if they are not, or if we have estimates of too few): only
  // then is ours the clock behind, and what we take from the future
  // (ApplyState) widens by that much. Us included: with one peer, half the
  // view is at our time, and a lone peer whose clock jumped ahead made us
  // take its future buckets, which the rest of the cluster refused, and the
  // replicas never converged (swarm seed 806, a partition side of two). A
  // majority of the view, not of the estimates: a node that just restarted
  // has measured one or two peers, and one peer whose clock jumped ahead
  // must not make it take that peer's future counts.
  const size_t members = view_.size() + (self_index_ < view_.size() ? 0 : 1);
  const size_t majority = members / 2 + 1;
  std::vector<double> with_self = offsets;
  with_self.insert(std::lower_bound(with_self.begin(), with_self.end(), 0.0), 0.0);
  majority_ahead_ms_ =
      with_self.size() >= majority ? std::max(0.0, with_self[with_self.size() - majority]) : 0.0;
  size_t far = static_cast<size_t>(std::count_if(offsets.begin(), offsets.end(), [&](double o) {
    return std::abs(o) > static_cast<double>(config_.max_clock_offset_ms);
  }));
  // We stop owning when we disagree with most peers: then it is our clock.
  clock_ok_ = !(far * 2 > offsets.size());
}

}  // namespace tally::core

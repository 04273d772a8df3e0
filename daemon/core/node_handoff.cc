// Node: handoff. A warming node asks members for its keys; a member serves
// such a request once, and pushes keys to members that became their targets.
#include <algorithm>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::Ms;

// The host of an "ip:port" (or "[v6]:port") address: what a datagram's
// source keeps when a port is translated.
std::string_view HostOf(std::string_view address) {
  const size_t colon = address.rfind(':');
  return colon == std::string_view::npos ? address : address.substr(0, colon);
}

}  // namespace

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
    const auto in_after = [&](const std::string& id) {
      return std::any_of(after.begin(), after.end(), [&](size_t j) { return view_[j].id == id; });
    };
    // A holder off the list (a sloppy-quorum stand-in, a former replica) may
    // hold the only copy of what a departed member decided: its replicates
    // to the list were lost (a partition) and it took its resends with it.
    // Then every member of the new list gets our copy, not just new ones,
    // or those rows would wait for anti-entropy to pair the right members
    // (about N/2 intervals in a cluster of N). Swarm seed 95044.
    const bool holder_only =
        std::none_of(after.begin(), after.end(), [&](size_t i) { return i == self_index_; });
    const bool someone_departed =
        holder_only && std::any_of(before.begin(), before.end(), [&](size_t j) {
          return !in_after(old_ring.members()[j].id);
        });
    for (size_t i : after) {
      if (i == self_index_) continue;
      const std::string& id = view_[i].id;
      bool was = std::any_of(before.begin(), before.end(),
                             [&](size_t j) { return old_ring.members()[j].id == id; });
      if (!was || someone_departed) pushes[view_[i].address].push_back(key);
    }
  });
  for (auto& [address, keys] : pushes) SendState(address, std::move(keys), false, now, out);
}

}  // namespace tally::core

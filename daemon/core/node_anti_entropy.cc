// Node: anti-entropy. Per-range digests of the keys two members both hold,
// exchanged with one random member per interval; a differing range sends
// that range's keys. A member whose key table is full says so in its
// digests (keysPaused) and exchanges no key repairs: it would refuse the keys
// it lacks, so the same ranges would differ, and be pushed both ways, every
// round for as long as the keys live. The overrides still compare.
#include <algorithm>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;
using node_internal::Ms;

}  // namespace

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

void Node::UpdateKeyRepairPause() {
  const crdt::KeyStore& store = core_.store();
  const size_t max_keys = store.options().max_keys;
  const bool near_cap = store.size() + max_keys / 64 >= max_keys;
  const uint64_t refusals = core_.stats().over_capacity + counters_.rejected_peer_state.store_full;
  const bool refused = refusals != key_refusals_seen_;
  key_refusals_seen_ = refusals;
  if (!near_cap) {
    key_repairs_paused_ = false;
  } else if (refused) {
    key_repairs_paused_ = true;
  }
}

void Node::StartAntiEntropy(Instant now, Outbox* out) {
  UpdateKeyRepairPause();  // alone too: status and the log report a full table
  if (view_.size() < 2) return;
  if (key_repairs_paused_) ++counters_.anti_entropy_paused_full;
  size_t pick = static_cast<size_t>(rng_() % (view_.size() - 1));
  if (pick >= self_index_) ++pick;
  wire::NodeMessageValue msg;
  msg.kind = Kind::kDigest;
  // Real ranges even when paused: a member older than the flag then pushes
  // only the ranges that differ, as before.
  msg.digest = Digest(pick, now);
  msg.digest_is_reply = false;
  msg.digest_keys_paused = key_repairs_paused_;
  msg.overrides_digest = overrides_.Digest();
  ++counters_.digests;
  SendNode(view_[pick].address, msg, false, now, out);
}

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
  // Either side's table full: no key repairs in this exchange, and no scan.
  // Ranges would differ mostly because one side holds keys the other lacks
  // and would refuse; deltas, their resends and handoff still flow, and
  // repairs resume once expired keys made room.
  UpdateKeyRepairPause();
  if (key_repairs_paused_) ++counters_.anti_entropy_paused_full;
  const bool skip_keys = key_repairs_paused_ || msg.digest_keys_paused;
  std::vector<uint64_t> mine;
  std::vector<bool> differs(64, false);
  bool any = false;
  if (!skip_keys) {
    mine = Digest(peer, now);
    for (size_t i = 0; i < 64; ++i) {
      differs[i] = mine[i] != msg.digest[i];
      any = any || differs[i];
    }
  }
  if (any) {
    std::vector<crdt::KeyId> keys;
    std::vector<uint32_t> targets;
    core_.store().ForEach([&](const crdt::KeyId& key, const crdt::KeyStore::Entry& entry) {
      if (!differs[RangeOf(key)] || !Settled(entry)) return;
      ring_.PreferenceList(key, config_.replicas, &targets);
      if (Holds(targets, peer)) keys.push_back(key);
    });
    counters_.anti_entropy_repairs += keys.size();
    SendState(from, std::move(keys), false, now, out);
  }
  // The runtime limit overrides: one digest for the whole map (it is small
  // and every member holds all of it); on a difference each side sends the
  // other everything it holds, and the merge keeps the later entries.
  const bool overrides_differ = msg.overrides_digest != overrides_.Digest();
  if (overrides_differ && overrides_.size() > 0) {
    SendOverrides(from, overrides_.Entries(), now, out);
  }
  if (!msg.digest_is_reply && (any || overrides_differ)) {
    wire::NodeMessageValue reply;
    reply.kind = Kind::kDigest;
    // Keys skipped: the sender's own ranges back (a member older than the
    // flag then finds none differing), and the flag.
    reply.digest = skip_keys ? msg.digest : std::move(mine);
    reply.digest_keys_paused = skip_keys;
    reply.digest_is_reply = true;
    reply.overrides_digest = overrides_.Digest();
    SendNode(from, reply, false, now, out);
  }
}

}  // namespace tally::core

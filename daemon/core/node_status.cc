// Node: the status snapshot (ownership, warnings, counters, members).
#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Ms;

}  // namespace

std::string Node::NotOwningReason() const {
  if (const auto& successor = swim_.superseded_by()) {
    return "superseded: node id " + config_.node_id + " is used by a newer process at " +
           successor->address + " (generation " + std::to_string(successor->generation) + ")";
  }
  if (!clock_ok_) {
    return "clock offset " + std::to_string(median_offset_ms_) +
           " ms from most peers exceeds the maximum";
  }
  if (warming_) return "warming up: waiting for handoff";
  return {};
}

bool Node::JoinUnanswered(Instant now) const {
  return started_ && !config_.seeds.empty() && swim_.members().size() <= 1 &&
         now.monotonic.count() - started_ns_ >= Ms(config_.join_warning_ms);
}

std::string Node::JoinWarning(Instant now) const {
  std::string text = "no seed answered in " +
                     std::to_string((now.monotonic.count() - started_ns_) / 1'000'000) + " ms (";
  for (size_t i = 0; i < config_.seeds.size(); ++i) {
    text += (i == 0 ? "" : ", ") + config_.seeds[i];
  }
  return text + "); serving alone and still trying";
}

NodeStatus Node::Status(Instant now) const {
  NodeStatus s;
  s.node_id = config_.node_id;
  s.generation = config_.generation;
  s.owning = MayOwn();
  s.overrides_live = overrides_.live();
  s.overrides_held = overrides_.size();
  s.not_owning_reason = NotOwningReason();
  if (JoinUnanswered(now)) {
    s.seeds_unanswered = config_.seeds.size();
    s.join_warning = JoinWarning(now);
  }
  s.live_keys = core_.store().size();
  s.partition_policy = std::string(PartitionPolicyName(config_.partition_policy));
  s.last_known_members = LastKnownMembers(now);
  s.limiter = limiter_stats();
  s.counters = counters_;
  s.counters.co_deciders = co_deciders_.size();
  s.counters.replicates_unacked = 0;
  s.counters.frozen_pending = 0;
  s.counters.key_table_full = key_repairs_paused_ ? 1 : 0;
  for (const auto& [address, peer] : peers_) {
    s.counters.replicates_unacked += peer.unacked.size();
    s.counters.frozen_pending += peer.frozen.size();
  }
  s.swim = swim_.stats();
  if (!key_share_) {
    // Our share of the key space: the owner of 4096 fixed pseudo-random keys.
    size_t owned = 0;
    constexpr size_t kSamples = 4096;
    for (size_t i = 0; i < kSamples; ++i) {
      crdt::KeyId sample{crdt::Mix64(i * 2 + 1), crdt::Mix64(i * 2 + 2)};
      if (!ring_.empty() && ring_.OwnerIndex(sample) == self_index_) ++owned;
    }
    key_share_ = static_cast<double>(owned) / kSamples;
  }
  s.key_share = *key_share_;
  for (const auto& [id, m] : swim_.members()) {
    MemberStatus ms;
    ms.id = m.id;
    ms.state = std::string(membership::StateName(m.state));
    ms.incarnation = m.incarnation;
    ms.generation = m.generation;
    ms.address = m.address;
    ms.clock_offset_ms = swim_.ClockOffsetMs(m.id);
    if (const membership::ClockEstimate* e = swim_.ClockEstimateOf(m.id)) ms.rtt_ms = e->rtt_ms;
    if (const std::string* digest = swim_.RulesDigestOf(m.id)) ms.rules_digest = *digest;
    s.members.push_back(std::move(ms));
  }
  return s;
}

LimiterStats Node::limiter_stats() const {
  LimiterStats stats = core_.stats();
  stats.live_keys = core_.store().size();
  return stats;
}

}  // namespace tally::core

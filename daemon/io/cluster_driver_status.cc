// ClusterDriver: the status report (the Node's status and counters, the
// driver's transport, peer authentication and snapshot counters).
#include <algorithm>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/message_processor.h"

namespace tally::io {

wire::StatusReport ClusterDriver::Impl::StatusLocked(Instant now) {
  core::NodeStatus s = node->Status(now);
  wire::StatusReport r;
  r.node_id = s.node_id;
  r.generation = s.generation;
  r.cluster = true;
  r.owning = s.owning;
  r.not_owning_reason = s.not_owning_reason;
  r.key_share = s.key_share;
  r.live_keys = s.live_keys;
  r.partition_policy = s.partition_policy;
  r.last_known_members = s.last_known_members;
  r.gossip_address = options.node.gossip_address;
  r.uptime_ms =
      static_cast<uint64_t>(std::max<int64_t>(0, now.monotonic.count() - started_ns) / 1'000'000);
  for (const core::MemberStatus& m : s.members) {
    wire::MemberReport& w = r.members.emplace_back();
    w.id = m.id;
    w.state = m.state;
    w.incarnation = m.incarnation;
    w.generation = m.generation;
    w.address = m.address;
    if (m.clock_offset_ms) w.clock_offset_ms = *m.clock_offset_ms;
    if (m.rtt_ms) w.rtt_ms = *m.rtt_ms;
    if (m.rules_digest) w.rules_digest = RulesDigestText(*m.rules_digest);
  }
  std::sort(r.members.begin(), r.members.end(),
            [](const wire::MemberReport& a, const wire::MemberReport& b) { return a.id < b.id; });
  AppendLimiterCounters(s.limiter, &r.counters);
  const core::NodeStatus::Counters& c = s.counters;
  auto add = [&r](const char* name, uint64_t value) { r.counters.emplace_back(name, value); };
  add("seeds_unanswered", s.seeds_unanswered);
  add("forwarded", c.forwarded);
  add("forward_timeouts", c.forward_timeouts);
  add("forward_rtt_samples", c.forward_rtt_samples);
  add("relayed", c.relayed);
  add("decided_for_peers", c.decided_for_peers);
  add("routed_past_list", c.routed_past_list);
  add("co_deciders", c.co_deciders);
  add("clock_resyncs", c.clock_resyncs);
  add("wall_steps", c.wall_steps);
  add("replicate_sent", c.replicate_sent);
  add("replicate_received", c.replicate_received);
  add("state_pushes", c.state_pushes);
  add("frozen_pushes", c.frozen_pushes);
  add("frozen_keys_dropped", c.frozen_keys_dropped);
  add("frozen_pending", c.frozen_pending);
  add("digests", c.digests);
  add("malformed_peer", c.malformed_peer);
  add("malformed_client", c.malformed_client);
  add("peer_bytes_sent", c.peer_bytes_sent);
  add("peer_messages_sent", c.peer_messages_sent);
  for (size_t k = 0; k < core::kPeerMessageKindNames.size(); ++k) {
    const std::string kind = core::kPeerMessageKindNames[k];
    r.counters.emplace_back("peer_sent_messages_" + kind, c.sent_by_kind[k].messages);
    r.counters.emplace_back("peer_sent_bytes_" + kind, c.sent_by_kind[k].bytes);
    r.counters.emplace_back("peer_received_messages_" + kind, c.received_by_kind[k].messages);
    r.counters.emplace_back("peer_received_bytes_" + kind, c.received_by_kind[k].bytes);
  }
  add("replicate_bytes_sent", c.replicate_bytes_sent);
  add("replicate_delta_cells_sent", c.delta_cells_sent);
  add("replicate_acks", c.replicate_acks);
  add("replicate_ack_us_total", c.replicate_ack_ns / 1000);
  add("replicates_unacked", c.replicates_unacked);
  add("anti_entropy_repairs", c.anti_entropy_repairs);
  add("anti_entropy_paused_full", c.anti_entropy_paused_full);
  add("key_table_full", c.key_table_full);
  const core::NodeStatus::Counters::RejectedPeerState& rej = c.rejected_peer_state;
  add("rejected_peer_state", rej.total());
  add("rejected_peer_state_non_member", rej.non_member);
  add("rejected_peer_state_unknown_slot", rej.unknown_slot);
  add("rejected_peer_state_slot_table_full", rej.slot_table_full);
  add("rejected_peer_state_geometry", rej.geometry);
  add("rejected_peer_state_geometry_mismatch", rej.geometry_mismatch);
  add("rejected_peer_state_future", rej.future);
  add("rejected_peer_state_expired", rej.expired);
  add("rejected_peer_state_count", rej.count);
  add("rejected_peer_state_rows", rej.rows);
  add("rejected_peer_state_store_full", rej.store_full);
  add("handoffs_served", c.handoffs_served);
  add("handoffs_refused", c.handoffs_refused);
  add("handoff_reasks", c.handoff_reasks);
  add("hints_queued", c.hints_queued);
  add("digests_refused", c.digests_refused);
  add("forward_results_refused", c.forward_results_refused);
  // Runtime limit overrides: in force, held (tombstones included), and
  // what happened to writes (docs/OPERATIONS.md, "Change limits at runtime").
  add("overrides_live", s.overrides_live);
  add("overrides_held", s.overrides_held);
  add("overrides_written", c.overrides_written);
  add("overrides_sent", c.overrides_sent);
  add("overrides_applied", c.overrides_applied);
  add("overrides_stale", c.overrides_stale);
  add("overrides_refused", c.overrides_refused);
  add("overrides_used", c.overrides_used);
  // Only with adaptive rules in force: status answers (and the padding a
  // query needs) stay as they were without them.
  if (node->adaptive().rule_count() > 0) {
    add("adaptive_sums_sent", c.adaptive_sums_sent);
    add("adaptive_sums_received", c.adaptive_sums_received);
    add("adaptive_sums_refused", c.adaptive_sums_refused);
    AppendAdaptiveCounters(node->adaptive().counters(), c.adaptive_limits_written, &r.counters);
  }
  // Membership input refused, and another process under our node id.
  add("swim_invalid", s.swim.invalid);
  add("swim_foreign_self", s.swim.foreign_self);
  add("swim_name_checks", s.swim.name_checks);
  add("swim_unrefutable_rumors", s.swim.unrefutable_rumors);
  add("swim_address_changes_refused", s.swim.address_changes_refused);
  add("swim_refutations", s.swim.refutations);
  // The failure detector at work: probes, suspicions (this node's own and
  // all timers started), deaths this node declared, and the false ones.
  add("swim_probes", s.swim.probes);
  add("swim_probe_failures", s.swim.probe_failures);
  add("swim_suspicions_raised", s.swim.suspicions_raised);
  add("swim_suspicions_started", s.swim.suspicions_started);
  add("swim_deaths_declared", s.swim.deaths_declared);
  add("swim_suspects_refuted", s.swim.suspects_refuted);
  add("swim_dead_revived", s.swim.dead_revived);
  add("swim_own_stalls", s.swim.own_stalls);
  auto load = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  add("gossip_datagrams_in", load(gossip_datagrams_in));
  add("gossip_datagrams_out", load(gossip_datagrams_out));
  add("gossip_bytes_in", load(gossip_bytes_in));
  add("gossip_bytes_out", load(gossip_bytes_out));
  add("gossip_send_errors", load(gossip_send_errors));
  add("stream_frames_in", load(stream_frames_in));
  add("stream_bytes_in", load(stream_bytes_in));
  add("stream_frames_out", load(stream_frames_out));
  add("stream_bytes_out", load(stream_bytes_out));
  add("stream_frames_dropped", load(stream_frames_dropped));
  add("stream_connects", load(stream_connects));
  add("stream_errors", load(stream_errors));
  add("stream_inbound_refused", load(inbound_refused));
  add("peer_bad_address", load(peer_bad_address));
  add("timers_lost", load(timers_lost));
  if (!dns_seeds.empty()) {
    add("dns_resolutions", load(dns_resolutions));
    add("dns_failures", load(dns_failures));
  }
  add("replies_pending", tokens.size());
  add("replies_expired", load(replies_expired));
  peer_auth->AppendStatus(&r);
  if (!options.state_dir.empty()) {
    std::lock_guard<std::mutex> stats_lock(snapshot_stats_mu);
    AppendSnapshotCounters(snapshot_stats, &r.counters);
  }
  AppendTransportCounters(*counters, &r.counters);
  return r;
}

}  // namespace tally::io

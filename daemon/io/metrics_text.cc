#include "daemon/io/metrics_text.h"

#include <array>
#include <charconv>
#include <cmath>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>

#include "daemon/core/peer_kinds.h"

namespace tally::io {

std::string MetricsWriter::EscapeLabelValue(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsWriter::EscapeHelp(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (char c : help) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string MetricsWriter::FormatValue(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  std::array<char, 64> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  return ec == std::errc() ? std::string(buffer.data(), end) : "NaN";
}

void MetricsWriter::Family(std::string_view name, std::string_view type, std::string_view help) {
  out_ += "# HELP ";
  out_ += name;
  out_ += ' ';
  out_ += EscapeHelp(help);
  out_ += "\n# TYPE ";
  out_ += name;
  out_ += ' ';
  out_ += type;
  out_ += '\n';
}

void MetricsWriter::Line(std::string_view name, std::span<const Label> labels,
                         std::string_view value) {
  out_ += name;
  if (!labels.empty()) {
    out_ += '{';
    bool first = true;
    for (const Label& l : labels) {
      if (!first) out_ += ',';
      first = false;
      out_ += l.first;
      out_ += "=\"";
      out_ += EscapeLabelValue(l.second);
      out_ += '"';
    }
    out_ += '}';
  }
  out_ += ' ';
  out_ += value;
  out_ += '\n';
}

void MetricsWriter::Sample(std::string_view name, std::span<const Label> labels, double value) {
  Line(name, labels, FormatValue(value));
}

void MetricsWriter::Sample(std::string_view name, std::span<const Label> labels, uint64_t value) {
  Line(name, labels, std::to_string(value));
}

void MetricsWriter::Histogram(std::string_view name, std::span<const Label> labels,
                              const HistogramSnapshot& h) {
  std::vector<Label> with_le(labels.begin(), labels.end());
  with_le.emplace_back("le", "");
  const std::string bucket = std::string(name) + "_bucket";
  uint64_t cumulative = 0;
  for (size_t i = 0; i < kLatencyBuckets; ++i) {
    cumulative += h.counts[i];
    const std::string le = i < kLatencyBoundsNs.size()
                               ? FormatValue(static_cast<double>(kLatencyBoundsNs[i]) / 1e9)
                               : std::string("+Inf");
    with_le.back().second = le;
    Sample(bucket, with_le, cumulative);
  }
  Sample(std::string(name) + "_sum", labels, static_cast<double>(h.sum_ns) / 1e9);
  Sample(std::string(name) + "_count", labels, cumulative);
}

namespace {

// The status report's counters by name (absent: nullopt).
class StatusCounters {
 public:
  explicit StatusCounters(const wire::StatusReport& s) : s_(s) {}
  std::optional<uint64_t> Get(std::string_view name) const {
    for (const auto& [n, v] : s_.counters) {
      if (n == name) return v;
    }
    return std::nullopt;
  }
  uint64_t Or0(std::string_view name) const { return Get(name).value_or(0); }

 private:
  const wire::StatusReport& s_;
};

struct Simple {
  const char* metric;
  const char* counter;  // the status report's name
  const char* help;
};

// One family per entry, one unlabelled sample, when the report has it.
void WriteSimple(MetricsWriter& w, const StatusCounters& c, const char* type,
                 std::initializer_list<Simple> list) {
  for (const Simple& s : list) {
    const std::optional<uint64_t> value = c.Get(s.counter);
    if (!value) continue;
    w.Family(s.metric, type, s.help);
    w.Sample(s.metric, *value);
  }
}

// One family with a label whose values map to status counters.
void WriteLabelled(MetricsWriter& w, const StatusCounters& c, const char* metric, const char* type,
                   const char* help, const char* label,
                   std::initializer_list<std::pair<const char*, const char*>> values) {
  bool announced = false;
  for (const auto& [label_value, counter] : values) {
    const std::optional<uint64_t> value = c.Get(counter);
    if (!value) continue;
    if (!announced) w.Family(metric, type, help);
    announced = true;
    const Label l[] = {{label, label_value}};
    w.Sample(metric, l, *value);
  }
}

void WriteCluster(MetricsWriter& w, const wire::StatusReport& s, const StatusCounters& c) {
  w.Family("tally_cluster_members", "gauge", "Members this node knows, by SWIM state.");
  for (const char* state : {"alive", "suspect", "dead", "left"}) {
    uint64_t n = 0;
    for (const wire::MemberReport& m : s.members) n += m.state == state ? 1 : 0;
    const Label l[] = {{"state", state}};
    w.Sample("tally_cluster_members", l, n);
  }
  w.Family("tally_cluster_members_rules_differ", "gauge",
           "Up members whose rules digest differs from this node's, or is not known yet "
           "(0 while this node has no rules doors).");
  w.Sample("tally_cluster_members_rules_differ",
           static_cast<uint64_t>(wire::MembersWithOtherRules(s).size()));
  w.Family("tally_cluster_last_known_members", "gauge",
           "Members of the last known membership (dead ones for partition_memory).");
  w.Sample("tally_cluster_last_known_members", s.last_known_members);
  w.Family("tally_cluster_owning", "gauge",
           "1 while this node decides the keys it owns; 0 while warming up or when its clock is "
           "off.");
  w.Sample("tally_cluster_owning", uint64_t{s.owning ? 1u : 0u});
  w.Family("tally_cluster_key_share", "gauge", "Fraction of the key space this node owns.");
  w.Sample("tally_cluster_key_share", s.key_share);
  w.Family("tally_cluster_join_seeds_unanswered", "gauge",
           "Seeds that have not answered while the join warning is on (0: joined or no seeds).");
  w.Sample("tally_cluster_join_seeds_unanswered", c.Or0("seeds_unanswered"));

  w.Family("tally_cluster_member_clock_offset_seconds", "gauge",
           "Estimated wall clock offset of a peer relative to this node.");
  for (const wire::MemberReport& m : s.members) {
    if (std::isnan(m.clock_offset_ms) || m.id == s.node_id) continue;
    const Label l[] = {{"peer", m.id}};
    w.Sample("tally_cluster_member_clock_offset_seconds", l, m.clock_offset_ms / 1000.0);
  }
  w.Family("tally_cluster_member_rtt_seconds", "gauge", "Smoothed round-trip time to a peer.");
  for (const wire::MemberReport& m : s.members) {
    if (std::isnan(m.rtt_ms) || m.id == s.node_id) continue;
    const Label l[] = {{"peer", m.id}};
    w.Sample("tally_cluster_member_rtt_seconds", l, m.rtt_ms / 1000.0);
  }

  WriteSimple(
      w, c, "counter",
      {
          {"tally_cluster_forwards_total", "forwarded", "Checks forwarded to their owner."},
          {"tally_cluster_forward_timeouts_total", "forward_timeouts",
           "Forwarded checks whose owner did not answer in time."},
          {"tally_cluster_forward_rtt_samples_total", "forward_rtt_samples",
           "Forward round trips measured (replies, late ones included); they set each "
           "peer's forward timeout."},
          {"tally_cluster_relays_total", "relayed", "Checks relayed on to another member."},
          {"tally_cluster_decided_for_peers_total", "decided_for_peers",
           "Checks decided here for a member that forwarded them."},
          {"tally_cluster_routed_past_list_total", "routed_past_list",
           "Checks routed past their preference list (no member of it answered)."},
          {"tally_cluster_clock_resyncs_total", "clock_resyncs",
           "Handoffs started because this node's wall clock stepped back."},
          {"tally_cluster_wall_clock_steps_total", "wall_steps",
           "Jumps of this node's wall clock against its monotonic clock (20 ms or more)."},
          {"tally_cluster_replication_messages_sent_total", "replicate_sent",
           "Replication messages sent to replicas."},
          {"tally_cluster_replication_messages_received_total", "replicate_received",
           "Replication messages received from deciders."},
          {"tally_cluster_state_pushes_total", "state_pushes",
           "Bulk state pushes (handoff, anti-entropy repairs, new list members)."},
          {"tally_cluster_frozen_pushes_total", "frozen_pushes",
           "State pushes of what peers were owed when the wall clock stepped forward, "
           "sent from the copy taken then."},
          {"tally_cluster_frozen_keys_dropped_total", "frozen_keys_dropped",
           "Keys left out of those copies (at most 64 messages per peer)."},
          {"tally_cluster_anti_entropy_digests_total", "digests", "Anti-entropy digests handled."},
          {"tally_cluster_anti_entropy_digests_refused_total", "digests_refused",
           "Anti-entropy digests ignored (not from an up member, or too frequent)."},
          {"tally_cluster_handoffs_served_total", "handoffs_served",
           "Handoff requests answered with this node's keys."},
          {"tally_cluster_handoffs_refused_total", "handoffs_refused", "Handoff requests refused."},
          {"tally_cluster_handoff_reasks_total", "handoff_reasks",
           "Handoff requests sent again after a warm-up to members that had not answered."},
          {"tally_cluster_hints_queued_total", "hints_queued",
           "Keys queued for a push to their list: by a holder off the list (hinted handoff), "
           "for a decider off the list, or on getting this node's own hits back."},
          {"tally_cluster_forward_results_refused_total", "forward_results_refused",
           "Forward replies from a peer the forward was not sent to."},
          {"tally_cluster_malformed_peer_messages_total", "malformed_peer",
           "Peer messages that could not be decoded."},
          {"tally_cluster_peer_sent_bytes_total", "peer_bytes_sent",
           "Bytes of peer messages this node's core sent."},
          {"tally_cluster_peer_sent_messages_total", "peer_messages_sent",
           "Peer messages this node's core sent."},
          {"tally_cluster_stream_frames_dropped_total", "stream_frames_dropped",
           "Peer stream frames dropped (queue full or connection error)."},
          {"tally_cluster_stream_errors_total", "stream_errors", "Peer stream connection errors."},
          {"tally_cluster_stream_connects_total", "stream_connects",
           "Outgoing peer stream connections made."},
          {"tally_cluster_gossip_send_errors_total", "gossip_send_errors",
           "Gossip datagrams the kernel refused."},
          {"tally_cluster_peer_bad_address_total", "peer_bad_address",
           "Peer packets to or from an address that could not be used."},
          {"tally_cluster_timers_lost_total", "timers_lost",
           "Node timers found 50 ms past due without firing and armed again."},
          {"tally_cluster_replies_expired_total", "replies_expired",
           "Client replies dropped unanswered after the reply expiry."},
          {"tally_cluster_swim_refutations_total", "swim_refutations",
           "Suspicions of this node it refuted."},
          {"tally_cluster_swim_invalid_total", "swim_invalid", "Membership input refused."},
          {"tally_cluster_swim_foreign_self_total", "swim_foreign_self",
           "Rumors of another process under this node's id."},
          {"tally_cluster_swim_name_checks_total", "swim_name_checks",
           "Pings to a newer process rumored to use this node's id."},
          {"tally_cluster_probes_total", "swim_probes", "Failure-detector probes sent."},
          {"tally_cluster_probe_failures_total", "swim_probe_failures",
           "Probes unanswered, directly and through helpers, in time."},
          {"tally_cluster_suspicions_raised_total", "swim_suspicions_raised",
           "Members this node suspected after its own failed probes."},
          {"tally_cluster_suspicions_total", "swim_suspicions_started",
           "Suspicion timers started, by this node's probes or by rumors."},
          {"tally_cluster_deaths_declared_total", "swim_deaths_declared",
           "Members this node declared dead (a suspicion timer expired)."},
          {"tally_cluster_false_suspicions_total", "swim_suspects_refuted",
           "Suspected members that came back alive (the same process)."},
          {"tally_cluster_false_deaths_total", "swim_dead_revived",
           "Members held dead that refuted it (the same process)."},
          {"tally_cluster_own_stalls_total", "swim_own_stalls",
           "Times this node was not run for longer than a probe interval (its suspicions wait)."},
          {"tally_snapshot_writes_total", "snapshot_writes", "Snapshots of the counts written."},
          {"tally_snapshot_write_errors_total", "snapshot_write_errors",
           "Snapshots that could not be written."},
          {"tally_cluster_dns_resolutions_total", "dns_resolutions",
           "Resolutions of --join dns: names."},
          {"tally_cluster_dns_failures_total", "dns_failures",
           "Failed resolutions of --join dns: names."},
      });
  WriteSimple(
      w, c, "gauge",
      {
          {"tally_cluster_co_deciders", "co_deciders", "Keys with a co-decider now."},
          {"tally_cluster_replies_pending", "replies_pending",
           "Client replies waiting for the cluster."},
          {"tally_snapshot_last_bytes", "snapshot_last_bytes",
           "Size of the last snapshot written."},
          {"tally_snapshot_last_keys", "snapshot_last_keys", "Keys in the last snapshot written."},
          {"tally_snapshot_last_overrides", "snapshot_last_overrides",
           "Runtime limit override entries (removals included) in the last snapshot written."},
      });
  const char* in_out_help[][3] = {
      {"tally_cluster_gossip_datagrams_total", "gossip_datagrams_", "Gossip datagrams."},
      {"tally_cluster_gossip_bytes_total", "gossip_bytes_", "Gossip datagram bytes."},
      {"tally_cluster_stream_frames_total", "stream_frames_", "Peer stream frames."},
      {"tally_cluster_stream_bytes_total", "stream_bytes_", "Peer stream bytes."},
  };
  for (const auto& [metric, prefix, help] : in_out_help) {
    const std::string in = std::string(prefix) + "in", out = std::string(prefix) + "out";
    WriteLabelled(w, c, metric, "counter", help, "direction",
                  {{"in", in.c_str()}, {"out", out.c_str()}});
  }
  // Peer traffic by message kind, both ways (what the core sent and decoded).
  for (const char* what : {"messages", "bytes"}) {
    const std::string metric = std::string("tally_cluster_peer_") + what + "_by_kind_total";
    bool announced = false;
    for (const auto& [direction, label] : {std::pair{"sent", "out"}, std::pair{"received", "in"}}) {
      for (const char* kind : core::kPeerMessageKindNames) {
        const std::optional<uint64_t> value =
            c.Get(std::string("peer_") + direction + "_" + what + "_" + kind);
        if (!value) continue;
        if (!announced) {
          w.Family(metric, "counter",
                   std::string("Peer ") + what +
                       " by message kind (swim, forward, replicate, ...) and direction.");
          announced = true;
        }
        const Label l[] = {{"direction", label}, {"kind", kind}};
        w.Sample(metric, l, *value);
      }
    }
  }
  WriteSimple(w, c, "counter",
              {{"tally_cluster_replication_bytes_sent_total", "replicate_bytes_sent",
                "Bytes of replication messages (whole states and deltas) sent to replicas."},
               {"tally_cluster_replication_delta_cells_sent_total", "replicate_delta_cells_sent",
                "Counter cells sent in replication deltas (40 bytes each on the wire)."},
               {"tally_cluster_anti_entropy_repairs_total", "anti_entropy_repairs",
                "Keys pushed to a member because its anti-entropy digest of them differed."},
               {"tally_cluster_anti_entropy_paused_full_total", "anti_entropy_paused_full",
                "Anti-entropy exchanges (rounds started, digests handled) without key repairs "
                "because this node's key table is full."}});
  WriteSimple(w, c, "gauge",
              {{"tally_cluster_replicates_unacked", "replicates_unacked",
                "Replication messages and state pushes sent and not yet acknowledged."},
               {"tally_cluster_frozen_pending", "frozen_pending",
                "Copies of what peers were owed at a forward wall clock step, not yet "
                "acknowledged."},
               {"tally_cluster_key_table_full", "key_table_full",
                "1 while key repairs are paused: the key table refused keys within 1/64 of "
                "--max-keys, and has not dropped below that margin since."}});
  if (const std::optional<uint64_t> acks = c.Get("replicate_acks")) {
    const char* metric = "tally_cluster_replication_ack_delay_seconds";
    w.Family(metric, "summary",
             "From sending a replication message to its acknowledgement: the replication lag, "
             "less at most one replication interval of batching.");
    w.Sample(std::string(metric) + "_sum",
             static_cast<double>(c.Or0("replicate_ack_us_total")) / 1e6);
    w.Sample(std::string(metric) + "_count", *acks);
  }
  WriteLabelled(w, c, "tally_cluster_rejected_peer_state_total", "counter",
                "Peer state dropped before it was merged, by reason (units: messages, rows or "
                "counters, see docs/DESIGN.md).",
                "reason",
                {{"non_member", "rejected_peer_state_non_member"},
                 {"unknown_slot", "rejected_peer_state_unknown_slot"},
                 {"slot_table_full", "rejected_peer_state_slot_table_full"},
                 {"geometry", "rejected_peer_state_geometry"},
                 {"geometry_mismatch", "rejected_peer_state_geometry_mismatch"},
                 {"future", "rejected_peer_state_future"},
                 {"expired", "rejected_peer_state_expired"},
                 {"count", "rejected_peer_state_count"},
                 {"rows", "rejected_peer_state_rows"},
                 {"store_full", "rejected_peer_state_store_full"}});
  WriteLabelled(w, c, "tally_cluster_peer_rejected_packets_total", "counter",
                "Peer packets dropped by peer authentication (--keyring), by reason.", "reason",
                {{"unsealed", "peer_rejected_unsealed"},
                 {"wrong_cluster", "peer_rejected_wrong_cluster"},
                 {"unknown_key", "peer_rejected_unknown_key"},
                 {"stale", "peer_rejected_stale"},
                 {"bad_auth", "peer_rejected_bad_auth"},
                 {"replayed", "peer_rejected_replayed"},
                 {"replay_memory_full", "peer_rejected_replay_memory_full"}});
  WriteSimple(w, c, "counter",
              {{"tally_keyring_reloads_total", "keyring_reloads", "Keyring files installed."},
               {"tally_keyring_reload_failures_total", "keyring_reload_failures",
                "Keyring reloads that failed (the old keys stay)."}});
}

}  // namespace

std::string RenderMetrics(const MetricsInput& in) {
  MetricsWriter w;
  const wire::StatusReport& s = in.status;
  const StatusCounters c(s);

  w.Family("tally_node_info", "gauge", "Constant 1, labelled with this node's identity.");
  {
    const Label l[] = {{"node_id", s.node_id}, {"mode", s.cluster ? "cluster" : "single"}};
    w.Sample("tally_node_info", l, uint64_t{1});
  }

  w.Family("tally_checks_total", "counter", "Checks answered, by door and decision.");
  for (size_t door = 0; door < kDoorCount; ++door) {
    for (size_t d = 0; d < kDecisionCount; ++d) {
      const Label l[] = {{"door", kDoorNames[door]}, {"decision", kDecisionNames[d]}};
      w.Sample("tally_checks_total", l, in.doors.checks[door][d]);
    }
  }
  w.Family("tally_check_duration_seconds", "histogram",
           "Time to decide one message (Cap'n Proto doors, from receipt; in cluster mode to the "
           "reply, forwarding included) or request (gRPC, HTTP), by door.");
  for (size_t door = 0; door < kDoorCount; ++door) {
    const Label l[] = {{"door", kDoorNames[door]}};
    w.Histogram("tally_check_duration_seconds", l, in.doors.latency[door]);
  }

  WriteLabelled(w, c, "tally_limiter_decisions_total", "counter",
                "Checks decided by this node's limiter, every door and mode, by decision.",
                "decision",
                {{"allowed", "allowed"},
                 {"denied", "denied"},
                 {"invalid", "invalid"},
                 {"over_capacity", "over_capacity"}});
  WriteSimple(w, c, "counter",
              {
                  {"tally_dedup_hits_total", "dedup_hits",
                   "Retried checks answered from the deduplication cache."},
                  {"tally_keys_reclaimed_total", "keys_reclaimed", "Expired keys reclaimed."},
                  {"tally_clock_steps_back_total", "clock_steps_back",
                   "Wall clock steps back larger than the core clamps."},
                  {"tally_geometry_repairs_total", "geometry_repairs",
                   "Keys restarted because a peer had shaped them for another window."},
                  {"tally_messages_received_total", "datagrams_in",
                   "Client messages received on the Cap'n Proto doors."},
                  {"tally_messages_sent_total", "datagrams_out",
                   "Replies handed to the kernel on the Cap'n Proto doors."},
                  {"tally_malformed_messages_total", "malformed",
                   "Undecodable, oversized or misdirected client messages."},
                  {"tally_send_errors_total", "send_errors", "Replies that could not be sent."},
                  {"tally_queries_padding_required_total", "queries_padding_required",
                   "Status and owner queries on a datagram door asked to come again padded "
                   "(a reply is at most 3x its datagram)."},
              });
  WriteLabelled(w, c, "tally_accept_fd_exhausted_total", "counter",
                "Accepts that failed for want of a file descriptor (EMFILE, ENFILE), by door; "
                "the door backs off up to 1 s and accepts again once descriptors are free.",
                "door",
                {{"seqpacket", "accept_fd_exhausted_seqpacket"},
                 {"peer", "accept_fd_exhausted_peer"},
                 {"http", "accept_fd_exhausted_http"}});
  w.Family("tally_live_keys", "gauge", "Keys held now.");
  w.Sample("tally_live_keys", s.live_keys);
  w.Family("tally_key_capacity", "gauge", "Most keys this node holds (--max-keys).");
  w.Sample("tally_key_capacity", in.key_capacity);

  // Runtime limit overrides (`tally limit`; docs/OPERATIONS.md).
  WriteLabelled(w, c, "tally_limit_overrides", "gauge",
                "Runtime limit overrides this node holds: in force, and every entry (removals "
                "included, at most 4096).",
                "state", {{"live", "overrides_live"}, {"held", "overrides_held"}});
  WriteLabelled(w, c, "tally_limit_override_writes_total", "counter",
                "Override entries by origin and outcome: written here, sent to members, and "
                "received from members applied, stale (already held or older) or refused.",
                "result",
                {{"written", "overrides_written"},
                 {"sent", "overrides_sent"},
                 {"applied", "overrides_applied"},
                 {"stale", "overrides_stale"},
                 {"refused", "overrides_refused"}});
  // Load-adaptive limits (docs/OPERATIONS.md): reports taken here, the law's
  // steps of the rules this node owns, the limits it published, and in a
  // cluster the report sums exchanged with rules' owners.
  WriteLabelled(w, c, "tally_adaptive_reports_total", "counter",
                "Backend signal reports of adaptive rules taken here: accepted, for no adaptive "
                "rule in force here, or out of the signal's range.",
                "result",
                {{"accepted", "adaptive_reports_accepted"},
                 {"unknown_rule", "adaptive_reports_unknown"},
                 {"invalid", "adaptive_reports_invalid"}});
  WriteLabelled(w, c, "tally_adaptive_steps_total", "counter",
                "Control law steps of the adaptive rules this node owns, by what they did.", "step",
                {{"decreased", "adaptive_steps_decreased"},
                 {"increased", "adaptive_steps_increased"},
                 {"held", "adaptive_steps_held"}});
  WriteLabelled(w, c, "tally_adaptive_report_sums_total", "counter",
                "Per-rule sums of reports sent to rules' owners, received from members, and "
                "refused (not from a member, unknown rule, or out of range).",
                "result",
                {{"sent", "adaptive_sums_sent"},
                 {"received", "adaptive_sums_received"},
                 {"refused", "adaptive_sums_refused"}});
  WriteSimple(w, c, "counter",
              {{"tally_adaptive_limit_writes_total", "adaptive_limits_written",
                "Adaptive limits this node's controllers published (one per change)."},
               {"tally_adaptive_adoptions_total", "adaptive_adoptions",
                "Times an owned controller took up a limit another member published (after a "
                "partition healed)."}});
  WriteSimple(w, c, "counter",
              {{"tally_limit_override_checks_total", "overrides_used",
                "Checks entering here whose limit an explicit override replaced."},
               // A single node's file of overrides in --state-dir (cluster members
               // save them in their snapshots).
               {"tally_limit_override_saves_total", "overrides_saves",
                "Writes of this single node's overrides file (one per change)."},
               {"tally_limit_override_save_errors_total", "overrides_save_errors",
                "Changes applied but not saved to the overrides file (lost at a restart unless "
                "a later save succeeds)."}});

  if (s.cluster) WriteCluster(w, s, c);

  if (in.grpc_listener_restarts) {
    w.Family("tally_grpc_listener_restarts_total", "counter",
             "gRPC servers rebuilt because the listener stopped accepting new connections.");
    w.Sample("tally_grpc_listener_restarts_total", *in.grpc_listener_restarts);
  }

  if (in.rules) {
    const RulesMetrics& r = *in.rules;
    w.Family("tally_rules_reloads_total", "counter", "Rule reloads that put new rules in force.");
    w.Sample("tally_rules_reloads_total", r.reloads);
    w.Family("tally_rules_reload_failures_total", "counter",
             "Rule reloads rejected (the previous rules stay in force).");
    w.Sample("tally_rules_reload_failures_total", r.reload_failures);
    w.Family("tally_rules_last_reload_success", "gauge",
             "1 if the last load or reload of the rules succeeded.");
    w.Sample("tally_rules_last_reload_success", uint64_t{r.last_reload_ok ? 1u : 0u});
    struct PerRule {
      const char* metric;
      const char* help;
      uint64_t RuleMetrics::*field;
    };
    const PerRule per_rule[] = {
        {"tally_rule_hits_total", "Hits asked of a rule's limit.", &RuleMetrics::hits},
        {"tally_rule_over_limit_hits_total", "Hits a rule's limit denied (not in shadow mode).",
         &RuleMetrics::over_limit},
        {"tally_rule_near_limit_hits_total",
         "Hits admitted with 80% or more of a rule's limit used.", &RuleMetrics::near_limit},
        {"tally_rule_shadow_mode_hits_total",
         "Hits a rule's limit would have denied, answered OK in shadow mode.",
         &RuleMetrics::shadow_mode},
    };
    for (const PerRule& p : per_rule) {
      w.Family(p.metric, "counter", p.help);
      for (const RuleMetrics& m : r.rules) {
        const Label l[] = {{"rule", m.rule}, {"name", m.name}};
        w.Sample(p.metric, l, m.*(p.field));
      }
    }
    if (!r.adaptive.empty()) {
      w.Family("tally_adaptive_limit", "gauge",
               "An adaptive rule's limit in force here (requests per its unit): the one its "
               "controller published, else its requests_per_unit.");
      for (const AdaptiveLimitMetric& a : r.adaptive) {
        const Label l[] = {{"domain", a.domain}, {"name", a.name}};
        w.Sample("tally_adaptive_limit", l, a.limit);
      }
    }
  }

  if (in.process) {
    const ProcessStats& p = *in.process;
    w.Family("process_cpu_seconds_total", "counter", "User and system CPU time spent.");
    w.Sample("process_cpu_seconds_total", p.cpu_seconds);
    w.Family("process_resident_memory_bytes", "gauge", "Resident memory size.");
    w.Sample("process_resident_memory_bytes", p.resident_memory_bytes);
    w.Family("process_virtual_memory_bytes", "gauge", "Virtual memory size.");
    w.Sample("process_virtual_memory_bytes", p.virtual_memory_bytes);
    w.Family("process_open_fds", "gauge", "Open file descriptors.");
    w.Sample("process_open_fds", p.open_fds);
    if (p.max_fds != 0) {
      w.Family("process_max_fds", "gauge", "Most open file descriptors allowed.");
      w.Sample("process_max_fds", p.max_fds);
    }
    w.Family("process_start_time_seconds", "gauge", "Start time since the Unix epoch.");
    w.Sample("process_start_time_seconds", p.start_time_seconds);
  }
  return w.Take();
}

}  // namespace tally::io

// Node: one tally cluster member as a sans-IO state machine.
//
// It composes the counter store (LimiterCore), SWIM membership (Swim), the
// consistent-hash ring (Ring), routing with forwarding, replication of
// counter deltas, anti-entropy and handoff. Inputs are bytes plus an Instant;
// outputs are bytes in an Outbox and the next deadline. The Asio daemon and
// the simulator drive this same class; it never touches a socket, clock or
// thread (tests/meta/purity_test.cc).
//
// Invariants:
//   * Every client datagram handed to OnClientDatagram gets exactly one reply
//     in some Outbox (immediately, or after forwards answer or time out).
//   * A forwarded check is decided by its receiver unless that receiver may
//     not own keys right now (warming up after a join, or its clock is off);
//     then it relays to the member after it on the key's preference list,
//     which decides or relays in turn, and the list's last member always
//     decides. So while several members warm up at once, every check for a
//     key still ends at one node: the first on its list that may own (a
//     check travels at most MaxHops() = R + 1 hops).
//   * Only the node that decided a hit replicates it; replicas merge by join.
//   * A node that receives a decider's deltas for a key whose preference
//     list (in its view) does not hold that decider replicates its own
//     decisions for the key back to it for co_decider_ttl_ms: two nodes that
//     both decide a key (views disagree during a membership change, or a
//     fallback past the preference list) always exchange deltas both ways.
//
// Thread safety: none. The daemon calls it under one mutex.
#ifndef TALLY_DAEMON_CORE_NODE_H_
#define TALLY_DAEMON_CORE_NODE_H_

#include <algorithm>
#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
#include <boost/unordered/unordered_flat_set.hpp>
#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "crdt/hybrid_clock.h"
#include "crdt/key_id.h"
#include "crdt/limit_overrides.h"
#include "daemon/core/adaptive_host.h"
#include "daemon/core/decision_kind.h"
#include "daemon/core/forward_rtt.h"
#include "daemon/core/limiter_core.h"
#include "daemon/core/node_events.h"
#include "daemon/core/peer_kinds.h"
#include "membership/ring.h"
#include "membership/swim.h"
#include "persist/restore.h"
#include "persist/snapshot.h"
#include "tally/types.h"
#include "wire/codec.h"
#include "wire/node_codec.h"
#include "wire/peer_codec.h"

namespace tally::core {

enum class PartitionPolicy {
  kAvailability,  // every side enforces the full limit: total <= limit x sides
  kProportional,  // a side enforces limit x (alive / last known members)
  kClosed,        // a side without a majority of the last known members denies
};
std::string_view PartitionPolicyName(PartitionPolicy policy);
std::optional<PartitionPolicy> ParsePartitionPolicy(std::string_view name);

struct NodeConfig {
  std::string node_id;
  std::string gossip_address;  // "ip:port" peers reach us at
  uint64_t generation = 1;     // one per process start (the driver's start time)
  std::vector<std::string> seeds;
  uint64_t rng_seed = 1;

  uint32_t replicas = 3;  // R: preference list length (owner + R-1 replicas)
  LimiterCoreOptions limiter;
  membership::SwimConfig swim;

  // An entry node waits for a forward's answer this long at least, then the
  // next in the preference list decides. Once a peer has answered forwards,
  // the wait for it is its smoothed round trip + 4 deviations (ForwardRtt),
  // up to forward_timeout_max_ms: a peer that is merely slow is waited for
  // rather than decided around from lagging counts (docs/DESIGN.md,
  // "Routing"). 120 = 4x the floor: past the loaded daemon's forward p999
  // (60-100 ms, docs/PERFORMANCE.md), and a dead owner still costs a check at
  // most 120 ms before routing passes over it. A maximum at or below the
  // floor makes the wait a fixed forward_timeout_ms.
  int64_t forward_timeout_ms = 30;
  int64_t forward_timeout_max_ms = 120;
  // Routing tries the preference list in order, and again (its members that
  // SWIM still holds alive) until this many forwards have failed; only then
  // does it walk on down the key's whole ranking, and the first member that
  // answers decides. A lost datagram is retried against nodes that hold the
  // key's counts; a side of a partition that holds none of a key's replicas,
  // whatever its size, still ends up with one decider: the first member of
  // the side in the key's ranking, the same for all its nodes.
  uint32_t route_attempts = 8;
  // After a forward to a peer times out, routing passes over that peer until
  // we hear from it again or this much time has passed; the time doubles with
  // each further timeout that follows an expired pass, up to the maximum, so
  // a node cut off from most of the cluster stops paying a forward timeout per
  // unreachable member and check.
  int64_t forward_skip_ms = 250;
  int64_t forward_skip_max_ms = 8000;
  // How long a co-decider (see the invariants) keeps getting our deltas after
  // its last delta for the key reached us.
  int64_t co_decider_ttl_ms = 2000;
  int64_t clock_check_interval_ms = 100;  // clock health is re-evaluated this often
  int64_t replication_interval_ms = 10;   // deltas to replicas this often
  int64_t replication_retry_ms = 100;     // unacknowledged deltas are resent
  // Unacknowledged state pushes (stream: handoff, anti-entropy, new list
  // members) are resent this long after they went out: a push made while the
  // peer was cut off is otherwise lost for good.
  int64_t push_retry_ms = 2000;
  int64_t anti_entropy_interval_ms = 1000;
  // Load-adaptive limits: members send their sums of signal reports to each
  // rule's owner, and the owner steps its controllers, this often (a tenth
  // of the 1 s control interval, so an interval's reports reach its owner
  // before it closes).
  int64_t adaptive_flush_interval_ms = 100;
  int64_t handoff_timeout_ms = 3000;  // a joining node owns keys after this at the latest
  // A leaving node is done once its leave was gossiped, or after this at the
  // latest (LeaveState).
  int64_t leave_grace_ms = 1000;
  // A node started with seeds that has heard from no other member this long
  // after Start reports it (status, logs) while it keeps trying the seeds.
  int64_t join_warning_ms = 3000;
  PartitionPolicy partition_policy = PartitionPolicy::kAvailability;
  // A dead member still counts towards "last known membership" this long.
  int64_t partition_memory_ms = 600'000;
  int64_t max_clock_offset_ms = 500;   // beyond it (vs most peers) we stop owning keys
  int64_t warn_clock_offset_ms = 250;  // beyond it we say so in status and logs
  size_t max_packet_bytes = 1400;
  bool record_decisions = false;  // fill Outbox::decisions
};

// Bytes to send. The driver owns delivery; the node never blocks on it.
struct Outbox {
  struct PeerPacket {
    std::string to_address;
    std::vector<std::byte> bytes;
    bool stream = false;  // bulk state: the daemon may send it over TCP
    // What `bytes` hold, so drivers and tests count, drop or delay packets
    // by kind without decoding them: a node message of this kind, or (when
    // unset) a SWIM message of `swim_kind`.
    std::optional<wire::NodeMessageValue::Kind> node_kind;
    membership::SwimKind swim_kind = membership::SwimKind::kPing;
    // Index into kPeerMessageKindNames (daemon/core/peer_kinds.h).
    size_t kind_index() const { return node_kind ? PeerKindIndex(*node_kind) : kSwimKindIndex; }
    // Replicated counts (replicate, replicateDelta, statePush).
    bool carries_counts() const {
      using Kind = wire::NodeMessageValue::Kind;
      return node_kind == Kind::kReplicate || node_kind == Kind::kReplicateDelta ||
             node_kind == Kind::kStatePush;
    }
  };
  struct ClientReply {
    uint64_t reply_token = 0;
    std::vector<std::byte> bytes;
    // The encoded results by decision, so a driver counts them (metrics)
    // without decoding the reply again.
    DecisionCounts decisions;
  };
  // One record per local decision, when NodeConfig::record_decisions is set
  // (the simulator's oracles read them; the daemon leaves it off).
  struct Decision {
    crdt::KeyId key;
    uint64_t request_id = 0;
    uint64_t limit = 0;  // as requested, before any partition policy
    uint64_t window_ms = 0;
    uint64_t hits = 0;    // hits counted by this decision (0 when denied)
    int64_t wall_ms = 0;  // the deciding node's wall time
    bool allowed = false;
  };
  std::vector<PeerPacket> peer;
  std::vector<ClientReply> client;
  std::vector<Decision> decisions;
  // What changed that an operator hears about, in the order it was seen
  // (node_events.h): drivers log and record these instead of comparing
  // member tables themselves.
  std::vector<NodeEvent> events;
  void clear() {
    peer.clear();
    client.clear();
    decisions.clear();
    events.clear();
  }
};

struct MemberStatus {
  std::string id;
  std::string state;  // alive, suspect, dead, left
  uint64_t incarnation = 0;
  uint64_t generation = 0;
  std::string address;
  std::optional<double> clock_offset_ms;
  std::optional<double> rtt_ms;
  // Its Envoy rules digest as it last told us on a ping or ack (raw bytes;
  // empty: it has no rules doors); nullopt before it did. Ours for self.
  std::optional<std::string> rules_digest;
};

struct NodeStatus {
  std::string node_id;
  uint64_t generation = 0;
  bool owning = true;  // false while warming up or when our clock is off
  std::string not_owning_reason;
  // Non-empty when seeds were given but none has answered for
  // join_warning_ms: the node serves as a cluster of one and keeps trying.
  std::string join_warning;
  size_t seeds_unanswered = 0;  // the seeds, while join_warning is set
  double key_share = 0;         // fraction of the key space this node owns
  size_t live_keys = 0;
  std::string partition_policy;
  size_t last_known_members = 0;
  std::vector<MemberStatus> members;
  LimiterStats limiter;
  struct Counters {
    uint64_t forwarded = 0, forward_timeouts = 0, relayed = 0, decided_for_peers = 0;
    // Forward round trips measured (replies, late ones included), which set
    // each peer's forward timeout.
    uint64_t forward_rtt_samples = 0;
    // Checks routed past their preference list (no member of it answered).
    uint64_t routed_past_list = 0;
    uint64_t co_deciders = 0;    // keys with a co-decider now (a gauge)
    uint64_t clock_resyncs = 0;  // handoffs started because our wall clock stepped back
    uint64_t wall_steps = 0;     // our wall clock jumped against the monotonic one
    // State pushes of what we owed peers when our wall clock stepped forward,
    // sent from the copy taken then (FreezeOwedState); also in state_pushes.
    uint64_t frozen_pushes = 0;
    // Keys such a copy left out (kMaxFrozenPerPeer messages per peer), and
    // the copies held now, not yet acknowledged (a gauge).
    uint64_t frozen_keys_dropped = 0, frozen_pending = 0;
    uint64_t replicate_sent = 0, replicate_received = 0, state_pushes = 0;
    uint64_t digests = 0, malformed_peer = 0, malformed_client = 0;
    uint64_t peer_bytes_sent = 0, peer_messages_sent = 0;
    // Peer traffic by kind (kPeerMessageKindNames): what this node's core
    // sent, and what it received and decoded (a message that fails to decode
    // counts in malformed_peer only).
    struct Traffic {
      uint64_t messages = 0, bytes = 0;
    };
    std::array<Traffic, kPeerMessageKindNames.size()> sent_by_kind{}, received_by_kind{};
    // Replication: bytes of replicate messages (whole states, and deltas of
    // changed cells to members that speak protocol version 2), those
    // acknowledged and the sum of their send-to-acknowledgement delays (the
    // replication lag, less the batching of at most one replication
    // interval), and a gauge of replicates and state pushes sent and not yet
    // acknowledged.
    uint64_t replicate_bytes_sent = 0;
    uint64_t delta_cells_sent = 0;  // cells sent in replication deltas
    uint64_t replicate_acks = 0, replicate_ack_ns = 0;
    uint64_t replicates_unacked = 0;
    // Anti-entropy repairs: keys pushed to a member because its digest of
    // their range differed from ours.
    uint64_t anti_entropy_repairs = 0;
    // Anti-entropy exchanges (our rounds, and digests we handled) with no key
    // repairs either way because our key table is full (UpdateKeyRepairPause):
    // we would refuse what we lack, and the same ranges would be pushed both
    // ways round after round. A gauge beside it: 1 while they are paused.
    uint64_t anti_entropy_paused_full = 0;
    uint64_t key_table_full = 0;
    // Peer state dropped before it was merged, by reason (docs/DESIGN.md,
    // "Validating peer state"). Units: messages, counters or rows, as noted.
    struct RejectedPeerState {
      uint64_t non_member = 0;         // messages: the sender is not an up member here
      uint64_t unknown_slot = 0;       // rows: no known member has that slot (or generation)
      uint64_t slot_table_full = 0;    // rows: a new slot, and the slot table is full
      uint64_t geometry = 0;           // counters: no window gives that bucket width and span
      uint64_t geometry_mismatch = 0;  // counters: the key is held here with another geometry
      uint64_t future = 0;             // counters: newest bucket past the clock allowance
      uint64_t expired = 0;            // counters: nothing in them is live at our time
      uint64_t count = 0;              // rows: more hits in a window than a decider admits
      uint64_t rows = 0;               // rows: the key holds kMaxMergedRows rows already
      uint64_t store_full = 0;         // counters: a new key, and the key table is full
      uint64_t total() const {
        return non_member + unknown_slot + slot_table_full + geometry + geometry_mismatch + future +
               expired + count + rows + store_full;
      }
    } rejected_peer_state;
    // Handoff requests answered with our keys, and refused (not an up member
    // whose address matches the datagram's, or served to it lately).
    uint64_t handoffs_served = 0, handoffs_refused = 0;
    // Handoff requests sent again after a warm-up to members that had not
    // answered it (one per member per handoff_timeout_ms until they do).
    uint64_t handoff_reasks = 0;
    // Keys queued for a push to a list member because state grew here that
    // the list may lack: this node is off the key's list (a stand-in's hinted
    // handoff), the sender decides from off the list, or our own hits came
    // back from a peer (ApplyState).
    uint64_t hints_queued = 0;
    // Digests ignored: not from an up member, or more than one per half
    // anti-entropy interval from it.
    uint64_t digests_refused = 0;
    // Forward replies from a peer the forward was not sent to.
    uint64_t forward_results_refused = 0;
    // Runtime limit overrides (crdt/limit_overrides.h): entries written
    // here, sent to members, and received: applied (newer than ours), stale
    // (ours is as new), refused (outside the entry bounds, a new selector
    // beyond the map's bound, a stamp beyond the clock allowance, or not
    // from an up member).
    uint64_t overrides_written = 0, overrides_sent = 0, overrides_applied = 0, overrides_stale = 0,
             overrides_refused = 0;
    // Checks that entered here whose limit an override replaced.
    uint64_t overrides_used = 0;
    // Load-adaptive limits: rules' sums sent to their owners, sums taken
    // from members, refused (not from an up member, or an unknown rule or
    // a sum out of range), and limits this node's controllers published.
    uint64_t adaptive_sums_sent = 0, adaptive_sums_received = 0, adaptive_sums_refused = 0,
             adaptive_limits_written = 0;
  } counters;
  // Runtime limit overrides in force (not tombstones) and every entry held.
  size_t overrides_live = 0, overrides_held = 0;
  // Membership's own counters (refused rumors, another process under our
  // node id: docs/DESIGN.md, "Identity without authentication").
  membership::SwimStats swim;
};

class Node {
 public:
  // Hops a check may travel: entry -> each member of the list in turn.
  uint8_t MaxHops() const {
    return static_cast<uint8_t>(std::min<uint32_t>(config_.replicas + 1, 255));
  }

  explicit Node(const NodeConfig& config);

  // Joins the cluster (contacts the seeds) or starts a cluster of one.
  void Start(Instant now, Outbox* out);

  // One client datagram (a checks batch). Its reply, addressed by
  // `reply_token`, appears in `out` now or in a later call's Outbox.
  void OnClientDatagram(uint64_t reply_token, std::span<const std::byte> bytes, Instant now,
                        Outbox* out);
  // The same for a checks datagram a driver already decoded (to learn its
  // kind), so it is not decoded twice: `checks` as wire::ClientMessageReader
  // read them from a datagram of `request_bytes` bytes (the reply bound).
  // The views need to live during the call only.
  void OnClientChecks(uint64_t reply_token, std::span<const CheckRequestRef> checks,
                      size_t request_bytes, Instant now, Outbox* out);

  // One peer datagram or stream message from `from_address`.
  void OnPeerMessage(const std::string& from_address, std::span<const std::byte> bytes, Instant now,
                     Outbox* out);

  // Fires whatever is due: probes, suspicion, forward timeouts, replication,
  // anti-entropy. Call at NextDeadline() (calling early is harmless).
  void Tick(Instant now, Outbox* out);

  // Sends batched forwards and replies. Call after each batch of inputs.
  void Flush(Instant now, Outbox* out);

  // Monotonic time at which Tick should next run.
  std::chrono::nanoseconds NextDeadline() const;

  // Graceful leave: tells the cluster, pushes our keys to their replicas.
  void Leave(Instant now, Outbox* out);
  // Where a leave stands; the one leave rule for the daemon and the
  // simulator. kFlushed: our `left` rumor has gone out as often as gossip
  // sends any rumor (Swim::LeaveFlushed), or no member is left to tell, and
  // `transport_idle` (the driver holds none of our bytes still queued).
  // kGraceOver: leave_grace_ms passed since Leave first. Either way the
  // driver stops this node.
  enum class LeaveProgress { kNotLeaving, kLeaving, kFlushed, kGraceOver };
  LeaveProgress LeaveState(Instant now, bool transport_idle) const;
  bool LeaveComplete(Instant now, bool transport_idle) const {
    const LeaveProgress p = LeaveState(now, transport_idle);
    return p == LeaveProgress::kFlushed || p == LeaveProgress::kGraceOver;
  }

  // Joins the keys of an accepted snapshot (persist/snapshot.h) into the
  // store as rows of the replica slots that counted them, never this
  // process's own slot (docs/DESIGN.md, "Snapshots"). Call before Start, so
  // restored counts are in place before the first check is decided; calling
  // later is harmless too (a join). REQUIRES: snapshot.ok().
  persist::RestoreStats Restore(const persist::DecodedSnapshot& snapshot, Instant now);
  // Merges the snapshot's runtime limit overrides, removals included, as a
  // member's are merged, and moves the override clock past the snapshot's
  // clock and every restored stamp (crdt::RestoreOverrides), so a write
  // after the restart orders after them even if the wall clock went back.
  // Anti-entropy then spreads them like any entry. Call before Start, like
  // Restore. REQUIRES: snapshot.ok().
  crdt::OverrideRestoreCounts RestoreOverrides(const persist::DecodedSnapshot& snapshot);

  // Replaces the seed addresses SWIM reconnects to (Swim::SetSeeds): the
  // driver's answer to a re-resolved DNS name.
  void SetSeeds(std::vector<std::string> seeds) { swim_.SetSeeds(std::move(seeds)); }

  // Our Envoy rules digest (membership::kRulesDigestBytes raw bytes, or
  // empty without rules doors), sent to every member on pings and acks
  // (Swim::SetRulesDigest). Call at start and after every rules reload.
  // REQUIRES: digest.size() is 0 or membership::kRulesDigestBytes.
  void SetRulesDigest(std::string digest) { swim_.SetRulesDigest(std::move(digest)); }

  // Writes a runtime limit override, or with value.removed its removal,
  // cluster-wide: stamped with this node's hybrid logical clock at
  // now.wall, merged here, and sent to every member (anti-entropy repairs
  // what a member missed: digests carry the map's digest). Returns what the
  // local merge did: kInvalid (outside the entry bounds: nothing sent) or
  // kFull (a new selector beyond LimitOverrides::kMaxLocalEntries).
  crdt::LimitOverrides::MergeResult WriteOverride(const crdt::Selector& selector,
                                                  const crdt::OverrideValue& value, Instant now,
                                                  Outbox* out);
  const crdt::LimitOverrides& overrides() const { return overrides_; }

  // Load-adaptive limits (node_adaptive.cc; docs/DESIGN.md, "Load-adaptive
  // limits"). The adaptive rules in force here: call at start and after
  // every rules reload (an unchanged rule keeps its controller).
  void SetAdaptiveRules(std::vector<AdaptiveRuleConfig> rules);
  // A client's report about an adaptive rule's backend (`count` requests,
  // signal averaged `value`), summed here and sent to the rule's owner
  // within adaptive_flush_interval_ms; the owner's controller moves the
  // limit and publishes it in the override map (a kAdaptive selector).
  AdaptiveHost::ReportResult ReportSignal(std::string_view domain, std::string_view rule,
                                          double value, uint64_t count);
  const AdaptiveHost& adaptive() const { return adaptive_; }
  // The member that runs the controller of adaptive rule `i` in our view:
  // the first of the ranking of AdaptiveRuleKey(domain, rule) that is up
  // (us only when we may own). Its id.
  std::string AdaptiveOwner(size_t i, Instant now) const;
  // The override clock's latest stamp (written into snapshots).
  crdt::HlcTimestamp override_clock() const { return override_clock_.last(); }

  NodeStatus Status(Instant now) const;
  // The limiter's counters and live keys alone (what Status().limiter holds),
  // without building the rest of the status.
  LimiterStats limiter_stats() const;
  // Status().owning without the rest (Status samples the ring, O(members)
  // per sample: too much for a simulator asking each of 1000 nodes).
  bool owning() const { return MayOwn(); }
  const membership::Swim& swim() const { return swim_; }
  const crdt::KeyStore& store() const { return core_.store(); }
  // The preference list (member ids) for a key in this node's current view.
  std::vector<std::string> PreferenceList(const crdt::KeyId& key) const;
  // Canonical hash of a key's live state (slot identities, not local indexes).
  uint64_t StateHash(const crdt::KeyId& key, Instant now) const;

 private:
  struct PeerView {
    std::string id;
    std::string address;
    uint64_t generation = 0;
  };
  struct PendingBatch {
    uint64_t reply_token = 0;
    std::vector<CheckResult> results;
    size_t outstanding = 0;
  };
  // Where routing stands for one check: `position` in the key's ranking
  // (below R: the preference list, scanned once per cycle), how many cycles
  // over the preference list began, and how many forwards were sent.
  struct RouteCursor {
    size_t position = 0;
    uint32_t cycle = 0;
    uint32_t attempts = 0;
    // Forwards to the member at `position` past the list (RetriesPastList).
    uint32_t member_attempts = 0;
    uint64_t view_version = UINT64_MAX;  // positions index this view's ranking
  };
  struct InFlightForward {
    uint64_t forward_id = 0;
    uint64_t batch_id = 0;  // 0: a relay, answer goes to relay_origin
    size_t index = 0;
    CheckRequest check;
    crdt::KeyId key;
    RouteCursor cursor;  // at the member that has it
    std::string peer_address;
    int64_t sent_ns = 0;  // when it was queued (it leaves at this batch's Flush)
    int64_t deadline_ns = 0;
    uint8_t hops = 1;
    // For relays: who asked us, and their forward id.
    std::string relay_origin;
    uint64_t relay_forward_id = 0;
  };
  struct UnackedReplicate {
    std::vector<crdt::KeyId> keys;
    int64_t sent_ns = 0;       // when it was sent (its acknowledgement measures the lag)
    int64_t resend_at_ns = 0;  // then the keys are sent again (current state)
    bool push = false;         // sent as a state push: resent as one (else as a replicate)
  };
  struct PeerState {
    std::vector<wire::ForwardValue> forward_queue;
    std::vector<wire::ForwardResultValue> reply_queue;
    // Seqs of its replicates, deltas and pushes that this batch of input
    // acknowledges: one replicateAcks message at Flush (protocol version 4).
    std::vector<uint64_t> ack_queue;
    // Keys our decisions changed since the last round: their changed cells
    // go as a delta (or, to a peer older than deltas, as whole state).
    boost::unordered_flat_set<crdt::KeyId, crdt::KeyIdHash> dirty;
    // Keys whose whole state it gets, never a delta: those of a replicate or
    // delta not acknowledged in time (what was lost may be older than this
    // round's cells), and those it holds for an unreachable list member as a
    // sloppy stand-in (it has none of the key's earlier cells).
    boost::unordered_flat_set<crdt::KeyId, crdt::KeyIdHash> whole_dirty;
    // Keys to push (state, not a decider's deltas): what a holder off a key's
    // list owes the list, and pushes not acknowledged in time.
    boost::unordered_flat_set<crdt::KeyId, crdt::KeyIdHash> push_dirty;
    boost::unordered_flat_map<uint64_t, UnackedReplicate> unacked;
    int64_t skip_until_ns = 0;      // a forward timed out: routing passes over us
    int64_t skip_ms = 0;            // the current pass-over time (backs off; 0 once heard from)
    uint32_t timeouts_unheard = 0;  // forwards timed out since we last heard from it
    ForwardRtt rtt;                 // its forwards' round trips: our forward timeout for it
    bool flush_listed = false;      // in flush_list_
    uint16_t protocol_version = 0;  // of its last message (0: not heard from yet)
    // What we owed it when our wall clock stepped forward, as it was then
    // (FreezeOwedState): pushed every push_retry_ms while it is in our view,
    // until acknowledged (each by its own seq) or until frozen_expires_ns.
    std::vector<wire::ReplicateValue> frozen;
    int64_t frozen_resend_at_ns = 0;
    int64_t frozen_expires_ns = 0;
  };
  struct CoDecider {
    std::string address;
    int64_t expires_ns = 0;
  };

  // Relays checks for our keys and asks every member in view for their
  // state until all answered (or handoff_timeout_ms): after a join, or after
  // our wall clock stepped back.
  void StartHandoff(Instant now, Outbox* out);
  // Pushes every key we hold to the other members of its list (a re-sync).
  void PushHeldKeysToLists(Instant now, Outbox* out);

  // Membership view.
  void RefreshView(Instant now, Outbox* out);
  void RebuildView();                           // from the member table
  void ApplyViewChange(const std::string& id);  // one member's entry, as Swim has it now
  void IndexAddresses();                        // view_by_address_ and self_index_ from view_
  static membership::Ring RingOf(const std::vector<PeerView>& view);
  std::vector<size_t> Targets(const crdt::KeyId& key) const;  // indexes into view_
  std::vector<size_t> TargetsIn(const membership::Ring& ring, const crdt::KeyId& key) const;
  bool MayOwn() const;
  std::string NotOwningReason() const;  // empty while MayOwn()
  // No seed answered within join_warning_ms of Start; JoinWarning says which.
  bool JoinUnanswered(Instant now) const;
  std::string JoinWarning(Instant now) const;
  size_t LastKnownMembers(Instant now) const;

  // Events (node_events.cc): what changed since the last call, into
  // out->events. Called at the end of every input that can change them.
  void NoteEvents(Instant now, Outbox* out);
  // OnPeerMessage's work (node_peer_input.cc), before NoteEvents.
  void TakePeerMessage(const std::string& from_address, std::span<const std::byte> bytes,
                       Instant now, Outbox* out);
  void NoteMemberEvents(Outbox* out);
  void NoteClockEvents(Instant now, Outbox* out);
  // Ourselves and the members SWIM holds alive that did not time out lately:
  // a side counts what it can reach, so a partition lowers a side's share as
  // soon as the other side is suspected, not only once it is declared dead.
  size_t ReachableMembers(Instant now) const;
  void UpdateClockHealth(Instant now);
  // Compares the wall clock's advance with the monotonic clock's since the
  // last call; a jump of kWallStepMs or more shifts the peer clock estimates
  // by it and re-judges clock health at once.
  void ObserveWallStep(Instant now);
  // The peer's state, registered for the next Flush.
  PeerState& FlushPeer(const std::string& address);
  // Acknowledges replication message `seq` from `address` at Flush.
  void QueueAck(const std::string& address, uint64_t seq);
  // The peer's state, registered for the next Replicate.
  PeerState& ReplicationPeer(const std::string& address);
  bool Skipped(const std::string& address, int64_t now_ns) const;
  // Past a key's list: a forward to the peer that timed out is sent again
  // (SWIM holds it alive, and neither this check nor the peer since we last
  // heard from it used up route_attempts forwards).
  bool RetriesPastList(const PeerView& peer, const RouteCursor& cursor) const;
  // How many members a key's preference list holds in the current view.
  size_t ListLength() const { return std::min<size_t>(config_.replicas, view_.size()); }
  // SWIM holds the peer alive and no forward to it timed out lately.
  bool Reachable(const PeerView& peer, int64_t now_ns) const;
  // For a relay to a key's list: SWIM holds the peer up, alive or suspect,
  // and no forward to it timed out since we last heard from it. A suspicion
  // is someone else's rumor (a heal brings the other side's at once), and a
  // suspect still owns its keys; our own timeouts say whether we reach it.
  bool RelayReachable(const PeerView& peer, int64_t now_ns) const;

  // Checks.
  CheckResult DecideLocally(const CheckRequestRef& check, const crdt::KeyId& key, Instant now,
                            Outbox* out);
  // OnClientDatagram's and OnClientChecks's common path (after the clock).
  void DecideChecks(uint64_t reply_token, std::span<const CheckRequestRef> checks,
                    size_t request_bytes, Instant now, Outbox* out);
  void Route(uint64_t batch_id, size_t index, const CheckRequestRef& check, const crdt::KeyId& key,
             RouteCursor cursor, uint8_t hops, Instant now, Outbox* out);
  bool SwimAlive(const std::string& id) const;
  void CompleteItem(uint64_t batch_id, size_t index, CheckResult result, Outbox* out);
  void Enqueue(const std::string& address, wire::ForwardValue value);
  void QueueReply(const std::string& address, wire::ForwardResultValue value);
  void ExpireForwards(Instant now, Outbox* out);

  // Peer messages.
  // Who a node message says it comes from (its PeerMessage header), and
  // where its bytes came from. Views of the decoder's strings: valid for the
  // call only.
  struct PeerSender {
    const std::string& address;            // claimed gossip address (else the transport's)
    const std::string& transport_address;  // the datagram's or stream's source
    const std::string& id;
    uint64_t generation = 0;
  };
  // The view index of the up member (not us) the sender claims to be: same
  // id, gossip address and generation. nullopt for anyone else.
  std::optional<size_t> MemberIndex(const PeerSender& sender) const;
  void HandleNodeMessage(const PeerSender& sender, const wire::NodeMessageValue& msg, Instant now,
                         Outbox* out);
  void HandleForward(const std::string& from, const std::vector<wire::ForwardValue>& items,
                     Instant now, Outbox* out);
  void HandleForwardReply(const std::string& from,
                          const std::vector<wire::ForwardResultValue>& items, Instant now,
                          Outbox* out);
  // How long an entry node waits for a forward to `address` (ForwardRtt's
  // timeout, within forward_timeout_ms..forward_timeout_max_ms).
  int64_t ForwardTimeoutNs(const std::string& address) const;
  // A reply from `address` to a forward queued at sent_ns.
  void SampleForwardRtt(const std::string& address, int64_t sent_ns, int64_t now_ns);
  // Validates and merges a peer's counter state (docs/DESIGN.md, "Validating
  // peer state"); what fails validation is dropped and counted in
  // counters_.rejected_peer_state. `from_decider`: the sender decided these
  // hits (a replicate), as opposed to handing over or repairing state it
  // holds. Returns whether to acknowledge it: not when the sender is not a
  // member (up, or for bulk state known in any state with this generation
  // and address; the message is dropped whole), nor when a counter was ahead of
  // our clock allowance (a decider whose clock runs ahead resends it, and it
  // is merged once our clock reaches it; merging it now would drop our live
  // buckets).
  bool ApplyState(const PeerSender& sender, const wire::ReplicateValue& state, bool from_decider,
                  Instant now);

  // Replication, anti-entropy, handoff.
  // Our decision added hits to `key` in `bucket`: the key's list (and any
  // stand-ins and co-deciders) is owed them.
  void MarkDirty(const crdt::KeyId& key, int64_t bucket, int64_t now_ns);
  void Replicate(Instant now, Outbox* out);
  // Sends `keys` (dirty since the last round) as deltas of our own slot's
  // changed cells; a key whose cells cannot be told is sent whole instead.
  void SendDeltas(const std::string& address, const std::vector<crdt::KeyId>& keys, Instant now,
                  Outbox* out);
  void SendState(const std::string& address, std::vector<crdt::KeyId> keys, bool acked, Instant now,
                 Outbox* out);
  // Packs the keys' current state into messages of at most `budget_bytes`
  // each (keys we no longer hold are left out); each with the keys it carries.
  struct PackedState {
    wire::ReplicateValue state;
    std::vector<crdt::KeyId> keys;
  };
  std::vector<PackedState> PackState(const std::vector<crdt::KeyId>& keys,
                                     size_t budget_bytes) const;
  // Our wall clock stepped forward: what each peer is owed (unacknowledged,
  // or not sent yet) is copied as it is now, before the new time sweeps or
  // advances it, and pushed from that copy until the peer acknowledges it.
  void FreezeOwedState(Instant now);
  void SendFrozen(const std::string& address, PeerState* peer, Instant now, Outbox* out);
  // Range digests over the settled keys both we and view member `peer` hold.
  std::vector<uint64_t> Digest(size_t peer, Instant now) const;
  static bool Holds(const std::vector<uint32_t>& list, size_t member) {
    return std::find(list.begin(), list.end(), member) != list.end();
  }
  bool Settled(const crdt::KeyStore::Entry& entry) const {
    return entry.version <= settled_version_;
  }
  size_t RangeOf(const crdt::KeyId& key) const { return key.high >> 58; }  // 64 ranges
  // Key repairs pause once the key table refused a key (a check's or a
  // peer's) while within 1/64 of max_keys of the cap, and resume once it is
  // below that margin: a full table refuses the keys it lacks, and the margin
  // keeps one that frees a few expired keys from inviting a whole table's
  // worth of pushes each time. A table near the cap that refuses nothing
  // keeps its repairs.
  void UpdateKeyRepairPause();
  void StartAntiEntropy(Instant now, Outbox* out);
  // Runtime limit overrides (node_overrides.cc): every entry we hold to
  // `address` over the stream, in messages within the push budget; and the
  // entries a member sent.
  void SendOverrides(const std::string& address, const std::vector<crdt::OverrideEntry>& entries,
                     Instant now, Outbox* out);
  void HandleOverrides(const PeerSender& sender, const std::vector<wire::LimitOverrideValue>& in,
                       Instant now);
  void HandleDigest(const PeerSender& sender, const wire::NodeMessageValue& msg, Instant now,
                    Outbox* out);
  // Load-adaptive limits: one round (sums to owners, owned controllers
  // stepped, changed limits written), and the sums a member sent us.
  void AdaptiveRound(Instant now, Outbox* out);
  void HandleAdaptiveReports(const PeerSender& sender,
                             const std::vector<wire::AdaptiveReportValue>& in);
  uint32_t AdaptiveOwnerIndex(size_t i) const;
  void HandleHandoffRequest(const PeerSender& sender, Instant now, Outbox* out);
  void PushKeysForChangedTargets(const membership::Ring& old_ring, Instant now, Outbox* out);

  // Encoding.
  void SendNode(const std::string& address, const wire::NodeMessageValue& msg, bool stream,
                Instant now, Outbox* out);
  void SendSwim(std::vector<membership::Outbound>& swim_out, Instant now, Outbox* out);
  wire::CounterValue ToWire(const crdt::KeyId& key, const crdt::WindowCounter& counter,
                            std::vector<wire::SlotValue>* slots,
                            boost::unordered_flat_map<crdt::SlotIndex, uint16_t>* slot_map) const;

  NodeConfig config_;
  LimiterCore core_;
  membership::Swim swim_;
  membership::Ring ring_;
  // Status's key_share, sampled again only after the ring changed (4096
  // owner lookups): reset wherever ring_ changes (node_view.cc).
  mutable std::optional<double> key_share_;
  std::optional<int64_t> leave_deadline_ns_;  // monotonic; set by Leave
  std::mt19937_64 rng_;

  std::vector<PeerView> view_;  // alive members incl. self, the ring's order
  size_t self_index_ = 0;
  uint64_t view_version_ = UINT64_MAX;
  boost::unordered_flat_map<std::string, size_t> view_by_address_;

  uint64_t next_batch_id_ = 1;
  uint64_t next_forward_id_ = 1;
  uint64_t next_replicate_seq_ = 1;
  boost::unordered_flat_map<uint64_t, PendingBatch> batches_;
  boost::unordered_flat_map<uint64_t, InFlightForward> in_flight_;
  // Forwards that timed out, kept for forward_timeout_max_ms past their
  // deadline so a late reply still measures the peer's round trip (forward
  // ids are never reused: a reply names the one send it answers). Without
  // late samples a peer slower than the floor would never raise its timeout.
  struct LateForward {
    std::string peer_address;
    int64_t sent_ns = 0;
    int64_t forget_ns = 0;
  };
  boost::unordered_flat_map<uint64_t, LateForward> late_forwards_;
  int64_t next_late_forget_ns_ = INT64_MAX;
  boost::unordered_flat_map<std::string, PeerState> peers_;  // by address
  // Peers with queued forwards or replies, in the order they were queued, and
  // peers with keys to replicate or unacknowledged replicates: Flush and
  // Replicate visit only these, not every peer of a large cluster.
  std::vector<std::string> flush_list_;
  boost::unordered_flat_set<std::string> replication_peers_;
  boost::unordered_flat_map<crdt::KeyId, std::vector<CoDecider>, crdt::KeyIdHash> co_deciders_;
  size_t known_members_ = 1;  // LastKnownMembers, refreshed on view changes and each second
  // Members we can reach (ReachableMembers), refreshed on view changes and
  // every clock_check_interval_ms: what a side counts under the proportional
  // and closed policies.
  size_t reachable_members_ = 1;
  // The member table's alive count when reachable_members_ was last
  // refreshed for a state change (RefreshView).
  size_t alive_members_seen_ = 0;
  // Scratch for Route's ranking and MarkDirty's targets: no allocation per check.
  std::vector<uint32_t> route_ranking_;
  std::vector<uint32_t> dirty_targets_;
  // The oldest bucket our decisions added hits to, per key, since the last
  // replication round: a delta carries our cells from there to the newest.
  boost::unordered_flat_map<crdt::KeyId, int64_t, crdt::KeyIdHash> delta_from_bucket_;
  // The core's clock steps back at the last round: a step moves our counts
  // (LimiterCore::Clamp), so that round sends whole states instead of deltas.
  uint64_t steps_back_at_last_round_ = 0;

  // Ownership gates.
  bool warming_ = false;
  int64_t warming_until_ns_ = 0;
  int64_t next_handoff_retry_ns_ = 0;
  // Addresses asked for our keys that have not answered (HandoffDone).
  // After the warm-up they are asked again every handoff_timeout_ms until
  // they answer or leave the view: one cut off from us then (a partition)
  // holds rows of ours that a clock step back moved here, or keys of ours.
  boost::unordered_flat_set<std::string> handoff_waiting_;
  int64_t next_handoff_reask_ns_ = 0;
  // At least a probe interval (and 100 ms): a handoff_timeout_ms of 0 must
  // not make a re-ask, and a member's store scan, of every tick.
  int64_t HandoffReaskIntervalMs() const {
    return std::max<int64_t>({config_.handoff_timeout_ms, config_.swim.probe_interval_ms, 100});
  }
  boost::unordered_flat_set<std::string> handoff_asked_;  // while warming
  bool clock_ok_ = true;
  double median_offset_ms_ = 0;
  double majority_ahead_ms_ = 0;  // how far a strict majority of peers are all ahead
  // (Swim clock_version, view_version_) that clock_ok_ was computed from.
  std::pair<uint64_t, uint64_t> clock_health_inputs_{UINT64_MAX, UINT64_MAX};

  // Peer-driven work, paced per member: the last handoff served to each
  // member id (its generation, when), and the last digest and digest reply
  // handled from each address. Pruned to members in the view.
  struct HandoffServed {
    uint64_t generation = 0;
    int64_t at_ns = 0;
  };
  boost::unordered_flat_map<std::string, HandoffServed> handoffs_served_;
  struct DigestSeen {
    int64_t request_ns = INT64_MIN;
    int64_t reply_ns = INT64_MIN;
  };
  boost::unordered_flat_map<std::string, DigestSeen> digests_seen_;
  crdt::LimitOverrides overrides_;
  crdt::HybridClock override_clock_;
  uint64_t override_writer_ = 0;  // hash of our node id: the tie-break between equal stamps
  AdaptiveHost adaptive_;
  int64_t next_adaptive_ns_ = 0;

  int64_t next_replication_ns_ = 0;
  int64_t next_anti_entropy_ns_ = 0;
  bool key_repairs_paused_ = false;  // UpdateKeyRepairPause
  uint64_t key_refusals_seen_ = 0;   // over_capacity + store_full refusals then
  int64_t next_forward_expiry_ns_ = INT64_MAX;
  int64_t next_clock_check_ns_ = 0;
  // Anti-entropy compares only keys that have settled: unchanged here since
  // the round before last (at least one interval). Keys still being written
  // are carried by replication, which sends their whole state each time, so
  // digests of busy keys (never equal while replicas lag by a few ms) do not
  // push every live key over TCP every second.
  uint64_t settled_version_ = 0;
  uint64_t version_at_last_round_ = 0;
  int64_t started_ns_ = 0;
  bool started_ = false;
  int64_t last_tick_wall_ms_ = 0;   // a step back beyond max_clock_regression_ms re-syncs
  bool wall_stepped_back_ = false;  // ObserveWallStep saw such a step: the next Tick re-syncs
  // A clock re-sync's handoff is running: when it ends, what it brought back
  // goes to the keys' other list members (PushHeldKeysToLists).
  bool resync_push_pending_ = false;
  // ObserveWallStep's previous reading (monotonic -1: none yet).
  int64_t step_reference_wall_ms_ = 0;
  int64_t step_reference_monotonic_ns_ = -1;

  // What the last events said (NoteEvents), to say only changes.
  struct ReportedMember {
    std::string state;
    uint64_t incarnation = 0;
    uint64_t generation = 0;
    std::string address;
    friend bool operator==(const ReportedMember&, const ReportedMember&) = default;
  };
  std::map<std::string, ReportedMember, std::less<>> members_reported_;
  std::set<std::string, std::less<>> clock_far_;  // members said to be past the warning
  uint64_t clock_reported_version_ = 0;
  int64_t clock_checked_ns_ = INT64_MIN;
  bool owning_reported_ = true;
  bool superseded_reported_ = false;
  bool join_warning_reported_ = false;
  bool key_table_full_reported_ = false;
  uint64_t foreign_self_reported_ = 0;
  int64_t foreign_self_reported_ns_ = 0;

  wire::ClientMessageReader client_reader_;
  std::vector<std::byte> scratch_;
  mutable NodeStatus::Counters counters_;
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_NODE_H_

// Swim: cluster membership by SWIM with the Lifeguard refinements, as a
// sans-IO state machine. It takes decoded messages, the current Instant and a
// seeded random source, and returns the messages to send; it never touches a
// socket, a clock, a thread or a lock. The daemon (Asio) and the simulator
// drive it the same way:
//
//   Swim swim(config, {id, address, generation}, seeds, seed);
//   swim.Start(now, &out);                   // send `out`
//   loop: on a datagram/stream message -> OnMessage(from, msg, now, &out)
//         when now >= NextDeadline()       -> Tick(now, &out)
//   to stop gracefully: Leave(now, &out), keep ticking until LeaveFlushed()
//   (or a grace period), then stop.
//
// Protocol, by concern (like HashiCorp memberlist; files swim_*.cc):
//   * probe (swim_probe.cc): one member per health-scaled probe interval,
//     round-robin over a list reshuffled every pass; on no ack within the
//     probe timeout, ping-req through `indirect_probes` members, which relay
//     the ack or answer a nack at 80% of the timeout; no ack by the end of the
//     interval raises a suspicion. Acks also sample clock offsets.
//   * suspicion (suspicion.h, swim.cc): suspect -> dead after the Lifeguard
//     timeout unless refuted; independent suspicions confirm and shorten it.
//     Only a member raises its own incarnation, to max(own, accused) + 1.
//     Lifeguard's buddy system: every datagram to a suspect carries the
//     suspicion, so the accused hears it first-hand and refutes even if every
//     gossiped copy was lost; and every message's header carries the sender's
//     incarnation, so a refutation reaches whoever next hears from it.
//   * broadcast (broadcast_queue.h, swim_gossip.cc): rumors ride on every
//     ping, ack, ping-req and nack and on a gossip message to `gossip_nodes`
//     members every `gossip_interval_ms`, each retransmit_limit(n) times.
//   * push-pull (swim_gossip.cc): full-state exchange on join (with the
//     seeds), every push_pull_interval with a random member, and every
//     reconnect_interval with a random dead member and any seed not alive,
//     so the sides of a long partition find each other again (memberlist
//     issue 222).
//   * local health (Lifeguard): a score in [0, awareness_max_multiplier - 1];
//     +1 per failed probe when no nack was expected, +1 per expected nack
//     that did not come, +1 per refutation; -1 per successful probe. It
//     multiplies the probe interval and timeout by (score + 1).
//
// Packets: every datagram's estimated encoding stays under max_packet_bytes.
// Membership rumors ride only in membership packets (these messages), never in
// check or replication datagrams, so however much membership news is queued
// it cannot crowd out other traffic (memberlist issue 299); it only waits.
//
// Untrusted input: every message is validated; unknown ids, a ping for
// another member (our address may have had another owner), absurd
// incarnations or rumors claiming to be us are dropped or answered by the
// protocol, never asserted on. Asserts guard invariants only.
//
// Thread safety: none. One Swim per node, driven from one strand.
#ifndef TALLY_MEMBERSHIP_SWIM_H_
#define TALLY_MEMBERSHIP_SWIM_H_

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "membership/broadcast_queue.h"
#include "membership/clock_offset.h"
#include "membership/member_table.h"
#include "membership/message.h"
#include "membership/random.h"
#include "membership/suspicion.h"
#include "tally/types.h"

namespace tally::membership {

// memberlist's LAN defaults.
struct SwimConfig {
  int64_t probe_interval_ms = 1000;
  int64_t probe_timeout_ms = 500;
  int indirect_probes = 3;
  int suspicion_mult = 4;
  int suspicion_max_timeout_mult = 6;
  int retransmit_mult = 4;
  int64_t gossip_interval_ms = 200;
  int gossip_nodes = 3;
  // Dead members still get gossip this long, so a falsely declared member
  // hears it and refutes.
  int64_t gossip_to_the_dead_ms = 30000;
  int64_t push_pull_interval_ms = 30000;
  int awareness_max_multiplier = 8;
  // Push-pull with a random dead member and with every seed not alive.
  int64_t reconnect_interval_ms = 10000;
  // Dead and left members are forgotten after this long.
  int64_t dead_reap_ms = 3600 * 1000;
  size_t max_packet_bytes = 1400;
  // Bounds against hostile input.
  size_t max_members = 65536;
  size_t max_pending_relays = 1024;

  // True iff the values make sense; otherwise `*why` says what is wrong.
  bool Valid(std::string* why) const;
};

struct SwimStats {
  std::array<uint64_t, kSwimKindCount> sent{};        // messages, by SwimKind
  std::array<uint64_t, kSwimKindCount> sent_bytes{};  // estimated encoded bytes
  std::array<uint64_t, kSwimKindCount> received{};
  uint64_t rumors_sent = 0;  // piggybacked updates
  // Probing.
  uint64_t probes = 0;
  uint64_t probe_acks = 0;  // direct or relayed in time
  uint64_t probe_failures = 0;
  uint64_t nacks_expected = 0;
  uint64_t nacks_received = 0;
  uint64_t relays = 0;  // ping-reqs served for others
  uint64_t relay_nacks = 0;
  // What false positives look like from here.
  uint64_t suspicions_started = 0;  // timers started (own probes or rumors)
  uint64_t suspicions_raised = 0;   // by this node's failed probes
  uint64_t confirmations = 0;
  uint64_t refutations = 0;         // this node refuted a rumor about itself
  uint64_t reasserts = 0;           // re-sent a refutation to a stale accuser
  uint64_t stale_accusations = 0;   // rumors accusing an incarnation we already refuted
  uint64_t first_hand_updates = 0;  // a message's sender was newer than our entry
  uint64_t suspects_refuted = 0;    // a suspect came back alive (same process)
  uint64_t deaths_declared = 0;     // this node's suspicion timers expired
  uint64_t own_stalls = 0;          // we were not run for longer than a probe interval
  uint64_t deaths_postponed = 0;    // a verdict waited because our input was stale
  uint64_t dead_revived = 0;        // a dead member refuted (a false death)
  // Dropped input.
  // Malformed fields, absurd incarnations. A rules digest of the wrong length
  // counts here too, but only the digest is ignored: the message is handled.
  uint64_t invalid = 0;
  uint64_t wrong_target = 0;             // pings for someone else
  uint64_t foreign_self = 0;             // another process claims our name
  uint64_t name_checks = 0;              // pings to a newer process rumored to use our name
  uint64_t unrefutable_rumors = 0;       // not alive, of a generation never heard alive
  uint64_t address_changes_refused = 0;  // another address under a known generation
  uint64_t stale_rumors = 0;             // superseded or about unknown members
  uint64_t unmatched = 0;                // acks/nacks for nothing outstanding
  uint64_t clock_samples = 0;
  uint64_t clock_samples_rejected = 0;
  // Full-state exchanges prompted by a sign that a rumor passed us by: a
  // message from a member we never heard of, or a suspect of ours refuted.
  uint64_t prompted_push_pulls = 0;
  uint64_t view_push_pulls = 0;  // a peer's view digest kept differing from ours
};

class Swim {
 public:
  struct Self {
    std::string id;
    std::string address;      // "ip:port" of our gossip socket
    uint64_t generation = 0;  // unique per process start, e.g. start wall ms
  };

  // Largest incarnation accepted from the network. Honest members raise
  // theirs about once per refutation; a rumor above this would pin a member
  // out of reach of refutation, so it is dropped.
  static constexpr uint64_t kMaxIncarnation = uint64_t{1} << 48;
  static constexpr size_t kMaxIdBytes = 255;
  static constexpr size_t kMaxAddressBytes = 255;

  // REQUIRES: config.Valid(); self.id and self.address non-empty, at most
  // kMaxIdBytes / kMaxAddressBytes, no NUL. `seed_addresses` are addresses of
  // members to join through (our own address among them is ignored).
  Swim(SwimConfig config, Self self, std::vector<std::string> seed_addresses, uint64_t rng_seed);

  // Replaces the seed addresses (our own address is ignored, duplicates
  // dropped): the next reconnect rounds push-pull with the new ones not
  // alive. For seeds found by re-resolving a DNS name while alone or
  // partitioned.
  void SetSeeds(std::vector<std::string> seed_addresses);
  const std::vector<std::string>& seeds() const { return seeds_; }

  // Joins: announces us and push-pulls with every seed.
  // REQUIRES: not started.
  void Start(Instant now, std::vector<Outbound>* out);

  // Handles one decoded message that arrived from `from_address` (the
  // datagram's source; datagram replies go there, stream replies to the
  // sender's advertised address). Ignored before Start. `received_bytes`: its
  // size on the wire (0: estimate it); every datagram sent while handling it
  // is at most kReplyFactor times that (piggyback rumors are left out to fit),
  // so a forged datagram from a spoofed source is not amplified (issue 9).
  void OnMessage(const std::string& from_address, const SwimMessage& msg, Instant now,
                 std::vector<Outbound>* out, size_t received_bytes = 0);
  static constexpr size_t kReplyFactor = 3;

  // Another layer (the node's replication, forwards) heard from the process
  // `id`/`generation` at gossip address `address`. When our table holds an
  // older process of that id, its restart rumor passed us by: push-pull with
  // the sender, as for a stranger's SWIM message (rate-limited the same
  // way). The header alone introduces no one.
  void OnPeerHeard(std::string_view id, uint64_t generation, const std::string& address,
                   Instant now, std::vector<Outbound>* out);

  // Runs whatever is due at `now`: probe steps, relays, suspicion timeouts,
  // gossip, push-pull, reconnects, reaping. Cheap when nothing is due.
  void Tick(Instant now, std::vector<Outbound>* out);

  // The Instant::monotonic time at which Tick should next run; the maximum
  // duration before Start. Always later than the last Tick's `now` when
  // nothing is overdue.
  std::chrono::nanoseconds NextDeadline() const;

  // Leaves gracefully: announces `left` with a raised incarnation to
  // gossip_nodes members now and keeps gossiping it on Tick; stops probing,
  // push-pull, reconnects and refutations. Idempotent.
  void Leave(Instant now, std::vector<Outbound>* out);
  // True once the `left` rumor has been sent retransmit_limit times, or when
  // superseded (nothing to announce).
  bool LeaveFlushed() const;
  bool left() const { return left_; }

  // Everyone we know, self included.
  const MemberTable& members() const { return table_; }
  // Empties members().changes() once its reader has taken them.
  void ClearMemberChanges() { table_.ClearChanges(); }
  // Bumps whenever the set of up (alive or suspect) members changes, or an up
  // member's address or generation does: the node's cue to rebuild its ring.
  uint64_t alive_set_version() const { return alive_set_version_; }
  // A hash of the up set (each up member's id and generation, self
  // included), never 0; carried on pings and acks. Two members whose
  // digests differ hold different up sets, so different rings.
  uint64_t view_digest() const;
  // The ids behind those bumps since the last ClearUpSetChanges(), oldest
  // first (an id may repeat; read each one's current entry in members()), so
  // a reader updates its view by the members that changed instead of
  // rebuilding it from all of them. Past 64 changes the list is dropped and
  // up_set_changes_overflowed() is true: then rebuild from members().
  const std::vector<std::string>& up_set_changes() const { return up_set_changes_; }
  bool up_set_changes_overflowed() const { return up_set_overflowed_; }
  void ClearUpSetChanges();
  // Lifeguard local health score, in [0, awareness_max_multiplier - 1].
  int local_health() const { return health_; }
  // The probe interval and timeout in effect now (scaled by local health).
  std::chrono::milliseconds probe_interval() const;
  std::chrono::milliseconds probe_timeout() const;
  uint64_t incarnation() const { return incarnation_; }
  const Self& self() const { return self_; }
  const SwimConfig& config() const { return config_; }
  const SwimStats& stats() const { return stats_; }

  // Smoothed wall-clock offset of member `id` (its clock minus ours, ms), or
  // nullopt before the first kept sample. ClockEstimateOf adds rtt and
  // uncertainty; nullptr when no sample was taken.
  std::optional<double> ClockOffsetMs(std::string_view id) const;
  const ClockEstimate* ClockEstimateOf(std::string_view id) const;
  // Every member's estimator, by id (samples are taken of probed members
  // only, so this is usually far shorter than members()).
  const std::map<std::string, ClockOffsetEstimator, std::less<>>& clock_estimators() const {
    return clocks_;
  }
  // Bumps whenever an estimator is added, takes a sample, is shifted or is dropped.
  uint64_t clock_version() const { return clock_version_; }
  // Our wall clock jumped by step_ms (positive: forward) against the monotonic
  // clock: every member's offset moves by -step_ms now.
  void OnOwnWallStep(double step_ms) {
    for (auto& [id, estimator] : clocks_) estimator.Shift(-step_ms);
    ++clock_version_;
  }

  // Two processes with one node id (a misconfiguration, or an old process
  // that was paused while its replacement started elsewhere): the newer
  // generation wins. A process that hears a rumor of a newer process of its
  // name at another address pings it there (name_checks, at most
  // kNameCheckTries times, one probe interval apart); the newer answers an
  // older process's ping of its name. Only a message the newer process sent
  // itself (a rumor can be stale or forged) makes this one superseded: it
  // then stops taking part (no probes, gossip, answers or leave, so it can
  // neither decide as the id nor lock the newer out with a `left`) and its
  // driver should stop the process. Empty while not superseded.
  struct Successor {
    std::string address;
    uint64_t generation = 0;
  };
  const std::optional<Successor>& superseded_by() const { return superseded_by_; }
  static constexpr int kNameCheckTries = 3;

  // Our Envoy rules digest (kRulesDigestBytes, or empty: no rules doors). It
  // rides on every ping and ack we send, so each member learns it first-hand
  // within about one probe pass; membership never interprets it.
  // REQUIRES: digest.size() is 0 or kRulesDigestBytes.
  void SetRulesDigest(std::string digest);
  const std::string& rules_digest() const { return rules_digest_; }
  // The rules digest member `id`'s current process last sent us on a ping or
  // an ack (empty: it has no rules doors, or runs a build that does not send
  // one); ours for self; nullptr when we have not heard one from it yet.
  const std::string* RulesDigestOf(std::string_view id) const;

  // The running suspicion timer of `id`, or nullptr.
  const Suspicion* SuspicionOf(std::string_view id) const;
  size_t pending_broadcasts() const { return queue_.size(); }

 private:
  struct Probe {
    bool active = false;
    std::string target_id;
    std::string target_address;
    uint64_t target_generation = 0;
    uint64_t target_incarnation = 0;
    uint64_t seq = 0;
    std::chrono::nanoseconds sent_at{0};
    std::chrono::nanoseconds indirect_at{0};  // send ping-reqs if no ack by then
    std::chrono::nanoseconds end{0};          // conclude
    bool acked = false;
    bool indirect_sent = false;
    std::vector<std::string> relay_ids;  // asked to ping-req; acks/nacks from them count
    std::vector<std::string> nacked;
  };

  // A ping-req we serve: our ping `seq` on behalf of `requester_address`.
  struct Relay {
    std::string requester_address;
    uint64_t requester_seq = 0;
    std::string target_id;
    bool want_nack = true;
    bool nack_sent = false;
    std::chrono::nanoseconds nack_at{0};
    std::chrono::nanoseconds expires{0};
    size_t reply_limit_bytes = SIZE_MAX;  // the ping-req's: what we send back is no larger
  };
  // Send, with datagrams no larger than `limit_bytes` as well.
  void SendLimited(size_t limit_bytes, const std::string& to_address, SwimBody body,
                   std::vector<Outbound>* out);

  // swim.cc: lifecycle, rumors, suspicion.
  void Advance(Instant now);
  // Bumps alive_set_version_ and notes `id` in up_set_changes_.
  void UpSetChanged(const std::string& id);
  // Merges one rumor from anywhere (the network or our own conclusions).
  void ApplyRumor(MemberUpdate update);
  // A message's header is the sender speaking for itself: alive at its
  // (generation, incarnation).
  void ApplySenderEvidence(const SwimMessage& msg);
  void ApplySelfRumor(const MemberUpdate& update);
  // A message under our id from another process (generation `msg`'s).
  void HandleNamesake(const std::string& from_address, const SwimMessage& msg,
                      std::vector<Outbound>* out);
  void TickNameCheck(std::vector<Outbound>* out);
  // Remembers the rules digest on a ping or ack from a member we know.
  void NoteRulesDigest(const SwimMessage& msg);
  void Refute(uint64_t accused_incarnation, bool accused);
  void StartSuspicion(const Member& member, const std::string& accuser);
  void TickSuspicions();
  // Records how old msg was when we handled it (see heard_age_).
  void NoteInputAge(const SwimMessage& msg);
  // How far behind our input is: the youngest age of the members heard in
  // the last ten probe intervals (0 if none). A node that falls behind its
  // input queue (starved, or slower than its load) hears every member late;
  // one member's clock step makes only that member's messages look old.
  std::chrono::nanoseconds InputLag() const;
  void TickHousekeeping();
  void AddHealth(int delta);
  size_t CountUp() const { return table_.CountUp(); }
  int TransmitLimit() const;
  bool ValidHeader(const std::string& from_address, const SwimMessage& msg) const;
  bool ValidUpdate(const MemberUpdate& update) const;
  // Builds a message with our header, piggybacks `must_carry` (if any) and
  // then the queued rumors that fit unless `stream`, and appends it. With
  // `only_if_rumors`, sends nothing (and returns false) when no rumor was taken.
  bool Send(const std::string& to_address, SwimBody body, bool stream, bool only_if_rumors,
            std::vector<Outbound>* out, const MemberUpdate* must_carry = nullptr);

  // swim_probe.cc.
  void TickProbe(std::vector<Outbound>* out);
  void StartProbe(std::vector<Outbound>* out);
  void SendIndirectProbes(std::vector<Outbound>* out);
  void ConcludeProbe(std::vector<Outbound>* out);
  const Member* NextProbeTarget();
  void AddToProbeList(const std::string& id);
  void TickRelays(std::vector<Outbound>* out);
  void HandlePing(const std::string& from_address, const SwimMessage& msg, const Ping& ping,
                  std::vector<Outbound>* out);
  void HandleAck(const SwimMessage& msg, const Ack& ack, std::vector<Outbound>* out);
  void HandleNack(const SwimMessage& msg, const Nack& nack);
  void HandlePingReq(const std::string& from_address, const PingReq& req,
                     std::vector<Outbound>* out);

  // swim_gossip.cc.
  void TickGossip(std::vector<Outbound>* out);
  void TellNextSuspect(std::vector<Outbound>* out);
  void TickPushPull(std::vector<Outbound>* out);
  void TickReconnect(std::vector<Outbound>* out);
  // At most one per probe interval (a stranger's datagram costs us a stream
  // message: rate-limited so forged ones cannot make us flood anyone).
  void PromptedPushPull(std::vector<Outbound>* out);
  void SendPushPull(const std::string& to_address, bool reply, bool join,
                    std::vector<Outbound>* out);
  void HandlePushPull(const SwimMessage& msg, const PushPull& push_pull,
                      std::vector<Outbound>* out);
  std::vector<MemberUpdate> FullState() const;

  std::chrono::nanoseconds Jitter(int64_t up_to_ms);

  SwimConfig config_;
  Self self_;
  std::vector<std::string> seeds_;
  Rng rng_;

  bool started_ = false;
  bool left_ = false;
  Instant now_;
  bool have_now_ = false;  // now_ holds a reading (stall detection needs two)
  uint64_t incarnation_ = 0;
  // Datagram size limit while handling a message (OnMessage), else SIZE_MAX.
  size_t reply_limit_bytes_ = SIZE_MAX;
  int health_ = 0;
  uint64_t seq_ = 0;
  uint64_t alive_set_version_ = 0;
  static constexpr size_t kMaxUpSetChanges = 64;
  std::vector<std::string> up_set_changes_;
  bool up_set_overflowed_ = false;

  MemberTable table_;
  BroadcastQueue queue_;
  std::map<std::string, Suspicion, std::less<>> suspicions_;
  std::string last_told_suspect_;  // TellNextSuspect's place in suspicions_
  std::map<std::string, ClockOffsetEstimator, std::less<>> clocks_;
  uint64_t clock_version_ = 0;
  // How old, by our wall clock, the last message of each member we have a
  // clock estimate for was when we handled it (its sent time corrected by
  // the estimate): InputLag. Erased with clocks_.
  struct HeardAge {
    std::chrono::nanoseconds age{0};
    std::chrono::nanoseconds at{0};  // our monotonic time when handled
  };
  std::map<std::string, HeardAge, std::less<>> heard_age_;
  std::string rules_digest_;
  // Digests heard first-hand, by member id: only members of table_ (erased
  // with them), so bounded by max_members.
  struct HeardRulesDigest {
    uint64_t generation = 0;  // of the process that sent it
    std::string digest;
  };
  std::map<std::string, HeardRulesDigest, std::less<>> rules_digests_;

  std::vector<std::string> probe_order_;
  size_t probe_index_ = 0;
  Probe probe_;
  std::map<uint64_t, Relay> relays_;

  std::chrono::nanoseconds next_probe_at_{0};
  std::chrono::nanoseconds next_gossip_at_{0};
  std::chrono::nanoseconds next_push_pull_at_{0};
  std::chrono::nanoseconds next_reconnect_at_{0};
  std::chrono::nanoseconds next_prompted_push_pull_at_{0};
  // One push-pull a dissemination time after the last join we heard of (none
  // pending: max()), at most one per reconnect interval: a member that one
  // join rumor of a storm missed gets it from a random peer's table.
  std::chrono::nanoseconds settle_push_pull_at_ = std::chrono::nanoseconds::max();
  std::chrono::nanoseconds last_settle_push_pull_at_{std::chrono::nanoseconds::min() / 2};
  void NoteJoinHeard();
  // Views that still differ once a rumor has had its dissemination time: a
  // member that missed a rumor (a `left`, a restart) whose cause never talks
  // to it again. Since when peers' view digests have differed from ours with
  // our up set unchanged (max(): not now), and when the next such exchange
  // may start (at most one per dissemination time).
  std::chrono::nanoseconds view_mismatch_since_ = std::chrono::nanoseconds::max();
  std::chrono::nanoseconds next_view_push_pull_at_{0};
  mutable uint64_t view_digest_ = 0;
  mutable uint64_t view_digest_version_ = UINT64_MAX;
  void NoteViewDigest(const SwimMessage& msg, uint64_t digest, std::vector<Outbound>* out);
  std::chrono::nanoseconds SettlePushPullDue() const;
  std::string prompted_push_pull_address_;  // set while handling a message
  std::chrono::nanoseconds next_housekeeping_at_{0};

  // A newer process rumored to use our name, to ask there (see superseded_by()).
  std::optional<Successor> name_check_;
  int name_check_tries_ = 0;
  std::chrono::nanoseconds next_name_check_at_{0};
  std::optional<Successor> superseded_by_;

  SwimStats stats_;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_SWIM_H_

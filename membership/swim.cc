// Swim: lifecycle, message dispatch, rumor handling and suspicion timers.
// Probing lives in swim_probe.cc, gossip and push-pull in swim_gossip.cc.
#include "membership/swim.h"

#include <algorithm>
#include <cassert>
#include <limits>
#include <optional>
#include <utility>

#include "membership/timing.h"

namespace tally::membership {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

namespace {

bool ValidName(const std::string& s, size_t max_bytes) {
  return !s.empty() && s.size() <= max_bytes && s.find('\0') == std::string::npos;
}

}  // namespace

bool SwimConfig::Valid(std::string* why) const {
  auto fail = [why](const char* reason) {
    if (why != nullptr) *why = reason;
    return false;
  };
  if (probe_interval_ms <= 0) return fail("probe_interval_ms must be positive");
  if (probe_timeout_ms <= 0 || probe_timeout_ms > probe_interval_ms) {
    return fail("probe_timeout_ms must be in (0, probe_interval_ms]");
  }
  if (indirect_probes < 0) return fail("indirect_probes must be >= 0");
  if (suspicion_mult < 1) return fail("suspicion_mult must be >= 1");
  if (suspicion_max_timeout_mult < 1) return fail("suspicion_max_timeout_mult must be >= 1");
  if (retransmit_mult < 1) return fail("retransmit_mult must be >= 1");
  if (gossip_interval_ms <= 0) return fail("gossip_interval_ms must be positive");
  if (gossip_nodes < 1) return fail("gossip_nodes must be >= 1");
  if (gossip_to_the_dead_ms < 0) return fail("gossip_to_the_dead_ms must be >= 0");
  if (push_pull_interval_ms <= 0) return fail("push_pull_interval_ms must be positive");
  if (awareness_max_multiplier < 1) return fail("awareness_max_multiplier must be >= 1");
  if (reconnect_interval_ms <= 0) return fail("reconnect_interval_ms must be positive");
  if (dead_reap_ms <= 0) return fail("dead_reap_ms must be positive");
  // A ping-req between members with the longest ids and addresses, or a ping
  // carrying one suspicion of such a member, must fit.
  if (max_packet_bytes < 1200) return fail("max_packet_bytes must be >= 1200");
  if (max_members < 2) return fail("max_members must be >= 2");
  return true;
}

void Swim::SetSeeds(std::vector<std::string> seed_addresses) {
  seeds_.clear();
  for (auto& seed : seed_addresses) {
    if (seed.empty() || seed == self_.address) continue;
    if (std::find(seeds_.begin(), seeds_.end(), seed) != seeds_.end()) continue;
    seeds_.push_back(std::move(seed));
  }
}

Swim::Swim(SwimConfig config, Self self, std::vector<std::string> seed_addresses, uint64_t rng_seed)
    : config_(config), self_(std::move(self)), rng_(rng_seed) {
  [[maybe_unused]] std::string why;
  assert(config_.Valid(&why));
  assert(ValidName(self_.id, kMaxIdBytes));
  assert(ValidName(self_.address, kMaxAddressBytes));
  SetSeeds(std::move(seed_addresses));
  // Start sequence numbers somewhere random so a restarted process does not
  // match acks meant for its previous life.
  seq_ = rng_() >> 16;
}

void Swim::Advance(Instant now) {
  // Monotonic time never goes back here, whatever the driver passes.
  if (now.monotonic < now_.monotonic) now.monotonic = now_.monotonic;
  const nanoseconds gap = now.monotonic - now_.monotonic;
  // The driver runs us by NextDeadline (a gossip interval at most) and on
  // every message. Not run for longer than a probe interval, we were stalled
  // ourselves (a GC or swap pause, a stopped process, a starved thread):
  // Lifeguard's point is that such a node must not turn its own slowness
  // into verdicts on others. The refutations and acks that arrived meanwhile
  // wait in our input queue, so the stall does not count against the
  // suspicions and the probe we have running.
  if (have_now_ && gap > milliseconds(config_.probe_interval_ms)) {
    ++stats_.own_stalls;
    for (auto& [id, suspicion] : suspicions_) suspicion.Postpone(gap);
    if (probe_.active && !probe_.acked) {
      probe_.end += gap;
      if (!probe_.indirect_sent) probe_.indirect_at += gap;
    }
  }
  have_now_ = true;
  now_ = now;
}

nanoseconds Swim::Jitter(int64_t up_to_ms) {
  if (up_to_ms <= 0) return nanoseconds(0);
  return milliseconds(static_cast<int64_t>(UniformBelow(rng_, static_cast<uint64_t>(up_to_ms))));
}

void Swim::Start(Instant now, std::vector<Outbound>* out) {
  assert(!started_);
  started_ = true;
  Advance(now);
  Member me{self_.id, self_.address, self_.generation, incarnation_, MemberState::kAlive, now_};
  table_.Upsert(me);
  UpSetChanged(self_.id);
  queue_.Push(me.ToUpdate());
  for (const auto& seed : seeds_) SendPushPull(seed, /*reply=*/false, /*join=*/true, out);
  // Stagger the periodic work so nodes started together do not tick together.
  const nanoseconds t = now_.monotonic;
  next_probe_at_ = t + Jitter(config_.probe_interval_ms);
  next_gossip_at_ = t + Jitter(config_.gossip_interval_ms);
  next_push_pull_at_ = t + Jitter(config_.push_pull_interval_ms) + milliseconds(1);
  // Until we know someone, retry the seeds every probe interval.
  next_reconnect_at_ =
      t + milliseconds(config_.probe_interval_ms) + Jitter(config_.probe_interval_ms);
  next_housekeeping_at_ = t + milliseconds(config_.probe_interval_ms);
}

void Swim::OnMessage(const std::string& from_address, const SwimMessage& msg, Instant now,
                     std::vector<Outbound>* out, size_t received_bytes) {
  if (!started_) return;
  Advance(now);
  // What we send while handling it (an ack, a relayed ping, a refutation) is
  // no more than kReplyFactor times its size: piggybacked rumors wait.
  struct ReplyLimit {
    size_t& limit;
    ~ReplyLimit() { limit = SIZE_MAX; }
  } reset{reply_limit_bytes_};
  reply_limit_bytes_ =
      kReplyFactor * (received_bytes != 0 ? received_bytes : EstimatedEncodedBytes(msg));
  if (!ValidHeader(from_address, msg)) {
    ++stats_.invalid;
    return;
  }
  if (superseded_by_) return;
  if (msg.sender_id == self_.id) {
    // Our own echo, or another process using our name.
    if (msg.sender_generation != self_.generation) HandleNamesake(from_address, msg, out);
    return;
  }
  const SwimKind kind = msg.kind();
  if (kind == SwimKind::kPing && std::get<Ping>(msg.body).target_id != self_.id) {
    // Meant for whoever had this address before us: answering would tell the
    // sender a dead member is alive.
    ++stats_.wrong_target;
    return;
  }
  ++stats_.received[static_cast<size_t>(kind)];
  // A member we never heard of talks to us: its join rumor passed us by
  // (gossip reaches each member only with high probability, and a rumor
  // cannot cross a partition). Its header alone does not introduce it (a
  // leaving process still talks); exchanging full state does, from its own
  // table, and brings whatever else we missed.
  const bool stranger = table_.Find(msg.sender_id) == nullptr;
  ApplySenderEvidence(msg);
  NoteInputAge(msg);
  if (kind == SwimKind::kPing || kind == SwimKind::kAck) NoteRulesDigest(msg);
  if (const Member* sender = table_.Find(msg.sender_id);
      sender != nullptr && sender->generation == msg.sender_generation &&
      (sender->state == MemberState::kDead || sender->state == MemberState::kLeft) &&
      msg.sender_incarnation < sender->incarnation) {
    // It talks, below the incarnation we hold it dead or left at: it never
    // heard the verdict (a false death, or a forged `left`; the rumor may
    // have run out of retransmits before reaching it, since nobody gossips
    // to a member it holds down). Tell it first-hand so it can refute, as
    // Lifeguard's buddy system does for suspects.
    const MemberUpdate verdict = sender->ToUpdate();
    Send(from_address, Gossip{}, /*stream=*/false, /*only_if_rumors=*/true, out, &verdict);
  }
  // Rumors first, so a refutation they provoke rides on our reply.
  const uint64_t refutations_before = stats_.refutations;
  const uint64_t stale_before = stats_.stale_accusations;
  for (const auto& update : msg.piggyback) ApplyRumor(update);
  if ((stats_.refutations != refutations_before || stats_.stale_accusations != stale_before) &&
      kind != SwimKind::kPing && kind != SwimKind::kPingReq && kind != SwimKind::kPushPull) {
    // No reply of ours would carry the refutation back to the accuser (it
    // told us directly, or the rumor just reached us): send it at once. The
    // same when the sender still accuses an incarnation we already refuted:
    // our refutation never reached it (it was raised on the other side of a
    // cut that has healed since), and the sender keeps telling us (buddy
    // system) until its timer declares us dead. One reply per message.
    const MemberUpdate me = table_.Find(self_.id)->ToUpdate();
    Send(from_address, Gossip{}, /*stream=*/false, /*only_if_rumors=*/true, out, &me);
  }
  switch (kind) {
    case SwimKind::kPing:
      HandlePing(from_address, msg, std::get<Ping>(msg.body), out);
      break;
    case SwimKind::kAck:
      HandleAck(msg, std::get<Ack>(msg.body), out);
      break;
    case SwimKind::kPingReq:
      HandlePingReq(from_address, std::get<PingReq>(msg.body), out);
      break;
    case SwimKind::kNack:
      HandleNack(msg, std::get<Nack>(msg.body));
      break;
    case SwimKind::kGossip:
      break;
    case SwimKind::kPushPull:
      HandlePushPull(msg, std::get<PushPull>(msg.body), out);
      break;
  }
  if (kind == SwimKind::kPing) NoteViewDigest(msg, std::get<Ping>(msg.body).view_digest, out);
  if (kind == SwimKind::kAck) NoteViewDigest(msg, std::get<Ack>(msg.body).view_digest, out);
  if (stranger && kind != SwimKind::kPushPull && table_.Find(msg.sender_id) == nullptr) {
    prompted_push_pull_address_ = msg.sender_address;
  }
  if (!prompted_push_pull_address_.empty()) PromptedPushPull(out);
}

namespace {

// FNV-1a over the id, then the generation, finished with splitmix64's mixer:
// the same on every member and platform (std::hash is not specified).
uint64_t MemberDigest(std::string_view id, uint64_t generation) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (char c : id) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ULL;
  }
  h ^= generation + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ULL;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebULL;
  h ^= h >> 31;
  return h;
}

}  // namespace

uint64_t Swim::view_digest() const {
  if (view_digest_version_ != alive_set_version_) {
    uint64_t d = 0;
    for (const Member* m : table_.up()) d ^= MemberDigest(m->id, m->generation);
    view_digest_ = d == 0 ? 1 : d;  // 0 on the wire means "not sent"
    view_digest_version_ = alive_set_version_;
  }
  return view_digest_;
}

void Swim::NoteViewDigest(const SwimMessage& msg, uint64_t digest, std::vector<Outbound>* out) {
  // Gossip reaches each member only with high probability, and the periodic
  // push-pull meets a given pair rarely at large n: a member that missed a
  // rumor whose subject never talks to it again (a `left`, a restart) would
  // hold the wrong ring for tens of seconds. Pings and acks carry the up
  // set's digest; one that still differs once our up set has stayed
  // unchanged for a rumor's retransmit time plus a probe round since the
  // first difference means someone missed something: exchange tables with
  // that peer (either side may be the one behind; both get repaired).
  if (digest == 0 || left_) return;
  const Member* sender = table_.Find(msg.sender_id);
  if (sender == nullptr || !sender->up() || sender->generation != msg.sender_generation) return;
  if (digest == view_digest()) return;
  const nanoseconds now = now_.monotonic;
  if (view_mismatch_since_ == nanoseconds::max()) {
    view_mismatch_since_ = now;
    return;
  }
  const nanoseconds settle =
      milliseconds(TransmitLimit() * config_.gossip_interval_ms + config_.probe_interval_ms);
  if (now - view_mismatch_since_ < settle || now < next_view_push_pull_at_) return;
  view_mismatch_since_ = nanoseconds::max();
  next_view_push_pull_at_ = now + milliseconds(TransmitLimit() * config_.gossip_interval_ms +
                                               2 * config_.probe_interval_ms);
  ++stats_.view_push_pulls;
  SendPushPull(msg.sender_address, /*reply=*/false, /*join=*/false, out);
}

void Swim::OnPeerHeard(std::string_view id, uint64_t generation, const std::string& address,
                       Instant now, std::vector<Outbound>* out) {
  if (!started_ || superseded_by_ || left_ || id == self_.id || address.empty() ||
      address == self_.address) {
    return;
  }
  // Only a newer process of a member we know: a stranger's node messages
  // come with every join (its rumor still in flight), and its SWIM messages
  // and the settle push-pull cover it; asking each one cost a full state per
  // datagram-rate-limit during a lossy join storm.
  const Member* m = table_.Find(id);
  if (m == nullptr || m->generation >= generation) return;
  Advance(now);
  prompted_push_pull_address_ = address;
  PromptedPushPull(out);
}

void Swim::Tick(Instant now, std::vector<Outbound>* out) {
  if (!started_ || superseded_by_) return;
  Advance(now);
  TickNameCheck(out);
  TickRelays(out);
  TickProbe(out);
  TickSuspicions();
  TickGossip(out);
  if (!left_) {
    TickPushPull(out);
    TickReconnect(out);
  }
  TickHousekeeping();
}

nanoseconds Swim::NextDeadline() const {
  nanoseconds next = nanoseconds::max();
  if (!started_ || superseded_by_) return next;
  auto consider = [&next](nanoseconds t) { next = std::min(next, t); };
  consider(next_gossip_at_);
  consider(next_housekeeping_at_);
  if (name_check_) consider(next_name_check_at_);
  if (!left_) {
    consider(next_probe_at_);
    consider(next_push_pull_at_);
    consider(next_reconnect_at_);
    consider(SettlePushPullDue());
  }
  if (probe_.active) {
    if (!probe_.acked && !probe_.indirect_sent) consider(probe_.indirect_at);
    consider(probe_.end);
  }
  for (const auto& [seq, relay] : relays_) {
    if (relay.want_nack && !relay.nack_sent) consider(relay.nack_at);
    consider(relay.expires);
  }
  for (const auto& [id, suspicion] : suspicions_) consider(suspicion.deadline());
  return next;
}

void Swim::Leave(Instant now, std::vector<Outbound>* out) {
  if (!started_ || left_ || superseded_by_) return;
  Advance(now);
  left_ = true;
  ++incarnation_;
  Member* me = table_.FindMutable(self_.id);
  assert(me != nullptr);
  me->incarnation = incarnation_;
  table_.SetState(me, MemberState::kLeft);
  me->since = now_;
  UpSetChanged(self_.id);
  queue_.Push(me->ToUpdate());
  probe_.active = false;
  suspicions_.clear();
  relays_.clear();
  std::vector<const Member*> up;
  for (const Member* m : table_.up()) {
    if (m->id != self_.id) up.push_back(m);
  }
  for (const Member* m : Sample(rng_, up, static_cast<size_t>(config_.gossip_nodes))) {
    Send(m->address, Gossip{}, /*stream=*/false, /*only_if_rumors=*/true, out);
  }
}

void Swim::UpSetChanged(const std::string& id) {
  ++alive_set_version_;
  // News of our own: give it (and whatever else is in flight) its
  // dissemination time before a differing digest counts against us.
  view_mismatch_since_ = nanoseconds::max();
  if (up_set_overflowed_) return;
  // Past a few dozen changes (a push-pull full of news, or nobody draining
  // the list) a reader rebuilds from members() anyway: stop keeping them.
  if (up_set_changes_.size() >= kMaxUpSetChanges) {
    up_set_overflowed_ = true;
    up_set_changes_.clear();
    return;
  }
  up_set_changes_.push_back(id);
}

void Swim::ClearUpSetChanges() {
  up_set_changes_.clear();
  up_set_overflowed_ = false;
}

bool Swim::LeaveFlushed() const {
  // Superseded: nothing to announce (a `left` of ours would not beat the newer process).
  return superseded_by_.has_value() || (left_ && queue_.TransmitsOf(self_.id) < 0);
}

milliseconds Swim::probe_interval() const {
  return timing::ScaleByHealth(milliseconds(config_.probe_interval_ms), health_);
}

milliseconds Swim::probe_timeout() const {
  return timing::ScaleByHealth(milliseconds(config_.probe_timeout_ms), health_);
}

std::optional<double> Swim::ClockOffsetMs(std::string_view id) const {
  auto it = clocks_.find(id);
  if (it == clocks_.end() || !it->second.has_estimate()) return std::nullopt;
  return it->second.estimate().offset_ms;
}

const ClockEstimate* Swim::ClockEstimateOf(std::string_view id) const {
  auto it = clocks_.find(id);
  return it == clocks_.end() ? nullptr : &it->second.estimate();
}

const Suspicion* Swim::SuspicionOf(std::string_view id) const {
  auto it = suspicions_.find(id);
  return it == suspicions_.end() ? nullptr : &it->second;
}

void Swim::AddHealth(int delta) {
  health_ = timing::ClampHealth(health_ + delta, config_.awareness_max_multiplier);
}

int Swim::TransmitLimit() const {
  return std::max(1, timing::RetransmitLimit(config_.retransmit_mult, CountUp()));
}

bool Swim::ValidHeader(const std::string& from_address, const SwimMessage& msg) const {
  return msg.version >= 1 && !from_address.empty() && ValidName(msg.sender_id, kMaxIdBytes) &&
         ValidName(msg.sender_address, kMaxAddressBytes);
}

bool Swim::ValidUpdate(const MemberUpdate& u) const {
  // An accusation at kMaxIncarnation could never be refuted (a refutation
  // must out-bid it): only the member's own alive may sit there.
  const uint64_t max_incarnation =
      u.state == MemberState::kAlive ? kMaxIncarnation : kMaxIncarnation - 1;
  return ValidName(u.id, kMaxIdBytes) && ValidName(u.address, kMaxAddressBytes) &&
         u.origin.size() <= kMaxIdBytes && u.incarnation <= max_incarnation &&
         static_cast<int>(u.state) < kMemberStateCount;
}

bool Swim::Send(const std::string& to_address, SwimBody body, bool stream, bool only_if_rumors,
                std::vector<Outbound>* out, const MemberUpdate* must_carry) {
  if (to_address == self_.address) return false;
  SwimMessage msg;
  msg.sender_id = self_.id;
  msg.sender_address = self_.address;
  msg.sender_generation = self_.generation;
  msg.sender_incarnation = incarnation_;
  msg.sender_wall_ms = static_cast<int64_t>(now_.wall.count());
  msg.body = std::move(body);
  if (auto* ping = std::get_if<Ping>(&msg.body)) {
    ping->rules_digest = rules_digest_;
    ping->view_digest = view_digest();
  }
  if (auto* ack = std::get_if<Ack>(&msg.body)) {
    ack->rules_digest = rules_digest_;
    ack->view_digest = view_digest();
  }
  size_t bytes = EstimatedEncodedBytes(msg);
  if (!stream) {
    // Lifeguard's buddy system, applied to every datagram (not only pings):
    // a member we suspect hears it from us first-hand and can refute, even if
    // every gossiped copy of the suspicion was lost.
    MemberUpdate buddy;
    if (must_carry == nullptr) {
      for (const auto& [id, suspicion] : suspicions_) {
        const Member* m = table_.Find(id);
        if (m != nullptr && m->state == MemberState::kSuspect && m->address == to_address) {
          buddy = m->ToUpdate(self_.id);
          must_carry = &buddy;
          break;
        }
      }
    }
    const size_t limit = std::min(config_.max_packet_bytes, reply_limit_bytes_);
    size_t fixed = bytes + kPiggybackListOverheadBytes;
    if (must_carry != nullptr && fixed + EstimatedUpdateBytes(*must_carry) <= limit) {
      msg.piggyback.push_back(*must_carry);
      fixed += EstimatedUpdateBytes(*must_carry);
    }
    size_t used = 0;
    if (fixed < limit) used = queue_.Take(limit - fixed, TransmitLimit(), &msg.piggyback);
    if (!msg.piggyback.empty()) bytes = fixed + used;
    if (only_if_rumors && msg.piggyback.empty()) return false;
    stats_.rumors_sent += msg.piggyback.size();
  }
  const auto kind = static_cast<size_t>(msg.kind());
  ++stats_.sent[kind];
  stats_.sent_bytes[kind] += bytes;
  out->push_back(Outbound{to_address, std::move(msg), stream});
  return true;
}

void Swim::ApplyRumor(MemberUpdate u) {
  if (!ValidUpdate(u)) {
    ++stats_.invalid;
    return;
  }
  if (u.state == MemberState::kAlive || u.state == MemberState::kLeft) u.origin.clear();
  if (u.id == self_.id) {
    ApplySelfRumor(u);
    return;
  }
  Member* m = table_.FindMutable(u.id);
  if (m == nullptr) {
    // Only an alive rumor introduces a member: accusations about someone we
    // never saw (or already forgot) cannot be checked.
    if (u.state != MemberState::kAlive || table_.size() >= config_.max_members) {
      ++stats_.stale_rumors;
      return;
    }
    NoteJoinHeard();
    Member& added =
        table_.Upsert(Member{u.id, u.address, u.generation, u.incarnation, u.state, now_});
    AddToProbeList(added.id);
    UpSetChanged(added.id);
    queue_.Push(std::move(u));
    return;
  }
  if (u.generation == m->generation && u.address != m->address) {
    // One process binds one gossip address for its life: another address
    // under its generation is someone else's claim (it would redirect the
    // member's probes and traffic there).
    ++stats_.address_changes_refused;
    return;
  }
  if (u.generation > m->generation && u.state != MemberState::kAlive) {
    // A process announces its generation itself, alive, when it starts; an
    // accusation or a leave about a generation we never heard alive cannot be
    // refuted by the member (it cannot raise its generation) and would evict
    // it for good: a forged `left` with generation + 1 did (issue 9). If that
    // process exists, its alive rumor reaches us and then its news counts.
    ++stats_.unrefutable_rumors;
    return;
  }
  if (!Supersedes(u, *m)) {
    if (u.state == MemberState::kSuspect && SameRumor(u, *m) && !u.origin.empty()) {
      auto it = suspicions_.find(u.id);
      if (it != suspicions_.end() && it->second.Confirm(u.origin)) {
        ++stats_.confirmations;
        // Pass it on so the others can count this confirmation too.
        queue_.Push(std::move(u));
        return;
      }
    }
    ++stats_.stale_rumors;
    return;
  }
  const Member before = *m;
  const bool new_process = u.generation != before.generation;
  if (new_process && u.state == MemberState::kAlive) NoteJoinHeard();
  m->address = u.address;
  m->generation = u.generation;
  m->incarnation = u.incarnation;
  table_.SetState(m, u.state);
  if (new_process || before.state != u.state) m->since = now_;
  if (u.state == MemberState::kAlive && !new_process) {
    if (before.state == MemberState::kSuspect) {
      ++stats_.suspects_refuted;
      // It was up all along: we were cut off from it (a partition that
      // healed, or loss), and rumors spread meanwhile, a `left` among them,
      // may never reach us again (their retransmissions are spent). Only a
      // full-state exchange repairs that before the periodic push-pull.
      if (!left_) prompted_push_pull_address_ = m->address;
    }
    if (before.state == MemberState::kDead) ++stats_.dead_revived;
  }
  if (u.state == MemberState::kSuspect) {
    StartSuspicion(*m, u.origin.empty() ? u.id : u.origin);
  } else {
    suspicions_.erase(u.id);
  }
  if (new_process && clocks_.erase(u.id) > 0) ++clock_version_;
  if (before.up() != m->up() ||
      (m->up() && (before.address != m->address || before.generation != m->generation))) {
    UpSetChanged(m->id);
  }
  queue_.Push(std::move(u));
}

void Swim::ApplySenderEvidence(const SwimMessage& msg) {
  // Only for members we know: introducing members stays the job of rumors
  // (and a member that left has raised its incarnation with the leave, so
  // its later messages cannot undo `left`).
  const Member* m = table_.Find(msg.sender_id);
  if (m == nullptr || msg.sender_incarnation > kMaxIncarnation) return;
  MemberUpdate alive{msg.sender_id,          msg.sender_address,  msg.sender_generation,
                     msg.sender_incarnation, MemberState::kAlive, {}};
  if (!Supersedes(alive, *m)) return;
  ++stats_.first_hand_updates;
  ApplyRumor(std::move(alive));
}

void Swim::SetRulesDigest(std::string digest) {
  assert(digest.empty() || digest.size() == kRulesDigestBytes);
  rules_digest_ = std::move(digest);
}

const std::string* Swim::RulesDigestOf(std::string_view id) const {
  if (id == self_.id) return &rules_digest_;
  const Member* m = table_.Find(id);
  auto it = rules_digests_.find(id);
  if (m == nullptr || it == rules_digests_.end() || it->second.generation != m->generation) {
    return nullptr;  // never heard, or from a process the member no longer runs
  }
  return &it->second.digest;
}

void Swim::NoteRulesDigest(const SwimMessage& msg) {
  const std::string& digest = msg.kind() == SwimKind::kPing ? std::get<Ping>(msg.body).rules_digest
                                                            : std::get<Ack>(msg.body).rules_digest;
  if (!digest.empty() && digest.size() != kRulesDigestBytes) {
    ++stats_.invalid;  // ignored; the ping or ack itself still counts
    return;
  }
  // Only from the process the table holds: a stranger is not introduced by
  // its header, and an older process's digest no longer applies.
  const Member* m = table_.Find(msg.sender_id);
  if (m == nullptr || m->generation != msg.sender_generation) return;
  HeardRulesDigest& heard = rules_digests_[msg.sender_id];
  heard.generation = msg.sender_generation;
  heard.digest = digest;
}

void Swim::ApplySelfRumor(const MemberUpdate& u) {
  if (u.generation != self_.generation) {
    // A lower generation is our previous process: our alive rumor already
    // beats it. A higher one is another process claiming our name: ask it
    // there (a rumor alone may be stale or forged).
    if (u.generation > self_.generation) {
      ++stats_.foreign_self;
      if (u.state == MemberState::kAlive && u.address != self_.address && !left_ &&
          (!name_check_ || u.generation > name_check_->generation)) {
        name_check_ = Successor{u.address, u.generation};
        name_check_tries_ = 0;
        next_name_check_at_ = now_.monotonic;
      }
    } else {
      ++stats_.stale_rumors;
    }
    return;
  }
  if (left_) return;  // leaving: never argue
  if (u.incarnation < incarnation_) {
    ++stats_.stale_rumors;
    if (u.state == MemberState::kSuspect || u.state == MemberState::kDead) {
      ++stats_.stale_accusations;
    }
    // Someone still accuses an incarnation we already refuted: it missed our
    // refutation (all its copies may have been lost). Spread it again, once
    // the previous copies are all sent, so the accusation cannot outlive it.
    if (u.state != MemberState::kAlive && queue_.TransmitsOf(self_.id) < 0) {
      queue_.Push(table_.Find(self_.id)->ToUpdate());
      ++stats_.reasserts;
    }
    return;
  }
  if (u.state == MemberState::kAlive && u.incarnation == incarnation_ &&
      u.address == self_.address) {
    return;  // our own news coming back
  }
  if (u.incarnation >= kMaxIncarnation) {
    ++stats_.invalid;  // cannot out-bid it; refuse to try
    return;
  }
  // Suspect, dead or left about us, or a forged alive: out-bid it.
  Refute(u.incarnation, u.state == MemberState::kSuspect || u.state == MemberState::kDead);
}

void Swim::HandleNamesake(const std::string& from_address, const SwimMessage& msg,
                          std::vector<Outbound>* out) {
  ++stats_.foreign_self;
  if (msg.sender_generation > self_.generation) {
    // A newer process of our name speaks for itself: it has the name now.
    if (!left_) superseded_by_ = Successor{msg.sender_address, msg.sender_generation};
    return;
  }
  // An older process of our name asks whether we exist: answer its ping of
  // our name, so it learns it first-hand and stops.
  if (const Ping* ping = std::get_if<Ping>(&msg.body);
      ping != nullptr && ping->target_id == self_.id && !left_) {
    Send(from_address, Ack{ping->seq}, /*stream=*/false, /*only_if_rumors=*/false, out);
  }
}

void Swim::TickNameCheck(std::vector<Outbound>* out) {
  if (!name_check_ || left_ || now_.monotonic < next_name_check_at_) return;
  if (name_check_tries_ >= kNameCheckTries) {
    name_check_.reset();  // nobody answered there: a stale or forged rumor
    return;
  }
  ++name_check_tries_;
  ++stats_.name_checks;
  Send(name_check_->address, Ping{++seq_, self_.id}, /*stream=*/false, /*only_if_rumors=*/false,
       out);
  next_name_check_at_ = now_.monotonic + probe_interval();
}

void Swim::Refute(uint64_t accused_incarnation, bool accused) {
  incarnation_ = std::max(incarnation_, accused_incarnation) + 1;
  Member* me = table_.FindMutable(self_.id);
  assert(me != nullptr);
  me->incarnation = incarnation_;
  table_.SetState(me, MemberState::kAlive);
  queue_.Push(me->ToUpdate());
  ++stats_.refutations;
  // Lifeguard: being suspected hints that we, not the others, are slow.
  if (accused) AddHealth(1);
}

void Swim::StartSuspicion(const Member& member, const std::string& accuser) {
  const size_t n = CountUp();
  const int k = timing::ExpectedConfirmations(config_.suspicion_mult, n);
  const milliseconds min = timing::SuspicionMinTimeout(config_.suspicion_mult, n,
                                                       milliseconds(config_.probe_interval_ms));
  const milliseconds max = timing::SuspicionMaxTimeout(config_.suspicion_max_timeout_mult, min);
  suspicions_.insert_or_assign(member.id, Suspicion(accuser, k, min, max, now_.monotonic));
  ++stats_.suspicions_started;
}

void Swim::TickSuspicions() {
  if (left_) {
    suspicions_.clear();  // gone: our verdicts no longer matter
    return;
  }
  // A node behind its input queue by L has not read what members sent in
  // the last L, a suspect's refutation among it: an expiring suspicion waits
  // once more for L (at most its timeout), so the verdict is judged on the
  // input of its deadline. Stalls between our runs are Advance's; this is
  // the backlog we are run through (slow_node at 3 nodes: a slow owner 5-8 s
  // behind declared a healthy member dead whose refutation sat in its queue).
  std::vector<std::string> expired;
  std::optional<nanoseconds> lag;
  for (auto& [id, s] : suspicions_) {
    if (s.deadline() > now_.monotonic) continue;
    if (!lag) lag = InputLag();
    if (s.WaitForInput(*lag, now_.monotonic)) {
      ++stats_.deaths_postponed;
      continue;
    }
    expired.push_back(id);
  }
  for (const auto& id : expired) {
    suspicions_.erase(id);
    const Member* m = table_.Find(id);
    if (m == nullptr || m->state != MemberState::kSuspect) continue;
    ++stats_.deaths_declared;
    MemberUpdate dead = m->ToUpdate(self_.id);
    dead.state = MemberState::kDead;
    ApplyRumor(std::move(dead));
  }
}

void Swim::TickHousekeeping() {
  if (now_.monotonic < next_housekeeping_at_) return;
  next_housekeeping_at_ = now_.monotonic + milliseconds(config_.probe_interval_ms);
  const nanoseconds reap = milliseconds(config_.dead_reap_ms);
  std::vector<std::string> gone;
  for (const Member* m : table_.down()) {
    if (m->id == self_.id) continue;
    if (now_.monotonic - m->since.monotonic >= reap) gone.push_back(m->id);
  }
  for (const auto& id : gone) {
    table_.Erase(id);
    suspicions_.erase(id);
    if (clocks_.erase(id) > 0) ++clock_version_;
    heard_age_.erase(id);
    rules_digests_.erase(id);
    queue_.Drop(id);
  }
}

void Swim::NoteInputAge(const SwimMessage& msg) {
  auto clock = clocks_.find(msg.sender_id);
  if (clock == clocks_.end() || !clock->second.has_estimate()) return;
  // Sent at msg.sender_wall_ms by its clock, offset_ms ahead of ours.
  const double sent_ms =
      static_cast<double>(msg.sender_wall_ms) - clock->second.estimate().offset_ms;
  // sender_wall_ms is the peer's word, unchecked by the decoder: clamp
  // before converting (an absurd stamp must not overflow the cast). More
  // than an hour behind only ever waits one suspicion timeout anyway.
  constexpr double kMaxAgeMs = 3'600'000;
  const double age_ms =
      std::clamp(static_cast<double>(now_.wall.count()) - sent_ms, 0.0, kMaxAgeMs);
  HeardAge& heard = heard_age_[msg.sender_id];
  heard.age = nanoseconds(static_cast<int64_t>(age_ms * 1e6));
  heard.at = now_.monotonic;
}

nanoseconds Swim::InputLag() const {
  const nanoseconds recent = 10 * milliseconds(config_.probe_interval_ms);
  std::optional<nanoseconds> youngest;
  for (const auto& [id, heard] : heard_age_) {
    if (now_.monotonic - heard.at > recent) continue;
    if (!youngest || heard.age < *youngest) youngest = heard.age;
  }
  return youngest.value_or(nanoseconds(0));
}

}  // namespace tally::membership

// Swim: failure detection. One probe round per health-scaled probe interval:
//   t0                   ping the next member of the round-robin list
//   t0 + probe_timeout   no ack yet: ping-req through indirect_probes members
//   t0 + probe_interval  still no ack: suspect it; adjust local health
// The indirect prober pings the target for us, relays its ack, and answers a
// nack when it heard nothing by 80% of the (unscaled) probe timeout.
#include <algorithm>
#include <cassert>

#include "membership/swim.h"
#include "membership/timing.h"

namespace tally::membership {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

namespace {
constexpr int kNackPercentOfTimeout = 80;
}  // namespace

void Swim::TickProbe(std::vector<Outbound>* out) {
  const nanoseconds now = now_.monotonic;
  if (probe_.active && !probe_.acked && !probe_.indirect_sent && now >= probe_.indirect_at) {
    SendIndirectProbes(out);
  }
  if (probe_.active && now >= probe_.end) ConcludeProbe(out);
  if (!left_ && now >= next_probe_at_) {
    // The next round starts when this one ends, at the interval scaled by the
    // health we had when it began.
    next_probe_at_ = now + probe_interval();
    StartProbe(out);
  }
}

void Swim::StartProbe(std::vector<Outbound>* out) {
  const Member* target = NextProbeTarget();
  if (target == nullptr) return;
  probe_ = Probe{};
  probe_.active = true;
  probe_.target_id = target->id;
  probe_.target_address = target->address;
  probe_.target_generation = target->generation;
  probe_.target_incarnation = target->incarnation;
  probe_.seq = ++seq_;
  probe_.sent_at = now_.monotonic;
  probe_.indirect_at = now_.monotonic + probe_timeout();
  probe_.end = now_.monotonic + probe_interval();
  ++stats_.probes;
  // A suspect's ping carries the suspicion (Send's buddy system).
  Send(probe_.target_address, Ping{probe_.seq, probe_.target_id}, false, false, out);
}

const Member* Swim::NextProbeTarget() {
  // At most one reshuffle per call: if a whole fresh pass has no probe-able
  // member, there is nobody to probe.
  bool reshuffled = false;
  for (;;) {
    if (probe_index_ >= probe_order_.size()) {
      if (reshuffled) return nullptr;
      // A new pass: rebuild from the table (drops the reaped and the gone)
      // and reshuffle, so no prober's order is predictable.
      probe_order_.clear();
      for (const auto& [id, m] : table_) {
        if (id != self_.id && m.up()) probe_order_.push_back(id);
      }
      Shuffle(rng_, &probe_order_);
      probe_index_ = 0;
      reshuffled = true;
      if (probe_order_.empty()) return nullptr;
    }
    const Member* m = table_.Find(probe_order_[probe_index_++]);
    // Dead and left members are never probed; a suspect still is, and may
    // refute or be confirmed.
    if (m != nullptr && m->id != self_.id && m->up()) return m;
  }
}

void Swim::AddToProbeList(const std::string& id) {
  // A random position, so a newcomer is not probed by everyone at once.
  const size_t pos = static_cast<size_t>(UniformBelow(rng_, probe_order_.size() + 1));
  probe_order_.insert(probe_order_.begin() + static_cast<std::ptrdiff_t>(pos), id);
  if (pos < probe_index_) ++probe_index_;
}

void Swim::SendIndirectProbes(std::vector<Outbound>* out) {
  probe_.indirect_sent = true;
  std::vector<const Member*> candidates;
  for (const auto& [id, m] : table_) {
    if (id != self_.id && id != probe_.target_id && m.state == MemberState::kAlive) {
      candidates.push_back(&m);
    }
  }
  for (const Member* m : Sample(rng_, candidates, static_cast<size_t>(config_.indirect_probes))) {
    probe_.relay_ids.push_back(m->id);
    Send(m->address, PingReq{probe_.seq, probe_.target_id, probe_.target_address, true}, false,
         false, out);
  }
  stats_.nacks_expected += probe_.relay_ids.size();
}

void Swim::ConcludeProbe(std::vector<Outbound>* out) {
  probe_.active = false;
  if (probe_.acked) return;
  ++stats_.probe_failures;
  // Lifeguard, as memberlist applies it: when relays were asked, each nack
  // that did not come is evidence that we (not the target) are slow; when
  // every relay nacked, they agree the target is silent and our health is
  // not to blame. With nobody to ask, a failed probe counts against us.
  const int expected = static_cast<int>(probe_.relay_ids.size());
  const int missing = expected - static_cast<int>(probe_.nacked.size());
  AddHealth(expected > 0 ? missing : 1);
  const Member* target = table_.Find(probe_.target_id);
  if (target == nullptr || !target->up() || target->generation != probe_.target_generation) {
    return;  // changed under us; the news already decided
  }
  ++stats_.suspicions_raised;
  MemberUpdate suspect{target->id,
                       target->address,
                       target->generation,
                       probe_.target_incarnation,
                       MemberState::kSuspect,
                       self_.id};
  ApplyRumor(std::move(suspect));
}

void Swim::HandlePing(const std::string& from_address, const SwimMessage& msg, const Ping& ping,
                      std::vector<Outbound>* out) {
  Send(from_address, Ack{ping.seq}, false, false, out);
}

void Swim::HandleAck(const SwimMessage& msg, const Ack& ack, std::vector<Outbound>* out) {
  if (auto it = relays_.find(ack.seq); it != relays_.end()) {
    if (msg.sender_id != it->second.target_id) {
      ++stats_.unmatched;
      return;
    }
    SendLimited(it->second.reply_limit_bytes, it->second.requester_address,
                Ack{it->second.requester_seq}, out);
    relays_.erase(it);
    return;
  }
  if (!probe_.active || probe_.acked || ack.seq != probe_.seq) {
    ++stats_.unmatched;
    return;
  }
  const bool direct = msg.sender_id == probe_.target_id;
  if (!direct && std::find(probe_.relay_ids.begin(), probe_.relay_ids.end(), msg.sender_id) ==
                     probe_.relay_ids.end()) {
    ++stats_.unmatched;
    return;
  }
  probe_.acked = true;
  ++stats_.probe_acks;
  AddHealth(-1);
  if (direct) {
    ++stats_.clock_samples;
    ++clock_version_;
    if (!clocks_[probe_.target_id].AddSample(now_.monotonic - probe_.sent_at, msg.sender_wall_ms,
                                             static_cast<int64_t>(now_.wall.count()))) {
      ++stats_.clock_samples_rejected;
    }
  }
}

void Swim::HandleNack(const SwimMessage& msg, const Nack& nack) {
  if (!probe_.active || nack.seq != probe_.seq ||
      std::find(probe_.relay_ids.begin(), probe_.relay_ids.end(), msg.sender_id) ==
          probe_.relay_ids.end() ||
      std::find(probe_.nacked.begin(), probe_.nacked.end(), msg.sender_id) != probe_.nacked.end()) {
    ++stats_.unmatched;
    return;
  }
  probe_.nacked.push_back(msg.sender_id);
  ++stats_.nacks_received;
}

void Swim::HandlePingReq(const std::string& from_address, const PingReq& req,
                         std::vector<Outbound>* out) {
  if (left_) return;
  if (req.target_id == self_.id || req.target_id.size() > kMaxIdBytes || req.target_id.empty() ||
      req.target_address.empty() || req.target_address.size() > kMaxAddressBytes) {
    ++stats_.invalid;
    return;
  }
  if (relays_.size() >= config_.max_pending_relays) return;
  ++stats_.relays;
  Relay relay;
  relay.requester_address = from_address;
  relay.requester_seq = req.seq;
  relay.target_id = req.target_id;
  relay.want_nack = req.want_nack;
  relay.reply_limit_bytes = reply_limit_bytes_;
  const milliseconds timeout(config_.probe_timeout_ms);
  relay.nack_at = now_.monotonic + timeout * kNackPercentOfTimeout / 100;
  relay.expires = now_.monotonic + timeout;
  const uint64_t seq = ++seq_;
  relays_.emplace(seq, std::move(relay));
  Send(req.target_address, Ping{seq, req.target_id}, false, false, out);
}

void Swim::SendLimited(size_t limit_bytes, const std::string& to_address, SwimBody body,
                       std::vector<Outbound>* out) {
  const size_t saved = reply_limit_bytes_;
  reply_limit_bytes_ = std::min(saved, limit_bytes);
  Send(to_address, std::move(body), /*stream=*/false, /*only_if_rumors=*/false, out);
  reply_limit_bytes_ = saved;
}

void Swim::TickRelays(std::vector<Outbound>* out) {
  for (auto it = relays_.begin(); it != relays_.end();) {
    Relay& r = it->second;
    if (r.want_nack && !r.nack_sent && now_.monotonic >= r.nack_at) {
      r.nack_sent = true;
      ++stats_.relay_nacks;
      SendLimited(r.reply_limit_bytes, r.requester_address, Nack{r.requester_seq}, out);
    }
    if (now_.monotonic >= r.expires) {
      it = relays_.erase(it);
    } else {
      ++it;
    }
  }
}

}  // namespace tally::membership

// Swim: dissemination and anti-entropy.
//   * gossip: every gossip_interval, queued rumors go to gossip_nodes random
//     members (up, or dead for less than gossip_to_the_dead_ms so a member
//     declared dead by mistake hears it and refutes).
//   * push-pull: the whole table, over a stream. On join to the seeds, every
//     (scaled) push_pull_interval with one random alive member, and every
//     reconnect_interval with a random dead member and with each seed that is
//     not an alive member: after a partition longer than the suspicion timeout
//     both sides hold each other dead and no rumor crosses any more; these
//     exchanges are what brings them back together (memberlist issue 222).
#include <algorithm>

#include "membership/swim.h"
#include "membership/timing.h"

namespace tally::membership {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

namespace {
// A stream message is still bounded: more entries than this is hostile.
constexpr size_t kMaxPushPullEntriesSlack = 16;
}  // namespace

void Swim::TickGossip(std::vector<Outbound>* out) {
  if (now_.monotonic < next_gossip_at_) return;
  const nanoseconds interval = milliseconds(config_.gossip_interval_ms);
  next_gossip_at_ += interval;
  if (next_gossip_at_ <= now_.monotonic) next_gossip_at_ = now_.monotonic + interval;
  TellNextSuspect(out);
  if (queue_.empty()) return;
  // The candidates are, in id order, the up members but us merged with the
  // members dead for less than gossip_to_the_dead_ms. Picked by position from
  // the table's indexes (the same picks as sampling the merged list), not
  // gathered by a walk over every member each round.
  const nanoseconds to_the_dead = milliseconds(config_.gossip_to_the_dead_ms);
  const std::vector<const Member*>& up = table_.up();
  auto rank_in_up = [&up](const std::string& id) {
    return static_cast<size_t>(
        std::lower_bound(up.begin(), up.end(), id,
                         [](const Member* m, const std::string& v) { return m->id < v; }) -
        up.begin());
  };
  const size_t self_rank = rank_in_up(self_.id);
  const bool self_up = self_rank < up.size() && up[self_rank]->id == self_.id;
  // Recently dead members and their positions in the merged order.
  std::vector<std::pair<size_t, const Member*>> dead;
  for (const Member* m : table_.down()) {
    if (m->id == self_.id || m->state != MemberState::kDead ||
        now_.monotonic - m->since.monotonic >= to_the_dead) {
      continue;
    }
    size_t before = rank_in_up(m->id);
    if (self_up && self_rank < before) --before;
    dead.emplace_back(before + dead.size(), m);
  }
  const size_t up_others = up.size() - (self_up ? 1 : 0);
  auto candidate = [&](size_t pos) -> const Member* {
    size_t dead_before = 0;
    for (const auto& [at, m] : dead) {
      if (at == pos) return m;
      if (at < pos) ++dead_before;
    }
    const size_t i = pos - dead_before;  // among the up members but us
    return up[self_up && i >= self_rank ? i + 1 : i];
  };
  for (size_t pos :
       SampleIndexes(rng_, up_others + dead.size(), static_cast<size_t>(config_.gossip_nodes))) {
    const Member* m = candidate(pos);
    if (!Send(m->address, Gossip{}, /*stream=*/false, /*only_if_rumors=*/true, out)) break;
  }
}

void Swim::TellNextSuspect(std::vector<Outbound>* out) {
  // Each round, one member we suspect (in turn) hears it from us directly
  // (Send carries the suspicion, the buddy system). Gossip alone stops once
  // a rumor's retransmissions are spent: a suspicion raised during a
  // partition never reached the other side, and when the cut healed nobody
  // told the suspect before our timer declared it dead.
  if (suspicions_.empty()) return;
  auto it = suspicions_.upper_bound(last_told_suspect_);
  if (it == suspicions_.end()) it = suspicions_.begin();
  last_told_suspect_ = it->first;
  const Member* m = table_.Find(it->first);
  if (m == nullptr || m->state != MemberState::kSuspect) return;
  Send(m->address, Gossip{}, /*stream=*/false, /*only_if_rumors=*/true, out);
}

void Swim::NoteJoinHeard() {
  if (!started_) return;
  const nanoseconds settle =
      milliseconds(TransmitLimit() * config_.gossip_interval_ms + 2 * config_.probe_interval_ms);
  settle_push_pull_at_ = now_.monotonic + settle;  // a later join postpones it
}

nanoseconds Swim::SettlePushPullDue() const {
  if (settle_push_pull_at_ == nanoseconds::max()) return settle_push_pull_at_;
  return std::max(settle_push_pull_at_,
                  last_settle_push_pull_at_ + milliseconds(config_.reconnect_interval_ms));
}

void Swim::TickPushPull(std::vector<Outbound>* out) {
  if (now_.monotonic >= SettlePushPullDue() && now_.monotonic < next_push_pull_at_) {
    // Gossip reaches each member only with high probability: after a join
    // (or a storm of them) has had its dissemination time, compare tables
    // once with a random member instead of waiting for the periodic exchange.
    settle_push_pull_at_ = nanoseconds::max();
    last_settle_push_pull_at_ = now_.monotonic;
    std::vector<const Member*> alive;
    for (const Member* m : table_.up()) {
      if (m->id != self_.id && m->state == MemberState::kAlive) alive.push_back(m);
    }
    if (!alive.empty()) {
      SendPushPull(alive[UniformBelow(rng_, alive.size())]->address, /*reply=*/false,
                   /*join=*/false, out);
    }
  }
  if (now_.monotonic < next_push_pull_at_) return;
  settle_push_pull_at_ = nanoseconds::max();
  next_push_pull_at_ = now_.monotonic + timing::PushPullInterval(
                                            milliseconds(config_.push_pull_interval_ms), CountUp());
  std::vector<const Member*> alive;
  for (const auto& [id, m] : table_) {
    if (id != self_.id && m.state == MemberState::kAlive) alive.push_back(&m);
  }
  if (alive.empty()) return;
  const Member* peer = alive[UniformBelow(rng_, alive.size())];
  SendPushPull(peer->address, /*reply=*/false, /*join=*/false, out);
}

void Swim::TickReconnect(std::vector<Outbound>* out) {
  if (now_.monotonic < next_reconnect_at_) return;
  std::vector<const Member*> dead;  // in id order, from the table's down index
  for (const Member* m : table_.down()) {
    if (m->id != self_.id && m->state == MemberState::kDead) dead.push_back(m);
  }
  const Member* me = table_.Find(self_.id);
  const bool alone = table_.up().size() == (me != nullptr && me->up() ? 1 : 0);
  // While we know nobody (the join failed, or everyone else is gone), retry
  // every probe interval; otherwise every reconnect interval, each one drawn
  // from [interval / 2, interval] so that nodes which started together do not
  // all reconnect in the same instant (after a partition heals, the first of
  // them to try is what matters).
  const int64_t interval_ms = alone ? config_.probe_interval_ms : config_.reconnect_interval_ms;
  next_reconnect_at_ =
      now_.monotonic + milliseconds(interval_ms - interval_ms / 2) + Jitter(interval_ms / 2 + 1);
  std::vector<std::string> targets;
  if (!dead.empty()) targets.push_back(dead[UniformBelow(rng_, dead.size())]->address);
  for (const auto& seed : seeds_) {
    bool seed_alive = false;
    for (const Member* m : table_.up()) {
      if (m->id != self_.id && m->state == MemberState::kAlive && m->address == seed) {
        seed_alive = true;
        break;
      }
    }
    if (!seed_alive && std::find(targets.begin(), targets.end(), seed) == targets.end()) {
      targets.push_back(seed);
    }
  }
  for (const auto& address : targets) SendPushPull(address, /*reply=*/false, /*join=*/alone, out);
}

std::vector<MemberUpdate> Swim::FullState() const {
  std::vector<MemberUpdate> state;
  state.reserve(table_.size());
  for (const auto& [id, m] : table_) state.push_back(m.ToUpdate());
  return state;
}

void Swim::PromptedPushPull(std::vector<Outbound>* out) {
  const std::string address = std::move(prompted_push_pull_address_);
  prompted_push_pull_address_.clear();
  if (left_ || now_.monotonic < next_prompted_push_pull_at_) return;
  next_prompted_push_pull_at_ = now_.monotonic + milliseconds(config_.probe_interval_ms);
  ++stats_.prompted_push_pulls;
  SendPushPull(address, /*reply=*/false, /*join=*/false, out);
}

void Swim::SendPushPull(const std::string& to_address, bool reply, bool join,
                        std::vector<Outbound>* out) {
  Send(to_address, PushPull{reply, join, FullState()}, /*stream=*/true, false, out);
}

void Swim::HandlePushPull(const SwimMessage& msg, const PushPull& push_pull,
                          std::vector<Outbound>* out) {
  if (push_pull.members.size() > config_.max_members + kMaxPushPullEntriesSlack) {
    ++stats_.invalid;
    return;
  }
  for (MemberUpdate u : push_pull.members) {
    if (u.state == MemberState::kDead) {
      // One member's belief that another is dead only makes us suspect it
      // (memberlist does the same): the accused gets its chance to refute,
      // which is what heals the two sides of a partition without a second
      // round of deaths.
      u.state = MemberState::kSuspect;
      u.origin = msg.sender_id;
    } else if (u.state == MemberState::kSuspect && u.origin.empty()) {
      u.origin = msg.sender_id;
    }
    ApplyRumor(std::move(u));
  }
  if (!push_pull.reply) SendPushPull(msg.sender_address, /*reply=*/true, /*join=*/false, out);
}

}  // namespace tally::membership

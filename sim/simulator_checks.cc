// Checker hooks: read-only probes of the hosts during the run (false
// suspicions, crash detection, ownership agreement, convergence, the cost
// window) and the summary written into the RunRecord at the end, which
// sim/oracles.h judges.
#include <xxhash.h>

#include <algorithm>
#include <cmath>

#include "membership/ring.h"
#include "sim/simulator.h"

namespace tally::sim {
namespace {

using membership::MemberState;

// Order-sensitive fingerprint of (id, generation) pairs.
uint64_t FoldMember(uint64_t h, const std::string& id, uint64_t generation) {
  return SplitMix64(h ^ XXH3_64bits(id.data(), id.size()) ^ SplitMix64(generation));
}

// The first live cell (slot, bucket) of `key` that `holder` counts higher
// than `replica` does, as words; "" when the replica has joined all the
// holder's live cells. A stray holder (a former decider, a sloppy stand-in)
// may hold the only copy of what it admitted: replicas that agree with each
// other but not with it have lost those hits (the seven-node partition test
// once saw a side's 12 admitted hits vanish after the heal that way).
std::string FirstCellMissing(const crdt::KeyStore& replica, const crdt::KeyStore& holder,
                             const crdt::KeyId& key, int64_t now_ms) {
  const crdt::KeyStore::Entry* h = holder.Find(key);
  if (h == nullptr) return "";
  const crdt::Geometry g = h->counter.geometry();
  const crdt::KeyStore::Entry* r = replica.Find(key);
  if (r != nullptr && !(r->counter.geometry() == g)) return "";  // judged by the list's agreement
  const int64_t span = static_cast<int64_t>(g.span);
  int64_t from = std::max(crdt::BucketOf(now_ms, g) - span, h->counter.newest_bucket() - span);
  if (r != nullptr) from = std::max(from, r->counter.newest_bucket() - span);
  for (size_t row = 0; row < h->counter.row_count(); ++row) {
    const crdt::ReplicaSlot& slot = holder.slots().Get(h->counter.row_slot(row));
    const std::optional<crdt::SlotIndex> there =
        r == nullptr ? std::nullopt : replica.slots().Find(slot);
    for (int64_t k = from; k <= h->counter.newest_bucket(); ++k) {
      const uint32_t n = h->counter.count(row, k);
      const uint32_t m = there ? r->counter.CountOfSlot(*there, k) : 0;
      if (n > m) {
        return "slot " + slot.node_id + "/" + std::to_string(slot.incarnation) + " bucket " +
               std::to_string(k) + ": " + std::to_string(n) + " held, " + std::to_string(m) +
               " on the list";
      }
    }
  }
  return "";
}

}  // namespace

void Simulator::NoteMembershipChange(TrueNs t) {
  OwnershipEpoch epoch;
  epoch.changed_ns = t;
  record_.ownership.push_back(epoch);
}

void Simulator::ObserveOverrides(TrueNs t) {
  for (OverrideWriteRecord& w : record_.override_writes) {
    if (!w.applied) continue;
    for (uint32_t i = 0; i < hosts_.size() && i < w.seen_ns.size(); ++i) {
      const Host& h = hosts_[i];
      if (w.seen_ns[i] >= 0 || !Serving(h) || h.generation != w.generation[i]) continue;
      const crdt::OverrideEntry* e = h.node->overrides().FindEntry(w.selector_key);
      if (e == nullptr) continue;
      const bool same =
          e->stamp == w.entry.stamp && e->writer == w.entry.writer && e->value == w.entry.value;
      if (same || crdt::Wins(*e, w.entry)) w.seen_ns[i] = t;
    }
  }
}

void Simulator::Inspect(TrueNs t) {
  TrackDetections(t);
  if (!record_.override_writes.empty()) ObserveOverrides(t);
  CheckOwnership(t);
  if (!cost_active_ && t >= config_.cost_from_ns && t < config_.cost_to_ns) {
    bool quiet = true;
    if (config_.cost_after_quiet) {
      quiet = !record_.ownership.empty() && record_.ownership.back().agreed_ns >= 0;
      for (const Host& h : hosts_) {
        if (quiet && h.state == HostState::kUp) quiet = h.node->swim().pending_broadcasts() == 0;
      }
    }
    if (quiet) {
      cost_active_ = true;
      record_.cost.from_ns = t;
    }
  }
  if (t >= config_.quiesce_ns && record_.converged_ns < 0) CheckConvergence(t);
  if (config_.end_when_settled_ns >= 0 && t >= config_.end_when_settled_ns &&
      record_.converged_ns >= 0 && !record_.ownership.empty() &&
      record_.ownership.back().agreed_ns >= 0) {
    settled_ns_ = t;
  }
}

void Simulator::ObserveSuspicions(uint32_t index, TrueNs t) {
  Host& h = hosts_[index];
  if (!h.node) return;
  const membership::SwimStats& st = h.node->swim().stats();
  if (st.suspicions_started == h.seen_suspicions && st.deaths_declared == h.seen_deaths) return;
  h.seen_suspicions = st.suspicions_started;
  h.seen_deaths = st.deaths_declared;
  const int64_t probe_ns = config_.node.swim.probe_interval_ms * kNsPerMs;
  for (const auto& [id, m] : h.node->swim().members()) {
    if (m.state != MemberState::kSuspect && m.state != MemberState::kDead) continue;
    auto it = host_by_id_.find(id);
    if (it == host_by_id_.end()) continue;
    const uint32_t si = it->second;
    const Host& s = hosts_[si];
    // Only a process that is really up and not leaving can be falsely accused.
    if (s.state != HostState::kUp || s.generation != m.generation) continue;
    if (!suspicions_seen_.emplace(id, m.generation, m.incarnation, static_cast<int>(m.state))
             .second) {
      continue;
    }
    const bool reachable = network_.CanSend(index, si) && network_.CanSend(si, index);
    // A probe round that straddled a cut or heal, or a just-started node,
    // may conclude either way. Lifeguard stretches a round by the accuser's
    // local health, which drops by at most one per round: the round that
    // ended now began at most (health + 2) base intervals ago.
    const int64_t round_ns = (h.node->swim().local_health() + 2) * probe_ns;
    const bool transition = t - last_network_change_ < std::max(3 * probe_ns, round_ns) ||
                            t - s.up_since < 3 * probe_ns;
    const bool subject_slow =
        Slow(s) || (last_slow_change_ >= 0 && t - last_slow_change_ < 3 * probe_ns);
    MembershipRecord& mr = record_.membership;
    if (!reachable || transition || subject_slow) {
      ++mr.expected_suspicions;
      continue;
    }
    const bool by_slow = Slow(h);
    if (by_slow) ++mr.slow_node_accusations;
    if (m.state == MemberState::kDead) {
      ++mr.false_deaths;
    } else {
      ++mr.false_suspicions;
    }
    if (mr.examples.size() < 5) {
      mr.examples.push_back(h.id + " saw " + id + " " +
                            std::string(membership::StateName(m.state)) +
                            " at t=" + std::to_string(t / kNsPerMs) + "ms");
    }
  }
}

void Simulator::TrackDetections(TrueNs t) {
  for (DetectionRecord& d : record_.detections) {
    if (t - d.crash_ns > 300 * kNsPerS) continue;
    for (uint32_t i = 0; i < hosts_.size(); ++i) {
      const Host& o = hosts_[i];
      if (i == d.subject || o.state != HostState::kUp) continue;
      if (d.dead_seen.contains(i)) continue;
      const membership::Member* m = o.node->swim().members().Find(d.subject_id);
      if (m == nullptr || m->generation != d.generation) continue;
      if (m->state != MemberState::kSuspect && m->state != MemberState::kDead) continue;
      const TrueNs since = o.clock.TrueTimeOfMonotonic(m->since.monotonic.count());
      if (since < d.crash_ns) continue;  // an older (false) suspicion, not this crash
      if (m->state == MemberState::kSuspect &&
          (d.first_suspect_ns < 0 || since < d.first_suspect_ns)) {
        d.first_suspect_ns = since;
      }
      if (m->state == MemberState::kDead) d.dead_seen[i] = since;
    }
  }
}

void Simulator::CheckOwnership(TrueNs t) {
  if (record_.ownership.empty()) return;
  OwnershipEpoch& epoch = record_.ownership.back();
  if (epoch.agreed_ns >= 0) return;
  // The truth: the processes up now, by id.
  std::vector<const Host*> up;
  for (const Host& h : hosts_) {
    if (h.state == HostState::kLeaving) return;  // in transition
    if (h.state == HostState::kUp) up.push_back(&h);
  }
  if (up.empty()) return;
  std::sort(up.begin(), up.end(), [](const Host* a, const Host* b) { return a->id < b->id; });
  uint64_t truth = 0;
  for (const Host* h : up) truth = FoldMember(truth, h->id, h->generation);
  for (Host& h : hosts_) {
    if (h.state != HostState::kUp) continue;
    const membership::Swim& swim = h.node->swim();
    if (h.fingerprint_version != swim.alive_set_version()) {
      h.fingerprint_version = swim.alive_set_version();
      uint64_t f = 0;
      for (const auto& [id, m] : swim.members()) {
        if (m.up()) f = FoldMember(f, id, m.generation);
      }
      h.fingerprint = f;
    }
    if (h.fingerprint != truth) return;
  }
  if (epoch.stable_ns < 0) epoch.stable_ns = t;
  std::vector<membership::RingMember> members;
  for (const Host* h : up) members.push_back(membership::RingMember{h->id, h->address, 1.0});
  const membership::Ring ring(std::move(members));
  const size_t sample = std::min(config_.ownership_sample_keys, workload_.keys().size());
  bool agreed = true;
  for (size_t k = 0; k < sample; ++k) {
    const crdt::KeyId& key = workload_.keys()[k].id;
    const std::vector<std::string> want = ring.PreferenceIds(key, config_.node.replicas);
    for (const Host* h : up) {
      if (h->node->PreferenceList(key) != want) {
        ++epoch.disagreements;
        agreed = false;
        break;
      }
    }
    if (!agreed) break;
  }
  if (agreed) epoch.agreed_ns = t;
}

void Simulator::CheckConvergence(TrueNs t) {
  std::vector<membership::RingMember> members;
  for (const Host& h : hosts_) {
    if (h.state == HostState::kUp) members.push_back(membership::RingMember{h.id, h.address, 1.0});
  }
  if (members.empty()) return;
  const membership::Ring ring(members);
  // One reference instant for every replica, so the hashes cover the same buckets.
  Instant ref;
  ref.wall = std::chrono::milliseconds(kEpochWallMs + t / kNsPerMs);
  ref.monotonic = std::chrono::nanoseconds(t);
  // A replica whose clock runs ahead by e ms sweeps (and refuses to create) a
  // key e ms before true time expires it: expiry is part of the state, so
  // keys that close to expiring are left out.
  double ahead_ms = 0;
  for (const Host& h : hosts_) {
    if (h.state == HostState::kUp) ahead_ms = std::max(ahead_ms, h.clock.ErrorMs(t));
  }
  std::vector<uint32_t> pref;
  size_t live = 0;
  for (size_t k = 0; k < workload_.keys().size(); ++k) {
    const crdt::KeyId& key = workload_.keys()[k].id;
    ring.PreferenceList(key, config_.node.replicas, &pref);
    if (ahead_ms > 0) {
      int64_t newest = INT64_MIN;
      crdt::Geometry g{};
      for (uint32_t j : pref) {
        const Host& h = hosts_[host_by_id_.at(ring.members()[j].id)];
        const crdt::KeyStore::Entry* e = h.node->store().Find(key);
        // A counter that never held a hit keeps a far-past sentinel as newest.
        if (e != nullptr && e->counter.newest_bucket() > INT64_MIN / 4) {
          newest = std::max(newest, e->counter.newest_bucket());
          g = e->counter.geometry();
        }
      }
      if (newest != INT64_MIN) {
        const int64_t expiry_ms = (newest + static_cast<int64_t>(g.span) + 1) * g.bucket_ms;
        const int64_t now_ms = ref.wall.count();
        if (now_ms < expiry_ms &&
            now_ms >= expiry_ms - static_cast<int64_t>(ahead_ms) - g.bucket_ms) {
          continue;
        }
      }
    }
    uint64_t first = 0;
    bool any = false;
    bool have_first = false;
    std::string first_id;  // the first member judged (the list's first may have been passed over)
    for (size_t j = 0; j < pref.size(); ++j) {
      const Host& h = hosts_[host_by_id_.at(ring.members()[pref[j]].id)];
      // A replica whose wall clock is off by more than the clock-offset limit
      // neither owns nor takes state beyond its clock allowance, nor do its
      // peers take its state from their future (docs/DESIGN.md, validation):
      // it converges once its clock is back, so it is not judged meanwhile.
      if (std::abs(h.clock.ErrorMs(t)) > static_cast<double>(config_.node.max_clock_offset_ms)) {
        continue;
      }
      const uint64_t hash = h.node->StateHash(key, ref);
      any = any || hash != 0;
      if (!have_first) {
        first = hash;
        have_first = true;
        first_id = h.id;
      } else if (hash != first) {
        record_.convergence_note = "key " + std::to_string(k) + " (" + workload_.keys()[k].user_id +
                                   "): " + h.id + " differs from " + first_id +
                                   " at t=" + std::to_string(t / kNsPerMs) + "ms";
        return;
      }
    }
    // Nothing lost: the list holds every live cell any up member holds.
    const Host* judge = nullptr;
    for (uint32_t j : pref) {
      const Host& h = hosts_[host_by_id_.at(ring.members()[j].id)];
      if (std::abs(h.clock.ErrorMs(t)) <= static_cast<double>(config_.node.max_clock_offset_ms)) {
        judge = &h;
        break;
      }
    }
    if (judge != nullptr) {
      for (const Host& h : hosts_) {
        if (h.state != HostState::kUp || &h == judge ||
            std::abs(h.clock.ErrorMs(t)) > static_cast<double>(config_.node.max_clock_offset_ms)) {
          continue;
        }
        const std::string missing =
            FirstCellMissing(judge->node->store(), h.node->store(), key, ref.wall.count());
        if (!missing.empty()) {
          record_.convergence_note = "key " + std::to_string(k) + " (" +
                                     workload_.keys()[k].user_id + "): " + h.id +
                                     " holds what the list (" + judge->id + ") lacks, " + missing +
                                     " at t=" + std::to_string(t / kNsPerMs) + "ms";
          return;
        }
      }
    }
    live += any ? 1 : 0;
  }
  record_.converged_ns = t;
  record_.convergence_keys = live;
  record_.convergence_note.clear();
}

void Simulator::FinishRecord(TrueNs end) {
  // Detection: who of those up from the crash to the end marked it dead.
  for (DetectionRecord& d : record_.detections) {
    d.observers = 0;
    d.observers_marked = 0;
    for (uint32_t i = 0; i < hosts_.size(); ++i) {
      const Host& h = hosts_[i];
      if (i == d.subject || h.state != HostState::kUp || h.up_since > d.crash_ns) continue;
      ++d.observers;
      auto it = d.dead_seen.find(i);
      if (it == d.dead_seen.end()) continue;
      ++d.observers_marked;
      d.last_dead_ns = std::max(d.last_dead_ns, it->second);
    }
    for (const auto& [observer, at] : d.dead_seen) {
      if (d.first_dead_ns < 0 || at < d.first_dead_ns) d.first_dead_ns = at;
    }
  }
  CostRecord& cost = record_.cost;
  for (const Host& h : hosts_) {
    if (h.state != HostState::kUp) continue;
    ++cost.nodes;
    cost.messages_per_node_s += static_cast<double>(h.messages_sent);
    cost.bytes_per_node_s += static_cast<double>(h.bytes_sent);
    cost.client_checks_per_node_s += static_cast<double>(h.client_datagrams);
  }
  cost.seconds =
      cost.from_ns < 0 ? 0 : static_cast<double>(config_.cost_to_ns - cost.from_ns) / 1e9;
  if (cost.nodes > 0 && cost.seconds > 0) {
    const double d = static_cast<double>(cost.nodes) * cost.seconds;
    cost.messages_per_node_s /= d;
    cost.bytes_per_node_s /= d;
    cost.client_checks_per_node_s /= d;
  }
  record_.network = network_.stats();
  for (const Host& h : hosts_) {
    record_.final_generation.push_back(h.state == HostState::kUp ? h.generation : 0);
  }
  for (Host& h : hosts_) {
    if (h.state == HostState::kUp && !h.node->owning()) {
      record_.not_owning_at_end.push_back(h.id);
    }
  }
  record_.end_ns = end;
  if (!config_.dump_key.empty()) record_.debug += DumpKey(config_.dump_key, end);
}

}  // namespace tally::sim

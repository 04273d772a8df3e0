// Faults: the scheduled FaultActions applied to hosts (crash, restart, leave,
// join, slowness, clock steps and drift) and to the network (partitions, heal,
// loss, duplication, jitter).
#include <algorithm>
#include <cmath>

#include "sim/simulator.h"

namespace tally::sim {

void Simulator::ApplyFault(const FaultAction& f, TrueNs t) {
  record_.faults.push_back(FaultLogEntry{t, f.kind, f.label});
  Trace(4, t, static_cast<uint64_t>(f.kind), static_cast<uint64_t>(f.host + 1));
  using Kind = FaultAction::Kind;
  Host* h = f.host >= 0 && static_cast<size_t>(f.host) < hosts_.size() ? &hosts_[f.host] : nullptr;
  switch (f.kind) {
    case Kind::kCrash: {
      if (h == nullptr || !Serving(*h)) return;
      DetectionRecord d;
      d.subject = static_cast<uint32_t>(f.host);
      d.subject_id = h->id;
      d.generation = h->generation;
      d.crash_ns = t;
      for (const Host& o : hosts_) d.members_at_crash += Serving(o) ? 1 : 0;
      record_.detections.push_back(d);
      StopHost(static_cast<uint32_t>(f.host), t, HostState::kDown);
      NoteMembershipChange(t);
      return;
    }
    case Kind::kRestart: {
      if (h == nullptr || h->state != HostState::kDown) return;
      ++h->restarts;
      for (DetectionRecord& d : record_.detections) {
        if (d.subject == static_cast<uint32_t>(f.host) && d.restarted_ns < 0) d.restarted_ns = t;
      }
      if (f.new_address) h->address = HostAddressOf(static_cast<uint32_t>(f.host), h->restarts);
      StartHost(static_cast<uint32_t>(f.host), t);
      NoteMembershipChange(t);
      return;
    }
    case Kind::kLeave: {
      if (h == nullptr || h->state != HostState::kUp) return;
      const Instant now = h->clock.At(t);
      out_.clear();
      h->node->Leave(now, &out_);
      h->node->Flush(now, &out_);
      h->state = HostState::kLeaving;
      auto e = std::lower_bound(entry_hosts_.begin(), entry_hosts_.end(), uint32_t(f.host));
      if (e != entry_hosts_.end() && *e == uint32_t(f.host)) entry_hosts_.erase(e);
      Emit(static_cast<uint32_t>(f.host), out_, t, t);
      Rearm(static_cast<uint32_t>(f.host), t);
      return;
    }
    case Kind::kJoin: {
      const uint32_t index = AddHost();
      StartHost(index, t);
      NoteMembershipChange(t);
      return;
    }
    case Kind::kPartition:
      network_.Partition(f.groups, f.allowed);
      if (!config_.dump_key.empty()) {
        record_.debug += "t=" + std::to_string(t / kNsPerMs) + "ms " + f.label + ", groups:";
        for (uint32_t i = 0; i < hosts_.size(); ++i) {
          record_.debug += " " + hosts_[i].id + "=" + std::to_string(network_.group(i));
        }
        record_.debug += "\n" + DumpKey(config_.dump_key, t);
      }
      last_network_change_ = t;
      NoteMembershipChange(t);
      return;
    case Kind::kHeal:
      network_.Heal();
      last_network_change_ = t;
      NoteMembershipChange(t);
      return;
    case Kind::kSetLoss:
      network_.SetLoss(f.value);
      return;
    case Kind::kSetDuplicate:
      network_.SetDuplicate(f.value);
      return;
    case Kind::kClockJump:
      if (h != nullptr) h->clock.Jump(f.value_ms);
      return;
    case Kind::kSlow:
      if (h == nullptr) return;
      h->service_ns = f.service_ns;
      h->tick_lag_ns = f.tick_lag_ns;
      h->stall_every_ns = f.stall_every_ns;
      h->stall_ns = f.stall_ns;
      h->stall_from = t;
      last_slow_change_ = t;
      return;
    case Kind::kUnslow:
      if (h == nullptr) return;
      h->service_ns = 0;
      h->tick_lag_ns = 0;
      h->stall_ns = 0;
      h->stall_every_ns = 0;
      last_slow_change_ = t;
      return;
    case Kind::kSetDrift:
      if (h != nullptr) h->clock.SetDrift(t, std::llround(f.value * 1000));
      return;
    case Kind::kSetJitter:
      network_.SetJitter(f.jitter_median_ns, f.jitter_cap_ns);
      return;
    case Kind::kWriteOverride: {
      if (h == nullptr || !Serving(*h) || f.override_key >= workload_.keys().size()) return;
      const KeySpec& key = workload_.keys()[f.override_key];
      const Instant now = h->clock.At(t);
      out_.clear();
      for (bool descriptor : {false, true}) {
        OverrideWriteRecord w;
        w.at_ns = t;
        w.host = static_cast<uint32_t>(f.host);
        w.key = f.override_key;
        w.descriptor = descriptor;
        const crdt::Selector selector = OverrideSelector(key, descriptor);
        crdt::OverrideValue value;
        value.removed = f.override_remove;
        value.limit = f.override_remove ? 0 : f.override_limit;
        value.window_ms = f.override_remove || !descriptor ? 0 : key.window_ms;
        w.applied = h->node->WriteOverride(selector, value, now, &out_) ==
                    crdt::LimitOverrides::MergeResult::kApplied;
        w.selector_key = selector.Key();
        if (const crdt::OverrideEntry* e = h->node->overrides().FindEntry(w.selector_key)) {
          w.entry = *e;
        }
        for (uint32_t i = 0; i < hosts_.size(); ++i) {
          const bool serving = Serving(hosts_[i]);
          w.generation.push_back(serving ? hosts_[i].generation : 0);
          w.reachable.push_back(serving && network_.CanSend(w.host, i) &&
                                network_.CanSend(i, w.host));
          w.seen_ns.push_back(i == w.host && w.applied ? t : -1);
        }
        record_.override_writes.push_back(std::move(w));
      }
      h->node->Flush(now, &out_);
      Emit(static_cast<uint32_t>(f.host), out_, t, t);
      Rearm(static_cast<uint32_t>(f.host), t);
      return;
    }
  }
}

crdt::Selector OverrideSelector(const KeySpec& key, bool descriptor) {
  crdt::Selector s;
  if (descriptor) {
    s.kind = crdt::Selector::Kind::kDescriptor;
    s.domain = "sim";
    s.entries = {{"endpoint", key.endpoint}, {"user", key.user_id}};
  } else {
    s.kind = crdt::Selector::Kind::kExplicit;
    s.user = key.user_id;
    s.endpoint = key.endpoint;
    s.window_ms = key.window_ms;
  }
  return s;
}

}  // namespace tally::sim

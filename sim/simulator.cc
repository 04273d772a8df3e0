// The event kernel: the queue of (true time, sequence) events, the run loop,
// dispatch by event kind, and the trace hash every concern folds into.
#include "sim/simulator.h"

#include <xxhash.h>

namespace tally::sim {

Simulator::Simulator(SimConfig config)
    : config_(std::move(config)),
      rng_(DeriveSeed(config_.seed, 1)),
      network_(config_.link, DeriveSeed(config_.seed, 2)),
      workload_(config_.workload, WorkloadSeed(config_.seed)) {
  for (uint32_t i = 0; i < workload_.keys().size(); ++i) key_index_[workload_.keys()[i].id] = i;
  record_.config = config_;
  record_.keys = workload_.keys();
}

Simulator::~Simulator() = default;

uint64_t Simulator::HashBytes(const std::vector<std::byte>& bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

void Simulator::Trace(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t x = SplitMix64(a) ^ SplitMix64(b + 0x9e37) ^ SplitMix64(c + 0x7f4a) ^ SplitMix64(~d);
  record_.trace_hash = SplitMix64(record_.trace_hash ^ x);
}

void Simulator::Push(TrueNs at, EventKind kind, uint32_t host, uint64_t arg) {
  queue_.push(Event{at, seq_++, kind, host, arg});
}

RunRecord Simulator::Run() {
  for (size_t i = 0; i < config_.nodes; ++i) AddHost();
  for (uint32_t i = 0; i < config_.nodes; ++i) {
    const TrueNs at = config_.nodes > 1 ? config_.start_spread_ns * i / config_.nodes : 0;
    Push(at, EventKind::kStart, i, 0);
  }
  for (size_t i = 0; i < config_.faults.size(); ++i) {
    Push(config_.faults[i].at_ns, EventKind::kFault, 0, i);
  }
  TrueNs first = 0;
  if (workload_.NextArrival(&first)) Push(first, EventKind::kTraffic, 0, 0);
  Push(config_.inspect_interval_ns, EventKind::kInspect, 0, 0);

  while (!queue_.empty()) {
    const Event e = queue_.top();
    if (e.at > config_.duration_ns || settled_ns_ >= 0) break;
    queue_.pop();
    ++record_.events;
    Dispatch(e);
  }
  while (!queue_.empty()) queue_.pop();

  FinishRecord(settled_ns_ >= 0 ? settled_ns_ : config_.duration_ns);
  return std::move(record_);
}

void Simulator::Dispatch(const Event& e) {
  const TrueNs t = e.at;
  switch (e.kind) {
    case EventKind::kDeliver: {
      Host& h = hosts_[e.host];
      const Packet& p = packets_[e.arg];
      if (!Serving(h) || h.address != p.to_address) {
        FreePacket(e.arg);  // nobody listens there (any more)
        return;
      }
      if (!network_.CanSend(p.from, e.host)) {
        network_.CountCutOnArrival();
        FreePacket(e.arg);
        return;
      }
      Input(h, e);
      return;
    }
    case EventKind::kTimer: {
      Host& h = hosts_[e.host];
      if (!Serving(h) || e.arg != h.timer_token) return;  // superseded
      h.armed_at = INT64_MAX;
      Input(h, e);
      return;
    }
    case EventKind::kClient:
      Input(hosts_[e.host], e);
      return;
    case EventKind::kTraffic: {
      ClientArrival(t);
      TrueNs next = 0;
      if (workload_.NextArrival(&next)) Push(next, EventKind::kTraffic, 0, 0);
      return;
    }
    case EventKind::kFault:
      ApplyFault(config_.faults[e.arg], t);
      return;
    case EventKind::kService: {
      Host& h = hosts_[e.host];
      h.service_pending = false;
      if (!Serving(h) || h.inbox.empty()) return;
      const Event next = h.inbox.front();
      h.inbox.pop_front();
      Execute(e.host, next, t);
      h.busy_until = t + h.service_ns;
      if (Serving(h) && !h.inbox.empty()) {
        h.service_pending = true;
        Push(ServiceStart(h, h.busy_until), EventKind::kService, e.host, 0);
      }
      return;
    }
    case EventKind::kInspect:
      Inspect(t);
      Push(t + config_.inspect_interval_ns, EventKind::kInspect, 0, 0);
      return;
    case EventKind::kStart:
      StartHost(e.host, t);
      NoteMembershipChange(t);
      return;
  }
}

}  // namespace tally::sim

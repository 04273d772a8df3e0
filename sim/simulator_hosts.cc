// Hosts: a Node per simulated machine, started, stopped and fed its inputs
// (peer packets, client datagrams, timers) as bytes at its own clock's
// instant, slow hosts' input queues, and the Outbox routed through the network.
#include <algorithm>
#include <cassert>
#include <cstdio>

#include "daemon/core/peer_kinds.h"
#include "sim/simulator.h"
#include "wire/peer_codec.h"

namespace tally::sim {

std::string HostIdOf(uint32_t index) {
  char id[16];
  std::snprintf(id, sizeof(id), "n%04u", index);
  return id;
}

std::string HostAddressOf(uint32_t index, uint32_t restarts) {
  return "10.0." + std::to_string(index / 256) + "." + std::to_string(index % 256) + ":" +
         std::to_string(7946 + restarts);
}

uint32_t Simulator::AddHost() {
  const auto index = static_cast<uint32_t>(hosts_.size());
  Host h;
  h.id = HostIdOf(index);
  h.address = HostAddressOf(index, 0);
  Random clock_rng(DeriveSeed(config_.seed, 100 + index));
  int64_t offset_ms =
      config_.clock_offset_max_ms > 0
          ? clock_rng.Range(-config_.clock_offset_max_ms, config_.clock_offset_max_ms)
          : 0;
  for (const auto& [host, offset] : config_.clock_offsets_ms) {
    if (host == static_cast<int>(index)) offset_ms = offset;
  }
  const int64_t drift_ppb =
      config_.clock_drift_max_ppm > 0
          ? clock_rng.Range(-config_.clock_drift_max_ppm * 1000, config_.clock_drift_max_ppm * 1000)
          : 0;
  // Monotonic clocks count from each machine's boot, some time before the run.
  const int64_t boot_ns = clock_rng.Range(60, 86'400) * kNsPerS;
  h.clock = NodeClock(offset_ms, drift_ppb, boot_ns);
  hosts_.push_back(std::move(h));
  host_by_id_[hosts_.back().id] = index;
  network_.AddHost();
  record_.host_ids.push_back(hosts_.back().id);
  return index;
}

std::vector<std::string> Simulator::SeedAddresses(uint32_t except) const {
  // Initial start: hosts 0..2 are the seeds (host 0 founds the cluster).
  // Later (re)starts: the three lowest-numbered hosts still serving.
  std::vector<std::string> seeds;
  const bool initial =
      hosts_[except].restarts == 0 && hosts_[except].up_since < 0 && except < config_.nodes;
  if (initial) {
    if (except == 0) return seeds;
    for (uint32_t i = 0; i < 3 && i < config_.nodes; ++i) {
      if (i != except) seeds.push_back(HostAddressOf(i, 0));
    }
    return seeds;
  }
  for (uint32_t i = 0; i < hosts_.size() && seeds.size() < 3; ++i) {
    if (i != except && hosts_[i].state == HostState::kUp) seeds.push_back(hosts_[i].address);
  }
  return seeds;
}

void Simulator::StartHost(uint32_t index, TrueNs t) {
  Host& h = hosts_[index];
  const Instant now = h.clock.At(t);
  core::NodeConfig cfg = config_.node;
  cfg.node_id = h.id;
  cfg.gossip_address = h.address;
  cfg.seeds = SeedAddresses(index);
  // A generation per process start (its start wall time, as tallyd does),
  // strictly increasing even if the wall clock went back.
  h.generation = std::max<uint64_t>(h.generation + 1, static_cast<uint64_t>(now.wall.count()));
  cfg.generation = h.generation;
  cfg.rng_seed = DeriveSeed(config_.seed, 10'000 + uint64_t{index} * 1000 + h.restarts);
  cfg.record_decisions = true;
  h.node = std::make_unique<core::Node>(cfg);
  h.state = HostState::kUp;
  h.up_since = t;
  h.busy_until = t;
  h.seen_suspicions = h.seen_deaths = 0;
  h.fingerprint_version = UINT64_MAX;
  host_by_address_[h.address] = index;
  entry_hosts_.insert(std::lower_bound(entry_hosts_.begin(), entry_hosts_.end(), index), index);
  Trace(5, t, index, h.generation);
  out_.clear();
  h.node->Start(now, &out_);
  h.node->Flush(now, &out_);
  Emit(index, out_, t, t);
  Rearm(index, t);
}

void Simulator::StopHost(uint32_t index, TrueNs t, HostState state) {
  Host& h = hosts_[index];
  for (const Event& e : h.inbox) {
    if (e.kind == EventKind::kDeliver || e.kind == EventKind::kClient) FreePacket(e.arg);
  }
  h.inbox.clear();
  h.node.reset();
  h.state = state;
  ++h.timer_token;
  h.armed_at = INT64_MAX;
  auto it = host_by_address_.find(h.address);
  if (it != host_by_address_.end() && it->second == index) host_by_address_.erase(it);
  auto e = std::lower_bound(entry_hosts_.begin(), entry_hosts_.end(), index);
  if (e != entry_hosts_.end() && *e == index) entry_hosts_.erase(e);
  Trace(6, t, index, static_cast<uint64_t>(state));
}

void Simulator::Input(Host& h, const Event& e) {
  const auto index = static_cast<uint32_t>(&h - hosts_.data());
  if (!Serving(h)) {
    if (e.kind == EventKind::kDeliver || e.kind == EventKind::kClient) FreePacket(e.arg);
    return;
  }
  if (h.service_ns > 0 || h.stall_ns > 0 || !h.inbox.empty()) {
    // A slow host works through its inputs one at a time.
    h.inbox.push_back(e);
    if (!h.service_pending) {
      h.service_pending = true;
      Push(ServiceStart(h, e.at), EventKind::kService, index, 0);
    }
    return;
  }
  Execute(index, e, e.at);
}

TrueNs Simulator::ServiceStart(const Host& h, TrueNs t) const {
  t = std::max(t, h.busy_until);
  if (h.stall_ns > 0 && h.stall_every_ns > 0 && t >= h.stall_from) {
    const int64_t phase = (t - h.stall_from) % h.stall_every_ns;
    if (phase < h.stall_ns) t += h.stall_ns - phase;  // nothing runs during a stall
  }
  return t;
}

void Simulator::Execute(uint32_t index, const Event& e, TrueNs t) {
  Host& h = hosts_[index];
  const Instant now = h.clock.At(t);
  out_.clear();
  switch (e.kind) {
    case EventKind::kDeliver: {
      Packet& p = packets_[e.arg];
      Trace(1, t, (uint64_t{p.from} << 32) | index, HashBytes(p.bytes));
      ++record_.deliveries;
      h.node->OnPeerMessage(p.from_address, p.bytes, now, &out_);
      FreePacket(e.arg);
      break;
    }
    case EventKind::kClient: {
      Packet& p = packets_[e.arg];
      Trace(3, t, index, p.token);
      h.node->OnClientDatagram(p.token, p.bytes, now, &out_);
      FreePacket(e.arg);
      break;
    }
    case EventKind::kTimer:
      if (now.monotonic < h.node->NextDeadline()) break;  // early: just re-arm
      h.node->Tick(now, &out_);
      h.last_tick = t;
      break;
    default:
      assert(false);
  }
  h.node->Flush(now, &out_);
  Emit(index, out_, t, t + h.service_ns);
  ObserveSuspicions(index, t);
  // The network model holds no send queue: nothing of ours waits to leave.
  if (h.state == HostState::kLeaving && h.node->LeaveComplete(now, /*transport_idle=*/true)) {
    StopHost(index, t, HostState::kGone);
    NoteMembershipChange(t);
    return;
  }
  Rearm(index, t);
}

void Simulator::Rearm(uint32_t index, TrueNs t) {
  Host& h = hosts_[index];
  if (!Serving(h)) return;
  TrueNs fire = h.clock.TrueTimeOfMonotonic(h.node->NextDeadline().count());
  if (fire <= t) {
    if (h.last_tick == t) {
      // Tick left its deadline in the past: do not spin at one instant.
      ++record_.stuck_deadlines;
      fire = t + 100'000;
    } else {
      fire = t;
    }
  }
  fire += h.tick_lag_ns;
  if (fire >= h.armed_at) return;
  h.armed_at = fire;
  Push(fire, EventKind::kTimer, index, ++h.timer_token);
}

std::string Simulator::KindOf(const core::Outbox::PeerPacket& packet) {
  if (!packet.node_kind) return "swim:" + std::string(membership::KindName(packet.swim_kind));
  return std::string("node:") + core::kPeerMessageKindNames[packet.kind_index()];
}

void Simulator::Emit(uint32_t index, core::Outbox& out, TrueNs t, TrueNs leave_at) {
  Host& h = hosts_[index];
  const bool counted = cost_active_ && t < config_.cost_to_ns;
  for (core::Outbox::PeerPacket& p : out.peer) {
    if (counted) {
      ++h.messages_sent;
      h.bytes_sent += p.bytes.size();
      CostRecord::PerKind& k = record_.cost.by_kind[KindOf(p)];
      ++k.messages;
      k.bytes += p.bytes.size();
    }
    auto it = host_by_address_.find(p.to_address);
    if (it == host_by_address_.end()) continue;  // no such address: the packet goes nowhere
    if (config_.drop_replication && p.carries_counts()) {
      ++record_.dropped_replication;
      continue;
    }
    const uint32_t to = it->second;
    if (!config_.dump_key.empty()) DumpPacket(index, to, p.bytes, t);
    network_.Route(index, to, p.stream, leave_at, &deliveries_);
    for (size_t i = 0; i < deliveries_.size(); ++i) {
      const uint64_t pi = AllocPacket();
      Packet& packet = packets_[pi];
      packet.from = index;
      packet.from_address = h.address;
      packet.to_address = p.to_address;
      packet.stream = p.stream;
      if (i + 1 == deliveries_.size()) {
        packet.bytes = std::move(p.bytes);
      } else {
        packet.bytes = p.bytes;
      }
      Push(deliveries_[i], EventKind::kDeliver, to, pi);
    }
  }
  for (const core::Outbox::ClientReply& reply : out.client) RecordReply(reply, leave_at);
  for (const core::Outbox::Decision& d : out.decisions) {
    DecisionRecord r;
    r.at_ns = t;
    r.host = index;
    r.generation = h.generation;
    r.request_id = d.request_id;
    auto k = key_index_.find(d.key);
    r.key = k == key_index_.end() ? UINT32_MAX : k->second;
    r.hits = d.hits;
    r.limit = d.limit;
    r.window_ms = d.window_ms;
    r.wall_ms = d.wall_ms;
    r.allowed = d.allowed;
    r.clock_error_ms = h.clock.ErrorMs(t);
    Trace(2, t, (uint64_t{index} << 32) | r.key, (d.request_id << 1) | (d.allowed ? 1 : 0));
    record_.decisions.push_back(r);
  }
}

uint64_t Simulator::AllocPacket() {
  if (!free_packets_.empty()) {
    uint64_t i = free_packets_.back();
    free_packets_.pop_back();
    return i;
  }
  packets_.emplace_back();
  return packets_.size() - 1;
}

void Simulator::FreePacket(uint64_t index) {
  Packet& p = packets_[index];
  p.bytes.clear();
  p.bytes.shrink_to_fit();
  free_packets_.push_back(index);
}

}  // namespace tally::sim

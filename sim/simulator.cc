#include "sim/simulator.h"

#include <xxhash.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>

#include "membership/ring.h"
#include "wire/peer_codec.h"

namespace tally::sim {
namespace {

using membership::MemberState;

uint64_t HashBytes(const std::vector<std::byte>& bytes) {
  return XXH3_64bits(bytes.data(), bytes.size());
}

// Order-sensitive fingerprint of (id, generation) pairs.
uint64_t FoldMember(uint64_t h, const std::string& id, uint64_t generation) {
  return SplitMix64(h ^ XXH3_64bits(id.data(), id.size()) ^ SplitMix64(generation));
}

}  // namespace

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

void Simulator::Trace(uint64_t a, uint64_t b, uint64_t c, uint64_t d) {
  uint64_t x = SplitMix64(a) ^ SplitMix64(b + 0x9e37) ^ SplitMix64(c + 0x7f4a) ^ SplitMix64(~d);
  record_.trace_hash = SplitMix64(record_.trace_hash ^ x);
}

void Simulator::Push(TrueNs at, EventKind kind, uint32_t host, uint64_t arg) {
  queue_.push(Event{at, seq_++, kind, host, arg});
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

void Simulator::NoteMembershipChange(TrueNs t) {
  OwnershipEpoch epoch;
  epoch.changed_ns = t;
  record_.ownership.push_back(epoch);
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

  const TrueNs end = settled_ns_ >= 0 ? settled_ns_ : config_.duration_ns;
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
  if (h.state == HostState::kLeaving && (h.node->swim().LeaveFlushed() || t >= h.leave_deadline)) {
    StopHost(index, t, HostState::kGone);
    NoteMembershipChange(t);
    return;
  }
  Rearm(index, t);
}

std::string Simulator::KindOf(const std::vector<std::byte>& bytes, bool* replication) {
  *replication = false;
  wire::PeerMessageReader reader;
  std::string why;
  if (reader.Decode(bytes, &why) != Status::kOk) return "malformed";
  if (reader.is_swim()) return "swim:" + std::string(membership::KindName(reader.swim().kind()));
  wire::NodeMessageValue msg;
  if (!reader.ReadNode(&msg, &why)) return "node:malformed";
  using Kind = wire::NodeMessageValue::Kind;
  static constexpr const char* kNames[] = {"forward",         "forward_reply", "replicate",
                                           "replicate_ack",   "digest",        "state_push",
                                           "handoff_request", "handoff_done"};
  const auto k = static_cast<size_t>(msg.kind);
  *replication = msg.kind == Kind::kReplicate || msg.kind == Kind::kStatePush;
  return std::string("node:") + (k < std::size(kNames) ? kNames[k] : "other");
}

void Simulator::Emit(uint32_t index, core::Outbox& out, TrueNs t, TrueNs leave_at) {
  Host& h = hosts_[index];
  const bool counted = cost_active_ && t < config_.cost_to_ns;
  for (core::Outbox::PeerPacket& p : out.peer) {
    bool replication = false;
    if (counted || config_.drop_replication) {
      const std::string kind = KindOf(p.bytes, &replication);
      if (counted) {
        ++h.messages_sent;
        h.bytes_sent += p.bytes.size();
        CostRecord::PerKind& k = record_.cost.by_kind[kind];
        ++k.messages;
        k.bytes += p.bytes.size();
      }
    }
    auto it = host_by_address_.find(p.to_address);
    if (it == host_by_address_.end()) continue;  // no such address: the packet goes nowhere
    if (config_.drop_replication && replication) {
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

void Simulator::RecordReply(const core::Outbox::ClientReply& reply, TrueNs t) {
  Trace(7, t, reply.reply_token, HashBytes(reply.bytes));
  if (reply.reply_token == 0 || reply.reply_token > datagram_requests_.size()) return;
  const std::vector<uint64_t>& ids = datagram_requests_[reply.reply_token - 1];
  std::string why;
  if (reply_reader_.Decode(reply.bytes, &why) != Status::kOk ||
      reply_reader_.kind() != wire::MessageKind::kResponses) {
    for (uint64_t id : ids) {
      RequestRecord& r = record_.requests[id - 1];
      ++r.replies;
      r.status = Status::kMalformed;
    }
    return;
  }
  const auto& responses = reply_reader_.responses();
  for (size_t i = 0; i < ids.size(); ++i) {
    RequestRecord& r = record_.requests[ids[i] - 1];
    ++r.replies;
    if (r.replies > 1) continue;
    r.replied_ns = t;
    if (i >= responses.size() || responses[i].request_id != r.request_id) {
      r.status = Status::kInternal;  // reply does not match the request
      continue;
    }
    r.allowed = responses[i].allowed;
    r.status = responses[i].status;
  }
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

void Simulator::ClientArrival(TrueNs t) {
  if (entry_hosts_.empty()) return;
  workload_.MakeBatch(&batch_);
  const uint32_t entry = entry_hosts_[rng_.Below(entry_hosts_.size())];
  const uint64_t token = datagram_requests_.size() + 1;
  std::vector<uint64_t> ids;
  refs_.clear();
  for (const Workload::Check& c : batch_) {
    const KeySpec& k = workload_.keys()[c.key];
    RequestRecord r;
    r.request_id = record_.requests.size() + 1;
    r.key = static_cast<uint32_t>(c.key);
    r.entry_host = entry;
    r.entry_generation = hosts_[entry].generation;
    r.hits = c.hits;
    r.sent_ns = t;
    record_.requests.push_back(r);
    ids.push_back(r.request_id);
    refs_.push_back(k.Check(r.request_id, c.hits));
  }
  datagram_requests_.push_back(std::move(ids));
  const uint64_t pi = AllocPacket();
  Packet& p = packets_[pi];
  p.from = UINT32_MAX;
  p.token = token;
  wire::EncodeChecks(refs_, &p.bytes);
  Host& h = hosts_[entry];
  if (cost_active_ && t < config_.cost_to_ns) ++h.client_datagrams;
  // The client sits next to its node: the datagram arrives now, never lost.
  Input(h, Event{t, seq_++, EventKind::kClient, entry, pi});
}

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
      h->leave_deadline = t + 5 * kNsPerS;
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
  }
}

// ---------------------------------------------------------------- inspection

void Simulator::Inspect(TrueNs t) {
  TrackDetections(t);
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
      } else if (hash != first) {
        record_.convergence_note = "key " + std::to_string(k) + " (" + workload_.keys()[k].user_id +
                                   "): " + h.id + " differs from " + ring.members()[pref[0]].id +
                                   " at t=" + std::to_string(t / kNsPerMs) + "ms";
        return;
      }
    }
    live += any ? 1 : 0;
  }
  record_.converged_ns = t;
  record_.convergence_keys = live;
  record_.convergence_note.clear();
}

void Simulator::DumpPacket(uint32_t from, uint32_t to, const std::vector<std::byte>& bytes,
                           TrueNs t) {
  wire::PeerMessageReader reader;
  std::string why;
  if (reader.Decode(bytes, &why) != Status::kOk || reader.is_swim()) return;
  wire::NodeMessageValue msg;
  if (!reader.ReadNode(&msg, &why)) return;
  using Kind = wire::NodeMessageValue::Kind;
  char buf[200];
  if (msg.kind == Kind::kForward) {
    for (const auto& f : msg.forwards) {
      if (f.check.user_id != config_.dump_key) continue;
      std::snprintf(buf, sizeof(buf), "  t=%10.6f s  forward %s -> %s  fwd %llu req %llu hops %u\n",
                    static_cast<double>(t) / 1e9, hosts_[from].id.c_str(), hosts_[to].id.c_str(),
                    static_cast<unsigned long long>(f.forward_id),
                    static_cast<unsigned long long>(f.check.request_id), unsigned{f.hops});
      record_.debug += buf;
      watched_forwards_.insert({to, f.forward_id});
    }
  } else if (msg.kind == Kind::kForwardReply) {
    for (const auto& r : msg.results) {
      if (!watched_forwards_.contains({from, r.forward_id})) continue;
      std::snprintf(buf, sizeof(buf), "  t=%10.6f s  reply   %s -> %s  fwd %llu %s\n",
                    static_cast<double>(t) / 1e9, hosts_[from].id.c_str(), hosts_[to].id.c_str(),
                    static_cast<unsigned long long>(r.forward_id),
                    r.result.allowed ? "allowed" : "denied");
      record_.debug += buf;
    }
  }
}

std::string Simulator::DumpKey(const std::string& user_id, TrueNs t) const {
  std::string out;
  uint32_t k = UINT32_MAX;
  for (uint32_t i = 0; i < workload_.keys().size(); ++i) {
    if (workload_.keys()[i].user_id == user_id) k = i;
  }
  if (k == UINT32_MAX) return "dump: no key " + user_id + "\n";
  const KeySpec& spec = workload_.keys()[k];
  char buf[256];
  std::snprintf(buf, sizeof(buf), "dump %s: window %llu ms, limit %llu\n", user_id.c_str(),
                static_cast<unsigned long long>(spec.window_ms),
                static_cast<unsigned long long>(spec.limit));
  out += buf;
  for (const DecisionRecord& d : record_.decisions) {
    if (d.key != k) continue;
    std::snprintf(buf, sizeof(buf), "  t=%10.3f s  %s gen %llu  wall %+8.3f s  req %llu  %s %llu\n",
                  static_cast<double>(d.at_ns) / 1e9, hosts_[d.host].id.c_str(),
                  static_cast<unsigned long long>(d.generation),
                  static_cast<double>(d.wall_ms - kEpochWallMs) / 1e3,
                  static_cast<unsigned long long>(d.request_id), d.allowed ? "ALLOW" : "deny",
                  static_cast<unsigned long long>(d.hits));
    out += buf;
  }
  for (const Host& h : hosts_) {
    if (!h.node) continue;
    const crdt::KeyStore::Entry* e = h.node->store().Find(spec.id);
    if (e == nullptr) {
      out += "  " + h.id + ": no entry\n";
      continue;
    }
    const crdt::WindowCounter& c = e->counter;
    const crdt::Geometry g = c.geometry();
    std::snprintf(buf, sizeof(buf), "  %s: newest bucket %lld (wall %+.3f s), prefs", h.id.c_str(),
                  static_cast<long long>(c.newest_bucket()),
                  static_cast<double>(c.newest_bucket() * g.bucket_ms - kEpochWallMs) / 1e3);
    out += buf;
    for (const std::string& id : h.node->PreferenceList(spec.id)) out += " " + id;
    out += "\n";
    for (size_t r = 0; r < c.row_count(); ++r) {
      const crdt::ReplicaSlot& slot = h.node->store().slots().Get(c.row_slot(r));
      out += "    slot " + slot.node_id + "/" + std::to_string(slot.incarnation) + ":";
      for (int64_t b = c.newest_bucket() - g.span; b <= c.newest_bucket(); ++b) {
        out += ' ';
        out += std::to_string(c.count(r, b));
      }
      out += "\n";
    }
  }
  return out;
}

}  // namespace tally::sim

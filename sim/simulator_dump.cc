// Debugging output for --dump-key: one key's decisions, replicas and the
// forwards that carried it, appended to RunRecord::debug.
#include <cstdio>

#include "sim/simulator.h"
#include "wire/peer_codec.h"

namespace tally::sim {

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
  } else if (msg.kind == Kind::kReplicateDelta) {
    // A decider's changed cells of the key: bucket=count each.
    const crdt::KeyId id = DumpKeyId();
    std::string cells;
    for (const wire::DeltaCellValue& c : msg.delta.cells) {
      if (c.key_high != id.high || c.key_low != id.low) continue;
      cells += " " + std::to_string(c.bucket) + "=" + std::to_string(c.count);
    }
    if (!cells.empty()) {
      std::snprintf(buf, sizeof(buf),
                    "  t=%10.6f s  delta     %s -> %s  %s:", static_cast<double>(t) / 1e9,
                    hosts_[from].id.c_str(), hosts_[to].id.c_str(), msg.delta.slot.node_id.c_str());
      record_.debug += buf + cells + "\n";
    }
  } else if (msg.kind == Kind::kReplicate || msg.kind == Kind::kStatePush) {
    // What state of the key a member sent (it may still be lost on the way):
    // each row as slot=sum of its counts, newest bucket first.
    const crdt::KeyId id = DumpKeyId();
    for (const wire::CounterValue& c : msg.replicate.counters) {
      if (c.key_high != id.high || c.key_low != id.low) continue;
      std::snprintf(
          buf, sizeof(buf), "  t=%10.6f s  %s %s -> %s  newest %lld:", static_cast<double>(t) / 1e9,
          msg.kind == Kind::kReplicate ? "replicate" : "state    ", hosts_[from].id.c_str(),
          hosts_[to].id.c_str(), static_cast<long long>(c.newest_bucket));
      record_.debug += buf;
      for (const wire::CounterValue::Row& row : c.rows) {
        uint64_t sum = 0;
        for (uint32_t n : row.counts) sum += n;
        const std::string slot = row.slot < msg.replicate.slots.size()
                                     ? msg.replicate.slots[row.slot].node_id
                                     : std::string("?");
        record_.debug += " " + slot + "=" + std::to_string(sum);
      }
      record_.debug += "\n";
    }
  }
}

crdt::KeyId Simulator::DumpKeyId() const {
  for (const KeySpec& spec : workload_.keys()) {
    if (spec.user_id == config_.dump_key) return spec.id;
  }
  return crdt::KeyId{};
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

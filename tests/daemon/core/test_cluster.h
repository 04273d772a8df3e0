// A deterministic in-test cluster of Nodes on fake time, for the node tests
// (node_test.cc, node_validation_test.cc): an in-test network delivers Outbox
// bytes (so the peer codec is exercised too) after 0.2 ms, with optional cuts,
// dropped forwards and per-node wall-clock offsets.
#ifndef TALLY_TESTS_DAEMON_CORE_TEST_CLUSTER_H_
#define TALLY_TESTS_DAEMON_CORE_TEST_CLUSTER_H_

#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <queue>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "daemon/core/node.h"
#include "wire/codec.h"
#include "wire/peer_codec.h"

namespace tally::core::testing {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr int64_t kStartWallMs = 1'700'000'000'000;

class TestCluster {
 public:
  explicit TestCluster(uint64_t seed = 1) : seed_(seed) {}

  NodeConfig ConfigFor(const std::string& id) {
    NodeConfig c;
    c.node_id = id;
    c.gossip_address = AddressOf(id);
    c.generation = ++generations_;
    c.rng_seed = seed_ * 1000 + generations_;
    c.swim.probe_interval_ms = 200;
    c.swim.probe_timeout_ms = 100;
    c.swim.gossip_interval_ms = 50;
    c.swim.push_pull_interval_ms = 5000;
    c.swim.reconnect_interval_ms = 2000;
    c.handoff_timeout_ms = 2000;
    c.record_decisions = true;
    return c;
  }

  static std::string AddressOf(const std::string& id) { return "10.0.0." + id.substr(1) + ":7946"; }

  Node& Add(const std::string& id, bool join = true) {
    NodeConfig c = ConfigFor(id);
    if (join && !nodes_.empty()) c.seeds = {AddressOf(nodes_.begin()->first)};
    return AddWith(c);
  }

  // n1 .. n<n>, every later one joining through n1, then `settle_ms` of
  // fake time for membership to converge and warm-ups to end.
  void Form(int n, int64_t settle_ms = 5000) {
    Add("n1", false);
    for (int i = 2; i <= n; ++i) Add("n" + std::to_string(i));
    RunFor(settle_ms);
  }

  Node& AddWith(const NodeConfig& c) {
    auto& entry = nodes_[c.node_id];
    entry.node = std::make_unique<Node>(c);
    entry.address = c.gossip_address;
    entry.up = true;
    Outbox out;
    entry.node->Start(Now(), &out);
    Dispatch(c.node_id, out);
    return *entry.node;
  }

  void Crash(const std::string& id) { nodes_.at(id).up = false; }
  // A graceful leave (the node keeps running until the test crashes it).
  void Leave(const std::string& id) {
    Outbox out;
    node(id).Leave(NowAt(id), &out);
    node(id).Flush(NowAt(id), &out);
    Dispatch(id, out);
  }
  void Cut(const std::string& a, const std::string& b) {
    cuts_.insert({a, b});
    cuts_.insert({b, a});
  }
  void HealAll() { cuts_.clear(); }
  // Loses the next `count` forward datagrams from `from` to `to` (other
  // traffic between them still flows).
  void DropForwards(const std::string& from, const std::string& to, int count) {
    drop_forwards_[{from, to}] += count;
  }
  // Loses the next `count` node messages of `kind` from `from` to `to`.
  void DropMessages(const std::string& from, const std::string& to,
                    wire::NodeMessageValue::Kind kind, int count) {
    drop_kinds_[{from, to, kind}] += count;
  }
  // Delays the next `count` forward datagrams from `from` to `to` by
  // `extra_ms` beyond the usual latency (a slow link; other traffic flows).
  void SlowForwards(const std::string& from, const std::string& to, int64_t extra_ms, int count) {
    slow_forwards_[{from, AddressOf(to)}] = {extra_ms, count};
  }
  // Delivers raw peer bytes to `to` as if sent from `from_address`.
  void Inject(const std::string& to, const std::string& from_address,
              const std::vector<std::byte>& bytes) {
    // At the receiver's clock: a node reads its own wall clock, offset and all.
    Outbox out;
    node(to).OnPeerMessage(from_address, bytes, NowAt(to), &out);
    node(to).Flush(NowAt(to), &out);
    Dispatch(to, out);
  }
  // Datagram bytes (not stream) sent so far to an address, by every node.
  size_t DatagramBytesSentTo(const std::string& address) const {
    auto it = datagram_bytes_.find(address);
    return it == datagram_bytes_.end() ? 0 : it->second;
  }
  // Node messages of `kind` sent so far to an address.
  int SentTo(const std::string& address, wire::NodeMessageValue::Kind kind) const {
    auto it = sent_.find({address, kind});
    return it == sent_.end() ? 0 : it->second;
  }

  // Node messages `from` (an id) sent packed (wire::kPackedMarker) so far
  // to an address.
  int PackedSent(const std::string& from, const std::string& address) const {
    auto it = packed_sent_.find({from, address});
    return it == packed_sent_.end() ? 0 : it->second;
  }

  // Peer packets (gossip or node messages) sent so far to an address.
  int SentToAny(const std::string& address) const {
    auto it = sent_any_.find(address);
    return it == sent_any_.end() ? 0 : it->second;
  }

  Instant Now() const {
    return Instant{milliseconds(kStartWallMs + now_ns_ / 1'000'000), nanoseconds(now_ns_)};
  }  // `id`'s reading of the clocks: its wall clock may be set off.
  Instant NowAt(const std::string& id) const {
    Instant t = Now();
    auto it = wall_offsets_ms_.find(id);
    if (it != wall_offsets_ms_.end()) t.wall += milliseconds(it->second);
    return t;
  }
  void SetWallOffset(const std::string& id, int64_t offset_ms) { wall_offsets_ms_[id] = offset_ms; }

  // Runs the network and every node's timers for `ms` of fake time.
  void RunFor(int64_t ms) {
    const int64_t end = now_ns_ + ms * 1'000'000;
    while (true) {
      int64_t next = end;
      if (!in_flight_.empty()) next = std::min(next, in_flight_.top().at_ns);
      for (auto& [id, e] : nodes_) {
        if (e.up) next = std::min(next, std::max(now_ns_, e.node->NextDeadline().count()));
      }
      if (next >= end && (in_flight_.empty() || in_flight_.top().at_ns > end)) {
        now_ns_ = end;
        return;
      }
      now_ns_ = std::max(now_ns_, next);
      while (!in_flight_.empty() && in_flight_.top().at_ns <= now_ns_) {
        Packet p = in_flight_.top();
        in_flight_.pop();
        Deliver(p);
      }
      for (auto& [id, e] : nodes_) {
        if (!e.up || e.node->NextDeadline().count() > now_ns_) continue;
        Outbox out;
        e.node->Tick(NowAt(id), &out);
        Dispatch(id, out);
      }
    }
  }

  // Hands one check to `via` without running the network; returns the
  // token AwaitReply waits for.
  uint64_t StartCheck(const std::string& via, const CheckRequest& req) {
    std::vector<std::byte> bytes;
    CheckRequestRef ref(req);
    wire::EncodeChecks(std::span<const CheckRequestRef>(&ref, 1), &bytes);
    const uint64_t token = ++next_token_;
    Outbox out;
    nodes_.at(via).node->OnClientDatagram(token, bytes, NowAt(via), &out);
    nodes_.at(via).node->Flush(NowAt(via), &out);
    Dispatch(via, out);
    return token;
  }

  // Hands raw client bytes to `via`, runs until answered (at most
  // max_wait_ms); returns the reply's bytes, or nothing.
  std::optional<std::vector<std::byte>> ClientDatagram(const std::string& via,
                                                       const std::vector<std::byte>& bytes,
                                                       int64_t max_wait_ms = 2000) {
    const uint64_t token = ++next_token_;
    Outbox out;
    nodes_.at(via).node->OnClientDatagram(token, bytes, NowAt(via), &out);
    nodes_.at(via).node->Flush(NowAt(via), &out);
    Dispatch(via, out);
    for (int64_t waited = 0; waited <= max_wait_ms && !replies_.contains(token); waited += 1) {
      RunFor(1);
    }
    auto it = replies_.find(token);
    if (it == replies_.end()) return std::nullopt;
    return it->second;
  }

  // Sends one check through `via` and runs until its reply arrives.
  std::optional<CheckResult> Check(const std::string& via, const CheckRequest& req,
                                   int64_t max_wait_ms = 2000) {
    return AwaitReply(StartCheck(via, req), max_wait_ms);
  }

  // Runs until the reply of `token` arrives (at most max_wait_ms).
  std::optional<CheckResult> AwaitReply(uint64_t token, int64_t max_wait_ms = 2000) {
    for (int64_t waited = 0; waited <= max_wait_ms && !replies_.contains(token); waited += 1) {
      RunFor(1);
    }
    auto it = replies_.find(token);
    if (it == replies_.end()) return std::nullopt;
    wire::ClientMessageReader reader;
    std::string why;
    if (reader.Decode(it->second, &why) != Status::kOk || reader.responses().size() != 1) {
      ADD_FAILURE() << "bad reply: " << why;
      return std::nullopt;
    }
    return reader.responses()[0];
  }

  Node& node(const std::string& id) { return *nodes_.at(id).node; }
  bool AllSeeAlive(const std::vector<std::string>& ids) {
    for (const auto& a : ids) {
      NodeStatus s = node(a).Status(Now());
      for (const auto& b : ids) {
        bool ok = false;
        for (const auto& m : s.members) ok = ok || (m.id == b && m.state == "alive");
        if (!ok) return false;
      }
    }
    return true;
  }
  std::vector<Outbox::Decision>& decisions(const std::string& id) { return decisions_[id]; }
  // What `id`'s Node said it did (Outbox::events), in order.
  std::vector<NodeEvent>& events(const std::string& id) { return events_[id]; }

  // Sees every peer packet a node sends (its id, the packet) before the
  // network takes it.
  std::function<void(const std::string&, const Outbox::PeerPacket&)> observe_peer;

  // Calls `f(node, now, out)` on `id` at its reading of the clocks and sends
  // what it put in the Outbox (for Node calls the harness does not wrap).
  template <typename F>
  auto Call(const std::string& id, F f) {
    Outbox out;
    auto result = f(node(id), NowAt(id), &out);
    Dispatch(id, out);
    return result;
  }

 private:
  struct Entry {
    std::unique_ptr<Node> node;
    std::string address;
    bool up = true;
  };
  struct Packet {
    int64_t at_ns;
    uint64_t seq;
    std::string from, to_address;
    std::vector<std::byte> bytes;
    std::optional<wire::NodeMessageValue::Kind> node_kind;  // unset: SWIM
    bool operator>(const Packet& o) const {
      return at_ns != o.at_ns ? at_ns > o.at_ns : seq > o.seq;
    }
  };

  // Every packet's stated kind is what its bytes hold (drivers trust it).
  static void ExpectKindMatchesBytes(const Outbox::PeerPacket& p) {
    wire::PeerMessageReader reader;
    std::string why;
    ASSERT_EQ(reader.Decode(p.bytes, &why), Status::kOk) << why;
    if (reader.is_swim()) {
      EXPECT_FALSE(p.node_kind.has_value());
      EXPECT_EQ(p.swim_kind, reader.swim().kind());
      return;
    }
    wire::NodeMessageValue msg;
    ASSERT_TRUE(reader.ReadNode(&msg, &why)) << why;
    EXPECT_EQ(p.node_kind, msg.kind);
  }

  void Dispatch(const std::string& from, Outbox& out) {
    for (auto& p : out.peer) {
      ExpectKindMatchesBytes(p);
      if (observe_peer) observe_peer(from, p);
      if (p.node_kind) ++sent_[{p.to_address, *p.node_kind}];
      if (!p.bytes.empty() && p.bytes[0] == wire::kPackedMarker)
        ++packed_sent_[{from, p.to_address}];
      if (!p.stream) datagram_bytes_[p.to_address] += p.bytes.size();
      ++sent_any_[p.to_address];
      int64_t delay_ns = 200'000;
      auto slow = slow_forwards_.find({from, p.to_address});
      if (slow != slow_forwards_.end() && slow->second.second > 0 &&
          p.node_kind == wire::NodeMessageValue::Kind::kForward) {
        --slow->second.second;
        delay_ns += slow->second.first * 1'000'000;
      }
      in_flight_.push(
          Packet{now_ns_ + delay_ns, ++seq_, from, p.to_address, std::move(p.bytes), p.node_kind});
    }
    for (auto& r : out.client) replies_[r.reply_token] = std::move(r.bytes);
    for (auto& d : out.decisions) decisions_[from].push_back(d);
    for (auto& e : out.events) events_[from].push_back(std::move(e));
    out.clear();
  }

  void Deliver(const Packet& p) {
    for (auto& [id, e] : nodes_) {
      if (e.address != p.to_address) continue;
      if (!e.up || cuts_.contains({p.from, id})) return;
      auto drop = drop_forwards_.find({p.from, id});
      if (drop != drop_forwards_.end() && drop->second > 0 &&
          p.node_kind == wire::NodeMessageValue::Kind::kForward) {
        --drop->second;
        return;
      }
      if (p.node_kind) {
        auto dk = drop_kinds_.find({p.from, id, *p.node_kind});
        if (dk != drop_kinds_.end() && dk->second > 0) {
          --dk->second;
          return;
        }
      }
      Outbox out;
      e.node->OnPeerMessage(nodes_.at(p.from).address, p.bytes, NowAt(id), &out);
      e.node->Flush(NowAt(id), &out);
      Dispatch(id, out);
      return;
    }
  }

  uint64_t seed_;
  uint64_t generations_ = 0;
  int64_t now_ns_ = 0;
  uint64_t seq_ = 0, next_token_ = 0;
  std::map<std::string, Entry> nodes_;
  std::priority_queue<Packet, std::vector<Packet>, std::greater<>> in_flight_;
  std::set<std::pair<std::string, std::string>> cuts_;
  std::map<std::pair<std::string, std::string>, int> drop_forwards_;
  std::map<std::tuple<std::string, std::string, wire::NodeMessageValue::Kind>, int> drop_kinds_;
  // (from id, to address) -> (extra ms, forwards left to delay)
  std::map<std::pair<std::string, std::string>, std::pair<int64_t, int>> slow_forwards_;
  std::map<std::pair<std::string, wire::NodeMessageValue::Kind>, int> sent_;
  std::map<uint64_t, std::vector<std::byte>> replies_;
  std::map<std::string, size_t> datagram_bytes_;
  std::map<std::string, int> sent_any_;  // peer packets of any kind, by address
  std::map<std::pair<std::string, std::string>, int> packed_sent_;  // (from id, to address)
  std::map<std::string, std::vector<Outbox::Decision>> decisions_;
  std::map<std::string, std::vector<NodeEvent>> events_;
  std::map<std::string, int64_t> wall_offsets_ms_;
};

}  // namespace tally::core::testing

#endif  // TALLY_TESTS_DAEMON_CORE_TEST_CLUSTER_H_

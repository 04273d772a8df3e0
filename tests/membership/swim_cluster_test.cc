// Swim clusters on fake time, over a tiny in-test network: a map from address
// to Swim, and a queue of in-flight messages with latency, optional loss,
// partitions and slow nodes, all driven by one seeded generator. Every
// message crosses the network as Cap'n Proto bytes (wire/peer_codec.h), so
// the codec is exercised and each datagram's real size is checked against
// max_packet_bytes and against the estimate Swim packs by.
//
// Each scenario states its goal and method in a comment. A failure prints
// the seed; every run with the same seed is identical (SameSeedSameRun).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "membership/random.h"
#include "membership/swim.h"
#include "membership/timing.h"
#include "wire/peer_codec.h"

namespace tally::membership {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;
using std::chrono::seconds;

constexpr int64_t kEpochMs = 1'700'000'000'000;
constexpr nanoseconds kNever = nanoseconds::max();

struct Packet {
  std::string from, to;
  const SwimMessage* msg;
  size_t bytes;
  bool stream;
  nanoseconds at;
};

struct NetOptions {
  nanoseconds latency = milliseconds(1);
  nanoseconds jitter = milliseconds(2);
  nanoseconds stream_latency = milliseconds(3);
  double loss = 0;  // datagrams only; streams are reliable (TCP)
};

class Network {
 public:
  using Options = NetOptions;

  explicit Network(uint64_t seed, Options options = {}) : rng_(seed), options_(options) {}

  // Adds (or, on an address already used, replaces) a node; not started.
  Swim& Add(const std::string& id, const std::string& address, uint64_t generation,
            std::vector<std::string> seeds, SwimConfig config = {}, int64_t clock_offset_ms = 0) {
    Unschedule(address);
    Node node;
    node.swim = std::make_unique<Swim>(config, Swim::Self{id, address, generation},
                                       std::move(seeds), rng_());
    node.clock_offset_ms = clock_offset_ms;
    // Each node's monotonic clock has its own origin: nothing may compare them.
    node.mono_origin = milliseconds(static_cast<int64_t>(UniformBelow(rng_, 1'000'000)));
    node.max_packet_bytes = config.max_packet_bytes;
    auto& slot = nodes_[address];
    slot = std::move(node);
    return *slot.swim;
  }
  void Start(const std::string& address) {
    Node& n = nodes_.at(address);
    n.up = true;
    std::vector<Outbound> out;
    n.swim->Start(InstantFor(n), &out);
    Dispatch(address, &out);
    Reschedule(address);
  }
  void StartAll() {
    for (auto& [address, n] : nodes_) {
      if (!n.up) Start(address);
    }
  }
  void Leave(const std::string& address) {
    Node& n = nodes_.at(address);
    std::vector<Outbound> out;
    n.swim->Leave(InstantFor(n), &out);
    Dispatch(address, &out);
    Reschedule(address);
  }
  // A datagram `msg` to `to` claiming to come from `from_address`, which may
  // be no node at all (a forger's), delivered like any other.
  void Forge(const std::string& from_address, const std::string& to, const SwimMessage& msg) {
    std::vector<std::byte> bytes;
    wire::EncodeSwim(msg, &bytes);
    flights_.push(
        Flight{now_ + options_.latency, flight_seq_++, from_address, to, std::move(bytes)});
  }
  // Stops a node dead: no more ticks, messages to it vanish.
  void Crash(const std::string& address) {
    nodes_.at(address).up = false;
    Unschedule(address);
  }
  void SetBlocked(std::function<bool(const std::string&, const std::string&)> blocked) {
    blocked_ = std::move(blocked);
  }
  void SetExtraDelay(const std::string& address, nanoseconds delay) { extra_[address] = delay; }
  void SetLoss(double loss) { options_.loss = loss; }

  // Runs events until `until` or until `stop` (checked at most every
  // `check_every` of fake time) holds; returns whether it did.
  bool RunUntil(nanoseconds until, const std::function<bool()>& stop = nullptr,
                nanoseconds check_every = milliseconds(10)) {
    nanoseconds last_check = now_ - check_every;
    for (;;) {
      const nanoseconds t_flight = flights_.empty() ? kNever : flights_.top().at;
      const nanoseconds t_tick = deadlines_.empty() ? kNever : deadlines_.begin()->first;
      const nanoseconds t = std::min(t_flight, t_tick);
      if (t > until) {
        now_ = until;
        return stop && stop();
      }
      now_ = std::max(now_, t);
      if (t_flight <= t_tick) {
        Flight f = flights_.top();
        flights_.pop();
        Deliver(f);
      } else {
        const std::string address = deadlines_.begin()->second;
        Node& n = nodes_.at(address);
        std::vector<Outbound> out;
        n.swim->Tick(InstantFor(n), &out);
        Dispatch(address, &out);
        Reschedule(address);
        if (n.next_deadline <= now_) {
          ADD_FAILURE() << address << " did not move its deadline past " << now_.count();
          Unschedule(address);
          deadlines_.emplace(now_ + milliseconds(1), address);
        }
      }
      if (stop && now_ - last_check >= check_every) {
        last_check = now_;
        if (stop()) return true;
      }
    }
  }
  bool RunFor(nanoseconds d, const std::function<bool()>& stop = nullptr,
              nanoseconds check_every = milliseconds(10)) {
    return RunUntil(now_ + d, stop, check_every);
  }

  nanoseconds now() const { return now_; }
  double now_s() const { return static_cast<double>(now_.count()) / 1e9; }
  Swim& swim(const std::string& address) { return *nodes_.at(address).swim; }
  bool up(const std::string& address) const { return nodes_.at(address).up; }
  std::vector<std::string> UpAddresses() const {
    std::vector<std::string> v;
    for (const auto& [address, n] : nodes_) {
      if (n.up) v.push_back(address);
    }
    return v;
  }
  uint64_t trace_hash() const { return trace_hash_; }
  size_t max_datagram_bytes() const { return max_datagram_bytes_; }

  std::function<void(const Packet&)> observer;

 private:
  struct Node {
    std::unique_ptr<Swim> swim;
    bool up = false;
    int64_t clock_offset_ms = 0;
    nanoseconds mono_origin{0};
    nanoseconds next_deadline = kNever;  // fake time
    size_t max_packet_bytes = 1400;
  };
  struct Flight {
    nanoseconds at;
    uint64_t seq;
    std::string from, to;
    std::vector<std::byte> bytes;
  };
  struct Later {
    bool operator()(const Flight& a, const Flight& b) const {
      return a.at != b.at ? a.at > b.at : a.seq > b.seq;
    }
  };

  Instant InstantFor(const Node& n) const {
    return Instant{
        milliseconds(kEpochMs + n.clock_offset_ms) + std::chrono::duration_cast<milliseconds>(now_),
        now_ + n.mono_origin};
  }
  void Unschedule(const std::string& address) {
    auto it = nodes_.find(address);
    if (it == nodes_.end()) return;
    deadlines_.erase({it->second.next_deadline, address});
    it->second.next_deadline = kNever;
  }
  void Reschedule(const std::string& address) {
    Unschedule(address);
    Node& n = nodes_.at(address);
    if (!n.up) return;
    const nanoseconds d = n.swim->NextDeadline();
    if (d == kNever) return;
    n.next_deadline = std::max(d - n.mono_origin, now_);
    deadlines_.emplace(n.next_deadline, address);
  }
  nanoseconds Extra(const std::string& address) const {
    auto it = extra_.find(address);
    return it == extra_.end() ? nanoseconds(0) : it->second;
  }
  void Dispatch(const std::string& from, std::vector<Outbound>* out) {
    const Node& sender = nodes_.at(from);
    for (auto& o : *out) {
      std::vector<std::byte> bytes;
      wire::EncodeSwim(o.msg, &bytes);
      EXPECT_LE(bytes.size(), EstimatedEncodedBytes(o.msg)) << KindName(o.msg.kind());
      if (!o.stream) {
        EXPECT_LE(bytes.size(), sender.max_packet_bytes) << KindName(o.msg.kind());
        max_datagram_bytes_ = std::max(max_datagram_bytes_, bytes.size());
      }
      for (std::byte b : bytes)
        trace_hash_ = (trace_hash_ ^ static_cast<uint8_t>(b)) * 0x100000001b3ull;
      trace_hash_ = (trace_hash_ ^ static_cast<uint64_t>(now_.count())) * 0x100000001b3ull;
      if (observer) observer(Packet{from, o.to_address, &o.msg, bytes.size(), o.stream, now_});
      if (blocked_ && blocked_(from, o.to_address)) continue;
      if (!o.stream && options_.loss > 0 && UniformUnit(rng_) < options_.loss) continue;
      nanoseconds delay =
          o.stream
              ? options_.stream_latency
              : options_.latency + nanoseconds(static_cast<int64_t>(UniformBelow(
                                       rng_, static_cast<uint64_t>(options_.jitter.count()) + 1)));
      delay += Extra(from) + Extra(o.to_address);
      flights_.push(Flight{now_ + delay, flight_seq_++, from, o.to_address, std::move(bytes)});
    }
    out->clear();
  }
  void Deliver(const Flight& f) {
    auto it = nodes_.find(f.to);
    if (it == nodes_.end() || !it->second.up) return;
    SwimMessage msg;
    std::string why;
    const Status status = reader_.Decode(f.bytes, &msg, &why);
    ASSERT_EQ(status, Status::kOk) << why;
    std::vector<Outbound> out;
    it->second.swim->OnMessage(f.from, msg, InstantFor(it->second), &out);
    Dispatch(f.to, &out);
    Reschedule(f.to);
  }

  Rng rng_;
  Options options_;
  nanoseconds now_{0};
  std::map<std::string, Node> nodes_;
  std::set<std::pair<nanoseconds, std::string>> deadlines_;
  std::priority_queue<Flight, std::vector<Flight>, Later> flights_;
  uint64_t flight_seq_ = 0;
  std::function<bool(const std::string&, const std::string&)> blocked_;
  std::map<std::string, nanoseconds> extra_;
  wire::PeerMessageReader reader_;
  uint64_t trace_hash_ = 0xcbf29ce484222325ull;
  size_t max_datagram_bytes_ = 0;
};

// The seed of a scenario: its base, mixed with $TALLY_MEMBERSHIP_SEED when
// set, so the same scenarios can be swept over many seeds:
//   for s in $(seq 1 50); do TALLY_MEMBERSHIP_SEED=$s tally_membership_tests; done
uint64_t TestSeed(uint64_t base) {
  const char* salt = std::getenv("TALLY_MEMBERSHIP_SEED");
  return salt == nullptr ? base : base ^ (std::strtoull(salt, nullptr, 10) * 0x9e3779b97f4a7c15ull);
}
std::string SeedNote(uint64_t seed) {
  return "seed " + std::to_string(seed) + " (rerun: TALLY_MEMBERSHIP_SEED=<same salt>)";
}

std::string Addr(int i) {
  return "10.0." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + ":7946";
}
std::string Id(int i) {
  std::string id = "n";
  id += std::to_string(i);  // (not "n" + ...: GCC 12 warns falsely, -Wrestrict)
  return id;
}

// Adds nodes 0..n-1 (generation 1000 + i) that join through `seeds`.
void AddNodes(Network& net, int n, std::vector<int> seeds = {0}, SwimConfig config = {}) {
  std::vector<std::string> seed_addresses;
  for (int s : seeds) seed_addresses.push_back(Addr(s));
  for (int i = 0; i < n; ++i) net.Add(Id(i), Addr(i), 1000 + i, seed_addresses, config);
}

// Does the node at `viewer` hold member `id` in `state`?
bool Sees(Network& net, const std::string& viewer, const std::string& id, MemberState state) {
  const Member* m = net.swim(viewer).members().Find(id);
  return m != nullptr && m->state == state;
}

// Every up node sees every up node (by the id and generation it runs) alive.
bool AllSeeAllAlive(Network& net) {
  auto up = net.UpAddresses();
  for (const auto& viewer : up) {
    for (const auto& other : up) {
      const Swim::Self& self = net.swim(other).self();
      const Member* m = net.swim(viewer).members().Find(self.id);
      if (m == nullptr || m->state != MemberState::kAlive || m->generation != self.generation ||
          m->address != self.address) {
        return false;
      }
    }
  }
  return true;
}

bool AllOthersSee(Network& net, const std::string& id, MemberState state) {
  for (const auto& viewer : net.UpAddresses()) {
    if (net.swim(viewer).self().id == id) continue;
    if (!Sees(net, viewer, id, state)) return false;
  }
  return true;
}

uint64_t TotalDeaths(Network& net) {
  uint64_t n = 0;
  for (const auto& a : net.UpAddresses()) n += net.swim(a).stats().deaths_declared;
  return n;
}

void Converge(Network& net, nanoseconds within = seconds(30)) {
  net.StartAll();
  ASSERT_TRUE(net.RunFor(within, [&] { return AllSeeAllAlive(net); }))
      << "no convergence by " << net.now_s() << " s";
}

// Goal: nodes that only know a seed's address all find each other.
// Method: 5 nodes, seed n0, no loss; all must see all alive within 5 s, then
// stay so (no suspicion, no ring churn) for a minute.
TEST(SwimClusterTest, FiveNodesReachAliveFromSeeds) {
  const uint64_t seed = TestSeed(1);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  net.StartAll();
  ASSERT_TRUE(net.RunFor(seconds(5), [&] { return AllSeeAllAlive(net); }));
  std::printf("5 nodes converged after %.3f s\n", net.now_s());
  std::vector<uint64_t> versions;
  for (const auto& a : net.UpAddresses()) versions.push_back(net.swim(a).alive_set_version());
  net.RunFor(seconds(60));
  EXPECT_TRUE(AllSeeAllAlive(net));
  size_t i = 0;
  for (const auto& a : net.UpAddresses()) {
    EXPECT_EQ(net.swim(a).alive_set_version(), versions[i++]);
    EXPECT_EQ(net.swim(a).stats().suspicions_started, 0u);
    EXPECT_EQ(net.swim(a).members().size(), 5u);
    EXPECT_EQ(net.swim(a).local_health(), 0);
  }
}

// Goal: a crashed node is suspected, then marked dead by every other node,
// within the documented bound. Bound: someone probes it within
// (2n - 3) probe intervals (timing::WorstCaseFirstProbeRoundRobinPeriods),
// that probe round ends one interval later, the first suspicion timer fires
// within the maximum suspicion timeout, and the dead rumor needs a few gossip
// rounds: bound = (2n - 3 + 1) T + max_timeout + 2 s.
TEST(SwimClusterTest, CrashedNodeIsSuspectedThenDeadWithinBound) {
  const int n = 5;
  const uint64_t seed = TestSeed(2);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, n);
  Converge(net);
  net.RunFor(seconds(5));
  const SwimConfig config;
  const nanoseconds t_crash = net.now();
  net.Crash(Addr(3));
  const double periods = timing::WorstCaseFirstProbeRoundRobinPeriods(n) + 1;
  const milliseconds min =
      timing::SuspicionMinTimeout(config.suspicion_mult, n, milliseconds(config.probe_interval_ms));
  const milliseconds max = timing::SuspicionMaxTimeout(config.suspicion_max_timeout_mult, min);
  const nanoseconds bound =
      milliseconds(static_cast<int64_t>(periods * config.probe_interval_ms)) + max + seconds(2);
  nanoseconds t_suspect = kNever;
  ASSERT_TRUE(net.RunFor(bound,
                         [&] {
                           if (t_suspect == kNever) {
                             for (const auto& a : net.UpAddresses()) {
                               if (!Sees(net, a, Id(3), MemberState::kAlive)) t_suspect = net.now();
                             }
                           }
                           return AllOthersSee(net, Id(3), MemberState::kDead);
                         }))
      << "not dead everywhere within " << bound.count() / 1e9 << " s";
  std::printf("crash: first suspicion after %.2f s, dead everywhere after %.2f s (bound %.1f s)\n",
              (t_suspect - t_crash).count() / 1e9, (net.now() - t_crash).count() / 1e9,
              bound.count() / 1e9);
  EXPECT_LT(t_suspect - t_crash, milliseconds(static_cast<int64_t>(periods * 1000)));
  // Confirmations shortened it: dead sooner than the maximum after the suspicion.
  EXPECT_LT(net.now() - t_suspect, max);
  for (const auto& a : net.UpAddresses()) {
    for (int i = 0; i < n; ++i) {
      if (i != 3) {
        EXPECT_TRUE(Sees(net, a, Id(i), MemberState::kAlive)) << a << " " << Id(i);
      }
    }
  }
}

// Goal: a node that is suspected while alive refutes and ends alive, with a
// higher incarnation everywhere, and nobody is declared dead.
// Method: n2 is cut off (in both directions) until someone suspects it,
// then reconnected. n2 suspects the others meanwhile, so they refute too.
TEST(SwimClusterTest, SuspectedButAliveNodeRefutes) {
  const uint64_t seed = TestSeed(3);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(3));
  const std::string n2 = Addr(2);
  net.SetBlocked(
      [&](const std::string& from, const std::string& to) { return from == n2 || to == n2; });
  ASSERT_TRUE(net.RunFor(seconds(30), [&] {
    for (const auto& a : net.UpAddresses()) {
      if (Sees(net, a, Id(2), MemberState::kSuspect)) return true;
    }
    return false;
  }));
  net.SetBlocked(nullptr);
  ASSERT_TRUE(net.RunFor(seconds(10), [&] { return AllSeeAllAlive(net); }));
  net.RunFor(seconds(10));
  EXPECT_TRUE(AllSeeAllAlive(net));
  EXPECT_GE(net.swim(n2).stats().refutations, 1u);
  EXPECT_GE(net.swim(n2).incarnation(), 1u);
  for (const auto& a : net.UpAddresses()) {
    EXPECT_EQ(net.swim(a).members().Find(Id(2))->incarnation, net.swim(n2).incarnation());
  }
  EXPECT_EQ(TotalDeaths(net), 0u);
}

// Goal: an update reaches all members, and every member piggybacks it exactly
// retransmit_limit(n) times. Method: 50 nodes converge and drain their
// queues; a 51st joins; count, in the bytes on the wire, each node's
// datagrams carrying the joiner's alive rumor.
TEST(SwimClusterTest, DisseminationReachesAllWithExactRetransmits) {
  const uint64_t seed = TestSeed(4);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 50);
  Converge(net, seconds(60));
  auto drained = [&] {
    for (const auto& a : net.UpAddresses()) {
      if (net.swim(a).pending_broadcasts() > 0) return false;
    }
    return true;
  };
  ASSERT_TRUE(net.RunFor(seconds(60), drained));
  std::map<std::string, int> carried;  // sender -> datagrams with the rumor
  net.observer = [&](const Packet& p) {
    if (p.stream) return;
    for (const auto& u : p.msg->piggyback) {
      if (u.id == "n50" && u.state == MemberState::kAlive) ++carried[p.from];
    }
  };
  net.Add("n50", Addr(50), 1050, {Addr(0)});
  const nanoseconds t_join = net.now();
  net.Start(Addr(50));
  ASSERT_TRUE(net.RunFor(seconds(10), [&] { return AllSeeAllAlive(net); }));
  std::printf("dissemination: 51st member known to all 50 after %.3f s\n",
              (net.now() - t_join).count() / 1e9);
  ASSERT_TRUE(net.RunFor(seconds(60), drained));
  const int limit = timing::RetransmitLimit(4, 51);
  EXPECT_EQ(limit, 8);
  ASSERT_EQ(carried.size(), 51u);
  for (const auto& [from, count] : carried) EXPECT_EQ(count, limit) << from;
}

// Goal: every datagram stays under max_packet_bytes however much news is
// queued, and packing is real (packets come close to the limit).
// Method: 200 members with longish names join at once through one seed.
TEST(SwimClusterTest, PacketsStayUnderMaxWith200Members) {
  const uint64_t seed = TestSeed(5);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  for (int i = 0; i < 200; ++i) {
    char id[64];
    std::snprintf(id, sizeof id, "tally-node-with-a-longer-name-%03d", i);
    net.Add(id, Addr(i), 1000 + i, {Addr(0)});
  }
  size_t big = 0, datagrams = 0;
  net.observer = [&](const Packet& p) {
    if (p.stream) return;
    ++datagrams;
    big += p.bytes > 1200 ? 1 : 0;
  };
  net.StartAll();
  ASSERT_TRUE(net.RunFor(
      seconds(60), [&] { return AllSeeAllAlive(net); }, seconds(1)));
  std::printf(
      "200 members: converged after %.1f s; %zu datagrams, largest %zu bytes, %zu over 1200\n",
      net.now_s(), datagrams, net.max_datagram_bytes(), big);
  EXPECT_LE(net.max_datagram_bytes(), 1400u);
  EXPECT_GT(big, 100u);
}

// Goal: a partition longer than the suspicion timeout heals: after it, every
// node sees all alive within reconnect_interval + a few probe periods.
// Method: 6 nodes (seeds n0 and n3) split 3 | 3 for 60 s (each side declares
// the other dead), then reconnected.
TEST(SwimClusterTest, LongPartitionHeals) {
  const uint64_t seed = TestSeed(6);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 6, {0, 3});
  Converge(net);
  net.RunFor(seconds(3));
  auto side = [](const std::string& a) {
    for (int i = 0; i < 3; ++i) {
      if (a == Addr(i)) return 0;
    }
    return 1;
  };
  net.SetBlocked(
      [&](const std::string& from, const std::string& to) { return side(from) != side(to); });
  const nanoseconds t_split = net.now();
  ASSERT_TRUE(net.RunFor(seconds(60), [&] {
    for (int v = 0; v < 6; ++v) {
      for (int o = 0; o < 6; ++o) {
        if (side(Addr(v)) != side(Addr(o)) && !Sees(net, Addr(v), Id(o), MemberState::kDead)) {
          return false;
        }
      }
    }
    return true;
  }));
  std::printf("partition: each side holds the other dead after %.1f s\n",
              (net.now() - t_split).count() / 1e9);
  net.RunUntil(t_split + seconds(60));
  net.SetBlocked(nullptr);
  const nanoseconds t_heal = net.now();
  const SwimConfig config;
  const nanoseconds bound =
      milliseconds(config.reconnect_interval_ms + 5 * config.probe_interval_ms);
  ASSERT_TRUE(net.RunFor(bound, [&] { return AllSeeAllAlive(net); }));
  std::printf("partition healed: all alive %.2f s after reconnection (bound %.0f s)\n",
              (net.now() - t_heal).count() / 1e9, bound.count() / 1e9);
  net.RunFor(seconds(30));
  EXPECT_TRUE(AllSeeAllAlive(net));
}

// Goal: a node restarted under the same name, with a new generation and a
// new (or the same) address, is accepted and overrides whatever was known
// of its previous process (memberlist issue 157 must not happen).
TEST(SwimClusterTest, RestartedNodeWithSameNameIsAccepted) {
  const uint64_t seed = TestSeed(7);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(2));
  std::map<std::string, uint64_t> versions;
  for (const auto& a : net.UpAddresses()) versions[a] = net.swim(a).alive_set_version();
  // Restart quickly, before anyone noticed the crash, at a new address.
  net.Crash(Addr(2));
  net.RunFor(milliseconds(300));
  net.Add(Id(2), Addr(12), 2002, {Addr(0)});
  net.Start(Addr(12));
  ASSERT_TRUE(net.RunFor(seconds(10), [&] { return AllSeeAllAlive(net); }));
  for (const auto& a : net.UpAddresses()) {
    if (versions.count(a)) {
      EXPECT_GT(net.swim(a).alive_set_version(), versions[a]);
    }
  }
  net.RunFor(seconds(30));
  EXPECT_TRUE(AllSeeAllAlive(net));
  // Again after it was declared dead, back at its first address.
  net.Crash(Addr(12));
  ASSERT_TRUE(
      net.RunFor(seconds(60), [&] { return AllOthersSee(net, Id(2), MemberState::kDead); }));
  net.Add(Id(2), Addr(2), 3002, {Addr(0)});
  net.Start(Addr(2));
  ASSERT_TRUE(net.RunFor(seconds(10), [&] { return AllSeeAllAlive(net); }));
  net.RunFor(seconds(30));
  EXPECT_TRUE(AllSeeAllAlive(net));
  for (const auto& a : net.UpAddresses()) {
    const Member* m = net.swim(a).members().Find(Id(2));
    EXPECT_EQ(m->generation, 3002u);
    EXPECT_EQ(m->address, Addr(2));
  }
}

// Goal: a graceful leave ends as `left` everywhere, never `dead`.
// Method: n4 leaves, is ticked until its rumor is flushed (at most 2 s), then
// vanishes; no node may ever hold it dead.
TEST(SwimClusterTest, GracefulLeaveIsLeftEverywhereNeverDead) {
  const uint64_t seed = TestSeed(8);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(3));
  net.Leave(Addr(4));
  net.RunFor(seconds(2), [&] { return net.swim(Addr(4)).LeaveFlushed(); });
  net.Crash(Addr(4));
  bool ever_dead = false;
  net.RunFor(seconds(60), [&] {
    for (const auto& a : net.UpAddresses()) ever_dead |= Sees(net, a, Id(4), MemberState::kDead);
    return false;
  });
  EXPECT_FALSE(ever_dead);
  EXPECT_TRUE(AllOthersSee(net, Id(4), MemberState::kLeft));
  EXPECT_EQ(TotalDeaths(net), 0u);
  EXPECT_TRUE(AllSeeAllAlive(net));  // the other four
}

// Goal (issue 9): a forged `left` or `dead` rumor about a live member, sent
// from an address that is no member, does not evict it for good: with its
// generation it refutes (out-bids the incarnation); with a newer generation
// or an incarnation it could never out-bid, the rumor is refused. Method: five
// nodes converge; a stranger sends n0 one gossip datagram carrying `left`
// about n2 (incarnation + 1), `left` about n3 (generation + 1) and `dead`
// about n4 (incarnation 2^48), plus an alive about n1 at the stranger's own
// address (same generation); after 15 s everyone sees everyone alive, at
// their own addresses.
TEST(SwimClusterTest, ForgedLeaveOrDeathRumorsDoNotEvictLiveMembers) {
  const uint64_t seed = TestSeed(12);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(3));
  const std::string stranger = "10.9.9.9:7946";
  auto about = [&](int i, MemberState state, uint64_t generation_delta, uint64_t incarnation) {
    const Swim::Self& self = net.swim(Addr(i)).self();
    return MemberUpdate{self.id,     self.address, self.generation + generation_delta,
                        incarnation, state,        "mallory"};
  };
  SwimMessage forged;
  forged.sender_id = "mallory";
  forged.sender_address = stranger;
  forged.sender_generation = 1;
  forged.sender_wall_ms = kEpochMs;
  forged.body = Gossip{};
  forged.piggyback = {
      about(2, MemberState::kLeft, 0, net.swim(Addr(2)).incarnation() + 1),
      about(3, MemberState::kLeft, 1, 0),
      about(4, MemberState::kDead, 0, Swim::kMaxIncarnation),
      about(1, MemberState::kAlive, 0, net.swim(Addr(1)).incarnation() + 1),
  };
  forged.piggyback.back().address = stranger;
  net.Forge(stranger, Addr(0), forged);
  net.RunFor(milliseconds(100));
  // n2's rumor is taken (same generation, higher incarnation) ...
  EXPECT_EQ(net.swim(Addr(0)).members().Find(Id(2))->state, MemberState::kLeft);
  EXPECT_EQ(net.swim(Addr(0)).stats().unrefutable_rumors, 1u);
  EXPECT_EQ(net.swim(Addr(0)).stats().address_changes_refused, 1u);
  EXPECT_GE(net.swim(Addr(0)).stats().invalid, 1u);
  net.RunFor(seconds(15));
  // ... and refuted: n2 hears it in an ack to one of its probes.
  EXPECT_GE(net.swim(Addr(2)).stats().refutations, 1u);
  EXPECT_TRUE(AllSeeAllAlive(net));
  for (const auto& viewer : net.UpAddresses()) {
    for (int i = 0; i < 5; ++i) {
      const Member* m = net.swim(viewer).members().Find(Id(i));
      ASSERT_NE(m, nullptr);
      EXPECT_EQ(m->address, Addr(i)) << viewer;
      EXPECT_EQ(m->generation, net.swim(Addr(i)).self().generation) << viewer;
    }
  }
  EXPECT_EQ(TotalDeaths(net), 0u);
}

// Goal (issue 9): a second live process under an existing node id does not go
// unnoticed. Method: five nodes converge; another process starts as n2 (a
// newer generation, another address); the newer generation wins the others'
// tables, and the first n2 counts the rumors about its name from another
// process (foreign_self, shown by `tally status` as swim_foreign_self).
// A second process under a live member's id: both count it, the newer
// generation wins every table, and the older learns it first-hand (it asks
// the newer at its address) and stands down (Swim::superseded_by()).
TEST(SwimClusterTest, ASecondProcessUnderAnExistingIdSupersedesTheFirst) {
  const uint64_t seed = TestSeed(13);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(3));
  EXPECT_EQ(net.swim(Addr(2)).stats().foreign_self, 0u);
  net.Add(Id(2), Addr(22), 5002, {Addr(0)});
  net.Start(Addr(22));
  net.RunFor(seconds(10));
  EXPECT_GE(net.swim(Addr(2)).stats().foreign_self, 1u);
  EXPECT_GE(net.swim(Addr(22)).stats().foreign_self, 1u);
  EXPECT_GE(net.swim(Addr(2)).stats().name_checks, 1u);
  const auto& successor = net.swim(Addr(2)).superseded_by();
  ASSERT_TRUE(successor.has_value());
  EXPECT_EQ(successor->address, Addr(22));
  EXPECT_EQ(successor->generation, 5002u);
  EXPECT_FALSE(net.swim(Addr(22)).superseded_by().has_value());
  for (int i : {0, 1, 3, 4}) {
    const Member* m = net.swim(Addr(i)).members().Find(Id(2));
    ASSERT_NE(m, nullptr);
    EXPECT_EQ(m->generation, 5002u);
    EXPECT_EQ(m->address, Addr(22));
    EXPECT_EQ(m->state, MemberState::kAlive);
  }
}

// Goal (Lifeguard): a slow node notices it is the problem: its health score
// rises and its probe interval stretches, while the others stay healthy.
// Method: every message to or from n1 takes 700 ms more (beyond the probe
// timeout and beyond the end of its probe rounds) for two minutes.
TEST(SwimClusterTest, SlowNodeHealthRisesAndProbingStretches) {
  const uint64_t seed = TestSeed(9);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 5);
  Converge(net);
  net.RunFor(seconds(5));
  const std::string slow = Addr(1);
  net.SetExtraDelay(slow, milliseconds(700));
  net.RunFor(seconds(10));
  const uint64_t probes_before = net.swim(slow).stats().probes;
  std::map<std::string, uint64_t> others_before;
  for (const auto& a : net.UpAddresses()) others_before[a] = net.swim(a).stats().probes;
  int max_health = 0;
  double health_sum = 0, others_sum = 0;
  int samples = 0;
  net.RunFor(seconds(120), [&] {
    max_health = std::max(max_health, net.swim(slow).local_health());
    health_sum += net.swim(slow).local_health();
    for (const auto& a : net.UpAddresses()) {
      if (a != slow) others_sum += net.swim(a).local_health();
    }
    ++samples;
    return false;
  });
  const uint64_t slow_probes = net.swim(slow).stats().probes - probes_before;
  const double slow_mean = health_sum / samples, others_mean = others_sum / (4.0 * samples);
  std::printf(
      "slow node: max health %d, mean %.2f, %llu probes in 120 s; others mean health %.2f\n",
      max_health, slow_mean, static_cast<unsigned long long>(slow_probes), others_mean);
  EXPECT_GE(max_health, 4);
  EXPECT_LT(slow_probes, 120u / 2);  // a healthy node probes ~120 times
  for (const auto& a : net.UpAddresses()) {
    if (a != slow) {
      EXPECT_GT(net.swim(a).stats().probes - others_before[a], 100u) << a;
    }
  }
  EXPECT_LT(others_mean, slow_mean / 2);
}

// Goal: 5% datagram loss for 5 minutes causes no false deaths among 20 nodes.
TEST(SwimClusterTest, NoFalseDeathsAtFivePercentLoss) {
  const uint64_t seed = TestSeed(10);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  AddNodes(net, 20);
  Converge(net);
  net.SetLoss(0.05);
  net.RunFor(seconds(300));
  uint64_t suspicions = 0, refutations = 0;
  for (const auto& a : net.UpAddresses()) {
    suspicions += net.swim(a).stats().suspicions_raised;
    refutations += net.swim(a).stats().refutations;
  }
  std::printf("5%% loss, 20 nodes, 300 s: %llu suspicions raised, %llu refutations, %llu deaths\n",
              static_cast<unsigned long long>(suspicions),
              static_cast<unsigned long long>(refutations),
              static_cast<unsigned long long>(TotalDeaths(net)));
  EXPECT_EQ(TotalDeaths(net), 0u);
  for (const auto& v : net.UpAddresses()) {
    for (const auto& [id, m] : net.swim(v).members()) {
      EXPECT_TRUE(m.up()) << v << " holds " << id << " " << StateName(m.state);
    }
  }
}

// Goal: every node learns every other's wall-clock offset from ping/acks,
// within the stated uncertainty.
TEST(SwimClusterTest, ClockOffsetsAreEstimated) {
  const uint64_t seed = TestSeed(11);
  SCOPED_TRACE(SeedNote(seed));
  Network net(seed);
  const int64_t offsets[] = {0, 250, -120, 3000};
  for (int i = 0; i < 4; ++i) net.Add(Id(i), Addr(i), 1000 + i, {Addr(0)}, {}, offsets[i]);
  Converge(net);
  net.RunFor(seconds(30));
  for (int v = 0; v < 4; ++v) {
    for (int o = 0; o < 4; ++o) {
      if (v == o) continue;
      const ClockEstimate* e = net.swim(Addr(v)).ClockEstimateOf(Id(o));
      ASSERT_NE(e, nullptr) << v << " " << o;
      EXPECT_GT(e->samples, 3u);
      EXPECT_NEAR(*net.swim(Addr(v)).ClockOffsetMs(Id(o)), offsets[o] - offsets[v],
                  e->uncertainty_ms)
          << v << " -> " << o;
      EXPECT_LT(e->rtt_ms, 10.0);
    }
  }
}

// Goal: a run is a function of its seed (the simulator relies on it).
TEST(SwimClusterTest, SameSeedSameRun) {
  auto run = [](uint64_t seed) {
    Network net(seed, {.loss = 0.02});
    AddNodes(net, 6);
    net.StartAll();
    net.RunFor(seconds(5));
    net.Crash(Addr(5));
    net.RunFor(seconds(20));
    return net.trace_hash();
  };
  EXPECT_EQ(run(77), run(77));
  EXPECT_NE(run(77), run(78));
}

}  // namespace
}  // namespace tally::membership

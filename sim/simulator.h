// Simulator: many tally::core::Node instances (the same class tallyd runs) in
// one process and one thread, driven by a discrete-event loop on simulated
// clocks, a simulated network and a fault schedule, all from one seed
// (TigerBeetle's VOPR is the model).
//
// The loop is a priority queue of (true time, sequence) events: packet
// deliveries, node timers (each armed at the node's NextDeadline, mapped from
// its own monotonic clock to true time), client datagram arrivals, fault
// actions, slow-node service steps and periodic inspections. Bytes cross
// every boundary: Outbox peer packets go through the network model into
// OnPeerMessage, client checks are encoded with wire::EncodeChecks and replies
// decoded with wire::ClientMessageReader.
//
// Deterministic: nothing reads a real clock, nothing iterates an unordered
// container in a way that affects the order of events, and all randomness
// comes from sim/random.h streams derived from the seed. RunRecord::trace_hash
// folds in every delivery, decision, reply and fault; the same seed and build
// give the same hash.
//
// What the run records (RunRecord) is judged afterwards by sim/oracles.h.
#ifndef TALLY_SIM_SIMULATOR_H_
#define TALLY_SIM_SIMULATOR_H_

#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <queue>
#include <set>
#include <string>
#include <vector>

#include "daemon/core/node.h"
#include "sim/clock.h"
#include "sim/network.h"
#include "sim/random.h"
#include "sim/workload.h"
#include "wire/codec.h"

namespace tally::sim {

inline constexpr TrueNs kNsPerMs = 1'000'000;
inline constexpr TrueNs kNsPerS = 1'000'000'000;

// Host naming, shared with the scenarios that pick victims by key ownership.
std::string HostIdOf(uint32_t index);
std::string HostAddressOf(uint32_t index, uint32_t restarts);

// The seed of the workload stream of a run (scenarios rebuild the key set).
inline uint64_t WorkloadSeed(uint64_t seed) { return DeriveSeed(seed, 3); }

struct FaultAction {
  enum class Kind {
    kCrash,      // host stops; its state is lost
    kRestart,    // a crashed host comes back: new Node, same id, new generation
    kLeave,      // graceful leave, then the host stops
    kJoin,       // a new host joins through the seeds
    kPartition,  // network groups + direction matrix
    kHeal,       // removes the partition
    kSetLoss,    // datagram loss probability on every link
    kSetDuplicate,
    kClockJump,  // steps a host's wall clock by value_ms
    kSlow,       // service_ns per input, tick_lag_ns late timers
    kUnslow,
    kSetDrift,   // a host's oscillator runs `value` ppm off from now on
    kSetJitter,  // every link's jitter: jitter_median_ns, capped at jitter_cap_ns
    // A runtime limit override written on `host` (Node::WriteOverride) for
    // workload key `override_key`: its explicit selector and its descriptor
    // twin (OverrideSelector), both limit `override_limit` (or removed).
    kWriteOverride,
  };
  Kind kind = Kind::kCrash;
  TrueNs at_ns = 0;
  int host = -1;
  bool new_address = false;
  int64_t value_ms = 0;
  double value = 0;
  std::vector<int> groups;
  Network::Matrix allowed{};
  int64_t service_ns = 0;
  int64_t tick_lag_ns = 0;
  int64_t stall_every_ns = 0;  // kSlow: a stall (a GC pause, a starved CPU) this often
  int64_t stall_ns = 0;        // ... lasting this long
  std::string label;           // for the summary and the chart

  // kSetJitter: every link's jitter median and cap from now on.
  int64_t jitter_median_ns = 0;
  int64_t jitter_cap_ns = 0;

  // kWriteOverride.
  uint32_t override_key = 0;
  uint64_t override_limit = 0;
  bool override_remove = false;
};

// The selectors a kWriteOverride writes for workload key `key`: the explicit
// form (the key's user, endpoint and window), which the Node applies to its
// checks, or its descriptor twin (domain "sim", entries (endpoint, user)),
// which only the rules doors would apply; both spread alike.
crdt::Selector OverrideSelector(const KeySpec& key, bool descriptor);

struct SimConfig {
  uint64_t seed = 1;
  size_t nodes = 10;
  TrueNs duration_ns = 60 * kNsPerS;
  core::NodeConfig node;  // template; ids, addresses, seeds, generation, rng per host
  LinkConfig link;
  int64_t clock_offset_max_ms = 0;                        // each host's offset uniform in +-this
  int64_t clock_drift_max_ppm = 0;                        // each host's drift uniform in +-this
  std::vector<std::pair<int, int64_t>> clock_offsets_ms;  // explicit (host, offset)
  TrueNs start_spread_ns = 2 * kNsPerS;                   // initial hosts start over this span
  WorkloadConfig workload;
  std::vector<FaultAction> faults;
  TrueNs quiesce_ns = 0;  // convergence is measured from here (no traffic after)
  // When >= 0: the run ends early, at the first inspection from this time on
  // at which replicas have converged and membership agrees.
  TrueNs end_when_settled_ns = -1;
  TrueNs inspect_interval_ns = 50 * kNsPerMs;
  size_t ownership_sample_keys = 64;
  TrueNs cost_from_ns = 0, cost_to_ns = 0;  // window for messages/bytes per node per second
  // Start the cost window only once every node's broadcast queue is empty and
  // membership agrees (steady state, not the tail of a join storm).
  bool cost_after_quiet = false;
  // Test switch: the network drops every replicate and state-push message, so
  // replicas never learn the counts (a deliberately broken cluster).
  bool drop_replication = false;
  // Debugging: a user id whose decisions and final replica states are dumped
  // into RunRecord::debug.
  std::string dump_key;
};

struct RequestRecord {
  uint64_t request_id = 0;
  uint32_t key = 0;
  uint32_t entry_host = 0;
  uint64_t entry_generation = 0;
  uint64_t hits = 0;
  TrueNs sent_ns = 0;
  TrueNs replied_ns = -1;
  uint32_t replies = 0;
  bool allowed = false;
  Status status = Status::kOk;
};

struct DecisionRecord {
  TrueNs at_ns = 0;
  uint32_t host = 0;
  uint64_t generation = 0;
  uint64_t request_id = 0;
  uint32_t key = 0;  // UINT32_MAX: not a workload key
  uint64_t hits = 0;
  uint64_t limit = 0;
  uint64_t window_ms = 0;
  int64_t wall_ms = 0;
  bool allowed = false;
  double clock_error_ms = 0;  // the decider's wall clock minus true time
};

struct DetectionRecord {
  uint32_t subject = 0;
  std::string subject_id;
  uint64_t generation = 0;
  TrueNs crash_ns = 0;
  size_t members_at_crash = 0;  // up members then, the crashed one included
  TrueNs first_suspect_ns = -1;
  TrueNs first_dead_ns = -1;
  std::map<uint32_t, TrueNs> dead_seen;  // observer host -> when it marked it dead
  TrueNs last_dead_ns = -1;              // over observers up from crash to end
  size_t observers = 0;
  size_t observers_marked = 0;
  TrueNs restarted_ns = -1;  // the subject came back (a newer process supersedes it)
};

struct MembershipRecord {
  uint64_t false_suspicions = 0;  // of up, reachable, healthy members
  uint64_t false_deaths = 0;
  uint64_t expected_suspicions = 0;    // across a cut, of a slow node, or in a transition
  uint64_t slow_node_accusations = 0;  // suspicions raised by a slow node of healthy ones
  std::vector<std::string> examples;
};

struct OwnershipEpoch {
  TrueNs changed_ns = 0;  // the membership-changing fault (or start)
  TrueNs stable_ns = -1;  // every up host sees exactly the up set
  TrueNs agreed_ns = -1;  // and all agree on every sampled preference list
  size_t disagreements = 0;
};

struct CostRecord {
  struct PerKind {
    uint64_t messages = 0, bytes = 0;
  };
  std::map<std::string, PerKind> by_kind;  // swim:ping, node:replicate, ...
  size_t nodes = 0;
  TrueNs from_ns = -1;  // when the window began; -1: never (not quiet before cost_to_ns)
  double seconds = 0;
  double messages_per_node_s = 0;
  double bytes_per_node_s = 0;
  double client_checks_per_node_s = 0;
};

// One selector's override write (FaultAction::kWriteOverride) and when each
// host first held it or an entry that wins over it (sampled at every
// inspection, so an upper bound on the true time).
struct OverrideWriteRecord {
  TrueNs at_ns = 0;
  uint32_t host = 0;
  uint32_t key = 0;
  bool descriptor = false;  // the descriptor twin
  bool applied = false;     // the writer's WriteOverride returned kApplied
  crdt::OverrideEntry entry;
  std::string selector_key;
  // Per host at write time: its generation (0: not serving) and whether it
  // and the writer could reach each other.
  std::vector<uint64_t> generation;
  std::vector<uint8_t> reachable;
  std::vector<TrueNs> seen_ns;  // -1: not yet
};

struct FaultLogEntry {
  TrueNs at_ns = 0;
  FaultAction::Kind kind = FaultAction::Kind::kCrash;
  std::string label;
};

struct RunRecord {
  SimConfig config;
  std::vector<KeySpec> keys;
  std::vector<RequestRecord> requests;  // indexed by request_id - 1
  std::vector<DecisionRecord> decisions;
  std::vector<DetectionRecord> detections;
  MembershipRecord membership;
  std::vector<OwnershipEpoch> ownership;
  TrueNs converged_ns = -1;  // first time after quiesce all replicas agreed
  size_t convergence_keys = 0;
  std::string convergence_note;  // a key that still differed, when never
  CostRecord cost;
  std::vector<FaultLogEntry> faults;
  std::vector<OverrideWriteRecord> override_writes;
  std::vector<std::string> host_ids;
  uint64_t trace_hash = 0;
  uint64_t events = 0;
  uint64_t deliveries = 0;
  uint64_t dropped_replication = 0;
  uint64_t stuck_deadlines = 0;  // NextDeadline not in the future after a Tick
  Network::Stats network;
  std::vector<std::string> not_owning_at_end;
  std::vector<uint64_t> final_generation;  // per host; 0 when not up at the end  // hosts whose
                                           // Status().owning is false
  TrueNs end_ns = 0;
  std::string debug;
};

class Simulator {
 public:
  explicit Simulator(SimConfig config);
  ~Simulator();
  RunRecord Run();

 private:
  enum class EventKind : uint8_t {
    kDeliver,  // a packet reaches a host
    kTimer,    // a host's NextDeadline
    kClient,   // a client datagram reaches its entry host
    kTraffic,  // the workload's next arrival
    kFault,
    kService,  // a slow host takes the next input from its queue
    kInspect,  // oracle probes (read-only)
    kStart,    // an initial host starts
  };
  struct Event {
    TrueNs at = 0;
    uint64_t seq = 0;
    EventKind kind = EventKind::kDeliver;
    uint32_t host = 0;
    uint64_t arg = 0;
    bool operator>(const Event& o) const { return at != o.at ? at > o.at : seq > o.seq; }
  };
  struct Packet {
    uint32_t from = 0;
    std::string from_address;
    std::string to_address;
    uint64_t token = 0;  // client datagrams: the reply token
    std::vector<std::byte> bytes;
    bool stream = false;
  };
  enum class HostState : uint8_t { kDown, kUp, kLeaving, kGone };
  struct Host {
    std::string id;
    std::string address;
    uint64_t generation = 0;
    uint32_t restarts = 0;
    std::unique_ptr<core::Node> node;
    NodeClock clock;
    HostState state = HostState::kDown;
    uint64_t timer_token = 0;
    TrueNs armed_at = INT64_MAX;
    TrueNs last_tick = -1;
    TrueNs up_since = -1;
    // Slow host: inputs queue up and each takes service_ns.
    int64_t service_ns = 0;
    int64_t tick_lag_ns = 0;
    int64_t stall_every_ns = 0, stall_ns = 0;
    TrueNs stall_from = 0;
    TrueNs busy_until = 0;
    bool service_pending = false;
    std::deque<Event> inbox;
    // Observation.
    uint64_t seen_suspicions = 0, seen_deaths = 0;
    uint64_t fingerprint_version = UINT64_MAX;
    uint64_t fingerprint = 0;
    // Cost.
    uint64_t messages_sent = 0, bytes_sent = 0, client_datagrams = 0;
  };

  // Event kernel (simulator.cc).
  void Push(TrueNs at, EventKind kind, uint32_t host, uint64_t arg);
  void Dispatch(const Event& e);
  void Trace(uint64_t a, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0);
  static uint64_t HashBytes(const std::vector<std::byte>& bytes);

  // Hosts (simulator_hosts.cc).
  uint32_t AddHost();
  std::vector<std::string> SeedAddresses(uint32_t except) const;
  void StartHost(uint32_t index, TrueNs t);
  void StopHost(uint32_t index, TrueNs t, HostState state);
  void Input(Host& h, const Event& e);
  TrueNs ServiceStart(const Host& h, TrueNs t) const;
  void Execute(uint32_t index, const Event& e, TrueNs t);
  void Rearm(uint32_t index, TrueNs t);
  void Emit(uint32_t index, core::Outbox& out, TrueNs t, TrueNs leave_at);
  // "swim:<kind>" or "node:<kind>": a peer packet's cost name.
  static std::string KindOf(const core::Outbox::PeerPacket& packet);
  uint64_t AllocPacket();
  void FreePacket(uint64_t index);
  bool Slow(const Host& h) const { return h.service_ns > 0 || h.stall_ns > 0 || h.tick_lag_ns > 0; }
  bool Serving(const Host& h) const {
    return h.state == HostState::kUp || h.state == HostState::kLeaving;
  }

  // Client traffic (simulator_clients.cc).
  void ClientArrival(TrueNs t);
  void RecordReply(const core::Outbox::ClientReply& reply, TrueNs t);

  // Faults (simulator_faults.cc).
  void ApplyFault(const FaultAction& f, TrueNs t);

  // Checker hooks (simulator_checks.cc): read-only probes and the end summary.
  void NoteMembershipChange(TrueNs t);
  void Inspect(TrueNs t);
  void ObserveSuspicions(uint32_t index, TrueNs t);
  void TrackDetections(TrueNs t);
  void CheckOwnership(TrueNs t);
  void CheckConvergence(TrueNs t);
  void ObserveOverrides(TrueNs t);
  // Fills the RunRecord's end-of-run fields (detection observers, cost rates,
  // final generations, ...) for a run that ended at `end`.
  void FinishRecord(TrueNs end);

  // --dump-key output (simulator_dump.cc).
  std::string DumpKey(const std::string& user_id, TrueNs t) const;
  void DumpPacket(uint32_t from, uint32_t to, const std::vector<std::byte>& bytes, TrueNs t);
  crdt::KeyId DumpKeyId() const;  // the --dump-key key's id ({} if none)
  std::set<std::pair<uint32_t, uint64_t>> watched_forwards_;  // (decider, forward id)

  SimConfig config_;
  Random rng_;  // fault-independent choices (entry hosts, generations)
  Network network_;
  Workload workload_;
  std::vector<Host> hosts_;
  // Looked up per packet; never iterated (so their order cannot matter).
  boost::unordered_flat_map<std::string, uint32_t> host_by_address_;
  boost::unordered_flat_map<std::string, uint32_t> host_by_id_;
  std::vector<uint32_t> entry_hosts_;  // kUp hosts, sorted: where clients connect
  boost::unordered_flat_map<crdt::KeyId, uint32_t, crdt::KeyIdHash> key_index_;
  std::priority_queue<Event, std::vector<Event>, std::greater<>> queue_;
  uint64_t seq_ = 0;
  std::vector<Packet> packets_;
  std::vector<uint64_t> free_packets_;
  std::vector<std::vector<uint64_t>> datagram_requests_;  // reply token - 1 -> request ids
  std::vector<TrueNs> deliveries_;                        // scratch
  std::vector<Workload::Check> batch_;
  std::vector<CheckRequestRef> refs_;
  std::vector<std::byte> encoded_;
  core::Outbox out_;
  wire::ClientMessageReader reply_reader_;
  std::set<std::tuple<std::string, uint64_t, uint64_t, int>> suspicions_seen_;
  TrueNs last_network_change_ = 0;
  TrueNs last_slow_change_ = -1;
  bool cost_active_ = false;
  TrueNs settled_ns_ = -1;  // see SimConfig::end_when_settled_ns
  RunRecord record_;
};

}  // namespace tally::sim

#endif  // TALLY_SIM_SIMULATOR_H_

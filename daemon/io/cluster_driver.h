// ClusterDriver: the Asio driver of one tally::core::Node (daemon/core/node.h)
// in tallyd's cluster mode. The Node decides; this class only moves bytes and
// time in and out of it:
//
//   client check datagrams (from DatagramServer / SeqpacketServer, a batch per
//     recvmmsg) -> Node::OnClientDatagram, one reply token each, then Flush;
//   the gossip UDP socket (recvmmsg batches) and inbound TCP streams (framed
//     messages) -> Node::OnPeerMessage, then Flush;
//   one steady_timer at Node::NextDeadline -> Node::Tick;
//   Outbox.client -> the reply token's client (socket + address, or the
//     seqpacket connection); Outbox.peer -> a UDP datagram from the gossip
//     socket (stream = false) or a frame on a TCP connection to the same
//     ip:port (stream = true).
//
// Gossip endpoint: one UDP socket and one TCP listener on the same HOST:PORT
// (port 0: a free port for both; UDP is bound first, then TCP on its port,
// retried on a conflict). TCP frames are a 4-byte big-endian length and one
// PeerMessage (at most wire::kMaxPeerMessageBytes). Outgoing streams: one
// connection per destination, frames in order, a bounded queue per peer
// (frames beyond it are dropped and counted: the core tolerates loss); on any
// error the connection is closed, its queue dropped and counted, and the next
// frame reconnects. Incoming streams are fed to the Node with the
// connection's remote address (the Node reads the sender from the header).
//
// Reply tokens: every client datagram handed to the Node gets a token that
// maps to where its reply goes until the reply appears in an Outbox. Tokens
// still unanswered after `reply_expiry` are dropped and counted (the Node
// promises a reply; this is a safety net against a leak).
//
// Threads and locks: the Node is not thread-safe, so every Node call happens
// under `mu_`, taken once per received batch (or frame burst, or timer
// firing), never per datagram. Sending happens after the lock is released.
// Outgoing TCP state lives on one strand.
//
// Peer authentication (daemon/io/peer_seal.h): with a keyring every peer
// datagram and stream frame is sealed just before it is sent and opened just
// after it is received; what does not open is dropped and counted, never
// handed to the Node. ReloadKeyring (tallyd: on SIGHUP) re-reads the key file.
// Without a keyring peers are trusted as before (warned about off loopback).
//
// Logs: membership changes (info), a member's clock offset beyond
// warn_clock_offset_ms (warn) and changes of the node's `owning` flag.
#ifndef TALLY_DAEMON_IO_CLUSTER_DRIVER_H_
#define TALLY_DAEMON_IO_CLUSTER_DRIVER_H_

#include <sys/socket.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "daemon/core/node.h"
#include "daemon/io/counters.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/peer_seal.h"
#include "daemon/io/published_overrides.h"
#include "daemon/io/resolver.h"
#include "daemon/io/snapshot_counters.h"
#include "daemon/io/status_trackers.h"
#include "tally/limiter.h"
#include "tally/types.h"
#include "wire/codec.h"

namespace tally::io {

struct ClusterOptions {
  // HOST:PORT the gossip UDP socket and TCP listener bind; "" = single-node mode.
  std::string gossip;
  // HOST:PORT peers reach us at; "" = the bound gossip address (which then
  // must not be a wildcard address).
  std::string advertise;
  std::vector<std::string> seeds;  // HOST:PORT of members to join through
  // NAME[:PORT] (from --join dns:NAME[:PORT]): every A/AAAA address of NAME
  // is a seed (port: PORT, else our own gossip port). Resolved at Start and
  // again every dns_interval while this node is alone or some member is
  // suspect or dead (a partition, or pods that came up after us).
  std::vector<std::string> dns_seeds;
  std::shared_ptr<Resolver> resolver;  // null: SystemResolver()
  std::chrono::milliseconds dns_interval{5000};
  // node_id, replicas, partition policy, timings, SwimConfig. The driver
  // fills in gossip_address, generation, seeds and rng_seed.
  core::NodeConfig node;
  size_t max_stream_queue_bytes = 16u << 20;  // per destination
  size_t max_inbound_streams = 256;
  std::chrono::milliseconds connect_timeout{1000};
  // An outbound stream whose sent bytes stay unacknowledged this long is
  // aborted by the kernel (TCP_USER_TIMEOUT), so the next frame reconnects.
  // Without it a connection a partition stalled silently holds every frame
  // queued behind it until TCP's backed-off retransmit, ten seconds or more
  // after the heal. 0 leaves the kernel's default (about 15 minutes).
  std::chrono::milliseconds stream_stall_timeout{3000};
  std::chrono::milliseconds reply_expiry{5000};
  // After Leave(): keep ticking until SWIM's leave is flushed, at most this long.
  std::chrono::milliseconds leave_grace{1000};
  // Keyring file and cluster name (--keyring, --cluster-name).
  PeerAuthOptions peer_auth;

  // Snapshots (docs/DESIGN.md, "Snapshots"): "" = none. Otherwise the
  // counts are restored from STATE_DIR/counts.snapshot at Start (before the
  // first check) and written there every `snapshot_interval` (0: never
  // periodically), within about a second of an override change
  // (SnapshotSchedule), and by WriteFinalSnapshot.
  std::string state_dir;
  std::chrono::seconds snapshot_interval{60};
  // (The cluster name written into snapshots is peer_auth.cluster_name: a
  // snapshot naming another cluster is refused.)
  // Home slots encoded per hold of the Node's lock while snapshotting: the
  // longest pause a snapshot imposes on checks (bench/snapshot_bench.cc).
  size_t snapshot_slice_slots = 16384;
  // Largest snapshot file read at Start.
  uint64_t max_snapshot_bytes = uint64_t{1} << 32;
  // Where membership changes are recorded besides the log (the status
  // page's recent events; borrowed, must outlive the driver). Optional.
  MembershipEventLog* membership_events = nullptr;
  // Called once, from an I/O thread, when a newer process has taken our
  // node id (membership::Swim::superseded_by()): tallyd then stops. Optional.
  std::function<void()> on_superseded;

  bool enabled() const { return !gossip.empty(); }
};

// Something that can answer a client later from any thread (a seqpacket
// connection). Thread-safe.
class ReplySink {
 public:
  virtual ~ReplySink() = default;
  // Sends one reply without blocking; drops (and counts) it when it cannot.
  virtual void SendReply(std::span<const std::byte> bytes) = 0;
};

// Where a client datagram's reply goes: a datagram socket and the sender's
// address, or a sink.
struct ReplyTarget {
  int fd = -1;
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  std::shared_ptr<ReplySink> sink;
  // When set, the reply's results are counted there by `door` (as the Node
  // tallied them) with the time from receipt to reply.
  DoorMetrics* metrics = nullptr;
  Door door = Door::kUdp;
};

struct ClientDatagram {
  std::span<const std::byte> bytes;  // a checks message; valid during the call only
  const ReplyTarget* target = nullptr;
  // Its checks, when the door decoded them already (MessageProcessor::
  // cluster_checks(): views into `bytes`, or into the reader's aligned copy
  // of them, valid during the call); the Node then skips its decode.
  std::optional<std::span<const CheckRequestRef>> checks;
};

class ClusterDriver {
 public:
  // `counters` is borrowed (the daemon's transport counters) and must outlive this.
  ClusterDriver(boost::asio::io_context& io, ClusterOptions options, Counters* counters);
  // REQUIRES: no thread runs the io_context (or Close() was called then).
  ~ClusterDriver();
  ClusterDriver(const ClusterDriver&) = delete;
  ClusterDriver& operator=(const ClusterDriver&) = delete;

  // Validates the options, binds the gossip socket and listener, creates the
  // Node and starts it (contacts the seeds). Call once, before the
  // io_context runs. False with `*error` on failure.
  bool Start(std::string* error);
  // Closes every socket and timer. Call when no thread runs the io_context.
  void Close();

  // The advertised gossip address ("127.0.0.1:PORT") and node id, after Start.
  const std::string& gossip_address() const { return gossip_address_; }
  const std::string& node_id() const { return options_.node.node_id; }
  uint64_t generation() const { return options_.node.generation; }

  // Hands client check datagrams received at `now` to the Node under one
  // lock, then sends what it answered. Any thread.
  void HandleClientDatagrams(std::span<const ClientDatagram> datagrams, Instant now);

  // Our Envoy rules digest (raw bytes: membership::kRulesDigestBytes, or
  // empty without rules doors) for the Node to tell every member
  // (Node::SetRulesDigest). Any thread, after Start.
  void SetRulesDigest(std::string digest);

  // Load-adaptive limits (Node::SetAdaptiveRules, Node::ReportSignal) under
  // the Node's lock. Any thread, after Start.
  void SetAdaptiveRules(std::vector<core::AdaptiveRuleConfig> rules);
  core::AdaptiveHost::ReportResult ReportSignal(std::string_view domain, std::string_view rule,
                                                double value, uint64_t count);

  // WriteOverride (below) stamped with the driver's clock now. Any thread,
  // after Start.
  crdt::LimitOverrides::MergeResult WriteOverride(const crdt::Selector& selector,
                                                  const crdt::OverrideValue& value);
  // The descriptor-form runtime overrides in force here, republished after
  // every change of the Node's map: what the rules doors read without the
  // Node's lock. Valid for the driver's life. Any thread.
  const PublishedOverrides* published_overrides() const;

  // For status and owner queries. Any thread.
  wire::StatusReport Status(Instant now);
  wire::OwnerReport Owner(const wire::OwnerQuery& query, Instant now);
  LimiterStats limiter_stats();

  // Runtime limit overrides (docs/DESIGN.md, "Runtime limit overrides"):
  // Node::WriteOverride at `now` under the Node's lock, then sends the
  // write to every member. Any thread, after Start.
  crdt::LimitOverrides::MergeResult WriteOverride(const crdt::Selector& selector,
                                                  const crdt::OverrideValue& value, Instant now);
  // Calls `read` with the Node's override map under the Node's lock (keep
  // it short: checks wait). Any thread, after Start.
  void ReadOverrides(const std::function<void(const crdt::LimitOverrides&)>& read);

  // Re-reads the keyring file (tallyd does it on SIGHUP). On failure the keys in
  // use stay; false with `*error`. True without a keyring. Any thread.
  bool ReloadKeyring(std::string* error);
  // Writes a last snapshot now (when a state dir is set), after stopping
  // the periodic writer. Call once no thread runs the io_context (tallyd
  // calls it after a graceful shutdown). Returns false if writing failed.
  bool WriteFinalSnapshot();
  SnapshotCounters snapshot_counters() const;

  // Graceful leave: Node::Leave, then keeps ticking until SWIM's leave is
  // flushed (or leave_grace passes), then calls `done` once, from an I/O
  // thread. Any thread; later calls only run `done` if it has not run yet.
  void Leave(std::function<void()> done);

 private:
  struct Impl;
  ClusterOptions options_;  // before impl_, which refers to it
  std::string gossip_address_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_CLUSTER_DRIVER_H_

// ClusterDriver::Impl: the state and the private methods of ClusterDriver
// (daemon/io/cluster_driver.h), shared by its source files and nothing else:
//   cluster_driver.cc            the driver core: the public methods, the locked
//                                sections, timers and housekeeping, sending
//   cluster_driver_bind.cc       socket setup: the gossip UDP socket and TCP listener
//   cluster_driver_gossip.cc     gossip UDP datagrams in and out
//   cluster_driver_streams.cc    peer TCP streams in and out (framing, connections)
//   cluster_driver_status.cc     the status report
//   cluster_driver_snapshots.cc  snapshot restore, writes and the writer thread
//   cluster_driver_dns.cc        --join dns: seeds and their re-resolution
#ifndef TALLY_DAEMON_IO_CLUSTER_DRIVER_IMPL_H_
#define TALLY_DAEMON_IO_CLUSTER_DRIVER_IMPL_H_

#include <array>
#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/io/accept_backoff.h"
#include "daemon/io/cluster_driver.h"
#include "daemon/io/datagram_batch.h"
#include "daemon/io/snapshot_schedule.h"
#include "daemon/io/snapshot_writer.h"
#include "daemon/io/stream_frames.h"
#include "persist/snapshot.h"

namespace tally::io {
namespace cluster_internal {

constexpr size_t kGossipBatch = 32;               // datagrams per recvmmsg
constexpr size_t kGossipBufferBytes = 64 * 1024;  // per datagram
constexpr size_t kReadChunkBytes = 64 * 1024;     // inbound stream reads

inline bool Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

// "ip:port" in the one spelling every node uses (FormatSockaddr's).
std::optional<std::string> Canonical(const std::string& text, std::string* why);

}  // namespace cluster_internal

struct ClusterDriver::Impl {
  using tcp = boost::asio::ip::tcp;

  Impl(boost::asio::io_context& io_context, ClusterOptions& o, Counters* c)
      : io(io_context),
        options(o),
        counters(c),
        timer(io_context),
        housekeeping_timer(io_context),
        accept_retry_timer(io_context),
        accept_backoff("peer", c != nullptr ? &c->accept_fd_exhausted_peer : nullptr),
        gossip_udp(io_context),
        acceptor(io_context),
        strand(boost::asio::make_strand(io_context)) {}

  // What one locked section produced, sent after the lock is released.
  struct ReadyReply {
    ReplyTarget target;
    std::vector<std::byte> bytes;
    int64_t received_ns = 0;  // when the checks came in (monotonic)
    core::DecisionCounts decisions;
  };
  struct Batch {
    core::Outbox out;
    std::vector<ReadyReply> replies;
    std::function<void()> leave_done;  // set when the leave just finished
  };
  struct PendingReply {
    ReplyTarget target;
    int64_t created_ns = 0;
  };
  // For the status page (options.membership_events), beside the log line.
  void RecordMembershipEvent(const core::NodeEvent& e, const char* what) {
    if (options.membership_events == nullptr) return;
    options.membership_events->Record(
        MembershipEvent{0, e.member_id, what, e.from_state, e.state, e.incarnation, e.generation});
  }

  class InboundStream;
  struct OutboundStream {
    OutboundStream(const boost::asio::strand<boost::asio::io_context::executor_type>& s,
                   std::string to)
        : address(std::move(to)), socket(s), timer(s) {}
    enum class State { kIdle, kConnecting, kConnected };
    std::string address;
    tcp::socket socket;
    boost::asio::steady_timer timer;           // connect timeout
    std::deque<std::vector<std::byte>> queue;  // framed
    size_t queued_bytes = 0;
    State state = State::kIdle;
    bool writing = false;
    uint64_t epoch = 0;                 // bumps on every reset; stale handlers compare it
    std::array<std::byte, 512> sink{};  // reads only to notice the peer closing
  };

  // ---- binding ----
  bool Bind(std::string* error);

  // ---- the locked sections ----
  void ResolveLocked(Batch* b);
  // After the Node took peer messages: flush its output, resolve client
  // replies and re-arm the timer.
  void FlushPeerInputLocked(const Instant& now, Batch* b);
  void ArmTimerLocked(int64_t now_ns);
  void CheckLeaveLocked(const Instant& now, Batch* b);
  // Republishes the descriptor-form overrides when the Node's map changed
  // since the last time (one integer compare when it did not).
  void PublishOverridesLocked();
  void Send(Batch& b);
  // Logs what the Node said it did (and records membership changes for the
  // status page; stops the process when superseded), with no lock held.
  void ReportEvents(const std::vector<core::NodeEvent>& events);
  void SendPeers(std::vector<core::Outbox::PeerPacket>& packets);
  void CountReplies(const std::vector<ReadyReply>& replies);
  void SendClients(std::vector<ReadyReply>& replies);

  void OnTimer();
  void ArmHousekeeping();
  void OnHousekeeping();

  // ---- gossip UDP ----
  void ArmGossip();
  void OnGossipReadable();
  void HandleGossipBatch(size_t n);

  // ---- TCP in ----
  void ArmAccept();
  void HandlePeerFrames(const std::string& from, std::span<const std::span<const std::byte>> f);
  void ForgetInbound(InboundStream* stream);

  // ---- TCP out (strand only) ----
  void EnqueueStream(const std::string& address, std::vector<std::byte> bytes);
  void OnEnqueue(const std::string& address, std::vector<std::byte> frame);
  void Connect(const std::string& address, OutboundStream& s);
  void WriteNext(const std::string& address, OutboundStream& s);
  void ReadSink(OutboundStream& s);
  void Reset(const std::string& address, OutboundStream& s, const char* why,
             const boost::system::error_code& ec);

  wire::StatusReport StatusLocked(Instant now);

  // ---- peer authentication ----
  // Opens a received peer packet in place; false: dropped (counted).
  bool OpenPeerLocked(const std::string& from, const Instant& now,
                      std::span<const std::byte>* data) {
    return peer_auth->Open(from, now.wall.count(), &open_scratch, data);
  }
  // ---- snapshots (docs/DESIGN.md, "Snapshots") ----
  // Reads STATE_DIR/counts.snapshot and joins it into the Node; a refused
  // or unreadable file is logged, counted and moved aside, and the node
  // starts clean. Call before the Node serves.
  void RestoreSnapshot(const Instant& now);
  // What a snapshot this member reads must match (ours: cluster, node,
  // generation, geometry; the size cap), as of `now`.
  SnapshotIdentity Identity() const;  // whose counts our snapshots hold
  persist::SnapshotExpectations ExpectedSnapshot(const Instant& now) const;
  // A single node's overrides (io::LocalOverrides' file in the same state
  // dir) become this member's when it restored none of its own, or the file
  // is newer than the snapshot it restored: merged with their own stamps
  // (the LWW join, as a peer's), written into counts.snapshot at once, and
  // the file renamed *.imported so no later start takes it again. Call after
  // RestoreSnapshot, before the Node serves.
  void ImportSingleNodeOverrides(const Instant& now);
  // Encodes the Node's store in slices of snapshot_slice_slots home slots,
  // taking `mu` once per slice, then seals and writes the file with no lock
  // held. Only one runs at a time (snapshot_write_mu).
  bool WriteSnapshot(const char* why);
  // The writer thread: writes when snapshot_schedule says.
  void SnapshotLoop();
  void StopSnapshotThread();
  // The override map changed (any source: a local write, a peer's, a
  // dropped tombstone): a write is due within about a second
  // (SnapshotSchedule), so a crash of every member soon after loses no
  // override. Takes snapshot_mu (always after mu, never before).
  void OverridesChangedLocked();

  // ---- --join dns: ----
  // Resolves the DNS seeds into canonical addresses (blocking).
  std::vector<std::string> ResolveDnsSeeds();
  // No other member up, or one suspect or dead: time to look again.
  bool WantsReResolveLocked() const;
  void DnsLoop();
  void StopDnsThread();

  boost::asio::io_context& io;
  ClusterOptions& options;
  Counters* counters;

  std::mutex mu;  // guards node, tokens, timer state, membership snapshot, leave state
  std::unique_ptr<core::Node> node;
  boost::unordered_flat_map<uint64_t, PendingReply> tokens;
  uint64_t next_token = 1;
  boost::asio::steady_timer timer;
  bool timer_armed = false;
  int64_t armed_deadline_ns = 0;
  bool leaving = false;
  bool leave_finished = false;
  std::function<void()> leave_done;
  int64_t started_ns = 0;
  // The descriptor-form overrides the rules doors read, and the version of
  // the Node's map they were built from (published under mu).
  PublishedOverrides published_overrides;
  uint64_t published_overrides_version = 0;

  boost::asio::steady_timer housekeeping_timer;
  boost::asio::steady_timer accept_retry_timer;
  AcceptBackoff accept_backoff;  // used by ArmAccept's handler only
  boost::asio::posix::stream_descriptor gossip_udp;
  tcp::acceptor acceptor;
  boost::asio::strand<boost::asio::io_context::executor_type> strand;
  std::map<std::string, std::unique_ptr<OutboundStream>> outbound;  // strand only
  std::mutex inbound_mu;
  std::unordered_map<InboundStream*, std::shared_ptr<InboundStream>> inbound;  // inbound_mu

  std::atomic<bool> closed{false};
  std::atomic<size_t> stream_queued_bytes{0};
  // Driver counters (statistics; relaxed).
  std::atomic<uint64_t> gossip_datagrams_in{0}, gossip_datagrams_out{0}, gossip_bytes_in{0},
      gossip_bytes_out{0}, gossip_send_errors{0}, stream_frames_in{0}, stream_bytes_in{0},
      stream_frames_out{0}, stream_bytes_out{0}, stream_frames_dropped{0}, stream_connects{0},
      stream_errors{0}, inbound_refused{0}, replies_expired{0}, peer_bad_address{0},
      timers_lost{0};  // Node timers found past due unfired and armed again

  // Snapshots. The writer thread sleeps on snapshot_cv.
  std::thread snapshot_thread;
  std::mutex snapshot_mu;  // guards snapshot_stop, snapshot_schedule
  std::condition_variable snapshot_cv;
  bool snapshot_stop = false;
  std::optional<SnapshotSchedule> snapshot_schedule;  // set after the restore, with a state dir
  std::mutex snapshot_write_mu;            // one writer at a time; guards snapshot_buffer
  std::vector<std::byte> snapshot_buffer;  // the last payload, reused (its pages are mapped)
  mutable std::mutex snapshot_stats_mu;
  SnapshotCounters snapshot_stats;  // snapshot_stats_mu
  // The written time of the snapshot RestoreSnapshot loaded (none: none was).
  std::optional<int64_t> restored_written_wall_ms;

  // --join dns: seeds, re-resolved on dns_thread.
  std::vector<DnsSeed> dns_seeds;
  std::vector<std::string> static_seeds;  // canonical, from --join HOST:PORT
  uint16_t gossip_port = 0;
  std::thread dns_thread;
  std::mutex dns_mu;  // guards dns_stop
  std::condition_variable dns_cv;
  bool dns_stop = false;
  std::atomic<uint64_t> dns_resolutions{0}, dns_failures{0};

  // Gossip receive buffers: one wait outstanding, so one handler at a time.
  DatagramBatch gossip_rx{cluster_internal::kGossipBatch, cluster_internal::kGossipBufferBytes};

  std::unique_ptr<PeerAuth> peer_auth;  // set by Start
  std::vector<std::byte> open_scratch;  // mu: opened peer packets
};

class ClusterDriver::Impl::InboundStream : public std::enable_shared_from_this<InboundStream> {
 public:
  InboundStream(Impl* impl, tcp::socket socket, std::string remote)
      : impl_(impl), socket_(std::move(socket)), remote_(std::move(remote)) {}

  void Start() { Read(); }
  void Close() {
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

 private:
  void Read();
  void OnRead(const boost::system::error_code& ec, size_t n);

  Impl* impl_;
  tcp::socket socket_;
  std::string remote_;
  StreamFrameDecoder decoder_{wire::kMaxPeerMessageBytes + PeerSeal::kOverheadBytes,
                              cluster_internal::kReadChunkBytes};
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_CLUSTER_DRIVER_IMPL_H_

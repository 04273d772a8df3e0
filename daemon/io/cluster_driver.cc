#include "daemon/io/cluster_driver.h"

#include <fmt/ranges.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "daemon/io/datagram_batch.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/io/sockets.h"
#include "daemon/io/stream_frames.h"
#include "persist/snapshot.h"
#include "wire/peer_codec.h"

namespace tally::io {
namespace {

using boost::asio::ip::tcp;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr size_t kGossipBatch = 32;               // datagrams per recvmmsg
constexpr size_t kGossipBufferBytes = 64 * 1024;  // per datagram
constexpr int kMaxGossipBatchesPerWakeup = 8;
constexpr size_t kReadChunkBytes = 64 * 1024;  // inbound stream reads
constexpr int kBindAttempts = 50;
constexpr std::chrono::milliseconds kHousekeepingInterval{1000};
constexpr std::chrono::milliseconds kLeavePoll{10};
constexpr std::chrono::milliseconds kAcceptRetry{100};

bool Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

int64_t ToNs(std::chrono::milliseconds ms) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(ms).count();
}

bool IsWildcard(const HostPort& hp) {
  return hp.host == "0.0.0.0" || hp.host == "::" || hp.host == "0:0:0:0:0:0:0:0";
}

// "ip:port" in the one spelling every node uses (FormatSockaddr's).
std::optional<std::string> Canonical(const std::string& text, std::string* why) {
  std::optional<HostPort> hp = ParseHostPort(text, why);
  if (!hp) return std::nullopt;
  if (hp->port == 0) {
    *why = "port 0 is not a reachable address: '" + text + "'";
    return std::nullopt;
  }
  sockaddr_storage addr;
  socklen_t len = ToSockaddr(*hp, &addr);
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
}

}  // namespace

struct ClusterDriver::Impl {
  Impl(boost::asio::io_context& io_context, ClusterOptions& o, Counters* c)
      : io(io_context),
        options(o),
        counters(c),
        timer(io_context),
        housekeeping_timer(io_context),
        accept_retry_timer(io_context),
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
  struct MemberSnapshot {
    std::string state;
    uint64_t incarnation = 0;
    uint64_t generation = 0;
    std::string address;
    friend bool operator==(const MemberSnapshot&, const MemberSnapshot&) = default;
  };

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
  // replies, log membership changes and re-arm the timer.
  void FlushPeerInputLocked(const Instant& now, Batch* b);
  void ArmTimerLocked(int64_t now_ns);
  void LogMembershipLocked();
  void CheckLeaveLocked(const Instant& now, Batch* b);
  void Send(Batch& b);
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
  // Encodes the Node's store in slices of snapshot_slice_slots home slots,
  // taking `mu` once per slice, then seals and writes the file with no lock
  // held. Only one runs at a time (snapshot_write_mu).
  bool WriteSnapshot(const char* why);
  void SnapshotLoop();
  void StopSnapshotThread();

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
  std::map<std::string, MemberSnapshot> members_seen;
  std::map<std::string, bool> clock_warned;
  std::optional<bool> owning_seen;
  bool join_warned = false;  // the "no seed answered" warning was logged
  // Another process under our node id: the count last logged, and when.
  uint64_t foreign_self_logged = 0;
  int64_t foreign_self_logged_ns = 0;
  bool leaving = false;
  bool leave_finished = false;
  int64_t leave_deadline_ns = 0;
  std::function<void()> leave_done;
  int64_t started_ns = 0;

  boost::asio::steady_timer housekeeping_timer;
  boost::asio::steady_timer accept_retry_timer;
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
      stream_errors{0}, inbound_refused{0}, replies_expired{0}, peer_bad_address{0};

  // Snapshots. The periodic writer thread sleeps on snapshot_cv.
  std::thread snapshot_thread;
  std::mutex snapshot_mu;  // guards snapshot_stop
  std::condition_variable snapshot_cv;
  bool snapshot_stop = false;
  std::mutex snapshot_write_mu;            // one writer at a time; guards snapshot_buffer
  std::vector<std::byte> snapshot_buffer;  // the last payload, reused (its pages are mapped)
  mutable std::mutex snapshot_stats_mu;
  SnapshotCounters snapshot_stats;  // snapshot_stats_mu

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
  DatagramBatch gossip_rx{kGossipBatch, kGossipBufferBytes};

  std::unique_ptr<PeerAuth> peer_auth;  // set by Start
  std::vector<std::byte> open_scratch;  // mu: opened peer packets
};

// ---------------------------------------------------------------- inbound TCP

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
  void Read() {
    std::span<std::byte> space = decoder_.ReadSpace();
    socket_.async_read_some(boost::asio::buffer(space.data(), space.size()),
                            [self = shared_from_this()](const boost::system::error_code& ec,
                                                        size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(const boost::system::error_code& ec, size_t n) {
    if (ec) {
      if (ec != boost::asio::error::eof && ec != boost::asio::error::operation_aborted) {
        spdlog::debug("stream from {}: {}", remote_, ec.message());
      }
      impl_->ForgetInbound(this);
      return;
    }
    if (!decoder_.Received(n)) {
      spdlog::warn("stream from {}: bad frame length {}; closing", remote_, decoder_.bad_length());
      impl_->stream_errors.fetch_add(1, std::memory_order_relaxed);
      Close();
      impl_->ForgetInbound(this);
      return;
    }
    if (!decoder_.frames().empty()) impl_->HandlePeerFrames(remote_, decoder_.frames());
    Read();
  }

  Impl* impl_;
  tcp::socket socket_;
  std::string remote_;
  StreamFrameDecoder decoder_{wire::kMaxPeerMessageBytes + PeerSeal::kOverheadBytes,
                              kReadChunkBytes};
};

// ---------------------------------------------------------------- binding

bool ClusterDriver::Impl::Bind(std::string* error) {
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(options.gossip, &why);
  if (!hp) return Fail(error, "gossip: " + why);
  const int family = hp->v6 ? AF_INET6 : AF_INET;
  const int one = 1;
  for (int attempt = 0; attempt < kBindAttempts; ++attempt) {
    std::vector<UniqueFd> udp;
    std::string bound;
    if (!BindUdpGroup(*hp, 1, &udp, &bound, &why)) return Fail(error, "gossip " + why);
    std::optional<HostPort> bound_hp = ParseHostPort(bound, &why);
    if (!bound_hp) return Fail(error, "gossip: " + why);
    UniqueFd listener(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return Fail(error, std::string("socket: ") + strerror(errno));
    setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (hp->v6) setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    sockaddr_storage addr;
    socklen_t len = ToSockaddr(*bound_hp, &addr);
    if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      int err = errno;
      if (err == EADDRINUSE && hp->port == 0) continue;  // UDP port free, TCP not: again
      return Fail(error, "bind tcp " + bound + ": " + strerror(err));
    }
    if (listen(listener.get(), SOMAXCONN) != 0) {
      return Fail(error, std::string("listen: ") + strerror(errno));
    }
    boost::system::error_code ec;
    acceptor.assign(hp->v6 ? tcp::v6() : tcp::v4(), listener.Release(), ec);
    if (ec) return Fail(error, "acceptor: " + ec.message());
    gossip_udp.assign(udp[0].Release());
    if (!options.advertise.empty()) {
      std::optional<std::string> a = Canonical(options.advertise, &why);
      if (!a) return Fail(error, "advertise: " + why);
      options.node.gossip_address = *a;
    } else {
      if (IsWildcard(*bound_hp)) {
        return Fail(error, "gossip address " + bound +
                               " is a wildcard: peers cannot reach it; pass --advertise");
      }
      options.node.gossip_address = bound;
    }
    return true;
  }
  return Fail(error, "gossip: no port free for both UDP and TCP after " +
                         std::to_string(kBindAttempts) + " attempts");
}

// ---------------------------------------------------------------- locked helpers

void ClusterDriver::Impl::ResolveLocked(Batch* b) {
  if (b->out.client.empty()) return;
  std::vector<uint64_t> answered;
  for (core::Outbox::ClientReply& reply : b->out.client) {
    auto it = tokens.find(reply.reply_token);
    if (it == tokens.end()) {
      // Expired (the Node answered after reply_expiry) or never ours.
      counters->send_errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    b->replies.push_back(ReadyReply{it->second.target, std::move(reply.bytes),
                                    it->second.created_ns, reply.decisions});
    answered.push_back(reply.reply_token);  // a batch may span several datagrams
  }
  for (uint64_t token : answered) tokens.erase(token);
  b->out.client.clear();
}

void ClusterDriver::Impl::FlushPeerInputLocked(const Instant& now, Batch* b) {
  node->Flush(now, &b->out);
  ResolveLocked(b);
  LogMembershipLocked();
  ArmTimerLocked(now.monotonic.count());
}

void ClusterDriver::Impl::ArmTimerLocked(int64_t now_ns) {
  if (closed.load(std::memory_order_relaxed)) return;
  int64_t deadline = node->NextDeadline().count();
  if (leaving && !leave_finished) deadline = std::min(deadline, now_ns + ToNs(kLeavePoll));
  if (timer_armed && deadline >= armed_deadline_ns) return;
  timer_armed = true;
  armed_deadline_ns = deadline;
  timer.expires_at(SteadyTime(std::chrono::nanoseconds(deadline)));
  timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // re-armed earlier, or closing
    OnTimer();
  });
}

void ClusterDriver::Impl::LogMembershipLocked() {
  const membership::MemberTable& table = node->swim().members();
  for (const auto& [id, m] : table) {
    MemberSnapshot now{std::string(membership::StateName(m.state)), m.incarnation, m.generation,
                       m.address};
    auto it = members_seen.find(id);
    if (it == members_seen.end()) {
      if (id != options.node.node_id) {
        spdlog::info("member {} ({}, generation {}) is {}", id, m.address, m.generation, now.state);
      }
      members_seen.emplace(id, std::move(now));
    } else if (!(it->second == now)) {
      if (it->second.generation != now.generation) {
        spdlog::info("member {} restarted: generation {} -> {} at {}, {}", id,
                     it->second.generation, now.generation, now.address, now.state);
      } else if (it->second.state != now.state) {
        spdlog::info("member {} ({}): {} -> {} (incarnation {})", id, now.address, it->second.state,
                     now.state, now.incarnation);
      }
      it->second = std::move(now);
    }
  }
  for (auto it = members_seen.begin(); it != members_seen.end();) {
    if (table.Find(it->first) == nullptr) {
      spdlog::info("member {} forgotten", it->first);
      it = members_seen.erase(it);
    } else {
      ++it;
    }
  }
}

void ClusterDriver::Impl::CheckLeaveLocked(const Instant& now, Batch* b) {
  if (!leaving || leave_finished) return;
  // Alone, there is nobody to tell.
  bool alone = true;
  for (const auto& [id, m] : node->swim().members()) {
    if (id != options.node.node_id && m.up()) alone = false;
  }
  const bool flushed = (alone || node->swim().LeaveFlushed()) &&
                       stream_queued_bytes.load(std::memory_order_relaxed) == 0;
  if (flushed || now.monotonic.count() >= leave_deadline_ns) {
    leave_finished = true;
    spdlog::info("leave {}", flushed ? "flushed" : "grace period over; stopping anyway");
    b->leave_done = std::move(leave_done);
  }
}

// ---------------------------------------------------------------- sending

// Decisions by door (GET /metrics), as the Node tallied each reply, with no
// lock held.
void ClusterDriver::Impl::CountReplies(const std::vector<ReadyReply>& replies) {
  int64_t now_ns = 0;
  for (const ReadyReply& r : replies) {
    if (r.target.metrics == nullptr) continue;
    if (now_ns == 0) now_ns = ReadClock().monotonic.count();
    r.target.metrics->Count(r.target.door, r.decisions);
    r.target.metrics->ObserveLatency(
        r.target.door, static_cast<uint64_t>(std::max<int64_t>(0, now_ns - r.received_ns)));
  }
}

void ClusterDriver::Impl::Send(Batch& b) {
  SendPeers(b.out.peer);
  SendClients(b.replies);
  if (b.leave_done) b.leave_done();
}

void ClusterDriver::Impl::SendPeers(std::vector<core::Outbox::PeerPacket>& packets) {
  if (packets.empty()) return;
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> lens;
  std::vector<iovec> iov;
  std::vector<size_t> datagram_index;
  addrs.reserve(packets.size());
  const int64_t wall_ms = ReadClock().wall.count();
  for (size_t i = 0; i < packets.size(); ++i) {
    core::Outbox::PeerPacket& p = packets[i];
    peer_auth->SealInPlace(&p.bytes, wall_ms);
    if (p.stream) {
      EnqueueStream(p.to_address, std::move(p.bytes));
      continue;
    }
    sockaddr_storage addr;
    socklen_t len = 0;
    if (!ParseSockaddr(p.to_address, &addr, &len)) {
      peer_bad_address.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    addrs.push_back(addr);
    lens.push_back(len);
    datagram_index.push_back(i);
  }
  if (datagram_index.empty()) return;
  std::vector<mmsghdr> msgs(datagram_index.size());
  iov.resize(datagram_index.size());
  uint64_t bytes = 0;
  for (size_t k = 0; k < datagram_index.size(); ++k) {
    core::Outbox::PeerPacket& p = packets[datagram_index[k]];
    iov[k] = iovec{p.bytes.data(), p.bytes.size()};
    bytes += p.bytes.size();
    msghdr& h = msgs[k].msg_hdr;
    h = msghdr{};
    h.msg_name = &addrs[k];
    h.msg_namelen = lens[k];
    h.msg_iov = &iov[k];
    h.msg_iovlen = 1;
  }
  auto [sent, failed] = SendDatagrams(gossip_udp.native_handle(), msgs);
  gossip_datagrams_out.fetch_add(sent, std::memory_order_relaxed);
  gossip_bytes_out.fetch_add(bytes, std::memory_order_relaxed);  // attempted
  if (failed > 0) gossip_send_errors.fetch_add(failed, std::memory_order_relaxed);
}

void ClusterDriver::Impl::SendClients(std::vector<ReadyReply>& replies) {
  if (replies.empty()) return;
  CountReplies(replies);
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iov(replies.size());
  size_t i = 0;
  while (i < replies.size()) {
    ReadyReply& r = replies[i];
    if (r.target.sink) {
      r.target.sink->SendReply(r.bytes);
      ++i;
      continue;
    }
    // A run of replies from the same socket goes out in one sendmmsg.
    const int fd = r.target.fd;
    msgs.clear();
    size_t j = i;
    for (; j < replies.size() && !replies[j].target.sink && replies[j].target.fd == fd; ++j) {
      iov[j] = iovec{replies[j].bytes.data(), replies[j].bytes.size()};
      mmsghdr m{};
      m.msg_hdr.msg_name = &replies[j].target.addr;
      m.msg_hdr.msg_namelen = replies[j].target.addr_len;
      m.msg_hdr.msg_iov = &iov[j];
      m.msg_hdr.msg_iovlen = 1;
      msgs.push_back(m);
    }
    auto [sent, failed] = SendDatagrams(fd, msgs);
    Counters::Add(counters->datagrams_out, sent);
    Counters::Add(counters->send_errors, failed);
    i = j;
  }
}

// ---------------------------------------------------------------- timers

void ClusterDriver::Impl::OnTimer() {
  if (closed.load(std::memory_order_relaxed)) return;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    timer_armed = false;
    node->Tick(now, &b.out);
    ResolveLocked(&b);
    LogMembershipLocked();
    CheckLeaveLocked(now, &b);
    ArmTimerLocked(now.monotonic.count());
  }
  Send(b);
}

void ClusterDriver::Impl::ArmHousekeeping() {
  housekeeping_timer.expires_after(kHousekeepingInterval);
  housekeeping_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || closed.load(std::memory_order_relaxed)) return;
    OnHousekeeping();
    ArmHousekeeping();
  });
}

void ClusterDriver::Impl::OnHousekeeping() {
  std::lock_guard<std::mutex> lock(mu);
  const Instant now = ReadClock();
  const int64_t expiry_ns = ToNs(options.reply_expiry);
  const uint64_t expired = boost::unordered::erase_if(tokens, [&](const auto& entry) {
    return now.monotonic.count() - entry.second.created_ns > expiry_ns;
  });
  if (expired > 0) {
    replies_expired.fetch_add(expired, std::memory_order_relaxed);
    spdlog::warn("{} client requests got no answer from the node within {} ms; dropped", expired,
                 options.reply_expiry.count());
  }
  // Clock offsets: say so once when a member drifts past the warning level.
  const double warn_ms = static_cast<double>(options.node.warn_clock_offset_ms);
  for (const auto& [id, m] : node->swim().members()) {
    if (id == options.node.node_id) continue;
    std::optional<double> offset = node->swim().ClockOffsetMs(id);
    if (!offset) continue;
    bool far = std::abs(*offset) > warn_ms;
    bool& warned = clock_warned[id];
    if (far && !warned) {
      spdlog::warn(
          "clock offset of member {} is {:.1f} ms (warning above {} ms, owning stops "
          "beyond {} ms against most peers)",
          id, *offset, options.node.warn_clock_offset_ms, options.node.max_clock_offset_ms);
    } else if (!far && warned) {
      spdlog::info("clock offset of member {} back to {:.1f} ms", id, *offset);
    }
    warned = far;
  }
  peer_auth->LogRejections(now.monotonic.count() / 1'000'000);
  core::NodeStatus status = node->Status(now);
  // Say once that --join found nobody (a typo or a firewall looks exactly
  // like a cluster of one otherwise), and once when a seed answered after all.
  if (!status.join_warning.empty() && !join_warned) {
    spdlog::warn("join: {}", status.join_warning);
    join_warned = true;
  } else if (status.join_warning.empty() && join_warned) {
    spdlog::info("join: a seed answered; joined the cluster");
    join_warned = false;
  }
  // Another process under our node id writes the same counter slots: say so
  // (at most once a minute) besides counting it (swim_foreign_self).
  if (status.swim.foreign_self > foreign_self_logged &&
      (foreign_self_logged == 0 ||
       now.monotonic.count() - foreign_self_logged_ns > int64_t{60'000'000'000})) {
    spdlog::error(
        "another process is using node id {} ({} messages or rumors of it so far; ours is "
        "generation {}): two processes under one id overwrite each other's counts; stop one "
        "of them or give it its own --node-id",
        options.node.node_id, status.swim.foreign_self, node->swim().self().generation);
    foreign_self_logged = status.swim.foreign_self;
    foreign_self_logged_ns = now.monotonic.count();
  }
  if (!owning_seen || *owning_seen != status.owning) {
    if (status.owning) {
      if (owning_seen) spdlog::info("owning keys again");
    } else {
      spdlog::warn("not owning keys: {}", status.not_owning_reason);
    }
    owning_seen = status.owning;
  }
}

// ---------------------------------------------------------------- gossip UDP

void ClusterDriver::Impl::ArmGossip() {
  gossip_udp.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this](const boost::system::error_code& ec) {
                          if (ec) return;
                          OnGossipReadable();
                        });
}

void ClusterDriver::Impl::OnGossipReadable() {
  if (gossip_rx.Drain(gossip_udp.native_handle(), kMaxGossipBatchesPerWakeup, "gossip recvmmsg",
                      [this](size_t n) { HandleGossipBatch(n); })) {
    ArmGossip();
  }
}

void ClusterDriver::Impl::HandleGossipBatch(size_t n) {
  uint64_t bytes = 0;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    for (size_t i = 0; i < n; ++i) {
      if (gossip_rx.truncated(i)) continue;  // larger than any peer datagram
      const std::string from = FormatSockaddr(reinterpret_cast<sockaddr*>(&gossip_rx.address(i)),
                                              gossip_rx.address_length(i));
      std::span<const std::byte> data = gossip_rx.data(i);
      bytes += data.size();
      if (!OpenPeerLocked(from, now, &data)) continue;
      node->OnPeerMessage(from, data, now, &b.out);
    }
    FlushPeerInputLocked(now, &b);
  }
  gossip_datagrams_in.fetch_add(n, std::memory_order_relaxed);
  gossip_bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  Send(b);
}

// ---------------------------------------------------------------- TCP in

void ClusterDriver::Impl::ArmAccept() {
  acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted || closed.load()) return;
    if (ec) {
      spdlog::warn("gossip accept: {}; retrying in {} ms", ec.message(), kAcceptRetry.count());
      accept_retry_timer.expires_after(kAcceptRetry);
      accept_retry_timer.async_wait([this](const boost::system::error_code& e) {
        if (!e) ArmAccept();
      });
      return;
    }
    boost::system::error_code ignored;
    tcp::endpoint remote = socket.remote_endpoint(ignored);
    std::string from = FormatSockaddr(remote.data(), static_cast<socklen_t>(remote.size()));
    std::shared_ptr<InboundStream> stream;
    {
      std::lock_guard<std::mutex> lock(inbound_mu);
      if (inbound.size() < options.max_inbound_streams) {
        stream = std::make_shared<InboundStream>(this, std::move(socket), std::move(from));
        inbound.emplace(stream.get(), stream);
      }
    }
    if (stream) {
      stream->Start();
    } else {
      inbound_refused.fetch_add(1, std::memory_order_relaxed);
      socket.close(ignored);
    }
    ArmAccept();
  });
}

void ClusterDriver::Impl::HandlePeerFrames(const std::string& from,
                                           std::span<const std::span<const std::byte>> frames) {
  uint64_t bytes = 0;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    for (std::span<const std::byte> frame : frames) {
      bytes += frame.size();
      if (!OpenPeerLocked(from, now, &frame)) continue;
      node->OnPeerMessage(from, frame, now, &b.out);
    }
    FlushPeerInputLocked(now, &b);
  }
  stream_frames_in.fetch_add(frames.size(), std::memory_order_relaxed);
  stream_bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  Send(b);
}

void ClusterDriver::Impl::ForgetInbound(InboundStream* stream) {
  std::shared_ptr<InboundStream> keep;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(inbound_mu);
  auto it = inbound.find(stream);
  if (it != inbound.end()) {
    keep = std::move(it->second);
    inbound.erase(it);
  }
}

// ---------------------------------------------------------------- TCP out

void ClusterDriver::Impl::EnqueueStream(const std::string& address, std::vector<std::byte> bytes) {
  std::vector<std::byte> frame;
  frame.reserve(kStreamFrameHeaderBytes + bytes.size());
  AppendStreamFrame(bytes, &frame);
  stream_queued_bytes.fetch_add(frame.size(), std::memory_order_relaxed);
  boost::asio::post(strand, [this, address, frame = std::move(frame)]() mutable {
    OnEnqueue(address, std::move(frame));
  });
}

void ClusterDriver::Impl::OnEnqueue(const std::string& address, std::vector<std::byte> frame) {
  const size_t size = frame.size();
  if (closed.load(std::memory_order_relaxed)) {
    stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
    return;
  }
  std::unique_ptr<OutboundStream>& slot = outbound[address];
  if (!slot) slot = std::make_unique<OutboundStream>(strand, address);
  OutboundStream& s = *slot;
  if (s.queued_bytes + size > options.max_stream_queue_bytes) {
    stream_frames_dropped.fetch_add(1, std::memory_order_relaxed);
    stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
    spdlog::debug("stream to {}: queue full ({} bytes); frame dropped", address, s.queued_bytes);
    return;
  }
  s.queue.push_back(std::move(frame));
  s.queued_bytes += size;
  if (s.state == OutboundStream::State::kIdle) {
    Connect(address, s);
  } else if (s.state == OutboundStream::State::kConnected && !s.writing) {
    WriteNext(address, s);
  }
}

void ClusterDriver::Impl::Connect(const std::string& address, OutboundStream& s) {
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(address, &why);
  boost::system::error_code ec;
  auto ip = hp ? boost::asio::ip::make_address(hp->host, ec) : boost::asio::ip::address();
  if (!hp || ec) {
    peer_bad_address.fetch_add(1, std::memory_order_relaxed);
    Reset(address, s, "bad address", ec);
    return;
  }
  s.state = OutboundStream::State::kConnecting;
  stream_connects.fetch_add(1, std::memory_order_relaxed);
  const uint64_t epoch = s.epoch;
  s.timer.expires_after(options.connect_timeout);
  s.timer.async_wait([&s, epoch](const boost::system::error_code& e) {
    if (e || s.epoch != epoch || s.state != OutboundStream::State::kConnecting) return;
    boost::system::error_code ignored;
    s.socket.close(ignored);  // the connect handler resets
  });
  s.socket.async_connect(tcp::endpoint(ip, hp->port),
                         [this, address, &s, epoch](const boost::system::error_code& e) {
                           if (s.epoch != epoch) return;
                           s.timer.cancel();
                           if (e) {
                             Reset(address, s, "connect", e);
                             return;
                           }
                           s.state = OutboundStream::State::kConnected;
                           boost::system::error_code ignored;
                           s.socket.set_option(tcp::no_delay(true), ignored);
                           ReadSink(s);
                           WriteNext(address, s);
                         });
}

void ClusterDriver::Impl::ReadSink(OutboundStream& s) {
  const uint64_t epoch = s.epoch;
  // Peers never write on our connection: a read completing means it closed
  // (or sent garbage). Either way the next frame gets a fresh connection.
  s.socket.async_read_some(boost::asio::buffer(s.sink),
                           [this, &s, epoch](const boost::system::error_code& e, size_t) {
                             if (s.epoch != epoch || e == boost::asio::error::operation_aborted) {
                               return;
                             }
                             boost::system::error_code ignored;
                             s.socket.close(ignored);  // a pending write fails and resets
                             // Nothing in flight: reset now so the next frame reconnects.
                             if (!s.writing) Reset(s.address, s, "peer closed", e);
                           });
}

void ClusterDriver::Impl::WriteNext(const std::string& address, OutboundStream& s) {
  if (s.queue.empty()) {
    s.writing = false;
    return;
  }
  s.writing = true;
  const uint64_t epoch = s.epoch;
  boost::asio::async_write(s.socket, boost::asio::buffer(s.queue.front()),
                           [this, address, &s, epoch](const boost::system::error_code& e, size_t) {
                             if (s.epoch != epoch) return;
                             if (e) {
                               Reset(address, s, "write", e);
                               return;
                             }
                             const size_t size = s.queue.front().size();
                             s.queue.pop_front();
                             s.queued_bytes -= size;
                             stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
                             stream_frames_out.fetch_add(1, std::memory_order_relaxed);
                             stream_bytes_out.fetch_add(size, std::memory_order_relaxed);
                             WriteNext(address, s);
                           });
}

void ClusterDriver::Impl::Reset(const std::string& address, OutboundStream& s, const char* why,
                                const boost::system::error_code& ec) {
  ++s.epoch;
  if (!s.queue.empty()) {
    stream_frames_dropped.fetch_add(s.queue.size(), std::memory_order_relaxed);
    stream_queued_bytes.fetch_sub(s.queued_bytes, std::memory_order_relaxed);
  }
  stream_errors.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("stream to {}: {}: {}; {} frames dropped", address, why, ec.message(),
                s.queue.size());
  s.queue.clear();
  s.queued_bytes = 0;
  s.writing = false;
  s.state = OutboundStream::State::kIdle;
  boost::system::error_code ignored;
  s.timer.cancel();
  s.socket.close(ignored);
}

// ---------------------------------------------------------------- status

wire::StatusReport ClusterDriver::Impl::StatusLocked(Instant now) {
  core::NodeStatus s = node->Status(now);
  wire::StatusReport r;
  r.node_id = s.node_id;
  r.generation = s.generation;
  r.cluster = true;
  r.owning = s.owning;
  r.not_owning_reason = s.not_owning_reason;
  r.key_share = s.key_share;
  r.live_keys = s.live_keys;
  r.partition_policy = s.partition_policy;
  r.last_known_members = s.last_known_members;
  r.gossip_address = options.node.gossip_address;
  r.uptime_ms =
      static_cast<uint64_t>(std::max<int64_t>(0, now.monotonic.count() - started_ns) / 1'000'000);
  for (const core::MemberStatus& m : s.members) {
    wire::MemberReport& w = r.members.emplace_back();
    w.id = m.id;
    w.state = m.state;
    w.incarnation = m.incarnation;
    w.generation = m.generation;
    w.address = m.address;
    if (m.clock_offset_ms) w.clock_offset_ms = *m.clock_offset_ms;
    if (m.rtt_ms) w.rtt_ms = *m.rtt_ms;
  }
  std::sort(r.members.begin(), r.members.end(),
            [](const wire::MemberReport& a, const wire::MemberReport& b) { return a.id < b.id; });
  AppendLimiterCounters(s.limiter, &r.counters);
  const core::NodeStatus::Counters& c = s.counters;
  auto add = [&r](const char* name, uint64_t value) { r.counters.emplace_back(name, value); };
  add("seeds_unanswered", s.seeds_unanswered);
  add("forwarded", c.forwarded);
  add("forward_timeouts", c.forward_timeouts);
  add("relayed", c.relayed);
  add("decided_for_peers", c.decided_for_peers);
  add("routed_past_list", c.routed_past_list);
  add("co_deciders", c.co_deciders);
  add("clock_resyncs", c.clock_resyncs);
  add("replicate_sent", c.replicate_sent);
  add("replicate_received", c.replicate_received);
  add("state_pushes", c.state_pushes);
  add("digests", c.digests);
  add("malformed_peer", c.malformed_peer);
  add("malformed_client", c.malformed_client);
  add("peer_bytes_sent", c.peer_bytes_sent);
  add("peer_messages_sent", c.peer_messages_sent);
  const core::NodeStatus::Counters::RejectedPeerState& rej = c.rejected_peer_state;
  add("rejected_peer_state", rej.total());
  add("rejected_peer_state_non_member", rej.non_member);
  add("rejected_peer_state_unknown_slot", rej.unknown_slot);
  add("rejected_peer_state_slot_table_full", rej.slot_table_full);
  add("rejected_peer_state_geometry", rej.geometry);
  add("rejected_peer_state_geometry_mismatch", rej.geometry_mismatch);
  add("rejected_peer_state_future", rej.future);
  add("rejected_peer_state_expired", rej.expired);
  add("rejected_peer_state_count", rej.count);
  add("rejected_peer_state_rows", rej.rows);
  add("rejected_peer_state_store_full", rej.store_full);
  add("handoffs_served", c.handoffs_served);
  add("handoffs_refused", c.handoffs_refused);
  add("digests_refused", c.digests_refused);
  add("forward_results_refused", c.forward_results_refused);
  // Membership input refused, and another process under our node id.
  add("swim_invalid", s.swim.invalid);
  add("swim_foreign_self", s.swim.foreign_self);
  add("swim_unrefutable_rumors", s.swim.unrefutable_rumors);
  add("swim_address_changes_refused", s.swim.address_changes_refused);
  add("swim_refutations", s.swim.refutations);
  // The failure detector at work: probes, suspicions (this node's own and
  // all timers started), deaths this node declared, and the false ones.
  add("swim_probes", s.swim.probes);
  add("swim_probe_failures", s.swim.probe_failures);
  add("swim_suspicions_raised", s.swim.suspicions_raised);
  add("swim_suspicions_started", s.swim.suspicions_started);
  add("swim_deaths_declared", s.swim.deaths_declared);
  add("swim_suspects_refuted", s.swim.suspects_refuted);
  add("swim_dead_revived", s.swim.dead_revived);
  auto load = [](const std::atomic<uint64_t>& a) { return a.load(std::memory_order_relaxed); };
  add("gossip_datagrams_in", load(gossip_datagrams_in));
  add("gossip_datagrams_out", load(gossip_datagrams_out));
  add("gossip_bytes_in", load(gossip_bytes_in));
  add("gossip_bytes_out", load(gossip_bytes_out));
  add("gossip_send_errors", load(gossip_send_errors));
  add("stream_frames_in", load(stream_frames_in));
  add("stream_bytes_in", load(stream_bytes_in));
  add("stream_frames_out", load(stream_frames_out));
  add("stream_bytes_out", load(stream_bytes_out));
  add("stream_frames_dropped", load(stream_frames_dropped));
  add("stream_connects", load(stream_connects));
  add("stream_errors", load(stream_errors));
  add("stream_inbound_refused", load(inbound_refused));
  add("peer_bad_address", load(peer_bad_address));
  if (!dns_seeds.empty()) {
    add("dns_resolutions", load(dns_resolutions));
    add("dns_failures", load(dns_failures));
  }
  add("replies_pending", tokens.size());
  add("replies_expired", load(replies_expired));
  peer_auth->AppendStatus(&r);
  if (!options.state_dir.empty()) {
    std::lock_guard<std::mutex> stats_lock(snapshot_stats_mu);
    const SnapshotCounters& sc = snapshot_stats;
    add("snapshot_restore_loaded", sc.restore_loaded);
    add("snapshot_restore_missing", sc.restore_missing);
    add("snapshot_restore_rejected", sc.restore_rejected);
    add("snapshot_restore_unreadable", sc.restore_unreadable);
    add("snapshot_restored_keys", sc.restored_keys);
    add("snapshot_restore_dropped_keys", sc.restore_dropped);
    add("snapshot_writes", sc.writes);
    add("snapshot_write_errors", sc.write_errors);
    add("snapshot_last_keys", sc.last_keys);
    add("snapshot_last_bytes", sc.last_bytes);
    add("snapshot_last_encode_us", sc.last_encode_us);
    add("snapshot_last_write_us", sc.last_write_us);
    add("snapshot_longest_lock_hold_us", sc.longest_slice_us);
  }
  AppendTransportCounters(*counters, &r.counters);
  return r;
}

// ---------------------------------------------------------------- snapshots

void ClusterDriver::Impl::RestoreSnapshot(const Instant& now) {
  const std::filesystem::path path = SnapshotPath(options.state_dir);
  persist::SnapshotExpectations expect;
  expect.cluster_name = options.peer_auth.cluster_name;
  expect.node_id = options.node.node_id;
  expect.generation = options.node.generation;
  expect.buckets_per_window = options.node.limiter.buckets_per_window;
  expect.now_wall_ms = now.wall.count();
  expect.max_bytes = options.max_snapshot_bytes;
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  SnapshotCounters c;
  // Published last, and not under `mu` (StatusLocked takes them in the other order).
  struct Publish {
    Impl* impl;
    SnapshotCounters* c;
    ~Publish() {
      std::lock_guard<std::mutex> stats_lock(impl->snapshot_stats_mu);
      impl->snapshot_stats = *c;
    }
  } publish{this, &c};
  switch (read.outcome) {
    case SnapshotReadResult::Outcome::kLoaded: {
      persist::RestoreStats restored;
      {
        std::lock_guard<std::mutex> lock(mu);
        restored = node->Restore(read.snapshot, now);
      }
      const persist::DecodedSnapshot& d = read.snapshot;
      c.restore_loaded = 1;
      c.restored_keys = restored.keys_merged;
      c.restore_dropped = d.dropped_expired + d.dropped_geometry + d.dropped_future +
                          restored.keys_expired + restored.keys_refused;
      spdlog::info(
          "{}; restored {} keys written by generation {} {} ms ago ({} refused by the store)",
          read.message, restored.keys_merged, d.header.generation,
          now.wall.count() - d.header.written_wall_ms, restored.keys_refused);
      return;
    }
    case SnapshotReadResult::Outcome::kMissing:
      c.restore_missing = 1;
      spdlog::info("{}", read.message);
      return;
    case SnapshotReadResult::Outcome::kUnreadable:
    case SnapshotReadResult::Outcome::kRejected: {
      (read.outcome == SnapshotReadResult::Outcome::kRejected ? c.restore_rejected
                                                              : c.restore_unreadable) = 1;
      // Moved aside so the evidence survives the next write for a post-mortem.
      std::filesystem::path aside = path;
      aside += ".rejected";
      std::error_code ec;
      std::filesystem::rename(path, aside, ec);
      spdlog::warn(
          "{}{}", read.message,
          ec ? "; could not move it aside: " + ec.message() : "; kept as " + aside.string());
      return;
    }
  }
}

bool ClusterDriver::Impl::WriteSnapshot(const char* why) {
  using Steady = std::chrono::steady_clock;
  auto us = [](Steady::duration d) {
    return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
  };
  std::lock_guard<std::mutex> write_lock(snapshot_write_mu);
  const Steady::time_point start = Steady::now();
  persist::SnapshotEncoder encoder({}, std::move(snapshot_buffer));
  persist::StorePass pass;
  Steady::duration longest{0};
  for (bool done = false; !done;) {
    {
      std::lock_guard<std::mutex> lock(mu);
      const Steady::time_point slice = Steady::now();
      done = pass.Step(node->store(), options.snapshot_slice_slots, &encoder);
      longest = std::max(longest, Steady::now() - slice);
    }
    // Let the I/O threads waiting for the Node in before the next slice.
    std::this_thread::yield();
  }
  persist::SnapshotHeader header;
  header.cluster_name = options.peer_auth.cluster_name;
  header.node_id = options.node.node_id;
  header.generation = options.node.generation;
  header.written_wall_ms = ReadClock().wall.count();
  header.buckets_per_window = options.node.limiter.buckets_per_window;
  persist::EncodedSnapshot sealed = encoder.Finish(header);
  const Steady::time_point encoded = Steady::now();
  const std::filesystem::path path = SnapshotPath(options.state_dir);
  std::string error;
  const bool ok = WriteSnapshotFile(path, sealed, &error);
  const Steady::time_point written = Steady::now();
  snapshot_buffer = std::move(sealed.payload);
  {
    std::lock_guard<std::mutex> stats_lock(snapshot_stats_mu);
    SnapshotCounters& c = snapshot_stats;
    c.longest_slice_us = std::max(c.longest_slice_us, us(longest));
    if (ok) {
      ++c.writes;
      c.last_keys = sealed.keys;
      c.last_bytes = sealed.size();
      c.last_encode_us = us(encoded - start);
      c.last_write_us = us(written - encoded);
    } else {
      ++c.write_errors;
    }
  }
  if (!ok) {
    spdlog::error("{} snapshot not written: {}", why, error);
    return false;
  }
  spdlog::log(std::string_view(why) == "periodic" ? spdlog::level::debug : spdlog::level::info,
              "{} snapshot: {} keys, {} bytes to {} (encode {} ms, longest lock hold {} us, "
              "write {} ms)",
              why, sealed.keys, sealed.size(), path.string(), us(encoded - start) / 1000,
              us(longest), us(written - encoded) / 1000);
  return true;
}

void ClusterDriver::Impl::SnapshotLoop() {
  // Each wait is the interval +-10%, so members started together (a
  // deploy) do not all write, and stall their disks, at the same moment.
  std::mt19937_64 rng(options.node.rng_seed ^ 0x5eed);
  const auto interval =
      std::chrono::duration_cast<std::chrono::milliseconds>(options.snapshot_interval);
  std::uniform_int_distribution<int64_t> jitter(-interval.count() / 10, interval.count() / 10);
  std::unique_lock<std::mutex> lock(snapshot_mu);
  for (;;) {
    const auto wait = interval + std::chrono::milliseconds(jitter(rng));
    if (snapshot_cv.wait_for(lock, wait, [this] { return snapshot_stop; })) {
      return;
    }
    lock.unlock();
    WriteSnapshot("periodic");
    lock.lock();
  }
}

void ClusterDriver::Impl::StopSnapshotThread() {
  {
    std::lock_guard<std::mutex> lock(snapshot_mu);
    snapshot_stop = true;
  }
  snapshot_cv.notify_all();
  if (snapshot_thread.joinable()) snapshot_thread.join();
}

// ---------------------------------------------------------------- dns seeds

std::vector<std::string> ClusterDriver::Impl::ResolveDnsSeeds() {
  std::string errors;
  std::vector<std::string> resolved =
      io::ResolveDnsSeeds(*options.resolver, dns_seeds, gossip_port, &errors);
  dns_resolutions.fetch_add(1, std::memory_order_relaxed);
  if (!errors.empty()) {
    dns_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("join dns: {}", errors);
  }
  std::vector<std::string> out;
  for (const std::string& address : resolved) {
    std::string why;
    if (std::optional<std::string> c = Canonical(address, &why)) out.push_back(*c);
  }
  return out;
}

bool ClusterDriver::Impl::WantsReResolveLocked() const {
  size_t others_up = 0;
  for (const auto& [id, m] : node->swim().members()) {
    if (id == options.node.node_id) continue;
    if (m.state == membership::MemberState::kSuspect || m.state == membership::MemberState::kDead) {
      return true;
    }
    if (m.up()) ++others_up;
  }
  return others_up == 0;
}

void ClusterDriver::Impl::DnsLoop() {
  std::unique_lock<std::mutex> lock(dns_mu);
  for (;;) {
    if (dns_cv.wait_for(lock, options.dns_interval, [this] { return dns_stop; })) return;
    lock.unlock();
    bool wanted;
    {
      std::lock_guard<std::mutex> node_lock(mu);
      wanted = WantsReResolveLocked();
    }
    if (wanted) {
      std::vector<std::string> seeds = static_seeds;
      for (std::string& a : ResolveDnsSeeds()) seeds.push_back(std::move(a));
      std::erase(seeds, options.node.gossip_address);
      std::lock_guard<std::mutex> node_lock(mu);
      std::vector<std::string> before = node->swim().seeds();
      std::vector<std::string> sorted = seeds;
      std::sort(before.begin(), before.end());
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      if (before != sorted) {
        spdlog::info("join dns: seeds now {}", fmt::join(sorted, ","));
        node->SetSeeds(std::move(sorted));
      }
    }
    lock.lock();
  }
}

void ClusterDriver::Impl::StopDnsThread() {
  {
    std::lock_guard<std::mutex> lock(dns_mu);
    dns_stop = true;
  }
  dns_cv.notify_all();
  if (dns_thread.joinable()) dns_thread.join();
}

// ---------------------------------------------------------------- public

ClusterDriver::ClusterDriver(boost::asio::io_context& io, ClusterOptions options,
                             Counters* counters)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(io, options_, counters)) {}

ClusterDriver::~ClusterDriver() { Close(); }

bool ClusterDriver::Start(std::string* error) {
  core::NodeConfig& n = options_.node;
  std::string why;
  if (n.node_id.empty() || n.node_id.size() > membership::Swim::kMaxIdBytes) {
    return Fail(error,
                "node id must be 1.." + std::to_string(membership::Swim::kMaxIdBytes) + " bytes");
  }
  if (n.replicas < 1) return Fail(error, "replicas must be >= 1");
  if (!n.swim.Valid(&why)) return Fail(error, "membership: " + why);
  n.seeds.clear();
  for (const std::string& seed : options_.seeds) {
    std::optional<std::string> canonical = Canonical(seed, &why);
    if (!canonical) return Fail(error, "join: " + why);
    n.seeds.push_back(*canonical);
  }
  {
    std::optional<HostPort> hp = ParseHostPort(options_.gossip, &why);
    if (!hp) return Fail(error, "gossip: " + why);
    impl_->peer_auth = PeerAuth::Create(options_.peer_auth, hp->host, n.max_clock_offset_ms, &why);
    if (!impl_->peer_auth) return Fail(error, why);
  }
  for (const std::string& text : options_.dns_seeds) {
    std::optional<DnsSeed> seed = ParseDnsSeed(text, &why);
    if (!seed) return Fail(error, "join: " + why);
    impl_->dns_seeds.push_back(*seed);
  }
  if (!impl_->Bind(error)) return false;
  gossip_address_ = n.gossip_address;
  impl_->static_seeds = n.seeds;
  if (!impl_->dns_seeds.empty()) {
    if (!options_.resolver) options_.resolver = SystemResolver();
    std::optional<HostPort> bound = ParseHostPort(gossip_address_, &why);
    impl_->gossip_port = bound ? bound->port : 0;
    // Resolved once now (a first pod may find only itself, or nothing: it
    // then starts as a cluster of one and keeps looking while alone).
    for (std::string& a : impl_->ResolveDnsSeeds()) n.seeds.push_back(std::move(a));
    std::sort(n.seeds.begin(), n.seeds.end());
    n.seeds.erase(std::unique(n.seeds.begin(), n.seeds.end()), n.seeds.end());
  }
  // A seed that is ourselves is no seed (a node listed in its own --join).
  std::erase(n.seeds, gossip_address_);
  // One generation per process start: the wall clock in ms.
  n.generation = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  std::random_device rd;
  n.rng_seed = (static_cast<uint64_t>(rd()) << 32 ^ rd()) ^ n.generation ^
               (static_cast<uint64_t>(getpid()) << 20);

  Impl& d = *impl_;
  if (!options_.state_dir.empty() && !EnsureStateDir(options_.state_dir, &why)) {
    return Fail(error, "state dir: " + why);
  }
  d.node = std::make_unique<core::Node>(n);
  // Restored counts are in place before the Node starts, hence before any
  // check reaches it (the client sockets start after this returns).
  if (!options_.state_dir.empty()) d.RestoreSnapshot(ReadClock());
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    const Instant now = ReadClock();
    d.started_ns = now.monotonic.count();
    d.node->Start(now, &b.out);
    d.ResolveLocked(&b);
    d.LogMembershipLocked();
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
  d.ArmGossip();
  d.ArmAccept();
  d.ArmHousekeeping();
  if (!options_.state_dir.empty() && options_.snapshot_interval.count() > 0) {
    d.snapshot_thread = std::thread([&d] { d.SnapshotLoop(); });
  }
  if (!d.dns_seeds.empty()) d.dns_thread = std::thread([&d] { d.DnsLoop(); });
  spdlog::info("cluster node {} generation {} gossip {} ({} seeds, replicas {}, policy {})",
               n.node_id, n.generation, gossip_address_, n.seeds.size(), n.replicas,
               core::PartitionPolicyName(n.partition_policy));
  return true;
}

void ClusterDriver::Close() {
  Impl& d = *impl_;
  if (d.closed.exchange(true)) return;
  d.StopSnapshotThread();
  d.StopDnsThread();
  boost::system::error_code ignored;
  // Replies that will never come: dropping their targets lets an in-process
  // door's sink (daemon/io/check_gateway.h) answer "unavailable" now.
  boost::unordered_flat_map<uint64_t, Impl::PendingReply> pending;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.timer.cancel();
    pending.swap(d.tokens);
  }
  pending.clear();
  d.housekeeping_timer.cancel();
  d.accept_retry_timer.cancel();
  d.gossip_udp.close(ignored);
  d.acceptor.close(ignored);
  std::unordered_map<Impl::InboundStream*, std::shared_ptr<Impl::InboundStream>> inbound;
  {
    std::lock_guard<std::mutex> lock(d.inbound_mu);
    inbound.swap(d.inbound);
  }
  for (auto& [raw, stream] : inbound) stream->Close();
  // No thread runs the io_context now, so the strand's state is ours.
  for (auto& [address, s] : d.outbound) {
    ++s->epoch;
    s->timer.cancel();
    s->socket.close(ignored);
  }
}

void ClusterDriver::HandleClientDatagrams(std::span<const ClientDatagram> datagrams, Instant now) {
  if (datagrams.empty()) return;
  Impl& d = *impl_;
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    for (const ClientDatagram& dg : datagrams) {
      const uint64_t token = d.next_token++;
      d.tokens.emplace(token, Impl::PendingReply{*dg.target, now.monotonic.count()});
      d.node->OnClientDatagram(token, dg.bytes, now, &b.out);
    }
    d.node->Flush(now, &b.out);
    d.ResolveLocked(&b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
}

wire::StatusReport ClusterDriver::Status(Instant now) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->StatusLocked(now);
}

wire::OwnerReport ClusterDriver::Owner(const wire::OwnerQuery& query, Instant now) {
  wire::OwnerReport r;
  r.node_id = options_.node.node_id;
  if (ValidateOwnerQuery(query, &r.error) != tally::Status::kOk) {
    r.status = tally::Status::kInvalidArgument;
    return r;
  }
  crdt::KeyId key = crdt::HashKey(query.user_id, query.endpoint, query.window_ms);
  std::lock_guard<std::mutex> lock(impl_->mu);
  r.preference_list = impl_->node->PreferenceList(key);
  r.holds_key = impl_->node->store().Find(key) != nullptr;
  r.state_hash = impl_->node->StateHash(key, now);
  return r;
}

LimiterStats ClusterDriver::limiter_stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->node) return {};
  core::NodeStatus s = impl_->node->Status(ReadClock());
  LimiterStats stats = s.limiter;
  stats.live_keys = s.live_keys;
  return stats;
}

bool ClusterDriver::ReloadKeyring(std::string* error) {
  if (!impl_->peer_auth) return Fail(error, "not started");
  return impl_->peer_auth->Reload(error);
}

bool ClusterDriver::WriteFinalSnapshot() {
  Impl& d = *impl_;
  d.StopSnapshotThread();
  if (options_.state_dir.empty() || !d.node) return true;
  return d.WriteSnapshot("shutdown");
}

SnapshotCounters ClusterDriver::snapshot_counters() const {
  std::lock_guard<std::mutex> lock(impl_->snapshot_stats_mu);
  return impl_->snapshot_stats;
}

void ClusterDriver::Leave(std::function<void()> done) {
  Impl& d = *impl_;
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (d.leaving) return;
    d.leaving = true;
    d.leave_done = std::move(done);
    const Instant now = ReadClock();
    d.leave_deadline_ns = now.monotonic.count() + ToNs(options_.leave_grace);
    spdlog::info("leaving the cluster (grace {} ms)", options_.leave_grace.count());
    d.node->Leave(now, &b.out);
    d.ResolveLocked(&b);
    d.CheckLeaveLocked(now, &b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
}

}  // namespace tally::io

#include "daemon/io/datagram_server.h"

#include <spdlog/spdlog.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tally::io {
namespace {

// sendmmsg takes at most UIO_MAXIOV messages per call.
constexpr size_t kMaxSendBatch = 1024;

}  // namespace

DatagramServer::DatagramServer(boost::asio::io_context& io, int fd, Limiter* limiter, bool echo,
                               Counters* counters)
    : socket_(io, fd),
      counters_(counters),
      processor_(limiter, echo, counters),
      rx_storage_(new uint64_t[kBatch * kBufferBytes / sizeof(uint64_t)]) {
  auto* base = reinterpret_cast<std::byte*>(rx_storage_.get());
  for (size_t i = 0; i < kBatch; ++i) {
    rx_iov_[i] = iovec{base + i * kBufferBytes, kBufferBytes};
  }
  replies_.reserve(kBatch);
}

DatagramServer::DatagramServer(boost::asio::io_context& io, int fd, const ProcessorContext& context)
    : socket_(io, fd),
      counters_(context.counters),
      cluster_(context.cluster),
      processor_(context),
      rx_storage_(new uint64_t[kBatch * kBufferBytes / sizeof(uint64_t)]) {
  auto* base = reinterpret_cast<std::byte*>(rx_storage_.get());
  for (size_t i = 0; i < kBatch; ++i) {
    rx_iov_[i] = iovec{base + i * kBufferBytes, kBufferBytes};
  }
  replies_.reserve(kBatch);
  cluster_targets_.reserve(kBatch);  // never reallocates: the batch points into it
  cluster_batch_.reserve(kBatch);
}

DatagramServer::~DatagramServer() { Close(); }

void DatagramServer::Start() { Arm(); }

void DatagramServer::Close() {
  boost::system::error_code ignored;
  socket_.close(ignored);
}

void DatagramServer::Arm() {
  socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                     [this](const boost::system::error_code& ec) {
                       if (ec) return;  // operation_aborted: we are closing
                       OnReadable();
                     });
}

void DatagramServer::OnReadable() {
  const int fd = socket_.native_handle();
  for (int round = 0; round < kMaxBatchesPerWakeup; ++round) {
    for (size_t i = 0; i < kBatch; ++i) {
      msghdr& h = rx_msgs_[i].msg_hdr;
      h = msghdr{};
      h.msg_name = &rx_addr_[i];
      h.msg_namelen = sizeof(rx_addr_[i]);
      h.msg_iov = &rx_iov_[i];
      h.msg_iovlen = 1;
      rx_msgs_[i].msg_len = 0;
    }
    int n = recvmmsg(fd, rx_msgs_.data(), kBatch, MSG_DONTWAIT, nullptr);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EBADF) return;  // closed under us: nothing to re-arm
      // e.g. ECONNREFUSED from an ICMP error: not fatal for a server socket.
      spdlog::debug("recvmmsg: {}", strerror(errno));
      break;
    }
    if (n == 0) break;
    // One clock read per batch: the Limiter tolerates the few microseconds.
    const Instant now = ReadClock();
    Counters::Add(counters_->datagrams_in, static_cast<uint64_t>(n));
    processor_.Reset();
    replies_.clear();
    cluster_targets_.clear();
    cluster_batch_.clear();
    uint64_t unanswerable = 0;
    for (int i = 0; i < n; ++i) {
      const msghdr& h = rx_msgs_[i].msg_hdr;
      // Unix: an unbound sender arrives with only the family (or nothing).
      if (h.msg_namelen <= sizeof(sa_family_t)) {
        ++unanswerable;
        continue;
      }
      std::span<const std::byte> bytes(static_cast<const std::byte*>(rx_iov_[i].iov_base),
                                       std::min<size_t>(rx_msgs_[i].msg_len, kBufferBytes));
      Handled handled = processor_.Handle(bytes, (h.msg_flags & MSG_TRUNC) != 0, now,
                                          static_cast<uint32_t>(i), &replies_);
      if (handled == Handled::kForCluster) {
        ReplyTarget& target = cluster_targets_.emplace_back();
        target.fd = fd;
        target.addr = rx_addr_[i];
        target.addr_len = h.msg_namelen;
        cluster_batch_.push_back(ClientDatagram{bytes, &target});
      }
    }
    Counters::Add(counters_->send_errors, unanswerable);
    SendReplies();
    if (cluster_ != nullptr) cluster_->HandleClientDatagrams(cluster_batch_, now);
    if (static_cast<size_t>(n) < kBatch) break;  // the queue is (almost surely) empty
  }
  Arm();
}

void DatagramServer::SendReplies() {
  const size_t count = replies_.size();
  if (count == 0) return;
  tx_msgs_.resize(count);
  tx_iov_.resize(count);
  for (size_t i = 0; i < count; ++i) {
    const Reply& r = replies_[i];
    tx_iov_[i] = iovec{const_cast<std::byte*>(r.bytes.data()), r.bytes.size()};
    msghdr& h = tx_msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = &rx_addr_[r.tag];
    h.msg_namelen = rx_msgs_[r.tag].msg_hdr.msg_namelen;
    h.msg_iov = &tx_iov_[i];
    h.msg_iovlen = 1;
    tx_msgs_[i].msg_len = 0;
  }
  const int fd = socket_.native_handle();
  size_t sent = 0;
  size_t failed = 0;
  size_t next = 0;
  while (next < count) {
    unsigned batch = static_cast<unsigned>(std::min(count - next, kMaxSendBatch));
    int n = sendmmsg(fd, &tx_msgs_[next], batch, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      next += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // The first remaining message failed (EAGAIN: peer queue or our buffer
    // full; EMSGSIZE; ECONNREFUSED; a vanished Unix peer...). Drop it alone:
    // waiting would stall every other client of this socket.
    spdlog::debug("sendmmsg: {}", strerror(errno));
    ++failed;
    ++next;
  }
  Counters::Add(counters_->datagrams_out, sent);
  Counters::Add(counters_->send_errors, failed);
}

}  // namespace tally::io

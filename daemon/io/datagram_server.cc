#include "daemon/io/datagram_server.h"

#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tally::io {

DatagramServer::DatagramServer(boost::asio::io_context& io, int fd, Limiter* limiter, bool echo,
                               Counters* counters)
    : socket_(io, fd), counters_(counters), processor_(limiter, echo, counters) {
  replies_.reserve(kBatch);
}

DatagramServer::DatagramServer(boost::asio::io_context& io, int fd, const ProcessorContext& context)
    : socket_(io, fd),
      counters_(context.counters),
      cluster_(context.cluster),
      processor_(context),
      metrics_(context.metrics),
      door_(context.door) {
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
  if (rx_.Drain(socket_.native_handle(), kMaxBatchesPerWakeup, "recvmmsg",
                [this](size_t n) { HandleBatch(n); })) {
    Arm();
  }
}

namespace {
constexpr size_t kNotDecoded = ~size_t{0};
}  // namespace

void DatagramServer::HandleBatch(size_t n) {
  const int fd = socket_.native_handle();
  // One clock read per batch: the Limiter tolerates the few microseconds.
  const Instant now = ReadClock();
  Counters::Add(counters_->datagrams_in, static_cast<uint64_t>(n));
  processor_.Reset();
  replies_.clear();
  cluster_targets_.clear();
  cluster_batch_.clear();
  cluster_checks_.clear();
  cluster_check_ranges_.clear();
  uint64_t unanswerable = 0;
  for (size_t i = 0; i < n; ++i) {
    // Unix: an unbound sender arrives with only the family (or nothing).
    if (rx_.address_length(i) <= sizeof(sa_family_t)) {
      ++unanswerable;
      continue;
    }
    std::span<const std::byte> bytes = rx_.data(i);
    // Only a loopback source may write limits over UDP (limit_door.h).
    const bool loopback =
        door_ == Door::kUdp && IsLoopbackSource(rx_.address(i), rx_.address_length(i));
    Handled handled = processor_.Handle(bytes, rx_.truncated(i), now, static_cast<uint32_t>(i),
                                        &replies_, loopback);
    if (handled == Handled::kForRules) {
      processor_.HandOverDescriptorCheck(bytes.size(), SendLaterTo(i));
    } else if (handled == Handled::kForCluster) {
      ReplyTarget& target = cluster_targets_.emplace_back();
      target.fd = fd;
      target.addr = rx_.address(i);
      target.addr_len = rx_.address_length(i);
      target.metrics = metrics_;
      target.door = door_;
      cluster_batch_.push_back(ClientDatagram{bytes, &target, std::nullopt});
      // The processor's list is overwritten by the next Handle: keep it, and
      // point the batch at the copies once the vector stops growing. Its
      // views are into rx_'s buffers (8-byte aligned, so the reader did not
      // copy the message into a buffer of its own), which live until the
      // next batch.
      const bool aligned = reinterpret_cast<uintptr_t>(bytes.data()) % sizeof(uint64_t) == 0;
      const std::span<const CheckRequestRef> checks = processor_.cluster_checks();
      cluster_check_ranges_.push_back(
          {aligned ? cluster_checks_.size() : kNotDecoded, checks.size()});
      if (aligned) cluster_checks_.insert(cluster_checks_.end(), checks.begin(), checks.end());
    }
  }
  for (size_t k = 0; k < cluster_batch_.size(); ++k) {
    const auto [offset, count] = cluster_check_ranges_[k];
    if (offset == kNotDecoded) continue;  // the Node decodes the bytes itself
    cluster_batch_[k].checks =
        std::span<const CheckRequestRef>(cluster_checks_).subspan(offset, count);
  }
  Counters::Add(counters_->send_errors, unanswerable);
  SendReplies();
  if (cluster_ != nullptr) cluster_->HandleClientDatagrams(cluster_batch_, now);
}

SendLater DatagramServer::SendLaterTo(size_t i) {
  sockaddr_storage addr{};
  const socklen_t addr_len = rx_.address_length(i);
  std::memcpy(&addr, &rx_.address(i), std::min<size_t>(addr_len, sizeof(addr)));
  // The answer may come from another thread after this batch is gone: copy
  // the address. sendto on one socket from several threads is safe.
  return [fd = socket_.native_handle(), addr, addr_len,
          counters = counters_](std::span<const std::byte> bytes) {
    for (;;) {
      const ssize_t n = ::sendto(fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL,
                                 reinterpret_cast<const sockaddr*>(&addr), addr_len);
      if (n >= 0) {
        counters->datagrams_out.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (errno == EINTR) continue;
      counters->send_errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  };
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
    h.msg_name = &rx_.address(r.tag);
    h.msg_namelen = rx_.address_length(r.tag);
    h.msg_iov = &tx_iov_[i];
    h.msg_iovlen = 1;
    tx_msgs_[i].msg_len = 0;
  }
  auto [sent, failed] = SendDatagrams(socket_.native_handle(), tx_msgs_);
  Counters::Add(counters_->datagrams_out, sent);
  Counters::Add(counters_->send_errors, failed);
}

}  // namespace tally::io

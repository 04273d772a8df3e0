// The batched datagram I/O every datagram socket of tallyd shares: the
// client sockets (DatagramServer: UDP and Unix SOCK_DGRAM) and the gossip
// UDP socket (ClusterDriver).
//
// DatagramBatch receives with recvmmsg straight into fixed buffers that it
// owns (one per datagram, allocated once), so a handler reads each datagram
// where the kernel put it: no copy, and no allocation per wakeup. Drain
// loops over batches until the socket's queue is empty or a budget of
// batches is spent (so one busy socket cannot starve the others on its
// thread); the caller then re-arms its readiness wait.
//
// SendDatagrams sends prepared messages with as few sendmmsg calls as it
// can and drops, rather than waits for, a message the kernel refuses.
//
// Thread safety: a DatagramBatch is not thread-safe; its owner has one
// readiness wait outstanding at a time, so one handler uses it at a time.
#ifndef TALLY_DAEMON_IO_DATAGRAM_BATCH_H_
#define TALLY_DAEMON_IO_DATAGRAM_BATCH_H_

#include <sys/socket.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace tally::io {

class DatagramBatch {
 public:
  // Room for `capacity` datagrams of up to `buffer_bytes` each (a larger one
  // arrives cut, with truncated() set).
  DatagramBatch(size_t capacity, size_t buffer_bytes);
  DatagramBatch(const DatagramBatch&) = delete;
  DatagramBatch& operator=(const DatagramBatch&) = delete;

  // Receives batches from the non-blocking datagram socket `fd`, calling
  // `handle(n)` after each non-empty one (datagrams 0..n-1 are then valid),
  // until the queue is empty, `max_batches` batches were tried, or an error.
  // EAGAIN ends quietly; other errors (e.g. ECONNREFUSED from an ICMP error,
  // not fatal for a server socket) are logged at debug level after
  // `log_label` and end the drain. Returns false iff the socket was closed
  // under us (EBADF): there is then nothing to re-arm.
  template <typename Handler>
  bool Drain(int fd, int max_batches, const char* log_label, Handler&& handle) {
    for (int round = 0; round < max_batches; ++round) {
      const int n = Receive(fd, log_label);
      if (n == kInterrupted) continue;
      if (n == kClosed) return false;
      if (n == 0) break;
      handle(static_cast<size_t>(n));
      if (static_cast<size_t>(n) < capacity()) break;  // the queue is (almost surely) empty
    }
    return true;
  }

  size_t capacity() const { return msgs_.size(); }

  // Datagram `i` of the last batch, valid until the next receive.
  std::span<const std::byte> data(size_t i) const {
    return {static_cast<const std::byte*>(iov_[i].iov_base),
            std::min<size_t>(msgs_[i].msg_len, buffer_bytes_)};
  }
  // Whether the kernel cut datagram `i` to fit its buffer.
  bool truncated(size_t i) const { return (msgs_[i].msg_hdr.msg_flags & MSG_TRUNC) != 0; }
  // Its sender's address: `address_length(i)` bytes of `address(i)`. A Unix
  // sender that is not bound has a length of at most sizeof(sa_family_t).
  sockaddr_storage& address(size_t i) { return addrs_[i]; }
  socklen_t address_length(size_t i) const { return msgs_[i].msg_hdr.msg_namelen; }

 private:
  static constexpr int kInterrupted = -1;  // EINTR: try again
  static constexpr int kClosed = -2;       // EBADF

  // One recvmmsg: the number of datagrams (0: none, or an error that ends
  // the drain), or kInterrupted / kClosed.
  int Receive(int fd, const char* log_label);

  size_t buffer_bytes_;
  std::unique_ptr<uint64_t[]> storage_;  // capacity * buffer_bytes, 8-byte aligned for capnp
  std::vector<mmsghdr> msgs_;
  std::vector<iovec> iov_;
  std::vector<sockaddr_storage> addrs_;
};

// Sends `msgs` on the non-blocking socket `fd`. A message the kernel refuses
// (EAGAIN: the peer's queue or our buffer is full; EMSGSIZE; ECONNREFUSED; a
// vanished Unix peer...) is dropped alone and logged at debug level: waiting
// would stall every other peer of the socket, and senders retry or tolerate
// loss. Returns {sent, failed}.
std::pair<size_t, size_t> SendDatagrams(int fd, std::span<mmsghdr> msgs);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_DATAGRAM_BATCH_H_

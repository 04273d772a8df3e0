#include "daemon/io/datagram_batch.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace tally::io {
namespace {

// sendmmsg takes at most UIO_MAXIOV messages per call.
constexpr size_t kMaxSendBatch = 1024;

}  // namespace

DatagramBatch::DatagramBatch(size_t capacity, size_t buffer_bytes)
    : buffer_bytes_(buffer_bytes),
      storage_(new uint64_t[capacity * buffer_bytes / sizeof(uint64_t)]),
      msgs_(capacity),
      iov_(capacity),
      addrs_(capacity) {
  auto* base = reinterpret_cast<std::byte*>(storage_.get());
  for (size_t i = 0; i < capacity; ++i) {
    iov_[i] = iovec{base + i * buffer_bytes_, buffer_bytes_};
  }
}

int DatagramBatch::Receive(int fd, const char* log_label) {
  for (size_t i = 0; i < msgs_.size(); ++i) {
    msghdr& h = msgs_[i].msg_hdr;
    h = msghdr{};
    h.msg_name = &addrs_[i];
    h.msg_namelen = sizeof(addrs_[i]);
    h.msg_iov = &iov_[i];
    h.msg_iovlen = 1;
    msgs_[i].msg_len = 0;
  }
  const int n =
      recvmmsg(fd, msgs_.data(), static_cast<unsigned>(msgs_.size()), MSG_DONTWAIT, nullptr);
  if (n >= 0) return n;
  if (errno == EINTR) return kInterrupted;
  if (errno == EBADF) return kClosed;
  if (errno != EAGAIN && errno != EWOULDBLOCK) spdlog::debug("{}: {}", log_label, strerror(errno));
  return 0;
}

std::pair<size_t, size_t> SendDatagrams(int fd, std::span<mmsghdr> msgs) {
  size_t sent = 0, failed = 0, next = 0;
  while (next < msgs.size()) {
    unsigned batch = static_cast<unsigned>(std::min(msgs.size() - next, kMaxSendBatch));
    int n = sendmmsg(fd, &msgs[next], batch, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
      next += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // The first remaining message failed: drop it alone (see the header).
    spdlog::debug("sendmmsg: {}", strerror(errno));
    ++failed;
    ++next;
  }
  return {sent, failed};
}

}  // namespace tally::io

#include "bench/plain_echo.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <vector>

#include "daemon/io/sockets.h"

namespace tally::load {
namespace {

// Datagrams per recvmmsg: as many as tallyd's own batches take.
constexpr int kBatch = 64;
constexpr size_t kMaxDatagramBytes = 65536;

bool Fail(std::string* error, const std::string& what) {
  if (error != nullptr) *error = what + ": " + std::strerror(errno);
  return false;
}

}  // namespace

std::unique_ptr<PlainEcho> PlainEcho::Start(Kind kind, const std::string& address, int cpu,
                                            std::string* error) {
  std::unique_ptr<PlainEcho> echo(new PlainEcho());
  echo->kind_ = kind;
  if (kind == Kind::kUdp) {
    std::string why;
    std::optional<io::HostPort> host = io::ParseHostPort(address, &why);
    if (!host) {
      if (error != nullptr) *error = why;
      return nullptr;
    }
    sockaddr_storage addr{};
    const socklen_t len = io::ToSockaddr(*host, &addr);
    echo->fd_ = ::socket(addr.ss_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (echo->fd_ < 0 || ::bind(echo->fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      Fail(error, "bind " + address);
      return nullptr;
    }
    socklen_t bound_len = sizeof(addr);
    ::getsockname(echo->fd_, reinterpret_cast<sockaddr*>(&addr), &bound_len);
    echo->address_ = io::FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), bound_len);
  } else {
    sockaddr_un addr{};
    if (address.empty() || address.size() >= sizeof(addr.sun_path)) {
      if (error != nullptr) *error = "bad socket path: " + address;
      return nullptr;
    }
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, address.data(), address.size());
    const int type = kind == Kind::kUnixSeqpacket ? SOCK_SEQPACKET : SOCK_DGRAM;
    echo->fd_ = ::socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (echo->fd_ < 0 || ::bind(echo->fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      Fail(error, "bind " + address);
      return nullptr;
    }
    echo->unlink_path_ = address;
    if (type == SOCK_SEQPACKET && ::listen(echo->fd_, 128) != 0) {
      Fail(error, "listen " + address);
      return nullptr;
    }
    echo->address_ = address;
  }
  echo->stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (echo->stop_fd_ < 0) {
    Fail(error, "eventfd");
    return nullptr;
  }
  PlainEcho* self = echo.get();
  echo->thread_ = std::thread([self] {
    if (self->kind_ == Kind::kUnixSeqpacket) {
      self->LoopSeqpacket();
    } else {
      self->Loop();
    }
  });
  if (cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (pthread_setaffinity_np(echo->thread_.native_handle(), sizeof(set), &set) != 0) {
      if (error != nullptr) *error = "cannot pin the echo thread to cpu " + std::to_string(cpu);
      return nullptr;  // the destructor stops the thread
    }
  }
  return echo;
}

PlainEcho::~PlainEcho() {
  if (thread_.joinable()) {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_fd_, &one, sizeof(one));
    thread_.join();
  }
  if (fd_ >= 0) ::close(fd_);
  if (stop_fd_ >= 0) ::close(stop_fd_);
  if (!unlink_path_.empty()) ::unlink(unlink_path_.c_str());
}

// Blocks in poll until datagrams arrive, then drains them in batches: one
// recvmmsg, one sendmmsg back to the senders, until the socket is empty.
void PlainEcho::Loop() {
  std::vector<std::array<char, kMaxDatagramBytes>> buffers(kBatch);
  std::array<iovec, kBatch> iov{};
  std::array<mmsghdr, kBatch> msgs{};
  std::array<sockaddr_storage, kBatch> peers{};
  for (;;) {
    pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0 && errno != EINTR) return;
    if (fds[1].revents != 0) return;
    for (;;) {
      for (int i = 0; i < kBatch; ++i) {
        iov[i] = {buffers[i].data(), kMaxDatagramBytes};
        msgs[i] = {};
        msgs[i].msg_hdr.msg_iov = &iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &peers[i];
        msgs[i].msg_hdr.msg_namelen = sizeof(peers[i]);
      }
      const int got = ::recvmmsg(fd_, msgs.data(), kBatch, MSG_DONTWAIT, nullptr);
      if (got <= 0) break;
      for (int i = 0; i < got; ++i) iov[i].iov_len = msgs[i].msg_len;
      // A Unix datagram client without a bound name cannot be answered: skip it.
      int sent = 0;
      while (sent < got) {
        const int n = ::sendmmsg(fd_, msgs.data() + sent, got - sent, MSG_DONTWAIT);
        if (n <= 0) {
          ++sent;  // drop the one that failed, as a server would
          continue;
        }
        sent += n;
      }
      echoed_.fetch_add(static_cast<uint64_t>(got), std::memory_order_relaxed);
      if (got < kBatch) break;
    }
  }
}

// One thread for every connection: poll, recv one message, send it back.
void PlainEcho::LoopSeqpacket() {
  std::vector<int> connections, open;  // reused: no allocation per wakeup
  std::vector<char> buffer(kMaxDatagramBytes);
  std::vector<pollfd> fds;
  for (;;) {
    fds.assign({{stop_fd_, POLLIN, 0}, {fd_, POLLIN, 0}});
    for (int c : connections) fds.push_back({c, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0 && errno != EINTR) break;
    if (fds[0].revents != 0) break;
    open.clear();
    for (size_t i = 2; i < fds.size(); ++i) {
      bool keep = true;
      if (fds[i].revents & (POLLIN | POLLHUP | POLLERR)) {
        for (;;) {
          const ssize_t n = ::recv(fds[i].fd, buffer.data(), buffer.size(), MSG_DONTWAIT);
          if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            keep = false;
            break;
          }
          if (n < 0) break;
          if (::send(fds[i].fd, buffer.data(), static_cast<size_t>(n), MSG_NOSIGNAL) < 0) {
            keep = false;
            break;
          }
          echoed_.fetch_add(1, std::memory_order_relaxed);
        }
      }
      if (keep) {
        open.push_back(fds[i].fd);
      } else {
        ::close(fds[i].fd);
      }
    }
    if (fds[1].revents & POLLIN) {
      const int c = ::accept4(fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c >= 0) open.push_back(c);
    }
    connections.swap(open);
  }
  for (int c : connections) ::close(c);
}

}  // namespace tally::load

// An in-test UDP "daemon" for client tests: a socket on 127.0.0.1:0 served by
// a thread that decodes each datagram and lets the test decide what to send
// back. Waits with poll() on the socket and an eventfd, never with sleeps.
#ifndef TALLY_TESTS_CLIENT_FAKE_SERVER_H_
#define TALLY_TESTS_CLIENT_FAKE_SERVER_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "tally/types.h"
#include "wire/codec.h"

namespace tally::testing {

// One received datagram as the handler sees it.
struct ReceivedDatagram {
  std::vector<std::byte> bytes;
  wire::ClientMessageReader* reader = nullptr;  // decoded (status below)
  Status decode_status = Status::kOk;
  int index = 0;  // 0 for the first datagram the server got, then 1, 2, ...
};

// What to send: each element becomes one datagram, in this order.
using Replies = std::vector<std::vector<std::byte>>;
using Handler = std::function<void(const ReceivedDatagram& datagram, Replies* replies)>;

class FakeUdpServer {
 public:
  // Binds 127.0.0.1:0 and starts serving with `handler` (null: never reply).
  explicit FakeUdpServer(Handler handler) : handler_(std::move(handler)) {
    fd_ = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr));
    socklen_t len = sizeof(addr);
    ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len);
    port_ = ntohs(addr.sin_port);
    int rcvbuf = 4 << 20;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeUdpServer() {
    uint64_t one = 1;
    (void)!::write(stop_fd_, &one, sizeof(one));
    thread_.join();
    ::close(stop_fd_);
    ::close(fd_);
  }
  FakeUdpServer(const FakeUdpServer&) = delete;
  FakeUdpServer& operator=(const FakeUdpServer&) = delete;

  uint16_t port() const { return port_; }

  // Request ids of every check received, in arrival order.
  std::vector<uint64_t> received_ids() {
    std::lock_guard<std::mutex> lock(mu_);
    return received_ids_;
  }
  int datagrams() {
    std::lock_guard<std::mutex> lock(mu_);
    return datagrams_;
  }

 private:
  void Serve() {
    std::vector<uint64_t> storage(65536 / 8 + 1);
    auto* buf = reinterpret_cast<std::byte*>(storage.data());
    wire::ClientMessageReader reader;
    while (true) {
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      if (::poll(fds, 2, -1) < 0) continue;
      if (fds[1].revents != 0) return;
      sockaddr_storage peer{};
      socklen_t peer_len = sizeof(peer);
      ssize_t n =
          ::recvfrom(fd_, buf, 65536, MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&peer), &peer_len);
      if (n < 0) continue;
      ReceivedDatagram datagram;
      datagram.bytes.assign(buf, buf + n);
      datagram.decode_status = reader.Decode({buf, static_cast<size_t>(n)}, nullptr);
      datagram.reader = &reader;
      {
        std::lock_guard<std::mutex> lock(mu_);
        datagram.index = datagrams_++;
        if (datagram.decode_status == Status::kOk) {
          for (const auto& check : reader.checks()) received_ids_.push_back(check.request_id);
        }
      }
      Replies replies;
      if (handler_) handler_(datagram, &replies);
      for (const auto& reply : replies) {
        ::sendto(fd_, reply.data(), reply.size(), 0, reinterpret_cast<sockaddr*>(&peer), peer_len);
      }
    }
  }

  Handler handler_;
  int fd_ = -1;
  int stop_fd_ = -1;
  uint16_t port_ = 0;
  std::thread thread_;
  std::mutex mu_;
  std::vector<uint64_t> received_ids_;
  int datagrams_ = 0;
};

// The canned answer the fake servers give: allowed iff the id is even, and
// limit/remaining echo the request so tests can tell results apart.
inline CheckResult FakeAnswer(const CheckRequestRef& check) {
  CheckResult result;
  result.request_id = check.request_id;
  result.status = Status::kOk;
  result.allowed = check.request_id % 2 == 0;
  result.limit = check.limit;
  result.remaining = check.window_ms;
  result.retry_after_ms = result.allowed ? 0 : 7;
  return result;
}

inline std::vector<std::byte> EncodeAnswers(const std::vector<CheckResult>& results) {
  std::vector<std::byte> out;
  wire::EncodeResponses(results, &out);
  return out;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_CLIENT_FAKE_SERVER_H_

// A deliberately dumb tallyd client for the daemon tests: raw POSIX sockets
// plus the wire codec, so these tests do not depend on the client library.
// Every wait is poll() with a timeout; nothing sleeps.
//
// Thread safety: a RawClient is used by one thread.
#ifndef TALLY_TESTS_DAEMON_IO_RAW_CLIENT_H_
#define TALLY_TESTS_DAEMON_IO_RAW_CLIENT_H_

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "tally/types.h"
#include "tests/support/daemon_process.h"
#include "wire/codec.h"

namespace tally::testing {

enum class Transport { kUdp, kUnixDgram, kSeqpacket };

inline const char* TransportName(Transport t) {
  switch (t) {
    case Transport::kUdp:
      return "Udp";
    case Transport::kUnixDgram:
      return "UnixDgram";
    case Transport::kSeqpacket:
      return "Seqpacket";
  }
  return "?";
}

inline std::vector<std::byte> EncodeRequests(const std::vector<CheckRequest>& requests) {
  std::vector<CheckRequestRef> refs(requests.begin(), requests.end());
  std::vector<std::byte> out;
  wire::EncodeChecks(refs, &out);
  return out;
}

// Decodes a daemon reply. Returns false unless it is a `responses` message.
inline bool DecodeResponses(std::span<const std::byte> bytes, std::vector<CheckResult>* out) {
  wire::ClientMessageReader reader;
  std::string why;
  if (reader.Decode(bytes, &why) != Status::kOk) return false;
  if (reader.kind() != wire::MessageKind::kResponses) return false;
  *out = reader.responses();
  return true;
}

class RawClient {
 public:
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  // A UDP socket connected to host:port (numeric IPv4).
  static std::unique_ptr<RawClient> Udp(const std::string& host, uint16_t port) {
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    if (fd < 0 || inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1 ||
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
      if (fd >= 0) close(fd);
      return nullptr;
    }
    return std::unique_ptr<RawClient>(new RawClient(fd, Transport::kUdp));
  }

  // A Unix datagram socket with an autobound abstract address (so the daemon
  // can answer) that talks to `path`: connected to it, or (connect = false)
  // addressing every datagram with sendto.
  static std::unique_ptr<RawClient> UnixDgram(const std::string& path, bool bind_address = true,
                                              bool connect = true) {
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    sockaddr_un self{};
    self.sun_family = AF_UNIX;
    // Binding with just the family asks the kernel for an abstract autobind name.
    if (bind_address && bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(sa_family_t)) != 0) {
      close(fd);
      return nullptr;
    }
    auto client = std::unique_ptr<RawClient>(new RawClient(fd, Transport::kUnixDgram));
    if (path.size() >= sizeof(client->peer_.sun_path)) return nullptr;
    client->peer_.sun_family = AF_UNIX;
    memcpy(client->peer_.sun_path, path.data(), path.size());
    if (connect) {
      if (!ConnectUnix(fd, path)) return nullptr;
    } else {
      client->use_sendto_ = true;
    }
    return client;
  }

  static std::unique_ptr<RawClient> Seqpacket(const std::string& path) {
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return nullptr;
    if (!ConnectUnix(fd, path)) {
      close(fd);
      return nullptr;
    }
    return std::unique_ptr<RawClient>(new RawClient(fd, Transport::kSeqpacket));
  }

  int fd() const { return fd_; }
  Transport transport() const { return transport_; }

  // Sends one datagram / message (blocking). False on error.
  bool Send(std::span<const std::byte> bytes) {
    for (;;) {
      ssize_t n = use_sendto_ ? sendto(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL,
                                       reinterpret_cast<const sockaddr*>(&peer_), sizeof(peer_))
                              : send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n >= 0) return static_cast<size_t>(n) == bytes.size();
      if (errno != EINTR) return false;
    }
  }

  // Receives one datagram / message within `timeout`. nullopt on timeout,
  // error or EOF (see eof()).
  std::optional<std::vector<std::byte>> Receive(std::chrono::milliseconds timeout) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
          deadline - std::chrono::steady_clock::now());
      if (left.count() < 0) left = std::chrono::milliseconds(0);
      pollfd p{fd_, POLLIN, 0};
      int r = poll(&p, 1, static_cast<int>(left.count()));
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return std::nullopt;
      std::vector<std::byte> buf(256 * 1024);
      ssize_t n = recv(fd_, buf.data(), buf.size(), MSG_DONTWAIT);
      if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      if (n < 0) return std::nullopt;
      if (n == 0 && transport_ == Transport::kSeqpacket) {
        eof_ = true;
        return std::nullopt;
      }
      buf.resize(static_cast<size_t>(n));
      return buf;
    }
  }

  // Receives one reply and decodes it. Empty on timeout or undecodable reply.
  std::vector<CheckResult> ReceiveResults(std::chrono::milliseconds timeout) {
    std::vector<CheckResult> results;
    auto bytes = Receive(timeout);
    if (bytes) DecodeResponses(*bytes, &results);
    return results;
  }

  // Sends `requests` in one datagram and collects the result of every one,
  // matching by request id and resending the whole batch (same ids) when a
  // reply does not arrive in `timeout`. Unanswered ones stay kUnavailable.
  // REQUIRES: distinct non-zero request ids.
  std::vector<CheckResult> CheckBatch(const std::vector<CheckRequest>& requests,
                                      std::chrono::milliseconds timeout = std::chrono::seconds(1),
                                      int attempts = 10) {
    std::vector<CheckResult> out(requests.size());
    std::vector<bool> done(requests.size(), false);
    for (auto& r : out) r.status = Status::kUnavailable;
    size_t missing = requests.size();
    std::vector<std::byte> bytes = EncodeRequests(requests);
    for (int a = 0; a < attempts && missing > 0; ++a) {
      if (!Send(bytes)) break;
      auto deadline = std::chrono::steady_clock::now() + timeout;
      while (missing > 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            deadline - std::chrono::steady_clock::now());
        if (left.count() <= 0) break;
        for (const CheckResult& result : ReceiveResults(left)) {
          for (size_t i = 0; i < requests.size(); ++i) {
            if (!done[i] && requests[i].request_id == result.request_id) {
              out[i] = result;
              done[i] = true;
              --missing;
            }
          }
        }
      }
    }
    return out;
  }

  CheckResult Check(const CheckRequest& request,
                    std::chrono::milliseconds timeout = std::chrono::seconds(1),
                    int attempts = 10) {
    return CheckBatch({request}, timeout, attempts)[0];
  }

  bool eof() const { return eof_; }

 private:
  RawClient(int fd, Transport transport) : fd_(fd), transport_(transport) {}

  static bool ConnectUnix(int fd, const std::string& path) {
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    if (path.size() >= sizeof(addr.sun_path)) return false;
    memcpy(addr.sun_path, path.data(), path.size());
    for (;;) {
      if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0) return true;
      if (errno != EINTR) return false;
    }
  }

  int fd_;
  Transport transport_;
  bool eof_ = false;
  bool use_sendto_ = false;
  sockaddr_un peer_{};
};

// The flags every daemon test starts with: a free UDP port and both Unix
// sockets inside `dir`, so tests can run in parallel.
inline std::vector<std::string> IsolatedArgs(const TempDir& dir,
                                             std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {"--udp",
                                   "127.0.0.1:0",
                                   "--unix",
                                   dir.File("d.sock"),
                                   "--unix-seq",
                                   dir.File("s.sock"),
                                   "--stats-interval-s",
                                   "0"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Connects a RawClient of `transport` to the running `daemon`.
inline std::unique_ptr<RawClient> ConnectTo(const DaemonProcess& daemon, Transport transport) {
  switch (transport) {
    case Transport::kUdp:
      return RawClient::Udp(daemon.udp_host(), daemon.udp_port());
    case Transport::kUnixDgram:
      return RawClient::UnixDgram(daemon.unix_path());
    case Transport::kSeqpacket:
      return RawClient::Seqpacket(daemon.seq_path());
  }
  return nullptr;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_DAEMON_IO_RAW_CLIENT_H_

// tally::Client over POSIX datagram sockets (UDP, Unix datagram, Unix
// seqpacket). See include/tally/client.h for the contract.
//
// Every reply is untrusted: it is decoded by the shared codec, matched to an
// outstanding request id, and anything that does not match (stale retries,
// duplicates, garbage) is dropped.
#include "tally/client.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "client/admin.h"
#include "wire/codec.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Requests are packed into datagrams of at most this many bytes. Below the
// 65507-byte UDP maximum so an estimate that is slightly off still fits.
constexpr size_t kDatagramBudgetBytes = 60 * 1024;
// Fixed cost of a ClientMessage around its list (segment table, root pointer,
// struct, list tag), over-estimated.
constexpr size_t kMessageOverheadBytes = 64;
// CheckMany keeps at most this many request bytes unanswered at once, so a
// large batch does not overflow the daemon's (or our) receive queue, where
// datagrams would be dropped and cost a full timeout to resend.
constexpr size_t kWindowBytes = 128 * 1024;
// Receive buffer: the largest datagram we accept, plus room to detect more.
constexpr size_t kRecvBufferBytes = 64 * 1024 + 64;
// Socket receive buffer requested from the kernel (capped by rmem_max).
constexpr int kSocketRcvBufBytes = 1 << 20;
// Receive drains at most this many datagrams per call so callers get control back.
constexpr int kMaxDrainPerReceive = 256;

std::string Errno(int err) { return std::strerror(err); }

// Errors that mean the peer is gone rather than a datagram was lost.
bool IsFatalSocketError(int err) {
  return err == ECONNREFUSED || err == ENOTCONN || err == EPIPE || err == ECONNRESET ||
         err == EBADF || err == ENOTSOCK || err == EDESTADDRREQ;
}

// Replies are untrusted: restore the invariants of tally/types.h.
void Sanitize(CheckResult* result) {
  if (static_cast<uint16_t>(result->status) > static_cast<uint16_t>(Status::kInternal)) {
    result->error =
        "unknown status " + std::to_string(static_cast<uint16_t>(result->status)) + " from daemon";
    result->status = Status::kInternal;
  }
  if (result->status != Status::kOk) result->allowed = false;
}

bool KeyTooLarge(const CheckRequestRef& request) {
  return request.user_id.size() + request.endpoint.size() > kMaxKeyBytes;
}

CheckResult Failure(uint64_t request_id, Status status, std::string error) {
  CheckResult result;
  result.request_id = request_id;
  result.status = status;
  result.allowed = false;
  result.error = std::move(error);
  return result;
}

int RemainingMs(SteadyClock::time_point deadline) {
  auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - SteadyClock::now());
  return static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1 << 30));
}

class SocketClient final : public Client {
 public:
  SocketClient(int fd, Endpoint endpoint, const ClientOptions& options)
      : fd_(fd),
        endpoint_(std::move(endpoint)),
        options_(options),
        recv_storage_(kRecvBufferBytes / sizeof(uint64_t) + 1) {
    if (options_.attempts < 1) options_.attempts = 1;
    if (options_.timeout < std::chrono::milliseconds(1))
      options_.timeout = std::chrono::milliseconds(1);
    next_id_ = options_.first_request_id;
    if (next_id_ == 0) {
      std::random_device rd;
      next_id_ = (static_cast<uint64_t>(rd()) << 32) ^ rd();
    }
  }
  ~SocketClient() override { ::close(fd_); }

  SocketClient(const SocketClient&) = delete;
  SocketClient& operator=(const SocketClient&) = delete;

  CheckResult Check(const CheckRequest& request) override;
  std::vector<CheckResult> CheckMany(std::span<const CheckRequest> requests) override;
  bool SendBatch(std::span<const CheckRequestRef> requests, std::string* error) override;
  size_t Receive(std::chrono::milliseconds timeout, std::vector<CheckResult>* out) override;

  uint64_t NextRequestId() override {
    uint64_t id = next_id_++;
    if (id == 0) id = next_id_++;  // 0 would turn deduplication off
    return id;
  }
  int native_handle() const override { return fd_; }

 private:
  enum class Io { kOk, kTimeout, kLost, kFatal };

  // Sends send_buf_ as one datagram, waiting for room until `deadline`.
  // kLost: the kernel dropped it (treated like network loss); kFatal: the peer
  // is gone, `*error` says why.
  Io Send(SteadyClock::time_point deadline, std::string* error);
  // Waits until `deadline` for one datagram and decodes it into reader_.
  // kOk: reader_ holds a valid message. kLost: a datagram arrived but was not
  // a valid message (dropped). kTimeout: nothing arrived.
  Io ReceiveOne(SteadyClock::time_point deadline, std::string* error);
  std::string PeerGoneError(int err) const;

  int fd_;
  Endpoint endpoint_;
  ClientOptions options_;
  uint64_t next_id_ = 1;
  std::vector<std::byte> send_buf_;
  std::vector<uint64_t> recv_storage_;  // uint64_t: Cap'n Proto wants 8-byte alignment
  wire::ClientMessageReader reader_;
};

std::string SocketClient::PeerGoneError(int err) const {
  if (err == ECONNREFUSED) {
    return endpoint_.ToString() + " refused the connection (is tallyd running there?)";
  }
  return "socket to " + endpoint_.ToString() + ": " + Errno(err);
}

SocketClient::Io SocketClient::Send(SteadyClock::time_point deadline, std::string* error) {
  while (true) {
    ssize_t n = ::send(fd_, send_buf_.data(), send_buf_.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n >= 0) return Io::kOk;
    int err = errno;
    if (err == EINTR) continue;
    if (err == EAGAIN || err == EWOULDBLOCK) {
      // Unix datagram peers apply back-pressure; wait for room.
      pollfd pfd{fd_, POLLOUT, 0};
      int ready = ::poll(&pfd, 1, RemainingMs(deadline));
      if (ready == 0) return Io::kLost;
      if (ready < 0 && errno != EINTR) {
        *error = PeerGoneError(errno);
        return Io::kFatal;
      }
      continue;
    }
    if (IsFatalSocketError(err)) {
      *error = PeerGoneError(err);
      return Io::kFatal;
    }
    if (err == EMSGSIZE) {
      *error = "datagram of " + std::to_string(send_buf_.size()) + " bytes too large for " +
               endpoint_.ToString();
      return Io::kFatal;
    }
    return Io::kLost;  // ENOBUFS and friends: the datagram is gone; resend later
  }
}

SocketClient::Io SocketClient::ReceiveOne(SteadyClock::time_point deadline, std::string* error) {
  auto* buf = reinterpret_cast<std::byte*>(recv_storage_.data());
  while (true) {
    ssize_t n = ::recv(fd_, buf, kRecvBufferBytes, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0) {
      int err = errno;
      if (err == EINTR) continue;
      if (err == EAGAIN || err == EWOULDBLOCK) {
        int wait_ms = RemainingMs(deadline);
        if (wait_ms == 0) return Io::kTimeout;
        pollfd pfd{fd_, POLLIN, 0};
        int ready = ::poll(&pfd, 1, wait_ms);
        if (ready == 0) return Io::kTimeout;
        if (ready < 0 && errno != EINTR) {
          *error = PeerGoneError(errno);
          return Io::kFatal;
        }
        continue;  // readable or an error pending: recv reports which
      }
      if (IsFatalSocketError(err)) {
        *error = PeerGoneError(err);
        return Io::kFatal;
      }
      return Io::kLost;
    }
    if (n == 0) {
      int type = 0;
      socklen_t len = sizeof(type);
      if (::getsockopt(fd_, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET) {
        *error = endpoint_.ToString() + " closed the connection";
        return Io::kFatal;
      }
      return Io::kLost;  // an empty datagram
    }
    if (static_cast<size_t>(n) > kRecvBufferBytes) return Io::kLost;  // truncated
    Status status =
        reader_.Decode(std::span<const std::byte>(buf, static_cast<size_t>(n)), nullptr);
    return status == Status::kOk ? Io::kOk : Io::kLost;
  }
}

CheckResult SocketClient::Check(const CheckRequest& request) {
  CheckRequestRef ref(request);
  if (ref.request_id == 0) ref.request_id = NextRequestId();
  if (KeyTooLarge(ref)) {
    return Failure(ref.request_id, Status::kInvalidArgument,
                   "user_id + endpoint exceed " + std::to_string(kMaxKeyBytes) + " bytes");
  }
  wire::EncodeChecks(std::span<const CheckRequestRef>(&ref, 1), &send_buf_);

  std::string error;
  std::string rejection;  // a daemon-level rejection without our id, for the final message
  for (int attempt = 0; attempt < options_.attempts; ++attempt) {
    auto deadline = SteadyClock::now() + options_.timeout;
    Io sent = Send(deadline, &error);
    if (sent == Io::kFatal) return Failure(ref.request_id, Status::kUnavailable, error);
    while (true) {
      Io got = ReceiveOne(deadline, &error);
      if (got == Io::kTimeout) break;
      if (got == Io::kFatal) return Failure(ref.request_id, Status::kUnavailable, error);
      if (got != Io::kOk || reader_.kind() != wire::MessageKind::kResponses) continue;
      for (const CheckResult& response : reader_.responses()) {
        if (response.request_id == ref.request_id) {
          CheckResult result = response;
          Sanitize(&result);
          return result;
        }
        if (response.request_id == 0 && response.status != Status::kOk) {
          rejection = std::string(StatusName(response.status)) + ": " + response.error;
        }
      }
    }
  }
  std::string message = "no reply from " + endpoint_.ToString() + " after " +
                        std::to_string(options_.attempts) + " attempts";
  if (!rejection.empty()) message += " (daemon rejected a datagram: " + rejection + ")";
  return Failure(ref.request_id, Status::kUnavailable, std::move(message));
}

std::vector<CheckResult> SocketClient::CheckMany(std::span<const CheckRequest> requests) {
  const size_t n = requests.size();
  constexpr size_t kNone = SIZE_MAX;
  std::vector<CheckResult> results(n);
  std::vector<CheckRequestRef> refs(n);
  std::vector<size_t> bound(n);
  std::vector<int> sends(n, 0);
  std::vector<char> done(n, 0), in_flight(n, 0);
  // Reply lookup: id -> first index, chained through next_same for the rare
  // caller that passes the same id twice.
  std::unordered_map<uint64_t, size_t> by_id;
  std::vector<size_t> next_same(n, kNone);
  by_id.reserve(n);
  std::deque<size_t> queue;
  size_t remaining = 0;

  for (size_t i = 0; i < n; ++i) {
    refs[i] = CheckRequestRef(requests[i]);
    if (refs[i].request_id == 0) refs[i].request_id = NextRequestId();
    if (KeyTooLarge(refs[i])) {
      results[i] = Failure(refs[i].request_id, Status::kInvalidArgument,
                           "user_id + endpoint exceed " + std::to_string(kMaxKeyBytes) + " bytes");
      done[i] = 1;
      continue;
    }
    bound[i] = std::max(wire::EncodedCheckBound(refs[i].user_id.size(), refs[i].endpoint.size()),
                        wire::EncodedResponseBound(0));
    auto [it, inserted] = by_id.try_emplace(refs[i].request_id, i);
    if (!inserted) {
      size_t j = it->second;
      while (next_same[j] != kNone) j = next_same[j];
      next_same[j] = i;
    }
    queue.push_back(i);
    ++remaining;
  }

  auto fail_all = [&](const std::string& error) {
    for (size_t i = 0; i < n; ++i) {
      if (!done[i]) results[i] = Failure(refs[i].request_id, Status::kUnavailable, error);
    }
  };

  std::vector<CheckRequestRef> batch;
  std::vector<size_t> batch_index;
  size_t in_flight_bytes = 0;
  auto last_progress = SteadyClock::now();
  std::string error;
  while (remaining > 0) {
    // Fill the window with as few datagrams as fit.
    while (!queue.empty() && in_flight_bytes < kWindowBytes) {
      batch.clear();
      batch_index.clear();
      size_t bytes = kMessageOverheadBytes;
      while (!queue.empty() &&
             (batch.empty() || bytes + bound[queue.front()] <= kDatagramBudgetBytes)) {
        size_t i = queue.front();
        queue.pop_front();
        if (done[i]) continue;  // answered late by an earlier send
        bytes += bound[i];
        batch.push_back(refs[i]);
        batch_index.push_back(i);
      }
      if (batch.empty()) break;
      wire::EncodeChecks(batch, &send_buf_);
      Io sent = Send(SteadyClock::now() + options_.timeout, &error);
      if (sent == Io::kFatal) {
        fail_all(error);
        return results;
      }
      for (size_t i : batch_index) {
        ++sends[i];
        in_flight[i] = 1;
        in_flight_bytes += bound[i];
      }
      last_progress = SteadyClock::now();
    }

    Io got = ReceiveOne(last_progress + options_.timeout, &error);
    if (got == Io::kFatal) {
      fail_all(error);
      return results;
    }
    if (got == Io::kOk && reader_.kind() == wire::MessageKind::kResponses) {
      bool progress = false;
      for (const CheckResult& response : reader_.responses()) {
        auto it = by_id.find(response.request_id);
        if (it == by_id.end()) continue;
        size_t i = it->second;
        while (i != kNone && done[i]) i = next_same[i];
        if (i == kNone || sends[i] == 0) continue;
        results[i] = response;
        Sanitize(&results[i]);
        done[i] = 1;
        --remaining;
        progress = true;
        if (in_flight[i]) {
          in_flight[i] = 0;
          in_flight_bytes -= bound[i];
        }
      }
      if (progress) last_progress = SteadyClock::now();
    } else if (got == Io::kTimeout) {
      // Everything still in flight is presumed lost: resend what has attempts left.
      for (size_t i = 0; i < n; ++i) {
        if (done[i] || !in_flight[i]) continue;
        in_flight[i] = 0;
        if (sends[i] < options_.attempts) {
          queue.push_back(i);
        } else {
          results[i] = Failure(refs[i].request_id, Status::kUnavailable,
                               "no reply from " + endpoint_.ToString() + " after " +
                                   std::to_string(sends[i]) + " attempts");
          done[i] = 1;
          --remaining;
        }
      }
      in_flight_bytes = 0;
      last_progress = SteadyClock::now();
    }
  }
  return results;
}

bool SocketClient::SendBatch(std::span<const CheckRequestRef> requests, std::string* error) {
  if (requests.empty()) return true;
  size_t bytes = kMessageOverheadBytes;
  for (const CheckRequestRef& request : requests) {
    if (KeyTooLarge(request)) {
      *error = "user_id + endpoint exceed " + std::to_string(kMaxKeyBytes) + " bytes";
      return false;
    }
    bytes += wire::EncodedCheckBound(request.user_id.size(), request.endpoint.size());
  }
  if (bytes > wire::kMaxDatagramBytes) {
    *error = "batch of " + std::to_string(requests.size()) + " checks does not fit one datagram";
    return false;
  }
  wire::EncodeChecks(requests, &send_buf_);
  switch (Send(SteadyClock::now() + options_.timeout, error)) {
    case Io::kOk:
      return true;
    case Io::kFatal:
      return false;
    default:
      *error = "send to " + endpoint_.ToString() + " dropped";
      return false;
  }
}

// Besides responses, Receive accepts an echoed request message (kind kChecks,
// what a raw echo server sends back): each echoed check yields
// CheckResult{request_id, status = kOk, allowed = true}. That lets the load
// generator drive tallyd and a raw echo server with the same loop.
size_t SocketClient::Receive(std::chrono::milliseconds timeout, std::vector<CheckResult>* out) {
  size_t appended = 0;
  auto deadline = SteadyClock::now() + timeout;
  std::string error;
  for (int i = 0; i < kMaxDrainPerReceive; ++i) {
    // Wait only for the first datagram; then take what is already queued.
    Io got = ReceiveOne(i == 0 ? deadline : SteadyClock::time_point{}, &error);
    if (got == Io::kTimeout || got == Io::kFatal) break;
    if (got != Io::kOk) continue;
    if (reader_.kind() == wire::MessageKind::kResponses) {
      for (const CheckResult& response : reader_.responses()) {
        out->push_back(response);
        Sanitize(&out->back());
      }
      appended += reader_.responses().size();
    } else {
      for (const CheckRequestRef& echoed : reader_.checks()) {
        CheckResult result;
        result.request_id = echoed.request_id;
        result.status = Status::kOk;
        result.allowed = true;
        out->push_back(std::move(result));
      }
      appended += reader_.checks().size();
    }
  }
  return appended;
}

// Opens and connects the socket; returns -1 with `*error` set on failure.
int OpenUdp(const Endpoint& endpoint, std::string* error) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, endpoint.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(endpoint.port);
    addr_len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, endpoint.host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(endpoint.port);
    addr_len = sizeof(sockaddr_in6);
  } else {
    *error = "not a numeric IP address: '" + endpoint.host + "'";
    return -1;
  }
  if (endpoint.port == 0) {
    *error = "UDP port 0 is not a valid destination";
    return -1;
  }
  int fd = ::socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "socket: " + Errno(errno);
    return -1;
  }
  // connect() makes the kernel filter replies to this peer and report ICMP
  // port-unreachable as ECONNREFUSED instead of a silent timeout.
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
    *error = "connect to " + endpoint.ToString() + ": " + Errno(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

int OpenUnix(const Endpoint& endpoint, std::string* error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (endpoint.path.empty() || endpoint.path.size() >= sizeof(addr.sun_path)) {
    *error = "Unix socket path must be 1.." + std::to_string(sizeof(addr.sun_path) - 1) +
             " bytes: '" + endpoint.path + "'";
    return -1;
  }
  std::memcpy(addr.sun_path, endpoint.path.data(), endpoint.path.size());
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  socklen_t len =
      static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + endpoint.path.size() + 1);

  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *error = "socket: " + Errno(errno);
    return -1;
  }
  // A datagram client needs its own address for replies: let the kernel pick
  // an abstract one (autobind), so nothing is left behind in the filesystem.
  sockaddr_un self{};
  self.sun_family = AF_UNIX;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&self), sizeof(sa_family_t)) != 0) {
    *error = "bind (autobind): " + Errno(errno);
    ::close(fd);
    return -1;
  }
  if (::connect(fd, sa, len) == 0) return fd;
  int err = errno;
  ::close(fd);
  if (err == EPROTOTYPE) {  // the path is a seqpacket socket
    fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      *error = "socket: " + Errno(errno);
      return -1;
    }
    if (::connect(fd, sa, len) == 0) return fd;
    err = errno;
    ::close(fd);
  }
  *error = "connect to " + endpoint.ToString() + ": " + Errno(err);
  if (err == ENOENT || err == ECONNREFUSED) *error += " (is tallyd running?)";
  return -1;
}

}  // namespace

std::unique_ptr<Client> Client::Connect(const Endpoint& endpoint, const ClientOptions& options,
                                        std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  int fd =
      endpoint.kind == Endpoint::Kind::kUdp ? OpenUdp(endpoint, error) : OpenUnix(endpoint, error);
  if (fd < 0) return nullptr;
  // Best effort: a deeper queue absorbs bursts of replies to pipelined batches.
  int rcvbuf = kSocketRcvBufBytes;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  return std::make_unique<SocketClient>(fd, endpoint, options);
}

}  // namespace tally

// ---- operator queries (client/admin.h) ----

namespace tally {
namespace {

// Padding rounds per query: a reply that keeps growing past what the daemon
// asked for last time gets a few more tries, not a loop.
constexpr int kMaxPaddingRounds = 4;

// Sends the query `encode(min_bytes, &request)` makes and waits for a reply
// of `want` kind, resending on timeout. A datagram door answers a query too
// small for its reply with paddingRequired (check.capnp, protocol 3): the
// query is sent again at the size asked, and `*pad_hint` keeps that size for
// the next query of the kind.
template <typename EncodeQuery>
bool Query(const Endpoint& endpoint, const ClientOptions& options, EncodeQuery&& encode,
           std::atomic<size_t>* pad_hint, wire::MessageKind want, wire::ClientMessageReader* reader,
           std::vector<uint64_t>* storage, std::string* error) {
  std::vector<std::byte> request;
  encode(pad_hint->load(std::memory_order_relaxed), &request);
  int padding_rounds = 0;
  std::unique_ptr<Client> client = Client::Connect(endpoint, options, error);
  if (!client) return false;
  const int fd = client->native_handle();
  storage->assign(kRecvBufferBytes / sizeof(uint64_t) + 1, 0);
  auto* buf = reinterpret_cast<std::byte*>(storage->data());
  const int attempts = std::max(1, options.attempts);
  std::string rejection;
  for (int attempt = 0; attempt < attempts; ++attempt) {
    ssize_t sent;
    do {
      sent = ::send(fd, request.data(), request.size(), MSG_NOSIGNAL);
    } while (sent < 0 && errno == EINTR);
    if (sent < 0 && IsFatalSocketError(errno)) {
      *error = "send to " + endpoint.ToString() + ": " + Errno(errno);
      return false;
    }
    auto deadline = SteadyClock::now() + std::max(options.timeout, std::chrono::milliseconds(1));
    for (;;) {
      int wait_ms = RemainingMs(deadline);
      pollfd pfd{fd, POLLIN, 0};
      int ready = ::poll(&pfd, 1, wait_ms);
      if (ready == 0) break;
      if (ready < 0) {
        if (errno == EINTR) continue;
        *error = "poll: " + Errno(errno);
        return false;
      }
      ssize_t n = ::recv(fd, buf, kRecvBufferBytes, MSG_DONTWAIT | MSG_TRUNC);
      if (n < 0) {
        if (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK) continue;
        *error =
            (errno == ECONNREFUSED ? endpoint.ToString() + " refused (is tallyd running there?)"
                                   : "recv from " + endpoint.ToString() + ": " + Errno(errno));
        return false;
      }
      if (n == 0 || static_cast<size_t>(n) > kRecvBufferBytes) continue;
      if (reader->Decode(std::span<const std::byte>(buf, static_cast<size_t>(n)), nullptr) !=
          Status::kOk) {
        continue;
      }
      if (reader->kind() == want) return true;
      if (reader->kind() == wire::MessageKind::kPaddingRequired &&
          reader->padding_required_bytes() > request.size() &&
          reader->padding_required_bytes() <= wire::kMaxDatagramBytes &&
          padding_rounds < kMaxPaddingRounds) {
        ++padding_rounds;
        pad_hint->store(reader->padding_required_bytes(), std::memory_order_relaxed);
        encode(reader->padding_required_bytes(), &request);
        --attempt;  // not a lost datagram: the padded query gets its own attempts
        break;
      }
      if (reader->kind() == wire::MessageKind::kResponses && !reader->responses().empty() &&
          reader->responses()[0].status != Status::kOk) {
        // The daemon could not read our request (e.g. an older protocol).
        const CheckResult& r = reader->responses()[0];
        *error = endpoint.ToString() +
                 " rejected the request: " + std::string(StatusName(r.status)) +
                 (r.error.empty() ? "" : ": " + r.error);
        return false;
      }
    }
  }
  *error =
      "no reply from " + endpoint.ToString() + " after " + std::to_string(attempts) + " attempts";
  return false;
}

}  // namespace

bool QueryStatus(const Endpoint& endpoint, const ClientOptions& options, wire::StatusReport* out,
                 std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  wire::ClientMessageReader reader;
  std::vector<uint64_t> storage;
  if (!Query(
          endpoint, options,
          [](size_t min_bytes, std::vector<std::byte>* request) {
            wire::EncodeStatusRequest(request, min_bytes);
          },
          &pad_hint, wire::MessageKind::kStatusResponse, &reader, &storage, error)) {
    return false;
  }
  *out = reader.status_report();
  return true;
}

bool QueryOwner(const Endpoint& endpoint, const ClientOptions& options,
                const wire::OwnerQuery& query, wire::OwnerReport* out, std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  wire::ClientMessageReader reader;
  std::vector<uint64_t> storage;
  if (!Query(
          endpoint, options,
          [&query](size_t min_bytes, std::vector<std::byte>* request) {
            wire::EncodeOwnerRequest(query, request, min_bytes);
          },
          &pad_hint, wire::MessageKind::kOwnerResponse, &reader, &storage, error)) {
    return false;
  }
  *out = reader.owner_report();
  return true;
}

}  // namespace tally

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
#include <functional>
#include <random>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "client/admin.h"
#include "client/client_internal.h"
#include "wire/codec.h"

namespace tally {
namespace {

using SteadyClock = std::chrono::steady_clock;

// Requests are packed into datagrams of at most this many bytes. Below the
// 65507-byte UDP maximum so an estimate that is slightly off still fits.
constexpr size_t kDatagramBudgetBytes = 60 * 1024;
// A ClientMessage's fixed cost around its list: wire::kMessageOverheadBytes,
// the one the daemon packs replies with.
using wire::kMessageOverheadBytes;
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

// ---- the one send/wait/resend loop ----
//
// Every call that waits for replies (Check, CheckMany, the operator queries
// of client/admin.h) describes its exchange as a type with these members and
// hands it to SocketClient::Run, which does all the I/O:
//   bool NextDatagram(std::vector<std::byte>* datagram): encodes the next
//       datagram that is due into *datagram; false when none is (all sent, or
//       the window is full). Called until false before every wait.
//   bool OnReply(const wire::ClientMessageReader& reply): one decoded
//       datagram; true when it was progress (the wait starts afresh).
//   void OnTimeout(): nothing arrived within the timeout of the last send or
//       progress; what is in flight is presumed lost: queue resends (with the
//       same request ids) or give up.
//   void OnFatal(const std::string& error): the peer is gone; fail what is left.
//   bool done() const: every answer is in (or given up on).
// A datagram the kernel dropped on send counts as sent (it is resent on
// timeout like one the network lost).

// Check: one request, resent up to `attempts` times.
class SingleCheck {
 public:
  SingleCheck(const CheckRequestRef& request, const DaemonAddress& address, int attempts)
      : request_(request), address_(address), attempts_(attempts) {}

  bool NextDatagram(std::vector<std::byte>* datagram) {
    if (!send_due_) return false;
    send_due_ = false;
    ++sends_;
    wire::EncodeChecks(std::span<const CheckRequestRef>(&request_, 1), datagram);
    return true;
  }
  bool OnReply(const wire::ClientMessageReader& reply) {
    if (reply.kind() != wire::MessageKind::kResponses) return false;
    for (const CheckResult& response : reply.responses()) {
      if (response.request_id == request_.request_id) {
        result_ = response;
        Sanitize(&result_);
        done_ = true;
        return true;
      }
      if (response.request_id == 0 && response.status != Status::kOk) {
        rejection_ = std::string(StatusName(response.status)) + ": " + response.error;
      }
    }
    return false;
  }
  void OnTimeout() {
    if (sends_ < attempts_) {
      send_due_ = true;
      return;
    }
    std::string message = "no reply from " + address_.ToString() + " after " +
                          std::to_string(attempts_) + " attempts";
    // A daemon-level rejection without our id explains the silence.
    if (!rejection_.empty()) message += " (daemon rejected a datagram: " + rejection_ + ")";
    OnFatal(message);
  }
  void OnFatal(const std::string& error) {
    result_ = Failure(request_.request_id, Status::kUnavailable, error);
    done_ = true;
  }
  bool done() const { return done_; }
  CheckResult& result() { return result_; }

 private:
  const CheckRequestRef& request_;
  const DaemonAddress& address_;
  const int attempts_;
  int sends_ = 0;
  bool send_due_ = true;
  bool done_ = false;
  CheckResult result_;
  std::string rejection_;
};

// CheckMany: requests packed into as few datagrams as fit, at most
// kWindowBytes unanswered at once, each resent up to `attempts` times.
class ManyChecks {
 public:
  ManyChecks(std::span<const CheckRequest> requests, const DaemonAddress& address, int attempts,
             std::function<uint64_t()> next_request_id)
      : address_(address), attempts_(attempts), n_(requests.size()) {
    results_.resize(n_);
    refs_.resize(n_);
    bound_.resize(n_);
    sends_.assign(n_, 0);
    done_.assign(n_, 0);
    in_flight_.assign(n_, 0);
    next_same_.assign(n_, kNone);
    by_id_.reserve(n_);
    for (size_t i = 0; i < n_; ++i) {
      refs_[i] = CheckRequestRef(requests[i]);
      if (refs_[i].request_id == 0) refs_[i].request_id = next_request_id();
      if (KeyTooLarge(refs_[i])) {
        results_[i] =
            Failure(refs_[i].request_id, Status::kInvalidArgument,
                    "user_id + endpoint exceed " + std::to_string(kMaxKeyBytes) + " bytes");
        done_[i] = 1;
        continue;
      }
      bound_[i] =
          std::max(wire::EncodedCheckBound(refs_[i].user_id.size(), refs_[i].endpoint.size()),
                   wire::EncodedResponseBound(0));
      auto [it, inserted] = by_id_.try_emplace(refs_[i].request_id, i);
      if (!inserted) {
        size_t j = it->second;
        while (next_same_[j] != kNone) j = next_same_[j];
        next_same_[j] = i;
      }
      queue_.push_back(i);
      ++remaining_;
    }
  }

  // Fills the window with as few datagrams as fit.
  bool NextDatagram(std::vector<std::byte>* datagram) {
    if (queue_.empty() || in_flight_bytes_ >= kWindowBytes) return false;
    batch_.clear();
    batch_index_.clear();
    size_t bytes = kMessageOverheadBytes;
    while (!queue_.empty() &&
           (batch_.empty() || bytes + bound_[queue_.front()] <= kDatagramBudgetBytes)) {
      size_t i = queue_.front();
      queue_.pop_front();
      if (done_[i]) continue;  // answered late by an earlier send
      bytes += bound_[i];
      batch_.push_back(refs_[i]);
      batch_index_.push_back(i);
    }
    if (batch_.empty()) return false;
    wire::EncodeChecks(batch_, datagram);
    for (size_t i : batch_index_) {
      ++sends_[i];
      in_flight_[i] = 1;
      in_flight_bytes_ += bound_[i];
    }
    return true;
  }
  bool OnReply(const wire::ClientMessageReader& reply) {
    if (reply.kind() != wire::MessageKind::kResponses) return false;
    bool progress = false;
    for (const CheckResult& response : reply.responses()) {
      auto it = by_id_.find(response.request_id);
      if (it == by_id_.end()) continue;
      size_t i = it->second;
      // The rare caller that passes an id twice: the first unanswered one.
      while (i != kNone && done_[i]) i = next_same_[i];
      if (i == kNone || sends_[i] == 0) continue;
      results_[i] = response;
      Sanitize(&results_[i]);
      done_[i] = 1;
      --remaining_;
      progress = true;
      if (in_flight_[i]) {
        in_flight_[i] = 0;
        in_flight_bytes_ -= bound_[i];
      }
    }
    return progress;
  }
  // Everything still in flight is presumed lost: resend what has attempts left.
  void OnTimeout() {
    for (size_t i = 0; i < n_; ++i) {
      if (done_[i] || !in_flight_[i]) continue;
      in_flight_[i] = 0;
      if (sends_[i] < attempts_) {
        queue_.push_back(i);
      } else {
        results_[i] = Failure(refs_[i].request_id, Status::kUnavailable,
                              "no reply from " + address_.ToString() + " after " +
                                  std::to_string(sends_[i]) + " attempts");
        done_[i] = 1;
        --remaining_;
      }
    }
    in_flight_bytes_ = 0;
  }
  void OnFatal(const std::string& error) {
    for (size_t i = 0; i < n_; ++i) {
      if (!done_[i]) results_[i] = Failure(refs_[i].request_id, Status::kUnavailable, error);
    }
    remaining_ = 0;
  }
  bool done() const { return remaining_ == 0; }
  std::vector<CheckResult>& results() { return results_; }

 private:
  static constexpr size_t kNone = SIZE_MAX;
  const DaemonAddress& address_;
  const int attempts_;
  const size_t n_;
  std::vector<CheckResult> results_;
  std::vector<CheckRequestRef> refs_;
  std::vector<size_t> bound_;
  std::vector<int> sends_;
  std::vector<char> done_, in_flight_;
  // Reply lookup: id -> first index, chained through next_same_ for the rare
  // caller that passes the same id twice.
  std::unordered_map<uint64_t, size_t> by_id_;
  std::vector<size_t> next_same_;
  std::deque<size_t> queue_;
  size_t remaining_ = 0;
  size_t in_flight_bytes_ = 0;
  std::vector<CheckRequestRef> batch_;
  std::vector<size_t> batch_index_;
};

// Padding rounds per query: a reply that keeps growing past what the daemon
// asked for last time gets a few more tries, not a loop.
constexpr int kMaxPaddingRounds = 4;

// An operator query (client/admin.h): the query `encode(min_bytes, &request)`
// makes, resent up to `attempts` times until a reply of `want` kind arrives.
// A datagram door answers a query too small for its reply with
// paddingRequired (check.capnp, protocol 3): the query is sent again at the
// size asked, with the attempts it had left (a padding round is not a lost
// datagram), and `*pad_hint` keeps that size for the next query of the kind.
template <typename EncodeQuery>
class OperatorQuery {
 public:
  // `want_id`: for a descriptor check, the request id its answer must carry
  // (a late answer to an earlier request is ignored); 0 for other queries.
  OperatorQuery(EncodeQuery& encode, std::atomic<size_t>* pad_hint, wire::MessageKind want,
                const DaemonAddress& address, int attempts, uint64_t want_id = 0)
      : encode_(encode),
        pad_hint_(pad_hint),
        want_(want),
        want_id_(want_id),
        address_(address),
        attempts_(attempts) {
    encode_(pad_hint_->load(std::memory_order_relaxed), &request_);
  }

  bool NextDatagram(std::vector<std::byte>* datagram) {
    if (!send_due_) return false;
    send_due_ = false;
    ++sends_;
    datagram->assign(request_.begin(), request_.end());
    return true;
  }
  bool OnReply(const wire::ClientMessageReader& reply) {
    if (reply.kind() == want_) {
      if (want_id_ != 0 && reply.descriptor_report().request_id != want_id_) return false;
      answered_ = done_ = true;
      return true;
    }
    if (reply.kind() == wire::MessageKind::kPaddingRequired &&
        reply.padding_required_bytes() > request_.size() &&
        reply.padding_required_bytes() <= wire::kMaxDatagramBytes &&
        padding_rounds_ < kMaxPaddingRounds) {
      ++padding_rounds_;
      pad_hint_->store(reply.padding_required_bytes(), std::memory_order_relaxed);
      encode_(reply.padding_required_bytes(), &request_);
      --sends_;  // not a lost datagram: the padded query keeps the attempts left
      send_due_ = true;
      return true;
    }
    if (reply.kind() == wire::MessageKind::kResponses && !reply.responses().empty() &&
        reply.responses()[0].status != Status::kOk) {
      // The daemon could not read our request (e.g. an older protocol).
      const CheckResult& r = reply.responses()[0];
      OnFatal(address_.ToString() + " rejected the request: " + std::string(StatusName(r.status)) +
              (r.error.empty() ? "" : ": " + r.error));
      return true;
    }
    return false;
  }
  void OnTimeout() {
    if (sends_ < attempts_) {
      send_due_ = true;
      return;
    }
    OnFatal("no reply from " + address_.ToString() + " after " + std::to_string(attempts_) +
            " attempts");
  }
  void OnFatal(const std::string& error) {
    error_ = error;
    done_ = true;
  }
  bool done() const { return done_; }
  bool answered() const { return answered_; }
  const std::string& error() const { return error_; }

 private:
  EncodeQuery& encode_;
  std::atomic<size_t>* pad_hint_;
  const wire::MessageKind want_;
  const uint64_t want_id_;
  const DaemonAddress& address_;
  const int attempts_;
  std::vector<std::byte> request_;
  int sends_ = 0;
  int padding_rounds_ = 0;
  bool send_due_ = true;
  bool done_ = false;
  bool answered_ = false;
  std::string error_;
};

class SocketClient final : public PipelinedClient {
 public:
  SocketClient(int fd, DaemonAddress address, const ClientOptions& options)
      : fd_(fd),
        address_(std::move(address)),
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
  DescriptorCheckResult CheckDescriptors(const DescriptorCheckRequest& request) override;
  std::vector<CheckResult> CheckMany(std::span<const CheckRequest> requests) override;
  bool SendBatch(std::span<const CheckRequestRef> requests, std::string* error) override;
  size_t Receive(std::chrono::milliseconds timeout, std::vector<CheckResult>* out) override;

  uint64_t NextRequestId() override {
    uint64_t id = next_id_++;
    if (id == 0) id = next_id_++;  // 0 would turn deduplication off
    return id;
  }
  int native_handle() const override { return fd_; }

  // Runs an operator query (OperatorQuery); on success reply() holds the answer
  // until the next call on this client.
  template <typename EncodeQuery>
  bool Query(EncodeQuery&& encode, std::atomic<size_t>* pad_hint, wire::MessageKind want,
             std::string* error, uint64_t want_id = 0) {
    OperatorQuery<std::remove_reference_t<EncodeQuery>> query(encode, pad_hint, want, address_,
                                                              options_.attempts, want_id);
    Run(query);
    if (!query.answered()) *error = query.error();
    return query.answered();
  }
  const wire::ClientMessageReader& reply() const { return reader_; }

 private:
  enum class Io { kOk, kTimeout, kLost, kFatal };

  // The send/wait/resend loop (see "the one send/wait/resend loop" above).
  // The wait for replies ends `timeout` after the last send began or the last
  // progress, whichever is later.
  template <typename Exchange>
  void Run(Exchange& exchange) {
    std::string error;
    auto last_progress = SteadyClock::now();
    while (!exchange.done()) {
      while (exchange.NextDatagram(&send_buf_)) {
        const auto started = SteadyClock::now();
        if (Send(started + options_.timeout, &error) == Io::kFatal) {
          exchange.OnFatal(error);
          return;
        }
        last_progress = started;
      }
      Io got = ReceiveOne(last_progress + options_.timeout, &error);
      if (got == Io::kFatal) {
        exchange.OnFatal(error);
        return;
      }
      if (got == Io::kOk) {
        if (exchange.OnReply(reader_)) last_progress = SteadyClock::now();
      } else if (got == Io::kTimeout) {
        exchange.OnTimeout();
        last_progress = SteadyClock::now();
      }
    }
  }

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
  DaemonAddress address_;
  ClientOptions options_;
  uint64_t next_id_ = 1;
  std::vector<std::byte> send_buf_;
  std::vector<uint64_t> recv_storage_;  // uint64_t: Cap'n Proto wants 8-byte alignment
  wire::ClientMessageReader reader_;
  std::atomic<size_t> descriptor_pad_hint_{0};  // the last padding a door asked for
};

std::string SocketClient::PeerGoneError(int err) const {
  if (err == ECONNREFUSED) {
    return address_.ToString() + " refused the connection (is tallyd running there?)";
  }
  return "socket to " + address_.ToString() + ": " + Errno(err);
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
               address_.ToString();
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
        *error = address_.ToString() + " closed the connection";
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
  SingleCheck check(ref, address_, options_.attempts);
  Run(check);
  return std::move(check.result());
}

DescriptorCheckResult SocketClient::CheckDescriptors(const DescriptorCheckRequest& request) {
  DescriptorCheckResult result;
  result.request_id = request.request_id != 0 ? request.request_id : NextRequestId();
  wire::DescriptorQuery query;
  query.request_id = result.request_id;
  query.domain = request.domain;
  query.hits_addend = request.hits_addend;
  query.descriptors.reserve(request.descriptors.size());
  for (const RateLimitDescriptor& d : request.descriptors) {
    wire::QueryDescriptor& w = query.descriptors.emplace_back();
    for (const DescriptorEntry& e : d.entries) w.entries.push_back({e.key, e.value});
    if (d.limit) {
      w.has_limit = true;
      w.requests_per_unit = d.limit->requests_per_unit;
      w.unit = static_cast<uint8_t>(d.limit->unit);
    }
  }
  if (wire::EncodedDescriptorQueryBound(query) > wire::kMaxDatagramBytes) {
    result.status = Status::kInvalidArgument;
    result.error = "the descriptor check does not fit one datagram";
    return result;
  }
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* out) {
    wire::EncodeDescriptorCheck(query, out, min_bytes);
  };
  std::string error;
  if (!Query(encode, &descriptor_pad_hint_, wire::MessageKind::kDescriptorCheckResponse, &error,
             result.request_id)) {
    result.status = Status::kUnavailable;
    result.error = std::move(error);
    return result;
  }
  const wire::DescriptorReport& report = reader_.descriptor_report();
  result.status = report.status;
  result.error = report.error;
  if (result.status != Status::kOk) return result;
  result.allowed = report.overall_code != wire::RateCode::kOverLimit;
  for (const wire::DescriptorOutcome& o : report.results) {
    DescriptorStatus& d = result.descriptors.emplace_back();
    d.allowed = o.code != wire::RateCode::kOverLimit;
    d.has_limit = o.has_limit;
    d.limit = o.limit;
    d.unit = o.unit <= static_cast<uint8_t>(RateLimitUnit::kWeek)
                 ? static_cast<RateLimitUnit>(o.unit)
                 : RateLimitUnit::kUnknown;
    d.name = o.name;
    d.remaining = o.remaining;
    d.retry_after_ms = o.retry_after_ms;
    d.reset_after_ms = o.reset_after_ms;
  }
  return result;
}

std::vector<CheckResult> SocketClient::CheckMany(std::span<const CheckRequest> requests) {
  ManyChecks checks(requests, address_, options_.attempts, [this] { return NextRequestId(); });
  Run(checks);
  return std::move(checks.results());
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
      *error = "send to " + address_.ToString() + " dropped";
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
int OpenUdp(const DaemonAddress& address, std::string* error) {
  sockaddr_storage addr{};
  socklen_t addr_len = 0;
  int family = AF_INET;
  auto* v4 = reinterpret_cast<sockaddr_in*>(&addr);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&addr);
  if (inet_pton(AF_INET, address.host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(address.port);
    addr_len = sizeof(sockaddr_in);
  } else if (inet_pton(AF_INET6, address.host.c_str(), &v6->sin6_addr) == 1) {
    family = AF_INET6;
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(address.port);
    addr_len = sizeof(sockaddr_in6);
  } else {
    *error = "not a numeric IP address: '" + address.host + "'";
    return -1;
  }
  if (address.port == 0) {
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
    *error = "connect to " + address.ToString() + ": " + Errno(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}

int OpenUnix(const DaemonAddress& address, std::string* error) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (address.path.empty() || address.path.size() >= sizeof(addr.sun_path)) {
    *error = "Unix socket path must be 1.." + std::to_string(sizeof(addr.sun_path) - 1) +
             " bytes: '" + address.path + "'";
    return -1;
  }
  std::memcpy(addr.sun_path, address.path.data(), address.path.size());
  auto* sa = reinterpret_cast<sockaddr*>(&addr);
  socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + address.path.size() + 1);

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
  *error = "connect to " + address.ToString() + ": " + Errno(err);
  if (err == ENOENT || err == ECONNREFUSED) *error += " (is tallyd running?)";
  return -1;
}

// Opens and connects the socket for `address`; null with `*error` set on failure.
std::unique_ptr<SocketClient> ConnectSocket(const DaemonAddress& address,
                                            const ClientOptions& options, std::string* error) {
  int fd = address.kind == DaemonAddress::Kind::kUdp ? OpenUdp(address, error)
                                                     : OpenUnix(address, error);
  if (fd < 0) return nullptr;
  // Best effort: a deeper queue absorbs bursts of replies to pipelined batches.
  int rcvbuf = kSocketRcvBufBytes;
  ::setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
  return std::make_unique<SocketClient>(fd, address, options);
}

}  // namespace

std::unique_ptr<Client> Client::Connect(const DaemonAddress& address, const ClientOptions& options,
                                        std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  return ConnectSocket(address, options, error);
}

std::unique_ptr<PipelinedClient> PipelinedClient::Connect(const DaemonAddress& address,
                                                          const ClientOptions& options,
                                                          std::string* error) {
  std::string ignored;
  if (error == nullptr) error = &ignored;
  return ConnectSocket(address, options, error);
}

std::string_view RateLimitUnitName(RateLimitUnit unit) {
  switch (unit) {
    case RateLimitUnit::kSecond:
      return "second";
    case RateLimitUnit::kMinute:
      return "minute";
    case RateLimitUnit::kHour:
      return "hour";
    case RateLimitUnit::kDay:
      return "day";
    case RateLimitUnit::kMonth:
      return "month";
    case RateLimitUnit::kYear:
      return "year";
    case RateLimitUnit::kWeek:
      return "week";
    case RateLimitUnit::kUnknown:
      break;
  }
  return "unknown";
}

// ---- operator queries (client/admin.h) ----

bool QueryStatus(const DaemonAddress& address, const ClientOptions& options,
                 wire::StatusReport* out, std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return false;
  auto encode = [](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeStatusRequest(request, min_bytes);
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kStatusResponse, error)) return false;
  *out = client->reply().status_report();
  return true;
}

bool QueryOwner(const DaemonAddress& address, const ClientOptions& options,
                const wire::OwnerQuery& query, wire::OwnerReport* out, std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return false;
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeOwnerRequest(query, request, min_bytes);
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kOwnerResponse, error)) return false;
  *out = client->reply().owner_report();
  return true;
}

bool WriteLimit(const DaemonAddress& address, const ClientOptions& options,
                const wire::LimitWriteQuery& query, wire::LimitWriteReport* out,
                std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return false;
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeLimitWrite(query, request, min_bytes);
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kLimitWriteResponse, error)) {
    return false;
  }
  *out = client->reply().limit_write_report();
  return true;
}

Status ReportSignal(const DaemonAddress& address, const ClientOptions& options,
                    const SignalReport& report, SignalReportOutcome* outcome, std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  *outcome = SignalReportOutcome::kNone;
  if (report.domain.size() > wire::kMaxSignalNameBytes ||
      report.rule.size() > wire::kMaxSignalNameBytes) {
    *error = "domain or rule longer than 256 bytes";
    return Status::kInvalidArgument;
  }
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return Status::kUnavailable;
  wire::SignalReportQuery query;
  query.domain = report.domain;
  query.rule = report.rule;
  query.value = report.value;
  query.count = report.count;
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeSignalReport(query, request, min_bytes);
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kSignalReportResponse, error)) {
    return Status::kUnavailable;
  }
  const wire::SignalReportReport& answer = client->reply().signal_report_report();
  *outcome = static_cast<SignalReportOutcome>(answer.outcome);
  if (answer.status != Status::kOk) *error = answer.error;
  return answer.status;
}

bool GetLimit(const DaemonAddress& address, const ClientOptions& options,
              const wire::LimitGetQuery& query, wire::LimitOverridesReport* out,
              std::string* error) {
  static std::atomic<size_t> pad_hint{0};
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return false;
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeLimitGet(query, request, min_bytes);
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kLimitOverridesResponse, error)) {
    return false;
  }
  *out = client->reply().limit_overrides_report();
  return true;
}

bool ListLimits(const DaemonAddress& address, const ClientOptions& options,
                const wire::LimitListQuery& query, wire::LimitOverridesReport* out,
                std::string* error) {
  // A page is at most 3x its query on a datagram door: a 2 KiB query gets
  // pages of about 6 KiB (dozens of overrides) instead of one per query.
  static constexpr size_t kListQueryBytes = 2048;
  static std::atomic<size_t> pad_hint{0};
  std::unique_ptr<SocketClient> client = ConnectSocket(address, options, error);
  if (!client) return false;
  auto encode = [&query](size_t min_bytes, std::vector<std::byte>* request) {
    wire::EncodeLimitList(query, request, std::max(min_bytes, kListQueryBytes));
  };
  if (!client->Query(encode, &pad_hint, wire::MessageKind::kLimitOverridesResponse, error)) {
    return false;
  }
  *out = client->reply().limit_overrides_report();
  return true;
}

}  // namespace tally

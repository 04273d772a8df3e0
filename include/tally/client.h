// tally::Client: the C++ client library for tallyd, over UDP, a Unix datagram
// socket or a Unix seqpacket socket.
//
// Thread safety: a Client is NOT thread-safe; use one per thread (they are
// cheap: one socket each). Ownership: the Client owns its socket.
//
// Reliability: datagrams can be lost. Check and CheckMany resend what was not
// answered within `timeout`, up to `attempts` times, with the SAME request id,
// so tallyd counts a request at most once even when only its reply was lost.
#ifndef TALLY_CLIENT_H_
#define TALLY_CLIENT_H_

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "tally/types.h"

namespace tally {

struct Endpoint {
  enum class Kind { kUdp, kUnix };
  Kind kind = Kind::kUdp;
  std::string host = "127.0.0.1";  // kUdp: numeric IPv4/IPv6 address
  uint16_t port = 0;               // kUdp
  std::string path;                // kUnix: datagram or seqpacket socket path

  // "HOST:PORT" (IPv6 as "[::1]:PORT") -> kUdp. HOST must be a numeric
  // address and PORT 1..65535 in plain digits; anything else is nullopt.
  static std::optional<Endpoint> ParseUdp(std::string_view host_port);
  static Endpoint Unix(std::string path);
  // "127.0.0.1:7070", "[::1]:7070" or "unix:/path"; ParseUdp reads back the UDP forms.
  std::string ToString() const;
};

struct ClientOptions {
  std::chrono::milliseconds timeout{250};  // per attempt
  int attempts = 3;                        // total sends of one request
  // First request id; 0 picks a random one. Ids then increase by one.
  uint64_t first_request_id = 0;
};

class Client {
 public:
  // Opens a socket to `endpoint`. For kUnix it connects as a datagram client
  // (binding an abstract autobind address for replies) and falls back to a
  // seqpacket connection when the path is a seqpacket socket. Returns null and
  // sets `*error` on failure.
  static std::unique_ptr<Client> Connect(const Endpoint& endpoint, const ClientOptions& options,
                                         std::string* error);
  virtual ~Client() = default;

  // Blocking check. Assigns a request id when request.request_id == 0.
  // On timeout after all attempts: status kUnavailable.
  virtual CheckResult Check(const CheckRequest& request) = 0;

  // Pipelined batch: packs the requests into as few datagrams as fit, sends
  // them all, then collects replies, resending unanswered ones (same ids).
  // Results are in request order.
  virtual std::vector<CheckResult> CheckMany(std::span<const CheckRequest> requests) = 0;

  // Low-level pipelining for load generators: send one batch datagram without
  // waiting, then poll replies. Receive waits at most `timeout`, appends every
  // result of every datagram that arrived, and returns the number appended.
  // SendBatch sends the ids as given (take them from NextRequestId()) and
  // never resends; it fails if the batch does not fit one datagram or the
  // peer is gone. Receive neither matches nor filters ids, and also accepts
  // an echoed request message (what a raw echo server returns): each echoed
  // check yields CheckResult{request_id, status = kOk, allowed = true}.
  virtual bool SendBatch(std::span<const CheckRequestRef> requests, std::string* error) = 0;
  virtual size_t Receive(std::chrono::milliseconds timeout, std::vector<CheckResult>* out) = 0;

  // Allocates a fresh request id.
  virtual uint64_t NextRequestId() = 0;
  virtual int native_handle() const = 0;
};

}  // namespace tally

#endif  // TALLY_CLIENT_H_

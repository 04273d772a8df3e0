// tally::Client: the C++ client library for tallyd, over UDP, a Unix datagram
// socket or a Unix seqpacket socket.
//
// Thread safety: a Client is NOT thread-safe; use one per thread (they are
// cheap: one socket each). Ownership: the Client owns its socket and closes
// it when destroyed; results own their strings.
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

// Where a tallyd listens: a UDP address or a Unix socket path. (Not to be
// confused with CheckRequest::endpoint, the limited API route a check names.)
// A plain value: copyable, no I/O.
struct DaemonAddress {
  enum class Kind { kUdp, kUnix };
  Kind kind = Kind::kUdp;
  std::string host = "127.0.0.1";  // kUdp: numeric IPv4/IPv6 address
  uint16_t port = 0;               // kUdp
  std::string path;                // kUnix: datagram or seqpacket socket path

  // "HOST:PORT" (IPv6 as "[::1]:PORT") -> kUdp. HOST must be a numeric
  // address and PORT 1..65535 in plain digits; anything else is nullopt.
  static std::optional<DaemonAddress> ParseUdp(std::string_view host_port);
  // A kUnix address for `path` (not checked until Connect).
  static DaemonAddress Unix(std::string path);
  // "127.0.0.1:7070", "[::1]:7070" or "unix:/path"; ParseUdp reads back the UDP forms.
  std::string ToString() const;
};

// The old name of DaemonAddress, kept for one release so embedders keep
// building; it goes in the release after.
using Endpoint [[deprecated("renamed tally::DaemonAddress")]] = DaemonAddress;

// ---- descriptor checks (Envoy's rate limit request; docs/ENVOY.md) ----

// Envoy's RateLimitResponse.RateLimit.Unit, same numbers (kWeek is tally's).
enum class RateLimitUnit : uint8_t {
  kUnknown = 0,
  kSecond = 1,
  kMinute = 2,
  kHour = 3,
  kDay = 4,
  kMonth = 5,
  kYear = 6,
  kWeek = 7,
};

struct DescriptorEntry {
  std::string key;  // must not be empty
  std::string value;
};

struct RateLimitDescriptor {
  std::vector<DescriptorEntry> entries;  // 1..16
  // The request's own limit for this descriptor, replacing the rules' (as
  // Envoy's RateLimitDescriptor.limit).
  struct Limit {
    uint32_t requests_per_unit = 0;
    RateLimitUnit unit = RateLimitUnit::kUnknown;
  };
  std::optional<Limit> limit;
};

// Asks tallyd to resolve `descriptors` through the rules of `domain` (its
// --rules) and to count `hits_addend` hits (0 means 1) against every limit
// they reach, as its gRPC ShouldRateLimit does.
struct DescriptorCheckRequest {
  uint64_t request_id = 0;  // 0: the client assigns one
  std::string domain;
  std::vector<RateLimitDescriptor> descriptors;  // 1..64
  uint32_t hits_addend = 0;
};

// One descriptor's answer: the fields of POST /v1/check's descriptor form.
struct DescriptorStatus {
  bool allowed = true;     // false: over its limit (a shadow-mode denial is allowed)
  bool has_limit = false;  // false: no rule limits it (limit, unit, name unset)
  uint32_t limit = 0;      // requests per unit of the reported limit
  RateLimitUnit unit = RateLimitUnit::kUnknown;
  std::string name;             // the rule's name, may be empty
  uint32_t remaining = 0;       // 4294967295 for an `unlimited` rule
  uint64_t retry_after_ms = 0;  // 0 unless denied
  uint64_t reset_after_ms = 0;
};

struct DescriptorCheckResult {
  uint64_t request_id = 0;
  Status status = Status::kOk;  // not kOk: `error` says why, no descriptors
  std::string error;
  bool allowed = false;                       // status kOk and no descriptor over its limit
  std::vector<DescriptorStatus> descriptors;  // one per request descriptor, in order
};

// "second", "minute", ... as rules files spell units; "unknown" otherwise.
std::string_view RateLimitUnitName(RateLimitUnit unit);

struct ClientOptions {
  std::chrono::milliseconds timeout{250};  // per attempt; below 1 ms counts as 1 ms
  int attempts = 3;                        // total sends of one request; below 1 counts as 1
  // First request id; 0 picks a random one. Ids then increase by one.
  uint64_t first_request_id = 0;
};

class Client {
 public:
  // Opens a socket to `address`. For kUdp it connects a UDP socket (so an
  // ICMP port-unreachable surfaces as an error instead of a timeout). For
  // kUnix it connects as a datagram client (binding an abstract autobind
  // address for replies) and falls back to a seqpacket connection when the
  // path is a seqpacket socket. Nothing is sent yet. Returns null and sets
  // `*error` (when not null) on failure: a non-numeric host, port 0, a path
  // too long for a Unix socket, or a socket/connect error.
  // Thread safety: may be called from any thread.
  static std::unique_ptr<Client> Connect(const DaemonAddress& address, const ClientOptions& options,
                                         std::string* error);
  virtual ~Client() = default;

  // Blocking check: sends `request` and waits for its answer, resending on
  // timeout (see "Reliability" above). Assigns a request id when
  // request.request_id == 0. Errors come back in the result, never thrown:
  // kInvalidArgument, without sending, when user_id + endpoint exceed
  // kMaxKeyBytes; kUnavailable with `error` saying why when no answer came
  // after all attempts or the daemon is gone (refused, closed); any other
  // status is the daemon's answer. `request` is only read during the call.
  virtual CheckResult Check(const CheckRequest& request) = 0;

  // Pipelined batch: packs the requests into as few datagrams as fit, keeps a
  // bounded number of bytes unanswered at once, and collects replies,
  // resending unanswered ones (same ids) up to `attempts` times each. Results
  // are in request order, one per request, with Check's error statuses per
  // request; a daemon that goes away fails every unanswered request. Blocks
  // until every request is answered or given up on.
  virtual std::vector<CheckResult> CheckMany(std::span<const CheckRequest> requests) = 0;

  // Blocking descriptor check (check.capnp protocol 4), resent on timeout
  // with the same request id like Check (tallyd derives each limit's check
  // id from it, so a retry is not counted twice). Assigns a request id when
  // request.request_id == 0. A datagram door may ask for a padded request
  // (a reply is at most 3x its request); the client resends it padded,
  // nothing having been counted. Errors come back in the result, never
  // thrown: kInvalidArgument, without sending, when the request does not fit
  // one datagram; kUnavailable when no answer came after all attempts, the
  // daemon is gone, or it runs without its rules doors (--grpc/--http);
  // any other status is the daemon's answer (kInvalidArgument for a bad
  // descriptor, with why). `request` is only read during the call.
  virtual DescriptorCheckResult CheckDescriptors(const DescriptorCheckRequest& request) = 0;

  // Allocates a fresh request id: the next of a sequence that starts at
  // options.first_request_id (random when 0), increasing by one and skipping
  // 0 (which would turn deduplication off). Use it to give a request an id
  // before Check when the caller itself may retry it later.
  virtual uint64_t NextRequestId() = 0;
};

// ---- Load-adaptive limits (protocol 6; docs/DESIGN.md, "Load-adaptive limits") ----

// What a backend behind an adaptive rule saw: `count` requests that the rule
// let through averaged `value` (a latency_ms rule: their mean latency in ms;
// an error_rate rule: their errors / count, 0..1). `count` must be every
// request the value covers, not a sample: the law compares it with the
// limit. `rule` is the limit's `name` in the rules of `domain`.
struct SignalReport {
  std::string domain;
  std::string rule;
  double value = 0;
  uint64_t count = 1;
};

enum class SignalReportOutcome : uint8_t {
  kNone = 0,     // not taken (see the status)
  kAccepted,     // summed by the daemon and sent on to the rule's owner
  kUnknownRule,  // no adaptive limit of that name in the daemon's rules
  kInvalid,      // value or count out of the signal's range
};

// Sends `report` to the daemon at `address` (one datagram and its answer,
// resent up to options.attempts times: a report taken twice counts twice,
// so callers that must not over-report use attempts = 1). Returns kOk with
// *outcome kAccepted; kInvalidArgument with *outcome kUnknownRule or
// kInvalid; kPermissionDenied for UDP from a non-loopback source;
// kUnavailable when the daemon could not be asked or did not answer, with
// `*error` saying why (also set for the other failures). Reentrant: it opens
// its own socket. Call it once per interval with sums, not once per request.
Status ReportSignal(const DaemonAddress& address, const ClientOptions& options,
                    const SignalReport& report, SignalReportOutcome* outcome, std::string* error);

}  // namespace tally

#endif  // TALLY_CLIENT_H_

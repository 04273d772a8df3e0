// Public value types shared by the in-process limiter, the client library and
// the daemon. Plain data: no I/O, no clocks, no threads.
//
// Invariants:
//   * A CheckResult with status != Status::kOk carries allowed == false and
//     consumed nothing.
//   * retry_after_ms == 0 iff allowed (or the request can never fit, see
//     kNeverFits).
#ifndef TALLY_TYPES_H_
#define TALLY_TYPES_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace tally {

// Wire-visible status codes. Append-only: the values are part of the wire
// contract (include/tally/check.capnp mirrors them).
enum class Status : uint16_t {
  kOk = 0,
  kInvalidArgument = 1,   // empty/oversized ids, window or limit out of range
  kOverCapacity = 2,      // the key table is full and nothing could be reclaimed
  kMalformed = 3,         // the datagram could not be decoded
  kUnsupportedVersion = 4,
  kUnavailable = 5,       // no decision could be had (client side: timeout)
  kInternal = 6,
  kPermissionDenied = 7,  // a limit write from a door or source that may not write
};

std::string_view StatusName(Status status);

// Documented input limits. Anything outside gets Status::kInvalidArgument.
inline constexpr size_t kMaxKeyBytes = 4096;  // user_id.size() + endpoint.size()
inline constexpr uint64_t kMinWindowMs = 1;
inline constexpr uint64_t kMaxWindowMs = 31ull * 24 * 3600 * 1000;  // 31 days
inline constexpr uint64_t kMaxLimit = 0xFFFFFFFFull;  // counts are 32-bit per bucket
// retry_after_ms when `hits` exceeds `limit`: the request can never fit.
inline constexpr uint64_t kNeverFits = UINT64_MAX;

// tallyd's documented defaults: UDP 127.0.0.1:7070; Unix datagram socket
// /run/tally/tally.sock when run as root, else $XDG_RUNTIME_DIR/tally/tally.sock
// (or /tmp/tally-$UID/tally.sock without XDG_RUNTIME_DIR); the seqpacket
// socket sits beside it as tally.seq.sock.
inline constexpr uint16_t kDefaultUdpPort = 7070;
std::string DefaultUnixDir();
std::string DefaultUnixPath();           // DefaultUnixDir() + "/tally.sock"
std::string DefaultUnixSeqpacketPath();  // DefaultUnixDir() + "/tally.seq.sock"
// The seqpacket socket that goes with the Unix datagram socket `unix_path`:
// "x.sock" -> "x.seq.sock", any other name gets ".seq" appended. tallyd puts
// its seqpacket socket there when --unix is given without --unix-seq, so two
// daemons with their own --unix paths never collide.
std::string UnixSeqpacketPathFor(const std::string& unix_path);

// The two clocks a node needs, read by the driver and handed in. `wall` is
// milliseconds since the Unix epoch and names sub-buckets shared across nodes;
// `monotonic` never goes back and times timeouts.
struct Instant {
  std::chrono::milliseconds wall{0};
  std::chrono::nanoseconds monotonic{0};
};

// One "may this go ahead?" question.
struct CheckRequest {
  // Client-chosen id; a retry reuses it so the daemon never counts it twice.
  // 0 means "no deduplication".
  uint64_t request_id = 0;
  std::string user_id;
  std::string endpoint;
  uint64_t limit = 0;      // at most this many hits ...
  uint64_t window_ms = 0;  // ... in any sliding interval of this length
  uint64_t hits = 1;       // 0 asks without consuming
};

// A non-owning view of a CheckRequest, used on the hot path so decoding a
// datagram allocates nothing. The views must outlive the call they are passed to.
struct CheckRequestRef {
  uint64_t request_id = 0;
  std::string_view user_id;
  std::string_view endpoint;
  uint64_t limit = 0;
  uint64_t window_ms = 0;
  uint64_t hits = 1;

  CheckRequestRef() = default;
  CheckRequestRef(const CheckRequest& r)  // NOLINT: implicit on purpose
      : request_id(r.request_id), user_id(r.user_id), endpoint(r.endpoint),
        limit(r.limit), window_ms(r.window_ms), hits(r.hits) {}
};

struct CheckResult {
  uint64_t request_id = 0;
  Status status = Status::kOk;
  bool allowed = false;
  uint64_t remaining = 0;       // hits still admissible now, after this request
  uint64_t retry_after_ms = 0;  // when this request would next fit; 0 if allowed
  uint64_t reset_after_ms = 0;  // when the window holds no counted hit again
  uint64_t limit = 0;           // the limit applied
  std::string error;            // human-readable reason when status != kOk
};

// Validates a request against the documented limits. Returns kOk or
// kInvalidArgument with `*why` set to a short reason.
Status ValidateRequest(const CheckRequestRef& request, std::string* why);

}  // namespace tally

#endif  // TALLY_TYPES_H_

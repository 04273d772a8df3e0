// Encoding and decoding of client datagrams (include/tally/check.capnp).
// Pure functions over bytes: shared by tallyd, the client library, the load
// generator and the simulator, so every path exercises the same codec.
//
// Untrusted input: Decode never throws and never asserts on bad bytes; it
// returns Status::kMalformed with a reason. Cap'n Proto's kj::Exception is
// caught here and turned into that status.
#ifndef TALLY_WIRE_CODEC_H_
#define TALLY_WIRE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <limits>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tally/types.h"

namespace tally::wire {

// Largest message we emit or accept: one UDP datagram.
inline constexpr size_t kMaxDatagramBytes = 65507;

// Fixed bytes of a message besides its list entries (segment table, root).
inline constexpr size_t kMessageOverheadBytes = 64;

enum class MessageKind {
  kChecks,
  kResponses,
  kStatusRequest,            // protocol 2
  kStatusResponse,           // protocol 2
  kOwnerRequest,             // protocol 2
  kOwnerResponse,            // protocol 2
  kPaddingRequired,          // protocol 3: padding_required_bytes()
  kDescriptorCheck,          // protocol 4: descriptor_query()
  kDescriptorCheckResponse,  // protocol 4: descriptor_report()
  kLimitWrite,               // protocol 5: limit_write()
  kLimitWriteResponse,       // protocol 5: limit_write_report()
  kSignalReport,             // protocol 6: signal_report()
  kSignalReportResponse,     // protocol 6: signal_report_report()
  kLimitGet,                 // protocol 5: limit_get()
  kLimitList,                // protocol 5: limit_list()
  kLimitOverridesResponse,   // protocol 5: limit_overrides_report()
};

// One member in a status report (check.capnp MemberInfo).
struct MemberReport {
  std::string id;
  std::string state;  // alive, suspect, dead, left
  uint64_t incarnation = 0;
  uint64_t generation = 0;
  std::string address;
  double clock_offset_ms = std::numeric_limits<double>::quiet_NaN();  // NaN: unknown
  double rtt_ms = std::numeric_limits<double>::quiet_NaN();           // NaN: unknown
  // Its Envoy rules digest as it last told the answering node: 32 hex digits,
  // kNoRulesDigest (it has no rules doors), or "" (not heard from it yet).
  std::string rules_digest{};
};
inline constexpr std::string_view kNoRulesDigest = "none";

// What `tally status` shows (check.capnp StatusResponse).
struct StatusReport {
  std::string node_id;
  uint64_t generation = 0;
  bool cluster = false;
  bool owning = true;
  std::string not_owning_reason;
  double key_share = 0;
  uint64_t live_keys = 0;
  std::string partition_policy;
  uint64_t last_known_members = 0;
  std::vector<MemberReport> members;
  bool members_truncated = false;
  std::vector<std::pair<std::string, uint64_t>> counters;  // name -> value, in order
  std::string gossip_address;
  uint64_t uptime_ms = 0;
  std::string cluster_name;
  std::string peer_auth;             // sealed | unsealed-loopback | unsealed
  std::vector<std::string> key_ids;  // the primary first
  std::string keyring_error;
  std::string rules_digest;  // Envoy rules in force (32 hex digits); "" without the doors
  std::string rules_error;   // why the last rules reload failed; "" if it did not
};

// The members whose rules differ from the answering node's, as `tally
// status`, /status.json and /metrics show them: up members (alive or
// suspect) whose digest is another one, or not heard yet (""). Members with
// no rules doors (kNoRulesDigest) resolve no rules, so they are left out; and
// nothing is listed when the answering node itself has no digest (no doors,
// or a daemon older than MemberInfo.rulesDigest). In report order.
std::vector<const MemberReport*> MembersWithOtherRules(const StatusReport& report);

// "Who decides this key?" (check.capnp OwnerRequest). Owns its strings.
struct OwnerQuery {
  std::string user_id;
  std::string endpoint;
  uint64_t window_ms = 0;
};

// The answer (check.capnp OwnerResponse).
struct OwnerReport {
  tally::Status status = tally::Status::kOk;
  std::string error;
  std::string node_id;
  std::vector<std::string> preference_list;  // owner first
  uint64_t state_hash = 0;
  bool holds_key = false;
};

// ---- protocol 4: descriptor checks (check.capnp DescriptorCheckRequest) ----

// Bounds a descriptor check is decoded within (the same as the gRPC and HTTP
// doors', daemon/rls/rls_mapping.h): more is an invalid request.
inline constexpr size_t kMaxQueryDescriptors = 64;
inline constexpr size_t kMaxQueryEntries = 16;  // per descriptor
// A result's rule name is cut to this many bytes, so that 64 results always
// fit one datagram.
inline constexpr size_t kMaxResultNameBytes = 256;

// RateLimitCode, Envoy's numbers.
enum class RateCode : uint8_t { kUnknown = 0, kOk = 1, kOverLimit = 2 };

struct QueryEntry {
  std::string key;
  std::string value;
};

struct QueryDescriptor {
  std::vector<QueryEntry> entries;
  bool has_limit = false;  // the request's own limit (an override)
  uint32_t requests_per_unit = 0;
  uint8_t unit = 0;  // RateLimitUnit's number (rules::Unit's)
};

// A descriptor check. Owns its strings.
struct DescriptorQuery {
  uint64_t request_id = 0;
  std::string domain;
  std::vector<QueryDescriptor> descriptors;
  uint32_t hits_addend = 0;  // 0 means 1
};

struct DescriptorOutcome {
  RateCode code = RateCode::kOk;
  bool has_limit = false;
  uint32_t limit = 0;  // requests per unit
  uint8_t unit = 0;    // RateLimitUnit's number
  std::string name;
  uint32_t remaining = 0;
  uint64_t retry_after_ms = 0;
  uint64_t reset_after_ms = 0;
};

// The answer (check.capnp DescriptorCheckResponse).
struct DescriptorReport {
  uint64_t request_id = 0;
  tally::Status status = tally::Status::kOk;
  std::string error;
  RateCode overall_code = RateCode::kOk;
  std::vector<DescriptorOutcome> results;  // one per request descriptor
};

// ---- protocol 5: runtime limit overrides (check.capnp LimitWriteRequest...) ----

// Bounds a limit query is decoded within: a selector's entries (as
// crdt::kMaxSelectorEntries) and a list cursor (a selector key: at most
// 33 texts of 256 bytes, length-prefixed). More is an invalid query.
inline constexpr size_t kMaxLimitSelectorEntries = 16;
inline constexpr size_t kMaxLimitCursorBytes = 16384;

// check.capnp LimitSelector (mirrors crdt::Selector; the daemon validates it).
struct LimitSelectorValue {
  bool is_key = false;  // the explicit form (user, endpoint, window)
  std::string domain;
  std::vector<std::pair<std::string, std::string>> entries;
  std::string user_id, endpoint;
  uint64_t window_ms = 0;
  friend bool operator==(const LimitSelectorValue&, const LimitSelectorValue&) = default;
};

struct LimitWriteQuery {
  uint64_t request_id = 0;
  LimitSelectorValue selector;
  bool remove = false;
  uint64_t limit = 0;
  uint8_t unit = 0;  // RateLimitUnit's number; 0: window_ms gives the window
  uint64_t window_ms = 0;
  friend bool operator==(const LimitWriteQuery&, const LimitWriteQuery&) = default;
};

enum class LimitOutcome : uint8_t { kNone = 0, kApplied, kStale, kInvalid, kFull };

struct LimitWriteReport {
  uint64_t request_id = 0;
  tally::Status status = tally::Status::kOk;
  std::string error;
  LimitOutcome outcome = LimitOutcome::kNone;
  std::string node_id;
  friend bool operator==(const LimitWriteReport&, const LimitWriteReport&) = default;
};

// ---- protocol 6: load-adaptive limits' signal reports ----

inline constexpr size_t kMaxSignalNameBytes = 256;  // domain and rule, as rules::kMaxNameBytes

struct SignalReportQuery {
  uint64_t request_id = 0;
  std::string domain, rule;
  double value = 0;
  uint64_t count = 1;  // 0 on the wire reads as 1
  friend bool operator==(const SignalReportQuery&, const SignalReportQuery&) = default;
};

enum class SignalOutcome : uint8_t { kNone = 0, kAccepted, kUnknownRule, kInvalid };

struct SignalReportReport {
  uint64_t request_id = 0;
  tally::Status status = tally::Status::kOk;
  std::string error;
  SignalOutcome outcome = SignalOutcome::kNone;
  friend bool operator==(const SignalReportReport&, const SignalReportReport&) = default;
};

struct LimitGetQuery {
  LimitSelectorValue selector;
};

struct LimitListQuery {
  std::string cursor;  // empty: from the start
};

struct LimitOverrideReport {
  LimitSelectorValue selector;
  bool removed = false;
  uint64_t limit = 0;
  uint64_t window_ms = 0;
  int64_t updated_ms = 0;
  friend bool operator==(const LimitOverrideReport&, const LimitOverrideReport&) = default;
};

// The answer to a get or a list.
struct LimitOverridesReport {
  tally::Status status = tally::Status::kOk;
  std::string error;
  std::vector<LimitOverrideReport> overrides;
  std::string next_cursor;  // empty: the last page
  std::string node_id;
  friend bool operator==(const LimitOverridesReport&, const LimitOverridesReport&) = default;
};

// Decodes one ClientMessage. Holds views into the bytes it was given: the
// bytes must stay alive and unchanged until the next Decode or destruction.
// Not thread-safe; reuse one per thread to keep its buffers warm.
class ClientMessageReader {
 public:
  // Parses `bytes`. On kOk, kind() and the accessors describe the message.
  // On any other status `*why` (if not null) says what was wrong.
  tally::Status Decode(std::span<const std::byte> bytes, std::string* why);

  MessageKind kind() const { return kind_; }
  uint16_t version() const { return version_; }
  const std::vector<CheckRequestRef>& checks() const { return checks_; }
  const std::vector<CheckResult>& responses() const { return responses_; }
  // Valid after a kOk Decode of that kind.
  const StatusReport& status_report() const { return status_; }
  const OwnerQuery& owner_query() const { return owner_query_; }
  const OwnerReport& owner_report() const { return owner_report_; }
  // kPaddingRequired: the smallest query datagram the reply needs.
  uint32_t padding_required_bytes() const { return padding_required_bytes_; }
  // kDescriptorCheck. When the query breaks a bound (kMaxQueryDescriptors,
  // kMaxQueryEntries) Decode still returns kOk, descriptor_query_error() says
  // why and the query holds only its request id: the door answers
  // invalidArgument to that id.
  const DescriptorQuery& descriptor_query() const { return descriptor_query_; }
  const std::string& descriptor_query_error() const { return descriptor_query_error_; }
  // kDescriptorCheckResponse.
  const DescriptorReport& descriptor_report() const { return descriptor_report_; }
  // kLimitWrite, kLimitGet, kLimitList. A query breaking a bound (no
  // selector or one of an unknown form, more than kMaxLimitSelectorEntries
  // entries, a cursor over kMaxLimitCursorBytes) still decodes kOk with
  // limit_query_error() saying why (a write keeps only its request id): the
  // daemon answers it invalidArgument.
  const LimitWriteQuery& limit_write() const { return limit_write_; }
  const LimitGetQuery& limit_get() const { return limit_get_; }
  const LimitListQuery& limit_list() const { return limit_list_; }
  const std::string& limit_query_error() const { return limit_query_error_; }
  // kLimitWriteResponse, kLimitOverridesResponse.
  const LimitWriteReport& limit_write_report() const { return limit_write_report_; }
  // kSignalReport (signal_report_error() non-empty: a text beyond its bound,
  // answered invalidArgument) and kSignalReportResponse.
  const SignalReportQuery& signal_report() const { return signal_report_; }
  const std::string& signal_report_error() const { return signal_report_error_; }
  const SignalReportReport& signal_report_report() const { return signal_report_report_; }
  const LimitOverridesReport& limit_overrides_report() const { return limit_overrides_report_; }

 private:
  void ClearLimits();
  MessageKind kind_ = MessageKind::kChecks;
  uint16_t version_ = 0;
  std::vector<CheckRequestRef> checks_;
  std::vector<CheckResult> responses_;
  StatusReport status_;
  OwnerQuery owner_query_;
  OwnerReport owner_report_;
  uint32_t padding_required_bytes_ = 0;
  DescriptorQuery descriptor_query_;
  std::string descriptor_query_error_;
  DescriptorReport descriptor_report_;
  LimitWriteQuery limit_write_;
  LimitGetQuery limit_get_;
  LimitListQuery limit_list_;
  std::string limit_query_error_;
  LimitWriteReport limit_write_report_;
  SignalReportQuery signal_report_;
  std::string signal_report_error_;
  SignalReportReport signal_report_report_;
  LimitOverridesReport limit_overrides_report_;
  std::vector<uint64_t> aligned_;  // scratch when the input is misaligned
};

// Encodes a batch of checks into `*out` (replacing its contents).
// REQUIRES: the encoded size fits kMaxDatagramBytes (callers split batches;
// see MaxChecksPerDatagram).
void EncodeChecks(std::span<const CheckRequestRef> checks, std::vector<std::byte>* out);

// Encodes a batch of responses into `*out` (replacing its contents).
void EncodeResponses(std::span<const CheckResult> responses, std::vector<std::byte>* out);

// Encodes a status request / an owner request into `*out`, padded to at
// least `min_bytes` (0: unpadded) for a datagram door's reply bound.
void EncodeStatusRequest(std::vector<std::byte>* out, size_t min_bytes = 0);
void EncodeOwnerRequest(const OwnerQuery& query, std::vector<std::byte>* out, size_t min_bytes = 0);

// Encodes a descriptor check, padded to at least `min_bytes` (0: unpadded).
// REQUIRES: it fits kMaxDatagramBytes (the client checks
// EncodedDescriptorQueryBound first).
void EncodeDescriptorCheck(const DescriptorQuery& query, std::vector<std::byte>* out,
                           size_t min_bytes = 0);
// Encodes the answer; names longer than kMaxResultNameBytes and errors longer
// than 512 bytes are cut.
void EncodeDescriptorCheckResponse(const DescriptorReport& report, std::vector<std::byte>* out);
// Upper bounds of the encoded sizes: of a query, and of an answer whose
// results carry names of these lengths (before cutting) and `error_bytes` of
// error text.
size_t EncodedDescriptorQueryBound(const DescriptorQuery& query);
size_t EncodedDescriptorReportBound(std::span<const size_t> name_bytes, size_t error_bytes);

// Protocol 5. The queries are padded to at least `min_bytes` (0: unpadded).
// REQUIRES: they fit kMaxDatagramBytes (selector texts within the bounds).
void EncodeLimitWrite(const LimitWriteQuery& query, std::vector<std::byte>* out,
                      size_t min_bytes = 0);
void EncodeLimitGet(const LimitGetQuery& query, std::vector<std::byte>* out, size_t min_bytes = 0);
void EncodeLimitList(const LimitListQuery& query, std::vector<std::byte>* out,
                     size_t min_bytes = 0);
// Errors longer than 512 bytes are cut.
void EncodeLimitWriteResponse(const LimitWriteReport& report, std::vector<std::byte>* out);
// Protocol 6. The query padded to at least `min_bytes` (0: unpadded).
void EncodeSignalReport(const SignalReportQuery& query, std::vector<std::byte>* out,
                        size_t min_bytes = 0);
void EncodeSignalReportResponse(const SignalReportReport& report, std::vector<std::byte>* out);
void EncodeLimitOverridesResponse(const LimitOverridesReport& report, std::vector<std::byte>* out);
// Upper bounds of encoded sizes: one override in a LimitOverridesResponse,
// and the rest of that answer (with `cursor_bytes` of cursor).
size_t EncodedLimitOverrideBound(const LimitOverrideReport& entry);
size_t EncodedLimitOverridesEnvelopeBound(const LimitOverridesReport& report, size_t cursor_bytes);

// Encodes "send the query again, at least `request_bytes` long".
void EncodePaddingRequired(uint32_t request_bytes, std::vector<std::byte>* out);

// The smallest query that a `reply_bytes` reply may answer within
// kMaxReplyFactor, with headroom for a reply that grows a little before the
// padded query arrives (a member more, longer state names).
size_t PaddedQueryBytes(size_t reply_bytes);

// Encodes a status report into `*out`. Members that would push the message
// past kMaxDatagramBytes are left out, and members_truncated is then set.
void EncodeStatusResponse(const StatusReport& report, std::vector<std::byte>* out);
void EncodeOwnerResponse(const OwnerReport& report, std::vector<std::byte>* out);

// Upper bound of the encoded size of one check with ids of these lengths,
// for splitting batches into datagrams.
size_t EncodedCheckBound(size_t user_id_bytes, size_t endpoint_bytes);

// Upper bound of the encoded size of one response carrying `error_bytes` of text.
size_t EncodedResponseBound(size_t error_bytes);

// Splits `results` into the consecutive runs that each fit one datagram when
// encoded with EncodeResponses (kMessageOverheadBytes plus each result's
// EncodedResponseBound), and calls `emit(run)` for each, in order. Empty
// `results` give one empty run: every request datagram gets an answer. A
// single result always forms a run of its own, whatever its size.
template <typename Emit>
void ForEachResponseDatagram(std::span<const CheckResult> results, Emit&& emit) {
  size_t start = 0;
  size_t bytes = kMessageOverheadBytes;
  for (size_t i = 0; i < results.size(); ++i) {
    const size_t bound = EncodedResponseBound(results[i].error.size());
    if (i > start && bytes + bound > kMaxDatagramBytes) {
      emit(results.subspan(start, i - start));
      start = i;
      bytes = kMessageOverheadBytes;
    }
    bytes += bound;
  }
  emit(results.subspan(start));
}

// A reply to a client datagram is at most this many times its size, so a
// datagram from a spoofed source is not amplified (issue 9).
inline constexpr size_t kMaxReplyFactor = 3;

// Whether one result per check of a `request_bytes` checks datagram stays
// within kMaxReplyFactor: every check our encoders write takes at least 48
// bytes and a result without error text 64, but a Cap'n Proto list may hold
// empty structs of 0 bytes each (64 KiB of them got 2.56 MB of errors back).
// When it does not, the datagram gets one error and nothing is decided.
bool ResultsFitReplyFactor(size_t checks, size_t request_bytes);

}  // namespace tally::wire

#endif  // TALLY_WIRE_CODEC_H_

// Turns one received message into reply bytes: decode, ask the Limiter, encode.
// This is glue only; every decision is the Limiter's (sans-IO core).
//
//   * checks message  -> one Limiter::CheckBatch over all its checks (each
//     shard they touch is locked once per message, not once per check),
//     results encoded in request order; split over several reply datagrams
//     if they would not fit one (clients match results by request id).
//   * undecodable / truncated message -> counted as malformed and answered
//     with ONE result {request_id 0, kMalformed or kUnsupportedVersion, reason}.
//   * `responses` message (or any other daemon -> client kind) -> counted as
//     malformed and dropped, never answered: answering it would let two
//     daemons (or a spoofed source) ping-pong error replies forever, since
//     our reply is itself a daemon -> client message.
//   * statusRequest / ownerRequest -> one statusResponse / ownerResponse,
//     from the ClusterDriver in cluster mode, else from the Limiter's stats
//     and the DaemonIdentity (a cluster of one: itself, alive, key share 1).
//     On a datagram door (UDP, Unix datagram) an answer larger than 3x the
//     query is replaced by paddingRequired: the client sends the query again,
//     padded (check.capnp, protocol 3), so forged sources gain nothing.
//   * descriptorCheck (protocol 4) -> not decided here: Handle returns
//     kForRules and the caller calls HandOverDescriptorCheck with a way to
//     send the answer later, from any thread. The rules doors (daemon/rls/,
//     reached through DescriptorDoor) resolve and decide it as they do gRPC's
//     ShouldRateLimit. A query over the decoder's bounds is answered
//     invalidArgument here; without the rules doors (neither --grpc nor
//     --http) it is answered unavailable.
//   * limitWrite / limitGet / limitList (protocol 5) -> one limitWriteResponse
//     or limitOverridesResponse (daemon/io/limit_door.h): writes go to the
//     ClusterDriver's Node, or in a single node to LocalOverrides, and only
//     from the Unix doors or a loopback UDP source (else permissionDenied);
//     a list is paged to what fits the reply bound. A single node's checks
//     get the explicit overrides' limits before the Limiter decides them.
//   * echo mode -> the received bytes, untouched.
//   * cluster mode: a checks message is not decided here; Handle returns
//     kForCluster and the caller hands the checks it decoded
//     (cluster_checks()) to the ClusterDriver, in a batch with the other
//     checks datagrams it received.
//
// Thread safety: not thread-safe; each handler owns one (it holds scratch
// buffers). The Limiter, ClusterDriver and Counters it points to are shared
// and thread-safe.
#ifndef TALLY_DAEMON_IO_MESSAGE_PROCESSOR_H_
#define TALLY_DAEMON_IO_MESSAGE_PROCESSOR_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "daemon/core/adaptive_host.h"
#include "daemon/io/counters.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/limit_door.h"
#include "daemon/io/status_trackers.h"
#include "tally/limiter.h"
#include "tally/types.h"
#include "wire/codec.h"

namespace tally::io {

class ClusterDriver;
class LocalAdaptive;
class LocalSnapshots;

// Who this daemon is, for status answers.
struct DaemonIdentity {
  std::string node_id;
  uint64_t generation = 0;              // wall ms at start
  std::chrono::nanoseconds started{0};  // monotonic time at start
  std::string udp_address;
};

// A member's rules digest as status answers show it (wire::MemberReport):
// 32 hex digits for membership::kRulesDigestBytes raw bytes, wire::
// kNoRulesDigest for none (no rules doors).
std::string RulesDigestText(std::string_view raw);
// The raw bytes of a digest of 32 hex digits; empty for anything else (the
// doors are off).
std::string RulesDigestBytes(std::string_view hex);

// The Envoy doors' rules (daemon/rls/) as status answers report them: the
// digest of the rules in force and why the last reload failed. Both empty
// while the doors are off. Set from the doors' thread, read by I/O threads.
class RulesStatus {
 public:
  // Keeps at most kMaxErrorBytes of `error` (a status answer is one datagram).
  void Set(std::string digest, std::string error);
  // Sets the report's digest and error, and the digest of the member entry
  // naming report->node_id when it has none yet (single-node answers).
  void AppendTo(wire::StatusReport* report) const;
  static constexpr size_t kMaxErrorBytes = 1024;

 private:
  mutable std::mutex mu_;
  std::string digest_;
  std::string error_;
};

// Where the Cap'n Proto doors send descriptor checks (check.capnp protocol
// 4): the rules doors' decision path (rls::RlsServer::DecideDescriptors),
// installed once they run. Thread-safe: Set may race with Decide.
class DescriptorDoor {
 public:
  // Called exactly once, maybe on another thread, maybe before Decide
  // returns: the answer, or (padding_required_bytes > 0, nothing decided)
  // "send the query again at least this long".
  using Done =
      std::function<void(const wire::DescriptorReport& report, uint32_t padding_required_bytes)>;
  // Decides `query`, which came in by `door`; an answer that could be larger
  // than `max_reply_bytes` is not decided but asks for padding.
  using Decide = std::function<void(const wire::DescriptorQuery& query, Door door,
                                    size_t max_reply_bytes, Done done)>;

  // Installs (or, with an empty function, removes) the decision path.
  void Set(Decide decide);
  // False (and `done` not called) when no decision path is installed.
  bool Forward(const wire::DescriptorQuery& query, Door door, size_t max_reply_bytes,
               Done done) const;

 private:
  mutable std::mutex mu_;
  std::shared_ptr<const Decide> decide_;
};

// What a processor answers with. Pointers are borrowed and must outlive it.
struct ProcessorContext {
  Limiter* limiter = nullptr;                // single-node decisions; null in echo and cluster mode
  ClusterDriver* cluster = nullptr;          // cluster mode
  const DaemonIdentity* identity = nullptr;  // null: status answers name "tallyd"
  bool echo = false;
  Counters* counters = nullptr;
  const RulesStatus* rules = nullptr;  // null: status answers carry no rules digest
  // Single-node mode: decisions counted by door (null: not counted).
  DoorMetrics* metrics = nullptr;
  Door door = Door::kUdp;
  // Both modes: checks messages are offered here for the status page's
  // busiest keys (daemon/io/status_trackers.h; null: not sampled).
  BusiestKeys* keys = nullptr;
  // Descriptor checks (protocol 4); null: answered unavailable.
  const DescriptorDoor* descriptors = nullptr;
  // Single-node mode: runtime limit overrides (protocol 5); null: limit
  // queries are answered unavailable. Cluster mode uses the Node's.
  LocalOverrides* overrides = nullptr;
  // Single-node mode: adaptive limits, for the adaptive_* status counters.
  LocalAdaptive* adaptive = nullptr;
  // Single-node mode with a state dir: count snapshots, for the snapshot_*
  // status counters.
  const LocalSnapshots* snapshots = nullptr;
};

// One reply datagram. `bytes` points into the processor's buffers (or, in
// echo mode, into the received message) and is valid until the next Reset().
// `tag` is the caller's, e.g. the index of the message it answers.
struct Reply {
  std::span<const std::byte> bytes;
  uint32_t tag = 0;
};

enum class Handled {
  kAnswered,    // replies (if any) were appended
  kForCluster,  // a checks message in cluster mode: hand it to the ClusterDriver
  kForRules,    // a descriptor check: call HandOverDescriptorCheck
};

// Sends one reply to the client a deferred answer belongs to; any thread.
using SendLater = std::function<void(std::span<const std::byte> bytes)>;

class MessageProcessor {
 public:
  // `limiter` may be null only when `echo` is true. Both pointers are
  // borrowed and must outlive the processor.
  MessageProcessor(Limiter* limiter, bool echo, Counters* counters);
  // REQUIRES: context.counters, and context.limiter or context.cluster unless echo.
  explicit MessageProcessor(const ProcessorContext& context);
  MessageProcessor(const MessageProcessor&) = delete;
  MessageProcessor& operator=(const MessageProcessor&) = delete;

  // Handles one message received at `now`. `truncated` means the kernel cut
  // it (it was larger than our buffer). Appends its replies (zero or more) to
  // `*replies`. `message` must stay valid until those replies are sent.
  // Limit writes are taken unless the door is UDP.
  Handled Handle(std::span<const std::byte> message, bool truncated, Instant now, uint32_t tag,
                 std::vector<Reply>* replies);
  // The same, from a UDP source that is (`source_loopback`) or is not a
  // loopback address: only the former may write limits.
  Handled Handle(std::span<const std::byte> message, bool truncated, Instant now, uint32_t tag,
                 std::vector<Reply>* replies, bool source_loopback);

  // After Handle returned kForRules for a `request_bytes` message: hands the
  // descriptor check to the DescriptorDoor; its answer (or an error) goes out
  // through `send`, now or later, from whichever thread finishes it.
  void HandOverDescriptorCheck(size_t request_bytes, SendLater send);
  // After Handle returned kForCluster: the checks it decoded, views into the
  // message (valid while the message is and until the next Handle).
  std::span<const CheckRequestRef> cluster_checks() const { return reader_.checks(); }

  // Recycles the reply buffers; invalidates every Reply handed out so far.
  void Reset() { buffers_used_ = 0; }

 private:
  std::vector<std::byte>* NextBuffer();
  void ReplyError(Status status, std::string reason, uint32_t tag, std::vector<Reply>* replies);
  void EncodeResults(uint32_t tag, std::vector<Reply>* replies);
  // Sends `*reply` (an encoded status/owner answer), or paddingRequired in
  // its place when it exceeds the reply bound of a forgeable door.
  void ReplyToQuery(size_t request_bytes, std::vector<std::byte>* reply, uint32_t tag,
                    std::vector<Reply>* replies);
  wire::OwnerReport SingleNodeOwner(const wire::OwnerQuery& query) const;
  // Protocol 5 (limit_door.h).
  void HandleSignalReport(size_t request_bytes, bool may_report, uint32_t tag,
                          std::vector<Reply>* replies);
  void HandleLimitWrite(size_t request_bytes, bool may_write, Instant now, uint32_t tag,
                        std::vector<Reply>* replies);
  void HandleLimitGet(size_t request_bytes, uint32_t tag, std::vector<Reply>* replies);
  void HandleLimitList(size_t request_bytes, uint32_t tag, std::vector<Reply>* replies);
  // Calls `read` with the override map (the Node's or LocalOverrides');
  // false when there is none (echo mode).
  template <typename Read>
  bool ReadOverrides(Read&& read);
  const std::string& NodeId() const;

  Limiter* limiter_;
  ClusterDriver* cluster_ = nullptr;
  const DaemonIdentity* identity_ = nullptr;
  const RulesStatus* rules_ = nullptr;
  bool echo_;
  Counters* counters_;
  DoorMetrics* metrics_ = nullptr;
  Door door_ = Door::kUdp;
  BusiestKeys* keys_ = nullptr;
  const DescriptorDoor* descriptors_ = nullptr;
  LocalOverrides* overrides_ = nullptr;
  LocalAdaptive* adaptive_ = nullptr;
  const LocalSnapshots* snapshots_ = nullptr;
  wire::ClientMessageReader reader_;
  std::vector<CheckResult> results_;
  std::vector<CheckRequestRef> overridden_;  // checks with overridden limits (single node)
  std::string why_;
  // A deque keeps element addresses stable as it grows.
  std::deque<std::vector<std::byte>> buffers_;
  size_t buffers_used_ = 0;
};

// Reads both clocks: wall ms since the epoch and monotonic ns. The same as
// the public tally::ReadClock() (tally/limiter.h), so the daemon and an
// embedded Limiter read time alike.
Instant ReadClock();

// The status answer of a single node (a cluster of one: itself, alive, key
// share 1) from its Limiter (null in echo mode), identity (null: "tallyd")
// and transport counters.
// `overrides` (null: none) adds the overrides_* counters, `adaptive` (null:
// none) the adaptive_* ones, `snapshots` (null: none) the snapshot_* ones.
wire::StatusReport SingleNodeStatus(const Limiter* limiter, const DaemonIdentity* identity,
                                    const Counters& counters, Instant now,
                                    const LocalOverrides* overrides = nullptr,
                                    const LocalAdaptive* adaptive = nullptr,
                                    const LocalSnapshots* snapshots = nullptr);

// The adaptive limits' status counters (adaptive_*), of a member's Node or a
// single node's LocalAdaptive.
void AppendAdaptiveCounters(const core::AdaptiveHost::Counters& host, uint64_t limits_written,
                            std::vector<std::pair<std::string, uint64_t>>* out);

// The transport counters by name, for status answers.
void AppendTransportCounters(const Counters& counters,
                             std::vector<std::pair<std::string, uint64_t>>* out);
void AppendLimiterCounters(const LimiterStats& stats,
                           std::vector<std::pair<std::string, uint64_t>>* out);

// Validates an owner query like a check (ids, window). kOk or kInvalidArgument.
Status ValidateOwnerQuery(const wire::OwnerQuery& query, std::string* why);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_MESSAGE_PROCESSOR_H_

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
//   * echo mode -> the received bytes, untouched.
//   * cluster mode: a checks message is not decided here; Handle returns
//     kForCluster and the caller hands the bytes to the ClusterDriver, in a
//     batch with the other checks datagrams it received.
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
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "daemon/io/counters.h"
#include "daemon/io/door_metrics.h"
#include "tally/limiter.h"
#include "tally/types.h"
#include "wire/codec.h"

namespace tally::io {

class ClusterDriver;

// Who this daemon is, for status answers.
struct DaemonIdentity {
  std::string node_id;
  uint64_t generation = 0;              // wall ms at start
  std::chrono::nanoseconds started{0};  // monotonic time at start
  std::string udp_address;
};

// The Envoy doors' rules (daemon/rls/) as status answers report them: the
// digest of the rules in force and why the last reload failed. Both empty
// while the doors are off. Set from the doors' thread, read by I/O threads.
class RulesStatus {
 public:
  // Keeps at most kMaxErrorBytes of `error` (a status answer is one datagram).
  void Set(std::string digest, std::string error);
  void AppendTo(wire::StatusReport* report) const;
  static constexpr size_t kMaxErrorBytes = 1024;

 private:
  mutable std::mutex mu_;
  std::string digest_;
  std::string error_;
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
};

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
  Handled Handle(std::span<const std::byte> message, bool truncated, Instant now, uint32_t tag,
                 std::vector<Reply>* replies);

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

  Limiter* limiter_;
  ClusterDriver* cluster_ = nullptr;
  const DaemonIdentity* identity_ = nullptr;
  const RulesStatus* rules_ = nullptr;
  bool echo_;
  Counters* counters_;
  DoorMetrics* metrics_ = nullptr;
  Door door_ = Door::kUdp;
  wire::ClientMessageReader reader_;
  std::vector<CheckResult> results_;
  std::string why_;
  // A deque keeps element addresses stable as it grows.
  std::deque<std::vector<std::byte>> buffers_;
  size_t buffers_used_ = 0;
};

// Reads both clocks: wall ms since the epoch and monotonic ns.
Instant ReadClock();

// The status answer of a single node (a cluster of one: itself, alive, key
// share 1) from its Limiter (null in echo mode), identity (null: "tallyd")
// and transport counters.
wire::StatusReport SingleNodeStatus(const Limiter* limiter, const DaemonIdentity* identity,
                                    const Counters& counters, Instant now);

// The transport counters by name, for status answers.
void AppendTransportCounters(const Counters& counters,
                             std::vector<std::pair<std::string, uint64_t>>* out);
void AppendLimiterCounters(const LimiterStats& stats,
                           std::vector<std::pair<std::string, uint64_t>>* out);

// Validates an owner query like a check (ids, window). kOk or kInvalidArgument.
Status ValidateOwnerQuery(const wire::OwnerQuery& query, std::string* why);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_MESSAGE_PROCESSOR_H_

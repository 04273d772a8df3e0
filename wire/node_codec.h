// Plain C++ forms of the node messages in wire/node.capnp and their
// conversion to and from Cap'n Proto. Reading never throws: the caller wraps
// reads in the peer codec, which turns kj::Exception into Status::kMalformed.
#ifndef TALLY_WIRE_NODE_CODEC_H_
#define TALLY_WIRE_NODE_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "tally/types.h"
#include "wire/node.capnp.h"

namespace tally::wire {

struct SlotValue {
  std::string node_id;
  uint64_t generation = 0;
  friend bool operator==(const SlotValue&, const SlotValue&) = default;
};

struct CounterValue {
  uint64_t key_high = 0;
  uint64_t key_low = 0;
  uint32_t bucket_ms = 0;
  uint16_t span = 0;
  int64_t newest_bucket = 0;
  struct Row {
    uint16_t slot = 0;             // index into ReplicateValue::slots
    std::vector<uint32_t> counts;  // newest - span .. newest
  };
  std::vector<Row> rows;
};

struct ReplicateValue {
  uint64_t seq = 0;
  std::vector<SlotValue> slots;
  std::vector<CounterValue> counters;
};

// ReplicateDelta: cells of the sender's own slot, each with its value.
struct DeltaCellValue {
  uint64_t key_high = 0;
  uint64_t key_low = 0;
  int64_t bucket = 0;
  uint32_t count = 0;
  uint32_t bucket_ms = 0;
  uint16_t span = 0;
  friend bool operator==(const DeltaCellValue&, const DeltaCellValue&) = default;
};

struct ReplicateDeltaValue {
  uint64_t seq = 0;
  SlotValue slot;
  std::vector<DeltaCellValue> cells;  // absolute buckets, however they travel
  // Protocol version 4: give the buckets relative to the earliest cell's
  // (ReplicateDelta.relativeBuckets) where they can be, absolute otherwise
  // (fewer than kMinRelativeDeltaCells cells, a negative bucket, offsets past
  // 32 bits). Set by the reader when the message was relative, so a read
  // message re-encodes relative, to the same cells (its base is recomputed:
  // the earliest cell's start, whatever base the sender chose).
  bool relative_buckets = false;
  // Protocol version 5: send the cells compact (ReplicateDelta.compactCells:
  // 3 words a cell) where they can be: when they travel relative, no offset
  // passes 16 bits and they have at most kMaxCompactGeometries geometries.
  // Set by the reader when the message was compact. REQUIRES:
  // relative_buckets too.
  bool compact_cells = false;
};
// Packed, the base and the flag cost ~7 bytes a message more than absolute
// buckets; a relative cell saves ~3.5. Fewer cells than this go absolute.
inline constexpr size_t kMinRelativeDeltaCells = 3;
inline constexpr size_t kMaxCompactGeometries = 256;  // CompactCell.geometry is 8 bits

struct ForwardValue {
  uint64_t forward_id = 0;
  uint8_t hops = 1;
  tally::CheckRequest check;
};

struct ForwardResultValue {
  uint64_t forward_id = 0;
  tally::CheckResult result;
};

// One runtime limit override as it crosses the wire (mirrors
// crdt::OverrideEntry; the node converts and validates it).
struct LimitOverrideValue {
  uint8_t kind = 0;
  std::string domain;
  std::vector<std::pair<std::string, std::string>> entries;
  std::string user, endpoint;
  uint64_t selector_window_ms = 0;
  bool removed = false;
  uint64_t limit = 0;
  uint64_t window_ms = 0;
  int64_t stamp_wall_ms = 0;
  uint32_t stamp_logical = 0;
  uint64_t writer = 0;
  std::string rule;  // kind 3
  friend bool operator==(const LimitOverrideValue&, const LimitOverrideValue&) = default;
};

// AdaptiveReport: one adaptive rule's summed reports.
struct AdaptiveReportValue {
  std::string domain, rule;
  double sum = 0;
  uint64_t count = 0;
  double max = 0;
  friend bool operator==(const AdaptiveReportValue&, const AdaptiveReportValue&) = default;
};

struct NodeMessageValue {
  enum class Kind {
    kForward,
    kForwardReply,
    kReplicate,
    kReplicateAck,
    kDigest,
    kStatePush,
    kHandoffRequest,
    kHandoffDone,
    kOverrides,
    kAdaptiveReports,
    kReplicateDelta
  };
  Kind kind = Kind::kForward;
  std::vector<ForwardValue> forwards;
  // kForward, protocol version 5: an item whose endpoint an earlier item of
  // the message carries refers to it (ForwardedCheck.endpointOfItem) instead
  // of carrying it again. Set by the reader when any item referred.
  bool shared_endpoints = false;
  std::vector<ForwardResultValue> results;
  ReplicateValue replicate;   // kReplicate and kStatePush
  ReplicateDeltaValue delta;  // kReplicateDelta
  uint64_t ack_seq = 0;
  // kReplicateAck: when not empty, the seqs acknowledged (replicateAcks,
  // protocol version 4) and ack_seq unused; empty: ack_seq alone.
  std::vector<uint64_t> ack_seqs;
  std::vector<uint64_t> digest;
  bool digest_is_reply = false;
  bool digest_keys_paused = false;                    // kDigest: no key repairs either way
  uint64_t overrides_digest = 0;                      // kDigest
  std::vector<LimitOverrideValue> overrides;          // kOverrides
  std::vector<AdaptiveReportValue> adaptive_reports;  // kAdaptiveReports
};

// Decoder bounds: a message beyond any of them is malformed (dropped and
// counted by the receiver), whoever sent it. Each is far above what an
// honest sender produces (docs/DESIGN.md, "Validating peer state").
inline constexpr size_t kMaxForwardsPerMessage = 1024;  // a datagram holds ~20
// The user ids and endpoints of a forward list, references resolved: an
// honest sender splits its forwards into datagrams by their size without
// references (EncodedForwardBound), so a list never resolves to more than a
// datagram; the bound keeps references from multiplying a small message.
inline constexpr size_t kMaxForwardKeyBytesPerMessage = 64 * 1024;
inline constexpr size_t kMaxResultsPerMessage = 1024;
inline constexpr size_t kMaxSlotsPerMessage = 4096;       // distinct replica slots
inline constexpr size_t kMaxCountersPerMessage = 16384;   // a 256 KiB push holds ~4000
inline constexpr size_t kMaxDeltaCellsPerMessage = 4096;  // a datagram holds ~30
inline constexpr size_t kMaxRowsPerCounter = 255;         // crdt::kMaxMergedRows
inline constexpr size_t kMaxSpan = 1000;                  // buckets_per_window <= 1000
inline constexpr size_t kMaxDigestRanges = 1024;          // 64 today
inline constexpr size_t kMaxSlotIdBytes = 255;            // member ids
inline constexpr size_t kMaxResultErrorBytes = 1024;
inline constexpr size_t kMaxOverridesPerMessage = 4096;       // LimitOverrides::kMaxEntries
inline constexpr size_t kMaxOverrideTextBytes = 256;          // crdt::kMaxSelectorText
inline constexpr size_t kMaxOverrideEntries = 16;             // crdt::kMaxSelectorEntries
inline constexpr size_t kMaxAdaptiveReportsPerMessage = 256;  // rules::kMaxAdaptiveLimits
inline constexpr size_t kMaxAcksPerMessage = 1024;            // a datagram holds ~150
// A result's retry_after_ms / reset_after_ms beyond this (and not
// kNeverFits) is nonsense: an honest one is at most about a window plus the
// clock-offset allowance for buckets ahead of now.
inline constexpr uint64_t kMaxResultDelayMs = 3 * tally::kMaxWindowMs;

void BuildNodeMessage(const NodeMessageValue& value, NodeMessage::Builder builder);
// Returns false (with *why) for content that decodes but makes no sense.
// May throw kj::Exception on malformed bytes: call inside the peer codec's try.
bool ReadNodeMessage(NodeMessage::Reader reader, NodeMessageValue* value, std::string* why);

// Rough encoded sizes, for keeping datagrams under the packet budget.
size_t EncodedCounterBound(const CounterValue& counter);
// A ReplicateDelta cell (a composite list element of 5 words).
inline constexpr size_t kEncodedDeltaCellBytes = 40;
size_t EncodedForwardBound(const tally::CheckRequest& check);
inline constexpr size_t kEncodedForwardResultBound = 96;
size_t EncodedOverrideBound(const LimitOverrideValue& value);
size_t EncodedAdaptiveReportBound(const AdaptiveReportValue& value);

}  // namespace tally::wire

#endif  // TALLY_WIRE_NODE_CODEC_H_

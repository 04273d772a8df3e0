// Encoding and decoding of peer messages (wire/peer.capnp) to and
// from membership::SwimMessage values. Pure functions over bytes, shared by
// tallyd and the simulator so both exercise the same codec.
//
// Untrusted input: PeerMessageReader::Decode never throws and never asserts
// on bad bytes; it returns Status::kMalformed with a reason (kj::Exception is
// caught here), or kUnsupportedVersion for a union member it does not know.
// Decoding checks the encoding only; membership::Swim validates the content.
#ifndef TALLY_WIRE_PEER_CODEC_H_
#define TALLY_WIRE_PEER_CODEC_H_

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "membership/message.h"
#include "tally/types.h"
#include "wire/node_codec.h"

namespace tally::wire {

// Largest peer message accepted: a stream frame holding a push-pull of a
// large table. Datagrams are bounded by kMaxDatagramBytes (wire/codec.h).
inline constexpr size_t kMaxPeerMessageBytes = 32u << 20;
// More list entries than this in one message is hostile.
inline constexpr size_t kMaxPeerListEntries = 1u << 17;
// Rumors piggybacked on one datagram: a 1400-byte packet carries ~30.
inline constexpr size_t kMaxPiggybackUpdates = 1024;

// Encodes `msg` into `*out` (replacing its contents). The size never exceeds
// membership::EstimatedEncodedBytes(msg) (tests/wire/peer_codec_test.cc).
void EncodeSwim(const membership::SwimMessage& msg, std::vector<std::byte>* out);

// Packed node messages (protocol version 3). A node message may travel as the
// byte kPackedMarker followed by its PeerMessage in Cap'n Proto's packed
// encoding (zero bytes left out: forwards, their answers and replication
// deltas shrink by 30-55%). The sender packs only for a member whose
// messages carry version kPackedSinceVersion or later; every version decodes
// unpacked messages, which start with 0x00 (one segment) or a small segment
// count, and sealed ones start with 0xA1 (daemon/io/peer_seal.h).
// Membership messages stay unpacked: any version reads them, and Swim packs
// datagrams by their unpacked size.
inline constexpr std::byte kPackedMarker{0xB1};
inline constexpr uint16_t kPackedSinceVersion = 3;
// Replication deltas with relative buckets (ReplicateDeltaValue::
// relative_buckets) go only to members whose messages carry this version or
// later: an older one would read every bucket as zero.
inline constexpr uint16_t kRelativeBucketsSinceVersion = 4;
// The acknowledgements of one batch of input travel as one message
// (NodeMessageValue::ack_seqs) only to members that say this version or later.
inline constexpr uint16_t kAckListsSinceVersion = 4;
// Forwards that refer to an earlier item's endpoint (NodeMessageValue::
// shared_endpoints) and compact delta cells (ReplicateDeltaValue::
// compact_cells) go only to members that say this version or later: an older
// one would read a missing endpoint or a delta without cells.
inline constexpr uint16_t kSharedEndpointsSinceVersion = 5;
inline constexpr uint16_t kCompactCellsSinceVersion = 5;
// A packed message unpacks to at most kMaxUnpackRatio times its size plus
// kUnpackAllowanceBytes (and kMaxPeerMessageBytes): the work a small
// datagram can ask for stays proportional to it. EncodeNodeMessage sends
// unpacked anything that would unpack larger (runs of zeros that long do not
// occur in node messages, whose keys are hashes).
inline constexpr size_t kMaxUnpackRatio = 64;
inline constexpr size_t kUnpackAllowanceBytes = 64u << 10;

// Who sends a node message (the PeerMessage header fields).
struct PeerHeader {
  std::string sender_id;
  std::string sender_address;
  uint64_t sender_generation = 0;
  int64_t sender_wall_ms = 0;
};

// Encodes a node message (forward, replicate, ...) as a PeerMessage, packed
// (see kPackedMarker) when `packed`.
void EncodeNodeMessage(const PeerHeader& header, const NodeMessageValue& msg,
                       std::vector<std::byte>* out, bool packed = false);

// Decodes one PeerMessage. Holds a view of the bytes it was given (so readers
// of body kinds appended later, e.g. node messages, can parse them): the bytes
// must stay alive and unchanged until the next Decode or destruction.
// Not thread-safe; reuse one per thread to keep its buffers warm.
class PeerMessageReader {
 public:
  // Parses `bytes`, packed (kPackedMarker) or not. kOk: the header accessors are set, and is_swim()
  // says whether the body is a membership message, decoded in full into swim(). A body this build
  // does not know is kOk with is_swim() false. Any other status: `*why` (if not null) says what was
  // wrong. Updates with a MemberState this build does not know are dropped (dropped_updates()), the
  // rest of the message is kept.
  tally::Status Decode(std::span<const std::byte> bytes, std::string* why);

  // The same, into `*msg` (replaced); a body that is not a membership
  // message gives kUnsupportedVersion.
  tally::Status Decode(std::span<const std::byte> bytes, membership::SwimMessage* msg,
                       std::string* why);

  bool is_swim() const { return is_swim_; }
  // After a kOk Decode that is not membership: true when it is a node message.
  bool is_node() const { return is_node_; }
  // Reads the node message of the last Decode (its bytes must still be alive).
  // Returns false with *why on malformed or nonsensical content; never throws.
  bool ReadNode(NodeMessageValue* msg, std::string* why);
  // The decoded message (header included). Valid after a kOk Decode with
  // is_swim(); a later Decode may reuse it.
  const membership::SwimMessage& swim() const { return swim_; }
  membership::SwimMessage& mutable_swim() { return swim_; }
  uint16_t version() const { return swim_.version; }
  const std::string& sender_id() const { return swim_.sender_id; }
  const std::string& sender_address() const { return swim_.sender_address; }
  uint64_t sender_generation() const { return swim_.sender_generation; }
  int64_t sender_wall_ms() const { return swim_.sender_wall_ms; }
  size_t dropped_updates() const { return dropped_updates_; }

 private:
  membership::SwimMessage swim_;
  bool is_swim_ = false;
  bool is_node_ = false;
  const void* words_ = nullptr;  // the last message's aligned words
  size_t word_count_ = 0;
  std::span<const std::byte> bytes_;  // the last message decoded (a view)
  std::vector<uint64_t> aligned_;     // scratch when the input is misaligned, or packed
  size_t dropped_updates_ = 0;
};

}  // namespace tally::wire

#endif  // TALLY_WIRE_PEER_CODEC_H_

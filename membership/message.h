// The SWIM messages as plain values. membership/ speaks only these structs;
// wire/peer_codec.h turns them into Cap'n Proto bytes (wire/peer.capnp)
// and back, so the core never sees bytes and the codec never sees state.
//
// Everything in a SwimMessage came from the network and is untrusted: Swim
// validates every field before it touches its table.
#ifndef TALLY_MEMBERSHIP_MESSAGE_H_
#define TALLY_MEMBERSHIP_MESSAGE_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace tally::membership {

// Wire-visible (peer.capnp mirrors it); append-only. The order is also the
// precedence among rumors of equal (generation, incarnation): see
// member_table.h.
enum class MemberState : uint8_t { kAlive = 0, kSuspect = 1, kDead = 2, kLeft = 3 };
inline constexpr int kMemberStateCount = 4;

std::string_view StateName(MemberState state);

// A rumor: "member `id` (at `address`, process `generation`) is in `state` as
// of `incarnation`". `origin` names who asserted a suspect or dead state (the
// Lifeguard confirmations count distinct origins); empty for alive and left.
struct MemberUpdate {
  std::string id;
  std::string address;  // "ip:port" of the member's gossip socket
  uint64_t generation = 0;
  uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  std::string origin;
  friend bool operator==(const MemberUpdate&, const MemberUpdate&) = default;
};

// "Are you alive?" `target_id` is who the sender believes listens at the
// address; anyone else there must not answer (the address may have been reused).
struct Ping {
  uint64_t seq = 0;
  std::string target_id;
  // The sender's rules digest (kRulesDigestBytes, or empty: it has no rules
  // doors). Opaque to membership: see Swim::SetRulesDigest.
  std::string rules_digest{};
  // The sender's up set, hashed (Swim::view_digest); 0 from senders without it.
  uint64_t view_digest = 0;
  friend bool operator==(const Ping&, const Ping&) = default;
};
// The answer to a Ping, or an indirect prober relaying one (same seq as the
// PingReq it answers).
struct Ack {
  uint64_t seq = 0;
  std::string rules_digest{};  // the sender's (not a relayed target's), as on Ping
  uint64_t view_digest = 0;    // the sender's, as on Ping
  friend bool operator==(const Ack&, const Ack&) = default;
};
// "Please ping `target_id` at `target_address` for me and relay the ack."
struct PingReq {
  uint64_t seq = 0;
  std::string target_id;
  std::string target_address;
  bool want_nack = true;  // Lifeguard: answer Nack when the target is silent
  friend bool operator==(const PingReq&, const PingReq&) = default;
};
// Lifeguard: "I asked the target for you and heard nothing", which tells the
// requester that the requester itself is healthy.
struct Nack {
  uint64_t seq = 0;
  friend bool operator==(const Nack&, const Nack&) = default;
};
// A rules digest on the wire: 16 bytes (docs/ENVOY.md, "Hot reload").
inline constexpr size_t kRulesDigestBytes = 16;

// Carries only piggybacked rumors.
struct Gossip {
  friend bool operator==(const Gossip&, const Gossip&) = default;
};
// Full-state anti-entropy. Travels over a stream (TCP) in the daemon because
// it is large; the receiver merges and, unless `reply`, answers with its own.
struct PushPull {
  bool reply = false;
  bool join = false;  // sent at start to a seed
  std::vector<MemberUpdate> members;
  friend bool operator==(const PushPull&, const PushPull&) = default;
};

using SwimBody = std::variant<Ping, Ack, PingReq, Nack, Gossip, PushPull>;

enum class SwimKind : uint8_t { kPing, kAck, kPingReq, kNack, kGossip, kPushPull };
inline constexpr int kSwimKindCount = 6;
std::string_view KindName(SwimKind kind);

// The peer protocol version this build speaks (wire/peer.capnp's
// protocolVersion; wire/peer_codec.cc asserts they agree).
inline constexpr uint16_t kSwimProtocolVersion = 5;

struct SwimMessage {
  uint16_t version = kSwimProtocolVersion;
  std::string sender_id;
  std::string sender_address;
  uint64_t sender_generation = 0;
  // The sender's own incarnation. A message from a member is first-hand
  // evidence that it is alive at (generation, incarnation), so a receiver
  // that missed the member's refutation catches up on its next message.
  uint64_t sender_incarnation = 0;
  int64_t sender_wall_ms = 0;  // the sender's wall clock when it sent this
  SwimBody body;
  std::vector<MemberUpdate> piggyback;  // rumors riding along (not on PushPull)

  SwimKind kind() const { return static_cast<SwimKind>(body.index()); }
  friend bool operator==(const SwimMessage&, const SwimMessage&) = default;
};

// One message for the driver to send.
struct Outbound {
  std::string to_address;
  SwimMessage msg;
  bool stream = false;  // push-pull: prefer a stream (TCP); else one datagram
};

// Upper bounds of the Cap'n Proto encoding (wire/peer_codec.h) of a message
// and of one piggybacked update, so Swim can fill packets up to
// max_packet_bytes without encoding. tests/wire/peer_codec_test.cc checks
// that the real encoding never exceeds these.
size_t EstimatedEncodedBytes(const SwimMessage& msg);
size_t EstimatedUpdateBytes(const MemberUpdate& update);
// Extra bytes the first piggybacked update costs besides its own size.
inline constexpr size_t kPiggybackListOverheadBytes = 8;

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_MESSAGE_H_

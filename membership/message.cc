#include "membership/message.h"

namespace tally::membership {
namespace {

constexpr size_t kWordBytes = 8;

// A Text field: NUL-terminated, padded to words; an empty one is a null pointer.
size_t TextBytes(const std::string& s) {
  if (s.empty()) return 0;
  return (s.size() + 1 + kWordBytes - 1) / kWordBytes * kWordBytes;
}

// A Data field: padded to words; an empty one is a null pointer.
size_t DataBytes(const std::string& s) {
  return (s.size() + kWordBytes - 1) / kWordBytes * kWordBytes;
}

// Mirrors wire/peer.capnp's layout: struct sizes in words are
// (data words + pointer words). Kept a little generous so fields appended
// later do not silently break the bound before the codec test notices.
constexpr size_t kFramingBytes = 8 + 8;                          // segment table + root pointer
constexpr size_t kPeerMessageBytes = (4 + 4) * kWordBytes + 16;  // + slack
constexpr size_t kUpdateFixedBytes = (3 + 3) * kWordBytes;

size_t BodyBytes(const SwimBody& body) {
  struct Visitor {
    size_t operator()(const Ping& p) const {
      return 4 * kWordBytes + TextBytes(p.target_id) + DataBytes(p.rules_digest);
    }
    size_t operator()(const Ack& a) const { return 3 * kWordBytes + DataBytes(a.rules_digest); }
    size_t operator()(const PingReq& p) const {
      return 4 * kWordBytes + TextBytes(p.target_id) + TextBytes(p.target_address);
    }
    size_t operator()(const Nack&) const { return kWordBytes; }
    size_t operator()(const Gossip&) const { return 0; }
    size_t operator()(const PushPull& p) const {
      size_t n = 2 * kWordBytes + kPiggybackListOverheadBytes;
      for (const auto& u : p.members) n += EstimatedUpdateBytes(u);
      return n;
    }
  };
  return std::visit(Visitor{}, body);
}

}  // namespace

std::string_view StateName(MemberState state) {
  switch (state) {
    case MemberState::kAlive:
      return "alive";
    case MemberState::kSuspect:
      return "suspect";
    case MemberState::kDead:
      return "dead";
    case MemberState::kLeft:
      return "left";
  }
  return "unknown";
}

std::string_view KindName(SwimKind kind) {
  switch (kind) {
    case SwimKind::kPing:
      return "ping";
    case SwimKind::kAck:
      return "ack";
    case SwimKind::kPingReq:
      return "ping-req";
    case SwimKind::kNack:
      return "nack";
    case SwimKind::kGossip:
      return "gossip";
    case SwimKind::kPushPull:
      return "push-pull";
  }
  return "unknown";
}

size_t EstimatedUpdateBytes(const MemberUpdate& u) {
  return kUpdateFixedBytes + TextBytes(u.id) + TextBytes(u.address) + TextBytes(u.origin);
}

size_t EstimatedEncodedBytes(const SwimMessage& msg) {
  size_t n = kFramingBytes + kPeerMessageBytes + TextBytes(msg.sender_id) +
             TextBytes(msg.sender_address) + BodyBytes(msg.body);
  if (!msg.piggyback.empty()) {
    n += kPiggybackListOverheadBytes;
    for (const auto& u : msg.piggyback) n += EstimatedUpdateBytes(u);
  }
  return n;
}

}  // namespace tally::membership

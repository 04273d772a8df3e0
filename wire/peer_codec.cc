#include "wire/peer_codec.h"

#include <capnp/message.h>
#include <capnp/serialize-packed.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <variant>

#include "wire/codec.h"
#include "wire/peer.capnp.h"

namespace tally::wire {
namespace {

namespace m = tally::membership;
constexpr size_t kWordBytes = sizeof(capnp::word);

static_assert(static_cast<uint16_t>(peer::MemberState::LEFT) ==
              static_cast<uint16_t>(m::MemberState::kLeft));
static_assert(m::kMemberStateCount == 4, "map new states in the codec");

std::string ToString(capnp::Text::Reader text) { return std::string(text.begin(), text.size()); }

// Byte-exact, embedded NULs included (Swim rejects those, the codec does not
// judge). Empty strings are left unset: a null pointer reads back as "" and
// costs nothing, which membership::EstimatedEncodedBytes counts on.
capnp::Text::Reader TextOf(const std::string& s) {
  return capnp::Text::Reader(s.c_str(), s.size());
}

// Any length: Swim judges the content (a digest of the wrong length is ignored).
capnp::Data::Reader DataOf(const std::string& s) {
  return capnp::Data::Reader(reinterpret_cast<const kj::byte*>(s.data()), s.size());
}
std::string ToString(capnp::Data::Reader data) {
  return std::string(reinterpret_cast<const char*>(data.begin()), data.size());
}

template <typename Builder>
void WriteUpdate(const m::MemberUpdate& u, Builder b) {
  if (!u.id.empty()) b.setId(TextOf(u.id));
  if (!u.address.empty()) b.setAddress(TextOf(u.address));
  b.setGeneration(u.generation);
  b.setIncarnation(u.incarnation);
  b.setState(static_cast<peer::MemberState>(static_cast<uint16_t>(u.state)));
  if (!u.origin.empty()) b.setOrigin(TextOf(u.origin));
}

void WriteUpdates(const std::vector<m::MemberUpdate>& updates,
                  capnp::List<peer::MemberUpdate>::Builder list) {
  for (size_t i = 0; i < updates.size(); ++i)
    WriteUpdate(updates[i], list[static_cast<unsigned>(i)]);
}

// Returns false (and sets *why) when the list is longer than `max_entries`.
bool ReadUpdates(capnp::List<peer::MemberUpdate>::Reader list, std::vector<m::MemberUpdate>* out,
                 size_t* dropped, std::string* why, size_t max_entries = kMaxPeerListEntries) {
  if (list.size() > max_entries) {
    *why = "too many member updates";
    return false;
  }
  out->reserve(list.size());
  for (auto u : list) {
    const auto state = static_cast<uint16_t>(u.getState());
    if (state >= m::kMemberStateCount) {
      ++*dropped;  // a state from a newer protocol: skip just this rumor
      continue;
    }
    m::MemberUpdate v;
    v.id = ToString(u.getId());
    v.address = ToString(u.getAddress());
    v.generation = u.getGeneration();
    v.incarnation = u.getIncarnation();
    v.state = static_cast<m::MemberState>(state);
    v.origin = ToString(u.getOrigin());
    out->push_back(std::move(v));
  }
  return true;
}

// Cap'n Proto's packed encoding undone into `*out`, within `max_words`
// (capnp offers no bounded flat unpacking: its packed reader allocates what
// the stream's segment table declares). Each tag byte says which bytes of
// the next word follow; tag 0x00 is followed by a count of further zero
// words, tag 0xFF by a count of words copied verbatim.
bool Unpack(std::span<const std::byte> in, size_t max_words, std::vector<uint64_t>* out,
            std::string* why) {
  out->clear();
  auto byte_at = [&in](size_t i) { return static_cast<uint8_t>(in[i]); };
  size_t i = 0;
  while (i < in.size()) {
    if (out->size() >= max_words) {
      *why = "packed message unpacks too large";
      return false;
    }
    const uint8_t tag = byte_at(i++);
    uint8_t word[kWordBytes] = {};
    for (size_t b = 0; b < kWordBytes; ++b) {
      if ((tag & (1u << b)) == 0) continue;
      if (i >= in.size()) {
        *why = "packed message truncated";
        return false;
      }
      word[b] = byte_at(i++);
    }
    uint64_t value = 0;
    std::memcpy(&value, word, sizeof(value));
    out->push_back(value);
    if (tag != 0x00 && tag != 0xFF) continue;
    if (i >= in.size()) {
      *why = "packed message truncated";
      return false;
    }
    const size_t run = byte_at(i++);
    if (out->size() + run > max_words) {
      *why = "packed message unpacks too large";
      return false;
    }
    if (tag == 0x00) {
      out->resize(out->size() + run, 0);
      continue;
    }
    if (in.size() - i < run * kWordBytes) {
      *why = "packed message truncated";
      return false;
    }
    const size_t at = out->size();
    out->resize(at + run);
    std::memcpy(out->data() + at, in.data() + i, run * kWordBytes);
    i += run * kWordBytes;
  }
  if (out->empty()) {
    *why = "empty packed message";
    return false;
  }
  return true;
}

void Flatten(capnp::MessageBuilder& builder, std::vector<std::byte>* out) {
  size_t words = capnp::computeSerializedSizeInWords(builder);
  out->resize(words * kWordBytes);
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out->data()), out->size()));
  capnp::writeMessage(stream, builder);
}

// A scratch first segment so datagram-sized messages build without malloc.
// Larger messages (push-pull) simply continue in heap segments.
thread_local capnp::word scratch_segment[16384 / kWordBytes];

size_t TextWords(const std::string& s) { return s.empty() ? 0 : (s.size() + 1 + 7) / 8; }
size_t DataWords(const std::string& s) { return (s.size() + 7) / 8; }

// Words the message needs (an upper bound), so one segment holds it all: a
// multi-segment message is larger (segment table, far pointers, the unused
// tail of each segment) and would break EstimatedEncodedBytes.
size_t WordsNeeded(const m::SwimMessage& msg) {
  size_t words = 32 + TextWords(msg.sender_id) + TextWords(msg.sender_address);
  auto add = [&words](const std::vector<m::MemberUpdate>& updates) {
    words += 1;
    for (const auto& u : updates) {
      words += 6 + TextWords(u.id) + TextWords(u.address) + TextWords(u.origin);
    }
  };
  add(msg.piggyback);
  if (const auto* p = std::get_if<m::PushPull>(&msg.body)) add(p->members);
  if (const auto* p = std::get_if<m::Ping>(&msg.body)) {
    words += TextWords(p->target_id) + DataWords(p->rules_digest);
  }
  if (const auto* a = std::get_if<m::Ack>(&msg.body)) words += DataWords(a->rules_digest);
  if (const auto* p = std::get_if<m::PingReq>(&msg.body)) {
    words += TextWords(p->target_id) + TextWords(p->target_address);
  }
  return words;
}

// Struct entries in a node message: every one an honest sender of any
// protocol version writes takes at least one word of the message.
size_t StructEntries(const NodeMessageValue& msg) {
  size_t entries = msg.forwards.size() + msg.results.size() + msg.replicate.slots.size() +
                   msg.replicate.counters.size() + msg.delta.cells.size() + msg.overrides.size() +
                   msg.adaptive_reports.size();
  for (const CounterValue& counter : msg.replicate.counters) entries += counter.rows.size();
  for (const LimitOverrideValue& entry : msg.overrides) entries += entry.entries.size();
  return entries;
}

}  // namespace

static_assert(membership::kSwimProtocolVersion == peer::PROTOCOL_VERSION,
              "membership and the peer schema disagree on the protocol version");

void EncodeSwim(const m::SwimMessage& msg, std::vector<std::byte>* out) {
  const size_t words = WordsNeeded(msg);
  std::optional<capnp::MallocMessageBuilder> message;
  if (words <= std::size(scratch_segment)) {
    message.emplace(kj::arrayPtr(scratch_segment, std::size(scratch_segment)));
  } else {
    message.emplace(static_cast<unsigned>(words));
  }
  capnp::MessageBuilder& builder = *message;
  auto root = builder.initRoot<peer::PeerMessage>();
  root.setVersion(msg.version);
  if (!msg.sender_id.empty()) root.setSenderId(TextOf(msg.sender_id));
  if (!msg.sender_address.empty()) root.setSenderAddress(TextOf(msg.sender_address));
  root.setSenderGeneration(msg.sender_generation);
  root.setSenderIncarnation(msg.sender_incarnation);
  root.setSenderWallMs(msg.sender_wall_ms);
  struct Visitor {
    peer::PeerMessage::Builder root;
    void operator()(const m::Ping& p) {
      auto b = root.initPing();
      b.setSeq(p.seq);
      if (!p.target_id.empty()) b.setTargetId(TextOf(p.target_id));
      if (!p.rules_digest.empty()) b.setRulesDigest(DataOf(p.rules_digest));
      b.setViewDigest(p.view_digest);
    }
    void operator()(const m::Ack& a) {
      auto b = root.initAck();
      b.setSeq(a.seq);
      if (!a.rules_digest.empty()) b.setRulesDigest(DataOf(a.rules_digest));
      b.setViewDigest(a.view_digest);
    }
    void operator()(const m::PingReq& p) {
      auto b = root.initPingReq();
      b.setSeq(p.seq);
      if (!p.target_id.empty()) b.setTargetId(TextOf(p.target_id));
      if (!p.target_address.empty()) b.setTargetAddress(TextOf(p.target_address));
      b.setWantNack(p.want_nack);
    }
    void operator()(const m::Nack& n) { root.initNack().setSeq(n.seq); }
    void operator()(const m::Gossip&) { root.initGossip(); }
    void operator()(const m::PushPull& p) {
      auto b = root.initPushPull();
      b.setReply(p.reply);
      b.setJoin(p.join);
      WriteUpdates(p.members, b.initMembers(static_cast<unsigned>(p.members.size())));
    }
  };
  std::visit(Visitor{root}, msg.body);
  if (!msg.piggyback.empty()) {
    WriteUpdates(msg.piggyback, root.initPiggyback(static_cast<unsigned>(msg.piggyback.size())));
  }
  Flatten(builder, out);
}

tally::Status PeerMessageReader::Decode(std::span<const std::byte> bytes, std::string* why) {
  swim_ = m::SwimMessage{};
  is_swim_ = false;
  is_node_ = false;
  words_ = nullptr;
  bytes_ = bytes;
  dropped_updates_ = 0;
  std::string reason;
  auto fail = [why](tally::Status status, std::string text) {
    if (why != nullptr) *why = std::move(text);
    return status;
  };
  if (bytes.empty()) return fail(tally::Status::kMalformed, "empty message");
  bool unpacked = false;
  if (bytes[0] == kPackedMarker) {
    const size_t max_bytes =
        std::min(kMaxPeerMessageBytes, kMaxUnpackRatio * bytes.size() + kUnpackAllowanceBytes);
    if (!Unpack(bytes.subspan(1), max_bytes / kWordBytes, &aligned_, &reason)) {
      return fail(tally::Status::kMalformed, reason);
    }
    bytes = std::as_bytes(std::span<const uint64_t>(aligned_));
    bytes_ = bytes;
    unpacked = true;
  }
  if (bytes.size() % kWordBytes != 0) {
    return fail(tally::Status::kMalformed, "message size is not a multiple of 8 bytes");
  }
  if (bytes.size() > kMaxPeerMessageBytes) {
    return fail(tally::Status::kMalformed, "message too large");
  }
  const auto* words = reinterpret_cast<const capnp::word*>(bytes.data());
  if (!unpacked && reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    aligned_.resize(bytes.size() / kWordBytes);
    std::memcpy(aligned_.data(), bytes.data(), bytes.size());
    words = reinterpret_cast<const capnp::word*>(aligned_.data());
  }
  words_ = words;
  word_count_ = bytes.size() / kWordBytes;
  capnp::ReaderOptions options;
  // Generous for honest messages, tight against pointer-aliasing amplification.
  options.traversalLimitInWords = 4 * (bytes.size() / kWordBytes) + 64;
  options.nestingLimit = 8;
  m::SwimMessage& msg = swim_;
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, bytes.size() / kWordBytes), options);
    auto root = reader.getRoot<peer::PeerMessage>();
    msg.version = root.getVersion();
    if (msg.version == 0) return fail(tally::Status::kMalformed, "missing protocol version");
    msg.sender_id = ToString(root.getSenderId());
    msg.sender_address = ToString(root.getSenderAddress());
    msg.sender_generation = root.getSenderGeneration();
    msg.sender_incarnation = root.getSenderIncarnation();
    msg.sender_wall_ms = root.getSenderWallMs();
    // Only push-pull (the member table, over a stream) and node messages
    // (ReadNode bounds those) may be larger than a datagram.
    if (root.which() != peer::PeerMessage::PUSH_PULL && root.which() != peer::PeerMessage::NODE &&
        bytes.size() > kMaxDatagramBytes) {
      return fail(tally::Status::kMalformed, "membership message larger than a datagram");
    }
    switch (root.which()) {
      case peer::PeerMessage::PING: {
        auto p = root.getPing();
        msg.body = m::Ping{p.getSeq(), ToString(p.getTargetId()), ToString(p.getRulesDigest()),
                           p.getViewDigest()};
        break;
      }
      case peer::PeerMessage::ACK: {
        auto a = root.getAck();
        msg.body = m::Ack{a.getSeq(), ToString(a.getRulesDigest()), a.getViewDigest()};
        break;
      }
      case peer::PeerMessage::PING_REQ: {
        auto p = root.getPingReq();
        msg.body = m::PingReq{p.getSeq(), ToString(p.getTargetId()), ToString(p.getTargetAddress()),
                              p.getWantNack()};
        break;
      }
      case peer::PeerMessage::NACK:
        msg.body = m::Nack{root.getNack().getSeq()};
        break;
      case peer::PeerMessage::GOSSIP:
        msg.body = m::Gossip{};
        break;
      case peer::PeerMessage::PUSH_PULL: {
        auto p = root.getPushPull();
        m::PushPull body{p.getReply(), p.getJoin(), {}};
        if (!ReadUpdates(p.getMembers(), &body.members, &dropped_updates_, &reason)) {
          return fail(tally::Status::kMalformed, reason);
        }
        msg.body = std::move(body);
        break;
      }
      case peer::PeerMessage::NODE:
        is_node_ = true;  // ReadNode decodes the body
        return tally::Status::kOk;
      default:
        // Not membership: a newer protocol, or a body kind another reader
        // handles (bytes_ keeps the view for it).
        return tally::Status::kOk;
    }
    if (!ReadUpdates(root.getPiggyback(), &msg.piggyback, &dropped_updates_, &reason,
                     kMaxPiggybackUpdates)) {
      return fail(tally::Status::kMalformed, reason);
    }
    is_swim_ = true;
    return tally::Status::kOk;
  } catch (const kj::Exception& e) {
    return fail(tally::Status::kMalformed,
                std::string("undecodable: ") + e.getDescription().cStr());
  }
}

tally::Status PeerMessageReader::Decode(std::span<const std::byte> bytes, m::SwimMessage* msg,
                                        std::string* why) {
  const tally::Status status = Decode(bytes, why);
  if (status != tally::Status::kOk) return status;
  if (!is_swim_) {
    if (why != nullptr) *why = "not a membership message (newer protocol or another kind)";
    return tally::Status::kUnsupportedVersion;
  }
  *msg = std::move(swim_);
  swim_ = m::SwimMessage{};
  is_swim_ = false;
  return tally::Status::kOk;
}

bool PeerMessageReader::ReadNode(NodeMessageValue* msg, std::string* why) {
  if (!is_node_ || words_ == nullptr) {
    *why = "not a node message";
    return false;
  }
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * word_count_ + 64;
  options.nestingLimit = 8;
  try {
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(static_cast<const capnp::word*>(words_), word_count_), options);
    auto root = reader.getRoot<peer::PeerMessage>();
    auto node = root.getNode();
    // Only bulk state (and the handoffDone that follows it on the same
    // stream) and limit overrides (the whole map, over a stream; its decoder
    // bounds them) may be larger than a datagram: every other kind is sent
    // as one, so a larger one is forged and its work per message unbounded.
    const NodeMessage::Which which = node.which();
    if (which != NodeMessage::STATE_PUSH && which != NodeMessage::HANDOFF_DONE &&
        which != NodeMessage::OVERRIDES && word_count_ * sizeof(capnp::word) > kMaxDatagramBytes) {
      *why = "node message larger than a datagram";
      return false;
    }
    if (!ReadNodeMessage(node, msg, why)) return false;
    // Cap'n Proto reads a list of zero-sized structs (no data, no pointers)
    // as that many default entries: 1,024 forward results from a 174-byte
    // packed datagram. No honest sender writes them.
    if (StructEntries(*msg) > word_count_) {
      *why = "more entries than the message has words";
      return false;
    }
    return true;
  } catch (const kj::Exception& e) {
    *why = std::string("undecodable: ") + e.getDescription().cStr();
    return false;
  }
}

void EncodeNodeMessage(const PeerHeader& header, const NodeMessageValue& msg,
                       std::vector<std::byte>* out, bool packed) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<peer::PeerMessage>();
  root.setVersion(peer::PROTOCOL_VERSION);
  if (!header.sender_id.empty()) root.setSenderId(TextOf(header.sender_id));
  if (!header.sender_address.empty()) root.setSenderAddress(TextOf(header.sender_address));
  root.setSenderGeneration(header.sender_generation);
  root.setSenderWallMs(header.sender_wall_ms);
  BuildNodeMessage(msg, root.initNode());
  if (packed) {
    const size_t unpacked_bytes = capnp::computeSerializedSizeInWords(builder) * kWordBytes;
    // At most 10 bytes per word (a tag, 8 bytes, a run count), plus the marker.
    out->resize(1 + unpacked_bytes + unpacked_bytes / 4 + 16);
    (*out)[0] = kPackedMarker;
    kj::ArrayOutputStream stream(
        kj::arrayPtr(reinterpret_cast<kj::byte*>(out->data()) + 1, out->size() - 1));
    capnp::writePackedMessage(stream, builder);
    out->resize(1 + stream.getArray().size());
    if (unpacked_bytes <= kMaxUnpackRatio * out->size() + kUnpackAllowanceBytes) return;
  }
  Flatten(builder, out);
}

}  // namespace tally::wire

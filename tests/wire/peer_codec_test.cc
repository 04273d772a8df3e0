// The peer codec: every membership message survives a round trip exactly,
// never encodes larger than membership::EstimatedEncodedBytes (which Swim packs
// datagrams by), and garbage of every kind decodes to a status, never a throw
// or a crash.
#include "wire/peer_codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "wire/codec.h"
#include "wire/peer.capnp.h"

namespace tally::wire {
namespace {

namespace m = tally::membership;
using Rng = std::mt19937_64;

uint64_t Below(Rng& rng, uint64_t n) { return rng() % n; }  // bias is irrelevant here

std::string RandomText(Rng& rng, size_t max_len) {
  std::string s(Below(rng, max_len + 1), '\0');
  for (char& c : s) c = static_cast<char>(Below(rng, 256));  // NULs included
  return s;
}

m::MemberUpdate RandomUpdate(Rng& rng) {
  const uint64_t big[] = {0, 1, 0xFFFFFFFFFFFFFFFFull, 1ull << 48};
  return m::MemberUpdate{RandomText(rng, 40),
                         RandomText(rng, 30),
                         Below(rng, 2) ? rng() : big[Below(rng, 4)],
                         Below(rng, 2) ? rng() : big[Below(rng, 4)],
                         static_cast<m::MemberState>(Below(rng, m::kMemberStateCount)),
                         Below(rng, 2) ? RandomText(rng, 20) : std::string()};
}

// Mostly what members send (none, or 16 bytes), sometimes any length: the
// codec carries whatever it is given and Swim judges it.
std::string RandomDigest(Rng& rng) {
  switch (Below(rng, 4)) {
    case 0:
      return {};
    case 1:
      return RandomText(rng, 40);
    default: {
      std::string digest(m::kRulesDigestBytes, '\0');
      for (char& c : digest) c = static_cast<char>(rng());
      return digest;
    }
  }
}

m::SwimMessage RandomMessage(Rng& rng, size_t max_updates) {
  m::SwimMessage msg;
  msg.version = static_cast<uint16_t>(1 + Below(rng, 5));
  msg.sender_id = RandomText(rng, 64);
  msg.sender_address = RandomText(rng, 32);
  msg.sender_generation = rng();
  msg.sender_incarnation = rng();
  msg.sender_wall_ms = static_cast<int64_t>(rng());
  switch (Below(rng, m::kSwimKindCount)) {
    case 0:
      msg.body = m::Ping{rng(), RandomText(rng, 40), RandomDigest(rng)};
      break;
    case 1:
      msg.body = m::Ack{rng(), RandomDigest(rng)};
      break;
    case 2:
      msg.body = m::PingReq{rng(), RandomText(rng, 40), RandomText(rng, 30), Below(rng, 2) == 0};
      break;
    case 3:
      msg.body = m::Nack{rng()};
      break;
    case 4:
      msg.body = m::Gossip{};
      break;
    default: {
      m::PushPull pp{Below(rng, 2) == 0, Below(rng, 2) == 0, {}};
      const size_t n = Below(rng, 4 * max_updates + 1);
      for (size_t i = 0; i < n; ++i) pp.members.push_back(RandomUpdate(rng));
      msg.body = std::move(pp);
      break;
    }
  }
  if (msg.kind() != m::SwimKind::kPushPull) {
    const size_t n = Below(rng, max_updates + 1);
    for (size_t i = 0; i < n; ++i) msg.piggyback.push_back(RandomUpdate(rng));
  }
  return msg;
}

TEST(PeerCodecTest, RoundTripsEveryKindExactlyAndWithinTheEstimate) {
  Rng rng(1);
  PeerMessageReader reader;
  std::vector<std::byte> bytes;
  int kinds_seen[m::kSwimKindCount] = {};
  for (int i = 0; i < 3000; ++i) {
    const m::SwimMessage msg = RandomMessage(rng, i % 100 == 0 ? 400 : 12);
    EncodeSwim(msg, &bytes);
    EXPECT_LE(bytes.size(), m::EstimatedEncodedBytes(msg)) << m::KindName(msg.kind());
    m::SwimMessage back;
    std::string why;
    ASSERT_EQ(reader.Decode(bytes, &back, &why), tally::Status::kOk) << why;
    EXPECT_EQ(back, msg) << m::KindName(msg.kind());
    ++kinds_seen[static_cast<int>(msg.kind())];
  }
  for (int k = 0; k < m::kSwimKindCount; ++k) EXPECT_GT(kinds_seen[k], 100) << k;
}

TEST(PeerCodecTest, HeaderAccessorsAndMisalignedInput) {
  m::SwimMessage msg;
  msg.sender_id = "n1";
  msg.sender_address = "10.0.0.1:7946";
  msg.sender_generation = 42;
  msg.sender_wall_ms = -5;
  msg.body = m::Ping{7, "n2"};
  msg.piggyback.push_back({"n3", "10.0.0.3:7946", 1, 2, m::MemberState::kSuspect, "n1"});
  std::vector<std::byte> bytes;
  EncodeSwim(msg, &bytes);
  std::vector<std::byte> shifted(bytes.size() + 1);
  std::memcpy(shifted.data() + 1, bytes.data(), bytes.size());
  PeerMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(std::span<const std::byte>(shifted).subspan(1), &why),
            tally::Status::kOk);
  EXPECT_TRUE(reader.is_swim());
  EXPECT_EQ(reader.sender_id(), "n1");
  EXPECT_EQ(reader.sender_address(), "10.0.0.1:7946");
  EXPECT_EQ(reader.sender_generation(), 42u);
  EXPECT_EQ(reader.sender_wall_ms(), -5);
  EXPECT_EQ(reader.swim(), msg);
}

// What gossiping the rules digest costs: 8 bytes on every ping and ack (the
// field's pointer), 16 more when the sender has rules doors. Nothing else grows.
TEST(PeerCodecTest, ARulesDigestCostsTwentyFourBytesOnPingsAndAcks) {
  m::SwimMessage msg;
  msg.sender_id = "n1";
  msg.sender_address = "10.0.0.1:7946";
  const std::string digest(m::kRulesDigestBytes, '\x5a');
  std::vector<std::byte> without, with;
  msg.body = m::Ping{7, "n2"};
  EncodeSwim(msg, &without);
  msg.body = m::Ping{7, "n2", digest};
  EncodeSwim(msg, &with);
  EXPECT_EQ(with.size(), without.size() + 16);
  EXPECT_LE(with.size(), m::EstimatedEncodedBytes(msg));
  msg.body = m::Ack{7};
  EncodeSwim(msg, &without);
  msg.body = m::Ack{7, digest};
  EncodeSwim(msg, &with);
  EXPECT_EQ(with.size(), without.size() + 16);
  EXPECT_LE(with.size(), m::EstimatedEncodedBytes(msg));
  PeerMessageReader reader;
  m::SwimMessage back;
  std::string why;
  ASSERT_EQ(reader.Decode(with, &back, &why), tally::Status::kOk) << why;
  EXPECT_EQ(std::get<m::Ack>(back.body).rules_digest, digest);
  // A Nack (like gossip, ping-req and push-pull) has no digest field: an Ack
  // is its rules digest's pointer and its view digest's word larger.
  msg.body = m::Nack{7};
  EncodeSwim(msg, &without);
  msg.body = m::Ack{7};
  EncodeSwim(msg, &with);
  EXPECT_EQ(with.size(), without.size() + 16);
}

// The view digest (Swim::view_digest): one data word on every ping and ack,
// set or not, and it round-trips.
TEST(PeerCodecTest, AViewDigestCostsEightBytesOnPingsAndAcksAndRoundTrips) {
  m::SwimMessage msg;
  msg.sender_id = "n1";
  msg.sender_address = "10.0.0.1:7946";
  std::vector<std::byte> without, with;
  msg.body = m::Ping{7, "n2"};
  EncodeSwim(msg, &without);
  msg.body = m::Ping{7, "n2", "", 0x0123456789abcdefULL};
  EncodeSwim(msg, &with);
  EXPECT_EQ(with.size(), without.size());
  EXPECT_LE(with.size(), m::EstimatedEncodedBytes(msg));
  PeerMessageReader reader;
  m::SwimMessage back;
  std::string why;
  ASSERT_EQ(reader.Decode(with, &back, &why), tally::Status::kOk) << why;
  EXPECT_EQ(std::get<m::Ping>(back.body).view_digest, 0x0123456789abcdefULL);
  msg.body = m::Ack{7, "", ~uint64_t{0}};
  EncodeSwim(msg, &with);
  EXPECT_LE(with.size(), m::EstimatedEncodedBytes(msg));
  ASSERT_EQ(reader.Decode(with, &back, &why), tally::Status::kOk) << why;
  EXPECT_EQ(std::get<m::Ack>(back.body).view_digest, ~uint64_t{0});
  // Unset (a sender without it) reads as 0.
  msg.body = m::Ack{7};
  EncodeSwim(msg, &with);
  ASSERT_EQ(reader.Decode(with, &back, &why), tally::Status::kOk) << why;
  EXPECT_EQ(std::get<m::Ack>(back.body).view_digest, 0u);
}

TEST(PeerCodecTest, DatagramSizedMessagesStayUnder1400) {
  // What Swim builds: a header, a body and rumors up to the estimate's budget.
  Rng rng(2);
  std::vector<std::byte> bytes;
  for (int i = 0; i < 500; ++i) {
    m::SwimMessage msg = RandomMessage(rng, 0);
    if (msg.kind() == m::SwimKind::kPushPull) continue;
    while (true) {
      m::MemberUpdate u = RandomUpdate(rng);
      if (m::EstimatedEncodedBytes(msg) + m::EstimatedUpdateBytes(u) +
              m::kPiggybackListOverheadBytes >
          1400)
        break;
      msg.piggyback.push_back(std::move(u));
    }
    EncodeSwim(msg, &bytes);
    EXPECT_LE(bytes.size(), 1400u);
  }
}

TEST(PeerCodecTest, GarbageNeverThrows) {
  PeerMessageReader reader;
  m::SwimMessage out;
  std::string why;
  EXPECT_EQ(reader.Decode({}, &out, &why), tally::Status::kMalformed);
  std::vector<std::byte> odd(13, std::byte{1});
  EXPECT_EQ(reader.Decode(odd, &out, &why), tally::Status::kMalformed);
  Rng rng(3);
  for (int i = 0; i < 5000; ++i) {
    std::vector<std::byte> junk(8 * (1 + Below(rng, 64)));
    for (auto& b : junk) b = static_cast<std::byte>(Below(rng, 256));
    const tally::Status s = reader.Decode(junk, &out, &why);
    EXPECT_TRUE(s == tally::Status::kMalformed || s == tally::Status::kOk ||
                s == tally::Status::kUnsupportedVersion);
  }
}

TEST(PeerCodecTest, TruncatedAndCorruptedMessagesNeverThrow) {
  Rng rng(4);
  PeerMessageReader reader;
  std::vector<std::byte> bytes;
  size_t ok = 0, bad = 0;
  for (int i = 0; i < 200; ++i) {
    const m::SwimMessage msg = RandomMessage(rng, 6);
    EncodeSwim(msg, &bytes);
    for (size_t len = 8; len < bytes.size(); len += 8) {
      m::SwimMessage out;
      const tally::Status s =
          reader.Decode(std::span<const std::byte>(bytes.data(), len), &out, nullptr);
      (s == tally::Status::kOk ? ok : bad)++;
    }
    for (int flips = 0; flips < 20; ++flips) {
      std::vector<std::byte> copy = bytes;
      for (int k = 0; k < 3; ++k)
        copy[Below(rng, copy.size())] ^= static_cast<std::byte>(1 + Below(rng, 255));
      m::SwimMessage out;
      const tally::Status s = reader.Decode(copy, &out, nullptr);
      (s == tally::Status::kOk ? ok : bad)++;
    }
  }
  EXPECT_GT(bad, 0u);
}

TEST(PeerCodecTest, MissingVersionIsMalformed) {
  m::SwimMessage msg;
  msg.version = 0;
  msg.body = m::Gossip{};
  std::vector<std::byte> bytes;
  EncodeSwim(msg, &bytes);
  PeerMessageReader reader;
  m::SwimMessage out;
  EXPECT_EQ(reader.Decode(bytes, &out, nullptr), tally::Status::kMalformed);
}

std::vector<std::byte> Serialize(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  std::vector<std::byte> bytes(words.asBytes().size());
  std::memcpy(bytes.data(), words.asBytes().begin(), bytes.size());
  return bytes;
}

TEST(PeerCodecTest, UnknownMemberStateDropsOnlyThatUpdate) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<peer::PeerMessage>();
  root.setVersion(2);
  root.setSenderId("n1");
  root.setSenderAddress("a:1");
  root.initGossip();
  auto list = root.initPiggyback(3);
  for (unsigned i = 0; i < 3; ++i) {
    list[i].setId("m" + std::to_string(i));
    list[i].setAddress("a:2");
  }
  list[1].setState(static_cast<peer::MemberState>(9));  // from a newer protocol
  const auto bytes = Serialize(builder);
  PeerMessageReader reader;
  m::SwimMessage out;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &out, &why), tally::Status::kOk) << why;
  EXPECT_EQ(reader.dropped_updates(), 1u);
  ASSERT_EQ(out.piggyback.size(), 2u);
  EXPECT_EQ(out.piggyback[0].id, "m0");
  EXPECT_EQ(out.piggyback[1].id, "m2");
}

TEST(PeerCodecTest, UnknownBodyIsNotMembership) {
  // A union member this build does not know (the node messages to be
  // appended, or a newer protocol): the header still decodes.
  m::SwimMessage msg;
  msg.sender_id = "n1";
  msg.sender_address = "a:1";
  msg.body = m::Ack{5};
  std::vector<std::byte> bytes;
  EncodeSwim(msg, &bytes);
  // Root struct data word 0 holds version (bits 0-15) and the union
  // discriminant (bits 16-31); the root follows the segment table and root
  // pointer.
  ASSERT_GE(bytes.size(), 24u);
  bytes[18] = std::byte{99};
  bytes[19] = std::byte{0};
  PeerMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), tally::Status::kOk) << why;
  EXPECT_FALSE(reader.is_swim());
  EXPECT_EQ(reader.sender_id(), "n1");
  m::SwimMessage out;
  EXPECT_EQ(reader.Decode(bytes, &out, &why), tally::Status::kUnsupportedVersion);
}

TEST(PeerCodecTest, HostileListLengthIsRefused) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<peer::PeerMessage>();
  root.setVersion(1);
  root.initGossip();
  root.initPiggyback(static_cast<unsigned>(kMaxPeerListEntries + 1));
  const auto bytes = Serialize(builder);
  PeerMessageReader reader;
  m::SwimMessage out;
  std::string why;
  EXPECT_EQ(reader.Decode(bytes, &out, &why), tally::Status::kMalformed);
  // (Refused before its list is read: a gossip message larger than a datagram.)
  EXPECT_NE(why.find("larger than a datagram"), std::string::npos) << why;
}

TEST(PeerCodecTest, HostileListLengthsAreRefusedWithinADatagramAndOnAStream) {
  {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<peer::PeerMessage>();
    root.setVersion(1);
    root.initGossip();
    root.initPiggyback(static_cast<unsigned>(kMaxPiggybackUpdates + 1));
    const auto bytes = Serialize(builder);
    ASSERT_LE(bytes.size(), kMaxDatagramBytes);
    PeerMessageReader reader;
    m::SwimMessage out;
    std::string why;
    EXPECT_EQ(reader.Decode(bytes, &out, &why), tally::Status::kMalformed);
    EXPECT_NE(why.find("too many"), std::string::npos) << why;
  }
  {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<peer::PeerMessage>();
    root.setVersion(1);
    root.initPushPull().initMembers(static_cast<unsigned>(kMaxPeerListEntries + 1));
    const auto bytes = Serialize(builder);
    PeerMessageReader reader;
    m::SwimMessage out;
    std::string why;
    EXPECT_EQ(reader.Decode(bytes, &out, &why), tally::Status::kMalformed);
    EXPECT_NE(why.find("too many"), std::string::npos) << why;
  }
}

}  // namespace
}  // namespace tally::wire

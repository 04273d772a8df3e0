// The node-message decoder's bounds (issue 9): every list a peer sends has a
// length limit, every kind but bulk state fits a datagram, and results that
// no correct decider produces are refused. Messages are built with Cap'n
// Proto directly, so they hold what our own encoder never writes.
#include "wire/node_codec.h"

#include <capnp/any.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "wire/codec.h"
#include "wire/peer.capnp.h"
#include "wire/peer_codec.h"

namespace tally::wire {
namespace {

std::vector<std::byte> Serialize(capnp::MessageBuilder& builder) {
  auto words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  std::vector<std::byte> out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

peer::PeerMessage::Builder Root(capnp::MallocMessageBuilder& builder) {
  auto root = builder.initRoot<peer::PeerMessage>();
  root.setVersion(1);
  root.setSenderId("n2");
  root.setSenderAddress("10.0.0.2:7946");
  root.setSenderGeneration(2);
  return root;
}

// Decodes `bytes` as a node message: true when accepted; *why otherwise.
bool Read(const std::vector<std::byte>& bytes, NodeMessageValue* msg, std::string* why) {
  PeerMessageReader reader;
  if (reader.Decode(bytes, why) != tally::Status::kOk) return false;
  if (!reader.is_node()) {
    *why = "not a node message";
    return false;
  }
  return reader.ReadNode(msg, why);
}

void ExpectRefused(capnp::MallocMessageBuilder& builder, const std::string& reason) {
  NodeMessageValue msg;
  std::string why;
  EXPECT_FALSE(Read(Serialize(builder), &msg, &why)) << reason;
  EXPECT_NE(why.find(reason), std::string::npos) << "why: " << why;
}

void FillCheck(wire::CheckRequest::Builder c) {
  c.setUserId(kj::StringPtr("alice").asBytes());
  c.setEndpoint(kj::StringPtr("/api").asBytes());
  c.setLimit(5);
  c.setWindowMs(1000);
  c.setHits(1);
}

// 30 delta cells of today's buckets, out of order, whose width and span
// `geometry_of(i)` gives.
std::vector<DeltaCellValue> ThirtyCells(
    const std::function<std::pair<uint32_t, uint16_t>(uint64_t)>& geometry_of) {
  std::vector<DeltaCellValue> cells;
  for (uint64_t i = 0; i < 30; ++i) {
    const auto [width, span] = geometry_of(i);
    const int64_t bucket = (1'796'630'904'421 + static_cast<int64_t>(i * 37)) / width;
    cells.push_back({0x9e3779b97f4a7c15 * (i + 1), 0xc2b2ae3d27d4eb4f * (i + 1), bucket,
                     static_cast<uint32_t>(i + 1), width, span});
  }
  return cells;
}

// node_codec_fuzz and peer_codec_fuzz: the decoder reads slot node ids and
// result errors byte-exact, but the encoder wrote them through capnp's
// std::string conversion, which cuts at a NUL, so they did not round-trip.
TEST(NodeCodecTest, SlotIdsAndErrorsRoundTripByteExact) {
  const std::string id("n\0two", 5);
  const std::string error("bad\0tail", 8);
  NodeMessageValue state;
  state.kind = NodeMessageValue::Kind::kReplicate;
  state.replicate.seq = 1;
  state.replicate.slots.push_back({id, 3});
  NodeMessageValue results;
  results.kind = NodeMessageValue::Kind::kForwardReply;
  ForwardResultValue r;
  r.forward_id = 9;
  r.result.status = tally::Status::kInvalidArgument;
  r.result.error = error;
  results.results.push_back(r);
  for (const NodeMessageValue& value : {state, results}) {
    std::vector<std::byte> bytes;
    EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 0}, value, &bytes);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    if (value.kind == NodeMessageValue::Kind::kReplicate) {
      ASSERT_EQ(decoded.replicate.slots.size(), 1u);
      EXPECT_EQ(decoded.replicate.slots[0].node_id, id);
    } else {
      ASSERT_EQ(decoded.results.size(), 1u);
      EXPECT_EQ(decoded.results[0].result.error, error);
    }
  }
}

TEST(NodeCodecTest, LimitOverridesAndTheOverridesDigestRoundTrip) {
  LimitOverrideValue descriptor;
  descriptor.kind = 1;
  descriptor.domain = std::string("ed\0ge", 5);  // byte-exact
  descriptor.entries = {{"remote_address", "10.0.0.1"}, {"path", ""}};
  descriptor.limit = 7;
  descriptor.window_ms = 60'000;
  descriptor.stamp_wall_ms = 1'700'000'000'000;
  descriptor.stamp_logical = 4;
  descriptor.writer = 0xfeedu;
  LimitOverrideValue removal;
  removal.kind = 2;
  removal.user = "alice";
  removal.endpoint = "/api";
  removal.selector_window_ms = 1000;
  removal.removed = true;
  removal.stamp_wall_ms = -5;
  NodeMessageValue overrides;
  overrides.kind = NodeMessageValue::Kind::kOverrides;
  overrides.overrides = {descriptor, removal};
  NodeMessageValue digest;
  digest.kind = NodeMessageValue::Kind::kDigest;
  digest.digest.assign(64, 3);
  digest.overrides_digest = 0x0123456789abcdefu;
  NodeMessageValue paused = digest;  // a full member's digest (schema extension)
  paused.digest_is_reply = true;
  paused.digest_keys_paused = true;
  for (const NodeMessageValue& value : {overrides, digest, paused}) {
    std::vector<std::byte> bytes;
    EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 0}, value, &bytes);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    EXPECT_EQ(decoded.kind, value.kind);
    EXPECT_EQ(decoded.overrides, value.overrides);
    EXPECT_EQ(decoded.overrides_digest, value.overrides_digest);
    EXPECT_EQ(decoded.digest, value.digest);
    EXPECT_EQ(decoded.digest_is_reply, value.digest_is_reply);
    EXPECT_EQ(decoded.digest_keys_paused, value.digest_keys_paused);
  }
}

TEST(NodeCodecTest, AdaptiveReportsAndAnAdaptiveOverridesRuleRoundTrip) {
  NodeMessageValue reports;
  reports.kind = NodeMessageValue::Kind::kAdaptiveReports;
  reports.adaptive_reports = {{"api", "backend", 6000.5, 30, 410.25},
                              {std::string("e\0d", 3), "r", 0, 1, 0}};
  LimitOverrideValue adaptive;
  adaptive.kind = 3;
  adaptive.domain = "api";
  adaptive.rule = "backend";
  adaptive.limit = 364;
  adaptive.window_ms = 1000;
  NodeMessageValue overrides;
  overrides.kind = NodeMessageValue::Kind::kOverrides;
  overrides.overrides = {adaptive};
  for (const NodeMessageValue& value : {reports, overrides}) {
    std::vector<std::byte> bytes;
    EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 0}, value, &bytes);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    EXPECT_EQ(decoded.kind, value.kind);
    EXPECT_EQ(decoded.adaptive_reports, value.adaptive_reports);
    EXPECT_EQ(decoded.overrides, value.overrides);
  }
}

// Protocol version 2's replication deltas: each cell as it was sent, the
// slot id byte-exact.
TEST(NodeCodecTest, ReplicationDeltasRoundTrip) {
  NodeMessageValue value;
  value.kind = NodeMessageValue::Kind::kReplicateDelta;
  value.delta.seq = 41;
  value.delta.slot = {std::string("n\0 2", 4), 1'796'630'904'421};
  value.delta.cells = {{1, 2, 283'333'333, 7, 6000, 10},
                       {~uint64_t{0}, 5, -3, 4'294'967'295u, 1, 1000},
                       {1, 2, 283'333'334, 1, 6000, 10}};
  std::vector<std::byte> bytes;
  EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 0}, value, &bytes);
  // 40 bytes a cell, as kEncodedDeltaCellBytes says.
  NodeMessageValue one = value;
  one.delta.cells.resize(1);
  std::vector<std::byte> one_bytes;
  EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 0}, one, &one_bytes);
  EXPECT_EQ(bytes.size() - one_bytes.size(), 2 * kEncodedDeltaCellBytes);
  NodeMessageValue decoded;
  std::string why;
  ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
  EXPECT_EQ(decoded.kind, value.kind);
  EXPECT_EQ(decoded.delta.seq, value.delta.seq);
  EXPECT_EQ(decoded.delta.slot, value.delta.slot);
  EXPECT_EQ(decoded.delta.cells, value.delta.cells);
}

// Protocol version 4: a delta's buckets may travel relative to its earliest
// cell's start: packed, a zero word and an offset of 0-2 bytes instead of a
// wall-clock bucket number's 4-6 bytes. They decode to the same absolute
// buckets, and cells that cannot travel so (a bucket below zero, too few to
// gain) make the whole message absolute.
TEST(NodeCodecTest, RelativeDeltaBucketsDecodeToTheSameCellsAndPackSmaller) {
  const PeerHeader header{"n2", "10.0.0.2:7946", 2, 1'796'630'904'421};
  NodeMessageValue value;
  value.kind = NodeMessageValue::Kind::kReplicateDelta;
  value.delta.seq = 41;
  value.delta.slot = {"n2", 1'796'630'904'421};
  // Three widths (100 ms, 1 ms, 6 s).
  value.delta.cells = ThirtyCells([](uint64_t i) {
    return std::pair<uint32_t, uint16_t>{i % 3 == 0 ? 100 : i % 3 == 1 ? 1 : 6000, 10};
  });
  NodeMessageValue absolute = value;
  value.delta.relative_buckets = true;
  for (const bool packed : {false, true}) {
    std::vector<std::byte> relative_bytes, absolute_bytes;
    EncodeNodeMessage(header, value, &relative_bytes, packed);
    EncodeNodeMessage(header, absolute, &absolute_bytes, packed);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(relative_bytes, &decoded, &why)) << why;
    EXPECT_TRUE(decoded.delta.relative_buckets);
    EXPECT_EQ(decoded.delta.cells, value.delta.cells);
    std::vector<std::byte> again;
    EncodeNodeMessage(header, decoded, &again, packed);
    EXPECT_EQ(again, relative_bytes);
    if (packed) {
      // At least 2 bytes a cell fewer (a 1 ms cell's offset from a 6 s
      // cell's start takes 2; the zeroed bucket word still costs 2).
      EXPECT_LE(relative_bytes.size() + 2 * value.delta.cells.size(), absolute_bytes.size())
          << relative_bytes.size() << " vs " << absolute_bytes.size();
    } else {
      EXPECT_EQ(relative_bytes.size(), absolute_bytes.size());  // the same words
    }
  }
  // A bucket below zero, or too few cells to gain: the whole message
  // travels absolute.
  NodeMessageValue negative = value;
  negative.delta.cells.push_back({1, 2, -3, 4, 1, 1000});
  NodeMessageValue few = value;
  few.delta.cells.resize(kMinRelativeDeltaCells - 1);
  for (const NodeMessageValue& absolute_value : {negative, few}) {
    std::vector<std::byte> bytes;
    EncodeNodeMessage(header, absolute_value, &bytes, true);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    EXPECT_FALSE(decoded.delta.relative_buckets);
    EXPECT_EQ(decoded.delta.cells, absolute_value.delta.cells);
  }
}

// Protocol version 5: a forwarded check whose endpoint an earlier item of
// the message carries refers to that item instead of carrying it again. It
// decodes to the same checks (empty endpoints are never referred to), and
// packed it is smaller by about the endpoint.
TEST(NodeCodecTest, ForwardsReferToAnEarlierItemsEndpointAndDecodeAlike) {
  const PeerHeader header{"n2", "10.0.0.2:7946", 2, 1'796'630'904'421};
  NodeMessageValue value;
  value.kind = NodeMessageValue::Kind::kForward;
  const std::vector<std::string> endpoints = {
      "/api/v1/orders", "/api/v1/users",  "",  "/api/v1/orders", "",
      "/api/v1/users",  "/api/v1/orders", "/x"};
  for (size_t i = 0; i < endpoints.size(); ++i) {
    ForwardValue f;
    f.forward_id = 1000 + i;
    f.hops = 1;
    f.check.request_id = 0x9e3779b97f4a7c15 * (i + 1);
    f.check.user_id = "user-" + std::to_string(i);
    f.check.endpoint = endpoints[i];
    f.check.limit = 100;
    f.check.window_ms = 1000;
    f.check.hits = 1;
    value.forwards.push_back(f);
  }
  NodeMessageValue carried = value;
  value.shared_endpoints = true;
  for (const bool packed : {false, true}) {
    std::vector<std::byte> shared_bytes, carried_bytes;
    EncodeNodeMessage(header, value, &shared_bytes, packed);
    EncodeNodeMessage(header, carried, &carried_bytes, packed);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(shared_bytes, &decoded, &why)) << why;
    EXPECT_TRUE(decoded.shared_endpoints);
    ASSERT_EQ(decoded.forwards.size(), value.forwards.size());
    for (size_t i = 0; i < value.forwards.size(); ++i) {
      const tally::CheckRequest& got = decoded.forwards[i].check;
      const tally::CheckRequest& want = value.forwards[i].check;
      EXPECT_EQ(got.endpoint, want.endpoint) << i;
      EXPECT_EQ(got.user_id, want.user_id) << i;
      EXPECT_EQ(got.request_id, want.request_id) << i;
      EXPECT_EQ(std::tie(got.limit, got.window_ms, got.hits),
                std::tie(want.limit, want.window_ms, want.hits));
      EXPECT_EQ(decoded.forwards[i].forward_id, value.forwards[i].forward_id);
    }
    std::vector<std::byte> again;
    EncodeNodeMessage(header, decoded, &again, packed);
    EXPECT_EQ(again, shared_bytes);
    // Three references ("/api/v1/orders" twice, "/api/v1/users" once), each
    // 14-16 bytes of endpoint left out; unpacked, two words each at least.
    EXPECT_LE(shared_bytes.size() + (packed ? 3 * 14 : 3 * 16), carried_bytes.size())
        << shared_bytes.size() << " vs " << carried_bytes.size();
    NodeMessageValue decoded_carried;
    ASSERT_TRUE(Read(carried_bytes, &decoded_carried, &why)) << why;
    EXPECT_FALSE(decoded_carried.shared_endpoints);
  }
  // Nothing repeated: nothing referred to, and the reader says so.
  NodeMessageValue distinct = value;
  distinct.forwards.resize(2);
  std::vector<std::byte> bytes;
  EncodeNodeMessage(header, distinct, &bytes, true);
  NodeMessageValue decoded;
  std::string why;
  ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
  EXPECT_FALSE(decoded.shared_endpoints);
}

// Protocol version 5: delta cells may travel compact, 3 words each: the
// key, the count, a 16-bit offset from the base and an index into the
// message's geometries. They decode to the same cells; cells that cannot
// travel so (an offset past 16 bits, or not relative at all) go in full.
TEST(NodeCodecTest, CompactDeltaCellsDecodeToTheSameCellsAndPackSmaller) {
  const PeerHeader header{"n2", "10.0.0.2:7946", 2, 1'796'630'904'421};
  NodeMessageValue value;
  value.kind = NodeMessageValue::Kind::kReplicateDelta;
  value.delta.seq = 42;
  value.delta.slot = {"n2", 1'796'630'904'421};
  value.delta.relative_buckets = true;
  // Three geometries (600 ms and 100 ms buckets, 1 ms at span 5).
  value.delta.cells = ThirtyCells([](uint64_t i) {
    const uint32_t width = i % 10 == 9 ? 100 : i % 10 == 8 ? 1 : 600;
    return std::pair<uint32_t, uint16_t>{width, width == 1 ? 5 : 10};
  });
  NodeMessageValue full = value;
  value.delta.compact_cells = true;
  for (const bool packed : {false, true}) {
    std::vector<std::byte> compact_bytes, full_bytes;
    EncodeNodeMessage(header, value, &compact_bytes, packed);
    EncodeNodeMessage(header, full, &full_bytes, packed);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(compact_bytes, &decoded, &why)) << why;
    EXPECT_TRUE(decoded.delta.compact_cells);
    EXPECT_TRUE(decoded.delta.relative_buckets);
    EXPECT_EQ(decoded.delta.cells, value.delta.cells);
    std::vector<std::byte> again;
    EncodeNodeMessage(header, decoded, &again, packed);
    EXPECT_EQ(again, compact_bytes);
    // Unpacked two words a cell fewer, less the geometries (three words and
    // a list tag); packed at least 3 bytes a cell fewer (a width, a span and
    // a zero bucket word).
    if (packed) {
      EXPECT_LE(compact_bytes.size() + 3 * value.delta.cells.size(), full_bytes.size())
          << compact_bytes.size() << " vs " << full_bytes.size();
    } else {
      EXPECT_EQ(compact_bytes.size() + 16 * value.delta.cells.size() - 4 * 8, full_bytes.size());
    }
  }
  // An offset past 16 bits (a 1 ms cell a minute after the earliest start),
  // or cells that travel absolute: in full.
  NodeMessageValue far = value;
  far.delta.cells.push_back({1, 2, 1'796'630'904'421 + 70'000, 4, 1, 5});
  NodeMessageValue absolute = value;
  absolute.delta.relative_buckets = false;
  for (const NodeMessageValue& full_value : {far, absolute}) {
    std::vector<std::byte> bytes;
    EncodeNodeMessage(header, full_value, &bytes, true);
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    EXPECT_FALSE(decoded.delta.compact_cells);
    EXPECT_EQ(decoded.delta.relative_buckets, full_value.delta.relative_buckets);
    EXPECT_EQ(decoded.delta.cells, full_value.delta.cells);
  }
}

// Protocol version 3: node messages may travel packed. Each kind decodes to
// what its unpacked form holds (re-encoded unpacked: the same bytes), and the
// kinds on the check path shrink.
TEST(NodeCodecTest, PackedNodeMessagesDecodeAsTheirUnpackedFormAndAreSmaller) {
  const PeerHeader header{"n2", "10.0.0.2:7946", 1'733'500'000'000, 1'733'500'000'123};
  std::vector<NodeMessageValue> values;
  NodeMessageValue forward;
  forward.kind = NodeMessageValue::Kind::kForward;
  NodeMessageValue reply;
  reply.kind = NodeMessageValue::Kind::kForwardReply;
  NodeMessageValue delta;
  delta.kind = NodeMessageValue::Kind::kReplicateDelta;
  delta.delta.seq = 77;
  delta.delta.slot = {"n2", 1'733'500'000'000};
  for (uint64_t i = 0; i < 32; ++i) {
    ForwardValue f;
    f.forward_id = 123'456 + i;
    f.check.request_id = 987'654'321 + i;
    f.check.user_id = "user-" + std::to_string(i);
    f.check.endpoint = "/api/v1/orders";
    f.check.limit = 1000;
    f.check.window_ms = 60'000;
    forward.forwards.push_back(f);
    ForwardResultValue r;
    r.forward_id = 123'456 + i;
    r.result.request_id = 987'654'321 + i;
    r.result.allowed = true;
    r.result.remaining = 900;
    r.result.reset_after_ms = 60'000;
    r.result.limit = 1000;
    reply.results.push_back(r);
    delta.delta.cells.push_back({0x9e3779b97f4a7c15ull * (i + 1), 0xbf58476d1ce4e5b9ull * (i + 7),
                                 static_cast<int64_t>(28'891'666 + i % 2),
                                 static_cast<uint32_t>(i + 1), 6000, 10});
  }
  NodeMessageValue ack;
  ack.kind = NodeMessageValue::Kind::kReplicateAck;
  ack.ack_seq = 77;
  NodeMessageValue digest;
  digest.kind = NodeMessageValue::Kind::kDigest;
  digest.digest.assign(64, 0);
  digest.digest[3] = 0x0123456789abcdefull;
  for (const NodeMessageValue& value : {forward, reply, delta, ack, digest}) {
    std::vector<std::byte> plain, packed, again;
    EncodeNodeMessage(header, value, &plain);
    EncodeNodeMessage(header, value, &packed, /*packed=*/true);
    ASSERT_EQ(packed[0], kPackedMarker);
    EXPECT_NE(plain[0], kPackedMarker);
    EXPECT_LT(packed.size(), plain.size());
    PeerMessageReader reader;
    std::string why;
    ASSERT_EQ(reader.Decode(packed, &why), tally::Status::kOk) << why;
    EXPECT_EQ(reader.sender_id(), header.sender_id);
    EXPECT_EQ(reader.sender_wall_ms(), header.sender_wall_ms);
    EXPECT_EQ(reader.version(), peer::PROTOCOL_VERSION);
    EXPECT_GE(reader.version(), kPackedSinceVersion);
    NodeMessageValue decoded;
    ASSERT_TRUE(reader.ReadNode(&decoded, &why)) << why;
    EncodeNodeMessage(header, decoded, &again);
    EXPECT_EQ(again, plain);
  }
  // Bulk state spans several segments once it outgrows the first: the packed
  // form carries the segment table too.
  NodeMessageValue push;
  push.kind = NodeMessageValue::Kind::kStatePush;
  push.replicate.slots = {{"n2", 7}};
  for (uint64_t k = 0; k < 3000; ++k) {
    CounterValue counter;
    counter.key_high = 0x9e3779b97f4a7c15ull * (k + 1);
    counter.key_low = k;
    counter.bucket_ms = 6000;
    counter.span = 10;
    counter.newest_bucket = 288'916;
    counter.rows.push_back({0, std::vector<uint32_t>(11, 0)});
    counter.rows[0].counts[10] = static_cast<uint32_t>(k % 50 + 1);
    push.replicate.counters.push_back(std::move(counter));
  }
  {
    std::vector<std::byte> plain, packed, again;
    EncodeNodeMessage(header, push, &plain);
    EncodeNodeMessage(header, push, &packed, true);
    ASSERT_NE(plain[0], std::byte{0});  // more than one segment
    ASSERT_EQ(packed[0], kPackedMarker);
    EXPECT_LT(packed.size() * 2, plain.size());
    PeerMessageReader reader;
    std::string why;
    ASSERT_EQ(reader.Decode(packed, &why), tally::Status::kOk) << why;
    NodeMessageValue decoded;
    ASSERT_TRUE(reader.ReadNode(&decoded, &why)) << why;
    EncodeNodeMessage(header, decoded, &again);
    EXPECT_EQ(again, plain);
  }
  // What the check path saves (docs/PERFORMANCE.md): a forwarded check and its
  // answer, and a replicated cell, each packed, at 32 per message.
  std::vector<std::byte> plain, packed;
  EncodeNodeMessage(header, forward, &plain);
  EncodeNodeMessage(header, forward, &packed, true);
  EXPECT_LT(packed.size() * 10, plain.size() * 6);
  EncodeNodeMessage(header, reply, &plain);
  EncodeNodeMessage(header, reply, &packed, true);
  EXPECT_LT(packed.size() * 10, plain.size() * 5);
  EncodeNodeMessage(header, delta, &plain);
  EncodeNodeMessage(header, delta, &packed, true);
  EXPECT_LT(packed.size() * 10, plain.size() * 8);
}

// Packed bytes are as untrusted as any: a truncation, a corruption or a run
// of zeros that would unpack far past the bytes sent is refused, never a
// crash, and the work stays proportional to the input.
TEST(NodeCodecBoundsTest, PackedInputsThatLieAreRefused) {
  NodeMessageValue value;
  value.kind = NodeMessageValue::Kind::kReplicateAck;
  value.ack_seq = 5;
  std::vector<std::byte> packed;
  EncodeNodeMessage(PeerHeader{"n2", "10.0.0.2:7946", 2, 9}, value, &packed, true);
  PeerMessageReader reader;
  std::string why;
  for (size_t size = 1; size < packed.size(); ++size) {
    const std::vector<std::byte> cut(packed.begin(), packed.begin() + size);
    why.clear();
    EXPECT_NE(reader.Decode(cut, &why), tally::Status::kOk) << size;
    EXPECT_FALSE(why.empty());
  }
  for (size_t i = 1; i < packed.size(); ++i) {
    for (int bit = 0; bit < 8; ++bit) {
      std::vector<std::byte> flipped = packed;
      flipped[i] ^= std::byte(1 << bit);
      NodeMessageValue out;
      if (reader.Decode(flipped, &why) == tally::Status::kOk && reader.is_node()) {
        reader.ReadNode(&out, &why);  // accepted or refused, never a crash
      }
    }
  }
  // A datagram of zero runs: each pair of bytes asks for 256 zero words.
  std::vector<std::byte> bomb = {kPackedMarker};
  for (int i = 0; i < 700; ++i) bomb.insert(bomb.end(), {std::byte{0x00}, std::byte{0xFF}});
  EXPECT_EQ(reader.Decode(bomb, &why), tally::Status::kMalformed);
  EXPECT_NE(why.find("unpacks too large"), std::string::npos) << why;
  // Verbatim words announced but not sent.
  const std::vector<std::byte> short_run = {
      kPackedMarker, std::byte{0xFF}, std::byte{1}, std::byte{2}, std::byte{3}, std::byte{4},
      std::byte{5},  std::byte{6},    std::byte{7}, std::byte{8}, std::byte{9}};
  EXPECT_EQ(reader.Decode(short_run, &why), tally::Status::kMalformed);
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_EQ(reader.Decode(std::vector<std::byte>{kPackedMarker}, &why), tally::Status::kMalformed);
}

// peer_codec_fuzz (CI, stop 32): Cap'n Proto reads a list of zero-sized
// structs as that many default entries, so 174 packed bytes carried 1,024
// forward results (and re-encoded past a datagram). Every entry an honest
// sender writes takes at least one word of the message.
TEST(NodeCodecBoundsTest, ListsOfZeroSizedStructsAreRefused) {
  auto with_results = [](uint16_t data_words, uint32_t count) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto node = Root(*b).initNode();
    node.initForwardReply(0);  // selects the union member and its pointer slot
    capnp::AnyStruct::Builder any(NodeMessage::Builder{node});
    auto pointers = any.getPointerSection();
    for (uint32_t i = 0; i < pointers.size(); ++i) {
      if (pointers[i].isNull()) continue;
      pointers[i].initAsListOfAnyStruct(data_words, 0, count);
    }
    return b;
  };
  // Within capnp's traversal limit (4 x the words + 64), beyond one per word.
  const uint32_t words = static_cast<uint32_t>(Serialize(*with_results(0, 1)).size() / 8);
  ExpectRefused(*with_results(0, 2 * words), "more entries than the message has words");
  NodeMessageValue msg;
  std::string why;
  // The same entries one word each are what an older, smaller schema writes.
  ASSERT_TRUE(Read(Serialize(*with_results(1, 1024)), &msg, &why)) << why;
  EXPECT_EQ(msg.results.size(), 1024u);
}

TEST(NodeCodecBoundsTest, ReplicationDeltasAreBounded) {
  {
    capnp::MallocMessageBuilder b;
    Root(b).initNode().initReplicateDelta().initSlot().setNodeId("");
    ExpectRefused(b, "empty or oversized node id");
  }
  {
    capnp::MallocMessageBuilder b;
    Root(b).initNode().initReplicateDelta().initSlot().setNodeId(
        std::string(kMaxSlotIdBytes + 1, 'n'));
    ExpectRefused(b, "empty or oversized node id");
  }
  for (auto [bucket_ms, span] : {std::pair<uint32_t, uint16_t>{0, 10},
                                 {100, 0},
                                 {100, static_cast<uint16_t>(kMaxSpan + 1)}}) {
    capnp::MallocMessageBuilder b;
    auto delta = Root(b).initNode().initReplicateDelta();
    delta.initSlot().setNodeId("n2");
    auto cell = delta.initCells(1)[0];
    cell.setBucketMs(bucket_ms);
    cell.setSpan(span);
    cell.setCount(1);
    ExpectRefused(b, "delta cell with a nonsense geometry");
  }
  {
    // A delta travels as one datagram: a larger one is forged.
    capnp::MallocMessageBuilder b;
    auto delta = Root(b).initNode().initReplicateDelta();
    delta.initSlot().setNodeId("n2");
    auto cells = delta.initCells(kMaxDeltaCellsPerMessage + 1);
    for (auto c : cells) {
      c.setBucketMs(100);
      c.setSpan(10);
    }
    ExpectRefused(b, "larger than a datagram");
  }
}

// Protocol version 4: the acknowledgements of one batch of input as one
// message. One seq travels as replicateAck, several as replicateAcks; both
// read as kReplicateAck and re-encode alike.
TEST(NodeCodecTest, AcknowledgementListsRoundTrip) {
  const PeerHeader header{"n2", "10.0.0.2:7946", 2, 1'796'630'904'421};
  NodeMessageValue one;
  one.kind = NodeMessageValue::Kind::kReplicateAck;
  one.ack_seq = 77;
  NodeMessageValue many = one;
  many.ack_seq = 0;
  many.ack_seqs = {78, 79, 80, 1'000'000'007};
  std::vector<std::byte> one_bytes, many_bytes;
  EncodeNodeMessage(header, one, &one_bytes, true);
  EncodeNodeMessage(header, many, &many_bytes, true);
  for (const auto& [value, bytes] : {std::pair{one, one_bytes}, std::pair{many, many_bytes}}) {
    NodeMessageValue decoded;
    std::string why;
    ASSERT_TRUE(Read(bytes, &decoded, &why)) << why;
    EXPECT_EQ(decoded.kind, NodeMessageValue::Kind::kReplicateAck);
    EXPECT_EQ(decoded.ack_seq, value.ack_seq);
    EXPECT_EQ(decoded.ack_seqs, value.ack_seqs);
    std::vector<std::byte> again;
    EncodeNodeMessage(header, decoded, &again, true);
    EXPECT_EQ(again, bytes);
  }
  // Four acknowledgements in one message cost well under four messages.
  EXPECT_LT(2 * many_bytes.size(), 4 * one_bytes.size());
}

TEST(NodeCodecBoundsTest, AcknowledgementListsAreBounded) {
  {
    capnp::MallocMessageBuilder b;
    Root(b).initNode().initReplicateAcks(0);
    ExpectRefused(b, "empty or oversized acknowledgement list");
  }
  {
    capnp::MallocMessageBuilder b;
    Root(b).initNode().initReplicateAcks(kMaxAcksPerMessage + 1);
    ExpectRefused(b, "empty or oversized acknowledgement list");
  }
  capnp::MallocMessageBuilder b;
  Root(b).initNode().initReplicateAcks(kMaxAcksPerMessage);
  NodeMessageValue msg;
  std::string why;
  ASSERT_TRUE(Read(Serialize(b), &msg, &why)) << why;
  EXPECT_EQ(msg.ack_seqs.size(), kMaxAcksPerMessage);
}

TEST(NodeCodecBoundsTest, RelativeDeltaBucketsAreBounded) {
  auto relative = [](int64_t base_ms, uint32_t bucket_ms, uint32_t offset) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto delta = Root(*b).initNode().initReplicateDelta();
    delta.initSlot().setNodeId("n2");
    delta.setRelativeBuckets(true);
    delta.setBucketBaseMs(base_ms);
    auto cells = delta.initCells(kMinRelativeDeltaCells);
    for (uint32_t i = 0; i < cells.size(); ++i) {
      cells[i].setKeyLow(i + 1);
      cells[i].setBucketMs(bucket_ms);
      cells[i].setSpan(10);
      cells[i].setCount(1);
      cells[i].setBucketOffset(offset);
    }
    return b;
  };
  ExpectRefused(*relative(-1, 100, 0), "relative delta with a negative base");
  ExpectRefused(*relative(INT64_MAX, 1, 1), "relative delta cell past the last bucket");
  // Decodes, but its start (bucket x width) is past int64: the encoder would
  // send it absolute, so the reader refuses it (a read message re-encodes alike).
  ExpectRefused(*relative(INT64_MAX - 7, 1000, 1u << 31),
                "relative delta cells the encoder would send absolute");
  // Too few cells to gain: the encoder would have sent them absolute.
  {
    auto few = relative(1'796'630'904'400, 100, 2);
    auto delta = few->getRoot<peer::PeerMessage>().getNode().getReplicateDelta();
    auto cells = delta.initCells(kMinRelativeDeltaCells - 1);
    for (auto cell : cells) {
      cell.setBucketMs(100);
      cell.setSpan(10);
    }
    ExpectRefused(*few, "relative delta cells the encoder would send absolute");
  }
  // The `bucket` field of a relative cell is not read.
  auto b = relative(1'796'630'904'400, 100, 2);
  auto delta = b->getRoot<peer::PeerMessage>().getNode().getReplicateDelta();
  delta.getCells()[0].setBucket(12345);
  NodeMessageValue msg;
  std::string why;
  ASSERT_TRUE(Read(Serialize(*b), &msg, &why)) << why;
  EXPECT_EQ(msg.delta.cells.at(0).bucket, 17'966'309'044 + 2);
}

// Protocol version 5's references: only to an earlier item that carries a
// non-empty endpoint itself, never beside an endpoint of the item's own, and
// a list resolves to at most kMaxForwardKeyBytesPerMessage of keys, so
// references cannot multiply a small message.
TEST(NodeCodecBoundsTest, EndpointReferencesAreBounded) {
  // Item i (0-based) refers to item refs[i] - 1; `own` items carry "/api".
  auto forwards = [](std::vector<uint16_t> refs, std::vector<bool> own) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto list = Root(*b).initNode().initForward(static_cast<unsigned>(refs.size()));
    for (unsigned i = 0; i < refs.size(); ++i) {
      list[i].setHops(1);
      list[i].setEndpointOfItem(refs[i]);
      auto c = list[i].initCheck();
      c.setUserId(kj::StringPtr("alice").asBytes());
      if (own[i]) c.setEndpoint(kj::StringPtr("/api").asBytes());
      c.setLimit(5);
      c.setWindowMs(1000);
    }
    return b;
  };
  const std::string reason = "forwarded check with a bad endpoint reference";
  ExpectRefused(*forwards({1}, {false}), reason);                     // itself
  ExpectRefused(*forwards({2, 0}, {false, true}), reason);            // a later item
  ExpectRefused(*forwards({0, 1}, {true, true}), reason);             // and its own
  ExpectRefused(*forwards({0, 1, 2}, {true, false, false}), reason);  // a reference
  ExpectRefused(*forwards({0, 1}, {false, false}), reason);           // an empty endpoint
  ExpectRefused(*forwards({0, 9}, {true, false}), reason);            // past the list
  {
    auto b = forwards({0, 1, 1}, {true, false, false});
    NodeMessageValue msg;
    std::string why;
    ASSERT_TRUE(Read(Serialize(*b), &msg, &why)) << why;
    EXPECT_TRUE(msg.shared_endpoints);
    for (const ForwardValue& f : msg.forwards) EXPECT_EQ(f.check.endpoint, "/api");
  }
  // One 4 KiB endpoint, referred to by every other item: refused once the
  // resolved keys pass the bound (a datagram's worth), however few bytes
  // travel.
  auto many = [](unsigned items) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto list = Root(*b).initNode().initForward(items);
    const std::string endpoint(4000, 'e');
    for (unsigned i = 0; i < items; ++i) {
      list[i].setHops(1);
      auto c = list[i].initCheck();
      if (i == 0) {
        c.setEndpoint(kj::ArrayPtr<const kj::byte>(
            reinterpret_cast<const kj::byte*>(endpoint.data()), endpoint.size()));
      } else {
        list[i].setEndpointOfItem(1);
      }
    }
    return b;
  };
  const unsigned fit = kMaxForwardKeyBytesPerMessage / 4000;
  {
    NodeMessageValue msg;
    std::string why;
    ASSERT_TRUE(Read(Serialize(*many(fit)), &msg, &why)) << why;
    EXPECT_EQ(msg.forwards.size(), fit);
  }
  ExpectRefused(*many(fit + 1), "forwarded checks with too many key bytes");
}

// Protocol version 5's compact cells: only relative, never beside full
// cells, each naming one of at most 256 sane geometries, and only what the
// encoder would send compact.
TEST(NodeCodecBoundsTest, CompactDeltaCellsAreBounded) {
  // `cells` compact cells with 100 ms buckets at offsets 0, 1, 2, ...
  auto compact = [](unsigned cells, unsigned geometries) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto d = Root(*b).initNode().initReplicateDelta();
    d.initSlot().setNodeId("n2");
    d.setRelativeBuckets(true);
    d.setBucketBaseMs(1'796'630'904'400);
    auto g = d.initGeometries(geometries);
    for (unsigned i = 0; i < geometries; ++i) {
      g[i].setBucketMs(100 + i);
      g[i].setSpan(10);
    }
    auto list = d.initCompactCells(cells);
    for (unsigned i = 0; i < cells; ++i) {
      list[i].setKeyLow(i + 1);
      list[i].setCount(1);
      list[i].setBucketOffset(static_cast<uint16_t>(i));
    }
    return b;
  };
  auto delta = [](capnp::MallocMessageBuilder& b) {
    return b.getRoot<peer::PeerMessage>().getNode().getReplicateDelta();
  };
  const std::string shape = "compact delta cells beside cells, absolute, or with no or too many";
  {
    auto b = compact(3, 1);
    delta(*b).setRelativeBuckets(false);
    ExpectRefused(*b, shape);
  }
  {
    auto b = compact(3, 1);
    delta(*b).initCells(1)[0].setBucketMs(100);
    ExpectRefused(*b, shape);
  }
  ExpectRefused(*compact(3, 0), shape);
  ExpectRefused(*compact(3, kMaxCompactGeometries + 1), shape);
  {
    auto b = compact(3, 1);
    delta(*b).getCompactCells()[2].setGeometry(1);
    ExpectRefused(*b, "compact delta cell with no geometry");
  }
  {
    auto b = compact(3, 1);
    delta(*b).getGeometries()[0].setSpan(0);
    ExpectRefused(*b, "delta cell with a nonsense geometry");
  }
  // What the encoder would send otherwise: too few cells to travel relative,
  // or offsets that do not fit 16 bits from the earliest cell's start (the
  // base the encoder takes, whatever base the sender chose).
  ExpectRefused(*compact(kMinRelativeDeltaCells - 1, 1),
                "relative delta cells the encoder would send absolute");
  {
    // 1 ms cells 65,535 apart: they fit.
    auto b = compact(3, 1);
    delta(*b).getGeometries()[0].setBucketMs(1);
    delta(*b).getCompactCells()[1].setBucketOffset(0);
    delta(*b).getCompactCells()[2].setBucketOffset(65'535);
    NodeMessageValue msg;
    std::string why;
    ASSERT_TRUE(Read(Serialize(*b), &msg, &why)) << why;
    EXPECT_TRUE(msg.delta.compact_cells);
    EXPECT_EQ(msg.delta.cells[2].bucket - msg.delta.cells[0].bucket, 65'535);
  }
  {
    // A 1 min cell starts 24.4 s below the sender's base, so the earliest
    // start is that much lower and the 1 ms cell 50 s past the base is
    // 74,400 buckets from it: in full.
    auto b = compact(3, 2);
    delta(*b).getGeometries()[0].setBucketMs(60'000);
    delta(*b).getGeometries()[1].setBucketMs(1);
    delta(*b).getGeometries()[1].setSpan(5);
    delta(*b).getCompactCells()[1].setGeometry(1);
    delta(*b).getCompactCells()[1].setBucketOffset(0);
    delta(*b).getCompactCells()[2].setGeometry(1);
    delta(*b).getCompactCells()[2].setBucketOffset(50'000);
    ExpectRefused(*b, "compact delta cells the encoder would send in full");
  }
  NodeMessageValue msg;
  std::string why;
  ASSERT_TRUE(Read(Serialize(*compact(kMinRelativeDeltaCells, 2)), &msg, &why)) << why;
  ASSERT_EQ(msg.delta.cells.size(), kMinRelativeDeltaCells);
  EXPECT_EQ(msg.delta.cells[1].bucket, 1'796'630'904'400 / 100 + 1);
  EXPECT_EQ(msg.delta.cells[1].bucket_ms, 100u);
}

TEST(NodeCodecBoundsTest, AdaptiveReportsAreBounded) {
  {
    capnp::MallocMessageBuilder builder;
    Root(builder).initNode().initAdaptiveReports(
        static_cast<unsigned>(kMaxAdaptiveReportsPerMessage + 1));
    ExpectRefused(builder, "too many adaptive reports");
  }
  {
    capnp::MallocMessageBuilder builder;
    Root(builder).initNode().initAdaptiveReports(1)[0].initRule(
        static_cast<unsigned>(kMaxOverrideTextBytes + 1));
    ExpectRefused(builder, "oversized text");
  }
  {
    capnp::MallocMessageBuilder builder;
    Root(builder).initNode().initOverrides(1)[0].initRule(
        static_cast<unsigned>(kMaxOverrideTextBytes + 1));
    ExpectRefused(builder, "oversized text");
  }
}

TEST(NodeCodecBoundsTest, LimitOverridesAreBounded) {
  {
    capnp::MallocMessageBuilder builder;
    Root(builder).initNode().initOverrides(static_cast<unsigned>(kMaxOverridesPerMessage + 1));
    ExpectRefused(builder, "too many limit overrides");
  }
  {
    capnp::MallocMessageBuilder builder;
    auto list = Root(builder).initNode().initOverrides(1);
    list[0].initEntries(static_cast<unsigned>(kMaxOverrideEntries + 1));
    ExpectRefused(builder, "too many descriptor entries");
  }
  {
    capnp::MallocMessageBuilder builder;
    auto list = Root(builder).initNode().initOverrides(1);
    list[0].initDomain(static_cast<unsigned>(kMaxOverrideTextBytes + 1));
    ExpectRefused(builder, "oversized text");
  }
  {
    capnp::MallocMessageBuilder builder;
    auto list = Root(builder).initNode().initOverrides(1);
    list[0].initEntries(1)[0].initValue(static_cast<unsigned>(kMaxOverrideTextBytes + 1));
    ExpectRefused(builder, "oversized text");
  }
}

TEST(NodeCodecBoundsTest, ForwardsPerMessageAndHopsAreBounded) {
  {
    capnp::MallocMessageBuilder b;
    // As many as a datagram holds (a full datagram, 64 KiB, holds < 1024).
    auto list = Root(b).initNode().initForward(500);
    for (auto f : list) {
      f.setHops(1);
      FillCheck(f.initCheck());
    }
    NodeMessageValue msg;
    std::string why;
    EXPECT_TRUE(Read(Serialize(b), &msg, &why)) << why;
    EXPECT_EQ(msg.forwards.size(), 500u);
  }
  {
    capnp::MallocMessageBuilder b;
    auto list = Root(b).initNode().initForward(kMaxForwardsPerMessage + 1);
    for (auto f : list) f.setHops(1);
    ExpectRefused(b, "too many forwarded checks");
  }
  {
    capnp::MallocMessageBuilder b;
    auto f = Root(b).initNode().initForward(1)[0];
    f.setHops(0);
    FillCheck(f.initCheck());
    ExpectRefused(b, "0 hops");
  }
}

TEST(NodeCodecBoundsTest, OnlyBulkStateMayBeLargerThanADatagram) {
  // A forward of one check whose ids fill more than a datagram.
  std::string huge(kMaxDatagramBytes, 'x');
  {
    capnp::MallocMessageBuilder b;
    auto f = Root(b).initNode().initForward(1)[0];
    f.setHops(1);
    FillCheck(f.initCheck());
    f.getCheck().setUserId(kj::StringPtr(huge.c_str()).asBytes());
    ExpectRefused(b, "larger than a datagram");
  }
  // The same bytes as a statePush's slot ids (bounded per id, so many slots).
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    auto slots = push.initSlots(400);
    const std::string id(200, 's');
    for (auto s : slots) s.setNodeId(id);
    NodeMessageValue msg;
    std::string why;
    const auto bytes = Serialize(b);
    ASSERT_GT(bytes.size(), kMaxDatagramBytes);
    EXPECT_TRUE(Read(bytes, &msg, &why)) << why;
    EXPECT_EQ(msg.replicate.slots.size(), 400u);
  }
  {
    capnp::MallocMessageBuilder b;
    auto rep = Root(b).initNode().initReplicate();
    auto slots = rep.initSlots(400);
    const std::string id(200, 's');
    for (auto s : slots) s.setNodeId(id);
    ExpectRefused(b, "larger than a datagram");
  }
}

TEST(NodeCodecBoundsTest, ReplicatedStateListsAreBounded) {
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    auto slots = push.initSlots(kMaxSlotsPerMessage + 1);
    for (auto s : slots) s.setNodeId("n");
    ExpectRefused(b, "too many slots");
  }
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    push.initSlots(1)[0].setNodeId("");
    ExpectRefused(b, "empty or oversized node id");
  }
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    push.initSlots(1)[0].setNodeId(std::string(kMaxSlotIdBytes + 1, 'n'));
    ExpectRefused(b, "empty or oversized node id");
  }
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    auto counters = push.initCounters(kMaxCountersPerMessage + 1);
    for (auto c : counters) {
      c.setBucketMs(100);
      c.setSpan(10);
    }
    ExpectRefused(b, "too many counters");
  }
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    push.initSlots(1)[0].setNodeId("n1");
    auto c = push.initCounters(1)[0];
    c.setBucketMs(100);
    c.setSpan(10);
    auto rows = c.initRows(kMaxRowsPerCounter + 1);
    for (auto r : rows) r.initCounts(11);
    ExpectRefused(b, "too many rows");
  }
  {
    capnp::MallocMessageBuilder b;
    auto push = Root(b).initNode().initStatePush();
    auto c = push.initCounters(1)[0];
    c.setBucketMs(100);
    c.setSpan(kMaxSpan + 1);
    ExpectRefused(b, "nonsense geometry");
  }
  {
    capnp::MallocMessageBuilder b;
    auto digest = Root(b).initNode().initDigest();
    digest.initRanges(kMaxDigestRanges + 1);
    ExpectRefused(b, "too many digest ranges");
  }
}

TEST(NodeCodecBoundsTest, ResultsNoDeciderProducesAreRefused) {
  auto with_result = [](auto fill) {
    auto b = std::make_unique<capnp::MallocMessageBuilder>();
    auto r = Root(*b).initNode().initForwardReply(1)[0];
    r.setForwardId(7);
    auto resp = r.initResponse();
    resp.setStatus(wire::Status::OK);
    resp.setLimit(5);
    fill(resp);
    return b;
  };
  {
    auto b = with_result([](wire::CheckResponse::Builder r) {
      r.setAllowed(true);
      r.setRemaining(4);
    });
    NodeMessageValue msg;
    std::string why;
    EXPECT_TRUE(Read(Serialize(*b), &msg, &why)) << why;
  }
  {
    auto b = with_result([](wire::CheckResponse::Builder r) {
      r.setStatus(wire::Status::INTERNAL);
      r.setAllowed(true);
    });
    ExpectRefused(*b, "allowed with an error");
  }
  {
    auto b = with_result([](wire::CheckResponse::Builder r) { r.setRemaining(6); });
    ExpectRefused(*b, "remaining exceeds");
  }
  {
    // retry_after_ms of 6.9 days on a 1 s window was seen; beyond 3 x 31 days
    // no honest decider answers, and never-fits is allowed.
    auto b = with_result(
        [](wire::CheckResponse::Builder r) { r.setRetryAfterMs(kMaxResultDelayMs + 1); });
    ExpectRefused(*b, "retry delay out of range");
    auto never =
        with_result([](wire::CheckResponse::Builder r) { r.setRetryAfterMs(tally::kNeverFits); });
    NodeMessageValue msg;
    std::string why;
    EXPECT_TRUE(Read(Serialize(*never), &msg, &why)) << why;
  }
  {
    auto b = with_result(
        [](wire::CheckResponse::Builder r) { r.setResetAfterMs(kMaxResultDelayMs + 1); });
    ExpectRefused(*b, "reset delay out of range");
  }
  {
    auto b = with_result([](wire::CheckResponse::Builder r) {
      r.setStatus(wire::Status::INVALID_ARGUMENT);
      r.setError(std::string(kMaxResultErrorBytes + 1, 'e'));
    });
    ExpectRefused(*b, "oversized error");
  }
  {
    capnp::MallocMessageBuilder b;
    Root(b).initNode().initForwardReply(kMaxResultsPerMessage + 1);
    ExpectRefused(b, "too many forwarded results");
  }
}

}  // namespace
}  // namespace tally::wire

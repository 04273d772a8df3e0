// Round trips and decode robustness of wire/codec.h. The decoder faces
// untrusted datagrams: whatever the bytes, it must return a status, never
// crash, throw or read out of bounds (Touch() reads every view it returns,
// so a run under -fsanitize=address,undefined catches a bad one).
#include "wire/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tally/check.capnp.h"
#include "tally/types.h"

namespace tally {
namespace {

// tally::wire also holds the generated CheckRequest etc.: name what we use.
using wire::ClientMessage;
using wire::ClientMessageReader;
using wire::EncodeChecks;
using wire::EncodedCheckBound;
using wire::EncodedResponseBound;
using wire::EncodeResponses;
using wire::kMaxDatagramBytes;
using wire::kMessageOverheadBytes;
using wire::MessageKind;
using wire::PROTOCOL_VERSION;
using Bytes = std::vector<std::byte>;

std::string BinaryString(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

// Owns the strings a batch of CheckRequestRefs points into.
struct CheckBatch {
  std::vector<CheckRequest> owned;
  std::vector<CheckRequestRef> Refs() const { return {owned.begin(), owned.end()}; }
};

CheckBatch SampleChecks() {
  CheckBatch b;
  CheckRequest typical;
  typical.request_id = 42;
  typical.user_id = "user-1234";
  typical.endpoint = "/api/v1/orders";
  typical.limit = 100;
  typical.window_ms = 60'000;
  typical.hits = 3;
  b.owned.push_back(typical);

  CheckRequest empty;  // empty ids are the daemon's to reject, not the codec's
  empty.hits = 0;      // differs from the schema default of 1
  b.owned.push_back(empty);

  CheckRequest max;
  max.request_id = UINT64_MAX;
  max.user_id = std::string(4096, 'u');
  max.endpoint = std::string(4096, 'e');
  max.limit = UINT64_MAX;
  max.window_ms = UINT64_MAX;
  max.hits = UINT64_MAX;
  b.owned.push_back(max);

  CheckRequest binary;
  binary.request_id = 7;
  binary.user_id = std::string("a\0b\0", 4) + BinaryString(61, 1);
  binary.endpoint = std::string(1, '\0');
  binary.limit = kMaxLimit;
  binary.window_ms = kMaxWindowMs;
  binary.hits = 1;
  b.owned.push_back(binary);
  return b;
}

std::vector<CheckResult> SampleResponses() {
  std::vector<CheckResult> out;
  for (uint16_t s = 0; s <= static_cast<uint16_t>(Status::kInternal); ++s) {
    CheckResult r;
    r.request_id = 1000 + s;
    r.status = static_cast<Status>(s);
    r.allowed = s == 0;
    r.remaining = s * 11;
    r.retry_after_ms = r.allowed ? 0 : 250 * s;
    r.reset_after_ms = 60'000;
    r.limit = 100;
    if (s != 0) r.error = std::string(StatusName(r.status)) + " \xE2\x9C\x93";
    out.push_back(r);
  }
  CheckResult never;
  never.request_id = UINT64_MAX;
  never.retry_after_ms = kNeverFits;
  never.remaining = UINT64_MAX;
  never.reset_after_ms = UINT64_MAX;
  never.limit = UINT64_MAX;
  never.error = std::string(4096, 'x');
  out.push_back(never);
  out.push_back(CheckResult{});  // all defaults, no error text
  return out;
}

void ExpectSameCheck(const CheckRequestRef& want, const CheckRequestRef& got, size_t i) {
  SCOPED_TRACE(i);
  EXPECT_EQ(got.request_id, want.request_id);
  EXPECT_EQ(got.user_id, want.user_id);
  EXPECT_EQ(got.endpoint, want.endpoint);
  EXPECT_EQ(got.limit, want.limit);
  EXPECT_EQ(got.window_ms, want.window_ms);
  EXPECT_EQ(got.hits, want.hits);
}

void ExpectSameResponse(const CheckResult& want, const CheckResult& got, size_t i) {
  SCOPED_TRACE(i);
  EXPECT_EQ(got.request_id, want.request_id);
  EXPECT_EQ(got.status, want.status);
  EXPECT_EQ(got.allowed, want.allowed);
  EXPECT_EQ(got.remaining, want.remaining);
  EXPECT_EQ(got.retry_after_ms, want.retry_after_ms);
  EXPECT_EQ(got.reset_after_ms, want.reset_after_ms);
  EXPECT_EQ(got.limit, want.limit);
  EXPECT_EQ(got.error, want.error);
}

Bytes Encode(const CheckBatch& batch) {
  Bytes out;
  EncodeChecks(batch.Refs(), &out);
  return out;
}

Bytes EncodeBuilt(capnp::MessageBuilder& builder) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  Bytes out(bytes.size());
  std::memcpy(out.data(), bytes.begin(), bytes.size());
  return out;
}

// Reads every byte a decoded message points to, so ASan sees any bad view.
size_t Touch(const ClientMessageReader& reader) {
  size_t sum = 0;
  for (const auto& c : reader.checks()) {
    for (char ch : c.user_id) sum += static_cast<unsigned char>(ch);
    for (char ch : c.endpoint) sum += static_cast<unsigned char>(ch);
    sum += c.request_id + c.limit + c.window_ms + c.hits;
  }
  for (const auto& r : reader.responses()) sum += r.error.size() + r.request_id;
  return sum;
}

// The statuses an arbitrary input may get; also asserts the failure contract.
void ExpectSafeDecode(ClientMessageReader& reader, std::span<const std::byte> bytes) {
  std::string why;
  Status status = reader.Decode(bytes, &why);
  ASSERT_TRUE(status == Status::kOk || status == Status::kMalformed ||
              status == Status::kUnsupportedVersion)
      << StatusName(status);
  if (status == Status::kOk) {
    Touch(reader);
  } else {
    EXPECT_FALSE(why.empty());
    EXPECT_TRUE(reader.checks().empty());
    EXPECT_TRUE(reader.responses().empty());
  }
}

void SetU32(Bytes* b, size_t offset, uint32_t v) {
  for (int i = 0; i < 4; ++i) (*b)[offset + i] = static_cast<std::byte>(v >> (8 * i));
}

TEST(CodecTest, ChecksRoundTrip) {
  CheckBatch batch = SampleChecks();
  Bytes bytes = Encode(batch);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_EQ(reader.kind(), MessageKind::kChecks);
  EXPECT_EQ(reader.version(), PROTOCOL_VERSION);
  auto refs = batch.Refs();
  ASSERT_EQ(reader.checks().size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) ExpectSameCheck(refs[i], reader.checks()[i], i);
  EXPECT_TRUE(reader.responses().empty());
}

// Found by fuzz/client_codec_fuzz: text fields are read byte-exact, so they
// must be written byte-exact too (capnp's conversion from std::string stops at
// the first NUL).
TEST(CodecTest, StatusAndOwnerTextsRoundTripByteExact) {
  const std::string nul("a\0b", 3);
  wire::StatusReport report;
  report.node_id = nul;
  report.not_owning_reason = nul;
  report.partition_policy = nul;
  report.gossip_address = nul;
  report.members.push_back({nul, nul, 1, 2, nul});
  report.counters = {{nul, 3}};
  Bytes bytes;
  wire::EncodeStatusResponse(report, &bytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  const wire::StatusReport& got = reader.status_report();
  EXPECT_EQ(got.node_id, nul);
  EXPECT_EQ(got.not_owning_reason, nul);
  EXPECT_EQ(got.partition_policy, nul);
  EXPECT_EQ(got.gossip_address, nul);
  ASSERT_EQ(got.members.size(), 1u);
  EXPECT_EQ(got.members[0].id, nul);
  EXPECT_EQ(got.members[0].state, nul);
  EXPECT_EQ(got.members[0].address, nul);
  ASSERT_EQ(got.counters.size(), 1u);
  EXPECT_EQ(got.counters[0].first, nul);

  wire::EncodeOwnerResponse(wire::OwnerReport{Status::kOk, nul, nul, {}, 0, false}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_EQ(reader.owner_report().error, nul);
  EXPECT_EQ(reader.owner_report().node_id, nul);
}

TEST(CodecTest, ResponsesRoundTrip) {
  std::vector<CheckResult> responses = SampleResponses();
  Bytes bytes;
  EncodeResponses(responses, &bytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_EQ(reader.kind(), MessageKind::kResponses);
  ASSERT_EQ(reader.responses().size(), responses.size());
  for (size_t i = 0; i < responses.size(); ++i) {
    ExpectSameResponse(responses[i], reader.responses()[i], i);
  }
  EXPECT_TRUE(reader.checks().empty());
}

TEST(CodecTest, EmptyBatchesRoundTrip) {
  ClientMessageReader reader;
  Bytes bytes;
  EncodeChecks({}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
  EXPECT_EQ(reader.kind(), MessageKind::kChecks);
  EXPECT_TRUE(reader.checks().empty());
  EncodeResponses({}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
  EXPECT_EQ(reader.kind(), MessageKind::kResponses);
  EXPECT_TRUE(reader.responses().empty());
}

TEST(CodecTest, BatchOf500ChecksRoundTrips) {
  CheckBatch batch;
  std::mt19937_64 rng(500);
  for (int i = 0; i < 500; ++i) {
    CheckRequest r;
    r.request_id = rng();
    r.user_id = "user-" + std::to_string(i);
    r.endpoint = BinaryString(rng() % 24, static_cast<uint32_t>(i));
    r.limit = rng() % 1000;
    r.window_ms = 1 + rng() % kMaxWindowMs;
    r.hits = rng() % 4;
    batch.owned.push_back(r);
  }
  Bytes bytes = Encode(batch);
  ASSERT_LE(bytes.size(), kMaxDatagramBytes);
  ClientMessageReader reader;
  ASSERT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
  auto refs = batch.Refs();
  ASSERT_EQ(reader.checks().size(), refs.size());
  for (size_t i = 0; i < refs.size(); ++i) ExpectSameCheck(refs[i], reader.checks()[i], i);
}

TEST(CodecTest, ReaderIsReusableAndEncodeReplacesOutput) {
  ClientMessageReader reader;
  Bytes big = Encode(SampleChecks());
  ASSERT_EQ(reader.Decode(big, nullptr), Status::kOk);
  CheckBatch one;
  one.owned.push_back(SampleChecks().owned[0]);
  Bytes small = big;
  EncodeChecks(one.Refs(), &small);  // replaces, never appends
  EXPECT_LT(small.size(), big.size());
  ASSERT_EQ(reader.Decode(small, nullptr), Status::kOk);
  ASSERT_EQ(reader.checks().size(), 1u);
  ExpectSameCheck(one.Refs()[0], reader.checks()[0], 0);
  // A failed decode leaves nothing from the previous message behind.
  EXPECT_EQ(reader.Decode(std::span(small).first(8), nullptr), Status::kMalformed);
  EXPECT_TRUE(reader.checks().empty());
}

TEST(CodecTest, UnalignedInputDecodes) {
  CheckBatch batch = SampleChecks();
  Bytes bytes = Encode(batch);
  for (size_t offset : {1, 3, 4, 7}) {
    SCOPED_TRACE(offset);
    Bytes shifted(bytes.size() + offset);
    std::memcpy(shifted.data() + offset, bytes.data(), bytes.size());
    ClientMessageReader reader;
    std::string why;
    ASSERT_EQ(reader.Decode(std::span(shifted).subspan(offset), &why), Status::kOk) << why;
    auto refs = batch.Refs();
    ASSERT_EQ(reader.checks().size(), refs.size());
    for (size_t i = 0; i < refs.size(); ++i) ExpectSameCheck(refs[i], reader.checks()[i], i);
  }
}

TEST(CodecTest, MultiSegmentMessageDecodes) {
  // Another client's encoder may split a message into segments.
  capnp::MallocMessageBuilder builder(1, capnp::AllocationStrategy::FIXED_SIZE);
  auto root = builder.initRoot<ClientMessage>();
  root.setVersion(PROTOCOL_VERSION);
  auto list = root.initChecks(2);
  list[0].setUserId(kj::StringPtr("alice").asBytes());
  list[0].setEndpoint(kj::StringPtr("/a").asBytes());
  list[0].setLimit(5);
  list[1].setUserId(kj::StringPtr("bob").asBytes());
  ASSERT_GT(builder.getSegmentsForOutput().size(), 1u);
  Bytes bytes = EncodeBuilt(builder);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  ASSERT_EQ(reader.checks().size(), 2u);
  EXPECT_EQ(reader.checks()[0].user_id, "alice");
  EXPECT_EQ(reader.checks()[0].endpoint, "/a");
  EXPECT_EQ(reader.checks()[0].limit, 5u);
  EXPECT_EQ(reader.checks()[1].user_id, "bob");
  EXPECT_EQ(reader.checks()[1].hits, 1u);  // the schema default
}

TEST(CodecTest, NewerVersionStillDecodes) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<ClientMessage>();
  root.setVersion(PROTOCOL_VERSION + 1);
  root.initChecks(1)[0].setUserId(kj::StringPtr("u").asBytes());
  ClientMessageReader reader;
  Bytes bytes = EncodeBuilt(builder);
  ASSERT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
  EXPECT_EQ(reader.version(), PROTOCOL_VERSION + 1);
  ASSERT_EQ(reader.checks().size(), 1u);
}

TEST(CodecTest, VersionZeroIsMalformed) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<ClientMessage>();  // version left at 0
  root.initChecks(1)[0].setUserId(kj::StringPtr("u").asBytes());
  ClientMessageReader reader;
  std::string why;
  Bytes bytes = EncodeBuilt(builder);
  EXPECT_EQ(reader.Decode(bytes, &why), Status::kMalformed);
  EXPECT_FALSE(why.empty());
  EXPECT_TRUE(reader.checks().empty());
}

TEST(CodecTest, UnknownUnionMemberIsUnsupportedVersion) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<ClientMessage>();
  root.setVersion(PROTOCOL_VERSION + 1);
  // The union discriminant is the second 16-bit field of the data section.
  auto data = capnp::toAny(root).getDataSection();
  ASSERT_GE(data.size(), 4u);
  data[2] = 17;  // past the last member (signalReportResponse, discriminant 16)
  data[3] = 0;
  ClientMessageReader reader;
  std::string why;
  Bytes bytes = EncodeBuilt(builder);
  EXPECT_EQ(reader.Decode(bytes, &why), Status::kUnsupportedVersion);
  EXPECT_FALSE(why.empty());
}

TEST(CodecTest, UnknownStatusDecodesAsInternal) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<ClientMessage>();
  root.setVersion(PROTOCOL_VERSION);
  root.initResponses(1)[0].setStatus(static_cast<wire::Status>(999));
  ClientMessageReader reader;
  Bytes bytes = EncodeBuilt(builder);
  ASSERT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
  ASSERT_EQ(reader.responses().size(), 1u);
  EXPECT_EQ(reader.responses()[0].status, Status::kInternal);
}

TEST(CodecTest, ShortAndOddInputsAreMalformed) {
  ClientMessageReader reader;
  std::string why;
  EXPECT_EQ(reader.Decode({}, &why), Status::kMalformed);
  EXPECT_FALSE(why.empty());
  Bytes seven(7, std::byte{0});
  EXPECT_EQ(reader.Decode(seven, nullptr), Status::kMalformed);
  Bytes eight(8, std::byte{0});  // one segment of zero words: no root
  EXPECT_EQ(reader.Decode(eight, nullptr), Status::kMalformed);
  Bytes garbage(64);
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = static_cast<std::byte>(0xA5 ^ i);
  EXPECT_EQ(reader.Decode(garbage, nullptr), Status::kMalformed);
  Bytes huge(kMaxDatagramBytes + 16, std::byte{0});
  EXPECT_EQ(reader.Decode(huge, nullptr), Status::kMalformed);
}

TEST(CodecTest, EveryTruncationIsMalformed) {
  Bytes bytes = Encode(SampleChecks());
  ClientMessageReader reader;
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::string why;
    ASSERT_EQ(reader.Decode(std::span(bytes).first(n), &why), Status::kMalformed) << "length " << n;
    EXPECT_FALSE(why.empty());
    EXPECT_TRUE(reader.checks().empty());
  }
  EXPECT_EQ(reader.Decode(bytes, nullptr), Status::kOk);
}

TEST(CodecTest, HostileSegmentTablesAreMalformed) {
  const Bytes valid = Encode(SampleChecks());
  ClientMessageReader reader;
  // The first word is (segment count - 1, size of segment 0 in words).
  for (uint32_t count_minus_one : {0xFFFFFFFEu, 0x7FFFFFFFu, 1000u, 1u}) {
    SCOPED_TRACE(count_minus_one);
    Bytes b = valid;
    SetU32(&b, 0, count_minus_one);  // 0xFFFFFFFE: 2^32 - 1 segments
    EXPECT_EQ(reader.Decode(b, nullptr), Status::kMalformed);
  }
  for (uint32_t size : {0xFFFFFFFFu, 0x80000000u, static_cast<uint32_t>(valid.size() / 8)}) {
    SCOPED_TRACE(size);
    Bytes b = valid;
    SetU32(&b, 4, size);  // segment 0 larger than the data
    EXPECT_EQ(reader.Decode(b, nullptr), Status::kMalformed);
  }
  // A segment count of 2^32 wraps to 0 in Cap'n Proto's arithmetic: whatever
  // it decodes to, it must be safe.
  Bytes wrapped = valid;
  SetU32(&wrapped, 0, 0xFFFFFFFFu);
  ExpectSafeDecode(reader, wrapped);
}

TEST(CodecTest, EverySingleBitFlipIsSafe) {
  CheckBatch batch = SampleChecks();
  batch.owned[2].user_id.resize(40);  // keep the message small: 8 decodes per byte
  batch.owned[2].endpoint.resize(9);
  std::vector<CheckResult> responses = SampleResponses();
  responses.resize(3);
  std::vector<Bytes> messages = {Encode(batch), {}};
  EncodeResponses(responses, &messages.back());
  ClientMessageReader reader;
  for (const Bytes& valid : messages) {
    for (size_t bit = 0; bit < valid.size() * 8; ++bit) {
      Bytes b = valid;
      b[bit / 8] ^= static_cast<std::byte>(1u << (bit % 8));
      ASSERT_NO_FATAL_FAILURE(ExpectSafeDecode(reader, b)) << "bit " << bit;
    }
  }
}

TEST(CodecTest, RandomInputsAreSafe) {
  std::mt19937_64 rng(0xC0DEC);
  const Bytes valid = Encode(SampleChecks());
  ClientMessageReader reader;
  for (int i = 0; i < 10'000; ++i) {
    Bytes b;
    switch (i % 4) {
      case 0: {  // any length, any bytes
        b.resize(rng() % 1024);
        for (auto& x : b) x = static_cast<std::byte>(rng());
        break;
      }
      case 1: {  // whole words behind a plausible one-segment table
        size_t words = 1 + rng() % 64;
        b.resize(8 * words);
        for (auto& x : b) x = static_cast<std::byte>(rng());
        SetU32(&b, 0, 0);
        SetU32(&b, 4, static_cast<uint32_t>(words - 1));
        break;
      }
      case 2: {  // a valid message with a few random bytes overwritten
        b = valid;
        for (int k = 1 + rng() % 8; k > 0; --k) b[rng() % b.size()] = static_cast<std::byte>(rng());
        break;
      }
      default: {  // a valid message with random words (pointers) overwritten
        b = valid;
        for (int k = 1 + rng() % 4; k > 0; --k) {
          size_t w = 1 + rng() % (b.size() / 8 - 1);
          uint64_t v = rng();
          std::memcpy(b.data() + 8 * w, &v, 8);
        }
        break;
      }
    }
    ASSERT_NO_FATAL_FAILURE(ExpectSafeDecode(reader, b)) << "input " << i;
  }
}

TEST(CodecTest, EncodedCheckBoundIsAnUpperBound) {
  std::mt19937_64 rng(7);
  for (size_t n : {0, 1, 2, 7, 64, 300}) {
    SCOPED_TRACE(n);
    CheckBatch batch;
    size_t bound = kMessageOverheadBytes;
    for (size_t i = 0; i < n; ++i) {
      CheckRequest r;
      r.request_id = rng();
      r.user_id = BinaryString(i % 50 == 0 ? 4096 : rng() % 70, static_cast<uint32_t>(i));
      r.endpoint = BinaryString(rng() % 33, static_cast<uint32_t>(i + 1));
      r.limit = rng();
      r.window_ms = rng();
      r.hits = rng();
      bound += EncodedCheckBound(r.user_id.size(), r.endpoint.size());
      batch.owned.push_back(r);
    }
    Bytes bytes = Encode(batch);
    EXPECT_LE(bytes.size(), bound);
  }
}

TEST(CodecTest, EncodedResponseBoundIsAnUpperBound) {
  std::mt19937_64 rng(8);
  for (size_t n : {0, 1, 3, 64, 500}) {
    SCOPED_TRACE(n);
    std::vector<CheckResult> responses(n);
    size_t bound = kMessageOverheadBytes;
    for (size_t i = 0; i < n; ++i) {
      CheckResult& r = responses[i];
      r.request_id = rng();
      r.status = static_cast<Status>(rng() % 7);
      r.remaining = rng();
      r.retry_after_ms = kNeverFits;
      r.reset_after_ms = rng();
      r.limit = rng();
      r.error = std::string(i % 3 == 0 ? 0 : rng() % 40, 'e');
      bound += EncodedResponseBound(r.error.size());
    }
    Bytes bytes;
    EncodeResponses(responses, &bytes);
    EXPECT_LE(bytes.size(), bound);
  }
}

// The one reply splitter (the daemon's doors and the Node): every run encodes
// within a datagram, runs are as large as fit and keep the order, and an
// empty batch still gets one (empty) reply.
TEST(CodecTest, ResponsesAreSplitIntoDatagramsTheyFit) {
  std::mt19937_64 rng(9);
  for (size_t n : {0, 1, 2000, 9000}) {
    SCOPED_TRACE(n);
    std::vector<CheckResult> responses(n);
    for (size_t i = 0; i < n; ++i) {
      responses[i].request_id = i + 1;
      responses[i].remaining = rng();
      responses[i].reset_after_ms = rng();
      responses[i].error = std::string(i % 7 == 0 ? rng() % 300 : 0, 'e');
    }
    std::vector<std::span<const CheckResult>> runs;
    wire::ForEachResponseDatagram(responses,
                                  [&](std::span<const CheckResult> run) { runs.push_back(run); });
    ASSERT_FALSE(runs.empty());
    size_t next = 0;
    for (size_t k = 0; k < runs.size(); ++k) {
      EXPECT_EQ(runs[k].data(), responses.data() + next) << "run " << k << " out of order";
      next += runs[k].size();
      Bytes bytes;
      EncodeResponses(runs[k], &bytes);
      EXPECT_LE(bytes.size(), kMaxDatagramBytes) << "run " << k;
      if (k + 1 < runs.size()) {
        // Nothing more would have fit: the next result's bound overflows.
        size_t bound = kMessageOverheadBytes;
        for (const CheckResult& r : runs[k]) bound += EncodedResponseBound(r.error.size());
        bound += EncodedResponseBound(runs[k + 1].front().error.size());
        EXPECT_GT(bound, kMaxDatagramBytes) << "run " << k << " could have been larger";
      }
    }
    EXPECT_EQ(next, n);
    if (n == 0) EXPECT_EQ(runs.size(), 1u);
    if (n == 9000) EXPECT_GE(runs.size(), 2u);
  }
}

// The peer-authentication fields appended to StatusResponse (ordinals 14-17).
// Protocol 3 (issue 9): padded queries decode as the queries they pad, are at
// least the size asked, and grow nothing but themselves.
TEST(CodecTest, PaddedQueriesDecodeAsTheirQueriesAndReachTheSizeAsked) {
  const wire::OwnerQuery query{std::string("u\0x", 3), "/e", 60'000};
  Bytes unpadded_status, unpadded_owner;
  wire::EncodeStatusRequest(&unpadded_status);
  wire::EncodeOwnerRequest(query, &unpadded_owner);
  ClientMessageReader reader;
  std::string why;
  for (size_t min_bytes : {size_t{0}, size_t{1}, size_t{33}, size_t{200}, size_t{1001},
                           size_t{22'000}, wire::kMaxDatagramBytes, wire::kMaxDatagramBytes + 99}) {
    SCOPED_TRACE(min_bytes);
    Bytes status, owner;
    wire::EncodeStatusRequest(&status, min_bytes);
    wire::EncodeOwnerRequest(query, &owner, min_bytes);
    const size_t want = std::min(min_bytes, wire::kMaxDatagramBytes / 8 * 8);
    for (const Bytes* b : {&status, &owner}) {
      EXPECT_GE(b->size(), want);
      EXPECT_LE(b->size(), wire::kMaxDatagramBytes);
      EXPECT_LE(b->size(),
                std::max(want + 16, b == &status ? unpadded_status.size() : unpadded_owner.size()));
    }
    ASSERT_EQ(reader.Decode(status, &why), Status::kOk) << why;
    EXPECT_EQ(reader.kind(), MessageKind::kStatusRequest);
    ASSERT_EQ(reader.Decode(owner, &why), Status::kOk) << why;
    EXPECT_EQ(reader.kind(), MessageKind::kOwnerRequest);
    EXPECT_EQ(reader.owner_query().user_id, query.user_id);
    EXPECT_EQ(reader.owner_query().endpoint, query.endpoint);
    EXPECT_EQ(reader.owner_query().window_ms, query.window_ms);
  }
  // A check and its answer are the size they were before protocol 3.
  CheckRequest check{1, "alice", "/api", 10, 1000, 1};
  Bytes checks;
  const CheckRequestRef ref(check);
  wire::EncodeChecks(std::span<const CheckRequestRef>(&ref, 1), &checks);
  // Segment table 8, root pointer 8, root 16 (one data word, one pointer),
  // list tag 8, check 48, "alice" and "/api" a word each.
  EXPECT_EQ(checks.size(), 104u);
}

TEST(CodecTest, PaddingRequiredRoundTripsAndAsksEnough) {
  ClientMessageReader reader;
  std::string why;
  for (uint32_t asked : {0u, 40u, 1208u, 0xFFFFFFFFu}) {
    Bytes bytes;
    wire::EncodePaddingRequired(asked, &bytes);
    EXPECT_LE(bytes.size(), 3 * 32u);  // within 3x of the smallest query
    ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
    EXPECT_EQ(reader.kind(), MessageKind::kPaddingRequired);
    EXPECT_EQ(reader.padding_required_bytes(), asked);
  }
  for (size_t reply :
       {size_t{0}, size_t{1}, size_t{624}, size_t{1900}, size_t{30'000}, wire::kMaxDatagramBytes}) {
    const size_t query = wire::PaddedQueryBytes(reply);
    EXPECT_GE(wire::kMaxReplyFactor * query, reply + reply / 8) << reply;  // headroom
    EXPECT_LE(query, wire::kMaxDatagramBytes);
    EXPECT_EQ(query % 8, 0u);
  }
}

TEST(CodecTest, StatusPeerAuthFieldsRoundTrip) {
  wire::StatusReport report;
  report.node_id = "n1";
  report.cluster_name = "prod-eu";
  report.peer_auth = "sealed";
  report.key_ids = {"0a1b2c3d", "deadbeef"};
  report.keyring_error = "keyring '/etc/tally/keyring': line 2: not valid base64";
  Bytes bytes;
  wire::EncodeStatusResponse(report, &bytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  const wire::StatusReport& got = reader.status_report();
  EXPECT_EQ(got.cluster_name, "prod-eu");
  EXPECT_EQ(got.peer_auth, "sealed");
  EXPECT_EQ(got.key_ids, report.key_ids);
  EXPECT_EQ(got.keyring_error, report.keyring_error);

  // A report without them (an older daemon) reads as empty.
  wire::StatusReport plain;
  plain.node_id = "old";
  wire::EncodeStatusResponse(plain, &bytes);
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_TRUE(reader.status_report().peer_auth.empty());
  EXPECT_TRUE(reader.status_report().key_ids.empty());
}

// The rules fields appended to StatusResponse (ordinals 18-19).
TEST(CodecTest, StatusRulesFieldsRoundTrip) {
  wire::StatusReport report;
  report.node_id = "n1";
  report.rules_digest = "0123456789abcdef0123456789abcdef";
  report.rules_error = "/etc/tally/rules/edge.yaml:3:5: unknown unit 'fortnight'";
  Bytes bytes;
  wire::EncodeStatusResponse(report, &bytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_EQ(reader.status_report().rules_digest, report.rules_digest);
  EXPECT_EQ(reader.status_report().rules_error, report.rules_error);
  // Without them (no doors, or an older daemon): empty.
  wire::StatusReport plain;
  plain.node_id = "old";
  wire::EncodeStatusResponse(plain, &bytes);
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_TRUE(reader.status_report().rules_digest.empty());
  EXPECT_TRUE(reader.status_report().rules_error.empty());
}

// MemberInfo.rulesDigest (ordinal 7): a digest, "none" (no rules doors), or
// empty (not heard yet, and what an older daemon's members decode as).
TEST(CodecTest, MemberRulesDigestsRoundTrip) {
  wire::StatusReport report;
  report.node_id = "n1";
  report.members.resize(3);
  report.members[0].id = "n1";
  report.members[0].rules_digest = "0123456789abcdef0123456789abcdef";
  report.members[1].id = "n2";
  report.members[1].rules_digest = std::string(wire::kNoRulesDigest);
  report.members[2].id = "n3";
  Bytes bytes;
  wire::EncodeStatusResponse(report, &bytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  const std::vector<wire::MemberReport>& members = reader.status_report().members;
  ASSERT_EQ(members.size(), 3u);
  for (size_t i = 0; i < members.size(); ++i) {
    EXPECT_EQ(members[i].id, report.members[i].id);
    EXPECT_EQ(members[i].rules_digest, report.members[i].rules_digest);
  }
}

TEST(CodecTest, MembersWithOtherRulesAreTheUpOnesWithAnotherOrUnknownDigest) {
  const std::string mine(32, 'a'), other(32, 'b');
  wire::StatusReport report;
  report.node_id = "n1";
  auto add = [&](const char* id, const char* state, std::string digest) {
    wire::MemberReport& m = report.members.emplace_back();
    m.id = id;
    m.state = state;
    m.rules_digest = std::move(digest);
  };
  add("n1", "alive", mine);
  add("n2", "alive", mine);
  add("n3", "suspect", other);
  add("n4", "alive", "");                                 // not heard yet
  add("n5", "alive", std::string(wire::kNoRulesDigest));  // no rules doors
  add("n6", "dead", other);
  add("n7", "left", "");
  auto ids = [](const wire::StatusReport& r) {
    std::vector<std::string> out;
    for (const wire::MemberReport* m : wire::MembersWithOtherRules(r)) out.push_back(m->id);
    return out;
  };
  EXPECT_EQ(ids(report), (std::vector<std::string>{"n3", "n4"}));
  // All agree: nothing.
  report.members[2].rules_digest = report.members[3].rules_digest = mine;
  EXPECT_TRUE(ids(report).empty());
  // The answering node has no doors, or is older than the field: nothing.
  report.members[2].rules_digest = other;
  report.members[0].rules_digest = std::string(wire::kNoRulesDigest);
  EXPECT_TRUE(ids(report).empty());
  report.members[0].rules_digest = "";
  EXPECT_TRUE(ids(report).empty());
}

// Members that do not fit one datagram are cut, digests counted.
TEST(CodecTest, StatusWithManyMembersAndDigestsStaysOneDatagram) {
  wire::StatusReport report;
  report.node_id = "n1";
  for (int i = 0; i < 2000; ++i) {
    wire::MemberReport& m = report.members.emplace_back();
    m.id = "member-" + std::to_string(i) + std::string(40, 'x');
    m.state = "suspect";
    m.address = "255.255.255.255:65535";
    m.rules_digest = "0123456789abcdef0123456789abcdef";
  }
  Bytes bytes;
  wire::EncodeStatusResponse(report, &bytes);
  EXPECT_LE(bytes.size(), wire::kMaxDatagramBytes);
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), Status::kOk) << why;
  EXPECT_TRUE(reader.status_report().members_truncated);
  EXPECT_GT(reader.status_report().members.size(), 100u);
  EXPECT_EQ(reader.status_report().members.back().rules_digest, report.members[0].rules_digest);
}

}  // namespace
}  // namespace tally

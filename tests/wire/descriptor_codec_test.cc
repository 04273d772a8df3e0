// Protocol 4's descriptor checks (check.capnp DescriptorCheckRequest and
// DescriptorCheckResponse): round trips, the decoder's bounds on untrusted
// queries, and the size bounds the daemon's reply rule relies on.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <random>
#include <string>
#include <vector>

#include "tally/check.capnp.h"
#include "wire/codec.h"

namespace tally::wire {
namespace {

using Bytes = std::vector<std::byte>;

DescriptorQuery SampleQuery() {
  DescriptorQuery q;
  q.request_id = 77;
  q.domain = "messaging";
  q.hits_addend = 3;
  QueryDescriptor& a = q.descriptors.emplace_back();
  a.entries = {{"message_type", "marketing"}, {"to_number", std::string("a\0b", 3)}};
  QueryDescriptor& b = q.descriptors.emplace_back();
  b.entries = {{"key", ""}};
  b.has_limit = true;
  b.requests_per_unit = 42;
  b.unit = 2;  // minute
  return q;
}

TEST(DescriptorCodecTest, QueryRoundTrips) {
  const DescriptorQuery q = SampleQuery();
  Bytes bytes;
  EncodeDescriptorCheck(q, &bytes);
  EXPECT_LE(bytes.size(), EncodedDescriptorQueryBound(q));
  ClientMessageReader reader;
  std::string why;
  ASSERT_EQ(reader.Decode(bytes, &why), tally::Status::kOk) << why;
  ASSERT_EQ(reader.kind(), MessageKind::kDescriptorCheck);
  EXPECT_EQ(reader.version(), PROTOCOL_VERSION);
  EXPECT_GE(PROTOCOL_VERSION, 4);  // descriptor checks came with 4
  EXPECT_TRUE(reader.descriptor_query_error().empty());
  const DescriptorQuery& got = reader.descriptor_query();
  EXPECT_EQ(got.request_id, 77u);
  EXPECT_EQ(got.domain, "messaging");
  EXPECT_EQ(got.hits_addend, 3u);
  ASSERT_EQ(got.descriptors.size(), 2u);
  ASSERT_EQ(got.descriptors[0].entries.size(), 2u);
  EXPECT_EQ(got.descriptors[0].entries[0].key, "message_type");
  EXPECT_EQ(got.descriptors[0].entries[0].value, "marketing");
  EXPECT_EQ(got.descriptors[0].entries[1].value, std::string("a\0b", 3));
  EXPECT_FALSE(got.descriptors[0].has_limit);
  EXPECT_EQ(got.descriptors[1].entries[0].key, "key");
  EXPECT_TRUE(got.descriptors[1].has_limit);
  EXPECT_EQ(got.descriptors[1].requests_per_unit, 42u);
  EXPECT_EQ(got.descriptors[1].unit, 2u);
}

TEST(DescriptorCodecTest, PaddedQueryReachesTheSizeAskedAndDecodesTheSame) {
  const DescriptorQuery q = SampleQuery();
  Bytes plain, padded;
  EncodeDescriptorCheck(q, &plain);
  EncodeDescriptorCheck(q, &padded, plain.size() * 4);
  EXPECT_GE(padded.size(), plain.size() * 4);
  ClientMessageReader reader;
  ASSERT_EQ(reader.Decode(padded, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kDescriptorCheck);
  EXPECT_EQ(reader.descriptor_query().domain, "messaging");
  EXPECT_EQ(reader.descriptor_query().descriptors.size(), 2u);
}

TEST(DescriptorCodecTest, QueriesOverTheBoundsKeepOnlyTheirIdAndSayWhy) {
  DescriptorQuery many;
  many.request_id = 5;
  many.domain = "d";
  many.descriptors.resize(kMaxQueryDescriptors + 1);
  for (auto& d : many.descriptors) d.entries = {{"k", "v"}};
  Bytes bytes;
  EncodeDescriptorCheck(many, &bytes);
  ClientMessageReader reader;
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kDescriptorCheck);
  EXPECT_EQ(reader.descriptor_query_error(), "more than 64 descriptors");
  EXPECT_EQ(reader.descriptor_query().request_id, 5u);
  EXPECT_TRUE(reader.descriptor_query().descriptors.empty());

  DescriptorQuery deep;
  deep.domain = "d";
  deep.descriptors.emplace_back().entries.resize(kMaxQueryEntries + 1, QueryEntry{"k", "v"});
  EncodeDescriptorCheck(deep, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_EQ(reader.descriptor_query_error(), "a descriptor has more than 16 entries");
  EXPECT_TRUE(reader.descriptor_query().descriptors.empty());

  // At the bounds: decoded whole.
  many.descriptors.resize(kMaxQueryDescriptors);
  many.descriptors[0].entries.resize(kMaxQueryEntries, QueryEntry{"k", "v"});
  EncodeDescriptorCheck(many, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_TRUE(reader.descriptor_query_error().empty());
  EXPECT_EQ(reader.descriptor_query().descriptors.size(), kMaxQueryDescriptors);
}

TEST(DescriptorCodecTest, ReportRoundTripsAndCutsLongNames) {
  DescriptorReport r;
  r.request_id = UINT64_MAX;
  r.overall_code = RateCode::kOverLimit;
  DescriptorOutcome& over = r.results.emplace_back();
  over.code = RateCode::kOverLimit;
  over.has_limit = true;
  over.limit = 10;
  over.unit = 1;
  over.name = std::string(kMaxResultNameBytes + 100, 'n');
  over.remaining = 0;
  over.retry_after_ms = 250;
  over.reset_after_ms = 1000;
  DescriptorOutcome& none = r.results.emplace_back();  // no rule matched
  none.code = RateCode::kOk;
  DescriptorOutcome& unlimited = r.results.emplace_back();
  unlimited.remaining = UINT32_MAX;
  Bytes bytes;
  EncodeDescriptorCheckResponse(r, &bytes);
  // (Not `over`: the later emplace_backs moved the results.)
  const std::vector<size_t> names = {r.results[0].name.size(), 0, 0};
  EXPECT_LE(bytes.size(), EncodedDescriptorReportBound(names, 0));
  ClientMessageReader reader;
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kDescriptorCheckResponse);
  const DescriptorReport& got = reader.descriptor_report();
  EXPECT_EQ(got.request_id, UINT64_MAX);
  EXPECT_EQ(got.status, tally::Status::kOk);
  EXPECT_EQ(got.overall_code, RateCode::kOverLimit);
  ASSERT_EQ(got.results.size(), 3u);
  EXPECT_EQ(got.results[0].code, RateCode::kOverLimit);
  EXPECT_TRUE(got.results[0].has_limit);
  EXPECT_EQ(got.results[0].limit, 10u);
  EXPECT_EQ(got.results[0].unit, 1u);
  EXPECT_EQ(got.results[0].name, std::string(kMaxResultNameBytes, 'n'));
  EXPECT_EQ(got.results[0].retry_after_ms, 250u);
  EXPECT_EQ(got.results[0].reset_after_ms, 1000u);
  EXPECT_FALSE(got.results[1].has_limit);
  EXPECT_EQ(got.results[2].remaining, UINT32_MAX);

  DescriptorReport error;
  error.request_id = 9;
  error.status = tally::Status::kUnavailable;
  error.error = "descriptor checks need --rules";
  EncodeDescriptorCheckResponse(error, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_EQ(reader.descriptor_report().status, tally::Status::kUnavailable);
  EXPECT_EQ(reader.descriptor_report().error, "descriptor checks need --rules");
  EXPECT_TRUE(reader.descriptor_report().results.empty());
}

// The reply rule's arithmetic: 64 results with the longest names fit one
// datagram, and the bound holds for every name length.
TEST(DescriptorCodecTest, ReportBoundIsAnUpperBoundAndTheLargestAnswerFitsADatagram) {
  for (size_t name :
       {size_t{0}, size_t{1}, size_t{7}, size_t{8}, size_t{255}, size_t{256}, size_t{5000}}) {
    DescriptorReport r;
    r.error = std::string(name, 'e');
    std::vector<size_t> names;
    for (size_t i = 0; i < kMaxQueryDescriptors; ++i) {
      DescriptorOutcome& o = r.results.emplace_back();
      o.name = std::string(name, 'x');
      o.has_limit = true;
      o.limit = UINT32_MAX;
      o.remaining = UINT32_MAX;
      o.retry_after_ms = UINT64_MAX;
      o.reset_after_ms = UINT64_MAX;
      names.push_back(name);
    }
    Bytes bytes;
    EncodeDescriptorCheckResponse(r, &bytes);
    EXPECT_LE(bytes.size(), EncodedDescriptorReportBound(names, name)) << name;
    EXPECT_LE(bytes.size(), kMaxDatagramBytes) << name;
  }
}

// An unknown code or unit from a newer daemon reads as unknown, not as
// whatever the number happens to be.
TEST(DescriptorCodecTest, UnknownEnumerantsDecodeAsUnknown) {
  capnp::MallocMessageBuilder builder;
  auto root = builder.initRoot<ClientMessage>();
  root.setVersion(99);
  auto r = root.initDescriptorCheckResponse();
  r.setOverallCode(static_cast<RateLimitCode>(77));
  auto list = r.initResults(1);
  list[0].setCode(static_cast<RateLimitCode>(3));
  auto flat = capnp::messageToFlatArray(builder);
  auto bytes = flat.asBytes();
  ClientMessageReader reader;
  ASSERT_EQ(
      reader.Decode({reinterpret_cast<const std::byte*>(bytes.begin()), bytes.size()}, nullptr),
      tally::Status::kOk);
  EXPECT_EQ(reader.descriptor_report().overall_code, RateCode::kUnknown);
  EXPECT_EQ(reader.descriptor_report().results[0].code, RateCode::kUnknown);
}

// Whatever the bytes of a query, the decoder returns: every truncation and
// random corruption of a valid descriptor check.
TEST(DescriptorCodecTest, TruncatedAndCorruptedQueriesAreSafe) {
  Bytes bytes;
  EncodeDescriptorCheck(SampleQuery(), &bytes);
  ClientMessageReader reader;
  for (size_t n = 0; n < bytes.size(); n += 8) {
    std::string why;
    reader.Decode(std::span<const std::byte>(bytes.data(), n), &why);
  }
  std::mt19937 rng(11);
  for (int round = 0; round < 2000; ++round) {
    Bytes copy = bytes;
    for (int flips = 0; flips < 4; ++flips) {
      copy[rng() % copy.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
    }
    std::string why;
    if (reader.Decode(copy, &why) == tally::Status::kOk &&
        reader.kind() == MessageKind::kDescriptorCheck) {
      const DescriptorQuery& q = reader.descriptor_query();
      EXPECT_LE(q.descriptors.size(), kMaxQueryDescriptors);
      for (const auto& d : q.descriptors) EXPECT_LE(d.entries.size(), kMaxQueryEntries);
    }
  }
}

}  // namespace
}  // namespace tally::wire

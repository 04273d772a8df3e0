// Protocol 5's runtime limit overrides (check.capnp limitWrite, limitGet,
// limitList and their answers): round trips, the decoder's bounds on
// untrusted queries, padding, and the size bounds the daemon pages by.
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

LimitSelectorValue DescriptorSelector() {
  LimitSelectorValue s;
  s.domain = "messaging";
  s.entries = {{"message_type", "marketing"}, {"to", std::string("a\0b", 3)}, {"k", ""}};
  return s;
}

LimitSelectorValue KeySelector() {
  LimitSelectorValue s;
  s.is_key = true;
  s.user_id = std::string("alice\0x", 7);
  s.endpoint = "/api";
  s.window_ms = 60'000;
  return s;
}

Bytes Flatten(capnp::MessageBuilder& builder) {
  kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
  auto bytes = words.asBytes();
  return Bytes(reinterpret_cast<const std::byte*>(bytes.begin()),
               reinterpret_cast<const std::byte*>(bytes.end()));
}

TEST(LimitCodecTest, WritesRoundTripInBothForms) {
  for (const LimitSelectorValue& selector : {DescriptorSelector(), KeySelector()}) {
    for (bool remove : {false, true}) {
      LimitWriteQuery q;
      q.request_id = 99;
      q.selector = selector;
      q.remove = remove;
      q.limit = remove ? 0 : 4'294'967'295ull;
      q.unit = selector.is_key ? 0 : 2;
      q.window_ms = selector.is_key ? 0 : 1234;
      Bytes bytes;
      EncodeLimitWrite(q, &bytes);
      ClientMessageReader reader;
      std::string why;
      ASSERT_EQ(reader.Decode(bytes, &why), tally::Status::kOk) << why;
      ASSERT_EQ(reader.kind(), MessageKind::kLimitWrite);
      EXPECT_EQ(reader.version(), PROTOCOL_VERSION);
      EXPECT_GE(PROTOCOL_VERSION, 5);  // limit overrides came with 5
      EXPECT_TRUE(reader.limit_query_error().empty());
      EXPECT_EQ(reader.limit_write(), q);
    }
  }
}

TEST(LimitCodecTest, GetAndListRoundTrip) {
  ClientMessageReader reader;
  Bytes bytes;
  EncodeLimitGet(LimitGetQuery{KeySelector()}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kLimitGet);
  EXPECT_EQ(reader.limit_get().selector, KeySelector());
  EncodeLimitList(LimitListQuery{std::string("\x02\0cursor", 8)}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kLimitList);
  EXPECT_EQ(reader.limit_list().cursor, std::string("\x02\0cursor", 8));
  EncodeLimitList(LimitListQuery{}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_TRUE(reader.limit_list().cursor.empty());
  EXPECT_TRUE(reader.limit_query_error().empty());
}

TEST(LimitCodecTest, AnswersRoundTrip) {
  ClientMessageReader reader;
  Bytes bytes;
  for (tally::Status status :
       {tally::Status::kOk, tally::Status::kInvalidArgument, tally::Status::kOverCapacity,
        tally::Status::kPermissionDenied, tally::Status::kUnavailable}) {
    LimitWriteReport w{7, status, status == tally::Status::kOk ? "" : "why", LimitOutcome::kStale,
                       "n1"};
    EncodeLimitWriteResponse(w, &bytes);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    ASSERT_EQ(reader.kind(), MessageKind::kLimitWriteResponse);
    EXPECT_EQ(reader.limit_write_report(), w);
  }
  LimitOverridesReport r;
  r.node_id = "n2";
  r.next_cursor = std::string("\x01\0\0k", 4);
  r.overrides.push_back({DescriptorSelector(), false, 10, 60'000, 1'700'000'000'000});
  r.overrides.push_back({KeySelector(), true, 0, 0, -5});
  EncodeLimitOverridesResponse(r, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kLimitOverridesResponse);
  EXPECT_EQ(reader.limit_overrides_report(), r);
}

TEST(LimitCodecTest, PermissionDeniedIsItsOwnStatus) {
  EXPECT_EQ(tally::StatusName(tally::Status::kPermissionDenied), "permission_denied");
  Bytes bytes;
  EncodeLimitWriteResponse({1, tally::Status::kPermissionDenied, "no", LimitOutcome::kNone, ""},
                           &bytes);
  ClientMessageReader reader;
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_EQ(reader.limit_write_report().status, tally::Status::kPermissionDenied);
}

TEST(LimitCodecTest, QueriesPastTheBoundsDecodeWithAnError) {
  ClientMessageReader reader;
  // Too many selector entries: the write keeps only its id.
  LimitWriteQuery q;
  q.request_id = 5;
  q.selector.domain = "d";
  for (size_t i = 0; i <= kMaxLimitSelectorEntries; ++i) q.selector.entries.emplace_back("k", "v");
  q.limit = 3;
  Bytes bytes;
  EncodeLimitWrite(q, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_NE(reader.limit_query_error().find("entries"), std::string::npos);
  EXPECT_EQ(reader.limit_write().request_id, 5u);
  EXPECT_TRUE(reader.limit_write().selector.entries.empty());
  EXPECT_EQ(reader.limit_write().limit, 0u);
  // The error does not outlive the message.
  EncodeLimitGet(LimitGetQuery{KeySelector()}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_TRUE(reader.limit_query_error().empty());
  // A cursor too long.
  EncodeLimitList(LimitListQuery{std::string(kMaxLimitCursorBytes + 1, 'c')}, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_FALSE(reader.limit_query_error().empty());
  EXPECT_TRUE(reader.limit_list().cursor.empty());
  // No selector at all, in a write and in a get.
  {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<ClientMessage>();
    root.setVersion(PROTOCOL_VERSION);
    root.initLimitWrite().setRequestId(8);
    bytes = Flatten(builder);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    EXPECT_EQ(reader.limit_query_error(), "no selector");
    EXPECT_EQ(reader.limit_write().request_id, 8u);
  }
  {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<ClientMessage>();
    root.setVersion(PROTOCOL_VERSION);
    root.initLimitGet();
    bytes = Flatten(builder);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    EXPECT_EQ(reader.limit_query_error(), "no selector");
  }
}

TEST(LimitCodecTest, PaddedQueriesReachTheSizeAsked) {
  ClientMessageReader reader;
  Bytes bytes;
  for (size_t min_bytes : {size_t{0}, size_t{100}, size_t{2048}, size_t{40'000}}) {
    EncodeLimitWrite(LimitWriteQuery{1, DescriptorSelector(), false, 5, 1, 0}, &bytes, min_bytes);
    EXPECT_GE(bytes.size(), min_bytes);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    EXPECT_EQ(reader.kind(), MessageKind::kLimitWrite);
    EXPECT_EQ(reader.limit_write().limit, 5u);
    EncodeLimitGet(LimitGetQuery{KeySelector()}, &bytes, min_bytes);
    EXPECT_GE(bytes.size(), min_bytes);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    EXPECT_EQ(reader.limit_get().selector, KeySelector());
    EncodeLimitList(LimitListQuery{"c"}, &bytes, min_bytes);
    EXPECT_GE(bytes.size(), min_bytes);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    EXPECT_EQ(reader.limit_list().cursor, "c");
  }
}

// The daemon pages a list by these bounds: they must hold for the largest
// selectors the map accepts (256-byte texts, 16 entries).
TEST(LimitCodecTest, OverrideBoundsAreUpperBounds) {
  std::mt19937 rng(5);
  for (int round = 0; round < 200; ++round) {
    LimitOverridesReport r;
    r.node_id = std::string(rng() % 64, 'n');
    r.error = std::string(rng() % 700, 'e');
    r.next_cursor = std::string(rng() % 9000, 'c');
    if (round % 2 == 0) r.next_cursor.resize(rng() % 64);
    size_t bound = EncodedLimitOverridesEnvelopeBound(r, r.next_cursor.size());
    // Few large entries, or many small ones (a per-entry shortfall adds up).
    const bool many = round % 2 == 0;
    const size_t n = many ? 1 + rng() % 400 : rng() % 5;
    for (size_t i = 0; i < n; ++i) {
      LimitOverrideReport o;
      if (rng() % 2) {
        o.selector.is_key = true;
        o.selector.user_id = std::string(rng() % (many ? 9 : 257), 'u');
        o.selector.endpoint = std::string(rng() % (many ? 9 : 257), 'p');
      } else {
        o.selector.domain = std::string(rng() % (many ? 9 : 257), 'd');
        const size_t entries = many ? rng() % 2 : rng() % 17;
        for (size_t j = 0; j < entries; ++j) {
          o.selector.entries.emplace_back(std::string(rng() % 257, 'k'),
                                          std::string(rng() % 257, 'v'));
        }
      }
      o.limit = rng();
      o.window_ms = rng();
      bound += EncodedLimitOverrideBound(o);
      r.overrides.push_back(std::move(o));
    }
    Bytes bytes;
    EncodeLimitOverridesResponse(r, &bytes);
    if (bytes.size() > kMaxDatagramBytes) continue;  // more than a page ever holds
    EXPECT_LE(bytes.size(), bound) << "round " << round;
  }
}

TEST(LimitCodecTest, TruncatedAndFlippedLimitMessagesAreSafe) {
  Bytes good;
  LimitOverridesReport r;
  r.overrides.push_back({DescriptorSelector(), false, 10, 60'000, 1});
  r.overrides.push_back({KeySelector(), false, 3, 1000, 2});
  EncodeLimitOverridesResponse(r, &good);
  Bytes write;
  EncodeLimitWrite(LimitWriteQuery{1, DescriptorSelector(), false, 5, 1, 0}, &write);
  ClientMessageReader reader;
  for (const Bytes& message : {good, write}) {
    for (size_t cut = 0; cut < message.size(); cut += 8) {
      Bytes part(message.begin(), message.begin() + static_cast<std::ptrdiff_t>(cut));
      EXPECT_NE(reader.Decode(part, nullptr), tally::Status::kOk) << cut;
    }
    for (size_t bit = 0; bit < message.size() * 8; ++bit) {
      Bytes flipped = message;
      flipped[bit / 8] ^= std::byte{static_cast<unsigned char>(1u << (bit % 8))};
      std::string why;
      reader.Decode(flipped, &why);  // any status; never a crash
    }
  }
}

// Protocol 6: an adaptive limit's signal report and its answer.
TEST(LimitCodecTest, SignalReportsAndTheirAnswersRoundTrip) {
  ClientMessageReader reader;
  SignalReportQuery q{7, "api", "backend", 83.25, 120};
  std::vector<std::byte> bytes;
  EncodeSignalReport(q, &bytes, 300);
  EXPECT_GE(bytes.size(), 300u) << "padded";
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  ASSERT_EQ(reader.kind(), MessageKind::kSignalReport);
  EXPECT_EQ(reader.signal_report(), q);
  EXPECT_TRUE(reader.signal_report_error().empty());
  // Count 0 reads as 1; a name beyond 256 bytes is an invalid query, not a drop.
  q.count = 0;
  q.rule = std::string(257, 'r');
  EncodeSignalReport(q, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_FALSE(reader.signal_report_error().empty());
  q.rule = "backend";
  EncodeSignalReport(q, &bytes);
  ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
  EXPECT_EQ(reader.signal_report().count, 1u);
  for (SignalOutcome o : {SignalOutcome::kAccepted, SignalOutcome::kUnknownRule,
                          SignalOutcome::kInvalid}) {
    SignalReportReport r{9, o == SignalOutcome::kAccepted ? tally::Status::kOk
                                                          : tally::Status::kInvalidArgument,
                         o == SignalOutcome::kAccepted ? "" : "why", o};
    EncodeSignalReportResponse(r, &bytes);
    ASSERT_EQ(reader.Decode(bytes, nullptr), tally::Status::kOk);
    ASSERT_EQ(reader.kind(), MessageKind::kSignalReportResponse);
    EXPECT_EQ(reader.signal_report_report(), r);
  }
}

}  // namespace
}  // namespace tally::wire

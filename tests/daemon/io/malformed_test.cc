// Hostile input over every transport: each bad message gets the documented
// answer (or none), the daemon stays up, and nothing counted before is lost.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "tests/daemon/io/raw_client.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

class MalformedTest : public ::testing::TestWithParam<Transport> {
 protected:
  void SetUp() override {
    std::string error;
    ASSERT_TRUE(daemon_.Start(IsolatedArgs(dir_), &error)) << error;
    client_ = ConnectTo(daemon_, GetParam());
    ASSERT_NE(client_, nullptr);
  }

  // Sends `bytes` and expects exactly one error result with request id 0.
  void ExpectOneError(const std::vector<std::byte>& bytes, Status status) {
    ASSERT_TRUE(client_->Send(bytes));
    auto reply = client_->Receive(std::chrono::seconds(5));
    ASSERT_TRUE(reply.has_value()) << "no reply";
    std::vector<CheckResult> results;
    ASSERT_TRUE(DecodeResponses(*reply, &results));
    ASSERT_EQ(results.size(), 1u);
    EXPECT_EQ(results[0].request_id, 0u);
    EXPECT_EQ(results[0].status, status) << results[0].error;
    EXPECT_FALSE(results[0].allowed);
    EXPECT_FALSE(results[0].error.empty());
  }

  CheckRequest Valid(uint64_t id, uint64_t hits = 1) {
    CheckRequest r;
    r.request_id = id;
    r.user_id = "victim";
    r.endpoint = "/api";
    r.limit = 10;
    r.window_ms = 60'000;
    r.hits = hits;
    return r;
  }

  TempDir dir_;
  DaemonProcess daemon_;
  std::unique_ptr<RawClient> client_;
};

std::vector<std::byte> Bytes(std::initializer_list<uint8_t> b) {
  std::vector<std::byte> out;
  for (uint8_t x : b) out.push_back(static_cast<std::byte>(x));
  return out;
}

TEST_P(MalformedTest, BadInputIsAnsweredAndNothingCountedIsLost) {
  // Count 3 hits first.
  CheckResult before = client_->Check(Valid(100, 3));
  ASSERT_EQ(before.status, Status::kOk);
  ASSERT_TRUE(before.allowed);
  ASSERT_EQ(before.remaining, 7u);

  // Random garbage, not a multiple of 8 bytes.
  std::mt19937 rng(42);
  std::vector<std::byte> garbage(37);
  for (auto& b : garbage) b = static_cast<std::byte>(rng());
  ExpectOneError(garbage, Status::kMalformed);

  // Random garbage of a word multiple.
  garbage.resize(64);
  for (auto& b : garbage) b = static_cast<std::byte>(rng());
  ExpectOneError(garbage, Status::kMalformed);

  // A valid message cut short.
  std::vector<std::byte> valid = EncodeRequests({Valid(101)});
  ASSERT_GT(valid.size(), 24u);
  ExpectOneError(std::vector<std::byte>(valid.begin(), valid.begin() + 16), Status::kMalformed);
  ExpectOneError(std::vector<std::byte>(valid.begin(), valid.end() - 8), Status::kMalformed);

  // Eight zero bytes: a segment table for one empty segment, no root.
  ExpectOneError(std::vector<std::byte>(8), Status::kMalformed);

  // One segment that claims 2^28 words but carries one.
  ExpectOneError(Bytes({0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0}), Status::kMalformed);

  // A segment table announcing 2^32 segments.
  ExpectOneError(Bytes({0xff, 0xff, 0xff, 0xff, 1, 0, 0, 0}), Status::kMalformed);

  if (GetParam() == Transport::kUdp) {
    // An empty datagram (seqpacket cannot carry one distinctly from EOF).
    ExpectOneError({}, Status::kMalformed);
  } else {
    // Larger than any reply buffer: the kernel truncates it, we say so.
    ExpectOneError(std::vector<std::byte>(100 * 1024), Status::kMalformed);
  }

  // Decodable but invalid requests: answered per request with their ids.
  CheckRequest huge_user = Valid(102);
  huge_user.user_id.assign(5000, 'x');
  CheckRequest limit_high = Valid(103);
  limit_high.limit = kMaxLimit + 1;
  CheckRequest window_zero = Valid(104);
  window_zero.window_ms = 0;
  CheckRequest window_long = Valid(105);
  window_long.window_ms = kMaxWindowMs + 1;
  CheckRequest empty_user = Valid(106);
  empty_user.user_id.clear();
  auto results = client_->CheckBatch({huge_user, limit_high, window_zero, window_long, empty_user});
  for (const CheckResult& r : results) {
    EXPECT_EQ(r.status, Status::kInvalidArgument) << r.request_id << ": " << r.error;
    EXPECT_FALSE(r.allowed);
    EXPECT_FALSE(r.error.empty());
  }

  // A `responses` message is dropped unanswered (answering would let two
  // daemons ping-pong errors). The next reply is the valid check's.
  CheckResult fake;
  fake.request_id = 7;
  std::vector<std::byte> responses;
  wire::EncodeResponses(std::span<const CheckResult>(&fake, 1), &responses);
  ASSERT_TRUE(client_->Send(responses));

  // The daemon is still up and remembers the 3 hits (hits=0 only asks).
  CheckResult after = client_->Check(Valid(107, 0));
  EXPECT_EQ(after.status, Status::kOk);
  EXPECT_EQ(after.remaining, 7u);
  CheckResult more = client_->Check(Valid(108, 1));
  EXPECT_TRUE(more.allowed);
  EXPECT_EQ(more.remaining, 6u);
  // Nothing else is pending: the responses message got no reply.
  EXPECT_FALSE(client_->Receive(std::chrono::milliseconds(200)).has_value());

  EXPECT_EQ(daemon_.Stop(), 0);
}

TEST_P(MalformedTest, RandomBytesNeverCrashTheDaemon) {
  std::mt19937 rng(GetParam() == Transport::kUdp ? 1 : 2);
  std::vector<std::byte> valid = EncodeRequests({Valid(1)});
  for (int i = 0; i < 300; ++i) {
    std::vector<std::byte> msg = valid;
    // Flip a few bytes of a valid message: the nastiest inputs are near-valid.
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int f = 0; f < flips; ++f)
      msg[rng() % msg.size()] ^= static_cast<std::byte>(1 + rng() % 255);
    ASSERT_TRUE(client_->Send(msg));
    // Most get an error reply, some a decision, a few none (a flip can turn
    // the message into a `responses` one). A ping proves the daemon is alive;
    // CheckBatch skips replies that are not the ping's.
    CheckRequest ping = Valid(10'000 + i, 0);
    ping.user_id = "ping";
    CheckResult pong = client_->Check(ping);
    ASSERT_EQ(pong.status, Status::kOk) << "message " << i << ": " << pong.error;
  }
  CheckResult r = client_->Check(Valid(1000));
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_EQ(daemon_.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, MalformedTest,
                         ::testing::Values(Transport::kUdp, Transport::kUnixDgram,
                                           Transport::kSeqpacket),
                         [](const auto& info) { return TransportName(info.param); });

}  // namespace
}  // namespace tally::testing

// Request-id deduplication through the daemon, and pipelined clients.
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <set>
#include <string>
#include <vector>

#include "tests/daemon/io/raw_client.h"
#include "tests/support/daemon_process.h"
#include "tests/support/requests.h"

namespace tally::testing {
namespace {

// Longer than any run of these tests, even under a sanitizer on a loaded
// machine (the pipeline test took 82 s under ASan at load 25): the counts
// they assert must not depend on the window sliding.
const CheckRequestBuilder kRequest = CheckRequestBuilder().Endpoint("/e").WindowMs(3'600'000);

class DedupTest : public ::testing::TestWithParam<Transport> {};

TEST_P(DedupTest, SameIdCountsOnceDifferentIdCounts) {
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto client = ConnectTo(d, GetParam());
  ASSERT_NE(client, nullptr);

  CheckResult first = client->Check(kRequest.Id(42).User("dup"));
  CheckResult again = client->Check(kRequest.Id(42).User("dup"));
  ASSERT_EQ(first.status, Status::kOk);
  EXPECT_TRUE(first.allowed);
  EXPECT_EQ(first.remaining, 9u);
  // The same answer, and it was not counted a second time.
  EXPECT_EQ(again.status, Status::kOk);
  EXPECT_EQ(again.allowed, first.allowed);
  EXPECT_EQ(again.remaining, first.remaining);
  CheckResult other = client->Check(kRequest.Id(43).User("dup"));
  EXPECT_TRUE(other.allowed);
  EXPECT_EQ(other.remaining, 8u);

  // A denied request keeps being denied on retry, and is not counted either.
  CheckResult deny = client->Check(kRequest.Id(44).User("dup2").Limit(0));
  CheckResult deny_again = client->Check(kRequest.Id(44).User("dup2").Limit(0));
  EXPECT_FALSE(deny.allowed);
  EXPECT_FALSE(deny_again.allowed);
  EXPECT_EQ(d.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(AllTransports, DedupTest,
                         ::testing::Values(Transport::kUdp, Transport::kUnixDgram,
                                           Transport::kSeqpacket),
                         [](const auto& info) { return TransportName(info.param); });

TEST(PipelineTest, SeqpacketClientWith64InFlightCompletesAll) {
  constexpr int kInFlight = 64;
  constexpr int kTotal = 2000;
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto client = ConnectTo(d, Transport::kSeqpacket);
  ASSERT_NE(client, nullptr);

  // Keep 64 requests outstanding at all times; seqpacket never drops, so
  // every one must be answered, in order.
  int sent = 0, received = 0, admitted = 0;
  uint64_t expected_id = 1;
  while (received < kTotal) {
    while (sent < kTotal && sent - received < kInFlight) {
      ++sent;
      ASSERT_TRUE(client->Send(EncodeRequests({kRequest.Id(sent).User("pipe").Limit(1000)})));
    }
    std::vector<CheckResult> results = client->ReceiveResults(std::chrono::seconds(5));
    ASSERT_EQ(results.size(), 1u) << "after " << received << " replies";
    EXPECT_EQ(results[0].request_id, expected_id++);
    EXPECT_EQ(results[0].status, Status::kOk);
    admitted += results[0].allowed ? 1 : 0;
    ++received;
  }
  EXPECT_EQ(admitted, 1000);
  EXPECT_EQ(d.Stop(), 0);
}

TEST(PipelineTest, SeqpacketSlowReaderGetsEveryReplyEventually) {
  // The client sends a burst without reading; the daemon must queue replies
  // it cannot send (EAGAIN) and deliver them once the client reads.
  constexpr int kBurst = 3000;
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto client = ConnectTo(d, Transport::kSeqpacket);
  ASSERT_NE(client, nullptr);
  int sent = 0, received = 0;
  // Non-blocking sends so a full pipe in both directions cannot deadlock us.
  while (received < kBurst) {
    while (sent < kBurst) {
      std::vector<std::byte> msg =
          EncodeRequests({kRequest.Id(sent + 1).User("burst").Limit(1'000'000)});
      ssize_t n = send(client->fd(), msg.data(), msg.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n < 0) {
        ASSERT_TRUE(errno == EAGAIN || errno == EINTR) << strerror(errno);
        break;
      }
      ++sent;
    }
    std::vector<CheckResult> results = client->ReceiveResults(std::chrono::seconds(5));
    ASSERT_EQ(results.size(), 1u) << "after " << received << " replies";
    EXPECT_EQ(results[0].request_id, static_cast<uint64_t>(received + 1));
    ++received;
  }
  EXPECT_EQ(d.Stop(), 0);
}

// Observed Unix datagram behaviour (Linux 6.x, net.unix.max_dgram_qlen = 10):
//   * A sender blocks (or gets EAGAIN if non-blocking) once ~10 datagrams wait
//     in the daemon's queue, so pipelining over a dgram socket stalls.
//   * Replies to a client that connect()ed to the daemon bypass the queue
//     limit (the kernel skips it when the receiver is connected to the
//     sender), so such a client loses nothing: 64 of 64 answered.
//   * Replies to an unconnected client (sendto) stop after ~11 queued: the
//     daemon's non-blocking sendmmsg gets EAGAIN and drops the rest (counted
//     in send_errors), since a Unix dgram socket cannot wait for one peer's
//     queue. Typically 11 of 64 answered; retrying with the same ids (dedup)
//     recovers every answer without double counting.
// Hence the seqpacket socket for pipelining clients.
class UnixDgramPipelineTest : public ::testing::TestWithParam<bool> {};

TEST_P(UnixDgramPipelineTest, RepliesBeyondTheQueueAreRecoveredByRetries) {
  constexpr int kInFlight = 64;
  const bool connected = GetParam();
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir), &error)) << error;
  auto client = RawClient::UnixDgram(d.unix_path(), /*bind_address=*/true, connected);
  ASSERT_NE(client, nullptr);
  for (int i = 1; i <= kInFlight; ++i) {
    ASSERT_TRUE(client->Send(EncodeRequests({kRequest.Id(i).User("dgram").Limit(1000)})));
  }
  std::set<uint64_t> answered;
  for (;;) {
    // Absence of further replies can only be observed by a timeout.
    std::vector<CheckResult> results = client->ReceiveResults(std::chrono::milliseconds(300));
    if (results.empty()) break;
    for (const auto& r : results) answered.insert(r.request_id);
  }
  std::printf("unix dgram (%s client): %zu of %d pipelined requests answered\n",
              connected ? "connected" : "unconnected", answered.size(), kInFlight);
  if (connected) {
    EXPECT_EQ(answered.size(), static_cast<size_t>(kInFlight));
  } else {
    EXPECT_GE(answered.size(), 1u);
  }
  for (int i = 1; i <= kInFlight; ++i) {
    if (answered.count(i)) continue;
    EXPECT_EQ(client->Check(kRequest.Id(i).User("dgram").Limit(1000)).status, Status::kOk);
  }
  // Exactly 64 hits were counted, retries included.
  CheckRequest probe = kRequest.Id(1000).User("dgram").Limit(1000);
  probe.hits = 0;
  EXPECT_EQ(client->Check(probe).remaining, 1000u - kInFlight);
  EXPECT_EQ(d.Stop(), 0);
}

INSTANTIATE_TEST_SUITE_P(ConnectedOrNot, UnixDgramPipelineTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Connected" : "Unconnected"; });

}  // namespace
}  // namespace tally::testing

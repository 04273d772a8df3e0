// Many clients over all three transports on one key: the daemon admits
// exactly `limit` hits, no matter which thread or socket each request took.
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "tests/daemon/io/raw_client.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

TEST(ConcurrencyTest, SixClientsOverThreeTransportsAdmitExactlyTheLimit) {
  constexpr uint64_t kLimit = 500;
  constexpr int kRequestsPerClient = 300;
  const Transport kTransports[] = {Transport::kUdp,       Transport::kUdp,
                                   Transport::kUnixDgram, Transport::kUnixDgram,
                                   Transport::kSeqpacket, Transport::kSeqpacket};
  TempDir dir;
  DaemonProcess d;
  std::string error;
  ASSERT_TRUE(d.Start(IsolatedArgs(dir, {"--threads", "4"}), &error)) << error;

  std::atomic<uint64_t> admitted_a{0}, admitted_b{0}, errors{0};
  std::vector<std::thread> threads;
  for (int c = 0; c < 6; ++c) {
    threads.emplace_back([&, c] {
      auto client = ConnectTo(d, kTransports[c]);
      if (!client) {
        errors += kRequestsPerClient;
        return;
      }
      for (int i = 0; i < kRequestsPerClient; ++i) {
        // Two counters per request: the same user and endpoint under two
        // windows are independent keys. Ids are unique per client, and a
        // resend reuses them, so a lost reply cannot double-count.
        uint64_t id = (static_cast<uint64_t>(c + 1) << 32) | static_cast<uint64_t>(i) << 1;
        CheckRequest a;
        a.request_id = id;
        a.user_id = "shared-user";
        a.endpoint = "/hot";
        a.limit = kLimit;
        a.window_ms = 60'000;
        CheckRequest b = a;
        b.request_id = id | 1;
        b.window_ms = 30'000;
        auto results = client->CheckBatch({a, b});
        for (int k = 0; k < 2; ++k) {
          if (results[k].status != Status::kOk) {
            ++errors;
          } else if (results[k].allowed) {
            ++(k == 0 ? admitted_a : admitted_b);
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(errors.load(), 0u);
  EXPECT_EQ(admitted_a.load(), kLimit);
  EXPECT_EQ(admitted_b.load(), kLimit);

  // Afterwards the key is exhausted for everybody.
  auto probe = ConnectTo(d, Transport::kUdp);
  CheckRequest p;
  p.request_id = 1;
  p.user_id = "shared-user";
  p.endpoint = "/hot";
  p.limit = kLimit;
  p.window_ms = 60'000;
  CheckResult r = probe->Check(p);
  EXPECT_EQ(r.status, Status::kOk);
  EXPECT_FALSE(r.allowed);
  EXPECT_EQ(r.remaining, 0u);
  EXPECT_EQ(d.Stop(), 0);
}

}  // namespace
}  // namespace tally::testing

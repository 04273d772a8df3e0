// Client library against in-test fake servers: retries, timeouts, batching,
// pipelining and hostile replies.
#include "tally/client.h"

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "client/client_internal.h"
#include "fake_server.h"
#include "wire/codec.h"

namespace tally {
namespace {

using testing::EncodeAnswers;
using testing::FakeAnswer;
using testing::FakeUdpServer;
using testing::ReceivedDatagram;
using testing::Replies;

DaemonAddress Local(uint16_t port) {
  DaemonAddress endpoint;
  endpoint.host = "127.0.0.1";
  endpoint.port = port;
  return endpoint;
}

std::unique_ptr<Client> ConnectOrDie(uint16_t port, ClientOptions options) {
  std::string error;
  auto client = Client::Connect(Local(port), options, &error);
  EXPECT_NE(client, nullptr) << error;
  return client;
}

// SendBatch and Receive are tally-load's calls (client/client_internal.h).
std::unique_ptr<PipelinedClient> ConnectPipelinedOrDie(uint16_t port, ClientOptions options) {
  std::string error;
  auto client = PipelinedClient::Connect(Local(port), options, &error);
  EXPECT_NE(client, nullptr) << error;
  return client;
}

CheckRequest Request(std::string user, uint64_t limit = 10) {
  CheckRequest request;
  request.user_id = std::move(user);
  request.endpoint = "/api";
  request.limit = limit;
  request.window_ms = 1000;
  return request;
}

// Answers every check of every decodable datagram, in order.
void AnswerAll(const ReceivedDatagram& datagram, Replies* replies) {
  if (datagram.decode_status != Status::kOk) return;
  std::vector<CheckResult> results;
  for (const auto& check : datagram.reader->checks()) results.push_back(FakeAnswer(check));
  replies->push_back(EncodeAnswers(results));
}

TEST(ClientTest, RetryReusesRequestId) {
  FakeUdpServer server([](const ReceivedDatagram& datagram, Replies* replies) {
    if (datagram.index == 0) return;  // lose the first one
    AnswerAll(datagram, replies);
  });
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(100);
  options.attempts = 3;
  auto client = ConnectOrDie(server.port(), options);
  ASSERT_NE(client, nullptr);

  CheckResult result = client->Check(Request("alice", 42));
  EXPECT_EQ(result.status, Status::kOk) << result.error;
  EXPECT_EQ(result.limit, 42u);
  std::vector<uint64_t> ids = server.received_ids();
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[0], ids[1]);
  EXPECT_EQ(result.request_id, ids[0]);
  EXPECT_NE(ids[0], 0u);
}

TEST(ClientTest, CallerChosenRequestIdIsSentAsIs) {
  FakeUdpServer server(AnswerAll);
  auto client = ConnectOrDie(server.port(), {});
  ASSERT_NE(client, nullptr);
  CheckRequest request = Request("bob");
  request.request_id = 12345;
  CheckResult result = client->Check(request);
  EXPECT_EQ(result.status, Status::kOk) << result.error;
  EXPECT_EQ(result.request_id, 12345u);
  EXPECT_EQ(server.received_ids(), std::vector<uint64_t>{12345});
}

TEST(ClientTest, TimeoutGivesUnavailableWithClearError) {
  FakeUdpServer silent(nullptr);
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(30);
  options.attempts = 2;
  auto client = ConnectOrDie(silent.port(), options);
  ASSERT_NE(client, nullptr);

  auto start = std::chrono::steady_clock::now();
  CheckResult result = client->Check(Request("carol"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  EXPECT_EQ(result.status, Status::kUnavailable);
  EXPECT_FALSE(result.allowed);
  EXPECT_EQ(result.error,
            "no reply from 127.0.0.1:" + std::to_string(silent.port()) + " after 2 attempts");
  EXPECT_GE(elapsed, std::chrono::milliseconds(60));
  EXPECT_LT(elapsed, std::chrono::seconds(5));
  // Both sends happened (the server may still be reading the second).
  EXPECT_LE(silent.received_ids().size(), 2u);
}

TEST(ClientTest, ConnectionRefusedIsUnavailableFast) {
  // Take a free port, then close it so nothing listens there.
  int fd = ::socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);

  ClientOptions options;
  options.timeout = std::chrono::milliseconds(2000);
  auto client = ConnectOrDie(ntohs(addr.sin_port), options);
  ASSERT_NE(client, nullptr);
  auto start = std::chrono::steady_clock::now();
  CheckResult result = client->Check(Request("dave"));
  EXPECT_EQ(result.status, Status::kUnavailable);
  EXPECT_NE(result.error.find("refused"), std::string::npos) << result.error;
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(1500));
}

TEST(ClientTest, IgnoresGarbageAndStaleReplies) {
  FakeUdpServer server([](const ReceivedDatagram& datagram, Replies* replies) {
    if (datagram.decode_status != Status::kOk) return;
    const auto& check = datagram.reader->checks().at(0);
    // Garbage, an empty datagram, a reply for another id, a checks message,
    // then the real answer.
    replies->push_back({std::byte{0xde}, std::byte{0xad}, std::byte{0xbe}, std::byte{0xef}});
    replies->push_back(std::vector<std::byte>(16, std::byte{0xff}));
    CheckResult stale = FakeAnswer(check);
    stale.request_id = check.request_id + 1;
    replies->push_back(EncodeAnswers({stale}));
    replies->push_back(datagram.bytes);
    CheckResult weird = FakeAnswer(check);
    weird.status = Status::kInternal;
    weird.allowed = true;  // violates the invariant: the client must clear it
    replies->push_back(EncodeAnswers({weird}));
  });
  auto client = ConnectOrDie(server.port(), {});
  ASSERT_NE(client, nullptr);
  CheckResult result = client->Check(Request("erin"));
  EXPECT_EQ(result.status, Status::kInternal);
  EXPECT_FALSE(result.allowed);
}

TEST(ClientTest, SurvivesMutatedReplies) {
  // Bit flips, truncations and extensions of a valid reply, then the reply:
  // the client must never crash, and whatever it returns keeps the invariants.
  std::mt19937 rng(7);
  FakeUdpServer server([&rng](const ReceivedDatagram& datagram, Replies* replies) {
    if (datagram.decode_status != Status::kOk) return;
    CheckResult answer = FakeAnswer(datagram.reader->checks().at(0));
    answer.error = "some text";
    std::vector<std::byte> valid = EncodeAnswers({answer});
    for (int i = 0; i < 20; ++i) {
      std::vector<std::byte> bad = valid;
      for (int flips = 1 + static_cast<int>(rng() % 4); flips > 0; --flips) {
        bad[rng() % bad.size()] ^= static_cast<std::byte>(1u << (rng() % 8));
      }
      if (i % 5 == 1) bad.resize(rng() % bad.size());
      if (i % 5 == 2) bad.resize(bad.size() + 8 * (rng() % 4), std::byte{0xff});
      replies->push_back(std::move(bad));
    }
    replies->push_back(std::move(valid));
  });
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(200);
  auto client = ConnectOrDie(server.port(), options);
  ASSERT_NE(client, nullptr);
  for (int i = 0; i < 100; ++i) {
    CheckResult result = client->Check(Request("fuzz"));
    ASSERT_LE(static_cast<int>(result.status), static_cast<int>(Status::kInternal));
    if (result.status != Status::kOk) {
      EXPECT_FALSE(result.allowed);
    }
  }
}

TEST(ClientTest, RequestIdsIncreaseAndSkipZero) {
  FakeUdpServer server(nullptr);
  ClientOptions options;
  options.first_request_id = UINT64_MAX - 1;
  auto client = ConnectOrDie(server.port(), options);
  ASSERT_NE(client, nullptr);
  EXPECT_EQ(client->NextRequestId(), UINT64_MAX - 1);
  EXPECT_EQ(client->NextRequestId(), UINT64_MAX);
  EXPECT_EQ(client->NextRequestId(), 1u);
  EXPECT_EQ(client->NextRequestId(), 2u);

  auto random1 = ConnectOrDie(server.port(), {});
  auto random2 = ConnectOrDie(server.port(), {});
  ASSERT_NE(random1, nullptr);
  ASSERT_NE(random2, nullptr);
  uint64_t a = random1->NextRequestId();
  EXPECT_NE(a, random2->NextRequestId());  // 2^-64 flake odds
  EXPECT_EQ(random1->NextRequestId(), a + 1 == 0 ? 1 : a + 1);
}

TEST(ClientTest, CheckManyOutOfOrderWithLossKeepsRequestOrder) {
  // Answers each datagram in reverse order, split into several reply
  // datagrams sent last-first, and loses every 7th check the first time.
  std::mutex mu;
  std::set<uint64_t> dropped_once;
  FakeUdpServer server([&](const ReceivedDatagram& datagram, Replies* replies) {
    if (datagram.decode_status != Status::kOk) return;
    std::vector<CheckResult> answers;
    for (const auto& check : datagram.reader->checks()) {
      std::lock_guard<std::mutex> lock(mu);
      if (check.window_ms % 7 == 0 && dropped_once.insert(check.request_id).second) continue;
      answers.push_back(FakeAnswer(check));
    }
    std::reverse(answers.begin(), answers.end());
    for (size_t begin = 0; begin < answers.size(); begin += 300) {
      size_t end = std::min(answers.size(), begin + 300);
      replies->push_back(
          EncodeAnswers(std::vector<CheckResult>(answers.begin() + begin, answers.begin() + end)));
    }
    std::reverse(replies->begin(), replies->end());
  });
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(200);
  options.attempts = 3;
  auto client = ConnectOrDie(server.port(), options);
  ASSERT_NE(client, nullptr);

  constexpr size_t kCount = 5000;
  std::vector<CheckRequest> requests;
  for (size_t i = 0; i < kCount; ++i) {
    CheckRequest request = Request("user-" + std::to_string(i), 1000 + i);
    request.window_ms = 1 + i;                     // echoed back in `remaining`
    if (i == 17) request.request_id = 99'999'999;  // a caller-chosen id among assigned ones
    requests.push_back(request);
  }
  std::vector<CheckResult> results = client->CheckMany(requests);
  ASSERT_EQ(results.size(), kCount);
  std::set<uint64_t> ids;
  for (size_t i = 0; i < kCount; ++i) {
    ASSERT_EQ(results[i].status, Status::kOk) << i << ": " << results[i].error;
    EXPECT_EQ(results[i].limit, 1000 + i) << i;
    EXPECT_EQ(results[i].remaining, 1 + i) << i;
    ids.insert(results[i].request_id);
  }
  EXPECT_EQ(results[17].request_id, 99'999'999u);
  EXPECT_EQ(ids.size(), kCount);
  EXPECT_FALSE(dropped_once.empty());
  // Few datagrams: a datagram holds hundreds of such checks.
  EXPECT_LT(server.datagrams(), 40);
  // Only the lost ones were resent.
  EXPECT_EQ(server.received_ids().size(), kCount + dropped_once.size());
}

TEST(ClientTest, CheckManyGivesUpPerRequest) {
  // Never answers requests for user "ghost".
  FakeUdpServer server([](const ReceivedDatagram& datagram, Replies* replies) {
    if (datagram.decode_status != Status::kOk) return;
    std::vector<CheckResult> answers;
    for (const auto& check : datagram.reader->checks()) {
      if (check.user_id != "ghost") answers.push_back(FakeAnswer(check));
    }
    replies->push_back(EncodeAnswers(answers));
  });
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(30);
  options.attempts = 2;
  auto client = ConnectOrDie(server.port(), options);
  ASSERT_NE(client, nullptr);
  std::vector<CheckRequest> requests = {Request("a"), Request("ghost"), Request("b")};
  std::vector<CheckResult> results = client->CheckMany(requests);
  ASSERT_EQ(results.size(), 3u);
  EXPECT_EQ(results[0].status, Status::kOk);
  EXPECT_EQ(results[1].status, Status::kUnavailable);
  EXPECT_NE(results[1].error.find("after 2 attempts"), std::string::npos) << results[1].error;
  EXPECT_EQ(results[2].status, Status::kOk);
  EXPECT_TRUE(client->CheckMany({}).empty());
}

TEST(ClientTest, OversizedRequestIsRejectedLocally) {
  FakeUdpServer server(AnswerAll);
  auto client = ConnectOrDie(server.port(), {});
  ASSERT_NE(client, nullptr);
  CheckRequest request = Request(std::string(70'000, 'x'));
  EXPECT_EQ(client->Check(request).status, Status::kInvalidArgument);
  std::vector<CheckRequest> many = {request, Request("ok")};
  auto results = client->CheckMany(many);
  EXPECT_EQ(results[0].status, Status::kInvalidArgument);
  EXPECT_EQ(results[1].status, Status::kOk);
  EXPECT_EQ(server.received_ids().size(), 1u);
}

TEST(ClientTest, SendBatchAndReceiveAcceptEchoes) {
  // A raw echo server: sends every datagram back unchanged.
  FakeUdpServer echo([](const ReceivedDatagram& datagram, Replies* replies) {
    replies->push_back(datagram.bytes);
  });
  auto client = ConnectPipelinedOrDie(echo.port(), {});
  ASSERT_NE(client, nullptr);
  std::vector<CheckRequest> owned = {Request("x"), Request("y"), Request("z")};
  std::vector<CheckRequestRef> batch;
  for (auto& request : owned) {
    request.request_id = client->NextRequestId();
    batch.push_back(request);
  }
  std::string error;
  ASSERT_TRUE(client->SendBatch(batch, &error)) << error;
  std::vector<CheckResult> out;
  size_t got = 0;
  for (int i = 0; i < 50 && got < 3; ++i)
    got += client->Receive(std::chrono::milliseconds(100), &out);
  ASSERT_EQ(got, 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i].request_id, owned[i].request_id);
    EXPECT_EQ(out[i].status, Status::kOk);
    EXPECT_TRUE(out[i].allowed);
  }
  // Nothing more: Receive times out and appends nothing.
  EXPECT_EQ(client->Receive(std::chrono::milliseconds(10), &out), 0u);
}

TEST(ClientTest, SendBatchRejectsWhatCannotFit) {
  FakeUdpServer server(nullptr);
  auto client = ConnectPipelinedOrDie(server.port(), {});
  ASSERT_NE(client, nullptr);
  std::string user(4000, 'u');
  CheckRequest big = Request(user);
  std::vector<CheckRequestRef> batch(20, CheckRequestRef(big));
  std::string error;
  EXPECT_FALSE(client->SendBatch(batch, &error));
  EXPECT_NE(error.find("does not fit"), std::string::npos) << error;
  EXPECT_TRUE(client->SendBatch({}, &error));
}

TEST(ClientTest, ConnectReportsBadEndpoints) {
  std::string error;
  DaemonAddress bad = Local(7070);
  bad.host = "not-an-ip";
  EXPECT_EQ(Client::Connect(bad, {}, &error), nullptr);
  EXPECT_NE(error.find("not-an-ip"), std::string::npos) << error;
  EXPECT_EQ(Client::Connect(DaemonAddress::Unix("/nonexistent/tally.sock"), {}, &error), nullptr);
  EXPECT_NE(error.find("/nonexistent/tally.sock"), std::string::npos) << error;
  EXPECT_EQ(Client::Connect(DaemonAddress::Unix(std::string(200, 'p')), {}, &error), nullptr);
  EXPECT_EQ(Client::Connect(DaemonAddress::Unix(""), {}, &error), nullptr);
}

}  // namespace
}  // namespace tally

// GrpcH2Session (daemon/rls/grpc_h2_session.h) against an in-process nghttp2
// client: bytes go back and forth in memory, no socket, no thread.
#include "daemon/rls/grpc_h2_session.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace tally::rls {
namespace {

constexpr std::string_view kPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";

std::string Frame(std::string_view message, bool compressed = false) {
  std::string out(5, '\0');
  out[0] = compressed ? 1 : 0;
  const auto n = static_cast<uint32_t>(message.size());
  out[1] = static_cast<char>(n >> 24);
  out[2] = static_cast<char>(n >> 16);
  out[3] = static_cast<char>(n >> 8);
  out[4] = static_cast<char>(n);
  return out + std::string(message);
}

// What the client got on one stream.
struct Reply {
  std::map<std::string, std::string> headers;   // the first HEADERS
  std::map<std::string, std::string> trailers;  // a second HEADERS, if any
  std::string data;
  bool closed = false;
  uint32_t reset_code = 0;
  int header_blocks = 0;
};

class Client {
 public:
  Client() {
    nghttp2_session_callbacks* cb = nullptr;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, OnHeader);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, OnBeginHeaders);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, OnClose);
    nghttp2_session_client_new(&session_, cb, this);
    nghttp2_session_callbacks_del(cb);
    nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, nullptr, 0);
  }
  ~Client() { nghttp2_session_del(session_); }

  int32_t Call(std::string body, std::string_view path = kPath,
               std::string_view content_type = "application/grpc",
               std::string_view method = "POST") {
    bodies_.push_back(std::make_unique<Body>(Body{std::move(body), 0}));
    const nghttp2_nv headers[] = {
        Nv(":method", method),
        Nv(":scheme", "http"),
        Nv(":authority", "tally"),
        Nv(":path", path),
        Nv("content-type", content_type),
        Nv("te", "trailers"),
    };
    nghttp2_data_provider provider{};
    provider.source.ptr = bodies_.back().get();
    provider.read_callback = ReadBody;
    return nghttp2_submit_request(session_, nullptr, headers, 6, &provider, nullptr);
  }
  void Reset(int32_t stream) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream, NGHTTP2_CANCEL);
  }

  // Moves bytes both ways until neither side has any to send.
  void Pump(GrpcH2Session& server) {
    for (int round = 0; round < 100; ++round) {
      bool moved = false;
      const uint8_t* data = nullptr;
      ssize_t n;
      while ((n = nghttp2_session_mem_send(session_, &data)) > 0) {
        moved = true;
        server_ok_ = server.Receive({data, static_cast<size_t>(n)}) && server_ok_;
      }
      std::string out;
      ASSERT_TRUE(server.Send(&out) || !server_ok_);
      if (!out.empty()) {
        moved = true;
        nghttp2_session_mem_recv(session_, reinterpret_cast<const uint8_t*>(out.data()),
                                 out.size());
      }
      if (!moved) return;
    }
    FAIL() << "no quiet after 100 rounds";
  }

  std::map<int32_t, Reply> replies;
  bool server_ok_ = true;

 private:
  struct Body {
    std::string bytes;
    size_t sent;
  };
  static nghttp2_nv Nv(std::string_view n, std::string_view v) {
    return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                      reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                      NGHTTP2_NV_FLAG_NONE};
  }
  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buf, size_t len, uint32_t* flags,
                          nghttp2_data_source* source, void*) {
    auto* body = static_cast<Body*>(source->ptr);
    const size_t n = std::min(len, body->bytes.size() - body->sent);
    std::memcpy(buf, body->bytes.data() + body->sent, n);
    body->sent += n;
    if (body->sent == body->bytes.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }
  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* self) {
    ++static_cast<Client*>(self)->replies[frame->hd.stream_id].header_blocks;
    return 0;
  }
  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t namelen, const uint8_t* value, size_t valuelen, uint8_t, void* self) {
    Reply& r = static_cast<Client*>(self)->replies[frame->hd.stream_id];
    auto& into = r.header_blocks > 1 ? r.trailers : r.headers;
    into[std::string(reinterpret_cast<const char*>(name), namelen)] =
        std::string(reinterpret_cast<const char*>(value), valuelen);
    return 0;
  }
  static int OnData(nghttp2_session*, uint8_t, int32_t stream, const uint8_t* data, size_t len,
                    void* self) {
    static_cast<Client*>(self)->replies[stream].data.append(reinterpret_cast<const char*>(data),
                                                            len);
    return 0;
  }
  static int OnClose(nghttp2_session*, int32_t stream, uint32_t code, void* self) {
    Reply& r = static_cast<Client*>(self)->replies[stream];
    r.closed = true;
    r.reset_code = code;
    return 0;
  }

  nghttp2_session* session_ = nullptr;
  std::vector<std::unique_ptr<Body>> bodies_;
};

struct Received {
  int32_t stream;
  std::string path;
  std::string message;
};

class GrpcH2SessionTest : public ::testing::Test {
 protected:
  GrpcH2SessionTest()
      : server_(
            limits(), [](std::string_view path) { return path == kPath; },
            [this](int32_t stream, std::string_view path, std::string message) {
              calls_.push_back(Received{stream, std::string(path), std::move(message)});
            }) {}
  static GrpcH2Limits limits() {
    GrpcH2Limits l;
    l.max_message_bytes = 1000;
    l.max_concurrent_streams = 8;
    return l;
  }
  // The grpc-status the client got, from the trailers or a trailers-only HEADERS.
  static std::string StatusOf(const Reply& r) {
    auto it = r.trailers.find("grpc-status");
    if (it != r.trailers.end()) return it->second;
    it = r.headers.find("grpc-status");
    return it == r.headers.end() ? "" : it->second;
  }

  GrpcH2Session server_;
  Client client_;
  std::vector<Received> calls_;
};

TEST_F(GrpcH2SessionTest, AUnaryCallIsAnsweredWithItsMessageAndTrailers) {
  const int32_t stream = client_.Call(Frame("request bytes"));
  client_.Pump(server_);
  ASSERT_EQ(calls_.size(), 1u);
  EXPECT_EQ(calls_[0].stream, stream);
  EXPECT_EQ(calls_[0].path, kPath);
  EXPECT_EQ(calls_[0].message, "request bytes");
  EXPECT_FALSE(client_.replies[stream].closed) << "not answered yet";
  EXPECT_EQ(server_.open_calls(), 1u);

  server_.Complete(stream, GrpcStatusCode::kOk, "", "response bytes");
  client_.Pump(server_);
  const Reply& r = client_.replies[stream];
  EXPECT_TRUE(r.closed);
  EXPECT_EQ(r.reset_code, 0u);
  EXPECT_EQ(r.headers.at(":status"), "200");
  EXPECT_EQ(r.headers.at("content-type"), "application/grpc");
  EXPECT_EQ(r.data, Frame("response bytes"));
  EXPECT_EQ(r.trailers.at("grpc-status"), "0");
  EXPECT_EQ(server_.open_calls(), 0u);
  // A second answer, or one for a stream that never was, does nothing.
  server_.Complete(stream, GrpcStatusCode::kOk, "", "again");
  server_.Complete(999, GrpcStatusCode::kOk, "", "nobody");
  client_.Pump(server_);
  EXPECT_EQ(client_.replies[stream].data, Frame("response bytes"));
}

TEST_F(GrpcH2SessionTest, ManyCallsOnOneConnectionAreAnsweredInAnyOrder) {
  std::vector<int32_t> streams;
  for (int i = 0; i < 6; ++i) streams.push_back(client_.Call(Frame("m" + std::to_string(i))));
  client_.Pump(server_);
  ASSERT_EQ(calls_.size(), 6u);
  for (auto it = calls_.rbegin(); it != calls_.rend(); ++it) {
    server_.Complete(it->stream, GrpcStatusCode::kOk, "", "re:" + it->message);
  }
  client_.Pump(server_);
  for (size_t i = 0; i < calls_.size(); ++i) {
    EXPECT_EQ(client_.replies[calls_[i].stream].data, Frame("re:" + calls_[i].message));
    EXPECT_EQ(StatusOf(client_.replies[calls_[i].stream]), "0");
  }
}

TEST_F(GrpcH2SessionTest, ErrorsAreTrailersOnlyWithAPercentEncodedMessage) {
  const int32_t stream = client_.Call(Frame("x"));
  client_.Pump(server_);
  server_.Complete(stream, GrpcStatusCode::kUnavailable, "no owner: 100%\n", "");
  client_.Pump(server_);
  const Reply& r = client_.replies[stream];
  EXPECT_EQ(r.header_blocks, 1);
  EXPECT_EQ(r.headers.at(":status"), "200");
  EXPECT_EQ(r.headers.at("grpc-status"), "14");
  EXPECT_EQ(r.headers.at("grpc-message"), "no owner: 100%25%0A");
  EXPECT_TRUE(r.data.empty());
  EXPECT_TRUE(r.closed);
}

TEST_F(GrpcH2SessionTest, BadCallsAreRefusedWithoutReachingTheHandler) {
  const int32_t unknown = client_.Call(Frame("x"), "/other.Service/Method");
  const int32_t compressed = client_.Call(Frame("x", /*compressed=*/true));
  const int32_t too_large = client_.Call(Frame(std::string(5000, 'a')));
  const int32_t two = client_.Call(Frame("a") + Frame("b"));
  const int32_t truncated = client_.Call(Frame("abcdef").substr(0, 8));
  const int32_t empty = client_.Call("");
  const int32_t get = client_.Call(Frame("x"), kPath, "application/grpc", "GET");
  const int32_t text = client_.Call(Frame("x"), kPath, "text/plain");
  client_.Pump(server_);
  EXPECT_TRUE(calls_.empty());
  EXPECT_EQ(StatusOf(client_.replies[unknown]), "12");
  EXPECT_EQ(StatusOf(client_.replies[compressed]), "12");
  EXPECT_EQ(StatusOf(client_.replies[too_large]), "8");
  EXPECT_NE(client_.replies[too_large].headers["grpc-message"].find("1000"), std::string::npos);
  EXPECT_EQ(StatusOf(client_.replies[two]), "13");
  EXPECT_EQ(StatusOf(client_.replies[truncated]), "13");
  EXPECT_EQ(StatusOf(client_.replies[empty]), "13");
  EXPECT_EQ(client_.replies[get].headers[":status"], "405");
  EXPECT_EQ(client_.replies[text].headers[":status"], "415");
  for (int32_t s : {unknown, compressed, too_large, two, truncated, empty, get, text}) {
    EXPECT_TRUE(client_.replies[s].closed) << s;
  }
  EXPECT_EQ(server_.open_calls(), 0u);
  // The connection still serves.
  const int32_t good = client_.Call(Frame("fine"));
  client_.Pump(server_);
  ASSERT_EQ(calls_.size(), 1u);
  server_.Complete(good, GrpcStatusCode::kOk, "", "ok");
  client_.Pump(server_);
  EXPECT_EQ(StatusOf(client_.replies[good]), "0");
}

TEST_F(GrpcH2SessionTest, AnUnknownPathIsNotEchoedWhole) {
  const std::string path = "/" + std::string(900, '%');
  const int32_t stream = client_.Call(Frame("x"), path);
  client_.Pump(server_);
  const Reply& r = client_.replies[stream];
  EXPECT_EQ(StatusOf(r), "12");
  EXPECT_LE(r.headers.at("grpc-message").size(), 16u + 3 * 64u) << r.headers.at("grpc-message");
}

// Shutdown: GOAWAY; the calls taken are still answered, then the session is
// done (the driver closes the connection).
TEST_F(GrpcH2SessionTest, AShutdownAnswersTheCallsTakenThenIsDone) {
  const int32_t stream = client_.Call(Frame("x"));
  client_.Pump(server_);
  ASSERT_EQ(calls_.size(), 1u);
  server_.Shutdown();
  client_.Pump(server_);
  EXPECT_FALSE(server_.Done()) << "a call is still open";
  server_.Complete(stream, GrpcStatusCode::kOk, "", "last");
  client_.Pump(server_);
  EXPECT_EQ(client_.replies[stream].data, Frame("last"));
  EXPECT_EQ(StatusOf(client_.replies[stream]), "0");
  EXPECT_TRUE(server_.Done());
}

TEST_F(GrpcH2SessionTest, ACallTheClientResetIsDroppedAndItsLateAnswerIgnored) {
  const int32_t stream = client_.Call(Frame("x"));
  client_.Pump(server_);
  ASSERT_EQ(calls_.size(), 1u);
  client_.Reset(stream);
  client_.Pump(server_);
  EXPECT_EQ(server_.open_calls(), 0u);
  server_.Complete(stream, GrpcStatusCode::kOk, "", "late");
  client_.Pump(server_);
  EXPECT_TRUE(client_.replies[stream].data.empty());
}

// At most max_concurrent_streams calls are open at once: a client that
// honours the setting queues the rest, one that sent them before it heard the
// setting has them refused (REFUSED_STREAM, safe to retry); every call ends.
TEST_F(GrpcH2SessionTest, CallsStayWithinTheConcurrencyBound) {
  std::vector<int32_t> streams;
  for (int i = 0; i < 20; ++i) streams.push_back(client_.Call(Frame("m")));
  size_t answered = 0;
  for (int round = 0; round < 10 && answered < calls_.size() + 1; ++round) {
    client_.Pump(server_);
    EXPECT_LE(server_.open_calls(), 8u);
    for (size_t i = answered; i < calls_.size(); ++i) {
      server_.Complete(calls_[i].stream, GrpcStatusCode::kOk, "", "r");
    }
    answered = calls_.size();
  }
  client_.Pump(server_);
  size_t served = 0, refused = 0;
  for (int32_t s : streams) {
    const Reply& r = client_.replies[s];
    EXPECT_TRUE(r.closed) << s;
    if (r.reset_code == NGHTTP2_REFUSED_STREAM) {
      ++refused;
    } else if (StatusOf(r) == "0") {
      ++served;
    }
  }
  EXPECT_EQ(served + refused, streams.size());
  EXPECT_EQ(served, calls_.size());
  EXPECT_EQ(server_.open_calls(), 0u);
}

TEST_F(GrpcH2SessionTest, BytesThatAreNotHttp2EndTheConnection) {
  const std::string junk = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  EXPECT_FALSE(server_.Receive({reinterpret_cast<const uint8_t*>(junk.data()), junk.size()}));
  std::string out;
  server_.Send(&out);
  EXPECT_TRUE(calls_.empty());
}

TEST(GrpcMessageTest, PercentEncodesWhatTheSpecAsks) {
  EXPECT_EQ(PercentEncodeGrpcMessage("plain text: ok"), "plain text: ok");
  EXPECT_EQ(PercentEncodeGrpcMessage("50%"), "50%25");
  EXPECT_EQ(PercentEncodeGrpcMessage("a\tb\xc3\xa9"), "a%09b%C3%A9");
}

}  // namespace
}  // namespace tally::rls

// RunGrpcLoad's default client (RlsLoadOptions::GrpcClient::kNghttp2): gRPC
// unary calls framed by hand over nghttp2's HTTP/2 client session, one
// thread and poll(2) over every connection.
//
// Why not only the C++ gRPC client: the load generator shares the machine
// with tallyd, and gRPC's client costs about as much CPU per call as gRPC's
// server (docs/ENVOY.md, "Speed"), so with it a 2-core machine measures the
// two together. Envoy itself speaks to a rate limit service over its own
// HTTP/2 codec (nghttp2 for most of its history), not gRPC's library; this
// client is that kind of caller, and a check that the door speaks the
// protocol as written (RFC 9113 and gRPC's "PROTOCOL-HTTP2") rather than only
// as gRPC's own client happens to.
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "bench/rls_load.h"
#include "bench/rls_load_internal.h"
#include "envoy/service/ratelimit/v3/rls.pb.h"

namespace tally::load {
namespace {

namespace rlsv3 = envoy::service::ratelimit::v3;

constexpr char kPath[] = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
constexpr size_t kGrpcPrefixBytes = 5;  // compressed flag, 4-byte big-endian length

struct H2Connection;

// One call: its framed request going out, its answer coming in.
struct H2Call {
  H2Connection* connection = nullptr;
  Clock::time_point started;
  std::string request;  // gRPC-framed RateLimitRequest
  size_t request_sent = 0;
  std::string answer;  // DATA bytes received
  int http_status = 0;
  int grpc_status = -1;  // -1: no grpc-status header
  std::string grpc_message;
  bool timed_out = false;
  int32_t stream = 0;  // its HTTP/2 stream, while open
};

struct H2Connection {
  int fd = -1;
  nghttp2_session* session = nullptr;
  std::string out;  // bytes nghttp2 produced that the socket has not taken yet
  size_t out_sent = 0;
  bool settings_received = false;
  bool dead = false;
  std::vector<H2Call*> open;  // calls whose streams are open
  ~H2Connection() {
    if (session != nullptr) nghttp2_session_del(session);
    if (fd >= 0) ::close(fd);
  }
};

class H2Run {
 public:
  H2Run(const RlsLoadOptions& options, RlsLoadResult* result) : options_(options), result_(result) {
    request_.set_domain(options.domain);
    auto* entry = request_.add_descriptors()->add_entries();
    entry->set_key(options.key);
    value_ = entry;
    authority_ = options.target;
    timeout_header_ = std::to_string(options.timeout.count()) + "m";
    latencies_us_.reserve(1 << 20);
  }

  bool Connect(const std::string& host, uint16_t port, std::string* error) {
    addrinfo hints{};
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* found = nullptr;
    const int rc = getaddrinfo(host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) {
      *error = "cannot resolve " + host + ": " + gai_strerror(rc);
      return false;
    }
    std::unique_ptr<addrinfo, decltype(&freeaddrinfo)> addresses(found, freeaddrinfo);
    const Clock::time_point deadline =
        Clock::now() + std::max(options_.timeout, kMinConnectTimeout);
    for (int c = 0; c < options_.channels; ++c) {
      auto connection = std::make_unique<H2Connection>();
      if (!Open(*found, deadline, connection.get(), error)) return false;
      connections_.push_back(std::move(connection));
    }
    // Connected means the server's SETTINGS came back on every connection.
    while (true) {
      const bool all = std::all_of(connections_.begin(), connections_.end(),
                                   [](const auto& c) { return c->settings_received; });
      if (all) break;
      if (Clock::now() >= deadline || !Pump(std::chrono::milliseconds(100))) {
        *error = "cannot connect to " + options_.target + " (no HTTP/2 SETTINGS from the server)";
        return false;
      }
    }
    result_->connections = options_.channels;
    return true;
  }

  void Run() {
    const Clock::time_point start = Clock::now();
    end_ = start + std::chrono::duration_cast<Clock::duration>(
                       std::chrono::duration<double>(options_.seconds));
    calls_.resize(static_cast<size_t>(options_.in_flight));
    for (size_t i = 0; i < calls_.size(); ++i) {
      calls_[i] = std::make_unique<H2Call>();
      Launch(calls_[i].get(), connections_[i % connections_.size()].get());
    }
    // Calls still open this long after the end count as unanswered.
    const Clock::time_point give_up = end_ + options_.timeout + std::chrono::seconds(1);
    Clock::time_point next_timeout_scan = start;
    while (outstanding_ > 0) {
      Pump(std::chrono::milliseconds(10));
      const Clock::time_point now = Clock::now();
      if (now >= next_timeout_scan) {
        CancelLate(now);
        next_timeout_scan = now + std::chrono::milliseconds(10);
      }
      if (now >= give_up) break;
    }
    const std::string unanswered =
        "no answer within " + std::to_string(options_.timeout.count()) + " ms";
    for (auto& connection : connections_) {
      for (size_t i = 0; i < connection->open.size(); ++i) CountError(result_, unanswered);
      connection->open.clear();
    }
    Summarize(&latencies_us_, std::chrono::duration<double>(Clock::now() - start).count(), result_);
  }

 private:
  bool Open(const addrinfo& address, Clock::time_point deadline, H2Connection* connection,
            std::string* error) {
    connection->fd = ::socket(address.ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (connection->fd < 0) {
      *error = std::string("socket: ") + std::strerror(errno);
      return false;
    }
    const int one = 1;
    ::setsockopt(connection->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (::connect(connection->fd, address.ai_addr, address.ai_addrlen) != 0 &&
        errno != EINPROGRESS) {
      *error = "cannot connect to " + options_.target + ": " + std::strerror(errno);
      return false;
    }
    pollfd p{connection->fd, POLLOUT, 0};
    const auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                             std::max(deadline - Clock::now(), Clock::duration::zero()))
                             .count();
    int so_error = 0;
    socklen_t length = sizeof(so_error);
    if (::poll(&p, 1, static_cast<int>(wait_ms)) != 1 ||
        ::getsockopt(connection->fd, SOL_SOCKET, SO_ERROR, &so_error, &length) != 0 ||
        so_error != 0) {
      *error = "cannot connect to " + options_.target + ": " +
               (so_error != 0 ? std::strerror(so_error) : "timed out");
      return false;
    }
    nghttp2_session_callbacks* callbacks = nullptr;
    nghttp2_session_callbacks_new(&callbacks);
    nghttp2_session_callbacks_set_on_header_callback(callbacks, OnHeader);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, OnData);
    nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, OnStreamClose);
    nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, OnFrame);
    const int rc = nghttp2_session_client_new(&connection->session, callbacks, this);
    nghttp2_session_callbacks_del(callbacks);
    if (rc != 0) {
      *error = std::string("nghttp2: ") + nghttp2_strerror(rc);
      return false;
    }
    // Answers are small: a large window keeps flow control out of the way.
    const nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
    };
    nghttp2_submit_settings(connection->session, NGHTTP2_FLAG_NONE, settings, 2);
    nghttp2_session_set_local_window_size(connection->session, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    return true;
  }

  void Launch(H2Call* call, H2Connection* connection) {
    if (connection->dead) return;  // a failed connection is not replaced (as --http's)
    value_->set_value(DescriptorValue(&next_value_, options_.values));
    const size_t size = request_.ByteSizeLong();
    call->request.resize(kGrpcPrefixBytes + size);
    call->request[0] = 0;  // not compressed
    for (int i = 0; i < 4; ++i) {
      call->request[1 + i] = static_cast<char>((size >> (8 * (3 - i))) & 0xff);
    }
    request_.SerializeWithCachedSizesToArray(
        reinterpret_cast<uint8_t*>(call->request.data() + kGrpcPrefixBytes));
    call->request_sent = 0;
    call->answer.clear();
    call->http_status = 0;
    call->grpc_status = -1;
    call->grpc_message.clear();
    call->timed_out = false;
    call->connection = connection;
    call->started = Clock::now();
    auto header = [](const char* name, const std::string& value) {
      return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name)),
                        reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())),
                        std::strlen(name), value.size(), NGHTTP2_NV_FLAG_NONE};
    };
    static const std::string kPost = "POST", kHttp = "http", kPathValue = kPath,
                             kContentType = "application/grpc", kTrailers = "trailers";
    const nghttp2_nv headers[] = {
        header(":method", kPost),
        header(":scheme", kHttp),
        header(":path", kPathValue),
        header(":authority", authority_),
        header("content-type", kContentType),
        header("te", kTrailers),
        header("grpc-timeout", timeout_header_),
    };
    nghttp2_data_provider body{};
    body.source.ptr = call;
    body.read_callback = ReadBody;
    const int32_t stream = nghttp2_submit_request(connection->session, nullptr, headers,
                                                  std::size(headers), &body, call);
    if (stream < 0) {
      CountError(result_, std::string("nghttp2 submit: ") + nghttp2_strerror(stream));
      return;
    }
    call->stream = stream;
    ++outstanding_;
    connection->open.push_back(call);
  }

  static ssize_t ReadBody(nghttp2_session*, int32_t, uint8_t* buffer, size_t length,
                          uint32_t* flags, nghttp2_data_source* source, void*) {
    auto* call = static_cast<H2Call*>(source->ptr);
    const size_t n = std::min(length, call->request.size() - call->request_sent);
    std::memcpy(buffer, call->request.data() + call->request_sent, n);
    call->request_sent += n;
    if (call->request_sent == call->request.size()) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return static_cast<ssize_t>(n);
  }

  static int OnFrame(nghttp2_session* session, const nghttp2_frame* frame, void* self) {
    if (frame->hd.type == NGHTTP2_SETTINGS && (frame->hd.flags & NGHTTP2_FLAG_ACK) == 0) {
      static_cast<H2Run*>(self)->ConnectionOf(session)->settings_received = true;
    }
    return 0;
  }

  static int OnHeader(nghttp2_session* session, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_length, const uint8_t* value, size_t value_length, uint8_t,
                      void*) {
    auto* call =
        static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (call == nullptr) return 0;
    const std::string_view n(reinterpret_cast<const char*>(name), name_length);
    const std::string_view v(reinterpret_cast<const char*>(value), value_length);
    if (n == ":status") {
      call->http_status = std::atoi(std::string(v).c_str());
    } else if (n == "grpc-status") {
      call->grpc_status = std::atoi(std::string(v).c_str());
    } else if (n == "grpc-message") {
      call->grpc_message.assign(v);
    }
    return 0;
  }

  static int OnData(nghttp2_session* session, uint8_t, int32_t stream, const uint8_t* data,
                    size_t length, void*) {
    auto* call = static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, stream));
    if (call != nullptr) call->answer.append(reinterpret_cast<const char*>(data), length);
    return 0;
  }

  static int OnStreamClose(nghttp2_session* session, int32_t stream, uint32_t error_code,
                           void* self) {
    auto* call = static_cast<H2Call*>(nghttp2_session_get_stream_user_data(session, stream));
    if (call != nullptr) static_cast<H2Run*>(self)->Finished(call, error_code);
    return 0;
  }

  H2Connection* ConnectionOf(nghttp2_session* session) {
    for (auto& c : connections_) {
      if (c->session == session) return c.get();
    }
    return nullptr;
  }

  // A call's stream closed: count its answer; start the next one (after the
  // current nghttp2 call returns) while the run lasts.
  void Finished(H2Call* call, uint32_t error_code) {
    const Clock::time_point now = Clock::now();
    H2Connection* connection = call->connection;
    auto& open = connection->open;
    open.erase(std::find(open.begin(), open.end(), call));
    --outstanding_;
    if (call->timed_out) {
      CountError(result_, "no answer within " + std::to_string(options_.timeout.count()) + " ms");
    } else if (error_code != NGHTTP2_NO_ERROR) {
      CountError(result_, std::string("stream reset: ") + nghttp2_http2_strerror(error_code));
    } else if (call->http_status != 200) {
      CountError(result_, "HTTP status " + std::to_string(call->http_status));
    } else if (call->grpc_status != 0) {
      CountError(result_,
                 "gRPC status " + std::to_string(call->grpc_status) + ": " + call->grpc_message);
    } else if (call->answer.size() < kGrpcPrefixBytes || call->answer[0] != 0 ||
               !response_.ParseFromArray(
                   call->answer.data() + kGrpcPrefixBytes,
                   static_cast<int>(call->answer.size() - kGrpcPrefixBytes))) {
      CountError(result_, "an answer that is not one uncompressed RateLimitResponse");
    } else if (response_.overall_code() == rlsv3::RateLimitResponse::OVER_LIMIT) {
      ++result_->over_limit;
      latencies_us_.push_back(ElapsedUs(call->started, now));
    } else if (response_.overall_code() == rlsv3::RateLimitResponse::OK) {
      ++result_->ok;
      latencies_us_.push_back(ElapsedUs(call->started, now));
    } else {
      CountError(result_, "overall_code " + std::to_string(response_.overall_code()));
    }
    if (now < end_) relaunch_.push_back(call);
  }

  // Sends what nghttp2 has to send, reads what arrived, for up to `wait`.
  // False if every connection is dead.
  bool Pump(std::chrono::milliseconds wait) {
    std::vector<pollfd>& fds = poll_fds_;
    fds.clear();
    for (auto& c : connections_) {
      if (!c->dead) Flush(c.get());
      fds.push_back({c->dead ? -1 : c->fd,
                     static_cast<short>(POLLIN | (c->out_sent < c->out.size() ? POLLOUT : 0)), 0});
    }
    if (std::all_of(connections_.begin(), connections_.end(),
                    [](const auto& c) { return c->dead; })) {
      return false;
    }
    if (::poll(fds.data(), fds.size(), static_cast<int>(wait.count())) < 0 && errno != EINTR) {
      return false;
    }
    for (size_t i = 0; i < connections_.size(); ++i) {
      H2Connection* c = connections_[i].get();
      if (c->dead || fds[i].revents == 0) continue;
      if ((fds[i].revents & (POLLIN | POLLERR | POLLHUP)) != 0) Read(c);
    }
    relaunching_.swap(relaunch_);
    for (H2Call* call : relaunching_) Launch(call, call->connection);
    relaunching_.clear();
    return true;
  }

  void Read(H2Connection* c) {
    char buffer[64 * 1024];
    while (!c->dead) {
      const ssize_t n = ::read(c->fd, buffer, sizeof(buffer));
      if (n > 0) {
        const ssize_t used = nghttp2_session_mem_recv(
            c->session, reinterpret_cast<const uint8_t*>(buffer), static_cast<size_t>(n));
        if (used < 0) Kill(c, std::string("nghttp2: ") + nghttp2_strerror(static_cast<int>(used)));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EINTR)) return;
      Kill(c, n == 0 ? "the server closed the connection" : std::strerror(errno));
    }
  }

  void Flush(H2Connection* c) {
    while (true) {
      if (c->out_sent == c->out.size()) {
        c->out.clear();
        c->out_sent = 0;
        const uint8_t* data = nullptr;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(c->session, &data)) > 0) {
          c->out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
          if (c->out.size() >= 64 * 1024) break;
        }
        if (n < 0) return Kill(c, std::string("nghttp2: ") + nghttp2_strerror(static_cast<int>(n)));
        if (c->out.empty()) return;
      }
      const ssize_t n =
          ::send(c->fd, c->out.data() + c->out_sent, c->out.size() - c->out_sent, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) return;
        return Kill(c, std::strerror(errno));
      }
      c->out_sent += static_cast<size_t>(n);
    }
  }

  // A connection failed: each of its open calls is an error, and it is not
  // replaced.
  void Kill(H2Connection* c, const std::string& why) {
    if (c->dead) return;
    c->dead = true;
    outstanding_ -= static_cast<int64_t>(c->open.size());
    for (size_t i = 0; i < c->open.size(); ++i) CountError(result_, "connection failed: " + why);
    c->open.clear();
    relaunch_.erase(std::remove_if(relaunch_.begin(), relaunch_.end(),
                                   [c](H2Call* call) { return call->connection == c; }),
                    relaunch_.end());
  }

  // Calls past their timeout are cancelled (counted when their stream closes).
  void CancelLate(Clock::time_point now) {
    for (auto& c : connections_) {
      if (c->dead) continue;
      for (H2Call* call : c->open) {
        if (!call->timed_out && now - call->started > options_.timeout) {
          call->timed_out = true;
          nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, call->stream, NGHTTP2_CANCEL);
        }
      }
    }
  }

  const RlsLoadOptions& options_;
  RlsLoadResult* result_;
  rlsv3::RateLimitRequest request_;
  // The one descriptor entry whose value each call changes.
  std::remove_pointer_t<
      decltype(std::declval<rlsv3::RateLimitRequest&>().add_descriptors()->add_entries())>* value_ =
      nullptr;
  rlsv3::RateLimitResponse response_;
  std::string authority_, timeout_header_;
  uint64_t next_value_ = 0;
  std::vector<std::unique_ptr<H2Connection>> connections_;
  std::vector<std::unique_ptr<H2Call>> calls_;
  std::vector<H2Call*> relaunch_, relaunching_;
  std::vector<pollfd> poll_fds_;
  int64_t outstanding_ = 0;
  Clock::time_point end_;
  std::vector<uint32_t> latencies_us_;
};

}  // namespace

bool RunGrpcLoadNghttp2(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error) {
  std::string host;
  uint16_t port = 0;
  if (!ParseHostPort(options.target, &host, &port)) {
    *error = "not HOST:PORT: " + options.target;
    return false;
  }
  H2Run run(options, result);
  if (!run.Connect(host, port, error)) return false;
  run.Run();
  return true;
}

}  // namespace tally::load

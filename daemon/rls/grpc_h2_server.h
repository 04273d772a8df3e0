// GrpcH2Server: tallyd's gRPC door over nghttp2 (grpc_h2_session.h) and Asio,
// instead of gRPC's own server, which costs 17-35 us of CPU per unary call on
// the 2-core machine (docs/ENVOY.md, "Speed"). Each connection is a
// GrpcH2Session on a strand; `threads` threads run them all. A call goes to
// the handler with a Responder, which answers it from any thread, once,
// even after the connection or the server is gone (then it does nothing).
//
// Accepting backs off when descriptors run out (io::AcceptBackoff) and
// resumes by itself; connections beyond max_connections are closed at once.
//
// Thread safety: Start and Stop from one thread; Responders from any.
#ifndef TALLY_DAEMON_RLS_GRPC_H2_SERVER_H_
#define TALLY_DAEMON_RLS_GRPC_H2_SERVER_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "daemon/rls/grpc_h2_session.h"

namespace tally::rls {

struct GrpcH2ServerOptions {
  std::string listen;  // HOST:PORT (an IP address); port 0 picks a free port
  size_t threads = 1;
  size_t max_connections = 1024;
  GrpcH2Limits limits;
  // Counts accepts that failed for want of a file descriptor. Null: not
  // counted. Borrowed.
  std::atomic<uint64_t>* accept_fd_exhausted = nullptr;
};

class GrpcH2Server {
 public:
  class Connection;
  struct Shared;
  // Answers one call (GrpcH2Session::Complete) on its connection's strand.
  // Copyable; calling it more than once answers once.
  class Responder {
   public:
    void operator()(GrpcStatusCode code, std::string error_message, std::string message) const;

   private:
    friend class GrpcH2Server;
    std::shared_ptr<Shared> shared_;
    std::weak_ptr<Connection> connection_;
    int32_t stream_id_ = 0;
  };
  using AcceptsPath = GrpcH2Session::AcceptsPath;
  using Handler = std::function<void(std::string_view path, std::string message, Responder)>;

  GrpcH2Server(GrpcH2ServerOptions options, AcceptsPath accepts_path, Handler handler);
  ~GrpcH2Server();  // Stop()s
  GrpcH2Server(const GrpcH2Server&) = delete;
  GrpcH2Server& operator=(const GrpcH2Server&) = delete;

  // Binds and starts the threads. False with `*error` when it cannot listen.
  bool Start(std::string* error);
  // Sends GOAWAY on every connection, answers nothing more, closes them and
  // joins the threads. Idempotent.
  void Stop();
  // "HOST:PORT" as bound, after Start.
  std::string address() const;
  size_t connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_GRPC_H2_SERVER_H_

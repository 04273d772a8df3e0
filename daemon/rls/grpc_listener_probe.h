// GrpcListenerProbe: does the gRPC door still accept connections?
//
// gRPC before 1.57 (Debian 12 ships 1.51) stops accepting for good once an
// accept() fails for want of a file descriptor (grpc/grpc issue 20418, fixed
// by pull request 33656): the listener is not re-armed, so after a moment
// of descriptor exhaustion the door answers its existing connections but
// never a new one, while the port still completes TCP handshakes in the
// kernel's backlog. A TCP connect therefore proves nothing; the probe sends
// an HTTP/2 client preface and an empty SETTINGS frame, and a listening gRPC
// server answers with its own SETTINGS frame once it has accepted.
//
// RlsServer probes every kInterval and rebuilds the gRPC server on the same
// port after kSilencesBeforeRestart silent probes in a row (status counter
// grpc_listener_restarts). A probe that cannot even open its socket (this
// process is out of descriptors right now) says nothing about the listener.
//
// Thread safety: one probe at a time per object, on the io_context's thread.
#ifndef TALLY_DAEMON_RLS_GRPC_LISTENER_PROBE_H_
#define TALLY_DAEMON_RLS_GRPC_LISTENER_PROBE_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <chrono>
#include <functional>
#include <string>

namespace tally::rls {

enum class ProbeResult {
  kAnswered,    // the server sent an HTTP/2 frame: it accepted us
  kSilent,      // connected, but nothing came back within the timeout
  kCannotProbe  // no socket or no connection (our own shortage, a closed port)
};

class GrpcListenerProbe {
 public:
  static constexpr std::chrono::milliseconds kInterval{2000};
  static constexpr std::chrono::milliseconds kTimeout{1500};
  static constexpr int kSilencesBeforeRestart = 2;

  // Probes `target` once and calls `done` on `io`'s thread. `io` must outlive
  // the call; `done` runs exactly once unless `io` is stopped first.
  static void Probe(boost::asio::io_context& io, const boost::asio::ip::tcp::endpoint& target,
                    std::chrono::milliseconds timeout, std::function<void(ProbeResult)> done);

  // The bytes a probe sends: the HTTP/2 connection preface and an empty
  // SETTINGS frame (RFC 9113, 3.4).
  static std::string ClientPreface();
};

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_GRPC_LISTENER_PROBE_H_

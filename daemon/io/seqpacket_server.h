// Serves a listening Unix SOCK_SEQPACKET socket. Unlike Unix datagram sockets
// (whose receive queue holds only net.unix.max_dgram_qlen ~ 10 datagrams, so
// pipelining clients stall), a connection buffers up to its socket buffer, so
// clients can keep many requests in flight.
//
// Per connection: drain messages with recvmsg(MSG_DONTWAIT), answer each on the
// connection. When the peer does not read fast enough (send -> EAGAIN) the
// replies are queued and the connection stops reading until they are flushed,
// so a slow reader costs bounded memory. EOF or an error closes it. At most
// `max_connections` are open; further ones are accepted and closed at once.
//
// Each connection has one outstanding wait (read or write) at a time, so its
// state needs no lock; only the connection registry is mutex-protected.
//
// Cluster mode: checks messages go to the ClusterDriver with the connection as
// the reply target (a ReplySink); replies the driver sends later, from any
// thread, go out with a non-blocking send under the connection's send lock,
// and are dropped (counted in send_errors) when the socket is full or closed:
// the client resends with the same request id.
#ifndef TALLY_DAEMON_IO_SEQPACKET_SERVER_H_
#define TALLY_DAEMON_IO_SEQPACKET_SERVER_H_

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstddef>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "daemon/io/accept_backoff.h"
#include "daemon/io/counters.h"
#include "daemon/io/message_processor.h"
#include "tally/limiter.h"

namespace tally::io {

class SeqpacketServer {
 public:
  static constexpr size_t kDefaultMaxConnections = 1024;

  // Takes ownership of the listening, non-blocking socket `listen_fd`.
  // `limiter` (null only in echo mode) and `counters` are borrowed and must
  // outlive this.
  SeqpacketServer(boost::asio::io_context& io, int listen_fd, Limiter* limiter, bool echo,
                  Counters* counters, size_t max_connections = kDefaultMaxConnections);
  SeqpacketServer(boost::asio::io_context& io, int listen_fd, const ProcessorContext& context,
                  size_t max_connections = kDefaultMaxConnections);
  ~SeqpacketServer();
  SeqpacketServer(const SeqpacketServer&) = delete;
  SeqpacketServer& operator=(const SeqpacketServer&) = delete;

  // Starts accepting. Call once, before the io_context runs.
  void Start();
  // Closes the listener and every connection. Call when no thread runs the
  // io_context (handlers must not run concurrently).
  void Close();

  // Open connections. Thread-safe.
  size_t connection_count() const;

 private:
  class Connection;
  friend class Connection;

  void ArmAccept();
  void OnAcceptable();
  void Forget(Connection* connection);

  boost::asio::io_context& io_;
  boost::asio::posix::stream_descriptor listener_;
  boost::asio::steady_timer retry_timer_;  // backs off after EMFILE and friends
  AcceptBackoff accept_backoff_;           // used by OnAcceptable only
  ProcessorContext context_;
  Counters* counters_;
  size_t max_connections_;
  std::atomic<uint64_t> refused_{0};

  mutable std::mutex mu_;
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections_;  // guarded by mu_
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SEQPACKET_SERVER_H_

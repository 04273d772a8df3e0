// Serves one datagram socket (UDP or Unix SOCK_DGRAM): wait for readability,
// drain with recvmmsg in batches of kBatch (DatagramBatch), answer each batch
// with one sendmmsg, re-arm. Only one wait is ever outstanding, so the handler (and its
// buffers) runs on one thread at a time without locks even though the
// io_context is run by many threads.
//
// Replies go to each datagram's source address. A Unix sender without an
// address (an unbound socket) cannot be answered: its datagram is dropped
// unprocessed and counted in send_errors. A reply the kernel refuses (e.g.
// EAGAIN because a Unix peer's queue is full) is dropped and counted in
// send_errors; clients resend with the same request id, which the Limiter
// deduplicates.
//
// Cluster mode: checks datagrams of a batch go to the ClusterDriver together
// (one lock per batch), each with its sender as the reply target; the driver
// sends their replies, now or when the owner answers. Descriptor checks
// (protocol 4) go to the rules doors, answered with sendto when decided.
#ifndef TALLY_DAEMON_IO_DATAGRAM_SERVER_H_
#define TALLY_DAEMON_IO_DATAGRAM_SERVER_H_

#include <sys/socket.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "daemon/io/cluster_driver.h"
#include "daemon/io/counters.h"
#include "daemon/io/datagram_batch.h"
#include "daemon/io/message_processor.h"
#include "tally/limiter.h"

namespace tally::io {

class DatagramServer {
 public:
  static constexpr size_t kBatch = 64;               // datagrams per recvmmsg
  static constexpr size_t kBufferBytes = 64 * 1024;  // per datagram, reused
  static constexpr int kMaxBatchesPerWakeup = 16;    // then yield to other sockets

  // Takes ownership of the non-blocking datagram socket `fd`. `limiter` (null
  // only in echo mode) and `counters` are borrowed and must outlive this.
  DatagramServer(boost::asio::io_context& io, int fd, Limiter* limiter, bool echo,
                 Counters* counters);
  // The same with everything a processor may need (cluster mode, identity).
  DatagramServer(boost::asio::io_context& io, int fd, const ProcessorContext& context);
  ~DatagramServer();
  DatagramServer(const DatagramServer&) = delete;
  DatagramServer& operator=(const DatagramServer&) = delete;

  // Arms the first readiness wait. Call once, before the io_context runs.
  void Start();
  // Closes the socket, cancelling the wait. Must not run concurrently with this
  // server's handler: call it when no thread runs the io_context.
  void Close();

 private:
  void Arm();
  void OnReadable();
  // Answers the `n` datagrams one recvmmsg just put in rx_.
  void HandleBatch(size_t n);
  // Sends a deferred answer (a descriptor check's) to datagram `i`'s sender.
  SendLater SendLaterTo(size_t i);
  // Sends replies_ with sendmmsg; counts what went out and what failed.
  void SendReplies();

  boost::asio::posix::stream_descriptor socket_;
  Counters* counters_;
  ClusterDriver* cluster_ = nullptr;
  MessageProcessor processor_;

  DatagramBatch rx_{kBatch, kBufferBytes};

  std::vector<Reply> replies_;
  std::vector<ReplyTarget> cluster_targets_;  // cluster mode, per batch
  DoorMetrics* metrics_ = nullptr;            // cluster mode: counted by the driver
  Door door_ = Door::kUdp;
  std::vector<ClientDatagram> cluster_batch_;
  // The batch's decoded checks (views into rx_) and each datagram's range.
  std::vector<CheckRequestRef> cluster_checks_;
  std::vector<std::pair<size_t, size_t>> cluster_check_ranges_;
  std::vector<mmsghdr> tx_msgs_;
  std::vector<iovec> tx_iov_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_DATAGRAM_SERVER_H_

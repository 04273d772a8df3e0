#include "daemon/io/seqpacket_server.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <vector>

#include "daemon/io/cluster_driver.h"
#include "daemon/io/message_processor.h"
#include "wire/codec.h"

namespace tally::io {
namespace {

constexpr size_t kBufferBytes = 64 * 1024;
constexpr int kMaxMessagesPerWakeup = 256;  // then yield to other connections

// Receive buffer shared by every connection served on this thread. Safe
// because a handler finishes with it before another handler can run here.
std::byte* ThreadBuffer() {
  thread_local std::unique_ptr<uint64_t[]> buffer(new uint64_t[kBufferBytes / sizeof(uint64_t)]);
  return reinterpret_cast<std::byte*>(buffer.get());
}

}  // namespace

class SeqpacketServer::Connection : public std::enable_shared_from_this<Connection>,
                                    public ReplySink {
 public:
  Connection(SeqpacketServer* server, int fd)
      : server_(server), socket_(server->io_, fd), processor_(server->context_) {}

  // A reply the ClusterDriver sends, possibly from another thread.
  void SendReply(std::span<const std::byte> bytes) override {
    std::lock_guard<std::mutex> lock(send_mu_);
    if (closed_) {
      server_->counters_->send_errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    for (;;) {
      ssize_t n =
          send(socket_.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) {
        server_->counters_->datagrams_out.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      if (errno == EINTR) continue;
      server_->counters_->send_errors.fetch_add(1, std::memory_order_relaxed);
      return;
    }
  }

  void ArmRead() {
    socket_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (!ec) self->OnReadable();
                       });
  }

  // Closes the socket; pending waits complete with operation_aborted.
  void Close() {
    std::lock_guard<std::mutex> lock(send_mu_);
    closed_ = true;
    boost::system::error_code ignored;
    socket_.close(ignored);
  }

 private:
  void ArmWrite() {
    socket_.async_wait(boost::asio::posix::stream_descriptor::wait_write,
                       [self = shared_from_this()](const boost::system::error_code& ec) {
                         if (!ec) self->OnWritable();
                       });
  }

  void Shutdown() {
    Close();
    server_->Forget(this);
  }

  void OnReadable() {
    const int fd = socket_.native_handle();
    std::byte* buffer = ThreadBuffer();
    for (int i = 0; i < kMaxMessagesPerWakeup; ++i) {
      iovec iov{buffer, kBufferBytes};
      msghdr h{};
      h.msg_iov = &iov;
      h.msg_iovlen = 1;
      ssize_t n = recvmsg(fd, &h, MSG_DONTWAIT);
      if (n < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        spdlog::debug("seqpacket recvmsg: {}", strerror(errno));
        Shutdown();
        return;
      }
      // 0 is EOF. (A zero-length message reads the same; we treat it as EOF.)
      if (n == 0) {
        Shutdown();
        return;
      }
      server_->counters_->datagrams_in.fetch_add(1, std::memory_order_relaxed);
      processor_.Reset();
      replies_.clear();
      const Instant now = ReadClock();
      std::span<const std::byte> message(buffer, static_cast<size_t>(n));
      const Handled handled =
          processor_.Handle(message, (h.msg_flags & MSG_TRUNC) != 0, now, 0, &replies_);
      if (handled == Handled::kForRules) {
        // Answered through SendReply, as the cluster's replies are.
        processor_.HandOverDescriptorCheck(
            message.size(), [self = shared_from_this()](std::span<const std::byte> bytes) {
              self->SendReply(bytes);
            });
      } else if (handled == Handled::kForCluster) {
        ReplyTarget target;
        target.sink = shared_from_this();
        target.metrics = server_->context_.metrics;
        target.door = server_->context_.door;
        ClientDatagram datagram{message, &target, processor_.cluster_checks()};
        server_->context_.cluster->HandleClientDatagrams(std::span(&datagram, 1), now);
      }
      if (!SendOrQueue()) {
        Shutdown();
        return;
      }
      if (!pending_.empty()) {
        // The peer is not reading: stop reading too until it catches up.
        ArmWrite();
        return;
      }
    }
    ArmRead();
  }

  void OnWritable() {
    if (!Flush()) {
      Shutdown();
      return;
    }
    if (pending_.empty()) {
      ArmRead();
    } else {
      ArmWrite();
    }
  }

  // Sends one message. Returns 1 if sent, 0 on EAGAIN, -1 on a fatal error.
  int SendOne(std::span<const std::byte> bytes) {
    for (;;) {
      ssize_t n =
          send(socket_.native_handle(), bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n >= 0) {
        server_->counters_->datagrams_out.fetch_add(1, std::memory_order_relaxed);
        return 1;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      if (errno == EMSGSIZE) {
        // Cannot ever go out on this connection; drop it, keep the connection.
        server_->counters_->send_errors.fetch_add(1, std::memory_order_relaxed);
        return 1;
      }
      server_->counters_->send_errors.fetch_add(1, std::memory_order_relaxed);
      spdlog::debug("seqpacket send: {}", strerror(errno));
      return -1;
    }
  }

  // Sends replies_ in order, queueing (copies of) what does not go out now.
  bool SendOrQueue() {
    for (const Reply& r : replies_) {
      if (pending_.empty()) {
        int s = SendOne(r.bytes);
        if (s < 0) return false;
        if (s == 1) continue;
      }
      pending_.emplace_back(r.bytes.begin(), r.bytes.end());
    }
    return true;
  }

  bool Flush() {
    while (!pending_.empty()) {
      int s = SendOne(pending_.front());
      if (s < 0) return false;
      if (s == 0) return true;
      pending_.pop_front();
    }
    return true;
  }

  SeqpacketServer* server_;
  boost::asio::posix::stream_descriptor socket_;
  MessageProcessor processor_;
  std::vector<Reply> replies_;
  std::deque<std::vector<std::byte>> pending_;
  std::mutex send_mu_;  // guards closed_ and the socket against SendReply
  bool closed_ = false;
};

SeqpacketServer::SeqpacketServer(boost::asio::io_context& io, int listen_fd, Limiter* limiter,
                                 bool echo, Counters* counters, size_t max_connections)
    : SeqpacketServer(io, listen_fd, ProcessorContext{limiter, nullptr, nullptr, echo, counters},
                      max_connections) {}

SeqpacketServer::SeqpacketServer(boost::asio::io_context& io, int listen_fd,
                                 const ProcessorContext& context, size_t max_connections)
    : io_(io),
      listener_(io, listen_fd),
      retry_timer_(io),
      accept_backoff_("seqpacket", context.counters != nullptr
                                       ? &context.counters->accept_fd_exhausted_seqpacket
                                       : nullptr),
      context_(context),
      counters_(context.counters),
      max_connections_(max_connections) {}

SeqpacketServer::~SeqpacketServer() { Close(); }

void SeqpacketServer::Start() { ArmAccept(); }

void SeqpacketServer::Close() {
  boost::system::error_code ignored;
  listener_.close(ignored);
  retry_timer_.cancel();
  std::unordered_map<Connection*, std::shared_ptr<Connection>> connections;
  {
    std::lock_guard<std::mutex> lock(mu_);
    connections.swap(connections_);
  }
  for (auto& [raw, connection] : connections) connection->Close();
}

size_t SeqpacketServer::connection_count() const {
  std::lock_guard<std::mutex> lock(mu_);
  return connections_.size();
}

void SeqpacketServer::ArmAccept() {
  listener_.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                       [this](const boost::system::error_code& ec) {
                         if (!ec) OnAcceptable();
                       });
}

void SeqpacketServer::OnAcceptable() {
  for (;;) {
    int fd = accept4(listener_.native_handle(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) break;
      if (errno == EBADF) return;  // closed
      // EMFILE, ENFILE, ENOBUFS, ENOMEM: back off instead of spinning on a
      // listener that stays readable.
      retry_timer_.expires_after(accept_backoff_.Failed(errno, std::chrono::steady_clock::now()));
      // Then accept at once: the connections that failed are still queued,
      // and the reactor is edge-triggered, so waiting for readability could
      // wait for the next connection to arrive.
      retry_timer_.async_wait([this](const boost::system::error_code& ec) {
        if (!ec) OnAcceptable();
      });
      return;
    }
    accept_backoff_.Succeeded();
    std::shared_ptr<Connection> connection;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (connections_.size() < max_connections_) {
        connection = std::make_shared<Connection>(this, fd);
        connections_.emplace(connection.get(), connection);
      }
    }
    if (!connection) {
      ::close(fd);
      uint64_t refused = refused_.fetch_add(1, std::memory_order_relaxed) + 1;
      // Log the first refusal and then every 1000th, not one line per attempt.
      if (refused == 1 || refused % 1000 == 0) {
        spdlog::warn("seqpacket: refusing connection: {} connections open (limit); {} refused",
                     max_connections_, refused);
      }
      continue;
    }
    connection->ArmRead();
  }
  ArmAccept();
}

void SeqpacketServer::Forget(Connection* connection) {
  std::shared_ptr<Connection> keep;  // destroy outside the lock
  std::lock_guard<std::mutex> lock(mu_);
  auto it = connections_.find(connection);
  if (it != connections_.end()) {
    keep = std::move(it->second);
    connections_.erase(it);
  }
}

}  // namespace tally::io

#include "daemon/rls/grpc_h2_server.h"

#include <spdlog/spdlog.h>

#include <array>
#include <boost/asio.hpp>
#include <condition_variable>
#include <map>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "daemon/io/accept_backoff.h"
#include "daemon/io/tcp_listen.h"

namespace tally::rls {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

// A connection that sent nothing this long after it was accepted is closed:
// a silent socket must not hold one of max_connections for good.
constexpr std::chrono::seconds kFirstBytesTimeout{10};
// While a write is in flight and nghttp2 holds this many frames to send, the
// connection stops reading (a client that sends but never reads).
constexpr size_t kMaxQueuedFrames = 256;
// How long Stop lets connections answer the calls they took after GOAWAY.
constexpr std::chrono::seconds kDrainTimeout{1};

}  // namespace

// What outlives the server for Responders held elsewhere (the cluster's
// threads): whether the server stopped. Checked and used under `mu`, so a
// Responder never posts to an io_context that Stop is tearing down.
struct GrpcH2Server::Shared {
  std::mutex mu;
  bool stopped = false;
};

struct GrpcH2Server::Impl {
  Impl(GrpcH2ServerOptions o, AcceptsPath a, Handler h)
      : options(std::move(o)),
        accepts_path(std::move(a)),
        handler(std::move(h)),
        shared(std::make_shared<Shared>()),
        acceptor(asio::make_strand(io)),
        accept_retry_timer(acceptor.get_executor()),
        accept_backoff("grpc", options.accept_fd_exhausted) {}

  void Accept();

  GrpcH2ServerOptions options;
  AcceptsPath accepts_path;
  Handler handler;
  std::shared_ptr<Shared> shared;
  // Before `io`: connections its handlers hold unregister as it is destroyed.
  std::atomic<size_t> connections{0};
  std::mutex connections_mu;        // guards live
  std::condition_variable drained;  // live became empty
  std::map<Connection*, std::weak_ptr<Connection>> live;
  asio::io_context io;
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work;
  tcp::acceptor acceptor;  // on its own strand, with its timer
  asio::steady_timer accept_retry_timer;
  io::AcceptBackoff accept_backoff;  // the accept strand's only
  std::vector<std::thread> threads;
  std::string address;
  bool started = false, stopped = false;
};

class GrpcH2Server::Connection : public std::enable_shared_from_this<Connection> {
 public:
  Connection(Impl* server, tcp::socket socket)
      : server_(server),
        socket_(std::move(socket)),
        strand_(asio::make_strand(server->io)),
        first_bytes_timer_(strand_),
        session_(server->options.limits, server->accepts_path,
                 [this](int32_t stream_id, std::string_view path, std::string message) {
                   Responder responder;
                   responder.shared_ = server_->shared;
                   responder.connection_ = weak_from_this();
                   responder.stream_id_ = stream_id;
                   server_->handler(path, std::move(message), std::move(responder));
                 }) {}

  ~Connection() {
    std::lock_guard<std::mutex> lock(server_->connections_mu);
    server_->live.erase(this);
    server_->connections.fetch_sub(1, std::memory_order_relaxed);
    if (server_->live.empty()) server_->drained.notify_all();
  }

  void Start() {
    boost::system::error_code ignored;
    socket_.set_option(tcp::no_delay(true), ignored);
    asio::dispatch(strand_, [self = shared_from_this()] {
      self->Flush();  // our SETTINGS
      self->Read();
      self->first_bytes_timer_.expires_after(kFirstBytesTimeout);
      self->first_bytes_timer_.async_wait([self](const boost::system::error_code& ec) {
        if (!ec && !self->received_any_) self->Close();
      });
    });
  }

  // On the strand: GOAWAY, answer what was taken, then close (Flush sees
  // the session Done).
  void GracefulShutdown() {
    session_.Shutdown();
    Flush();
  }

  // On the strand.
  void Complete(int32_t stream_id, GrpcStatusCode code, const std::string& error_message,
                std::string message) {
    session_.Complete(stream_id, code, error_message, std::move(message));
    // Inside Receive (a call answered at once) nghttp2 may not send: the read
    // handler flushes when Receive returns.
    if (!in_receive_) Flush();
  }

  const asio::strand<asio::io_context::executor_type>& strand() const { return strand_; }

  void Close() {
    first_bytes_timer_.cancel();  // it holds the connection otherwise
    boost::system::error_code ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
  }

 private:
  void Read() {
    socket_.async_read_some(
        asio::buffer(buffer_),
        asio::bind_executor(
            strand_, [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
              if (ec) return self->Close();
              if (!self->received_any_) {
                self->received_any_ = true;
                self->first_bytes_timer_.cancel();
              }
              self->in_receive_ = true;
              const bool ok = self->session_.Receive(std::span<const uint8_t>(
                  reinterpret_cast<const uint8_t*>(self->buffer_.data()), n));
              self->in_receive_ = false;
              if (!ok) self->closing_ = true;  // send the GOAWAY nghttp2 queued, then close
              self->Flush();
              if (self->closing_) return;
              if (self->writing_ && self->session_.queued_output_frames() > kMaxQueuedFrames) {
                self->read_paused_ = true;  // the write's completion reads again
              } else {
                self->Read();
              }
            }));
  }

  void Flush() {
    if (writing_) return;
    outgoing_.clear();
    if (!session_.Send(&outgoing_)) closing_ = true;
    if (outgoing_.empty()) {
      if (closing_ || session_.Done()) Close();
      return;
    }
    writing_ = true;
    asio::async_write(
        socket_, asio::buffer(outgoing_),
        asio::bind_executor(
            strand_, [self = shared_from_this()](const boost::system::error_code& ec, size_t) {
              self->writing_ = false;
              if (ec) return self->Close();
              self->Flush();
              if (self->read_paused_ && !self->closing_) {
                self->read_paused_ = false;
                self->Read();
              }
            }));
  }

  Impl* server_;
  tcp::socket socket_;
  asio::strand<asio::io_context::executor_type> strand_;
  asio::steady_timer first_bytes_timer_;
  GrpcH2Session session_;
  std::array<char, 16 * 1024> buffer_{};
  std::string outgoing_;
  bool writing_ = false;
  bool closing_ = false;
  bool in_receive_ = false;
  bool read_paused_ = false;
  bool received_any_ = false;
};

void GrpcH2Server::Responder::operator()(GrpcStatusCode code, std::string error_message,
                                         std::string message) const {
  if (!shared_) return;
  std::lock_guard<std::mutex> lock(shared_->mu);
  if (shared_->stopped) return;
  std::shared_ptr<Connection> connection = connection_.lock();
  if (!connection) return;  // closed meanwhile: nobody to answer
  const asio::strand<asio::io_context::executor_type>& strand = connection->strand();
  asio::dispatch(
      strand, [connection = std::move(connection), stream_id = stream_id_, code,
               error_message = std::move(error_message), message = std::move(message)]() mutable {
        connection->Complete(stream_id, code, error_message, std::move(message));
      });
}

void GrpcH2Server::Impl::Accept() {
  acceptor.async_accept([this](boost::system::error_code ec, tcp::socket socket) {
    if (ec == asio::error::operation_aborted || !acceptor.is_open()) return;
    if (ec) {
      // Out of descriptors the listener stays readable: accepting again at
      // once would spin. (Asio retries EINTR, EAGAIN and ECONNABORTED itself.)
      const int error_number = ec.category() == boost::system::system_category() ? ec.value() : EIO;
      accept_retry_timer.expires_after(
          accept_backoff.Failed(error_number, std::chrono::steady_clock::now()));
      accept_retry_timer.async_wait([this](const boost::system::error_code& timer_ec) {
        if (!timer_ec && acceptor.is_open()) Accept();
      });
      return;
    }
    accept_backoff.Succeeded();
    if (connections.fetch_add(1, std::memory_order_relaxed) >= options.max_connections) {
      connections.fetch_sub(1, std::memory_order_relaxed);
      boost::system::error_code ignored;
      socket.close(ignored);  // over the connection bound: refuse
    } else {
      auto connection = std::make_shared<Connection>(this, std::move(socket));
      {
        std::lock_guard<std::mutex> lock(connections_mu);
        live.emplace(connection.get(), connection);
      }
      connection->Start();
    }
    Accept();
  });
}

GrpcH2Server::GrpcH2Server(GrpcH2ServerOptions options, AcceptsPath accepts_path, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(accepts_path),
                                   std::move(handler))) {}

GrpcH2Server::~GrpcH2Server() { Stop(); }

bool GrpcH2Server::Start(std::string* error) {
  Impl& d = *impl_;
  if (!io::ListenTcp(d.options.listen, "grpc", &d.acceptor, &d.address, error)) return false;
  d.work.emplace(asio::make_work_guard(d.io));
  d.Accept();
  for (size_t i = 0; i < std::max<size_t>(1, d.options.threads); ++i) {
    d.threads.emplace_back([&d] {
      try {
        d.io.run();
      } catch (const std::exception& e) {
        // A handler that threw left its connection without a read: stop
        // serving rather than limp on with a door that answers nobody.
        spdlog::critical("grpc: I/O handler failed: {}; the gRPC door stops", e.what());
      }
    });
  }
  d.started = true;
  return true;
}

void GrpcH2Server::Stop() {
  Impl& d = *impl_;
  if (!d.started || d.stopped) return;
  d.stopped = true;
  asio::post(d.acceptor.get_executor(), [&d] {
    boost::system::error_code ignored;
    d.acceptor.close(ignored);
    d.accept_retry_timer.cancel();
  });
  // GOAWAY on every connection; they answer the calls they took and close,
  // for at most kDrainTimeout.
  {
    std::vector<std::shared_ptr<Connection>> open;
    {
      std::lock_guard<std::mutex> lock(d.connections_mu);
      for (auto& [raw, weak] : d.live) {
        if (auto c = weak.lock()) open.push_back(std::move(c));
      }
    }
    for (std::shared_ptr<Connection>& c : open) {
      asio::post(c->strand(), [c] { c->GracefulShutdown(); });
    }
  }
  {
    std::unique_lock<std::mutex> lock(d.connections_mu);
    d.drained.wait_for(lock, kDrainTimeout, [&d] { return d.live.empty(); });
  }
  {
    std::lock_guard<std::mutex> lock(d.shared->mu);
    d.shared->stopped = true;  // Responders answer nothing from here on
  }
  d.work.reset();
  d.io.stop();
  for (std::thread& t : d.threads) t.join();
  d.threads.clear();
  // No thread runs the connections now: close their sockets here, so clients
  // see the close at once (the handlers holding them go with the io_context).
  std::vector<std::shared_ptr<Connection>> open;
  {
    std::lock_guard<std::mutex> lock(d.connections_mu);
    for (auto& [raw, weak] : d.live) {
      if (auto c = weak.lock()) open.push_back(std::move(c));
    }
  }
  for (const std::shared_ptr<Connection>& c : open) c->Close();
}

std::string GrpcH2Server::address() const { return impl_->address; }

size_t GrpcH2Server::connections() const {
  return impl_->connections.load(std::memory_order_relaxed);
}

}  // namespace tally::rls

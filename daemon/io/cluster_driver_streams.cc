// ClusterDriver: peer TCP streams. Inbound connections (length-framed peer
// messages handed to the Node) and outbound ones (one per destination, a
// bounded queue of frames, written on the strand; any error resets it).
#include <spdlog/spdlog.h>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <chrono>

#include <boost/asio/post.hpp>
#include <boost/asio/write.hpp>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/sockets.h"

namespace tally::io {
namespace {

// TCP_USER_TIMEOUT: how long sent data may stay unacknowledged before the
// kernel aborts the connection (then a pending write or the sink's read
// fails, and the stream resets). Best effort: a kernel without it keeps its
// default, which only delays the reconnect.
void SetStallTimeout(boost::asio::ip::tcp::socket& socket, std::chrono::milliseconds timeout) {
  if (timeout.count() <= 0) return;
  const unsigned int ms = static_cast<unsigned int>(timeout.count());
  ::setsockopt(socket.native_handle(), IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof ms);
}

}  // namespace

// ---------------------------------------------------------------- inbound TCP

void ClusterDriver::Impl::InboundStream::Read() {
  std::span<std::byte> space = decoder_.ReadSpace();
  socket_.async_read_some(boost::asio::buffer(space.data(), space.size()),
                          [self = shared_from_this()](const boost::system::error_code& ec,
                                                      size_t n) { self->OnRead(ec, n); });
}

void ClusterDriver::Impl::InboundStream::OnRead(const boost::system::error_code& ec, size_t n) {
  if (ec) {
    if (ec != boost::asio::error::eof && ec != boost::asio::error::operation_aborted) {
      spdlog::debug("stream from {}: {}", remote_, ec.message());
    }
    impl_->ForgetInbound(this);
    return;
  }
  if (!decoder_.Received(n)) {
    spdlog::warn("stream from {}: bad frame length {}; closing", remote_, decoder_.bad_length());
    impl_->stream_errors.fetch_add(1, std::memory_order_relaxed);
    Close();
    impl_->ForgetInbound(this);
    return;
  }
  if (!decoder_.frames().empty()) impl_->HandlePeerFrames(remote_, decoder_.frames());
  Read();
}

void ClusterDriver::Impl::ArmAccept() {
  acceptor.async_accept([this](const boost::system::error_code& ec, tcp::socket socket) {
    if (ec == boost::asio::error::operation_aborted || closed.load()) return;
    if (ec) {
      accept_retry_timer.expires_after(accept_backoff.Failed(
          ec.category() == boost::system::system_category() ? ec.value() : EIO,
          std::chrono::steady_clock::now()));
      accept_retry_timer.async_wait([this](const boost::system::error_code& e) {
        if (!e) ArmAccept();
      });
      return;
    }
    accept_backoff.Succeeded();
    boost::system::error_code ignored;
    tcp::endpoint remote = socket.remote_endpoint(ignored);
    std::string from = FormatSockaddr(remote.data(), static_cast<socklen_t>(remote.size()));
    std::shared_ptr<InboundStream> stream;
    {
      std::lock_guard<std::mutex> lock(inbound_mu);
      if (inbound.size() < options.max_inbound_streams) {
        stream = std::make_shared<InboundStream>(this, std::move(socket), std::move(from));
        inbound.emplace(stream.get(), stream);
      }
    }
    if (stream) {
      stream->Start();
    } else {
      inbound_refused.fetch_add(1, std::memory_order_relaxed);
      socket.close(ignored);
    }
    ArmAccept();
  });
}

void ClusterDriver::Impl::HandlePeerFrames(const std::string& from,
                                           std::span<const std::span<const std::byte>> frames) {
  uint64_t bytes = 0;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    for (std::span<const std::byte> frame : frames) {
      bytes += frame.size();
      if (!OpenPeerLocked(from, now, &frame)) continue;
      node->OnPeerMessage(from, frame, now, &b.out);
    }
    FlushPeerInputLocked(now, &b);
  }
  stream_frames_in.fetch_add(frames.size(), std::memory_order_relaxed);
  stream_bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  Send(b);
}

void ClusterDriver::Impl::ForgetInbound(InboundStream* stream) {
  std::shared_ptr<InboundStream> keep;  // destroyed outside the lock
  std::lock_guard<std::mutex> lock(inbound_mu);
  auto it = inbound.find(stream);
  if (it != inbound.end()) {
    keep = std::move(it->second);
    inbound.erase(it);
  }
}

// ---------------------------------------------------------------- TCP out

void ClusterDriver::Impl::EnqueueStream(const std::string& address, std::vector<std::byte> bytes) {
  std::vector<std::byte> frame;
  frame.reserve(kStreamFrameHeaderBytes + bytes.size());
  AppendStreamFrame(bytes, &frame);
  stream_queued_bytes.fetch_add(frame.size(), std::memory_order_relaxed);
  boost::asio::post(strand, [this, address, frame = std::move(frame)]() mutable {
    OnEnqueue(address, std::move(frame));
  });
}

void ClusterDriver::Impl::OnEnqueue(const std::string& address, std::vector<std::byte> frame) {
  const size_t size = frame.size();
  if (closed.load(std::memory_order_relaxed)) {
    stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
    return;
  }
  std::unique_ptr<OutboundStream>& slot = outbound[address];
  if (!slot) slot = std::make_unique<OutboundStream>(strand, address);
  OutboundStream& s = *slot;
  if (s.queued_bytes + size > options.max_stream_queue_bytes) {
    stream_frames_dropped.fetch_add(1, std::memory_order_relaxed);
    stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
    spdlog::debug("stream to {}: queue full ({} bytes); frame dropped", address, s.queued_bytes);
    return;
  }
  s.queue.push_back(std::move(frame));
  s.queued_bytes += size;
  if (s.state == OutboundStream::State::kIdle) {
    Connect(address, s);
  } else if (s.state == OutboundStream::State::kConnected && !s.writing) {
    WriteNext(address, s);
  }
}

void ClusterDriver::Impl::Connect(const std::string& address, OutboundStream& s) {
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(address, &why);
  boost::system::error_code ec;
  auto ip = hp ? boost::asio::ip::make_address(hp->host, ec) : boost::asio::ip::address();
  if (!hp || ec) {
    peer_bad_address.fetch_add(1, std::memory_order_relaxed);
    Reset(address, s, "bad address", ec);
    return;
  }
  s.state = OutboundStream::State::kConnecting;
  stream_connects.fetch_add(1, std::memory_order_relaxed);
  const uint64_t epoch = s.epoch;
  s.timer.expires_after(options.connect_timeout);
  s.timer.async_wait([&s, epoch](const boost::system::error_code& e) {
    if (e || s.epoch != epoch || s.state != OutboundStream::State::kConnecting) return;
    boost::system::error_code ignored;
    s.socket.close(ignored);  // the connect handler resets
  });
  s.socket.async_connect(tcp::endpoint(ip, hp->port),
                         [this, address, &s, epoch](const boost::system::error_code& e) {
                           if (s.epoch != epoch) return;
                           s.timer.cancel();
                           if (e) {
                             Reset(address, s, "connect", e);
                             return;
                           }
                           s.state = OutboundStream::State::kConnected;
                           boost::system::error_code ignored;
                           s.socket.set_option(tcp::no_delay(true), ignored);
                           SetStallTimeout(s.socket, options.stream_stall_timeout);
                           ReadSink(s);
                           WriteNext(address, s);
                         });
}

void ClusterDriver::Impl::ReadSink(OutboundStream& s) {
  const uint64_t epoch = s.epoch;
  // Peers never write on our connection: a read completing means it closed
  // (or sent garbage). Either way the next frame gets a fresh connection.
  s.socket.async_read_some(boost::asio::buffer(s.sink),
                           [this, &s, epoch](const boost::system::error_code& e, size_t) {
                             if (s.epoch != epoch || e == boost::asio::error::operation_aborted) {
                               return;
                             }
                             boost::system::error_code ignored;
                             s.socket.close(ignored);  // a pending write fails and resets
                             // Nothing in flight: reset now so the next frame reconnects.
                             if (!s.writing) Reset(s.address, s, "peer closed", e);
                           });
}

void ClusterDriver::Impl::WriteNext(const std::string& address, OutboundStream& s) {
  if (s.queue.empty()) {
    s.writing = false;
    return;
  }
  s.writing = true;
  const uint64_t epoch = s.epoch;
  boost::asio::async_write(s.socket, boost::asio::buffer(s.queue.front()),
                           [this, address, &s, epoch](const boost::system::error_code& e, size_t) {
                             if (s.epoch != epoch) return;
                             if (e) {
                               Reset(address, s, "write", e);
                               return;
                             }
                             const size_t size = s.queue.front().size();
                             s.queue.pop_front();
                             s.queued_bytes -= size;
                             stream_queued_bytes.fetch_sub(size, std::memory_order_relaxed);
                             stream_frames_out.fetch_add(1, std::memory_order_relaxed);
                             stream_bytes_out.fetch_add(size, std::memory_order_relaxed);
                             WriteNext(address, s);
                           });
}

void ClusterDriver::Impl::Reset(const std::string& address, OutboundStream& s, const char* why,
                                const boost::system::error_code& ec) {
  ++s.epoch;
  if (!s.queue.empty()) {
    stream_frames_dropped.fetch_add(s.queue.size(), std::memory_order_relaxed);
    stream_queued_bytes.fetch_sub(s.queued_bytes, std::memory_order_relaxed);
  }
  stream_errors.fetch_add(1, std::memory_order_relaxed);
  spdlog::debug("stream to {}: {}: {}; {} frames dropped", address, why, ec.message(),
                s.queue.size());
  s.queue.clear();
  s.queued_bytes = 0;
  s.writing = false;
  s.state = OutboundStream::State::kIdle;
  boost::system::error_code ignored;
  s.timer.cancel();
  s.socket.close(ignored);
}

}  // namespace tally::io

#include "daemon/rls/grpc_listener_probe.h"

#include <array>
#include <boost/asio/read.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <memory>
#include <utility>

namespace tally::rls {
namespace {

// One probe's state, kept alive by its handlers.
struct ProbeCall : std::enable_shared_from_this<ProbeCall> {
  ProbeCall(boost::asio::io_context& io, std::function<void(ProbeResult)> done)
      : stream(io), done(std::move(done)) {}

  void Start(const boost::asio::ip::tcp::endpoint& target, std::chrono::milliseconds timeout) {
    preface = GrpcListenerProbe::ClientPreface();
    stream.expires_after(timeout);
    stream.async_connect(target, [self = shared_from_this()](boost::beast::error_code ec) {
      if (ec) return self->Finish(ProbeResult::kCannotProbe);
      boost::asio::async_write(self->stream, boost::asio::buffer(self->preface),
                               [self](boost::beast::error_code write_ec, size_t) {
                                 if (write_ec) return self->Finish(ProbeResult::kSilent);
                                 self->ReadFrameHeader();
                               });
    });
  }

  // Any frame header (9 bytes) back means the server accepted us.
  void ReadFrameHeader() {
    boost::asio::async_read(stream, boost::asio::buffer(header),
                            [self = shared_from_this()](boost::beast::error_code ec, size_t) {
                              self->Finish(ec ? ProbeResult::kSilent : ProbeResult::kAnswered);
                            });
  }

  void Finish(ProbeResult result) {
    boost::beast::error_code ignored;
    stream.socket().close(ignored);
    if (done) std::exchange(done, nullptr)(result);
  }

  boost::beast::tcp_stream stream;
  std::function<void(ProbeResult)> done;
  std::string preface;
  std::array<char, 9> header{};
};

}  // namespace

std::string GrpcListenerProbe::ClientPreface() {
  std::string bytes = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
  // SETTINGS frame: length 0 (3 bytes), type 4, flags 0, stream 0 (4 bytes).
  const char settings[9] = {0, 0, 0, 4, 0, 0, 0, 0, 0};
  bytes.append(settings, sizeof settings);
  return bytes;
}

void GrpcListenerProbe::Probe(boost::asio::io_context& io,
                              const boost::asio::ip::tcp::endpoint& target,
                              std::chrono::milliseconds timeout,
                              std::function<void(ProbeResult)> done) {
  auto call = std::make_shared<ProbeCall>(io, std::move(done));
  call->Start(target, timeout);
}

}  // namespace tally::rls

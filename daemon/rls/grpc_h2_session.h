// GrpcH2Session: the server side of one HTTP/2 connection carrying gRPC unary
// calls, as a sans-IO state machine: bytes in, calls out, answers in, bytes
// out. nghttp2 (Debian's libnghttp2) does HTTP/2 itself: framing, HPACK,
// flow control, settings, pings and the limits on resets; this class does
// the gRPC part (docs/ENVOY.md, "The gRPC door"). The door's Asio connection
// (grpc_h2_server.h) drives it; fuzz/grpc_h2_fuzz.cc feeds it untrusted bytes.
//
// What it serves: unary calls over cleartext HTTP/2 with prior knowledge, as
// gRPC clients and Envoy send them to an insecure server. A call is a POST
// with content-type application/grpc (or application/grpc+...) whose body is
// one uncompressed length-prefixed message of at most max_message_bytes. It
// answers, as gRPC servers do:
//   * a method `accepts_path` refuses: UNIMPLEMENTED;
//   * a compressed message: UNIMPLEMENTED (grpc-accept-encoding: identity);
//   * a message over max_message_bytes: RESOURCE_EXHAUSTED (the rest of the
//     body is read and dropped, never kept);
//   * no message, or more than one, or a truncated one: INTERNAL;
//   * not a POST: HTTP 405; another content-type: HTTP 415;
// and every error as a trailers-only response (grpc-status, grpc-message).
// Work per received byte is bounded; a call's bytes are kept only up to the
// message bound, and at most max_concurrent_streams calls per connection.
//
// Thread safety: none; one connection's strand owns it.
#ifndef TALLY_DAEMON_RLS_GRPC_H2_SESSION_H_
#define TALLY_DAEMON_RLS_GRPC_H2_SESSION_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>

struct nghttp2_session;

namespace tally::rls {

// gRPC status codes this door answers with (grpc/include/grpc/status.h).
enum class GrpcStatusCode : int {
  kOk = 0,
  kInvalidArgument = 3,
  kResourceExhausted = 8,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
};

struct GrpcH2Limits {
  size_t max_message_bytes = 64 * 1024;
  // SETTINGS_MAX_CONCURRENT_STREAMS: calls open at once on one connection.
  uint32_t max_concurrent_streams = 256;
  // Request header bytes per call (names and values); beyond, the stream is
  // reset.
  size_t max_header_bytes = 16 * 1024;
};

class GrpcH2Session {
 public:
  // A call to answer: its stream id (for Complete), path and message (the
  // serialized request, without the 5-byte prefix). May be called from
  // Receive; Complete may be called from inside it.
  using OnCall = std::function<void(int32_t stream_id, std::string_view path, std::string message)>;
  // Which paths are methods of the service (others get UNIMPLEMENTED).
  using AcceptsPath = std::function<bool(std::string_view path)>;

  GrpcH2Session(GrpcH2Limits limits, AcceptsPath accepts_path, OnCall on_call);
  ~GrpcH2Session();
  GrpcH2Session(const GrpcH2Session&) = delete;
  GrpcH2Session& operator=(const GrpcH2Session&) = delete;

  // Takes bytes read from the connection. False on a connection error (not
  // HTTP/2, a protocol violation): send what Send() still gives (a GOAWAY),
  // then close.
  bool Receive(std::span<const uint8_t> bytes);
  // Answers call `stream_id`: with `code` kOk and the serialized response
  // `message`, or an error code and `error_message` (trailers-only). A call
  // whose stream is gone (the client reset it, or it was answered) is
  // ignored.
  void Complete(int32_t stream_id, GrpcStatusCode code, std::string_view error_message,
                std::string message);
  // Appends what is to be sent now to `out`. False on a fatal session error.
  bool Send(std::string* out);
  // Nothing more to read or write: close the connection.
  bool Done() const;
  // Graceful close: GOAWAY; the calls taken are still answered, then Done().
  void Shutdown();

  size_t open_calls() const { return streams_.size(); }
  // Frames nghttp2 holds to send: a driver stops reading while they pile up
  // (a client that sends but never reads).
  size_t queued_output_frames() const;
  uint64_t calls() const { return calls_; }

 private:
  struct Stream;
  struct Callbacks;
  friend struct Callbacks;

  void Dispatch(int32_t stream_id, Stream& s);
  void RespondHttp(int32_t stream_id, const char* status);
  void RespondError(int32_t stream_id, Stream& s, GrpcStatusCode code, std::string_view message);
  void RespondMessage(int32_t stream_id, Stream& s);

  GrpcH2Limits limits_;
  AcceptsPath accepts_path_;
  OnCall on_call_;
  nghttp2_session* session_ = nullptr;
  std::map<int32_t, std::unique_ptr<Stream>> streams_;
  uint64_t calls_ = 0;
  bool failed_ = false;
  bool shutting_down_ = false;
};

// A grpc-message value: percent-encoded as the gRPC spec asks (bytes outside
// printable ASCII, and '%').
std::string PercentEncodeGrpcMessage(std::string_view message);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_GRPC_H2_SESSION_H_

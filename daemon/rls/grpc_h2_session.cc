#include "daemon/rls/grpc_h2_session.h"

#include <nghttp2/nghttp2.h>

#include <algorithm>
#include <cstring>
#include <string>

namespace tally::rls {
namespace {

constexpr size_t kPrefixBytes = 5;  // compressed flag + 4-byte big-endian length

nghttp2_nv Header(std::string_view name, std::string_view value) {
  return nghttp2_nv{reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(),
                    value.size(), NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE};
}

bool IsGrpcContentType(std::string_view type) {
  constexpr std::string_view kGrpc = "application/grpc";
  if (type.substr(0, kGrpc.size()) != kGrpc) return false;
  return type.size() == kGrpc.size() || type[kGrpc.size()] == '+' || type[kGrpc.size()] == ';';
}

}  // namespace

struct GrpcH2Session::Stream {
  std::string method;
  std::string path;
  std::string content_type;
  size_t header_bytes = 0;
  // The body as received, prefix included, up to the message bound; beyond
  // it only `body_bytes` grows.
  std::string body;
  size_t body_bytes = 0;
  bool dispatched = false;
  // The answer: the framed message, how much of it went out, and the
  // trailers' values (kept here: nghttp2 sends them without copying).
  std::string response;
  size_t response_sent = 0;
  std::string grpc_status;
  std::string grpc_message;
};

std::string PercentEncodeGrpcMessage(std::string_view message) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(message.size());
  for (const char c : message) {
    const auto b = static_cast<unsigned char>(c);
    if (b >= 0x20 && b <= 0x7e && b != '%') {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[b >> 4]);
      out.push_back(kHex[b & 0xf]);
    }
  }
  return out;
}

// nghttp2's callbacks, each handed the session as user data.
struct GrpcH2Session::Callbacks {
  static GrpcH2Session& Of(void* user) { return *static_cast<GrpcH2Session*>(user); }

  static Stream* StreamOf(GrpcH2Session& self, int32_t id) {
    auto it = self.streams_.find(id);
    return it == self.streams_.end() ? nullptr : it->second.get();
  }

  static int OnBeginHeaders(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    GrpcH2Session& self = Of(user);
    // nghttp2 refuses streams beyond SETTINGS_MAX_CONCURRENT_STREAMS before
    // this is called, so streams_ stays within that bound.
    self.streams_[frame->hd.stream_id] = std::make_unique<Stream>();
    return 0;
  }

  static int OnHeader(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                      size_t name_len, const uint8_t* value, size_t value_len, uint8_t,
                      void* user) {
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    GrpcH2Session& self = Of(user);
    Stream* s = StreamOf(self, frame->hd.stream_id);
    if (s == nullptr) return 0;
    s->header_bytes += name_len + value_len;
    if (s->header_bytes > self.limits_.max_header_bytes) {
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;  // resets this stream only
    }
    const std::string_view n(reinterpret_cast<const char*>(name), name_len);
    const std::string_view v(reinterpret_cast<const char*>(value), value_len);
    if (n == ":method") {
      s->method = v;
    } else if (n == ":path") {
      s->path = v;
    } else if (n == "content-type") {
      s->content_type = v;
    }
    return 0;
  }

  static int OnDataChunk(nghttp2_session*, uint8_t, int32_t stream_id, const uint8_t* data,
                         size_t len, void* user) {
    GrpcH2Session& self = Of(user);
    Stream* s = StreamOf(self, stream_id);
    if (s == nullptr) return 0;
    s->body_bytes += len;
    const size_t keep = self.limits_.max_message_bytes + kPrefixBytes;
    if (s->body.size() < keep) {
      s->body.append(reinterpret_cast<const char*>(data), std::min(len, keep - s->body.size()));
    }
    return 0;
  }

  static int OnFrameRecv(nghttp2_session*, const nghttp2_frame* frame, void* user) {
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
        (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) {
      return 0;
    }
    GrpcH2Session& self = Of(user);
    Stream* s = StreamOf(self, frame->hd.stream_id);
    if (s == nullptr || s->dispatched) return 0;
    s->dispatched = true;
    self.Dispatch(frame->hd.stream_id, *s);
    return 0;
  }

  static int OnStreamClose(nghttp2_session*, int32_t stream_id, uint32_t, void* user) {
    Of(user).streams_.erase(stream_id);
    return 0;
  }

  // The answer's DATA: the framed message, then the trailers.
  static ssize_t ReadResponse(nghttp2_session* session, int32_t stream_id, uint8_t* buffer,
                              size_t length, uint32_t* flags, nghttp2_data_source*, void* user) {
    GrpcH2Session& self = Of(user);
    Stream* s = StreamOf(self, stream_id);
    if (s == nullptr) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    const size_t n = std::min(length, s->response.size() - s->response_sent);
    std::memcpy(buffer, s->response.data() + s->response_sent, n);
    s->response_sent += n;
    if (s->response_sent == s->response.size()) {
      *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
      const nghttp2_nv trailers[] = {Header("grpc-status", s->grpc_status)};
      if (nghttp2_submit_trailer(session, stream_id, trailers, 1) != 0) {
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      }
    }
    return static_cast<ssize_t>(n);
  }
};

GrpcH2Session::GrpcH2Session(GrpcH2Limits limits, AcceptsPath accepts_path, OnCall on_call)
    : limits_(limits), accepts_path_(std::move(accepts_path)), on_call_(std::move(on_call)) {
  nghttp2_session_callbacks* callbacks = nullptr;
  nghttp2_session_callbacks_new(&callbacks);
  nghttp2_session_callbacks_set_on_begin_headers_callback(callbacks, Callbacks::OnBeginHeaders);
  nghttp2_session_callbacks_set_on_header_callback(callbacks, Callbacks::OnHeader);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(callbacks, Callbacks::OnDataChunk);
  nghttp2_session_callbacks_set_on_frame_recv_callback(callbacks, Callbacks::OnFrameRecv);
  nghttp2_session_callbacks_set_on_stream_close_callback(callbacks, Callbacks::OnStreamClose);
  nghttp2_option* option = nullptr;
  nghttp2_option_new(&option);
  // A client that floods PINGs or SETTINGS without reading our ACKs is cut
  // off instead of queueing them without bound.
  nghttp2_option_set_max_outbound_ack(option, 1000);
  const int rc = nghttp2_session_server_new2(&session_, callbacks, this, option);
  nghttp2_option_del(option);
  nghttp2_session_callbacks_del(callbacks);
  if (rc != 0) {
    session_ = nullptr;
    failed_ = true;
    return;
  }
  const nghttp2_settings_entry settings[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits_.max_concurrent_streams},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, static_cast<uint32_t>(limits_.max_header_bytes)},
  };
  if (nghttp2_submit_settings(session_, NGHTTP2_FLAG_NONE, settings, 2) != 0) failed_ = true;
}

GrpcH2Session::~GrpcH2Session() {
  if (session_ != nullptr) nghttp2_session_del(session_);
}

bool GrpcH2Session::Receive(std::span<const uint8_t> bytes) {
  if (failed_) return false;
  const ssize_t used = nghttp2_session_mem_recv(session_, bytes.data(), bytes.size());
  if (used < 0) {
    failed_ = true;
    return false;
  }
  return true;
}

bool GrpcH2Session::Send(std::string* out) {
  if (session_ == nullptr) return false;
  while (true) {
    const uint8_t* data = nullptr;
    const ssize_t n = nghttp2_session_mem_send(session_, &data);
    if (n < 0) {
      failed_ = true;
      return false;
    }
    if (n == 0) return true;
    out->append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
  }
}

bool GrpcH2Session::Done() const {
  if (session_ == nullptr) return true;
  return nghttp2_session_want_read(session_) == 0 && nghttp2_session_want_write(session_) == 0;
}

void GrpcH2Session::Shutdown() {
  if (session_ == nullptr || shutting_down_) return;
  shutting_down_ = true;
  // GOAWAY naming the last stream we took: the client opens no more and
  // retries later ones elsewhere; the calls we took are still answered, and
  // once they are, the session wants neither to read nor to write (Done).
  nghttp2_submit_goaway(session_, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session_), NGHTTP2_NO_ERROR,
                        nullptr, 0);
}

size_t GrpcH2Session::queued_output_frames() const {
  return session_ == nullptr ? 0 : nghttp2_session_get_outbound_queue_size(session_);
}

void GrpcH2Session::Dispatch(int32_t stream_id, Stream& s) {
  if (s.method != "POST") return RespondHttp(stream_id, "405");
  if (!IsGrpcContentType(s.content_type)) return RespondHttp(stream_id, "415");
  if (!accepts_path_(s.path)) {
    // Named only in part: an echoed path would let a client that sends it
    // once (HPACK indexes it) get kilobytes back per 15-byte request.
    return RespondError(stream_id, s, GrpcStatusCode::kUnimplemented,
                        "unknown method " + s.path.substr(0, 64));
  }
  if (s.body_bytes < kPrefixBytes) {
    return RespondError(stream_id, s, GrpcStatusCode::kInternal, "a unary call needs one message");
  }
  const auto* p = reinterpret_cast<const uint8_t*>(s.body.data());
  const uint64_t length =
      (uint64_t{p[1]} << 24) | (uint64_t{p[2]} << 16) | (uint64_t{p[3]} << 8) | uint64_t{p[4]};
  if (p[0] != 0) {
    return RespondError(stream_id, s, GrpcStatusCode::kUnimplemented,
                        "compressed messages are not supported (grpc-accept-encoding: identity)");
  }
  if (length > limits_.max_message_bytes) {
    return RespondError(stream_id, s, GrpcStatusCode::kResourceExhausted,
                        "message of " + std::to_string(length) + " bytes exceeds the limit of " +
                            std::to_string(limits_.max_message_bytes));
  }
  if (s.body_bytes != kPrefixBytes + length) {
    return RespondError(stream_id, s, GrpcStatusCode::kInternal,
                        "a unary call needs exactly one whole message");
  }
  std::string message = s.body.substr(kPrefixBytes);
  s.body = std::string();
  ++calls_;
  try {
    on_call_(stream_id, s.path, std::move(message));
  } catch (const std::exception&) {
    // Never through nghttp2's C frames: this runs inside its callback.
    RespondError(stream_id, s, GrpcStatusCode::kInternal, "internal error");
  }
}

void GrpcH2Session::RespondHttp(int32_t stream_id, const char* status) {
  const nghttp2_nv headers[] = {Header(":status", status)};
  if (nghttp2_submit_response(session_, stream_id, headers, 1, nullptr) != 0) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
  }
}

void GrpcH2Session::RespondError(int32_t stream_id, Stream& s, GrpcStatusCode code,
                                 std::string_view message) {
  s.grpc_status = std::to_string(static_cast<int>(code));
  s.grpc_message = PercentEncodeGrpcMessage(message);
  const nghttp2_nv headers[] = {
      Header(":status", "200"),
      Header("content-type", "application/grpc"),
      Header("grpc-status", s.grpc_status),
      Header("grpc-message", s.grpc_message),
      Header("grpc-accept-encoding", "identity"),
  };
  // Trailers-only: one HEADERS frame that ends the stream.
  if (nghttp2_submit_response(session_, stream_id, headers, 5, nullptr) != 0) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
  }
}

void GrpcH2Session::RespondMessage(int32_t stream_id, Stream& s) {
  s.grpc_status = "0";
  const nghttp2_nv headers[] = {
      Header(":status", "200"),
      Header("content-type", "application/grpc"),
      Header("grpc-accept-encoding", "identity"),
  };
  nghttp2_data_provider body{};
  body.read_callback = Callbacks::ReadResponse;
  if (nghttp2_submit_response(session_, stream_id, headers, 3, &body) != 0) {
    nghttp2_submit_rst_stream(session_, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_INTERNAL_ERROR);
  }
}

void GrpcH2Session::Complete(int32_t stream_id, GrpcStatusCode code, std::string_view error_message,
                             std::string message) {
  if (session_ == nullptr) return;
  auto it = streams_.find(stream_id);
  if (it == streams_.end()) return;  // reset by the client, or closed
  Stream& s = *it->second;
  if (!s.dispatched || !s.response.empty() || !s.grpc_status.empty()) return;  // answered
  if (code != GrpcStatusCode::kOk) return RespondError(stream_id, s, code, error_message);
  const uint32_t length = static_cast<uint32_t>(message.size());
  s.response.reserve(kPrefixBytes + message.size());
  s.response.push_back('\0');
  s.response.push_back(static_cast<char>(length >> 24));
  s.response.push_back(static_cast<char>(length >> 16));
  s.response.push_back(static_cast<char>(length >> 8));
  s.response.push_back(static_cast<char>(length));
  s.response += message;
  RespondMessage(stream_id, s);
}

}  // namespace tally::rls

// The gRPC door's HTTP/2 session (daemon/rls/grpc_h2_session.h): untrusted
// bytes from a client. Input: the bytes after the client connection preface
// (which the harness sends first, so the fuzzer spends its time on frames),
// cut into reads at each 0xFF 0xFE pair.
// Properties: nothing crashes, hangs or leaks; at most max_concurrent_streams
// calls are open; a call handed to the handler holds one message within the
// bound, on the service's path; answers (alternately a message and an error,
// some at once and some after the next read) never fail the session; the
// bytes the session sends stay within a bound per byte received.
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/rls/grpc_h2_session.h"
#include "fuzz/fuzz_check.h"

namespace {

using tally::rls::GrpcH2Limits;
using tally::rls::GrpcH2Session;
using tally::rls::GrpcStatusCode;

constexpr std::string_view kPath = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit";
constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  GrpcH2Limits limits;
  limits.max_message_bytes = 512;
  limits.max_concurrent_streams = 16;
  limits.max_header_bytes = 1024;
  std::vector<int32_t> later;
  uint64_t calls = 0;
  GrpcH2Session* self = nullptr;
  GrpcH2Session session(
      limits, [](std::string_view path) { return path == kPath; },
      [&](int32_t stream, std::string_view path, std::string message) {
        FUZZ_CHECK(path == kPath);
        FUZZ_CHECK(message.size() <= limits.max_message_bytes);
        ++calls;
        if (calls % 3 == 0) {
          later.push_back(stream);  // answered after the next read
        } else if (calls % 3 == 1) {
          self->Complete(stream, GrpcStatusCode::kOk, "", std::string(message.size() % 64, 'r'));
        } else {
          self->Complete(stream, GrpcStatusCode::kUnavailable, "busy \n%", "");
        }
      });
  self = &session;
  std::string out;
  size_t received = 0;
  auto feed = [&](std::span<const uint8_t> bytes) {
    received += bytes.size();
    const bool ok = session.Receive(bytes);
    FUZZ_CHECK(session.open_calls() <= limits.max_concurrent_streams);
    for (int32_t stream : later) session.Complete(stream, GrpcStatusCode::kOk, "", "late");
    later.clear();
    session.Send(&out);
    // Our answers are small: a bounded multiple of what came in, plus the
    // settings and a GOAWAY.
    FUZZ_CHECK(out.size() <= 4096 + 64 * received);
    return ok;
  };
  if (!feed({reinterpret_cast<const uint8_t*>(kPreface.data()), kPreface.size()})) return 0;
  size_t start = 0;
  for (size_t i = 0; i + 1 <= size; ++i) {
    const bool cut = i + 1 < size && data[i] == 0xFF && data[i + 1] == 0xFE;
    if (!cut && i + 1 < size) continue;
    const size_t end = cut ? i : size;
    if (!feed({data + start, end - start})) return 0;
    start = cut ? i + 2 : size;
    if (cut) ++i;
  }
  session.Shutdown();
  session.Send(&out);
  return 0;
}

// Peer stream framing (daemon/io/stream_frames.h) with the input cut into
// reads of fuzzed sizes. Properties: the decoder yields exactly the frames a
// one-shot parse of the whole stream finds, in order, and stops at the first
// bad length; its buffer never holds more than one partial frame plus a read.
#include <algorithm>
#include <cstring>
#include <vector>

#include "daemon/io/stream_frames.h"
#include "fuzz/fuzz_check.h"

namespace {

using tally::io::kStreamFrameHeaderBytes;

uint32_t Length(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) << 24 | static_cast<uint32_t>(p[1]) << 16 |
         static_cast<uint32_t>(p[2]) << 8 | static_cast<uint32_t>(p[3]);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // Header: read chunk, largest frame and the seed of the read sizes, kept
  // small so that growing and shrinking the buffer happen on short inputs.
  if (size < 4) return 0;
  const size_t chunk = 8 + data[0] % 64;
  const size_t max_frame = 1 + (static_cast<size_t>(data[1]) << 4 | data[2] >> 4);
  uint32_t seed = data[3] | 1u;
  const uint8_t* stream = data + 4;
  const size_t stream_size = size - 4;

  // Reference: the whole stream parsed at once.
  std::vector<std::vector<uint8_t>> want;
  bool want_bad = false;
  size_t complete = 0;  // bytes of the stream in complete frames
  for (size_t pos = 0; stream_size - pos >= kStreamFrameHeaderBytes;) {
    const uint32_t len = Length(stream + pos);
    if (len == 0 || len > max_frame) {
      want_bad = true;
      break;
    }
    if (stream_size - pos - kStreamFrameHeaderBytes < len) break;
    want.emplace_back(stream + pos + kStreamFrameHeaderBytes,
                      stream + pos + kStreamFrameHeaderBytes + len);
    pos += kStreamFrameHeaderBytes + len;
    complete = pos;
  }

  tally::io::StreamFrameDecoder decoder(max_frame, chunk);
  std::vector<std::vector<uint8_t>> got;
  bool got_bad = false;
  for (size_t fed = 0; fed < stream_size;) {
    std::span<std::byte> space = decoder.ReadSpace();
    FUZZ_CHECK(space.size() >= chunk);
    FUZZ_CHECK(decoder.capacity() <=
               std::max(4 * chunk, kStreamFrameHeaderBytes + max_frame + chunk));
    seed = seed * 1103515245u + 12345u;  // read sizes: short reads are what TCP gives
    const size_t n =
        std::min({space.size(), stream_size - fed, size_t{1} + (seed >> 16) % (2 * chunk)});
    std::memcpy(space.data(), stream + fed, n);
    fed += n;
    if (!decoder.Received(n)) {
      got_bad = true;
      FUZZ_CHECK(decoder.bad_length() == 0 || decoder.bad_length() > max_frame);
      break;
    }
    for (std::span<const std::byte> frame : decoder.frames()) {
      const auto* p = reinterpret_cast<const uint8_t*>(frame.data());
      got.emplace_back(p, p + frame.size());
    }
  }
  FUZZ_CHECK(got_bad == want_bad);
  if (got_bad) {
    // Frames completed by the read that also brought the bad header are
    // dropped with the connection: a prefix of the reference.
    FUZZ_CHECK(got.size() <= want.size());
    FUZZ_CHECK(std::equal(got.begin(), got.end(), want.begin()));
  } else {
    FUZZ_CHECK(got == want);
    FUZZ_CHECK(decoder.pending_bytes() == stream_size - complete);
  }

  // The encoder's frames decode to what was framed.
  if (!want.empty()) {
    std::vector<std::byte> framed;
    for (const auto& f : want) {
      tally::io::AppendStreamFrame(
          std::span<const std::byte>(reinterpret_cast<const std::byte*>(f.data()), f.size()),
          &framed);
    }
    tally::io::StreamFrameDecoder again(max_frame, chunk);
    std::span<std::byte> space = again.ReadSpace();
    size_t n = std::min(space.size(), framed.size());
    std::memcpy(space.data(), framed.data(), n);
    FUZZ_CHECK(again.Received(n));
    for (size_t i = 0; i < again.frames().size(); ++i) {
      FUZZ_CHECK(again.frames()[i].size() == want[i].size());
      FUZZ_CHECK(std::memcmp(again.frames()[i].data(), want[i].data(), want[i].size()) == 0);
    }
  }
  return 0;
}

#include "daemon/io/stream_frames.h"

#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

namespace tally::io {
namespace {

using Bytes = std::vector<std::byte>;

Bytes Payload(size_t n, uint8_t fill) { return Bytes(n, std::byte{fill}); }

// Feeds `stream` to `decoder` in reads of at most `read` bytes; returns the
// frames it yields, or stops at a bad header (*bad = true).
std::vector<Bytes> Feed(StreamFrameDecoder& decoder, const Bytes& stream, size_t read, bool* bad) {
  std::vector<Bytes> frames;
  *bad = false;
  for (size_t fed = 0; fed < stream.size();) {
    std::span<std::byte> space = decoder.ReadSpace();
    const size_t n = std::min({space.size(), read, stream.size() - fed});
    std::memcpy(space.data(), stream.data() + fed, n);
    fed += n;
    if (!decoder.Received(n)) {
      *bad = true;
      break;
    }
    for (auto f : decoder.frames()) frames.emplace_back(f.begin(), f.end());
  }
  return frames;
}

TEST(StreamFramesTest, FramesSurviveAnyReadSize) {
  Bytes stream;
  std::vector<Bytes> want;
  for (size_t i = 1; i <= 30; ++i) {
    want.push_back(Payload(i * 37, static_cast<uint8_t>(i)));
    AppendStreamFrame(want.back(), &stream);
  }
  for (size_t read : {1, 3, 4, 5, 64, 1000, 100000}) {
    StreamFrameDecoder decoder(4096, 64);
    bool bad = false;
    EXPECT_EQ(Feed(decoder, stream, read, &bad), want) << "reads of " << read;
    EXPECT_FALSE(bad);
    EXPECT_EQ(decoder.pending_bytes(), 0u);
  }
}

TEST(StreamFramesTest, ZeroOrOversizedLengthEndsTheStream) {
  for (uint32_t len : {0u, 4097u, 0xffffffffu}) {
    Bytes stream;
    AppendStreamFrame(Payload(10, 1), &stream);
    for (int shift = 24; shift >= 0; shift -= 8)
      stream.push_back(static_cast<std::byte>(len >> shift));
    stream.resize(stream.size() + 20);
    StreamFrameDecoder decoder(4096, 8);
    bool bad = false;
    std::vector<Bytes> frames = Feed(decoder, stream, 14, &bad);
    EXPECT_TRUE(bad) << len;
    EXPECT_EQ(decoder.bad_length(), len);
    EXPECT_EQ(frames, std::vector<Bytes>{Payload(10, 1)});
  }
}

TEST(StreamFramesTest, BufferGrowsForALargeFrameAndShrinksAfter) {
  Bytes stream;
  AppendStreamFrame(Payload(100'000, 7), &stream);
  AppendStreamFrame(Payload(3, 8), &stream);
  StreamFrameDecoder decoder(1 << 20, 1024);
  size_t fed = 0;
  size_t largest = 0;
  std::vector<Bytes> frames;
  while (fed < stream.size()) {
    std::span<std::byte> space = decoder.ReadSpace();
    largest = std::max(largest, decoder.capacity());
    const size_t n = std::min(space.size(), stream.size() - fed);
    std::memcpy(space.data(), stream.data() + fed, n);
    fed += n;
    ASSERT_TRUE(decoder.Received(n));
    for (auto f : decoder.frames()) frames.emplace_back(f.begin(), f.end());
  }
  ASSERT_EQ(frames.size(), 2u);
  // Room for the whole large frame was made once its header arrived...
  EXPECT_GE(largest, 100'004u);
  EXPECT_LE(largest, 100'004u + 1024);
  // ...and given back once it was done.
  decoder.ReadSpace();
  EXPECT_LE(decoder.capacity(), 4u * 1024);
}

}  // namespace
}  // namespace tally::io

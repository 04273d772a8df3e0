#include "daemon/io/stream_frames.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace tally::io {
namespace {

uint32_t GetBigEndian32(const std::byte* in) {
  return static_cast<uint32_t>(in[0]) << 24 | static_cast<uint32_t>(in[1]) << 16 |
         static_cast<uint32_t>(in[2]) << 8 | static_cast<uint32_t>(in[3]);
}

}  // namespace

void AppendStreamFrame(std::span<const std::byte> payload, std::vector<std::byte>* out) {
  assert(!payload.empty() && payload.size() <= UINT32_MAX);
  const auto v = static_cast<uint32_t>(payload.size());
  const std::byte header[kStreamFrameHeaderBytes] = {
      static_cast<std::byte>(v >> 24), static_cast<std::byte>(v >> 16),
      static_cast<std::byte>(v >> 8), static_cast<std::byte>(v)};
  out->insert(out->end(), header, header + kStreamFrameHeaderBytes);
  out->insert(out->end(), payload.begin(), payload.end());
}

StreamFrameDecoder::StreamFrameDecoder(size_t max_frame_bytes, size_t read_chunk_bytes)
    : max_frame_bytes_(max_frame_bytes), read_chunk_bytes_(read_chunk_bytes) {}

std::span<std::byte> StreamFrameDecoder::ReadSpace() {
  frames_.clear();
  if (consumed_ > 0) {
    std::memmove(buffer_.data(), buffer_.data() + consumed_, used_ - consumed_);
    used_ -= consumed_;
    consumed_ = 0;
  }
  // Room for the whole frame that has started, so it arrives in few reads
  // (its length was checked by Received: a bad one ends the stream).
  size_t want = used_ + read_chunk_bytes_;
  if (used_ >= kStreamFrameHeaderBytes) {
    want = std::max(want, kStreamFrameHeaderBytes + GetBigEndian32(buffer_.data()));
  }
  if (buffer_.size() < want) {
    buffer_.resize(want);
  } else if (buffer_.size() > 4 * read_chunk_bytes_ && buffer_.size() > want &&
             used_ < read_chunk_bytes_) {
    buffer_.resize(want);  // give a huge frame's memory back
    buffer_.shrink_to_fit();
  }
  return std::span<std::byte>(buffer_.data() + used_, buffer_.size() - used_);
}

bool StreamFrameDecoder::Received(size_t n) {
  assert(n <= buffer_.size() - used_);
  used_ += n;
  size_t pos = consumed_;
  while (used_ - pos >= kStreamFrameHeaderBytes) {
    const uint32_t len = GetBigEndian32(buffer_.data() + pos);
    if (len == 0 || len > max_frame_bytes_) {
      bad_length_ = len;
      frames_.clear();
      return false;
    }
    if (used_ - pos - kStreamFrameHeaderBytes < len) break;
    frames_.emplace_back(buffer_.data() + pos + kStreamFrameHeaderBytes, len);
    pos += kStreamFrameHeaderBytes + len;
  }
  consumed_ = pos;
  return true;
}

}  // namespace tally::io

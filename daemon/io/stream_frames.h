// Framing of peer streams (TCP): each message is a 4-byte big-endian length
// followed by that many bytes. Pure and socket-free so that the decoder can be
// tested and fuzzed on its own (fuzz/stream_frames_fuzz.cc); the cluster
// driver reads into it and hands the frames it yields to the Node.
//
// Thread safety: none (one decoder per inbound connection).
#ifndef TALLY_DAEMON_IO_STREAM_FRAMES_H_
#define TALLY_DAEMON_IO_STREAM_FRAMES_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tally::io {

inline constexpr size_t kStreamFrameHeaderBytes = 4;

// Appends `payload` as one frame to `*out`.
// REQUIRES: 0 < payload.size() <= UINT32_MAX.
void AppendStreamFrame(std::span<const std::byte> payload, std::vector<std::byte>* out);

// Reassembles frames from the byte stream of one connection.
//
// Use: read into ReadSpace(), then call Received(n); on true, frames() holds
// the frames completed by those bytes (views into the decoder's buffer, valid
// until the next ReadSpace()). On false the stream announced a frame length
// of 0 or above max_frame_bytes: the connection must be closed.
//
// Memory: the buffer holds at most one partial frame plus one read; it grows
// to the announced size of the frame in progress (at most max_frame_bytes + 4)
// so that a large frame arrives in few reads, and shrinks back to about one
// read chunk once such a frame is done.
class StreamFrameDecoder {
 public:
  explicit StreamFrameDecoder(size_t max_frame_bytes, size_t read_chunk_bytes = 64 * 1024);

  // Where the next read goes: at least read_chunk_bytes. Forgets the frames
  // of the last Received().
  std::span<std::byte> ReadSpace();

  // `n` bytes were written at the start of the last ReadSpace().
  // REQUIRES: n <= ReadSpace().size().
  bool Received(size_t n);

  const std::vector<std::span<const std::byte>>& frames() const { return frames_; }
  // The length announced by the bad header, after Received() returned false.
  uint32_t bad_length() const { return bad_length_; }
  // Bytes held that belong to no complete frame yet, and the buffer's size.
  size_t pending_bytes() const { return used_ - consumed_; }
  size_t capacity() const { return buffer_.size(); }

 private:
  size_t max_frame_bytes_;
  size_t read_chunk_bytes_;
  std::vector<std::byte> buffer_;
  size_t used_ = 0;      // bytes read into buffer_
  size_t consumed_ = 0;  // bytes of buffer_ that frames_ covers (whole frames)
  uint32_t bad_length_ = 0;
  std::vector<std::span<const std::byte>> frames_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_STREAM_FRAMES_H_

// Encoding and decoding of client datagrams (include/tally/check.capnp).
// Pure functions over bytes: shared by tallyd, the client library, the load
// generator and the simulator, so every path exercises the same codec.
//
// Untrusted input: Decode never throws and never asserts on bad bytes; it
// returns Status::kMalformed with a reason. Cap'n Proto's kj::Exception is
// caught here and turned into that status.
#ifndef TALLY_WIRE_CODEC_H_
#define TALLY_WIRE_CODEC_H_

#include <cstddef>
#include <span>
#include <string>
#include <vector>

#include "tally/types.h"

namespace tally::wire {

// Largest message we emit or accept: one UDP datagram.
inline constexpr size_t kMaxDatagramBytes = 65507;

// Fixed bytes of a message besides its list entries (segment table, root).
inline constexpr size_t kMessageOverheadBytes = 64;

enum class MessageKind { kChecks, kResponses };

// Decodes one ClientMessage. Holds views into the bytes it was given: the
// bytes must stay alive and unchanged until the next Decode or destruction.
// Not thread-safe; reuse one per thread to keep its buffers warm.
class ClientMessageReader {
 public:
  // Parses `bytes`. On kOk, kind() and the accessors describe the message.
  // On any other status `*why` (if not null) says what was wrong.
  tally::Status Decode(std::span<const std::byte> bytes, std::string* why);

  MessageKind kind() const { return kind_; }
  uint16_t version() const { return version_; }
  const std::vector<CheckRequestRef>& checks() const { return checks_; }
  const std::vector<CheckResult>& responses() const { return responses_; }

 private:
  MessageKind kind_ = MessageKind::kChecks;
  uint16_t version_ = 0;
  std::vector<CheckRequestRef> checks_;
  std::vector<CheckResult> responses_;
  std::vector<uint64_t> aligned_;  // scratch when the input is misaligned
};

// Encodes a batch of checks into `*out` (replacing its contents).
// REQUIRES: the encoded size fits kMaxDatagramBytes (callers split batches;
// see MaxChecksPerDatagram).
void EncodeChecks(std::span<const CheckRequestRef> checks, std::vector<std::byte>* out);

// Encodes a batch of responses into `*out` (replacing its contents).
void EncodeResponses(std::span<const CheckResult> responses, std::vector<std::byte>* out);

// Upper bound of the encoded size of one check with ids of these lengths,
// for splitting batches into datagrams.
size_t EncodedCheckBound(size_t user_id_bytes, size_t endpoint_bytes);

// Upper bound of the encoded size of one response carrying `error_bytes` of text.
size_t EncodedResponseBound(size_t error_bytes);

}  // namespace tally::wire

#endif  // TALLY_WIRE_CODEC_H_

// The input format of node_fuzz: a sequence of records
//   op (1 byte) | length (2 bytes, little-endian) | payload (length bytes)
// fed to one core::Node in order. Shared by the harness and the corpus
// generator (fuzz/make_corpus.cc), which writes seeds in this format.
#ifndef TALLY_FUZZ_NODE_INPUT_H_
#define TALLY_FUZZ_NODE_INPUT_H_

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tally::fuzz {

enum class NodeOp : uint8_t {
  kPeer = 0,     // payload: a peer datagram; op >> 2 picks the sender address
  kClient = 1,   // payload: a client datagram
  kAdvance = 2,  // payload: 2 bytes, milliseconds to let pass (timers fire)
  kStream = 3,   // payload: a peer stream frame (same decoding as kPeer)
};

// The node under test and the peers a record may claim to come from.
inline constexpr const char* kNodeAddress = "10.0.0.1:7946";
inline const std::string& PeerAddress(uint8_t op) {
  static const std::string kPeers[] = {"10.0.0.2:7946", "10.0.0.3:7946", "10.0.0.4:7946",
                                       kNodeAddress};
  return kPeers[(op >> 2) % 4];
}

inline void AppendRecord(uint8_t op, std::span<const std::byte> payload,
                         std::vector<std::byte>* out) {
  const size_t n = payload.size() > 0xffff ? 0xffff : payload.size();
  out->push_back(std::byte{op});
  out->push_back(static_cast<std::byte>(n & 0xff));
  out->push_back(static_cast<std::byte>(n >> 8));
  out->insert(out->end(), payload.begin(), payload.begin() + static_cast<std::ptrdiff_t>(n));
}

}  // namespace tally::fuzz

#endif  // TALLY_FUZZ_NODE_INPUT_H_

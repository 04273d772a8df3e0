// Client datagrams no encoder of ours writes, for tests of hostile input.
#ifndef TALLY_TESTS_SUPPORT_CRAFTED_CHECKS_H_
#define TALLY_TESTS_SUPPORT_CRAFTED_CHECKS_H_

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tally/check.capnp.h"

namespace tally::testing {

// A checks datagram of `words` 8-byte words whose list holds `n` structs of 0
// bytes each: valid Cap'n Proto, which no encoder of ours writes (a check
// takes at least 48 bytes). The reader charges each element one word against
// its traversal limit (4 words per word of message, wire/codec.cc), so the
// zero padding after the list makes room for them.
inline std::vector<std::byte> EmptyStructChecks(uint32_t n, size_t words) {
  std::vector<uint64_t> message(std::max<size_t>(words, 5), 0);
  message[0] = static_cast<uint64_t>(message.size() - 1) << 32;  // one segment
  message[1] = (uint64_t{1} << 32) | (uint64_t{1} << 48);        // root: 1 data word, 1 pointer
  message[2] = wire::PROTOCOL_VERSION;                           // version; union tag 0 = checks
  message[3] = 1 | (uint64_t{7} << 32);                          // list, inline composite, 0 words
  message[4] = static_cast<uint64_t>(n) << 2;  // tag: n elements, 0 data, 0 pointers
  std::vector<std::byte> bytes(message.size() * sizeof(uint64_t));
  std::memcpy(bytes.data(), message.data(), bytes.size());
  return bytes;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_CRAFTED_CHECKS_H_

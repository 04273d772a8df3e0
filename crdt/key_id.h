// KeyId: the 128-bit identity of a counter, XXH3-128 of
// (user_id, endpoint, window_ms) with length-prefixed framing, so memory per
// key does not grow with id length and ("ab","c") never meets ("a","bc").
//
// Collisions: with n live keys the chance that any two share an id is about
// n^2 / 2^129; at 10^9 keys that is ~1.5e-21. A collision merges two counters
// (both would be limited together), never crashes.
#ifndef TALLY_CRDT_KEY_ID_H_
#define TALLY_CRDT_KEY_ID_H_

#include <cstdint>
#include <string_view>

namespace tally::crdt {

struct KeyId {
  uint64_t high = 0;
  uint64_t low = 0;
  friend bool operator==(const KeyId&, const KeyId&) = default;
};

KeyId HashKey(std::string_view user_id, std::string_view endpoint, uint64_t window_ms);

// 64-bit hash of a replica slot identity (node id, generation).
uint64_t HashSlot(std::string_view node_id, uint64_t generation);

// A strong 64-bit mixer (splitmix64's finalizer).
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  x ^= x >> 31;
  return x;
}

// Hash functor for maps keyed by KeyId (the id is already uniform).
struct KeyIdHash {
  using is_avalanching = void;  // tells boost::unordered not to re-mix
  size_t operator()(const KeyId& id) const noexcept { return static_cast<size_t>(id.low); }
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_KEY_ID_H_

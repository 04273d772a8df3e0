#include "crdt/key_id.h"

#define XXH_STATIC_LINKING_ONLY  // for XXH3_state_t on the stack
#include <xxhash.h>

#include <cstring>

namespace tally::crdt {

namespace {
void PutU64(unsigned char* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out[i] = static_cast<unsigned char>(v >> (8 * i));
}
}  // namespace

KeyId HashKey(std::string_view user_id, std::string_view endpoint, uint64_t window_ms) {
  // Short keys (the common case): frame into a stack buffer, hash one-shot.
  constexpr size_t kShortKeyBytes = 232;
  if (user_id.size() + endpoint.size() <= kShortKeyBytes) {
    unsigned char buf[kShortKeyBytes + 24];
    size_t n = 0;
    PutU64(buf + n, user_id.size());
    n += 8;
    std::memcpy(buf + n, user_id.data(), user_id.size());
    n += user_id.size();
    PutU64(buf + n, endpoint.size());
    n += 8;
    std::memcpy(buf + n, endpoint.data(), endpoint.size());
    n += endpoint.size();
    PutU64(buf + n, window_ms);
    n += 8;
    XXH128_hash_t h = XXH3_128bits(buf, n);
    return KeyId{h.high64, h.low64};
  }
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  auto put_u64 = [&state](uint64_t v) {
    unsigned char bytes[8];
    PutU64(bytes, v);
    XXH3_128bits_update(&state, bytes, sizeof bytes);
  };
  put_u64(user_id.size());
  XXH3_128bits_update(&state, user_id.data(), user_id.size());
  put_u64(endpoint.size());
  XXH3_128bits_update(&state, endpoint.data(), endpoint.size());
  put_u64(window_ms);
  XXH128_hash_t h = XXH3_128bits_digest(&state);
  return KeyId{h.high64, h.low64};
}

uint64_t HashSlot(std::string_view node_id, uint64_t generation) {
  return Mix64(XXH3_64bits(node_id.data(), node_id.size()) ^ Mix64(generation));
}

}  // namespace tally::crdt

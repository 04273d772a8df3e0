// PeerSeal::Open (daemon/io/peer_seal.h), the first thing every peer packet
// meets when tallyd has a keyring. Two modes, picked by the first byte:
//
//   raw (even):    the rest is a packet from the network. Property: it never
//                  opens (a forgery would be a break of the AEAD, or a bug in
//                  the header handling), it is refused under a reason that
//                  fits its header, and nothing crashes, leaks or reads out
//                  of bounds for any length.
//   sealed (odd):  the rest is [sender key, flip position (2 bytes), flip
//                  mask, timestamp offset (2 bytes), plaintext]. The plaintext
//                  is sealed by a keyring, optionally one bit pattern is
//                  flipped, and the receiver opens it. Properties: unchanged
//                  and in the window, it opens to the same bytes, and opening
//                  it again is `replayed`; changed, it never opens, and the
//                  reason matches the field that changed.
//
// Every input gets a fresh receiver (replay memory) so runs are reproducible.
#include <cstring>
#include <memory>
#include <vector>

#include "daemon/io/keyring.h"
#include "daemon/io/peer_seal.h"
#include "fuzz/fuzz_check.h"

namespace {

using tally::io::Keyring;
using tally::io::OpenResult;
using tally::io::PeerKey;
using tally::io::PeerSeal;
using tally::io::PeerSealOptions;

constexpr int64_t kNow = 1'700'000'000'000;

PeerKey FixedKey(uint8_t n) {
  PeerKey k;
  for (size_t i = 0; i < k.size(); ++i) k[i] = static_cast<uint8_t>(n * 37 + i);
  return k;
}

std::shared_ptr<const Keyring> RingOf(std::vector<PeerKey> keys) {
  std::string why;
  return std::make_shared<const Keyring>(*Keyring::FromKeys(keys, &why));
}

// The receiver holds keys 0 and 1; senders seal with 0, 1 or 2 (unknown).
const std::shared_ptr<const Keyring>& ReceiverRing() {
  static const auto ring = RingOf({FixedKey(0), FixedKey(1)});
  return ring;
}
const PeerSeal& Sender(uint8_t which) {
  static const PeerSeal senders[3] = {
      PeerSeal(RingOf({FixedKey(0)}), PeerSealOptions{}),
      PeerSeal(RingOf({FixedKey(1), FixedKey(0)}), PeerSealOptions{}),
      PeerSeal(RingOf({FixedKey(2)}), PeerSealOptions{}),
  };
  return senders[which % 3];
}

void FuzzRaw(const uint8_t* data, size_t size) {
  PeerSeal receiver(ReceiverRing(), PeerSealOptions{});
  std::vector<std::byte> scratch;
  std::span<const std::byte> plain;
  const OpenResult r = receiver.Open(tally::fuzz::AsBytes(data, size), kNow, &scratch, &plain);
  FUZZ_CHECK(r != OpenResult::kOk);
  if (size < PeerSeal::kOverheadBytes || data[0] != PeerSeal::kMagic) {
    FUZZ_CHECK(r == OpenResult::kUnsealed);
  } else {
    FUZZ_CHECK(r != OpenResult::kUnsealed);
  }
  FUZZ_CHECK(receiver.stats().rejected[static_cast<size_t>(r)] == 1);
  FUZZ_CHECK(receiver.stats().replay_entries == 0);
}

void FuzzSealed(const uint8_t* data, size_t size) {
  if (size < 6) return;
  const uint8_t sender = data[0];
  const size_t flip_at = static_cast<size_t>(data[1]) << 8 | data[2];
  const uint8_t mask = data[3];
  const int64_t offset_ms = static_cast<int16_t>(static_cast<uint16_t>(data[4] << 8 | data[5]));
  const std::span<const std::byte> plaintext = tally::fuzz::AsBytes(data + 6, size - 6);

  std::vector<std::byte> sealed;
  Sender(sender).Seal(plaintext, kNow + offset_ms, &sealed);
  FUZZ_CHECK(sealed.size() == plaintext.size() + PeerSeal::kOverheadBytes);
  const size_t pos = flip_at % sealed.size();
  const bool changed = mask != 0;
  sealed[pos] ^= static_cast<std::byte>(mask);

  PeerSeal receiver(ReceiverRing(), PeerSealOptions{});
  std::vector<std::byte> scratch;
  std::span<const std::byte> plain;
  const OpenResult r = receiver.Open(sealed, kNow, &scratch, &plain);
  const bool known_key = sender % 3 != 2;
  if (!changed) {
    const bool in_window =
        offset_ms >= -receiver.max_skew_ms() && offset_ms <= receiver.max_skew_ms();
    const OpenResult want = !known_key  ? OpenResult::kUnknownKey
                            : in_window ? OpenResult::kOk
                                        : OpenResult::kStale;
    FUZZ_CHECK(r == want);
    if (r == OpenResult::kOk) {
      FUZZ_CHECK(plain.size() == plaintext.size());
      FUZZ_CHECK(plain.empty() || std::memcmp(plain.data(), plaintext.data(), plain.size()) == 0);
      std::span<const std::byte> again;
      FUZZ_CHECK(receiver.Open(sealed, kNow, &scratch, &again) == OpenResult::kReplayed);
    }
    return;
  }
  FUZZ_CHECK(r != OpenResult::kOk);
  if (pos == 0) {
    FUZZ_CHECK(r == OpenResult::kUnsealed);
  } else if (pos < 5) {
    FUZZ_CHECK(r == OpenResult::kWrongCluster);
  } else if (pos < 9) {
    // Another id: unknown, unless it became the other installed key's id.
    FUZZ_CHECK(r == OpenResult::kUnknownKey || r == OpenResult::kBadAuth ||
               r == OpenResult::kStale);
  } else if (!known_key) {
    FUZZ_CHECK(r == OpenResult::kUnknownKey);
  } else {
    FUZZ_CHECK(r == OpenResult::kStale || r == OpenResult::kBadAuth);
    if (pos >= 17) {  // the timestamp was not touched
      const bool in_window =
          offset_ms >= -receiver.max_skew_ms() && offset_ms <= receiver.max_skew_ms();
      FUZZ_CHECK(r == (in_window ? OpenResult::kBadAuth : OpenResult::kStale));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  if ((data[0] & 1) == 0) {
    FuzzRaw(data + 1, size - 1);
  } else {
    FuzzSealed(data + 1, size - 1);
  }
  return 0;
}

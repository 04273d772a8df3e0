// The cluster keyring: the symmetric keys that seal peer traffic
// (daemon/io/peer_seal.h), and its file format.
//
// Key file (written by `tally keyring generate`, read by `tallyd --keyring`):
//
//   # comment lines start with '#'; blank lines are ignored
//   q0bS...44 base64 characters...=          <- the primary key
//   Zm9v...44 base64 characters...=  # a secondary key, with a trailing comment
//
// One key per line: standard base64 (RFC 4648 with padding) of 32 random bytes,
// optionally followed by whitespace and a '#' comment. The first key is the
// primary: it seals everything this node sends. Every key listed opens what
// peers send, so a key can be installed everywhere before any node seals with
// it (rotation, docs/RELIABILITY.md). At most kMaxKeyringKeys keys, no key
// twice, and no two keys with the same key id.
//
// Key id: the first 4 bytes of BLAKE2b("tally key id v1" || key), shown as 8
// hex digits. It travels in clear in every sealed message so a receiver picks
// the key without trial decryption; it reveals nothing usable about the key.
//
// Thread safety: a Keyring is an immutable value once built; share it as
// shared_ptr<const Keyring>. The free functions are reentrant.
#ifndef TALLY_DAEMON_IO_KEYRING_H_
#define TALLY_DAEMON_IO_KEYRING_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tally::io {

inline constexpr size_t kPeerKeyBytes = 32;  // XChaCha20-Poly1305 key
inline constexpr size_t kMaxKeyringKeys = 16;
inline constexpr size_t kMaxKeyringFileBytes = 64 * 1024;

using PeerKey = std::array<uint8_t, kPeerKeyBytes>;
using KeyId = uint32_t;

// Initialises libsodium once (thread-safe, idempotent). Every function here
// and in peer_seal.h calls it; aborts if libsodium cannot start (no
// randomness source), since no key could be made or used safely then.
void EnsureSodium();

KeyId ComputeKeyId(const PeerKey& key);
// 8 lowercase hex digits.
std::string FormatKeyId(KeyId id);

// A fresh key from the system's CSPRNG.
PeerKey GenerateKey();
// Standard base64 with padding (44 characters).
std::string EncodeKey(const PeerKey& key);

class Keyring {
 public:
  struct Entry {
    KeyId id;
    PeerKey key;
  };

  // From keys, the primary first. nullopt with `*why` when empty, too many,
  // repeated, or two keys share an id.
  static std::optional<Keyring> FromKeys(const std::vector<PeerKey>& keys, std::string* why);
  // Parses a key file's text (format above). nullopt with `*why` (naming the
  // line) on any error; a keyring is all or nothing.
  static std::optional<Keyring> Parse(std::string_view text, std::string* why);
  // Reads and parses the file at `path`: a regular file of at most
  // kMaxKeyringFileBytes. `*warning` (if not null) is set, and the load
  // still succeeds, when the file is readable by group or others.
  static std::optional<Keyring> Load(const std::string& path, std::string* why,
                                     std::string* warning = nullptr);

  Keyring(const Keyring& other) = default;
  Keyring& operator=(const Keyring& other) = default;
  Keyring(Keyring&& other) noexcept = default;
  Keyring& operator=(Keyring&& other) noexcept = default;
  ~Keyring();  // wipes the key bytes

  const Entry& primary() const { return entries_.front(); }
  // The key with id `id`, or null if none is installed.
  const PeerKey* Find(KeyId id) const;
  // Ids of the installed keys, the primary first.
  std::vector<KeyId> ids() const;
  size_t size() const { return entries_.size(); }

 private:
  Keyring() = default;
  std::vector<Entry> entries_;  // never empty; [0] is the primary
};

// The text of a new key file holding one fresh key (the primary), with a
// comment header that explains the format.
std::string NewKeyringText();

// Creates `path` with mode 0600 (never replacing an existing file) and writes
// `text` to it. False with `*why` on failure (the file is removed again).
bool WriteNewKeyringFile(const std::string& path, std::string_view text, std::string* why);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_KEYRING_H_

#include "daemon/io/keyring.h"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace tally::io {
namespace {

constexpr std::string_view kKeyIdContext = "tally key id v1";

bool Fail(std::string* why, std::string message) {
  if (why != nullptr) *why = std::move(message);
  return false;
}

bool IsSpace(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

std::string_view Trim(std::string_view s) {
  while (!s.empty() && IsSpace(s.front())) s.remove_prefix(1);
  while (!s.empty() && IsSpace(s.back())) s.remove_suffix(1);
  return s;
}

}  // namespace

void EnsureSodium() {
  // sodium_init is thread-safe and returns 1 when already initialised.
  static const bool ok = sodium_init() >= 0;
  if (!ok) {
    std::fputs("tally: libsodium failed to initialise (no randomness source?)\n", stderr);
    std::abort();
  }
}

KeyId ComputeKeyId(const PeerKey& key) {
  EnsureSodium();
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES_MIN);
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(kKeyIdContext.data()),
                            kKeyIdContext.size());
  crypto_generichash_update(&state, key.data(), key.size());
  unsigned char digest[crypto_generichash_BYTES_MIN];
  crypto_generichash_final(&state, digest, sizeof(digest));
  return static_cast<KeyId>(digest[0]) << 24 | static_cast<KeyId>(digest[1]) << 16 |
         static_cast<KeyId>(digest[2]) << 8 | static_cast<KeyId>(digest[3]);
}

std::string FormatKeyId(KeyId id) {
  char text[9];
  std::snprintf(text, sizeof(text), "%08x", id);
  return text;
}

PeerKey GenerateKey() {
  EnsureSodium();
  PeerKey key;
  randombytes_buf(key.data(), key.size());
  return key;
}

std::string EncodeKey(const PeerKey& key) {
  EnsureSodium();
  char text[sodium_base64_ENCODED_LEN(kPeerKeyBytes, sodium_base64_VARIANT_ORIGINAL)];
  sodium_bin2base64(text, sizeof(text), key.data(), key.size(), sodium_base64_VARIANT_ORIGINAL);
  std::string out(text);
  sodium_memzero(text, sizeof(text));
  return out;
}

Keyring::~Keyring() {
  for (Entry& e : entries_) sodium_memzero(e.key.data(), e.key.size());
}

std::optional<Keyring> Keyring::FromKeys(const std::vector<PeerKey>& keys, std::string* why) {
  if (keys.empty()) {
    Fail(why, "no keys");
    return std::nullopt;
  }
  if (keys.size() > kMaxKeyringKeys) {
    Fail(why, std::to_string(keys.size()) + " keys; at most " + std::to_string(kMaxKeyringKeys));
    return std::nullopt;
  }
  Keyring ring;
  for (size_t i = 0; i < keys.size(); ++i) {
    const KeyId id = ComputeKeyId(keys[i]);
    for (size_t j = 0; j < ring.entries_.size(); ++j) {
      if (sodium_memcmp(ring.entries_[j].key.data(), keys[i].data(), kPeerKeyBytes) == 0) {
        Fail(why, "key " + std::to_string(i + 1) + " repeats key " + std::to_string(j + 1));
        return std::nullopt;
      }
      if (ring.entries_[j].id == id) {
        // 2^-32 per pair for random keys; refuse rather than make ids ambiguous.
        Fail(why, "keys " + std::to_string(j + 1) + " and " + std::to_string(i + 1) +
                      " have the same key id " + FormatKeyId(id) + "; generate another key");
        return std::nullopt;
      }
    }
    ring.entries_.push_back(Entry{id, keys[i]});
  }
  return ring;
}

std::optional<Keyring> Keyring::Parse(std::string_view text, std::string* why) {
  EnsureSodium();
  if (text.size() > kMaxKeyringFileBytes) {
    Fail(why, "larger than " + std::to_string(kMaxKeyringFileBytes) + " bytes");
    return std::nullopt;
  }
  std::vector<PeerKey> keys;
  struct Wipe {
    std::vector<PeerKey>* keys;
    ~Wipe() {
      for (PeerKey& k : *keys) sodium_memzero(k.data(), k.size());
    }
  } wipe{&keys};
  size_t line_number = 0;
  while (!text.empty()) {
    ++line_number;
    const size_t end = text.find('\n');
    std::string_view line = Trim(text.substr(0, end));
    text.remove_prefix(end == std::string_view::npos ? text.size() : end + 1);
    if (line.empty() || line.front() == '#') continue;
    // The key, then optionally whitespace and a '#' comment.
    size_t key_end = 0;
    while (key_end < line.size() && !IsSpace(line[key_end])) ++key_end;
    std::string_view encoded = line.substr(0, key_end);
    std::string_view rest = Trim(line.substr(key_end));
    const std::string where = "line " + std::to_string(line_number) + ": ";
    if (!rest.empty() && rest.front() != '#') {
      Fail(why, where + "expected one base64 key, then optionally '# comment'");
      return std::nullopt;
    }
    if (keys.size() == kMaxKeyringKeys) {
      Fail(why, where + "more than " + std::to_string(kMaxKeyringKeys) + " keys");
      return std::nullopt;
    }
    // Decode into room for more than a key, so a long key is told apart from bad text.
    unsigned char bin[2 * kPeerKeyBytes];
    size_t bin_len = 0;
    const char* parsed_end = nullptr;
    const int rc = sodium_base642bin(bin, sizeof(bin), encoded.data(), encoded.size(), nullptr,
                                     &bin_len, &parsed_end, sodium_base64_VARIANT_ORIGINAL);
    if (rc != 0 &&
        encoded.size() > sodium_base64_ENCODED_LEN(sizeof(bin), sodium_base64_VARIANT_ORIGINAL)) {
      sodium_memzero(bin, sizeof(bin));
      Fail(why, where + "key is " + std::to_string(encoded.size()) +
                    " base64 characters; a key is 32 bytes (44 characters)");
      return std::nullopt;
    }
    if (rc != 0 || parsed_end != encoded.data() + encoded.size()) {
      sodium_memzero(bin, sizeof(bin));
      Fail(why, where + "not valid base64 (standard alphabet, with '=' padding)");
      return std::nullopt;
    }
    if (bin_len != kPeerKeyBytes) {
      sodium_memzero(bin, sizeof(bin));
      Fail(why, where + "key is " + std::to_string(bin_len) + " bytes; a key is " +
                    std::to_string(kPeerKeyBytes) + " bytes (tally keyring generate)");
      return std::nullopt;
    }
    PeerKey& key = keys.emplace_back();
    std::memcpy(key.data(), bin, kPeerKeyBytes);
    sodium_memzero(bin, sizeof(bin));
  }
  if (keys.empty()) {
    Fail(why, "no keys (every line is blank or a comment)");
    return std::nullopt;
  }
  return FromKeys(keys, why);
}

std::optional<Keyring> Keyring::Load(const std::string& path, std::string* why,
                                     std::string* warning) {
  auto fail = [&](const std::string& message) {
    Fail(why, "'" + path + "': " + message);
    return std::nullopt;
  };
  // O_NONBLOCK: a FIFO or device named by mistake must not hang the daemon.
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return fail(std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return fail("not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxKeyringFileBytes) {
    close(fd);
    return fail("larger than " + std::to_string(kMaxKeyringFileBytes) + " bytes");
  }
  std::string text(static_cast<size_t>(st.st_size) + 1, '\0');
  size_t used = 0;
  for (;;) {
    const ssize_t n = read(fd, text.data() + used, text.size() - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      close(fd);
      sodium_memzero(text.data(), text.size());
      return fail(std::strerror(err));
    }
    if (n == 0) break;
    used += static_cast<size_t>(n);
    if (used == text.size()) {  // grew while we read: read at most the limit
      if (text.size() > kMaxKeyringFileBytes) break;
      text.resize(std::min(text.size() * 2, kMaxKeyringFileBytes + 1));
    }
  }
  close(fd);
  text.resize(used);
  std::string parse_why;
  std::optional<Keyring> ring = Parse(text, &parse_why);
  sodium_memzero(text.data(), text.size());
  if (!ring) return fail(parse_why);
  if (warning != nullptr) {
    warning->clear();
    if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
      char mode[8];
      std::snprintf(mode, sizeof(mode), "%04o", static_cast<unsigned>(st.st_mode & 07777));
      *warning = "keyring file '" + path + "' has mode " + mode +
                 ": group or others can read the cluster key (chmod 600)";
    }
  }
  return ring;
}

const PeerKey* Keyring::Find(KeyId id) const {
  for (const Entry& e : entries_) {
    if (e.id == id) return &e.key;
  }
  return nullptr;
}

std::vector<KeyId> Keyring::ids() const {
  std::vector<KeyId> out;
  out.reserve(entries_.size());
  for (const Entry& e : entries_) out.push_back(e.id);
  return out;
}

std::string NewKeyringText() {
  PeerKey key = GenerateKey();
  const KeyId id = ComputeKeyId(key);
  char date[32] = "";
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  if (gmtime_r(&now, &tm) != nullptr) std::strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
  std::string text =
      "# tally keyring: one key per line (base64 of 32 random bytes), optionally\n"
      "# followed by '# comment'. The first key is the primary and seals what this\n"
      "# node sends; every key listed opens what peers send. Keep this file mode 0600\n"
      "# and identical on every member; after editing it, send tallyd SIGHUP.\n"
      "# Rotation: add a new key below, reload everywhere; move it to the top,\n"
      "# reload everywhere; delete the old key, reload everywhere.\n" +
      EncodeKey(key) + "  # key id " + FormatKeyId(id) + ", generated " + date + "\n";
  sodium_memzero(key.data(), key.size());
  return text;
}

bool WriteNewKeyringFile(const std::string& path, std::string_view text, std::string* why) {
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return Fail(why, "'" + path + "': " + std::strerror(errno) +
                         (errno == EEXIST ? " (never overwritten; remove it first)" : ""));
  }
  // The mode given to open() is cut by the umask; 0600 is also the most it may be.
  if (fchmod(fd, 0600) != 0) {
    const int err = errno;
    close(fd);
    unlink(path.c_str());
    return Fail(why, "'" + path + "': chmod: " + std::strerror(err));
  }
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      close(fd);
      unlink(path.c_str());
      return Fail(why, "'" + path + "': write: " + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  int err = fsync(fd) == 0 ? 0 : errno;
  if (close(fd) != 0 && err == 0) err = errno;
  if (err != 0) {
    unlink(path.c_str());
    return Fail(why, "'" + path + "': " + std::strerror(err));
  }
  return true;
}

}  // namespace tally::io

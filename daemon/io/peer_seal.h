// Sealing of peer traffic: every gossip datagram and every stream frame
// between tallyd members is encrypted and authenticated with
// XChaCha20-Poly1305 (IETF AEAD, libsodium) under the cluster keyring
// (daemon/io/keyring.h). docs/RELIABILITY.md ("Peer authentication") has the
// threat model and the operator's side.
//
// Sealed message, version 1 (57 bytes more than the plaintext):
//
//   offset  bytes  field
//        0      1  0xA1: sealed, format version 1 (an unsealed Cap'n Proto
//                  message starts with 0x00)
//        1      4  cluster id: BLAKE2b("tally cluster id v1" || cluster name),
//                  first 4 bytes, big-endian
//        5      4  key id of the sealing key (keyring.h), big-endian
//        9      8  sender's wall clock, ms since the Unix epoch, big-endian
//       17     24  nonce, random per message
//       41      n  ciphertext of the n-byte peer message
//     41+n     16  Poly1305 tag
//
// The associated data is the 41-byte header followed by the cluster name, so
// the header is authenticated and a member of another cluster that happens
// to hold the same key cannot talk to us. The header's ids only pick the key
// and sort rejections; they grant nothing.
//
// Open checks, in this order, and stops at the first failure (each failure is
// counted under its reason, the packet is dropped and never decoded):
//   unsealed        shorter than 57 bytes or not starting with 0xA1
//   wrong_cluster   the cluster id is not ours
//   unknown_key     the key id is not in our keyring
//   stale           the timestamp is more than max_skew_ms from our wall clock
//   bad_auth        the tag does not verify (tampered, forged, or a key
//                   with a colliding id)
//   replayed        the nonce was already accepted
//   replay_memory_full  older than the oldest time the replay memory still
//                   covers after an overload (see ReplayWindow)
// The first four look at the cleartext header only, so a forger can choose
// which of them a junk packet is counted under; from bad_auth on, the packet
// is authentic. Work per packet: one header parse, one key lookup among at
// most 16, one AEAD pass over the packet, O(1) amortised replay bookkeeping;
// nothing is allocated beyond a scratch buffer of the packet's size.
//
// Thread safety: PeerSeal and ReplayWindow are thread-safe.
#ifndef TALLY_DAEMON_IO_PEER_SEAL_H_
#define TALLY_DAEMON_IO_PEER_SEAL_H_

#include <array>
#include <atomic>
#include <boost/unordered/unordered_flat_set.hpp>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "daemon/io/keyring.h"
#include "wire/codec.h"

namespace tally::io {

enum class OpenResult : uint8_t {
  kOk = 0,
  kUnsealed,
  kWrongCluster,
  kUnknownKey,
  kStale,
  kBadAuth,
  kReplayed,
  kReplayMemoryFull,
};
inline constexpr size_t kOpenResultCount = 8;
// "ok", "unsealed", "wrong_cluster", ... (the names in status counters).
const char* OpenResultName(OpenResult result);

inline constexpr size_t kMaxClusterNameBytes = 64;
// 1..64 printable ASCII characters without spaces.
bool ValidClusterName(const std::string& name);

// The nonces of accepted messages, remembered long enough that none can be
// accepted twice.
//
// Time is cut into slots of `slot_ms` by the messages' own (authenticated)
// timestamps; a ring of K = ceil(2 * max_skew_ms / slot_ms) + 2 slots, each a
// set of 64-bit nonce prefixes, covers every timestamp Admit can accept
// (within max_skew_ms of now on either side). Forgetting is safe:
//   * a slot is reused for a timestamp K slots later only when its own
//     timestamps are more than max_skew_ms behind any clock that accepts the
//     new one: a replay of a forgotten nonce is then `stale`;
//   * when more than `capacity` nonces are held (more peer messages in the
//     window than the memory allows), the oldest slot is dropped whole and
//     a floor moves past it: every message at or below the floor is refused
//     as `replay_memory_full`. The window then shrinks on its old side, for
//     genuine late messages too, instead of letting a replay through.
//   * a message whose slot holds a newer time (our clock stepped back by
//     more than the window) is refused as `stale`.
// Memory: at most `capacity` 8-byte entries in flat hash sets (about 10 to
// 20 bytes each with the sets' load factor), plus K empty sets.
class ReplayWindow {
 public:
  ReplayWindow(int64_t max_skew_ms, size_t capacity, int64_t slot_ms = 1000);

  // kOk (and the nonce is remembered), kStale, kReplayed or kReplayMemoryFull.
  OpenResult Admit(int64_t timestamp_ms, int64_t now_ms, uint64_t nonce_key);

  size_t size() const;
  // Messages at or below this time are refused as replay_memory_full
  // (INT64_MIN until the first overload).
  int64_t floor_ms() const;
  int64_t max_skew_ms() const { return max_skew_ms_; }

 private:
  struct Slot {
    int64_t epoch = INT64_MIN;  // timestamp / slot_ms of what `nonces` holds
    boost::unordered_flat_set<uint64_t> nonces;
  };
  const int64_t max_skew_ms_;
  const size_t capacity_;
  const int64_t slot_ms_;
  mutable std::mutex mu_;
  std::vector<Slot> slots_;          // mu_
  size_t size_ = 0;                  // mu_
  int64_t floor_epoch_ = INT64_MIN;  // mu_: epochs below it are refused
};

struct PeerSealOptions {
  std::string cluster_name = "tally";
  // Accepted timestamps: within this many ms of our wall clock, either way.
  int64_t max_skew_ms = 5500;
  size_t replay_capacity = 1u << 20;  // nonces remembered at most
  int64_t replay_slot_ms = 1000;
};

class PeerSeal {
 public:
  static constexpr uint8_t kMagic = 0xA1;
  static constexpr size_t kHeaderBytes = 41;
  static constexpr size_t kTagBytes = 16;
  static constexpr size_t kOverheadBytes = kHeaderBytes + kTagBytes;

  // REQUIRES: keyring != null, ValidClusterName(options.cluster_name),
  // options.max_skew_ms > 0, options.replay_capacity > 0.
  PeerSeal(std::shared_ptr<const Keyring> keyring, PeerSealOptions options);

  // Replaces the keyring (a reload). Seals from now on use the new primary;
  // opens accept every key of the new keyring. The replay memory is kept.
  void SetKeyring(std::shared_ptr<const Keyring> keyring);
  std::shared_ptr<const Keyring> keyring() const;
  const std::string& cluster_name() const { return options_.cluster_name; }
  uint32_t cluster_id() const { return cluster_id_; }
  int64_t max_skew_ms() const { return options_.max_skew_ms; }

  // Writes the sealed form of `plaintext` (timestamp `wall_ms`) to `*out`,
  // replacing its contents. `out` must not alias `plaintext`.
  void Seal(std::span<const std::byte> plaintext, int64_t wall_ms,
            std::vector<std::byte>* out) const;

  // Opens `sealed` received at our wall time `wall_ms`. On kOk, `*plaintext`
  // views the message inside `*scratch` (resized as needed; valid until
  // `scratch` changes). Any other result: the packet must be dropped;
  // `*plaintext` is untouched. Counts the result either way.
  OpenResult Open(std::span<const std::byte> sealed, int64_t wall_ms,
                  std::vector<std::byte>* scratch, std::span<const std::byte>* plaintext);

  // Reads the cleartext key id and timestamp of a packet Open rejected (for
  // logs). False if it is too short to hold a header.
  static bool PeekHeader(std::span<const std::byte> sealed, KeyId* key_id, int64_t* wall_ms);

  struct Stats {
    uint64_t sealed = 0;
    uint64_t opened = 0;
    std::array<uint64_t, kOpenResultCount> rejected{};  // by OpenResult; [kOk] unused
    size_t replay_entries = 0;
  };
  Stats stats() const;

 private:
  PeerSealOptions options_;
  uint32_t cluster_id_;
  mutable std::mutex keyring_mu_;
  std::shared_ptr<const Keyring> keyring_;  // keyring_mu_
  ReplayWindow replay_;
  mutable std::atomic<uint64_t> sealed_{0};
  std::atomic<uint64_t> opened_{0};
  std::array<std::atomic<uint64_t>, kOpenResultCount> rejected_{};
};

// What the cluster driver holds: whether peers are sealed, the PeerSeal, the
// key file and its reloads, and the status fields and counters.
struct PeerAuthOptions {
  std::string keyring_file;  // "" = no keyring: peers are not authenticated
  std::string cluster_name = "tally";
  // Without a keyring, gossip may bind to a non-loopback address only when
  // the operator says so (--insecure-peers): anyone who reaches the port
  // could then join, forge counts and evict members.
  bool insecure_peers = false;
};

// True if `host` is a literal loopback address (127.0.0.0/8, ::1).
bool IsLoopbackHost(const std::string& host);

class PeerAuth {
 public:
  // Slack added to the node's clock-offset limit to make the replay window:
  // transit, queueing in a TCP send queue and a connect timeout.
  static constexpr int64_t kWindowSlackMs = 5000;

  // What Create checks, without logging or keeping anything (for
  // `tallyd --check-config`).
  static bool Check(const PeerAuthOptions& options, std::string* error);
  // Decides how peers are protected for gossip bound to `gossip_host` (a
  // numeric address): sealed with the keyring file (loaded now), or, without
  // a keyring file, not sealed (plain mode, as before keyrings existed; a
  // loud warning is logged when the host is not loopback). Fails with
  // `*error` when the keyring cannot be loaded or the cluster name is
  // invalid. The replay window is max_clock_offset_ms + kWindowSlackMs.
  static std::unique_ptr<PeerAuth> Create(const PeerAuthOptions& options,
                                          const std::string& gossip_host,
                                          int64_t max_clock_offset_ms, std::string* error);

  // Null when peers are not sealed.
  PeerSeal* seal() { return seal_.get(); }
  bool sealed() const { return seal_ != nullptr; }

  // Re-reads the keyring file and installs it. On failure the old keyring
  // stays in use; the reason is logged, kept for status and returned. True
  // (and nothing done) without a keyring file. Thread-safe.
  bool Reload(std::string* why);

  // Seals `*bytes` in place (nothing without a keyring). Thread-safe.
  void SealInPlace(std::vector<std::byte>* bytes, int64_t wall_ms) const;

  // Without a keyring: true, `*data` unchanged. With one: opens `*data` from
  // `from` into `*scratch`; true with `*data` the plaintext, or false when
  // the packet was dropped (counted by reason). Thread-safe if each thread
  // has its own scratch.
  bool Open(const std::string& from, int64_t wall_ms, std::vector<std::byte>* scratch,
            std::span<const std::byte>* data);

  // Logs a summary of the packets dropped since the last summary, at most
  // once every 10 s (call it periodically with a monotonic time).
  void LogRejections(int64_t monotonic_ms);

  // Fills the status fields (cluster name, mode, key ids, reload error) and
  // appends the counters (peer_sealed, peer_opened, peer_rejected_REASON,
  // replay_entries, keyring_reloads, keyring_reload_failures).
  void AppendStatus(wire::StatusReport* report) const;

 private:
  PeerAuth() = default;

  PeerAuthOptions options_;
  std::string mode_;  // sealed | unsealed-loopback | unsealed
  std::unique_ptr<PeerSeal> seal_;

  mutable std::mutex mu_;  // guards what follows
  std::string reload_error_;
  uint64_t reloads_ = 0, reload_failures_ = 0;
  // The last rejected packet, and the totals at the last summary.
  std::string last_from_;
  OpenResult last_reason_ = OpenResult::kOk;
  KeyId last_key_id_ = 0;
  int64_t last_offset_ms_ = 0;
  bool last_header_ = false;
  std::array<uint64_t, kOpenResultCount> logged_{};
  int64_t last_log_ms_ = INT64_MIN;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_PEER_SEAL_H_

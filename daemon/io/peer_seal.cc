#include "daemon/io/peer_seal.h"

#include <sodium.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <boost/asio/ip/address.hpp>
#include <cstring>
#include <string_view>

namespace tally::io {
namespace {

constexpr std::string_view kClusterIdContext = "tally cluster id v1";
constexpr int64_t kLogEveryMs = 10'000;

static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == kPeerKeyBytes);
static_assert(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES == 24);
static_assert(crypto_aead_xchacha20poly1305_ietf_ABYTES == PeerSeal::kTagBytes);

// Header offsets.
constexpr size_t kClusterIdAt = 1;
constexpr size_t kKeyIdAt = 5;
constexpr size_t kTimeAt = 9;
constexpr size_t kNonceAt = 17;
constexpr size_t kNonceBytes = 24;
static_assert(kNonceAt + kNonceBytes == PeerSeal::kHeaderBytes);

void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 3; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 7; i >= 0; --i, v >>= 8) p[i] = static_cast<uint8_t>(v);
}
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = v << 8 | p[i];
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = v << 8 | p[i];
  return v;
}

uint32_t ClusterId(const std::string& name) {
  EnsureSodium();
  crypto_generichash_state state;
  crypto_generichash_init(&state, nullptr, 0, crypto_generichash_BYTES_MIN);
  crypto_generichash_update(&state,
                            reinterpret_cast<const unsigned char*>(kClusterIdContext.data()),
                            kClusterIdContext.size());
  crypto_generichash_update(&state, reinterpret_cast<const unsigned char*>(name.data()),
                            name.size());
  unsigned char digest[crypto_generichash_BYTES_MIN];
  crypto_generichash_final(&state, digest, sizeof(digest));
  return GetU32(digest);
}

// The associated data: the header, then the cluster name.
size_t BuildAd(const uint8_t* header, const std::string& cluster_name,
               std::array<uint8_t, PeerSeal::kHeaderBytes + kMaxClusterNameBytes>* ad) {
  std::memcpy(ad->data(), header, PeerSeal::kHeaderBytes);
  std::memcpy(ad->data() + PeerSeal::kHeaderBytes, cluster_name.data(), cluster_name.size());
  return PeerSeal::kHeaderBytes + cluster_name.size();
}

int64_t FloorDiv(int64_t a, int64_t b) {
  int64_t q = a / b;
  if ((a % b != 0) && ((a < 0) != (b < 0))) --q;
  return q;
}

// Nonces come from the system CSPRNG, fetched in bulk: libsodium's
// randombytes_buf is one getrandom() system call per call, which was most of
// the cost of a seal (tally-seal-bench). Nonces are public, so a buffer of
// them needs no wiping; one buffer per thread needs no lock. (tallyd never
// forks, so no two processes share a buffer.)
void NextNonce(uint8_t* nonce) {
  constexpr size_t kNoncesPerFill = 170;  // about 4 KiB per system call
  thread_local std::array<uint8_t, kNonceBytes * kNoncesPerFill> pool;
  thread_local size_t used = pool.size();
  if (used == pool.size()) {
    randombytes_buf(pool.data(), pool.size());
    used = 0;
  }
  std::memcpy(nonce, pool.data() + used, kNonceBytes);
  used += kNonceBytes;
}

}  // namespace

bool IsLoopbackHost(const std::string& host) {
  boost::system::error_code ec;
  boost::asio::ip::address a = boost::asio::ip::make_address(host, ec);
  return !ec && a.is_loopback();
}

const char* OpenResultName(OpenResult result) {
  switch (result) {
    case OpenResult::kOk:
      return "ok";
    case OpenResult::kUnsealed:
      return "unsealed";
    case OpenResult::kWrongCluster:
      return "wrong_cluster";
    case OpenResult::kUnknownKey:
      return "unknown_key";
    case OpenResult::kStale:
      return "stale";
    case OpenResult::kBadAuth:
      return "bad_auth";
    case OpenResult::kReplayed:
      return "replayed";
    case OpenResult::kReplayMemoryFull:
      return "replay_memory_full";
  }
  return "unknown";
}

bool ValidClusterName(const std::string& name) {
  if (name.empty() || name.size() > kMaxClusterNameBytes) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return c > ' ' && c <= '~'; });
}

// ---------------------------------------------------------------- ReplayWindow

ReplayWindow::ReplayWindow(int64_t max_skew_ms, size_t capacity, int64_t slot_ms)
    : max_skew_ms_(max_skew_ms), capacity_(capacity), slot_ms_(slot_ms) {
  const int64_t k = (2 * max_skew_ms + slot_ms - 1) / slot_ms + 2;
  slots_.resize(static_cast<size_t>(k));
}

OpenResult ReplayWindow::Admit(int64_t timestamp_ms, int64_t now_ms, uint64_t nonce_key) {
  // Written so that no subtraction can overflow for any timestamp.
  if (timestamp_ms < now_ms - max_skew_ms_ || timestamp_ms > now_ms + max_skew_ms_) {
    return OpenResult::kStale;
  }
  const int64_t epoch = FloorDiv(timestamp_ms, slot_ms_);
  std::lock_guard<std::mutex> lock(mu_);
  if (epoch < floor_epoch_) return OpenResult::kReplayMemoryFull;
  const int64_t k = static_cast<int64_t>(slots_.size());
  Slot& slot = slots_[static_cast<size_t>(((epoch % k) + k) % k)];
  if (slot.epoch > epoch) return OpenResult::kStale;  // our clock stepped back past the window
  if (slot.epoch < epoch) {
    size_ -= slot.nonces.size();
    slot.nonces.clear();
    slot.epoch = epoch;
  }
  if (!slot.nonces.insert(nonce_key).second) return OpenResult::kReplayed;
  if (++size_ > capacity_) {
    // Overload: forget the oldest slot whole and refuse everything up to it.
    Slot* oldest = nullptr;
    for (Slot& s : slots_) {
      if (!s.nonces.empty() && (oldest == nullptr || s.epoch < oldest->epoch)) oldest = &s;
    }
    floor_epoch_ = std::max(floor_epoch_, oldest->epoch + 1);
    size_ -= oldest->nonces.size();
    oldest->nonces.clear();
  }
  return OpenResult::kOk;
}

size_t ReplayWindow::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

int64_t ReplayWindow::floor_ms() const {
  std::lock_guard<std::mutex> lock(mu_);
  return floor_epoch_ == INT64_MIN ? INT64_MIN : floor_epoch_ * slot_ms_ - 1;
}

// ---------------------------------------------------------------- PeerSeal

PeerSeal::PeerSeal(std::shared_ptr<const Keyring> keyring, PeerSealOptions options)
    : options_(std::move(options)),
      cluster_id_(ClusterId(options_.cluster_name)),
      keyring_(std::move(keyring)),
      replay_(options_.max_skew_ms, options_.replay_capacity, options_.replay_slot_ms) {
  EnsureSodium();
}

void PeerSeal::SetKeyring(std::shared_ptr<const Keyring> keyring) {
  std::shared_ptr<const Keyring> old;  // released outside the lock
  std::lock_guard<std::mutex> lock(keyring_mu_);
  old = std::move(keyring_);
  keyring_ = std::move(keyring);
}

std::shared_ptr<const Keyring> PeerSeal::keyring() const {
  std::lock_guard<std::mutex> lock(keyring_mu_);
  return keyring_;
}

void PeerSeal::Seal(std::span<const std::byte> plaintext, int64_t wall_ms,
                    std::vector<std::byte>* out) const {
  std::shared_ptr<const Keyring> ring = keyring();
  const Keyring::Entry& key = ring->primary();
  out->resize(kOverheadBytes + plaintext.size());
  uint8_t* h = reinterpret_cast<uint8_t*>(out->data());
  h[0] = kMagic;
  PutU32(h + kClusterIdAt, cluster_id_);
  PutU32(h + kKeyIdAt, key.id);
  PutU64(h + kTimeAt, static_cast<uint64_t>(wall_ms));
  NextNonce(h + kNonceAt);
  std::array<uint8_t, kHeaderBytes + kMaxClusterNameBytes> ad;
  const size_t ad_len = BuildAd(h, options_.cluster_name, &ad);
  unsigned long long sealed_len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(
      h + kHeaderBytes, &sealed_len, reinterpret_cast<const unsigned char*>(plaintext.data()),
      plaintext.size(), ad.data(), ad_len, nullptr, h + kNonceAt, key.key.data());
  sealed_.fetch_add(1, std::memory_order_relaxed);
}

OpenResult PeerSeal::Open(std::span<const std::byte> sealed, int64_t wall_ms,
                          std::vector<std::byte>* scratch, std::span<const std::byte>* plaintext) {
  auto reject = [this](OpenResult r) {
    rejected_[static_cast<size_t>(r)].fetch_add(1, std::memory_order_relaxed);
    return r;
  };
  const uint8_t* h = reinterpret_cast<const uint8_t*>(sealed.data());
  if (sealed.size() < kOverheadBytes || h[0] != kMagic) return reject(OpenResult::kUnsealed);
  if (GetU32(h + kClusterIdAt) != cluster_id_) return reject(OpenResult::kWrongCluster);
  std::shared_ptr<const Keyring> ring = keyring();
  const PeerKey* key = ring->Find(GetU32(h + kKeyIdAt));
  if (key == nullptr) return reject(OpenResult::kUnknownKey);
  // Cheap before the AEAD pass: an old captured packet costs no decryption.
  // Checked again, authenticated, by the replay window.
  const int64_t timestamp_ms = static_cast<int64_t>(GetU64(h + kTimeAt));
  const int64_t skew = options_.max_skew_ms;
  if (timestamp_ms < wall_ms - skew || timestamp_ms > wall_ms + skew) {
    return reject(OpenResult::kStale);
  }
  const size_t n = sealed.size() - kOverheadBytes;
  if (scratch->size() < std::max<size_t>(n, 1)) scratch->resize(std::max<size_t>(n, 1));
  std::array<uint8_t, kHeaderBytes + kMaxClusterNameBytes> ad;
  const size_t ad_len = BuildAd(h, options_.cluster_name, &ad);
  unsigned long long opened_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(
          reinterpret_cast<unsigned char*>(scratch->data()), &opened_len, nullptr, h + kHeaderBytes,
          sealed.size() - kHeaderBytes, ad.data(), ad_len, h + kNonceAt, key->data()) != 0) {
    return reject(OpenResult::kBadAuth);
  }
  // The nonce is random per message; its first 8 bytes identify it.
  uint64_t nonce_key;
  std::memcpy(&nonce_key, h + kNonceAt, sizeof(nonce_key));
  const OpenResult admitted = replay_.Admit(timestamp_ms, wall_ms, nonce_key);
  if (admitted != OpenResult::kOk) return reject(admitted);
  opened_.fetch_add(1, std::memory_order_relaxed);
  *plaintext = std::span<const std::byte>(scratch->data(), static_cast<size_t>(opened_len));
  return OpenResult::kOk;
}

bool PeerSeal::PeekHeader(std::span<const std::byte> sealed, KeyId* key_id, int64_t* wall_ms) {
  if (sealed.size() < kHeaderBytes) return false;
  const uint8_t* h = reinterpret_cast<const uint8_t*>(sealed.data());
  *key_id = GetU32(h + kKeyIdAt);
  *wall_ms = static_cast<int64_t>(GetU64(h + kTimeAt));
  return true;
}

PeerSeal::Stats PeerSeal::stats() const {
  Stats s;
  s.sealed = sealed_.load(std::memory_order_relaxed);
  s.opened = opened_.load(std::memory_order_relaxed);
  for (size_t i = 0; i < kOpenResultCount; ++i) {
    s.rejected[i] = rejected_[i].load(std::memory_order_relaxed);
  }
  s.replay_entries = replay_.size();
  return s;
}

// ---------------------------------------------------------------- PeerAuth

namespace {

// Validates `options`; with a keyring file, loads it.
bool CheckPeerAuth(const PeerAuthOptions& options, std::optional<Keyring>* ring,
                   std::string* warning, std::string* error) {
  if (!ValidClusterName(options.cluster_name)) {
    *error = "cluster name must be 1.." + std::to_string(kMaxClusterNameBytes) +
             " printable characters without spaces, got '" + options.cluster_name + "'";
    return false;
  }
  if (options.keyring_file.empty()) return true;  // plain mode; Create warns off loopback
  std::string why;
  *ring = Keyring::Load(options.keyring_file, &why, warning);
  if (!*ring) {
    *error = "keyring " + why;
    return false;
  }
  return true;
}

}  // namespace

bool PeerAuth::Check(const PeerAuthOptions& options, std::string* error) {
  std::optional<Keyring> ring;
  std::string warning;
  return CheckPeerAuth(options, &ring, &warning, error);
}

std::unique_ptr<PeerAuth> PeerAuth::Create(const PeerAuthOptions& options,
                                           const std::string& gossip_host,
                                           int64_t max_clock_offset_ms, std::string* error) {
  std::optional<Keyring> ring;
  std::string warning;
  if (!CheckPeerAuth(options, &ring, &warning, error)) return nullptr;
  std::unique_ptr<PeerAuth> auth(new PeerAuth());
  auth->options_ = options;
  if (!ring) {
    if (IsLoopbackHost(gossip_host)) {
      auth->mode_ = "unsealed-loopback";
      spdlog::info("peers are not authenticated (no --keyring); gossip is bound to loopback {}",
                   gossip_host);
    } else {
      auth->mode_ = "unsealed";
      spdlog::warn(
          "PEERS ARE NOT AUTHENTICATED: gossip is bound to {}, not a loopback address, and no "
          "--keyring is given. Anyone who can reach that port can join the cluster, forge "
          "counts, take keys and evict members. Give every member --keyring FILE (tally "
          "keyring generate; docs/OPERATIONS.md).",
          gossip_host);
    }
    return auth;
  }
  if (!warning.empty()) spdlog::warn("{}", warning);
  PeerSealOptions seal_options;
  seal_options.cluster_name = options.cluster_name;
  seal_options.max_skew_ms = max_clock_offset_ms + kWindowSlackMs;
  std::vector<KeyId> ids = ring->ids();
  auth->seal_ =
      std::make_unique<PeerSeal>(std::make_shared<const Keyring>(std::move(*ring)), seal_options);
  auth->mode_ = "sealed";
  std::string others;
  for (size_t i = 1; i < ids.size(); ++i) others += " " + FormatKeyId(ids[i]);
  spdlog::info(
      "peers are sealed (XChaCha20-Poly1305): cluster '{}', keyring {}: primary key {}, "
      "secondary keys:{}; replay window +-{} ms",
      options.cluster_name, options.keyring_file, FormatKeyId(ids[0]),
      others.empty() ? " none" : others, seal_options.max_skew_ms);
  return auth;
}

bool PeerAuth::Reload(std::string* why) {
  if (!seal_) {
    spdlog::info("reload: no keyring configured; nothing to reload");
    return true;
  }
  std::string reason, warning;
  std::optional<Keyring> ring = Keyring::Load(options_.keyring_file, &reason, &warning);
  std::lock_guard<std::mutex> lock(mu_);
  if (!ring) {
    ++reload_failures_;
    reload_error_ = "keyring " + reason;
    spdlog::error("keyring reload failed, still using the keys loaded before: {}", reload_error_);
    if (why != nullptr) *why = reload_error_;
    return false;
  }
  if (!warning.empty()) spdlog::warn("{}", warning);
  std::vector<KeyId> before = seal_->keyring()->ids();
  std::vector<KeyId> after = ring->ids();
  seal_->SetKeyring(std::make_shared<const Keyring>(std::move(*ring)));
  ++reloads_;
  reload_error_.clear();
  auto list = [](const std::vector<KeyId>& ids) {
    std::string s;
    for (size_t i = 0; i < ids.size(); ++i) {
      s += (i == 0 ? "" : " ") + FormatKeyId(ids[i]) + (i == 0 ? " (primary)" : "");
    }
    return s;
  };
  spdlog::info("keyring reloaded from {}: {} (was {})", options_.keyring_file, list(after),
               list(before));
  return true;
}

void PeerAuth::SealInPlace(std::vector<std::byte>* bytes, int64_t wall_ms) const {
  if (!seal_) return;
  std::vector<std::byte> sealed;
  seal_->Seal(*bytes, wall_ms, &sealed);
  bytes->swap(sealed);
}

bool PeerAuth::Open(const std::string& from, int64_t wall_ms, std::vector<std::byte>* scratch,
                    std::span<const std::byte>* data) {
  if (!seal_) return true;
  const OpenResult r = seal_->Open(*data, wall_ms, scratch, data);
  if (r == OpenResult::kOk) return true;
  KeyId key_id = 0;
  int64_t sent_ms = 0;
  const bool header = r != OpenResult::kUnsealed && PeerSeal::PeekHeader(*data, &key_id, &sent_ms);
  std::lock_guard<std::mutex> lock(mu_);
  last_from_ = from;
  last_reason_ = r;
  last_header_ = header;
  last_key_id_ = key_id;
  last_offset_ms_ = header ? sent_ms - wall_ms : 0;
  return false;
}

void PeerAuth::LogRejections(int64_t monotonic_ms) {
  if (!seal_) return;
  PeerSeal::Stats s = seal_->stats();
  std::lock_guard<std::mutex> lock(mu_);
  if (last_log_ms_ != INT64_MIN && monotonic_ms - last_log_ms_ < kLogEveryMs) return;
  std::string counts;
  for (size_t i = 1; i < kOpenResultCount; ++i) {
    const uint64_t delta = s.rejected[i] - logged_[i];
    if (delta > 0) {
      counts += std::string(counts.empty() ? "" : ", ") +
                OpenResultName(static_cast<OpenResult>(i)) + " " + std::to_string(delta);
    }
  }
  if (counts.empty()) return;
  logged_ = s.rejected;
  last_log_ms_ = monotonic_ms;
  std::string last = std::string(OpenResultName(last_reason_)) + " from " + last_from_;
  if (last_header_) {
    last += ", key id " + FormatKeyId(last_key_id_) + ", its clock " +
            std::to_string(last_offset_ms_) + " ms from ours";
  }
  spdlog::warn("dropped peer packets that did not open: {} (last: {})", counts, last);
}

void PeerAuth::AppendStatus(wire::StatusReport* r) const {
  r->cluster_name = options_.cluster_name;
  r->peer_auth = mode_;
  PeerSeal::Stats s;
  if (seal_) {
    for (KeyId id : seal_->keyring()->ids()) r->key_ids.push_back(FormatKeyId(id));
    s = seal_->stats();
  }
  auto add = [r](std::string name, uint64_t value) {
    r->counters.emplace_back(std::move(name), value);
  };
  add("peer_sealed", s.sealed);
  add("peer_opened", s.opened);
  for (size_t i = 1; i < kOpenResultCount; ++i) {
    add(std::string("peer_rejected_") + OpenResultName(static_cast<OpenResult>(i)), s.rejected[i]);
  }
  add("replay_entries", s.replay_entries);
  std::lock_guard<std::mutex> lock(mu_);
  r->keyring_error = reload_error_;
  add("keyring_reloads", reloads_);
  add("keyring_reload_failures", reload_failures_);
}

}  // namespace tally::io

// Sealing of peer packets (daemon/io/peer_seal.h): round trips, every way a
// packet must fail to open, rotation, the replay memory, and PeerAuth (the
// driver's side: modes, reloads, status).
#include "daemon/io/peer_seal.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally::io {
namespace {

using tally::testing::TempDir;
using Bytes = std::vector<std::byte>;

constexpr int64_t kNow = 1'700'000'000'000;  // ms since the epoch

std::shared_ptr<const Keyring> Ring(const std::vector<PeerKey>& keys) {
  std::string why;
  std::optional<Keyring> ring = Keyring::FromKeys(keys, &why);
  EXPECT_TRUE(ring) << why;
  return std::make_shared<const Keyring>(*ring);
}

PeerSealOptions Cluster(const std::string& name = "tally", int64_t skew_ms = 5500) {
  PeerSealOptions o;
  o.cluster_name = name;
  o.max_skew_ms = skew_ms;
  return o;
}

Bytes Message(size_t n, uint8_t seed = 1) {
  Bytes m(n);
  for (size_t i = 0; i < n; ++i) m[i] = static_cast<std::byte>(seed + i * 31);
  return m;
}

Bytes SealOf(const PeerSeal& seal, const Bytes& msg, int64_t at = kNow) {
  Bytes out;
  seal.Seal(msg, at, &out);
  return out;
}

// Opens and, on success, returns the plaintext in `*got`.
OpenResult OpenOf(PeerSeal& seal, const Bytes& sealed, int64_t at = kNow, Bytes* got = nullptr) {
  Bytes scratch;
  std::span<const std::byte> plain;
  OpenResult r = seal.Open(sealed, at, &scratch, &plain);
  if (r == OpenResult::kOk && got != nullptr) got->assign(plain.begin(), plain.end());
  return r;
}

uint32_t U32At(const Bytes& b, size_t at) {
  uint32_t v = 0;
  for (size_t i = 0; i < 4; ++i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}

TEST(PeerSealTest, RoundTripsAndLaysOutTheHeader) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster()), b(Ring({k}), Cluster());
  // On the wire, so pinned: hashlib.blake2b(b"tally cluster id v1" + b"tally",
  // digest_size=16), first 4 bytes (Python, not libsodium).
  EXPECT_EQ(a.cluster_id(), 0xa3066c18u);
  for (size_t n : {0, 1, 200, 1400, 65000}) {
    SCOPED_TRACE(n);
    const Bytes msg = Message(n);
    Bytes sealed = SealOf(a, msg);
    ASSERT_EQ(sealed.size(), n + PeerSeal::kOverheadBytes);
    EXPECT_EQ(static_cast<uint8_t>(sealed[0]), PeerSeal::kMagic);
    EXPECT_EQ(U32At(sealed, 1), a.cluster_id());
    EXPECT_EQ(U32At(sealed, 5), ComputeKeyId(k));
    KeyId id = 0;
    int64_t at = 0;
    ASSERT_TRUE(PeerSeal::PeekHeader(sealed, &id, &at));
    EXPECT_EQ(id, ComputeKeyId(k));
    EXPECT_EQ(at, kNow);
    if (n >= 16) {  // the plaintext does not appear in clear
      EXPECT_EQ(std::search(sealed.begin(), sealed.end(), msg.begin(), msg.begin() + 16),
                sealed.end());
    }
    Bytes got;
    ASSERT_EQ(OpenOf(b, sealed, kNow, &got), OpenResult::kOk);
    EXPECT_EQ(got, msg);
  }
  EXPECT_EQ(a.stats().sealed, 5u);
  EXPECT_EQ(b.stats().opened, 5u);
}

TEST(PeerSealTest, EveryMessageGetsItsOwnNonce) {
  PeerSeal a(Ring({GenerateKey()}), Cluster());
  const Bytes msg = Message(100);
  std::set<Bytes> seen;
  for (int i = 0; i < 1000; ++i) {
    Bytes s = SealOf(a, msg);
    EXPECT_TRUE(seen.insert(Bytes(s.begin() + 17, s.begin() + 41)).second);
  }
}

// One byte changed anywhere: never opens, and the reason fits where it was.
TEST(PeerSealTest, TamperedByteNeverOpens) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster());
  const Bytes msg = Message(200);
  for (size_t pos = 0; pos < msg.size() + PeerSeal::kOverheadBytes; ++pos) {
    for (uint8_t flip : {0x01, 0x80}) {
      SCOPED_TRACE(::testing::Message() << "byte " << pos << " ^ " << int(flip));
      PeerSeal b(Ring({k}), Cluster());  // a fresh replay memory each time
      Bytes sealed = SealOf(a, msg);
      sealed[pos] ^= static_cast<std::byte>(flip);
      const OpenResult r = OpenOf(b, sealed);
      if (pos == 0) {
        EXPECT_EQ(r, OpenResult::kUnsealed);
      } else if (pos < 5) {
        EXPECT_EQ(r, OpenResult::kWrongCluster);
      } else if (pos < 9) {
        EXPECT_EQ(r, OpenResult::kUnknownKey);
      } else if (pos < 17) {  // the timestamp: far off is stale, near is caught by the tag
        EXPECT_TRUE(r == OpenResult::kStale || r == OpenResult::kBadAuth) << OpenResultName(r);
        if (pos == 16) {  // 1 or 128 ms later
          EXPECT_EQ(r, OpenResult::kBadAuth);
        }
      } else {
        EXPECT_EQ(r, OpenResult::kBadAuth);
      }
      EXPECT_EQ(b.stats().opened, 0u);
    }
  }
}

TEST(PeerSealTest, TruncatedOrUnsealedIsUnsealed) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster()), b(Ring({k}), Cluster());
  Bytes sealed = SealOf(a, Message(0));
  for (size_t n = 0; n < sealed.size(); ++n) {
    EXPECT_EQ(OpenOf(b, Bytes(sealed.begin(), sealed.begin() + n)), OpenResult::kUnsealed) << n;
  }
  // A truncated longer packet names a key but fails the tag.
  Bytes longer = SealOf(a, Message(300));
  longer.resize(longer.size() - 1);
  EXPECT_EQ(OpenOf(b, longer), OpenResult::kBadAuth);
  // A plain Cap'n Proto message (first byte 0).
  EXPECT_EQ(OpenOf(b, Bytes(200, std::byte{0})), OpenResult::kUnsealed);
  EXPECT_EQ(b.stats().rejected[static_cast<size_t>(OpenResult::kUnsealed)], sealed.size() + 1);
}

TEST(PeerSealTest, WrongKeyIsUnknownKey) {
  PeerSeal a(Ring({GenerateKey()}), Cluster()), b(Ring({GenerateKey()}), Cluster());
  EXPECT_EQ(OpenOf(b, SealOf(a, Message(100))), OpenResult::kUnknownKey);
  EXPECT_EQ(b.stats().rejected[static_cast<size_t>(OpenResult::kUnknownKey)], 1u);
}

TEST(PeerSealTest, WrongClusterCannotTalkEvenWithTheSameKey) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster("prod")), b(Ring({k}), Cluster("staging"));
  ASSERT_NE(a.cluster_id(), b.cluster_id());
  Bytes sealed = SealOf(a, Message(100));
  EXPECT_EQ(OpenOf(b, sealed), OpenResult::kWrongCluster);
  // The name itself is authenticated, not only its id: with the id rewritten
  // to ours, the tag fails.
  for (int i = 0; i < 4; ++i) {
    sealed[1 + i] = static_cast<std::byte>(b.cluster_id() >> (24 - 8 * i));
  }
  EXPECT_EQ(OpenOf(b, sealed), OpenResult::kBadAuth);
}

TEST(PeerSealTest, StaleOrFutureTimestampsAreRefused) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster("tally", 5500));
  Bytes sealed = SealOf(a, Message(100), kNow);
  {
    PeerSeal b(Ring({k}), Cluster("tally", 5500));
    EXPECT_EQ(OpenOf(b, sealed, kNow + 5501), OpenResult::kStale);  // we are ahead
    EXPECT_EQ(OpenOf(b, sealed, kNow - 5501), OpenResult::kStale);  // it is from our future
    EXPECT_EQ(OpenOf(b, sealed, kNow + 5500), OpenResult::kOk);     // the edge is inside
  }
  {
    PeerSeal b(Ring({k}), Cluster("tally", 5500));
    EXPECT_EQ(OpenOf(b, sealed, kNow - 5500), OpenResult::kOk);
  }
  // Timestamps at the ends of int64 do not overflow anything.
  PeerSeal b(Ring({k}), Cluster());
  EXPECT_EQ(OpenOf(b, SealOf(a, Message(10), INT64_MAX)), OpenResult::kStale);
  EXPECT_EQ(OpenOf(b, SealOf(a, Message(10), INT64_MIN)), OpenResult::kStale);
  EXPECT_EQ(OpenOf(b, SealOf(a, Message(10), -1)), OpenResult::kStale);
}

TEST(PeerSealTest, ReplayIsRefusedAlsoAcrossAReload) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster()), b(Ring({k}), Cluster());
  Bytes sealed = SealOf(a, Message(100));
  EXPECT_EQ(OpenOf(b, sealed), OpenResult::kOk);
  EXPECT_EQ(OpenOf(b, sealed), OpenResult::kReplayed);
  EXPECT_EQ(OpenOf(b, sealed, kNow + 1000), OpenResult::kReplayed);
  b.SetKeyring(Ring({GenerateKey(), k}));
  EXPECT_EQ(OpenOf(b, sealed), OpenResult::kReplayed);
  // A message with the same bytes sealed again is a new message.
  EXPECT_EQ(OpenOf(b, SealOf(a, Message(100))), OpenResult::kOk);
  EXPECT_EQ(b.stats().rejected[static_cast<size_t>(OpenResult::kReplayed)], 3u);
}

// memberlist's three steps, nodes reloading one at a time: in every
// intermediate state each side opens what the other seals.
TEST(PeerSealTest, RotationKeepsBothDirectionsOpenAtEveryStep) {
  const PeerKey old_key = GenerateKey(), new_key = GenerateKey();
  const std::vector<std::vector<PeerKey>> steps = {
      {old_key},           // before
      {old_key, new_key},  // 1: install the new key as a secondary
      {new_key, old_key},  // 2: make it primary
      {new_key},           // 3: remove the old key
  };
  PeerSeal a(Ring(steps[0]), Cluster()), b(Ring(steps[0]), Cluster());
  int64_t t = kNow;
  auto talk = [&](const char* when) {
    SCOPED_TRACE(when);
    Bytes got;
    EXPECT_EQ(OpenOf(b, SealOf(a, Message(64, 1), t), t, &got), OpenResult::kOk);
    EXPECT_EQ(got, Message(64, 1));
    EXPECT_EQ(OpenOf(a, SealOf(b, Message(64, 2), t), t, &got), OpenResult::kOk);
    EXPECT_EQ(got, Message(64, 2));
    ++t;
  };
  talk("before");
  for (size_t s = 1; s < steps.size(); ++s) {
    a.SetKeyring(Ring(steps[s]));  // a reloads first ...
    talk(("a at step " + std::to_string(s)).c_str());
    b.SetKeyring(Ring(steps[s]));  // ... then b
    talk(("both at step " + std::to_string(s)).c_str());
  }
  EXPECT_EQ(a.keyring()->primary().key, new_key);
  // Skipping step 1 on one side breaks it, which is why each step must
  // reach every member before the next.
  PeerSeal c(Ring({old_key}), Cluster()), d(Ring({new_key, old_key}), Cluster());
  EXPECT_EQ(OpenOf(c, SealOf(d, Message(10), t), t), OpenResult::kUnknownKey);
}

TEST(PeerSealTest, ConcurrentSealsAndOpensAllSucceed) {
  const PeerKey k = GenerateKey();
  PeerSeal a(Ring({k}), Cluster()), b(Ring({k}), Cluster());
  constexpr int kThreads = 4, kEach = 2000;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Bytes scratch;
      for (int i = 0; i < kEach; ++i) {
        Bytes msg = Message(100, static_cast<uint8_t>(t));
        Bytes sealed;
        a.Seal(msg, kNow, &sealed);
        std::span<const std::byte> plain;
        if (b.Open(sealed, kNow, &scratch, &plain) != OpenResult::kOk ||
            !std::equal(plain.begin(), plain.end(), msg.begin(), msg.end())) {
          ++failures;
        }
        if (i % 100 == 0) b.SetKeyring(Ring({k}));  // reloads meanwhile
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(b.stats().opened, static_cast<uint64_t>(kThreads * kEach));
  EXPECT_EQ(b.stats().replay_entries, static_cast<size_t>(kThreads * kEach));
}

// ---------------------------------------------------------------- ReplayWindow

TEST(ReplayWindowTest, CoversTheWindowAndForgetsOnlyWhatIsStale) {
  ReplayWindow w(/*max_skew_ms=*/5000, /*capacity=*/1000, /*slot_ms=*/1000);
  EXPECT_EQ(w.Admit(kNow, kNow, 1), OpenResult::kOk);
  EXPECT_EQ(w.Admit(kNow, kNow + 5000, 1), OpenResult::kReplayed);  // still covered
  EXPECT_EQ(w.Admit(kNow, kNow + 5001, 1), OpenResult::kStale);     // and then stale
  // Time moves on: new messages reuse the slot of kNow, whose nonces go.
  for (int64_t t = kNow; t <= kNow + 20'000; t += 500) {
    EXPECT_EQ(w.Admit(t, t, static_cast<uint64_t>(t)), OpenResult::kOk);
  }
  EXPECT_LT(w.size(), 41u);  // only the window's slots are held
  EXPECT_EQ(w.Admit(kNow, kNow + 20'000, 1), OpenResult::kStale);
  // Our clock steps back 20 s: the old time is inside the window again, but
  // its slot was reused for a newer time, so it is refused, not accepted.
  EXPECT_EQ(w.Admit(kNow, kNow, 1), OpenResult::kStale);
}

TEST(ReplayWindowTest, OverloadRaisesAFloorInsteadOfForgettingSilently) {
  ReplayWindow w(/*max_skew_ms=*/5000, /*capacity=*/10, /*slot_ms=*/1000);
  // 6 messages at t, 5 at t + 1 s: the 11th exceeds the capacity and the
  // slot of t (the oldest) is dropped whole.
  for (uint64_t i = 0; i < 6; ++i) ASSERT_EQ(w.Admit(kNow, kNow, i), OpenResult::kOk);
  for (uint64_t i = 6; i < 11; ++i) ASSERT_EQ(w.Admit(kNow + 1000, kNow, i), OpenResult::kOk);
  EXPECT_EQ(w.size(), 5u);
  EXPECT_EQ(w.floor_ms(), kNow + 999 - kNow % 1000);                  // the end of t's slot
  EXPECT_EQ(w.Admit(kNow, kNow, 0), OpenResult::kReplayMemoryFull);   // a replay
  EXPECT_EQ(w.Admit(kNow, kNow, 99), OpenResult::kReplayMemoryFull);  // a late message too
  EXPECT_EQ(w.Admit(kNow + 1000, kNow, 6), OpenResult::kReplayed);
  EXPECT_EQ(w.Admit(kNow + 1000, kNow, 99), OpenResult::kOk);
}

// Whatever the order of timestamps, clock steps, replays and overloads: no
// nonce is ever admitted twice, and the memory stays within its capacity.
TEST(ReplayWindowTest, RandomHistoriesNeverAdmitANonceTwice) {
  for (uint64_t seed = 1; seed <= 20; ++seed) {
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    const size_t capacity = 50 + rng() % 500;
    ReplayWindow w(/*max_skew_ms=*/1000 + static_cast<int64_t>(rng() % 5000), capacity,
                   /*slot_ms=*/100 + static_cast<int64_t>(rng() % 1000));
    std::set<uint64_t> admitted;
    std::vector<std::pair<int64_t, uint64_t>> sent;  // (timestamp, nonce)
    int64_t now = kNow;
    uint64_t next_nonce = 1;
    for (int i = 0; i < 20'000; ++i) {
      now += static_cast<int64_t>(rng() % 50);
      if (rng() % 2000 == 0) now -= static_cast<int64_t>(rng() % 30'000);  // clock step back
      int64_t ts;
      uint64_t nonce;
      if (!sent.empty() && rng() % 3 == 0) {  // a replay of anything sent before
        std::tie(ts, nonce) = sent[rng() % sent.size()];
      } else {
        ts = now + static_cast<int64_t>(rng() % 14'000) - 7000;
        nonce = next_nonce++;
        sent.emplace_back(ts, nonce);
      }
      if (w.Admit(ts, now, nonce) == OpenResult::kOk) {
        ASSERT_TRUE(admitted.insert(nonce).second) << "nonce " << nonce << " admitted twice";
      }
      ASSERT_LE(w.size(), capacity);
    }
    EXPECT_GT(admitted.size(), 1000u);  // the test exercised admissions
  }
}

// ---------------------------------------------------------------- PeerAuth

std::string WriteKeyring(const TempDir& dir, const std::string& name,
                         const std::vector<PeerKey>& keys) {
  std::string text = "# test keyring\n";
  for (const PeerKey& k : keys) text += EncodeKey(k) + "\n";
  std::string path = dir.File(name);
  std::ofstream(path, std::ios::trunc) << text;
  chmod(path.c_str(), 0600);
  return path;
}

uint64_t Counter(const wire::StatusReport& r, const std::string& name) {
  for (const auto& [n, v] : r.counters) {
    if (n == name) return v;
  }
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

// Without a keyring tallyd keeps working as before keyrings existed (plain
// mode); off loopback it says so in the log and in status.
TEST(PeerAuthTest, WithoutAKeyringPeersArePlainAndStatusSaysWhere) {
  std::string error;
  PeerAuthOptions o;
  std::unique_ptr<PeerAuth> loop = PeerAuth::Create(o, "127.0.0.1", 500, &error);
  ASSERT_TRUE(loop) << error;
  EXPECT_FALSE(loop->sealed());
  EXPECT_TRUE(PeerAuth::Check(o, &error)) << error;
  std::unique_ptr<PeerAuth> loop6 = PeerAuth::Create(o, "::1", 500, &error);
  ASSERT_TRUE(loop6) << error;
  wire::StatusReport r;
  loop6->AppendStatus(&r);
  EXPECT_EQ(r.peer_auth, "unsealed-loopback");
  for (const char* host : {"0.0.0.0", "10.1.2.3", "::", "192.168.0.1"}) {
    SCOPED_TRACE(host);
    std::unique_ptr<PeerAuth> open = PeerAuth::Create(o, host, 500, &error);
    ASSERT_TRUE(open) << error;
    EXPECT_FALSE(open->sealed());
    r = {};
    open->AppendStatus(&r);
    EXPECT_EQ(r.peer_auth, "unsealed");
    EXPECT_TRUE(r.key_ids.empty());
  }
  r = {};
  loop->AppendStatus(&r);
  EXPECT_EQ(r.peer_auth, "unsealed-loopback");
  // Unsealed mode passes packets through untouched.
  Bytes msg = Message(10);
  Bytes copy = msg;
  loop->SealInPlace(&copy, kNow);
  EXPECT_EQ(copy, msg);
  Bytes scratch;
  std::span<const std::byte> data(msg);
  EXPECT_TRUE(loop->Open("127.0.0.1:1", kNow, &scratch, &data));
  EXPECT_EQ(data.data(), msg.data());
  o.cluster_name = "has space";
  EXPECT_FALSE(PeerAuth::Create(o, "127.0.0.1", 500, &error));
}

TEST(PeerAuthTest, ReloadInstallsTheFileOrKeepsTheOldKeys) {
  TempDir dir;
  const PeerKey k1 = GenerateKey(), k2 = GenerateKey();
  PeerAuthOptions o;
  o.keyring_file = WriteKeyring(dir, "ring", {k1});
  o.cluster_name = "c1";
  std::string error;
  std::unique_ptr<PeerAuth> auth = PeerAuth::Create(o, "10.0.0.1", 500, &error);
  ASSERT_TRUE(auth) << error;
  ASSERT_TRUE(auth->sealed());
  EXPECT_EQ(auth->seal()->max_skew_ms(), 500 + PeerAuth::kWindowSlackMs);
  wire::StatusReport r;
  auth->AppendStatus(&r);
  EXPECT_EQ(r.peer_auth, "sealed");
  EXPECT_EQ(r.cluster_name, "c1");
  EXPECT_EQ(r.key_ids, std::vector<std::string>{FormatKeyId(ComputeKeyId(k1))});

  // Good reload: k2 primary, k1 secondary.
  WriteKeyring(dir, "ring", {k2, k1});
  ASSERT_TRUE(auth->Reload(&error)) << error;
  r = {};
  auth->AppendStatus(&r);
  EXPECT_EQ(r.key_ids, (std::vector<std::string>{FormatKeyId(ComputeKeyId(k2)),
                                                 FormatKeyId(ComputeKeyId(k1))}));
  EXPECT_EQ(Counter(r, "keyring_reloads"), 1u);

  // Bad reloads: malformed, empty, missing. The keys in use stay.
  for (const std::string& text : {std::string("not base64\n"), std::string("# nothing\n")}) {
    std::ofstream(o.keyring_file, std::ios::trunc) << text;
    EXPECT_FALSE(auth->Reload(&error));
    r = {};
    auth->AppendStatus(&r);
    EXPECT_EQ(r.keyring_error, error);
    EXPECT_EQ(r.key_ids.size(), 2u);
  }
  std::remove(o.keyring_file.c_str());
  EXPECT_FALSE(auth->Reload(&error));
  EXPECT_NE(error.find("No such file"), std::string::npos) << error;
  r = {};
  auth->AppendStatus(&r);
  EXPECT_EQ(Counter(r, "keyring_reload_failures"), 3u);
  EXPECT_EQ(r.key_ids.size(), 2u);
  // Still seals with k2.
  Bytes sealed = Message(20);
  auth->SealInPlace(&sealed, kNow);
  EXPECT_EQ(U32At(sealed, 5), ComputeKeyId(k2));
  // A good file again clears the error.
  WriteKeyring(dir, "ring", {k2});
  ASSERT_TRUE(auth->Reload(&error)) << error;
  r = {};
  auth->AppendStatus(&r);
  EXPECT_TRUE(r.keyring_error.empty());
}

TEST(PeerAuthTest, DropsAreCountedByReasonInStatus) {
  TempDir dir;
  const PeerKey k = GenerateKey();
  PeerAuthOptions o;
  o.keyring_file = WriteKeyring(dir, "ring", {k});
  std::string error;
  std::unique_ptr<PeerAuth> auth = PeerAuth::Create(o, "127.0.0.1", 500, &error);
  ASSERT_TRUE(auth) << error;
  PeerSeal other_key(Ring({GenerateKey()}), Cluster());
  PeerSeal other_cluster(Ring({k}), Cluster("other"));
  PeerSeal same(Ring({k}), Cluster());
  Bytes scratch;
  auto open = [&](const Bytes& b) {
    std::span<const std::byte> data(b);
    return auth->Open("127.0.0.1:9", kNow, &scratch, &data);
  };
  EXPECT_FALSE(open(Message(100)));
  EXPECT_FALSE(open(SealOf(other_key, Message(100))));
  EXPECT_FALSE(open(SealOf(other_cluster, Message(100))));
  EXPECT_FALSE(open(SealOf(same, Message(100), kNow - 60'000)));
  Bytes good = SealOf(same, Message(100));
  EXPECT_TRUE(open(good));
  EXPECT_FALSE(open(good));
  wire::StatusReport r;
  auth->AppendStatus(&r);
  EXPECT_EQ(Counter(r, "peer_opened"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_unsealed"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_unknown_key"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_wrong_cluster"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_stale"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_replayed"), 1u);
  EXPECT_EQ(Counter(r, "peer_rejected_bad_auth"), 0u);
  EXPECT_EQ(Counter(r, "peer_rejected_replay_memory_full"), 0u);
  auth->LogRejections(0);  // logs a summary; must not throw or crash
}

}  // namespace
}  // namespace tally::io

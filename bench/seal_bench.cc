// Cost of sealing peer traffic (daemon/io/peer_seal.h): seals and opens per
// second for 200-byte (a forwarded check, a probe) and 1400-byte (a full
// gossip datagram) messages, the cost of dropping junk, and a memcpy of the
// same size as the floor measured in the same run.
//
//   build/bin/tally-seal-bench [--benchmark_repetitions=5]
//
// Figures: docs/RELIABILITY.md, "Peer authentication".
#include <benchmark/benchmark.h>

#include <cstring>
#include <memory>
#include <vector>

#include "daemon/io/keyring.h"
#include "daemon/io/peer_seal.h"

namespace tally::io {
namespace {

constexpr int64_t kNowMs = 1'700'000'000'000;

std::shared_ptr<const Keyring> Ring(int keys) {
  std::vector<PeerKey> k;
  for (int i = 0; i < keys; ++i) k.push_back(GenerateKey());
  std::string why;
  return std::make_shared<const Keyring>(*Keyring::FromKeys(k, &why));
}

std::vector<std::byte> Message(size_t n) {
  std::vector<std::byte> m(n);
  for (size_t i = 0; i < n; ++i) m[i] = static_cast<std::byte>(i * 131 + 7);
  return m;
}

// The floor: copying the message once.
void BM_CopyFloor(benchmark::State& state) {
  const std::vector<std::byte> msg = Message(static_cast<size_t>(state.range(0)));
  std::vector<std::byte> out(msg.size());
  for (auto _ : state) {
    std::memcpy(out.data(), msg.data(), msg.size());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
}

// Seal into a reused buffer.
void BM_Seal(benchmark::State& state) {
  PeerSeal seal(Ring(1), {});
  const std::vector<std::byte> msg = Message(static_cast<size_t>(state.range(0)));
  std::vector<std::byte> out;
  for (auto _ : state) {
    seal.Seal(msg, kNowMs, &out);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
}

// What the cluster driver does per outgoing packet (a new buffer each time).
void BM_SealInPlaceAsSent(benchmark::State& state) {
  PeerSeal seal(Ring(1), {});
  const std::vector<std::byte> msg = Message(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    std::vector<std::byte> bytes = msg;  // the Node's encoded packet
    std::vector<std::byte> sealed;
    seal.Seal(bytes, kNowMs, &sealed);
    bytes.swap(sealed);
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
}

// Open of authentic packets, each nonce new. The same packet twice would be a
// replay, so a pool of distinct sealed packets is opened once per receiver.
void BM_Open(benchmark::State& state) {
  constexpr size_t kPool = 4096;
  std::shared_ptr<const Keyring> ring = Ring(3);  // the sender's key among three
  PeerSeal sender(ring, {});
  const std::vector<std::byte> msg = Message(static_cast<size_t>(state.range(0)));
  std::vector<std::vector<std::byte>> pool(kPool);
  for (auto& p : pool) sender.Seal(msg, kNowMs, &p);
  auto receiver = std::make_unique<PeerSeal>(ring, PeerSealOptions{});
  std::vector<std::byte> scratch;
  size_t next = 0;
  for (auto _ : state) {
    if (next == kPool) {
      state.PauseTiming();
      receiver = std::make_unique<PeerSeal>(ring, PeerSealOptions{});
      next = 0;
      state.ResumeTiming();
    }
    std::span<const std::byte> plain;
    if (receiver->Open(pool[next++], kNowMs, &scratch, &plain) != OpenResult::kOk) {
      state.SkipWithError("open failed");
      break;
    }
    benchmark::DoNotOptimize(plain.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * msg.size()));
}

// Dropping a forged packet that names an installed key: a full AEAD pass.
void BM_RejectForged(benchmark::State& state) {
  std::shared_ptr<const Keyring> ring = Ring(1);
  PeerSeal seal(ring, {});
  std::vector<std::byte> forged;
  seal.Seal(Message(static_cast<size_t>(state.range(0))), kNowMs, &forged);
  forged.back() ^= std::byte{1};
  std::vector<std::byte> scratch;
  for (auto _ : state) {
    std::span<const std::byte> plain;
    benchmark::DoNotOptimize(seal.Open(forged, kNowMs, &scratch, &plain));
  }
}

// Dropping an unsealed packet (the header check only).
void BM_RejectUnsealed(benchmark::State& state) {
  PeerSeal seal(Ring(1), {});
  const std::vector<std::byte> junk = Message(static_cast<size_t>(state.range(0)));
  std::vector<std::byte> scratch;
  for (auto _ : state) {
    std::span<const std::byte> plain;
    benchmark::DoNotOptimize(seal.Open(junk, kNowMs, &scratch, &plain));
  }
}

BENCHMARK(BM_CopyFloor)->Arg(200)->Arg(1400);
BENCHMARK(BM_Seal)->Arg(200)->Arg(1400);
BENCHMARK(BM_SealInPlaceAsSent)->Arg(200)->Arg(1400);
BENCHMARK(BM_Open)->Arg(200)->Arg(1400);
BENCHMARK(BM_RejectForged)->Arg(200)->Arg(1400);
BENCHMARK(BM_RejectUnsealed)->Arg(1400);

}  // namespace
}  // namespace tally::io

BENCHMARK_MAIN();

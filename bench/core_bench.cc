// Microbenchmarks of the decision path: hashing, the key map, counters, the
// thread-safe facade and the wire codec. Figures live in docs/PERFORMANCE.md.
//
//   tally-bench [--smoke] [google benchmark flags]
//
// --smoke shrinks the big-key benchmarks (1M keys) to 10k keys so that the
// suite's `tally-bench --benchmark_min_time=0.001 --smoke` takes seconds.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "crdt/window_counter.h"
#include "daemon/core/limiter_core.h"
#include "tally/limiter.h"
#include "tally/types.h"
#include "wire/codec.h"

namespace tally {
namespace {

using std::chrono::milliseconds;

constexpr int64_t kBigKeys = 1'000'000;
constexpr int64_t kSmokeKeys = 10'000;
constexpr uint64_t kWindowMs = 60'000;
constexpr uint64_t kHugeLimit = kMaxLimit;  // stays allowed: a bench measures admits
constexpr uint64_t kSeed = 0x7A11;
// Wall time moves 1 ms per this many checks, so buckets roll as in production.
constexpr uint64_t kChecksPerMs = 1000;
// Checks per precomputed random stream: long enough for the walk over keys
// to defeat the caches, short enough to build quickly under --smoke.
// A power of two, so the position wraps with a mask, not a division.
size_t StreamLength(size_t keys) { return std::min<size_t>(1 << 21, std::bit_ceil(16 * keys)); }

int64_t g_big_keys = kBigKeys;

Instant At(uint64_t wall_ms) {
  return Instant{milliseconds(wall_ms), std::chrono::nanoseconds(wall_ms * 1'000'000)};
}

// Typical ids: a numeric user and a REST-like endpoint (~12 + ~16 bytes).
std::string UserId(size_t i) { return "user-" + std::to_string(i * 7919 % 10'000'019); }
std::string Endpoint(size_t i) {
  static constexpr const char* kEndpoints[] = {"/api/v1/orders", "/api/v1/users/search",
                                               "/api/v2/payments", "/login"};
  return kEndpoints[i % 4];
}

std::vector<CheckRequest> MakeRequests(size_t n, uint64_t window_ms) {
  std::vector<CheckRequest> requests(n);
  for (size_t i = 0; i < n; ++i) {
    requests[i].user_id = UserId(i);
    requests[i].endpoint = Endpoint(i);
    requests[i].limit = kHugeLimit;
    requests[i].window_ms = window_ms;
    requests[i].hits = 1;
  }
  return requests;
}

// A uniform random order over [0, n), seeded so runs are comparable.
std::vector<uint32_t> RandomOrder(size_t n, size_t length, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<uint32_t> pick(0, static_cast<uint32_t>(n - 1));
  std::vector<uint32_t> order(length);
  for (auto& i : order) i = pick(rng);
  return order;
}

// One LimiterCore pre-filled with every key, shared by all runs of a
// benchmark: building 1M keys per run would dominate the wall time.
// The checks to make are laid out in the order they are made (ids copied
// inline), as requests arriving in datagrams would be: the benchmark then
// measures the core's memory traffic, not its own random reads of `requests`.
struct DistinctKeysFixture {
  explicit DistinctKeysFixture(size_t n)
      : requests(MakeRequests(n, kWindowMs)),
        core(core::LimiterCoreOptions{.buckets_per_window = 10, .max_keys = n + 1}) {
    std::vector<uint32_t> order = RandomOrder(n, StreamLength(n), kSeed);
    size_t text_bytes = 0;
    for (uint32_t k : order) text_bytes += requests[k].user_id.size() + requests[k].endpoint.size();
    text.resize(text_bytes);  // never grows again: the views below stay valid
    stream.reserve(order.size());
    ids.reserve(order.size());
    char* at = text.data();
    for (uint32_t k : order) {
      const CheckRequest& r = requests[k];
      CheckRequestRef ref = r;
      ref.user_id = {at, r.user_id.size()};
      at = std::copy(r.user_id.begin(), r.user_id.end(), at);
      ref.endpoint = {at, r.endpoint.size()};
      at = std::copy(r.endpoint.begin(), r.endpoint.end(), at);
      stream.push_back(ref);
      ids.push_back(crdt::HashKey(r.user_id, r.endpoint, r.window_ms));
    }
    for (const auto& r : requests) core.Check(r, At(wall_ms));
  }
  std::vector<CheckRequest> requests;   // one per key
  std::vector<char> text;               // ids of `stream`, in stream order
  std::vector<CheckRequestRef> stream;  // StreamLength(n) uniform random picks
  std::vector<crdt::KeyId> ids;         // HashKey of each stream entry
  core::LimiterCore core;
  uint64_t wall_ms = 1'700'000'000'000;  // persists across runs: time never goes back
  uint64_t next = 0;                     // position in `stream` and the time tick
};

DistinctKeysFixture& DistinctKeys(size_t n) {
  static std::unique_ptr<DistinctKeysFixture> fixture;
  if (fixture == nullptr || fixture->requests.size() != n) {
    fixture.reset();  // free the old one first: two 1M-key fixtures are large
    fixture = std::make_unique<DistinctKeysFixture>(n);
  }
  return *fixture;
}

void BM_CheckHotKey(benchmark::State& state) {
  core::LimiterCore core(core::LimiterCoreOptions{});
  CheckRequest request;
  request.user_id = "user-42";
  request.endpoint = "/api/v1/orders";
  request.limit = kHugeLimit;
  request.window_ms = 1000;  // 100 ms buckets: rolls every 100k checks
  uint64_t wall_ms = 1'700'000'000'000;
  uint64_t i = 0;
  for (auto _ : state) {
    if (++i % kChecksPerMs == 0) ++wall_ms;
    CheckResult result = core.Check(request, At(wall_ms));
    benchmark::DoNotOptimize(result);
  }
  if (!core.Check(request, At(wall_ms)).allowed) state.SkipWithError("hot key was denied");
  state.SetItemsProcessed(state.iterations());
}

void BM_CheckDistinctKeys(benchmark::State& state) {
  DistinctKeysFixture& f = DistinctKeys(static_cast<size_t>(state.range(0)));
  const uint64_t denied_before = f.core.stats().denied;
  for (auto _ : state) {
    uint64_t n = f.next++;
    if (n % kChecksPerMs == 0) ++f.wall_ms;
    CheckResult result = f.core.Check(f.stream[n & (f.stream.size() - 1)], At(f.wall_ms));
    benchmark::DoNotOptimize(result);
  }
  if (f.core.stats().denied != denied_before) state.SkipWithError("a check was denied");
  state.SetItemsProcessed(state.iterations());
  state.counters["keys"] = static_cast<double>(f.core.store().size());
}

// As BM_CheckDistinctKeys through LimiterCore::CheckBatch, kBatch
// consecutive checks of the stream at a time (a recvmmsg batch of one-check
// datagrams, or one datagram of kBatch checks): the batch overlaps the
// cache misses of its checks. Items are checks.
constexpr size_t kBatch = 64;

void BM_CheckBatchDistinctKeys(benchmark::State& state) {
  DistinctKeysFixture& f = DistinctKeys(static_cast<size_t>(state.range(0)));
  static_assert(kBatch <= kChecksPerMs);
  const uint64_t denied_before = f.core.stats().denied;
  std::vector<CheckResult> results;
  f.next = (f.next + kBatch - 1) / kBatch * kBatch;  // other benchmarks advance it by 1
  for (auto _ : state) {
    const uint64_t n = f.next;
    f.next += kBatch;
    if (n / kChecksPerMs != f.next / kChecksPerMs) ++f.wall_ms;
    // f.next is a multiple of kBatch and the stream length a power of two
    // >= kBatch, so a batch never wraps.
    const size_t at = n & (f.stream.size() - 1);
    f.core.CheckBatch(std::span(f.stream).subspan(at, kBatch), At(f.wall_ms), &results);
    benchmark::DoNotOptimize(results.data());
  }
  if (f.core.stats().denied != denied_before) state.SkipWithError("a check was denied");
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
  state.counters["keys"] = static_cast<double>(f.core.store().size());
}

// As BM_CheckDistinctKeys with precomputed KeyIds: the difference is the
// cost of ValidateRequest + HashKey.
void BM_CheckKeyPrehashed(benchmark::State& state) {
  DistinctKeysFixture& f = DistinctKeys(static_cast<size_t>(state.range(0)));
  for (auto _ : state) {
    uint64_t n = f.next++;
    if (n % kChecksPerMs == 0) ++f.wall_ms;
    size_t k = n & (f.stream.size() - 1);
    CheckResult result = f.core.CheckKey(f.stream[k], f.ids[k], At(f.wall_ms));
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}

// As BM_CheckDistinctKeys with a fresh request id per check: adds the
// dedup cache (a lookup, an insert and an eviction per check).
void BM_CheckDistinctKeysDedup(benchmark::State& state) {
  DistinctKeysFixture& f = DistinctKeys(static_cast<size_t>(state.range(0)));
  CheckRequestRef request;
  for (auto _ : state) {
    uint64_t n = f.next++;
    if (n % kChecksPerMs == 0) ++f.wall_ms;
    request = f.stream[n & (f.stream.size() - 1)];
    request.request_id = n + 1;
    CheckResult result = f.core.Check(request, At(f.wall_ms));
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_HashKey(benchmark::State& state) {
  // range(0) = user_id bytes; 0 means the typical ids of MakeRequests.
  constexpr size_t kIds = 1024;
  std::vector<CheckRequest> requests = MakeRequests(kIds, kWindowMs);
  if (state.range(0) > 0) {
    for (size_t i = 0; i < kIds; ++i) {
      std::string& id = requests[i].user_id;
      id.resize(static_cast<size_t>(state.range(0)), static_cast<char>('a' + i % 26));
    }
  }
  size_t bytes = 0;
  for (const auto& r : requests) bytes += r.user_id.size() + r.endpoint.size();
  size_t i = 0;
  for (auto _ : state) {
    const CheckRequest& r = requests[i++ % kIds];
    benchmark::DoNotOptimize(crdt::HashKey(r.user_id, r.endpoint, r.window_ms));
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes / kIds));
}

// A local counter joining a remote one with range(0) replica slots; the
// remote gains one hit per iteration so every join changes a cell.
void BM_WindowCounterJoin(benchmark::State& state) {
  const auto slots = static_cast<crdt::SlotIndex>(state.range(0));
  const crdt::Geometry g = crdt::GeometryFor(kWindowMs, 10);
  crdt::WindowCounter local(g);
  crdt::WindowCounter remote(g);
  int64_t bucket = 1'000'000;
  for (crdt::SlotIndex s = 0; s < slots; ++s) {
    for (uint32_t k = 0; k < g.ring(); ++k) {
      local.Add(s, bucket + k, 3);
      remote.Add(s, bucket + k, 5);
    }
  }
  bucket += g.ring() - 1;
  uint32_t count = 5;
  for (auto _ : state) {
    remote.MergeBucket(slots - 1, bucket, ++count);
    benchmark::DoNotOptimize(local.Join(remote));
  }
  state.SetItemsProcessed(state.iterations());
}

// Replication: a remote counter joined into random keys of a full store.
void BM_StoreMerge(benchmark::State& state) {
  const auto n = static_cast<size_t>(state.range(0));
  crdt::KeyStore store(crdt::KeyStoreOptions{.max_keys = n + 1, .buckets_per_window = 10});
  const crdt::SlotIndex local = store.slots().Intern({"local", 1});
  const crdt::SlotIndex peer = store.slots().Intern({"peer", 1});
  const crdt::Geometry g = store.GeometryOf(kWindowMs);
  int64_t wall_ms = 1'700'000'000'000;
  const int64_t bucket = crdt::BucketOf(wall_ms, g);
  std::vector<crdt::KeyId> ids(n);
  for (size_t i = 0; i < n; ++i) {
    ids[i] = crdt::HashKey(UserId(i), Endpoint(i), kWindowMs);
    crdt::KeyStore::Lookup how;
    store.FindOrCreate(ids[i], kWindowMs, wall_ms, &how)->counter.Add(local, bucket, 1);
  }
  std::vector<crdt::KeyId> stream;  // in merge order, read sequentially
  stream.reserve(StreamLength(n));
  for (uint32_t k : RandomOrder(n, StreamLength(n), kSeed + 1)) stream.push_back(ids[k]);
  crdt::WindowCounter remote(g);
  uint32_t count = 0;
  uint64_t i = 0;
  for (auto _ : state) {
    remote.MergeBucket(peer, bucket, ++count);  // fresh news every time
    benchmark::DoNotOptimize(store.Merge(stream[i++ & (stream.size() - 1)], remote, wall_ms));
  }
  if (store.size() != n) state.SkipWithError("merge created or lost keys");
  state.SetItemsProcessed(state.iterations());
}

// The mutex-striped facade over random keys; with Threads(2) both threads
// share one Limiter (and so its shards' locks).
void BM_LimiterFacade(benchmark::State& state) {
  static std::unique_ptr<Limiter> limiter;
  static const DistinctKeysFixture* f = nullptr;  // only its request stream is used
  const auto n = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0 && (f == nullptr || f->requests.size() != n)) {
    // Threads start the timed loop together, after thread 0 is done here.
    LimiterOptions options;
    options.max_keys = 2 * n + 64 * 16;  // per-shard cap with headroom for skew
    limiter = std::make_unique<Limiter>(options);
    f = &DistinctKeys(n);
  }
  uint64_t wall_ms = 1'700'000'000'000;
  const size_t mask = f->stream.size() - 1;
  uint64_t i = static_cast<uint64_t>(state.thread_index()) * (f->stream.size() / 2);
  uint64_t ticks = 0;
  for (auto _ : state) {
    if (++ticks % kChecksPerMs == 0) ++wall_ms;
    CheckResult result = limiter->Check(f->stream[i++ & mask], At(wall_ms));
    benchmark::DoNotOptimize(result);
  }
  state.SetItemsProcessed(state.iterations());
}

// As BM_LimiterFacade through Limiter::CheckBatch, kBatch checks at a time
// (items are checks). The batch is split by shard, so with 64 shards each
// shard's part is about one check.
void BM_LimiterFacadeBatch(benchmark::State& state) {
  static std::unique_ptr<Limiter> limiter;
  static const DistinctKeysFixture* f = nullptr;
  const auto n = static_cast<size_t>(state.range(0));
  if (state.thread_index() == 0 && (f == nullptr || f->requests.size() != n)) {
    LimiterOptions options;
    options.max_keys = 2 * n + 64 * 16;
    limiter = std::make_unique<Limiter>(options);
    f = &DistinctKeys(n);
  }
  uint64_t wall_ms = 1'700'000'000'000;
  const size_t mask = f->stream.size() - 1;
  uint64_t i = static_cast<uint64_t>(state.thread_index()) * (f->stream.size() / 2);
  std::vector<CheckResult> results;
  for (auto _ : state) {
    if (i / kChecksPerMs != (i + kBatch) / kChecksPerMs) ++wall_ms;
    limiter->CheckBatch(std::span(f->stream).subspan(i & mask, kBatch), At(wall_ms), &results);
    i += kBatch;
    benchmark::DoNotOptimize(results.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations() * kBatch));
}

std::vector<CheckRequest> CodecRequests(size_t n) {
  std::vector<CheckRequest> requests = MakeRequests(n, kWindowMs);
  for (size_t i = 0; i < n; ++i) requests[i].request_id = 0x1234'5678'0000 + i;
  return requests;
}

void BM_CodecDecodeBatch(benchmark::State& state) {
  std::vector<CheckRequest> requests = CodecRequests(static_cast<size_t>(state.range(0)));
  std::vector<CheckRequestRef> refs(requests.begin(), requests.end());
  std::vector<std::byte> datagram;
  wire::EncodeChecks(refs, &datagram);
  wire::ClientMessageReader reader;
  for (auto _ : state) {
    Status status = reader.Decode(datagram, nullptr);
    benchmark::DoNotOptimize(status);
    benchmark::DoNotOptimize(reader.checks().data());
  }
  if (reader.checks().size() != requests.size()) state.SkipWithError("decode failed");
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * datagram.size()));
}

void BM_CodecEncodeResponses(benchmark::State& state) {
  std::vector<CheckResult> results(static_cast<size_t>(state.range(0)));
  for (size_t i = 0; i < results.size(); ++i) {
    results[i].request_id = 0x1234'5678'0000 + i;
    results[i].allowed = i % 5 != 0;
    results[i].remaining = 100 - i;
    results[i].retry_after_ms = results[i].allowed ? 0 : 250;
    results[i].reset_after_ms = 60'000;
    results[i].limit = 100;
  }
  std::vector<std::byte> datagram;
  for (auto _ : state) {
    wire::EncodeResponses(results, &datagram);
    benchmark::DoNotOptimize(datagram.data());
  }
  state.SetItemsProcessed(state.iterations() * state.range(0));
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * datagram.size()));
}

// Registered at run time: the key counts depend on --smoke.
void RegisterAll() {
  const int64_t keys = g_big_keys;
  benchmark::RegisterBenchmark("BM_CheckHotKey", BM_CheckHotKey);
  auto* distinct = benchmark::RegisterBenchmark("BM_CheckDistinctKeys", BM_CheckDistinctKeys);
  if (keys > 100'000) distinct->Arg(100'000);  // fits the L3 cache: shows what misses cost
  distinct->Arg(keys);
  benchmark::RegisterBenchmark("BM_CheckBatchDistinctKeys", BM_CheckBatchDistinctKeys)->Arg(keys);
  benchmark::RegisterBenchmark("BM_CheckKeyPrehashed", BM_CheckKeyPrehashed)->Arg(keys);
  benchmark::RegisterBenchmark("BM_CheckDistinctKeysDedup", BM_CheckDistinctKeysDedup)->Arg(keys);
  benchmark::RegisterBenchmark("BM_HashKey", BM_HashKey)->Arg(0)->Arg(200)->Arg(4000);
  benchmark::RegisterBenchmark("BM_WindowCounterJoin", BM_WindowCounterJoin)->Arg(1)->Arg(3);
  benchmark::RegisterBenchmark("BM_StoreMerge", BM_StoreMerge)->Arg(keys);
  benchmark::RegisterBenchmark("BM_LimiterFacade", BM_LimiterFacade)
      ->Arg(keys)
      ->UseRealTime()
      ->Threads(1)
      ->Threads(2);
  benchmark::RegisterBenchmark("BM_LimiterFacadeBatch", BM_LimiterFacadeBatch)
      ->Arg(keys)
      ->UseRealTime()
      ->Threads(1)
      ->Threads(2);
  benchmark::RegisterBenchmark("BM_CodecDecodeBatch", BM_CodecDecodeBatch)->Arg(1)->Arg(64);
  benchmark::RegisterBenchmark("BM_CodecEncodeResponses", BM_CodecEncodeResponses)->Arg(64);
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  // Strip our own flag before Google Benchmark sees (and rejects) it.
  int kept = 1;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      tally::g_big_keys = tally::kSmokeKeys;
    } else {
      argv[kept++] = argv[i];
    }
  }
  argc = kept;
  argv[argc] = nullptr;
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  tally::RegisterAll();
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

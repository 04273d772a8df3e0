// tally-snapshot-bench: what a snapshot costs at N live keys.
//
//   tally-snapshot-bench [--keys 1000000] [--slice-slots 16384] [--dir DIR]
//                        [--repeat 3] [--smoke] [--single-node]
//
// Fills one KeyStore with N keys (windows of a minute, an hour and a day;
// a fifth of them with a second replica slot; hits over one to three
// buckets), then times, each the best of --repeat runs:
//   walk      one ForEach over the store reading every counter's newest
//             bucket: the floor any encoder pays (the table and each
//             counter's cache line), reported so the others read as ratios;
//   encode    all keys, then the checksums: "cold" into a fresh buffer
//             (EncodeSnapshot), then steady, reusing the previous payload's
//             buffer as a daemon snapshotting every interval would;
//   sliced    the same (steady) through StorePass in slices of
//             --slice-slots home slots: the total and the longest slice (the
//             longest time a caller holds the store's lock);
//   write     WriteSnapshotFile into DIR (temp file, fsync, rename, fsync
//             of the directory);
//   read      ReadFileBounded; decode: DecodeSnapshot; restore:
//             RestoreSnapshot into an empty store.
// CPU-bound phases report this thread's CPU time (CLOCK_THREAD_CPUTIME_ID),
// which a loaded machine inflates far less than wall time; write and read
// report wall time (they wait for the disk). Both are printed for each.
// --smoke also checks that the restored store reads like the original and
// exits non-zero if not (ctest runs it small).
// --single-node measures a single node's snapshots instead (io::LocalSnapshots
// over the sharded tally::Limiter tallyd runs, 64 shards): N keys admitted
// through Limiter::CheckBatch at the real wall time, then --repeat writes
// (each shard in slices under its own lock, then the file), and a restore
// into a fresh limiter; the snapshot's own counters give the encode, write
// and longest-lock-hold times.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "daemon/io/local_snapshots.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/limiter_access.h"
#include "persist/restore.h"
#include "persist/snapshot.h"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int64_t kNow = 1'700'000'000'000;
constexpr uint64_t kMinute = 60'000, kHour = 60 * kMinute, kDay = 24 * kHour;

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double ThreadCpuMs() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e3 + static_cast<double>(ts.tv_nsec) / 1e6;
}

// The best (lowest) wall and CPU times of some runs.
struct Timing {
  double wall_ms = 1e300;
  double cpu_ms = 1e300;
  void Add(double wall, double cpu) {
    wall_ms = std::min(wall_ms, wall);
    cpu_ms = std::min(cpu_ms, cpu);
  }
};

template <typename Fn>
Timing Time(int repeat, Fn&& fn) {
  Timing t;
  for (int r = 0; r < repeat; ++r) {
    const auto start = Clock::now();
    const double cpu = ThreadCpuMs();
    fn();
    t.Add(Ms(Clock::now() - start), ThreadCpuMs() - cpu);
  }
  return t;
}

void Fill(tally::crdt::KeyStore* store, uint64_t keys) {
  std::mt19937_64 rng(1);
  const tally::crdt::SlotIndex self = store->slots().Intern({"node-a", 2});
  const tally::crdt::SlotIndex peer = store->slots().Intern({"node-b", 1});
  tally::crdt::KeyStore::Lookup how;
  for (uint64_t i = 0; i < keys; ++i) {
    const uint64_t pick = rng() % 10;
    const uint64_t window = pick < 3 ? kMinute : pick < 7 ? kHour : kDay;
    const auto id = tally::crdt::HashKey("user-" + std::to_string(i), "/api/v1/things", window);
    auto* e = store->FindOrCreate(id, window, kNow, &how);
    if (e == nullptr) break;
    const auto g = e->counter.geometry();
    const int64_t now_bucket = tally::crdt::BucketOf(kNow, g);
    const int buckets = 1 + static_cast<int>(rng() % 3);
    for (int b = buckets - 1; b >= 0; --b) {
      e->counter.Add(self, now_bucket - b, 1 + static_cast<uint32_t>(rng() % 20));
    }
    if (rng() % 5 == 0) e->counter.Add(peer, now_bucket, 1 + static_cast<uint32_t>(rng() % 5));
    store->MarkChanged(e);
  }
}

uint64_t TotalAt(const tally::crdt::KeyStore& store, int64_t now) {
  uint64_t sum = 0;
  store.ForEach([&](const tally::crdt::KeyId&, const tally::crdt::KeyStore::Entry& e) {
    sum += e.counter.Sum(tally::crdt::BucketOf(now, e.counter.geometry()));
  });
  return sum;
}

int Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--keys N] [--slice-slots S] [--dir DIR] [--repeat R] [--smoke] "
               "[--single-node]\n",
               argv0);
  return 2;
}

// --single-node: LocalSnapshots over a sharded Limiter.
int SingleNode(uint64_t keys, uint64_t slice_slots, const std::string& dir, int repeat,
               bool smoke) {
  tally::LimiterOptions lo;
  lo.max_keys = keys + keys / 4;
  auto make = [&](uint64_t generation) {
    return tally::internal::LimiterAccess::Make(lo, {"node-a", generation});
  };
  tally::io::LocalSnapshotOptions so;
  so.state_dir = dir;
  so.cluster_name = "bench";
  so.node_id = "node-a";
  so.generation = 1;
  so.interval = std::chrono::milliseconds(0);
  so.slice_slots = slice_slots;
  std::unique_ptr<tally::Limiter> limiter = make(1);
  const tally::Instant now = tally::ReadClock();
  std::mt19937_64 rng(1);
  std::vector<std::string> users(keys);
  std::vector<tally::CheckRequestRef> batch;
  std::vector<tally::CheckResult> results;
  const auto fill_start = Clock::now();
  for (uint64_t i = 0; i < keys; ++i) {
    users[i] = "user-" + std::to_string(i);
    const uint64_t pick = rng() % 10;
    const uint64_t window = pick < 3 ? kMinute : pick < 7 ? kHour : kDay;
    tally::CheckRequestRef& check = batch.emplace_back();
    check.user_id = users[i];
    check.endpoint = "/api/v1/things";
    check.limit = 1000;
    check.window_ms = window;
    check.hits = 1 + rng() % 20;
    if (batch.size() == 256 || i + 1 == keys) {
      limiter->CheckBatch(batch, now, &results);
      batch.clear();
    }
  }
  const double fill_ms = Ms(Clock::now() - fill_start);
  tally::io::LocalSnapshots writer(limiter.get(), so);
  Timing write;
  for (int r = 0; r < repeat; ++r) {
    const auto start = Clock::now();
    const double cpu = ThreadCpuMs();
    if (!writer.WriteFinal()) return 1;
    write.Add(Ms(Clock::now() - start), ThreadCpuMs() - cpu);
  }
  const tally::io::SnapshotCounters w = writer.counters();
  so.generation = 2;
  std::unique_ptr<tally::Limiter> restored = make(2);
  tally::io::LocalSnapshots reader(restored.get(), so);
  const auto restore_start = Clock::now();
  const double restore_cpu = ThreadCpuMs();
  reader.Restore(tally::ReadClock());
  const double restore_wall_ms = Ms(Clock::now() - restore_start);
  const double restore_cpu_ms = ThreadCpuMs() - restore_cpu;
  const tally::io::SnapshotCounters rc = reader.counters();
  if (rc.restored_keys != limiter->GetStats().live_keys) {
    std::fprintf(stderr, "restored %llu of %llu keys\n",
                 static_cast<unsigned long long>(rc.restored_keys),
                 static_cast<unsigned long long>(limiter->GetStats().live_keys));
    return 1;
  }
  if (smoke) {
    for (uint64_t i = 0; i < keys; i += 997) {
      // Asking (0 hits) reads the sum without counting.
      tally::CheckRequestRef probe;
      probe.user_id = users[i];
      probe.endpoint = "/api/v1/things";
      probe.limit = 1000;
      probe.hits = 0;
      for (uint64_t window : {kMinute, kHour, kDay}) {
        probe.window_ms = window;
        const tally::Instant later = tally::ReadClock();
        if (limiter->Check(probe, later).remaining != restored->Check(probe, later).remaining) {
          std::fprintf(stderr, "restored counts differ for %s\n", users[i].c_str());
          return 1;
        }
      }
    }
  }
  std::printf(
      "single node: %llu keys over %zu shards (filled in %.0f ms), snapshot %.1f MB (%.1f "
      "bytes/key)\n",
      static_cast<unsigned long long>(w.last_keys), limiter->shard_count(), fill_ms,
      static_cast<double>(w.last_bytes) / 1e6,
      static_cast<double>(w.last_bytes) / static_cast<double>(std::max<uint64_t>(w.last_keys, 1)));
  std::printf(
      "  write (best of %d): cpu %.1f ms, wall %.1f ms; last: encode %.1f ms, write+fsync %.1f "
      "ms; longest lock hold %.2f ms (slices of %llu home slots)\n",
      repeat, write.cpu_ms, write.wall_ms, static_cast<double>(w.last_encode_us) / 1e3,
      static_cast<double>(w.last_write_us) / 1e3, static_cast<double>(w.longest_slice_us) / 1e3,
      static_cast<unsigned long long>(slice_slots));
  std::printf("  restore (read, decode, join): cpu %.1f ms, wall %.1f ms, %llu keys\n",
              restore_cpu_ms, restore_wall_ms, static_cast<unsigned long long>(rc.restored_keys));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t keys = 1'000'000, slice_slots = 16384, repeat = 3;
  std::string dir;
  bool smoke = false, single_node = false;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](uint64_t* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      *out = std::strtoull(argv[++i], &end, 10);
      return end != nullptr && *end == '\0' && *out > 0;
    };
    bool ok = true;
    if (std::strcmp(argv[i], "--keys") == 0) {
      ok = value(&keys);
    } else if (std::strcmp(argv[i], "--slice-slots") == 0) {
      ok = value(&slice_slots);
    } else if (std::strcmp(argv[i], "--repeat") == 0) {
      ok = value(&repeat);
    } else if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (std::strcmp(argv[i], "--smoke") == 0) {
      smoke = true;
    } else if (std::strcmp(argv[i], "--single-node") == 0) {
      single_node = true;
    } else {
      ok = false;
    }
    if (!ok) return Usage(argv[0]);
  }
  namespace fs = std::filesystem;
  bool made_dir = false;
  if (dir.empty()) {
    std::string tmpl = (fs::temp_directory_path() / "tally-snapshot-bench.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      std::perror("mkdtemp");
      return 1;
    }
    dir = tmpl;
    made_dir = true;
  }
  const int r = static_cast<int>(repeat);
  if (single_node) {
    const int status = SingleNode(keys, slice_slots, dir, r, smoke);
    std::error_code ec;
    if (made_dir) fs::remove_all(dir, ec);
    return status;
  }

  tally::crdt::KeyStore store({.max_keys = keys, .buckets_per_window = 10});
  const auto fill_start = Clock::now();
  Fill(&store, keys);
  const double fill_ms = Ms(Clock::now() - fill_start);
  const tally::persist::SnapshotHeader header{"bench", "node-a", 2, kNow, 10};

  uint64_t floor_sum = 0;
  const Timing walk = Time(r, [&] {
    store.ForEach([&](const tally::crdt::KeyId& id, const tally::crdt::KeyStore::Entry& e) {
      floor_sum += static_cast<uint64_t>(e.counter.newest_bucket()) ^ id.low;
    });
  });

  tally::persist::EncodedSnapshot encoded;
  // Cold: a fresh payload buffer. Steady: the previous payload's buffer
  // reused, as a daemon snapshotting every interval does.
  const Timing encode_cold =
      Time(r, [&] { encoded = tally::persist::EncodeSnapshot(store, header); });
  const Timing encode = Time(r, [&] {
    tally::persist::SnapshotEncoder encoder({}, std::move(encoded.payload));
    encoder.AddAll(store);
    encoded = encoder.Finish(header);
  });

  // Sliced: CPU time per slice (the longest is what a lock holder pays).
  Timing sliced;
  std::vector<std::byte> reuse;
  double longest_slice_ms = 1e300, finish_ms = 1e300;
  size_t slices = 0;
  for (int rep = 0; rep < r; ++rep) {
    tally::persist::SnapshotEncoder encoder({}, std::move(reuse));
    tally::persist::StorePass pass;
    double longest = 0;
    size_t n = 0;
    bool done = false;
    const auto start = Clock::now();
    const double cpu_start = ThreadCpuMs();
    while (!done) {
      const double cpu = ThreadCpuMs();
      done = pass.Step(store, slice_slots, &encoder);
      longest = std::max(longest, ThreadCpuMs() - cpu);
      ++n;
    }
    const double cpu_finish = ThreadCpuMs();
    auto sealed = encoder.Finish(header);
    finish_ms = std::min(finish_ms, ThreadCpuMs() - cpu_finish);
    sliced.Add(Ms(Clock::now() - start), ThreadCpuMs() - cpu_start);
    longest_slice_ms = std::min(longest_slice_ms, longest);
    slices = n;
    reuse = std::move(sealed.payload);
    if (reuse.size() + sealed.header.size() != encoded.size()) {
      std::fprintf(stderr, "sliced snapshot differs in size: %zu vs %zu\n",
                   reuse.size() + sealed.header.size(), encoded.size());
      return 1;
    }
  }

  const fs::path path = tally::io::SnapshotPath(dir);
  std::string error;
  bool wrote = true;
  const Timing write =
      Time(r, [&] { wrote = wrote && tally::io::WriteSnapshotFile(path, encoded, &error); });
  if (!wrote) {
    std::fprintf(stderr, "write failed: %s\n", error.c_str());
    return 1;
  }
  std::vector<std::byte> bytes;
  const Timing read =
      Time(r, [&] { tally::io::ReadFileBounded(path, uint64_t{1} << 32, &bytes, &error); });

  tally::persist::SnapshotExpectations expect;
  expect.cluster_name = "bench";
  expect.node_id = "node-a";
  expect.generation = 3;
  expect.now_wall_ms = kNow;
  expect.max_bytes = uint64_t{1} << 32;
  tally::persist::DecodedSnapshot decoded;
  const Timing decode = Time(r, [&] { decoded = tally::persist::DecodeSnapshot(bytes, expect); });
  if (!decoded.ok()) {
    std::fprintf(stderr, "decode refused: %s\n", decoded.reason.c_str());
    return 1;
  }
  uint64_t restored_keys = 0;
  Timing restore;
  for (int rep = 0; rep < r; ++rep) {
    tally::crdt::KeyStore target({.max_keys = keys, .buckets_per_window = 10});
    const auto start = Clock::now();
    const double cpu = ThreadCpuMs();
    tally::persist::RestoreSnapshot(decoded, kNow, &target);
    restore.Add(Ms(Clock::now() - start), ThreadCpuMs() - cpu);
    restored_keys = target.size();
    if (smoke && rep == 0) {
      for (int64_t t :
           {kNow, kNow + static_cast<int64_t>(kHour / 2), kNow + static_cast<int64_t>(kHour)}) {
        if (TotalAt(target, t) != TotalAt(store, t)) {
          std::fprintf(stderr, "restored counts differ at %lld\n", static_cast<long long>(t));
          return 1;
        }
      }
    }
  }
  if (restored_keys != store.size()) {
    std::fprintf(stderr, "restored %llu of %zu keys\n",
                 static_cast<unsigned long long>(restored_keys), store.size());
    return 1;
  }

  const double size_mb = static_cast<double>(encoded.size()) / 1e6;
  std::printf("keys %zu (filled in %.0f ms), snapshot %.1f MB (%.1f bytes/key), %u slots\n",
              store.size(), fill_ms, size_mb,
              static_cast<double>(encoded.size()) / static_cast<double>(store.size()),
              static_cast<unsigned>(decoded.slots.size()));
  std::printf("best of %d runs; cpu ms (x the floor's cpu), wall ms:\n", r);
  auto line = [&](const char* what, const Timing& t) {
    std::printf("  %-13s cpu %8.1f (%6.1fx)  wall %8.1f\n", what, t.cpu_ms, t.cpu_ms / walk.cpu_ms,
                t.wall_ms);
  };
  line("walk (floor)", walk);
  line("encode cold", encode_cold);
  line("encode", encode);
  line("sliced", sliced);
  std::printf("    %zu slices of %llu home slots: longest %.2f ms cpu; Finish %.1f ms cpu\n",
              slices, static_cast<unsigned long long>(slice_slots), longest_slice_ms, finish_ms);
  line("write+fsync", write);
  line("read", read);
  line("decode", decode);
  line("restore", restore);
  if (floor_sum == 42) std::printf(" \n");  // keeps the floor walk from being optimized out
  std::error_code ec;
  if (made_dir) fs::remove_all(dir, ec);
  return 0;
}

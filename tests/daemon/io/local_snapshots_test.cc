// A single node's count snapshots (daemon/io/local_snapshots.h): a restart
// continues a daily count from the old process's slot and counts nothing
// twice; refused files are reported, set aside, and the node starts clean;
// the writer walks every shard in slices.
#include "daemon/io/local_snapshots.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "daemon/io/snapshot_file.h"
#include "daemon/limiter_access.h"
#include "tests/support/daemon_process.h"
#include "tests/support/requests.h"
#include "tests/support/times.h"

namespace tally::io {
namespace {

using testing::AtMs;
using testing::CheckRequestBuilder;
using testing::TempDir;

constexpr uint64_t kDayMs = 24ull * 3600 * 1000;
const CheckRequestBuilder kDaily =
    CheckRequestBuilder().User("daily-user").Endpoint("/quota").Limit(10).WindowMs(kDayMs);

// The snapshot header carries the writer's real wall clock, which a restore
// checks against its own `now`: the tests count at real wall times.
int64_t WallNowMs() { return ReadClock().wall.count(); }

struct Process {
  std::unique_ptr<Limiter> limiter;
  std::unique_ptr<LocalSnapshots> snapshots;
};

LimiterOptions SmallLimiter() {
  LimiterOptions o;
  o.shards = 4;
  o.max_keys = 100'000;
  return o;
}

Process Start(const std::filesystem::path& dir, uint64_t generation,
              const std::string& node_id = "solo", size_t slice_slots = 16384) {
  Process p;
  p.limiter = internal::LimiterAccess::Make(SmallLimiter(), {node_id, generation});
  LocalSnapshotOptions o;
  o.state_dir = dir;
  o.cluster_name = "tally";
  o.node_id = node_id;
  o.generation = generation;
  o.interval = std::chrono::milliseconds(0);
  o.slice_slots = slice_slots;
  p.snapshots = std::make_unique<LocalSnapshots>(p.limiter.get(), o);
  return p;
}

uint64_t Hit(Process& p, int64_t wall_ms, uint64_t hits = 1) {
  const CheckResult r = p.limiter->Check(kDaily.Hits(hits), AtMs(wall_ms));
  EXPECT_EQ(r.status, Status::kOk) << r.error;
  EXPECT_TRUE(r.allowed);
  return r.remaining;
}

TEST(LocalSnapshotsTest, ARestartContinuesADailyCountFromTheOldSlot) {
  TempDir dir;
  const int64_t t0 = WallNowMs();
  Process first = Start(dir.path(), 1);
  first.snapshots->Restore(AtMs(t0));
  EXPECT_EQ(first.snapshots->counters().restore_missing, 1u);
  EXPECT_EQ(Hit(first, t0, 4), 6u);
  ASSERT_TRUE(first.snapshots->WriteFinal());
  EXPECT_EQ(first.snapshots->counters().writes, 1u);
  EXPECT_EQ(first.snapshots->counters().last_keys, 1u);
  EXPECT_GT(first.snapshots->counters().last_bytes, 0u);

  Process second = Start(dir.path(), 2);
  second.snapshots->Restore(AtMs(t0 + 1000));
  const SnapshotCounters c = second.snapshots->counters();
  EXPECT_EQ(c.restore_loaded, 1u);
  EXPECT_EQ(c.restored_keys, 1u);
  EXPECT_EQ(c.restore_dropped, 0u);
  // 4 restored in generation 1's slot, then this process's own hit.
  EXPECT_EQ(Hit(second, t0 + 1000), 5u);
  // Restoring the same rows again is a join: nothing is counted twice.
  second.snapshots->Restore(AtMs(t0 + 2000));
  EXPECT_EQ(Hit(second, t0 + 2000), 4u);

  // A third process restores both earlier slots (4 + 2 hits).
  ASSERT_TRUE(second.snapshots->WriteFinal());
  Process third = Start(dir.path(), 3);
  third.snapshots->Restore(AtMs(t0 + 3000));
  EXPECT_EQ(Hit(third, t0 + 3000), 3u);
  const CheckResult over = third.limiter->Check(kDaily.Hits(4), AtMs(t0 + 3000));
  EXPECT_FALSE(over.allowed);
}

TEST(LocalSnapshotsTest, EveryShardIsWrittenInSlicesAndRestored) {
  TempDir dir;
  const int64_t t0 = WallNowMs();
  constexpr int kKeys = 1000;
  // 7 home slots per lock hold: hundreds of slices over the four shards.
  Process first = Start(dir.path(), 1, "solo", 7);
  for (int i = 0; i < kKeys; ++i) {
    const CheckResult r =
        first.limiter->Check(kDaily.User("u" + std::to_string(i)).Hits(3), AtMs(t0));
    ASSERT_TRUE(r.allowed);
  }
  ASSERT_TRUE(first.snapshots->WriteFinal());
  EXPECT_EQ(first.snapshots->counters().last_keys, static_cast<uint64_t>(kKeys));

  Process second = Start(dir.path(), 2);
  second.snapshots->Restore(AtMs(t0 + 500));
  EXPECT_EQ(second.snapshots->counters().restored_keys, static_cast<uint64_t>(kKeys));
  EXPECT_EQ(second.limiter->GetStats().live_keys, static_cast<uint64_t>(kKeys));
  for (int i = 0; i < kKeys; i += 97) {
    const CheckResult r =
        second.limiter->Check(kDaily.User("u" + std::to_string(i)), AtMs(t0 + 500));
    EXPECT_EQ(r.remaining, 6u) << "u" << i;
  }
}

std::vector<char> ReadAll(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteAll(const std::filesystem::path& file, const std::vector<char>& bytes) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

TEST(LocalSnapshotsTest, RefusedSnapshotsAreReportedSetAsideAndTheNodeStartsClean) {
  TempDir dir;
  const int64_t t0 = WallNowMs();
  const std::filesystem::path file = SnapshotPath(dir.path());
  const std::filesystem::path aside = file.string() + ".rejected";
  {
    Process writer = Start(dir.path(), 1);
    Hit(writer, t0, 9);
    ASSERT_TRUE(writer.snapshots->WriteFinal());
  }
  const std::vector<char> good = ReadAll(file);
  ASSERT_GT(good.size(), 64u);

  struct Case {
    const char* name;
    std::vector<char> bytes;
    const char* node_id;
    bool unreadable;
  };
  std::vector<char> truncated(good.begin(), good.begin() + static_cast<long>(good.size() / 2));
  std::vector<char> flipped = good;
  flipped[flipped.size() - 3] ^= 0x40;  // in the payload: its checksum fails
  std::vector<char> header_flipped = good;
  header_flipped[20] ^= 0x01;  // in the header: its checksum fails
  const Case cases[] = {
      {"truncated", truncated, "solo", false},
      {"payload byte flipped", flipped, "solo", false},
      {"header byte flipped", header_flipped, "solo", false},
      {"another node's", good, "other", false},
      {"not a snapshot", std::vector<char>(100, 'x'), "solo", false},
  };
  uint64_t generation = 10;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    std::filesystem::remove(aside);
    WriteAll(file, c.bytes);
    Process p = Start(dir.path(), ++generation, c.node_id);
    p.snapshots->Restore(AtMs(t0 + 1000));
    const SnapshotCounters counters = p.snapshots->counters();
    EXPECT_EQ(counters.restore_rejected + counters.restore_unreadable, 1u);
    EXPECT_EQ(counters.restore_loaded, 0u);
    EXPECT_EQ(counters.restored_keys, 0u);
    EXPECT_FALSE(std::filesystem::exists(file));
    EXPECT_TRUE(std::filesystem::is_regular_file(aside));
    // Clean: the whole limit is there (the 9 hits are not).
    EXPECT_EQ(Hit(p, t0 + 1000), 9u);
  }
}

TEST(LocalSnapshotsTest, AFailedWriteIsCountedAndReported) {
  TempDir dir;
  const int64_t t0 = WallNowMs();
  Process p = Start(std::filesystem::path(dir.path()) / "missing" / "deeper", 1);
  Hit(p, t0);
  EXPECT_FALSE(p.snapshots->WriteFinal());
  EXPECT_EQ(p.snapshots->counters().write_errors, 1u);
  EXPECT_EQ(p.snapshots->counters().writes, 0u);
}

TEST(LocalSnapshotsTest, ThePeriodicWriterWritesOnItsOwnThread) {
  TempDir dir;
  const int64_t t0 = WallNowMs();
  Process p;
  p.limiter = internal::LimiterAccess::Make(SmallLimiter(), {"solo", 1});
  LocalSnapshotOptions o;
  o.state_dir = dir.path();
  o.cluster_name = "tally";
  o.node_id = "solo";
  o.generation = 1;
  o.interval = std::chrono::milliseconds(20);
  p.snapshots = std::make_unique<LocalSnapshots>(p.limiter.get(), o);
  Hit(p, t0, 2);
  p.snapshots->Start(42);
  // A real thread on the steady clock (SnapshotSchedule's rule itself is
  // tested on injected time): wait for two writes, bounded.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (p.snapshots->counters().writes < 2 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  EXPECT_GE(p.snapshots->counters().writes, 2u);
  EXPECT_EQ(p.snapshots->counters().last_keys, 1u);
  ASSERT_TRUE(p.snapshots->WriteFinal());  // stops the thread first
  const uint64_t writes = p.snapshots->counters().writes;
  Process next = Start(dir.path(), 2);
  next.snapshots->Restore(AtMs(t0 + 10));
  EXPECT_EQ(Hit(next, t0 + 10), 7u);
  EXPECT_EQ(p.snapshots->counters().writes, writes);  // no write after the stop
}

}  // namespace
}  // namespace tally::io

// SnapshotSchedule: when a cluster member's snapshot writer writes
// (periodic, and soon after an override change, coalesced), on injected time.
#include "daemon/io/snapshot_schedule.h"

#include <gtest/gtest.h>

namespace tally::io {
namespace {

using std::chrono::milliseconds;
using Kind = SnapshotSchedule::Kind;
using Time = SnapshotSchedule::Time;

const Time kStart = Time() + std::chrono::hours(1);

TEST(SnapshotScheduleTest, PeriodicWritesComeEveryIntervalWithinTenPercent) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  Time now = kStart;
  for (int i = 0; i < 50; ++i) {
    const Time due = s.Due();
    EXPECT_GE(due, now + milliseconds(54'000));
    EXPECT_LE(due, now + milliseconds(66'000));
    now = due;
    EXPECT_EQ(s.Begin(now), Kind::kPeriodic);
    now += milliseconds(100);  // the write took 100 ms
    s.Finished(now, true);
  }
}

TEST(SnapshotScheduleTest, AnOverrideChangeIsWrittenAtOnceWhenNoWriteWasRecent) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  const Time now = kStart + milliseconds(20'000);
  s.OverridesChanged();
  EXPECT_LE(s.Due(), now);
  EXPECT_EQ(s.Begin(now), Kind::kOverrides);
  EXPECT_FALSE(s.overrides_pending());
  s.Finished(now + milliseconds(5), true);
  // Nothing more is due until the next periodic write, an interval after this one.
  EXPECT_GE(s.Due(), now + milliseconds(54'000));
}

TEST(SnapshotScheduleTest, ABurstOfChangesWritesAtMostOncePerSecond) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  Time now = kStart + milliseconds(10'000);
  int writes = 0;
  // 200 changes, one every 50 ms (10 s), with the writer running whenever due.
  for (int i = 0; i < 200; ++i, now += milliseconds(50)) {
    s.OverridesChanged();
    if (s.Due() <= now) {
      EXPECT_EQ(s.Begin(now), Kind::kOverrides);
      s.Finished(now + milliseconds(20), true);
      ++writes;
    }
  }
  EXPECT_GE(writes, 9);
  EXPECT_LE(writes, 11);  // one per kOverrideSpacing (1 s) over 10 s, plus the first
  // The last change is written within a second of the last write.
  ASSERT_TRUE(s.overrides_pending());
  EXPECT_LE(s.Due(), now + SnapshotSchedule::kOverrideSpacing);
}

TEST(SnapshotScheduleTest, TheSpacingCountsFromTheEndOfTheLastWriteOfEitherKind) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  const Time periodic = s.Due();
  EXPECT_EQ(s.Begin(periodic), Kind::kPeriodic);
  // A change during a long periodic write: due a second after that write ends.
  s.OverridesChanged();
  const Time end = periodic + milliseconds(3'000);
  s.Finished(end, true);
  ASSERT_TRUE(s.overrides_pending());
  EXPECT_EQ(s.Due(), end + SnapshotSchedule::kOverrideSpacing);
}

TEST(SnapshotScheduleTest, AChangeDuringAnOverrideWriteIsWrittenAgain) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  const Time now = kStart + milliseconds(5'000);
  s.OverridesChanged();
  EXPECT_EQ(s.Begin(now), Kind::kOverrides);
  s.OverridesChanged();  // the write may have copied the map before this change
  s.Finished(now + milliseconds(10), true);
  EXPECT_TRUE(s.overrides_pending());
  EXPECT_EQ(s.Due(), now + milliseconds(10) + SnapshotSchedule::kOverrideSpacing);
}

TEST(SnapshotScheduleTest, AFailedOverrideWriteIsRetriedAfterTenSeconds) {
  SnapshotSchedule s(milliseconds(60'000), 7, kStart);
  const Time now = kStart + milliseconds(5'000);
  s.OverridesChanged();
  EXPECT_EQ(s.Begin(now), Kind::kOverrides);
  s.Finished(now, false);
  EXPECT_TRUE(s.overrides_pending());
  EXPECT_EQ(s.Due(), now + SnapshotSchedule::kRetrySpacing);
  EXPECT_EQ(s.Begin(s.Due()), Kind::kOverrides);
  s.Finished(now + SnapshotSchedule::kRetrySpacing, true);
  EXPECT_FALSE(s.overrides_pending());
}

TEST(SnapshotScheduleTest, IntervalZeroWritesOnlyOverrideChanges) {
  SnapshotSchedule s(milliseconds(0), 7, kStart);
  EXPECT_EQ(s.Due(), Time::max());
  s.OverridesChanged();
  EXPECT_LE(s.Due(), kStart);
  EXPECT_EQ(s.Begin(kStart), Kind::kOverrides);
  s.Finished(kStart + milliseconds(1), true);
  EXPECT_EQ(s.Due(), Time::max());
}

}  // namespace
}  // namespace tally::io

// Runtime limit overrides in snapshots (format version 2; docs/DESIGN.md,
// "Snapshots"): round trip with tombstones and the hybrid clock, truncated
// and flipped bytes, a version 1 snapshot without overrides, and entries
// that are invalid, stamped too late or too many.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "crdt/key_store.h"
#include "crdt/limit_overrides.h"
#include "persist/snapshot.h"

namespace tally::persist {
namespace {

using crdt::HlcTimestamp;
using crdt::OverrideEntry;
using crdt::Selector;

constexpr int64_t kNow = 1'700'000'000'000;

SnapshotHeader Header() { return SnapshotHeader{"prod", "node-a", 7, kNow, 10}; }

SnapshotExpectations Expect(int64_t now = kNow + 5'000) {
  SnapshotExpectations e;
  e.cluster_name = "prod";
  e.node_id = "node-a";
  e.generation = 8;
  e.buckets_per_window = 10;
  e.now_wall_ms = now;
  return e;
}

OverrideEntry Descriptor(std::string domain, std::vector<std::pair<std::string, std::string>> kv,
                         uint64_t limit, uint64_t window_ms, HlcTimestamp stamp) {
  OverrideEntry e;
  e.selector.kind = Selector::Kind::kDescriptor;
  e.selector.domain = std::move(domain);
  e.selector.entries = std::move(kv);
  e.value = {false, limit, window_ms};
  e.stamp = stamp;
  e.writer = 0xabcdef;
  return e;
}

OverrideEntry Explicit(std::string user, uint64_t limit, HlcTimestamp stamp, bool removed = false) {
  OverrideEntry e;
  e.selector.kind = Selector::Kind::kExplicit;
  e.selector.user = std::move(user);
  e.selector.endpoint = "/pay";
  e.selector.window_ms = 60'000;
  e.value = {removed, removed ? 0 : limit, 0};
  e.stamp = stamp;
  e.writer = 42;
  return e;
}

// Some of each kind: descriptor (one and several entries, an empty value),
// explicit, and tombstones of both.
std::vector<OverrideEntry> SomeOverrides() {
  std::vector<OverrideEntry> out;
  out.push_back(Descriptor("api", {{"user", "alice"}}, 10, 60'000, {kNow - 9'000, 0}));
  out.push_back(
      Descriptor("api", {{"user", "bob"}, {"path", ""}}, 0, 3'600'000, {kNow - 8'000, 3}));
  out.push_back(Descriptor("edge", {{"k", std::string(crdt::kMaxSelectorText, 'v')}}, 5, 86'400'000,
                           {kNow, 0}));
  OverrideEntry removed = Descriptor("api", {{"user", "carol"}}, 0, 0, {kNow - 1'000, 1});
  removed.value = {true, 0, 0};
  out.push_back(removed);
  out.push_back(Explicit("dave", 3, {kNow - 500, 0}));
  out.push_back(Explicit("erin", 0, {kNow - 400, 0}, /*removed=*/true));
  return out;
}

std::vector<std::byte> Encode(std::vector<OverrideEntry> overrides, HlcTimestamp clock,
                              const crdt::KeyStore* store = nullptr) {
  SnapshotEncoder encoder;
  if (store != nullptr) encoder.AddAll(*store);
  encoder.SetOverrides(std::move(overrides), clock);
  return encoder.Finish(Header()).Joined();
}

void ExpectSameEntries(const std::vector<OverrideEntry>& got,
                       const std::vector<OverrideEntry>& want) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_EQ(got[i].selector, want[i].selector) << i;
    EXPECT_EQ(got[i].value, want[i].value) << i;
    EXPECT_EQ(got[i].stamp, want[i].stamp) << i;
    EXPECT_EQ(got[i].writer, want[i].writer) << i;
  }
}

// A store with a few keys, so the overrides follow a real key and slot table.
crdt::KeyStore SomeKeys() {
  crdt::KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  for (int i = 0; i < 4; ++i) {
    crdt::KeyStore::Lookup how;
    crdt::KeyStore::Entry* e = store.FindOrCreate(
        crdt::HashKey("u" + std::to_string(i), "/", 3'600'000), 3'600'000, kNow, &how);
    e->counter.Add(store.slots().Intern({"node-a", 7}), crdt::BucketOf(kNow, e->counter.geometry()),
                   3);
    store.MarkChanged(e);
  }
  return store;
}

TEST(SnapshotOverridesTest, RoundTripKeepsTombstonesStampsWritersAndTheClock) {
  const crdt::KeyStore store = SomeKeys();
  const HlcTimestamp clock{kNow + 2, 9};
  const std::vector<OverrideEntry> want = SomeOverrides();
  const std::vector<std::byte> bytes = Encode(want, clock, &store);
  const DecodedSnapshot d = DecodeSnapshot(bytes, Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.version, kSnapshotFormatVersion);
  EXPECT_EQ(d.keys.size(), 4u);
  EXPECT_EQ(d.override_count, want.size());
  ExpectSameEntries(d.overrides, want);
  EXPECT_EQ(d.override_clock, clock);
  EXPECT_EQ(d.dropped_overrides_invalid + d.dropped_overrides_future, 0u);

  // Merged into a map they give the writer's map back, digest and all.
  crdt::LimitOverrides original, restored;
  for (const OverrideEntry& e : want) original.Merge(e);
  for (const OverrideEntry& e : d.overrides) {
    EXPECT_EQ(restored.Merge(e), crdt::LimitOverrides::MergeResult::kApplied);
  }
  EXPECT_EQ(restored.Digest(), original.Digest());
  EXPECT_EQ(restored.live(), 4u);
  EXPECT_EQ(restored.size(), 6u);
}

// An adaptive rule's published limit (kind 3) keeps its rule name, which
// the record stores in the user's place.
TEST(SnapshotOverridesTest, AnAdaptiveLimitRoundTripsWithItsRuleName) {
  OverrideEntry adaptive;
  adaptive.selector.kind = Selector::Kind::kAdaptive;
  adaptive.selector.domain = "api";
  adaptive.selector.rule = "backend";
  adaptive.value = {false, 364, 1000};
  adaptive.stamp = {kNow - 100, 2};
  adaptive.writer = 7;
  std::vector<OverrideEntry> want = SomeOverrides();
  want.push_back(adaptive);
  const DecodedSnapshot d = DecodeSnapshot(Encode(want, {kNow, 0}), Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  ExpectSameEntries(d.overrides, want);
  EXPECT_EQ(d.dropped_overrides_invalid, 0u);
}

TEST(SnapshotOverridesTest, NoOverridesCostSixteenBytesAndOneEntryItsTexts) {
  const std::vector<std::byte> none = Encode({}, {});
  const DecodedSnapshot d = DecodeSnapshot(none, Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_TRUE(d.overrides.empty());
  // The sizes DESIGN states: 16 bytes for the section, 53 per entry plus
  // its texts (4 per descriptor entry's lengths).
  const OverrideEntry one = Descriptor("api", {{"user", "alice"}}, 10, 60'000, {kNow, 0});
  const std::vector<std::byte> with_one = Encode({one}, {kNow, 0});
  EXPECT_EQ(with_one.size() - none.size(), 53u + 3 + 4 + 4 + 5);
  const OverrideEntry key = Explicit("dave", 3, {kNow, 0});
  EXPECT_EQ(Encode({key}, {kNow, 0}).size() - none.size(), 53u + 4 + 4);
}

TEST(SnapshotOverridesTest, EveryTruncationIsReportedAsTruncated) {
  const crdt::KeyStore store = SomeKeys();
  const std::vector<std::byte> bytes = Encode(SomeOverrides(), {kNow, 1}, &store);
  for (size_t n = 0; n < bytes.size(); ++n) {
    const DecodedSnapshot d = DecodeSnapshot(std::span(bytes).first(n), Expect());
    EXPECT_EQ(d.status, SnapshotStatus::kTruncated) << n << " bytes: " << d.reason;
    EXPECT_TRUE(d.overrides.empty());
  }
}

TEST(SnapshotOverridesTest, EveryFlippedByteIsRefusedAndResealedOnesNeverCrash) {
  const std::vector<std::byte> good = Encode(SomeOverrides(), {kNow, 1});
  const DecodedSnapshot clean = DecodeSnapshot(good, Expect());
  ASSERT_TRUE(clean.ok()) << clean.reason;
  int accepted = 0, refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (std::byte mask : {std::byte{0x01}, std::byte{0x80}, std::byte{0xff}}) {
      std::vector<std::byte> bad = good;
      bad[i] ^= mask;
      DecodedSnapshot d = DecodeSnapshot(bad, Expect());
      EXPECT_FALSE(d.ok()) << "byte " << i;
      EXPECT_TRUE(d.overrides.empty());
      // Past the checksums, the override reader's own checks.
      if (!ResealForTesting(&bad)) continue;
      d = DecodeSnapshot(bad, Expect());
      EXPECT_FALSE(d.reason.empty());
      if (!d.ok()) {
        ++refused;
        EXPECT_TRUE(d.overrides.empty());
        continue;
      }
      ++accepted;
      EXPECT_LE(d.overrides.size() + d.dropped_overrides_invalid + d.dropped_overrides_future,
                d.override_count);
      for (const OverrideEntry& e : d.overrides) {
        EXPECT_EQ(crdt::Validate(e), "") << "byte " << i;
        EXPECT_LE(e.stamp.wall_ms, d.header.written_wall_ms + crdt::HybridClock::kMaxAheadMs);
      }
      // Zero when the saved clock broke the bound (a no-op to restore).
      if (d.override_clock != HlcTimestamp{}) {
        EXPECT_LE(d.override_clock.wall_ms,
                  d.header.written_wall_ms + crdt::HybridClock::kMaxAheadMs);
      }
    }
  }
  // Some mutants change values only (kept or dropped one by one), others
  // break the structure (refused whole).
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, 0);
}

// A version 1 snapshot is version 2 without the override section: the old
// encoder's exact bytes (16 bytes shorter: the empty section's count and clock).
std::vector<std::byte> AsVersion1(std::vector<std::byte> v2_without_overrides) {
  v2_without_overrides.resize(v2_without_overrides.size() - 16);
  v2_without_overrides[8] = std::byte{1};
  EXPECT_TRUE(ResealForTesting(&v2_without_overrides));
  return v2_without_overrides;
}

TEST(SnapshotOverridesTest, AVersion1SnapshotLoadsItsKeysAndNoOverrides) {
  const crdt::KeyStore store = SomeKeys();
  const std::vector<std::byte> v1 = AsVersion1(Encode({}, {}, &store));
  const DecodedSnapshot d = DecodeSnapshot(v1, Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.version, 1u);
  EXPECT_EQ(d.keys.size(), 4u);
  EXPECT_TRUE(d.overrides.empty());
  EXPECT_EQ(d.override_clock, HlcTimestamp{});
  EXPECT_NE(d.reason.find("version 1"), std::string::npos) << d.reason;
  // Version 1 with an override section after its slots: bytes after the last record.
  std::vector<std::byte> v1_with = Encode(SomeOverrides(), {kNow, 0}, &store);
  v1_with[8] = std::byte{1};
  ASSERT_TRUE(ResealForTesting(&v1_with));
  EXPECT_EQ(DecodeSnapshot(v1_with, Expect()).status, SnapshotStatus::kCorrupt);
}

TEST(SnapshotOverridesTest, ASnapshotWrittenByTheVersion1EncoderStillLoads) {
  // testdata/version1_mixed.snapshot: written by the version 1 encoder (it
  // was the fuzzer's seed "mixed" before version 2), 12 keys over 3 slots.
  std::ifstream in(
      std::string(TALLY_SOURCE_DIR) + "/tests/persist/testdata/version1_mixed.snapshot",
      std::ios::binary);
  ASSERT_TRUE(in) << "test data missing";
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(raw.size(), 100u);
  std::vector<std::byte> bytes(raw.size());
  std::memcpy(bytes.data(), raw.data(), bytes.size());
  ASSERT_EQ(bytes[8], std::byte{1});
  SnapshotExpectations e = Expect(1'700'000'060'000);
  e.generation = 1'700'000'100'000;
  const DecodedSnapshot d = DecodeSnapshot(bytes, e);
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.version, 1u);
  EXPECT_EQ(d.key_count, 12u);
  EXPECT_GT(d.keys.size(), 0u);
  EXPECT_EQ(d.slots.size(), 3u);
  EXPECT_TRUE(d.overrides.empty());
}

// The payload's override section starts 16 bytes (count, clock) before the
// records; with no keys and no slots, right at the payload.
size_t PayloadStart(const std::vector<std::byte>& bytes) {
  uint32_t header_bytes = 0;
  std::memcpy(&header_bytes, bytes.data() + 12, 4);
  return header_bytes;
}

TEST(SnapshotOverridesTest, TooManyOverridesOrMoreThanThePayloadHoldsAreRefused) {
  for (uint32_t count : {uint32_t{kMaxSnapshotOverrides + 1}, uint32_t{7}, UINT32_MAX}) {
    std::vector<std::byte> bytes = Encode(SomeOverrides(), {kNow, 0});  // 6 entries
    std::memcpy(bytes.data() + PayloadStart(bytes), &count, 4);
    ASSERT_TRUE(ResealForTesting(&bytes));
    const DecodedSnapshot d = DecodeSnapshot(bytes, Expect());
    EXPECT_EQ(d.status, SnapshotStatus::kCorrupt) << count;
    EXPECT_TRUE(d.overrides.empty());
    EXPECT_FALSE(d.reason.empty());
  }
  // A full map is written and read whole; the encoder writes no more than that.
  std::vector<OverrideEntry> many;
  for (size_t i = 0; i < kMaxSnapshotOverrides + 10; ++i) {
    many.push_back(Explicit("user" + std::to_string(i), i, {kNow, static_cast<uint32_t>(i)}));
  }
  const DecodedSnapshot d = DecodeSnapshot(Encode(many, {kNow, 0}), Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.overrides.size(), kMaxSnapshotOverrides);
}

// Finds `pattern` in `bytes` after `from`; fails the test if absent.
size_t Find(const std::vector<std::byte>& bytes, const std::vector<uint8_t>& pattern, size_t from) {
  for (size_t i = from; i + pattern.size() <= bytes.size(); ++i) {
    if (std::memcmp(bytes.data() + i, pattern.data(), pattern.size()) == 0) return i;
  }
  ADD_FAILURE() << "pattern not found";
  return 0;
}

TEST(SnapshotOverridesTest, InvalidEntriesAreDroppedOneByOneAndCounted) {
  // Limits with recognisable bytes, so each can be made invalid in place.
  std::vector<OverrideEntry> entries = {
      Explicit("a", 0xA1B2C3D4, {kNow, 0}),
      Explicit("b", 0xA1B2C3D5, {kNow, 0}),
      Explicit("c", 0xA1B2C3D6, {kNow, 0}),
  };
  std::vector<std::byte> bytes = Encode(entries, {kNow, 0});
  const size_t start = PayloadStart(bytes);
  // "a": a limit beyond 32 bits.
  bytes[Find(bytes, {0xD4, 0xC3, 0xB2, 0xA1, 0, 0, 0, 0}, start) + 4] = std::byte{1};
  // "c": removed = 2, neither a set nor a removal.
  bytes[Find(bytes, {0xD6, 0xC3, 0xB2, 0xA1, 0, 0, 0, 0}, start) - 1] = std::byte{2};
  ASSERT_TRUE(ResealForTesting(&bytes));
  const DecodedSnapshot d = DecodeSnapshot(bytes, Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  ASSERT_EQ(d.overrides.size(), 1u);
  EXPECT_EQ(d.overrides[0].selector.user, "b");
  EXPECT_EQ(d.dropped_overrides_invalid, 2u);
  EXPECT_NE(d.reason.find("1 of 3 limit overrides"), std::string::npos) << d.reason;
}

TEST(SnapshotOverridesTest, StampsTooFarAfterTheWriteAreDroppedAndTheClockIgnored) {
  const int64_t latest = kNow + crdt::HybridClock::kMaxAheadMs;
  const std::vector<OverrideEntry> entries = {
      Explicit("in-time", 1, {latest, UINT32_MAX}),
      Explicit("too-late", 2, {latest + 1, 0}),
  };
  DecodedSnapshot d = DecodeSnapshot(Encode(entries, {latest, UINT32_MAX}), Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  ASSERT_EQ(d.overrides.size(), 1u);
  EXPECT_EQ(d.overrides[0].selector.user, "in-time");
  EXPECT_EQ(d.dropped_overrides_future, 1u);
  EXPECT_EQ(d.override_clock, (HlcTimestamp{latest, UINT32_MAX}));

  EXPECT_FALSE(d.dropped_override_clock);

  d = DecodeSnapshot(Encode({entries[0]}, {latest + 1, 0}), Expect());
  ASSERT_TRUE(d.ok()) << d.reason;
  EXPECT_EQ(d.overrides.size(), 1u);
  EXPECT_EQ(d.override_clock, HlcTimestamp{});
  EXPECT_EQ(d.dropped_overrides_future, 0u);
  EXPECT_TRUE(d.dropped_override_clock);
}

TEST(SnapshotOverridesTest, TextsAndEntryCountsBeyondTheLimitsAreRefused) {
  // One descriptor at the limits: 16 entries of 256-byte texts.
  std::vector<std::pair<std::string, std::string>> kv;
  for (size_t i = 0; i < crdt::kMaxSelectorEntries; ++i) {
    kv.emplace_back(std::string(crdt::kMaxSelectorText, static_cast<char>('a' + i)), "v");
  }
  const std::vector<std::byte> good = Encode({Descriptor("d", kv, 1, 1000, {kNow, 0})}, {});
  ASSERT_TRUE(DecodeSnapshot(good, Expect()).ok());
  const size_t record = PayloadStart(good) + 16;
  // kind u8, domain (u16 1, "d"), entry count u8.
  std::vector<std::byte> bytes = good;
  ASSERT_EQ(bytes[record + 4], std::byte{crdt::kMaxSelectorEntries});
  bytes[record + 4] = std::byte{crdt::kMaxSelectorEntries + 1};
  ASSERT_TRUE(ResealForTesting(&bytes));
  DecodedSnapshot d = DecodeSnapshot(bytes, Expect());
  EXPECT_EQ(d.status, SnapshotStatus::kCorrupt);
  EXPECT_NE(d.reason.find("descriptor entries"), std::string::npos) << d.reason;

  bytes = good;
  const uint16_t too_long = crdt::kMaxSelectorText + 1;
  std::memcpy(bytes.data() + record + 5, &too_long, 2);  // the first key's length
  ASSERT_TRUE(ResealForTesting(&bytes));
  d = DecodeSnapshot(bytes, Expect());
  EXPECT_EQ(d.status, SnapshotStatus::kCorrupt);
  EXPECT_NE(d.reason.find("longer than"), std::string::npos) << d.reason;
}

}  // namespace
}  // namespace tally::persist

// Wall-clock offsets and steps of single tallyd processes, with libfaketime
// (Debian's libfaketime; issue 9 item 7). Each faked member runs with
//   LD_PRELOAD=libfaketimeMT.so.1  FAKETIME_TIMESTAMP_FILE=<file>
//   FAKETIME_NO_CACHE=1  FAKETIME_DONT_FAKE_MONOTONIC=1
// so its wall clock (CLOCK_REALTIME: bucket names, SWIM's clock samples) is
// the true time plus the offset written in <file> ("+2", "+0.3"), re-read on
// every call, while its monotonic clock (timers, timeouts) stays true. The
// MT build serializes its clock calls: the plain libfaketime.so.1, re-reading
// the file from several threads, now and then returns the unfaked time (a few
// times in 100,000 reads from 4 threads, measured), which to tallyd is a
// clock step; the MT build did not in 800,000.
//
// Four members: n1, n2 true; n3 a steady +0.3 s (under the 500 ms maximum:
// it keeps owning, with a warning); n4 the owner of the key under test,
// true at first. While clients send through every member:
//   1. n4's clock steps 2 s ahead: it must stop owning (its status says
//      so, with a clock reason) while the others see its offset near +2 s
//      and keep owning; its own clients are still answered (relayed);
//   2. n4's clock steps back to true: it re-fetches its keys (counter
//      clock_resyncs) and owns again.
// The sliding-window bound (request_log.h) must hold with, for the step
// ahead, one tail plus the clock term for delta = 2 s (docs/DESIGN.md,
// "Clock skew": a clock ahead expires the oldest delta + bucket_ms early),
// and for the step back one tail and no clock term: hits counted while a
// clock was ahead sit in future buckets and keep counting, so a step back
// can only deny more (docs/DESIGN.md, "Time"). The key's list is chosen
// without n3, so no other clock offset is involved in its ownership changes.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/fault_util.h"

namespace tally::testing {
namespace {

using std::chrono::seconds;

std::string LibFaketime() {
  for (const char* p : {"/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
                        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
                        "/usr/lib/faketime/libfaketimeMT.so.1"}) {
    if (access(p, R_OK) == 0) return p;
  }
  return "";
}

// Replaces the offset in `path` atomically (libfaketime re-reads it on
// every clock read, so it must never see a half-written file).
bool WriteOffset(const std::string& path, const std::string& offset) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << offset << "\n";
    if (!f) return false;
  }
  return std::rename(tmp.c_str(), path.c_str()) == 0;
}

std::vector<std::string> FaketimeEnv(const std::string& lib, const std::string& file) {
  return {"LD_PRELOAD=" + lib, "FAKETIME_TIMESTAMP_FILE=" + file, "FAKETIME_NO_CACHE=1",
          "FAKETIME_DONT_FAKE_MONOTONIC=1"};
}

// `observer`'s estimate of `id`'s clock offset, NaN if unknown.
double OffsetSeenBy(const TestNode& observer, const std::string& id) {
  std::optional<wire::MemberReport> m = MemberIn(observer, id);
  return m ? m->clock_offset_ms : std::nan("");
}

TEST(ClusterClockFaultTest, NodeTwoSecondsOffStopsOwningAndAStepBackOnlyDeniesMore) {
  const std::string lib = LibFaketime();
  if (lib.empty()) GTEST_SKIP() << "libfaketime not installed (scripts/install-deps.sh)";
  constexpr uint64_t kWindowLimit = 200;
  constexpr uint64_t kWindowMs = 10'000;
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  const std::string n3_clock = dir.File("n3.faketime");
  const std::string n4_clock = dir.File("n4.faketime");
  ASSERT_TRUE(WriteOffset(n3_clock, "+0.3"));
  ASSERT_TRUE(WriteOffset(n4_clock, "+0"));

  ClusterHarness c;
  std::string error;
  TestNode* n1 = c.StartNode("n1", {}, {}, &error);
  ASSERT_NE(n1, nullptr) << error;
  ASSERT_NE(c.StartNode("n2", {n1->gossip()}, {}, &error), nullptr) << error;
  TestNode* n3 =
      c.StartNode("n3", {n1->gossip()}, {}, &error, "127.0.0.1", "", FaketimeEnv(lib, n3_clock));
  ASSERT_NE(n3, nullptr) << error;
  TestNode* n4 =
      c.StartNode("n4", {n1->gossip()}, {}, &error, "127.0.0.1", "", FaketimeEnv(lib, n4_clock));
  ASSERT_NE(n4, nullptr) << error;
  ASSERT_TRUE(c.WaitFormed(seconds(20), &error)) << error;
  std::vector<TestNode*> all = c.Running();

  // The offsets are real (libfaketime reached tallyd's clock) and n3's is
  // tolerated: everyone owns.
  std::string why;
  ASSERT_TRUE(PollUntil(seconds(10),
                        [&] {
                          const double o = OffsetSeenBy(*n1, "n3");
                          return std::abs(o - 300) < 100;
                        }))
      << "n1 sees n3's offset as " << OffsetSeenBy(*n1, "n3") << " ms, want ~300";
  ASSERT_TRUE(ClusterHarness::AllOwning(all, &why)) << why;

  const CheckRequest window = KeyWhere(
      *n1, "clock-window", kWindowLimit, kWindowMs,
      [](const std::vector<std::string>& l) { return l[0] == "n4" && !Contains(l, "n3"); });
  ASSERT_FALSE(window.user_id.empty());
  const CheckRequest total = KeyWhere(
      *n1, "clock-total", 1'000'000, 600'000,
      [](const std::vector<std::string>& l) { return l[0] == "n4" && !Contains(l, "n3"); });
  ASSERT_FALSE(total.user_id.empty());
  // 4 clients x one check per 50 ms, alternating keys: 40 checks/s per key,
  // twice the window key's limit per window.
  std::vector<const TestNode*> entries(all.begin(), all.end());
  RecordedLoad load(entries, {window, total}, milliseconds(50));
  load.Start();
  const int64_t window_us = static_cast<int64_t>(kWindowMs) * 1000;
  ASSERT_TRUE(PollUntil(seconds(40), [&] {
    return load.admitted(0) >= kWindowLimit && load.NowUs() > window_us + 500'000;
  })) << "the window key never reached its limit";

  // 1. Two seconds ahead: n4 stops owning, the others do not.
  const int64_t ahead_us = load.NowUs();
  ASSERT_TRUE(WriteOffset(n4_clock, "+2"));
  auto n4_off = [&](std::string* why) {
    std::optional<wire::StatusReport> s = StatusOf(*n4);
    if (!s || s->owning || s->not_owning_reason.find("clock") == std::string::npos) {
      *why = s ? "n4 owning=" + std::to_string(s->owning) + " (" + s->not_owning_reason + ")"
               : "n4 does not answer";
      return false;
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(seconds(15), [&] { return n4_off(&why); })) << why;
  const int64_t off_us = load.NowUs();
  EXPECT_TRUE(ClusterHarness::AllOwning({n1, &c.node(1), n3}, &why)) << why;
  // The others' estimates follow within a few probe periods.
  EXPECT_TRUE(
      PollUntil(seconds(10), [&] { return std::abs(OffsetSeenBy(*n1, "n4") - 2000) < 250; }))
      << "n1 sees n4's offset as " << OffsetSeenBy(*n1, "n4") << " ms, want ~2000";
  const double seen_ahead = OffsetSeenBy(*n1, "n4");
  EXPECT_TRUE(ClusterHarness::AllOwning({n1, &c.node(1), n3}, &why)) << why;
  {
    CheckRequest probe = total;
    probe.hits = 0;
    CheckResult r = CheckThrough(*n4, probe);
    EXPECT_EQ(r.status, Status::kOk) << "n4's clients are answered while it relays: " << r.error;
  }
  // The fault's length, not a wait for a condition: two seconds off.
  std::this_thread::sleep_for(seconds(2));

  // 2. Back to true time: a step back of 2 s. n4 re-syncs and owns again.
  const int64_t back_us = load.NowUs();
  ASSERT_TRUE(WriteOffset(n4_clock, "+0"));
  auto n4_back = [&](std::string* why) {
    std::optional<wire::StatusReport> s = StatusOf(*n4);
    if (!s || !s->owning || CounterIn(*s, "clock_resyncs") == 0) {
      *why = s ? "n4 owning=" + std::to_string(s->owning) + " (" + s->not_owning_reason +
                     "), clock_resyncs " + std::to_string(CounterIn(*s, "clock_resyncs"))
               : "n4 does not answer";
      return false;
    }
    return true;
  };
  ASSERT_TRUE(PollUntil(seconds(15), [&] { return n4_back(&why); })) << why;
  const int64_t owning_again_us = load.NowUs();
  EXPECT_TRUE(PollUntil(seconds(10), [&] { return std::abs(OffsetSeenBy(*n1, "n4")) < 250; }))
      << "n1 sees n4's offset as " << OffsetSeenBy(*n1, "n4") << " ms, want ~0";

  // One more window and a bit with n4 owning, then stop the clients.
  ASSERT_TRUE(PollUntil(seconds(40),
                        [&] { return load.NowUs() >= owning_again_us + window_us + 1'000'000; }));
  load.Stop();
  const std::vector<RequestRecord> records = load.records();

  EXPECT_EQ(Unanswered(records).size(), 0u) << FirstErrors(records);
  const WindowParams params = ParamsFor(window, c.timings());
  const std::vector<FaultSpan> faults = {
      {"2 s ahead", ahead_us, off_us, 2'000'000},
      {"step back", back_us, owning_again_us, 0},
  };
  WindowReport report = CheckSlidingWindow(records, 0, params, faults);
  EXPECT_TRUE(report.ok) << report.Describe();

  // Nothing lost through either step.
  std::string agree_why;
  std::vector<TestNode*> replicas;
  std::optional<wire::OwnerReport> owners = OwnerOf(*n1, total);
  ASSERT_TRUE(owners.has_value());
  for (TestNode* n : all) {
    if (Contains(owners->preference_list, n->id)) replicas.push_back(n);
  }
  EXPECT_TRUE(PollUntil(seconds(10), [&] { return ReplicasAgree(replicas, total, &agree_why); }))
      << agree_why;
  const uint64_t admitted_total = AdmittedHits(records, 1);
  CountCheck counted = NothingLost(all, total, admitted_total, SumCounter(all, "forward_timeouts"));
  EXPECT_TRUE(counted.ok) << counted.why;

  std::printf(
      "[figures] clock: n3 at +0.3 s keeps owning; n4 +2 s: not owning %.0f ms after the step "
      "(seen at %+.0f ms), owning again %.0f ms after stepping back; %zu requests, %zu "
      "unanswered, p99 %.1f ms; window key (limit %llu per %llu ms): %s; total key admitted "
      "%llu, counted %llu; node timers lost and armed again: n3 %llu, n4 %llu\n",
      (off_us - ahead_us) / 1000.0, seen_ahead, (owning_again_us - back_us) / 1000.0,
      records.size(), Unanswered(records).size(), LatencyPercentileMs(records, 0.99),
      static_cast<unsigned long long>(kWindowLimit), static_cast<unsigned long long>(kWindowMs),
      report.Describe().c_str(), static_cast<unsigned long long>(admitted_total),
      static_cast<unsigned long long>(counted.counted),
      static_cast<unsigned long long>(SumCounter({n3}, "timers_lost")),
      static_cast<unsigned long long>(SumCounter({n4}, "timers_lost")));
}

}  // namespace
}  // namespace tally::testing

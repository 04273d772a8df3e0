// DoorMetrics: what each door (the way a check came in) decided, and how long
// the decisions took, for GET /metrics (daemon/io/metrics_text.h).
//
// Counted where each door gets its results: MessageProcessor for the UDP,
// Unix datagram and seqpacket doors in single-node mode; in cluster mode the
// ClusterDriver, which decodes the Node's encoded replies once more (outside
// its lock) for the targets that carry a DoorMetrics; the RLS server
// (daemon/rls/) for gRPC and HTTP in both modes.
//
// Thread safety: every member is a relaxed atomic; Record() and Snapshot()
// may run concurrently from any thread, never block and take no lock.
#ifndef TALLY_DAEMON_IO_DOOR_METRICS_H_
#define TALLY_DAEMON_IO_DOOR_METRICS_H_

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "daemon/core/decision_kind.h"
#include "tally/types.h"

namespace tally::io {

enum class Door : uint8_t { kUdp, kUnix, kSeqpacket, kGrpc, kHttp };
inline constexpr size_t kDoorCount = 5;
inline constexpr std::array<std::string_view, kDoorCount> kDoorNames = {"udp", "unix", "seqpacket",
                                                                        "grpc", "http"};

// Decisions and their mapping from results: daemon/core/decision_kind.h.
using Decision = core::DecisionKind;
using core::DecisionOf;
using core::kDecisionCount;
using core::kDecisionNames;

// Upper bounds (le) of the decision latency histogram, in nanoseconds; the
// last bucket (+Inf) is implicit. 10 us .. 1 s: a local decision is a few
// microseconds, a forwarded one a network round trip.
inline constexpr std::array<uint64_t, 14> kLatencyBoundsNs = {
    10'000,    25'000,    50'000,     100'000,    250'000,    500'000,     1'000'000,
    2'500'000, 5'000'000, 10'000'000, 25'000'000, 50'000'000, 250'000'000, 1'000'000'000};
inline constexpr size_t kLatencyBuckets = kLatencyBoundsNs.size() + 1;

// A histogram's state, not cumulative: counts[i] observations fell in bucket
// i (the last one: above every bound).
struct HistogramSnapshot {
  std::array<uint64_t, kLatencyBuckets> counts{};
  uint64_t sum_ns = 0;
};

class LatencyHistogram {
 public:
  void Observe(uint64_t ns) {
    size_t i = 0;
    while (i < kLatencyBoundsNs.size() && ns > kLatencyBoundsNs[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(ns, std::memory_order_relaxed);
  }
  // Not atomic as a whole: a scrape racing an Observe may see the count
  // without the sum (off by one observation until the next scrape).
  HistogramSnapshot Snapshot() const {
    HistogramSnapshot s;
    for (size_t i = 0; i < kLatencyBuckets; ++i) {
      s.counts[i] = counts_[i].load(std::memory_order_relaxed);
    }
    s.sum_ns = sum_ns_.load(std::memory_order_relaxed);
    return s;
  }

 private:
  std::array<std::atomic<uint64_t>, kLatencyBuckets> counts_{};
  std::atomic<uint64_t> sum_ns_{0};
};

struct DoorMetricsSnapshot {
  std::array<std::array<uint64_t, kDecisionCount>, kDoorCount> checks{};
  std::array<HistogramSnapshot, kDoorCount> latency{};
};

class DoorMetrics {
 public:
  void Count(Door door, Decision decision, uint64_t n = 1) {
    if (n != 0) {
      checks_[Index(door)][static_cast<size_t>(decision)].fetch_add(n, std::memory_order_relaxed);
    }
  }
  // One per result, by DecisionOf.
  void CountResults(Door door, std::span<const CheckResult> results) {
    core::DecisionCounts counts;
    for (const CheckResult& r : results) counts.Add(r);
    Count(door, counts);
  }
  void Count(Door door, const core::DecisionCounts& counts) {
    for (size_t d = 0; d < kDecisionCount; ++d) Count(door, static_cast<Decision>(d), counts.n[d]);
  }
  // How long one message's (or request's) decisions took.
  void ObserveLatency(Door door, uint64_t ns) { latency_[Index(door)].Observe(ns); }

  DoorMetricsSnapshot Snapshot() const {
    DoorMetricsSnapshot s;
    for (size_t door = 0; door < kDoorCount; ++door) {
      for (size_t d = 0; d < kDecisionCount; ++d) {
        s.checks[door][d] = checks_[door][d].load(std::memory_order_relaxed);
      }
      s.latency[door] = latency_[door].Snapshot();
    }
    return s;
  }

 private:
  static size_t Index(Door door) { return static_cast<size_t>(door); }
  std::array<std::array<std::atomic<uint64_t>, kDecisionCount>, kDoorCount> checks_{};
  std::array<LatencyHistogram, kDoorCount> latency_{};
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_DOOR_METRICS_H_

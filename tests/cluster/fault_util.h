// Small helpers shared by the real-process fault tests (stop_cont_test,
// clock_fault_test, loss_test, partition_test).
#ifndef TALLY_TESTS_CLUSTER_FAULT_UTIL_H_
#define TALLY_TESTS_CLUSTER_FAULT_UTIL_H_

#include <cmath>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tests/cluster/cluster_harness.h"
#include "tests/cluster/request_log.h"

namespace tally::testing {

// The replication retry of unacknowledged batches (docs/DESIGN.md,
// "Replication and anti-entropy"): tallyd's default --replication-retry-ms,
// which ClusterTimings leaves alone.
inline constexpr int64_t kReplicationRetryMs = 100;
// buckets_per_window, the default (docs/DESIGN.md, "Algorithm").
inline constexpr int64_t kBucketsPerWindow = 10;

// The checker's parameters for `key` under `timings` (request_log.h explains tau).
inline WindowParams ParamsFor(const CheckRequest& key, const ClusterTimings& timings) {
  WindowParams p;
  p.limit = key.limit;
  p.window_us = static_cast<int64_t>(key.window_ms) * 1000;
  const int64_t bucket_ms =
      (static_cast<int64_t>(key.window_ms) + kBucketsPerWindow - 1) / kBucketsPerWindow;
  p.bucket_us = bucket_ms * 1000;
  p.tau_us =
      (timings.replication_interval_ms + timings.LongestForwardWaitMs() + kReplicationRetryMs) *
      1000;
  return p;
}

// The first key prefix-0, prefix-1, ... whose preference list (as
// `observer` sees it) satisfies `wanted`; empty user_id if none of `tries` does.
inline CheckRequest KeyWhere(const TestNode& observer, const std::string& prefix, uint64_t limit,
                             uint64_t window_ms,
                             const std::function<bool(const std::vector<std::string>&)>& wanted,
                             int tries = 400) {
  for (int i = 0; i < tries; ++i) {
    CheckRequest r;
    r.user_id = prefix + "-" + std::to_string(i);
    r.endpoint = "/api";
    r.limit = limit;
    r.window_ms = window_ms;
    std::optional<wire::OwnerReport> o = OwnerOf(observer, r);
    if (o && !o->preference_list.empty() && wanted(o->preference_list)) return r;
  }
  return CheckRequest{};
}

inline bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// Sum of counter `name` over the statuses of `nodes` (those that answer).
inline uint64_t SumCounter(const std::vector<TestNode*>& nodes, const std::string& name) {
  uint64_t sum = 0;
  for (TestNode* n : nodes) {
    if (auto s = StatusOf(*n)) sum += CounterIn(*s, name);
  }
  return sum;
}

// `observer`'s view of member `id` (nullopt if it does not answer or does
// not know it).
inline std::optional<wire::MemberReport> MemberIn(const TestNode& observer, const std::string& id) {
  std::optional<wire::StatusReport> s = StatusOf(observer);
  if (!s) return std::nullopt;
  for (const wire::MemberReport& m : s->members) {
    if (m.id == id) return m;
  }
  return std::nullopt;
}

// Hits counted for `key` as `node` answers now (limit - remaining of a
// hits = 0 probe); nullopt on an error.
inline std::optional<uint64_t> CountedThrough(const TestNode& node, const CheckRequest& key) {
  CheckRequest probe = key;
  probe.hits = 0;
  probe.request_id = 0;
  CheckResult r = CheckThrough(node, probe);
  if (r.status != Status::kOk) return std::nullopt;
  return key.limit - std::min(key.limit, r.remaining);
}

// "nothing lost" for a key whose limit is never reached: after the replicas
// converged, every node answers the same count, at least the hits clients
// saw admitted (a lost admission would show as less) and at most those plus
// the forwards that were decided twice (a forward whose reply came too late
// is decided again by the next member: counted twice, which only denies
// more; each such forward is one forward_timeout).
struct CountCheck {
  bool ok = false;
  std::string why;
  uint64_t counted = 0;
};
inline CountCheck NothingLost(const std::vector<TestNode*>& nodes, const CheckRequest& key,
                              uint64_t admitted, uint64_t forward_timeouts) {
  CountCheck c;
  std::optional<uint64_t> first;
  for (TestNode* n : nodes) {
    std::optional<uint64_t> counted = CountedThrough(*n, key);
    if (!counted) {
      c.why = n->id + " gave no answer";
      return c;
    }
    if (first && *first != *counted) {
      c.why = n->id + " counts " + std::to_string(*counted) + ", others " + std::to_string(*first);
      return c;
    }
    first = counted;
  }
  c.counted = first.value_or(0);
  if (c.counted < admitted) {
    c.why = "counted " + std::to_string(c.counted) + " < admitted " + std::to_string(admitted);
    return c;
  }
  if (c.counted > admitted + forward_timeouts) {
    c.why = "counted " + std::to_string(c.counted) + " > admitted " + std::to_string(admitted) +
            " + forward timeouts " + std::to_string(forward_timeouts);
    return c;
  }
  c.ok = true;
  return c;
}

inline std::string FirstErrors(const std::vector<RequestRecord>& records, size_t n = 3) {
  std::string s;
  for (const RequestRecord* r : Unanswered(records)) {
    if (n-- == 0) break;
    s += "[entry " + std::to_string(r->entry) + " at " + std::to_string(r->send_us / 1000) +
         " ms, " + std::to_string((r->recv_us - r->send_us) / 1000) + " ms: " + r->error + "] ";
  }
  return s;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_CLUSTER_FAULT_UTIL_H_

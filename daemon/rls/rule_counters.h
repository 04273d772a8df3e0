// RuleCounters: the per-rule limit counters of the Envoy doors (hits, over
// limit, near limit, shadow mode; envoyproxy/ratelimit's per-rule stats), by
// (rule stats key, limit name), kept across rule reloads.
//
// The hot path takes no lock: each rule set in force gets a Table, an array
// of pointers to atomic cells indexed by ResolvedLimit::rule_limit (see
// rules::RuleSet::rule_limits()), built once per load or reload and held
// with the rules (a call keeps the table it started with, as it keeps the
// rules). Cells are never freed or moved, and a (rule, name) pair keeps its
// cell through reloads, so a call finishing on the old rules still counts
// where the new ones do and nothing counted is lost. Two limits with the same
// rule and name (unnamed limits of one descriptor) share a cell, as they
// share a metric series.
//
// Thread safety: Cell updates and Table reads from any thread, lock-free;
// TableFor() and Snapshot() take a mutex (reloads and scrapes only).
#ifndef TALLY_DAEMON_RLS_RULE_COUNTERS_H_
#define TALLY_DAEMON_RLS_RULE_COUNTERS_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "rules/rules.h"

namespace tally::rls {

class RuleCounters {
 public:
  struct Cell {
    std::atomic<uint64_t> hits{0}, over_limit{0}, near_limit{0}, shadow_mode{0};
    std::atomic<uint64_t> limit{0}, window_ms{0};  // as last applied
    // The highest share of the limit one key used (per mille; 1000: denied)
    // in a peak period (kPeakPeriodMs of steady time), two periods kept by
    // parity: the status page's "rules nearest their limits".
    std::atomic<int64_t> peak_period[2]{-1, -1};
    std::atomic<uint32_t> peak_permille[2]{0, 0};
  };
  static constexpr int64_t kPeakPeriodMs = 60'000;
  // Cells by ResolvedLimit::rule_limit of one rule set.
  using Table = std::vector<Cell*>;

  struct Totals {
    std::string rule, name;
    uint64_t hits = 0, over_limit = 0, near_limit = 0, shadow_mode = 0;
    uint64_t limit = 0, window_ms = 0;
    double peak_used = 0;  // this peak period's and the last one's, 0..1
  };

  // The table of `rules`' limits: known (rule, name) pairs keep their cells,
  // new ones get zeroed cells.
  std::shared_ptr<const Table> TableFor(const rules::RuleSet& rules);

  // Every (rule, name) counted since construction (including rules no longer
  // in force), sorted by rule then name. `period` is PeriodAt(now).
  std::vector<Totals> Snapshot(int64_t period = -1) const;
  // The peak period of a steady-clock reading in ms.
  static int64_t PeriodAt(int64_t steady_ms) { return steady_ms / kPeakPeriodMs; }

  // Adds one decided limit's outcome, in hits: `allowed`, and the limit and
  // remaining of its result; `shadow` when the limit was in shadow mode.
  // Near the limit: admitted with 80% or more of the limit used.
  // `window_ms` is the limit's window, `period` PeriodAt(now) (-1: no peak).
  static void Count(Cell& cell, uint64_t hits, bool allowed, bool shadow, uint64_t limit,
                    uint64_t remaining, uint64_t window_ms = 0, int64_t period = -1) {
    cell.hits.fetch_add(hits, std::memory_order_relaxed);
    // Stored only when they change (a reload, a request's override): the
    // usual call then adds to the counters and writes nothing else.
    if (cell.limit.load(std::memory_order_relaxed) != limit) {
      cell.limit.store(limit, std::memory_order_relaxed);
    }
    if (cell.window_ms.load(std::memory_order_relaxed) != window_ms) {
      cell.window_ms.store(window_ms, std::memory_order_relaxed);
    }
    uint32_t used_permille = 1000;
    if (!allowed) {
      (shadow ? cell.shadow_mode : cell.over_limit).fetch_add(hits, std::memory_order_relaxed);
    } else {
      const uint64_t used = limit - std::min(remaining, limit);
      if (limit > 0 && used * 5 >= limit * 4) {
        cell.near_limit.fetch_add(hits, std::memory_order_relaxed);
      }
      used_permille = limit == 0 ? 0 : static_cast<uint32_t>(std::min<uint64_t>(used, limit) * 1000 / limit);
    }
    if (period >= 0) NotePeak(cell, period, used_permille);
  }

 private:
  // A statistic, not a count: a racing period change may lose one reading.
  static void NotePeak(Cell& cell, int64_t period, uint32_t permille) {
    const int slot = static_cast<int>(period & 1);
    int64_t held = cell.peak_period[slot].load(std::memory_order_relaxed);
    if (held != period &&
        cell.peak_period[slot].compare_exchange_strong(held, period, std::memory_order_relaxed)) {
      cell.peak_permille[slot].store(0, std::memory_order_relaxed);
    }
    uint32_t peak = cell.peak_permille[slot].load(std::memory_order_relaxed);
    while (permille > peak && !cell.peak_permille[slot].compare_exchange_weak(
                                  peak, permille, std::memory_order_relaxed)) {
    }
  }

  mutable std::mutex mu_;
  std::deque<Cell> cells_;  // guarded by mu_ (growth); cells are atomics
  std::map<std::pair<std::string, std::string>, Cell*, std::less<>> by_name_;  // guarded by mu_
};

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_RULE_COUNTERS_H_

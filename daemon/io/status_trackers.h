// What the status page (GET / and GET /status.json, daemon/rls/status_page.h)
// shows beyond `tally status`: a short history of the check rate, the
// busiest keys and recent membership events. Each tracker is bounded and
// cheap for the path it watches:
//
//   RateHistory         one Record per second from a daemon timer (door totals,
//                       which are relaxed atomics): nothing on the check path.
//   BusiestKeys         Offer() per checks message: a thread-local countdown;
//                       about one message in `sample_period` takes a lock and
//                       is counted (Space-Saving, a fixed number of entries).
//   MembershipEventLog  Record() per membership change (rare): a lock and a
//                       fixed-size ring.
//
// Thread safety: every method may be called from any thread.
#ifndef TALLY_DAEMON_IO_STATUS_TRACKERS_H_
#define TALLY_DAEMON_IO_STATUS_TRACKERS_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "tally/types.h"

namespace tally::io {

// Checks and denials per interval, the newest last.
struct RateSample {
  int64_t end_wall_ms = 0;  // when the interval ended (wall clock, ms since the epoch)
  int64_t duration_ms = 0;  // how long it lasted (> 0)
  uint64_t checks = 0;      // decisions answered at this node's doors in it
  uint64_t denied = 0;      // of which denied
};

class RateHistory {
 public:
  // Keeps the newest `capacity` intervals (600: ten minutes at one a second).
  explicit RateHistory(size_t capacity = 600) : capacity_(capacity) {}

  // Records the running totals at `wall_ms` / `monotonic_ms`: the first call
  // only sets the baseline; each later one adds the interval since the
  // previous call. Totals that went down (cannot happen with counters) and
  // intervals that did not move forward are skipped.
  void Record(int64_t wall_ms, int64_t monotonic_ms, uint64_t checks_total, uint64_t denied_total);

  // The intervals held, oldest first.
  std::vector<RateSample> Samples() const;

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<RateSample> samples_;
  bool have_baseline_ = false;
  int64_t last_monotonic_ms_ = 0;
  uint64_t last_checks_ = 0, last_denied_ = 0;
};

// One key's estimated traffic.
struct KeyRate {
  std::string user_id;   // cut to kMaxShownKeyBytes
  std::string endpoint;  // cut to kMaxShownKeyBytes
  uint64_t window_ms = 0;
  uint64_t limit = 0;  // the last limit asked for it
  double checks_per_s = 0;
  double hits_per_s = 0;
};

// The heaviest keys among the checks offered, by sampling: Offer() counts
// roughly one message in `sample_period` per thread (the gap is drawn at
// random so that a periodic pattern of keys cannot hide a key), each
// sampled check weighing `sample_period`. The counts live in two
// generations of at most `capacity` keys each (Space-Saving: a new key
// replaces the lightest, inheriting its count as an overestimate); the
// older generation is dropped every `generation` period, so Top() reflects
// the last one to two periods. Keys are (user_id, endpoint, window_ms).
class BusiestKeys {
 public:
  static constexpr size_t kMaxShownKeyBytes = 128;

  explicit BusiestKeys(uint32_t sample_period = 16, size_t capacity = 64,
                       std::chrono::milliseconds generation = std::chrono::seconds(60));

  // Hot path: one call per checks message, before or after it is decided.
  void Offer(std::span<const CheckRequestRef> checks) {
    if (--Countdown() != 0) return;
    Countdown() = NextGap();
    Sample(checks, std::chrono::steady_clock::now());
  }
  // For tests: counts `checks` as one sampled message at `now`.
  void Sample(std::span<const CheckRequestRef> checks, std::chrono::steady_clock::time_point now);

  // The `n` heaviest keys, heaviest first, as rates over the time both
  // generations cover (at least one second).
  std::vector<KeyRate> Top(
      size_t n, std::chrono::steady_clock::time_point now = std::chrono::steady_clock::now()) const;

  uint32_t sample_period() const { return sample_period_; }

 private:
  struct Entry {
    std::string user_id, endpoint;
    uint64_t window_ms = 0, limit = 0;
    uint64_t checks = 0, hits = 0;  // sampled, not yet weighted
  };
  struct Generation {
    std::chrono::steady_clock::time_point start{};
    std::vector<Entry> entries;
  };
  static uint32_t& Countdown() {
    thread_local uint32_t countdown = 1;
    return countdown;
  }
  uint32_t NextGap() const;
  void RotateLocked(std::chrono::steady_clock::time_point now);

  const uint32_t sample_period_;
  const size_t capacity_;
  const std::chrono::steady_clock::duration generation_;
  mutable std::mutex mu_;
  bool started_ = false;
  Generation current_, previous_;
  bool have_previous_ = false;
};

// A membership change as this node saw it.
struct MembershipEvent {
  int64_t wall_ms = 0;
  std::string member;
  std::string what;                  // joined | state | restarted | forgotten
  std::string from_state, to_state;  // "" when not applicable
  uint64_t incarnation = 0;
  uint64_t generation = 0;
};

class MembershipEventLog {
 public:
  explicit MembershipEventLog(size_t capacity = 64) : capacity_(capacity) {}
  // Stamps the event with the wall clock when its wall_ms is 0.
  void Record(MembershipEvent event);
  // The events held, newest first.
  std::vector<MembershipEvent> Recent() const;
  uint64_t total() const;  // recorded since start, including those dropped

 private:
  const size_t capacity_;
  mutable std::mutex mu_;
  std::deque<MembershipEvent> events_;
  uint64_t total_ = 0;
};

// The trackers one Daemon feeds and its status page reads.
struct StatusTrackers {
  RateHistory rates;
  BusiestKeys keys;
  MembershipEventLog events;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_STATUS_TRACKERS_H_

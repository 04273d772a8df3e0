// Recorded client load and the sliding-window checker for the fault tests.
//
// RecordedLoad runs one client thread per entry node (inside the node's
// network namespace), each sending checks at a steady pace over a set of
// keys and recording, for every request, when it was sent and when its
// answer came back (the test's steady clock: "true time"), and the answer.
//
// CheckSlidingWindow then verifies, for one key, the guarantee the cluster
// promises under the faults a test injected (docs/DESIGN.md, "Failure and
// recovery: the bounds", "Partitions", "Clock skew"):
//
//   in every interval of true time of length W (the key's window), the
//   hits clients saw admitted  <=  L + sum over the faults whose span meets
//   that interval of (tail_f + clock_f)
//
// * L is the key's limit: one decider at a time never admits more than L in
//   any interval of W of its own wall clock (the single-node guarantee).
// * tail_f is one failover tail, DESIGN's `min(limit, rate x
//   (replication_interval + latency + replication_retry))`: when the decider
//   changes, the new decider misses at most what was decided in the last
//   tau = replication_interval + latency + replication_retry before it holds
//   the state (hits not yet replicated; for a member that comes back, the
//   time until the state pushed to it arrives), the latency being bounded by
//   the forward timeout, past which the daemon itself treats a peer message
//   as lost. The rate is the key's, taken from the record: the most requests
//   of the key (whatever their answer) whose [send, receive] meets any
//   interval of length tau that ends inside the fault's span (the change
//   happens within it), capped at L. No decider admits more hits in an
//   interval than clients requested in it, so this bounds what was missed,
//   whoever decided it.
//   Why one tail per interval and not per lost message: take the last
//   admission in the interval, at t by decider D. D counted every hit it
//   admitted itself in the interval, and every hit another decider admitted
//   before t - tau (replicated by then); so what D missed lies in
//   (t - tau, t]: one tail per fault, however many decisions it moved.
// * clock_f (clock faults only) is DESIGN's clock term: a new decider whose
//   clock is delta ahead may treat ceil(delta / bucket_ms) buckets as expired
//   early, so it may re-admit the hits admitted in delta + bucket_ms of the
//   window: computed the same way, as the most admitted hits in any interval
//   of length delta + bucket_ms from W before the fault to W after it
//   (capped at L). A clock that steps *back* gets no clock term: hits counted
//   while it was ahead sit in future buckets and keep counting, so it can
//   only deny more.
//
// Counting is conservative in the checker's favour only where true time is
// unknown: an admission is counted in [t, t + W] when its whole [send,
// receive] lies inside, so a reported excess is certain. Requests that got
// no answer (or an error) are reported separately: the tests require none.
//
// Thread safety: RecordedLoad is driven from the test's main thread; its
// progress counters may be read while it runs.
#ifndef TALLY_TESTS_CLUSTER_REQUEST_LOG_H_
#define TALLY_TESTS_CLUSTER_REQUEST_LOG_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/cluster/cluster_harness.h"

namespace tally::testing {

enum class Outcome : uint8_t { kAllowed, kDenied, kError };

struct RequestRecord {
  uint32_t key = 0;     // index into the load's keys
  uint32_t entry = 0;   // index of the entry node (client thread)
  int64_t send_us = 0;  // true time (steady clock) since the load's epoch
  int64_t recv_us = 0;  // when the answer (or the client's give-up) came
  uint64_t hits = 1;
  Outcome outcome = Outcome::kDenied;
  uint64_t remaining = 0;
  std::string error;  // kError only
};

// A fault the checker allows for: its span in true time (microseconds since
// the load's epoch) and the clock offset between the deciders it may put on
// either side of an ownership change (0 unless clocks differ).
struct FaultSpan {
  std::string name;
  int64_t from_us = 0;
  int64_t to_us = 0;
  int64_t clock_delta_us = 0;
};

struct WindowParams {
  uint64_t limit = 0;
  int64_t window_us = 0;
  int64_t bucket_us = 0;  // ceil(window / buckets_per_window)
  int64_t tau_us = 0;     // replication_interval + longest forward wait + replication_retry
};

// What the checker found for one key.
struct WindowReport {
  bool ok = true;
  uint64_t admitted_total = 0;
  uint64_t worst_admitted = 0;  // most admitted in one interval of W
  uint64_t bound_at_worst = 0;  // the bound for that interval
  int64_t worst_from_us = 0;
  uint64_t worst_excess = 0;  // most admitted over L in any interval (0 if none)
  // The interval that exceeded its bound by the most (if !ok).
  uint64_t violation_admitted = 0;
  uint64_t violation_bound = 0;
  int64_t violation_from_us = 0;
  std::vector<uint64_t> tails;   // per fault: tail_f
  std::vector<uint64_t> clocks;  // per fault: clock_f

  std::string Describe() const {
    char buf[512];
    std::snprintf(buf, sizeof(buf),
                  "admitted %llu in all; worst interval %llu admitted (bound %llu) from %.3f s; "
                  "largest excess over the limit %llu",
                  static_cast<unsigned long long>(admitted_total),
                  static_cast<unsigned long long>(worst_admitted),
                  static_cast<unsigned long long>(bound_at_worst), worst_from_us / 1e6,
                  static_cast<unsigned long long>(worst_excess));
    std::string s = buf;
    for (size_t i = 0; i < tails.size(); ++i) {
      s += "; fault " + std::to_string(i) + " tail " + std::to_string(tails[i]) + " clock " +
           std::to_string(clocks[i]);
    }
    if (!ok) {
      std::snprintf(buf, sizeof(buf), "; VIOLATION: %llu admitted from %.3f s, bound %llu",
                    static_cast<unsigned long long>(violation_admitted), violation_from_us / 1e6,
                    static_cast<unsigned long long>(violation_bound));
      s += buf;
    }
    return s;
  }
};

namespace internal {

// The most hits of `records` (sorted by send_us) whose [send, recv] meets
// some interval [u - len, u] with u in [u_from, u_to].
inline uint64_t MostHitsIn(const std::vector<const RequestRecord*>& records, int64_t len,
                           int64_t u_from, int64_t u_to) {
  uint64_t best = 0;
  // Candidate right ends: u_from, u_to, and every send time in range (the
  // count only rises when u passes a send); left ends are u - len.
  std::vector<int64_t> candidates = {u_from, u_to};
  for (const RequestRecord* r : records) {
    if (r->send_us >= u_from && r->send_us <= u_to) candidates.push_back(r->send_us);
  }
  for (int64_t u : candidates) {
    uint64_t n = 0;
    for (const RequestRecord* r : records) {
      if (r->send_us > u) break;
      if (r->recv_us >= u - len) n += r->hits;
    }
    best = std::max(best, n);
  }
  return best;
}

}  // namespace internal

// Checks one key's records (any order; other keys' records are ignored).
inline WindowReport CheckSlidingWindow(const std::vector<RequestRecord>& records, uint32_t key,
                                       const WindowParams& p,
                                       const std::vector<FaultSpan>& faults) {
  WindowReport report;
  std::vector<const RequestRecord*> requested, admitted;
  for (const RequestRecord& r : records) {
    if (r.key != key) continue;
    requested.push_back(&r);
    if (r.outcome == Outcome::kAllowed) admitted.push_back(&r);
  }
  auto by_send = [](const RequestRecord* a, const RequestRecord* b) {
    return a->send_us < b->send_us;
  };
  std::sort(requested.begin(), requested.end(), by_send);
  std::sort(admitted.begin(), admitted.end(), by_send);
  for (const RequestRecord* r : admitted) report.admitted_total += r->hits;

  // Each fault's allowance, measured from the record.
  for (const FaultSpan& f : faults) {
    uint64_t tail = internal::MostHitsIn(requested, p.tau_us, f.from_us, f.to_us);
    uint64_t clock = 0;
    if (f.clock_delta_us > 0) {
      // Early expiry re-admits the oldest delta + bucket_ms of the window of
      // a decision made during the fault (or while its effect lasts, up to
      // W after it): hits admitted from W before the span to W after it.
      const int64_t len = f.clock_delta_us + p.bucket_us;
      clock =
          internal::MostHitsIn(admitted, len, f.from_us - p.window_us + len, f.to_us + p.window_us);
    }
    report.tails.push_back(std::min(tail, p.limit));
    report.clocks.push_back(std::min(clock, p.limit));
  }

  // Every interval [t, t + W] that starts at an admitted request's send
  // (a maximal interval can always be slid right until it does).
  for (size_t i = 0; i < admitted.size(); ++i) {
    const int64_t t = admitted[i]->send_us;
    const int64_t end = t + p.window_us;
    uint64_t n = 0;
    for (size_t j = i; j < admitted.size() && admitted[j]->send_us <= end; ++j) {
      if (admitted[j]->recv_us <= end) n += admitted[j]->hits;
    }
    uint64_t bound = p.limit;
    for (size_t f = 0; f < faults.size(); ++f) {
      if (faults[f].from_us <= end && faults[f].to_us >= t) {
        bound += report.tails[f] + report.clocks[f];
      }
    }
    if (n > p.limit) report.worst_excess = std::max(report.worst_excess, n - p.limit);
    if (n > report.worst_admitted) {
      report.worst_admitted = n;
      report.bound_at_worst = bound;
      report.worst_from_us = t;
    }
    if (n > bound &&
        (report.ok || n - bound > report.violation_admitted - report.violation_bound)) {
      report.ok = false;
      report.violation_admitted = n;
      report.violation_bound = bound;
      report.violation_from_us = t;
    }
  }
  return report;
}

// Requests that got no decision (client gave up, or an error status).
inline std::vector<const RequestRecord*> Unanswered(const std::vector<RequestRecord>& records) {
  std::vector<const RequestRecord*> out;
  for (const RequestRecord& r : records) {
    if (r.outcome == Outcome::kError) out.push_back(&r);
  }
  return out;
}

inline uint64_t AdmittedHits(const std::vector<RequestRecord>& records, uint32_t key) {
  uint64_t n = 0;
  for (const RequestRecord& r : records) {
    if (r.key == key && r.outcome == Outcome::kAllowed) n += r.hits;
  }
  return n;
}

// Latency percentile (0..1) of answered requests, in ms.
inline double LatencyPercentileMs(const std::vector<RequestRecord>& records, double q) {
  std::vector<int64_t> l;
  for (const RequestRecord& r : records) {
    if (r.outcome != Outcome::kError) l.push_back(r.recv_us - r.send_us);
  }
  if (l.empty()) return 0;
  size_t i = std::min(l.size() - 1, static_cast<size_t>(q * static_cast<double>(l.size())));
  std::nth_element(l.begin(), l.begin() + static_cast<ptrdiff_t>(i), l.end());
  return static_cast<double>(l[i]) / 1000.0;
}

// One client thread per entry node sending checks of `keys` in turn, one
// request every `pace` per thread (the next send waits for the answer to
// the previous one: a closed loop, so a slow cluster slows the load rather
// than piling up requests). The client's per-attempt timeout is scaled by
// TALLY_TEST_WAIT_SCALE (sanitizer builds), like every wait of the tests.
class RecordedLoad {
 public:
  RecordedLoad(std::vector<const TestNode*> entries, std::vector<CheckRequest> keys,
               milliseconds pace, ClientOptions options = {})
      : entries_(std::move(entries)), keys_(std::move(keys)), pace_(pace), options_(options) {
    options_.timeout = ScaledWait(options_.timeout);
    per_key_admitted_ = std::make_unique<std::atomic<uint64_t>[]>(keys_.size());
    for (size_t k = 0; k < keys_.size(); ++k) per_key_admitted_[k] = 0;
  }
  ~RecordedLoad() { Stop(); }
  RecordedLoad(const RecordedLoad&) = delete;
  RecordedLoad& operator=(const RecordedLoad&) = delete;

  // The epoch of every recorded time; fault times use the same origin.
  SteadyClock::time_point epoch() const { return epoch_; }
  int64_t NowUs() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(SteadyClock::now() - epoch_)
        .count();
  }

  void Start() {
    epoch_ = SteadyClock::now();
    logs_.assign(entries_.size(), {});
    for (size_t e = 0; e < entries_.size(); ++e) {
      threads_.emplace_back([this, e] { Run(e); });
    }
  }

  // Stops every client thread after its request in flight (idempotent).
  void Stop() {
    stop_ = true;
    for (auto& t : threads_) t.join();
    threads_.clear();
  }

  // Every record, in no particular order. REQUIRES: stopped.
  std::vector<RequestRecord> records() const {
    std::vector<RequestRecord> all;
    for (const auto& log : logs_) all.insert(all.end(), log.begin(), log.end());
    return all;
  }

  uint64_t sent() const { return sent_.load(); }
  uint64_t admitted(size_t key) const { return per_key_admitted_[key].load(); }
  uint64_t errors() const { return errors_.load(); }

 private:
  void Run(size_t e) {
    const TestNode& node = *entries_[e];
    EnterNetns(node.netns);
    std::vector<RequestRecord>& log = logs_[e];
    std::string error;
    std::unique_ptr<Client> client = Client::Connect(node.udp(), options_, &error);
    auto next = SteadyClock::now();
    for (uint64_t i = 0; !stop_.load(); ++i) {
      const uint32_t k = static_cast<uint32_t>(i % keys_.size());
      CheckRequest request = keys_[k];
      request.request_id = (uint64_t{e} + 1) << 40 | (i + 1);
      RequestRecord r;
      r.key = k;
      r.entry = static_cast<uint32_t>(e);
      r.hits = request.hits;
      r.send_us = NowUs();
      CheckResult result = client ? client->Check(request) : Unreachable(error);
      r.recv_us = NowUs();
      if (result.status != Status::kOk) {
        r.outcome = Outcome::kError;
        r.error = std::string(StatusName(result.status)) + ": " + result.error;
        errors_.fetch_add(1);
      } else {
        r.outcome = result.allowed ? Outcome::kAllowed : Outcome::kDenied;
        r.remaining = result.remaining;
        if (result.allowed) per_key_admitted_[k].fetch_add(request.hits);
      }
      log.push_back(std::move(r));
      sent_.fetch_add(1);
      next += pace_;
      const auto now = SteadyClock::now();
      if (next < now) next = now;           // behind: do not burst to catch up
      std::this_thread::sleep_until(next);  // the load's pace, not a wait for a condition
    }
  }

  std::vector<const TestNode*> entries_;
  std::vector<CheckRequest> keys_;
  milliseconds pace_;
  ClientOptions options_;
  SteadyClock::time_point epoch_ = SteadyClock::now();
  std::vector<std::vector<RequestRecord>> logs_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> sent_{0};
  std::atomic<uint64_t> errors_{0};
  std::unique_ptr<std::atomic<uint64_t>[]> per_key_admitted_;
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_CLUSTER_REQUEST_LOG_H_

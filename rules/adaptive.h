// The controller of one load-adaptive limit (docs/DESIGN.md, "Load-adaptive
// limits"): it takes the backend signal clients report for a rule and, once
// per control interval, moves the rule's limit by an AIMD law between the
// rule's min and max. Pure and deterministic: time comes in as `now_ms`, no
// clock, thread, lock or I/O; memory is constant (a running sum, count and
// max per interval, never a list of samples), so any number of reports costs
// nothing more than their count.
//
// Members run these controllers in daemon/core/adaptive_host.h.
#ifndef TALLY_RULES_ADAPTIVE_H_
#define TALLY_RULES_ADAPTIVE_H_

#include <cstdint>

#include "rules/rules.h"

namespace tally::rules {

// A single report's latency above this (one day) is refused as garbage: it
// bounds the interval's sum and no real reply takes that long.
inline constexpr double kMaxAdaptiveReportLatencyMs = 86400000;
// The control interval's range: at least 10 ms, at most one hour.
inline constexpr uint64_t kMinAdaptiveIntervalMs = 10;
inline constexpr uint64_t kMaxAdaptiveIntervalMs = 3600000;

struct AdaptiveConfig {
  uint32_t min_limit = 1;  // >= 1
  uint32_t max_limit = 1;  // >= min_limit
  AdaptiveSignal signal = AdaptiveSignal::kLatencyMs;
  double target = 0;  // as AdaptiveSpec::target
  // The limit is per this window (the rule's unit); used to tell how much of
  // the limit an interval could admit.
  uint64_t window_ms = 1000;
  uint64_t interval_ms = 1000;  // one law step per interval
  // Added when the signal is good and the limit was in use; 0 means
  // DefaultIncreaseStep(max_limit).
  uint32_t increase_step = 0;
  // The limit is multiplied by this when the signal is bad; in [0.5, 1), as
  // Netflix's concurrency-limits bounds its backoff ratio.
  double decrease_factor = 0.9;
  // Reports (requests) an interval needs before its signal moves the limit
  // (fewer are noise); lowered when the limit itself admits fewer than twice
  // this per interval (see AdaptiveLimit::Tick).
  uint32_t min_samples = 20;

  // Whether every field is in its range (the constructor clamps otherwise).
  bool Valid() const;
  friend bool operator==(const AdaptiveConfig&, const AdaptiveConfig&) = default;
};

// max(1, ceil(max_limit / 100)): the limit crosses [min, max] in at most 100
// good intervals, whatever the scale.
uint32_t DefaultIncreaseStep(uint32_t max_limit);

// The config of a rule's adaptive block with the law's defaults.
AdaptiveConfig AdaptiveConfigFor(const AdaptiveSpec& spec, uint64_t window_ms);

class AdaptiveLimit {
 public:
  enum class Step : uint8_t {
    kOpen,       // the interval has not ended: nothing happened
    kNoSamples,  // closed with no report: held (no evidence either way)
    kTooFew,     // closed with fewer reports than it needs: held
    kDecreased,  // signal above target: multiplied by decrease_factor (not below min)
    kIncreased,  // signal at or below target and the limit in use: + increase_step (not above max)
    kIdle,       // signal good but the limit was less than half used: held (no blind growth)
  };
  struct TickResult {
    Step step = Step::kOpen;
    uint32_t limit = 0;    // the limit after the tick
    bool changed = false;  // limit differs from before the tick
    double signal = 0;     // the closed interval's signal (0 without reports)
    double max = 0;        // the largest single report in it
    uint64_t samples = 0;  // requests the closed interval's reports covered
  };
  enum class ReportResult : uint8_t {
    kAccepted,
    kStale,    // now_ms before the open interval began: its interval is closed
    kInvalid,  // not finite, negative, an error rate above 1, a latency above a day, or count 0
  };

  // Starts at `start_limit` (clamped into [min, max]) with an interval
  // opening at `now_ms`. An invalid config is clamped into range field by
  // field, so a controller is always well defined.
  AdaptiveLimit(const AdaptiveConfig& config, uint32_t start_limit, uint64_t now_ms);

  // Adds `count` requests whose signal averaged `value` (latency: their mean
  // latency in ms; error rate: their errors / count) to the open interval.
  // `count` must be every request the value covers, not a sample of them:
  // the law compares it with the limit.
  ReportResult Report(double value, uint32_t count, uint64_t now_ms);

  // Closes the open interval if it has lasted interval_ms (now_ms >= its
  // start + interval_ms), applies the law once and opens the next interval at
  // now_ms; else returns kOpen. Calling it late or rarely never replays
  // missed intervals: one step per closed interval.
  TickResult Tick(uint64_t now_ms);

  uint32_t limit() const { return limit_; }
  const AdaptiveConfig& config() const { return config_; }
  uint64_t interval_start_ms() const { return interval_start_ms_; }

 private:
  AdaptiveConfig config_;
  uint32_t limit_;
  uint64_t interval_start_ms_;
  double sum_ = 0;  // of value x count
  double max_ = 0;
  uint64_t samples_ = 0;
};

}  // namespace tally::rules

#endif  // TALLY_RULES_ADAPTIVE_H_

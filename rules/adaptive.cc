// The AIMD law of rules/adaptive.h; its parameters and why are in
// docs/DESIGN.md, "Load-adaptive limits".
#include "rules/adaptive.h"

#include <algorithm>
#include <cmath>

namespace tally::rules {
namespace {

bool KnownSignal(AdaptiveSignal signal) {
  return signal == AdaptiveSignal::kLatencyMs || signal == AdaptiveSignal::kErrorRate;
}

bool TargetInRange(AdaptiveSignal signal, double target) {
  if (signal == AdaptiveSignal::kErrorRate) return target > 0 && target < 1;
  return target > 0 && target <= kMaxAdaptiveLatencyTargetMs;
}

// `value` into [lo, hi]; NaN goes to `nan_to`.
double ClampDouble(double value, double lo, double hi, double nan_to) {
  if (std::isnan(value)) return nan_to;
  return std::min(std::max(value, lo), hi);
}

AdaptiveConfig Clamped(AdaptiveConfig c) {
  c.min_limit = std::max<uint32_t>(c.min_limit, 1);
  c.max_limit = std::max(c.max_limit, c.min_limit);
  if (!KnownSignal(c.signal)) c.signal = AdaptiveSignal::kLatencyMs;
  // An unusable target goes to its strictest end: the limit then only falls,
  // to min, which is what the operator allowed as the floor.
  if (!TargetInRange(c.signal, c.target)) {
    c.target = c.signal == AdaptiveSignal::kErrorRate
                   ? ClampDouble(c.target, 1e-6, 1 - 1e-6, 1e-6)
                   : ClampDouble(c.target, 1e-3, kMaxAdaptiveLatencyTargetMs, 1e-3);
  }
  c.window_ms = std::max<uint64_t>(c.window_ms, 1);
  c.interval_ms = std::clamp(c.interval_ms, kMinAdaptiveIntervalMs, kMaxAdaptiveIntervalMs);
  if (c.increase_step == 0) c.increase_step = DefaultIncreaseStep(c.max_limit);
  if (!(c.decrease_factor >= 0.5 && c.decrease_factor < 1)) {
    c.decrease_factor = ClampDouble(c.decrease_factor, 0.5, 0.99, 0.9);
  }
  c.min_samples = std::max<uint32_t>(c.min_samples, 1);
  return c;
}

}  // namespace

bool AdaptiveConfig::Valid() const {
  return min_limit >= 1 && max_limit >= min_limit && KnownSignal(signal) &&
         TargetInRange(signal, target) && window_ms >= 1 && interval_ms >= kMinAdaptiveIntervalMs &&
         interval_ms <= kMaxAdaptiveIntervalMs && decrease_factor >= 0.5 && decrease_factor < 1 &&
         min_samples >= 1;
}

uint32_t DefaultIncreaseStep(uint32_t max_limit) {
  return std::max<uint32_t>(1, max_limit / 100 + (max_limit % 100 != 0 ? 1 : 0));
}

AdaptiveConfig AdaptiveConfigFor(const AdaptiveSpec& spec, uint64_t window_ms) {
  AdaptiveConfig c;
  c.min_limit = spec.min;
  c.max_limit = spec.max;
  c.signal = spec.signal;
  c.target = spec.target;
  c.window_ms = window_ms;
  c.increase_step = DefaultIncreaseStep(spec.max);
  return c;
}

AdaptiveLimit::AdaptiveLimit(const AdaptiveConfig& config, uint32_t start_limit, uint64_t now_ms)
    : config_(Clamped(config)),
      limit_(std::clamp(start_limit, config_.min_limit, config_.max_limit)),
      interval_start_ms_(now_ms) {}

AdaptiveLimit::ReportResult AdaptiveLimit::Report(double value, uint32_t count, uint64_t now_ms) {
  const double most =
      config_.signal == AdaptiveSignal::kErrorRate ? 1.0 : kMaxAdaptiveReportLatencyMs;
  // The negated test also refuses NaN.
  if (count == 0 || !(value >= 0 && value <= most)) return ReportResult::kInvalid;
  if (now_ms < interval_start_ms_) return ReportResult::kStale;
  // One report adds at most 2^32 x 8.64e7 ~ 3.7e17: the sum stays finite
  // for any number of reports an interval can see.
  sum_ += value * static_cast<double>(count);
  max_ = std::max(max_, value);
  samples_ += count;
  return ReportResult::kAccepted;
}

AdaptiveLimit::TickResult AdaptiveLimit::Tick(uint64_t now_ms) {
  TickResult r;
  r.limit = limit_;
  if (now_ms < interval_start_ms_ || now_ms - interval_start_ms_ < config_.interval_ms) return r;
  r.samples = samples_;
  r.max = max_;
  r.signal = samples_ > 0 ? sum_ / static_cast<double>(samples_) : 0;
  sum_ = 0;
  max_ = 0;
  samples_ = 0;
  interval_start_ms_ = now_ms;

  // What the current limit lets through in one interval (the limit is per
  // window; an interval may be shorter or longer).
  const double capacity = static_cast<double>(limit_) * static_cast<double>(config_.interval_ms) /
                          static_cast<double>(config_.window_ms);
  // Enough reports to trust the mean: min_samples, unless the limit itself
  // admits fewer than twice that, so that at a small limit the controller
  // still sees enough to move (else it could never leave min).
  const double needed =
      std::max(1.0, std::min(static_cast<double>(config_.min_samples), std::ceil(capacity / 2)));
  const double samples = static_cast<double>(r.samples);
  if (r.samples == 0) {
    r.step = Step::kNoSamples;
  } else if (samples < needed) {
    r.step = Step::kTooFew;
  } else if (r.signal > config_.target) {
    // floor(limit x factor) < limit for every limit >= 1, so it always moves
    // until min.
    const double cut = std::floor(static_cast<double>(limit_) * config_.decrease_factor);
    limit_ = std::max(config_.min_limit, static_cast<uint32_t>(cut));
    r.step = Step::kDecreased;
  } else if (samples * 2 >= capacity) {
    // Grow only while the limit is in use (at least half of it admitted), as
    // concurrency-limits' AIMD grows only when inflight x 2 >= limit: a limit
    // nobody reaches says nothing about the backend at a higher rate.
    const uint64_t grown = static_cast<uint64_t>(limit_) + config_.increase_step;
    limit_ = static_cast<uint32_t>(std::min<uint64_t>(grown, config_.max_limit));
    r.step = Step::kIncreased;
  } else {
    r.step = Step::kIdle;
  }
  r.changed = limit_ != r.limit;
  r.limit = limit_;
  return r;
}

}  // namespace tally::rules

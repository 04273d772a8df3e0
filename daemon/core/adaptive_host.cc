#include "daemon/core/adaptive_host.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>

namespace tally::core {
namespace {

// The largest value one report (or a sum's mean and max) may carry for the
// signal: an error rate is at most 1, a latency at most a day.
double MostOf(rules::AdaptiveSignal signal) {
  return signal == rules::AdaptiveSignal::kErrorRate ? 1.0 : rules::kMaxAdaptiveReportLatencyMs;
}

bool InRange(double v, double most) { return v >= 0 && v <= most; }  // false for NaN

bool Less(const AdaptiveRuleConfig& a, std::string_view domain, std::string_view rule) {
  return std::pair<std::string_view, std::string_view>(a.domain, a.rule) <
         std::pair<std::string_view, std::string_view>(domain, rule);
}

}  // namespace

std::vector<AdaptiveRuleConfig> AdaptiveRuleConfigsOf(const rules::RuleSet& rules) {
  std::vector<AdaptiveRuleConfig> out;
  for (const rules::RuleSet::AdaptiveRule& r : rules.adaptive_rules()) {
    AdaptiveRuleConfig c;
    c.domain = std::string(r.domain);
    c.rule = std::string(r.name);
    c.config = rules::AdaptiveConfigFor(r.spec, r.window_ms);
    c.start = r.start;
    out.push_back(std::move(c));
  }
  return out;
}

void AdaptiveSum::Add(const AdaptiveSum& other) {
  sum += other.sum;
  count += other.count;
  max = std::max(max, other.max);
}

void AdaptiveHost::SetRules(std::vector<AdaptiveRuleConfig> rules) {
  std::sort(rules.begin(), rules.end(), [](const auto& a, const auto& b) {
    return std::tie(a.domain, a.rule) < std::tie(b.domain, b.rule);
  });
  rules.erase(std::unique(rules.begin(), rules.end(),
                          [](const auto& a, const auto& b) {
                            return a.domain == b.domain && a.rule == b.rule;
                          }),
              rules.end());
  if (rules.size() > rules::kMaxAdaptiveLimits) rules.resize(rules::kMaxAdaptiveLimits);
  std::vector<Rule> next;
  next.reserve(rules.size());
  for (AdaptiveRuleConfig& c : rules) {
    Rule r;
    const std::optional<size_t> old = Find(c.domain, c.rule);
    if (old.has_value() && rules_[*old].config == c) r = std::move(rules_[*old]);
    r.config = std::move(c);
    next.push_back(std::move(r));
  }
  rules_ = std::move(next);
}

std::optional<size_t> AdaptiveHost::Find(std::string_view domain, std::string_view rule) const {
  const auto it = std::lower_bound(
      rules_.begin(), rules_.end(), std::pair(domain, rule),
      [](const Rule& r, const auto& key) { return Less(r.config, key.first, key.second); });
  if (it == rules_.end() || it->config.domain != domain || it->config.rule != rule) {
    return std::nullopt;
  }
  return static_cast<size_t>(it - rules_.begin());
}

AdaptiveHost::ReportResult AdaptiveHost::Report(std::string_view domain, std::string_view rule,
                                                double value, uint64_t count) {
  // value x count: finite for any count a uint64 holds when value is in
  // range (at most 8.64e7 x 1.8e19).
  return Add(domain, rule, AdaptiveSum{value * static_cast<double>(count), count, value});
}

AdaptiveHost::ReportResult AdaptiveHost::Absorb(std::string_view domain, std::string_view rule,
                                                const AdaptiveSum& sum) {
  return Add(domain, rule, sum);
}

AdaptiveHost::ReportResult AdaptiveHost::Add(std::string_view domain, std::string_view rule,
                                             const AdaptiveSum& sum) {
  const std::optional<size_t> i = Find(domain, rule);
  if (!i.has_value()) {
    ++counters_.reports_unknown;
    return ReportResult::kUnknownRule;
  }
  Rule& r = rules_[*i];
  const double most = MostOf(r.config.config.signal);
  // A sum's mean and its max must both be what one report could carry; the
  // max at least the mean. Caps the pending count so that it fits the
  // controller's 32-bit count per step.
  if (sum.count == 0 || sum.count > std::numeric_limits<uint32_t>::max() ||
      !std::isfinite(sum.sum) || !InRange(sum.sum / static_cast<double>(sum.count), most) ||
      !InRange(sum.max, most) || sum.max < sum.sum / static_cast<double>(sum.count) * (1 - 1e-9)) {
    ++counters_.reports_invalid;
    return ReportResult::kInvalid;
  }
  if (r.pending.count + sum.count > std::numeric_limits<uint32_t>::max()) {
    // More than 4e9 requests reported within one step: keep what we have
    // (the mean of those is evidence enough).
    ++counters_.reports_invalid;
    return ReportResult::kInvalid;
  }
  r.pending.Add(sum);
  ++counters_.reports_accepted;
  return ReportResult::kAccepted;
}

AdaptiveSum AdaptiveHost::TakePending(size_t i) {
  Rule& r = rules_[i];
  r.controller.reset();
  AdaptiveSum out = r.pending;
  r.pending = AdaptiveSum{};
  return out;
}

AdaptiveHost::OwnedStep AdaptiveHost::StepOwned(size_t i, std::optional<uint32_t> published,
                                                bool published_by_other, uint64_t now_ms) {
  Rule& r = rules_[i];
  OwnedStep step;
  if (!r.controller.has_value()) {
    // A new owner carries on from the limit in force, not from the start.
    r.controller.emplace(r.config.config, published.value_or(r.config.start), now_ms);
    step.started = true;
  } else if (published_by_other && published.has_value() && *published != r.controller->limit()) {
    // Another member's write won the map (both sides of a partition owned
    // the rule): follow it instead of fighting it, with a fresh interval.
    r.controller.emplace(r.config.config, *published, now_ms);
    step.adopted = true;
    ++counters_.adoptions;
  }
  if (r.pending.count > 0) {
    const double mean = r.pending.sum / static_cast<double>(r.pending.count);
    // Add checked the range and the 32-bit count; a report dated before the
    // controller's interval (it was just created) is still taken: it is
    // the newest evidence there is.
    r.controller->Report(mean, static_cast<uint32_t>(r.pending.count),
                         std::max(now_ms, r.controller->interval_start_ms()));
    r.pending = AdaptiveSum{};
  }
  step.tick = r.controller->Tick(now_ms);
  const uint32_t limit =
      step.tick.step == rules::AdaptiveLimit::Step::kOpen ? r.controller->limit() : step.tick.limit;
  if (published.value_or(r.config.start) != limit) step.publish = limit;
  switch (step.tick.step) {
    case rules::AdaptiveLimit::Step::kOpen:
      break;
    case rules::AdaptiveLimit::Step::kDecreased:
      ++counters_.steps_decreased;
      break;
    case rules::AdaptiveLimit::Step::kIncreased:
      ++counters_.steps_increased;
      break;
    default:
      ++counters_.steps_held;
      break;
  }
  return step;
}

std::optional<uint32_t> AdaptiveHost::ControllerLimit(size_t i) const {
  const Rule& r = rules_[i];
  if (!r.controller.has_value()) return std::nullopt;
  return r.controller->limit();
}

}  // namespace tally::core

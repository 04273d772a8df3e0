// AdaptiveHost: one member's side of the load-adaptive limits
// (docs/DESIGN.md, "Load-adaptive limits"). It holds the adaptive rules in
// force here, sums the signal reports that reach this member per rule, and
// runs the controllers (rules/adaptive.h) of the rules this member owns.
//
// Who owns a rule, where unowned sums go and how a changed limit is
// published is the caller's: the Node (owner by rendezvous over its view,
// sums forwarded as `adaptiveReports`, limits written into the override
// map), or a single node, which owns every rule. Pure and sans-IO: time comes
// in, nothing is read, sent or started here. Not thread-safe.
//
// Bounds: at most rules::kMaxAdaptiveLimits rules; per rule a pending sum
// (sum, count, max) and at most one controller, whatever the number of
// reports.
#ifndef TALLY_DAEMON_CORE_ADAPTIVE_HOST_H_
#define TALLY_DAEMON_CORE_ADAPTIVE_HOST_H_

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "rules/adaptive.h"

namespace tally::core {

// One adaptive limit of the rules in force: its identity (domain, the
// limit's name), its law and the limit it starts from without a published one.
struct AdaptiveRuleConfig {
  std::string domain;
  std::string rule;
  rules::AdaptiveConfig config;
  uint32_t start = 1;  // requests_per_unit
  friend bool operator==(const AdaptiveRuleConfig&, const AdaptiveRuleConfig&) = default;
};

// The configs of a rule set's adaptive limits, in its (domain, name) order.
std::vector<AdaptiveRuleConfig> AdaptiveRuleConfigsOf(const rules::RuleSet& rules);

// Reports summed: `count` requests whose signal adds up to `sum`.
struct AdaptiveSum {
  double sum = 0;
  uint64_t count = 0;
  double max = 0;
  void Add(const AdaptiveSum& other);
};

class AdaptiveHost {
 public:
  enum class ReportResult : uint8_t {
    kAccepted,
    kUnknownRule,  // no adaptive limit of that (domain, name) in the rules here
    kInvalid,      // not finite, negative, an error rate above 1, a latency above a day, count 0
  };

  // What a step of an owned rule did.
  struct OwnedStep {
    rules::AdaptiveLimit::TickResult tick;
    bool adopted = false;  // the controller restarted from a limit another member published
    bool started = false;  // the controller was created at this step
    // The limit to write into the override map, or nullopt when the limit in
    // force (the published one, else the rule's start) already is the
    // controller's: a law step that moved it, or a controller that found
    // nothing published and started past the start, publishes.
    std::optional<uint32_t> publish;
  };

  // Replaces the rules. A rule whose config is unchanged keeps its
  // controller and pending sum; the others start over (a changed law must
  // not run on with the old one's state). At most rules::kMaxAdaptiveLimits
  // (the parser's bound); more are ignored.
  void SetRules(std::vector<AdaptiveRuleConfig> rules);

  size_t rule_count() const { return rules_.size(); }
  const AdaptiveRuleConfig& rule(size_t i) const { return rules_[i].config; }
  // The rule's index, or nullopt.
  std::optional<size_t> Find(std::string_view domain, std::string_view rule) const;

  // A client's report: `count` requests whose signal averaged `value`
  // (latency: mean ms; error rate: errors / count), added to the rule's
  // pending sum.
  ReportResult Report(std::string_view domain, std::string_view rule, double value,
                      uint64_t count);
  // A member's summed reports (an `adaptiveReports` entry), checked the same
  // way (its mean and max against the signal's range).
  ReportResult Absorb(std::string_view domain, std::string_view rule, const AdaptiveSum& sum);

  // The rule's pending sum, taken (cleared): what a member that does not own
  // the rule sends to its owner. Also drops the rule's controller, which
  // only an owner keeps. Count 0: nothing to send.
  AdaptiveSum TakePending(size_t i);

  // One step of a rule this member owns at `now_ms`: the controller (created
  // at `published` when there is one, else at the rule's start; restarted at
  // `published` when `published_by_other` says another member wrote the map's
  // entry since our last write, as after a partition healed) takes the
  // pending sum and ticks (rules::AdaptiveLimit::Tick: at most one law step
  // per control interval).
  OwnedStep StepOwned(size_t i, std::optional<uint32_t> published, bool published_by_other,
                      uint64_t now_ms);

  // The rule's controller's limit, or nullopt when this member runs none.
  std::optional<uint32_t> ControllerLimit(size_t i) const;

  struct Counters {
    uint64_t reports_accepted = 0;  // client reports and member sums taken
    uint64_t reports_unknown = 0;
    uint64_t reports_invalid = 0;
    uint64_t steps_decreased = 0, steps_increased = 0, steps_held = 0;
    uint64_t adoptions = 0;
  };
  const Counters& counters() const { return counters_; }

 private:
  struct Rule {
    AdaptiveRuleConfig config;
    AdaptiveSum pending;
    std::optional<rules::AdaptiveLimit> controller;
  };
  ReportResult Add(std::string_view domain, std::string_view rule, const AdaptiveSum& sum);

  std::vector<Rule> rules_;  // sorted by (domain, rule)
  Counters counters_;
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_ADAPTIVE_HOST_H_

#include "daemon/io/local_adaptive.h"

#include <algorithm>
#include <optional>

#include <spdlog/spdlog.h>

#include "daemon/io/limit_door.h"

namespace tally::io {

void LocalAdaptive::SetRules(std::vector<core::AdaptiveRuleConfig> rules) {
  std::lock_guard<std::mutex> lock(mu_);
  host_.SetRules(std::move(rules));
}

core::AdaptiveHost::ReportResult LocalAdaptive::Report(std::string_view domain,
                                                       std::string_view rule, double value,
                                                       uint64_t count) {
  std::lock_guard<std::mutex> lock(mu_);
  return host_.Report(domain, rule, value, count);
}

bool LocalAdaptive::empty() const {
  std::lock_guard<std::mutex> lock(mu_);
  return host_.rule_count() == 0;
}

void LocalAdaptive::Step(Instant now) {
  const uint64_t now_ms = static_cast<uint64_t>(now.monotonic.count() / 1'000'000);
  struct Write {
    crdt::Selector selector;
    crdt::OverrideValue value;
  };
  std::vector<Write> writes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = 0; i < host_.rule_count(); ++i) {
      const core::AdaptiveRuleConfig& r = host_.rule(i);
      std::optional<uint32_t> published;
      overrides_->ReadLocked([&](const crdt::LimitOverrides& map) {
        const std::optional<crdt::OverrideValue> v =
            map.FindKey(crdt::Selector::AdaptiveKey(r.domain, r.rule));
        if (v.has_value()) published = static_cast<uint32_t>(std::min<uint64_t>(v->limit, UINT32_MAX));
      });
      // The only owner there is: nobody else writes the map's entry.
      const core::AdaptiveHost::OwnedStep step = host_.StepOwned(i, published, false, now_ms);
      if (!step.publish.has_value()) continue;
      Write w;
      w.selector.kind = crdt::Selector::Kind::kAdaptive;
      w.selector.domain = r.domain;
      w.selector.rule = r.rule;
      w.value.limit = *step.publish;
      w.value.window_ms = r.config.window_ms;
      writes.push_back(std::move(w));
    }
  }
  // Outside mu_ (LocalOverrides takes its own locks), and saved once per
  // batch: at most one file rewrite per step, not one per rule.
  size_t applied = 0;
  for (const Write& w : writes) {
    if (overrides_->Write(w.selector, w.value, now.wall.count(), /*persist=*/false) ==
        crdt::LimitOverrides::MergeResult::kApplied) {
      ++applied;
    }
  }
  if (applied == 0) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    limits_written_ += applied;
  }
  std::string error;
  if (!overrides_->Persist(now.wall.count(), &error)) {
    spdlog::warn("adaptive limits applied but not saved (retried at the next change): {}", error);
  }
}

LocalAdaptive::Counters LocalAdaptive::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return Counters{host_.counters(), limits_written_};
}

}  // namespace tally::io

#include "daemon/rls/rule_counters.h"

namespace tally::rls {

std::shared_ptr<const RuleCounters::Table> RuleCounters::TableFor(const rules::RuleSet& rules) {
  auto table = std::make_shared<Table>();
  table->reserve(rules.rule_limits().size());
  std::lock_guard<std::mutex> lock(mu_);
  for (const rules::RuleSet::RuleLimitName& limit : rules.rule_limits()) {
    auto key = std::make_pair(std::string(limit.rule_path), std::string(limit.name));
    auto it = by_name_.find(key);
    if (it == by_name_.end()) it = by_name_.emplace(std::move(key), &cells_.emplace_back()).first;
    table->push_back(it->second);
  }
  return table;
}

std::vector<RuleCounters::Totals> RuleCounters::Snapshot(int64_t period) const {
  std::vector<Totals> out;
  std::lock_guard<std::mutex> lock(mu_);
  out.reserve(by_name_.size());
  for (const auto& [key, cell] : by_name_) {
    // Cells nothing has counted in yet are left out, as before any call.
    const uint64_t hits = cell->hits.load(std::memory_order_relaxed);
    if (hits == 0) continue;
    Totals t{key.first, key.second, hits, cell->over_limit.load(std::memory_order_relaxed),
             cell->near_limit.load(std::memory_order_relaxed),
             cell->shadow_mode.load(std::memory_order_relaxed)};
    t.limit = cell->limit.load(std::memory_order_relaxed);
    t.window_ms = cell->window_ms.load(std::memory_order_relaxed);
    uint32_t peak = 0;
    for (int slot = 0; slot < 2 && period >= 0; ++slot) {
      const int64_t held = cell->peak_period[slot].load(std::memory_order_relaxed);
      if (held == period || held == period - 1) {
        peak = std::max(peak, cell->peak_permille[slot].load(std::memory_order_relaxed));
      }
    }
    t.peak_used = peak / 1000.0;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace tally::rls

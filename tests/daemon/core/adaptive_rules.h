// The adaptive rule the core's tests use: latency target 50 ms, limit in
// [10, 1000] starting at 500 per 1 s window, +10 per good second.
#ifndef TALLY_TESTS_DAEMON_CORE_ADAPTIVE_RULES_H_
#define TALLY_TESTS_DAEMON_CORE_ADAPTIVE_RULES_H_

#include <string>
#include <utility>

#include "daemon/core/adaptive_host.h"

namespace tally::core::testing {

inline AdaptiveRuleConfig LatencyRule(std::string domain = "api", std::string name = "backend",
                                      uint32_t start = 500) {
  AdaptiveRuleConfig r;
  r.domain = std::move(domain);
  r.rule = std::move(name);
  r.config.min_limit = 10;
  r.config.max_limit = 1000;
  r.config.signal = rules::AdaptiveSignal::kLatencyMs;
  r.config.target = 50;
  r.config.window_ms = 1000;
  r.config.interval_ms = 1000;
  r.config.increase_step = 10;
  r.start = start;
  return r;
}

}  // namespace tally::core::testing

#endif  // TALLY_TESTS_DAEMON_CORE_ADAPTIVE_RULES_H_

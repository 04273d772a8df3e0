// LocalAdaptive: load-adaptive limits in a single-node daemon (no Node):
// this node owns every adaptive rule, steps their controllers on a timer and
// writes a changed limit into its LocalOverrides, where the rules doors read
// it as a cluster member reads the one its rule's owner published
// (docs/DESIGN.md, "Load-adaptive limits"). Thread-safe.
#ifndef TALLY_DAEMON_IO_LOCAL_ADAPTIVE_H_
#define TALLY_DAEMON_IO_LOCAL_ADAPTIVE_H_

#include <cstdint>
#include <mutex>
#include <string_view>
#include <vector>

#include "daemon/core/adaptive_host.h"
#include "tally/types.h"

namespace tally::io {

class LocalOverrides;

class LocalAdaptive {
 public:
  // `overrides` outlives this object.
  explicit LocalAdaptive(LocalOverrides* overrides) : overrides_(overrides) {}

  void SetRules(std::vector<core::AdaptiveRuleConfig> rules);
  core::AdaptiveHost::ReportResult Report(std::string_view domain, std::string_view rule,
                                          double value, uint64_t count);
  // Steps every rule's controller at `now` and writes the limits that
  // changed. Call about every core::NodeConfig::adaptive_flush_interval_ms.
  void Step(Instant now);
  bool empty() const;

  struct Counters {
    core::AdaptiveHost::Counters host;
    uint64_t limits_written = 0;
  };
  Counters counters() const;

 private:
  LocalOverrides* const overrides_;
  mutable std::mutex mu_;
  core::AdaptiveHost host_;
  uint64_t limits_written_ = 0;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_LOCAL_ADAPTIVE_H_

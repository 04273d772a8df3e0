// GET /metrics: the Prometheus text exposition format, version 0.0.4
// (Content-Type kMetricsContentType), produced in this one place from
// snapshots taken by the caller: the status report (the same call, and the
// same hold of the Node's lock, as `tally status`), the doors' atomics, the
// rules' counters and /proc/self. Rendering takes no lock.
//
// Names follow Prometheus conventions: a tally_ prefix (process_* as client
// libraries name them), _total on counters, base units (seconds, bytes).
// docs/OPERATIONS.md lists them with what to alert on.
#ifndef TALLY_DAEMON_IO_METRICS_TEXT_H_
#define TALLY_DAEMON_IO_METRICS_TEXT_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "daemon/io/door_metrics.h"
#include "daemon/io/process_stats.h"
#include "wire/codec.h"

namespace tally::io {

inline constexpr std::string_view kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

using Label = std::pair<std::string_view, std::string_view>;

// Writes metric families in the text format. Each family is announced once
// (Family) before its samples. Label values and help texts are escaped as
// the format asks (\\, \" and \n in label values; \\ and \n in help).
// Not thread-safe.
class MetricsWriter {
 public:
  // type: "counter", "gauge" or "histogram".
  void Family(std::string_view name, std::string_view type, std::string_view help);
  void Sample(std::string_view name, std::span<const Label> labels, double value);
  void Sample(std::string_view name, std::span<const Label> labels, uint64_t value);
  void Sample(std::string_view name, double value) { Sample(name, {}, value); }
  void Sample(std::string_view name, uint64_t value) { Sample(name, {}, value); }
  // name_bucket{...,le="B"} (cumulative, then le="+Inf"), name_sum (seconds)
  // and name_count from a non-cumulative snapshot with kLatencyBoundsNs.
  void Histogram(std::string_view name, std::span<const Label> labels,
                 const HistogramSnapshot& histogram);

  const std::string& text() const { return out_; }
  std::string Take() { return std::move(out_); }

  static std::string EscapeLabelValue(std::string_view value);
  static std::string EscapeHelp(std::string_view help);
  // Shortest exact text of a value; NaN, +Inf, -Inf as the format spells them.
  static std::string FormatValue(double value);

 private:
  void Line(std::string_view name, std::span<const Label> labels, std::string_view value);
  std::string out_;
};

// Counters of one rule limit (envoyproxy/ratelimit's per-rule stats), in hits.
struct RuleMetrics {
  std::string rule;  // the rule's stats key: DOMAIN.KEY_VALUE...
  std::string name;  // the limit's `name` ("" if none)
  uint64_t hits = 0, over_limit = 0, near_limit = 0, shadow_mode = 0;
};

// An adaptive rule's limit in force here (docs/DESIGN.md, "Load-adaptive
// limits"): the one its controller published, else requests_per_unit.
struct AdaptiveLimitMetric {
  std::string domain;
  std::string name;
  uint64_t limit = 0;
};

struct RulesMetrics {
  uint64_t reloads = 0, reload_failures = 0;
  bool last_reload_ok = true;
  std::vector<RuleMetrics> rules;
  std::vector<AdaptiveLimitMetric> adaptive;
};

struct MetricsInput {
  wire::StatusReport status;
  DoorMetricsSnapshot doors;
  uint64_t key_capacity = 0;
  std::optional<ProcessStats> process;
  std::optional<RulesMetrics> rules;  // when --rules or an RLS door is on
  // Rebuilds of the gRPC server after its listener stopped accepting
  // (daemon/rls/grpc_listener_probe.h); when the gRPC door is on.
  std::optional<uint64_t> grpc_listener_restarts;
};

std::string RenderMetrics(const MetricsInput& input);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_METRICS_TEXT_H_

// The status page of the HTTP door (daemon/rls/http_routes.h):
//
//   GET /             StatusPageHtml(): one self-contained page (HTML, CSS and
//                     JS embedded in the binary at build time from
//                     daemon/rls/status_page.html; no external scripts, fonts
//                     or styles) that polls /status.json every two seconds
//                     and draws what it says, the rate chart as inline SVG.
//   GET /status.json  RenderStatusJson(): what the page shows, as JSON.
//
// The JSON is rendered from a snapshot the caller takes (RlsServer::StatusJson:
// the status report, one hold of the Node's lock as for `tally status`; the
// trackers of daemon/io/status_trackers.h; the rules' counters), so rendering
// takes no lock and reads no clock.
//
// Fields (a missing number is null: e.g. a peer's RTT before the first probe):
//   node       id, generation, cluster, owning, not_owning_reason, key_share,
//              live_keys, key_capacity, uptime_ms, partition_policy,
//              gossip_address, cluster_name, peer_auth, rules_digest,
//              rules_error, members_truncated, rules_differ (ids of the
//              members whose rules differ: wire::MembersWithOtherRules)
//   now_ms     wall clock of the snapshot, ms since the epoch
//   members    [{id, state, incarnation, generation, address,
//                clock_offset_ms, rtt_ms, rules_digest ("" not heard yet,
//                "none" no rules doors), rules_differ, self}]
//   rates      {samples: [[end_ms, duration_ms, checks, denied], ...] oldest
//              first, checks_per_s_10s, denied_per_s_10s, checks_per_s_1m,
//              denied_per_s_1m}: decisions answered at this node's doors
//   totals     decisions answered at this node's doors since start, by
//              decision (allowed, denied, shadow, invalid, ...) and "all"
//   busiest_keys  {sample_period, keys: [{user_id, endpoint, window_ms, limit,
//              checks_per_s, hits_per_s}]}: estimates from sampled checks
//   rules      the rule limits nearest their limits, nearest first (at most
//              kMaxShownRules): [{rule, name, limit, window_ms, peak_used,
//              hits, over_limit, near_limit, shadow_mode}], peak_used the
//              highest share of the limit one key used in the last one to two
//              minutes (1: at or over the limit)
//   events     recent membership events, newest first: [{time_ms, member,
//              what (joined|state|restarted|forgotten), from, to,
//              incarnation, generation}]
#ifndef TALLY_DAEMON_RLS_STATUS_PAGE_H_
#define TALLY_DAEMON_RLS_STATUS_PAGE_H_

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "daemon/io/door_metrics.h"
#include "daemon/io/status_trackers.h"
#include "wire/codec.h"

namespace tally::rls {

inline constexpr size_t kMaxShownRules = 10;
inline constexpr size_t kMaxShownKeys = 10;

// One rule limit's use (RlsServer's per-rule counters).
struct RuleUse {
  std::string rule;        // the rule's stats key: DOMAIN.KEY_VALUE...
  std::string name;        // the limit's `name` ("" if none)
  uint64_t limit = 0;      // hits per window, as last applied
  uint64_t window_ms = 0;  // the window last applied
  double peak_used = 0;    // 0..1, see above
  uint64_t hits = 0, over_limit = 0, near_limit = 0, shadow_mode = 0;
};

struct StatusPageInput {
  wire::StatusReport status;
  uint64_t key_capacity = 0;
  int64_t now_wall_ms = 0;
  io::DoorMetricsSnapshot doors;
  std::vector<io::RateSample> rates;  // oldest first
  std::vector<io::KeyRate> busiest_keys;
  uint32_t key_sample_period = 0;
  std::vector<RuleUse> rules;               // any order
  std::vector<io::MembershipEvent> events;  // newest first
};

std::string RenderStatusJson(const StatusPageInput& input);

// Checks (or denials) per second over the newest samples covering at least
// `span_ms` (all of them if they cover less); 0 without samples.
double RatePerSecond(const std::vector<io::RateSample>& samples, int64_t span_ms, bool denied);

// The page (text/html; charset=utf-8).
std::string_view StatusPageHtml();

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_STATUS_PAGE_H_

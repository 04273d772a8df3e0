#include "daemon/rls/status_page.h"

#include <algorithm>
#include <boost/json.hpp>
#include <cmath>

#include "status_page_html.h"  // generated from status_page.html (CMakeLists.txt)

namespace tally::rls {
namespace {

namespace json = boost::json;

// NaN and infinities (unknown) as null; other numbers rounded to 1e-3, which
// is all a page shows.
json::value Number(double value) {
  if (!std::isfinite(value)) return nullptr;
  return std::round(value * 1000.0) / 1000.0;
}

json::object Node(const StatusPageInput& in) {
  const wire::StatusReport& s = in.status;
  json::object node;
  node["id"] = s.node_id;
  node["generation"] = s.generation;
  node["cluster"] = s.cluster;
  node["owning"] = s.owning;
  node["not_owning_reason"] = s.not_owning_reason;
  node["key_share"] = Number(s.key_share);
  node["live_keys"] = s.live_keys;
  node["key_capacity"] = in.key_capacity;
  node["uptime_ms"] = s.uptime_ms;
  node["partition_policy"] = s.partition_policy;
  node["gossip_address"] = s.gossip_address;
  node["cluster_name"] = s.cluster_name;
  node["peer_auth"] = s.peer_auth;
  node["rules_digest"] = s.rules_digest;
  node["rules_error"] = s.rules_error;
  json::array differ;
  for (const wire::MemberReport* m : wire::MembersWithOtherRules(s))
    differ.push_back(json::string(m->id));
  node["rules_differ"] = std::move(differ);  // member ids (wire::MembersWithOtherRules)
  node["members_truncated"] = s.members_truncated;
  return node;
}

json::array Members(const wire::StatusReport& s) {
  json::array members;
  const std::vector<const wire::MemberReport*> differ = wire::MembersWithOtherRules(s);
  for (const wire::MemberReport& m : s.members) {
    json::object o;
    o["id"] = m.id;
    o["state"] = m.state;
    o["incarnation"] = m.incarnation;
    o["generation"] = m.generation;
    o["address"] = m.address;
    o["clock_offset_ms"] = Number(m.clock_offset_ms);
    o["rtt_ms"] = Number(m.rtt_ms);
    o["rules_digest"] = m.rules_digest;  // 32 hex digits, "none", or "" (not heard yet)
    o["rules_differ"] = std::find(differ.begin(), differ.end(), &m) != differ.end();
    o["self"] = m.id == s.node_id;
    members.push_back(std::move(o));
  }
  return members;
}

json::object Rates(const std::vector<io::RateSample>& samples) {
  json::array list;
  list.reserve(samples.size());
  for (const io::RateSample& r : samples) {
    list.push_back(json::array{r.end_wall_ms, r.duration_ms, r.checks, r.denied});
  }
  json::object rates;
  rates["samples"] = std::move(list);
  rates["checks_per_s_10s"] = Number(RatePerSecond(samples, 10'000, false));
  rates["denied_per_s_10s"] = Number(RatePerSecond(samples, 10'000, true));
  rates["checks_per_s_1m"] = Number(RatePerSecond(samples, 60'000, false));
  rates["denied_per_s_1m"] = Number(RatePerSecond(samples, 60'000, true));
  return rates;
}

json::object Totals(const io::DoorMetricsSnapshot& doors) {
  json::object totals;
  uint64_t all = 0;
  for (size_t d = 0; d < io::kDecisionCount; ++d) {
    uint64_t n = 0;
    for (const auto& by_decision : doors.checks) n += by_decision[d];
    totals[io::kDecisionNames[d]] = n;
    all += n;
  }
  totals["all"] = all;
  return totals;
}

json::object BusiestKeys(const StatusPageInput& in) {
  json::array keys;
  for (size_t i = 0; i < in.busiest_keys.size() && i < kMaxShownKeys; ++i) {
    const io::KeyRate& k = in.busiest_keys[i];
    json::object o;
    o["user_id"] = k.user_id;
    o["endpoint"] = k.endpoint;
    o["window_ms"] = k.window_ms;
    o["limit"] = k.limit;
    o["checks_per_s"] = Number(k.checks_per_s);
    o["hits_per_s"] = Number(k.hits_per_s);
    keys.push_back(std::move(o));
  }
  json::object out;
  out["sample_period"] = in.key_sample_period;
  out["keys"] = std::move(keys);
  return out;
}

json::array Rules(std::vector<RuleUse> rules) {
  std::stable_sort(rules.begin(), rules.end(), [](const RuleUse& a, const RuleUse& b) {
    if (a.peak_used != b.peak_used) return a.peak_used > b.peak_used;
    return a.hits > b.hits;
  });
  if (rules.size() > kMaxShownRules) rules.resize(kMaxShownRules);
  json::array out;
  for (const RuleUse& r : rules) {
    json::object o;
    o["rule"] = r.rule;
    o["name"] = r.name;
    o["limit"] = r.limit;
    o["window_ms"] = r.window_ms;
    o["peak_used"] = Number(r.peak_used);
    o["hits"] = r.hits;
    o["over_limit"] = r.over_limit;
    o["near_limit"] = r.near_limit;
    o["shadow_mode"] = r.shadow_mode;
    out.push_back(std::move(o));
  }
  return out;
}

json::array Events(const std::vector<io::MembershipEvent>& events) {
  json::array out;
  for (const io::MembershipEvent& e : events) {
    json::object o;
    o["time_ms"] = e.wall_ms;
    o["member"] = e.member;
    o["what"] = e.what;
    o["from"] = e.from_state;
    o["to"] = e.to_state;
    o["incarnation"] = e.incarnation;
    o["generation"] = e.generation;
    out.push_back(std::move(o));
  }
  return out;
}

}  // namespace

double RatePerSecond(const std::vector<io::RateSample>& samples, int64_t span_ms, bool denied) {
  int64_t covered_ms = 0;
  uint64_t count = 0;
  for (auto it = samples.rbegin(); it != samples.rend() && covered_ms < span_ms; ++it) {
    covered_ms += it->duration_ms;
    count += denied ? it->denied : it->checks;
  }
  if (covered_ms <= 0) return 0;
  return static_cast<double>(count) * 1000.0 / static_cast<double>(covered_ms);
}

std::string RenderStatusJson(const StatusPageInput& in) {
  json::object root;
  root["node"] = Node(in);
  root["now_ms"] = in.now_wall_ms;
  root["members"] = Members(in.status);
  root["rates"] = Rates(in.rates);
  root["totals"] = Totals(in.doors);
  root["busiest_keys"] = BusiestKeys(in);
  root["rules"] = Rules(in.rules);
  root["events"] = Events(in.events);
  return json::serialize(root);
}

std::string_view StatusPageHtml() { return kStatusPageHtml; }

}  // namespace tally::rls

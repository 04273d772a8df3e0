// The matching structure behind a RuleSet (internal to tally_rules). Built
// once by BuildRuleSet, read by Resolve from any number of threads.
#ifndef TALLY_RULES_RULE_SET_INTERNAL_H_
#define TALLY_RULES_RULE_SET_INTERNAL_H_

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "rules/rules.h"

namespace tally::rules {

// Hash for maps keyed by std::string and looked up by std::string_view
// without building a string.
struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <typename V>
using StringMap = std::unordered_map<std::string, V, StringHash, std::equal_to<>>;

inline constexpr uint32_t kNoIndex = UINT32_MAX;

enum class MatchKind : uint8_t { kExact, kWildcard, kKeyOnly };

struct RuleNode {
  std::string key;
  std::string value;  // exact value, or the wildcard's prefix ('*' dropped)
  MatchKind kind = MatchKind::kKeyOnly;
  std::vector<Limit> limits;  // empty: no rate limit here
  bool unlimited = false;     // limits == {one unlimited Limit}
  bool shadow_mode = false;
  bool detailed_metric = false;
  bool value_to_metric = false;
  bool share_threshold = false;
  uint32_t children = kNoIndex;   // Index::levels, or none
  std::string path;               // "domain.key_value.key" (ratelimit's stats key)
  uint32_t first_rule_limit = 0;  // limits[i] is Index::rule_limits[first_rule_limit + i]
};

// The descriptors that share one key within one level.
struct KeyGroup {
  StringMap<uint32_t> exact;                                // value -> node
  std::vector<std::pair<std::string, uint32_t>> wildcards;  // prefix -> node, file order
  uint32_t key_only = kNoIndex;
};

// The children of one node (or a domain's top level), by key.
struct Level {
  StringMap<KeyGroup> by_key;
};

struct DomainIndex {
  uint32_t top_level = kNoIndex;
  std::string endpoint;  // CounterEndpoint(domain)
};

struct RuleSet::Index {
  StringMap<DomainIndex> domains;
  std::vector<RuleNode> nodes;
  std::vector<Level> levels;
  bool any_replaces = false;                          // whether Resolve needs its replaces pass
  std::vector<RuleSet::RuleLimitName> rule_limits;    // views into `nodes`
  std::vector<RuleSet::AdaptiveRule> adaptive_rules;  // views into `nodes` and `domains`
  std::vector<std::string> sources;
  Digest digest{};
};

}  // namespace tally::rules

#endif  // TALLY_RULES_RULE_SET_INTERNAL_H_

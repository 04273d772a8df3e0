// Resolve: a request's descriptors to the limits to enforce (contract in
// rules.h). On the hot path: no allocation once the Resolution has grown,
// two hash look-ups per entry, and the counter keys written into one buffer.
#include <charconv>

#include "rules/rule_set_internal.h"
#include "rules/rules.h"
#include "tally/types.h"

namespace tally::rules {
namespace {

void AppendDecimal(std::string* out, size_t n) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out->append(buf, static_cast<size_t>(end - buf));
}

void AppendField(std::string* out, std::string_view text) {
  AppendDecimal(out, text.size());
  out->push_back(':');
  out->append(text);
}

// Finds the rule `entry` matches among `level`'s: exact value, else the first
// wildcard whose prefix starts the value, else the key-only rule.
const RuleNode* MatchLevel(const RuleSet::Index& index, const Level& level, const Entry& entry) {
  const auto group_it = level.by_key.find(entry.key);
  if (group_it == level.by_key.end()) return nullptr;
  const KeyGroup& group = group_it->second;
  if (!group.exact.empty()) {
    const auto it = group.exact.find(entry.value);
    if (it != group.exact.end()) return &index.nodes[it->second];
  }
  for (const auto& [prefix, node] : group.wildcards) {
    if (entry.value.starts_with(prefix)) return &index.nodes[node];
  }
  if (group.key_only != kNoIndex) return &index.nodes[group.key_only];
  return nullptr;
}

constexpr const char* kBadOverrideUnit =
    "limit override unit is UNKNOWN or longer than tally's longest window (31 days)";
constexpr const char* kBadRuntimeWindow =
    "runtime limit override window is longer than tally's longest window (31 days)";
constexpr const char* kKeyTooLong = "descriptor too long: its counter key exceeds 4096 bytes";

}  // namespace

void Resolve(const RuleSet& rules, std::string_view domain, std::span<const Descriptor> descriptors,
             Resolution* out) {
  const RuleSet::Index& index = rules.index();
  out->descriptors_.clear();
  out->limits_.clear();
  out->key_spans_.clear();
  out->matched_.clear();
  out->replacing_.clear();
  out->keys_.clear();

  const auto domain_it = index.domains.find(domain);
  const DomainIndex* dom = domain_it == index.domains.end() ? nullptr : &domain_it->second;

  // Phase 1: match each descriptor and write its counter key; gather the
  // names that matched rules replace.
  for (const Descriptor& d : descriptors) {
    ResolvedDescriptor r;
    Resolution::KeySpan span;
    const RuleNode* node = nullptr;
    // The rule matched at each level, for share_threshold's encoding.
    const RuleNode* path[kMaxDepth];
    bool encode = false;
    if (d.limit) {
      if (d.limit->runtime) {
        if (d.limit->window_ms < kMinWindowMs || d.limit->window_ms > kMaxWindowMs) {
          r.outcome = Outcome::kInvalid;
          r.error = kBadRuntimeWindow;
        } else {
          r.outcome = Outcome::kLimited;
          encode = true;
        }
      } else if (UnitWindowMs(d.limit->unit) == 0) {
        r.outcome = Outcome::kInvalid;
        r.error = kBadOverrideUnit;
      } else {
        r.outcome = Outcome::kLimited;
        encode = true;
      }
    } else if (dom != nullptr && !d.entries.empty() && d.entries.size() <= kMaxDepth) {
      uint32_t level = dom->top_level;
      for (size_t i = 0; i < d.entries.size(); ++i) {
        if (level == kNoIndex) {
          node = nullptr;
          break;
        }
        node = MatchLevel(index, index.levels[level], d.entries[i]);
        if (node == nullptr) break;
        path[i] = node;
        level = node->children;
      }
      if (node != nullptr && !node->limits.empty()) {
        r.rule_path = node->path;
        if (index.any_replaces) {
          for (const Limit& l : node->limits) {
            for (const std::string& name : l.replaces) out->replacing_.push_back(name);
          }
        }
        if (node->unlimited) {
          r.outcome = Outcome::kUnlimited;
        } else {
          r.outcome = Outcome::kLimited;
          encode = true;
        }
      }
    }
    if (encode) {
      const size_t start = out->keys_.size();
      AppendDecimal(&out->keys_, d.entries.size());
      for (size_t i = 0; i < d.entries.size(); ++i) {
        const Entry& e = d.entries[i];
        out->keys_.push_back('/');
        AppendField(&out->keys_, e.key);
        if (node != nullptr && path[i]->share_threshold && path[i]->kind == MatchKind::kWildcard) {
          out->keys_.push_back('*');
          AppendField(&out->keys_, path[i]->value);
        } else {
          out->keys_.push_back('=');
          AppendField(&out->keys_, e.value);
        }
      }
      span.user_id_offset = static_cast<uint32_t>(start);
      span.user_id_size = static_cast<uint32_t>(out->keys_.size() - start);
      size_t endpoint_size = 0;
      if (dom != nullptr) {
        span.endpoint_external = dom->endpoint;
        endpoint_size = dom->endpoint.size();
      } else {
        // An override for a domain without rules.
        span.endpoint_offset = static_cast<uint32_t>(out->keys_.size());
        out->keys_.append("rls1:");
        out->keys_.append(domain);
        endpoint_size = out->keys_.size() - span.endpoint_offset;
        span.endpoint_size = static_cast<uint32_t>(endpoint_size);
      }
      if (span.user_id_size + endpoint_size > kMaxKeyBytes) {
        out->keys_.resize(start);
        span = Resolution::KeySpan{};
        r.outcome = Outcome::kInvalid;
        r.error = kKeyTooLong;
        r.rule_path = {};
      }
    }
    out->descriptors_.push_back(r);
    out->key_spans_.push_back(span);
    out->matched_.push_back(node);
  }

  // Phase 2: the limits to enforce, minus the replaced ones.
  auto replaced = [out](std::string_view name) {
    if (name.empty()) return false;
    for (std::string_view r : out->replacing_) {
      if (r == name) return true;
    }
    return false;
  };
  for (size_t i = 0; i < descriptors.size(); ++i) {
    ResolvedDescriptor& r = out->descriptors_[i];
    if (r.outcome != Outcome::kLimited) continue;
    r.first_limit = static_cast<uint32_t>(out->limits_.size());
    if (descriptors[i].limit) {
      ResolvedLimit limit;
      const LimitOverride& o = *descriptors[i].limit;
      limit.requests_per_unit = o.requests_per_unit;
      limit.unit = o.unit;
      limit.window_ms = o.runtime ? o.window_ms : UnitWindowMs(o.unit);
      limit.from_override = true;
      limit.from_runtime = o.runtime;
      out->limits_.push_back(limit);
    } else {
      const RuleNode& node = *out->matched_[i];
      for (const Limit& l : node.limits) {
        if (!out->replacing_.empty() && replaced(l.name)) continue;
        ResolvedLimit limit;
        limit.requests_per_unit = l.requests_per_unit;
        limit.unit = l.unit;
        limit.window_ms = l.window_ms;
        limit.name = l.name;
        limit.shadow_mode = node.shadow_mode;
        limit.detailed_metric = node.detailed_metric;
        limit.value_to_metric = node.value_to_metric;
        limit.rule_limit = node.first_rule_limit + static_cast<uint32_t>(&l - node.limits.data());
        if (l.adaptive) limit.adaptive = &*l.adaptive;
        out->limits_.push_back(limit);
      }
    }
    r.limit_count = static_cast<uint32_t>(out->limits_.size() - r.first_limit);
    if (r.limit_count == 0) {
      r.outcome = Outcome::kReplaced;
      r.first_limit = 0;
    }
  }

  // Phase 3: the keys buffer no longer grows; point the views into it.
  const std::string_view keys = out->keys_;
  for (const ResolvedDescriptor& r : out->descriptors_) {
    if (r.limit_count == 0) continue;
    const Resolution::KeySpan& span = out->key_spans_[&r - out->descriptors_.data()];
    const std::string_view user_id = keys.substr(span.user_id_offset, span.user_id_size);
    const std::string_view endpoint = span.endpoint_external.empty()
                                          ? keys.substr(span.endpoint_offset, span.endpoint_size)
                                          : span.endpoint_external;
    for (uint32_t j = r.first_limit; j < r.first_limit + r.limit_count; ++j) {
      out->limits_[j].user_id = user_id;
      out->limits_[j].endpoint = endpoint;
    }
  }
}

}  // namespace tally::rules

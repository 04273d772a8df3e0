// Building a RuleSet from parsed files: cross-file checks, the matching index
// and the digest.
#include <xxhash.h>

#include <algorithm>
#include <bit>
#include <cctype>
#include <charconv>
#include <map>
#include <tuple>
#include <utility>

#include "rules/parse.h"
#include "rules/rule_set_internal.h"
#include "rules/rules.h"

namespace tally::rules {

uint64_t UnitWindowMs(Unit unit) {
  constexpr uint64_t kSecondMs = 1000;
  constexpr uint64_t kDayMs = 24 * 3600 * kSecondMs;
  switch (unit) {
    case Unit::kSecond:
      return kSecondMs;
    case Unit::kMinute:
      return 60 * kSecondMs;
    case Unit::kHour:
      return 3600 * kSecondMs;
    case Unit::kDay:
      return kDayMs;
    case Unit::kWeek:
      return 7 * kDayMs;
    case Unit::kMonth:
      return 30 * kDayMs;  // envoyproxy/ratelimit's month
    default:
      return 0;  // kUnknown, kYear (over tally's 31 days), anything else
  }
}

Unit UnitOfWindow(uint64_t window_ms) {
  if (window_ms == 0) return Unit::kUnknown;
  for (Unit unit :
       {Unit::kSecond, Unit::kMinute, Unit::kHour, Unit::kDay, Unit::kWeek, Unit::kMonth}) {
    if (UnitWindowMs(unit) == window_ms) return unit;
  }
  return Unit::kUnknown;
}

std::string_view UnitName(Unit unit) {
  switch (unit) {
    case Unit::kSecond:
      return "SECOND";
    case Unit::kMinute:
      return "MINUTE";
    case Unit::kHour:
      return "HOUR";
    case Unit::kDay:
      return "DAY";
    case Unit::kMonth:
      return "MONTH";
    case Unit::kYear:
      return "YEAR";
    case Unit::kWeek:
      return "WEEK";
    default:
      return "UNKNOWN";
  }
}

std::optional<Unit> ParseUnit(std::string_view text) {
  if (text.size() > 8) return std::nullopt;
  std::string upper(text);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  for (Unit u : {Unit::kSecond, Unit::kMinute, Unit::kHour, Unit::kDay, Unit::kMonth, Unit::kYear,
                 Unit::kWeek}) {
    if (UnitName(u) == upper) return u;
  }
  return std::nullopt;
}

std::string_view AdaptiveSignalName(AdaptiveSignal signal) {
  switch (signal) {
    case AdaptiveSignal::kLatencyMs:
      return "latency_ms";
    case AdaptiveSignal::kErrorRate:
      return "error_rate";
    default:
      return "unknown";
  }
}

std::optional<AdaptiveSignal> ParseAdaptiveSignal(std::string_view text) {
  for (AdaptiveSignal s : {AdaptiveSignal::kLatencyMs, AdaptiveSignal::kErrorRate}) {
    if (AdaptiveSignalName(s) == text) return s;
  }
  return std::nullopt;
}

std::string RuleError::ToString() const {
  std::string out = file;
  if (line != 0) {
    out += ':';
    out += std::to_string(line);
    out += ':';
    out += std::to_string(column);
  }
  out += ": ";
  out += reason;
  return out;
}

// ---- counter identity (the contract is in rules.h) ----

std::string CounterEndpoint(std::string_view domain) {
  std::string out = "rls1:";
  out += domain;
  return out;
}

namespace {

void AppendDecimal(std::string* out, size_t n) {
  char buf[24];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, n);
  out->append(buf, static_cast<size_t>(end - buf));
}

}  // namespace

std::string CounterUserId(std::span<const Entry> entries) {
  std::string out;
  AppendDecimal(&out, entries.size());
  for (const Entry& e : entries) {
    out += '/';
    AppendDecimal(&out, e.key.size());
    out += ':';
    out += e.key;
    out += '=';
    AppendDecimal(&out, e.value.size());
    out += ':';
    out += e.value;
  }
  return out;
}

// ---- RuleSet ----

RuleSet::RuleSet(std::unique_ptr<const Index> index) : index_(std::move(index)) {}
RuleSet::~RuleSet() = default;

std::shared_ptr<const RuleSet> RuleSet::Empty() {
  static const std::shared_ptr<const RuleSet> empty = BuildRuleSet({}).rules;
  return empty;
}

size_t RuleSet::domain_count() const { return index_->domains.size(); }
size_t RuleSet::descriptor_count() const { return index_->nodes.size(); }
std::span<const RuleSet::RuleLimitName> RuleSet::rule_limits() const { return index_->rule_limits; }
std::span<const RuleSet::AdaptiveRule> RuleSet::adaptive_rules() const {
  return index_->adaptive_rules;
}
bool RuleSet::HasDomain(std::string_view domain) const {
  return index_->domains.find(domain) != index_->domains.end();
}
const std::vector<std::string>& RuleSet::sources() const { return index_->sources; }
const Digest& RuleSet::digest() const { return index_->digest; }

std::string RuleSet::DigestHex() const {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : index_->digest) {
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

namespace {

// ---- canonical form, for the digest ----
// Every string is length-prefixed; siblings are put in a fixed order (by key,
// then kind, then value) except wildcards of one key, whose file order decides
// which matches first and so is kept.

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutString(std::string* out, std::string_view s) {
  PutU64(out, s.size());
  out->append(s);
}

MatchKind KindOf(const ParsedDescriptor& d) {
  if (d.value.empty()) return MatchKind::kKeyOnly;
  return d.value.back() == '*' ? MatchKind::kWildcard : MatchKind::kExact;
}

std::vector<const ParsedDescriptor*> CanonicalOrder(const std::vector<ParsedDescriptor>& list) {
  std::vector<const ParsedDescriptor*> order;
  order.reserve(list.size());
  for (const ParsedDescriptor& d : list) order.push_back(&d);
  std::stable_sort(order.begin(), order.end(),
                   [](const ParsedDescriptor* a, const ParsedDescriptor* b) {
                     if (a->key != b->key) return a->key < b->key;
                     const MatchKind ka = KindOf(*a), kb = KindOf(*b);
                     if (ka != kb) return ka < kb;
                     if (ka == MatchKind::kWildcard) return false;  // keep file order
                     return a->value < b->value;
                   });
  return order;
}

void Canonical(const std::vector<ParsedDescriptor>& list, bool with_adaptive, std::string* out) {
  PutU64(out, list.size());
  for (const ParsedDescriptor* d : CanonicalOrder(list)) {
    PutString(out, d->key);
    PutString(out, d->value);
    out->push_back(static_cast<char>((d->shadow_mode ? 1 : 0) | (d->detailed_metric ? 2 : 0) |
                                     (d->value_to_metric ? 4 : 0) | (d->share_threshold ? 8 : 0)));
    // Limits of one descriptor have distinct units: sort by unit.
    std::vector<const Limit*> limits;
    for (const Limit& l : d->limits) limits.push_back(&l);
    std::sort(limits.begin(), limits.end(),
              [](const Limit* a, const Limit* b) { return a->unit < b->unit; });
    PutU64(out, limits.size());
    for (const Limit* l : limits) {
      out->push_back(static_cast<char>(l->unit));
      out->push_back(l->unlimited ? 1 : 0);
      PutU64(out, l->requests_per_unit);
      PutString(out, l->name);
      std::vector<std::string> replaces = l->replaces;
      std::sort(replaces.begin(), replaces.end());
      replaces.erase(std::unique(replaces.begin(), replaces.end()), replaces.end());
      PutU64(out, replaces.size());
      for (const std::string& r : replaces) PutString(out, r);
      // The adaptive block: members whose blocks differ would run different
      // controllers for one rule, so their digests must differ. Written only
      // in the v2 form, so a set without adaptive limits keeps its v1 digest
      // and members of the previous version still agree with this one.
      if (!with_adaptive) continue;
      out->push_back(l->adaptive ? 1 : 0);
      if (l->adaptive) {
        PutU64(out, l->adaptive->min);
        PutU64(out, l->adaptive->max);
        out->push_back(static_cast<char>(l->adaptive->signal));
        // The value's bits: "250" and "250.0" are one target.
        PutU64(out, std::bit_cast<uint64_t>(l->adaptive->target));
      }
    }
    Canonical(d->children, with_adaptive, out);
  }
}

// ---- the index ----

class IndexBuilder {
 public:
  explicit IndexBuilder(RuleSet::Index* index) : index_(index) {}

  // Adds `list` as a new level; returns its index.
  uint32_t AddLevel(const std::vector<ParsedDescriptor>& list, const std::string& parent_path) {
    const uint32_t level_index = static_cast<uint32_t>(index_->levels.size());
    index_->levels.emplace_back();
    for (const ParsedDescriptor& d : list) {
      const uint32_t node_index = static_cast<uint32_t>(index_->nodes.size());
      {
        RuleNode node;
        node.key = d.key;
        node.kind = KindOf(d);
        node.value =
            node.kind == MatchKind::kWildcard ? d.value.substr(0, d.value.size() - 1) : d.value;
        node.limits = d.limits;
        node.unlimited = d.limits.size() == 1 && d.limits[0].unlimited;
        node.shadow_mode = d.shadow_mode;
        node.detailed_metric = d.detailed_metric;
        node.value_to_metric = d.value_to_metric;
        node.share_threshold = d.share_threshold;
        node.path = parent_path + "." + d.key;
        if (!d.value.empty()) node.path += "_" + d.value;
        for (const Limit& l : d.limits) {
          if (!l.replaces.empty()) index_->any_replaces = true;
        }
        index_->nodes.push_back(std::move(node));
      }
      // Duplicates were rejected before; the level is filled in file order.
      KeyGroup& group = index_->levels[level_index].by_key[d.key];
      const RuleNode& node = index_->nodes[node_index];
      switch (node.kind) {
        case MatchKind::kExact:
          group.exact.emplace(node.value, node_index);
          break;
        case MatchKind::kWildcard:
          group.wildcards.emplace_back(node.value, node_index);
          break;
        case MatchKind::kKeyOnly:
          group.key_only = node_index;
          break;
      }
      if (!d.children.empty()) {
        const std::string path = index_->nodes[node_index].path;
        const uint32_t children = AddLevel(d.children, path);
        index_->nodes[node_index].children = children;
      }
    }
    return level_index;
  }

 private:
  RuleSet::Index* index_;
};

// Rejects two descriptors with the same key and value in one list, as
// envoyproxy/ratelimit ("duplicate descriptor composite key").
void CheckDuplicates(const ParsedFile& file, const std::vector<ParsedDescriptor>& list,
                     const std::string& parent_path, std::vector<RuleError>* errors,
                     size_t* error_count) {
  std::map<std::pair<std::string_view, std::string_view>, const ParsedDescriptor*> seen;
  for (const ParsedDescriptor& d : list) {
    std::string path = parent_path + "." + d.key;
    if (!d.value.empty()) path += "_" + d.value;
    auto [it, inserted] =
        seen.emplace(std::make_pair(std::string_view(d.key), std::string_view(d.value)), &d);
    if (!inserted) {
      if (++*error_count <= kMaxErrorsPerFile) {
        errors->push_back({file.source, d.line, d.column,
                           "duplicate descriptor composite key '" + path + "' (first at line " +
                               std::to_string(it->second->line) + ")"});
      }
    }
    CheckDuplicates(file, d.children, path, errors, error_count);
  }
}

}  // namespace

BuildResult BuildRuleSet(std::span<const RuleSource> sources) {
  BuildResult result;
  if (sources.size() > kMaxFiles) {
    result.errors.push_back({std::string(sources[kMaxFiles].name), 0, 0,
                             "more than " + std::to_string(kMaxFiles) + " rules files"});
    return result;
  }
  size_t total_bytes = 0;
  for (const RuleSource& source : sources) total_bytes += source.text.size();
  if (total_bytes > kMaxTotalBytes) {
    result.errors.push_back(
        {"(rule set)", 0, 0,
         "rules files hold more than " + std::to_string(kMaxTotalBytes) + " bytes in all"});
    return result;
  }
  std::vector<ParsedFile> files(sources.size());
  size_t total_descriptors = 0, total_adaptive = 0;
  for (size_t i = 0; i < sources.size(); ++i) {
    if (!ParseRuleFile(sources[i], &files[i], &result.errors)) continue;
    size_t error_count = 0;
    CheckDuplicates(files[i], files[i].descriptors, files[i].domain, &result.errors, &error_count);
    if (error_count > kMaxErrorsPerFile) {
      result.errors.push_back(
          {sources[i].name, 0, 0,
           std::to_string(error_count - kMaxErrorsPerFile) + " more errors not shown"});
    }
    total_descriptors += files[i].descriptor_count;
    total_adaptive += files[i].adaptive_count;
  }
  if (total_descriptors > kMaxDescriptorsTotal) {
    result.errors.push_back(
        {"(rule set)", 0, 0,
         "more than " + std::to_string(kMaxDescriptorsTotal) + " descriptors in all files"});
  }
  if (total_adaptive > kMaxAdaptiveLimits) {
    result.errors.push_back(
        {"(rule set)", 0, 0,
         "more than " + std::to_string(kMaxAdaptiveLimits) + " adaptive rate limits in all files"});
  }
  // One domain per file, as envoyproxy/ratelimit without MERGE_DOMAIN_CONFIG.
  std::map<std::string_view, const ParsedFile*> by_domain;
  for (const ParsedFile& file : files) {
    if (file.domain.empty()) continue;  // its parse failed and was reported
    auto [it, inserted] = by_domain.emplace(file.domain, &file);
    if (!inserted) {
      const ParsedFile& first = *it->second;
      result.errors.push_back({file.source, file.domain_line, file.domain_column,
                               "duplicate domain '" + file.domain + "': also in " + first.source +
                                   ":" + std::to_string(first.domain_line) + ":" +
                                   std::to_string(first.domain_column)});
    }
  }
  if (!result.errors.empty()) return result;

  auto index = std::make_unique<RuleSet::Index>();
  bool any_adaptive = false;
  for (const auto& [domain, file] : by_domain) any_adaptive |= file->adaptive_count > 0;
  std::string canonical = any_adaptive ? "tally-rules-digest-v2" : "tally-rules-digest-v1";
  IndexBuilder builder(index.get());
  std::vector<std::pair<std::string_view, size_t>> first_node;  // domain -> its first node
  for (const auto& [domain, file] : by_domain) {                // sorted by domain
    first_node.emplace_back(file->domain, index->nodes.size());
    DomainIndex d;
    d.top_level = builder.AddLevel(file->descriptors, file->domain);
    d.endpoint = CounterEndpoint(file->domain);
    index->domains.emplace(file->domain, std::move(d));
    PutString(&canonical, file->domain);
    Canonical(file->descriptors, any_adaptive, &canonical);
  }
  // Last, once `nodes` no longer moves: the views point into it.
  for (RuleNode& node : index->nodes) {
    node.first_rule_limit = static_cast<uint32_t>(index->rule_limits.size());
    for (const Limit& l : node.limits) index->rule_limits.push_back({node.path, l.name});
  }
  if (any_adaptive) {
    for (size_t i = 0; i < first_node.size(); ++i) {
      // The key in `domains` outlives this function; the ParsedFile does not.
      const std::string_view domain = index->domains.find(first_node[i].first)->first;
      const size_t end = i + 1 < first_node.size() ? first_node[i + 1].second : index->nodes.size();
      for (size_t n = first_node[i].second; n < end; ++n) {
        const RuleNode& node = index->nodes[n];
        for (const Limit& l : node.limits) {
          if (!l.adaptive) continue;
          index->adaptive_rules.push_back(
              {domain, l.name, node.path, l.window_ms, l.requests_per_unit, *l.adaptive});
        }
      }
    }
    std::sort(index->adaptive_rules.begin(), index->adaptive_rules.end(),
              [](const RuleSet::AdaptiveRule& a, const RuleSet::AdaptiveRule& b) {
                return std::tie(a.domain, a.name) < std::tie(b.domain, b.name);
              });
  }
  for (const RuleSource& source : sources) index->sources.push_back(source.name);
  std::sort(index->sources.begin(), index->sources.end());
  const XXH128_hash_t h = XXH3_128bits(canonical.data(), canonical.size());
  for (int i = 0; i < 8; ++i) {
    index->digest[i] = static_cast<uint8_t>(h.high64 >> (56 - 8 * i));
    index->digest[8 + i] = static_cast<uint8_t>(h.low64 >> (56 - 8 * i));
  }
  result.rules = std::shared_ptr<const RuleSet>(new RuleSet(std::move(index)));
  return result;
}

}  // namespace tally::rules

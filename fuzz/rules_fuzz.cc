// The rules engine (rules/): untrusted rules text and untrusted Envoy
// descriptors. Input: the rules file's text, optionally followed by a NUL
// byte and a request: its first line the domain, then one descriptor per
// line as "key=value,key=value" with an optional "|N/UNIT" limit override
// (UNIT a decimal Unit number).
// Properties: building never crashes or throws and ends in a rule set or in
// errors naming the file; a rebuild gives the same digest; Resolve answers
// every descriptor in order with limits that tally can check (a known
// window, a counter key within 4096 bytes under the "rls1:" endpoint) and
// writes the documented identity for overrides; every configured rule,
// asked at its own top level, resolves without fault; every adaptive limit
// is one its controller can run, and the controller stays within its bounds.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "rules/adaptive.h"
#include "rules/rule_set_internal.h"
#include "rules/rules.h"

#define RULES_FUZZ_CHECK(cond)                                                         \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace {

using namespace tally::rules;

struct Request {
  std::string domain;
  std::vector<std::vector<std::pair<std::string, std::string>>> entries;
  std::vector<std::optional<LimitOverride>> overrides;
};

Request ParseRequest(std::string_view text) {
  Request r;
  size_t line_start = 0;
  bool first = true;
  while (line_start <= text.size() && r.entries.size() < 64) {
    size_t end = text.find('\n', line_start);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(line_start, end - line_start);
    line_start = end + 1;
    if (first) {
      r.domain = std::string(line);
      first = false;
      continue;
    }
    std::optional<LimitOverride> limit;
    if (const size_t bar = line.rfind('|'); bar != std::string_view::npos) {
      const std::string_view spec = line.substr(bar + 1);
      line = line.substr(0, bar);
      const size_t slash = spec.find('/');
      LimitOverride o;
      o.requests_per_unit = static_cast<uint32_t>(
          std::strtoul(std::string(spec.substr(0, slash)).c_str(), nullptr, 10));
      if (slash != std::string_view::npos) {
        o.unit = static_cast<Unit>(
            std::strtoul(std::string(spec.substr(slash + 1)).c_str(), nullptr, 10) & 0xff);
      }
      limit = o;
    }
    std::vector<std::pair<std::string, std::string>> entries;
    size_t start = 0;
    while (start <= line.size() && !line.empty() && entries.size() < 32) {
      size_t comma = line.find(',', start);
      if (comma == std::string_view::npos) comma = line.size();
      const std::string_view item = line.substr(start, comma - start);
      const size_t eq = item.find('=');
      entries.emplace_back(std::string(item.substr(0, eq)),
                           eq == std::string_view::npos ? "" : std::string(item.substr(eq + 1)));
      start = comma + 1;
    }
    r.entries.push_back(std::move(entries));
    r.overrides.push_back(limit);
  }
  return r;
}

void CheckResolution(const Resolution& res, std::span<const Descriptor> descriptors) {
  RULES_FUZZ_CHECK(res.descriptors().size() == descriptors.size());
  size_t limits = 0;
  for (size_t i = 0; i < descriptors.size(); ++i) {
    const ResolvedDescriptor& d = res.descriptors()[i];
    RULES_FUZZ_CHECK((d.outcome == Outcome::kInvalid) == (d.error != nullptr));
    RULES_FUZZ_CHECK((d.outcome == Outcome::kLimited) == (d.limit_count > 0));
    limits += d.limit_count;
    for (const ResolvedLimit& l : res.LimitsOf(d)) {
      RULES_FUZZ_CHECK(l.window_ms > 0 && l.window_ms == UnitWindowMs(l.unit));
      RULES_FUZZ_CHECK(!l.user_id.empty());
      RULES_FUZZ_CHECK(l.user_id.size() + l.endpoint.size() <= 4096);
      RULES_FUZZ_CHECK(l.endpoint.substr(0, 5) == "rls1:");
      RULES_FUZZ_CHECK(l.from_override == descriptors[i].limit.has_value());
      if (l.from_override) {
        RULES_FUZZ_CHECK(l.user_id == CounterUserId(descriptors[i].entries));
        RULES_FUZZ_CHECK(l.requests_per_unit == descriptors[i].limit->requests_per_unit);
        RULES_FUZZ_CHECK(!l.shadow_mode && l.name.empty());
      }
    }
  }
  RULES_FUZZ_CHECK(limits == res.limits().size());
}

// Every adaptive limit that built is one the controller can run as written:
// named, unique per domain, start within [min, max], target in its range;
// and a controller made from it stays within [min, max] through a bad and a
// good interval.
void CheckAdaptive(const RuleSet& rules) {
  const auto adaptive = rules.adaptive_rules();
  RULES_FUZZ_CHECK(adaptive.size() <= kMaxAdaptiveLimits);
  for (size_t i = 0; i < adaptive.size(); ++i) {
    const RuleSet::AdaptiveRule& a = adaptive[i];
    RULES_FUZZ_CHECK(!a.name.empty() && rules.HasDomain(a.domain));
    if (i > 0) {
      const RuleSet::AdaptiveRule& p = adaptive[i - 1];
      RULES_FUZZ_CHECK(p.domain < a.domain || (p.domain == a.domain && p.name < a.name));
    }
    RULES_FUZZ_CHECK(a.spec.min >= 1 && a.spec.min <= a.start && a.start <= a.spec.max);
    RULES_FUZZ_CHECK(a.window_ms > 0);
    const AdaptiveConfig config = AdaptiveConfigFor(a.spec, a.window_ms);
    RULES_FUZZ_CHECK(config.Valid());
    AdaptiveLimit limit(config, a.start, 0);
    RULES_FUZZ_CHECK(limit.limit() == a.start);
    const double bad = a.spec.signal == AdaptiveSignal::kErrorRate ? 1.0 : a.spec.target + 1;
    for (double value : {bad, 0.0}) {
      limit.Report(value, UINT32_MAX, limit.interval_start_ms());
      limit.Tick(limit.interval_start_ms() + config.interval_ms);
      RULES_FUZZ_CHECK(limit.limit() >= a.spec.min && limit.limit() <= a.spec.max);
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t nul = input.find('\0');
  const RuleSource source{"fuzz.yaml", std::string(input.substr(0, nul))};
  BuildResult built = BuildRuleSet({&source, 1});
  RULES_FUZZ_CHECK(built.ok() == built.errors.empty());
  for (const RuleError& e : built.errors) {
    RULES_FUZZ_CHECK(e.file == "fuzz.yaml" || e.file == "(rule set)");
    RULES_FUZZ_CHECK(!e.reason.empty());
  }
  std::shared_ptr<const RuleSet> rules = built.ok() ? built.rules : RuleSet::Empty();
  if (built.ok()) {
    BuildResult again = BuildRuleSet({&source, 1});
    RULES_FUZZ_CHECK(again.ok() && again.rules->digest() == rules->digest());
    CheckAdaptive(*rules);
  }

  Resolution resolution;
  // The request after the NUL byte, if any.
  if (nul != std::string_view::npos) {
    const Request request = ParseRequest(input.substr(nul + 1));
    std::vector<std::vector<Entry>> views(request.entries.size());
    std::vector<Descriptor> descriptors;
    for (size_t i = 0; i < request.entries.size(); ++i) {
      for (const auto& [k, v] : request.entries[i]) views[i].push_back(Entry{k, v});
      descriptors.push_back(Descriptor{views[i], request.overrides[i]});
    }
    Resolve(*rules, request.domain, descriptors, &resolution);
    CheckResolution(resolution, descriptors);
  }
  // Every configured rule, asked as a one-entry descriptor of every domain.
  const RuleSet::Index& index = rules->index();
  std::vector<std::string> values;
  std::vector<Entry> entries;
  for (size_t i = 0; i < index.nodes.size() && i < 256; ++i) {
    const RuleNode& node = index.nodes[i];
    values.push_back(node.value + (node.kind == MatchKind::kWildcard ? "x" : ""));
  }
  for (size_t i = 0; i < values.size(); ++i)
    entries.push_back(Entry{index.nodes[i].key, values[i]});
  std::vector<Descriptor> descriptors;
  for (const Entry& e : entries) descriptors.push_back(Descriptor{{&e, 1}, std::nullopt});
  // All entries as one deep descriptor too.
  descriptors.push_back(Descriptor{entries, std::nullopt});
  for (const auto& [domain, unused] : index.domains) {
    Resolve(*rules, domain, descriptors, &resolution);
    CheckResolution(resolution, descriptors);
  }
  return 0;
}

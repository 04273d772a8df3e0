// Rate limit rules in envoyproxy/ratelimit's YAML format, and the matching of
// Envoy's descriptors against them (docs/ENVOY.md, section "Rules").
//
// Three steps, all pure (no I/O, clocks, threads or locks; file reading lives
// apart in rules/load_files.h):
//   1. BuildRuleSet() parses the text of one or more files (one domain each)
//      into an immutable RuleSet, or reports every error as file:line:column.
//   2. Resolve() maps one request (domain, descriptors, optional per-descriptor
//      limit override) to the limits to enforce, each with the counter identity
//      that tally's check takes (user_id, endpoint, window_ms).
//   3. RuleSet::digest() names the rules' content so members can compare them.
// RuleSet::adaptive_rules() lists the limits with an `adaptive:` block, the
// input of their controllers (rules/adaptive.h; not run by the daemon yet).
//
// Threading: a RuleSet never changes after it is built; any number of threads
// may call Resolve() on one RuleSet at once, each with its own Resolution.
// Hold it as std::shared_ptr<const RuleSet> and swap the pointer to reload: a
// check that took the old pointer finishes on the old rules, never a mix.
//
// COUNTER IDENTITY (a cluster contract: every member must encode alike, so it
// is versioned and may only change under a new version tag):
//   endpoint = "rls1:" domain
//   user_id  = count entry*          count = number of entries, decimal
//   entry    = "/" len ":" key tag len ":" text
//   tag      = "=" text is the request's value (exact, wildcard and key-only
//                  matches alike: every distinct value gets its own counter)
//            | "*" text is the wildcard's prefix (the '*' dropped), for a
//                  wildcard match on a descriptor with share_threshold: true,
//                  so all values under the wildcard share one counter
//   len      = the byte length of the string after ':', decimal, no leading 0
//   window_ms = the unit's length (see UnitWindowMs)
// All entries of the request's descriptor are encoded: a rule only matches at
// the request's own depth, so "up to the matched level" is all of them. The
// decimal lengths make the encoding prefix-free, hence collision-free, and the
// count makes it non-empty. tally hashes (user_id, endpoint, window_ms) into
// its key, so limits of different units on one descriptor are different
// counters, and a limit changed by a reload keeps counting the same hits (as
// envoyproxy/ratelimit's cache key holds domain, entries and unit, not the
// limit). A request's limit override with the same unit shares the counter.
// Example: domain "edge", entries (remote_address, 10.0.0.1), unit second:
//   endpoint "rls1:edge", user_id "1/14:remote_address=8:10.0.0.1", 1000 ms.
// The explicit check form could name the same strings; the Cap'n Proto doors
// should keep the "rls1:" endpoint prefix for rules (see docs/ENVOY.md).
#ifndef TALLY_RULES_RULES_H_
#define TALLY_RULES_RULES_H_

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tally::rules {

// Envoy's RateLimitResponse.RateLimit.Unit, same numbers (WEEK came last).
enum class Unit : uint8_t {
  kUnknown = 0,
  kSecond = 1,
  kMinute = 2,
  kHour = 3,
  kDay = 4,
  kMonth = 5,
  kYear = 6,
  kWeek = 7,
};

// The sliding window tally enforces for `unit`: 1 s, 1 min, 1 h, 1 day,
// 7 days, 30 days (envoyproxy/ratelimit's month). 0 for kUnknown, for kYear
// (longer than tally's longest window, 31 days) and for any other number.
uint64_t UnitWindowMs(Unit unit);
// The unit whose window (UnitWindowMs) is exactly `window_ms`; kUnknown for
// any other length (a runtime override's window, reported as such).
Unit UnitOfWindow(uint64_t window_ms);
// "SECOND", "MINUTE", ...; "UNKNOWN" for anything else.
std::string_view UnitName(Unit unit);
// Case-insensitive, as envoyproxy/ratelimit ("second", "Second", "SECOND").
// nullopt for an unknown name and for "unknown".
std::optional<Unit> ParseUnit(std::string_view text);

// ---- Bounds: a hostile file or directory cannot blow up memory or time. ----
inline constexpr size_t kMaxFileBytes = 1 << 20;    // one rules file
inline constexpr size_t kMaxFiles = 1000;           // files in one rule set
inline constexpr size_t kMaxTotalBytes = 16 << 20;  // all files of one rule set
inline constexpr size_t kMaxDepth = 16;             // descriptor nesting levels
inline constexpr size_t kMaxDescriptorsPerFile = 10000;
inline constexpr size_t kMaxDescriptorsTotal = 100000;
inline constexpr size_t kMaxLimitsPerDescriptor = 8;  // `rate_limits:` entries
inline constexpr size_t kMaxReplacesPerLimit = 16;
inline constexpr size_t kMaxDomainBytes = 256;
inline constexpr size_t kMaxRuleKeyBytes = 256;         // a descriptor's `key`
inline constexpr size_t kMaxRuleValueBytes = 1024;      // a descriptor's `value`
inline constexpr size_t kMaxNameBytes = 256;            // `name`, `replaces` names
inline constexpr size_t kMaxYamlNodesPerFile = 200000;  // walked, aliases included
inline constexpr size_t kMaxErrorsPerFile = 50;         // then one "N more" line
// Adaptive limits in one rule set: each will be one runtime override written
// by its owner about once per control interval, and the override map lets a
// member write at most 1024 selectors (docs/DESIGN.md, "Load-adaptive
// limits"); 256 leaves room for the operators' own.
inline constexpr size_t kMaxAdaptiveLimits = 256;

// One problem in a rules file. line/column are 1-based; 0 when the problem is
// with the file as a whole (unreadable, too large).
struct RuleError {
  std::string file;
  uint32_t line = 0;
  uint32_t column = 0;
  std::string reason;
  // "file:line:column: reason" (or "file: reason" without a position).
  std::string ToString() const;
};

// The text of one rules file and the name it is reported under.
struct RuleSource {
  std::string name;
  std::string text;
};

// What an adaptive limit follows (docs/DESIGN.md, "Load-adaptive limits").
enum class AdaptiveSignal : uint8_t {
  kLatencyMs = 1,  // the backend's latency in ms, averaged over the interval
  kErrorRate = 2,  // the backend's errors / requests over the interval
};
// "latency_ms", "error_rate"; "unknown" for anything else.
std::string_view AdaptiveSignalName(AdaptiveSignal signal);
// Exact spelling only; nullopt for anything else.
std::optional<AdaptiveSignal> ParseAdaptiveSignal(std::string_view text);

// A latency target above this (one hour) is refused: no backend's reply is
// worth waiting for that long, and a bounded target keeps the law's arithmetic
// far from overflow.
inline constexpr double kMaxAdaptiveLatencyTargetMs = 3600000;

// A rate_limit's `adaptive:` block: the limit moves between min and max
// (inclusive) to keep the backend's signal at or below target, starting from
// requests_per_unit. Parsed and checked here; the controller is
// rules/adaptive.h, and nothing in the daemon runs it yet.
struct AdaptiveSpec {
  uint32_t min = 0;  // >= 1
  uint32_t max = 0;  // >= requests_per_unit >= min
  AdaptiveSignal signal = AdaptiveSignal::kLatencyMs;
  double target = 0;  // latency: (0, kMaxAdaptiveLatencyTargetMs]; error rate: (0, 1)
  bool operator==(const AdaptiveSpec&) const = default;
};

// One configured limit of a descriptor.
struct Limit {
  uint32_t requests_per_unit = 0;
  Unit unit = Unit::kUnknown;
  uint64_t window_ms = 0;  // UnitWindowMs(unit); 0 when unlimited
  bool unlimited = false;  // always OK, counts nothing
  std::string name;        // may be empty; target of other limits' `replaces`
  std::vector<std::string> replaces;
  // Set iff the limit has an `adaptive:` block; then `name` is not empty and
  // unique among the domain's adaptive limits (the controller's identity).
  std::optional<AdaptiveSpec> adaptive;
};

class RuleSet;

struct BuildResult {
  std::shared_ptr<const RuleSet> rules;  // null iff errors is not empty
  std::vector<RuleError> errors;         // every error found, in file order
  bool ok() const { return rules != nullptr; }
};

// Parses every source (one domain per source) into a RuleSet. Any error in
// any source rejects the whole set: the caller keeps its previous rules.
// Two sources with the same domain are an error naming both. Pure.
BuildResult BuildRuleSet(std::span<const RuleSource> sources);

// 128-bit digest of a rule set's canonical content (not of its file names,
// order of files, comments or formatting).
using Digest = std::array<uint8_t, 16>;

class RuleSet {
 public:
  // A rule set with no domain: every descriptor without an override
  // resolves to kNoLimit.
  static std::shared_ptr<const RuleSet> Empty();

  ~RuleSet();
  RuleSet(const RuleSet&) = delete;
  RuleSet& operator=(const RuleSet&) = delete;

  size_t domain_count() const;
  size_t descriptor_count() const;  // configured descriptors, all levels
  bool HasDomain(std::string_view domain) const;
  // The source names the set was built from, sorted.
  const std::vector<std::string>& sources() const;
  // Equal for rule sets with the same domains, descriptors, limits and flags,
  // whatever their file names, file order, formatting or the order of
  // sibling descriptors (except wildcards of one key, whose order decides).
  const Digest& digest() const;
  std::string DigestHex() const;  // 32 lowercase hex digits

  // Every configured limit of every descriptor (unlimited ones included),
  // by descriptor then by its limits' order: the rule's stats key
  // (ResolvedDescriptor::rule_path) and the limit's `name`. Fixed for the
  // set's life, so per-rule counters can be an array indexed by
  // ResolvedLimit::rule_limit.
  struct RuleLimitName {
    std::string_view rule_path;
    std::string_view name;
  };
  std::span<const RuleLimitName> rule_limits() const;

  // Every limit with an `adaptive:` block, sorted by (domain, name), the
  // controller's identity (unique: the parser refuses two in one domain).
  // Views into the set, valid while it lives. Nothing runs them yet.
  struct AdaptiveRule {
    std::string_view domain;
    std::string_view name;
    std::string_view rule_path;
    uint64_t window_ms = 0;
    uint32_t start = 0;  // requests_per_unit: the limit before any signal
    AdaptiveSpec spec;
  };
  std::span<const AdaptiveRule> adaptive_rules() const;

  struct Index;  // the matching structure (rules/rule_set_internal.h)
  const Index& index() const { return *index_; }

 private:
  friend BuildResult BuildRuleSet(std::span<const RuleSource> sources);
  explicit RuleSet(std::unique_ptr<const Index> index);
  std::unique_ptr<const Index> index_;
};

// ---- Resolve: the hot path. ----

// One (key, value) of a request's descriptor, as Envoy sends it.
struct Entry {
  std::string_view key;
  std::string_view value;
};

// A descriptor's `limit` override (RateLimitDescriptor.limit), or an
// operator's runtime override (crdt/limit_overrides.h) the caller put in its
// place: that one has its own window (`window_ms` > 0, any length, `unit`
// the one of exactly that length or kUnknown) and is marked `runtime`.
struct LimitOverride {
  uint32_t requests_per_unit = 0;
  Unit unit = Unit::kUnknown;
  uint64_t window_ms = 0;  // 0: UnitWindowMs(unit)
  bool runtime = false;
};

struct Descriptor {
  std::span<const Entry> entries;
  std::optional<LimitOverride> limit;
};

enum class Outcome : uint8_t {
  kNoLimit,    // no rule matched (or unknown domain): OK, no current_limit
  kUnlimited,  // matched `unlimited: true`: OK, counts nothing
  kLimited,    // enforce every limit in Resolution::LimitsOf()
  kReplaced,   // matched, but every limit was replaced by another match: OK,
               // no current_limit, counts nothing (as envoyproxy/ratelimit)
  kInvalid,    // cannot be enforced: see ResolvedDescriptor::error
};

// One limit to enforce: the decision core checks (user_id, endpoint,
// limit = requests_per_unit, window_ms).
struct ResolvedLimit {
  std::string_view user_id;
  std::string_view endpoint;
  uint64_t window_ms = 0;
  uint32_t requests_per_unit = 0;
  Unit unit = Unit::kUnknown;
  std::string_view name;     // the rule's `name`, empty if none or override
  bool shadow_mode = false;  // decide and count, but answer OK
  bool detailed_metric = false;
  bool value_to_metric = false;
  bool from_override = false;  // the request's own limit or a runtime override, not a rule's
  bool from_runtime = false;   // a runtime override (LimitOverride::runtime)
  // Which of RuleSet::rule_limits() this is (for per-rule counters);
  // UINT32_MAX for an override.
  uint32_t rule_limit = UINT32_MAX;
  // The rule limit's `adaptive:` block (its `name` is the controller's
  // identity), null for a fixed limit or an override. Points into the
  // RuleSet. The caller applies the published adaptive limit, clamped into
  // [min, max], in place of requests_per_unit.
  const AdaptiveSpec* adaptive = nullptr;
};

struct ResolvedDescriptor {
  Outcome outcome = Outcome::kNoLimit;
  uint32_t first_limit = 0;  // into Resolution::limits()
  uint32_t limit_count = 0;  // > 0 iff outcome == kLimited
  // envoyproxy/ratelimit's stats key of the matched rule, for example
  // "messaging.message_type_marketing.to_number"; empty for kNoLimit,
  // kInvalid and overrides.
  std::string_view rule_path;
  const char* error = nullptr;  // static text, set iff outcome == kInvalid
};

struct RuleNode;  // one configured descriptor (rules/rule_set_internal.h)

// The answer to one Resolve() call, reused across calls so the hot path does
// not allocate once its buffers have grown. Its views point into itself and
// into the RuleSet: valid until the next Resolve() with this Resolution, and
// only while that RuleSet lives.
class Resolution {
 public:
  Resolution() = default;
  // Its views point into its own buffer: copying or moving would leave them
  // pointing into another object.
  Resolution(const Resolution&) = delete;
  Resolution& operator=(const Resolution&) = delete;

  std::span<const ResolvedDescriptor> descriptors() const { return descriptors_; }
  std::span<const ResolvedLimit> limits() const { return limits_; }
  std::span<const ResolvedLimit> LimitsOf(const ResolvedDescriptor& d) const {
    return std::span<const ResolvedLimit>(limits_).subspan(d.first_limit, d.limit_count);
  }

 private:
  friend void Resolve(const RuleSet&, std::string_view, std::span<const Descriptor>, Resolution*);
  struct KeySpan {
    uint32_t user_id_offset = 0;
    uint32_t user_id_size = 0;
    uint32_t endpoint_offset = 0;  // into keys_ when endpoint_external is empty
    uint32_t endpoint_size = 0;
    std::string_view endpoint_external;  // the domain's endpoint in the RuleSet
  };
  std::vector<ResolvedDescriptor> descriptors_;
  std::vector<ResolvedLimit> limits_;
  std::vector<KeySpan> key_spans_;
  std::vector<const RuleNode*> matched_;     // the matched rule per descriptor
  std::vector<std::string_view> replacing_;  // names replaced in this request
  std::string keys_;
};

// Resolves each of `descriptors` of a request to `domain` against `rules`,
// following envoyproxy/ratelimit (docs/ENVOY.md, "Rules"):
//   * A descriptor with a limit override gets exactly that limit (no shadow,
//     no name), whether or not a rule or the domain exists; an override unit
//     tally cannot enforce (UNKNOWN, YEAR) makes it kInvalid, as does a
//     runtime override's window beyond tally's longest (31 days).
//   * Otherwise its entries walk the domain's tree one level per entry; at
//     each level an exact value match wins over a wildcard prefix (first in
//     file order), which wins over a key-only rule; there is no backtracking.
//     Only a rule reached by the last entry applies (same depth).
//   * `replaces` acts across the request: a limit named by the `replaces` of
//     any matched rule (limited or unlimited) is dropped.
//   * A counter key over tally's 4096-byte bound makes the descriptor kInvalid.
// The output has one ResolvedDescriptor per input descriptor, same order.
// Cost: linear in the request's entries and matched limits; no allocation
// once `out` has grown to the request's size.
void Resolve(const RuleSet& rules, std::string_view domain, std::span<const Descriptor> descriptors,
             Resolution* out);

// The counter identity's parts (see COUNTER IDENTITY above), for tests and
// tools; Resolve() writes the same bytes without allocating.
std::string CounterEndpoint(std::string_view domain);
std::string CounterUserId(std::span<const Entry> entries);

}  // namespace tally::rules

#endif  // TALLY_RULES_RULES_H_

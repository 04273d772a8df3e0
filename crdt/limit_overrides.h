// LimitOverrides: runtime limit overrides as a last-writer-wins map CRDT.
//
// An operator changes a limit without a restart (`tally limit set`): the
// write is stamped with the writing member's hybrid logical clock
// (crdt/hybrid_clock.h) and spread to every member; each member keeps, per
// selector, the entry with the largest stamp. A removal is an entry too (a
// tombstone), so a removed override cannot come back from a member that had
// not yet heard of the removal.
//
// Merge keeps the larger of two entries by (stamp, writer, value): a total
// order, so merge is commutative, associative and idempotent and every
// member that has seen the same entries holds the same map whatever the
// order (tests/crdt/limit_overrides_test.cc checks it on random histories).
// That holds across partitions: writes on both sides converge to one, the
// later by hybrid time, after the heal.
//
// Selectors: a rules descriptor (domain and its entries, as Envoy sends
// them), the explicit form (user, endpoint, window), or an adaptive rule's
// limit (domain, rule name: written by the rule's controller, docs/DESIGN.md
// "Load-adaptive limits"), canonically encoded so equal selectors are equal
// bytes (Selector::Key).
//
// Bounds (the entries come from peers): selector texts, entry counts and
// values are bounded (Validate), and the map holds at most kMaxEntries
// selectors, tombstones included; a merge that would add a selector beyond
// that is refused and counted. Local writes stop earlier, at kMaxLocalEntries,
// so that the writes of two partitioned sides still fit when they meet.
//
// Pure: no clock reads, no I/O. Not thread-safe.
#ifndef TALLY_CRDT_LIMIT_OVERRIDES_H_
#define TALLY_CRDT_LIMIT_OVERRIDES_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "crdt/hybrid_clock.h"

namespace tally::crdt {

// What an override selects: one rules descriptor, one explicit key, or the
// limit of one adaptive rule (every descriptor that rule matches).
struct Selector {
  enum class Kind : uint8_t { kDescriptor = 1, kExplicit = 2, kAdaptive = 3 };
  Kind kind = Kind::kDescriptor;
  std::string domain;                                        // kDescriptor, kAdaptive
  std::vector<std::pair<std::string, std::string>> entries;  // kDescriptor, in order
  std::string user, endpoint;                                // kExplicit
  uint64_t window_ms = 0;                                    // kExplicit
  std::string rule;  // kAdaptive: the limit's `name`, unique among its domain's adaptive limits

  // The canonical bytes: equal selectors, equal keys. Length-prefixed
  // fields, so no text can make two selectors collide.
  std::string Key() const;
  // Key() of the explicit selector (user, endpoint, window_ms), built from
  // views (the decision path looks checks up without copying them).
  static std::string ExplicitKey(std::string_view user, std::string_view endpoint,
                                 uint64_t window_ms);
  // Key() of a descriptor selector, built from views into `*out` (cleared
  // first; its capacity is reused): DescriptorKeyStart, then
  // DescriptorKeyEntry once per entry, in order. The rules doors look each
  // request descriptor up this way without a Selector.
  static void DescriptorKeyStart(std::string* out, std::string_view domain, size_t entry_count);
  static void DescriptorKeyEntry(std::string* out, std::string_view key, std::string_view value);
  // Key() of the adaptive selector (domain, rule).
  static std::string AdaptiveKey(std::string_view domain, std::string_view rule);
  // AdaptiveKey into *out (replacing it), reusing its capacity.
  static void AdaptiveKeyInto(std::string* out, std::string_view domain, std::string_view rule);
  friend bool operator==(const Selector&, const Selector&) = default;
};

// The limit in force for a selector, or a removal.
struct OverrideValue {
  bool removed = false;    // a tombstone: no override (the rule or the caller's limit applies)
  uint64_t limit = 0;      // hits per window; 0 denies every hit
  uint64_t window_ms = 0;  // for kDescriptor; kExplicit keeps the selector's window
  friend auto operator<=>(const OverrideValue&, const OverrideValue&) = default;
};

struct OverrideEntry {
  Selector selector;
  OverrideValue value;
  HlcTimestamp stamp;
  uint64_t writer = 0;  // the writing member's id hash: a tie-break between equal stamps
};

// Limits on what an entry may hold (peer input is checked against them).
inline constexpr size_t kMaxSelectorText = 256;    // domain, key, value, user, endpoint
inline constexpr size_t kMaxSelectorEntries = 16;  // as a descriptor's entries
inline constexpr uint64_t kMaxOverrideWindowMs = 366ull * 24 * 3600 * 1000;
inline constexpr uint64_t kMaxOverrideLimit = 0xFFFFFFFFull;  // tally::kMaxLimit: 32-bit counts

// "" when `entry` is within the limits above, else what is wrong.
std::string Validate(const OverrideEntry& entry);

class LimitOverrides {
 public:
  static constexpr size_t kMaxEntries = 4096;
  static constexpr size_t kMaxLocalEntries = 1024;

  enum class MergeResult {
    kApplied,  // the entry is now the selector's
    kStale,    // the map already holds this entry or a later one
    kInvalid,  // outside Validate's limits
    kFull,     // a new selector beyond kMaxEntries (or kMaxLocalEntries for Write)
  };

  // A local write (set or remove): the caller stamps it with its clock.
  // Refuses a new selector once kMaxLocalEntries are held.
  MergeResult Write(const OverrideEntry& entry);

  // An entry from a peer (gossip or push-pull).
  MergeResult Merge(const OverrideEntry& entry);

  // The override in force for `selector`, if any (a tombstone is none).
  std::optional<OverrideValue> Find(const Selector& selector) const;
  std::optional<OverrideValue> FindKey(const std::string& selector_key) const;
  // The entry held for a selector key, tombstones included; null if none.
  const OverrideEntry* FindEntry(const std::string& selector_key) const;

  // Every entry, tombstones included, in selector-key order.
  std::vector<OverrideEntry> Entries() const;
  // Visits the entries whose selector key sorts after `after_key` ("": from
  // the first), tombstones included, in key order, until `visit` returns
  // false: a page of a listing without copying the map.
  template <typename Visit>
  void VisitAfter(const std::string& after_key, Visit&& visit) const {
    auto it = after_key.empty() ? entries_.begin() : entries_.upper_bound(after_key);
    for (; it != entries_.end(); ++it) {
      if (!visit(it->first, it->second)) return;
    }
  }
  size_t size() const { return entries_.size(); }
  // Overrides in force (entries that are not tombstones), and those of
  // them with an explicit selector.
  size_t live() const { return live_; }
  size_t live_explicit() const { return live_explicit_; }
  // Bumps on every change of the map (an applied write or merge, a dropped
  // tombstone): a driver republishes what it derives from the map
  // (DescriptorOverrideTable) only when this moved.
  uint64_t version() const { return version_; }

  // An order-independent digest of the whole map: two maps with the same
  // entries have the same digest (anti-entropy compares these before
  // exchanging entries).
  uint64_t Digest() const { return digest_; }

  // Drops tombstones written before `before` (hybrid time). A member
  // partitioned away for longer than the caller's grace can bring a removed
  // override back; docs/DESIGN.md states the grace.
  size_t DropTombstonesBefore(HlcTimestamp before);

 private:
  MergeResult Put(const OverrideEntry& entry, size_t cap);
  static uint64_t EntryHash(const std::string& key, const OverrideEntry& entry);

  std::map<std::string, OverrideEntry> entries_;  // by Selector::Key()
  void CountLive(const OverrideEntry& entry, int delta);

  size_t live_ = 0, live_explicit_ = 0;
  uint64_t digest_ = 0;  // sum of EntryHash over entries_
  uint64_t version_ = 0;
};

// The descriptor-form and adaptive overrides in force (no tombstones, no
// explicit selectors) of one LimitOverrides, frozen: what the rules doors read on
// their own threads without the Node's lock (docs/DESIGN.md, "Runtime limit
// overrides"). Immutable once built, so any number of threads may Find at
// once. Built in O(entries) by the driver after a change (version()).
class DescriptorOverrideTable {
 public:
  DescriptorOverrideTable() = default;
  explicit DescriptorOverrideTable(const LimitOverrides& map);

  bool empty() const { return by_key_.empty() && adaptive_.empty(); }
  size_t size() const { return by_key_.size() + adaptive_.size(); }
  // Whether any override names `domain` with `entry_count` entries: a
  // request descriptor that fails this needs no key built.
  bool MayMatch(std::string_view domain, size_t entry_count) const;
  // The override for the selector whose Key() is `selector_key`, or null.
  const OverrideValue* Find(const std::string& selector_key) const;
  // The published limit of the adaptive rule (domain, rule), or null: its
  // controller has not written one (the rule's requests_per_unit applies).
  // `scratch` holds the key built for the lookup (its capacity is reused, so
  // a warm caller allocates nothing); null builds a temporary.
  const OverrideValue* FindAdaptive(std::string_view domain, std::string_view rule,
                                    std::string* scratch = nullptr) const;
  size_t adaptive_size() const { return adaptive_.size(); }

 private:
  std::unordered_map<std::string, OverrideValue> by_key_;
  std::unordered_map<std::string, OverrideValue> adaptive_;  // by AdaptiveKey
  // (domain, entry count) of every override, sorted and distinct: what
  // MayMatch searches (O(log n), no allocation).
  std::vector<std::pair<std::string, size_t>> shapes_;
};

// True when `a` wins over `b` for the same selector: the larger
// (stamp, writer, value).
bool Wins(const OverrideEntry& a, const OverrideEntry& b);

// Restoring after a restart (persist/snapshot.h): merges `entries` (the
// snapshot's, tombstones included) into `map` as a peer's are merged
// (Validate, then LWW), and moves `hlc` past `persisted_clock` and every
// stamp merged, with HybridClock::Restore rather than Observe: the stamps
// were this node's own before the restart, and a write after it must order
// after them even when the wall clock went back (the snapshot decoder
// bounds them instead). Both Node and the single-node LocalOverrides use it.
struct OverrideRestoreCounts {
  size_t applied = 0;  // now the selector's entry
  size_t stale = 0;    // the map held this entry or a later one
  size_t refused = 0;  // outside Validate's limits, or beyond kMaxEntries
};
OverrideRestoreCounts RestoreOverrides(const std::vector<OverrideEntry>& entries,
                                       HlcTimestamp persisted_clock, LimitOverrides* map,
                                       HybridClock* hlc);

}  // namespace tally::crdt

#endif  // TALLY_CRDT_LIMIT_OVERRIDES_H_

#include "crdt/limit_overrides.h"

#include <xxhash.h>

#include <algorithm>
#include <tuple>

namespace tally::crdt {

namespace {

void PutU64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void PutText(std::string* out, std::string_view text) {
  PutU64(out, text.size());
  out->append(text);
}

std::string CheckText(const char* what, const std::string& text, bool may_be_empty) {
  if (!may_be_empty && text.empty()) return std::string(what) + " is empty";
  if (text.size() > kMaxSelectorText) {
    return std::string(what) + " is longer than " + std::to_string(kMaxSelectorText) + " bytes";
  }
  return "";
}

}  // namespace

std::string Selector::Key() const {
  if (kind == Kind::kDescriptor) {
    std::string key;
    DescriptorKeyStart(&key, domain, entries.size());
    for (const auto& [k, v] : entries) DescriptorKeyEntry(&key, k, v);
    return key;
  }
  if (kind == Kind::kExplicit) return ExplicitKey(user, endpoint, window_ms);
  if (kind == Kind::kAdaptive) return AdaptiveKey(domain, rule);
  // An unknown kind (Validate refuses it): its own byte, so it equals no
  // valid selector.
  return std::string(1, static_cast<char>(kind));
}

void Selector::DescriptorKeyStart(std::string* out, std::string_view domain, size_t entry_count) {
  out->clear();
  out->push_back(static_cast<char>(Kind::kDescriptor));
  PutText(out, domain);
  PutU64(out, entry_count);
}

void Selector::DescriptorKeyEntry(std::string* out, std::string_view key, std::string_view value) {
  PutText(out, key);
  PutText(out, value);
}

std::string Selector::ExplicitKey(std::string_view user, std::string_view endpoint,
                                  uint64_t window_ms) {
  std::string key;
  key.push_back(static_cast<char>(Kind::kExplicit));
  PutText(&key, user);
  PutText(&key, endpoint);
  PutU64(&key, window_ms);
  return key;
}

std::string Selector::AdaptiveKey(std::string_view domain, std::string_view rule) {
  std::string key;
  AdaptiveKeyInto(&key, domain, rule);
  return key;
}

void Selector::AdaptiveKeyInto(std::string* out, std::string_view domain, std::string_view rule) {
  out->clear();
  out->push_back(static_cast<char>(Kind::kAdaptive));
  PutText(out, domain);
  PutText(out, rule);
}

void LimitOverrides::CountLive(const OverrideEntry& entry, int delta) {
  if (entry.value.removed) return;
  live_ += delta;
  if (entry.selector.kind == Selector::Kind::kExplicit) live_explicit_ += delta;
}

std::string Validate(const OverrideEntry& entry) {
  const Selector& s = entry.selector;
  std::string why;
  switch (s.kind) {
    case Selector::Kind::kDescriptor:
      if (!(why = CheckText("domain", s.domain, false)).empty()) return why;
      if (s.entries.empty() || s.entries.size() > kMaxSelectorEntries) {
        return "a descriptor needs 1 to " + std::to_string(kMaxSelectorEntries) + " entries";
      }
      for (const auto& [k, v] : s.entries) {
        if (!(why = CheckText("a descriptor key", k, false)).empty()) return why;
        if (!(why = CheckText("a descriptor value", v, true)).empty()) return why;
      }
      if (!s.user.empty() || !s.endpoint.empty() || s.window_ms != 0 || !s.rule.empty()) {
        return "a descriptor selector with explicit fields";
      }
      break;
    case Selector::Kind::kExplicit:
      if (!(why = CheckText("user", s.user, false)).empty()) return why;
      if (!(why = CheckText("endpoint", s.endpoint, false)).empty()) return why;
      if (s.window_ms < 1 || s.window_ms > kMaxOverrideWindowMs) return "window out of range";
      if (!s.domain.empty() || !s.entries.empty()) return "an explicit selector with a descriptor";
      if (!s.rule.empty()) return "an explicit selector with a rule name";
      break;
    case Selector::Kind::kAdaptive:
      if (!(why = CheckText("domain", s.domain, false)).empty()) return why;
      if (!(why = CheckText("rule", s.rule, false)).empty()) return why;
      if (!s.entries.empty() || !s.user.empty() || !s.endpoint.empty() || s.window_ms != 0) {
        return "an adaptive selector with descriptor or explicit fields";
      }
      break;
    default:
      return "unknown selector kind";
  }
  const OverrideValue& v = entry.value;
  if (v.removed) {
    if (v.limit != 0 || v.window_ms != 0) return "a removal carries no limit";
    return "";
  }
  if (v.limit > kMaxOverrideLimit) return "limit out of range";
  if (s.kind != Selector::Kind::kExplicit) {
    if (v.window_ms < 1 || v.window_ms > kMaxOverrideWindowMs) return "window out of range";
  } else if (v.window_ms != 0) {
    return "an explicit override keeps its selector's window";
  }
  return "";
}

bool Wins(const OverrideEntry& a, const OverrideEntry& b) {
  return std::tie(a.stamp, a.writer, a.value) > std::tie(b.stamp, b.writer, b.value);
}

uint64_t LimitOverrides::EntryHash(const std::string& key, const OverrideEntry& entry) {
  std::string bytes = key;
  PutU64(&bytes, static_cast<uint64_t>(entry.stamp.wall_ms));
  PutU64(&bytes, entry.stamp.logical);
  PutU64(&bytes, entry.writer);
  bytes.push_back(entry.value.removed ? 1 : 0);
  PutU64(&bytes, entry.value.limit);
  PutU64(&bytes, entry.value.window_ms);
  return XXH3_64bits(bytes.data(), bytes.size());
}

LimitOverrides::MergeResult LimitOverrides::Put(const OverrideEntry& entry, size_t cap) {
  if (!Validate(entry).empty()) return MergeResult::kInvalid;
  std::string key = entry.selector.Key();
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= cap) return MergeResult::kFull;
    digest_ += EntryHash(key, entry);
    CountLive(entry, +1);
    entries_.emplace(std::move(key), entry);
    ++version_;
    return MergeResult::kApplied;
  }
  if (!Wins(entry, it->second)) return MergeResult::kStale;
  digest_ -= EntryHash(key, it->second);
  CountLive(it->second, -1);
  it->second = entry;
  digest_ += EntryHash(key, entry);
  CountLive(entry, +1);
  ++version_;
  return MergeResult::kApplied;
}

LimitOverrides::MergeResult LimitOverrides::Write(const OverrideEntry& entry) {
  return Put(entry, kMaxLocalEntries);
}

LimitOverrides::MergeResult LimitOverrides::Merge(const OverrideEntry& entry) {
  return Put(entry, kMaxEntries);
}

std::optional<OverrideValue> LimitOverrides::Find(const Selector& selector) const {
  return FindKey(selector.Key());
}

std::optional<OverrideValue> LimitOverrides::FindKey(const std::string& selector_key) const {
  auto it = entries_.find(selector_key);
  if (it == entries_.end() || it->second.value.removed) return std::nullopt;
  return it->second.value;
}

const OverrideEntry* LimitOverrides::FindEntry(const std::string& selector_key) const {
  auto it = entries_.find(selector_key);
  return it == entries_.end() ? nullptr : &it->second;
}

std::vector<OverrideEntry> LimitOverrides::Entries() const {
  std::vector<OverrideEntry> out;
  out.reserve(entries_.size());
  for (const auto& [key, entry] : entries_) out.push_back(entry);
  return out;
}

size_t LimitOverrides::DropTombstonesBefore(HlcTimestamp before) {
  size_t dropped = 0;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.value.removed && it->second.stamp < before) {
      digest_ -= EntryHash(it->first, it->second);
      it = entries_.erase(it);
      ++dropped;
    } else {
      ++it;
    }
  }
  if (dropped > 0) ++version_;
  return dropped;
}

DescriptorOverrideTable::DescriptorOverrideTable(const LimitOverrides& map) {
  for (const OverrideEntry& e : map.Entries()) {
    if (e.value.removed) continue;
    if (e.selector.kind == Selector::Kind::kAdaptive) {
      adaptive_.emplace(e.selector.Key(), e.value);
      continue;
    }
    if (e.selector.kind != Selector::Kind::kDescriptor) continue;
    by_key_.emplace(e.selector.Key(), e.value);
    shapes_.emplace_back(e.selector.domain, e.selector.entries.size());
  }
  std::sort(shapes_.begin(), shapes_.end());
  shapes_.erase(std::unique(shapes_.begin(), shapes_.end()), shapes_.end());
}

bool DescriptorOverrideTable::MayMatch(std::string_view domain, size_t entry_count) const {
  const auto it = std::lower_bound(
      shapes_.begin(), shapes_.end(), std::pair<std::string_view, size_t>(domain, entry_count),
      [](const std::pair<std::string, size_t>& a, const std::pair<std::string_view, size_t>& b) {
        return std::pair<std::string_view, size_t>(a.first, a.second) < b;
      });
  return it != shapes_.end() && it->first == domain && it->second == entry_count;
}

const OverrideValue* DescriptorOverrideTable::Find(const std::string& selector_key) const {
  const auto it = by_key_.find(selector_key);
  return it == by_key_.end() ? nullptr : &it->second;
}

const OverrideValue* DescriptorOverrideTable::FindAdaptive(std::string_view domain,
                                                           std::string_view rule,
                                                           std::string* scratch) const {
  if (adaptive_.empty()) return nullptr;
  std::string temporary;
  std::string* key = scratch != nullptr ? scratch : &temporary;
  Selector::AdaptiveKeyInto(key, domain, rule);
  const auto it = adaptive_.find(*key);
  return it == adaptive_.end() ? nullptr : &it->second;
}

OverrideRestoreCounts RestoreOverrides(const std::vector<OverrideEntry>& entries,
                                       HlcTimestamp persisted_clock, LimitOverrides* map,
                                       HybridClock* hlc) {
  OverrideRestoreCounts counts;
  hlc->Restore(persisted_clock);
  for (const OverrideEntry& entry : entries) {
    switch (map->Merge(entry)) {
      case LimitOverrides::MergeResult::kApplied:
        ++counts.applied;
        break;
      case LimitOverrides::MergeResult::kStale:
        ++counts.stale;
        break;
      case LimitOverrides::MergeResult::kInvalid:
      case LimitOverrides::MergeResult::kFull:
        ++counts.refused;
        continue;  // its stamp moves nothing
    }
    hlc->Restore(entry.stamp);
  }
  return counts;
}

}  // namespace tally::crdt

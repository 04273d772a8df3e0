#include "bench/owner_filter.h"

#include <algorithm>
#include <cassert>
#include <charconv>

namespace tally::load {

std::string LoadUserId(uint64_t index) {
  std::string out;
  FormatLoadUserId(index, &out);
  return out;
}

void FormatLoadUserId(uint64_t index, std::string* out) {
  out->clear();  // not assign("u"): GCC 12 -Wrestrict false positive
  out->push_back('u');
  char digits[24];
  auto [end, ec] = std::to_chars(digits, digits + sizeof(digits), index);
  out->append(digits, end);
}

std::optional<OwnerFilter> OwnerFilter::Parse(std::string_view text, std::string* error) {
  if (text == "all") return All();
  if (text == "local") return Local();
  if (text == "remote") return Remote();
  constexpr std::string_view kNodePrefix = "node=";
  if (text.substr(0, kNodePrefix.size()) == kNodePrefix && text.size() > kNodePrefix.size()) {
    return Node(std::string(text.substr(kNodePrefix.size())));
  }
  *error = "owner filter must be all, local, remote or node=ID, got '" + std::string(text) + "'";
  return std::nullopt;
}

bool OwnerFilter::Keeps(std::string_view owner, std::string_view answerer) const {
  switch (mode_) {
    case Mode::kAll:
      return true;
    case Mode::kLocal:
      return owner == answerer;
    case Mode::kRemote:
      return owner != answerer;
    case Mode::kNode:
      return owner == node_id_;
  }
  return false;
}

std::string OwnerFilter::ToString() const {
  switch (mode_) {
    case Mode::kAll:
      return "all";
    case Mode::kLocal:
      return "local";
    case Mode::kRemote:
      return "remote";
    case Mode::kNode:
      return "node=" + node_id_;
  }
  return "";
}

KeySelection SelectKeys(const OwnerFilter& filter, uint64_t want, uint64_t max_examined,
                        uint64_t chunk, const OwnerLookupBatch& lookup_batch) {
  assert(want >= 1 && chunk >= 1);
  KeySelection s;
  if (!filter.selects()) {
    s.indices.resize(want);
    for (uint64_t i = 0; i < want; ++i) s.indices[i] = i;
    return s;
  }
  s.indices.reserve(want);
  std::vector<uint64_t> candidates;
  while (s.indices.size() < want && s.examined < max_examined) {
    const uint64_t n = std::min(chunk, max_examined - s.examined);
    candidates.resize(n);
    for (uint64_t i = 0; i < n; ++i) candidates[i] = s.examined + i;
    std::vector<OwnerLookup> answers = lookup_batch(candidates);
    if (answers.size() != candidates.size()) {
      s.error = "owner lookup returned " + std::to_string(answers.size()) + " answers for " +
                std::to_string(candidates.size()) + " keys";
      return s;
    }
    for (uint64_t i = 0; i < n && s.indices.size() < want; ++i) {
      const OwnerLookup& a = answers[i];
      const std::string key = LoadUserId(candidates[i]);
      if (!a.ok) {
        s.error = "owner of key " + key + ": " + a.error;
        return s;
      }
      if (a.owner.empty()) {
        s.error = "key " + key + " has no owner in " + a.answerer + "'s view";
        return s;
      }
      if (s.answerer.empty()) {
        s.answerer = a.answerer;
      } else if (a.answerer != s.answerer) {
        s.error = "owner lookups answered by both " + s.answerer + " and " + a.answerer;
        return s;
      }
      ++s.examined;
      ++s.owners[a.owner];
      if (filter.Keeps(a.owner, a.answerer)) s.indices.push_back(candidates[i]);
    }
  }
  if (s.indices.size() < want) {
    std::string seen;
    for (const auto& [owner, count] : s.owners) {
      seen += (seen.empty() ? "" : ", ") + owner + ": " + std::to_string(count);
    }
    s.error = "only " + std::to_string(s.indices.size()) + " of the " + std::to_string(s.examined) +
              " keys examined pass the owner filter '" + filter.ToString() + "' (wanted " +
              std::to_string(want) + "; owners seen: " + (seen.empty() ? "none" : seen) + ")";
  }
  return s;
}

}  // namespace tally::load

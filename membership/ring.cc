#include "membership/ring.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cmath>
#include <map>

namespace tally::membership {
namespace {

uint64_t KeyHash(const crdt::KeyId& key) {
  // KeyIds are XXH3 output already; mixing both halves keeps the ranking
  // sound even for ids that are not (tests use sequential ones).
  return Ring::Mix64(key.low ^ Ring::Mix64(key.high));
}

}  // namespace

// SplitMix64's finalizer (a bijection with full avalanche), the one the key
// ids use; spelled out in crdt/key_id.h, part of the cluster contract.
uint64_t Ring::Mix64(uint64_t x) { return crdt::Mix64(x); }

uint64_t Ring::HashMemberId(std::string_view id) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (unsigned char c : id) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return Mix64(h);
}

Ring::Ring(std::vector<RingMember> members) {
  // Callers usually pass members already sorted by id (a member table's
  // order): then no map is needed.
  const bool sorted_unique =
      std::adjacent_find(members.begin(), members.end(), [](const auto& a, const auto& b) {
        return !(a.id < b.id);
      }) == members.end();
  if (sorted_unique) {
    hashes_.reserve(members.size());
    for (const auto& m : members) {
      assert(m.weight > 0 && std::isfinite(m.weight));
      if (m.weight != 1.0) weighted_ = true;
      hashes_.push_back(HashMemberId(m.id));
    }
    members_ = std::move(members);
    return;
  }
  std::map<std::string, RingMember> by_id;
  for (auto& m : members) {
    assert(m.weight > 0 && std::isfinite(m.weight));
    std::string id = m.id;
    by_id.insert_or_assign(std::move(id), std::move(m));
  }
  for (auto& [id, m] : by_id) {
    if (m.weight != 1.0) weighted_ = true;
    hashes_.push_back(HashMemberId(m.id));
    members_.push_back(std::move(m));
  }
}

size_t Ring::LowerBound(std::string_view id) const {
  return static_cast<size_t>(
      std::lower_bound(members_.begin(), members_.end(), id,
                       [](const RingMember& m, std::string_view v) { return m.id < v; }) -
      members_.begin());
}

void Ring::RecomputeWeighted() {
  weighted_ = std::any_of(members_.begin(), members_.end(),
                          [](const RingMember& m) { return m.weight != 1.0; });
}

std::pair<size_t, bool> Ring::Upsert(RingMember member) {
  assert(member.weight > 0 && std::isfinite(member.weight));
  const size_t i = LowerBound(member.id);
  const bool was_weighted = member.weight != 1.0;
  if (i < members_.size() && members_[i].id == member.id) {
    const bool recompute = members_[i].weight != member.weight;
    members_[i] = std::move(member);
    if (recompute) RecomputeWeighted();
    return {i, false};
  }
  hashes_.insert(hashes_.begin() + static_cast<std::ptrdiff_t>(i), HashMemberId(member.id));
  members_.insert(members_.begin() + static_cast<std::ptrdiff_t>(i), std::move(member));
  if (was_weighted) weighted_ = true;
  return {i, true};
}

std::optional<size_t> Ring::Erase(std::string_view id) {
  const size_t i = LowerBound(id);
  if (i >= members_.size() || members_[i].id != id) return std::nullopt;
  const bool recompute = members_[i].weight != 1.0;
  hashes_.erase(hashes_.begin() + static_cast<std::ptrdiff_t>(i));
  members_.erase(members_.begin() + static_cast<std::ptrdiff_t>(i));
  if (recompute) RecomputeWeighted();
  return i;
}

Ring Ring::FromTable(const MemberTable& table) {
  std::vector<RingMember> members;
  for (const Member* m : table.UpMembers()) members.push_back({m->id, m->address, 1.0});
  return Ring(std::move(members));
}

uint64_t Ring::Score64(uint64_t key_hash, uint64_t member_hash) {
  return Mix64(key_hash ^ member_hash) | 1;
}

double Ring::Score(uint64_t key_hash, size_t i) const {
  const uint64_t s = Score64(key_hash, hashes_[i]);
  // Weighted HRW: -w / ln(u), u uniform in (0, 1) from the mixed bits.
  const double u = (static_cast<double>(s >> 11) + 0.5) * 0x1.0p-53;
  return -members_[i].weight / std::log(u);
}

void Ring::PreferenceList(const crdt::KeyId& key, size_t r, std::vector<uint32_t>* out) const {
  out->clear();
  r = std::min(r, members_.size());
  if (r == 0) return;
  const uint64_t kh = KeyHash(key);
  // Ties (astronomically rare) go to the lower index, i.e. the smaller id, so
  // every node agrees.
  const size_t n = members_.size();
  if (!weighted_ && r <= kMaxFastReplicas && n <= kMaxFastMembers) {
    // Score everyone, then r branch-free passes of "take the maximum": the
    // outcome of each comparison is a coin flip, so branches would mostly
    // mispredict. Scores are never 0 (Score64), so 0 marks a taken member.
    uint64_t scores[kMaxFastMembers];
    for (size_t i = 0; i < n; ++i) scores[i] = Score64(kh, hashes_[i]);
    out->resize(r);
    for (size_t j = 0; j < r; ++j) {
      uint64_t best = 0;
      uint32_t best_i = 0;
      for (size_t i = 0; i < n; ++i) {
        const bool better = scores[i] > best;  // strict: ties keep the lower index
        best = better ? scores[i] : best;
        best_i = better ? static_cast<uint32_t>(i) : best_i;
      }
      (*out)[j] = best_i;
      scores[best_i] = 0;
    }
    return;
  }
  if (!weighted_ && r > kMaxFastReplicas) {
    // A long ranking (routing past the preference list): score all, sort.
    std::vector<std::pair<uint64_t, uint32_t>> scored(n);
    for (size_t i = 0; i < n; ++i) scored[i] = {Score64(kh, hashes_[i]), static_cast<uint32_t>(i)};
    auto better = [](const auto& a, const auto& b) {
      return a.first != b.first ? a.first > b.first : a.second < b.second;
    };
    std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(r), scored.end(),
                      better);
    out->resize(r);
    for (size_t i = 0; i < r; ++i) (*out)[i] = scored[i].second;
    return;
  }
  if (!weighted_ && r <= kMaxFastReplicas) {
    // Large: keep the best r seen so far in a small sorted array, best
    // first; a score equal to one kept goes after it (ties keep the lower
    // index). Most members score below the r-th best and cost one compare.
    std::array<std::pair<uint64_t, uint32_t>, kMaxFastReplicas> best;
    size_t kept = 0;
    for (size_t i = 0; i < n; ++i) {
      const uint64_t s = Score64(kh, hashes_[i]);
      if (kept == r && s <= best[r - 1].first) continue;
      size_t pos = kept == r ? r - 1 : kept++;
      while (pos > 0 && best[pos - 1].first < s) {
        best[pos] = best[pos - 1];
        --pos;
      }
      best[pos] = {s, static_cast<uint32_t>(i)};
    }
    out->resize(kept);
    for (size_t j = 0; j < kept; ++j) (*out)[j] = best[j].second;
    return;
  }
  // Weighted: score everyone and take the top r.
  std::vector<std::pair<double, uint32_t>> scored;
  scored.reserve(n);
  for (size_t i = 0; i < n; ++i) scored.emplace_back(Score(kh, i), static_cast<uint32_t>(i));
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(r), scored.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : a.second < b.second;
                    });
  for (size_t i = 0; i < r; ++i) out->push_back(scored[i].second);
}

std::vector<std::string> Ring::PreferenceIds(const crdt::KeyId& key, size_t r) const {
  std::vector<uint32_t> idx;
  PreferenceList(key, r, &idx);
  std::vector<std::string> ids;
  ids.reserve(idx.size());
  for (uint32_t i : idx) ids.push_back(members_[i].id);
  return ids;
}

uint32_t Ring::OwnerIndex(const crdt::KeyId& key) const {
  assert(!members_.empty());
  const uint64_t kh = KeyHash(key);
  if (weighted_) {
    std::vector<uint32_t> one;
    PreferenceList(key, 1, &one);
    return one[0];
  }
  uint32_t best = 0;
  uint64_t best_score = Score64(kh, hashes_[0]);
  for (size_t i = 1; i < members_.size(); ++i) {
    const uint64_t s = Score64(kh, hashes_[i]);
    if (s > best_score) {
      best_score = s;
      best = static_cast<uint32_t>(i);
    }
  }
  return best;
}

}  // namespace tally::membership

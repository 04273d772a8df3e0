#include "membership/ring.h"

#include <algorithm>
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
  if (!weighted_) {
    // Large: keep the best r seen so far in a small sorted array.
    std::vector<std::pair<uint64_t, uint32_t>> best;
    best.reserve(r + 1);
    for (size_t i = 0; i < n; ++i) {
      const uint64_t s = Score64(kh, hashes_[i]);
      if (best.size() == r && s <= best.back().first) continue;
      auto pos = std::upper_bound(best.begin(), best.end(), s,
                                  [](uint64_t v, const auto& e) { return v > e.first; });
      best.insert(pos, {s, static_cast<uint32_t>(i)});
      if (best.size() > r) best.pop_back();
    }
    for (const auto& [s, i] : best) out->push_back(i);
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

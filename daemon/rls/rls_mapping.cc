#include "daemon/rls/rls_mapping.h"

#include <algorithm>
#include <limits>

namespace tally::rls {
namespace {

uint32_t ClampU32(uint64_t v) {
  return static_cast<uint32_t>(std::min<uint64_t>(v, std::numeric_limits<uint32_t>::max()));
}

}  // namespace

uint64_t CheckRequestId(uint64_t request_id, size_t index) {
  if (request_id == 0) return 0;
  // splitmix64 of (id, index): distinct ids for the checks of one request,
  // unrelated to a client's next (sequential) request ids.
  uint64_t x = request_id + 0x9E3779B97F4A7C15ull * (static_cast<uint64_t>(index) + 1);
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x == 0 ? 1 : x;
}

bool RlsPlan::Build(const rules::RuleSet& rules, const RlsRequest& request, bool global_shadow,
                    std::string* error, const crdt::DescriptorOverrideTable* overrides) {
  global_shadow_ = global_shadow;
  entries_.clear();
  descriptors_.clear();
  checks_.clear();
  runtime_overrides_ = 0;
  adaptive_limits_ = 0;
  if (overrides != nullptr && overrides->empty()) overrides = nullptr;
  if (request.domain.empty()) {
    *error = "rate limit domain must not be empty";
    return false;
  }
  if (request.domain.size() > kMaxDomainBytes) {
    *error = "rate limit domain exceeds 256 bytes";
    return false;
  }
  if (request.descriptors.empty()) {
    *error = "rate limit descriptor list must not be empty";
    return false;
  }
  if (request.descriptors.size() > kMaxDescriptors) {
    *error = "more than 64 descriptors";
    return false;
  }
  size_t total_entries = 0;
  for (const RlsDescriptor& d : request.descriptors) {
    if (d.entries.empty()) {
      *error = "a descriptor has no entries";
      return false;
    }
    if (d.entries.size() > kMaxEntriesPerDescriptor) {
      *error = "a descriptor has more than 16 entries";
      return false;
    }
    for (const RlsEntry& e : d.entries) {
      if (e.key.empty()) {
        *error = "a descriptor entry has an empty key";
        return false;
      }
    }
    total_entries += d.entries.size();
  }
  // Reserve first: descriptors_ hold spans into entries_.
  entries_.reserve(total_entries);
  for (const RlsDescriptor& d : request.descriptors) {
    const size_t first = entries_.size();
    for (const RlsEntry& e : d.entries) entries_.push_back({e.key, e.value});
    std::optional<rules::LimitOverride> limit = d.limit;
    // A runtime override wins over the request's limit and the rules. The
    // selector key is built only for a descriptor whose domain and depth
    // some override has.
    if (overrides != nullptr && overrides->MayMatch(request.domain, d.entries.size())) {
      crdt::Selector::DescriptorKeyStart(&override_key_, request.domain, d.entries.size());
      for (const RlsEntry& e : d.entries) {
        crdt::Selector::DescriptorKeyEntry(&override_key_, e.key, e.value);
      }
      if (const crdt::OverrideValue* o = overrides->Find(override_key_)) {
        limit = rules::LimitOverride{ClampU32(o->limit), rules::UnitOfWindow(o->window_ms),
                                     o->window_ms, true};
        ++runtime_overrides_;
      }
    }
    descriptors_.push_back(
        {std::span<const rules::Entry>(entries_).subspan(first, d.entries.size()), limit});
  }
  rules::Resolve(rules, request.domain, descriptors_, &resolution_);
  const uint64_t hits = request.hits_addend == 0 ? 1 : request.hits_addend;
  for (const rules::ResolvedDescriptor& d : resolution_.descriptors()) {
    if (d.outcome == rules::Outcome::kInvalid) {
      *error = d.error != nullptr ? d.error : "a descriptor cannot be enforced";
      return false;
    }
    if (d.outcome != rules::Outcome::kLimited) continue;
    for (const rules::ResolvedLimit& l : resolution_.LimitsOf(d)) {
      CheckRequestRef c;
      c.user_id = l.user_id;
      c.endpoint = l.endpoint;
      c.limit = l.requests_per_unit;
      // An adaptive rule's limit is the one its controller published, within
      // this member's [min, max] for it whatever a member wrote (an
      // operator's override of the descriptor, or the request's own limit,
      // already replaced the rule's: l.adaptive is null then).
      if (l.adaptive != nullptr && overrides != nullptr && overrides->adaptive_size() > 0) {
        if (const crdt::OverrideValue* o =
                overrides->FindAdaptive(request.domain, l.name, &override_key_)) {
          c.limit = std::clamp<uint64_t>(o->limit, l.adaptive->min, l.adaptive->max);
          ++adaptive_limits_;
        }
      }
      c.window_ms = l.window_ms;
      c.hits = hits;
      c.request_id = CheckRequestId(request.request_id, checks_.size());
      checks_.push_back(c);
    }
  }
  return true;
}

Status RlsPlan::Answer(std::span<const CheckResult> results, RlsAnswer* answer,
                       std::string* error) const {
  if (results.size() != checks_.size()) {
    *error = "internal: result count does not match the checks";
    return Status::kInternal;
  }
  for (const CheckResult& r : results) {
    if (r.status != Status::kOk) {
      *error = r.error.empty() ? std::string(StatusName(r.status)) : r.error;
      return r.status;
    }
  }
  answer->overall_code = Code::kOk;
  answer->statuses.clear();
  answer->shadow_denials = 0;
  size_t next_check = 0;
  for (const rules::ResolvedDescriptor& d : resolution_.descriptors()) {
    RlsStatus status;
    if (d.outcome == rules::Outcome::kUnlimited) {
      status.limit_remaining = std::numeric_limits<uint32_t>::max();
    }
    if (d.outcome == rules::Outcome::kLimited) {
      const std::span<const rules::ResolvedLimit> limits = resolution_.LimitsOf(d);
      size_t reported = limits.size();  // none yet
      bool reported_denies = false;
      for (size_t i = 0; i < limits.size(); ++i) {
        const CheckResult& r = results[next_check + i];
        const bool shadow = global_shadow_ || limits[i].shadow_mode;
        const bool denies = !r.allowed && !shadow;
        if (!r.allowed && shadow) ++answer->shadow_denials;
        if (reported_denies) continue;
        if (denies || reported == limits.size() ||
            r.remaining < results[next_check + reported].remaining) {
          reported = i;
          reported_denies = denies;
        }
      }
      const rules::ResolvedLimit& limit = limits[reported];
      const CheckResult& r = results[next_check + reported];
      status.code = reported_denies ? Code::kOverLimit : Code::kOk;
      // The limit in force: an adaptive rule's published one when it has one.
      status.current_limit = RlsLimit{ClampU32(checks_[next_check + reported].limit), limit.unit,
                                      std::string(limit.name), limit.window_ms};
      status.limit_remaining = ClampU32(r.remaining);
      if (r.allowed) {
        status.duration_until_reset_ms = r.reset_after_ms;
      } else {
        status.duration_until_reset_ms =
            r.retry_after_ms == kNeverFits ? limit.window_ms : r.retry_after_ms;
      }
      if (reported_denies) answer->overall_code = Code::kOverLimit;
      next_check += limits.size();
    }
    answer->statuses.push_back(std::move(status));
  }
  return Status::kOk;
}

std::vector<RateLimitHeader> RateLimitHeaders(const RlsAnswer& answer) {
  const RlsStatus* nearest = nullptr;
  for (const RlsStatus& s : answer.statuses) {
    if (!s.current_limit) continue;
    if (s.code == Code::kOverLimit) {
      nearest = &s;
      break;
    }
    if (nearest == nullptr || s.limit_remaining < nearest->limit_remaining) nearest = &s;
  }
  if (nearest == nullptr) return {};
  // Whole seconds, rounded up: a client that waits RateLimit-Reset seconds
  // must not come back before the window has room.
  const uint64_t reset_s = (nearest->duration_until_reset_ms + 999) / 1000;
  return {{"RateLimit-Limit", std::to_string(nearest->current_limit->requests_per_unit)},
          {"RateLimit-Remaining", std::to_string(nearest->limit_remaining)},
          {"RateLimit-Reset", std::to_string(reset_s)}};
}

}  // namespace tally::rls

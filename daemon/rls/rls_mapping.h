// The mapping between Envoy's rate limit service request/response
// (envoy.service.ratelimit.v3, proto/) and tally's checks, shared by the gRPC
// and HTTP/JSON doors (daemon/rls/). Pure: no I/O, clocks, threads or gRPC
// types; the doors convert their wire form to RlsRequest and RlsAnswer back.
//
// Semantics (docs/ENVOY.md, "Decisions"):
//   * Each descriptor resolves through the rules (rules/rules.h). A descriptor
//     no rule matches (or of an unknown domain) is OK with no current_limit
//     and limit_remaining 0; `unlimited` is OK with limit_remaining
//     4294967295; a limit dropped by `replaces` counts nothing. These follow
//     envoyproxy/ratelimit.
//   * Each limit of a limited descriptor is one tally check (user_id,
//     endpoint, requests_per_unit, window_ms) of hits_addend hits (0 means 1).
//     Checks are independent: a denied limit counts nothing, a limit that
//     admitted counts its hits even if another limit or descriptor of the
//     same request is over (as envoyproxy/ratelimit).
//   * A descriptor is OVER_LIMIT when any of its enforced limits denied; the
//     response is OVER_LIMIT when any descriptor is. A limit in shadow mode
//     (the rule's shadow_mode, or the global flag) is decided and counted as
//     usual, but its denial answers OK and is counted as a shadow denial.
//   * The reported limit of a descriptor (current_limit, limit_remaining,
//     duration_until_reset) is its first enforced denying limit, or else the
//     limit with the fewest remaining hits. duration_until_reset is
//     retry_after_ms for a denial (the window's length when the hits can
//     never fit) and reset_after_ms otherwise.
//   * Invalid input (empty domain, no descriptors, an empty key, an override
//     unit tally cannot enforce, bounds below) rejects the whole request.
//   * Runtime overrides (crdt/limit_overrides.h, docs/ENVOY.md "Runtime
//     overrides"): a descriptor whose (domain, entries) equal a descriptor
//     override's selector gets exactly the override's limit and window, in
//     place of the request's own `limit` and of any rule (its limits, name,
//     shadow_mode, `unlimited` and `replaces`), rule or no rule. The global
//     shadow flag still applies. current_limit's unit is the one of exactly
//     the override's window, else UNKNOWN (the window is in RlsLimit).
#ifndef TALLY_DAEMON_RLS_RLS_MAPPING_H_
#define TALLY_DAEMON_RLS_RLS_MAPPING_H_

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "crdt/limit_overrides.h"
#include "rules/rules.h"
#include "tally/types.h"

namespace tally::rls {

// Bounds on one request: bounded work per message.
inline constexpr size_t kMaxDescriptors = 64;
inline constexpr size_t kMaxEntriesPerDescriptor = rules::kMaxDepth;
inline constexpr size_t kMaxDomainBytes = 256;

struct RlsEntry {
  std::string key;
  std::string value;
};

struct RlsDescriptor {
  std::vector<RlsEntry> entries;
  std::optional<rules::LimitOverride> limit;
};

struct RlsRequest {
  std::string domain;
  std::vector<RlsDescriptor> descriptors;
  uint32_t hits_addend = 0;  // 0 means 1
  // The Cap'n Proto door's request id (0: none; gRPC and HTTP have none).
  // Each check of the request carries an id derived from it and its index,
  // so a client's retry after a lost answer is not counted twice.
  uint64_t request_id = 0;
};

// The id of check `index` of a request with id `request_id` (never 0; 0 for
// a request without an id).
uint64_t CheckRequestId(uint64_t request_id, size_t index);

// RateLimitResponse.Code, same numbers.
enum class Code : uint8_t { kUnknown = 0, kOk = 1, kOverLimit = 2 };

struct RlsLimit {
  uint32_t requests_per_unit = 0;
  rules::Unit unit = rules::Unit::kUnknown;  // kUnknown: a runtime override's odd window
  std::string name;
  uint64_t window_ms = 0;  // the window enforced
};

struct RlsStatus {
  Code code = Code::kOk;
  std::optional<RlsLimit> current_limit;
  uint32_t limit_remaining = 0;
  uint64_t duration_until_reset_ms = 0;
};

struct RlsAnswer {
  Code overall_code = Code::kOk;
  std::vector<RlsStatus> statuses;  // one per request descriptor, same order
  uint32_t shadow_denials = 0;      // limits that denied in shadow mode
};

// The draft-IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-
// headers) as envoyproxy/ratelimit sends them with RESPONSE_HEADERS_ENABLED:
// RateLimit-Limit (requests_per_unit), RateLimit-Remaining and
// RateLimit-Reset (seconds, rounded up) of the descriptor status nearest its
// limit: the first OVER_LIMIT status, or else the status with a
// current_limit and the fewest remaining hits. None when no status has a
// current_limit (nothing matched a rule, or only unlimited ones).
struct RateLimitHeader {
  std::string name;
  std::string value;
};
std::vector<RateLimitHeader> RateLimitHeaders(const RlsAnswer& answer);

// One request's way through the doors: Build (validate + resolve + checks),
// the caller decides checks() through the daemon, then Answer.
// Holds views into `request` and into `rules`: both must outlive the plan's
// last use. Not thread-safe; one per call.
class RlsPlan {
 public:
  RlsPlan() = default;
  RlsPlan(const RlsPlan&) = delete;
  RlsPlan& operator=(const RlsPlan&) = delete;

  // Validates `request` and resolves it against `rules` and the runtime
  // overrides `overrides` (null or empty: none; only read during the call).
  // On success checks() holds one check per limit to enforce (possibly
  // none). On invalid input returns false with `*error` a reason for the
  // client.
  bool Build(const rules::RuleSet& rules, const RlsRequest& request, bool global_shadow,
             std::string* error, const crdt::DescriptorOverrideTable* overrides = nullptr);
  // After Build: how many descriptors a runtime override limited.
  size_t runtime_overrides() const { return runtime_overrides_; }
  // After Build: how many limits took an adaptive rule's published limit
  // (docs/DESIGN.md, "Load-adaptive limits") in place of requests_per_unit.
  size_t adaptive_limits() const { return adaptive_limits_; }

  std::span<const CheckRequestRef> checks() const { return checks_; }
  // After a successful Build: what each descriptor resolved to; its limits,
  // in order, are the checks (for per-rule metrics).
  const rules::Resolution& resolution() const { return resolution_; }
  bool global_shadow() const { return global_shadow_; }

  // Folds `results` (one per check, in order) into `*answer`. If any result
  // is not Status::kOk (over capacity, unavailable, ...) no answer can be
  // given: returns that status with `*error` set; the caller answers with an
  // error so that Envoy applies its failure_mode_deny.
  Status Answer(std::span<const CheckResult> results, RlsAnswer* answer, std::string* error) const;

 private:
  std::vector<rules::Entry> entries_;
  std::vector<rules::Descriptor> descriptors_;
  rules::Resolution resolution_;
  std::vector<CheckRequestRef> checks_;
  std::string override_key_;  // a descriptor's or adaptive rule's selector key, reused
  size_t runtime_overrides_ = 0;
  size_t adaptive_limits_ = 0;
  bool global_shadow_ = false;
};

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_RLS_MAPPING_H_

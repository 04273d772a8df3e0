// What a check's result stands for, as the metrics count it: one mapping for
// the core (which tallies each client reply as it encodes it) and the doors.
// Pure: no I/O.
#ifndef TALLY_DAEMON_CORE_DECISION_KIND_H_
#define TALLY_DAEMON_CORE_DECISION_KIND_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "tally/types.h"

namespace tally::core {

// kShadow: denied by a limit in shadow mode, answered allowed (the Envoy
// doors choose it). kUnavailable: no decision (the cluster did not answer,
// internal errors).
enum class DecisionKind : uint8_t {
  kAllowed,
  kDenied,
  kShadow,
  kInvalid,
  kOverCapacity,
  kUnavailable
};
inline constexpr size_t kDecisionCount = 6;
inline constexpr std::array<std::string_view, kDecisionCount> kDecisionNames = {
    "allowed", "denied", "shadow", "invalid", "over_capacity", "unavailable"};

// The decision a result stands for (kShadow is the caller's to choose).
inline DecisionKind DecisionOf(const CheckResult& r) {
  switch (r.status) {
    case Status::kOk:
      return r.allowed ? DecisionKind::kAllowed : DecisionKind::kDenied;
    case Status::kInvalidArgument:
    case Status::kMalformed:
    case Status::kUnsupportedVersion:
      return DecisionKind::kInvalid;
    case Status::kOverCapacity:
      return DecisionKind::kOverCapacity;
    default:
      return DecisionKind::kUnavailable;
  }
}

// Results by decision, e.g. of one reply datagram.
struct DecisionCounts {
  std::array<uint32_t, kDecisionCount> n{};
  void Add(const CheckResult& r) { ++n[static_cast<size_t>(DecisionOf(r))]; }
};

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_DECISION_KIND_H_

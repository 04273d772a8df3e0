#include "membership/suspicion.h"

#include "membership/timing.h"

namespace tally::membership {

Suspicion::Suspicion(std::string accuser, int k, std::chrono::milliseconds min,
                     std::chrono::milliseconds max, std::chrono::nanoseconds start)
    : k_(k),
      min_(min),
      max_(max),
      start_(start),
      timeout_(timing::SuspicionTimeout(min, max, k, 0)) {
  seen_.insert(std::move(accuser));
}

bool Suspicion::Confirm(std::string_view from) {
  if (confirmations_ >= k_) return false;
  if (!seen_.emplace(from).second) return false;
  ++confirmations_;
  timeout_ = timing::SuspicionTimeout(min_, max_, k_, confirmations_);
  return true;
}

}  // namespace tally::membership

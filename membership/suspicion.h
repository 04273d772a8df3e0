// Suspicion: one Lifeguard suspicion timer. It starts at the maximum timeout
// and shrinks towards the minimum as distinct members independently confirm
// the same suspicion (timing::SuspicionTimeout), so a member that many see
// failing is declared dead sooner while a lone (possibly unhealthy) accuser
// has to wait the longest. Mirrors memberlist's suspicion.go, on injected time.
#ifndef TALLY_MEMBERSHIP_SUSPICION_H_
#define TALLY_MEMBERSHIP_SUSPICION_H_

#include <algorithm>
#include <chrono>
#include <set>
#include <string>
#include <string_view>

namespace tally::membership {

class Suspicion {
 public:
  // `accuser` raised the suspicion at monotonic time `start`; it does not
  // count as a confirmation. k is timing::ExpectedConfirmations.
  Suspicion(std::string accuser, int k, std::chrono::milliseconds min,
            std::chrono::milliseconds max, std::chrono::nanoseconds start);

  // Records an independent confirmation by `from`. Returns true iff it was
  // new and counted (not the accuser, not a repeat, fewer than k so far);
  // then the deadline may move earlier.
  bool Confirm(std::string_view from);

  // Moves the whole timer later by `by`: time we were stalled ourselves (not
  // scheduled, so unable to hear the member's refutation) does not count.
  void Postpone(std::chrono::nanoseconds by) { start_ += by; }

  // Once per suspicion: moves the deadline later by `lag` (at most the
  // timeout), the age of the input we are working through when it expires.
  // Returns false, doing nothing, if it waited so already or that would not
  // move the deadline past `now`.
  bool WaitForInput(std::chrono::nanoseconds lag, std::chrono::nanoseconds now) {
    const std::chrono::nanoseconds by = std::min<std::chrono::nanoseconds>(lag, timeout_);
    if (waited_for_input_ || deadline() + by <= now) return false;
    waited_for_input_ = true;
    start_ += by;
    return true;
  }

  // Monotonic time at which the member is to be declared dead.
  std::chrono::nanoseconds deadline() const { return start_ + timeout_; }
  std::chrono::milliseconds timeout() const { return timeout_; }
  int confirmations() const { return confirmations_; }
  int k() const { return k_; }

 private:
  int k_;
  std::chrono::milliseconds min_, max_;
  std::chrono::nanoseconds start_;
  std::chrono::milliseconds timeout_;
  int confirmations_ = 0;
  bool waited_for_input_ = false;
  std::set<std::string, std::less<>> seen_;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_SUSPICION_H_

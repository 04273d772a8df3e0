#include "daemon/core/forward_rtt.h"

#include <algorithm>

namespace tally::core {

void ForwardRtt::Sample(int64_t rtt_ns) {
  const int64_t r = std::clamp<int64_t>(rtt_ns, 0, kMaxSampleNs);
  if (samples_++ == 0) {
    srtt_ns_ = r;
    rttvar_ns_ = r / 2;
    return;
  }
  // RFC 6298 2.3: rttvar from the old srtt, then srtt.
  const int64_t err = r - srtt_ns_;
  rttvar_ns_ += ((err < 0 ? -err : err) - rttvar_ns_) / 4;
  srtt_ns_ += err / 8;
}

int64_t ForwardRtt::TimeoutNs(int64_t floor_ns, int64_t max_ns) const {
  if (samples_ == 0) return floor_ns;
  return std::clamp<int64_t>(srtt_ns_ + 4 * rttvar_ns_, floor_ns, max_ns);
}

}  // namespace tally::core

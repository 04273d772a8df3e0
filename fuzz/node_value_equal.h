// Field-by-field equality of wire::NodeMessageValue, for round-trip checks.
#ifndef TALLY_FUZZ_NODE_VALUE_EQUAL_H_
#define TALLY_FUZZ_NODE_VALUE_EQUAL_H_

#include <bit>
#include <cstdint>
#include <vector>

#include "wire/node_codec.h"

namespace tally::fuzz {

inline bool SameCheck(const CheckRequest& a, const CheckRequest& b) {
  return a.request_id == b.request_id && a.user_id == b.user_id && a.endpoint == b.endpoint &&
         a.limit == b.limit && a.window_ms == b.window_ms && a.hits == b.hits;
}

inline bool SameResult(const CheckResult& a, const CheckResult& b) {
  return a.request_id == b.request_id && a.status == b.status && a.allowed == b.allowed &&
         a.remaining == b.remaining && a.retry_after_ms == b.retry_after_ms &&
         a.reset_after_ms == b.reset_after_ms && a.limit == b.limit && a.error == b.error;
}

inline bool SameCounter(const wire::CounterValue& a, const wire::CounterValue& b) {
  if (a.key_high != b.key_high || a.key_low != b.key_low || a.bucket_ms != b.bucket_ms ||
      a.span != b.span || a.newest_bucket != b.newest_bucket || a.rows.size() != b.rows.size()) {
    return false;
  }
  for (size_t i = 0; i < a.rows.size(); ++i) {
    if (a.rows[i].slot != b.rows[i].slot || a.rows[i].counts != b.rows[i].counts) return false;
  }
  return true;
}

// Doubles compared by their bits: a NaN read from the wire must come back as
// the same NaN, and NaN != NaN would fail any round trip that carries one.
inline bool SameBits(double a, double b) {
  return std::bit_cast<uint64_t>(a) == std::bit_cast<uint64_t>(b);
}

inline bool SameAdaptiveReports(const std::vector<wire::AdaptiveReportValue>& a,
                                const std::vector<wire::AdaptiveReportValue>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i].domain != b[i].domain || a[i].rule != b[i].rule || a[i].count != b[i].count ||
        !SameBits(a[i].sum, b[i].sum) || !SameBits(a[i].max, b[i].max)) {
      return false;
    }
  }
  return true;
}

inline bool SameNodeValue(const wire::NodeMessageValue& a, const wire::NodeMessageValue& b) {
  if (a.kind != b.kind || a.forwards.size() != b.forwards.size() ||
      a.results.size() != b.results.size() || a.replicate.seq != b.replicate.seq ||
      a.replicate.slots != b.replicate.slots ||
      a.replicate.counters.size() != b.replicate.counters.size() || a.ack_seq != b.ack_seq ||
      a.ack_seqs != b.ack_seqs || a.digest != b.digest || a.digest_is_reply != b.digest_is_reply ||
      a.digest_keys_paused != b.digest_keys_paused || a.overrides_digest != b.overrides_digest ||
      a.overrides != b.overrides || !SameAdaptiveReports(a.adaptive_reports, b.adaptive_reports) ||
      a.delta.seq != b.delta.seq || a.delta.slot != b.delta.slot ||
      a.delta.cells != b.delta.cells || a.delta.relative_buckets != b.delta.relative_buckets ||
      a.delta.compact_cells != b.delta.compact_cells ||
      a.shared_endpoints != b.shared_endpoints) {
    return false;
  }
  for (size_t i = 0; i < a.forwards.size(); ++i) {
    if (a.forwards[i].forward_id != b.forwards[i].forward_id ||
        a.forwards[i].hops != b.forwards[i].hops ||
        !SameCheck(a.forwards[i].check, b.forwards[i].check)) {
      return false;
    }
  }
  for (size_t i = 0; i < a.results.size(); ++i) {
    if (a.results[i].forward_id != b.results[i].forward_id ||
        !SameResult(a.results[i].result, b.results[i].result)) {
      return false;
    }
  }
  for (size_t i = 0; i < a.replicate.counters.size(); ++i) {
    if (!SameCounter(a.replicate.counters[i], b.replicate.counters[i])) return false;
  }
  return true;
}

}  // namespace tally::fuzz

#endif  // TALLY_FUZZ_NODE_VALUE_EQUAL_H_

// Client datagrams (include/tally/check.capnp) as tallyd and the client
// library decode them. Properties: Decode never crashes, leaks or throws on
// any bytes; whatever decodes survives encode -> decode unchanged.
#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "wire/codec.h"

namespace {

using tally::wire::ClientMessageReader;
using tally::wire::MessageKind;

bool SameCheck(const tally::CheckRequestRef& a, const tally::CheckRequestRef& b) {
  return a.request_id == b.request_id && a.user_id == b.user_id && a.endpoint == b.endpoint &&
         a.limit == b.limit && a.window_ms == b.window_ms && a.hits == b.hits;
}

bool SameResult(const tally::CheckResult& a, const tally::CheckResult& b) {
  return a.request_id == b.request_id && a.status == b.status && a.allowed == b.allowed &&
         a.remaining == b.remaining && a.retry_after_ms == b.retry_after_ms &&
         a.reset_after_ms == b.reset_after_ms && a.limit == b.limit && a.error == b.error;
}

// NaN-aware: a NaN offset ("unknown") must stay NaN.
bool SameDouble(double a, double b) { return a == b || (a != a && b != b); }

// Checks field by field, so that a finding names the field.
void CheckSameStatus(const tally::wire::StatusReport& a, const tally::wire::StatusReport& b) {
  FUZZ_CHECK(a.node_id == b.node_id);
  FUZZ_CHECK(a.generation == b.generation);
  FUZZ_CHECK(a.cluster == b.cluster);
  FUZZ_CHECK(a.owning == b.owning);
  FUZZ_CHECK(a.not_owning_reason == b.not_owning_reason);
  FUZZ_CHECK(SameDouble(a.key_share, b.key_share));
  FUZZ_CHECK(a.live_keys == b.live_keys);
  FUZZ_CHECK(a.partition_policy == b.partition_policy);
  FUZZ_CHECK(a.last_known_members == b.last_known_members);
  FUZZ_CHECK(a.counters == b.counters);
  FUZZ_CHECK(a.gossip_address == b.gossip_address);
  FUZZ_CHECK(a.uptime_ms == b.uptime_ms);
  FUZZ_CHECK(a.rules_digest == b.rules_digest);
  FUZZ_CHECK(a.rules_error == b.rules_error);
  FUZZ_CHECK(a.members.size() == b.members.size());
  for (size_t i = 0; i < a.members.size(); ++i) {
    const auto& x = a.members[i];
    const auto& y = b.members[i];
    FUZZ_CHECK(x.id == y.id);
    FUZZ_CHECK(x.state == y.state);
    FUZZ_CHECK(x.incarnation == y.incarnation);
    FUZZ_CHECK(x.generation == y.generation);
    FUZZ_CHECK(x.address == y.address);
    FUZZ_CHECK(SameDouble(x.clock_offset_ms, y.clock_offset_ms));
    FUZZ_CHECK(SameDouble(x.rtt_ms, y.rtt_ms));
  }
}

// Selectors decode within the bounds (or the query keeps only its id).
void CheckSelectorBounds(const tally::wire::LimitSelectorValue& s) {
  FUZZ_CHECK(s.entries.size() <= tally::wire::kMaxLimitSelectorEntries);
}

void CheckSameOverrides(const tally::wire::LimitOverridesReport& a,
                        const tally::wire::LimitOverridesReport& b) {
  // The encoder cuts long errors; everything else is kept.
  FUZZ_CHECK(a.status == b.status);
  FUZZ_CHECK(a.error == b.error.substr(0, 512));
  FUZZ_CHECK(a.next_cursor == b.next_cursor);
  FUZZ_CHECK(a.node_id == b.node_id);
  FUZZ_CHECK(a.overrides == b.overrides);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static ClientMessageReader reader;  // reused, as tallyd's threads do
  static ClientMessageReader again;
  std::string why;
  if (reader.Decode(tally::fuzz::AsBytes(data, size), &why) != tally::Status::kOk) {
    FUZZ_CHECK(!why.empty());
    return 0;
  }
  std::vector<std::byte> encoded;
  switch (reader.kind()) {
    case MessageKind::kChecks:
      tally::wire::EncodeChecks(reader.checks(), &encoded);
      break;
    case MessageKind::kResponses:
      tally::wire::EncodeResponses(reader.responses(), &encoded);
      break;
    case MessageKind::kStatusRequest:
      tally::wire::EncodeStatusRequest(&encoded);
      break;
    case MessageKind::kStatusResponse:
      tally::wire::EncodeStatusResponse(reader.status_report(), &encoded);
      break;
    case MessageKind::kOwnerRequest:
      tally::wire::EncodeOwnerRequest(reader.owner_query(), &encoded);
      break;
    case MessageKind::kOwnerResponse:
      tally::wire::EncodeOwnerResponse(reader.owner_report(), &encoded);
      break;
    case MessageKind::kPaddingRequired:
      tally::wire::EncodePaddingRequired(reader.padding_required_bytes(), &encoded);
      break;
    case MessageKind::kDescriptorCheck: {
      const tally::wire::DescriptorQuery& q = reader.descriptor_query();
      // Decoded within the bounds, or only the id with a reason.
      FUZZ_CHECK(q.descriptors.size() <= tally::wire::kMaxQueryDescriptors);
      for (const auto& d : q.descriptors) {
        FUZZ_CHECK(d.entries.size() <= tally::wire::kMaxQueryEntries);
      }
      if (!reader.descriptor_query_error().empty()) {
        FUZZ_CHECK(q.descriptors.empty() && q.domain.empty());
        return 0;
      }
      tally::wire::EncodeDescriptorCheck(q, &encoded);
      break;
    }
    case MessageKind::kDescriptorCheckResponse:
      tally::wire::EncodeDescriptorCheckResponse(reader.descriptor_report(), &encoded);
      break;
    case MessageKind::kLimitWrite: {
      const tally::wire::LimitWriteQuery& q = reader.limit_write();
      CheckSelectorBounds(q.selector);
      if (!reader.limit_query_error().empty()) {
        // Only the id is kept.
        FUZZ_CHECK(q.selector == tally::wire::LimitSelectorValue{} && q.limit == 0 && !q.remove);
        return 0;
      }
      tally::wire::EncodeLimitWrite(q, &encoded);
      break;
    }
    case MessageKind::kLimitGet:
      CheckSelectorBounds(reader.limit_get().selector);
      if (!reader.limit_query_error().empty()) return 0;
      tally::wire::EncodeLimitGet(reader.limit_get(), &encoded);
      break;
    case MessageKind::kLimitList:
      FUZZ_CHECK(reader.limit_list().cursor.size() <= tally::wire::kMaxLimitCursorBytes);
      if (!reader.limit_query_error().empty()) {
        FUZZ_CHECK(reader.limit_list().cursor.empty());
        return 0;
      }
      tally::wire::EncodeLimitList(reader.limit_list(), &encoded);
      break;
    case MessageKind::kLimitWriteResponse:
      tally::wire::EncodeLimitWriteResponse(reader.limit_write_report(), &encoded);
      break;
    case MessageKind::kSignalReport: {
      const tally::wire::SignalReportQuery& q = reader.signal_report();
      if (!reader.signal_report_error().empty()) {
        // Only the id is kept.
        FUZZ_CHECK(q.domain.empty() && q.rule.empty() && q.count == 1);
        return 0;
      }
      FUZZ_CHECK(q.domain.size() <= tally::wire::kMaxSignalNameBytes &&
                 q.rule.size() <= tally::wire::kMaxSignalNameBytes && q.count >= 1);
      tally::wire::EncodeSignalReport(q, &encoded);
      break;
    }
    case MessageKind::kSignalReportResponse:
      tally::wire::EncodeSignalReportResponse(reader.signal_report_report(), &encoded);
      break;
    case MessageKind::kLimitOverridesResponse:
      for (const auto& o : reader.limit_overrides_report().overrides) {
        CheckSelectorBounds(o.selector);
      }
      tally::wire::EncodeLimitOverridesResponse(reader.limit_overrides_report(), &encoded);
      break;
  }
  // Decoded content may be larger than its bytes (capnp defaults, shared
  // pointers); a re-encoding that no longer fits one datagram is not compared.
  if (encoded.size() > tally::wire::kMaxDatagramBytes) return 0;
  FUZZ_CHECK(again.Decode(encoded, &why) == tally::Status::kOk);
  FUZZ_CHECK(again.kind() == reader.kind());
  switch (reader.kind()) {
    case MessageKind::kChecks:
      FUZZ_CHECK(again.checks().size() == reader.checks().size());
      for (size_t i = 0; i < reader.checks().size(); ++i) {
        FUZZ_CHECK(SameCheck(again.checks()[i], reader.checks()[i]));
      }
      break;
    case MessageKind::kResponses:
      FUZZ_CHECK(again.responses().size() == reader.responses().size());
      for (size_t i = 0; i < reader.responses().size(); ++i) {
        FUZZ_CHECK(SameResult(again.responses()[i], reader.responses()[i]));
      }
      break;
    case MessageKind::kStatusRequest:
      break;
    case MessageKind::kStatusResponse:
      if (again.status_report().members.size() == reader.status_report().members.size()) {
        CheckSameStatus(again.status_report(), reader.status_report());
      } else {  // cut to fit a datagram, and said so
        FUZZ_CHECK(again.status_report().members_truncated);
        FUZZ_CHECK(again.status_report().members.size() < reader.status_report().members.size());
      }
      break;
    case MessageKind::kOwnerRequest:
      FUZZ_CHECK(again.owner_query().user_id == reader.owner_query().user_id);
      FUZZ_CHECK(again.owner_query().endpoint == reader.owner_query().endpoint);
      FUZZ_CHECK(again.owner_query().window_ms == reader.owner_query().window_ms);
      break;
    case MessageKind::kOwnerResponse: {
      const auto& a = again.owner_report();
      const auto& b = reader.owner_report();
      FUZZ_CHECK(a.status == b.status && a.error == b.error && a.node_id == b.node_id &&
                 a.preference_list == b.preference_list && a.state_hash == b.state_hash &&
                 a.holds_key == b.holds_key);
      break;
    }
    case MessageKind::kPaddingRequired:
      FUZZ_CHECK(again.padding_required_bytes() == reader.padding_required_bytes());
      break;
    case MessageKind::kDescriptorCheck: {
      const auto& a = again.descriptor_query();
      const auto& b = reader.descriptor_query();
      FUZZ_CHECK(again.descriptor_query_error().empty());
      FUZZ_CHECK(a.request_id == b.request_id && a.domain == b.domain &&
                 a.hits_addend == b.hits_addend);
      FUZZ_CHECK(a.descriptors.size() == b.descriptors.size());
      for (size_t i = 0; i < a.descriptors.size(); ++i) {
        const auto& x = a.descriptors[i];
        const auto& y = b.descriptors[i];
        FUZZ_CHECK(x.has_limit == y.has_limit && x.requests_per_unit == y.requests_per_unit &&
                   x.unit == y.unit);
        FUZZ_CHECK(x.entries.size() == y.entries.size());
        for (size_t j = 0; j < x.entries.size(); ++j) {
          FUZZ_CHECK(x.entries[j].key == y.entries[j].key);
          FUZZ_CHECK(x.entries[j].value == y.entries[j].value);
        }
      }
      break;
    }
    case MessageKind::kDescriptorCheckResponse: {
      const auto& a = again.descriptor_report();
      const auto& b = reader.descriptor_report();
      // The encoder cuts long names and errors; everything else is kept.
      FUZZ_CHECK(a.request_id == b.request_id && a.status == b.status &&
                 a.overall_code == b.overall_code);
      FUZZ_CHECK(a.error == b.error.substr(0, 512));
      FUZZ_CHECK(a.results.size() == b.results.size());
      for (size_t i = 0; i < a.results.size(); ++i) {
        const auto& x = a.results[i];
        const auto& y = b.results[i];
        FUZZ_CHECK(x.code == y.code && x.has_limit == y.has_limit && x.limit == y.limit &&
                   x.unit == y.unit && x.remaining == y.remaining &&
                   x.retry_after_ms == y.retry_after_ms && x.reset_after_ms == y.reset_after_ms);
        FUZZ_CHECK(x.name == y.name.substr(0, tally::wire::kMaxResultNameBytes));
      }
      break;
    }
    case MessageKind::kLimitWrite:
      FUZZ_CHECK(again.limit_query_error().empty());
      FUZZ_CHECK(again.limit_write() == reader.limit_write());
      break;
    case MessageKind::kLimitGet:
      FUZZ_CHECK(again.limit_query_error().empty());
      FUZZ_CHECK(again.limit_get().selector == reader.limit_get().selector);
      break;
    case MessageKind::kLimitList:
      FUZZ_CHECK(again.limit_query_error().empty());
      FUZZ_CHECK(again.limit_list().cursor == reader.limit_list().cursor);
      break;
    case MessageKind::kLimitWriteResponse: {
      const auto& a = again.limit_write_report();
      const auto& b = reader.limit_write_report();
      FUZZ_CHECK(a.request_id == b.request_id && a.status == b.status && a.outcome == b.outcome &&
                 a.node_id == b.node_id);
      FUZZ_CHECK(a.error == b.error.substr(0, 512));
      break;
    }
    case MessageKind::kLimitOverridesResponse:
      CheckSameOverrides(again.limit_overrides_report(), reader.limit_overrides_report());
      break;
    case MessageKind::kSignalReport: {
      const auto& a = again.signal_report();
      const auto& b = reader.signal_report();
      // The value bit for bit: a NaN is not equal to itself.
      FUZZ_CHECK(a.request_id == b.request_id && a.domain == b.domain && a.rule == b.rule &&
                 a.count == b.count && std::memcmp(&a.value, &b.value, sizeof(double)) == 0);
      break;
    }
    case MessageKind::kSignalReportResponse: {
      const auto& a = again.signal_report_report();
      const auto& b = reader.signal_report_report();
      FUZZ_CHECK(a.request_id == b.request_id && a.status == b.status && a.outcome == b.outcome);
      FUZZ_CHECK(a.error == b.error.substr(0, 512));
      break;
    }
  }
  return 0;
}

#include "daemon/rls/descriptor_wire.h"

#include <algorithm>
#include <vector>

namespace tally::rls {

RlsRequest FromWire(const wire::DescriptorQuery& query) {
  RlsRequest request;
  request.request_id = query.request_id;
  request.domain = query.domain;
  request.hits_addend = query.hits_addend;
  request.descriptors.reserve(query.descriptors.size());
  for (const wire::QueryDescriptor& d : query.descriptors) {
    RlsDescriptor& descriptor = request.descriptors.emplace_back();
    descriptor.entries.reserve(d.entries.size());
    for (const wire::QueryEntry& e : d.entries) descriptor.entries.push_back({e.key, e.value});
    if (d.has_limit) {
      descriptor.limit =
          rules::LimitOverride{d.requests_per_unit, static_cast<rules::Unit>(d.unit)};
    }
  }
  return request;
}

wire::DescriptorReport ToWire(const RlsAnswer& answer, uint64_t request_id) {
  wire::DescriptorReport report;
  report.request_id = request_id;
  report.status = Status::kOk;
  report.overall_code = static_cast<wire::RateCode>(answer.overall_code);
  report.results.reserve(answer.statuses.size());
  for (const RlsStatus& s : answer.statuses) {
    wire::DescriptorOutcome& o = report.results.emplace_back();
    o.code = static_cast<wire::RateCode>(s.code);
    const bool allowed = s.code != Code::kOverLimit;
    o.remaining = s.limit_remaining;
    // As POST /v1/check: one duration, the wait before a retry when denied,
    // else until the window frees what was counted.
    o.retry_after_ms = allowed ? 0 : s.duration_until_reset_ms;
    o.reset_after_ms = s.duration_until_reset_ms;
    if (s.current_limit) {
      o.has_limit = true;
      o.limit = s.current_limit->requests_per_unit;
      o.unit = static_cast<uint8_t>(s.current_limit->unit);
      o.name = s.current_limit->name;
    }
  }
  return report;
}

size_t AnswerBoundOf(const RlsPlan& plan) {
  const rules::Resolution& resolution = plan.resolution();
  std::vector<size_t> names;
  names.reserve(resolution.descriptors().size());
  for (const rules::ResolvedDescriptor& d : resolution.descriptors()) {
    size_t longest = 0;
    if (d.outcome == rules::Outcome::kLimited) {
      for (const rules::ResolvedLimit& l : resolution.LimitsOf(d)) {
        longest = std::max(longest, l.name.size());
      }
    }
    names.push_back(longest);
  }
  return wire::EncodedDescriptorReportBound(names, 0);
}

}  // namespace tally::rls

// The Cap'n Proto form of a rules check (check.capnp protocol 4,
// DescriptorCheckRequest / DescriptorCheckResponse) and the Envoy doors'
// RlsRequest / RlsAnswer (rls_mapping.h), so that tallyd's UDP, Unix and
// seqpacket doors answer a descriptor check through the same RlsPlan as
// gRPC's ShouldRateLimit and HTTP's POST /v1/check. Pure: no I/O.
//
// The answer carries, per descriptor, what POST /v1/check's descriptor form
// answers (v1_check.h): code (overLimit when that descriptor's reported
// limit denied, never for a shadow-mode denial), the reported limit
// (requests per unit, unit, rule name) or none when no rule limits it,
// remaining, retry_after_ms (0 unless over the limit) and reset_after_ms.
#ifndef TALLY_DAEMON_RLS_DESCRIPTOR_WIRE_H_
#define TALLY_DAEMON_RLS_DESCRIPTOR_WIRE_H_

#include <cstddef>
#include <cstdint>

#include "daemon/rls/rls_mapping.h"
#include "wire/codec.h"

namespace tally::rls {

// The decoder's bounds are the doors' (a query within them is not cut).
static_assert(wire::kMaxQueryDescriptors == kMaxDescriptors);
static_assert(wire::kMaxQueryEntries == kMaxEntriesPerDescriptor);

// The query as the doors take it. A unit number tally does not know stays
// as it is, for RlsPlan::Build to reject as the gRPC door does.
RlsRequest FromWire(const wire::DescriptorQuery& query);

// The answer to `request_id` (the request's own id).
wire::DescriptorReport ToWire(const RlsAnswer& answer, uint64_t request_id);

// An upper bound of the encoded answer to a request planned as `plan`
// (Build succeeded): what the reply rule of a datagram door is checked
// against before anything is decided.
size_t AnswerBoundOf(const RlsPlan& plan);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_DESCRIPTOR_WIRE_H_

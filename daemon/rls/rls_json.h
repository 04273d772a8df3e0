// The HTTP door's JSON (POST /json), in the shape of envoyproxy/ratelimit's
// JSON endpoint, which is the proto3 JSON mapping of RateLimitRequest and
// RateLimitResponse: field names in lowerCamelCase or as in the .proto
// (both accepted on input), enums by name (or number on input), durations as
// "1.500s". Pure.
#ifndef TALLY_DAEMON_RLS_RLS_JSON_H_
#define TALLY_DAEMON_RLS_RLS_JSON_H_

#include <string>
#include <string_view>

#include "daemon/rls/rls_mapping.h"

namespace tally::rls {

// Parses a request body. False with `*error` (for a 400) on anything that is
// not a RateLimitRequest: bad JSON, wrong types, unknown fields, numbers out
// of range, more than kMaxDescriptors descriptors, kMaxEntriesPerDescriptor
// entries in one, or a domain over kMaxDomainBytes. The mapping's other rules
// (an empty domain or descriptor list) are RlsPlan::Build's.
bool ParseJsonRequest(std::string_view body, RlsRequest* request, std::string* error);

// {"overallCode":"OK","statuses":[{"code":"OK","currentLimit":{...},
//  "limitRemaining":N,"durationUntilReset":"Ns"}]}; proto3 JSON leaves out
// fields with default values, as ratelimit's answers do.
std::string FormatJsonAnswer(const RlsAnswer& answer);

// {"error":"..."}
std::string FormatJsonError(std::string_view message);

}  // namespace tally::rls

#endif  // TALLY_DAEMON_RLS_RLS_JSON_H_

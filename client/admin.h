// Operator queries to one tallyd, single-node or cluster member: its status
// (`tally status`) and the preference list of a key (`tally owner`). Each is
// one request datagram and one reply, resent up to options.attempts times
// (the queries change nothing, so a resend is harmless). A datagram door may
// answer paddingRequired (a reply is at most 3x its query): the query is then
// sent again padded, and later queries of the kind start at that size.
//
// Thread safety: the functions are reentrant; each opens its own socket.
#ifndef TALLY_CLIENT_ADMIN_H_
#define TALLY_CLIENT_ADMIN_H_

#include <string>

#include "tally/client.h"
#include "wire/codec.h"

namespace tally {

// Fills `*out` from the daemon's status answer. False with `*error` when the
// daemon cannot be reached, does not answer in time, or rejects the request
// (an older daemon answers unsupportedVersion).
bool QueryStatus(const DaemonAddress& address, const ClientOptions& options,
                 wire::StatusReport* out, std::string* error);

// Fills `*out` with who decides `query`'s key in the daemon's view. A bad key
// is answered with out->status == kInvalidArgument (and returns true).
bool QueryOwner(const DaemonAddress& address, const ClientOptions& options,
                const wire::OwnerQuery& query, wire::OwnerReport* out, std::string* error);

// ---- runtime limit overrides (check.capnp protocol 5; `tally limit`) ----
// A write may be resent like the queries: a set or removal that arrives
// twice is stamped twice with the same value, which changes nothing.

// Sets or removes an override through the daemon at `address`. True when
// the daemon answered: `*out` then says how (out->status kOk with outcome
// applied or stale; invalidArgument, overCapacity, permissionDenied (a UDP
// write from a non-loopback source) or unavailable with out->error). False
// with `*error` when it could not be asked or did not answer.
// REQUIRES: selector texts within the protocol's bounds (at most 256 bytes
// each, 16 entries), so the query fits one datagram.
bool WriteLimit(const DaemonAddress& address, const ClientOptions& options,
                const wire::LimitWriteQuery& query, wire::LimitWriteReport* out,
                std::string* error);

// The override the daemon holds for `query.selector`: out->overrides is
// empty (never written or long forgotten) or holds one entry, which may be
// a removal (removed = true). Returns as WriteLimit does.
bool GetLimit(const DaemonAddress& address, const ClientOptions& options,
              const wire::LimitGetQuery& query, wire::LimitOverridesReport* out,
              std::string* error);

// One page of the overrides in force, in the daemon's selector order after
// `query.cursor` ("" = the first page); out->next_cursor is "" on the last
// page, else the cursor of the next. A page fits one reply datagram.
bool ListLimits(const DaemonAddress& address, const ClientOptions& options,
                const wire::LimitListQuery& query, wire::LimitOverridesReport* out,
                std::string* error);

}  // namespace tally

#endif  // TALLY_CLIENT_ADMIN_H_

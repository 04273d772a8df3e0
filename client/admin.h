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

}  // namespace tally

#endif  // TALLY_CLIENT_ADMIN_H_

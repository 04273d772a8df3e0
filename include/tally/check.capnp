# tally client wire protocol: the messages local processes exchange with tallyd
# over UDP, a Unix datagram socket or a Unix seqpacket socket.
#
# Contract (see docs/DESIGN.md, "Wire formats"):
#   * One datagram (or seqpacket message) holds exactly one unpacked Cap'n Proto
#     message whose root is ClientMessage.
#   * This file is only ever extended: fields, union members and enumerants are
#     appended with the next ordinal; nothing is renamed, reordered or reused.
#   * `version` is the highest protocol version the sender speaks. A receiver
#     that sees a newer version still decodes what it knows.
@0xf49df1f72fb85548;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tally::wire");

# 1: checks/responses. 2: adds statusRequest/statusResponse and
# ownerRequest/ownerResponse (operators' questions; see below). 3: adds
# paddingRequired and padding (a query's reply is at most 3x its datagram).
# 4: adds descriptorCheck/descriptorCheckResponse (checks resolved through
# tallyd's Envoy rules, docs/ENVOY.md). 5: adds runtime limit overrides
# (limitWrite, limitGet, limitList and their answers; `tally limit`) and the
# status permissionDenied. 6: adds signalReport/signalReportResponse (a
# backend's signal for a load-adaptive limit; `tally report`).
const protocolVersion :UInt16 = 6;

enum Status {
  ok @0;
  invalidArgument @1;
  overCapacity @2;
  malformed @3;
  unsupportedVersion @4;
  unavailable @5;
  internal @6;
  permissionDenied @7;  # protocol 5: a limit write from a door or source that may not write
}

struct CheckRequest {
  requestId @0 :UInt64;   # client-chosen; retries reuse it; 0 = no dedup
  userId @1 :Data;
  endpoint @2 :Data;
  limit @3 :UInt64;       # at most `limit` hits ...
  windowMs @4 :UInt64;    # ... in any sliding interval of `windowMs`
  hits @5 :UInt64 = 1;    # 0 asks without consuming
}

struct CheckResponse {
  requestId @0 :UInt64;
  status @1 :Status;
  allowed @2 :Bool;
  remaining @3 :UInt64;
  retryAfterMs @4 :UInt64;   # 0xFFFFFFFFFFFFFFFF: can never fit (hits > limit)
  resetAfterMs @5 :UInt64;
  limit @6 :UInt64;
  error @7 :Text;
}

struct ClientMessage {
  version @0 :UInt16;
  union {
    checks @1 :List(CheckRequest);       # client -> daemon, a batch
    responses @2 :List(CheckResponse);   # daemon -> client, same order
    statusRequest @3 :Void;              # client -> daemon: "who are you, whom do you see?"
    statusResponse @4 :StatusResponse;   # daemon -> client
    ownerRequest @5 :OwnerRequest;       # client -> daemon: "who decides this key?"
    ownerResponse @6 :OwnerResponse;     # daemon -> client
    paddingRequired @7 :PaddingRequired; # daemon -> client: send this query again, larger
    paddedStatusRequest @8 :PaddedStatusRequest;  # client -> daemon: statusRequest, padded
    descriptorCheck @9 :DescriptorCheckRequest;           # client -> daemon (protocol 4)
    descriptorCheckResponse @10 :DescriptorCheckResponse; # daemon -> client (protocol 4)
    limitWrite @11 :LimitWriteRequest;               # client -> daemon (protocol 5)
    limitWriteResponse @12 :LimitWriteResponse;      # daemon -> client (protocol 5)
    limitGet @13 :LimitGetRequest;                   # client -> daemon (protocol 5)
    limitList @14 :LimitListRequest;                 # client -> daemon (protocol 5)
    limitOverridesResponse @15 :LimitOverridesResponse;  # daemon -> client: get or list (protocol 5)
    signalReport @16 :SignalReportRequest;           # client -> daemon (protocol 6)
    signalReportResponse @17 :SignalReportResponse;  # daemon -> client (protocol 6)
  }
}

# ---- protocol version 2: operator queries (`tally status`, `tally owner`) ----
# Both are answered by any tallyd, single-node or cluster, from its own view.
# A reply is one datagram: a status listing more members than fit in one is
# cut short and says so (`membersTruncated`).

# One member as the answering node sees it.
struct MemberInfo {
  id @0 :Text;
  state @1 :Text;            # alive, suspect, dead, left
  incarnation @2 :UInt64;
  generation @3 :UInt64;     # one per process start (its start wall time, ms)
  address @4 :Text;          # gossip "ip:port"; empty for a single-node daemon
  clockOffsetMs @5 :Float64; # its wall clock minus ours; NaN when unknown (and for self)
  rttMs @6 :Float64;         # smoothed probe round trip; NaN when unknown
  # Appended with StatusResponse.rulesDigest (docs/ENVOY.md, "Hot reload"):
  # the member's rules digest as it last told the answering node on a ping
  # or ack (32 hex digits), "none" when it has no rules doors, empty when it
  # has not told it yet (and from answerers older than this field).
  rulesDigest @7 :Text;
}

# A named statistic. Names are stable snake_case (e.g. "checks",
# "peer_bytes_sent"); receivers ignore names they do not know.
struct StatusCounter {
  name @0 :Text;
  value @1 :UInt64;
}

struct StatusResponse {
  nodeId @0 :Text;
  generation @1 :UInt64;
  cluster @2 :Bool;            # false: a single-node daemon (no --gossip)
  owning @3 :Bool;             # false while warming up after a join, or when our clock is off
  notOwningReason @4 :Text;
  keyShare @5 :Float64;        # fraction of the key space this node owns, 0..1
  liveKeys @6 :UInt64;
  partitionPolicy @7 :Text;    # availability, proportional, closed
  lastKnownMembers @8 :UInt64; # the membership the partition policy compares against
  members @9 :List(MemberInfo);  # self included, sorted by id
  membersTruncated @10 :Bool;
  counters @11 :List(StatusCounter);
  gossipAddress @12 :Text;     # empty for a single-node daemon
  uptimeMs @13 :UInt64;
  # Peer authentication (docs/RELIABILITY.md, "Peer authentication"); empty
  # for a single-node daemon.
  clusterName @14 :Text;       # in every seal's associated data
  peerAuth @15 :Text;          # sealed | unsealed-loopback | unsealed
  keyIds @16 :List(Text);      # installed keys (8 hex digits each), the primary first
  keyringError @17 :Text;      # why the last keyring reload failed; empty if it did not

  # Appended for Envoy's rate limit service (docs/ENVOY.md); empty while tallyd's
  # --grpc and --http doors are both off.
  rulesDigest @18 :Text;       # digest of the rules in force, 32 hex digits
  rulesError @19 :Text;        # why the last rules reload failed (file:line: reason); empty if it did not
}

# ---- protocol version 3: padded queries ----
# A reply to a client datagram (UDP or a Unix datagram socket) is at most 3x
# the datagram's bytes, so a forged source address buys no amplification. A
# status or owner reply that would be larger is not sent: the daemon answers
# paddingRequired, and the client sends the same query again with `padding`
# making it at least `requestBytes` long (paddedStatusRequest for a status
# query). Seqpacket connections are exempt (their peer cannot be forged). The
# padding lives inside the query structs so that no other message grows.
struct PaddingRequired {
  requestBytes @0 :UInt32;  # the smallest query datagram this reply needs
}

struct PaddedStatusRequest {
  padding @0 :Data;  # ignored; any bytes
}

struct OwnerRequest {
  userId @0 :Data;
  endpoint @1 :Data;
  windowMs @2 :UInt64;
  padding @3 :Data;  # protocol 3; ignored; any bytes
}

struct OwnerResponse {
  status @0 :Status;               # ok, or invalidArgument for a bad key
  error @1 :Text;
  nodeId @2 :Text;                 # who answered
  preferenceList @3 :List(Text);   # member ids, the owner first, in the answerer's view
  stateHash @4 :UInt64;            # the answerer's replica of the key (0: holds nothing);
                                   # replicas that agree have equal hashes
  holdsKey @5 :Bool;
}

# ---- protocol version 4: descriptor checks ----
# Envoy's rate limit request (RateLimitRequest) in Cap'n Proto: a domain and
# descriptors, resolved through the rules tallyd loaded with --rules, and
# decided by the same path as its gRPC ShouldRateLimit and HTTP POST /v1/check
# (docs/ENVOY.md). Answered by tallyd only when its rules doors run (--grpc or
# --http); otherwise the answer is status unavailable.
#
# Bounds: at most 64 descriptors of at most 16 entries each (more: status
# invalidArgument, nothing decided). Reply size: a result is a few words plus
# its rule's name (cut to 256 bytes), so the answer always fits one datagram.
# On a datagram door the reply bound of protocol 3 holds: tallyd resolves the
# descriptors first and, if the answer could exceed 3x the request, answers
# paddingRequired WITHOUT deciding anything; the client sends the same request
# again with `padding`.

enum RateLimitCode {   # Envoy's RateLimitResponse.Code, same numbers
  unknown @0;
  ok @1;
  overLimit @2;
}

enum RateLimitUnit {   # Envoy's RateLimitResponse.RateLimit.Unit, same numbers
  unknown @0;
  second @1;
  minute @2;
  hour @3;
  day @4;
  month @5;
  year @6;
  week @7;
}

struct DescriptorEntry {
  key @0 :Text;       # must not be empty
  value @1 :Text;
}

# A request's own limit for one descriptor (Envoy's RateLimitDescriptor.limit).
struct DescriptorLimit {
  requestsPerUnit @0 :UInt32;
  unit @1 :RateLimitUnit;
}

struct Descriptor {
  entries @0 :List(DescriptorEntry);
  limit @1 :DescriptorLimit;   # optional: when set it replaces the rules' limit
}

struct DescriptorCheckRequest {
  requestId @0 :UInt64;        # client-chosen; a retry reuses it and is not counted twice; 0 = no dedup
  domain @1 :Text;
  descriptors @2 :List(Descriptor);
  hitsAddend @3 :UInt32;       # 0 means 1
  padding @4 :Data;            # ignored; any bytes (see paddingRequired)
}

# One descriptor's answer, the fields of POST /v1/check's descriptor form.
# With several limits on a descriptor it reports the first enforced limit
# that denied, or else the one with the fewest remaining hits.
struct DescriptorResult {
  code @0 :RateLimitCode;      # ok or overLimit (a shadow-mode denial is ok)
  hasLimit @1 :Bool;           # false: no rule limits it (limit, unit, name unset)
  limit @2 :UInt32;            # requests per unit
  unit @3 :RateLimitUnit;
  name @4 :Text;               # the rule's name; may be empty
  remaining @5 :UInt32;        # 4294967295 for an `unlimited` rule
  retryAfterMs @6 :UInt64;     # 0 unless overLimit
  resetAfterMs @7 :UInt64;
}

struct DescriptorCheckResponse {
  requestId @0 :UInt64;
  status @1 :Status;           # not ok: nothing to report, see error
  error @2 :Text;
  overallCode @3 :RateLimitCode;   # overLimit if any descriptor is
  results @4 :List(DescriptorResult);  # one per request descriptor, same order
}

# ---- protocol version 5: runtime limit overrides (`tally limit`) ----
# An operator sets, reads, lists and removes limit overrides without a
# restart (docs/DESIGN.md, "Runtime limit overrides"; docs/OPERATIONS.md).
# A write goes to the member that received it, which stamps it and spreads
# it to every member; reads answer from the receiver's own map.
#
# Access: writes are accepted on the Unix socket doors (their file mode
# decides who may connect) and on UDP only from a loopback source address;
# any other source gets status permissionDenied and nothing is written.
# Reads (get, list) are answered wherever status is.
#
# Reply bound (protocol 3): on a datagram door every answer is at most 3x
# its request, or paddingRequired is answered instead (nothing is written
# then); a list is paged (`cursor`) to what fits.

# What an override selects: an Envoy rules descriptor, or one explicit key.
struct LimitSelector {
  union {
    descriptor @0 :LimitDescriptorSelector;
    key @1 :LimitKeySelector;
  }
}

struct LimitDescriptorSelector {
  domain @0 :Text;
  entries @1 :List(DescriptorEntry);  # in order, as Envoy sends them; at most 16
}

struct LimitKeySelector {
  userId @0 :Data;
  endpoint @1 :Data;
  windowMs @2 :UInt64;  # the check's window: the key (user, endpoint, window) is overridden
}

struct LimitWriteRequest {
  requestId @0 :UInt64;         # echoed in the answer
  selector @1 :LimitSelector;
  remove @2 :Bool;              # true: remove the override (limit, unit, windowMs ignored)
  limit @3 :UInt64;             # hits per window, at most 2^32-1; 0 denies every hit
  unit @4 :RateLimitUnit;       # descriptor form: the window as second, minute, hour or day ...
  windowMs @5 :UInt64;          # ... or in ms when unit is unknown; the key form ignores both
  padding @6 :Data;             # ignored; any bytes (see paddingRequired)
}

enum LimitWriteOutcome {
  none @0;       # not attempted (see status)
  applied @1;    # in force here and on its way to every member
  stale @2;      # this member already holds a later write of the selector
  invalid @3;    # outside the bounds (status invalidArgument, error says which)
  full @4;       # too many selectors already (status overCapacity)
}

struct LimitWriteResponse {
  requestId @0 :UInt64;
  status @1 :Status;            # ok (applied or stale), invalidArgument, overCapacity,
                                # permissionDenied, unavailable
  error @2 :Text;
  outcome @3 :LimitWriteOutcome;
  nodeId @4 :Text;              # the member that took the write
}

struct LimitGetRequest {
  selector @0 :LimitSelector;
  padding @1 :Data;             # ignored; any bytes
}

struct LimitListRequest {
  cursor @0 :Data;              # empty: from the start; else a reply's nextCursor
  padding @1 :Data;             # ignored; any bytes (a larger request gets a longer page)
}

# One override as the answering member holds it.
struct LimitOverrideInfo {
  selector @0 :LimitSelector;
  removed @1 :Bool;             # get only: its removal is in force
  limit @2 :UInt64;
  windowMs @3 :UInt64;          # the window the limit counts over
  updatedMs @4 :Int64;          # wall ms of the write in force (its hybrid clock stamp)
}

struct LimitOverridesResponse {
  status @0 :Status;            # ok, or invalidArgument for a bad selector or cursor
  error @1 :Text;
  overrides @2 :List(LimitOverrideInfo);  # get: none (never written) or one; list: a page of those in force
  nextCursor @3 :Data;          # list: empty on the last page, else send it as the next cursor
  nodeId @4 :Text;              # who answered
}

# A backend's signal for a load-adaptive limit (docs/DESIGN.md, "Load-adaptive
# limits"): `count` requests that rule's limit let through saw `value` on
# average (latency_ms: their mean latency in ms; error_rate: errors / count).
struct SignalReportRequest {
  requestId @0 :UInt64;         # echoed in the answer
  domain @1 :Text;              # the rules domain, at most 256 bytes
  rule @2 :Text;                # the adaptive limit's `name`, at most 256 bytes
  value @3 :Float64;
  count @4 :UInt64;             # 0 means 1; every request the value covers, not a sample
  padding @5 :Data;             # ignored; any bytes (see paddingRequired)
}

enum SignalReportOutcome {
  none @0;          # not taken (see status)
  accepted @1;      # summed here and sent on to the rule's owner
  unknownRule @2;   # no adaptive limit of that name in the rules in force here (status invalidArgument)
  invalid @3;       # value or count out of the signal's range (status invalidArgument)
}

struct SignalReportResponse {
  requestId @0 :UInt64;
  status @1 :Status;            # ok, invalidArgument, permissionDenied (UDP from a
                                # non-loopback source), unavailable (no rules door)
  error @2 :Text;
  outcome @3 :SignalReportOutcome;
}

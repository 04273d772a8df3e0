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

const protocolVersion :UInt16 = 1;

enum Status {
  ok @0;
  invalidArgument @1;
  overCapacity @2;
  malformed @3;
  unsupportedVersion @4;
  unavailable @5;
  internal @6;
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
  }
}

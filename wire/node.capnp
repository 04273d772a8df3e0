# tally node-to-node messages other than membership: forwarded checks,
# counter replication, anti-entropy and handoff. They travel inside
# PeerMessage (wire/peer.capnp) as its `node` member, over the gossip
# UDP socket (each datagram <= 1400 bytes) or, for bulk state, over TCP.
#
# Contract: only ever extended (append fields, union members, enumerants with
# the next ordinal); nothing renamed, reordered or reused.
@0xa42cf48ac3b9bace;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tally::wire");

# Internal (not for embedders) and compiled from wire/; the client protocol it
# reuses stays public in include/tally/check.capnp.
using Check = import "/tally/check.capnp";

struct KeyRef {
  high @0 :UInt64;
  low @1 :UInt64;
}

# A replica slot: the node and the process start (generation) that counted.
struct Slot {
  nodeId @0 :Text;
  generation @1 :UInt64;
}

# One key's windowed G-Counter. counts of each row hold buckets
# newestBucket - span .. newestBucket, oldest first (span + 1 entries).
struct CounterState {
  key @0 :KeyRef;
  bucketMs @1 :UInt32;
  span @2 :UInt16;
  newestBucket @3 :Int64;
  rows @4 :List(Row);
  struct Row {
    slot @0 :UInt16;          # index into the message's slot table
    counts @1 :List(UInt32);
  }
}

struct ForwardedCheck {
  forwardId @0 :UInt64;       # the forwarder's id for this item
  hops @1 :UInt8;             # 1 for a first forward; relays add one
  check @2 :Check.CheckRequest;
  # Protocol version 5 (sent only to members that say 5 or later): when not
  # zero, the check's endpoint is left out (null) and is that of item
  # endpointOfItem - 1 of this list, an earlier item that carries its own.
  # Forwards in one message share their endpoint more often than not, and
  # an endpoint is 10-30 bytes that packing cannot shrink.
  endpointOfItem @3 :UInt16;
}

struct ForwardedResult {
  forwardId @0 :UInt64;
  response @1 :Check.CheckResponse;
}

struct NodeMessage {
  union {
    forward @0 :List(ForwardedCheck);
    forwardReply @1 :List(ForwardedResult);
    replicate @2 :Replicate;     # deltas from a deciding node, acknowledged
    replicateAck @3 :UInt64;     # the seq acknowledged
    digest @4 :Digest;           # anti-entropy summary
    statePush @5 :Replicate;     # repair/handoff state, not acknowledged
    handoffRequest @6 :Void;     # a (re)joining node asks for its keys
    handoffDone @7 :Void;        # everything for the requester was pushed
    overrides @8 :List(LimitOverride);  # runtime limit overrides (crdt/limit_overrides.h)
    adaptiveReports @9 :List(AdaptiveReport);  # to an adaptive rule's owner (daemon/core/adaptive_host.h)
    replicateDelta @10 :ReplicateDelta;  # protocol version 2: a decider's changed cells, acknowledged
    replicateAcks @11 :List(UInt64);     # protocol version 4: several seqs acknowledged at once
  }
}

# What a decider's own decisions changed since its last replication round:
# one cell (key, bucket) of its own slot per entry, with the cell's current
# value, so a join (max per cell) makes a resend or a reordering harmless.
# Sent only to members whose messages carry protocol version 2 or later; a
# resend of an unacknowledged delta carries the keys' whole state as
# `replicate`. 40 bytes per cell against ~130 per key as CounterState.
struct ReplicateDelta {
  seq @0 :UInt64;               # acknowledged with replicateAck, as replicate
  slot @1 :Slot;                # the sender's own slot: every cell counts its hits
  cells @2 :List(Cell);
  # Protocol version 4 (sent only to members that say 4 or later): when
  # relativeBuckets is set, every cell's bucket is
  # floor(bucketBaseMs / bucketMs) + bucketOffset and its `bucket` field is
  # left zero (a wall-clock bucket number is 5-6 bytes that packing cannot
  # shrink; an offset from the round's earliest cell is 0 to 2).
  bucketBaseMs @3 :Int64;       # >= 0
  relativeBuckets @4 :Bool;
  # Protocol version 5 (sent only to members that say 5 or later): the cells
  # may travel as compactCells instead (then `cells` is empty and
  # relativeBuckets set), 3 words each instead of 5: a cell names its
  # geometry by index into `geometries` (a round's cells share a few) and
  # its bucket is floor(bucketBaseMs / bucketMs) + bucketOffset.
  geometries @5 :List(Geometry);
  compactCells @6 :List(CompactCell);
  struct Geometry {
    bucketMs @0 :UInt32;
    span @1 :UInt16;
  }
  struct CompactCell {
    keyHigh @0 :UInt64;
    keyLow @1 :UInt64;
    count @2 :UInt32;
    bucketOffset @3 :UInt16;
    geometry @4 :UInt8;         # index into geometries
  }
  struct Cell {
    keyHigh @0 :UInt64;
    keyLow @1 :UInt64;
    bucket @2 :Int64;
    count @3 :UInt32;
    bucketMs @4 :UInt32;        # the key's geometry, as in CounterState
    span @5 :UInt16;
    bucketOffset @6 :UInt32;    # with relativeBuckets (protocol version 4)
  }
}

# What clients reported about one adaptive rule's backend since the last
# report of this sender, summed: `count` requests whose signal (latency in ms,
# or errors as 0/1) adds up to `sum`; `max` the largest single report's value.
# Sums add across members, so a member sends one per rule per flush, not one
# per client report.
struct AdaptiveReport {
  domain @0 :Data;
  rule @1 :Data;                # the limit's name, unique among its domain's adaptive limits
  sum @2 :Float64;
  count @3 :UInt64;
  max @4 :Float64;
}

# One entry of the runtime limit overrides map: a selector, its value (or a
# removal) and the hybrid logical clock stamp of the write that made it.
struct LimitOverride {
  kind @0 :UInt8;               # 1 descriptor (domain + entries), 2 explicit (user, endpoint, window),
                                # 3 adaptive (domain + rule): the limit an adaptive rule's controller published
  domain @1 :Data;
  entries @2 :List(Entry);
  user @3 :Data;
  endpoint @4 :Data;
  selectorWindowMs @5 :UInt64;  # explicit form
  removed @6 :Bool;
  limit @7 :UInt64;
  windowMs @8 :UInt64;          # descriptor form
  stampWallMs @9 :Int64;
  stampLogical @10 :UInt32;
  writer @11 :UInt64;           # hash of the writing member's id
  rule @12 :Data;               # kind 3: the adaptive limit's name
  struct Entry {
    key @0 :Data;
    value @1 :Data;
  }
}

struct Replicate {
  seq @0 :UInt64;
  slots @1 :List(Slot);
  counters @2 :List(CounterState);
}

# xor of per-key state hashes, per range of the key space, over the keys
# both sender and receiver should hold.
struct Digest {
  ranges @0 :List(UInt64);
  isReply @1 :Bool;
  overridesDigest @2 :UInt64;   # LimitOverrides::Digest() of the sender (0: none held)
  # The sender's key table is full: send it no key repairs (it would refuse
  # the keys it lacks) and expect none. `ranges` still carry the sender's real
  # hashes (a reply echoes the asker's), so an older member that ignores the
  # flag pushes no more than before. The overrides still compare.
  keysPaused @3 :Bool;
}

# tally peer protocol: what tallyd nodes say to each other. Version 1 carries
# SWIM + Lifeguard membership (membership/swim.h) and, as the `node` member,
# the node messages of wire/node.capnp (forwarded checks,
# replication, anti-entropy, handoff).
#
# Contract (see docs/DESIGN.md, "Wire formats"):
#   * One datagram holds exactly one Cap'n Proto message whose root is
#     PeerMessage, unpacked (node messages to a member of version 3 or later:
#     packed, after the byte 0xB1), at most max_packet_bytes (1400 by
#     default) for membership.
#     PushPull (the full member table) may be larger and travels over a
#     stream, one framed PeerMessage per frame; the codec does not care.
#   * This file is only ever extended: fields, union members and enumerants are
#     appended with the next ordinal; nothing is renamed, reordered or reused.
#     New PeerMessage fields take ordinals from @14 on (Ping's from @3,
#     Ack's from @2).
#   * `version` is the highest protocol version the sender speaks. A receiver
#     that sees a newer version still decodes what it knows; an unknown union
#     member decodes as "unsupported", an unknown MemberState drops only that
#     update.
#   * Ids and addresses are Text: member names and "ip:port", at most 255 bytes.
@0xf6a008d60cea1ded;

using Cxx = import "/capnp/c++.capnp";
$Cxx.namespace("tally::wire::peer");

using Node = import "node.capnp";

# 1: the first. 2: NodeMessage.replicateDelta (sent only to a member whose
# messages say 2 or later). 3: node messages may be packed: the byte 0xB1,
# then the PeerMessage in Cap'n Proto's packed encoding (sent only to a
# member whose messages say 3 or later; wire/peer_codec.h). 4: a replication
# delta may give its cells' buckets relative to a base
# (ReplicateDelta.relativeBuckets), and the acknowledgements of one batch of
# input travel as one NodeMessage.replicateAcks (both sent only to a member
# that says 4 or later). 5: forwarded checks may refer to an earlier item's
# endpoint (ForwardedCheck.endpointOfItem) and delta cells may travel
# compact (ReplicateDelta.compactCells), both sent only to a member that says
# 5 or later.
const protocolVersion :UInt16 = 5;

# Also the precedence among rumors of equal (generation, incarnation).
enum MemberState {
  alive @0;
  suspect @1;
  dead @2;
  left @3;
}

# A rumor about one member. A member is a name plus the process holding it:
# `generation` is unique per process start, `incarnation` counts that
# process's refutations. Rumors are ordered by (generation, incarnation, state).
struct MemberUpdate {
  id @0 :Text;
  address @1 :Text;          # "ip:port" of the member's gossip socket
  generation @2 :UInt64;
  incarnation @3 :UInt64;
  state @4 :MemberState;
  origin @5 :Text;           # who asserted suspect/dead; empty otherwise
}

struct Ping {
  seq @0 :UInt64;
  targetId @1 :Text;         # only the member of this name may answer
  rulesDigest @2 :Data;      # the sender's Envoy rules digest, 16 bytes; unset
                             # without rules doors (docs/ENVOY.md, "Hot reload")
  viewDigest @3 :UInt64;     # the sender's up set (Swim::ViewDigest); 0: unset
}

struct Ack {
  seq @0 :UInt64;            # of the Ping (or PingReq, when relayed)
  rulesDigest @1 :Data;      # the sender's (a relaying member's own), as on Ping
  viewDigest @2 :UInt64;     # the sender's, as on Ping
}

struct PingReq {
  seq @0 :UInt64;
  targetId @1 :Text;
  targetAddress @2 :Text;
  wantNack @3 :Bool;         # Lifeguard: nack when the target stays silent
}

struct Nack {
  seq @0 :UInt64;            # of the PingReq
}

struct Gossip {}             # only the piggybacked rumors

struct PushPull {
  reply @0 :Bool;            # false: the receiver answers with its own state
  join @1 :Bool;
  members @2 :List(MemberUpdate);   # the sender's whole table
}

struct PeerMessage {
  version @0 :UInt16;
  senderId @1 :Text;
  senderAddress @2 :Text;
  senderGeneration @3 :UInt64;
  senderWallMs @4 :Int64;    # sender's wall clock at send (clock offsets)
  union {
    ping @5 :Ping;
    ack @6 :Ack;
    pingReq @7 :PingReq;
    nack @8 :Nack;
    gossip @9 :Gossip;
    pushPull @10 :PushPull;
    node @13 :Node.NodeMessage;   # not membership: routing and replication
  }
  piggyback @11 :List(MemberUpdate);
  senderIncarnation @12 :UInt64;   # the sender's own incarnation: a message
                                   # from a member is first-hand news of it
}

// The kinds of peer message a Node counts traffic by (status counters
// peer_{sent,received}_{messages,bytes}_KIND, metrics
// tally_cluster_peer_{messages,bytes}_by_kind_total{kind="KIND"}).
#ifndef TALLY_DAEMON_CORE_PEER_KINDS_H_
#define TALLY_DAEMON_CORE_PEER_KINDS_H_

#include <array>
#include <cstddef>

#include "wire/node_codec.h"

namespace tally::core {

// Peer message kinds, for traffic counters: SWIM's, then the node messages'
// (wire::NodeMessageValue::Kind, in its order).
inline constexpr std::array<const char*, 12> kPeerMessageKindNames = {
    "swim",          "forward",   "forward_reply",    "replicate",
    "replicate_ack", "digest",    "state_push",       "handoff_request",
    "handoff_done",  "overrides", "adaptive_reports", "replicate_delta"};
static_assert(static_cast<size_t>(wire::NodeMessageValue::Kind::kReplicateDelta) + 2 ==
                  kPeerMessageKindNames.size(),
              "a node message kind without a traffic counter name");
inline constexpr size_t kSwimKindIndex = 0;
inline size_t PeerKindIndex(wire::NodeMessageValue::Kind kind) {
  return 1 + static_cast<size_t>(kind);
}

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_PEER_KINDS_H_

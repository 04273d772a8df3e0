// Helpers shared by the Node's source files (node*.cc) and nothing else:
// not part of the Node's interface.
#ifndef TALLY_DAEMON_CORE_NODE_INTERNAL_H_
#define TALLY_DAEMON_CORE_NODE_INTERNAL_H_

#include <cstddef>
#include <cstdint>

#include "wire/node_codec.h"

namespace tally::core::node_internal {

using Kind = wire::NodeMessageValue::Kind;

// Milliseconds as the nanoseconds of a monotonic Instant.
inline int64_t Ms(int64_t ms) { return ms * 1'000'000; }

// A state push goes over the peer stream: up to this much per message.
inline constexpr size_t kPushBudgetBytes = 256 * 1024;
// Frozen state messages kept per peer (FreezeOwedState): repeated clock
// steps keep the latest.
inline constexpr size_t kMaxFrozenPerPeer = 64;
// And pushed for at most this long (10 minutes).
inline constexpr int64_t kMaxFrozenLifetimeMs = 600'000;

}  // namespace tally::core::node_internal

#endif  // TALLY_DAEMON_CORE_NODE_INTERNAL_H_

// CheckGateway: how an in-process door (gRPC, HTTP: daemon/rls/) asks the
// daemon for decisions through the same path as the UDP and Unix clients.
//
//   * single-node mode: one Limiter::CheckBatch, exactly as MessageProcessor
//     does for a checks datagram;
//   * cluster mode: the checks are encoded as one checks message and handed
//     to ClusterDriver::HandleClientDatagrams like a received datagram, so
//     the Node routes, forwards and replicates them as it does any client's;
//     its reply (possibly split over several messages) is decoded and matched
//     to the checks by order (the Node answers a batch in request order).
//
// There is no second limiter: the gateway only moves requests and results.
//
// Thread safety: Decide() may be called from any thread at any time while
// the daemon runs. `done` runs exactly once: synchronously in single-node
// mode, on an I/O thread in cluster mode, or (cluster mode) when the driver
// drops the reply (no answer within its reply expiry, or shutdown), then with
// every result Status::kUnavailable.
#ifndef TALLY_DAEMON_IO_CHECK_GATEWAY_H_
#define TALLY_DAEMON_IO_CHECK_GATEWAY_H_

#include <functional>
#include <span>
#include <vector>

#include "tally/limiter.h"
#include "tally/types.h"

namespace tally::io {

class BusiestKeys;
class ClusterDriver;
class LocalOverrides;

class CheckGateway {
 public:
  // Receives one result per check, in check order; the span is valid during
  // the call only.
  using Done = std::function<void(std::span<const CheckResult>)>;

  // Exactly one of `limiter` and `cluster` is non-null; both are borrowed and
  // must outlive every Decide() call. `keys` (optional, borrowed): where
  // Decide offers its checks for the status page's busiest keys.
  // `overrides` (optional, borrowed, with `limiter`): a single node's runtime
  // limit overrides, applied as the Cap'n Proto doors apply them (a
  // cluster's Node applies its own).
  CheckGateway(Limiter* limiter, ClusterDriver* cluster, BusiestKeys* keys = nullptr,
               LocalOverrides* overrides = nullptr);

  // Decides `checks` (1 <= size; the views need only live during the call).
  // A batch whose encoded size would not fit one checks message
  // (wire::kMaxDatagramBytes) is answered kInvalidArgument without a decision,
  // in both modes, so a request behaves alike on every member.
  void Decide(std::span<const CheckRequestRef> checks, Done done);

  LimiterStats limiter_stats() const;

 private:
  Limiter* limiter_;
  ClusterDriver* cluster_;
  BusiestKeys* keys_;
  LocalOverrides* overrides_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_CHECK_GATEWAY_H_

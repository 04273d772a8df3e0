// Calls of the client library that only tally's own tools use (tally-load and
// the client's tests), kept out of the embedder API in include/tally/client.h.
//
// Thread safety and ownership as for tally::Client: one per thread; it owns
// its socket.
#ifndef TALLY_CLIENT_CLIENT_INTERNAL_H_
#define TALLY_CLIENT_CLIENT_INTERNAL_H_

#include <chrono>
#include <cstddef>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "tally/client.h"
#include "tally/types.h"

namespace tally {

// A Client with low-level pipelining for load generators: send one batch
// datagram without waiting, then poll replies.
class PipelinedClient : public Client {
 public:
  // As Client::Connect.
  static std::unique_ptr<PipelinedClient> Connect(const DaemonAddress& address,
                                                  const ClientOptions& options, std::string* error);

  // Sends `requests` as one datagram, with the ids as given (take them from
  // NextRequestId()), and never resends. False with `*error` when a request's
  // key is too large, the batch does not fit one datagram, the kernel dropped
  // the datagram, or the peer is gone. An empty batch sends nothing (true).
  virtual bool SendBatch(std::span<const CheckRequestRef> requests, std::string* error) = 0;
  // Waits at most `timeout` for a first datagram, then takes what is already
  // queued (a bounded number of datagrams); appends every result of every
  // datagram that arrived and returns the number appended. Neither matches
  // nor filters ids, and also accepts an echoed request message (what a raw
  // echo server returns): each echoed check yields
  // CheckResult{request_id, status = kOk, allowed = true}. Undecodable
  // datagrams are dropped; a gone peer ends the wait early.
  virtual size_t Receive(std::chrono::milliseconds timeout, std::vector<CheckResult>* out) = 0;
  // The socket's file descriptor, still owned by the client (for getsockopt).
  virtual int native_handle() const = 0;
};

}  // namespace tally

#endif  // TALLY_CLIENT_CLIENT_INTERNAL_H_

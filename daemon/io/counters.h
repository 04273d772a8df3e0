// Transport counters shared by every I/O handler of one Daemon.
// Thread safety: all members are atomics, updated with relaxed ordering (they
// are statistics, not synchronization).
#ifndef TALLY_DAEMON_IO_COUNTERS_H_
#define TALLY_DAEMON_IO_COUNTERS_H_

#include <atomic>
#include <cstdint>

namespace tally::io {

struct Counters {
  std::atomic<uint64_t> datagrams_in{0};   // messages received on any transport
  std::atomic<uint64_t> datagrams_out{0};  // replies handed to the kernel
  std::atomic<uint64_t> malformed{0};      // undecodable, oversized or `responses` messages
  std::atomic<uint64_t> send_errors{0};    // replies that could not be sent (or had no address)
  // Status/owner queries on a datagram door too small for their reply
  // (answered paddingRequired; check.capnp, protocol 3).
  std::atomic<uint64_t> queries_padding_required{0};
  // Accepts that failed for want of a file descriptor (EMFILE, ENFILE), by
  // door; the acceptor backs off (daemon/io/accept_backoff.h).
  std::atomic<uint64_t> accept_fd_exhausted_seqpacket{0};
  std::atomic<uint64_t> accept_fd_exhausted_peer{0};  // peer streams (cluster TCP)
  std::atomic<uint64_t> accept_fd_exhausted_http{0};  // the HTTP door (daemon/rls/)

  static void Add(std::atomic<uint64_t>& c, uint64_t n) {
    if (n != 0) c.fetch_add(n, std::memory_order_relaxed);
  }
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_COUNTERS_H_

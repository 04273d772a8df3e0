// AcceptBackoff: what an acceptor does after accept() failed. Out of file
// descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM), the
// listener stays readable and the connection stays in the backlog, so
// accepting again at once spins a core without ever succeeding. The acceptor
// waits Failed()'s delay instead, doubling from kFirstDelay to kMaxDelay over
// consecutive failures; the next accepted connection resets it, so accepting
// resumes at most kMaxDelay after descriptors are free again.
//
// Failures for want of a descriptor are counted in `fd_exhausted` (status and
// /metrics: tally_accept_fd_exhausted_total{door}); every failure is logged
// at most once per kLogInterval per acceptor, with how many since the last
// line.
//
// Thread safety: an acceptor has one accept outstanding at a time, so one
// object is used by one handler at a time and needs no lock; the counter is
// an atomic any thread may read.
#ifndef TALLY_DAEMON_IO_ACCEPT_BACKOFF_H_
#define TALLY_DAEMON_IO_ACCEPT_BACKOFF_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

namespace tally::io {

class AcceptBackoff {
 public:
  static constexpr std::chrono::milliseconds kFirstDelay{10};
  static constexpr std::chrono::milliseconds kMaxDelay{1000};
  static constexpr std::chrono::seconds kLogInterval{60};

  // `door` names the acceptor in the log ("http", "seqpacket", "peer").
  // `fd_exhausted` is borrowed and may be null (nothing counted).
  AcceptBackoff(std::string door, std::atomic<uint64_t>* fd_exhausted);

  // After an accept failed with `error_number` (an errno value; the errors
  // worth retrying at once, EINTR, EAGAIN and ECONNABORTED, must not come
  // here): counts it, logs it if kLogInterval has passed since the last line
  // (`now` is steady time), and returns how long to wait before accepting
  // again.
  std::chrono::milliseconds Failed(int error_number, std::chrono::steady_clock::time_point now);
  // After an accept succeeded: the next failure waits kFirstDelay again.
  void Succeeded() { delay_ = kFirstDelay; }

  static bool IsFdExhaustion(int error_number);
  // The most Failed() calls an acceptor that waits each delay can make within
  // `elapsed` of its first failure (consecutive failures, no success): what a
  // test holds a real acceptor to instead of timing it.
  static uint64_t MaxFailuresWithin(std::chrono::milliseconds elapsed);

 private:
  std::string door_;
  std::atomic<uint64_t>* fd_exhausted_;
  std::chrono::milliseconds delay_ = kFirstDelay;
  std::optional<std::chrono::steady_clock::time_point> last_log_;
  uint64_t unlogged_ = 0;  // failures since the last log line
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_ACCEPT_BACKOFF_H_

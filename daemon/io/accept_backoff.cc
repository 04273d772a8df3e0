#include "daemon/io/accept_backoff.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>

namespace tally::io {

AcceptBackoff::AcceptBackoff(std::string door, std::atomic<uint64_t>* fd_exhausted)
    : door_(std::move(door)), fd_exhausted_(fd_exhausted) {}

bool AcceptBackoff::IsFdExhaustion(int error_number) {
  return error_number == EMFILE || error_number == ENFILE;
}

std::chrono::milliseconds AcceptBackoff::Failed(int error_number,
                                                std::chrono::steady_clock::time_point now) {
  if (fd_exhausted_ != nullptr && IsFdExhaustion(error_number)) {
    fd_exhausted_->fetch_add(1, std::memory_order_relaxed);
  }
  const std::chrono::milliseconds wait = delay_;
  delay_ = std::min(delay_ * 2, kMaxDelay);
  ++unlogged_;
  if (!last_log_ || now - *last_log_ >= kLogInterval) {
    spdlog::warn(
        "{} accept failed: {}; waiting {} ms before the next (doubling up to {} ms); {} failures "
        "since the last such line",
        door_, std::strerror(error_number), wait.count(), kMaxDelay.count(), unlogged_);
    last_log_ = now;
    unlogged_ = 0;
  }
  return wait;
}

uint64_t AcceptBackoff::MaxFailuresWithin(std::chrono::milliseconds elapsed) {
  // The first failure comes at 0; each next one only after the delay.
  uint64_t failures = 1;
  std::chrono::milliseconds at{0}, delay = kFirstDelay;
  while (at + delay <= elapsed) {
    at += delay;
    ++failures;
    delay = std::min(delay * 2, kMaxDelay);
  }
  return failures;
}

}  // namespace tally::io

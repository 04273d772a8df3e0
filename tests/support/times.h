// Instants for tests: readings of the wall clock (ms since the Unix epoch) and
// the monotonic clock, which the node logic takes apart (tally/types.h).
#ifndef TALLY_TESTS_SUPPORT_TIMES_H_
#define TALLY_TESTS_SUPPORT_TIMES_H_

#include <chrono>
#include <cstdint>

#include "tally/types.h"

namespace tally::testing {

// The wall clock reads `wall_ms` and the monotonic clock `monotonic_ms`.
inline Instant AtMs(int64_t wall_ms, int64_t monotonic_ms) {
  return Instant{std::chrono::milliseconds(wall_ms),
                 std::chrono::nanoseconds(std::chrono::milliseconds(monotonic_ms))};
}

// Both clocks read `ms`: a machine whose wall clock never stepped.
inline Instant AtMs(int64_t ms) { return AtMs(ms, ms); }

// Only the wall clock is set (the monotonic clock reads 0), for code that
// reads wall time alone.
inline Instant AtWallMs(int64_t wall_ms) { return AtMs(wall_ms, 0); }

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_TIMES_H_

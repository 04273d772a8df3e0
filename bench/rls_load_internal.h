// What bench/rls_load.cc's clients share (not part of tally-load's API).
#ifndef TALLY_BENCH_RLS_LOAD_INTERNAL_H_
#define TALLY_BENCH_RLS_LOAD_INTERNAL_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "bench/rls_load.h"

namespace tally::load {

using Clock = std::chrono::steady_clock;

// Connecting gets at least this long, whatever the per-call timeout.
inline constexpr std::chrono::milliseconds kMinConnectTimeout{5000};

// False with `*error` unless every count and duration of `o` is positive.
bool ValidOptions(const RlsLoadOptions& o, std::string* error);
// Microseconds from `from` to `to`, clamped to [0, UINT32_MAX].
uint32_t ElapsedUs(Clock::time_point from, Clock::time_point to);
// Fills the rates and percentiles of `*result` from the run's samples
// (sorts them).
void Summarize(std::vector<uint32_t>* latencies_us, double seconds, RlsLoadResult* result);
// One more error; the first one's text is kept.
void CountError(RlsLoadResult* result, const std::string& what);
// "v<n>" for the next n, cycling over [0, values).
std::string DescriptorValue(uint64_t* next_value, uint64_t values);

// The gRPC load over nghttp2 (bench/rls_load_h2.cc); options already valid.
bool RunGrpcLoadNghttp2(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error);

}  // namespace tally::load

#endif  // TALLY_BENCH_RLS_LOAD_INTERNAL_H_

// tally-memory: measures the resident memory a LimiterCore needs per live key.
//
//   tally-memory --keys 1000000 [--buckets-per-window 10]
//
// Reads VmRSS before and after inserting N distinct keys (one admitted hit
// each, dedup off) and prints the delta per key next to KeyStore's own
// estimate, KeyStore::MemoryBytes(). Ids are formatted on the fly, so the
// delta holds only what the core allocated.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include "daemon/core/limiter_core.h"
#include "tally/types.h"

namespace {

// Resident set size in bytes, from /proc/self/status (VmRSS is in kB).
long long ReadRssBytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6) * 1024;
  }
  return -1;
}

int Usage(const char* argv0) {
  std::fprintf(stderr, "usage: %s --keys N [--buckets-per-window B]\n", argv0);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t keys = 1'000'000;
  uint64_t buckets_per_window = 10;
  for (int i = 1; i < argc; ++i) {
    auto value = [&](uint64_t* out) {
      if (i + 1 >= argc) return false;
      char* end = nullptr;
      *out = std::strtoull(argv[++i], &end, 10);
      return end != nullptr && *end == '\0';
    };
    bool ok = false;
    if (std::strcmp(argv[i], "--keys") == 0) {
      ok = value(&keys);
    } else if (std::strcmp(argv[i], "--buckets-per-window") == 0) {
      ok = value(&buckets_per_window);
    }
    if (!ok) return Usage(argv[0]);
  }
  if (keys == 0 || buckets_per_window == 0 || buckets_per_window > 1000) return Usage(argv[0]);

  const long long rss_before = ReadRssBytes();
  tally::core::LimiterCoreOptions options;
  options.buckets_per_window = static_cast<uint32_t>(buckets_per_window);
  options.max_keys = keys + 1;
  tally::core::LimiterCore core(options);

  char user[32];
  tally::CheckRequestRef request;
  request.request_id = 0;  // no dedup entry: measure the key table alone
  request.endpoint = "/api/v1/orders";
  request.limit = 100;
  request.window_ms = 60'000;
  request.hits = 1;
  const tally::Instant now{std::chrono::milliseconds(1'700'000'000'000),
                           std::chrono::nanoseconds(1)};
  for (uint64_t i = 0; i < keys; ++i) {
    int n = std::snprintf(user, sizeof user, "user-%llu", static_cast<unsigned long long>(i));
    request.user_id = std::string_view(user, static_cast<size_t>(n));
    tally::CheckResult result = core.Check(request, now);
    if (!result.allowed) {
      std::fprintf(stderr, "key %llu was not admitted: %s\n", static_cast<unsigned long long>(i),
                   result.error.c_str());
      return 1;
    }
  }
  const long long rss_after = ReadRssBytes();

  const long long delta = rss_after - rss_before;
  const size_t live = core.store().size();
  const size_t estimate = core.store().MemoryBytes();
  std::printf(
      "keys=%zu buckets_per_window=%llu rss_delta_bytes=%lld bytes_per_key=%.1f "
      "store_memory_bytes=%zu store_bytes_per_key=%.1f\n",
      live, static_cast<unsigned long long>(buckets_per_window), delta,
      static_cast<double>(delta) / static_cast<double>(live), estimate,
      static_cast<double>(estimate) / static_cast<double>(live));
  return live == keys ? 0 : 1;
}

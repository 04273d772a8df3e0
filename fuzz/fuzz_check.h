// What every harness in fuzz/ shares: a property check that stops the run
// (libFuzzer records the input as a crash) and a view of the input as bytes.
#ifndef TALLY_FUZZ_FUZZ_CHECK_H_
#define TALLY_FUZZ_FUZZ_CHECK_H_

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

// Unlike assert(), never compiled out: a broken property is the finding.
#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace tally::fuzz {

inline std::span<const std::byte> AsBytes(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const std::byte*>(data), size};
}

}  // namespace tally::fuzz

#endif  // TALLY_FUZZ_FUZZ_CHECK_H_

// Resolve is on the hot path: once a Resolution has grown to a request's
// size, resolving again allocates nothing. Counted by replacing the global
// operator new in this test binary.
#include <gtest/gtest.h>

#include <cstdlib>
#include <new>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace {
thread_local size_t allocations = 0;
}  // namespace

void* operator new(size_t size) {
  ++allocations;
  if (void* p = std::malloc(size == 0 ? 1 : size)) return p;
  throw std::bad_alloc();
}
// Every form that pairs with the deletes below is replaced too: ASan's own
// nothrow new (std::stable_sort's temporary buffer) freed by this free() is an
// alloc-dealloc mismatch.
void* operator new(size_t size, const std::nothrow_t&) noexcept {
  ++allocations;
  return std::malloc(size == 0 ? 1 : size);
}
void* operator new[](size_t size) { return operator new(size); }
void* operator new[](size_t size, const std::nothrow_t& tag) noexcept {
  return operator new(size, tag);
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete[](void* p, size_t) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }

namespace tally::rules {
namespace {

TEST(ResolveAllocTest, NoAllocationOnceGrown) {
  auto rules = testing::MustBuild(R"(
domain: api
descriptors:
  - key: tenant
    value: acme-*
    share_threshold: true
    descriptors:
      - key: user
        rate_limits:
          - {unit: second, requests_per_unit: 10, name: burst}
          - {unit: hour, requests_per_unit: 1000}
  - key: plan
    rate_limit: {unit: minute, requests_per_unit: 5, replaces: [{name: burst}]}
  - key: ip
    rate_limit: {unit: second, requests_per_unit: 3}
)");
  ASSERT_NE(rules, nullptr);
  const Entry nested[] = {{"tenant", "acme-eu"}, {"user", "u-1234567890"}};
  const Entry plan[] = {{"plan", "free"}};
  const Entry ip[] = {{"ip", "192.168.100.200"}};
  const Entry none[] = {{"nothing", "here"}};
  const Descriptor request[] = {
      {nested, std::nullopt},
      {plan, std::nullopt},
      {ip, LimitOverride{9, Unit::kMinute}},
      {none, std::nullopt},
      {ip, LimitOverride{9, Unit::kMinute}},  // and an override's key for another domain below
  };
  Resolution resolution;
  Resolve(*rules, "api", request, &resolution);  // grows the buffers
  Resolve(*rules, "unknown-domain", request, &resolution);
  ASSERT_EQ(resolution.descriptors().size(), 5u);

  const size_t before = allocations;
  for (int i = 0; i < 100; ++i) {
    Resolve(*rules, "api", request, &resolution);
    Resolve(*rules, "unknown-domain", request, &resolution);
  }
  EXPECT_EQ(allocations - before, 0u);
  Resolve(*rules, "api", request, &resolution);
  EXPECT_EQ(resolution.descriptors()[0].outcome, Outcome::kLimited);
  EXPECT_EQ(resolution.descriptors()[0].limit_count, 1u);  // burst replaced by plan
  EXPECT_EQ(resolution.descriptors()[2].outcome, Outcome::kLimited);
  EXPECT_EQ(resolution.descriptors()[3].outcome, Outcome::kNoLimit);
}

}  // namespace
}  // namespace tally::rules

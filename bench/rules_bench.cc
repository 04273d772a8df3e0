// Resolve's cost per request for a few rule shapes, beside a floor measured
// in the same run (one hash-map look-up of a string of the same size), so the
// figures read as ratios (docs/PERFORMANCE.md). Also the per-rule counters'
// cost per call (daemon/rls/rule_counters.h) on 1 and 2 threads, beside the
// mutex-and-map code they replaced, kept here as the reference. Run:
//   build/bin/tally-rules-bench
#include <benchmark/benchmark.h>

#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "daemon/rls/rule_counters.h"
#include "rules/rules.h"

namespace tally::rules {
namespace {

std::shared_ptr<const RuleSet> Build(const std::string& yaml) {
  const RuleSource source{"bench.yaml", yaml};
  BuildResult result = BuildRuleSet({&source, 1});
  if (!result.ok()) {
    for (const RuleError& e : result.errors) std::fprintf(stderr, "%s\n", e.ToString().c_str());
    std::abort();
  }
  return result.rules;
}

// 1000 exact values under one key, plus a key-only default and a wildcard.
std::shared_ptr<const RuleSet> FlatRules() {
  std::string yaml = "domain: edge\ndescriptors:\n";
  yaml += "  - key: remote_address\n    rate_limit: {unit: second, requests_per_unit: 10}\n";
  yaml +=
      "  - key: remote_address\n    value: 10.9.*\n    rate_limit: {unit: second, "
      "requests_per_unit: 5}\n";
  for (int i = 0; i < 1000; ++i) {
    yaml += "  - key: remote_address\n    value: 10.0." + std::to_string(i / 256) + "." +
            std::to_string(i % 256) + "\n    rate_limit: {unit: minute, requests_per_unit: 100}\n";
  }
  return Build(yaml);
}

// Three levels, a wildcard in the middle, two limits at the leaf.
std::shared_ptr<const RuleSet> NestedRules() {
  return Build(R"(
domain: api
descriptors:
  - key: tenant
    value: acme
    descriptors:
      - key: path
        value: /v1/upload/*
        descriptors:
          - key: user_id
            rate_limits:
              - {unit: second, requests_per_unit: 10}
              - {unit: hour, requests_per_unit: 1000}
  - key: tenant
    descriptors:
      - key: path
        descriptors:
          - key: user_id
            rate_limit: {unit: minute, requests_per_unit: 60, name: default_user}
  - key: plan
    value: premium
    rate_limit: {unit: minute, requests_per_unit: 600, replaces: [{name: default_user}]}
)");
}

void RunResolve(benchmark::State& state, const RuleSet& rules, const std::string& domain,
                const std::vector<std::vector<Entry>>& request) {
  std::vector<Descriptor> descriptors;
  for (const auto& entries : request) descriptors.push_back(Descriptor{entries, std::nullopt});
  Resolution resolution;
  for (auto _ : state) {
    Resolve(rules, domain, descriptors, &resolution);
    benchmark::DoNotOptimize(resolution.limits().data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Floor_StringMapFind(benchmark::State& state) {
  // One look-up of a ~30-byte string in a 1000-entry map: the cost of the
  // simplest rule table one could write.
  std::unordered_map<std::string, int> map;
  for (int i = 0; i < 1000; ++i)
    map.emplace("1/14:remote_address=8:10.0.0." + std::to_string(i), i);
  const std::string key = "1/14:remote_address=8:10.0.0.77";
  for (auto _ : state) {
    benchmark::DoNotOptimize(map.find(key));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Floor_StringMapFind);

void BM_Resolve_ExactAmong1000(benchmark::State& state) {
  auto rules = FlatRules();
  RunResolve(state, *rules, "edge", {{{"remote_address", "10.0.1.7"}}});
}
BENCHMARK(BM_Resolve_ExactAmong1000);

void BM_Resolve_KeyOnlyFallback(benchmark::State& state) {
  auto rules = FlatRules();
  RunResolve(state, *rules, "edge", {{{"remote_address", "192.168.1.1"}}});
}
BENCHMARK(BM_Resolve_KeyOnlyFallback);

void BM_Resolve_UnknownDomain(benchmark::State& state) {
  auto rules = FlatRules();
  RunResolve(state, *rules, "nobody", {{{"remote_address", "10.0.1.7"}}});
}
BENCHMARK(BM_Resolve_UnknownDomain);

void BM_Resolve_Nested3WildcardTwoLimits(benchmark::State& state) {
  auto rules = NestedRules();
  RunResolve(state, *rules, "api",
             {{{"tenant", "acme"}, {"path", "/v1/upload/photos"}, {"user_id", "u-123456"}}});
}
BENCHMARK(BM_Resolve_Nested3WildcardTwoLimits);

void BM_Resolve_ThreeDescriptorsWithReplaces(benchmark::State& state) {
  auto rules = NestedRules();
  RunResolve(state, *rules, "api",
             {{{"tenant", "other"}, {"path", "/v1/list"}, {"user_id", "u-123456"}},
              {{"plan", "premium"}},
              {{"tenant", "acme"}, {"path", "/v1/upload/photos"}, {"user_id", "u-123456"}}});
}
BENCHMARK(BM_Resolve_ThreeDescriptorsWithReplaces);

void BM_Resolve_Override(benchmark::State& state) {
  auto rules = FlatRules();
  const std::vector<Entry> entries = {{"remote_address", "10.0.1.7"}};
  const Descriptor descriptor{entries, LimitOverride{50, Unit::kSecond}};
  Resolution resolution;
  for (auto _ : state) {
    Resolve(*rules, "edge", {&descriptor, 1}, &resolution);
    benchmark::DoNotOptimize(resolution.limits().data());
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_Resolve_Override);

// ---- per-rule counters: one decided call of three descriptors (three rule
// limits, a fourth replaced) counted, as RlsServer::Impl::CountDecided does. ----

const std::vector<std::vector<Entry>>& CountedRequest() {
  static const std::vector<std::vector<Entry>> request = {
      {{"tenant", "other"}, {"path", "/v1/list"}, {"user_id", "u-123456"}},
      {{"plan", "premium"}},
      {{"tenant", "acme"}, {"path", "/v1/upload/photos"}, {"user_id", "u-123456"}}};
  return request;
}

// The replaced code: one mutex per call, a (rule, name) key built and looked
// up per limit.
struct MutexMapCounters {
  struct Counters {
    uint64_t hits = 0, over_limit = 0, near_limit = 0, shadow_mode = 0;
  };
  std::mutex mu;
  std::map<std::pair<std::string, std::string>, Counters, std::less<>> map;

  void CountCall(const Resolution& resolution, uint64_t hits) {
    std::lock_guard<std::mutex> lock(mu);
    for (const ResolvedDescriptor& d : resolution.descriptors()) {
      if (d.outcome != Outcome::kLimited) continue;
      for (const ResolvedLimit& l : resolution.LimitsOf(d)) {
        if (l.from_override) continue;
        auto key = std::make_pair(std::string(d.rule_path), std::string(l.name));
        auto it = map.find(key);
        if (it == map.end()) it = map.emplace(std::move(key), Counters{}).first;
        it->second.hits += hits;
        // Allowed, 10 of 60 left: not near the limit.
        const uint64_t limit = 60, remaining = 10;
        if ((limit - remaining) * 5 >= limit * 4) it->second.near_limit += hits;
      }
    }
  }
};

void BM_RuleCounters_MutexMap(benchmark::State& state) {
  static auto* rules = new std::shared_ptr<const RuleSet>(NestedRules());
  static auto* counters = new MutexMapCounters;
  std::vector<Descriptor> descriptors;
  for (const auto& entries : CountedRequest()) {
    descriptors.push_back(Descriptor{entries, std::nullopt});
  }
  Resolution resolution;
  Resolve(**rules, "api", descriptors, &resolution);
  for (auto _ : state) counters->CountCall(resolution, 1);
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RuleCounters_MutexMap)->Threads(1)->Threads(2)->UseRealTime();

void BM_RuleCounters_LockFreeTable(benchmark::State& state) {
  static auto* rules = new std::shared_ptr<const RuleSet>(NestedRules());
  static auto* counters = new rls::RuleCounters;
  static auto* table =
      new std::shared_ptr<const rls::RuleCounters::Table>(counters->TableFor(**rules));
  std::vector<Descriptor> descriptors;
  for (const auto& entries : CountedRequest()) {
    descriptors.push_back(Descriptor{entries, std::nullopt});
  }
  Resolution resolution;
  Resolve(**rules, "api", descriptors, &resolution);
  for (auto _ : state) {
    const rls::RuleCounters::Table& t = **table;
    for (const ResolvedDescriptor& d : resolution.descriptors()) {
      if (d.outcome != Outcome::kLimited) continue;
      for (const ResolvedLimit& l : resolution.LimitsOf(d)) {
        if (l.rule_limit >= t.size()) continue;
        rls::RuleCounters::Count(*t[l.rule_limit], 1, /*allowed=*/true, /*shadow=*/false,
                                 /*limit=*/60, /*remaining=*/10);
      }
    }
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_RuleCounters_LockFreeTable)->Threads(1)->Threads(2)->UseRealTime();

}  // namespace
}  // namespace tally::rules

BENCHMARK_MAIN();

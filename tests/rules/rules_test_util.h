// Helpers shared by the rules tests.
#ifndef TALLY_TESTS_RULES_RULES_TEST_UTIL_H_
#define TALLY_TESTS_RULES_RULES_TEST_UTIL_H_

#include <gtest/gtest.h>

#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "rules/rules.h"

namespace tally::rules::testing {

// Builds one file's rules; a build error fails the calling test.
inline std::shared_ptr<const RuleSet> MustBuild(const std::string& yaml,
                                                const std::string& name = "test.yaml") {
  const RuleSource source{name, yaml};
  BuildResult result = BuildRuleSet({&source, 1});
  for (const RuleError& e : result.errors) ADD_FAILURE() << e.ToString();
  return result.rules;
}

// The errors of one file's build ("" joined by newlines when none).
inline std::vector<RuleError> BuildErrors(const std::string& yaml,
                                          const std::string& name = "test.yaml") {
  const RuleSource source{name, yaml};
  BuildResult result = BuildRuleSet({&source, 1});
  EXPECT_EQ(result.ok(), result.errors.empty());
  return result.errors;
}

inline std::string Joined(const std::vector<RuleError>& errors) {
  std::string out;
  for (const RuleError& e : errors) out += e.ToString() + "\n";
  return out;
}

// A request descriptor that owns its strings.
struct Desc {
  Desc() = default;
  Desc(std::vector<std::pair<std::string, std::string>> e,  // NOLINT: brace-init in tests
       std::optional<LimitOverride> l = std::nullopt)
      : entries(std::move(e)), limit(l) {}
  std::vector<std::pair<std::string, std::string>> entries;
  std::optional<LimitOverride> limit;
};

// Resolves a request; keeps the entries alive as long as the views are used.
class Resolver {
 public:
  const Resolution& Run(const RuleSet& rules, const std::string& domain,
                        const std::vector<Desc>& request) {
    entries_.clear();
    entries_.reserve(request.size());
    for (const Desc& d : request) {
      entries_.emplace_back();
      for (const auto& [k, v] : d.entries) entries_.back().push_back(Entry{k, v});
    }
    descriptors_.clear();
    for (size_t i = 0; i < request.size(); ++i) {
      descriptors_.push_back(Descriptor{entries_[i], request[i].limit});
    }
    Resolve(rules, domain, descriptors_, &resolution_);
    return resolution_;
  }
  // One descriptor; returns its resolution.
  const ResolvedDescriptor& One(const RuleSet& rules, const std::string& domain, Desc d) {
    keep_ = {std::move(d)};
    return Run(rules, domain, keep_).descriptors()[0];
  }
  const Resolution& resolution() const { return resolution_; }
  std::span<const ResolvedLimit> LimitsOf(const ResolvedDescriptor& d) const {
    return resolution_.LimitsOf(d);
  }

 private:
  std::vector<Desc> keep_;
  std::vector<std::vector<Entry>> entries_;
  std::vector<Descriptor> descriptors_;
  Resolution resolution_;
};

}  // namespace tally::rules::testing

#endif  // TALLY_TESTS_RULES_RULES_TEST_UTIL_H_

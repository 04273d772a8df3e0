// Malformed rules never crash, hang or throw: a corpus of broken files and
// many seeded mutations of valid ones each end in a rule set or in errors
// with positions inside the file.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "rules/rules.h"
#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

namespace fs = std::filesystem;

// Builds `text` and checks the outcome is well formed; resolves a few
// descriptors when it built.
void CheckOutcome(const std::string& text) {
  const RuleSource source{"m.yaml", text};
  BuildResult result;
  ASSERT_NO_THROW(result = BuildRuleSet({&source, 1}));
  ASSERT_EQ(result.ok(), result.errors.empty()) << text;
  const size_t lines = static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1;
  ASSERT_LE(result.errors.size(), kMaxErrorsPerFile + 1);
  for (const RuleError& e : result.errors) {
    EXPECT_EQ(e.file, "m.yaml");
    EXPECT_FALSE(e.reason.empty());
    EXPECT_LE(e.line, lines + 1) << e.ToString() << "\n" << text;
  }
  if (!result.ok()) return;
  testing::Resolver r;
  const std::vector<testing::Desc> request = {
      {{{"key", "value"}}, {}},
      {{{"remote_address", "1"}}, {}},
      {{{"message_type", "marketing"}, {"to_number", "1"}}, {}},
      {{{"k", ""}}, LimitOverride{1, Unit::kSecond}},
  };
  for (const std::string domain : {"d", "messaging", "edge_proxy_per_ip", "api"}) {
    const Resolution& res = r.Run(*result.rules, domain, request);
    ASSERT_EQ(res.descriptors().size(), request.size());
  }
}

std::vector<std::string> Seeds() {
  std::vector<std::string> seeds;
  const fs::path dir = fs::path(TALLY_SOURCE_DIR) / "fuzz" / "corpus" / "rules_fuzz";
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  for (const fs::path& p : files) {
    std::ifstream in(p, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    seeds.push_back(text.str());
  }
  return seeds;
}

TEST(MalformedTest, CorpusOfBrokenFiles) {
  const std::vector<std::string> broken = {
      std::string("\0\0\0", 3),
      "\xff\xfe\x00d\x00o",
      "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, requests_per_unit: 1",
      "domain: d\ndescriptors: !!binary aGVsbG8=\n",
      "domain: !!map {}\n",
      "%YAML 9.9\n---\ndomain: d\n",
      "%TAG ! tag:x,2000:\n---\ndomain: !foo d\n",
      "domain: d\ndescriptors:\n- key: k\n  descriptors:\n  - key: j\n   - key: bad\n",
      "domain: d\n\tdescriptors: []\n",
      "domain: d\ndescriptors:\n  - key: k\n    value: \"\\x00\\uffff\"\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: second, requests_per_unit: "
      "99999999999999999999999999}}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: {unit: [second], requests_per_unit: 1}}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: [1, 2]}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limits: [[1], {}]}\n",
      "domain: d\ndescriptors:\n  - {key: k, descriptors: 7}\n",
      "domain: d\ndescriptors:\n  - {key: {a: b}}\n",
      "domain: d\ndescriptors:\n  - {key: k, value: [v]}\n",
      "domain: d\ndescriptors:\n  - {key: k, shadow_mode: {}}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: {unlimited: true, replaces: [[]]}}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: {unlimited: true, replaces: [{}]}}\n",
      "domain: d\ndescriptors:\n  - {key: k, rate_limit: {unlimited: true, name: [x]}}\n",
      "? \n",
      ": x\n",
      "domain: &a d\ndescriptors: *a\n",
      "domain: *undefined\n",
      "domain: d\n...\n---\n",
      "---\n---\n---\n",
      "[",
      "{",
      "'",
      "\"",
      "domain: |\n  multi\n  line\n",
      "domain: >-\n  folded\n",
      "domain: d\ndescriptors:\n  - key: k\n    value: '*'\n    share_threshold: true\n"
      "    rate_limit: {unit: second, requests_per_unit: 1}\n",
      "domain: d\ndescriptors:\n" + std::string(5000, ' ') + "- key: k\n",
      "domain: d\n" + std::string(3000, '-') + "\n",
      "domain: d\ndescriptors: " + std::string(3000, '[') + "\n",
      "domain: d\ndescriptors: " + std::string(3000, '{') + "\n",
      "domain: d\ndescriptors: " + std::string(1500, '[') + std::string(1500, ']') + "\n",
  };
  for (const std::string& text : broken) CheckOutcome(text);
  for (const std::string& text : Seeds()) CheckOutcome(text);
}

TEST(MalformedTest, SeededMutationsOfValidFiles) {
  const std::vector<std::string> seeds = Seeds();
  ASSERT_GE(seeds.size(), 4u);
  const std::string alphabet = " \n\t-:{}[],*&!|>'\"#%@`?0123456789abkyvn";
  std::mt19937_64 rng(20240611);
  for (int round = 0; round < 6000; ++round) {
    std::string text = seeds[rng() % seeds.size()];
    for (int edits = 1 + static_cast<int>(rng() % 4); edits > 0 && !text.empty(); --edits) {
      const size_t at = rng() % text.size();
      switch (rng() % 5) {
        case 0:  // replace a byte
          text[at] = alphabet[rng() % alphabet.size()];
          break;
        case 1:  // insert a byte
          text.insert(text.begin() + static_cast<std::ptrdiff_t>(at),
                      alphabet[rng() % alphabet.size()]);
          break;
        case 2:  // delete a span
          text.erase(at, 1 + rng() % 16);
          break;
        case 3: {  // duplicate a line
          const size_t start = text.rfind('\n', at);
          const size_t from = start == std::string::npos ? 0 : start + 1;
          const size_t end = text.find('\n', at);
          const std::string line =
              text.substr(from, end == std::string::npos ? std::string::npos : end - from + 1);
          text.insert(from, line);
          break;
        }
        default:  // a random byte, any value
          text[at] = static_cast<char>(rng());
          break;
      }
    }
    CheckOutcome(text);
    if (::testing::Test::HasFatalFailure()) return;
  }
}

}  // namespace
}  // namespace tally::rules

// The parser of one rules file (internal to tally_rules): YAML text in, a
// checked descriptor tree or errors out. Pure: it never opens a file.
#ifndef TALLY_RULES_PARSE_H_
#define TALLY_RULES_PARSE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "rules/rules.h"

namespace tally::rules {

struct ParsedDescriptor {
  std::string key;
  std::string value;  // empty: key-only; ends with '*': wildcard prefix
  uint32_t line = 0;  // of the descriptor's map, 1-based
  uint32_t column = 0;
  std::vector<Limit> limits;  // empty: no rate_limit; one unlimited, or limited ones
  bool shadow_mode = false;
  bool detailed_metric = false;
  bool value_to_metric = false;
  bool share_threshold = false;
  std::vector<ParsedDescriptor> children;
};

struct ParsedFile {
  std::string source;  // RuleSource::name
  std::string domain;
  uint32_t domain_line = 0;
  uint32_t domain_column = 0;
  std::vector<ParsedDescriptor> descriptors;
  size_t descriptor_count = 0;  // all levels
  size_t adaptive_count = 0;    // limits with an `adaptive:` block
};

// Parses `source` into `*out`. Returns true when it holds no error; else
// appends every error found (at most kMaxErrorsPerFile and a count of the
// rest) to `*errors` and returns false. Never throws.
bool ParseRuleFile(const RuleSource& source, ParsedFile* out, std::vector<RuleError>* errors);

}  // namespace tally::rules

#endif  // TALLY_RULES_PARSE_H_

// The file-reading side of tally_rules, kept apart so the parser stays pure.
#include "rules/load_files.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <system_error>
#include <vector>

namespace tally::rules {
namespace {

namespace fs = std::filesystem;

bool IsRulesFileName(std::string_view name) {
  if (name.empty() || name[0] == '.') return false;
  auto ends_with = [&name](std::string_view suffix) {
    return name.size() > suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with(".yaml") || ends_with(".yml");
}

// Reads at most kMaxFileBytes + 1 bytes, so an oversized (or growing) file
// costs bounded memory; the parser reports the size.
bool ReadBounded(const fs::path& path, std::string* text, std::string* why) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *why = "cannot open for reading";
    return false;
  }
  text->resize(kMaxFileBytes + 1);
  in.read(text->data(), static_cast<std::streamsize>(text->size()));
  if (in.bad()) {
    *why = "read error";
    return false;
  }
  text->resize(static_cast<size_t>(in.gcount()));
  return true;
}

}  // namespace

bool ChangeConcernsRules(std::string_view name, std::string_view rules_file) {
  if (name.empty() || name.substr(0, 2) == "..") return true;
  return rules_file.empty() ? IsRulesFileName(name) : name == rules_file;
}

BuildResult LoadRules(const std::string& path) {
  BuildResult result;
  std::error_code ec;
  const fs::file_status status = fs::status(path, ec);
  if (ec || !fs::exists(status)) {
    result.errors.push_back({path, 0, 0, "no such file or directory"});
    return result;
  }
  std::vector<fs::path> files;
  if (fs::is_directory(status)) {
    fs::directory_iterator it(path, ec), end;
    for (; !ec && it != end; it.increment(ec)) {
      const std::string name = it->path().filename().string();
      if (!IsRulesFileName(name)) continue;
      std::error_code entry_ec;
      if (!fs::is_regular_file(it->path(), entry_ec)) continue;  // follows links
      files.push_back(it->path());
      if (files.size() > kMaxFiles) break;
    }
    if (ec) {
      result.errors.push_back({path, 0, 0, "cannot list directory: " + ec.message()});
      return result;
    }
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  if (files.size() > kMaxFiles) {
    result.errors.push_back(
        {path, 0, 0, "more than " + std::to_string(kMaxFiles) + " rules files"});
    return result;
  }
  std::vector<RuleSource> sources;
  size_t total_bytes = 0;
  for (const fs::path& file : files) {
    RuleSource source{file.string(), {}};
    std::string why;
    if (!ReadBounded(file, &source.text, &why)) {
      result.errors.push_back({source.name, 0, 0, why});
      continue;
    }
    total_bytes += source.text.size();
    if (total_bytes > kMaxTotalBytes) {
      result.errors.push_back(
          {path, 0, 0,
           "rules files hold more than " + std::to_string(kMaxTotalBytes) + " bytes in all"});
      return result;
    }
    sources.push_back(std::move(source));
  }
  if (!result.errors.empty()) {
    // Still parse the readable ones, so one run shows every error.
    BuildResult parsed = BuildRuleSet(sources);
    result.errors.insert(result.errors.end(), parsed.errors.begin(), parsed.errors.end());
    return result;
  }
  return BuildRuleSet(sources);
}

}  // namespace tally::rules

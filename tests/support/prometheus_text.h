// Reading a /metrics scrape in tests: samples by "name{labels}", and
// Debian's `promtool check metrics` on the text.
#ifndef TALLY_TESTS_SUPPORT_PROMETHEUS_TEXT_H_
#define TALLY_TESTS_SUPPORT_PROMETHEUS_TEXT_H_

#include <sys/wait.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <string>

#include "tests/support/daemon_process.h"

namespace tally::testing {

// "name{labels} value" lines -> value, keyed by "name{labels}".
inline std::map<std::string, double> ParseSamples(const std::string& text) {
  std::map<std::string, double> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string line = text.substr(start, end - start);
    start = end + 1;
    if (line.empty() || line[0] == '#') continue;
    const size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

// The sample's value; -1 when the scrape has none.
inline double Sample(const std::map<std::string, double>& samples, const std::string& key) {
  auto it = samples.find(key);
  return it == samples.end() ? -1 : it->second;
}

// Runs `promtool check metrics` on `text`; its exit code and output.
inline int Promtool(const std::string& text, const TempDir& dir, std::string* output) {
  const std::string in = dir.File("scrape.txt"), out = dir.File("promtool.txt");
  std::ofstream(in) << text;
  const std::string command = "promtool check metrics < " + in + " > " + out + " 2>&1";
  const int status = std::system(command.c_str());
  std::ifstream read(out);
  output->assign(std::istreambuf_iterator<char>(read), {});
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_PROMETHEUS_TEXT_H_

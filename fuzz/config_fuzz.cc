// tallyd's config file (daemon/io/config.cc: INI with the long flag names)
// and, optionally, its command line. Input: an optional argv part, items
// separated by '\n' and ended by a NUL byte, then the config file's text.
// Properties: parsing never crashes, throws or leaks; the outcome is kRun or
// kBadUsage with a message (--help/--version only from the command line).
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "daemon/io/config.h"
#include "fuzz/fuzz_check.h"

// The machine's group database (NSS) may block on a directory service; the
// fuzzer exercises the parser, not the lookup. One name resolves.
std::optional<int64_t> FakeGroupLookup(const std::string& name) {
  if (name == "tally") return 4242;
  return std::nullopt;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  std::vector<std::string> args = {"tallyd", "--config", "fuzz.conf"};
  std::string text = input;
  const size_t nul = input.find('\0');
  bool may_exit_ok = false;
  if (nul != std::string::npos) {
    text = input.substr(nul + 1);
    std::istringstream lines(input.substr(0, nul));
    for (std::string arg; std::getline(lines, arg) && args.size() < 24;) args.push_back(arg);
    may_exit_ok = true;  // --help or --version may be among them
  }
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  std::istringstream file(text);
  tally::io::TallydConfig config;
  std::string output, error;
  const tally::io::FlagsOutcome outcome = tally::io::ParseTallydFlags(
      static_cast<int>(argv.size()), argv.data(), &file, &config, &output, &error, FakeGroupLookup);
  switch (outcome) {
    case tally::io::FlagsOutcome::kRun:
      FUZZ_CHECK(error.empty());
      FUZZ_CHECK(!config.daemon.udp.empty() || !config.daemon.unix_path.empty() ||
                 !config.daemon.unix_seq_path.empty());
      break;
    case tally::io::FlagsOutcome::kExitOk:
      FUZZ_CHECK(may_exit_ok && !output.empty());
      break;
    case tally::io::FlagsOutcome::kBadUsage:
      FUZZ_CHECK(!error.empty());
      break;
  }
  return 0;
}

// Boost.Program_options (1.81) words an error by replacing each placeholder
// ("%option%", "%value%", ...) with its text until none is left, so a name or
// value that holds its own placeholder never finishes: one such argument or
// config line hung tallyd, the CLI and the load tools (found by
// fuzz/config_fuzz.cc). Every program that parses with it refuses such text
// first, naming where it was.
//
// Thread safety: pure functions.
#ifndef TALLY_CLIENT_PROGRAM_OPTIONS_GUARD_H_
#define TALLY_CLIENT_PROGRAM_OPTIONS_GUARD_H_

#include <string>
#include <string_view>

namespace tally::flags {

// The first placeholder-shaped token in `text` ('%', lower-case letters or
// '_', '%': Boost's own are "%option%", "%value%", "%invalid_line%" and more,
// and a new Boost may add names), or "" if it holds none. Other uses of '%'
// ("100%", "a%20%21", "%Value%") are ordinary text.
inline std::string_view FindBoostPlaceholder(std::string_view text) {
  for (size_t open = text.find('%'); open != std::string_view::npos;
       open = text.find('%', open + 1)) {
    size_t end = open + 1;
    while (end < text.size() && ((text[end] >= 'a' && text[end] <= 'z') || text[end] == '_')) {
      ++end;
    }
    if (end > open + 1 && end < text.size() && text[end] == '%') {
      return text.substr(open, end - open + 1);
    }
  }
  return {};
}

// "" if no argument after argv[0] holds a placeholder, else an error saying
// which one does. `argv` is borrowed for the call.
inline std::string RefuseBoostPlaceholders(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    if (const std::string_view token = FindBoostPlaceholder(argv[i]); !token.empty()) {
      return "argument " + std::to_string(i) + " holds '" + std::string(token) +
             "', which the option parser cannot report on; leave it out";
    }
  }
  return "";
}

}  // namespace tally::flags

#endif  // TALLY_CLIENT_PROGRAM_OPTIONS_GUARD_H_

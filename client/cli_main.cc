// tally: command-line client for tallyd.
//
//   tally check [--udp HOST:PORT | --unix PATH] [--hits N] [--json]
//               [--timeout-ms N] [--attempts N] USER ENDPOINT LIMIT WINDOW_SECONDS
//
// Exit status: 0 allowed, 1 denied, 2 anything else (usage, unreachable daemon,
// a non-ok status). --help also exits 2 so that `tally ... && act` never acts
// on a help text.
#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tally/client.h"
#include "tally/types.h"

namespace po = boost::program_options;

namespace tally {
namespace {

constexpr int kExitAllowed = 0;
constexpr int kExitDenied = 1;
constexpr int kExitError = 2;

// ---- parsing helpers (strict: digits only, no sign, no trailing junk) ----

std::optional<uint64_t> ParseUint(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

// Parses a non-negative decimal number of seconds ("2", "0.5", ".25") into
// milliseconds, rounded to the nearest millisecond. Exponents, signs, "inf"
// and "nan" are rejected; the caller checks the range.
std::optional<uint64_t> ParseSecondsToMs(std::string_view text) {
  size_t dot = text.find('.');
  std::string_view whole = text.substr(0, dot);
  std::string_view frac = dot == std::string_view::npos ? std::string_view() : text.substr(dot + 1);
  if (whole.empty() && frac.empty()) return std::nullopt;
  for (char c : whole) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  for (char c : frac) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  // Strip leading zeros so the length check below bounds the value, not the text.
  while (whole.size() > 1 && whole.front() == '0') whole.remove_prefix(1);
  if (whole.size() > 12) return UINT64_MAX;  // far beyond 31 days; caller rejects
  uint64_t ms = whole.empty() ? 0 : *ParseUint(whole) * 1000;
  uint64_t scale = 100;
  for (size_t i = 0; i < frac.size() && i < 3; ++i, scale /= 10) ms += (frac[i] - '0') * scale;
  if (frac.size() > 3 && frac[3] >= '5') ++ms;
  return ms;
}

// ---- output ----

// Length of the valid UTF-8 sequence at the start of `text`, 0 if invalid.
size_t Utf8SequenceLength(std::string_view text) {
  auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  unsigned char lead = byte(0);
  size_t length = lead < 0x80                    ? 1
                  : lead >= 0xc2 && lead <= 0xdf ? 2
                  : lead >= 0xe0 && lead <= 0xef ? 3
                  : lead >= 0xf0 && lead <= 0xf4 ? 4
                                                 : 0;
  if (length == 0 || length > text.size()) return 0;
  for (size_t i = 1; i < length; ++i) {
    if ((byte(i) & 0xc0) != 0x80) return 0;
  }
  // Reject overlong forms, surrogates and code points beyond U+10FFFF.
  if (lead == 0xe0 && byte(1) < 0xa0) return 0;
  if (lead == 0xed && byte(1) > 0x9f) return 0;
  if (lead == 0xf0 && byte(1) < 0x90) return 0;
  if (lead == 0xf4 && byte(1) > 0x8f) return 0;
  return length;
}

// A JSON string literal for `text`. Arguments echoed in errors can hold any
// bytes, so invalid UTF-8 becomes U+FFFD rather than invalid JSON.
std::string JsonEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out += '"';
  while (!text.empty()) {
    auto c = static_cast<unsigned char>(text.front());
    size_t length = 1;
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c < 0x20 || c == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", c);
      out += buf;
    } else if (c < 0x80) {
      out += static_cast<char>(c);
    } else {
      length = Utf8SequenceLength(text);
      if (length == 0) {
        out += "\\ufffd";
        length = 1;
      } else {
        out.append(text.substr(0, length));
      }
    }
    text.remove_prefix(length);
  }
  out += '"';
  return out;
}

// kNeverFits prints as -1 ("never fits"): no JSON reader chokes on it and it
// cannot be mistaken for a real delay.
std::string RetryAfterText(uint64_t retry_after_ms) {
  return retry_after_ms == kNeverFits ? "-1" : std::to_string(retry_after_ms);
}

// Reports an error: a JSON object on stdout with --json (plus the text on
// stderr for humans), else just the text on stderr. Returns kExitError.
int ReportError(bool json, Status status, const std::string& error,
                std::optional<uint64_t> request_id = std::nullopt) {
  if (json) {
    std::string out = "{\"allowed\":false,\"status\":" + JsonEscape(StatusName(status)) +
                      ",\"error\":" + JsonEscape(error);
    if (request_id) out += ",\"request_id\":" + std::to_string(*request_id);
    out += "}\n";
    std::fputs(out.c_str(), stdout);
  }
  std::fprintf(stderr, "tally: %s\n", error.c_str());
  return kExitError;
}

int ReportResult(bool json, const CheckResult& result) {
  if (result.status != Status::kOk) {
    std::string error =
        result.error.empty() ? std::string(StatusName(result.status)) : result.error;
    return ReportError(json, result.status, error, result.request_id);
  }
  std::string line;
  if (json) {
    line = std::string("{\"allowed\":") + (result.allowed ? "true" : "false") +
           ",\"remaining\":" + std::to_string(result.remaining) +
           ",\"retry_after_ms\":" + RetryAfterText(result.retry_after_ms) +
           ",\"reset_after_ms\":" + std::to_string(result.reset_after_ms) +
           ",\"limit\":" + std::to_string(result.limit) + ",\"status\":\"ok\"" +
           ",\"request_id\":" + std::to_string(result.request_id) + "}\n";
  } else {
    line = std::string(result.allowed ? "allowed" : "denied") +
           " remaining=" + std::to_string(result.remaining) +
           " retry_after_ms=" + RetryAfterText(result.retry_after_ms) +
           " reset_after_ms=" + std::to_string(result.reset_after_ms) +
           " limit=" + std::to_string(result.limit) + "\n";
  }
  std::fputs(line.c_str(), stdout);
  return result.allowed ? kExitAllowed : kExitDenied;
}

// ---- subcommands ----

struct Subcommand {
  std::string_view name;
  std::string_view summary;
  int (*run)(int argc, char** argv);  // argv[0] is the subcommand name
};

constexpr std::string_view kCheckUsage =
    "usage: tally check [--udp HOST:PORT | --unix PATH] [--hits N] [--json]\n"
    "                   [--timeout-ms N] [--attempts N] USER ENDPOINT LIMIT WINDOW_SECONDS\n"
    "\n"
    "Asks tallyd whether USER may hit ENDPOINT: at most LIMIT hits in any sliding\n"
    "window of WINDOW_SECONDS (fractions allowed: 0.5 = 500 ms; 1 ms .. 31 days).\n"
    "Exit status: 0 allowed, 1 denied, 2 error.\n";

int RunCheck(int argc, char** argv) {
  bool json = false;
  for (int i = 1; i < argc; ++i) {
    // Known before parsing, so even a parse error is reported as JSON.
    if (std::string_view(argv[i]) == "--json") json = true;
  }
  for (int i = 1; i < argc; ++i) {
    // program_options would call "-1" an unknown option; say what is wrong.
    std::string_view arg = argv[i];
    if (arg.size() >= 2 && arg[0] == '-' &&
        (std::isdigit(static_cast<unsigned char>(arg[1])) || arg[1] == '.')) {
      return ReportError(
          json, Status::kInvalidArgument,
          "negative numbers are not allowed: '" + std::string(arg) + "' (see tally check --help)");
    }
  }
  po::options_description flags("options");
  flags.add_options()("help,h", "show this help")(
      "udp", po::value<std::string>(), "tallyd UDP address HOST:PORT (default 127.0.0.1:7070)")(
      "unix", po::value<std::string>(), "tallyd Unix socket path (datagram or seqpacket)")(
      "hits", po::value<std::string>()->default_value("1"), "hits to consume (0 only asks)")(
      "json", po::bool_switch(), "print one JSON object")(
      "timeout-ms", po::value<std::string>()->default_value("250"), "wait per attempt, ms")(
      "attempts", po::value<std::string>()->default_value("3"), "sends before giving up");
  po::options_description hidden;
  hidden.add_options()("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(flags).add(hidden);
  po::positional_options_description positional;
  positional.add("args", -1);

  po::variables_map vm;
  try {
    po::store(
        po::command_line_parser(argc, argv)
            .options(all)
            .positional(positional)
            .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
            .run(),
        vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return ReportError(json, Status::kInvalidArgument,
                       std::string(e.what()) + " (see tally check --help)");
  }
  if (vm.count("help") != 0) {
    std::cout << kCheckUsage << "\n" << flags;
    return kExitError;
  }

  auto usage = [json](const std::string& why) {
    return ReportError(json, Status::kInvalidArgument, why + " (see tally check --help)");
  };
  std::vector<std::string> args;
  if (vm.count("args") != 0) args = vm["args"].as<std::vector<std::string>>();
  if (args.size() != 4) {
    return usage("expected USER ENDPOINT LIMIT WINDOW_SECONDS, got " + std::to_string(args.size()) +
                 " argument(s)");
  }

  Endpoint endpoint;
  endpoint.port = kDefaultUdpPort;
  if (vm.count("udp") != 0 && vm.count("unix") != 0)
    return usage("--udp and --unix exclude each other");
  if (vm.count("udp") != 0) {
    std::string text = vm["udp"].as<std::string>();
    std::optional<Endpoint> parsed = Endpoint::ParseUdp(text);
    if (!parsed) return usage("bad --udp address '" + text + "' (want HOST:PORT or [V6]:PORT)");
    endpoint = *parsed;
  } else if (vm.count("unix") != 0) {
    endpoint = Endpoint::Unix(vm["unix"].as<std::string>());
  }

  CheckRequest request;
  request.user_id = args[0];
  request.endpoint = args[1];
  std::optional<uint64_t> limit = ParseUint(args[2]);
  if (!limit) return usage("LIMIT must be a non-negative integer, got '" + args[2] + "'");
  request.limit = *limit;
  std::optional<uint64_t> window_ms = ParseSecondsToMs(args[3]);
  if (!window_ms) return usage("WINDOW_SECONDS must be a number of seconds, got '" + args[3] + "'");
  request.window_ms = *window_ms;
  std::optional<uint64_t> hits = ParseUint(vm["hits"].as<std::string>());
  if (!hits) return usage("--hits must be a non-negative integer");
  request.hits = *hits;
  std::string why;
  if (ValidateRequest(request, &why) != Status::kOk) return usage(why);

  ClientOptions options;
  std::optional<uint64_t> timeout_ms = ParseUint(vm["timeout-ms"].as<std::string>());
  if (!timeout_ms || *timeout_ms < 1 || *timeout_ms > 600'000) {
    return usage("--timeout-ms must be 1..600000");
  }
  options.timeout = std::chrono::milliseconds(*timeout_ms);
  std::optional<uint64_t> attempts = ParseUint(vm["attempts"].as<std::string>());
  if (!attempts || *attempts < 1 || *attempts > 100) return usage("--attempts must be 1..100");
  options.attempts = static_cast<int>(*attempts);

  std::string error;
  std::unique_ptr<Client> client = Client::Connect(endpoint, options, &error);
  if (!client) return ReportError(json, Status::kUnavailable, error);
  return ReportResult(json, client->Check(request));
}

constexpr Subcommand kSubcommands[] = {
    {"check", "ask whether a request may go ahead", RunCheck},
    // A future "status" (daemon health and stats) slots in here.
};

void PrintUsage(std::FILE* out) {
  std::fputs("usage: tally SUBCOMMAND [options] [args]\n\nsubcommands:\n", out);
  for (const Subcommand& sub : kSubcommands) {
    std::fprintf(out, "  %-8.*s %.*s\n", static_cast<int>(sub.name.size()), sub.name.data(),
                 static_cast<int>(sub.summary.size()), sub.summary.data());
  }
  std::fputs(
      "\nRun 'tally SUBCOMMAND --help' for details. Exit status: 0 allowed, 1 denied, "
      "2 error.\n",
      out);
}

}  // namespace
}  // namespace tally

int main(int argc, char** argv) {
  using tally::kExitError;
  if (argc < 2) {
    tally::PrintUsage(stderr);
    return kExitError;
  }
  std::string_view name = argv[1];
  if (name == "--help" || name == "-h" || name == "help") {
    tally::PrintUsage(stdout);
    return kExitError;
  }
  for (const tally::Subcommand& sub : tally::kSubcommands) {
    if (sub.name == name) return sub.run(argc - 1, argv + 1);
  }
  std::fprintf(stderr, "tally: unknown subcommand '%.*s'\n\n", static_cast<int>(name.size()),
               name.data());
  tally::PrintUsage(stderr);
  return kExitError;
}

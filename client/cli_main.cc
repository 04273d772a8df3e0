// tally: command-line client for tallyd.
//
//   tally check [--udp HOST:PORT | --unix PATH] [--hits N] [--json]
//               [--timeout-ms N] [--attempts N] USER ENDPOINT LIMIT WINDOW_SECONDS
//   tally check [--udp HOST:PORT | --unix PATH] [--hits N] [--json]
//               [--timeout-ms N] [--attempts N]
//               --domain D --descriptor key=value[,key=value...] [--descriptor ...]
//   tally status [--udp HOST:PORT | --unix PATH] [--json] [--timeout-ms N] [--attempts N]
//   tally owner [--udp HOST:PORT | --unix PATH] [--json] [--timeout-ms N] [--attempts N]
//               USER ENDPOINT WINDOW_SECONDS
//   tally keyring generate [--out FILE]
//   tally keyring list FILE
//   tally limit set [--udp HOST:PORT | --unix PATH] [--json] SELECTOR --limit N
//                   [--unit second|minute|hour|day|week|month]
//   tally limit get|rm [--udp HOST:PORT | --unix PATH] [--json] SELECTOR
//   tally limit list [--udp HOST:PORT | --unix PATH] [--json]
//     SELECTOR: --domain D --descriptor key=value[,key=value...]
//           or: --user U --endpoint E --window-seconds W
//
// Exit status: check: 0 allowed, 1 denied, 2 anything else (usage,
// unreachable daemon, a non-ok status). status and owner: 0 answered, 2
// anything else. keyring: 0 done, 2 anything else. limit: 0 done (get: an
// override is in force), 1 get: none is, 2 anything else (a refused write too). --help also exits 2
// so that `tally ... && act` never acts on a help text.
#include <boost/program_options.hpp>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "client/admin.h"
#include "client/program_options_guard.h"
#include "daemon/io/keyring.h"
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

// ---- flags every subcommand shares: the daemon's address and timing ----

// Whether --json is among the arguments. Known before parsing, so that even a
// parse error is reported as JSON.
bool WantsJson(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--json") return true;
  }
  return false;
}

// Reports a usage error of subcommand `name`. Returns kExitError.
int UsageError(bool json, std::string_view name, const std::string& why) {
  return ReportError(json, Status::kInvalidArgument,
                     why + " (see tally " + std::string(name) + " --help)");
}

// Adds a subcommand's own flags.
using AddFlags = void (*)(po::options_description_easy_init& add);

// The flags of a subcommand in help order: the shared ones, with the
// subcommand's own (`add_own`, if any) after --unix.
po::options_description SubcommandFlags(const char* default_timeout_ms,
                                        AddFlags add_own = nullptr) {
  po::options_description flags("options");
  po::options_description_easy_init add = flags.add_options();
  add("help,h", "show this help");
  add("udp", po::value<std::string>(), "tallyd UDP address HOST:PORT (default 127.0.0.1:7070)");
  add("unix", po::value<std::string>(), "tallyd Unix socket path (datagram or seqpacket)");
  if (add_own != nullptr) add_own(add);
  add("json", po::bool_switch(), "print one JSON object");
  add("timeout-ms", po::value<std::string>()->default_value(default_timeout_ms),
      "wait per attempt, ms");
  add("attempts", po::value<std::string>()->default_value("3"), "sends before giving up");
  return flags;
}

struct CommandLine {
  po::variables_map flags;
  std::vector<std::string> args;  // the positional arguments
};

// Parses the command line of subcommand `name` against `flags` (abbreviated
// flags are not accepted). On a parse error or --help: nullopt, with the
// error or the help text (`usage_text` and the flags) printed and
// `*exit_code` set.
std::optional<CommandLine> ParseCommandLine(int argc, char** argv,
                                            const po::options_description& flags,
                                            std::string_view usage_text, std::string_view name,
                                            bool json, int* exit_code) {
  po::options_description hidden;
  hidden.add_options()("args", po::value<std::vector<std::string>>());
  po::options_description all;
  all.add(flags).add(hidden);
  po::positional_options_description positional;
  positional.add("args", -1);
  CommandLine line;
  if (std::string why = flags::RefuseBoostPlaceholders(argc, argv); !why.empty()) {
    *exit_code = UsageError(json, name, why);
    return std::nullopt;
  }
  try {
    po::store(
        po::command_line_parser(argc, argv)
            .options(all)
            .positional(positional)
            .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
            .run(),
        line.flags);
    po::notify(line.flags);
  } catch (const po::error& e) {
    *exit_code = UsageError(json, name, e.what());
    return std::nullopt;
  }
  if (line.flags.count("help") != 0) {
    std::cout << usage_text << "\n" << flags;
    *exit_code = kExitError;
    return std::nullopt;
  }
  if (line.flags.count("args") != 0) line.args = line.flags["args"].as<std::vector<std::string>>();
  return line;
}

// The daemon's address from --udp or --unix (default: UDP on
// 127.0.0.1:kDefaultUdpPort). False, with `*why`, on a usage error.
bool ParseEndpointFlags(const po::variables_map& flags, DaemonAddress* endpoint, std::string* why) {
  *endpoint = DaemonAddress();
  endpoint->port = kDefaultUdpPort;
  if (flags.count("udp") != 0 && flags.count("unix") != 0) {
    *why = "--udp and --unix exclude each other";
    return false;
  }
  if (flags.count("udp") != 0) {
    std::string text = flags["udp"].as<std::string>();
    std::optional<DaemonAddress> parsed = DaemonAddress::ParseUdp(text);
    if (!parsed) {
      *why = "bad --udp address '" + text + "' (want HOST:PORT or [V6]:PORT)";
      return false;
    }
    *endpoint = *parsed;
  } else if (flags.count("unix") != 0) {
    *endpoint = DaemonAddress::Unix(flags["unix"].as<std::string>());
  }
  return true;
}

// --timeout-ms and --attempts into `*options`. False, with `*why`, on a
// usage error.
bool ParseTimingFlags(const po::variables_map& flags, ClientOptions* options, std::string* why) {
  std::optional<uint64_t> timeout_ms = ParseUint(flags["timeout-ms"].as<std::string>());
  if (!timeout_ms || *timeout_ms < 1 || *timeout_ms > 600'000) {
    *why = "--timeout-ms must be 1..600000";
    return false;
  }
  options->timeout = std::chrono::milliseconds(*timeout_ms);
  std::optional<uint64_t> attempts = ParseUint(flags["attempts"].as<std::string>());
  if (!attempts || *attempts < 1 || *attempts > 100) {
    *why = "--attempts must be 1..100";
    return false;
  }
  options->attempts = static_cast<int>(*attempts);
  return true;
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
    "       tally check [--udp HOST:PORT | --unix PATH] [--hits N] [--json]\n"
    "                   [--timeout-ms N] [--attempts N]\n"
    "                   --domain D --descriptor key=value[,key=value...] [--descriptor ...]\n"
    "\n"
    "Asks tallyd whether USER may hit ENDPOINT: at most LIMIT hits in any sliding\n"
    "window of WINDOW_SECONDS (fractions allowed: 0.5 = 500 ms; 1 ms .. 31 days).\n"
    "\n"
    "With --domain, asks through tallyd's rules instead (its --rules, Envoy's\n"
    "ratelimit YAML; the daemon needs --grpc or --http): each --descriptor is one\n"
    "descriptor, its entries in order (a value cannot hold ','); --hits is Envoy's\n"
    "hits_addend (1..4294967295). Answers per descriptor, as POST /v1/check does.\n"
    "Exit status: 0 allowed, 1 denied, 2 error.\n";

// "key=value[,key=value...]" -> entries. False with `*why` on a usage error.
bool ParseDescriptor(std::string_view text, RateLimitDescriptor* out, std::string* why) {
  out->entries.clear();
  while (true) {
    const size_t comma = text.find(',');
    const std::string_view entry = text.substr(0, comma);
    const size_t equals = entry.find('=');
    if (equals == std::string_view::npos || equals == 0) {
      *why = "--descriptor entries are key=value with a non-empty key, got '" + std::string(entry) +
             "'";
      return false;
    }
    out->entries.push_back(
        {std::string(entry.substr(0, equals)), std::string(entry.substr(equals + 1))});
    if (comma == std::string_view::npos) return true;
    text.remove_prefix(comma + 1);
  }
}

// The answer as POST /v1/check's descriptor form (daemon/rls/v1_check.h)
// words it, plus the request id; or one line per descriptor for humans.
int ReportDescriptorResult(bool json, const DescriptorCheckResult& result) {
  if (result.status != Status::kOk) {
    std::string error =
        result.error.empty() ? std::string(StatusName(result.status)) : result.error;
    return ReportError(json, result.status, error, result.request_id);
  }
  std::string out;
  if (json) {
    out = std::string("{\"allowed\":") + (result.allowed ? "true" : "false") +
          ",\"status\":\"ok\",\"descriptors\":[";
    for (size_t i = 0; i < result.descriptors.size(); ++i) {
      const DescriptorStatus& d = result.descriptors[i];
      if (i > 0) out += ',';
      out += std::string("{\"allowed\":") + (d.allowed ? "true" : "false") +
             ",\"remaining\":" + std::to_string(d.remaining) +
             ",\"retry_after_ms\":" + std::to_string(d.retry_after_ms) +
             ",\"reset_after_ms\":" + std::to_string(d.reset_after_ms);
      if (d.has_limit) {
        out += ",\"limit\":" + std::to_string(d.limit) + ",\"name\":" + JsonEscape(d.name) +
               ",\"unit\":" + JsonEscape(RateLimitUnitName(d.unit)) + "}";
      } else {
        out += ",\"limit\":null}";
      }
    }
    out += "],\"request_id\":" + std::to_string(result.request_id) + "}\n";
  } else {
    out = std::string(result.allowed ? "allowed" : "denied") + "\n";
    for (size_t i = 0; i < result.descriptors.size(); ++i) {
      const DescriptorStatus& d = result.descriptors[i];
      out += "  descriptor " + std::to_string(i + 1) + ": " + (d.allowed ? "allowed" : "denied");
      if (d.has_limit) {
        out += " limit=" + std::to_string(d.limit) + "/" + std::string(RateLimitUnitName(d.unit));
        if (!d.name.empty()) out += " name=" + JsonEscape(d.name);
        out += " remaining=" + std::to_string(d.remaining) +
               " retry_after_ms=" + std::to_string(d.retry_after_ms) +
               " reset_after_ms=" + std::to_string(d.reset_after_ms);
      } else {
        out += " (no limit)";
      }
      out += "\n";
    }
  }
  std::fputs(out.c_str(), stdout);
  return result.allowed ? kExitAllowed : kExitDenied;
}

int RunDescriptorCheck(const CommandLine& line, bool json) {
  auto usage = [json](const std::string& why) { return UsageError(json, "check", why); };
  if (!line.args.empty()) {
    return usage("--domain takes no USER ENDPOINT LIMIT WINDOW_SECONDS arguments");
  }
  if (line.flags.count("domain") == 0) return usage("--descriptor needs --domain");
  if (line.flags.count("descriptor") == 0) return usage("--domain needs at least one --descriptor");
  DescriptorCheckRequest request;
  request.domain = line.flags["domain"].as<std::string>();
  if (request.domain.empty()) return usage("--domain must not be empty");
  std::string why;
  for (const std::string& text : line.flags["descriptor"].as<std::vector<std::string>>()) {
    if (!ParseDescriptor(text, &request.descriptors.emplace_back(), &why)) return usage(why);
  }
  std::optional<uint64_t> hits = ParseUint(line.flags["hits"].as<std::string>());
  if (!hits || *hits < 1 || *hits > UINT32_MAX) {
    return usage("--hits must be 1..4294967295 with --domain (Envoy's hits_addend)");
  }
  request.hits_addend = static_cast<uint32_t>(*hits);
  DaemonAddress endpoint;
  if (!ParseEndpointFlags(line.flags, &endpoint, &why)) return usage(why);
  ClientOptions options;
  if (!ParseTimingFlags(line.flags, &options, &why)) return usage(why);
  std::string error;
  std::unique_ptr<Client> client = Client::Connect(endpoint, options, &error);
  if (!client) return ReportError(json, Status::kUnavailable, error);
  return ReportDescriptorResult(json, client->CheckDescriptors(request));
}

int RunCheck(int argc, char** argv) {
  const bool json = WantsJson(argc, argv);
  auto usage = [json](const std::string& why) { return UsageError(json, "check", why); };
  for (int i = 1; i < argc; ++i) {
    // program_options would call "-1" an unknown option; say what is wrong.
    std::string_view arg = argv[i];
    if (arg.size() >= 2 && arg[0] == '-' &&
        (std::isdigit(static_cast<unsigned char>(arg[1])) || arg[1] == '.')) {
      return usage("negative numbers are not allowed: '" + std::string(arg) + "'");
    }
  }
  const po::options_description flags =
      SubcommandFlags("250", [](po::options_description_easy_init& add) {
        add("hits", po::value<std::string>()->default_value("1"), "hits to consume (0 only asks)");
        add("domain", po::value<std::string>(), "rules domain: check descriptors instead");
        add("descriptor", po::value<std::vector<std::string>>()->composing(),
            "key=value[,key=value...]: one descriptor (repeat for more)");
      });
  int exit_code = kExitError;
  std::optional<CommandLine> line =
      ParseCommandLine(argc, argv, flags, kCheckUsage, "check", json, &exit_code);
  if (!line) return exit_code;

  const std::vector<std::string>& args = line->args;
  if (line->flags.count("domain") != 0 || line->flags.count("descriptor") != 0) {
    return RunDescriptorCheck(*line, json);
  }
  if (args.size() != 4) {
    return usage("expected USER ENDPOINT LIMIT WINDOW_SECONDS, got " + std::to_string(args.size()) +
                 " argument(s)");
  }
  std::string why;
  DaemonAddress endpoint;
  if (!ParseEndpointFlags(line->flags, &endpoint, &why)) return usage(why);

  CheckRequest request;
  request.user_id = args[0];
  request.endpoint = args[1];
  std::optional<uint64_t> limit = ParseUint(args[2]);
  if (!limit) return usage("LIMIT must be a non-negative integer, got '" + args[2] + "'");
  request.limit = *limit;
  std::optional<uint64_t> window_ms = ParseSecondsToMs(args[3]);
  if (!window_ms) return usage("WINDOW_SECONDS must be a number of seconds, got '" + args[3] + "'");
  request.window_ms = *window_ms;
  std::optional<uint64_t> hits = ParseUint(line->flags["hits"].as<std::string>());
  if (!hits) return usage("--hits must be a non-negative integer");
  request.hits = *hits;
  if (ValidateRequest(request, &why) != Status::kOk) return usage(why);

  ClientOptions options;
  if (!ParseTimingFlags(line->flags, &options, &why)) return usage(why);

  std::string error;
  std::unique_ptr<Client> client = Client::Connect(endpoint, options, &error);
  if (!client) return ReportError(json, Status::kUnavailable, error);
  return ReportResult(json, client->Check(request));
}

// ---- status and owner ----

// A double for JSON: NaN and infinities (unknown values) become null.
std::string JsonNumber(double value) {
  if (!std::isfinite(value)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", value);
  return buf;
}

std::string JsonBool(bool value) { return value ? "true" : "false"; }

// What the query subcommands (status, owner) take: the shared flags and
// their positional arguments.
struct QueryArgs {
  DaemonAddress endpoint;
  ClientOptions options;
  bool json = false;
  std::vector<std::string> args;
};

// Returns nullopt (after reporting, with `*exit_code` set) on a usage error
// or --help.
std::optional<QueryArgs> ParseQueryArgs(int argc, char** argv, std::string_view usage_text,
                                        const char* name, int* exit_code) {
  QueryArgs q;
  q.json = WantsJson(argc, argv);
  std::optional<CommandLine> line =
      ParseCommandLine(argc, argv, SubcommandFlags("500"), usage_text, name, q.json, exit_code);
  if (!line) return std::nullopt;
  q.args = std::move(line->args);
  std::string why;
  if (!ParseEndpointFlags(line->flags, &q.endpoint, &why) ||
      !ParseTimingFlags(line->flags, &q.options, &why)) {
    *exit_code = UsageError(q.json, name, why);
    return std::nullopt;
  }
  return q;
}

constexpr std::string_view kStatusUsage =
    "usage: tally status [--udp HOST:PORT | --unix PATH] [--json] [--timeout-ms N] "
    "[--attempts N]\n"
    "\n"
    "Shows what tallyd knows: its node id, whether it owns keys, its share of the\n"
    "key space, and every cluster member with its state, incarnation, generation,\n"
    "gossip address, clock offset and round trip as this node sees them, and the\n"
    "members whose rules digest differs from this node's (docs/ENVOY.md).\n"
    "Exit status: 0 answered, 2 error.\n";

std::string StatusJson(const wire::StatusReport& s) {
  std::string out = "{\"node_id\":" + JsonEscape(s.node_id) +
                    ",\"generation\":" + std::to_string(s.generation) +
                    ",\"cluster\":" + JsonBool(s.cluster) + ",\"owning\":" + JsonBool(s.owning) +
                    ",\"not_owning_reason\":" + JsonEscape(s.not_owning_reason) +
                    ",\"key_share\":" + JsonNumber(s.key_share) +
                    ",\"live_keys\":" + std::to_string(s.live_keys) +
                    ",\"partition_policy\":" + JsonEscape(s.partition_policy) +
                    ",\"last_known_members\":" + std::to_string(s.last_known_members) +
                    ",\"gossip_address\":" + JsonEscape(s.gossip_address) +
                    ",\"uptime_ms\":" + std::to_string(s.uptime_ms) +
                    ",\"cluster_name\":" + JsonEscape(s.cluster_name) +
                    ",\"peer_auth\":" + JsonEscape(s.peer_auth) + ",\"key_ids\":[";
  for (size_t i = 0; i < s.key_ids.size(); ++i) {
    out += (i > 0 ? "," : "") + JsonEscape(s.key_ids[i]);
  }
  out += "],\"keyring_error\":" + JsonEscape(s.keyring_error) +
         ",\"rules_digest\":" + JsonEscape(s.rules_digest) +
         ",\"rules_error\":" + JsonEscape(s.rules_error) + ",\"members\":[";
  for (size_t i = 0; i < s.members.size(); ++i) {
    const wire::MemberReport& m = s.members[i];
    if (i > 0) out += ",";
    out += "{\"id\":" + JsonEscape(m.id) + ",\"state\":" + JsonEscape(m.state) +
           ",\"incarnation\":" + std::to_string(m.incarnation) +
           ",\"generation\":" + std::to_string(m.generation) +
           ",\"address\":" + JsonEscape(m.address) +
           ",\"clock_offset_ms\":" + JsonNumber(m.clock_offset_ms) +
           ",\"rtt_ms\":" + JsonNumber(m.rtt_ms) +
           ",\"rules_digest\":" + JsonEscape(m.rules_digest) + "}";
  }
  out += "],\"members_truncated\":" + JsonBool(s.members_truncated) + ",\"rules_differ\":[";
  const std::vector<const wire::MemberReport*> differ = wire::MembersWithOtherRules(s);
  for (size_t i = 0; i < differ.size(); ++i) {
    out += (i > 0 ? "," : "") + JsonEscape(differ[i]->id);
  }
  out += "],\"counters\":{";
  for (size_t i = 0; i < s.counters.size(); ++i) {
    if (i > 0) out += ",";
    out += JsonEscape(s.counters[i].first) + ":" + std::to_string(s.counters[i].second);
  }
  out += "}}\n";
  return out;
}

std::string FormatMs(double value) {
  if (!std::isfinite(value)) return "-";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", value);
  return buf;
}

// How peers are authenticated (cluster members only).
std::string PeersLine(const wire::StatusReport& s) {
  std::string out = "peers: ";
  if (s.peer_auth == "sealed") {
    out += "sealed, cluster '" + s.cluster_name + "', keys";
    for (size_t i = 0; i < s.key_ids.size(); ++i) {
      out += " " + s.key_ids[i] + (i == 0 ? " (primary)" : "");
    }
  } else if (s.peer_auth == "unsealed") {
    out += "NOT AUTHENTICATED (no keyring): anyone who reaches the gossip port is trusted";
  } else if (s.peer_auth == "unsealed-loopback") {
    out += "not authenticated (no keyring; gossip on loopback only)";
  } else {
    out += s.peer_auth;
  }
  out += "\n";
  if (!s.keyring_error.empty()) {
    out += "keyring reload FAILED (old keys still in use): " + s.keyring_error + "\n";
  }
  return out;
}

std::string StatusTable(const wire::StatusReport& s) {
  std::string out =
      "node " + s.node_id + " (generation " + std::to_string(s.generation) + ", " +
      (s.cluster ? "cluster, gossip " + s.gossip_address : std::string("single node")) + ")\n";
  char line[512];
  std::snprintf(line, sizeof(line),
                "owning: %s%s%s  key share: %.1f%%  live keys: %llu  partition policy: %s  "
                "last known members: %llu  uptime: %.1f s\n",
                s.owning ? "yes" : "no", s.owning ? "" : " - ", s.not_owning_reason.c_str(),
                s.key_share * 100, static_cast<unsigned long long>(s.live_keys),
                s.partition_policy.empty() ? "-" : s.partition_policy.c_str(),
                static_cast<unsigned long long>(s.last_known_members), s.uptime_ms / 1000.0);
  out += line;
  for (const auto& [name, value] : s.counters) {
    if (name == "seeds_unanswered" && value > 0) {
      out += "warning: none of the " + std::to_string(value) +
             " --join seeds has answered; serving alone and still trying\n";
    }
  }
  if (!s.peer_auth.empty()) out += PeersLine(s);
  // The Envoy doors' rules (docs/ENVOY.md), and the members that told this
  // node of other rules (or have not told it yet).
  if (!s.rules_digest.empty()) out += "rules: digest " + s.rules_digest + "\n";
  if (const auto differ = wire::MembersWithOtherRules(s); !differ.empty()) {
    out += "rules differ:";
    for (size_t i = 0; i < differ.size(); ++i) {
      const std::string& digest = differ[i]->rules_digest;
      out += (i > 0 ? ", " : " ") + differ[i]->id +
             (digest.empty() ? " (unknown)" : " (digest " + digest + ")");
    }
    out += "\n";
  }
  if (!s.rules_error.empty()) {
    out += "rules reload FAILED (previous rules still in force): " + s.rules_error + "\n";
  }
  // Runtime limit overrides (`tally limit`), from daemons that keep them.
  std::optional<uint64_t> live, held, written, applied, refused, used;
  for (const auto& [name, value] : s.counters) {
    if (name == "overrides_live") live = value;
    if (name == "overrides_held") held = value;
    if (name == "overrides_written") written = value;
    if (name == "overrides_applied") applied = value;
    if (name == "overrides_refused") refused = value;
    if (name == "overrides_used") used = value;
  }
  if (live && held) {
    out += "limit overrides: " + std::to_string(*live) + " in force, " + std::to_string(*held) +
           " held (removals included); written here " + std::to_string(written.value_or(0)) +
           ", from members " + std::to_string(applied.value_or(0)) + " (refused " +
           std::to_string(refused.value_or(0)) + "), checks overridden " +
           std::to_string(used.value_or(0)) + "\n";
  }
  size_t id_width = 2, address_width = 7;
  for (const wire::MemberReport& m : s.members) {
    id_width = std::max(id_width, m.id.size());
    address_width = std::max(address_width, m.address.size());
  }
  auto row = [&](const std::string& id, const std::string& state, const std::string& inc,
                 const std::string& gen, const std::string& address, const std::string& offset,
                 const std::string& rtt) {
    std::snprintf(line, sizeof(line), "%-*s  %-7s  %11s  %13s  %-*s  %15s  %7s\n",
                  static_cast<int>(id_width), id.c_str(), state.c_str(), inc.c_str(), gen.c_str(),
                  static_cast<int>(address_width), address.c_str(), offset.c_str(), rtt.c_str());
    out += line;
  };
  out += "\n";
  row("ID", "STATE", "INCARNATION", "GENERATION", "ADDRESS", "CLOCK_OFFSET_MS", "RTT_MS");
  for (const wire::MemberReport& m : s.members) {
    row(m.id, m.state, std::to_string(m.incarnation), std::to_string(m.generation),
        m.address.empty() ? "-" : m.address, FormatMs(m.clock_offset_ms), FormatMs(m.rtt_ms));
  }
  if (s.members_truncated) out += "(more members than fit one reply)\n";
  return out;
}

int RunStatus(int argc, char** argv) {
  int exit_code = kExitError;
  std::optional<QueryArgs> q = ParseQueryArgs(argc, argv, kStatusUsage, "status", &exit_code);
  if (!q) return exit_code;
  if (!q->args.empty()) {
    return UsageError(q->json, "status", "unexpected argument '" + q->args[0] + "'");
  }
  wire::StatusReport report;
  std::string error;
  if (!QueryStatus(q->endpoint, q->options, &report, &error)) {
    return ReportError(q->json, Status::kUnavailable, error);
  }
  std::string text = q->json ? StatusJson(report) : StatusTable(report);
  std::fputs(text.c_str(), stdout);
  return kExitAllowed;
}

constexpr std::string_view kOwnerUsage =
    "usage: tally owner [--udp HOST:PORT | --unix PATH] [--json] [--timeout-ms N]\n"
    "                   [--attempts N] USER ENDPOINT WINDOW_SECONDS\n"
    "\n"
    "Shows which members decide USER's ENDPOINT counter of WINDOW_SECONDS in the\n"
    "asked node's view: the preference list, owner first, then its replicas; and\n"
    "a hash of the asked node's copy of the counter (equal on replicas that agree).\n"
    "Exit status: 0 answered, 2 error.\n";

int RunOwner(int argc, char** argv) {
  int exit_code = kExitError;
  std::optional<QueryArgs> q = ParseQueryArgs(argc, argv, kOwnerUsage, "owner", &exit_code);
  if (!q) return exit_code;
  auto usage = [&](const std::string& why) { return UsageError(q->json, "owner", why); };
  if (q->args.size() != 3) {
    return usage("expected USER ENDPOINT WINDOW_SECONDS, got " + std::to_string(q->args.size()) +
                 " argument(s)");
  }
  wire::OwnerQuery query;
  query.user_id = q->args[0];
  query.endpoint = q->args[1];
  std::optional<uint64_t> window_ms = ParseSecondsToMs(q->args[2]);
  if (!window_ms)
    return usage("WINDOW_SECONDS must be a number of seconds, got '" + q->args[2] + "'");
  query.window_ms = *window_ms;
  wire::OwnerReport report;
  std::string error;
  if (!QueryOwner(q->endpoint, q->options, query, &report, &error)) {
    return ReportError(q->json, Status::kUnavailable, error);
  }
  if (report.status != Status::kOk) {
    return ReportError(
        q->json, report.status,
        report.error.empty() ? std::string(StatusName(report.status)) : report.error);
  }
  std::string out;
  if (q->json) {
    out = "{\"node_id\":" + JsonEscape(report.node_id) + ",\"owner\":" +
          (report.preference_list.empty() ? std::string("null")
                                          : JsonEscape(report.preference_list[0])) +
          ",\"preference_list\":[";
    for (size_t i = 0; i < report.preference_list.size(); ++i) {
      if (i > 0) out += ",";
      out += JsonEscape(report.preference_list[i]);
    }
    out += "],\"holds_key\":" + JsonBool(report.holds_key) +
           ",\"state_hash\":" + std::to_string(report.state_hash) + "}\n";
  } else {
    out = "owner: " + (report.preference_list.empty() ? "-" : report.preference_list[0]) +
          "\npreference list:";
    for (const std::string& id : report.preference_list) out += " " + id;
    char hash[32];
    std::snprintf(hash, sizeof(hash), "%016llx",
                  static_cast<unsigned long long>(report.state_hash));
    out += "\nasked node: " + report.node_id + " (" +
           (report.holds_key ? "holds the counter, state hash " + std::string(hash)
                             : std::string("holds no counter")) +
           ")\n";
  }
  std::fputs(out.c_str(), stdout);
  return kExitAllowed;
}

// ---- keyring ----

constexpr std::string_view kKeyringUsage =
    "usage: tally keyring generate [--out FILE]\n"
    "       tally keyring list FILE\n"
    "\n"
    "generate: a new key file holding one fresh key (the primary), on stdout or in\n"
    "  FILE, created with mode 0600 and never overwritten. To add a key to an\n"
    "  existing keyring (rotation), append the output: tally keyring generate >> FILE.\n"
    "list: the key ids in FILE, the primary first, as `tally status` shows them.\n"
    "tallyd --keyring FILE seals all peer traffic with the primary key and opens it\n"
    "with any key listed; SIGHUP makes it re-read FILE. Rotation, step by step:\n"
    "docs/RELIABILITY.md, \"Peer authentication\".\n"
    "Exit status: 0 done, 2 error.\n";

int RunKeyring(int argc, char** argv) {
  po::options_description flags("options");
  flags.add_options()("help,h", "show this help")(
      "out", po::value<std::string>()->value_name("FILE"),
      "generate: write a new key file FILE (mode 0600) instead of stdout");
  int exit_code = kExitError;
  std::optional<CommandLine> line =
      ParseCommandLine(argc, argv, flags, kKeyringUsage, "keyring", false, &exit_code);
  if (!line) return exit_code;
  const std::vector<std::string>& args = line->args;
  auto usage = [](const std::string& why) { return UsageError(false, "keyring", why); };
  if (args.empty()) return usage("expected generate or list");
  if (args[0] == "generate") {
    if (args.size() != 1) return usage("generate takes no arguments (--out FILE names the file)");
    const std::string text = io::NewKeyringText();
    if (line->flags.count("out") == 0) {
      std::fputs(text.c_str(), stdout);
      return std::fflush(stdout) == 0 ? kExitAllowed : kExitError;
    }
    std::string why;
    if (!io::WriteNewKeyringFile(line->flags["out"].as<std::string>(), text, &why)) {
      std::fprintf(stderr, "tally keyring: %s\n", why.c_str());
      return kExitError;
    }
    return kExitAllowed;
  }
  if (args[0] == "list") {
    if (line->flags.count("out") != 0) return usage("--out is for generate");
    if (args.size() != 2) return usage("expected list FILE");
    std::string why;
    std::optional<io::Keyring> ring = io::Keyring::Load(args[1], &why);
    if (!ring) {
      std::fprintf(stderr, "tally keyring: %s\n", why.c_str());
      return kExitError;
    }
    std::vector<io::KeyId> ids = ring->ids();
    for (size_t i = 0; i < ids.size(); ++i) {
      std::printf("%s  %s\n", io::FormatKeyId(ids[i]).c_str(), i == 0 ? "primary" : "secondary");
    }
    return kExitAllowed;
  }
  return usage("unknown keyring command '" + args[0] + "' (generate or list)");
}

// ---- limit: runtime limit overrides ----

constexpr std::string_view kLimitUsage =
    "usage: tally limit set [--udp HOST:PORT | --unix PATH] [--json] SELECTOR --limit N\n"
    "                       [--unit second|minute|hour|day|week|month]\n"
    "       tally limit get [--udp HOST:PORT | --unix PATH] [--json] SELECTOR\n"
    "       tally limit rm  [--udp HOST:PORT | --unix PATH] [--json] SELECTOR\n"
    "       tally limit list [--udp HOST:PORT | --unix PATH] [--json]\n"
    "  SELECTOR: --domain D --descriptor key=value[,key=value...]   (an Envoy rules descriptor)\n"
    "        or: --user U --endpoint E --window-seconds W           (one explicit key)\n"
    "\n"
    "Changes limits at runtime, without a restart, for the whole cluster: the\n"
    "asked member stamps the write and sends it to every member. set: at most N\n"
    "hits (0 denies all) per --unit (the descriptor form; or --window-seconds);\n"
    "an explicit key keeps its window. rm: back to the rule's or the caller's\n"
    "limit. get: the override the asked member holds; list: all in force there.\n"
    "Writes are taken on tallyd's Unix sockets and from loopback UDP only.\n"
    "Exit status: 0 done (get: an override is in force), 1 get: none, 2 error.\n";

void AddLimitFlags(po::options_description_easy_init& add) {
  add("domain", po::value<std::string>(), "descriptor form: the rules domain");
  add("descriptor", po::value<std::string>(), "descriptor form: key=value[,key=value...]");
  add("user", po::value<std::string>(), "explicit form: the user id");
  add("endpoint", po::value<std::string>(), "explicit form: the endpoint");
  add("window-seconds", po::value<std::string>(),
      "explicit form: the key's window; descriptor form: the window instead of --unit");
  add("limit", po::value<std::string>(), "set: hits per window, 0..4294967295");
  add("unit", po::value<std::string>(), "set, descriptor form: second|minute|hour|day|week|month");
}

// RateLimitUnit's number for a unit name; nullopt for any other.
std::optional<uint8_t> LimitUnitNumber(std::string_view name) {
  static constexpr std::pair<std::string_view, uint8_t> kUnits[] = {
      {"second", 1}, {"minute", 2}, {"hour", 3}, {"day", 4}, {"month", 5}, {"week", 7}};
  for (const auto& [n, v] : kUnits) {
    if (n == name) return v;
  }
  return std::nullopt;
}

// The selector from the flags. False with `*why` on a usage error.
bool ParseLimitSelector(const po::variables_map& flags, wire::LimitSelectorValue* out,
                        std::string* why) {
  const bool descriptor = flags.count("domain") != 0 || flags.count("descriptor") != 0;
  const bool key = flags.count("user") != 0 || flags.count("endpoint") != 0;
  if (descriptor == key) {
    *why = descriptor ? "--domain/--descriptor and --user/--endpoint exclude each other"
                      : "name a selector: --domain D --descriptor k=v[,k=v...], or --user U "
                        "--endpoint E --window-seconds W";
    return false;
  }
  if (descriptor) {
    if (flags.count("domain") == 0 || flags.count("descriptor") == 0) {
      *why = "the descriptor form needs both --domain and --descriptor";
      return false;
    }
    RateLimitDescriptor parsed;
    if (!ParseDescriptor(flags["descriptor"].as<std::string>(), &parsed, why)) return false;
    out->is_key = false;
    out->domain = flags["domain"].as<std::string>();
    for (const auto& e : parsed.entries) out->entries.emplace_back(e.key, e.value);
    if (out->domain.empty()) {
      *why = "--domain is empty";
      return false;
    }
    return true;
  }
  if (flags.count("user") == 0 || flags.count("endpoint") == 0 ||
      flags.count("window-seconds") == 0) {
    *why = "the explicit form needs --user, --endpoint and --window-seconds";
    return false;
  }
  out->is_key = true;
  out->user_id = flags["user"].as<std::string>();
  out->endpoint = flags["endpoint"].as<std::string>();
  const std::string text = flags["window-seconds"].as<std::string>();
  std::optional<uint64_t> window_ms = ParseSecondsToMs(text);
  if (!window_ms || *window_ms < kMinWindowMs || *window_ms > kMaxWindowMs) {
    *why = "--window-seconds must be 0.001 .. 2678400 (31 days), got '" + text + "'";
    return false;
  }
  out->window_ms = *window_ms;
  return true;
}

std::string SelectorText(const wire::LimitSelectorValue& s) {
  if (s.is_key) {
    return "user=" + s.user_id + " endpoint=" + s.endpoint +
           " window_ms=" + std::to_string(s.window_ms);
  }
  std::string out = "domain=" + s.domain + " descriptor=";
  for (size_t i = 0; i < s.entries.size(); ++i) {
    if (i > 0) out += ',';
    out += s.entries[i].first + "=" + s.entries[i].second;
  }
  return out;
}

std::string SelectorJson(const wire::LimitSelectorValue& s) {
  if (s.is_key) {
    return "\"user\":" + JsonEscape(s.user_id) + ",\"endpoint\":" + JsonEscape(s.endpoint) +
           ",\"selector_window_ms\":" + std::to_string(s.window_ms);
  }
  std::string out = "\"domain\":" + JsonEscape(s.domain) + ",\"descriptor\":[";
  for (size_t i = 0; i < s.entries.size(); ++i) {
    if (i > 0) out += ',';
    out += "{\"key\":" + JsonEscape(s.entries[i].first) +
           ",\"value\":" + JsonEscape(s.entries[i].second) + "}";
  }
  return out + "]";
}

std::string OverrideJson(const wire::LimitOverrideReport& o) {
  return "{" + SelectorJson(o.selector) + ",\"removed\":" + JsonBool(o.removed) +
         ",\"limit\":" + std::to_string(o.limit) + ",\"window_ms\":" + std::to_string(o.window_ms) +
         ",\"updated_ms\":" + std::to_string(o.updated_ms) + "}";
}

std::string OverrideLine(const wire::LimitOverrideReport& o) {
  if (o.removed) return SelectorText(o.selector) + " removed\n";
  return SelectorText(o.selector) + " limit=" + std::to_string(o.limit) +
         " per_ms=" + std::to_string(o.window_ms) + "\n";
}

std::string_view OutcomeName(wire::LimitOutcome outcome) {
  switch (outcome) {
    case wire::LimitOutcome::kApplied:
      return "applied";
    case wire::LimitOutcome::kStale:
      return "stale";
    case wire::LimitOutcome::kInvalid:
      return "invalid";
    case wire::LimitOutcome::kFull:
      return "full";
    case wire::LimitOutcome::kNone:
      break;
  }
  return "none";
}

int RunLimit(int argc, char** argv) {
  const bool json = WantsJson(argc, argv);
  int exit_code = kExitError;
  std::optional<CommandLine> line = ParseCommandLine(
      argc, argv, SubcommandFlags("500", AddLimitFlags), kLimitUsage, "limit", json, &exit_code);
  if (!line) return exit_code;
  auto usage = [&](const std::string& why) { return UsageError(json, "limit", why); };
  const po::variables_map& flags = line->flags;
  DaemonAddress endpoint;
  ClientOptions options;
  std::string why;
  if (!ParseEndpointFlags(flags, &endpoint, &why) || !ParseTimingFlags(flags, &options, &why)) {
    return usage(why);
  }
  if (line->args.size() != 1) return usage("expected one of set, get, rm, list");
  const std::string& verb = line->args[0];
  if (verb != "set" && verb != "get" && verb != "rm" && verb != "list") {
    return usage("unknown limit command '" + verb + "' (set, get, rm or list)");
  }
  if (verb != "set" && (flags.count("limit") != 0 || flags.count("unit") != 0)) {
    return usage("--limit and --unit are for set");
  }
  std::string error;
  if (verb == "list") {
    for (const char* f : {"domain", "descriptor", "user", "endpoint", "window-seconds"}) {
      if (flags.count(f) != 0) return usage(std::string("list takes no selector (--") + f + ")");
    }
    // Page by page; a daemon's map holds at most 4096 selectors, so a
    // cursor that keeps coming back is cut off rather than followed forever.
    constexpr int kMaxPages = 4097;
    wire::LimitListQuery query;
    std::vector<wire::LimitOverrideReport> all;
    std::string node_id;
    for (int page = 0;; ++page) {
      wire::LimitOverridesReport report;
      if (page == kMaxPages) return ReportError(json, Status::kInternal, "the listing never ends");
      if (!ListLimits(endpoint, options, query, &report, &error)) {
        return ReportError(json, Status::kUnavailable, error);
      }
      if (report.status != Status::kOk) {
        return ReportError(
            json, report.status,
            report.error.empty() ? std::string(StatusName(report.status)) : report.error);
      }
      node_id = report.node_id;
      for (auto& o : report.overrides) all.push_back(std::move(o));
      if (report.next_cursor.empty()) break;
      query.cursor = report.next_cursor;
    }
    std::string out;
    if (json) {
      out = "{\"node_id\":" + JsonEscape(node_id) + ",\"overrides\":[";
      for (size_t i = 0; i < all.size(); ++i) out += (i > 0 ? "," : "") + OverrideJson(all[i]);
      out += "]}\n";
    } else {
      for (const auto& o : all) out += OverrideLine(o);
      if (all.empty()) out = "no overrides in force on " + node_id + "\n";
    }
    std::fputs(out.c_str(), stdout);
    return kExitAllowed;
  }
  wire::LimitSelectorValue selector;
  if (!ParseLimitSelector(flags, &selector, &why)) return usage(why);
  if (verb == "get") {
    wire::LimitGetQuery query{selector};
    wire::LimitOverridesReport report;
    if (!GetLimit(endpoint, options, query, &report, &error)) {
      return ReportError(json, Status::kUnavailable, error);
    }
    if (report.status != Status::kOk) {
      return ReportError(
          json, report.status,
          report.error.empty() ? std::string(StatusName(report.status)) : report.error);
    }
    const bool in_force = !report.overrides.empty() && !report.overrides[0].removed;
    std::string out;
    if (json) {
      out = "{\"node_id\":" + JsonEscape(report.node_id) + ",\"override\":" +
            (report.overrides.empty() ? std::string("null") : OverrideJson(report.overrides[0])) +
            "}\n";
    } else {
      out = report.overrides.empty() ? "no override on " + report.node_id + "\n"
                                     : OverrideLine(report.overrides[0]);
    }
    std::fputs(out.c_str(), stdout);
    return in_force ? kExitAllowed : kExitDenied;
  }
  wire::LimitWriteQuery query;
  query.selector = selector;
  query.request_id = 0;
  if (verb == "rm") {
    query.remove = true;
  } else {
    if (flags.count("limit") == 0) return usage("set needs --limit N");
    const std::string text = flags["limit"].as<std::string>();
    std::optional<uint64_t> limit = ParseUint(text);
    if (!limit || *limit > kMaxLimit) {
      return usage("--limit must be 0.." + std::to_string(kMaxLimit) + ", got '" + text + "'");
    }
    query.limit = *limit;
    if (!selector.is_key) {
      if (flags.count("unit") != 0) {
        const std::string unit = flags["unit"].as<std::string>();
        std::optional<uint8_t> number = LimitUnitNumber(unit);
        if (!number) {
          return usage("--unit must be second, minute, hour, day, week or month, got '" + unit +
                       "'");
        }
        query.unit = *number;
      } else if (flags.count("window-seconds") != 0) {
        const std::string w = flags["window-seconds"].as<std::string>();
        std::optional<uint64_t> window_ms = ParseSecondsToMs(w);
        if (!window_ms || *window_ms < kMinWindowMs || *window_ms > kMaxWindowMs) {
          return usage("--window-seconds must be 0.001 .. 2678400 (31 days), got '" + w + "'");
        }
        query.window_ms = *window_ms;
      } else {
        return usage("set with a descriptor needs --unit (or --window-seconds)");
      }
      if (flags.count("unit") != 0 && flags.count("window-seconds") != 0) {
        return usage("--unit and --window-seconds exclude each other");
      }
    } else if (flags.count("unit") != 0) {
      return usage("--unit is for the descriptor form (an explicit key keeps its window)");
    }
  }
  wire::LimitWriteReport report;
  if (!WriteLimit(endpoint, options, query, &report, &error)) {
    return ReportError(json, Status::kUnavailable, error);
  }
  if (report.status != Status::kOk) {
    return ReportError(
        json, report.status,
        report.error.empty() ? std::string(StatusName(report.status)) : report.error);
  }
  std::string out;
  if (json) {
    out = "{\"status\":\"ok\",\"outcome\":" + JsonEscape(OutcomeName(report.outcome)) +
          ",\"node_id\":" + JsonEscape(report.node_id) + "}\n";
  } else if (report.outcome == wire::LimitOutcome::kStale) {
    out = "stale: " + report.node_id + " already holds a later write of this selector\n";
  } else {
    out = std::string(verb == "rm" ? "removed" : "set") + " on " + report.node_id +
          " (spreading to every member)\n";
  }
  std::fputs(out.c_str(), stdout);
  return kExitAllowed;
}

// ---- report: a backend's signal for a load-adaptive limit ----

constexpr std::string_view kReportUsage =
    "usage: tally report [--udp HOST:PORT | --unix PATH] [--json] --domain D --rule NAME\n"
    "                    --value V [--count N]\n"
    "\n"
    "Reports what the backend behind an adaptive limit saw: N requests (default 1)\n"
    "that averaged V (a latency_ms rule: mean latency in ms; an error_rate rule:\n"
    "errors / N, 0..1). NAME is the limit's `name` in the rules of domain D. The\n"
    "member sums reports and sends them to the rule's owner, whose controller moves\n"
    "the limit every member enforces (docs/DESIGN.md, \"Load-adaptive limits\").\n"
    "Taken on tallyd's Unix sockets and from loopback UDP only; sent once (a resent\n"
    "report would count twice).\n"
    "Exit status: 0 accepted, 2 error (no such adaptive limit, out of range, unreachable).\n";

void AddReportFlags(po::options_description_easy_init& add) {
  add("domain", po::value<std::string>(), "the rules domain");
  add("rule", po::value<std::string>(), "the adaptive limit's name");
  add("value", po::value<std::string>(), "the signal averaged over the requests");
  add("count", po::value<std::string>(), "the requests the value covers (default 1)");
}

int RunReport(int argc, char** argv) {
  const bool json = WantsJson(argc, argv);
  int exit_code = kExitError;
  std::optional<CommandLine> line = ParseCommandLine(
      argc, argv, SubcommandFlags("500", AddReportFlags), kReportUsage, "report", json, &exit_code);
  if (!line) return exit_code;
  auto usage = [&](const std::string& why) { return UsageError(json, "report", why); };
  const po::variables_map& flags = line->flags;
  DaemonAddress endpoint;
  ClientOptions options;
  std::string why;
  if (!ParseEndpointFlags(flags, &endpoint, &why) || !ParseTimingFlags(flags, &options, &why)) {
    return usage(why);
  }
  // Not resent unless asked: a report taken twice counts twice.
  if (flags["attempts"].defaulted()) options.attempts = 1;
  if (!line->args.empty()) return usage("report takes no arguments");
  for (const char* f : {"domain", "rule", "value"}) {
    if (flags.count(f) == 0) return usage(std::string("--") + f + " is required");
  }
  SignalReport report;
  report.domain = flags["domain"].as<std::string>();
  report.rule = flags["rule"].as<std::string>();
  const std::string value = flags["value"].as<std::string>();
  char* end = nullptr;
  report.value = std::strtod(value.c_str(), &end);
  if (value.empty() || end != value.c_str() + value.size() || !std::isfinite(report.value)) {
    return usage("--value must be a finite number, not '" + value + "'");
  }
  if (flags.count("count") != 0) {
    const std::string text = flags["count"].as<std::string>();
    uint64_t count = 0;
    const auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), count);
    if (ec != std::errc() || ptr != text.data() + text.size() || count == 0) {
      return usage("--count must be a whole number of at least 1, not '" + text + "'");
    }
    report.count = count;
  }
  SignalReportOutcome outcome = SignalReportOutcome::kNone;
  std::string error;
  const Status status = ReportSignal(endpoint, options, report, &outcome, &error);
  if (status != Status::kOk) {
    return ReportError(json, status, error.empty() ? std::string(StatusName(status)) : error);
  }
  std::fputs(json ? "{\"status\":\"ok\",\"outcome\":\"accepted\"}\n" : "accepted\n", stdout);
  return kExitAllowed;
}

constexpr Subcommand kSubcommands[] = {
    {"check", "ask whether a request may go ahead", RunCheck},
    {"status", "show the daemon's node and cluster members", RunStatus},
    {"owner", "show which members decide a key", RunOwner},
    {"keyring", "make a cluster key file, or list its key ids", RunKeyring},
    {"limit", "set, get, list or remove runtime limit overrides", RunLimit},
    {"report", "report a backend's signal for a load-adaptive limit", RunReport},
};

void PrintUsage(std::FILE* out) {
  std::fputs("usage: tally SUBCOMMAND [options] [args]\n\nsubcommands:\n", out);
  for (const Subcommand& sub : kSubcommands) {
    std::fprintf(out, "  %-8.*s %.*s\n", static_cast<int>(sub.name.size()), sub.name.data(),
                 static_cast<int>(sub.summary.size()), sub.summary.data());
  }
  std::fputs(
      "\nRun 'tally SUBCOMMAND --help' for details. Exit status: 0 allowed (check) or "
      "answered, 1 denied, 2 error.\n",
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

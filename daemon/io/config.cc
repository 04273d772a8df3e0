#include "daemon/io/config.h"

#include <sys/un.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <cstdint>
#include <fstream>
#include <sstream>

#include "daemon/io/sockets.h"
#include "tally/types.h"

namespace tally::io {
namespace {

namespace po = boost::program_options;

// Sub-limits that keep the process sane; the Limiter's own REQUIREs are
// narrower where they exist (buckets_per_window).
constexpr uint64_t kMaxThreads = 1024;
constexpr uint64_t kMaxKeys = 1'000'000'000;
constexpr uint64_t kMaxDedupTtlMs = 24ull * 3600 * 1000;
constexpr uint64_t kMaxDedupEntries = 1'000'000'000;
constexpr uint64_t kMaxShards = 65536;
constexpr uint64_t kMaxSweepIntervalMs = 3'600'000;
constexpr uint64_t kMaxStatsIntervalS = 86'400;

// Strict unsigned parse: the whole string, base 10, in [lo, hi]. Boost's
// lexical_cast would accept "-1" for an unsigned and wrap it.
bool ParseUint(const po::variables_map& vm, const char* name, uint64_t lo, uint64_t hi,
               uint64_t* out, std::string* error) {
  if (!vm.count(name)) return true;
  const std::string& text = vm[name].as<std::string>();
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() || value < lo ||
      value > hi) {
    *error = "--" + std::string(name) + ": expected an integer in [" + std::to_string(lo) + ", " +
             std::to_string(hi) + "], got '" + text + "'";
    return false;
  }
  *out = value;
  return true;
}

bool ParseBool(const std::string& text, bool* out) {
  if (text == "true" || text == "1" || text == "yes" || text == "on") {
    *out = true;
    return true;
  }
  if (text == "false" || text == "0" || text == "no" || text == "off") {
    *out = false;
    return true;
  }
  return false;
}

bool ParseLogLevel(const std::string& text, spdlog::level::level_enum* out) {
  static constexpr std::pair<const char*, spdlog::level::level_enum> kLevels[] = {
      {"trace", spdlog::level::trace}, {"debug", spdlog::level::debug},
      {"info", spdlog::level::info},   {"warn", spdlog::level::warn},
      {"error", spdlog::level::err},
  };
  for (const auto& [name, level] : kLevels) {
    if (text == name) {
      *out = level;
      return true;
    }
  }
  return false;
}

// "none" (or "") disables a transport.
std::string Disabled(const std::string& value) { return value == "none" ? "" : value; }

bool CheckUnixPath(const char* flag, const std::string& path, std::string* error) {
  if (path.empty()) return true;
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    *error = std::string("--") + flag + ": socket path longer than " +
             std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes: '" + path + "'";
    return false;
  }
  return true;
}

}  // namespace

FlagsOutcome ParseTallydFlags(int argc, const char* const* argv, TallydConfig* config,
                              std::string* output, std::string* error) {
  const DaemonOptions defaults;
  const LimiterOptions limiter_defaults;

  po::options_description command_only("Command line only");
  command_only.add_options()("help,h", "print this help and exit")("version",
                                                                   "print the version and exit")(
      "config", po::value<std::string>()->value_name("FILE"),
      "read options from FILE (INI: 'name = value', same names as the flags); "
      "flags override it")("check-config",
                           "parse and validate the flags and config file, then exit 0 (or 2)");

  po::options_description settings("Settings (command line or config file)");
  settings.add_options()(
      "udp", po::value<std::string>()->value_name("HOST:PORT"),
      "UDP address ([v6]:PORT ok, port 0 picks one, 'none' disables); default 127.0.0.1:7070")(
      "unix", po::value<std::string>()->value_name("PATH"),
      ("Unix datagram socket ('none' disables); default " + DefaultUnixPath()).c_str())(
      "unix-seq", po::value<std::string>()->value_name("PATH"),
      ("Unix seqpacket socket ('none' disables); default " + DefaultUnixSeqpacketPath()).c_str())(
      "threads", po::value<std::string>()->value_name("N"),
      "I/O threads, 0 = one per CPU; default 0")(
      "buckets-per-window", po::value<std::string>()->value_name("N"),
      "sub-buckets per window, 1..1000 (accuracy vs memory); default 10")(
      "max-keys", po::value<std::string>()->value_name("N"), "cap on live keys; default 4000000")(
      "dedup-ttl-ms", po::value<std::string>()->value_name("N"),
      "how long request ids are remembered, 0 disables dedup; default 10000")(
      "max-dedup-entries", po::value<std::string>()->value_name("N"),
      "cap on remembered request ids, 0 disables dedup; default 1000000")(
      "shards", po::value<std::string>()->value_name("N"), "limiter lock stripes; default 64")(
      "sweep-interval-ms", po::value<std::string>()->value_name("N"),
      "expire one shard every N ms; default 50")("stats-interval-s",
                                                 po::value<std::string>()->value_name("N"),
                                                 "log stats every N s, 0 disables; default 60")(
      "log-level", po::value<std::string>()->value_name("LEVEL"),
      "trace|debug|info|warn|error; default info")(
      "echo", po::value<std::string>()->value_name("BOOL")->implicit_value("true"),
      "raw echo server (measures the transport floor); default false");

  po::options_description all("Usage: tallyd [options]");
  all.add(command_only).add(settings);

  po::variables_map vm;
  try {
    po::store(po::command_line_parser(argc, argv).options(all).run(), vm);
    if (vm.count("help")) {
      std::ostringstream help;
      help << "tallyd " << kTallydVersion << ": distributed rate limiter daemon\n\n" << all;
      *output = help.str();
      return FlagsOutcome::kExitOk;
    }
    if (vm.count("version")) {
      *output = std::string("tallyd ") + kTallydVersion + "\n";
      return FlagsOutcome::kExitOk;
    }
    if (vm.count("config")) {
      config->config_file = vm["config"].as<std::string>();
      std::ifstream file(config->config_file);
      if (!file) {
        *error = "--config: cannot open '" + config->config_file + "'";
        return FlagsOutcome::kBadUsage;
      }
      // Stored after the command line, so flags win (store keeps first values).
      po::store(po::parse_config_file(file, settings, /*allow_unregistered=*/false), vm);
    }
    po::notify(vm);
  } catch (const po::error& e) {
    *error = e.what();
    if (!config->config_file.empty()) *error += " (command line or " + config->config_file + ")";
    return FlagsOutcome::kBadUsage;
  }

  DaemonOptions& d = config->daemon;
  d = defaults;
  d.unix_path = DefaultUnixPath();
  d.unix_seq_path = DefaultUnixSeqpacketPath();
  config->check_config = vm.count("check-config") > 0;

  if (vm.count("udp")) d.udp = Disabled(vm["udp"].as<std::string>());
  if (vm.count("unix")) d.unix_path = Disabled(vm["unix"].as<std::string>());
  if (vm.count("unix-seq")) d.unix_seq_path = Disabled(vm["unix-seq"].as<std::string>());
  if (!d.udp.empty()) {
    std::string why;
    if (!ParseHostPort(d.udp, &why)) {
      *error = "--udp: " + why;
      return FlagsOutcome::kBadUsage;
    }
  }
  if (!CheckUnixPath("unix", d.unix_path, error) ||
      !CheckUnixPath("unix-seq", d.unix_seq_path, error)) {
    return FlagsOutcome::kBadUsage;
  }
  if (!d.unix_path.empty() && d.unix_path == d.unix_seq_path) {
    *error = "--unix and --unix-seq must be different paths";
    return FlagsOutcome::kBadUsage;
  }
  if (d.udp.empty() && d.unix_path.empty() && d.unix_seq_path.empty()) {
    *error = "every transport is disabled (--udp, --unix and --unix-seq are 'none')";
    return FlagsOutcome::kBadUsage;
  }

  uint64_t threads = 0, buckets = limiter_defaults.buckets_per_window,
           max_keys = limiter_defaults.max_keys,
           dedup_ttl_ms = static_cast<uint64_t>(limiter_defaults.dedup_ttl.count()),
           max_dedup = limiter_defaults.max_dedup_entries, shards = limiter_defaults.shards,
           sweep_ms = static_cast<uint64_t>(defaults.sweep_interval.count()),
           stats_s = static_cast<uint64_t>(defaults.stats_interval.count());
  if (!ParseUint(vm, "threads", 0, kMaxThreads, &threads, error) ||
      !ParseUint(vm, "buckets-per-window", 1, 1000, &buckets, error) ||
      !ParseUint(vm, "max-keys", 1, kMaxKeys, &max_keys, error) ||
      !ParseUint(vm, "dedup-ttl-ms", 0, kMaxDedupTtlMs, &dedup_ttl_ms, error) ||
      !ParseUint(vm, "max-dedup-entries", 0, kMaxDedupEntries, &max_dedup, error) ||
      !ParseUint(vm, "shards", 1, kMaxShards, &shards, error) ||
      !ParseUint(vm, "sweep-interval-ms", 1, kMaxSweepIntervalMs, &sweep_ms, error) ||
      !ParseUint(vm, "stats-interval-s", 0, kMaxStatsIntervalS, &stats_s, error)) {
    return FlagsOutcome::kBadUsage;
  }
  d.threads = static_cast<int>(threads);
  d.limiter.buckets_per_window = static_cast<uint32_t>(buckets);
  d.limiter.max_keys = max_keys;
  d.limiter.dedup_ttl = std::chrono::milliseconds(dedup_ttl_ms);
  d.limiter.max_dedup_entries = max_dedup;
  d.limiter.shards = shards;
  d.sweep_interval = std::chrono::milliseconds(sweep_ms);
  d.stats_interval = std::chrono::seconds(stats_s);

  if (vm.count("log-level") &&
      !ParseLogLevel(vm["log-level"].as<std::string>(), &config->log_level)) {
    *error = "--log-level: expected trace|debug|info|warn|error, got '" +
             vm["log-level"].as<std::string>() + "'";
    return FlagsOutcome::kBadUsage;
  }
  if (vm.count("echo") && !ParseBool(vm["echo"].as<std::string>(), &d.echo)) {
    *error = "--echo: expected true|false, got '" + vm["echo"].as<std::string>() + "'";
    return FlagsOutcome::kBadUsage;
  }
  d.handle_signals = true;
  return FlagsOutcome::kRun;
}

}  // namespace tally::io

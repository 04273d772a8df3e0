// tallyd's command line and config file. The file uses the long flag names in
// INI form ("udp = 127.0.0.1:7070"); flags given on the command line override
// the file. Every value is range-checked here so that a typo fails at start
// with a clear message instead of surfacing as odd behaviour later.
//
// Thread safety: pure functions.
#ifndef TALLY_DAEMON_IO_CONFIG_H_
#define TALLY_DAEMON_IO_CONFIG_H_

#include <spdlog/common.h>

#include <cstdint>
#include <istream>
#include <optional>
#include <string>

#include "daemon/io/daemon.h"

namespace tally::io {

inline constexpr const char* kTallydVersion = "0.1.0";
// Envoy's rate limit service doors (--grpc, --http): envoyproxy/ratelimit's
// ports, on loopback.
inline constexpr const char* kDefaultGrpcListen = "127.0.0.1:8081";
inline constexpr const char* kDefaultHttpListen = "127.0.0.1:8080";

struct TallydConfig {
  DaemonOptions daemon;
  spdlog::level::level_enum log_level = spdlog::level::info;
  std::string config_file;    // "" if none
  bool check_config = false;  // validate and exit
  // Envoy's rate limit service doors (daemon/rls/, docs/ENVOY.md); "" = off.
  // On by default (kDefaultGrpcListen, kDefaultHttpListen), off in echo mode.
  std::string grpc_listen;
  std::string http_listen;
  std::string rules_path;  // "" = no rules
  bool shadow_mode = false;
  bool rls_headers = false;  // draft-IETF RateLimit-* headers on every answer
  // Which server speaks gRPC (--grpc-server): true for tallyd's own over
  // nghttp2 (the default), false for gRPC's C++ server.
  bool grpc_nghttp2 = true;
};

enum class FlagsOutcome {
  kRun,       // *config is filled in
  kExitOk,    // --help / --version: print *output and exit 0
  kBadUsage,  // *error says why; exit 2
};

// Parses argv (and the --config file it names, if any) into `*config`, which
// starts from tallyd's defaults. `argv` is borrowed for the call only.
FlagsOutcome ParseTallydFlags(int argc, const char* const* argv, TallydConfig* config,
                              std::string* output, std::string* error);

// Maps a group name to its gid, or nullopt if the system has no such group.
using GroupLookup = std::optional<int64_t> (*)(const std::string& name);

// The system's group database (getgrnam_r, so NSS: files, LDAP, systemd).
// It may block on a network directory; only tallyd's start calls it.
std::optional<int64_t> LookUpSystemGroup(const std::string& name);

// The same, with the text of the --config file read from `*config_text`
// instead of the file named, and group names (--unix-group) resolved by
// `lookup_group` (for tests and fuzz/config_fuzz.cc, which must not depend on
// the machine's directory services). A null `config_text` reads the named file.
FlagsOutcome ParseTallydFlags(int argc, const char* const* argv, std::istream* config_text,
                              TallydConfig* config, std::string* output, std::string* error,
                              GroupLookup lookup_group = LookUpSystemGroup);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_CONFIG_H_

#include "daemon/io/config.h"

#include <grp.h>
#include <sys/un.h>

#include <boost/program_options.hpp>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string_view>
#include <vector>

#include "client/program_options_guard.h"
#include "daemon/io/peer_seal.h"
#include "daemon/io/resolver.h"
#include "daemon/io/snapshot_file.h"
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

// --grpc-listen and --http-listen are the doors' first names, kept so that
// existing command lines and config files keep working. They are renamed
// before storing, so the command line still overrides the file whichever
// name each uses (and both names on one command line are "given twice").
void RenameDeprecatedAliases(po::parsed_options* parsed) {
  for (po::option& option : parsed->options) {
    if (option.string_key == "grpc-listen") option.string_key = "grpc";
    if (option.string_key == "http-listen") option.string_key = "http";
  }
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

// Member ids appear in logs, status tables and the listening line: keep them
// to printable ASCII without spaces.
bool ValidNodeId(const std::string& id) {
  if (id.empty() || id.size() > 255) return false;
  for (char c : id) {
    if (c <= ' ' || c > '~') return false;
  }
  return true;
}

// "0660", "660": read/write bits only, and the owner must keep both.
bool ParseUnixMode(const std::string& text, unsigned* mode, std::string* error) {
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 8);
  if (text.empty() || ec != std::errc() || end != text.data() + text.size() ||
      (value & ~0666u) != 0 || (value & 0600u) != 0600u) {
    *error = "--unix-mode: '" + text +
             "' is not an octal mode of read/write bits with owner rw (e.g. 0660, 0600, 0666)";
    return false;
  }
  *mode = value;
  return true;
}

// A group name known to the system, or a number.
bool ParseUnixGroup(const std::string& text, GroupLookup lookup_group, int64_t* gid,
                    std::string* error) {
  uint32_t number = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (!text.empty() && ec == std::errc() && end == text.data() + text.size()) {
    *gid = number;
    return true;
  }
  if (!text.empty()) {
    if (const std::optional<int64_t> found = lookup_group(text)) {
      *gid = *found;
      return true;
    }
  }
  *error = "--unix-group: no group named '" + text + "'";
  return false;
}

bool ParseInt(const po::variables_map& vm, const char* name, int64_t lo, int64_t hi, int64_t* out,
              std::string* error) {
  uint64_t value = static_cast<uint64_t>(*out);
  if (!ParseUint(vm, name, static_cast<uint64_t>(lo), static_cast<uint64_t>(hi), &value, error)) {
    return false;
  }
  *out = static_cast<int64_t>(value);
  return true;
}

bool ParseIntAs(const po::variables_map& vm, const char* name, int64_t lo, int64_t hi, int* out,
                std::string* error) {
  int64_t value = *out;
  if (!ParseInt(vm, name, lo, hi, &value, error)) return false;
  *out = static_cast<int>(value);
  return true;
}

// --state-dir, --snapshot-interval-s, --cluster-name. Both modes snapshot
// their counts there; a single node also keeps its runtime limit overrides in
// the state directory (LocalOverrides), so one config file and unit serve
// both modes.
bool ParseSnapshots(const po::variables_map& vm, ClusterOptions* c, std::string* error) {
  constexpr uint64_t kMaxSnapshotIntervalS = 86'400;
  uint64_t interval_s = static_cast<uint64_t>(c->snapshot_interval.count());
  if (!ParseUint(vm, "snapshot-interval-s", 0, kMaxSnapshotIntervalS, &interval_s, error)) {
    return false;
  }
  c->snapshot_interval = std::chrono::seconds(interval_s);
  // --cluster-name (parsed with the keyring options) also names snapshots.
  std::string dir;
  if (vm.count("state-dir")) {
    dir = vm["state-dir"].as<std::string>();
    if (dir == "auto") {
      std::optional<std::filesystem::path> d = DefaultStateDir();
      if (!d) {
        *error =
            "--state-dir auto: no $STATE_DIRECTORY, not root, and no $XDG_STATE_HOME or "
            "$HOME to put it in";
        return false;
      }
      dir = d->string();
    } else if (dir == "none") {
      dir.clear();
    }
  } else {
    const char* systemd = std::getenv("STATE_DIRECTORY");
    if (systemd != nullptr && systemd[0] == '/') {
      if (std::optional<std::filesystem::path> d = DefaultStateDir()) dir = d->string();
    }
  }
  c->state_dir = dir;
  return true;
}

bool ParseCluster(const po::variables_map& vm, ClusterOptions* c, std::string* error) {
  constexpr int64_t kHour = 3'600'000;
  constexpr int64_t kDay = 24 * kHour;
  std::string why;
  if (vm.count("gossip")) {
    c->gossip = vm["gossip"].as<std::string>();
    if (!ParseHostPort(c->gossip, &why)) {
      *error = "--gossip: " + why;
      return false;
    }
  }
  if (vm.count("advertise")) c->advertise = vm["advertise"].as<std::string>();
  if (vm.count("join")) {
    std::string list = vm["join"].as<std::string>();
    size_t start = 0;
    while (start <= list.size()) {
      size_t comma = list.find(',', start);
      std::string item =
          list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (item.rfind("dns:", 0) == 0) {
        if (!ParseDnsSeed(item.substr(4), &why)) {
          *error = "--join: " + why;
          return false;
        }
        c->dns_seeds.push_back(item.substr(4));
      } else if (!item.empty()) {
        std::optional<HostPort> hp = ParseHostPort(item, &why);
        if (!hp || hp->port == 0) {
          *error = "--join: " + (hp ? "port 0 in '" + item + "'" : why);
          return false;
        }
        c->seeds.push_back(item);
      }
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (c->gossip.empty() && (!c->seeds.empty() || !c->dns_seeds.empty() || !c->advertise.empty())) {
    *error = std::string("--") + (c->seeds.empty() && c->dns_seeds.empty() ? "advertise" : "join") +
             " needs --gossip (cluster mode)";
    return false;
  }
  // (--cluster-name alone is fine: it also names snapshots, and a single
  // node ignores it, so one config file serves both modes.)
  for (const char* flag : {"keyring"}) {
    if (c->gossip.empty() && vm.count(flag)) {
      *error = std::string("--") + flag + " needs --gossip (cluster mode)";
      return false;
    }
  }
  if (vm.count("keyring")) {
    c->peer_auth.keyring_file = vm["keyring"].as<std::string>();
    if (c->peer_auth.keyring_file.empty()) {
      *error = "--keyring: expected a file name";
      return false;
    }
  }
  c->peer_auth.insecure_peers = vm.count("insecure-peers") > 0;
  if (c->peer_auth.insecure_peers && c->gossip.empty()) {
    *error = "--insecure-peers needs --gossip (cluster mode)";
    return false;
  }
  if (!c->gossip.empty() && c->peer_auth.keyring_file.empty() && !c->peer_auth.insecure_peers) {
    const std::optional<HostPort> hp = ParseHostPort(c->gossip, &why);
    if (hp && !IsLoopbackHost(hp->host)) {
      *error = "--gossip " + c->gossip +
               " is not a loopback address and no --keyring is given: anyone who reaches it "
               "could join, forge counts and evict members. Give every member --keyring FILE "
               "(tally keyring generate), or --insecure-peers to run unauthenticated anyway";
      return false;
    }
  }
  if (vm.count("cluster-name")) {
    c->peer_auth.cluster_name = vm["cluster-name"].as<std::string>();
    if (!ValidClusterName(c->peer_auth.cluster_name)) {
      *error = "--cluster-name: expected 1.." + std::to_string(kMaxClusterNameBytes) +
               " printable non-space ASCII characters, got '" + c->peer_auth.cluster_name + "'";
      return false;
    }
  }
  if (!c->advertise.empty()) {
    std::optional<HostPort> hp = ParseHostPort(c->advertise, &why);
    if (!hp || hp->port == 0) {
      *error = "--advertise: " + (hp ? std::string("port 0 cannot be reached") : why);
      return false;
    }
  }
  core::NodeConfig& n = c->node;
  membership::SwimConfig& w = n.swim;
  int64_t replicas = n.replicas;
  int64_t max_packet = static_cast<int64_t>(n.max_packet_bytes);
  int64_t leave_ms = c->leave_grace.count();
  int64_t stall_ms = c->stream_stall_timeout.count();
  int64_t queue = static_cast<int64_t>(c->max_stream_queue_bytes);
  if (!ParseInt(vm, "replicas", 1, 16, &replicas, error) ||
      !ParseInt(vm, "max-clock-offset-ms", 1, kHour, &n.max_clock_offset_ms, error) ||
      !ParseInt(vm, "warn-clock-offset-ms", 1, kHour, &n.warn_clock_offset_ms, error) ||
      !ParseInt(vm, "forward-timeout-ms", 1, 60'000, &n.forward_timeout_ms, error) ||
      !ParseInt(vm, "forward-timeout-max-ms", 1, 60'000, &n.forward_timeout_max_ms, error) ||
      !ParseInt(vm, "replication-interval-ms", 1, 60'000, &n.replication_interval_ms, error) ||
      !ParseInt(vm, "replication-retry-ms", 1, 600'000, &n.replication_retry_ms, error) ||
      !ParseInt(vm, "anti-entropy-interval-ms", 10, kHour, &n.anti_entropy_interval_ms, error) ||
      !ParseInt(vm, "handoff-timeout-ms", 0, kHour, &n.handoff_timeout_ms, error) ||
      !ParseInt(vm, "partition-memory-ms", 0, 31 * kDay, &n.partition_memory_ms, error) ||
      !ParseInt(vm, "probe-interval-ms", 10, kHour, &w.probe_interval_ms, error) ||
      !ParseInt(vm, "probe-timeout-ms", 1, kHour, &w.probe_timeout_ms, error) ||
      !ParseIntAs(vm, "indirect-probes", 0, 64, &w.indirect_probes, error) ||
      !ParseIntAs(vm, "suspicion-mult", 1, 100, &w.suspicion_mult, error) ||
      !ParseIntAs(vm, "suspicion-max-timeout-mult", 1, 100, &w.suspicion_max_timeout_mult, error) ||
      !ParseIntAs(vm, "retransmit-mult", 1, 100, &w.retransmit_mult, error) ||
      !ParseInt(vm, "gossip-interval-ms", 1, kHour, &w.gossip_interval_ms, error) ||
      !ParseIntAs(vm, "gossip-nodes", 1, 64, &w.gossip_nodes, error) ||
      !ParseInt(vm, "push-pull-interval-ms", 10, kDay, &w.push_pull_interval_ms, error) ||
      !ParseInt(vm, "reconnect-interval-ms", 10, kDay, &w.reconnect_interval_ms, error) ||
      !ParseInt(vm, "gossip-to-the-dead-ms", 0, kDay, &w.gossip_to_the_dead_ms, error) ||
      !ParseInt(vm, "dead-reap-ms", 1000, 31 * kDay, &w.dead_reap_ms, error) ||
      !ParseInt(vm, "max-packet-bytes", 512, 65000, &max_packet, error) ||
      !ParseInt(vm, "leave-grace-ms", 0, 60'000, &leave_ms, error) ||
      !ParseInt(vm, "stream-stall-timeout-ms", 0, kHour, &stall_ms, error) ||
      !ParseInt(vm, "stream-queue-bytes", 65536, int64_t{1} << 32, &queue, error)) {
    return false;
  }
  n.replicas = static_cast<uint32_t>(replicas);
  n.max_packet_bytes = static_cast<size_t>(max_packet);
  w.max_packet_bytes = static_cast<size_t>(max_packet);
  c->leave_grace = std::chrono::milliseconds(leave_ms);
  c->stream_stall_timeout = std::chrono::milliseconds(stall_ms);
  c->max_stream_queue_bytes = static_cast<size_t>(queue);
  if (vm.count("partition-policy")) {
    std::optional<core::PartitionPolicy> p =
        core::ParsePartitionPolicy(vm["partition-policy"].as<std::string>());
    if (!p) {
      *error = "--partition-policy: expected availability|proportional|closed, got '" +
               vm["partition-policy"].as<std::string>() + "'";
      return false;
    }
    n.partition_policy = *p;
  }
  if (!w.Valid(&why)) {
    *error = "membership settings: " + why;
    return false;
  }
  return ParseSnapshots(vm, c, error);
}

}  // namespace

std::optional<int64_t> LookUpSystemGroup(const std::string& name) {
  group entry;
  group* found = nullptr;
  std::vector<char> buffer(16384);
  if (getgrnam_r(name.c_str(), &entry, buffer.data(), buffer.size(), &found) == 0 &&
      found != nullptr) {
    return found->gr_gid;
  }
  return std::nullopt;
}

namespace {

// The flags' descriptions: built once per process, not per parse (about 80
// options with their help texts cost more than parsing a short command
// line; config_fuzz spent most of each input here). Rebuilt if the default
// socket paths they print changed (another XDG_RUNTIME_DIR).
struct FlagDescriptions {
  po::options_description settings{"Settings (command line or config file)"};
  po::options_description all{"Usage: tallyd [options]"};
  std::string default_paths;
};

std::shared_ptr<const FlagDescriptions> BuildDescriptions(std::string default_paths) {
  auto d = std::make_shared<FlagDescriptions>();
  d->default_paths = std::move(default_paths);
  po::options_description command_only("Command line only");
  command_only.add_options()("help,h", "print this help and exit")("version",
                                                                   "print the version and exit")(
      "config", po::value<std::string>()->value_name("FILE"),
      "read options from FILE (INI: 'name = value', same names as the flags); "
      "flags override it")("check-config",
                           "parse and validate the flags and config file, then exit 0 (or 2)");

  po::options_description& settings = d->settings;
  settings.add_options()(
      "udp", po::value<std::string>()->value_name("HOST:PORT"),
      "UDP address ([v6]:PORT ok, port 0 picks one, 'none' disables); default 127.0.0.1:7070")(
      "unix", po::value<std::string>()->value_name("PATH"),
      ("Unix datagram socket ('none' disables); default " + DefaultUnixPath()).c_str())(
      "unix-seq", po::value<std::string>()->value_name("PATH"),
      ("Unix seqpacket socket ('none' disables); default " + DefaultUnixSeqpacketPath()).c_str())(
      "unix-mode", po::value<std::string>()->value_name("OCTAL"),
      "mode of both Unix socket files, read/write bits only, owner rw required (0666 lets "
      "every local user spend every limit); default 0660")(
      "unix-group", po::value<std::string>()->value_name("GROUP"),
      "group (name or number) of both Unix socket files, so its members' processes may "
      "connect; default the daemon's group (or the directory's, if setgid)")(
      "threads", po::value<std::string>()->value_name("N"),
      "I/O threads, 0 = half the CPUs this process may use (at least 1); default 0")(
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
      "raw echo server (measures the transport floor); default false")(
      "node-id", po::value<std::string>()->value_name("NAME"),
      "this node's name (cluster member id, status); default: the hostname");

  po::options_description envoy(
      "Envoy rate limit service (command line or config file; "
      "docs/ENVOY.md)");
  envoy.add_options()(
      "grpc", po::value<std::string>()->value_name("HOST:PORT"),
      "serve envoy.service.ratelimit.v3.RateLimitService here (port 0 picks one, 'none' "
      "disables); default 127.0.0.1:8081 (off with --echo)")(
      "http", po::value<std::string>()->value_name("HOST:PORT"),
      "serve POST /json and GET /healthcheck here (port 0 picks one, 'none' disables); "
      "default 127.0.0.1:8080 (off with --echo)")("grpc-listen",
                                                  po::value<std::string>()->value_name("HOST:PORT"),
                                                  "deprecated alias of --grpc")(
      "http-listen", po::value<std::string>()->value_name("HOST:PORT"),
      "deprecated alias of --http")(
      "rules", po::value<std::string>()->value_name("PATH"),
      "envoyproxy/ratelimit YAML rules: a file or a directory of them; reloaded on SIGHUP "
      "and on change")("shadow-mode",
                       po::value<std::string>()->value_name("BOOL")->implicit_value("true"),
                       "decide and count every limit but answer OK; default false")(
      "rls-headers", po::value<std::string>()->value_name("BOOL")->implicit_value("true"),
      "add the draft-IETF RateLimit-Limit, RateLimit-Remaining and RateLimit-Reset headers "
      "to every gRPC and /json answer; default false")(
      "grpc-server", po::value<std::string>()->value_name("nghttp2|grpc"),
      "which server speaks gRPC: tallyd's own over nghttp2, or gRPC's C++ server (several "
      "times the CPU per call); default nghttp2");

  const core::NodeConfig node_defaults;
  const membership::SwimConfig swim_defaults;
  auto ms_default = [](int64_t v) { return "; default " + std::to_string(v); };
  po::options_description cluster("Cluster (command line or config file; need --gossip)");
  cluster.add_options()(
      "gossip", po::value<std::string>()->value_name("HOST:PORT"),
      "enables cluster mode: the UDP gossip socket and TCP listener (same port; 0 picks one)")(
      "advertise", po::value<std::string>()->value_name("HOST:PORT"),
      "the gossip address peers reach us at; default: the bound --gossip address")(
      "insecure-peers",
      "without --keyring, allow --gossip on a non-loopback address anyway (peers are then not "
      "authenticated: anyone who reaches the port can join and forge state)")(
      "join", po::value<std::string>()->value_name("HOST:PORT|dns:NAME[:PORT][,...]"),
      "seed members to join through; dns:NAME joins every A/AAAA address of NAME (a "
      "headless Service; PORT defaults to our gossip port) and resolves it again while "
      "alone or partitioned; without it, a cluster of one until others join")(
      "replicas", po::value<std::string>()->value_name("N"),
      ("preference list length: owner + N-1 replicas, 1..16" + ms_default(node_defaults.replicas))
          .c_str())("partition-policy", po::value<std::string>()->value_name("POLICY"),
                    "availability|proportional|closed: what a side of a partition enforces; "
                    "default availability")(
      "max-clock-offset-ms", po::value<std::string>()->value_name("N"),
      ("stop owning keys when our clock is off by more than N ms from most peers" +
       ms_default(node_defaults.max_clock_offset_ms))
          .c_str())(
      "warn-clock-offset-ms", po::value<std::string>()->value_name("N"),
      ("log a member's clock offset beyond N ms" + ms_default(node_defaults.warn_clock_offset_ms))
          .c_str())("forward-timeout-ms", po::value<std::string>()->value_name("N"),
                    ("then the next member of the preference list decides (the least wait "
                     "for a forward)" +
                     ms_default(node_defaults.forward_timeout_ms))
                        .c_str())(
      "forward-timeout-max-ms", po::value<std::string>()->value_name("N"),
      ("the most a forward to a peer waits once its round trips are measured (smoothed "
       "round trip + 4 deviations); at or below --forward-timeout-ms the wait is fixed" +
       ms_default(node_defaults.forward_timeout_max_ms))
          .c_str())(
      "replication-interval-ms", po::value<std::string>()->value_name("N"),
      ("counter deltas to replicas every N ms" + ms_default(node_defaults.replication_interval_ms))
          .c_str())(
      "replication-retry-ms", po::value<std::string>()->value_name("N"),
      ("resend unacknowledged deltas after N ms" + ms_default(node_defaults.replication_retry_ms))
          .c_str())("anti-entropy-interval-ms", po::value<std::string>()->value_name("N"),
                    ("digest exchange with a random member every N ms" +
                     ms_default(node_defaults.anti_entropy_interval_ms))
                        .c_str())("handoff-timeout-ms", po::value<std::string>()->value_name("N"),
                                  ("a joining node owns keys after N ms at the latest" +
                                   ms_default(node_defaults.handoff_timeout_ms))
                                      .c_str())(
      "partition-memory-ms", po::value<std::string>()->value_name("N"),
      ("a dead member counts towards the last known membership for N ms" +
       ms_default(node_defaults.partition_memory_ms))
          .c_str())("probe-interval-ms", po::value<std::string>()->value_name("N"),
                    ("SWIM probe interval" + ms_default(swim_defaults.probe_interval_ms)).c_str())(
      "probe-timeout-ms", po::value<std::string>()->value_name("N"),
      ("SWIM direct probe timeout" + ms_default(swim_defaults.probe_timeout_ms)).c_str())(
      "indirect-probes", po::value<std::string>()->value_name("N"),
      ("members asked to probe indirectly" + ms_default(swim_defaults.indirect_probes)).c_str())(
      "suspicion-mult", po::value<std::string>()->value_name("N"),
      ("suspicion timeout = N * max(1, log10(n)) * probe interval (minimum)" +
       ms_default(swim_defaults.suspicion_mult))
          .c_str())("suspicion-max-timeout-mult", po::value<std::string>()->value_name("N"),
                    ("an unconfirmed suspicion lasts N times the minimum" +
                     ms_default(swim_defaults.suspicion_max_timeout_mult))
                        .c_str())(
      "retransmit-mult", po::value<std::string>()->value_name("N"),
      ("rumors are sent N * ceil(log10(n + 1)) times" + ms_default(swim_defaults.retransmit_mult))
          .c_str())(
      "gossip-interval-ms", po::value<std::string>()->value_name("N"),
      ("gossip to --gossip-nodes members every N ms" + ms_default(swim_defaults.gossip_interval_ms))
          .c_str())("gossip-nodes", po::value<std::string>()->value_name("N"),
                    ("members per gossip round" + ms_default(swim_defaults.gossip_nodes)).c_str())(
      "push-pull-interval-ms", po::value<std::string>()->value_name("N"),
      ("full-state exchange with a random member every N ms" +
       ms_default(swim_defaults.push_pull_interval_ms))
          .c_str())("reconnect-interval-ms", po::value<std::string>()->value_name("N"),
                    ("push-pull with a dead member and absent seeds every N ms (heals "
                     "partitions)" +
                     ms_default(swim_defaults.reconnect_interval_ms))
                        .c_str())(
      "gossip-to-the-dead-ms", po::value<std::string>()->value_name("N"),
      ("dead members still get gossip this long" + ms_default(swim_defaults.gossip_to_the_dead_ms))
          .c_str())(
      "dead-reap-ms", po::value<std::string>()->value_name("N"),
      ("dead and left members are forgotten after N ms" + ms_default(swim_defaults.dead_reap_ms))
          .c_str())("max-packet-bytes", po::value<std::string>()->value_name("N"),
                    ("largest peer datagram, 512..65000" +
                     ms_default(static_cast<int64_t>(node_defaults.max_packet_bytes)))
                        .c_str())(
      "leave-grace-ms", po::value<std::string>()->value_name("N"),
      "on SIGTERM, keep gossiping the leave at most N ms; default 1000")(
      "stream-queue-bytes", po::value<std::string>()->value_name("N"),
      "per-peer TCP send queue; frames beyond it are dropped; default 16777216")(
      "stream-stall-timeout-ms", po::value<std::string>()->value_name("N"),
      "abort a peer TCP stream whose sent data stays unacknowledged N ms (TCP_USER_TIMEOUT), "
      "so it reconnects at once after a partition heals; 0 keeps the kernel's (~15 min); "
      "default 3000")(
      "keyring", po::value<std::string>()->value_name("FILE"),
      "seal every peer packet with the keys in FILE (tally keyring generate; the first key "
      "seals, all open); SIGHUP re-reads it. Without it peers are not authenticated")(
      "cluster-name", po::value<std::string>()->value_name("NAME"),
      "sealed into every peer packet (members of another cluster cannot talk to us even "
      "with the same key) and written into snapshots (a snapshot of another cluster is "
      "refused); default tally")(
      "state-dir", po::value<std::string>()->value_name("PATH|auto|none"),
      "where counts and runtime limit overrides are snapshotted and restored "
      "from at start (so hourly and daily windows and `tally limit` changes survive a restart "
      "of the whole cluster, or of a single node); 'auto': $STATE_DIRECTORY, /var/lib/tally as "
      "root, else $XDG_STATE_HOME/tally or ~/.local/state/tally; default: $STATE_DIRECTORY "
      "when systemd sets it (StateDirectory=), else none")(
      "snapshot-interval-s", po::value<std::string>()->value_name("N"),
      "write a snapshot of the counts every N s (and always at a graceful stop, and in a "
      "cluster within about a second of a limit override change); 0: no periodic writes; "
      "default 60");
  settings.add(cluster);
  settings.add(envoy);

  d->all.add(command_only).add(settings);
  return d;
}

std::shared_ptr<const FlagDescriptions> Descriptions() {
  static std::mutex mu;
  static std::shared_ptr<const FlagDescriptions> cached;
  std::string paths = DefaultUnixPath() + '\n' + DefaultUnixSeqpacketPath();
  std::lock_guard<std::mutex> lock(mu);
  if (cached == nullptr || cached->default_paths != paths) {
    cached = BuildDescriptions(std::move(paths));
  }
  return cached;
}

}  // namespace

FlagsOutcome ParseTallydFlags(int argc, const char* const* argv, TallydConfig* config,
                              std::string* output, std::string* error) {
  return ParseTallydFlags(argc, argv, nullptr, config, output, error);
}

FlagsOutcome ParseTallydFlags(int argc, const char* const* argv, std::istream* config_text,
                              TallydConfig* config, std::string* output, std::string* error,
                              GroupLookup lookup_group) {
  const DaemonOptions defaults;
  const LimiterOptions limiter_defaults;

  const std::shared_ptr<const FlagDescriptions> descriptions = Descriptions();
  const po::options_description& all = descriptions->all;
  const po::options_description& settings = descriptions->settings;

  // client/program_options_guard.h: Boost would loop wording the error.
  if (std::string why = flags::RefuseBoostPlaceholders(argc, argv); !why.empty()) {
    *error = std::move(why);
    return FlagsOutcome::kBadUsage;
  }
  po::variables_map vm;
  try {
    po::parsed_options command_line = po::command_line_parser(argc, argv).options(all).run();
    RenameDeprecatedAliases(&command_line);
    po::store(command_line, vm);
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
      std::ifstream file;
      if (config_text == nullptr) {
        file.open(config->config_file);
        if (!file) {
          *error = "--config: cannot open '" + config->config_file + "'";
          return FlagsOutcome::kBadUsage;
        }
      }
      std::stringstream text;
      text << (config_text != nullptr ? config_text->rdbuf() : file.rdbuf());
      text.clear();  // an empty file sets failbit on the copy
      if (const std::string_view token = flags::FindBoostPlaceholder(text.view()); !token.empty()) {
        *error = config->config_file + " holds '" + std::string(token) +
                 "', which the option parser cannot report on; leave it out";
        return FlagsOutcome::kBadUsage;
      }
      // Stored after the command line, so flags win (store keeps first values).
      po::parsed_options from_file =
          po::parse_config_file(text, settings, /*allow_unregistered=*/false);
      RenameDeprecatedAliases(&from_file);
      po::store(from_file, vm);
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
  if (vm.count("unix-seq")) {
    d.unix_seq_path = Disabled(vm["unix-seq"].as<std::string>());
  } else if (!d.unix_path.empty() && d.unix_path != DefaultUnixPath()) {
    // The seqpacket socket follows --unix: two daemons with their own paths
    // must not both claim the default one.
    d.unix_seq_path = UnixSeqpacketPathFor(d.unix_path);
  }
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
  if (vm.count("unix-mode") &&
      !ParseUnixMode(vm["unix-mode"].as<std::string>(), &d.unix_access.mode, error)) {
    return FlagsOutcome::kBadUsage;
  }
  if (vm.count("unix-group") && !ParseUnixGroup(vm["unix-group"].as<std::string>(), lookup_group,
                                                &d.unix_access.gid, error)) {
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
  if (vm.count("node-id")) {
    d.node_id = vm["node-id"].as<std::string>();
    if (!ValidNodeId(d.node_id)) {
      *error = "--node-id: expected 1..255 printable non-space ASCII characters, got '" +
               d.node_id + "'";
      return FlagsOutcome::kBadUsage;
    }
  }
  if (!ParseCluster(vm, &d.cluster, error)) return FlagsOutcome::kBadUsage;
  // The Envoy doors are on by default, except for the echo server, which
  // decides nothing (an explicit door with --echo is an error below).
  const bool grpc_given = vm.count("grpc") > 0, http_given = vm.count("http") > 0;
  config->grpc_listen = grpc_given ? Disabled(vm["grpc"].as<std::string>())
                        : d.echo   ? ""
                                   : kDefaultGrpcListen;
  config->http_listen = http_given ? Disabled(vm["http"].as<std::string>())
                        : d.echo   ? ""
                                   : kDefaultHttpListen;
  for (const auto& [flag, value] :
       {std::pair<const char*, const std::string*>{"--grpc", &config->grpc_listen},
        {"--http", &config->http_listen}}) {
    std::string why;
    if (!value->empty() && !ParseHostPort(*value, &why)) {
      *error = std::string(flag) + ": " + why;
      return FlagsOutcome::kBadUsage;
    }
  }
  if (vm.count("rules")) config->rules_path = vm["rules"].as<std::string>();
  if (vm.count("shadow-mode") &&
      !ParseBool(vm["shadow-mode"].as<std::string>(), &config->shadow_mode)) {
    *error =
        "--shadow-mode: expected true|false, got '" + vm["shadow-mode"].as<std::string>() + "'";
    return FlagsOutcome::kBadUsage;
  }
  if (vm.count("rls-headers") &&
      !ParseBool(vm["rls-headers"].as<std::string>(), &config->rls_headers)) {
    *error =
        "--rls-headers: expected true|false, got '" + vm["rls-headers"].as<std::string>() + "'";
    return FlagsOutcome::kBadUsage;
  }
  if (vm.count("grpc-server")) {
    const std::string kind = vm["grpc-server"].as<std::string>();
    if (kind != "nghttp2" && kind != "grpc") {
      *error = "--grpc-server: expected nghttp2 or grpc, got '" + kind + "'";
      return FlagsOutcome::kBadUsage;
    }
    config->grpc_nghttp2 = kind == "nghttp2";
  }
  if ((!config->grpc_listen.empty() || !config->http_listen.empty()) && d.echo) {
    *error = "--grpc and --http cannot be used with --echo (give 'none' or leave them out)";
    return FlagsOutcome::kBadUsage;
  }
  if ((!config->rules_path.empty() || config->shadow_mode || config->rls_headers) &&
      config->grpc_listen.empty() && config->http_listen.empty()) {
    *error = "--rules, --shadow-mode and --rls-headers need --grpc or --http (both are 'none')";
    return FlagsOutcome::kBadUsage;
  }
  d.handle_signals = true;
  return FlagsOutcome::kRun;
}

}  // namespace tally::io

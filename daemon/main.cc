// tallyd: the tally rate-limiter daemon. Flags and config: daemon/io/config.h;
// everything else: tally::io::Daemon.
//
// Exit codes: 0 clean shutdown (SIGINT/SIGTERM), 1 start failure, 2 bad flags.
// stdout carries exactly one line, "tallyd listening udp=ADDR unix=PATH
// seq=PATH" ("-" for a disabled transport), in cluster mode followed by
// " gossip=ADDR node=NAME", then " grpc=ADDR" and " http=ADDR" when those
// doors are on (daemon/rls/), for scripts and tests; logs go to stderr.
// SIGHUP re-reads the --keyring file (daemon/io/peer_seal.h).
#include <signal.h>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <systemd/sd-daemon.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "daemon/io/config.h"
#include "daemon/io/daemon.h"
#include "daemon/io/peer_seal.h"
#include "daemon/rls/rls_server.h"

namespace {

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// "%*": the sd-daemon.h priority prefix of the message's level ("<6>" for info).
class SyslogPrefix : public spdlog::custom_flag_formatter {
 public:
  void format(const spdlog::details::log_msg& msg, const std::tm&,
              spdlog::memory_buf_t& dest) override {
    const char* prefix = SD_INFO;
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug:
        prefix = SD_DEBUG;
        break;
      case spdlog::level::info:
        prefix = SD_INFO;
        break;
      case spdlog::level::warn:
        prefix = SD_WARNING;
        break;
      case spdlog::level::err:
        prefix = SD_ERR;
        break;
      case spdlog::level::critical:
        prefix = SD_CRIT;
        break;
      default:
        break;
    }
    dest.append(prefix, prefix + std::strlen(prefix));
  }
  std::unique_ptr<custom_flag_formatter> clone() const override {
    return std::make_unique<SyslogPrefix>();
  }
};

}  // namespace

int main(int argc, char** argv) {
  tally::io::TallydConfig config;
  std::string output, error;
  switch (tally::io::ParseTallydFlags(argc, argv, &config, &output, &error)) {
    case tally::io::FlagsOutcome::kExitOk:
      std::fputs(output.c_str(), stdout);
      return 0;
    case tally::io::FlagsOutcome::kBadUsage:
      std::fprintf(stderr, "tallyd: %s\nTry 'tallyd --help'.\n", error.c_str());
      return 2;
    case tally::io::FlagsOutcome::kRun:
      break;
  }
  if (config.check_config) {
    const tally::io::ClusterOptions& cluster = config.daemon.cluster;
    if (cluster.enabled()) {
      std::string why;
      if (!tally::io::PeerAuth::Check(cluster.peer_auth, &why)) {
        std::fprintf(stderr, "tallyd: %s\n", why.c_str());
        return 2;
      }
    }
    std::printf("tallyd: configuration OK%s%s\n", config.config_file.empty() ? "" : ": ",
                config.config_file.c_str());
    return 0;
  }

  auto logger = spdlog::stderr_color_mt("tallyd");
  spdlog::set_default_logger(logger);
  spdlog::set_level(config.log_level);
  // Under journald (JOURNAL_STREAM is set when stderr is the journal) the
  // journal stamps each line itself: no timestamp of our own, and a syslog
  // "<N>" prefix so journald files each line at its level.
  if (const char* journal = std::getenv("JOURNAL_STREAM"); journal != nullptr && *journal) {
    auto formatter = std::make_unique<spdlog::pattern_formatter>();
    formatter->add_flag<SyslogPrefix>('*').set_pattern("%*%l [%t] %v");
    spdlog::set_formatter(std::move(formatter));
  } else {
    spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ [%t] %v");
  }

  // Replies use MSG_NOSIGNAL; this also covers a closed stdout pipe.
  signal(SIGPIPE, SIG_IGN);
  // Before any thread starts, so every thread inherits the block: only the
  // daemon's signal thread takes SIGINT, SIGTERM and SIGHUP (daemon/io/daemon.h).
  tally::io::BlockDaemonSignals();

  tally::io::Daemon daemon(config.daemon);
  if (!daemon.Start(&error)) {
    spdlog::error("cannot start: {}", error);
    return 1;
  }
  std::string line = "tallyd listening udp=" + OrDash(daemon.udp_address()) +
                     " unix=" + OrDash(daemon.unix_path()) +
                     " seq=" + OrDash(daemon.unix_seq_path());
  if (!daemon.gossip_address().empty()) {
    line += " gossip=" + daemon.gossip_address() + " node=" + daemon.node_id();
  }
  std::unique_ptr<tally::rls::RlsServer> rls;
  if (!config.grpc_listen.empty() || !config.http_listen.empty()) {
    tally::rls::RlsServerOptions rls_options;
    rls_options.grpc_listen = config.grpc_listen;
    rls_options.http_listen = config.http_listen;
    rls_options.rules_path = config.rules_path;
    rls_options.shadow_mode = config.shadow_mode;
    rls_options.rate_limit_headers = config.rls_headers;
    rls_options.grpc_server = config.grpc_nghttp2
                                  ? tally::rls::RlsServerOptions::GrpcServerKind::kNghttp2
                                  : tally::rls::RlsServerOptions::GrpcServerKind::kGrpc;
    rls_options.handle_sighup = false;  // the daemon's signal thread calls Reload
    // Status answers carry the rules' digest, so `tally status` on each
    // member shows whether they run the same rules.
    rls_options.on_rules = [&daemon](const std::string& digest, const std::string& error) {
      daemon.SetRulesStatus(digest, error);
    };
    // Adaptive limits: the rule set's go to the daemon (a member's Node or
    // a single node's controllers), and POST /v1/report feeds them.
    rls_options.on_rule_set = [&daemon](const tally::rules::RuleSet& rules) {
      daemon.SetAdaptiveRules(tally::core::AdaptiveRuleConfigsOf(rules));
    };
    rls_options.report_signal = [&daemon](std::string_view domain, std::string_view rule,
                                          double value, uint64_t count) {
      return daemon.ReportSignal(domain, rule, value, count);
    };
    rls_options.status = [&daemon] { return daemon.Status(); };
    rls_options.door_metrics = daemon.door_metrics();
    rls_options.accept_fd_exhausted = daemon.http_accept_fd_exhausted();
    rls_options.key_capacity = daemon.key_capacity();
    rls_options.trackers = daemon.trackers();
    rls_options.overrides = daemon.published_overrides();
    rls = std::make_unique<tally::rls::RlsServer>(rls_options, daemon.gateway());
    if (!rls->Start(&error)) {
      spdlog::error("cannot start: {}", error);
      return 1;
    }
    // The Cap'n Proto doors answer descriptor checks (protocol 4) through it.
    daemon.SetDescriptorChecks([rls = rls.get()](const tally::wire::DescriptorQuery& query,
                                                 tally::io::Door door, size_t max_reply_bytes,
                                                 tally::io::DescriptorDoor::Done done) {
      rls->DecideDescriptors(query, door, max_reply_bytes, std::move(done));
    });
    if (!config.rules_path.empty()) {
      daemon.SetReloadHook([rls = rls.get(), path = config.rules_path] {
        spdlog::info("received SIGHUP, reloading rules from {}", path);
        rls->Reload();
      });
    }
    if (!rls->grpc_address().empty()) line += " grpc=" + rls->grpc_address();
    if (!rls->http_address().empty()) line += " http=" + rls->http_address();
  }
  std::fputs((line + "\n").c_str(), stdout);
  std::fflush(stdout);
  spdlog::info("{}", line);
  sd_notifyf(0, "READY=1\nSTATUS=%s", line.c_str());

  daemon.Run();
  if (rls) {
    daemon.SetDescriptorChecks({});
    daemon.SetReloadHook({});
    const tally::rls::RlsStats st = rls->stats();
    rls->Stop();
    spdlog::info(
        "rls final stats: grpc_requests={} http_requests={} capnp_requests={} over_limit={} "
        "shadow_denials={} invalid={} failed={} reloads={} reload_failures={} "
        "runtime_overrides={}",
        st.grpc_requests, st.http_requests, st.capnp_requests, st.over_limit, st.shadow_denials,
        st.invalid, st.failed, st.reloads, st.reload_failures, st.runtime_overrides);
  }
  sd_notify(0, "STOPPING=1");
  return daemon.superseded() ? tally::io::Daemon::kExitSuperseded : 0;
}

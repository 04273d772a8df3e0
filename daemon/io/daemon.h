// tally::io::Daemon: the thin Asio driver around tally::Limiter. It owns the
// sockets, threads, timers and signal handling; every decision is the
// Limiter's. tallyd (daemon/main.cc) is this class plus flag parsing; the load
// generator embeds it as an echo server.
//
// Transports: N UDP sockets sharing one address via SO_REUSEPORT (one per
// thread, so the kernel spreads clients over threads), one Unix datagram
// socket and one Unix seqpacket listener. One io_context is run by N threads.
//
// Modes: without `cluster.gossip` a single node deciding with the sharded
// Limiter. With it, a cluster member: checks go to a tally::core::Node behind
// a ClusterDriver (daemon/io/cluster_driver.h), which also serves the gossip
// UDP socket and TCP listener; SIGINT/SIGTERM then first leave the cluster
// gracefully (a second signal stops at once). SIGHUP re-reads the cluster
// keyring (--keyring; a failed reload keeps the old keys) and is otherwise
// harmless.
#ifndef TALLY_DAEMON_IO_DAEMON_H_
#define TALLY_DAEMON_IO_DAEMON_H_

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "daemon/io/cluster_driver.h"
#include "daemon/io/door_metrics.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/sockets.h"
#include "daemon/io/status_trackers.h"
#include "tally/limiter.h"

namespace tally::io {

class CheckGateway;

struct DaemonOptions {
  // HOST:PORT ([v6]:PORT ok); "" disables; port 0 picks a free port.
  std::string udp = "127.0.0.1:7070";
  std::string unix_path;         // Unix datagram socket; "" disables
  std::string unix_seq_path;     // Unix seqpacket socket; "" disables
  UnixSocketAccess unix_access;  // mode and group of both socket files
  int threads = 0;               // 0 = DefaultIoThreads(UsableCpus())
  // Raw echo server: reply with the received bytes, no decode (transport floor).
  bool echo = false;
  LimiterOptions limiter;
  std::chrono::milliseconds sweep_interval{50};
  std::chrono::seconds stats_interval{60};  // periodic stats log line; 0 disables
  bool handle_signals = true;               // SIGINT/SIGTERM stop Run(); SIGHUP reloads
  // Name in status answers and, in cluster mode, the member id; "" = hostname.
  std::string node_id;
  ClusterOptions cluster;  // cluster.gossip != "": cluster mode
};

// Counters since Start. malformed: undecodable, oversized or `responses`
// messages. send_errors: replies the kernel refused, or that had no address.
struct DaemonStats {
  uint64_t datagrams_in, datagrams_out, malformed, send_errors;
  LimiterStats limiter;
};

// The signals a daemon with handle_signals takes (SIGINT, SIGTERM, SIGHUP).
// A program blocks them on its first thread before starting any other, so
// that every thread it or a library (gRPC) starts inherits the block; the
// daemon takes them on a thread of its own with sigtimedwait and hands them
// to its I/O threads. No thread ever runs a handler for them: a signal
// handler on a thread parked in uninstrumented library code, or deferred by
// ThreadSanitizer, once left SIGTERM unanswered.
void BlockDaemonSignals();

// The CPUs this process may use: its affinity mask (taskset, a cgroup
// cpuset), capped by a cgroup CPU quota (a container's CPU limit, systemd's
// CPUQuota=; daemon/io/cpu_quota.h) rounded up; at least 1.
int UsableCpus();
// I/O threads when --threads is 0: half the usable CPUs, at least one. A
// limiter shares its host with the clients it answers; on a 2-core machine
// two threads reached 0.49-0.51x a plain echo server's throughput at 64 in
// flight against 0.73-0.82x for one (docs/PERFORMANCE.md, "Default thread
// count"). A host that runs little beside tallyd can set --threads to its
// CPU count.
int DefaultIoThreads(int usable_cpus);

// Lifecycle: construct -> Start() -> Run() (blocks) ... Stop() -> Run returns.
// Thread safety: Stop() and stats() may be called from any thread at any
// time; everything else from one thread.
class Daemon {
 public:
  explicit Daemon(DaemonOptions options);
  // Stops, closes sockets and unlinks the socket files it created.
  // REQUIRES: Run() is not executing (it has returned or was never called).
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Validates the options, creates the Limiter and binds every enabled
  // socket. Returns false and sets `*error` (if not null) on failure; files
  // created so far are removed again. Call once.
  bool Start(std::string* error);

  // The resolved UDP address ("127.0.0.1:PORT", "[::1]:PORT") after Start,
  // "" if disabled or not started.
  std::string udp_address() const;
  // The bound socket paths after Start, "" if disabled or not started.
  std::string unix_path() const;
  std::string unix_seq_path() const;
  // Cluster mode, after Start: the advertised gossip address; "" otherwise.
  std::string gossip_address() const;
  // The node id in effect after Start (the hostname unless configured).
  std::string node_id() const;
  // After a successful Start (not in echo mode): the decision path for
  // in-process doors (daemon/io/check_gateway.h); null otherwise. Valid until
  // the Daemon is destroyed; decisions need Run() to be executing in cluster mode.
  CheckGateway* gateway() const;
  // After Start: the descriptor-form runtime limit overrides in force here
  // (a member's ClusterDriver::published_overrides, or a single node's
  // LocalOverrides::published), for the rules doors; null before Start.
  // Valid until the Daemon is destroyed.
  const PublishedOverrides* published_overrides() const;
  // After Start: writes a runtime limit override, cluster-wide on a member
  // (ClusterDriver::WriteOverride), or a single node's own (LocalOverrides).
  // nullopt before Start. Any thread.
  std::optional<crdt::LimitOverrides::MergeResult> WriteOverride(const crdt::Selector& selector,
                                                                 const crdt::OverrideValue& value);
  // What status answers report about the Envoy doors' rules (daemon/rls/):
  // the digest in force and why the last reload failed ("" if it did not).
  // Any thread, any time.
  void SetRulesStatus(std::string digest, std::string error);
  // What else SIGHUP reloads (handle_signals), besides the keyring: tallyd's
  // rules (RlsServer::Reload). Runs on the daemon's signal thread, not an I/O
  // thread, so a slow reload delays the signals after it. Empty removes it
  // for later signals; a call already running is not waited for (Run() joins
  // the signal thread before it returns). Any thread, any time.
  void SetReloadHook(std::function<void()> hook);
  // Installs (empty: removes) where the UDP, Unix and seqpacket doors send
  // descriptor checks (check.capnp protocol 4): the rules doors'
  // RlsServer::DecideDescriptors. Without it they answer unavailable. Any
  // thread, any time.
  void SetDescriptorChecks(DescriptorDoor::Decide decide);
  // Load-adaptive limits (docs/DESIGN.md, "Load-adaptive limits"): the
  // adaptive rules of the rule set in force (the rules doors call it at
  // start and after every reload), and a client's report of an adaptive
  // rule's backend signal (`count` requests averaging `value`). In cluster
  // mode the Node sends report sums to each rule's owner; a single node owns
  // every rule. Before Start: ignored / kUnknownRule. Any thread.
  void SetAdaptiveRules(std::vector<core::AdaptiveRuleConfig> rules);
  core::AdaptiveHost::ReportResult ReportSignal(std::string_view domain, std::string_view rule,
                                                double value, uint64_t count);

  // Runs the I/O threads (the caller's thread is one of them) until Stop() or
  // SIGINT/SIGTERM, then closes the sockets, unlinks their files and logs the
  // final stats. Returns at once if Start() did not succeed or Stop() was
  // already called. Call at most once.
  void Run();

  // Makes Run() return soon. Idempotent; callable from any thread, before or
  // during Run().
  void Stop();

  // True once Run() stopped because a newer process took this node id
  // (docs/DESIGN.md, "Two processes with one node id"); tallyd then exits
  // with kExitSuperseded. Any thread.
  bool superseded() const;
  // sysexits' EX_CONFIG: one node id in two processes is a configuration
  // error, and restarting the older process would only take the id back.
  static constexpr int kExitSuperseded = 78;

  // A snapshot of the counters. Any thread.
  DaemonStats stats() const;

  // Decisions by door (daemon/io/door_metrics.h): the Cap'n Proto doors count
  // into it here; in-process doors (daemon/rls/) may count into it too. Valid
  // until the Daemon is destroyed. Any thread.
  DoorMetrics* door_metrics() const;
  // Where the HTTP door (daemon/rls/) counts accepts that failed for want of
  // a file descriptor, so that status answers report them with the other
  // doors'. Valid until the Daemon is destroyed. Any thread.
  std::atomic<uint64_t>* http_accept_fd_exhausted() const;
  // What the status page shows beyond Status(): the check rate of the last
  // minutes (sampled once a second from door_metrics()), the busiest keys
  // (sampled from every door's checks) and, in cluster mode, recent
  // membership events. Valid until the Daemon is destroyed. Any thread.
  const StatusTrackers* trackers() const;
  // The configured key-table capacity (--max-keys).
  uint64_t key_capacity() const;
  // What `tally status` answers (in cluster mode: ClusterDriver::Status, one
  // hold of the Node's lock). After a successful Start. Any thread.
  wire::StatusReport Status() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_DAEMON_H_

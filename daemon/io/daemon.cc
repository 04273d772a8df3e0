#include "daemon/io/daemon.h"

#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <cstdlib>
#include <exception>
#include <functional>
#include <mutex>
#include <optional>
#include <thread>
#include <utility>
#include <vector>

#include "daemon/io/check_gateway.h"
#include "daemon/io/counters.h"
#include "daemon/io/cpu_quota.h"
#include "daemon/io/datagram_server.h"
#include "daemon/io/local_adaptive.h"
#include "daemon/io/local_snapshots.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/seqpacket_server.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/io/sockets.h"
#include "daemon/limiter_access.h"

namespace tally::io {
namespace {

constexpr int kMaxThreads = 1024;

sigset_t DaemonSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  return set;
}

std::string Hostname() {
  char name[256] = {};
  if (gethostname(name, sizeof(name) - 1) != 0 || name[0] == '\0') return "tallyd";
  return name;
}

bool Fail(std::string* error, std::string message) {
  if (error != nullptr) *error = std::move(message);
  return false;
}

std::string FormatStats(const DaemonStats& s) {
  return fmt::format(
      "datagrams_in={} datagrams_out={} malformed={} send_errors={} checks={} allowed={} "
      "denied={} invalid={} over_capacity={} dedup_hits={} keys_reclaimed={} live_keys={}",
      s.datagrams_in, s.datagrams_out, s.malformed, s.send_errors, s.limiter.checks,
      s.limiter.allowed, s.limiter.denied, s.limiter.invalid, s.limiter.over_capacity,
      s.limiter.dedup_hits, s.limiter.keys_reclaimed, s.limiter.live_keys);
}

}  // namespace

int UsableCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  int cpus = sched_getaffinity(0, sizeof(set), &set) == 0
                 ? CPU_COUNT(&set)
                 : static_cast<int>(std::thread::hardware_concurrency());
  if (const int quota = CgroupCpuLimit(); quota > 0) cpus = std::min(cpus, quota);
  return std::max(1, cpus);
}

int DefaultIoThreads(int usable_cpus) { return std::max(1, usable_cpus / 2); }

struct Daemon::Impl {
  explicit Impl(DaemonOptions o)
      : options(std::move(o)),
        sweep_timer(io),
        stats_timer(io),
        notify_timer(io),
        rate_timer(io),
        adaptive_timer(io) {}

  bool Start(std::string* error);
  bool RestoreLocalOverrides(std::string* error);
  // With no overrides.snapshot yet: the limit overrides of the state dir's
  // cluster snapshot (a member restarted as a single node keeps them), saved
  // to overrides.snapshot once persistence is on. False: none there.
  bool ImportClusterOverrides(persist::SnapshotExpectations expect);
  bool imported_cluster_overrides = false;
  void RunLoop();
  void Stop();
  void Shutdown();
  void ArmSweep();
  // A single node whose key table refused new keys says so, at most once a
  // minute (a member logs its own: ClusterDriver).
  void WarnWhenFull();
  void ArmStats();
  void ArmNotify();
  void ArmRates();
  void ArmAdaptive();
  void RecordRates();
  void StartSignalThread();
  void StopSignalThread();
  // On an I/O thread; `nth`: which SIGINT/SIGTERM this is (0 for SIGHUP).
  void OnSignal(int signo, int nth);
  DaemonStats Stats() const;

  DaemonOptions options;
  // Declared first so it is destroyed last: every socket and timer below
  // refers to it.
  boost::asio::io_context io;
  std::optional<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>> work;
  Counters counters;
  DoorMetrics door_metrics;
  StatusTrackers trackers;           // the status page's (daemon/io/status_trackers.h)
  std::unique_ptr<Limiter> limiter;  // null in echo and cluster mode
  std::unique_ptr<LocalOverrides> local_overrides;  // with `limiter`: runtime limit overrides
  std::unique_ptr<LocalAdaptive> local_adaptive;    // with `limiter`: its adaptive limits
  std::unique_ptr<LocalSnapshots> local_snapshots;  // with `limiter` and a state dir
  std::unique_ptr<ClusterDriver> cluster;           // cluster mode only
  std::unique_ptr<CheckGateway> gateway;            // null in echo mode
  DaemonIdentity identity;
  RulesStatus rules_status;
  DescriptorDoor descriptor_door;
  int threads = 1;

  UnixSocketFile unix_file;
  UnixSocketFile seq_file;
  std::string udp_address;
  std::string unix_path;
  std::string seq_path;
  std::vector<std::unique_ptr<DatagramServer>> udp_servers;
  std::unique_ptr<DatagramServer> unix_server;
  std::unique_ptr<SeqpacketServer> seq_server;
  boost::asio::steady_timer sweep_timer;
  uint64_t over_capacity_logged = 0;
  std::optional<int64_t> over_capacity_logged_ns;  // monotonic
  boost::asio::steady_timer stats_timer;
  // systemd (NOTIFY_SOCKET set): WATCHDOG=1 and a STATUS= line every
  // notify_interval, from an I/O thread, so a wedged event loop stops them.
  boost::asio::steady_timer notify_timer;
  // The status page's rate history: door totals once a second.
  boost::asio::steady_timer rate_timer;
  // A single node's adaptive limits: controllers stepped this often.
  boost::asio::steady_timer adaptive_timer;
  std::chrono::microseconds notify_interval{0};  // 0: not under systemd's notify
  bool watchdog = false;
  // handle_signals: a thread that takes SIGINT, SIGTERM and SIGHUP with
  // sigtimedwait (blocked everywhere else) and posts them to `io`. No signal
  // handler runs asynchronously on an I/O thread, so a sanitizer's deferred
  // signal delivery cannot strand one (a TSan run once ignored SIGTERM).
  std::thread signal_thread;
  std::atomic<bool> signal_thread_stop{false};
  std::function<void()> reload_hook;  // SIGHUP, besides the keyring (Daemon::SetReloadHook)
  std::mutex reload_hook_mu;

  std::atomic<bool> stop_requested{false};
  int stop_signals = 0;                 // SIGINT/SIGTERMs taken; the signal thread's only
  std::atomic<bool> superseded{false};  // a newer process took our node id
  bool started = false;
  bool ran = false;
  bool shut_down = false;
};

bool Daemon::Impl::Start(std::string* error) {
  if (started) return Fail(error, "already started");
  const DaemonOptions& o = options;
  if (o.threads < 0 || o.threads > kMaxThreads) {
    return Fail(error, "threads must be 0.." + std::to_string(kMaxThreads));
  }
  if (o.limiter.buckets_per_window < 1 || o.limiter.buckets_per_window > 1000) {
    return Fail(error, "buckets_per_window must be 1..1000");
  }
  if (o.limiter.shards < 1) return Fail(error, "shards must be >= 1");
  if (o.limiter.max_keys < 1) return Fail(error, "max_keys must be >= 1");
  if (o.sweep_interval.count() <= 0) return Fail(error, "sweep_interval must be > 0");
  if (o.stats_interval.count() < 0) return Fail(error, "stats_interval must be >= 0");
  if (o.udp.empty() && o.unix_path.empty() && o.unix_seq_path.empty()) {
    return Fail(error, "no transport enabled (udp, unix and unix_seq are all disabled)");
  }
  std::optional<HostPort> udp;
  if (!o.udp.empty()) {
    std::string why;
    udp = ParseHostPort(o.udp, &why);
    if (!udp) return Fail(error, "udp: " + why);
  }

  threads = o.threads > 0 ? o.threads : DefaultIoThreads(UsableCpus());
  identity.node_id = o.node_id.empty() ? Hostname() : o.node_id;
  const Instant start = ReadClock();
  identity.generation = static_cast<uint64_t>(start.wall.count());
  identity.started = start.monotonic;
  const bool cluster_mode = o.cluster.enabled() && !o.echo;
  std::string why;
  if (cluster_mode) {
    ClusterOptions c = o.cluster;
    c.node.node_id = identity.node_id;
    c.node.limiter.buckets_per_window = o.limiter.buckets_per_window;
    c.node.limiter.max_keys = o.limiter.max_keys;
    c.node.limiter.dedup_ttl = o.limiter.dedup_ttl;
    c.node.limiter.max_dedup_entries = o.limiter.max_dedup_entries;
    c.membership_events = &trackers.events;
    c.on_superseded = [this] {
      superseded.store(true);
      Stop();
    };
    cluster = std::make_unique<ClusterDriver>(io, std::move(c), &counters);
    if (!cluster->Start(&why)) {
      Shutdown();
      return Fail(error, why);
    }
    identity.generation = cluster->generation();
  } else if (!o.echo) {
    // Counting in this process's own replica slot keeps restored counts (an
    // earlier process's slot) apart: never incremented again (LocalSnapshots).
    limiter = internal::LimiterAccess::Make(o.limiter, {identity.node_id, identity.generation});
    local_overrides = std::make_unique<LocalOverrides>(identity.node_id);
    local_adaptive = std::make_unique<LocalAdaptive>(local_overrides.get());
    if (!o.cluster.state_dir.empty()) {
      // Before any socket: the first check already sees the restored overrides.
      if (!RestoreLocalOverrides(&why)) {
        Shutdown();
        return Fail(error, why);
      }
      LocalSnapshotOptions so;
      so.state_dir = o.cluster.state_dir;
      so.cluster_name = o.cluster.peer_auth.cluster_name;
      so.node_id = identity.node_id;
      so.generation = identity.generation;
      so.buckets_per_window = o.limiter.buckets_per_window;
      so.interval =
          std::chrono::duration_cast<std::chrono::milliseconds>(o.cluster.snapshot_interval);
      so.slice_slots = o.cluster.snapshot_slice_slots;
      so.max_bytes = o.cluster.max_snapshot_bytes;
      local_snapshots = std::make_unique<LocalSnapshots>(limiter.get(), std::move(so));
      // After the overrides: importing a member's overrides reads counts.snapshot first.
      local_snapshots->Restore(ReadClock());
      local_snapshots->Start(identity.generation ^ static_cast<uint64_t>(getpid()));
      spdlog::info(
          "state dir {}: counts snapshotted every {} s and at a graceful stop; runtime limit "
          "overrides saved at every change",
          o.cluster.state_dir, o.cluster.snapshot_interval.count());
    }
  }
  if (!o.echo) {
    gateway = std::make_unique<CheckGateway>(limiter.get(), cluster.get(), &trackers.keys,
                                             local_overrides.get());
  }
  ProcessorContext context{limiter.get(), cluster.get(), &identity,
                           o.echo,        &counters,     &rules_status};
  context.metrics = &door_metrics;
  context.adaptive = local_adaptive.get();
  context.descriptors = &descriptor_door;
  context.overrides = local_overrides.get();
  context.snapshots = local_snapshots.get();
  if (!o.echo) context.keys = &trackers.keys;

  if (udp) {
    std::vector<UniqueFd> fds;
    if (!BindUdpGroup(*udp, threads, &fds, &udp_address, &why)) {
      Shutdown();
      return Fail(error, why);
    }
    identity.udp_address = udp_address;
    for (UniqueFd& fd : fds) {
      udp_servers.push_back(std::make_unique<DatagramServer>(io, fd.Release(), context));
    }
  }
  if (!o.unix_path.empty()) {
    if (!unix_file.Bind(o.unix_path, SOCK_DGRAM, &why, o.unix_access)) {
      Shutdown();
      return Fail(error, why);
    }
    unix_path = unix_file.path();
    ProcessorContext unix_context = context;
    unix_context.door = Door::kUnix;
    unix_server = std::make_unique<DatagramServer>(io, unix_file.ReleaseFd(), unix_context);
  }
  if (!o.unix_seq_path.empty()) {
    if (!seq_file.Bind(o.unix_seq_path, SOCK_SEQPACKET, &why, o.unix_access)) {
      Shutdown();
      return Fail(error, why);
    }
    seq_path = seq_file.path();
    ProcessorContext seq_context = context;
    seq_context.door = Door::kSeqpacket;
    seq_server = std::make_unique<SeqpacketServer>(io, seq_file.ReleaseFd(), seq_context);
  }

  work.emplace(io.get_executor());
  for (auto& s : udp_servers) s->Start();
  if (unix_server) unix_server->Start();
  if (seq_server) seq_server->Start();
  if (limiter) {
    ArmSweep();
    ArmAdaptive();
  }
  if (o.stats_interval.count() > 0) ArmStats();
  if (!o.echo) {
    RecordRates();  // the baseline
    ArmRates();
  }
  // Under a unit with WatchdogSec=, systemd sets WATCHDOG_USEC and expects a
  // ping at least that often: ping at half of it. Without it, status lines
  // still go out every 10 s while NOTIFY_SOCKET is set.
  uint64_t watchdog_usec = 0;
  if (sd_watchdog_enabled(0, &watchdog_usec) > 0 && watchdog_usec > 0) {
    watchdog = true;
    notify_interval = std::chrono::microseconds(std::max<uint64_t>(watchdog_usec / 2, 1000));
  } else if (const char* socket = std::getenv("NOTIFY_SOCKET"); socket != nullptr && *socket) {
    notify_interval = std::chrono::seconds(10);
  }
  if (notify_interval.count() > 0) ArmNotify();
  if (o.handle_signals) StartSignalThread();
  spdlog::debug("daemon started: threads={} udp={} unix={} seq={} echo={}", threads,
                udp_address.empty() ? "-" : udp_address, unix_path.empty() ? "-" : unix_path,
                seq_path.empty() ? "-" : seq_path, o.echo);
  started = true;
  return true;
}

void Daemon::Impl::StartSignalThread() {
  // Blocked here too (tallyd blocked them before any thread started; an
  // embedder's other threads must do the same, daemon.h).
  BlockDaemonSignals();
  const sigset_t set = DaemonSignals();
  signal_thread = std::thread([this, set] {
    while (!signal_thread_stop.load(std::memory_order_relaxed)) {
      // Wakes every 100 ms to see whether the daemon is shutting down.
      timespec wait{0, 100'000'000};
      const int signo = sigtimedwait(&set, nullptr, &wait);
      if (signo <= 0) continue;  // timeout or EINTR
      // Counted here, on one thread, so two quick signals cannot race: the
      // first leaves the cluster, the second stops at once.
      const int nth = signo == SIGHUP ? 0 : ++stop_signals;
      boost::asio::post(io, [this, signo, nth] { OnSignal(signo, nth); });
      if (signo == SIGHUP && !stop_requested.load(std::memory_order_relaxed)) {
        // Here, not on an I/O thread: reading rule files must not stall checks.
        std::function<void()> hook;
        {
          std::lock_guard<std::mutex> lock(reload_hook_mu);
          hook = reload_hook;
        }
        if (hook) hook();
      }
    }
  });
}

void Daemon::Impl::StopSignalThread() {
  signal_thread_stop.store(true, std::memory_order_relaxed);
  if (signal_thread.joinable()) signal_thread.join();
}

void Daemon::Impl::OnSignal(int signo, int nth) {
  if (stop_requested.load(std::memory_order_relaxed)) return;
  if (signo == SIGHUP) {
    if (cluster) {
      spdlog::info("received SIGHUP, reloading the keyring");
      cluster->ReloadKeyring(nullptr);  // logs the outcome; a failure keeps the old keys
    } else {
      spdlog::info("received SIGHUP: no keyring to reload (not in cluster mode)");
    }
    return;
  }
  const char* name = signo == SIGINT ? "SIGINT" : "SIGTERM";
  if (cluster && nth == 1) {
    // Leave gracefully first; a second signal stops at once.
    spdlog::info("received {}, leaving the cluster", name);
    cluster->Leave([this] { Stop(); });
    return;
  }
  spdlog::info("received {}, shutting down", name);
  Stop();
}

void Daemon::Impl::ArmSweep() {
  sweep_timer.expires_after(options.sweep_interval);
  sweep_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stop_requested.load(std::memory_order_relaxed)) return;
    limiter->SweepOneShard(ReadClock());
    ArmSweep();
  });
}

void Daemon::Impl::ArmStats() {
  stats_timer.expires_after(options.stats_interval);
  stats_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stop_requested.load(std::memory_order_relaxed)) return;
    spdlog::info("stats: {}", FormatStats(Stats()));
    ArmStats();
  });
}

void Daemon::Impl::RecordRates() {
  const DoorMetricsSnapshot doors = door_metrics.Snapshot();
  uint64_t checks = 0, denied = 0;
  for (const auto& by_decision : doors.checks) {
    for (size_t d = 0; d < kDecisionCount; ++d) checks += by_decision[d];
    denied += by_decision[static_cast<size_t>(Decision::kDenied)];
  }
  const Instant now = ReadClock();
  trackers.rates.Record(
      now.wall.count(),
      std::chrono::duration_cast<std::chrono::milliseconds>(now.monotonic).count(), checks, denied);
}

void Daemon::Impl::WarnWhenFull() {
  if (!limiter) return;
  const LimiterStats s = limiter->GetStats();
  const int64_t now_ns = ReadClock().monotonic.count();
  if (s.over_capacity <= over_capacity_logged ||
      (over_capacity_logged_ns && now_ns - *over_capacity_logged_ns < int64_t{60'000'000'000})) {
    return;
  }
  spdlog::warn(
      "key table full: {} new keys refused (over_capacity) since the last warning; live keys {} "
      "of --max-keys {}. Raise --max-keys or shorten windows",
      s.over_capacity - over_capacity_logged, s.live_keys, options.limiter.max_keys);
  over_capacity_logged = s.over_capacity;
  over_capacity_logged_ns = now_ns;
}

void Daemon::Impl::ArmRates() {
  rate_timer.expires_after(std::chrono::seconds(1));
  rate_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stop_requested.load(std::memory_order_relaxed)) return;
    RecordRates();
    WarnWhenFull();
    ArmRates();
  });
}

void Daemon::Impl::ArmAdaptive() {
  adaptive_timer.expires_after(
      std::chrono::milliseconds(core::NodeConfig{}.adaptive_flush_interval_ms));
  adaptive_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stop_requested.load(std::memory_order_relaxed)) return;
    local_adaptive->Step(ReadClock());
    ArmAdaptive();
  });
}

void Daemon::Impl::ArmNotify() {
  notify_timer.expires_after(notify_interval);
  notify_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || stop_requested.load(std::memory_order_relaxed)) return;
    const DaemonStats s = Stats();
    sd_notifyf(0, "%sSTATUS=serving: checks=%llu allowed=%llu denied=%llu live_keys=%llu",
               watchdog ? "WATCHDOG=1\n" : "", static_cast<unsigned long long>(s.limiter.checks),
               static_cast<unsigned long long>(s.limiter.allowed),
               static_cast<unsigned long long>(s.limiter.denied),
               static_cast<unsigned long long>(s.limiter.live_keys));
    ArmNotify();
  });
}

void BlockDaemonSignals() {
  const sigset_t set = DaemonSignals();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

// A single node's runtime limit overrides (LocalOverrides): restored from
// their file in the state directory, which every later change rewrites.
bool Daemon::Impl::RestoreLocalOverrides(std::string* error) {
  const ClusterOptions& c = options.cluster;
  std::string why;
  if (!EnsureStateDir(c.state_dir, &why)) return Fail(error, "state dir: " + why);
  const std::filesystem::path path =
      std::filesystem::path(c.state_dir) / LocalOverrides::kOverridesFileName;
  persist::SnapshotExpectations expect;
  expect.cluster_name = c.peer_auth.cluster_name;
  expect.node_id = identity.node_id;
  expect.generation = identity.generation;
  expect.buckets_per_window = options.limiter.buckets_per_window;
  expect.now_wall_ms = ReadClock().wall.count();
  expect.max_bytes = c.max_snapshot_bytes;
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  switch (read.outcome) {
    case SnapshotReadResult::Outcome::kLoaded: {
      const crdt::OverrideRestoreCounts n = local_overrides->Restore(read.snapshot);
      spdlog::info("limit overrides restored from {}: {} entries ({} refused by the map; {})",
                   path.string(), n.applied + n.stale, n.refused, read.snapshot.reason);
      break;
    }
    case SnapshotReadResult::Outcome::kMissing:
      if (!ImportClusterOverrides(expect)) {
        spdlog::info("no limit overrides saved at {}: starting with none", path.string());
      }
      break;
    case SnapshotReadResult::Outcome::kUnreadable:
    case SnapshotReadResult::Outcome::kRejected:
      spdlog::warn("limit overrides not restored, starting with none: {}{}", read.message,
                   MoveRejectedAside(path));
      break;
  }
  persist::SnapshotHeader header;
  header.cluster_name = c.peer_auth.cluster_name;
  header.node_id = identity.node_id;
  header.generation = identity.generation;
  header.buckets_per_window = options.limiter.buckets_per_window;
  local_overrides->EnablePersistence(path, std::move(header));
  if (imported_cluster_overrides) {
    // Their own file from now on: the next start reads it, not the counts.
    if (!local_overrides->Persist(ReadClock().wall.count(), &why)) {
      spdlog::error("imported limit overrides not saved (imported again at the next start): {}",
                    why);
    }
  }
  return true;
}

bool Daemon::Impl::ImportClusterOverrides(persist::SnapshotExpectations expect) {
  const std::filesystem::path path = SnapshotPath(options.cluster.state_dir);
  SnapshotReadResult read = ReadSnapshotFile(path, expect);
  if (read.outcome == SnapshotReadResult::Outcome::kRejected &&
      read.snapshot.status == persist::SnapshotStatus::kOtherNode) {
    // The overrides were the cluster's: a member ran under --node-id, a
    // single node often runs under its host name.
    expect.node_id = read.snapshot.header.node_id;
    read = ReadSnapshotFile(path, expect);
  }
  if (read.outcome == SnapshotReadResult::Outcome::kMissing) return false;
  if (read.outcome != SnapshotReadResult::Outcome::kLoaded) {
    spdlog::warn("limit overrides of the cluster snapshot not imported (left as it is): {}",
                 read.message);
    return false;
  }
  const crdt::OverrideRestoreCounts n = local_overrides->Restore(read.snapshot);
  imported_cluster_overrides = true;
  spdlog::info(
      "no single-node limit overrides yet: imported {} ({} refused by the map) from the cluster "
      "snapshot {} written by member {}; its counts are not used by a single node, and the "
      "file is left as it is",
      n.applied + n.stale, n.refused, path.string(), read.snapshot.header.node_id);
  return true;
}

void Daemon::Impl::RunLoop() {
  // Only the signal thread takes them (an embedder's thread calling Run may
  // not have blocked them; tallyd did before starting any thread).
  if (options.handle_signals) BlockDaemonSignals();
  try {
    io.run();
  } catch (const std::exception& e) {
    // A handler that threw did not re-arm its socket: limping on would leave
    // a transport silently dead, so stop instead.
    spdlog::critical("I/O handler failed: {}; stopping", e.what());
    Stop();
  }
}

void Daemon::Impl::Stop() {
  stop_requested.store(true, std::memory_order_relaxed);
  io.stop();
}

void Daemon::Impl::Shutdown() {
  if (shut_down) return;
  shut_down = true;
  for (auto& s : udp_servers) s->Close();
  if (unix_server) unix_server->Close();
  if (seq_server) seq_server->Close();
  if (cluster) cluster->Close();
  sweep_timer.cancel();
  stats_timer.cancel();
  notify_timer.cancel();
  rate_timer.cancel();
  adaptive_timer.cancel();
  StopSignalThread();
  work.reset();
  unix_file.Unlink();
  seq_file.Unlink();
  // Let the cancelled handlers run (they just return) so connections and
  // their buffers are released now rather than in ~io_context.
  io.restart();
  io.poll();
}

DaemonStats Daemon::Impl::Stats() const {
  DaemonStats s{};
  s.datagrams_in = counters.datagrams_in.load(std::memory_order_relaxed);
  s.datagrams_out = counters.datagrams_out.load(std::memory_order_relaxed);
  s.malformed = counters.malformed.load(std::memory_order_relaxed);
  s.send_errors = counters.send_errors.load(std::memory_order_relaxed);
  if (limiter) s.limiter = limiter->GetStats();
  if (cluster && started) s.limiter = cluster->limiter_stats();
  return s;
}

Daemon::Daemon(DaemonOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

Daemon::~Daemon() {
  impl_->Stop();
  impl_->Shutdown();
  impl_->StopSignalThread();  // also after a Start that failed and was retried
}

bool Daemon::Start(std::string* error) { return impl_->Start(error); }

std::string Daemon::udp_address() const { return impl_->udp_address; }
std::string Daemon::unix_path() const { return impl_->unix_path; }
std::string Daemon::unix_seq_path() const { return impl_->seq_path; }
std::string Daemon::gossip_address() const {
  return impl_->cluster && impl_->started ? impl_->cluster->gossip_address() : "";
}
std::string Daemon::node_id() const { return impl_->identity.node_id; }
void Daemon::SetReloadHook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(impl_->reload_hook_mu);
  impl_->reload_hook = std::move(hook);
}
void Daemon::SetRulesStatus(std::string digest, std::string error) {
  // Members tell each other their digests on pings and acks (16 raw bytes).
  if (impl_->cluster && impl_->started) impl_->cluster->SetRulesDigest(RulesDigestBytes(digest));
  impl_->rules_status.Set(std::move(digest), std::move(error));
}
void Daemon::SetAdaptiveRules(std::vector<core::AdaptiveRuleConfig> rules) {
  if (!impl_->started) return;
  if (impl_->cluster) {
    impl_->cluster->SetAdaptiveRules(std::move(rules));
  } else if (impl_->local_adaptive) {
    impl_->local_adaptive->SetRules(std::move(rules));
  }
}
core::AdaptiveHost::ReportResult Daemon::ReportSignal(std::string_view domain,
                                                      std::string_view rule, double value,
                                                      uint64_t count) {
  if (impl_->started && impl_->cluster) {
    return impl_->cluster->ReportSignal(domain, rule, value, count);
  }
  if (impl_->started && impl_->local_adaptive) {
    return impl_->local_adaptive->Report(domain, rule, value, count);
  }
  return core::AdaptiveHost::ReportResult::kUnknownRule;
}
void Daemon::SetDescriptorChecks(DescriptorDoor::Decide decide) {
  impl_->descriptor_door.Set(std::move(decide));
}
CheckGateway* Daemon::gateway() const { return impl_->started ? impl_->gateway.get() : nullptr; }
const PublishedOverrides* Daemon::published_overrides() const {
  if (!impl_->started) return nullptr;
  if (impl_->cluster) return impl_->cluster->published_overrides();
  return impl_->local_overrides ? impl_->local_overrides->published() : nullptr;
}
std::optional<crdt::LimitOverrides::MergeResult> Daemon::WriteOverride(
    const crdt::Selector& selector, const crdt::OverrideValue& value) {
  if (!impl_->started) return std::nullopt;
  if (impl_->cluster) return impl_->cluster->WriteOverride(selector, value);
  if (!impl_->local_overrides) return std::nullopt;
  return impl_->local_overrides->Write(selector, value, ReadClock().wall.count());
}

void Daemon::Run() {
  Impl& d = *impl_;
  if (!d.started || d.ran) return;
  d.ran = true;
  if (!d.stop_requested.load()) {
    std::vector<std::thread> pool;
    pool.reserve(static_cast<size_t>(d.threads - 1));
    for (int i = 1; i < d.threads; ++i) pool.emplace_back([&d] { d.RunLoop(); });
    d.RunLoop();
    for (auto& t : pool) t.join();
  }
  sd_notify(0, "STOPPING=1\nSTATUS=stopping: sockets closing, final snapshot");
  d.Shutdown();
  // After the sockets closed, so nothing is counted after the snapshot.
  if (d.cluster) d.cluster->WriteFinalSnapshot();
  if (d.local_snapshots) d.local_snapshots->WriteFinal();
  // Every change was saved as it was made; this retries one that failed.
  std::string save_error;
  if (d.local_overrides && !d.local_overrides->Persist(ReadClock().wall.count(), &save_error)) {
    spdlog::error("limit overrides not saved at shutdown: {}", save_error);
  }
  spdlog::info("stopped; final stats: {}", FormatStats(d.Stats()));
}

void Daemon::Stop() { impl_->Stop(); }

bool Daemon::superseded() const { return impl_->superseded.load(); }

DaemonStats Daemon::stats() const { return impl_->Stats(); }

DoorMetrics* Daemon::door_metrics() const { return &impl_->door_metrics; }
std::atomic<uint64_t>* Daemon::http_accept_fd_exhausted() const {
  return &impl_->counters.accept_fd_exhausted_http;
}

const StatusTrackers* Daemon::trackers() const { return &impl_->trackers; }

uint64_t Daemon::key_capacity() const { return impl_->options.limiter.max_keys; }

wire::StatusReport Daemon::Status() const {
  const Impl& d = *impl_;
  const Instant now = ReadClock();
  wire::StatusReport report =
      d.cluster && d.started
          ? d.cluster->Status(now)
          : SingleNodeStatus(d.limiter.get(), &d.identity, d.counters, now, d.local_overrides.get(),
                             d.local_adaptive.get(), d.local_snapshots.get());
  d.rules_status.AppendTo(&report);  // as the status answers on the Cap'n Proto doors
  return report;
}

}  // namespace tally::io

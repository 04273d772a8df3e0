#include "daemon/io/cluster_driver.h"

#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cmath>
#include <random>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/snapshot_file.h"
#include "daemon/io/sockets.h"

namespace tally::io {
namespace {

using cluster_internal::Canonical;
using cluster_internal::Fail;
using SteadyTime = std::chrono::steady_clock::time_point;

constexpr std::chrono::milliseconds kHousekeepingInterval{1000};
constexpr std::chrono::milliseconds kLeavePoll{10};
// The Node's timer is never armed for a time already due, but at least this
// far ahead: Asio programs its timerfd for a due timer as an absolute time of
// 1 ns, which libfaketime (the clock-fault tests, an operator's clock drills)
// shifts by its offset and the kernel refuses (EINVAL), so the timer never
// fired and the member stopped ticking for good.
constexpr int64_t kMinTimerDelayNs = 1'000'000;
// That is not enough on its own: Asio programs the timerfd the same way
// whenever *any* of its timers is due when it re-arms (another timer of the
// process, or ours if the thread was late by a millisecond, as under ASan),
// and the refused programming stalls every timer until one is scheduled
// anew. A Node timer this far past its deadline without firing was lost so:
// the next input arms it again (ClusterClockFaultTest under ASan: a member
// stayed warming up for 20 s).
constexpr int64_t kLostTimerAfterNs = 50'000'000;

int64_t ToNs(std::chrono::milliseconds ms) {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(ms).count();
}

}  // namespace

// ---------------------------------------------------------------- locked helpers

void ClusterDriver::Impl::ResolveLocked(Batch* b) {
  if (b->out.client.empty()) return;
  std::vector<uint64_t> answered;
  for (core::Outbox::ClientReply& reply : b->out.client) {
    auto it = tokens.find(reply.reply_token);
    if (it == tokens.end()) {
      // Expired (the Node answered after reply_expiry) or never ours.
      counters->send_errors.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    b->replies.push_back(ReadyReply{it->second.target, std::move(reply.bytes),
                                    it->second.created_ns, reply.decisions});
    answered.push_back(reply.reply_token);  // a batch may span several datagrams
  }
  for (uint64_t token : answered) tokens.erase(token);
  b->out.client.clear();
}

void ClusterDriver::Impl::FlushPeerInputLocked(const Instant& now, Batch* b) {
  node->Flush(now, &b->out);
  PublishOverridesLocked();
  ResolveLocked(b);
  ArmTimerLocked(now.monotonic.count());
}

void ClusterDriver::Impl::PublishOverridesLocked() {
  const crdt::LimitOverrides& map = node->overrides();
  if (map.version() == published_overrides_version) return;
  published_overrides_version = map.version();
  OverridesChangedLocked();
  auto table = std::make_shared<const crdt::DescriptorOverrideTable>(map);
  published_overrides.Publish(table->empty() ? nullptr : std::move(table));
}

void ClusterDriver::Impl::ArmTimerLocked(int64_t now_ns) {
  if (closed.load(std::memory_order_relaxed)) return;
  int64_t deadline = node->NextDeadline().count();
  if (leaving && !leave_finished) deadline = std::min(deadline, now_ns + ToNs(kLeavePoll));
  // Due now or soon: a little later (see kMinTimerDelayNs). A timer already
  // armed that soon stays, so a stream of inputs does not keep pushing it.
  deadline = std::max(deadline, now_ns + kMinTimerDelayNs);
  const bool lost = timer_armed && now_ns > armed_deadline_ns + kLostTimerAfterNs;
  if (timer_armed && deadline >= armed_deadline_ns && !lost) return;
  if (lost) timers_lost.fetch_add(1, std::memory_order_relaxed);
  timer_armed = true;
  armed_deadline_ns = deadline;
  timer.expires_at(SteadyTime(std::chrono::nanoseconds(deadline)));
  timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;  // re-armed earlier, or closing
    OnTimer();
  });
}

void ClusterDriver::Impl::CheckLeaveLocked(const Instant& now, Batch* b) {
  if (!leaving || leave_finished) return;
  using Progress = core::Node::LeaveProgress;
  const Progress progress =
      node->LeaveState(now, stream_queued_bytes.load(std::memory_order_relaxed) == 0);
  if (progress == Progress::kFlushed || progress == Progress::kGraceOver) {
    leave_finished = true;
    spdlog::info("leave {}",
                 progress == Progress::kFlushed ? "flushed" : "grace period over; stopping anyway");
    b->leave_done = std::move(leave_done);
  }
}

// ---------------------------------------------------------------- sending

void ClusterDriver::Impl::ReportEvents(const std::vector<core::NodeEvent>& events) {
  using Kind = core::NodeEvent::Kind;
  for (const core::NodeEvent& e : events) {
    switch (e.kind) {
      case Kind::kMemberJoined:
        spdlog::info("member {} ({}, generation {}) is {}", e.member_id, e.address, e.generation,
                     e.state);
        RecordMembershipEvent(e, "joined");
        break;
      case Kind::kMemberRestarted:
        spdlog::info("member {} restarted: generation {} -> {} at {}, {}", e.member_id,
                     e.previous_generation, e.generation, e.address, e.state);
        RecordMembershipEvent(e, "restarted");
        break;
      case Kind::kMemberState:
        spdlog::info("member {} ({}): {} -> {} (incarnation {})", e.member_id, e.address,
                     e.from_state, e.state, e.incarnation);
        RecordMembershipEvent(e, "state");
        break;
      case Kind::kMemberForgotten:
        spdlog::info("member {} forgotten", e.member_id);
        RecordMembershipEvent(e, "forgotten");
        break;
      case Kind::kOwningChanged:
        if (e.owning) {
          spdlog::info("owning keys again");
        } else {
          spdlog::warn("not owning keys: {}", e.text);
        }
        break;
      case Kind::kClockOffsetFar:
        spdlog::warn(
            "clock offset of member {} is {:.1f} ms (warning above {} ms, owning stops "
            "beyond {} ms against most peers)",
            e.member_id, e.clock_offset_ms, options.node.warn_clock_offset_ms,
            options.node.max_clock_offset_ms);
        break;
      case Kind::kClockOffsetBack:
        spdlog::info("clock offset of member {} back to {:.1f} ms", e.member_id, e.clock_offset_ms);
        break;
      case Kind::kSuperseded:
        spdlog::error(
            "node id {} is now used by a newer process at {} (generation {}; ours is {}): this "
            "process stops, so that one id has one process",
            options.node.node_id, e.address, e.generation, options.node.generation);
        if (options.on_superseded) boost::asio::post(timer.get_executor(), options.on_superseded);
        break;
      case Kind::kJoinUnanswered:
        // A typo or a firewall looks exactly like a cluster of one otherwise.
        spdlog::warn("join: {}", e.text);
        break;
      case Kind::kJoinAnswered:
        spdlog::info("join: a seed answered; joined the cluster");
        break;
      case Kind::kKeyTableFull:
        spdlog::warn(
            "key table full ({} of --max-keys {}): new keys are refused (over_capacity) and key "
            "repairs with other members are paused until expired keys make room",
            e.count, options.node.limiter.max_keys);
        break;
      case Kind::kKeyTableRoom:
        spdlog::info("key table has room again ({} of --max-keys {}); key repairs resumed", e.count,
                     options.node.limiter.max_keys);
        break;
      case Kind::kForeignSelf:
        // Two processes under one id write the same counter slots.
        spdlog::error(
            "another process is using node id {} ({} messages or rumors of it so far; ours is "
            "generation {}): two processes under one id overwrite each other's counts; stop one "
            "of them or give it its own --node-id",
            options.node.node_id, e.count, e.generation);
        break;
    }
  }
}

// Decisions by door (GET /metrics), as the Node tallied each reply, with no
// lock held.
void ClusterDriver::Impl::CountReplies(const std::vector<ReadyReply>& replies) {
  int64_t now_ns = 0;
  for (const ReadyReply& r : replies) {
    if (r.target.metrics == nullptr) continue;
    if (now_ns == 0) now_ns = ReadClock().monotonic.count();
    r.target.metrics->Count(r.target.door, r.decisions);
    r.target.metrics->ObserveLatency(
        r.target.door, static_cast<uint64_t>(std::max<int64_t>(0, now_ns - r.received_ns)));
  }
}

void ClusterDriver::Impl::Send(Batch& b) {
  ReportEvents(b.out.events);
  SendPeers(b.out.peer);
  SendClients(b.replies);
  if (b.leave_done) b.leave_done();
}

void ClusterDriver::Impl::SendClients(std::vector<ReadyReply>& replies) {
  if (replies.empty()) return;
  CountReplies(replies);
  std::vector<mmsghdr> msgs;
  std::vector<iovec> iov(replies.size());
  size_t i = 0;
  while (i < replies.size()) {
    ReadyReply& r = replies[i];
    if (r.target.sink) {
      r.target.sink->SendReply(r.bytes);
      ++i;
      continue;
    }
    // A run of replies from the same socket goes out in one sendmmsg.
    const int fd = r.target.fd;
    msgs.clear();
    size_t j = i;
    for (; j < replies.size() && !replies[j].target.sink && replies[j].target.fd == fd; ++j) {
      iov[j] = iovec{replies[j].bytes.data(), replies[j].bytes.size()};
      mmsghdr m{};
      m.msg_hdr.msg_name = &replies[j].target.addr;
      m.msg_hdr.msg_namelen = replies[j].target.addr_len;
      m.msg_hdr.msg_iov = &iov[j];
      m.msg_hdr.msg_iovlen = 1;
      msgs.push_back(m);
    }
    auto [sent, failed] = SendDatagrams(fd, msgs);
    Counters::Add(counters->datagrams_out, sent);
    Counters::Add(counters->send_errors, failed);
    i = j;
  }
}

// ---------------------------------------------------------------- timers

void ClusterDriver::Impl::OnTimer() {
  if (closed.load(std::memory_order_relaxed)) return;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    timer_armed = false;
    node->Tick(now, &b.out);
    PublishOverridesLocked();
    ResolveLocked(&b);
    CheckLeaveLocked(now, &b);
    ArmTimerLocked(now.monotonic.count());
  }
  Send(b);
}

void ClusterDriver::Impl::ArmHousekeeping() {
  housekeeping_timer.expires_after(kHousekeepingInterval);
  housekeeping_timer.async_wait([this](const boost::system::error_code& ec) {
    if (ec || closed.load(std::memory_order_relaxed)) return;
    OnHousekeeping();
    ArmHousekeeping();
  });
}

void ClusterDriver::Impl::OnHousekeeping() {
  std::lock_guard<std::mutex> lock(mu);
  const Instant now = ReadClock();
  const int64_t expiry_ns = ToNs(options.reply_expiry);
  const uint64_t expired = boost::unordered::erase_if(tokens, [&](const auto& entry) {
    return now.monotonic.count() - entry.second.created_ns > expiry_ns;
  });
  if (expired > 0) {
    replies_expired.fetch_add(expired, std::memory_order_relaxed);
    spdlog::warn("{} client requests got no answer from the node within {} ms; dropped", expired,
                 options.reply_expiry.count());
  }
  peer_auth->LogRejections(now.monotonic.count() / 1'000'000);
}

// ---------------------------------------------------------------- public

ClusterDriver::ClusterDriver(boost::asio::io_context& io, ClusterOptions options,
                             Counters* counters)
    : options_(std::move(options)), impl_(std::make_unique<Impl>(io, options_, counters)) {}

ClusterDriver::~ClusterDriver() { Close(); }

bool ClusterDriver::Start(std::string* error) {
  core::NodeConfig& n = options_.node;
  n.leave_grace_ms = options_.leave_grace.count();
  std::string why;
  if (n.node_id.empty() || n.node_id.size() > membership::Swim::kMaxIdBytes) {
    return Fail(error,
                "node id must be 1.." + std::to_string(membership::Swim::kMaxIdBytes) + " bytes");
  }
  if (n.replicas < 1) return Fail(error, "replicas must be >= 1");
  if (!n.swim.Valid(&why)) return Fail(error, "membership: " + why);
  n.seeds.clear();
  for (const std::string& seed : options_.seeds) {
    std::optional<std::string> canonical = Canonical(seed, &why);
    if (!canonical) return Fail(error, "join: " + why);
    n.seeds.push_back(*canonical);
  }
  {
    std::optional<HostPort> hp = ParseHostPort(options_.gossip, &why);
    if (!hp) return Fail(error, "gossip: " + why);
    impl_->peer_auth = PeerAuth::Create(options_.peer_auth, hp->host, n.max_clock_offset_ms, &why);
    if (!impl_->peer_auth) return Fail(error, why);
  }
  for (const std::string& text : options_.dns_seeds) {
    std::optional<DnsSeed> seed = ParseDnsSeed(text, &why);
    if (!seed) return Fail(error, "join: " + why);
    impl_->dns_seeds.push_back(*seed);
  }
  if (!impl_->Bind(error)) return false;
  gossip_address_ = n.gossip_address;
  impl_->static_seeds = n.seeds;
  if (!impl_->dns_seeds.empty()) {
    if (!options_.resolver) options_.resolver = SystemResolver();
    std::optional<HostPort> bound = ParseHostPort(gossip_address_, &why);
    impl_->gossip_port = bound ? bound->port : 0;
    // Resolved once now (a first pod may find only itself, or nothing: it
    // then starts as a cluster of one and keeps looking while alone).
    for (std::string& a : impl_->ResolveDnsSeeds()) n.seeds.push_back(std::move(a));
    std::sort(n.seeds.begin(), n.seeds.end());
    n.seeds.erase(std::unique(n.seeds.begin(), n.seeds.end()), n.seeds.end());
  }
  // A seed that is ourselves is no seed (a node listed in its own --join).
  std::erase(n.seeds, gossip_address_);
  // One generation per process start: the wall clock in ms.
  n.generation = static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                           std::chrono::system_clock::now().time_since_epoch())
                                           .count());
  std::random_device rd;
  n.rng_seed = (static_cast<uint64_t>(rd()) << 32 ^ rd()) ^ n.generation ^
               (static_cast<uint64_t>(getpid()) << 20);

  Impl& d = *impl_;
  if (!options_.state_dir.empty() && !EnsureStateDir(options_.state_dir, &why)) {
    return Fail(error, "state dir: " + why);
  }
  d.node = std::make_unique<core::Node>(n);
  // Restored counts are in place before the Node starts, hence before any
  // check reaches it (the client sockets start after this returns).
  if (!options_.state_dir.empty()) {
    d.RestoreSnapshot(ReadClock());
    d.ImportSingleNodeOverrides(ReadClock());
    std::lock_guard<std::mutex> lock(d.snapshot_mu);
    d.snapshot_schedule.emplace(
        std::chrono::duration_cast<std::chrono::milliseconds>(options_.snapshot_interval),
        n.rng_seed ^ 0x5eed, SnapshotSchedule::Clock::now());
  }
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    const Instant now = ReadClock();
    d.started_ns = now.monotonic.count();
    d.node->Start(now, &b.out);
    d.ResolveLocked(&b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
  d.ArmGossip();
  d.ArmAccept();
  d.ArmHousekeeping();
  if (!options_.state_dir.empty()) {
    // Even with no periodic writes (interval 0): override changes are written.
    d.snapshot_thread = std::thread([&d] { d.SnapshotLoop(); });
  }
  if (!d.dns_seeds.empty()) d.dns_thread = std::thread([&d] { d.DnsLoop(); });
  spdlog::info("cluster node {} generation {} gossip {} ({} seeds, replicas {}, policy {})",
               n.node_id, n.generation, gossip_address_, n.seeds.size(), n.replicas,
               core::PartitionPolicyName(n.partition_policy));
  return true;
}

void ClusterDriver::Close() {
  Impl& d = *impl_;
  if (d.closed.exchange(true)) return;
  d.StopSnapshotThread();
  d.StopDnsThread();
  boost::system::error_code ignored;
  // Replies that will never come: dropping their targets lets an in-process
  // door's sink (daemon/io/check_gateway.h) answer "unavailable" now.
  boost::unordered_flat_map<uint64_t, Impl::PendingReply> pending;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    d.timer.cancel();
    pending.swap(d.tokens);
  }
  pending.clear();
  d.housekeeping_timer.cancel();
  d.accept_retry_timer.cancel();
  d.gossip_udp.close(ignored);
  d.acceptor.close(ignored);
  std::unordered_map<Impl::InboundStream*, std::shared_ptr<Impl::InboundStream>> inbound;
  {
    std::lock_guard<std::mutex> lock(d.inbound_mu);
    inbound.swap(d.inbound);
  }
  for (auto& [raw, stream] : inbound) stream->Close();
  // No thread runs the io_context now, so the strand's state is ours.
  for (auto& [address, s] : d.outbound) {
    ++s->epoch;
    s->timer.cancel();
    s->socket.close(ignored);
  }
}

void ClusterDriver::HandleClientDatagrams(std::span<const ClientDatagram> datagrams, Instant now) {
  if (datagrams.empty()) return;
  Impl& d = *impl_;
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    for (const ClientDatagram& dg : datagrams) {
      const uint64_t token = d.next_token++;
      d.tokens.emplace(token, Impl::PendingReply{*dg.target, now.monotonic.count()});
      if (dg.checks) {
        d.node->OnClientChecks(token, *dg.checks, dg.bytes.size(), now, &b.out);
      } else {
        d.node->OnClientDatagram(token, dg.bytes, now, &b.out);
      }
    }
    d.node->Flush(now, &b.out);
    d.ResolveLocked(&b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
}

crdt::LimitOverrides::MergeResult ClusterDriver::WriteOverride(const crdt::Selector& selector,
                                                               const crdt::OverrideValue& value,
                                                               Instant now) {
  Impl& d = *impl_;
  Impl::Batch b;
  crdt::LimitOverrides::MergeResult result;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    result = d.node->WriteOverride(selector, value, now, &b.out);
    d.node->Flush(now, &b.out);
    d.PublishOverridesLocked();
    d.ResolveLocked(&b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
  return result;
}

crdt::LimitOverrides::MergeResult ClusterDriver::WriteOverride(const crdt::Selector& selector,
                                                               const crdt::OverrideValue& value) {
  return WriteOverride(selector, value, ReadClock());
}

const PublishedOverrides* ClusterDriver::published_overrides() const {
  return &impl_->published_overrides;
}

void ClusterDriver::ReadOverrides(const std::function<void(const crdt::LimitOverrides&)>& read) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  read(impl_->node->overrides());
}

void ClusterDriver::SetAdaptiveRules(std::vector<core::AdaptiveRuleConfig> rules) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->node) return;
  impl_->node->SetAdaptiveRules(std::move(rules));
  // The Node's next deadline may now be its first adaptive round.
  impl_->ArmTimerLocked(ReadClock().monotonic.count());
}

core::AdaptiveHost::ReportResult ClusterDriver::ReportSignal(std::string_view domain,
                                                             std::string_view rule, double value,
                                                             uint64_t count) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->node) return core::AdaptiveHost::ReportResult::kUnknownRule;
  return impl_->node->ReportSignal(domain, rule, value, count);
}

void ClusterDriver::SetRulesDigest(std::string digest) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->node) impl_->node->SetRulesDigest(std::move(digest));
}

wire::StatusReport ClusterDriver::Status(Instant now) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  return impl_->StatusLocked(now);
}

wire::OwnerReport ClusterDriver::Owner(const wire::OwnerQuery& query, Instant now) {
  wire::OwnerReport r;
  r.node_id = options_.node.node_id;
  if (ValidateOwnerQuery(query, &r.error) != tally::Status::kOk) {
    r.status = tally::Status::kInvalidArgument;
    return r;
  }
  crdt::KeyId key = crdt::HashKey(query.user_id, query.endpoint, query.window_ms);
  std::lock_guard<std::mutex> lock(impl_->mu);
  r.preference_list = impl_->node->PreferenceList(key);
  r.holds_key = impl_->node->store().Find(key) != nullptr;
  r.state_hash = impl_->node->StateHash(key, now);
  return r;
}

LimiterStats ClusterDriver::limiter_stats() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!impl_->node) return {};
  return impl_->node->limiter_stats();
}

bool ClusterDriver::ReloadKeyring(std::string* error) {
  if (!impl_->peer_auth) return Fail(error, "not started");
  return impl_->peer_auth->Reload(error);
}

bool ClusterDriver::WriteFinalSnapshot() {
  Impl& d = *impl_;
  d.StopSnapshotThread();
  if (options_.state_dir.empty() || !d.node) return true;
  return d.WriteSnapshot("shutdown");
}

SnapshotCounters ClusterDriver::snapshot_counters() const {
  std::lock_guard<std::mutex> lock(impl_->snapshot_stats_mu);
  return impl_->snapshot_stats;
}

void ClusterDriver::Leave(std::function<void()> done) {
  Impl& d = *impl_;
  Impl::Batch b;
  {
    std::lock_guard<std::mutex> lock(d.mu);
    if (d.leaving) return;
    d.leaving = true;
    d.leave_done = std::move(done);
    const Instant now = ReadClock();
    spdlog::info("leaving the cluster (grace {} ms)", options_.leave_grace.count());
    d.node->Leave(now, &b.out);
    d.ResolveLocked(&b);
    d.CheckLeaveLocked(now, &b);
    d.ArmTimerLocked(now.monotonic.count());
  }
  d.Send(b);
}

}  // namespace tally::io

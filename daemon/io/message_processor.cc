#include "daemon/io/message_processor.h"

#include <algorithm>
#include <cassert>
#include <chrono>
#include <utility>

#include "daemon/io/cluster_driver.h"
#include "daemon/io/local_adaptive.h"
#include "daemon/io/local_snapshots.h"
#include "membership/message.h"

namespace tally::io {
namespace {

// Error texts are ours or the decoder's and short; the cap keeps any future
// long reason from blowing a reply past one datagram.
constexpr size_t kMaxErrorBytes = 512;

constexpr const char* kNoRulesDoors =
    "descriptor checks need tallyd's rules doors: start it with --grpc or --http (and --rules)";

}  // namespace

void DescriptorDoor::Set(Decide decide) {
  std::shared_ptr<const Decide> next;
  if (decide) next = std::make_shared<const Decide>(std::move(decide));
  std::lock_guard<std::mutex> lock(mu_);
  decide_ = std::move(next);
}

bool DescriptorDoor::Forward(const wire::DescriptorQuery& query, Door door, size_t max_reply_bytes,
                             Done done) const {
  std::shared_ptr<const Decide> decide;
  {
    std::lock_guard<std::mutex> lock(mu_);
    decide = decide_;
  }
  if (!decide) return false;
  (*decide)(query, door, max_reply_bytes, std::move(done));
  return true;
}

void MessageProcessor::HandOverDescriptorCheck(size_t request_bytes, SendLater send) {
  const wire::DescriptorQuery& query = reader_.descriptor_query();
  // A datagram's source may be forged: its answer stays within
  // kMaxReplyFactor of it (check.capnp, protocol 4). A seqpacket peer is who it is.
  const bool forgeable = door_ == Door::kUdp || door_ == Door::kUnix;
  const size_t max_reply_bytes =
      forgeable ? wire::kMaxReplyFactor * request_bytes : wire::kMaxDatagramBytes;
  Counters* counters = counters_;
  auto done = [send, counters](const wire::DescriptorReport& report,
                               uint32_t padding_required_bytes) {
    std::vector<std::byte> bytes;
    if (padding_required_bytes > 0) {
      counters->queries_padding_required.fetch_add(1, std::memory_order_relaxed);
      wire::EncodePaddingRequired(padding_required_bytes, &bytes);
    } else {
      wire::EncodeDescriptorCheckResponse(report, &bytes);
    }
    send(bytes);
  };
  if (descriptors_ == nullptr || !descriptors_->Forward(query, door_, max_reply_bytes, done)) {
    wire::DescriptorReport report;
    report.request_id = query.request_id;
    report.status = Status::kUnavailable;
    report.error = kNoRulesDoors;
    done(report, 0);
  }
}

Instant ReadClock() { return tally::ReadClock(); }

MessageProcessor::MessageProcessor(Limiter* limiter, bool echo, Counters* counters)
    : limiter_(limiter), echo_(echo), counters_(counters) {
  assert(echo_ || limiter_ != nullptr);
}

MessageProcessor::MessageProcessor(const ProcessorContext& context)
    : limiter_(context.limiter),
      cluster_(context.cluster),
      identity_(context.identity),
      rules_(context.rules),
      echo_(context.echo),
      counters_(context.counters),
      metrics_(context.metrics),
      door_(context.door),
      keys_(context.keys),
      descriptors_(context.descriptors),
      overrides_(context.overrides),
      adaptive_(context.adaptive),
      snapshots_(context.snapshots) {
  assert(counters_ != nullptr);
  assert(echo_ || limiter_ != nullptr || cluster_ != nullptr);
}

void AppendTransportCounters(const Counters& c,
                             std::vector<std::pair<std::string, uint64_t>>* out) {
  out->emplace_back("datagrams_in", c.datagrams_in.load(std::memory_order_relaxed));
  out->emplace_back("datagrams_out", c.datagrams_out.load(std::memory_order_relaxed));
  out->emplace_back("malformed", c.malformed.load(std::memory_order_relaxed));
  out->emplace_back("send_errors", c.send_errors.load(std::memory_order_relaxed));
  out->emplace_back("queries_padding_required",
                    c.queries_padding_required.load(std::memory_order_relaxed));
  out->emplace_back("accept_fd_exhausted_seqpacket",
                    c.accept_fd_exhausted_seqpacket.load(std::memory_order_relaxed));
  out->emplace_back("accept_fd_exhausted_peer",
                    c.accept_fd_exhausted_peer.load(std::memory_order_relaxed));
  out->emplace_back("accept_fd_exhausted_http",
                    c.accept_fd_exhausted_http.load(std::memory_order_relaxed));
}

void AppendLimiterCounters(const LimiterStats& s,
                           std::vector<std::pair<std::string, uint64_t>>* out) {
  out->emplace_back("checks", s.checks);
  out->emplace_back("allowed", s.allowed);
  out->emplace_back("denied", s.denied);
  out->emplace_back("invalid", s.invalid);
  out->emplace_back("over_capacity", s.over_capacity);
  out->emplace_back("dedup_hits", s.dedup_hits);
  out->emplace_back("keys_reclaimed", s.keys_reclaimed);
  out->emplace_back("clock_steps_back", s.clock_steps_back);
  out->emplace_back("geometry_repairs", s.geometry_repairs);
}

Status ValidateOwnerQuery(const wire::OwnerQuery& query, std::string* why) {
  CheckRequestRef ref;
  ref.user_id = query.user_id;
  ref.endpoint = query.endpoint;
  ref.window_ms = query.window_ms;
  ref.limit = 1;
  ref.hits = 0;
  return ValidateRequest(ref, why);
}

std::string RulesDigestText(std::string_view raw) {
  if (raw.empty()) return std::string(wire::kNoRulesDigest);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(raw.size() * 2);
  for (char c : raw) {
    const auto byte = static_cast<unsigned char>(c);
    hex += kDigits[byte >> 4];
    hex += kDigits[byte & 15];
  }
  return hex;
}

std::string RulesDigestBytes(std::string_view hex) {
  if (hex.size() != 2 * membership::kRulesDigestBytes) return {};
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
  };
  std::string raw(membership::kRulesDigestBytes, '\0');
  for (size_t i = 0; i < raw.size(); ++i) {
    const int hi = nibble(hex[2 * i]), lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return {};
    raw[i] = static_cast<char>(hi << 4 | lo);
  }
  return raw;
}

void RulesStatus::Set(std::string digest, std::string error) {
  if (error.size() > kMaxErrorBytes) error.resize(kMaxErrorBytes);
  std::lock_guard<std::mutex> lock(mu_);
  digest_ = std::move(digest);
  error_ = std::move(error);
}

void RulesStatus::AppendTo(wire::StatusReport* report) const {
  std::lock_guard<std::mutex> lock(mu_);
  report->rules_digest = digest_;
  report->rules_error = error_;
  for (wire::MemberReport& m : report->members) {
    if (m.id == report->node_id && m.rules_digest.empty()) {
      m.rules_digest = digest_.empty() ? std::string(wire::kNoRulesDigest) : digest_;
    }
  }
}

wire::StatusReport SingleNodeStatus(const Limiter* limiter, const DaemonIdentity* identity,
                                    const Counters& counters, Instant now,
                                    const LocalOverrides* overrides, const LocalAdaptive* adaptive,
                                    const LocalSnapshots* snapshots) {
  wire::StatusReport s;
  s.node_id = identity != nullptr ? identity->node_id : "tallyd";
  s.generation = identity != nullptr ? identity->generation : 0;
  s.cluster = false;
  s.owning = true;
  s.key_share = 1.0;
  s.last_known_members = 1;
  LimiterStats stats;
  if (limiter != nullptr) stats = limiter->GetStats();
  s.live_keys = stats.live_keys;
  wire::MemberReport& self = s.members.emplace_back();
  self.id = s.node_id;
  self.state = "alive";
  self.generation = s.generation;
  if (identity != nullptr) {
    self.address = identity->udp_address;
    s.uptime_ms = static_cast<uint64_t>(std::max<int64_t>(
        0, std::chrono::duration_cast<std::chrono::milliseconds>(now.monotonic - identity->started)
               .count()));
  }
  AppendLimiterCounters(stats, &s.counters);
  if (overrides != nullptr) overrides->AppendCounters(&s.counters);
  if (adaptive != nullptr && !adaptive->empty()) {
    const LocalAdaptive::Counters a = adaptive->counters();
    AppendAdaptiveCounters(a.host, a.limits_written, &s.counters);
  }
  if (snapshots != nullptr) AppendSnapshotCounters(snapshots->counters(), &s.counters);
  AppendTransportCounters(counters, &s.counters);
  return s;
}

void AppendAdaptiveCounters(const core::AdaptiveHost::Counters& host, uint64_t limits_written,
                            std::vector<std::pair<std::string, uint64_t>>* out) {
  out->emplace_back("adaptive_reports_accepted", host.reports_accepted);
  out->emplace_back("adaptive_reports_unknown", host.reports_unknown);
  out->emplace_back("adaptive_reports_invalid", host.reports_invalid);
  out->emplace_back("adaptive_steps_decreased", host.steps_decreased);
  out->emplace_back("adaptive_steps_increased", host.steps_increased);
  out->emplace_back("adaptive_steps_held", host.steps_held);
  out->emplace_back("adaptive_adoptions", host.adoptions);
  out->emplace_back("adaptive_limits_written", limits_written);
}

wire::OwnerReport MessageProcessor::SingleNodeOwner(const wire::OwnerQuery& query) const {
  wire::OwnerReport r;
  r.node_id = identity_ != nullptr ? identity_->node_id : "tallyd";
  if (ValidateOwnerQuery(query, &r.error) != Status::kOk) {
    r.status = Status::kInvalidArgument;
    return r;
  }
  r.preference_list.push_back(r.node_id);
  return r;
}

std::vector<std::byte>* MessageProcessor::NextBuffer() {
  if (buffers_used_ == buffers_.size()) buffers_.emplace_back();
  return &buffers_[buffers_used_++];
}

void MessageProcessor::ReplyError(Status status, std::string reason, uint32_t tag,
                                  std::vector<Reply>* replies) {
  counters_->malformed.fetch_add(1, std::memory_order_relaxed);
  if (reason.size() > kMaxErrorBytes) reason.resize(kMaxErrorBytes);
  results_.clear();
  CheckResult& r = results_.emplace_back();
  r.request_id = 0;
  r.status = status;
  r.allowed = false;
  r.error = std::move(reason);
  EncodeResults(tag, replies);
}

void MessageProcessor::EncodeResults(uint32_t tag, std::vector<Reply>* replies) {
  wire::ForEachResponseDatagram(results_, [&](std::span<const CheckResult> run) {
    std::vector<std::byte>* out = NextBuffer();
    wire::EncodeResponses(run, out);
    replies->push_back(Reply{std::span<const std::byte>(*out), tag});
  });
}

void MessageProcessor::ReplyToQuery(size_t request_bytes, std::vector<std::byte>* reply,
                                    uint32_t tag, std::vector<Reply>* replies) {
  // A datagram's source may be forged: its reply stays within
  // kMaxReplyFactor, and a query too small for its answer is asked to come
  // again padded (check.capnp, protocol 3). A seqpacket peer is who it is.
  const bool forgeable = door_ == Door::kUdp || door_ == Door::kUnix;
  if (forgeable && reply->size() > wire::kMaxReplyFactor * request_bytes) {
    counters_->queries_padding_required.fetch_add(1, std::memory_order_relaxed);
    const size_t needed = wire::PaddedQueryBytes(reply->size());
    wire::EncodePaddingRequired(static_cast<uint32_t>(needed), reply);
  }
  replies->push_back(Reply{std::span<const std::byte>(*reply), tag});
}

Handled MessageProcessor::Handle(std::span<const std::byte> message, bool truncated, Instant now,
                                 uint32_t tag, std::vector<Reply>* replies) {
  return Handle(message, truncated, now, tag, replies, false);
}

Handled MessageProcessor::Handle(std::span<const std::byte> message, bool truncated, Instant now,
                                 uint32_t tag, std::vector<Reply>* replies, bool source_loopback) {
  if (echo_) {
    replies->push_back(Reply{message, tag});
    return Handled::kAnswered;
  }
  if (truncated) {
    ReplyError(Status::kMalformed,
               "message larger than " + std::to_string(wire::kMaxDatagramBytes) + " bytes", tag,
               replies);
    return Handled::kAnswered;
  }
  why_.clear();
  Status status = reader_.Decode(message, &why_);
  if (status != Status::kOk) {
    ReplyError(status, why_.empty() ? std::string(StatusName(status)) : why_, tag, replies);
    return Handled::kAnswered;
  }
  switch (reader_.kind()) {
    case wire::MessageKind::kChecks:
      break;
    case wire::MessageKind::kStatusRequest: {
      std::vector<std::byte>* out = NextBuffer();
      wire::StatusReport report = cluster_ != nullptr
                                      ? cluster_->Status(now)
                                      : SingleNodeStatus(limiter_, identity_, *counters_, now,
                                                         overrides_, adaptive_, snapshots_);
      if (rules_ != nullptr) rules_->AppendTo(&report);
      wire::EncodeStatusResponse(report, out);
      ReplyToQuery(message.size(), out, tag, replies);
      return Handled::kAnswered;
    }
    case wire::MessageKind::kOwnerRequest: {
      std::vector<std::byte>* out = NextBuffer();
      const wire::OwnerQuery& query = reader_.owner_query();
      wire::EncodeOwnerResponse(
          cluster_ != nullptr ? cluster_->Owner(query, now) : SingleNodeOwner(query), out);
      ReplyToQuery(message.size(), out, tag, replies);
      return Handled::kAnswered;
    }
    case wire::MessageKind::kDescriptorCheck: {
      if (!reader_.descriptor_query_error().empty() || descriptors_ == nullptr) {
        wire::DescriptorReport report;
        report.request_id = reader_.descriptor_query().request_id;
        if (!reader_.descriptor_query_error().empty()) {
          report.status = Status::kInvalidArgument;
          report.error = reader_.descriptor_query_error();
        } else {
          report.status = Status::kUnavailable;
          report.error = kNoRulesDoors;
        }
        std::vector<std::byte>* out = NextBuffer();
        wire::EncodeDescriptorCheckResponse(report, out);
        ReplyToQuery(message.size(), out, tag, replies);
        return Handled::kAnswered;
      }
      return Handled::kForRules;
    }
    case wire::MessageKind::kLimitWrite:
      // Any local or remote process can send UDP; the Unix doors' file mode
      // already says who may connect (limit_door.h).
      HandleLimitWrite(message.size(), door_ != Door::kUdp || source_loopback, now, tag, replies);
      return Handled::kAnswered;
    case wire::MessageKind::kSignalReport:
      // A report moves a limit everyone shares: taken where a limit write
      // would be (the Unix doors, loopback UDP).
      HandleSignalReport(message.size(), door_ != Door::kUdp || source_loopback, tag, replies);
      return Handled::kAnswered;
    case wire::MessageKind::kLimitGet:
      HandleLimitGet(message.size(), tag, replies);
      return Handled::kAnswered;
    case wire::MessageKind::kLimitList:
      HandleLimitList(message.size(), tag, replies);
      return Handled::kAnswered;
    case wire::MessageKind::kResponses:
    case wire::MessageKind::kLimitWriteResponse:
    case wire::MessageKind::kSignalReportResponse:
    case wire::MessageKind::kLimitOverridesResponse:
    case wire::MessageKind::kDescriptorCheckResponse:
    case wire::MessageKind::kStatusResponse:
    case wire::MessageKind::kOwnerResponse:
    case wire::MessageKind::kPaddingRequired:
      counters_->malformed.fetch_add(1, std::memory_order_relaxed);
      return Handled::kAnswered;
  }
  if (keys_ != nullptr) keys_->Offer(reader_.checks());
  // The Node decides them: the door hands it the checks decoded here
  // (cluster_checks(), Node::OnClientChecks), and it applies the same reply
  // bound.
  if (cluster_ != nullptr) return Handled::kForCluster;
  if (!wire::ResultsFitReplyFactor(reader_.checks().size(), message.size())) {
    // Empty structs: one error, nothing decided, nothing amplified.
    ReplyError(Status::kMalformed,
               std::to_string(reader_.checks().size()) + " checks in " +
                   std::to_string(message.size()) + " bytes",
               tag, replies);
    return Handled::kAnswered;
  }
  // One batch per datagram: results in request order, each shard locked
  // once; explicit overrides replace the callers' limits first, as a
  // cluster's entry node does.
  if (overrides_ != nullptr && overrides_->Apply(reader_.checks(), &overridden_)) {
    limiter_->CheckBatch(overridden_, now, &results_);
  } else {
    limiter_->CheckBatch(reader_.checks(), now, &results_);
  }
  if (metrics_ != nullptr) {
    // From receipt (`now`, read when the datagram came in) to decided, as in
    // cluster mode.
    const int64_t decided_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
    metrics_->ObserveLatency(
        door_, static_cast<uint64_t>(std::max<int64_t>(0, decided_ns - now.monotonic.count())));
    metrics_->CountResults(door_, results_);
  }
  for (CheckResult& result : results_) {
    if (result.error.size() > kMaxErrorBytes) result.error.resize(kMaxErrorBytes);
  }
  EncodeResults(tag, replies);
  return Handled::kAnswered;
}

const std::string& MessageProcessor::NodeId() const {
  static const std::string kDefault = "tallyd";
  if (cluster_ != nullptr) return cluster_->node_id();
  return identity_ != nullptr ? identity_->node_id : kDefault;
}

template <typename Read>
bool MessageProcessor::ReadOverrides(Read&& read) {
  if (cluster_ != nullptr) {
    cluster_->ReadOverrides(read);
    return true;
  }
  if (overrides_ == nullptr) return false;
  overrides_->ReadLocked(read);
  return true;
}

namespace {

constexpr const char* kNoOverrides = "this tallyd keeps no limit overrides (echo mode)";

tally::Status WriteStatus(crdt::LimitOverrides::MergeResult result, wire::LimitOutcome* outcome) {
  switch (result) {
    case crdt::LimitOverrides::MergeResult::kApplied:
      *outcome = wire::LimitOutcome::kApplied;
      return tally::Status::kOk;
    case crdt::LimitOverrides::MergeResult::kStale:
      *outcome = wire::LimitOutcome::kStale;
      return tally::Status::kOk;
    case crdt::LimitOverrides::MergeResult::kInvalid:
      *outcome = wire::LimitOutcome::kInvalid;
      return tally::Status::kInvalidArgument;
    case crdt::LimitOverrides::MergeResult::kFull:
      *outcome = wire::LimitOutcome::kFull;
      return tally::Status::kOverCapacity;
  }
  return tally::Status::kInternal;
}

}  // namespace

void MessageProcessor::HandleSignalReport(size_t request_bytes, bool may_report, uint32_t tag,
                                          std::vector<Reply>* replies) {
  const wire::SignalReportQuery& query = reader_.signal_report();
  wire::SignalReportReport report;
  report.request_id = query.request_id;
  std::vector<std::byte>* out = NextBuffer();
  auto answer = [&] {
    wire::EncodeSignalReportResponse(report, out);
    ReplyToQuery(request_bytes, out, tag, replies);
  };
  if (!may_report) {
    report.status = tally::Status::kPermissionDenied;
    report.error =
        "signal reports are accepted on tallyd's Unix sockets and from loopback UDP "
        "sources only";
    return answer();
  }
  if (!reader_.signal_report_error().empty()) {
    report.status = tally::Status::kInvalidArgument;
    report.error = reader_.signal_report_error();
    report.outcome = wire::SignalOutcome::kInvalid;
    return answer();
  }
  if (cluster_ == nullptr && adaptive_ == nullptr) {
    report.status = tally::Status::kUnavailable;
    report.error = "no adaptive limits here (echo mode)";
    return answer();
  }
  const core::AdaptiveHost::ReportResult result =
      cluster_ != nullptr
          ? cluster_->ReportSignal(query.domain, query.rule, query.value, query.count)
          : adaptive_->Report(query.domain, query.rule, query.value, query.count);
  switch (result) {
    case core::AdaptiveHost::ReportResult::kAccepted:
      report.outcome = wire::SignalOutcome::kAccepted;
      break;
    case core::AdaptiveHost::ReportResult::kUnknownRule:
      report.status = tally::Status::kInvalidArgument;
      report.outcome = wire::SignalOutcome::kUnknownRule;
      report.error = "no adaptive limit of that name in the domain in the rules in force here";
      break;
    case core::AdaptiveHost::ReportResult::kInvalid:
      report.status = tally::Status::kInvalidArgument;
      report.outcome = wire::SignalOutcome::kInvalid;
      report.error = "value or count out of range for the rule's signal";
      break;
  }
  answer();
}

void MessageProcessor::HandleLimitWrite(size_t request_bytes, bool may_write, Instant now,
                                        uint32_t tag, std::vector<Reply>* replies) {
  const wire::LimitWriteQuery& query = reader_.limit_write();
  wire::LimitWriteReport report;
  report.request_id = query.request_id;
  report.node_id = NodeId();
  std::vector<std::byte>* out = NextBuffer();
  auto answer = [&] {
    wire::EncodeLimitWriteResponse(report, out);
    ReplyToQuery(request_bytes, out, tag, replies);
  };
  if (!may_write) {
    report.status = tally::Status::kPermissionDenied;
    report.error = kWriteRefused;
    return answer();
  }
  if (cluster_ == nullptr && overrides_ == nullptr) {
    report.status = tally::Status::kUnavailable;
    report.error = kNoOverrides;
    return answer();
  }
  crdt::OverrideEntry entry;
  if (!reader_.limit_query_error().empty()) {
    report.error = reader_.limit_query_error();
  } else {
    entry.selector = SelectorFromWire(query.selector);
    if (WriteValueFromWire(query, &entry.value, &report.error)) {
      report.error = crdt::Validate(entry);
    }
  }
  if (!report.error.empty()) {
    report.status = tally::Status::kInvalidArgument;
    report.outcome = wire::LimitOutcome::kInvalid;
    return answer();
  }
  // The answer of a write carries no error text: if even that would break
  // the reply bound, ask for padding before anything is written.
  wire::LimitWriteReport done = report;
  done.outcome = wire::LimitOutcome::kApplied;
  wire::EncodeLimitWriteResponse(done, out);
  const bool forgeable = door_ == Door::kUdp || door_ == Door::kUnix;
  if (forgeable && out->size() > wire::kMaxReplyFactor * request_bytes) {
    return ReplyToQuery(request_bytes, out, tag, replies);
  }
  const crdt::LimitOverrides::MergeResult result =
      cluster_ != nullptr ? cluster_->WriteOverride(entry.selector, entry.value, now)
                          : overrides_->Write(entry.selector, entry.value, now.wall.count());
  report.status = WriteStatus(result, &report.outcome);
  if (result == crdt::LimitOverrides::MergeResult::kFull) {
    report.error = "too many overrides: at most " +
                   std::to_string(crdt::LimitOverrides::kMaxLocalEntries) +
                   " selectors may be written here (removals count until forgotten)";
  } else if (result == crdt::LimitOverrides::MergeResult::kInvalid) {
    report.error = "invalid override";
  }
  answer();
}

void MessageProcessor::HandleLimitGet(size_t request_bytes, uint32_t tag,
                                      std::vector<Reply>* replies) {
  wire::LimitOverridesReport report;
  report.node_id = NodeId();
  crdt::OverrideEntry probe;
  if (!reader_.limit_query_error().empty()) {
    report.error = reader_.limit_query_error();
  } else {
    probe.selector = SelectorFromWire(reader_.limit_get().selector);
    probe.value.removed = true;  // only the selector is checked
    report.error = crdt::Validate(probe);
  }
  if (!report.error.empty()) {
    report.status = tally::Status::kInvalidArgument;
  } else {
    const std::string key = probe.selector.Key();
    const bool have = ReadOverrides([&](const crdt::LimitOverrides& map) {
      if (const crdt::OverrideEntry* e = map.FindEntry(key)) {
        report.overrides.push_back(OverrideReportOf(*e));
      }
    });
    if (!have) {
      report.status = tally::Status::kUnavailable;
      report.error = kNoOverrides;
    }
  }
  std::vector<std::byte>* out = NextBuffer();
  wire::EncodeLimitOverridesResponse(report, out);
  ReplyToQuery(request_bytes, out, tag, replies);
}

void MessageProcessor::HandleLimitList(size_t request_bytes, uint32_t tag,
                                       std::vector<Reply>* replies) {
  wire::LimitOverridesReport report;
  report.node_id = NodeId();
  std::vector<std::byte>* out = NextBuffer();
  if (!reader_.limit_query_error().empty()) {
    report.status = tally::Status::kInvalidArgument;
    report.error = reader_.limit_query_error();
    wire::EncodeLimitOverridesResponse(report, out);
    return ReplyToQuery(request_bytes, out, tag, replies);
  }
  // A page holds what fits the reply bound of this door (3x the request on
  // a datagram door, else one datagram), by the encoder's upper bounds.
  const bool forgeable = door_ == Door::kUdp || door_ == Door::kUnix;
  const size_t budget =
      forgeable ? std::min(wire::kMaxReplyFactor * request_bytes, wire::kMaxDatagramBytes)
                : wire::kMaxDatagramBytes;
  size_t used = 0;
  size_t first_needs = 0;  // the bytes the first live entry needs, when none fit
  std::string last_key;
  const bool have = ReadOverrides([&](const crdt::LimitOverrides& map) {
    map.VisitAfter(
        reader_.limit_list().cursor, [&](const std::string& key, const crdt::OverrideEntry& e) {
          if (e.value.removed) return true;  // a list shows those in force
          // An adaptive rule's limit has no client-protocol selector yet: it
          // shows in /metrics (tally_adaptive_limit), not here.
          if (e.selector.kind == crdt::Selector::Kind::kAdaptive) return true;
          wire::LimitOverrideReport r = OverrideReportOf(e);
          const size_t cost = wire::EncodedLimitOverrideBound(r);
          if (wire::EncodedLimitOverridesEnvelopeBound(report, key.size()) + used + cost > budget) {
            if (report.overrides.empty()) {
              first_needs = wire::EncodedLimitOverridesEnvelopeBound(report, key.size()) + cost;
            }
            report.next_cursor = last_key;
            return false;
          }
          used += cost;
          last_key = key;
          report.overrides.push_back(std::move(r));
          return true;
        });
  });
  if (!have) {
    report.status = tally::Status::kUnavailable;
    report.error = kNoOverrides;
  } else if (first_needs > 0) {
    // Not even one entry fits: the client pads its query (protocol 3).
    counters_->queries_padding_required.fetch_add(1, std::memory_order_relaxed);
    wire::EncodePaddingRequired(static_cast<uint32_t>(wire::PaddedQueryBytes(first_needs)), out);
    replies->push_back(Reply{std::span<const std::byte>(*out), tag});
    return;
  }
  wire::EncodeLimitOverridesResponse(report, out);
  ReplyToQuery(request_bytes, out, tag, replies);
}

}  // namespace tally::io

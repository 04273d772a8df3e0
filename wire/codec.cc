#include "wire/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <algorithm>
#include <cstring>

#include "tally/check.capnp.h"
#include "wire/check_fields.h"

namespace tally::wire {
namespace {

constexpr size_t kWordBytes = sizeof(capnp::word);

tally::Status FromWire(wire::Status s) { return StatusFromWire(s); }

std::string_view AsView(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

kj::ArrayPtr<const kj::byte> AsBytes(std::string_view s) { return AsWireBytes(s); }

// Serializes a single- or multi-segment builder into `out`.
void Flatten(capnp::MessageBuilder& builder, std::vector<std::byte>* out) {
  size_t words = capnp::computeSerializedSizeInWords(builder);
  out->resize(words * kWordBytes);
  kj::ArrayOutputStream stream(kj::arrayPtr(reinterpret_cast<kj::byte*>(out->data()), out->size()));
  capnp::writeMessage(stream, builder);
}

// A scratch first segment so typical messages build without malloc.
thread_local capnp::word scratch_segment[kMaxDatagramBytes / kWordBytes + 16];

// Builds one ClientMessage of our protocol version in the scratch segment,
// lets `fill` set its body, and serializes it into `out`: the part every
// encoder shares.
template <typename Fill>
void Encode(std::vector<std::byte>* out, Fill&& fill) {
  capnp::MallocMessageBuilder builder(kj::arrayPtr(scratch_segment, std::size(scratch_segment)));
  auto root = builder.initRoot<wire::ClientMessage>();
  root.setVersion(wire::PROTOCOL_VERSION);
  fill(root);
  Flatten(builder, out);
}

wire::Status ToWire(tally::Status s) { return StatusToWire(s); }

std::string AsText(capnp::Text::Reader text) { return std::string(text.cStr(), text.size()); }

// Byte-exact, as AsText reads it back: capnp's implicit conversion from
// std::string goes through c_str() and would cut the text at an embedded NUL.
capnp::Text::Reader TextOf(const std::string& s) {
  return capnp::Text::Reader(s.c_str(), s.size());
}

void ReadStatus(wire::StatusResponse::Reader r, StatusReport* out) {
  out->node_id = AsText(r.getNodeId());
  out->generation = r.getGeneration();
  out->cluster = r.getCluster();
  out->owning = r.getOwning();
  out->not_owning_reason = AsText(r.getNotOwningReason());
  out->key_share = r.getKeyShare();
  out->live_keys = r.getLiveKeys();
  out->partition_policy = AsText(r.getPartitionPolicy());
  out->last_known_members = r.getLastKnownMembers();
  for (auto m : r.getMembers()) {
    MemberReport& member = out->members.emplace_back();
    member.id = AsText(m.getId());
    member.state = AsText(m.getState());
    member.incarnation = m.getIncarnation();
    member.generation = m.getGeneration();
    member.address = AsText(m.getAddress());
    member.clock_offset_ms = m.getClockOffsetMs();
    member.rtt_ms = m.getRttMs();
    member.rules_digest = AsText(m.getRulesDigest());
  }
  out->members_truncated = r.getMembersTruncated();
  for (auto c : r.getCounters()) out->counters.emplace_back(AsText(c.getName()), c.getValue());
  out->gossip_address = AsText(r.getGossipAddress());
  out->uptime_ms = r.getUptimeMs();
  out->cluster_name = AsText(r.getClusterName());
  out->peer_auth = AsText(r.getPeerAuth());
  for (auto id : r.getKeyIds()) out->key_ids.push_back(AsText(id));
  out->keyring_error = AsText(r.getKeyringError());
  out->rules_digest = AsText(r.getRulesDigest());
  out->rules_error = AsText(r.getRulesError());
}

// Rough encoded size of one member entry (struct + four texts, padded).
size_t MemberBound(const MemberReport& m) {
  auto text = [](size_t n) { return (n + 1 + kWordBytes - 1) / kWordBytes * kWordBytes; };
  return 9 * kWordBytes + text(m.id.size()) + text(m.state.size()) + text(m.address.size()) +
         text(m.rules_digest.size());
}

uint8_t UnitNumber(wire::RateLimitUnit unit) {
  const auto v = static_cast<uint16_t>(unit);
  return v > 0xFF ? 0xFF : static_cast<uint8_t>(v);  // unknown to us: not a unit
}

RateCode CodeFromWire(wire::RateLimitCode code) {
  const auto v = static_cast<uint16_t>(code);
  return v <= 2 ? static_cast<RateCode>(v) : RateCode::kUnknown;
}

// Reads a query, checking the bounds before copying: a query over them
// keeps only its id and `*error` says why.
void ReadDescriptorQuery(wire::DescriptorCheckRequest::Reader r, DescriptorQuery* out,
                         std::string* error) {
  out->request_id = r.getRequestId();
  auto descriptors = r.getDescriptors();
  if (descriptors.size() > kMaxQueryDescriptors) {
    *error = "more than " + std::to_string(kMaxQueryDescriptors) + " descriptors";
    return;
  }
  for (auto d : descriptors) {
    if (d.getEntries().size() > kMaxQueryEntries) {
      *error = "a descriptor has more than " + std::to_string(kMaxQueryEntries) + " entries";
      return;
    }
  }
  out->domain = AsText(r.getDomain());
  out->hits_addend = r.getHitsAddend();
  out->descriptors.reserve(descriptors.size());
  for (auto d : descriptors) {
    QueryDescriptor& descriptor = out->descriptors.emplace_back();
    descriptor.entries.reserve(d.getEntries().size());
    for (auto e : d.getEntries()) {
      descriptor.entries.push_back({AsText(e.getKey()), AsText(e.getValue())});
    }
    if (d.hasLimit()) {
      descriptor.has_limit = true;
      descriptor.requests_per_unit = d.getLimit().getRequestsPerUnit();
      descriptor.unit = UnitNumber(d.getLimit().getUnit());
    }
  }
}

void ReadDescriptorReport(wire::DescriptorCheckResponse::Reader r, DescriptorReport* out) {
  out->request_id = r.getRequestId();
  out->status = FromWire(r.getStatus());
  out->error = AsText(r.getError());
  out->overall_code = CodeFromWire(r.getOverallCode());
  out->results.reserve(r.getResults().size());
  for (auto w : r.getResults()) {
    DescriptorOutcome& o = out->results.emplace_back();
    o.code = CodeFromWire(w.getCode());
    o.has_limit = w.getHasLimit();
    o.limit = w.getLimit();
    o.unit = UnitNumber(w.getUnit());
    o.name = AsText(w.getName());
    o.remaining = w.getRemaining();
    o.retry_after_ms = w.getRetryAfterMs();
    o.reset_after_ms = w.getResetAfterMs();
  }
}

size_t TextBound(size_t bytes) { return (bytes + 1 + kWordBytes - 1) / kWordBytes * kWordBytes; }

// Reads a selector, checking the entry bound before copying. False with
// `*error` for none, an unknown form, or too many entries.
bool ReadLimitSelector(bool has, wire::LimitSelector::Reader r, LimitSelectorValue* out,
                       std::string* error) {
  if (!has) {
    *error = "no selector";
    return false;
  }
  switch (r.which()) {
    case wire::LimitSelector::DESCRIPTOR: {
      auto d = r.getDescriptor();
      auto entries = d.getEntries();
      if (entries.size() > kMaxLimitSelectorEntries) {
        *error =
            "a selector has more than " + std::to_string(kMaxLimitSelectorEntries) + " entries";
        return false;
      }
      out->is_key = false;
      out->domain = AsText(d.getDomain());
      out->entries.reserve(entries.size());
      for (auto e : entries) out->entries.emplace_back(AsText(e.getKey()), AsText(e.getValue()));
      return true;
    }
    case wire::LimitSelector::KEY: {
      auto k = r.getKey();
      out->is_key = true;
      out->user_id = std::string(AsView(k.getUserId()));
      out->endpoint = std::string(AsView(k.getEndpoint()));
      out->window_ms = k.getWindowMs();
      return true;
    }
  }
  *error = "a selector of an unknown form (newer protocol?)";
  return false;
}

void FillLimitSelector(const LimitSelectorValue& s, wire::LimitSelector::Builder w) {
  if (s.is_key) {
    auto k = w.initKey();
    k.setUserId(AsBytes(s.user_id));
    k.setEndpoint(AsBytes(s.endpoint));
    k.setWindowMs(s.window_ms);
    return;
  }
  auto d = w.initDescriptor();
  d.setDomain(TextOf(s.domain));
  auto entries = d.initEntries(static_cast<unsigned>(s.entries.size()));
  for (size_t i = 0; i < s.entries.size(); ++i) {
    entries[static_cast<unsigned>(i)].setKey(TextOf(s.entries[i].first));
    entries[static_cast<unsigned>(i)].setValue(TextOf(s.entries[i].second));
  }
}

LimitOutcome OutcomeFromWire(wire::LimitWriteOutcome o) {
  const auto v = static_cast<uint16_t>(o);
  return v <= 4 ? static_cast<LimitOutcome>(v) : LimitOutcome::kNone;
}

SignalOutcome SignalOutcomeFromWire(wire::SignalReportOutcome o) {
  const auto v = static_cast<uint16_t>(o);
  return v <= 3 ? static_cast<SignalOutcome>(v) : SignalOutcome::kNone;
}

void ReadLimitOverridesReport(wire::LimitOverridesResponse::Reader r, LimitOverridesReport* out) {
  out->status = FromWire(r.getStatus());
  out->error = AsText(r.getError());
  out->next_cursor = std::string(AsView(r.getNextCursor()));
  out->node_id = AsText(r.getNodeId());
  auto list = r.getOverrides();
  out->overrides.reserve(list.size());
  for (auto w : list) {
    LimitOverrideReport& o = out->overrides.emplace_back();
    std::string ignored;
    // An answer's selector out of our bounds reads as an empty one.
    if (!ReadLimitSelector(w.hasSelector(), w.getSelector(), &o.selector, &ignored)) {
      o.selector = LimitSelectorValue{};
    }
    o.removed = w.getRemoved();
    o.limit = w.getLimit();
    o.window_ms = w.getWindowMs();
    o.updated_ms = w.getUpdatedMs();
  }
}

}  // namespace

void ClientMessageReader::ClearLimits() {
  limit_write_ = LimitWriteQuery{};
  limit_get_ = LimitGetQuery{};
  limit_list_ = LimitListQuery{};
  limit_query_error_.clear();
  limit_write_report_ = LimitWriteReport{};
  limit_overrides_report_ = LimitOverridesReport{};
  signal_report_ = SignalReportQuery{};
  signal_report_error_.clear();
  signal_report_report_ = SignalReportReport{};
}

tally::Status ClientMessageReader::Decode(std::span<const std::byte> bytes, std::string* why) {
  checks_.clear();
  responses_.clear();
  status_ = StatusReport{};
  owner_query_ = OwnerQuery{};
  owner_report_ = OwnerReport{};
  padding_required_bytes_ = 0;
  descriptor_query_ = DescriptorQuery{};
  descriptor_query_error_.clear();
  descriptor_report_ = DescriptorReport{};
  ClearLimits();
  version_ = 0;
  auto fail = [why](tally::Status status, std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return status;
  };
  if (bytes.empty()) return fail(tally::Status::kMalformed, "empty message");
  if (bytes.size() % kWordBytes != 0) {
    return fail(tally::Status::kMalformed, "message size is not a multiple of 8 bytes");
  }
  if (bytes.size() > kMaxDatagramBytes + kWordBytes) {
    return fail(tally::Status::kMalformed, "message too large");
  }
  const auto* words = reinterpret_cast<const capnp::word*>(bytes.data());
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    aligned_.resize(bytes.size() / kWordBytes);
    std::memcpy(aligned_.data(), bytes.data(), bytes.size());
    words = reinterpret_cast<const capnp::word*>(aligned_.data());
  }
  capnp::ReaderOptions options;
  // Generous for honest messages, tight against pointer-aliasing amplification.
  options.traversalLimitInWords = 4 * (bytes.size() / kWordBytes) + 64;
  options.nestingLimit = 8;
  try {
    capnp::FlatArrayMessageReader reader(kj::arrayPtr(words, bytes.size() / kWordBytes), options);
    auto root = reader.getRoot<wire::ClientMessage>();
    version_ = root.getVersion();
    if (version_ == 0) return fail(tally::Status::kMalformed, "missing protocol version");
    switch (root.which()) {
      case wire::ClientMessage::CHECKS: {
        kind_ = MessageKind::kChecks;
        auto list = root.getChecks();
        checks_.reserve(list.size());
        for (auto c : list) {
          CheckRequestRef ref;
          ref.request_id = c.getRequestId();
          ref.user_id = AsView(c.getUserId());
          ref.endpoint = AsView(c.getEndpoint());
          ref.limit = c.getLimit();
          ref.window_ms = c.getWindowMs();
          ref.hits = c.getHits();
          checks_.push_back(ref);
        }
        return tally::Status::kOk;
      }
      case wire::ClientMessage::RESPONSES: {
        kind_ = MessageKind::kResponses;
        auto list = root.getResponses();
        responses_.reserve(list.size());
        for (auto r : list) {
          CheckResult result;
          result.request_id = r.getRequestId();
          result.status = FromWire(r.getStatus());
          result.allowed = r.getAllowed();
          result.remaining = r.getRemaining();
          result.retry_after_ms = r.getRetryAfterMs();
          result.reset_after_ms = r.getResetAfterMs();
          result.limit = r.getLimit();
          if (r.hasError()) result.error = r.getError().cStr();
          responses_.push_back(std::move(result));
        }
        return tally::Status::kOk;
      }
      case wire::ClientMessage::STATUS_REQUEST:
      case wire::ClientMessage::PADDED_STATUS_REQUEST:
        kind_ = MessageKind::kStatusRequest;
        return tally::Status::kOk;
      case wire::ClientMessage::STATUS_RESPONSE: {
        kind_ = MessageKind::kStatusResponse;
        ReadStatus(root.getStatusResponse(), &status_);
        return tally::Status::kOk;
      }
      case wire::ClientMessage::OWNER_REQUEST: {
        kind_ = MessageKind::kOwnerRequest;
        auto q = root.getOwnerRequest();
        owner_query_.user_id = std::string(AsView(q.getUserId()));
        owner_query_.endpoint = std::string(AsView(q.getEndpoint()));
        owner_query_.window_ms = q.getWindowMs();
        return tally::Status::kOk;
      }
      case wire::ClientMessage::PADDING_REQUIRED:
        kind_ = MessageKind::kPaddingRequired;
        padding_required_bytes_ = root.getPaddingRequired().getRequestBytes();
        return tally::Status::kOk;
      case wire::ClientMessage::OWNER_RESPONSE: {
        kind_ = MessageKind::kOwnerResponse;
        auto r = root.getOwnerResponse();
        owner_report_.status = FromWire(r.getStatus());
        owner_report_.error = AsText(r.getError());
        owner_report_.node_id = AsText(r.getNodeId());
        for (auto id : r.getPreferenceList()) owner_report_.preference_list.push_back(id.cStr());
        owner_report_.state_hash = r.getStateHash();
        owner_report_.holds_key = r.getHoldsKey();
        return tally::Status::kOk;
      }
      case wire::ClientMessage::DESCRIPTOR_CHECK:
        kind_ = MessageKind::kDescriptorCheck;
        ReadDescriptorQuery(root.getDescriptorCheck(), &descriptor_query_,
                            &descriptor_query_error_);
        return tally::Status::kOk;
      case wire::ClientMessage::DESCRIPTOR_CHECK_RESPONSE:
        kind_ = MessageKind::kDescriptorCheckResponse;
        ReadDescriptorReport(root.getDescriptorCheckResponse(), &descriptor_report_);
        return tally::Status::kOk;
      case wire::ClientMessage::LIMIT_WRITE: {
        kind_ = MessageKind::kLimitWrite;
        auto q = root.getLimitWrite();
        limit_write_.request_id = q.getRequestId();
        if (!ReadLimitSelector(q.hasSelector(), q.getSelector(), &limit_write_.selector,
                               &limit_query_error_)) {
          limit_write_.selector = LimitSelectorValue{};
          return tally::Status::kOk;
        }
        limit_write_.remove = q.getRemove();
        limit_write_.limit = q.getLimit();
        limit_write_.unit = UnitNumber(q.getUnit());
        limit_write_.window_ms = q.getWindowMs();
        return tally::Status::kOk;
      }
      case wire::ClientMessage::SIGNAL_REPORT: {
        kind_ = MessageKind::kSignalReport;
        auto q = root.getSignalReport();
        signal_report_.request_id = q.getRequestId();
        const capnp::Text::Reader domain = q.getDomain(), rule = q.getRule();
        if (domain.size() > kMaxSignalNameBytes || rule.size() > kMaxSignalNameBytes) {
          signal_report_error_ = "domain or rule longer than 256 bytes";
          return tally::Status::kOk;
        }
        signal_report_.domain = AsText(domain);
        signal_report_.rule = AsText(rule);
        signal_report_.value = q.getValue();
        signal_report_.count = q.getCount() == 0 ? 1 : q.getCount();
        return tally::Status::kOk;
      }
      case wire::ClientMessage::SIGNAL_REPORT_RESPONSE: {
        kind_ = MessageKind::kSignalReportResponse;
        auto r = root.getSignalReportResponse();
        signal_report_report_.request_id = r.getRequestId();
        signal_report_report_.status = FromWire(r.getStatus());
        signal_report_report_.error = AsText(r.getError());
        signal_report_report_.outcome = SignalOutcomeFromWire(r.getOutcome());
        return tally::Status::kOk;
      }
      case wire::ClientMessage::LIMIT_WRITE_RESPONSE: {
        kind_ = MessageKind::kLimitWriteResponse;
        auto r = root.getLimitWriteResponse();
        limit_write_report_.request_id = r.getRequestId();
        limit_write_report_.status = FromWire(r.getStatus());
        limit_write_report_.error = AsText(r.getError());
        limit_write_report_.outcome = OutcomeFromWire(r.getOutcome());
        limit_write_report_.node_id = AsText(r.getNodeId());
        return tally::Status::kOk;
      }
      case wire::ClientMessage::LIMIT_GET: {
        kind_ = MessageKind::kLimitGet;
        auto q = root.getLimitGet();
        if (!ReadLimitSelector(q.hasSelector(), q.getSelector(), &limit_get_.selector,
                               &limit_query_error_)) {
          limit_get_.selector = LimitSelectorValue{};
        }
        return tally::Status::kOk;
      }
      case wire::ClientMessage::LIMIT_LIST: {
        kind_ = MessageKind::kLimitList;
        auto cursor = root.getLimitList().getCursor();
        if (cursor.size() > kMaxLimitCursorBytes) {
          limit_query_error_ =
              "cursor longer than " + std::to_string(kMaxLimitCursorBytes) + " bytes";
        } else {
          limit_list_.cursor = std::string(AsView(cursor));
        }
        return tally::Status::kOk;
      }
      case wire::ClientMessage::LIMIT_OVERRIDES_RESPONSE:
        kind_ = MessageKind::kLimitOverridesResponse;
        ReadLimitOverridesReport(root.getLimitOverridesResponse(), &limit_overrides_report_);
        return tally::Status::kOk;
    }
    return fail(tally::Status::kUnsupportedVersion, "unknown message kind (newer protocol?)");
  } catch (const kj::Exception& e) {
    ClearLimits();
    descriptor_query_ = DescriptorQuery{};
    descriptor_query_error_.clear();
    descriptor_report_ = DescriptorReport{};
    checks_.clear();
    responses_.clear();
    status_ = StatusReport{};
    owner_query_ = OwnerQuery{};
    owner_report_ = OwnerReport{};
    return fail(tally::Status::kMalformed,
                std::string("undecodable: ") + e.getDescription().cStr());
  }
}

void EncodeChecks(std::span<const CheckRequestRef> checks, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto list = root.initChecks(static_cast<unsigned>(checks.size()));
    for (size_t i = 0; i < checks.size(); ++i) FillCheck(checks[i], list[static_cast<unsigned>(i)]);
  });
}

void EncodeResponses(std::span<const CheckResult> responses, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto list = root.initResponses(static_cast<unsigned>(responses.size()));
    for (size_t i = 0; i < responses.size(); ++i) {
      FillResponse(responses[i], list[static_cast<unsigned>(i)]);
    }
  });
}

size_t EncodedCheckBound(size_t user_id_bytes, size_t endpoint_bytes) {
  auto round_up = [](size_t n) { return (n + kWordBytes - 1) / kWordBytes * kWordBytes; };
  // Struct: 4 data words + 2 pointers; each Data blob padded to a word.
  return 6 * kWordBytes + round_up(user_id_bytes) + round_up(endpoint_bytes);
}

size_t EncodedResponseBound(size_t error_bytes) {
  // Struct: 6 data words + 1 pointer; Text adds a NUL before padding.
  return 7 * kWordBytes + (error_bytes + 1 + kWordBytes - 1) / kWordBytes * kWordBytes;
}

bool ResultsFitReplyFactor(size_t checks, size_t request_bytes) {
  // Results of valid checks carry no error text (EncodedResponseBound(0));
  // the error texts of invalid ones are short next to the 48 bytes their
  // checks took.
  return checks <= kMaxReplyFactor * request_bytes / EncodedResponseBound(0);
}

}  // namespace tally::wire

namespace tally::wire {

namespace {

// The largest padded query: a whole number of words within one datagram.
constexpr size_t kMaxQueryBytes = kMaxDatagramBytes / kWordBytes * kWordBytes;

// Encodes a query with `fill(root, 0)`, then again with `fill(root, n)` if
// it came out shorter than `min_bytes` (at most kMaxQueryBytes): `n` bytes of
// padding. A Data blob adds its length rounded up to a word, plus a word for
// the struct holding it, so the result is cut back if that overshoots.
template <typename Fill>
void EncodePaddedQuery(std::vector<std::byte>* out, size_t min_bytes, Fill&& fill) {
  Encode(out, [&](wire::ClientMessage::Builder root) { fill(root, 0); });
  const size_t target = std::min(min_bytes, kMaxQueryBytes);
  if (out->size() >= target) return;
  size_t padding = target - out->size();
  Encode(out, [&](wire::ClientMessage::Builder root) { fill(root, padding); });
  if (out->size() > kMaxQueryBytes) {
    padding -= std::min(padding, out->size() - kMaxQueryBytes);
    Encode(out, [&](wire::ClientMessage::Builder root) { fill(root, padding); });
  }
}

}  // namespace

void EncodeStatusRequest(std::vector<std::byte>* out, size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [](wire::ClientMessage::Builder root, size_t padding) {
    if (padding == 0) {
      root.setStatusRequest();
    } else {
      root.initPaddedStatusRequest().initPadding(static_cast<unsigned>(padding));
    }
  });
}

void EncodeOwnerRequest(const OwnerQuery& query, std::vector<std::byte>* out, size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initOwnerRequest();
    q.setUserId(AsBytes(query.user_id));
    q.setEndpoint(AsBytes(query.endpoint));
    q.setWindowMs(query.window_ms);
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

void EncodePaddingRequired(uint32_t request_bytes, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    root.initPaddingRequired().setRequestBytes(request_bytes);
  });
}

size_t PaddedQueryBytes(size_t reply_bytes) {
  // An eighth more, plus a few words, then whole words.
  const size_t grown = reply_bytes + reply_bytes / 8 + 8 * kWordBytes;
  const size_t bytes = (grown + kMaxReplyFactor - 1) / kMaxReplyFactor;
  return std::min((bytes + kWordBytes - 1) / kWordBytes * kWordBytes, kMaxQueryBytes);
}

std::vector<const MemberReport*> MembersWithOtherRules(const StatusReport& report) {
  std::vector<const MemberReport*> differ;
  const auto self = std::find_if(report.members.begin(), report.members.end(),
                                 [&](const MemberReport& m) { return m.id == report.node_id; });
  if (self == report.members.end() || self->rules_digest.empty() ||
      self->rules_digest == kNoRulesDigest) {
    return differ;
  }
  for (const MemberReport& m : report.members) {
    if (m.state != "alive" && m.state != "suspect") continue;
    if (m.rules_digest == kNoRulesDigest || m.rules_digest == self->rules_digest) continue;
    differ.push_back(&m);
  }
  return differ;
}

void EncodeStatusResponse(const StatusReport& report, std::vector<std::byte>* out) {
  // Everything but the member list is small; members are cut to what fits.
  size_t budget = kMaxDatagramBytes - 4096;
  for (const auto& [name, value] : report.counters) budget -= std::min(budget, 32 + name.size());
  budget -= std::min(budget, report.node_id.size() + report.not_owning_reason.size() +
                                 report.partition_policy.size() + report.gossip_address.size() +
                                 report.cluster_name.size() + report.peer_auth.size() +
                                 report.keyring_error.size() + report.rules_digest.size() +
                                 report.rules_error.size());
  for (const std::string& id : report.key_ids) budget -= std::min(budget, 16 + id.size());
  size_t members = 0;
  for (size_t used = 0; members < report.members.size(); ++members) {
    used += MemberBound(report.members[members]);
    if (used > budget) break;
  }
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initStatusResponse();
    r.setNodeId(TextOf(report.node_id));
    r.setGeneration(report.generation);
    r.setCluster(report.cluster);
    r.setOwning(report.owning);
    r.setNotOwningReason(TextOf(report.not_owning_reason));
    r.setKeyShare(report.key_share);
    r.setLiveKeys(report.live_keys);
    r.setPartitionPolicy(TextOf(report.partition_policy));
    r.setLastKnownMembers(report.last_known_members);
    auto list = r.initMembers(static_cast<unsigned>(members));
    for (size_t i = 0; i < members; ++i) {
      const MemberReport& m = report.members[i];
      auto w = list[static_cast<unsigned>(i)];
      w.setId(TextOf(m.id));
      w.setState(TextOf(m.state));
      w.setIncarnation(m.incarnation);
      w.setGeneration(m.generation);
      w.setAddress(TextOf(m.address));
      w.setClockOffsetMs(m.clock_offset_ms);
      w.setRttMs(m.rtt_ms);
      if (!m.rules_digest.empty()) w.setRulesDigest(TextOf(m.rules_digest));
    }
    r.setMembersTruncated(report.members_truncated || members < report.members.size());
    auto counters = r.initCounters(static_cast<unsigned>(report.counters.size()));
    for (size_t i = 0; i < report.counters.size(); ++i) {
      counters[static_cast<unsigned>(i)].setName(TextOf(report.counters[i].first));
      counters[static_cast<unsigned>(i)].setValue(report.counters[i].second);
    }
    r.setGossipAddress(TextOf(report.gossip_address));
    r.setUptimeMs(report.uptime_ms);
    r.setClusterName(TextOf(report.cluster_name));
    r.setPeerAuth(TextOf(report.peer_auth));
    auto ids = r.initKeyIds(static_cast<unsigned>(report.key_ids.size()));
    for (size_t i = 0; i < report.key_ids.size(); ++i) {
      ids.set(static_cast<unsigned>(i), TextOf(report.key_ids[i]));
    }
    r.setKeyringError(TextOf(report.keyring_error));
    r.setRulesDigest(TextOf(report.rules_digest));
    r.setRulesError(TextOf(report.rules_error));
  });
}

void EncodeOwnerResponse(const OwnerReport& report, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initOwnerResponse();
    r.setStatus(ToWire(report.status));
    if (!report.error.empty()) r.setError(TextOf(report.error));
    r.setNodeId(TextOf(report.node_id));
    auto list = r.initPreferenceList(static_cast<unsigned>(report.preference_list.size()));
    for (size_t i = 0; i < report.preference_list.size(); ++i) {
      list.set(static_cast<unsigned>(i), TextOf(report.preference_list[i]));
    }
    r.setStateHash(report.state_hash);
    r.setHoldsKey(report.holds_key);
  });
}

}  // namespace tally::wire

namespace tally::wire {

void EncodeDescriptorCheck(const DescriptorQuery& query, std::vector<std::byte>* out,
                           size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initDescriptorCheck();
    q.setRequestId(query.request_id);
    q.setDomain(TextOf(query.domain));
    q.setHitsAddend(query.hits_addend);
    auto list = q.initDescriptors(static_cast<unsigned>(query.descriptors.size()));
    for (size_t i = 0; i < query.descriptors.size(); ++i) {
      const QueryDescriptor& d = query.descriptors[i];
      auto w = list[static_cast<unsigned>(i)];
      auto entries = w.initEntries(static_cast<unsigned>(d.entries.size()));
      for (size_t j = 0; j < d.entries.size(); ++j) {
        entries[static_cast<unsigned>(j)].setKey(TextOf(d.entries[j].key));
        entries[static_cast<unsigned>(j)].setValue(TextOf(d.entries[j].value));
      }
      if (d.has_limit) {
        auto limit = w.initLimit();
        limit.setRequestsPerUnit(d.requests_per_unit);
        limit.setUnit(static_cast<wire::RateLimitUnit>(d.unit));
      }
    }
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

void EncodeDescriptorCheckResponse(const DescriptorReport& report, std::vector<std::byte>* out) {
  constexpr size_t kMaxErrorBytes = 512;
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initDescriptorCheckResponse();
    r.setRequestId(report.request_id);
    r.setStatus(ToWire(report.status));
    if (!report.error.empty()) {
      r.setError(
          capnp::Text::Reader(report.error.c_str(), std::min(report.error.size(), kMaxErrorBytes)));
    }
    r.setOverallCode(static_cast<wire::RateLimitCode>(report.overall_code));
    auto list = r.initResults(static_cast<unsigned>(report.results.size()));
    for (size_t i = 0; i < report.results.size(); ++i) {
      const DescriptorOutcome& o = report.results[i];
      auto w = list[static_cast<unsigned>(i)];
      w.setCode(static_cast<wire::RateLimitCode>(o.code));
      w.setHasLimit(o.has_limit);
      w.setLimit(o.limit);
      w.setUnit(static_cast<wire::RateLimitUnit>(o.unit));
      if (!o.name.empty()) {
        w.setName(
            capnp::Text::Reader(o.name.c_str(), std::min(o.name.size(), kMaxResultNameBytes)));
      }
      w.setRemaining(o.remaining);
      w.setRetryAfterMs(o.retry_after_ms);
      w.setResetAfterMs(o.reset_after_ms);
    }
  });
}

size_t EncodedDescriptorQueryBound(const DescriptorQuery& query) {
  // Root struct (2 data words, 3 pointers), its texts, the descriptor list's
  // tag; each descriptor: 2 pointers, a limit (1 word), its entries' tag, and
  // per entry 2 pointers and two texts.
  size_t bytes =
      kMessageOverheadBytes + 5 * kWordBytes + TextBound(query.domain.size()) + kWordBytes;
  for (const QueryDescriptor& d : query.descriptors) {
    bytes += 4 * kWordBytes;
    for (const QueryEntry& e : d.entries) {
      bytes += 2 * kWordBytes + TextBound(e.key.size()) + TextBound(e.value.size());
    }
  }
  return bytes;
}

size_t EncodedDescriptorReportBound(std::span<const size_t> name_bytes, size_t error_bytes) {
  // Root struct (2 data words, 2 pointers), the error, the results' tag; a
  // result is at most 4 data words and 1 pointer, plus its name.
  size_t bytes =
      kMessageOverheadBytes + 5 * kWordBytes + TextBound(std::min<size_t>(error_bytes, 512));
  for (size_t n : name_bytes) bytes += 5 * kWordBytes + TextBound(std::min(n, kMaxResultNameBytes));
  return bytes;
}

}  // namespace tally::wire

namespace tally::wire {

void EncodeLimitWrite(const LimitWriteQuery& query, std::vector<std::byte>* out, size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initLimitWrite();
    q.setRequestId(query.request_id);
    FillLimitSelector(query.selector, q.initSelector());
    q.setRemove(query.remove);
    q.setLimit(query.limit);
    q.setUnit(static_cast<wire::RateLimitUnit>(query.unit));
    q.setWindowMs(query.window_ms);
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

void EncodeLimitGet(const LimitGetQuery& query, std::vector<std::byte>* out, size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initLimitGet();
    FillLimitSelector(query.selector, q.initSelector());
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

void EncodeLimitList(const LimitListQuery& query, std::vector<std::byte>* out, size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initLimitList();
    if (!query.cursor.empty()) q.setCursor(AsBytes(query.cursor));
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

namespace {
constexpr size_t kMaxLimitErrorBytes = 512;
}  // namespace

void EncodeLimitWriteResponse(const LimitWriteReport& report, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initLimitWriteResponse();
    r.setRequestId(report.request_id);
    r.setStatus(ToWire(report.status));
    if (!report.error.empty()) {
      r.setError(capnp::Text::Reader(report.error.c_str(),
                                     std::min(report.error.size(), kMaxLimitErrorBytes)));
    }
    r.setOutcome(static_cast<wire::LimitWriteOutcome>(report.outcome));
    if (!report.node_id.empty()) r.setNodeId(TextOf(report.node_id));
  });
}

void EncodeSignalReport(const SignalReportQuery& query, std::vector<std::byte>* out,
                        size_t min_bytes) {
  EncodePaddedQuery(out, min_bytes, [&](wire::ClientMessage::Builder root, size_t padding) {
    auto q = root.initSignalReport();
    q.setRequestId(query.request_id);
    q.setDomain(TextOf(query.domain));
    q.setRule(TextOf(query.rule));
    q.setValue(query.value);
    q.setCount(query.count);
    if (padding != 0) q.initPadding(static_cast<unsigned>(padding));
  });
}

void EncodeSignalReportResponse(const SignalReportReport& report, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initSignalReportResponse();
    r.setRequestId(report.request_id);
    r.setStatus(ToWire(report.status));
    if (!report.error.empty()) {
      r.setError(capnp::Text::Reader(report.error.c_str(),
                                     std::min(report.error.size(), kMaxLimitErrorBytes)));
    }
    r.setOutcome(static_cast<wire::SignalReportOutcome>(report.outcome));
  });
}

void EncodeLimitOverridesResponse(const LimitOverridesReport& report, std::vector<std::byte>* out) {
  Encode(out, [&](wire::ClientMessage::Builder root) {
    auto r = root.initLimitOverridesResponse();
    r.setStatus(ToWire(report.status));
    if (!report.error.empty()) {
      r.setError(capnp::Text::Reader(report.error.c_str(),
                                     std::min(report.error.size(), kMaxLimitErrorBytes)));
    }
    auto list = r.initOverrides(static_cast<unsigned>(report.overrides.size()));
    for (size_t i = 0; i < report.overrides.size(); ++i) {
      const LimitOverrideReport& o = report.overrides[i];
      auto w = list[static_cast<unsigned>(i)];
      FillLimitSelector(o.selector, w.initSelector());
      w.setRemoved(o.removed);
      w.setLimit(o.limit);
      w.setWindowMs(o.window_ms);
      w.setUpdatedMs(o.updated_ms);
    }
    if (!report.next_cursor.empty()) r.setNextCursor(AsBytes(report.next_cursor));
    if (!report.node_id.empty()) r.setNodeId(TextOf(report.node_id));
  });
}

size_t EncodedLimitOverrideBound(const LimitOverrideReport& entry) {
  // The override (4 data words: `removed` takes a word of its own before
  // the three 64-bit fields; 1 pointer), its selector (1 data word, 1
  // pointer) and the selector's body: a descriptor (2 pointers, the domain,
  // the entries' tag, per entry 2 pointers and two texts) or a key (1 data
  // word, 2 pointers, two blobs).
  size_t bytes = 5 * kWordBytes + 2 * kWordBytes;
  const LimitSelectorValue& s = entry.selector;
  if (s.is_key) {
    bytes += 3 * kWordBytes + TextBound(s.user_id.size()) + TextBound(s.endpoint.size());
  } else {
    bytes += 3 * kWordBytes + TextBound(s.domain.size());
    for (const auto& [k, v] : s.entries) {
      bytes += 2 * kWordBytes + TextBound(k.size()) + TextBound(v.size());
    }
  }
  return bytes;
}

size_t EncodedLimitOverridesEnvelopeBound(const LimitOverridesReport& report, size_t cursor_bytes) {
  // Root struct (1 data word, 4 pointers), the error, the list's tag, the
  // cursor and the node id.
  return kMessageOverheadBytes + 6 * kWordBytes +
         TextBound(std::min(report.error.size(), kMaxLimitErrorBytes)) + TextBound(cursor_bytes) +
         TextBound(report.node_id.size());
}

}  // namespace tally::wire

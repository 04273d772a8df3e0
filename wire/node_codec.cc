#include "wire/node_codec.h"

#include <algorithm>
#include <boost/unordered/unordered_flat_map.hpp>
#include <cstdint>

#include "tally/check.capnp.h"
#include "wire/check_fields.h"

namespace tally::wire {
namespace {

std::string FromData(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

void FillReplicate(const ReplicateValue& v, wire::Replicate::Builder w) {
  w.setSeq(v.seq);
  auto slots = w.initSlots(static_cast<unsigned>(v.slots.size()));
  for (unsigned i = 0; i < v.slots.size(); ++i) {
    // Byte-exact, as ReadReplicate reads it back (a NUL must not cut it).
    const std::string& id = v.slots[i].node_id;
    slots[i].setNodeId(capnp::Text::Reader(id.c_str(), id.size()));
    slots[i].setGeneration(v.slots[i].generation);
  }
  auto counters = w.initCounters(static_cast<unsigned>(v.counters.size()));
  for (unsigned i = 0; i < v.counters.size(); ++i) {
    const CounterValue& c = v.counters[i];
    auto cw = counters[i];
    cw.initKey().setHigh(c.key_high);
    cw.getKey().setLow(c.key_low);
    cw.setBucketMs(c.bucket_ms);
    cw.setSpan(c.span);
    cw.setNewestBucket(c.newest_bucket);
    auto rows = cw.initRows(static_cast<unsigned>(c.rows.size()));
    for (unsigned r = 0; r < c.rows.size(); ++r) {
      rows[r].setSlot(c.rows[r].slot);
      auto counts = rows[r].initCounts(static_cast<unsigned>(c.rows[r].counts.size()));
      for (unsigned k = 0; k < c.rows[r].counts.size(); ++k) counts.set(k, c.rows[r].counts[k]);
    }
  }
}

bool ReadReplicate(wire::Replicate::Reader r, ReplicateValue* v, std::string* why) {
  v->seq = r.getSeq();
  v->slots.clear();
  v->counters.clear();
  auto slots = r.getSlots();
  auto counters = r.getCounters();
  if (slots.size() > kMaxSlotsPerMessage) {
    *why = "too many slots";
    return false;
  }
  if (counters.size() > kMaxCountersPerMessage) {
    *why = "too many counters";
    return false;
  }
  v->slots.reserve(slots.size());
  for (auto s : slots) {
    auto id = s.getNodeId();
    if (id.size() == 0 || id.size() > kMaxSlotIdBytes) {
      *why = "slot with an empty or oversized node id";
      return false;
    }
    v->slots.push_back({std::string(id.begin(), id.size()), s.getGeneration()});
  }
  v->counters.reserve(counters.size());
  for (auto c : counters) {
    CounterValue cv;
    cv.key_high = c.getKey().getHigh();
    cv.key_low = c.getKey().getLow();
    cv.bucket_ms = c.getBucketMs();
    cv.span = c.getSpan();
    cv.newest_bucket = c.getNewestBucket();
    if (cv.bucket_ms == 0 || cv.span == 0 || cv.span > kMaxSpan) {
      *why = "counter with a nonsense geometry";
      return false;
    }
    auto rows = c.getRows();
    if (rows.size() > kMaxRowsPerCounter) {
      *why = "counter with too many rows";
      return false;
    }
    cv.rows.reserve(rows.size());
    for (auto row : rows) {
      CounterValue::Row rv;
      rv.slot = row.getSlot();
      if (rv.slot >= v->slots.size()) {
        *why = "counter row names an unknown slot";
        return false;
      }
      auto counts = row.getCounts();
      if (counts.size() != static_cast<unsigned>(cv.span) + 1) {
        *why = "counter row has the wrong number of buckets";
        return false;
      }
      rv.counts.reserve(counts.size());
      for (uint32_t n : counts) rv.counts.push_back(n);
      cv.rows.push_back(std::move(rv));
    }
    v->counters.push_back(std::move(cv));
  }
  return true;
}

// The base of relative buckets: the earliest cell's start in ms. Returns
// false when the cells cannot travel relative to it (a bucket below zero, a
// start past int64, an offset past 32 bits, a zero width) or would not gain
// (fewer than kMinRelativeDeltaCells).
bool RelativeBase(const std::vector<DeltaCellValue>& cells, int64_t* base_ms) {
  if (cells.size() < kMinRelativeDeltaCells) return false;
  int64_t base = INT64_MAX;
  for (const DeltaCellValue& c : cells) {
    int64_t start_ms = 0;
    if (c.bucket < 0 || c.bucket_ms == 0 ||
        __builtin_mul_overflow(c.bucket, static_cast<int64_t>(c.bucket_ms), &start_ms)) {
      return false;
    }
    base = std::min(base, start_ms);
  }
  // floor(base / width) <= bucket for every cell, as base <= bucket * width.
  for (const DeltaCellValue& c : cells) {
    if (c.bucket - base / c.bucket_ms > UINT32_MAX) return false;
  }
  *base_ms = base;
  return true;
}

// The geometries of compact cells (protocol version 5), each once in the
// order the cells first use them, and each cell's index into them. Returns
// false when the cells cannot travel compact relative to `base_ms`: an
// offset past 16 bits or more than kMaxCompactGeometries geometries.
bool CompactLayout(const std::vector<DeltaCellValue>& cells, int64_t base_ms,
                   std::vector<std::pair<uint32_t, uint16_t>>* geometries,
                   std::vector<uint8_t>* index) {
  geometries->clear();
  index->clear();
  boost::unordered_flat_map<uint64_t, uint8_t> seen;
  for (const DeltaCellValue& c : cells) {
    if (c.bucket - base_ms / c.bucket_ms > UINT16_MAX) return false;
    const uint64_t geometry = static_cast<uint64_t>(c.bucket_ms) << 16 | c.span;
    auto it = seen.find(geometry);
    if (it == seen.end()) {
      if (geometries->size() == kMaxCompactGeometries) return false;
      it = seen.emplace(geometry, static_cast<uint8_t>(geometries->size())).first;
      geometries->emplace_back(c.bucket_ms, c.span);
    }
    index->push_back(it->second);
  }
  return true;
}

void FillDelta(const ReplicateDeltaValue& v, wire::ReplicateDelta::Builder w) {
  w.setSeq(v.seq);
  auto slot = w.initSlot();
  slot.setNodeId(capnp::Text::Reader(v.slot.node_id.c_str(), v.slot.node_id.size()));
  slot.setGeneration(v.slot.generation);
  int64_t base_ms = 0;
  const bool relative = v.relative_buckets && RelativeBase(v.cells, &base_ms);
  if (relative) {
    w.setRelativeBuckets(true);
    w.setBucketBaseMs(base_ms);
  }
  std::vector<std::pair<uint32_t, uint16_t>> geometries;
  std::vector<uint8_t> index;
  if (relative && v.compact_cells && CompactLayout(v.cells, base_ms, &geometries, &index)) {
    auto g = w.initGeometries(static_cast<unsigned>(geometries.size()));
    for (unsigned i = 0; i < geometries.size(); ++i) {
      g[i].setBucketMs(geometries[i].first);
      g[i].setSpan(geometries[i].second);
    }
    auto cells = w.initCompactCells(static_cast<unsigned>(v.cells.size()));
    for (unsigned i = 0; i < v.cells.size(); ++i) {
      const DeltaCellValue& c = v.cells[i];
      cells[i].setKeyHigh(c.key_high);
      cells[i].setKeyLow(c.key_low);
      cells[i].setCount(c.count);
      cells[i].setBucketOffset(static_cast<uint16_t>(c.bucket - base_ms / c.bucket_ms));
      cells[i].setGeometry(index[i]);
    }
    return;
  }
  auto cells = w.initCells(static_cast<unsigned>(v.cells.size()));
  for (unsigned i = 0; i < v.cells.size(); ++i) {
    const DeltaCellValue& c = v.cells[i];
    cells[i].setKeyHigh(c.key_high);
    cells[i].setKeyLow(c.key_low);
    if (relative) {
      cells[i].setBucketOffset(static_cast<uint32_t>(c.bucket - base_ms / c.bucket_ms));
    } else {
      cells[i].setBucket(c.bucket);
    }
    cells[i].setCount(c.count);
    cells[i].setBucketMs(c.bucket_ms);
    cells[i].setSpan(c.span);
  }
}

bool ReadDelta(wire::ReplicateDelta::Reader r, ReplicateDeltaValue* v, std::string* why) {
  v->seq = r.getSeq();
  v->cells.clear();
  auto id = r.getSlot().getNodeId();
  if (id.size() == 0 || id.size() > kMaxSlotIdBytes) {
    *why = "delta with an empty or oversized node id";
    return false;
  }
  v->slot = SlotValue{std::string(id.begin(), id.size()), r.getSlot().getGeneration()};
  auto cells = r.getCells();
  if (cells.size() > kMaxDeltaCellsPerMessage) {
    *why = "too many delta cells";
    return false;
  }
  v->relative_buckets = r.getRelativeBuckets();
  const int64_t base_ms = r.getBucketBaseMs();
  if (v->relative_buckets && base_ms < 0) {
    *why = "relative delta with a negative base";
    return false;
  }
  // A relative cell's bucket; false when it would pass int64 (base / width
  // <= INT64_MAX / 1 and the offset < 2^32: only at the very top; nearness
  // to now is the receiver's check).
  auto rebuild = [&](DeltaCellValue* cell, uint32_t offset) {
    const int64_t first = base_ms / cell->bucket_ms;
    if (first > INT64_MAX - static_cast<int64_t>(offset)) {
      *why = "relative delta cell past the last bucket";
      return false;
    }
    cell->bucket = first + offset;
    return true;
  };
  auto sane = [&](const DeltaCellValue& cell) {
    if (cell.bucket_ms == 0 || cell.span == 0 || cell.span > kMaxSpan) {
      *why = "delta cell with a nonsense geometry";
      return false;
    }
    return true;
  };
  auto compact = r.getCompactCells();
  v->compact_cells = compact.size() > 0;
  if (v->compact_cells) {
    // Protocol version 5: a cell's geometry by index, its bucket relative.
    auto geometries = r.getGeometries();
    if (cells.size() > 0 || !v->relative_buckets || compact.size() > kMaxDeltaCellsPerMessage ||
        geometries.size() == 0 || geometries.size() > kMaxCompactGeometries) {
      *why = "compact delta cells beside cells, absolute, or with no or too many geometries";
      return false;
    }
    v->cells.reserve(compact.size());
    for (auto c : compact) {
      if (c.getGeometry() >= geometries.size()) {
        *why = "compact delta cell with no geometry";
        return false;
      }
      auto g = geometries[c.getGeometry()];
      DeltaCellValue cell{c.getKeyHigh(), c.getKeyLow(),   0,
                          c.getCount(),   g.getBucketMs(), g.getSpan()};
      if (!sane(cell) || !rebuild(&cell, c.getBucketOffset())) return false;
      v->cells.push_back(cell);
    }
  } else {
    v->cells.reserve(cells.size());
    for (auto c : cells) {
      DeltaCellValue cell{c.getKeyHigh(), c.getKeyLow(),   c.getBucket(),
                          c.getCount(),   c.getBucketMs(), c.getSpan()};
      if (!sane(cell)) return false;
      // The `bucket` field of a relative cell is ignored.
      if (v->relative_buckets && !rebuild(&cell, c.getBucketOffset())) return false;
      v->cells.push_back(cell);
    }
  }
  // Only what FillDelta writes relative (compact), so a read message
  // re-encodes relative (compact) too.
  int64_t encoder_base_ms = 0;
  if (v->relative_buckets && !RelativeBase(v->cells, &encoder_base_ms)) {
    *why = "relative delta cells the encoder would send absolute";
    return false;
  }
  std::vector<std::pair<uint32_t, uint16_t>> geometries;
  std::vector<uint8_t> index;
  if (v->compact_cells && !CompactLayout(v->cells, encoder_base_ms, &geometries, &index)) {
    *why = "compact delta cells the encoder would send in full";
    return false;
  }
  return true;
}

// A result that no correct decider produces (tally/types.h's invariants).
bool SaneResult(const tally::CheckResult& r, std::string* why) {
  auto fail = [why](const char* reason) {
    *why = reason;
    return false;
  };
  if (r.status != tally::Status::kOk && r.allowed) return fail("result allowed with an error");
  if (r.status != tally::Status::kOk) return true;  // carries the request's fields as they were
  if (r.limit > tally::kMaxLimit) return fail("result limit out of range");
  if (r.remaining > r.limit) return fail("result remaining exceeds its limit");
  if (r.allowed && r.retry_after_ms != 0) return fail("allowed result with a retry delay");
  if (r.retry_after_ms > kMaxResultDelayMs && r.retry_after_ms != tally::kNeverFits) {
    return fail("result retry delay out of range");
  }
  if (r.reset_after_ms > kMaxResultDelayMs) return fail("result reset delay out of range");
  return true;
}

// Byte-exact text (Data, so an embedded NUL survives), within the bound.
bool ReadOverrideText(capnp::Data::Reader data, std::string* out, std::string* why) {
  if (data.size() > kMaxOverrideTextBytes) {
    *why = "limit override with an oversized text";
    return false;
  }
  *out = FromData(data);
  return true;
}

bool ReadOverrides(capnp::List<LimitOverride>::Reader list, std::vector<LimitOverrideValue>* out,
                   std::string* why) {
  if (list.size() > kMaxOverridesPerMessage) {
    *why = "too many limit overrides";
    return false;
  }
  out->reserve(list.size());
  for (auto r : list) {
    LimitOverrideValue o;
    o.kind = r.getKind();
    if (!ReadOverrideText(r.getDomain(), &o.domain, why) ||
        !ReadOverrideText(r.getUser(), &o.user, why) ||
        !ReadOverrideText(r.getEndpoint(), &o.endpoint, why) ||
        !ReadOverrideText(r.getRule(), &o.rule, why)) {
      return false;
    }
    auto entries = r.getEntries();
    if (entries.size() > kMaxOverrideEntries) {
      *why = "limit override with too many descriptor entries";
      return false;
    }
    for (auto e : entries) {
      std::pair<std::string, std::string> kv;
      if (!ReadOverrideText(e.getKey(), &kv.first, why) ||
          !ReadOverrideText(e.getValue(), &kv.second, why)) {
        return false;
      }
      o.entries.push_back(std::move(kv));
    }
    o.selector_window_ms = r.getSelectorWindowMs();
    o.removed = r.getRemoved();
    o.limit = r.getLimit();
    o.window_ms = r.getWindowMs();
    o.stamp_wall_ms = r.getStampWallMs();
    o.stamp_logical = r.getStampLogical();
    o.writer = r.getWriter();
    out->push_back(std::move(o));
  }
  return true;
}

// Only the shape here (sizes, bounds); whether the numbers make sense (finite,
// not negative) is the receiver's to judge and count.
bool ReadAdaptiveReports(capnp::List<AdaptiveReport>::Reader list,
                         std::vector<AdaptiveReportValue>* out, std::string* why) {
  if (list.size() > kMaxAdaptiveReportsPerMessage) {
    *why = "too many adaptive reports";
    return false;
  }
  out->reserve(list.size());
  for (auto r : list) {
    AdaptiveReportValue v;
    if (!ReadOverrideText(r.getDomain(), &v.domain, why) ||
        !ReadOverrideText(r.getRule(), &v.rule, why)) {
      return false;
    }
    v.sum = r.getSum();
    v.count = r.getCount();
    v.max = r.getMax();
    out->push_back(std::move(v));
  }
  return true;
}

}  // namespace

void BuildNodeMessage(const NodeMessageValue& value, NodeMessage::Builder builder) {
  using Kind = NodeMessageValue::Kind;
  switch (value.kind) {
    case Kind::kForward: {
      auto list = builder.initForward(static_cast<unsigned>(value.forwards.size()));
      // The first item carrying each endpoint, for references.
      boost::unordered_flat_map<std::string_view, uint16_t> firsts;
      for (unsigned i = 0; i < value.forwards.size(); ++i) {
        const ForwardValue& f = value.forwards[i];
        list[i].setForwardId(f.forward_id);
        list[i].setHops(f.hops);
        uint16_t ref = 0;
        if (value.shared_endpoints && !f.check.endpoint.empty() && i < UINT16_MAX) {
          auto [at, first] = firsts.try_emplace(f.check.endpoint, static_cast<uint16_t>(i + 1));
          if (!first) ref = at->second;
        }
        list[i].setEndpointOfItem(ref);
        FillCheck(f.check, list[i].initCheck(), /*with_endpoint=*/ref == 0);
      }
      break;
    }
    case Kind::kForwardReply: {
      auto list = builder.initForwardReply(static_cast<unsigned>(value.results.size()));
      for (unsigned i = 0; i < value.results.size(); ++i) {
        list[i].setForwardId(value.results[i].forward_id);
        FillResponse(value.results[i].result, list[i].initResponse());
      }
      break;
    }
    case Kind::kReplicate:
      FillReplicate(value.replicate, builder.initReplicate());
      break;
    case Kind::kStatePush:
      FillReplicate(value.replicate, builder.initStatePush());
      break;
    case Kind::kReplicateAck:
      if (value.ack_seqs.empty()) {
        builder.setReplicateAck(value.ack_seq);
      } else {
        auto seqs = builder.initReplicateAcks(static_cast<unsigned>(value.ack_seqs.size()));
        for (unsigned i = 0; i < value.ack_seqs.size(); ++i) seqs.set(i, value.ack_seqs[i]);
      }
      break;
    case Kind::kReplicateDelta:
      FillDelta(value.delta, builder.initReplicateDelta());
      break;
    case Kind::kDigest: {
      auto d = builder.initDigest();
      d.setIsReply(value.digest_is_reply);
      d.setKeysPaused(value.digest_keys_paused);
      d.setOverridesDigest(value.overrides_digest);
      auto ranges = d.initRanges(static_cast<unsigned>(value.digest.size()));
      for (unsigned i = 0; i < value.digest.size(); ++i) ranges.set(i, value.digest[i]);
      break;
    }
    case Kind::kHandoffRequest:
      builder.setHandoffRequest();
      break;
    case Kind::kHandoffDone:
      builder.setHandoffDone();
      break;
    case Kind::kOverrides: {
      auto list = builder.initOverrides(static_cast<unsigned>(value.overrides.size()));
      for (unsigned i = 0; i < value.overrides.size(); ++i) {
        const LimitOverrideValue& o = value.overrides[i];
        auto b = list[i];
        b.setKind(o.kind);
        b.setDomain(AsWireBytes(o.domain));
        auto entries = b.initEntries(static_cast<unsigned>(o.entries.size()));
        for (unsigned e = 0; e < o.entries.size(); ++e) {
          entries[e].setKey(AsWireBytes(o.entries[e].first));
          entries[e].setValue(AsWireBytes(o.entries[e].second));
        }
        b.setUser(AsWireBytes(o.user));
        b.setEndpoint(AsWireBytes(o.endpoint));
        b.setSelectorWindowMs(o.selector_window_ms);
        b.setRemoved(o.removed);
        b.setLimit(o.limit);
        b.setWindowMs(o.window_ms);
        b.setStampWallMs(o.stamp_wall_ms);
        b.setStampLogical(o.stamp_logical);
        b.setWriter(o.writer);
        if (!o.rule.empty()) b.setRule(AsWireBytes(o.rule));
      }
      break;
    }
    case Kind::kAdaptiveReports: {
      auto list = builder.initAdaptiveReports(static_cast<unsigned>(value.adaptive_reports.size()));
      for (unsigned i = 0; i < value.adaptive_reports.size(); ++i) {
        const AdaptiveReportValue& r = value.adaptive_reports[i];
        auto b = list[i];
        b.setDomain(AsWireBytes(r.domain));
        b.setRule(AsWireBytes(r.rule));
        b.setSum(r.sum);
        b.setCount(r.count);
        b.setMax(r.max);
      }
      break;
    }
  }
}

bool ReadNodeMessage(NodeMessage::Reader reader, NodeMessageValue* value, std::string* why) {
  using Kind = NodeMessageValue::Kind;
  *value = NodeMessageValue{};
  switch (reader.which()) {
    case NodeMessage::FORWARD: {
      value->kind = Kind::kForward;
      auto forwards = reader.getForward();
      if (forwards.size() > kMaxForwardsPerMessage) {
        *why = "too many forwarded checks";
        return false;
      }
      value->forwards.reserve(forwards.size());
      value->shared_endpoints = false;
      size_t key_bytes = 0;
      for (auto f : forwards) {
        ForwardValue fv;
        fv.forward_id = f.getForwardId();
        fv.hops = f.getHops();
        if (fv.hops == 0) {
          *why = "forwarded check with 0 hops";
          return false;
        }
        auto c = f.getCheck();
        fv.check.request_id = c.getRequestId();
        fv.check.user_id = FromData(c.getUserId());
        const uint16_t ref = f.getEndpointOfItem();
        if (ref == 0) {
          fv.check.endpoint = FromData(c.getEndpoint());
        } else {
          // Protocol version 5: an earlier item's endpoint, which that item
          // carries itself and is not empty (what EncodeNodeMessage writes).
          if (c.hasEndpoint() || ref > value->forwards.size() ||
              forwards[ref - 1u].getEndpointOfItem() != 0 ||
              value->forwards[ref - 1u].check.endpoint.empty()) {
            *why = "forwarded check with a bad endpoint reference";
            return false;
          }
          fv.check.endpoint = value->forwards[ref - 1u].check.endpoint;
          value->shared_endpoints = true;
        }
        key_bytes += fv.check.user_id.size() + fv.check.endpoint.size();
        if (key_bytes > kMaxForwardKeyBytesPerMessage) {
          *why = "forwarded checks with too many key bytes";
          return false;
        }
        fv.check.limit = c.getLimit();
        fv.check.window_ms = c.getWindowMs();
        fv.check.hits = c.getHits();
        value->forwards.push_back(std::move(fv));
      }
      return true;
    }
    case NodeMessage::FORWARD_REPLY: {
      value->kind = Kind::kForwardReply;
      auto results = reader.getForwardReply();
      if (results.size() > kMaxResultsPerMessage) {
        *why = "too many forwarded results";
        return false;
      }
      value->results.reserve(results.size());
      for (auto f : results) {
        ForwardResultValue rv;
        rv.forward_id = f.getForwardId();
        auto r = f.getResponse();
        rv.result.request_id = r.getRequestId();
        rv.result.status = StatusFromWire(r.getStatus());
        rv.result.allowed = r.getAllowed();
        rv.result.remaining = r.getRemaining();
        rv.result.retry_after_ms = r.getRetryAfterMs();
        rv.result.reset_after_ms = r.getResetAfterMs();
        rv.result.limit = r.getLimit();
        if (r.hasError()) {
          auto error = r.getError();
          if (error.size() > kMaxResultErrorBytes) {
            *why = "forwarded result with an oversized error";
            return false;
          }
          rv.result.error = std::string(error.begin(), error.size());
        }
        if (!SaneResult(rv.result, why)) return false;
        value->results.push_back(std::move(rv));
      }
      return true;
    }
    case NodeMessage::REPLICATE:
      value->kind = Kind::kReplicate;
      return ReadReplicate(reader.getReplicate(), &value->replicate, why);
    case NodeMessage::STATE_PUSH:
      value->kind = Kind::kStatePush;
      return ReadReplicate(reader.getStatePush(), &value->replicate, why);
    case NodeMessage::REPLICATE_ACK:
      value->kind = Kind::kReplicateAck;
      value->ack_seq = reader.getReplicateAck();
      return true;
    case NodeMessage::DIGEST: {
      value->kind = Kind::kDigest;
      auto d = reader.getDigest();
      value->digest_is_reply = d.getIsReply();
      value->digest_keys_paused = d.getKeysPaused();
      value->overrides_digest = d.getOverridesDigest();
      auto ranges = d.getRanges();
      if (ranges.size() > kMaxDigestRanges) {
        *why = "too many digest ranges";
        return false;
      }
      value->digest.reserve(ranges.size());
      for (uint64_t h : ranges) value->digest.push_back(h);
      return true;
    }
    case NodeMessage::HANDOFF_REQUEST:
      value->kind = Kind::kHandoffRequest;
      return true;
    case NodeMessage::HANDOFF_DONE:
      value->kind = Kind::kHandoffDone;
      return true;
    case NodeMessage::OVERRIDES:
      value->kind = Kind::kOverrides;
      return ReadOverrides(reader.getOverrides(), &value->overrides, why);
    case NodeMessage::ADAPTIVE_REPORTS:
      value->kind = Kind::kAdaptiveReports;
      return ReadAdaptiveReports(reader.getAdaptiveReports(), &value->adaptive_reports, why);
    case NodeMessage::REPLICATE_DELTA:
      value->kind = Kind::kReplicateDelta;
      return ReadDelta(reader.getReplicateDelta(), &value->delta, why);
    case NodeMessage::REPLICATE_ACKS: {
      value->kind = Kind::kReplicateAck;
      auto seqs = reader.getReplicateAcks();
      // Empty: nothing acknowledged, and the encoder would write replicateAck.
      if (seqs.size() == 0 || seqs.size() > kMaxAcksPerMessage) {
        *why = "empty or oversized acknowledgement list";
        return false;
      }
      value->ack_seqs.reserve(seqs.size());
      for (const uint64_t seq : seqs) value->ack_seqs.push_back(seq);
      return true;
    }
  }
  *why = "unknown node message (newer protocol?)";
  return false;
}

size_t EncodedCounterBound(const CounterValue& counter) {
  size_t bytes = 8 * 8;  // struct, key, list pointers
  for (const auto& row : counter.rows) bytes += 24 + 4 * row.counts.size();
  return bytes;
}

size_t EncodedOverrideBound(const LimitOverrideValue& value) {
  size_t bytes =
      15 * 8 + value.domain.size() + value.user.size() + value.endpoint.size() + value.rule.size();
  for (const auto& [k, v] : value.entries) bytes += 4 * 8 + k.size() + v.size();
  return bytes;
}

size_t EncodedAdaptiveReportBound(const AdaptiveReportValue& value) {
  return 8 * 8 + value.domain.size() + value.rule.size();
}

size_t EncodedForwardBound(const tally::CheckRequest& check) {
  auto round_up = [](size_t n) { return (n + 7) / 8 * 8; };
  return 10 * 8 + round_up(check.user_id.size()) + round_up(check.endpoint.size());
}

}  // namespace tally::wire

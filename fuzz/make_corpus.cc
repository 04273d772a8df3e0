// Writes the seed corpus of every fuzz target (fuzz/corpus/<target>/) from
// the real encoders, plus a few edge cases, so that the fuzzers start from
// messages tallyd and its peers actually send. Run by `scripts/fuzz.sh
// --make-corpus`; the output is committed (small: docs/RELIABILITY.md).
#include <capnp/message.h>
#include <capnp/serialize.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "crdt/limit_overrides.h"
#include "daemon/io/stream_frames.h"
#include "fuzz/node_input.h"
#include "membership/message.h"
#include "persist/snapshot.h"
#include "wire/codec.h"
#include "wire/node_codec.h"
#include "wire/peer_codec.h"

namespace {

using namespace tally;
namespace m = tally::membership;
using Bytes = std::vector<std::byte>;

std::filesystem::path g_root;

void Write(const std::string& target, const std::string& name, const Bytes& bytes) {
  std::filesystem::create_directories(g_root / target);
  std::ofstream out(g_root / target / name, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
}

Bytes FromString(const std::string& s) {
  return Bytes(reinterpret_cast<const std::byte*>(s.data()),
               reinterpret_cast<const std::byte*>(s.data()) + s.size());
}

constexpr int64_t kWallMs = 1'700'000'001'000;  // node_fuzz's clock at start
constexpr const char* kN2 = "10.0.0.2:7946";
constexpr const char* kN3 = "10.0.0.3:7946";

// ---------------------------------------------------------------- client

Bytes Checks(const std::vector<CheckRequest>& checks) {
  std::vector<CheckRequestRef> refs(checks.begin(), checks.end());
  Bytes out;
  wire::EncodeChecks(refs, &out);
  return out;
}

void ClientCorpus() {
  const std::string t = "client_codec_fuzz";
  Write(t, "check_one", Checks({{1, "alice", "/api/orders", 100, 60'000, 1}}));
  Write(t, "check_batch",
        Checks({{1, "alice", "/a", 5, 1000, 1},
                {2, "bob", "/b", 10, 60'000, 0},
                {0, "carol", "/c", 1, 86'400'000, 3}}));
  Write(t, "check_empty_list", Checks({}));
  Write(t, "check_long_ids", Checks({{9, std::string(200, 'u'), std::string(300, 'e'), 7, 10, 1}}));
  CheckResult ok{1, Status::kOk, true, 99, 0, 60'000, 100, ""};
  CheckResult denied{2, Status::kOk, false, 0, 1200, 60'000, 5, ""};
  CheckResult err{3, Status::kInvalidArgument, false, 0, 0, 0, 0, "window_ms must be > 0"};
  Bytes out;
  wire::EncodeResponses(std::vector<CheckResult>{ok, denied, err}, &out);
  Write(t, "responses", out);
  wire::EncodeStatusRequest(&out);
  Write(t, "status_request", out);
  wire::EncodeStatusRequest(&out, 600);
  Write(t, "status_request_padded", out);
  wire::EncodePaddingRequired(1208, &out);
  Write(t, "padding_required", out);
  wire::StatusReport report;
  report.node_id = "n1";
  report.generation = 17;
  report.cluster = true;
  report.key_share = 0.33;
  report.live_keys = 12;
  report.partition_policy = "availability";
  report.last_known_members = 3;
  report.members.push_back({"n1", "alive", 1, 17, "127.0.0.1:7946", 0.0, 0.2});
  report.members.push_back({"n2", "suspect", 3, 18, "127.0.0.1:7947"});
  report.counters = {{"checks", 42}, {"forwarded", 7}};
  report.gossip_address = "127.0.0.1:7946";
  report.uptime_ms = 123'456;
  report.rules_digest = "0123456789abcdef0123456789abcdef";
  report.rules_error = "rules/api.yaml:3:5: unknown field 'limit'";
  wire::EncodeStatusResponse(report, &out);
  Write(t, "status_response", out);
  wire::EncodeOwnerRequest(wire::OwnerQuery{"alice", "/api", 60'000}, &out);
  Write(t, "owner_request", out);
  wire::EncodeOwnerResponse(
      wire::OwnerReport{Status::kOk, "", "n2", {"n2", "n3", "n1"}, 0xfeedface, true}, &out);
  Write(t, "owner_response", out);
  wire::DescriptorQuery query;
  query.request_id = 5;
  query.domain = "shop";
  query.hits_addend = 2;
  query.descriptors.push_back({{{"path", "/login"}, {"user", "ann"}}});
  query.descriptors.push_back({{{"tier", "gold"}}, true, 10, 1});
  wire::EncodeDescriptorCheck(query, &out);
  Write(t, "descriptor_check", out);
  wire::EncodeDescriptorCheck(query, &out, 900);
  Write(t, "descriptor_check_padded", out);
  wire::DescriptorReport answer;
  answer.request_id = 5;
  answer.overall_code = wire::RateCode::kOverLimit;
  answer.results.push_back({wire::RateCode::kOverLimit, true, 2, 3, "login_per_user", 0, 900, 900});
  answer.results.push_back({wire::RateCode::kOk, false, 0, 0, "", 0, 0, 0});
  wire::EncodeDescriptorCheckResponse(answer, &out);
  Write(t, "descriptor_check_response", out);
  wire::EncodeDescriptorCheckResponse(
      wire::DescriptorReport{5, Status::kUnavailable, "no rules doors", wire::RateCode::kOk, {}},
      &out);
  Write(t, "descriptor_check_error", out);
  // Protocol 5: runtime limit overrides.
  wire::LimitSelectorValue by_descriptor;
  by_descriptor.domain = "shop";
  by_descriptor.entries = {{"path", "/login"}, {"tier", "gold"}};
  wire::LimitSelectorValue by_key;
  by_key.is_key = true;
  by_key.user_id = "alice";
  by_key.endpoint = "/api";
  by_key.window_ms = 60'000;
  wire::EncodeLimitWrite({7, by_descriptor, false, 10, 2, 0}, &out);
  Write(t, "limit_write_descriptor", out);
  wire::EncodeLimitWrite({8, by_key, false, 3, 0, 0}, &out, 256);
  Write(t, "limit_write_key_padded", out);
  wire::EncodeLimitWrite({9, by_key, true, 0, 0, 0}, &out);
  Write(t, "limit_remove", out);
  wire::EncodeLimitWriteResponse({7, Status::kOk, "", wire::LimitOutcome::kApplied, "n1"}, &out);
  Write(t, "limit_write_response", out);
  wire::EncodeLimitWriteResponse({8, Status::kPermissionDenied,
                                  "limit writes are accepted on tallyd's Unix sockets and from "
                                  "loopback UDP sources only",
                                  wire::LimitOutcome::kNone, "n1"},
                                 &out);
  Write(t, "limit_write_refused", out);
  wire::EncodeSignalReport({11, "api", "backend", 83.25, 120}, &out);
  Write(t, "signal_report", out);
  wire::EncodeSignalReportResponse(
      {11, Status::kInvalidArgument, "no adaptive limit", wire::SignalOutcome::kUnknownRule}, &out);
  Write(t, "signal_report_response", out);
  wire::EncodeLimitGet({by_descriptor}, &out);
  Write(t, "limit_get", out);
  wire::EncodeLimitList({}, &out, 2048);
  Write(t, "limit_list_padded", out);
  wire::EncodeLimitList({std::string("\x02\x05\0\0\0\0\0\0\0alice", 14)}, &out);
  Write(t, "limit_list_cursor", out);
  wire::LimitOverridesReport listed;
  listed.node_id = "n3";
  listed.next_cursor = std::string("\x02\x05\0\0\0\0\0\0\0alice", 14);
  listed.overrides.push_back({by_descriptor, false, 10, 60'000, kWallMs});
  listed.overrides.push_back({by_key, true, 0, 0, kWallMs + 5});
  wire::EncodeLimitOverridesResponse(listed, &out);
  Write(t, "limit_overrides_response", out);
  Write(t, "edge_empty", {});
  Write(t, "edge_zero_word", Bytes(8));
  Bytes truncated = Checks({{1, "alice", "/api/orders", 100, 60'000, 1}});
  truncated.resize(truncated.size() - 8);
  Write(t, "edge_truncated", truncated);
}

// ---------------------------------------------------------------- peer

m::SwimMessage Swim(const std::string& id, const std::string& address, m::SwimBody body) {
  m::SwimMessage msg;
  msg.sender_id = id;
  msg.sender_address = address;
  msg.sender_generation = 5;
  msg.sender_incarnation = 1;
  msg.sender_wall_ms = kWallMs;
  msg.body = std::move(body);
  return msg;
}

m::MemberUpdate Member(const std::string& id, const std::string& address, m::MemberState state,
                       const std::string& origin = "") {
  return m::MemberUpdate{id, address, 5, 1, state, origin};
}

Bytes EncodeSwimBytes(const m::SwimMessage& msg) {
  Bytes out;
  wire::EncodeSwim(msg, &out);
  return out;
}

Bytes Node(const wire::NodeMessageValue& value, const std::string& id = "n2",
           const std::string& address = kN2, bool packed = false) {
  Bytes out;
  wire::EncodeNodeMessage(wire::PeerHeader{id, address, 5, kWallMs}, value, &out, packed);
  return out;
}

wire::ReplicateValue StateOf(const std::string& user, uint32_t count, int64_t wall_ms) {
  const uint64_t window_ms = 60'000;
  const int64_t bucket_ms = 6'000;  // window / buckets_per_window (10)
  const crdt::KeyId key = crdt::HashKey(user, "/api", window_ms);
  wire::CounterValue c;
  c.key_high = key.high;
  c.key_low = key.low;
  c.bucket_ms = bucket_ms;
  c.span = 10;
  c.newest_bucket = wall_ms / bucket_ms;
  wire::CounterValue::Row row;
  row.slot = 0;
  row.counts.assign(11, 0);
  row.counts.back() = count;
  c.rows.push_back(row);
  wire::ReplicateValue v;
  v.seq = 1;
  v.slots.push_back({"n2", 5});
  v.counters.push_back(c);
  return v;
}

std::vector<std::pair<std::string, wire::NodeMessageValue>> NodeMessages() {
  using Kind = wire::NodeMessageValue::Kind;
  std::vector<std::pair<std::string, wire::NodeMessageValue>> all;
  wire::NodeMessageValue v;
  v.kind = Kind::kForward;
  v.forwards.push_back({11, 1, {5, "alice", "/api", 10, 60'000, 1}});
  v.forwards.push_back({12, 2, {0, "bob", "/api", 3, 1'000, 0}});
  all.emplace_back("forward", v);
  v.forwards.push_back({13, 1, {7, "carol", "/api/v1/orders", 3, 1'000, 1}});
  v.shared_endpoints = true;  // protocol version 5: items 2 and 3 refer to earlier ones
  v.forwards.push_back({14, 1, {8, "dave", "/api/v1/orders", 3, 1'000, 1}});
  all.emplace_back("forward_shared_endpoints", v);
  v = {};
  v.kind = Kind::kForwardReply;
  v.results.push_back({11, {5, Status::kOk, true, 9, 0, 60'000, 10, ""}});
  v.results.push_back({12, {0, Status::kUnavailable, false, 0, 0, 0, 3, "no owner"}});
  all.emplace_back("forward_reply", v);
  v = {};
  v.kind = Kind::kReplicate;
  v.replicate = StateOf("alice", 4, kWallMs);
  all.emplace_back("replicate", v);
  v.kind = Kind::kStatePush;
  v.replicate = StateOf("bob", 2, kWallMs);
  v.replicate.slots.push_back({"n3", 6});
  v.replicate.counters[0].rows.push_back({1, std::vector<uint32_t>(11, 1)});
  all.emplace_back("state_push", v);
  v = {};
  v.kind = Kind::kReplicateAck;
  v.ack_seq = 1;
  all.emplace_back("replicate_ack", v);
  v.ack_seq = 0;
  v.ack_seqs = {2, 3, 5};  // protocol version 4
  all.emplace_back("replicate_acks", v);
  v = {};
  v.kind = Kind::kDigest;
  v.digest.assign(64, 0);
  v.digest[3] = 0x1234;
  all.emplace_back("digest", v);
  v.digest_is_reply = true;
  all.emplace_back("digest_reply", v);
  v.digest_is_reply = false;
  v.digest_keys_paused = true;
  all.emplace_back("digest_keys_paused", v);
  v = {};
  v.kind = Kind::kHandoffRequest;
  all.emplace_back("handoff_request", v);
  v.kind = Kind::kHandoffDone;
  all.emplace_back("handoff_done", v);
  v = {};
  v.kind = Kind::kOverrides;
  wire::LimitOverrideValue descriptor;
  descriptor.kind = 1;
  descriptor.domain = "edge";
  descriptor.entries = {{"remote_address", "10.0.0.1"}, {"path", "/api"}};
  descriptor.limit = 7;
  descriptor.window_ms = 60'000;
  descriptor.stamp_wall_ms = kWallMs;
  descriptor.writer = 1;
  wire::LimitOverrideValue removal;
  removal.kind = 2;
  removal.user = "alice";
  removal.endpoint = "/api";
  removal.selector_window_ms = 60'000;
  removal.removed = true;
  removal.stamp_wall_ms = kWallMs;
  removal.stamp_logical = 3;
  removal.writer = 2;
  v.overrides = {descriptor, removal};
  all.emplace_back("overrides", v);
  v = {};
  v.kind = Kind::kDigest;
  v.digest.assign(64, 0);
  v.overrides_digest = 0x5eed;
  all.emplace_back("digest_with_overrides", v);
  v = {};
  v.kind = Kind::kAdaptiveReports;
  v.adaptive_reports = {{"api", "backend", 24000, 120, 410}, {"edge", "errors", 3, 100, 1}};
  all.emplace_back("adaptive_reports", v);
  v = {};
  v.kind = Kind::kOverrides;
  wire::LimitOverrideValue adaptive;
  adaptive.kind = 3;
  adaptive.domain = "api";
  adaptive.rule = "backend";
  adaptive.limit = 364;
  adaptive.window_ms = 1000;
  adaptive.stamp_wall_ms = kWallMs;
  adaptive.writer = 3;
  v.overrides = {adaptive};
  all.emplace_back("adaptive_override", v);
  v = {};
  v.kind = Kind::kReplicateDelta;
  v.delta.seq = 2;
  v.delta.slot = {"n2", 5};
  for (const char* user : {"alice", "bob"}) {
    const crdt::KeyId key = crdt::HashKey(user, "/api", 60'000);
    v.delta.cells.push_back({key.high, key.low, kWallMs / 6'000, 3, 6'000, 10});
  }
  v.delta.cells.push_back(v.delta.cells.back());
  v.delta.cells.back().bucket -= 1;  // a key's cells of two buckets
  all.emplace_back("replicate_delta", v);
  v.delta.relative_buckets = true;  // protocol version 4
  all.emplace_back("replicate_delta_relative", v);
  v.delta.compact_cells = true;                                // protocol version 5
  v.delta.cells.push_back({7, 9, kWallMs / 100, 1, 100, 10});  // another geometry
  all.emplace_back("replicate_delta_compact", v);
  return all;
}

std::vector<std::pair<std::string, m::SwimMessage>> SwimMessages() {
  std::vector<std::pair<std::string, m::SwimMessage>> all;
  all.emplace_back("ping", Swim("n2", kN2, m::Ping{7, "n1"}));
  all.emplace_back("ack", Swim("n2", kN2, m::Ack{7}));
  all.emplace_back("ping_req", Swim("n2", kN2, m::PingReq{8, "n3", kN3, true}));
  all.emplace_back("nack", Swim("n2", kN2, m::Nack{8}));
  m::SwimMessage gossip = Swim("n2", kN2, m::Gossip{});
  gossip.piggyback = {Member("n3", kN3, m::MemberState::kAlive),
                      Member("n4", "10.0.0.4:7946", m::MemberState::kSuspect, "n2")};
  all.emplace_back("gossip", gossip);
  all.emplace_back("push_pull_join",
                   Swim("n2", kN2,
                        m::PushPull{false,
                                    true,
                                    {Member("n2", kN2, m::MemberState::kAlive),
                                     Member("n3", kN3, m::MemberState::kAlive)}}));
  all.emplace_back("push_pull_reply",
                   Swim("n2", kN2,
                        m::PushPull{true,
                                    false,
                                    {Member("n2", kN2, m::MemberState::kAlive),
                                     Member("n3", kN3, m::MemberState::kDead, "n2"),
                                     Member("n4", "10.0.0.4:7946", m::MemberState::kLeft)}}));
  return all;
}

void PeerCorpus() {
  for (const auto& [name, msg] : SwimMessages()) {
    Write("peer_codec_fuzz", "swim_" + name, EncodeSwimBytes(msg));
  }
  for (const auto& [name, value] : NodeMessages()) {
    Write("peer_codec_fuzz", "node_" + name, Node(value));
    Write("peer_codec_fuzz", "packed_" + name, Node(value, "n2", kN2, /*packed=*/true));
    capnp::MallocMessageBuilder builder;
    wire::BuildNodeMessage(value, builder.initRoot<wire::NodeMessage>());
    kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
    auto bytes = flat.asBytes();
    Write("node_codec_fuzz", name,
          Bytes(reinterpret_cast<const std::byte*>(bytes.begin()),
                reinterpret_cast<const std::byte*>(bytes.end())));
  }
  Write("peer_codec_fuzz", "edge_zero_word", Bytes(8));
  Write("node_codec_fuzz", "edge_zero_word", Bytes(8));
}

// ---------------------------------------------------------------- stream frames

void StreamCorpus() {
  // Header bytes: read chunk 8 + b0 % 64, largest frame 1 + (b1 << 4 | b2 >> 4), read seed.
  auto with_header = [](uint8_t chunk, uint16_t max_frame, const Bytes& stream) {
    Bytes out = {std::byte{chunk}, static_cast<std::byte>(max_frame >> 4),
                 static_cast<std::byte>((max_frame & 0xf) << 4), std::byte{0x5a}};
    out.insert(out.end(), stream.begin(), stream.end());
    return out;
  };
  Bytes stream;
  for (const auto& [name, msg] : SwimMessages())
    io::AppendStreamFrame(EncodeSwimBytes(msg), &stream);
  Write("stream_frames_fuzz", "swim_frames", with_header(16, 4000, stream));
  stream.clear();
  for (int i = 1; i <= 40; ++i)
    io::AppendStreamFrame(Bytes(static_cast<size_t>(i * 7), std::byte{0x42}), &stream);
  Write("stream_frames_fuzz", "growing_frames", with_header(0, 300, stream));
  stream.clear();
  io::AppendStreamFrame(Bytes(3000, std::byte{1}), &stream);  // large, then small: shrink
  io::AppendStreamFrame(Bytes(5, std::byte{2}), &stream);
  Write("stream_frames_fuzz", "large_then_small", with_header(1, 4000, stream));
  stream = {std::byte{0}, std::byte{0}, std::byte{0}, std::byte{0}};
  Write("stream_frames_fuzz", "edge_zero_length", with_header(4, 100, stream));
  stream.clear();
  io::AppendStreamFrame(Bytes(10, std::byte{3}), &stream);
  Bytes too_big = {std::byte{0}, std::byte{0}, std::byte{0x10}, std::byte{0}};
  stream.insert(stream.end(), too_big.begin(), too_big.end());
  Write("stream_frames_fuzz", "edge_too_large", with_header(4, 100, stream));
  stream.resize(stream.size() - 2);
  Write("stream_frames_fuzz", "edge_partial_header", with_header(4, 100, stream));
}

// ---------------------------------------------------------------- HTTP JSON

// The HTTP door's bodies (daemon/rls/rls_json.h, v1_check.h): the explicit
// check form, the rules form, both at once, an override, a bad value.
void HttpJsonCorpus() {
  const std::string t = "http_json_fuzz";
  Write(
      t, "explicit_form",
      FromString(R"({"user_id":"alice","endpoint":"/api","limit":5,"window_ms":60000,"hits":1})"));
  Write(t, "bad_window", FromString(R"({"user_id":"a","endpoint":"b","limit":5,"window_ms":0})"));
  Write(t, "both_forms", FromString(R"({"user_id":"\u00e9\u0000x","domain":"d"})"));
  Write(
      t, "rules_form",
      FromString(R"({"domain":"api","descriptors":[{"entries":[{"key":"user","value":"alice"}]}],)"
                 R"("hits_addend":2})"));
  Write(t, "override",
        FromString(R"({"domain":"api","descriptors":[{"entries":[{"key":"ip","value":"1.2.3.4"}],)"
                   R"("limit":{"requests_per_unit":3,"unit":"SECOND"}}]})"));
}

// ---------------------------------------------------------------- config

void ConfigCorpus(const std::filesystem::path& source) {
  const std::string t = "config_fuzz";
  Write(t, "minimal", FromString("udp = 127.0.0.1:7070\n"));
  Write(t, "standalone",
        FromString("udp = 127.0.0.1:7070\nunix = none\nunix-seq = none\nthreads = 2\n"
                   "buckets-per-window = 10\nmax-keys = 100000\ndedup-ttl-ms = 10000\n"
                   "max-dedup-entries = 1000\nshards = 8\nsweep-interval-ms = 1000\n"
                   "stats-interval-s = 60\nlog-level = warn\necho = false\nnode-id = n1\n"));
  Write(t, "cluster",
        FromString("udp = 127.0.0.1:7070\ngossip = 127.0.0.1:7946\njoin = 127.0.0.1:7947\n"
                   "replicas = 3\npartition-policy = proportional\nprobe-interval-ms = 500\n"
                   "suspicion-mult = 4\nmax-packet-bytes = 1400\nleave-grace-ms = 500\n"));
  Write(t, "bad_values", FromString("shards = 0\nthreads = -1\nlog-level = loud\necho = maybe\n"));
  Write(t, "sections_and_comments", FromString("# comment\n[section]\nudp=127.0.0.1:1\n\n;x\n"));
  Write(t, "argv_and_file",
        FromString(std::string("--udp\n[::1]:0\n--unix\nnone\n--threads\n3") + '\0' +
                   "echo = true\n"));
  std::ifstream example(source / "packaging/tallyd.conf.example", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(example)), std::istreambuf_iterator<char>());
  if (!text.empty()) Write(t, "packaging_example", FromString(text));
}

// ---------------------------------------------------------------- peer_open

// The input formats are peer_open_fuzz.cc's: [mode][...]. Sealed mode (odd):
// sender, flip position (2 bytes), flip mask, timestamp offset (2 bytes),
// plaintext. Raw mode (even): a packet as received; none may open.
void PeerOpenCorpus() {
  const std::string t = "peer_open_fuzz";
  const Bytes ping = EncodeSwimBytes(Swim("n2", kN2, m::Ping{1, "n1"}));
  auto sealed_mode = [&](uint8_t sender, uint16_t flip_at, uint8_t mask, int16_t offset_ms,
                         const Bytes& plaintext) {
    Bytes in = {std::byte{1},
                static_cast<std::byte>(sender),
                static_cast<std::byte>(flip_at >> 8),
                static_cast<std::byte>(flip_at & 0xff),
                static_cast<std::byte>(mask),
                static_cast<std::byte>(static_cast<uint16_t>(offset_ms) >> 8),
                static_cast<std::byte>(static_cast<uint16_t>(offset_ms) & 0xff)};
    in.insert(in.end(), plaintext.begin(), plaintext.end());
    return in;
  };
  Write(t, "sealed_ping", sealed_mode(0, 0, 0, 0, ping));
  Write(t, "sealed_by_secondary", sealed_mode(1, 0, 0, -100, ping));
  Write(t, "sealed_unknown_key", sealed_mode(2, 0, 0, 0, ping));
  Write(t, "sealed_empty", sealed_mode(0, 0, 0, 0, {}));
  Write(t, "sealed_flip_ciphertext", sealed_mode(0, 60, 0x01, 0, ping));
  Write(t, "sealed_flip_timestamp", sealed_mode(0, 16, 0x04, 0, ping));
  Write(t, "sealed_stale", sealed_mode(0, 0, 0, 8000, ping));
  // Raw mode: a plain (unsealed) message, sealed-looking junk.
  Bytes raw = {std::byte{0}};
  raw.insert(raw.end(), ping.begin(), ping.end());
  Write(t, "raw_unsealed_ping", raw);
  Bytes junk(1 + 120, std::byte{0x5a});
  junk[0] = std::byte{0};
  junk[1] = std::byte{0xA1};
  Write(t, "raw_sealed_junk", junk);
}

// ---------------------------------------------------------------- node

void Record(fuzz::NodeOp op, uint8_t peer, const Bytes& payload, Bytes* out) {
  fuzz::AppendRecord(static_cast<uint8_t>(static_cast<uint8_t>(op) | peer << 2), payload, out);
}

void Advance(uint16_t ms, Bytes* out) {
  Record(fuzz::NodeOp::kAdvance, 0,
         {static_cast<std::byte>(ms & 0xff), static_cast<std::byte>(ms >> 8)}, out);
}

void NodeCorpus() {
  const std::string t = "node_fuzz";
  // A peer joins, then sends each kind of node message.
  Bytes joined;
  Record(fuzz::NodeOp::kStream, 0,
         EncodeSwimBytes(Swim(
             "n2", kN2, m::PushPull{false, true, {Member("n2", kN2, m::MemberState::kAlive)}})),
         &joined);
  Advance(50, &joined);
  Record(fuzz::NodeOp::kPeer, 0, EncodeSwimBytes(Swim("n2", kN2, m::Ping{1, "n1"})), &joined);
  for (const auto& [name, value] : NodeMessages()) {
    Bytes input = joined;
    Record(fuzz::NodeOp::kPeer, 0, Node(value), &input);
    Advance(100, &input);
    Record(fuzz::NodeOp::kClient, 0, Checks({{1, "alice", "/api", 10, 60'000, 1}}), &input);
    Write(t, "join_then_" + name, input);
  }
  // A key we decided gets a replica's state: the merge path of an existing key.
  for (auto kind :
       {wire::NodeMessageValue::Kind::kReplicate, wire::NodeMessageValue::Kind::kStatePush}) {
    Bytes input = joined;
    Record(fuzz::NodeOp::kClient, 0, Checks({{1, "alice", "/api", 10, 60'000, 1}}), &input);
    Advance(20, &input);
    wire::NodeMessageValue merge;
    merge.kind = kind;
    merge.replicate = StateOf("alice", 2, kWallMs + 20);
    Record(fuzz::NodeOp::kPeer, 0, Node(merge), &input);
    Record(fuzz::NodeOp::kClient, 0, Checks({{2, "alice", "/api", 10, 60'000, 1}}), &input);
    Write(t,
          kind == wire::NodeMessageValue::Kind::kReplicate ? "decided_then_replicate"
                                                           : "decided_then_state_push",
          input);
  }
  // Every SWIM message kind from a stranger, then time passes (probes, suspicion).
  for (const auto& [name, msg] : SwimMessages()) {
    Bytes input;
    Record(fuzz::NodeOp::kPeer, 1, EncodeSwimBytes(msg), &input);
    Advance(3000, &input);
    Write(t, "swim_" + name, input);
  }
  // Only clients: a batch, a retry (same request id), an invalid check, garbage.
  Bytes clients;
  Record(fuzz::NodeOp::kClient, 0,
         Checks({{1, "alice", "/a", 2, 1000, 1}, {2, "bob", "/b", 1, 1000, 1}}), &clients);
  Record(fuzz::NodeOp::kClient, 0, Checks({{1, "alice", "/a", 2, 1000, 1}}), &clients);
  Record(fuzz::NodeOp::kClient, 0, Checks({{3, "", "/a", 0, 0, 1}}), &clients);
  Record(fuzz::NodeOp::kClient, 0, Bytes(16, std::byte{0xff}), &clients);
  Advance(1500, &clients);
  Record(fuzz::NodeOp::kClient, 0, Checks({{4, "alice", "/a", 2, 1000, 1}}), &clients);
  Write(t, "clients_only", clients);
  // Two members join, one claims a key's state, then dies.
  Bytes cluster;
  Record(fuzz::NodeOp::kStream, 0,
         EncodeSwimBytes(Swim("n2", kN2,
                              m::PushPull{false,
                                          true,
                                          {Member("n2", kN2, m::MemberState::kAlive),
                                           Member("n3", kN3, m::MemberState::kAlive)}})),
         &cluster);
  wire::NodeMessageValue state;
  state.kind = wire::NodeMessageValue::Kind::kStatePush;
  state.replicate = StateOf("alice", 3, kWallMs);
  Record(fuzz::NodeOp::kStream, 0, Node(state), &cluster);
  Record(fuzz::NodeOp::kClient, 0, Checks({{1, "alice", "/api", 5, 60'000, 1}}), &cluster);
  Advance(40, &cluster);
  m::SwimMessage dead = Swim("n2", kN2, m::Gossip{});
  dead.piggyback = {Member("n3", kN3, m::MemberState::kDead, "n2")};
  Record(fuzz::NodeOp::kPeer, 0, EncodeSwimBytes(dead), &cluster);
  Advance(5000, &cluster);
  Write(t, "cluster_of_three", cluster);
  Write(t, "edge_empty", {});
}

// Reproducers of findings that must not be in the corpus while they are open
// (a seed that hangs would stop every run): written on request only.
void FindingInputs(const std::filesystem::path& dir) {
  // issue 9: a replicate with newestBucket = 2^63-1 for a key the node holds.
  Bytes input;
  Record(fuzz::NodeOp::kStream, 0,
         EncodeSwimBytes(Swim(
             "n2", kN2, m::PushPull{false, true, {Member("n2", kN2, m::MemberState::kAlive)}})),
         &input);
  Record(fuzz::NodeOp::kClient, 0, Checks({{1, "alice", "/api", 10, 60'000, 1}}), &input);
  wire::NodeMessageValue merge;
  merge.kind = wire::NodeMessageValue::Kind::kReplicate;
  merge.replicate = StateOf("alice", 2, kWallMs);
  merge.replicate.counters[0].newest_bucket = INT64_MAX;
  Record(fuzz::NodeOp::kPeer, 0, Node(merge), &input);
  std::filesystem::create_directories(dir);
  std::ofstream out(dir / "node_fuzz-replicate-newest-bucket-int64-max", std::ios::binary);
  out.write(reinterpret_cast<const char*>(input.data()),
            static_cast<std::streamsize>(input.size()));
}

// -------------------------------------------------------------- snapshot

// snapshot_fuzz's first byte picks the mode (0: as is, 1: resealed); its
// expectations are cluster "prod", node "node-a", generation
// 1'700'000'100'000, now 1'700'000'060'000, buckets_per_window 10.
void WriteSnapshotSeed(const std::string& name, uint8_t mode, const Bytes& snapshot) {
  Bytes out{std::byte{mode}};
  out.insert(out.end(), snapshot.begin(), snapshot.end());
  Write("snapshot_fuzz", name, out);
}

void SnapshotCorpus() {
  constexpr int64_t kWrittenMs = 1'700'000'030'000;
  const persist::SnapshotHeader header{"prod", "node-a", 1'700'000'000'000, kWrittenMs, 10};
  // 12 keys over three windows, counted by an earlier generation of node-a
  // and two peers, over one to a few buckets.
  crdt::KeyStore store({.max_keys = 100, .buckets_per_window = 10});
  const crdt::ReplicaSlot slots[] = {{"node-a", 1'699'999'000'000}, {"node-b", 5}, {"node-c", 9}};
  for (int i = 0; i < 12; ++i) {
    const uint64_t window_ms = i % 3 == 0 ? 60'000 : i % 3 == 1 ? 3'600'000 : 86'400'000;
    const crdt::KeyId id = crdt::HashKey("user" + std::to_string(i), "/api", window_ms);
    crdt::KeyStore::Lookup how;
    crdt::KeyStore::Entry* e = store.FindOrCreate(id, window_ms, kWrittenMs, &how);
    for (int r = 0; r <= i % 3; ++r) {
      const int64_t at = kWrittenMs - r * static_cast<int64_t>(window_ms / 10);
      e->counter.Add(store.slots().Intern(slots[(i + r) % 3]),
                     crdt::BucketOf(at, e->counter.geometry()), 1 + i % 4);
    }
    store.MarkChanged(e);
  }
  // Runtime limit overrides: both selector forms, a removal of each, and
  // texts of several lengths.
  std::vector<crdt::OverrideEntry> overrides;
  auto add = [&](crdt::Selector selector, crdt::OverrideValue value, int64_t wall_ms) {
    overrides.push_back({std::move(selector), value, {wall_ms, 0}, 0x5eed});
  };
  crdt::Selector gold{crdt::Selector::Kind::kDescriptor, "edge", {{"tier", "gold"}}, "", "", 0};
  add(gold, {false, 7, 3'600'000}, kWrittenMs - 20'000);
  crdt::Selector pair{
      crdt::Selector::Kind::kDescriptor, "api", {{"user", "alice"}, {"path", ""}}, "", "", 0};
  add(pair, {true, 0, 0}, kWrittenMs - 10'000);
  crdt::Selector key{crdt::Selector::Kind::kExplicit, "", {}, "carol", "/pay", 60'000};
  add(key, {false, 2, 0}, kWrittenMs - 5'000);
  crdt::Selector gone{crdt::Selector::Kind::kExplicit, "", {}, "dave", "/pay", 60'000};
  add(gone, {true, 0, 0}, kWrittenMs);
  const crdt::HlcTimestamp clock{kWrittenMs, 3};

  auto encode = [&](const persist::SnapshotHeader& h, bool with_keys, bool with_overrides) {
    persist::SnapshotEncoder encoder;
    if (with_keys) encoder.AddAll(store);
    if (with_overrides) encoder.SetOverrides(overrides, clock);
    return encoder.Finish(h).Joined();
  };
  const Bytes mixed = encode(header, true, true);
  WriteSnapshotSeed("mixed", 0, mixed);
  WriteSnapshotSeed("mixed_resealed", 1, mixed);
  WriteSnapshotSeed("mixed_truncated", 0, Bytes(mixed.begin(), mixed.begin() + mixed.size() / 2));
  // Resealed after the cut: the archive reader meets the end mid-record.
  WriteSnapshotSeed("mixed_truncated_resealed", 1, Bytes(mixed.begin(), mixed.end() - 7));
  WriteSnapshotSeed("empty_store", 0, encode(header, false, false));
  // A single node's file: overrides only.
  const Bytes overrides_only = encode(header, false, true);
  WriteSnapshotSeed("overrides_only", 0, overrides_only);
  WriteSnapshotSeed("overrides_only_resealed", 1, overrides_only);
  // Version 1: version 2 without the override section (16 bytes when empty).
  Bytes v1 = encode(header, true, false);
  v1.resize(v1.size() - 16);
  v1[8] = std::byte{1};
  persist::ResealForTesting(&v1);
  WriteSnapshotSeed("version1", 0, v1);
  WriteSnapshotSeed("version1_resealed", 1, v1);
  persist::SnapshotHeader other = header;
  other.cluster_name = "staging";
  WriteSnapshotSeed("other_cluster", 0, encode(other, true, true));
  other = header;
  other.node_id = "node-b";
  WriteSnapshotSeed("other_node", 0, encode(other, true, true));
  Bytes other_version = mixed;
  other_version[8] = std::byte{persist::kSnapshotFormatVersion + 1};
  WriteSnapshotSeed("other_version", 0, other_version);
  // One key of a geometry buckets_per_window 10 cannot make.
  crdt::KeyStore twenty({.max_keys = 10, .buckets_per_window = 20});
  crdt::KeyStore::Lookup how;
  crdt::KeyStore::Entry* e =
      twenty.FindOrCreate(crdt::HashKey("g", "/", 60'000), 60'000, kWrittenMs, &how);
  e->counter.Add(twenty.slots().Intern(slots[1]), crdt::BucketOf(kWrittenMs, e->counter.geometry()),
                 4);
  twenty.MarkChanged(e);
  persist::SnapshotHeader h20 = header;
  h20.buckets_per_window = 20;
  WriteSnapshotSeed("other_geometry", 0, persist::EncodeSnapshot(twenty, h20).Joined());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--findings") {
    FindingInputs(argv[2]);
    return 0;
  }
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s OUTPUT_DIR SOURCE_DIR\n", argv[0]);
    return 2;
  }
  g_root = argv[1];
  ClientCorpus();
  PeerCorpus();
  StreamCorpus();
  ConfigCorpus(argv[2]);
  HttpJsonCorpus();
  NodeCorpus();
  PeerOpenCorpus();
  SnapshotCorpus();
  return 0;
}

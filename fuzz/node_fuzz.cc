// One core::Node (a cluster of one at first) fed fuzzed peer datagrams,
// stream frames, client datagrams and the passing of time (fuzz/node_input.h),
// then asked valid checks for a fresh key. Properties:
//   * nothing crashes, hangs (libFuzzer -timeout) or leaks, whatever peers and
//     clients send (docs/DESIGN.md: untrusted input);
//   * every client datagram gets exactly one reply (node.h's invariant);
//   * the fresh key's checks get the answers a LimiterCore fed the same checks
//     at the same times gives: forged state for other keys, forged members and
//     forged clocks may cost routing time, never a wrong count.
#include <chrono>
#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "daemon/core/limiter_core.h"
#include "daemon/core/node.h"
#include "fuzz/fuzz_check.h"
#include "fuzz/node_input.h"
#include "wire/codec.h"

namespace {

using namespace tally;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr int64_t kStartWallMs = 1'700'000'000'000;
// Time an input may let pass in total, and the longest a probe may wait for
// its answer (routing past forged members: attempts x forward timeout).
// The waits below are 4x what they were with a fixed 30 ms forward timeout: a
// forward now waits up to forward_timeout_max_ms (120) for a peer whose
// replies (forged ones included) measured it slow.
constexpr int64_t kMaxAdvanceMs = 20'000;
constexpr int64_t kMaxProbeWaitMs = 20'000;
// Longest a client may wait for its reply: every route attempt and hop timing
// out (NodeConfig: route_attempts + route_depth forwards of forward_timeout_ms).
constexpr int64_t kMaxSettleMs = 8'000;
constexpr int kProbes = 5;
constexpr uint64_t kProbeLimit = 3;

core::NodeConfig Config() {
  core::NodeConfig c;
  c.node_id = "n1";
  c.gossip_address = fuzz::kNodeAddress;
  c.generation = 1;
  c.rng_seed = 7;
  c.limiter.max_keys = 100'000;  // far more than one input can create
  c.limiter.max_dedup_entries = 10'000;
  return c;
}

class Harness {
 public:
  Harness() : node_(Config()), oracle_(Config().limiter) {
    // An adaptive rule, so that forged adaptiveReports and kind-3 overrides
    // reach the controller, its rounds and the override writes they make
    // (the corpus's join_then_adaptive_* seeds name it).
    core::AdaptiveRuleConfig rule;
    rule.domain = "api";
    rule.rule = "backend";
    rule.config.min_limit = 10;
    rule.config.max_limit = 1000;
    rule.config.target = 50;
    rule.start = 500;
    node_.SetAdaptiveRules({rule});
    core::Outbox out;
    node_.Start(Now(), &out);
    Collect(out);
  }

  Instant Now() const {
    return Instant{milliseconds(kStartWallMs + now_ns_ / 1'000'000), nanoseconds(now_ns_)};
  }

  // TALLY_FUZZ_TRACE=1: say what each record was (for reading a finding).
  static bool Trace() {
    static const bool trace = std::getenv("TALLY_FUZZ_TRACE") != nullptr;
    return trace;
  }

  void Peer(const std::string& from, std::span<const std::byte> bytes) {
    if (Trace()) {
      wire::PeerMessageReader reader;
      std::string why;
      const Status status = reader.Decode(bytes, &why);
      wire::NodeMessageValue node;
      const bool node_ok =
          status == Status::kOk && reader.is_node() && reader.ReadNode(&node, &why);
      std::fprintf(
          stderr,
          "peer message from %s: %zu bytes, status %d (%s), swim %d kind %d, node %d kind %d\n",
          from.c_str(), bytes.size(), static_cast<int>(status), why.c_str(), reader.is_swim(),
          reader.is_swim() ? static_cast<int>(reader.swim().kind()) : -1, node_ok,
          node_ok ? static_cast<int>(node.kind) : -1);
    }
    core::Outbox out;
    node_.OnPeerMessage(from, bytes, Now(), &out);
    node_.Flush(Now(), &out);
    Collect(out);
  }

  uint64_t Client(std::span<const std::byte> bytes) {
    const uint64_t token = ++next_token_;
    if (Trace()) {
      wire::ClientMessageReader reader;
      std::string why;
      const Status status = reader.Decode(bytes, &why);
      std::fprintf(stderr, "client datagram %llu: %zu bytes, status %d (%s), kind %d, %zu checks\n",
                   static_cast<unsigned long long>(token), bytes.size(), static_cast<int>(status),
                   why.c_str(), static_cast<int>(reader.kind()), reader.checks().size());
    }
    replies_[token];  // expects exactly one
    core::Outbox out;
    node_.OnClientDatagram(token, bytes, Now(), &out);
    node_.Flush(Now(), &out);
    Collect(out);
    return token;
  }

  // Lets `ms` pass, firing every timer that falls due on the way.
  void Advance(int64_t ms) {
    const int64_t end = now_ns_ + ms * 1'000'000;
    while (true) {
      const int64_t next = node_.NextDeadline().count();
      if (next > end) break;
      now_ns_ = std::max(now_ns_, next);
      core::Outbox out;
      node_.Tick(Now(), &out);
      node_.Flush(Now(), &out);
      Collect(out);
      // A timer still due after Tick would make the daemon tick again at
      // once; a millisecond later is what it would see.
      if (node_.NextDeadline().count() <= now_ns_) now_ns_ += 1'000'000;
    }
    now_ns_ = std::max(now_ns_, end);
  }

  // Runs timers until `token` is answered (or kMaxProbeWaitMs passed).
  bool AwaitReply(uint64_t token) {
    for (int64_t waited = 0; replies_[token].empty() && waited < kMaxProbeWaitMs; waited += 5) {
      Advance(5);
    }
    return !replies_[token].empty();
  }

  // Sends one probe check and compares the node's answer with the oracle's.
  void Probe(const CheckRequest& check) {
    std::vector<std::byte> bytes;
    CheckRequestRef ref(check);
    wire::EncodeChecks(std::span<const CheckRequestRef>(&ref, 1), &bytes);
    const uint64_t token = Client(bytes);
    FUZZ_CHECK(AwaitReply(token));
    FUZZ_CHECK(replies_[token].size() == 1);
    wire::ClientMessageReader reader;
    std::string why;
    FUZZ_CHECK(reader.Decode(replies_[token][0], &why) == Status::kOk);
    FUZZ_CHECK(reader.kind() == wire::MessageKind::kResponses);
    FUZZ_CHECK(reader.responses().size() == 1);
    const CheckResult& got = reader.responses()[0];
    // Decided when the answer appeared: the oracle decides at that time too.
    const CheckResult want = oracle_.Check(ref, Now());
    FUZZ_CHECK(want.status == Status::kOk);
    if (got.status != want.status || got.allowed != want.allowed ||
        got.remaining != want.remaining || got.limit != want.limit) {
      std::fprintf(stderr,
                   "probe %llu: node said status %d allowed %d remaining %llu limit %llu (%s); "
                   "a fresh LimiterCore says allowed %d remaining %llu limit %llu\n",
                   static_cast<unsigned long long>(check.request_id), static_cast<int>(got.status),
                   got.allowed, static_cast<unsigned long long>(got.remaining),
                   static_cast<unsigned long long>(got.limit), got.error.c_str(), want.allowed,
                   static_cast<unsigned long long>(want.remaining),
                   static_cast<unsigned long long>(want.limit));
      FUZZ_CHECK(!"the fresh key's answer differs from the oracle's");
    }
  }

  // Every client datagram so far got exactly one reply.
  void CheckEveryClientAnswered() {
    Advance(kMaxSettleMs);
    for (const auto& [token, replies] : replies_) {
      if (replies.size() != 1) {
        std::fprintf(stderr, "client datagram %llu got %zu replies\n",
                     static_cast<unsigned long long>(token), replies.size());
        FUZZ_CHECK(!"a client datagram did not get exactly one reply");
      }
    }
  }

 private:
  void Collect(core::Outbox& out) {
    for (auto& reply : out.client) {
      auto it = replies_.find(reply.reply_token);
      FUZZ_CHECK(it != replies_.end());  // a reply to a datagram never sent
      it->second.push_back(std::move(reply.bytes));
    }
    // Peer packets go to peers that do not exist: forged members never answer.
  }

  core::Node node_;
  core::LimiterCore oracle_;
  int64_t now_ns_ = 1'000'000'000;
  uint64_t next_token_ = 0;
  std::map<uint64_t, std::vector<std::vector<std::byte>>> replies_;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  Harness h;
  int64_t advanced_ms = 0;
  size_t pos = 0;
  while (size - pos >= 3) {
    const uint8_t op = data[pos];
    const size_t len = std::min<size_t>(data[pos + 1] | data[pos + 2] << 8, size - pos - 3);
    const std::span<const std::byte> payload = fuzz::AsBytes(data + pos + 3, len);
    pos += 3 + len;
    switch (static_cast<fuzz::NodeOp>(op & 3)) {
      case fuzz::NodeOp::kPeer:
      case fuzz::NodeOp::kStream:
        h.Peer(fuzz::PeerAddress(op), payload);
        break;
      case fuzz::NodeOp::kClient:
        h.Client(payload);
        break;
      case fuzz::NodeOp::kAdvance: {
        int64_t ms = 1;
        if (len >= 2)
          ms = std::to_integer<int64_t>(payload[0]) | std::to_integer<int64_t>(payload[1]) << 8;
        ms = std::min(ms, kMaxAdvanceMs - advanced_ms);
        advanced_ms += ms;
        h.Advance(ms);
        break;
      }
    }
  }
  // A key no input can have touched (its id is a hash of these strings).
  for (int i = 0; i < kProbes; ++i) {
    h.Probe(CheckRequest{0, "fuzz-probe-user", "/fuzz/probe", kProbeLimit, 60'000, 1});
    h.Advance(1);
  }
  h.CheckEveryClientAnswered();
  return 0;
}

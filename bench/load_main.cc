// tally-load: closed-loop load generator for tallyd (and a raw echo server,
// the transport floor tallyd is judged against).
//
//   tally-load [--udp HOST:PORT | --unix PATH] [--in-flight N | --rate N] [--duration-s S]
//              [--keys K] [--dist uniform|zipf] [--zipf-s S] [--seed N]
//              [--limit L] [--window-ms W] [--batch B] [--threads T]
//              [--timeout-ms N] [--owner-filter all|local|remote|node=ID]
//              [--json] [--compare-echo [--echo-kind plain|daemon]
//              [--echo-threads E] [--echo-cpu C]]
//   tally-load --echo-server [--echo-kind plain|daemon] [--echo-cpu C]
//              [--udp HOST:PORT] [--unix PATH] [--unix-seq PATH]
//   tally-load --grpc HOST:PORT | --http HOST:PORT [--in-flight N] [--duration-s S]
//              [--keys K] [--domain D] [--descriptor-key K] [--channels C]
//              [--grpc-client nghttp2|grpc++] [--timeout-ms N] [--json]
//
// Envoy's doors (docs/ENVOY.md, "Speed"): --grpc keeps --in-flight unary
// ShouldRateLimit calls outstanding on tallyd's gRPC door over --channels
// HTTP/2 connections (with nghttp2 framing gRPC by hand, or with
// --grpc-client grpc++ gRPC's C++ client); --http sends the same calls as POST /v1/check (rules
// form) to its HTTP door over --in-flight keep-alive connections. Each call
// carries one descriptor (--descriptor-key, "v<i>") in --domain, i cycling
// over --keys values; the answers are counted as ok, over_limit and errors
// (bench/rls_load.h). The floor for a ratio is the same run with a key no
// rule matches: the door and the rules lookup without a decision.
//
// The echo floor: --compare-echo first runs the same load against an echo
// server in this process, then against the target, and prints the ratios.
// `plain` (the default) is bench/plain_echo.h, one thread in a bare
// recvmmsg/sendmmsg loop: the wire's floor, what no server of these
// datagrams beats here. `daemon` is tallyd's own driver in --echo mode (its
// Asio code without a decision), which isolates what deciding costs.
// --echo-cpu pins the echo thread (plain); pin the load generator itself with
// taskset, e.g. `taskset -c 1 tally-load --compare-echo --echo-cpu 0` beside a
// tallyd started under `taskset -c 0`.
//
// Closed loop: each client thread keeps its share of --in-flight checks
// outstanding (in datagrams of --batch checks) and sends a new datagram as
// soon as a whole one's worth has been answered or timed out. A check with no
// reply within --timeout-ms counts as a timeout and is replaced, so loss
// never stalls the loop.
//
// Open loop (--rate N): N checks per second over all threads, on a schedule
// from the monotonic clock (datagram k of a thread is due at start + k x
// batch / its share of N), sent whether or not earlier ones were answered
// (--in-flight is then unused). The schedule is kept to the millisecond: a
// thread wakes at most once per millisecond and sends every datagram due by
// then, so it never spins; one that fell behind (a stalled machine) sends its
// backlog at once, and each datagram sent more than 2 ms after its time
// counts in late_sends. A run sends exactly floor(N x --duration-s) checks
// (rounded to whole datagrams per thread), the last ones even if due in the
// final wake's millisecond. Replies after --timeout-ms count as timeouts (lost)
// and, when they come after all, as late. The report gives the rate asked
// and the rate sent (sent_rps); throughput_rps is replies in time per second.
//
// Keys are "u<i>" for i in [0, --keys) with endpoint "/load". With
// --owner-filter, tally-load first asks the target who owns each candidate
// key (the admin owner query `tally owner` uses) and keeps the first --keys
// that pass: `local` keeps keys the target decides itself, `remote` keys it
// forwards to another member, `node=ID` keys member ID owns
// (bench/owner_filter.h). Each lookup is one round trip, so keep --keys in
// the tens of thousands with a filter.
//
// Exit status: 0 ran and got replies, 1 no replies at all (--grpc/--http: no
// decision, or any error), 2 usage or setup error (a door that cannot be
// reached included).
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <bit>
#include <boost/program_options.hpp>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <iostream>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "bench/owner_filter.h"
#include "bench/plain_echo.h"
#include "bench/rls_load.h"
#include "client/admin.h"
#include "client/client_internal.h"
#include "client/program_options_guard.h"
#include "daemon/io/daemon.h"
#include "tally/client.h"
#include "tally/types.h"

namespace po = boost::program_options;

namespace tally::load {
namespace {

using SteadyClock = std::chrono::steady_clock;

constexpr int kExitOk = 0;
constexpr int kExitNoReplies = 1;
constexpr int kExitUsage = 2;

// ---- latency histogram ----

// Log-linear buckets over nanoseconds: 64 sub-buckets per power of two, so a
// reported percentile is within ~1.6% of the true sample. Fixed size, no
// allocation while recording, and mergeable across threads.
class Histogram {
 public:
  static constexpr int kSubBits = 6;
  static constexpr size_t kBuckets = (64 - kSubBits + 1) << kSubBits;

  Histogram() : counts_(kBuckets, 0) {}

  void Record(uint64_t value_ns) {
    ++counts_[Index(value_ns)];
    ++total_;
  }
  void Merge(const Histogram& other) {
    for (size_t i = 0; i < kBuckets; ++i) counts_[i] += other.counts_[i];
    total_ += other.total_;
  }
  uint64_t total() const { return total_; }

  // The q-quantile (0 < q <= 1) in microseconds: the midpoint of the bucket
  // holding the ceil(q * total)-th smallest sample; 0 when empty.
  double QuantileUs(double q) const {
    if (total_ == 0) return 0;
    auto rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
    rank = std::clamp<uint64_t>(rank, 1, total_);
    uint64_t seen = 0;
    for (size_t i = 0; i < kBuckets; ++i) {
      seen += counts_[i];
      if (seen >= rank)
        return (static_cast<double>(Lower(i)) + static_cast<double>(Lower(i + 1))) / 2e3;
    }
    return static_cast<double>(Lower(kBuckets - 1)) / 1e3;
  }

 private:
  static size_t Index(uint64_t v) {
    if (v < (uint64_t{1} << (kSubBits + 1))) return static_cast<size_t>(v);
    int msb = 63 - std::countl_zero(v);
    int shift = msb - kSubBits;  // v >> shift lies in [2^kSubBits, 2^(kSubBits+1))
    return (static_cast<size_t>(shift) << kSubBits) + static_cast<size_t>(v >> shift);
  }
  static uint64_t Lower(size_t index) {
    if (index < (size_t{1} << (kSubBits + 1))) return index;
    size_t shift = (index >> kSubBits) - 1;
    uint64_t mantissa = index - (shift << kSubBits);
    return shift >= 64 ? UINT64_MAX : mantissa << shift;
  }

  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
};

// ---- key choice ----

// Zipf(s) over ranks 1..K: a precomputed CDF and a binary search per draw.
class ZipfTable {
 public:
  ZipfTable(uint64_t keys, double s) : cdf_(keys) {
    double sum = 0;
    for (uint64_t k = 0; k < keys; ++k) {
      sum += 1.0 / std::pow(static_cast<double>(k + 1), s);
      cdf_[k] = sum;
    }
    for (double& c : cdf_) c /= sum;
  }
  // Maps a uniform u in [0, 1) to a key index in [0, K).
  uint64_t Pick(double u) const {
    auto it = std::upper_bound(cdf_.begin(), cdf_.end(), u);
    return std::min<uint64_t>(static_cast<uint64_t>(it - cdf_.begin()), cdf_.size() - 1);
  }

 private:
  std::vector<double> cdf_;
};

// ---- configuration and results ----

struct LoadConfig {
  DaemonAddress target;
  int in_flight = 64;  // checks outstanding, over all threads
  double duration_s = 5;
  uint64_t keys = 1'000'000;
  bool zipf = false;
  double zipf_s = 1.1;
  uint64_t seed = 1;
  uint64_t limit = 1000;
  uint64_t window_ms = 1000;
  int batch = 1;  // checks per datagram
  int threads = 1;
  std::chrono::milliseconds timeout{1000};
  double rate = 0;  // checks per second, open loop; 0: closed loop (in_flight)
  // Key i of the run is LoadUserId(key_ids[i]) when not empty (an owner
  // filter chose them; keys == key_ids.size()), else LoadUserId(i).
  std::vector<uint64_t> key_ids;
};

constexpr std::string_view kLoadEndpoint = "/load";

struct LoadResult {
  std::string name;
  std::string target;
  double elapsed_s = 0;
  uint64_t sent = 0;       // checks sent
  uint64_t completed = 0;  // checks answered in time (allowed + denied + errors)
  uint64_t allowed = 0;
  uint64_t denied = 0;
  uint64_t errors = 0;      // non-ok status replies and failed sends
  uint64_t timeouts = 0;    // no reply within the timeout
  uint64_t late = 0;        // replies after their timeout (or unknown ids)
  uint64_t late_sends = 0;  // --rate: datagrams sent > 2 ms after their scheduled time
  Histogram latency;
  std::string setup_error;  // the run could not start

  double throughput() const {
    return elapsed_s > 0 ? static_cast<double>(completed) / elapsed_s : 0;
  }
  double sent_rate() const { return elapsed_s > 0 ? static_cast<double>(sent) / elapsed_s : 0; }
};

// One client thread's loop: closed, `share` checks outstanding at most, or
// with `rate` > 0 open, `rate` checks per second.
void RunWorker(const LoadConfig& config, const ZipfTable* zipf, int index, int share, double rate,
               PipelinedClient* client, SteadyClock::time_point end, LoadResult* out) {
  std::mt19937_64 rng(config.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(index));
  std::uniform_int_distribution<uint64_t> uniform_key(0, config.keys - 1);
  std::uniform_real_distribution<double> unit(0.0, 1.0);
  const int batch = std::min(config.batch, share);
  const auto timeout_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(config.timeout).count();

  std::vector<std::string> users(static_cast<size_t>(batch));
  std::vector<CheckRequestRef> refs(static_cast<size_t>(batch));
  std::unordered_map<uint64_t, int64_t> pending;  // request id -> send time (ns)
  pending.reserve(static_cast<size_t>(share) * 4);
  std::deque<std::pair<int64_t, uint64_t>> send_order;  // (send time, id), oldest first
  std::vector<CheckResult> results;
  std::string error;
  auto now_ns = [] {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(
               SteadyClock::now().time_since_epoch())
        .count();
  };
  const int64_t end_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(end.time_since_epoch()).count();
  // Open loop: datagram k is due at start_ns + k x interval.
  const double interval_ns = rate > 0 ? 1e9 * batch / rate : 0;
  constexpr int64_t kLateSendNs = 2'000'000;
  // From the run's start (`end` - duration), not this thread's: a thread
  // that started late sends what was due meanwhile at once.
  const int64_t start_ns = end_ns - std::llround(config.duration_s * 1e9);
  uint64_t scheduled = 0;  // datagrams sent so far on the schedule
  auto due_ns = [&] {
    return start_ns +
           static_cast<int64_t>(std::llround(static_cast<double>(scheduled) * interval_ns));
  };

  // Sends one datagram of `batch` checks; false when the send failed.
  auto send_one = [&] {
    for (int i = 0; i < batch; ++i) {
      uint64_t key = zipf != nullptr ? zipf->Pick(unit(rng)) : uniform_key(rng);
      if (!config.key_ids.empty()) key = config.key_ids[key];
      std::string& user = users[static_cast<size_t>(i)];
      FormatLoadUserId(key, &user);
      CheckRequestRef& ref = refs[static_cast<size_t>(i)];
      ref.request_id = client->NextRequestId();
      ref.user_id = user;
      ref.endpoint = kLoadEndpoint;
      ref.limit = config.limit;
      ref.window_ms = config.window_ms;
      ref.hits = 1;
    }
    int64_t sent_at = now_ns();
    if (!client->SendBatch(refs, &error)) {
      out->errors += static_cast<uint64_t>(batch);
      return false;
    }
    out->sent += static_cast<uint64_t>(batch);
    for (const CheckRequestRef& ref : refs) {
      pending.emplace(ref.request_id, sent_at);
      send_order.emplace_back(sent_at, ref.request_id);
    }
    return true;
  };

  int64_t now = now_ns();
  while (now < end_ns) {
    if (rate > 0) {
      // Every datagram whose time has come, answered or not (a failed send
      // counts as errors and keeps its place: the schedule does not slip).
      for (int64_t due = due_ns(); due <= now && due < end_ns; due = due_ns()) {
        if (now - due > kLateSendNs) ++out->late_sends;
        send_one();
        ++scheduled;
      }
    } else {
      // Refill: one whole datagram at a time. After a failed send, Receive
      // below waits a little, so a dead peer is no busy loop.
      while (static_cast<int>(pending.size()) + batch <= share && send_one()) {
      }
    }

    // Wait for replies until the oldest request times out, the next
    // scheduled send, or the run ends.
    int64_t wake_ns = end_ns;
    if (!send_order.empty()) wake_ns = std::min(wake_ns, send_order.front().first + timeout_ns);
    if (rate > 0) wake_ns = std::min(wake_ns, due_ns());
    int64_t wait_ms = std::clamp<int64_t>((wake_ns - now_ns() + 999'999) / 1'000'000, 0, 1000);
    if (pending.empty() && rate <= 0) wait_ms = 1;  // only after a failed send
    results.clear();
    client->Receive(std::chrono::milliseconds(wait_ms), &results);
    now = now_ns();
    for (const CheckResult& result : results) {
      auto it = pending.find(result.request_id);
      if (it == pending.end()) {
        ++out->late;
        continue;
      }
      out->latency.Record(static_cast<uint64_t>(std::max<int64_t>(0, now - it->second)));
      pending.erase(it);
      ++out->completed;
      if (result.status != Status::kOk) {
        ++out->errors;
      } else if (result.allowed) {
        ++out->allowed;
      } else {
        ++out->denied;
      }
    }
    // Expire: answered entries are dropped lazily from the front.
    while (!send_order.empty()) {
      auto [sent_at, id] = send_order.front();
      auto it = pending.find(id);
      if (it != pending.end() && it->second == sent_at) {
        if (now - sent_at < timeout_ns) break;
        pending.erase(it);
        ++out->timeouts;
      }
      send_order.pop_front();
    }
  }
  // The last wake may come just after the end: what was due before it still
  // goes, so a run sends exactly rate x duration checks.
  for (int64_t due = due_ns(); rate > 0 && due < end_ns; due = due_ns()) {
    if (now - due > kLateSendNs) ++out->late_sends;
    send_one();
    ++scheduled;
  }
}

// Sends one probe check (hits = 0) and waits for any reply, so a wrong
// address fails fast with a clear message instead of a run of timeouts.
bool Probe(PipelinedClient* client, std::chrono::milliseconds timeout, std::string* error) {
  CheckRequest probe;
  probe.request_id = client->NextRequestId();
  probe.user_id = "tally-load-probe";
  probe.endpoint = "/probe";
  probe.limit = 1;
  probe.window_ms = 1000;
  probe.hits = 0;
  CheckRequestRef ref(probe);
  std::vector<CheckResult> results;
  for (int attempt = 0; attempt < 3; ++attempt) {
    if (!client->SendBatch(std::span<const CheckRequestRef>(&ref, 1), error)) return false;
    auto deadline = SteadyClock::now() + timeout;
    while (SteadyClock::now() < deadline) {
      results.clear();
      client->Receive(
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()) +
              std::chrono::milliseconds(1),
          &results);
      for (const CheckResult& r : results) {
        if (r.request_id == ref.request_id) return true;
      }
    }
  }
  *error = "no reply to a probe within 3 x " + std::to_string(timeout.count()) + " ms";
  return false;
}

// Looks up the owners of `indices` at `target`, on up to `threads` threads
// (each lookup is one blocking round trip).
std::vector<OwnerLookup> LookupOwners(const DaemonAddress& target, const LoadConfig& config,
                                      int threads, std::span<const uint64_t> indices) {
  std::vector<OwnerLookup> out(indices.size());
  ClientOptions options;
  options.timeout = std::min(config.timeout, std::chrono::milliseconds(500));
  options.attempts = 3;
  std::atomic<size_t> next{0};
  auto work = [&] {
    wire::OwnerQuery query;
    query.endpoint = kLoadEndpoint;
    query.window_ms = config.window_ms;
    wire::OwnerReport report;
    for (size_t i = next.fetch_add(1); i < indices.size(); i = next.fetch_add(1)) {
      OwnerLookup& a = out[i];
      FormatLoadUserId(indices[i], &query.user_id);
      report = {};
      if (!QueryOwner(target, options, query, &report, &a.error)) continue;
      if (report.status != Status::kOk) {
        a.error = report.error.empty() ? std::string(StatusName(report.status)) : report.error;
        continue;
      }
      a.ok = true;
      a.answerer = report.node_id;
      if (!report.preference_list.empty()) a.owner = report.preference_list[0];
    }
  };
  const int n = std::max(1, std::min<int>(threads, static_cast<int>(indices.size())));
  std::vector<std::thread> pool;
  for (int t = 1; t < n; ++t) pool.emplace_back(work);
  work();
  for (auto& t : pool) t.join();
  return out;
}

// Chooses config->keys keys that pass `filter` at the target and stores
// them in config->key_ids. Returns the selection (error set on failure).
KeySelection ChooseKeys(const OwnerFilter& filter, LoadConfig* config) {
  constexpr uint64_t kChunk = 256;
  constexpr int kLookupThreads = 8;
  // Enough for one owner in 64 members; a filter naming a non-member stops here.
  const uint64_t max_examined = std::min<uint64_t>(config->keys * 64, 1'000'000'000);
  KeySelection s =
      SelectKeys(filter, config->keys, max_examined, kChunk, [&](std::span<const uint64_t> ids) {
        return LookupOwners(config->target, *config, kLookupThreads, ids);
      });
  if (s.error.empty() && filter.selects()) config->key_ids = s.indices;
  return s;
}

LoadResult RunLoad(const std::string& name, const LoadConfig& config, const ZipfTable* zipf) {
  LoadResult total;
  total.name = name;
  total.target = config.target.ToString();
  const int threads = std::max(1, std::min(config.threads, config.in_flight));
  std::vector<std::unique_ptr<PipelinedClient>> clients;
  for (int t = 0; t < threads; ++t) {
    ClientOptions options;
    options.timeout = config.timeout;
    options.attempts = 1;
    std::string error;
    auto client = PipelinedClient::Connect(config.target, options, &error);
    if (!client) {
      total.setup_error = error;
      return total;
    }
    clients.push_back(std::move(client));
  }
  std::string error;
  if (!Probe(clients[0].get(), config.timeout, &error)) {
    total.setup_error = total.target + ": " + error;
    return total;
  }
  std::vector<LoadResult> parts(static_cast<size_t>(threads));
  auto start = SteadyClock::now();
  auto end = start + std::chrono::duration_cast<SteadyClock::duration>(
                         std::chrono::duration<double>(config.duration_s));
  std::vector<std::thread> workers;
  for (int t = 0; t < threads; ++t) {
    int share = config.in_flight / threads + (t < config.in_flight % threads ? 1 : 0);
    const double rate = config.rate / threads;
    workers.emplace_back(RunWorker, std::cref(config), zipf, t, share, rate,
                         clients[static_cast<size_t>(t)].get(), end,
                         &parts[static_cast<size_t>(t)]);
  }
  for (auto& w : workers) w.join();
  total.elapsed_s = std::chrono::duration<double>(SteadyClock::now() - start).count();
  for (const LoadResult& part : parts) {
    total.sent += part.sent;
    total.completed += part.completed;
    total.allowed += part.allowed;
    total.denied += part.denied;
    total.errors += part.errors;
    total.timeouts += part.timeouts;
    total.late += part.late;
    total.late_sends += part.late_sends;
    total.latency.Merge(part.latency);
  }
  return total;
}

// ---- output ----

std::string Fixed(double value, int digits) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.*f", digits, std::isfinite(value) ? value : 0.0);
  return buf;
}

std::string ResultJson(const LoadResult& r) {
  return "{\"target\":" + JsonQuoted(r.target) + ",\"elapsed_s\":" + Fixed(r.elapsed_s, 3) +
         ",\"throughput_rps\":" + Fixed(r.throughput(), 1) +
         ",\"p50_us\":" + Fixed(r.latency.QuantileUs(0.50), 1) +
         ",\"p99_us\":" + Fixed(r.latency.QuantileUs(0.99), 1) +
         ",\"p999_us\":" + Fixed(r.latency.QuantileUs(0.999), 1) +
         ",\"sent\":" + std::to_string(r.sent) + ",\"completed\":" + std::to_string(r.completed) +
         ",\"allowed\":" + std::to_string(r.allowed) + ",\"denied\":" + std::to_string(r.denied) +
         ",\"errors\":" + std::to_string(r.errors) + ",\"timeouts\":" + std::to_string(r.timeouts) +
         ",\"late\":" + std::to_string(r.late) + ",\"sent_rps\":" + Fixed(r.sent_rate(), 1) +
         ",\"late_sends\":" + std::to_string(r.late_sends) + "}";
}

std::string ResultLine(const LoadResult& r) {
  char buf[512];
  std::snprintf(
      buf, sizeof(buf),
      "%-6s throughput_rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f allowed=%llu "
      "denied=%llu errors=%llu timeouts=%llu late=%llu sent_rps=%.0f late_sends=%llu (%s, "
      "%.2f s)",
      r.name.c_str(), r.throughput(), r.latency.QuantileUs(0.50), r.latency.QuantileUs(0.99),
      r.latency.QuantileUs(0.999), static_cast<unsigned long long>(r.allowed),
      static_cast<unsigned long long>(r.denied), static_cast<unsigned long long>(r.errors),
      static_cast<unsigned long long>(r.timeouts), static_cast<unsigned long long>(r.late),
      r.sent_rate(), static_cast<unsigned long long>(r.late_sends), r.target.c_str(), r.elapsed_s);
  return buf;
}

std::string SelectionJson(const OwnerFilter& filter, const KeySelection& s) {
  std::string out = ",\"owner_filter\":" + JsonQuoted(filter.ToString());
  if (!filter.selects()) return out;
  out += ",\"keys_examined\":" + std::to_string(s.examined) +
         ",\"owner_answerer\":" + JsonQuoted(s.answerer) + ",\"owners_examined\":{";
  bool first = true;
  for (const auto& [owner, count] : s.owners) {
    out += (first ? "" : ",") + JsonQuoted(owner) + ":" + std::to_string(count);
    first = false;
  }
  return out + "}";
}

std::string ConfigJson(const LoadConfig& c, const std::string& transport,
                       const std::string& selection_json) {
  return "{\"transport\":" + JsonQuoted(transport) + ",\"threads\":" + std::to_string(c.threads) +
         ",\"in_flight\":" + std::to_string(c.in_flight) + ",\"rate\":" + Fixed(c.rate, 1) +
         ",\"batch\":" + std::to_string(c.batch) + ",\"duration_s\":" + Fixed(c.duration_s, 3) +
         ",\"keys\":" + std::to_string(c.keys) +
         ",\"dist\":" + JsonQuoted(c.zipf ? "zipf" : "uniform") +
         ",\"zipf_s\":" + Fixed(c.zipf_s, 3) + ",\"seed\":" + std::to_string(c.seed) +
         ",\"limit\":" + std::to_string(c.limit) + ",\"window_ms\":" + std::to_string(c.window_ms) +
         ",\"timeout_ms\":" + std::to_string(c.timeout.count()) + selection_json + "}";
}

// ---- modes ----

int Fail(const std::string& message) {
  std::fprintf(stderr, "tally-load: %s\n", message.c_str());
  return kExitUsage;
}

// The socket type the target really is (Client falls back to seqpacket on its own).
std::string TransportOf(const LoadConfig& config, int* sock_type) {
  *sock_type = SOCK_DGRAM;
  if (config.target.kind == DaemonAddress::Kind::kUdp) return "udp";
  std::string error;
  auto client = PipelinedClient::Connect(config.target, {}, &error);
  if (client) {
    socklen_t len = sizeof(*sock_type);
    ::getsockopt(client->native_handle(), SOL_SOCKET, SO_TYPE, sock_type, &len);
  }
  return *sock_type == SOCK_SEQPACKET ? "unix-seqpacket" : "unix-dgram";
}

// The plain echo server as a process of its own, until SIGINT/SIGTERM.
int RunPlainEchoServer(const po::variables_map& vm, int cpu) {
  const int transports =
      static_cast<int>(vm.count("udp") + vm.count("unix") + vm.count("unix-seq"));
  if (transports > 1) return Fail("--echo-kind plain serves one of --udp, --unix, --unix-seq");
  PlainEcho::Kind kind = PlainEcho::Kind::kUdp;
  std::string address = "127.0.0.1:" + std::to_string(kDefaultUdpPort);
  if (vm.count("udp") != 0) address = vm["udp"].as<std::string>();
  if (vm.count("unix") != 0) {
    kind = PlainEcho::Kind::kUnixDatagram;
    address = vm["unix"].as<std::string>();
  }
  if (vm.count("unix-seq") != 0) {
    kind = PlainEcho::Kind::kUnixSeqpacket;
    address = vm["unix-seq"].as<std::string>();
  }
  // Block the stop signals before the echo thread starts, so only sigwait sees them.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::string error;
  std::unique_ptr<PlainEcho> echo = PlainEcho::Start(kind, address, cpu, &error);
  if (!echo) {
    std::fprintf(stderr, "tally-load: echo server cannot start: %s\n", error.c_str());
    return 1;
  }
  const std::string& bound = echo->address();
  std::printf("tallyd listening udp=%s unix=%s seq=%s\n",
              kind == PlainEcho::Kind::kUdp ? bound.c_str() : "-",
              kind == PlainEcho::Kind::kUnixDatagram ? bound.c_str() : "-",
              kind == PlainEcho::Kind::kUnixSeqpacket ? bound.c_str() : "-");
  std::fflush(stdout);
  std::fprintf(stderr, "tally-load: plain echo server (one thread) running until SIGINT/SIGTERM\n");
  int signal_number = 0;
  sigwait(&stop, &signal_number);
  std::fprintf(stderr, "tally-load: echoed %llu datagrams\n",
               static_cast<unsigned long long>(echo->echoed()));
  return 0;
}

int RunEchoServer(const po::variables_map& vm, int threads) {
  io::DaemonOptions options;
  options.echo = true;
  options.threads = threads;
  options.stats_interval = std::chrono::seconds(0);
  bool any_unix = vm.count("unix") != 0 || vm.count("unix-seq") != 0;
  options.udp = vm.count("udp") != 0 ? vm["udp"].as<std::string>()
                : any_unix           ? ""
                                     : "127.0.0.1:" + std::to_string(kDefaultUdpPort);
  if (vm.count("unix") != 0) options.unix_path = vm["unix"].as<std::string>();
  if (vm.count("unix-seq") != 0) options.unix_seq_path = vm["unix-seq"].as<std::string>();
  io::Daemon daemon(options);
  std::string error;
  if (!daemon.Start(&error)) {
    std::fprintf(stderr, "tally-load: echo server cannot start: %s\n", error.c_str());
    return 1;
  }
  auto dash = [](const std::string& s) { return s.empty() ? std::string("-") : s; };
  // Same line as tallyd's, so scripts and tests/support/daemon_process.h can
  // drive an echo server exactly like a tallyd.
  std::printf("tallyd listening udp=%s unix=%s seq=%s\n", dash(daemon.udp_address()).c_str(),
              dash(daemon.unix_path()).c_str(), dash(daemon.unix_seq_path()).c_str());
  std::fflush(stdout);
  std::fprintf(stderr, "tally-load: raw echo server (%d threads) running until SIGINT/SIGTERM\n",
               threads);
  daemon.Run();
  return 0;
}

// A socket path for an in-process echo server of `sock_type`, in a new
// temporary directory (`*dir`, to remove after); "" with `*error` on failure.
std::string EchoSocketPath(int sock_type, std::string* dir, std::string* error) {
  const char* base = getenv("TMPDIR");
  std::string tmpl =
      std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tally-load-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) {
    *error = "mkdtemp failed";
    return "";
  }
  *dir = tmpl;
  return tmpl + (sock_type == SOCK_SEQPACKET ? "/echo.seq.sock" : "/echo.sock");
}

// Starts an in-process echo server on the target's transport kind and returns
// the endpoint to reach it; `*dir` receives a temp directory to remove after.
std::optional<DaemonAddress> StartCompareEcho(io::Daemon** daemon_out,
                                              std::unique_ptr<io::Daemon>* holder,
                                              const LoadConfig& config, int sock_type, int threads,
                                              std::string* dir, std::string* error) {
  io::DaemonOptions options;
  options.echo = true;
  options.threads = threads;
  options.handle_signals = false;
  options.stats_interval = std::chrono::seconds(0);
  options.udp = "";
  if (config.target.kind == DaemonAddress::Kind::kUdp) {
    options.udp = config.target.host.find(':') != std::string::npos ? "[::1]:0" : "127.0.0.1:0";
  } else {
    std::string path = EchoSocketPath(sock_type, dir, error);
    if (path.empty()) return std::nullopt;
    (sock_type == SOCK_SEQPACKET ? options.unix_seq_path : options.unix_path) = path;
  }
  *holder = std::make_unique<io::Daemon>(options);
  if (!(*holder)->Start(error)) return std::nullopt;
  *daemon_out = holder->get();
  if (config.target.kind == DaemonAddress::Kind::kUdp)
    return DaemonAddress::ParseUdp((*holder)->udp_address());
  return DaemonAddress::Unix(sock_type == SOCK_SEQPACKET ? (*holder)->unix_seq_path()
                                                         : (*holder)->unix_path());
}

// The plain echo server for --compare-echo, on the target's transport kind.
std::unique_ptr<PlainEcho> StartComparePlainEcho(const LoadConfig& config, int sock_type, int cpu,
                                                 std::string* dir, std::string* error) {
  if (config.target.kind == DaemonAddress::Kind::kUdp) {
    const bool v6 = config.target.host.find(':') != std::string::npos;
    return PlainEcho::Start(PlainEcho::Kind::kUdp, v6 ? "[::1]:0" : "127.0.0.1:0", cpu, error);
  }
  const std::string path = EchoSocketPath(sock_type, dir, error);
  if (path.empty()) return nullptr;
  return PlainEcho::Start(sock_type == SOCK_SEQPACKET ? PlainEcho::Kind::kUnixSeqpacket
                                                      : PlainEcho::Kind::kUnixDatagram,
                          path, cpu, error);
}

// Flags only the Cap'n Proto doors (or the echo server) use; refused with
// --grpc and --http.
constexpr const char* kCapnpOnlyFlags[] = {"dist",      "zipf-s",       "seed",    "limit",
                                           "window-ms", "batch",        "threads", "owner-filter",
                                           "unix-seq",  "compare-echo", "rate",    "echo-server",
                                           "echo-kind", "echo-threads", "echo-cpu"};
// Flags only --grpc and --http use.
constexpr const char* kRlsOnlyFlags[] = {"domain", "descriptor-key", "channels", "grpc-client"};

bool Given(const po::variables_map& vm, const char* name) {
  return vm.count(name) != 0 && !vm[name].defaulted();
}

std::string RlsResultJson(const std::string& door, const RlsLoadOptions& o,
                          const RlsLoadResult& r) {
  std::string out =
      "{\"door\":" + JsonQuoted(door) + ",\"target\":" + JsonQuoted(o.target) +
      ",\"domain\":" + JsonQuoted(o.domain) + ",\"descriptor_key\":" + JsonQuoted(o.key) +
      ",\"keys\":" + std::to_string(o.values) + ",\"in_flight\":" + std::to_string(o.in_flight) +
      ",\"channels\":" + std::to_string(r.connections) + ",\"duration_s\":" + Fixed(o.seconds, 3) +
      ",\"timeout_ms\":" + std::to_string(o.timeout.count()) +
      ",\"calls\":" + std::to_string(r.calls) + ",\"seconds\":" + Fixed(r.seconds, 3) +
      ",\"throughput_rps\":" + Fixed(r.calls_per_s, 1) + ",\"p50_us\":" + Fixed(r.p50_us, 1) +
      ",\"p99_us\":" + Fixed(r.p99_us, 1) + ",\"p999_us\":" + Fixed(r.p999_us, 1) +
      ",\"ok\":" + std::to_string(r.ok) + ",\"over_limit\":" + std::to_string(r.over_limit) +
      ",\"errors\":" + std::to_string(r.errors);
  if (!r.first_error.empty()) out += ",\"first_error\":" + JsonQuoted(r.first_error);
  return out + "}";
}

std::string RlsResultLine(const std::string& door, const RlsLoadOptions& o,
                          const RlsLoadResult& r) {
  char buf[512];
  std::snprintf(buf, sizeof(buf),
                "%-6s calls=%llu throughput_rps=%.0f p50_us=%.1f p99_us=%.1f p999_us=%.1f ok=%llu "
                "over_limit=%llu errors=%llu (%s, in_flight=%d %s=%d, %.2f s)",
                door.c_str(), static_cast<unsigned long long>(r.calls), r.calls_per_s, r.p50_us,
                r.p99_us, r.p999_us, static_cast<unsigned long long>(r.ok),
                static_cast<unsigned long long>(r.over_limit),
                static_cast<unsigned long long>(r.errors), o.target.c_str(), o.in_flight,
                door == "grpc" ? "channels" : "connections", r.connections, r.seconds);
  return buf;
}

// --grpc HOST:PORT or --http HOST:PORT: ShouldRateLimit or POST /v1/check
// calls, one descriptor each (bench/rls_load.h).
int RunRlsMode(const po::variables_map& vm) {
  const bool grpc = vm.count("grpc") != 0;
  if (grpc && vm.count("http") != 0) return Fail("--grpc and --http exclude each other");
  const std::string door = grpc ? "grpc" : "http";
  if (vm.count("udp") != 0 || vm.count("unix") != 0)
    return Fail("--" + door + " excludes --udp and --unix (one door per run)");
  for (const char* flag : kCapnpOnlyFlags) {
    if (Given(vm, flag))
      return Fail("--" + std::string(flag) + " is for the Cap'n Proto doors, not --" + door);
  }
  RlsLoadOptions options;
  options.target = vm[door].as<std::string>();
  std::string host;
  uint16_t port = 0;
  if (!ParseHostPort(options.target, &host, &port))
    return Fail("bad --" + door + " address (want HOST:PORT or [V6]:PORT)");
  options.domain = vm["domain"].as<std::string>();
  options.key = vm["descriptor-key"].as<std::string>();
  options.values = vm["keys"].as<uint64_t>();
  options.in_flight = vm["in-flight"].as<int>();
  options.channels = vm["channels"].as<int>();
  options.seconds = vm["duration-s"].as<double>();
  options.timeout = std::chrono::milliseconds(vm["timeout-ms"].as<int>());
  if (options.domain.empty()) return Fail("--domain must not be empty");
  if (options.key.empty()) return Fail("--descriptor-key must not be empty");
  if (options.values < 1 || options.values > 100'000'000)
    return Fail("--keys must be 1..100000000");
  if (grpc && (options.in_flight < 1 || options.in_flight > 1'000'000))
    return Fail("--in-flight must be 1..1000000");
  if (!grpc && (options.in_flight < 1 || options.in_flight > 65535))
    return Fail("--in-flight must be 1..65535 with --http (one connection each)");
  if (!grpc && Given(vm, "channels"))
    return Fail("--channels is for --grpc; --http opens one connection per call in flight");
  if (!grpc && Given(vm, "grpc-client")) return Fail("--grpc-client is for --grpc");
  if (const std::string client = vm["grpc-client"].as<std::string>(); client == "nghttp2") {
    options.grpc_client = RlsLoadOptions::GrpcClient::kNghttp2;
  } else if (client == "grpc++") {
    options.grpc_client = RlsLoadOptions::GrpcClient::kGrpcpp;
  } else {
    return Fail("--grpc-client must be nghttp2 or grpc++");
  }
  if (options.channels < 1 || options.channels > 256) return Fail("--channels must be 1..256");
  if (!(options.seconds > 0 && options.seconds <= 86400))
    return Fail("--duration-s must be in (0, 86400]");
  if (options.timeout.count() < 1 || options.timeout.count() > 60'000)
    return Fail("--timeout-ms must be 1..60000");

  RlsLoadResult result;
  std::string error;
  const bool ran =
      grpc ? RunGrpcLoad(options, &result, &error) : RunHttpLoad(options, &result, &error);
  if (!ran) return Fail(error);
  if (vm["json"].as<bool>()) {
    std::printf("%s\n", RlsResultJson(door, options, result).c_str());
  } else {
    std::printf("%s\n", RlsResultLine(door, options, result).c_str());
  }
  if (result.errors > 0) {
    std::fprintf(stderr, "tally-load: %llu errors; the first: %s\n",
                 static_cast<unsigned long long>(result.errors), result.first_error.c_str());
  }
  return result.errors == 0 && result.ok + result.over_limit > 0 ? kExitOk : kExitNoReplies;
}

int Main(int argc, char** argv) {
  po::options_description flags(
      "tally-load: closed-loop load generator for tallyd\n\n"
      "usage: tally-load [--udp HOST:PORT | --unix PATH] [options]\n"
      "       tally-load --grpc HOST:PORT [--channels C] [--domain D] [--descriptor-key K]\n"
      "                  [--keys K] [--in-flight N] [--duration-s S] [--timeout-ms T] [--json]\n"
      "       tally-load --http HOST:PORT [--domain D] [--descriptor-key K] [--keys K] ...\n"
      "       tally-load --echo-server [--echo-kind plain|daemon] [--udp HOST:PORT] [--unix PATH] "
      "[--unix-seq PATH]\n\n"
      "--grpc sends Envoy's ShouldRateLimit to tallyd's gRPC door, --http POST /v1/check to its\n"
      "HTTP door: one descriptor (KEY, v<i>) per call in DOMAIN, i cycling over --keys values.\n\n"
      "options");
  flags.add_options()("help,h", "show this help")("udp", po::value<std::string>(),
                                                  "target UDP address (default 127.0.0.1:7070)")(
      "unix", po::value<std::string>(), "target Unix socket path (datagram or seqpacket)")(
      "grpc", po::value<std::string>(),
      "target tallyd's gRPC door (--grpc): unary ShouldRateLimit calls")(
      "http", po::value<std::string>(),
      "target tallyd's HTTP door (--http): POST /v1/check calls, one keep-alive connection per "
      "call in flight")("domain", po::value<std::string>()->default_value("edge"),
                        "--grpc/--http: the request's domain")(
      "descriptor-key", po::value<std::string>()->default_value("remote_address"),
      "--grpc/--http: the descriptor's key")("channels", po::value<int>()->default_value(4),
                                             "--grpc: channels (HTTP/2 connections), round robin")(
      "grpc-client", po::value<std::string>()->default_value("nghttp2"),
      "--grpc: nghttp2 (gRPC framed over nghttp2, light) or grpc++ (gRPC's C++ client)")(
      "unix-seq", po::value<std::string>(), "--echo-server only: Unix seqpacket socket path")(
      "in-flight", po::value<int>()->default_value(64), "checks outstanding (all threads)")(
      "duration-s", po::value<double>()->default_value(5.0), "run time in seconds")(
      "keys", po::value<uint64_t>()->default_value(1'000'000),
      "distinct keys (--grpc/--http: descriptor values, cycled)")(
      "dist", po::value<std::string>()->default_value("uniform"), "key distribution: uniform|zipf")(
      "zipf-s", po::value<double>()->default_value(1.1), "zipf exponent")(
      "seed", po::value<uint64_t>()->default_value(1), "random seed")(
      "rate", po::value<double>()->default_value(0),
      "open loop: checks per second on a fixed schedule, answered or not (0: closed loop, "
      "--in-flight)")("limit", po::value<uint64_t>()->default_value(1000), "limit per key")(
      "window-ms", po::value<uint64_t>()->default_value(1000), "window per key, ms")(
      "batch", po::value<int>()->default_value(1), "checks per datagram")(
      "threads", po::value<int>()->default_value(1), "client threads (own client each)")(
      "timeout-ms", po::value<int>()->default_value(1000),
      "a check unanswered this long is a timeout (--grpc/--http: an error)")(
      "owner-filter", po::value<std::string>()->default_value("all"),
      "use only keys the target owns (local), keys it forwards (remote), or keys member ID "
      "owns (node=ID); asks the target for each candidate key's owner first")(
      "json", po::bool_switch(), "print one JSON object")(
      "echo-server", po::bool_switch(), "run a raw echo server until SIGINT/SIGTERM")(
      "compare-echo", po::bool_switch(),
      "first run the same load against an in-process echo server, then print ratios")(
      "echo-kind", po::value<std::string>()->default_value("plain"),
      "plain: one thread in a bare recvmmsg/sendmmsg loop (the wire's floor); daemon: "
      "tallyd's own driver in --echo mode")("echo-threads", po::value<int>()->default_value(2),
                                            "echo server threads (daemon kind)")(
      "echo-cpu", po::value<int>()->default_value(-1), "pin the plain echo thread to this CPU");
  po::variables_map vm;
  if (std::string why = flags::RefuseBoostPlaceholders(argc, argv); !why.empty()) {
    return Fail(why + " (see tally-load --help)");
  }
  try {
    po::store(po::parse_command_line(argc, argv, flags), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    return Fail(std::string(e.what()) + " (see tally-load --help)");
  }
  if (vm.count("help") != 0) {
    std::cout << flags;
    return kExitUsage;
  }
  // The embedded daemon logs through spdlog; keep stdout for our results.
  spdlog::set_default_logger(spdlog::stderr_color_mt("tally-load"));
  spdlog::set_level(spdlog::level::warn);
  signal(SIGPIPE, SIG_IGN);

  if (vm.count("grpc") != 0 || vm.count("http") != 0) return RunRlsMode(vm);
  for (const char* flag : kRlsOnlyFlags) {
    if (Given(vm, flag)) return Fail("--" + std::string(flag) + " is for --grpc and --http");
  }

  const int echo_threads = vm["echo-threads"].as<int>();
  if (echo_threads < 1 || echo_threads > 256) return Fail("--echo-threads must be 1..256");
  const std::string echo_kind = vm["echo-kind"].as<std::string>();
  if (echo_kind != "plain" && echo_kind != "daemon")
    return Fail("--echo-kind must be plain or daemon");
  const bool plain_echo = echo_kind == "plain";
  const int echo_cpu = vm["echo-cpu"].as<int>();
  if (echo_cpu < -1 || echo_cpu >= CPU_SETSIZE) return Fail("--echo-cpu must be a CPU number");
  if (echo_cpu >= 0 && !plain_echo) return Fail("--echo-cpu is for --echo-kind plain");
  if (vm["echo-server"].as<bool>()) {
    return plain_echo ? RunPlainEchoServer(vm, echo_cpu) : RunEchoServer(vm, echo_threads);
  }

  LoadConfig config;
  if (vm.count("udp") != 0 && vm.count("unix") != 0)
    return Fail("--udp and --unix exclude each other");
  if (vm.count("unix-seq") != 0) return Fail("--unix-seq is for --echo-server; use --unix PATH");
  config.target.port = kDefaultUdpPort;
  if (vm.count("udp") != 0) {
    auto parsed = DaemonAddress::ParseUdp(vm["udp"].as<std::string>());
    if (!parsed) return Fail("bad --udp address (want HOST:PORT or [V6]:PORT)");
    config.target = *parsed;
  } else if (vm.count("unix") != 0) {
    config.target = DaemonAddress::Unix(vm["unix"].as<std::string>());
  }
  config.in_flight = vm["in-flight"].as<int>();
  config.duration_s = vm["duration-s"].as<double>();
  config.keys = vm["keys"].as<uint64_t>();
  config.zipf_s = vm["zipf-s"].as<double>();
  config.seed = vm["seed"].as<uint64_t>();
  config.limit = vm["limit"].as<uint64_t>();
  config.window_ms = vm["window-ms"].as<uint64_t>();
  config.batch = vm["batch"].as<int>();
  config.threads = vm["threads"].as<int>();
  config.timeout = std::chrono::milliseconds(vm["timeout-ms"].as<int>());
  config.rate = vm["rate"].as<double>();
  std::string dist = vm["dist"].as<std::string>();
  if (dist != "uniform" && dist != "zipf") return Fail("--dist must be uniform or zipf");
  config.zipf = dist == "zipf";
  std::string filter_error;
  std::optional<OwnerFilter> filter =
      OwnerFilter::Parse(vm["owner-filter"].as<std::string>(), &filter_error);
  if (!filter) return Fail("--owner-filter: " + filter_error);
  if (config.in_flight < 1 || config.in_flight > 1'000'000)
    return Fail("--in-flight must be 1..1000000");
  if (!(config.duration_s > 0 && config.duration_s <= 86400))
    return Fail("--duration-s must be in (0, 86400]");
  if (config.keys < 1 || config.keys > 100'000'000) return Fail("--keys must be 1..100000000");
  if (!(config.zipf_s > 0 && config.zipf_s <= 10)) return Fail("--zipf-s must be in (0, 10]");
  if (config.limit > kMaxLimit) return Fail("--limit exceeds 4294967295");
  if (config.window_ms < kMinWindowMs || config.window_ms > kMaxWindowMs) {
    return Fail("--window-ms must be 1 ms .. 31 days");
  }
  if (config.batch < 1 || config.batch > 500) return Fail("--batch must be 1..500");
  if (!(config.rate >= 0 && config.rate <= 100'000'000)) {
    return Fail("--rate must be 0 (closed loop) or checks per second up to 100000000");
  }
  if (config.rate > 0 && Given(vm, "in-flight"))
    return Fail("--rate and --in-flight exclude each other");
  if (config.threads < 1 || config.threads > 256) return Fail("--threads must be 1..256");
  if (config.timeout.count() < 1 || config.timeout.count() > 60'000)
    return Fail("--timeout-ms must be 1..60000");
  // Every thread needs at least one check in flight and one whole datagram.
  config.threads = std::min(config.threads, config.in_flight);
  config.batch = std::min(config.batch, config.in_flight / config.threads);
  const bool json = vm["json"].as<bool>();
  const bool compare = vm["compare-echo"].as<bool>();

  KeySelection selection;
  if (filter->selects()) {
    auto selecting = SteadyClock::now();
    selection = ChooseKeys(*filter, &config);
    if (!selection.error.empty()) return Fail(config.target.ToString() + ": " + selection.error);
    std::fprintf(stderr, "tally-load: %llu keys examined in %.1f s to choose %llu\n",
                 static_cast<unsigned long long>(selection.examined),
                 std::chrono::duration<double>(SteadyClock::now() - selecting).count(),
                 static_cast<unsigned long long>(config.keys));
  }

  std::unique_ptr<ZipfTable> zipf;
  if (config.zipf) zipf = std::make_unique<ZipfTable>(config.keys, config.zipf_s);
  int sock_type = SOCK_DGRAM;
  std::string transport = TransportOf(config, &sock_type);

  std::optional<LoadResult> echo;
  if (compare && plain_echo) {
    std::string dir, error;
    std::unique_ptr<PlainEcho> server =
        StartComparePlainEcho(config, sock_type, echo_cpu, &dir, &error);
    if (server) {
      LoadConfig echo_config = config;
      echo_config.target = config.target.kind == DaemonAddress::Kind::kUdp
                               ? *DaemonAddress::ParseUdp(server->address())
                               : DaemonAddress::Unix(server->address());
      echo = RunLoad("echo", echo_config, zipf.get());
      server.reset();
    }
    if (!dir.empty()) std::filesystem::remove_all(dir);
    if (!echo) return Fail("in-process echo server cannot start: " + error);
    if (!echo->setup_error.empty()) return Fail("echo run: " + echo->setup_error);
  } else if (compare) {
    std::unique_ptr<io::Daemon> holder;
    io::Daemon* daemon = nullptr;
    std::string dir, error;
    std::optional<DaemonAddress> echo_endpoint =
        StartCompareEcho(&daemon, &holder, config, sock_type, echo_threads, &dir, &error);
    if (!echo_endpoint) {
      if (!dir.empty()) std::filesystem::remove_all(dir);
      return Fail("in-process echo server cannot start: " + error);
    }
    std::thread runner([daemon] { daemon->Run(); });
    LoadConfig echo_config = config;
    echo_config.target = *echo_endpoint;
    echo = RunLoad("echo", echo_config, zipf.get());
    daemon->Stop();
    runner.join();
    holder.reset();
    if (!dir.empty()) std::filesystem::remove_all(dir);
    if (!echo->setup_error.empty()) return Fail("echo run: " + echo->setup_error);
  }
  LoadResult target = RunLoad("tallyd", config, zipf.get());
  if (!target.setup_error.empty()) return Fail(target.setup_error);

  const unsigned cores = std::thread::hardware_concurrency();
  const std::string note =
      (plain_echo
           ? std::string("plain echo server (one thread, recvmmsg/sendmmsg") +
                 (echo_cpu >= 0 ? ", cpu " + std::to_string(echo_cpu) : "") + ")"
           : "tallyd's driver in --echo mode with " + std::to_string(echo_threads) + " threads") +
      " ran in this process, sharing the " + std::to_string(cores) +
      " cores with the load generator; tallyd ran in its own process";
  double throughput_ratio = 0, p99_ratio = 0;
  if (echo) {
    throughput_ratio = echo->throughput() > 0 ? target.throughput() / echo->throughput() : 0;
    double echo_p99 = echo->latency.QuantileUs(0.99);
    p99_ratio = echo_p99 > 0 ? target.latency.QuantileUs(0.99) / echo_p99 : 0;
  }
  if (json) {
    std::string out =
        "{\"config\":" + ConfigJson(config, transport, SelectionJson(*filter, selection)) +
        ",\"tallyd\":" + ResultJson(target);
    if (echo) {
      out += ",\"echo\":" + ResultJson(*echo) +
             ",\"throughput_ratio\":" + Fixed(throughput_ratio, 3) +
             ",\"p99_ratio\":" + Fixed(p99_ratio, 3) + ",\"note\":" + JsonQuoted(note);
    }
    std::printf("%s}\n", out.c_str());
  } else {
    std::printf(
        "tally-load: %s threads=%d %s batch=%d dist=%s keys=%llu limit=%llu "
        "window_ms=%llu duration_s=%.2f\n",
        transport.c_str(), config.threads,
        config.rate > 0 ? ("rate=" + Fixed(config.rate, 0) + "/s").c_str()
                        : ("in_flight=" + std::to_string(config.in_flight)).c_str(),
        config.batch, config.zipf ? ("zipf(s=" + Fixed(config.zipf_s, 2) + ")").c_str() : "uniform",
        static_cast<unsigned long long>(config.keys), static_cast<unsigned long long>(config.limit),
        static_cast<unsigned long long>(config.window_ms), config.duration_s);
    if (filter->selects()) {
      std::string owners;
      for (const auto& [owner, count] : selection.owners) {
        owners += " " + owner + "=" + std::to_string(count);
      }
      std::printf("keys:  owner_filter=%s kept=%llu examined=%llu answerer=%s owners:%s\n",
                  filter->ToString().c_str(), static_cast<unsigned long long>(config.keys),
                  static_cast<unsigned long long>(selection.examined), selection.answerer.c_str(),
                  owners.c_str());
    }
    if (echo) std::printf("%s\n", ResultLine(*echo).c_str());
    std::printf("%s\n", ResultLine(target).c_str());
    if (echo) {
      std::printf("ratio  throughput tallyd/echo=%.3f p99 tallyd/echo=%.3f\nnote: %s\n",
                  throughput_ratio, p99_ratio, note.c_str());
    }
  }
  return target.completed > 0 ? kExitOk : kExitNoReplies;
}

}  // namespace
}  // namespace tally::load

int main(int argc, char** argv) { return tally::load::Main(argc, argv); }

// Closed-loop load on tallyd's Envoy doors (docs/ENVOY.md), for
// `tally-load --grpc` and `tally-load --http`:
//
//   RlsLoadOptions options;
//   options.target = "127.0.0.1:8081";        // tallyd --grpc (or --http for RunHttpLoad)
//   RlsLoadResult result;
//   std::string error;
//   if (!RunGrpcLoad(options, &result, &error)) ... the run could not start ...
//
// Each call carries one descriptor in `domain`: (key, "v<i>"), i cycling in
// order over [0, values), so value j is asked for every `values`-th call.
//  - RunGrpcLoad: unary envoy.service.ratelimit.v3 ShouldRateLimit calls,
//    `in_flight` outstanding, over `channels` HTTP/2 connections, the calls
//    going round robin, driven by one thread. `grpc_client` picks the client:
//    kNghttp2 (default) frames gRPC by hand over nghttp2's HTTP/2 session, as
//    a proxy with its own HTTP/2 codec (Envoy) does, at a fraction of gRPC's
//    client CPU, which shares the machine with tallyd in a run; kGrpcpp is
//    the C++ gRPC async client (a distinct channel argument per channel
//    keeps gRPC from sharing one subchannel).
//  - RunHttpLoad: the same descriptors as POST /v1/check (rules form) over
//    `in_flight` keep-alive connections, one request outstanding on each,
//    driven by one thread with Boost.Beast. A connection that fails (or whose
//    call times out) counts one error and is not replaced.
// Both connect everything first (within max(timeout, 5 s)) and then keep the
// calls going for `seconds`; calls outstanding at the end are waited for and
// counted. A call unanswered after `timeout` counts as an error.
//
// Thread safety: each Run* call is self-contained (its own channels, queue
// and threads); RunGrpcLoad turns off abseil's mutex deadlock detection for
// the whole process (once), as tallyd does.
#ifndef TALLY_BENCH_RLS_LOAD_H_
#define TALLY_BENCH_RLS_LOAD_H_

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace tally::load {

struct RlsLoadOptions {
  std::string target;  // HOST:PORT ([V6]:PORT) of tallyd's --grpc or --http door
  std::string domain = "edge";
  std::string key = "remote_address";       // the descriptor's key
  uint64_t values = 1000;                   // distinct descriptor values, cycled (>= 1)
  int in_flight = 64;                       // calls outstanding (>= 1); HTTP: connections
  int channels = 4;                         // gRPC connections (>= 1); ignored by RunHttpLoad
  double seconds = 5;                       // how long new calls are started (> 0)
  std::chrono::milliseconds timeout{1000};  // per call (> 0)
  enum class GrpcClient { kNghttp2, kGrpcpp };
  GrpcClient grpc_client = GrpcClient::kNghttp2;  // RunGrpcLoad's client
};

struct RlsLoadResult {
  uint64_t calls = 0;  // calls finished: ok + over_limit + errors
  double seconds = 0;  // from the first call to the last answer
  double calls_per_s = 0;
  // Latency percentiles of the answered calls (ok and over_limit), in
  // microseconds (nearest rank over every sample); 0 with no answer.
  double p50_us = 0;
  double p99_us = 0;
  double p999_us = 0;
  uint64_t ok = 0;          // answered OK (gRPC overall_code OK; HTTP "allowed":true)
  uint64_t over_limit = 0;  // answered OVER_LIMIT (HTTP 200 with "allowed":false)
  uint64_t errors = 0;      // no decision: a gRPC status, an HTTP status other than 200, a
                            // failed connection or a call past its timeout
  int connections = 0;      // gRPC channels or HTTP connections used
  std::string first_error;  // what the first error was ("" with none)
};

// Runs the gRPC load. Returns false with `*error` when the run cannot start
// (a target that is not HOST:PORT, a channel not connected in time, bad
// options); otherwise true, with what happened (errors included) in `*result`.
bool RunGrpcLoad(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error);

// Runs the HTTP POST /v1/check load; returns as RunGrpcLoad.
bool RunHttpLoad(const RlsLoadOptions& options, RlsLoadResult* result, std::string* error);

// Whether `target` is HOST:PORT or [V6]:PORT with a port in 1..65535 (the
// form both doors take); sets `*host` (brackets removed) and `*port`.
bool ParseHostPort(const std::string& target, std::string* host, uint16_t* port);

// `text` as a JSON string literal, quotes included (", \\ and control
// characters escaped); shared by both doors' bodies and tally-load's reports.
std::string JsonQuoted(std::string_view text);

}  // namespace tally::load

#endif  // TALLY_BENCH_RLS_LOAD_H_

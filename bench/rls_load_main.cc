// tally-rls-load: a load generator for tallyd's Envoy door (docs/ENVOY.md):
// unary ShouldRateLimit calls with N in flight over one channel, through the
// C++ gRPC async client; reports calls/s, p50/p99 latency and the answers.
//
//   tally-rls-load --target 127.0.0.1:8081 --in-flight 64 --seconds 5
//       --domain edge --key remote_address --values 1000
//
// Each call carries one descriptor (key, value-i), i cycling over --values
// distinct values. The floor for a ratio is the same run against a key no
// rule matches (--key nothing): gRPC and the rules lookup without a decision.
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <boost/program_options.hpp>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "client/program_options_guard.h"
#include "envoy/service/ratelimit/v3/rls.grpc.pb.h"

namespace {

namespace po = boost::program_options;
namespace rlsv3 = envoy::service::ratelimit::v3;
using Clock = std::chrono::steady_clock;

struct Slot {
  grpc::ClientContext context;
  rlsv3::RateLimitRequest request;
  rlsv3::RateLimitResponse response;
  grpc::Status status;
  std::unique_ptr<grpc::ClientAsyncResponseReader<rlsv3::RateLimitResponse>> rpc;
  Clock::time_point started;
};

}  // namespace

int main(int argc, char** argv) {
  std::string target = "127.0.0.1:8081", domain = "edge", key = "remote_address";
  int in_flight = 64;
  double seconds = 5;
  uint64_t values = 1000;
  po::options_description options("tally-rls-load options");
  options.add_options()("help,h", "help")("target", po::value(&target), "tallyd --grpc-listen")(
      "in-flight", po::value(&in_flight), "calls in flight")(
      "seconds", po::value(&seconds), "duration")("domain", po::value(&domain), "domain")(
      "key", po::value(&key), "descriptor key")("values", po::value(&values),
                                                "distinct descriptor values, cycled");
  po::variables_map vm;
  if (std::string why = tally::flags::RefuseBoostPlaceholders(argc, argv); !why.empty()) {
    std::fprintf(stderr, "tally-rls-load: %s\n", why.c_str());
    return 2;
  }
  try {
    po::store(po::parse_command_line(argc, argv, options), vm);
    po::notify(vm);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally-rls-load: %s\n", e.what());
    return 2;
  }
  if (vm.count("help") || in_flight < 1 || values < 1 || seconds <= 0) {
    std::cout << options << "\n";
    return vm.count("help") ? 0 : 2;
  }

  auto channel = grpc::CreateChannel(target, grpc::InsecureChannelCredentials());
  auto stub = rlsv3::RateLimitService::NewStub(channel);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(5))) {
    std::fprintf(stderr, "tally-rls-load: cannot connect to %s\n", target.c_str());
    return 1;
  }
  grpc::CompletionQueue cq;
  std::vector<std::unique_ptr<Slot>> slots(static_cast<size_t>(in_flight));
  uint64_t next_value = 0;
  auto launch = [&](size_t i) {
    auto slot = std::make_unique<Slot>();
    slot->request.set_domain(domain);
    auto* entry = slot->request.add_descriptors()->add_entries();
    entry->set_key(key);
    entry->set_value("v" + std::to_string(next_value++ % values));
    slot->started = Clock::now();
    slot->rpc = stub->PrepareAsyncShouldRateLimit(&slot->context, slot->request, &cq);
    slot->rpc->StartCall();
    slot->rpc->Finish(&slot->response, &slot->status, reinterpret_cast<void*>(i));
    slots[i] = std::move(slot);
  };

  const Clock::time_point start = Clock::now();
  const Clock::time_point end =
      start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
  for (size_t i = 0; i < slots.size(); ++i) launch(i);
  std::vector<uint32_t> latencies_us;
  latencies_us.reserve(1 << 20);
  uint64_t ok = 0, over = 0, errors = 0;
  size_t outstanding = slots.size();
  bool stopping = false;
  void* tag = nullptr;
  bool got = false;
  while (outstanding > 0 && cq.Next(&tag, &got)) {
    const size_t i = reinterpret_cast<size_t>(tag);
    Slot& s = *slots[i];
    const Clock::time_point now = Clock::now();
    if (!s.status.ok()) {
      ++errors;
      if (errors == 1) {
        std::fprintf(stderr, "tally-rls-load: first error: %s\n", s.status.error_message().c_str());
      }
    } else if (s.response.overall_code() == rlsv3::RateLimitResponse::OVER_LIMIT) {
      ++over;
    } else {
      ++ok;
    }
    latencies_us.push_back(static_cast<uint32_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(now - s.started).count()));
    if (now >= end) stopping = true;
    if (stopping) {
      --outstanding;
      slots[i].reset();
    } else {
      launch(i);
    }
  }
  const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
  std::sort(latencies_us.begin(), latencies_us.end());
  auto pct = [&](double p) -> uint32_t {
    if (latencies_us.empty()) return 0;
    return latencies_us[std::min(
        latencies_us.size() - 1,
        static_cast<size_t>(p * static_cast<double>(latencies_us.size())))];
  };
  std::printf(
      "calls=%zu seconds=%.2f calls_per_s=%.0f p50_us=%u p99_us=%u ok=%llu over_limit=%llu "
      "errors=%llu in_flight=%d\n",
      latencies_us.size(), elapsed, static_cast<double>(latencies_us.size()) / elapsed, pct(0.5),
      pct(0.99), static_cast<unsigned long long>(ok), static_cast<unsigned long long>(over),
      static_cast<unsigned long long>(errors), in_flight);
  cq.Shutdown();
  return errors == 0 ? 0 : 1;
}

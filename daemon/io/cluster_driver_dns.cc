// ClusterDriver: --join dns. Seeds resolved into canonical addresses, and
// resolved again while the node is alone or a member is suspect or dead.
#include <fmt/ranges.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "daemon/io/cluster_driver_impl.h"

namespace tally::io {
namespace {

using cluster_internal::Canonical;

}  // namespace

std::vector<std::string> ClusterDriver::Impl::ResolveDnsSeeds() {
  std::string errors;
  std::vector<std::string> resolved =
      io::ResolveDnsSeeds(*options.resolver, dns_seeds, gossip_port, &errors);
  dns_resolutions.fetch_add(1, std::memory_order_relaxed);
  if (!errors.empty()) {
    dns_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::debug("join dns: {}", errors);
  }
  std::vector<std::string> out;
  for (const std::string& address : resolved) {
    std::string why;
    if (std::optional<std::string> c = Canonical(address, &why)) out.push_back(*c);
  }
  return out;
}

bool ClusterDriver::Impl::WantsReResolveLocked() const {
  size_t others_up = 0;
  for (const auto& [id, m] : node->swim().members()) {
    if (id == options.node.node_id) continue;
    if (m.state == membership::MemberState::kSuspect || m.state == membership::MemberState::kDead) {
      return true;
    }
    if (m.up()) ++others_up;
  }
  return others_up == 0;
}

void ClusterDriver::Impl::DnsLoop() {
  std::unique_lock<std::mutex> lock(dns_mu);
  for (;;) {
    if (dns_cv.wait_for(lock, options.dns_interval, [this] { return dns_stop; })) return;
    lock.unlock();
    bool wanted;
    {
      std::lock_guard<std::mutex> node_lock(mu);
      wanted = WantsReResolveLocked();
    }
    if (wanted) {
      std::vector<std::string> seeds = static_seeds;
      for (std::string& a : ResolveDnsSeeds()) seeds.push_back(std::move(a));
      std::erase(seeds, options.node.gossip_address);
      std::lock_guard<std::mutex> node_lock(mu);
      std::vector<std::string> before = node->swim().seeds();
      std::vector<std::string> sorted = seeds;
      std::sort(before.begin(), before.end());
      std::sort(sorted.begin(), sorted.end());
      sorted.erase(std::unique(sorted.begin(), sorted.end()), sorted.end());
      if (before != sorted) {
        spdlog::info("join dns: seeds now {}", fmt::join(sorted, ","));
        node->SetSeeds(std::move(sorted));
      }
    }
    lock.lock();
  }
}

void ClusterDriver::Impl::StopDnsThread() {
  {
    std::lock_guard<std::mutex> lock(dns_mu);
    dns_stop = true;
  }
  dns_cv.notify_all();
  if (dns_thread.joinable()) dns_thread.join();
}

}  // namespace tally::io

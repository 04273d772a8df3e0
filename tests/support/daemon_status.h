// What a tallyd under test says about itself: its status answer over its UDP
// door, which needs no descriptor of the daemon's (tests that exhaust them)
// and no rules doors.
#ifndef TALLY_TESTS_SUPPORT_DAEMON_STATUS_H_
#define TALLY_TESTS_SUPPORT_DAEMON_STATUS_H_

#include <chrono>
#include <optional>
#include <string>

#include "client/admin.h"
#include "tally/client.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {

// `daemon`'s status report, asked up to `attempts` times `timeout` apart, or
// nullopt if it did not answer. REQUIRES: `daemon` was started with a UDP door.
inline std::optional<wire::StatusReport> UdpStatus(
    const DaemonProcess& daemon, std::chrono::milliseconds timeout = std::chrono::milliseconds(500),
    int attempts = 3) {
  DaemonAddress address;
  address.host = daemon.udp_host();
  address.port = daemon.udp_port();
  ClientOptions options;
  options.timeout = timeout;
  options.attempts = attempts;
  wire::StatusReport report;
  std::string error;
  if (!QueryStatus(address, options, &report, &error)) return std::nullopt;
  return report;
}

// The status counter `name` of `report`, or nullopt if it has none.
inline std::optional<uint64_t> StatusCounter(const wire::StatusReport& report,
                                             const std::string& name) {
  for (const auto& [n, v] : report.counters) {
    if (n == name) return v;
  }
  return std::nullopt;
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_DAEMON_STATUS_H_

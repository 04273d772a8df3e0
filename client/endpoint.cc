// DaemonAddress parsing and printing for the client library (include/tally/client.h).
#include <arpa/inet.h>

#include <charconv>
#include <string>
#include <string_view>

#include "tally/client.h"

namespace tally {
namespace {

// Parses a decimal port in [1, 65535]: digits only, no sign, no spaces.
std::optional<uint16_t> ParsePort(std::string_view text) {
  if (text.empty() || text.size() > 5) return std::nullopt;
  unsigned value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  if (value == 0 || value > 65535) return std::nullopt;
  return static_cast<uint16_t>(value);
}

bool IsNumericAddress(int family, const std::string& host) {
  unsigned char buf[sizeof(in6_addr)];
  return inet_pton(family, host.c_str(), buf) == 1;
}

}  // namespace

std::optional<DaemonAddress> DaemonAddress::ParseUdp(std::string_view host_port) {
  std::string host;
  std::string_view port_text;
  if (!host_port.empty() && host_port.front() == '[') {
    size_t close = host_port.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = std::string(host_port.substr(1, close - 1));
    port_text = host_port.substr(close + 2);
    if (!IsNumericAddress(AF_INET6, host)) return std::nullopt;
  } else {
    size_t colon = host_port.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = std::string(host_port.substr(0, colon));
    port_text = host_port.substr(colon + 1);
    // An IPv6 address must be bracketed, or its last group would read as the port.
    if (!IsNumericAddress(AF_INET, host)) return std::nullopt;
  }
  std::optional<uint16_t> port = ParsePort(port_text);
  if (!port) return std::nullopt;
  DaemonAddress endpoint;
  endpoint.kind = Kind::kUdp;
  endpoint.host = std::move(host);
  endpoint.port = *port;
  return endpoint;
}

DaemonAddress DaemonAddress::Unix(std::string path) {
  DaemonAddress endpoint;
  endpoint.kind = Kind::kUnix;
  endpoint.host.clear();
  endpoint.path = std::move(path);
  return endpoint;
}

std::string DaemonAddress::ToString() const {
  if (kind == Kind::kUnix) return "unix:" + path;
  std::string port_text = std::to_string(port);
  if (host.find(':') != std::string::npos) return "[" + host + "]:" + port_text;
  return host + ":" + port_text;
}

}  // namespace tally

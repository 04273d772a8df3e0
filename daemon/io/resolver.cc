#include "daemon/io/resolver.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <charconv>

namespace tally::io {
namespace {

class GetaddrinfoResolver : public Resolver {
 public:
  std::vector<std::string> Resolve(const std::string& name, std::string* error) override {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    addrinfo* result = nullptr;
    const int rc = getaddrinfo(name.c_str(), nullptr, &hints, &result);
    std::vector<std::string> out;
    if (rc != 0) {
      *error = name + ": " + gai_strerror(rc);
      return out;
    }
    for (addrinfo* ai = result; ai != nullptr; ai = ai->ai_next) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* addr = nullptr;
      if (ai->ai_family == AF_INET) {
        addr = &reinterpret_cast<const sockaddr_in*>(ai->ai_addr)->sin_addr;
      } else if (ai->ai_family == AF_INET6) {
        addr = &reinterpret_cast<const sockaddr_in6*>(ai->ai_addr)->sin6_addr;
      } else {
        continue;
      }
      if (inet_ntop(ai->ai_family, addr, text, sizeof(text)) != nullptr) out.emplace_back(text);
    }
    freeaddrinfo(result);
    if (out.empty()) *error = name + ": no IPv4 or IPv6 address";
    return out;
  }
};

}  // namespace

std::shared_ptr<Resolver> SystemResolver() { return std::make_shared<GetaddrinfoResolver>(); }

std::optional<DnsSeed> ParseDnsSeed(const std::string& text, std::string* error) {
  DnsSeed seed;
  seed.name = text;
  if (size_t colon = text.rfind(':'); colon != std::string::npos) {
    seed.name = text.substr(0, colon);
    const std::string port = text.substr(colon + 1);
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 1 ||
        value > 65535) {
      *error = "dns:" + text + ": expected NAME or NAME:PORT with PORT in 1..65535";
      return std::nullopt;
    }
    seed.port = static_cast<uint16_t>(value);
  }
  if (seed.name.empty() || seed.name.size() > 253 ||
      seed.name.find_first_of(":/ \t") != std::string::npos) {
    *error = "dns:" + text + ": expected a host name";
    return std::nullopt;
  }
  return seed;
}

std::vector<std::string> ResolveDnsSeeds(Resolver& resolver, const std::vector<DnsSeed>& seeds,
                                         uint16_t default_port, std::string* errors) {
  std::vector<std::string> out;
  for (const DnsSeed& seed : seeds) {
    std::string error;
    const uint16_t port = seed.port != 0 ? seed.port : default_port;
    for (const std::string& ip : resolver.Resolve(seed.name, &error)) {
      const bool v6 = ip.find(':') != std::string::npos;
      out.push_back((v6 ? "[" + ip + "]" : ip) + ":" + std::to_string(port));
    }
    if (!error.empty()) *errors += (errors->empty() ? "" : "; ") + error;
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace tally::io

// Name resolution for `--join dns:NAME[:PORT]` (a Kubernetes headless
// Service: one A/AAAA record per ready pod). The interface lets tests inject
// a fake; SystemResolver() uses getaddrinfo (blocking: call it off the I/O
// threads).
//
// Thread safety: Resolver implementations must be callable from any thread;
// the free functions are pure apart from the resolver they are given.
#ifndef TALLY_DAEMON_IO_RESOLVER_H_
#define TALLY_DAEMON_IO_RESOLVER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace tally::io {

class Resolver {
 public:
  virtual ~Resolver() = default;
  // Every IPv4 and IPv6 address `name` resolves to, as numeric strings
  // ("10.0.0.7", "fd00::7"). Empty with `*error` set when it resolves to
  // nothing or resolution failed.
  virtual std::vector<std::string> Resolve(const std::string& name, std::string* error) = 0;
};

// getaddrinfo(AF_UNSPEC) based.
std::shared_ptr<Resolver> SystemResolver();

// "NAME" or "NAME:PORT" (the part after "dns:"). NAME is a host name (no
// ':'), 1..253 bytes; PORT 1..65535. nullopt with `*error` otherwise.
struct DnsSeed {
  std::string name;
  uint16_t port = 0;  // 0: the node's own gossip port
};
std::optional<DnsSeed> ParseDnsSeed(const std::string& text, std::string* error);

// Resolves every seed into "ip:port" / "[ip6]:port" addresses (port 0 in a
// seed means `default_port`), de-duplicated, in a stable (sorted) order. A
// name that fails adds nothing and appends its reason to `*errors`.
std::vector<std::string> ResolveDnsSeeds(Resolver& resolver, const std::vector<DnsSeed>& seeds,
                                         uint16_t default_port, std::string* errors);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_RESOLVER_H_

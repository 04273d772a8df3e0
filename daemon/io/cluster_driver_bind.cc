// ClusterDriver: socket setup. The gossip endpoint (one UDP socket and one TCP
// listener on the same HOST:PORT) and the canonical spelling of addresses.
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/sockets.h"

namespace tally::io {
namespace {

using cluster_internal::Canonical;
using cluster_internal::Fail;

constexpr int kBindAttempts = 50;

bool IsWildcard(const HostPort& hp) {
  return hp.host == "0.0.0.0" || hp.host == "::" || hp.host == "0:0:0:0:0:0:0:0";
}

}  // namespace

namespace cluster_internal {

// "ip:port" in the one spelling every node uses (FormatSockaddr's).
std::optional<std::string> Canonical(const std::string& text, std::string* why) {
  std::optional<HostPort> hp = ParseHostPort(text, why);
  if (!hp) return std::nullopt;
  if (hp->port == 0) {
    *why = "port 0 is not a reachable address: '" + text + "'";
    return std::nullopt;
  }
  sockaddr_storage addr;
  socklen_t len = ToSockaddr(*hp, &addr);
  return FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), len);
}

}  // namespace cluster_internal

bool ClusterDriver::Impl::Bind(std::string* error) {
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(options.gossip, &why);
  if (!hp) return Fail(error, "gossip: " + why);
  const int family = hp->v6 ? AF_INET6 : AF_INET;
  const int one = 1;
  for (int attempt = 0; attempt < kBindAttempts; ++attempt) {
    std::vector<UniqueFd> udp;
    std::string bound;
    if (!BindUdpGroup(*hp, 1, &udp, &bound, &why)) return Fail(error, "gossip " + why);
    std::optional<HostPort> bound_hp = ParseHostPort(bound, &why);
    if (!bound_hp) return Fail(error, "gossip: " + why);
    UniqueFd listener(socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!listener.valid()) return Fail(error, std::string("socket: ") + strerror(errno));
    setsockopt(listener.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (hp->v6) setsockopt(listener.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    sockaddr_storage addr;
    socklen_t len = ToSockaddr(*bound_hp, &addr);
    if (bind(listener.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) {
      int err = errno;
      if (err == EADDRINUSE && hp->port == 0) continue;  // UDP port free, TCP not: again
      return Fail(error, "bind tcp " + bound + ": " + strerror(err));
    }
    if (listen(listener.get(), SOMAXCONN) != 0) {
      return Fail(error, std::string("listen: ") + strerror(errno));
    }
    boost::system::error_code ec;
    acceptor.assign(hp->v6 ? tcp::v6() : tcp::v4(), listener.Release(), ec);
    if (ec) return Fail(error, "acceptor: " + ec.message());
    gossip_udp.assign(udp[0].Release());
    if (!options.advertise.empty()) {
      std::optional<std::string> a = Canonical(options.advertise, &why);
      if (!a) return Fail(error, "advertise: " + why);
      options.node.gossip_address = *a;
    } else {
      if (IsWildcard(*bound_hp)) {
        return Fail(error, "gossip address " + bound +
                               " is a wildcard: peers cannot reach it; pass --advertise");
      }
      options.node.gossip_address = bound;
    }
    return true;
  }
  return Fail(error, "gossip: no port free for both UDP and TCP after " +
                         std::to_string(kBindAttempts) + " attempts");
}

}  // namespace tally::io

// ListenTcp: the one way tallyd's TCP doors (gRPC, HTTP) open a listener.
#ifndef TALLY_DAEMON_IO_TCP_LISTEN_H_
#define TALLY_DAEMON_IO_TCP_LISTEN_H_

#include <boost/asio/ip/tcp.hpp>
#include <string>
#include <string_view>

namespace tally::io {

// Opens `acceptor` (not yet open; borrowed) listening on `listen`, HOST:PORT
// with HOST an IP address (port 0 picks a free one), with SO_REUSEADDR and the
// system's largest backlog. On success `*bound` is the address it listens on,
// HOST:PORT ("[HOST]:PORT" for IPv6). On failure the acceptor may be open but
// is not listening, and `*error` says why, prefixed with `door` ("http: ...").
// Thread safety: as the acceptor's own operations.
bool ListenTcp(const std::string& listen, std::string_view door,
               boost::asio::ip::tcp::acceptor* acceptor, std::string* bound, std::string* error);

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_TCP_LISTEN_H_

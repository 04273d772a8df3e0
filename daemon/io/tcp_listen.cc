#include "daemon/io/tcp_listen.h"

#include <optional>

#include "daemon/io/sockets.h"

namespace tally::io {

bool ListenTcp(const std::string& listen, std::string_view door,
               boost::asio::ip::tcp::acceptor* acceptor, std::string* bound, std::string* error) {
  namespace asio = boost::asio;
  const std::string prefix = std::string(door) + ": ";
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(listen, &why);
  if (!hp) {
    *error = prefix + why;
    return false;
  }
  boost::system::error_code ec;
  const asio::ip::address address = asio::ip::make_address(hp->host, ec);
  if (ec) {
    *error = prefix + "not an IP address: " + hp->host;
    return false;
  }
  const asio::ip::tcp::endpoint endpoint(address, hp->port);
  acceptor->open(endpoint.protocol(), ec);
  if (!ec) acceptor->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor->bind(endpoint, ec);
  if (!ec) acceptor->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    *error = prefix + "cannot listen on " + listen + ": " + ec.message();
    return false;
  }
  const asio::ip::tcp::endpoint local = acceptor->local_endpoint(ec);
  const std::string host = local.address().to_string();
  *bound = (local.address().is_v6() ? "[" + host + "]" : host) + ":" + std::to_string(local.port());
  return true;
}

}  // namespace tally::io

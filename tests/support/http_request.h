// One HTTP/1.1 exchange with a tallyd's --http door, for tests: a blocking
// Boost.Beast client on a fresh connection.
#ifndef TALLY_TESTS_SUPPORT_HTTP_REQUEST_H_
#define TALLY_TESTS_SUPPORT_HTTP_REQUEST_H_

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <cstdint>
#include <exception>
#include <string>

#include "tests/support/daemon_process.h"

namespace tally::testing {

struct HttpResult {
  int status = 0;  // 0: no answer (the reason is in `body`)
  std::string body;
  std::string content_type;
};

// Sends `method target` to `address` ("ip:port") with `body` as JSON (always
// for POST, otherwise only when not empty) on a new connection and reads the
// whole answer (up to 64 MiB), giving up after `timeout` (scaled under a
// sanitizer). Never throws: a failure is status 0 with the error as body.
inline HttpResult HttpRequest(const std::string& address, boost::beast::http::verb method,
                              const std::string& target, const std::string& body = "",
                              std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  namespace asio = boost::asio;
  namespace beast = boost::beast;
  namespace http = beast::http;
  HttpResult result;
  try {
    const size_t colon = address.rfind(':');
    asio::io_context io;
    beast::tcp_stream stream(io);
    stream.expires_after(ScaledWait(timeout));
    stream.connect({asio::ip::make_address(address.substr(0, colon)),
                    static_cast<uint16_t>(std::stoi(address.substr(colon + 1)))});
    http::request<http::string_body> request(method, target, 11);
    request.set(http::field::host, address);
    if (!body.empty() || method == http::verb::post) {
      request.set(http::field::content_type, "application/json");
      request.body() = body;
      request.prepare_payload();
    }
    http::write(stream, request);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(64u << 20);
    http::read(stream, buffer, parser);
    result.status = static_cast<int>(parser.get().result_int());
    result.body = parser.get().body();
    result.content_type = std::string(parser.get()[http::field::content_type]);
  } catch (const std::exception& e) {
    result.body = e.what();
  }
  return result;
}

inline HttpResult HttpGet(const std::string& address, const std::string& target) {
  return HttpRequest(address, boost::beast::http::verb::get, target);
}

inline HttpResult HttpPost(const std::string& address, const std::string& target,
                           const std::string& body) {
  return HttpRequest(address, boost::beast::http::verb::post, target, body);
}

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_HTTP_REQUEST_H_

// DaemonAddress parsing and printing.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <type_traits>

#include "tally/client.h"

namespace tally {
namespace {

struct ParseCase {
  const char* text;
  bool ok;
  const char* host;  // when ok
  uint16_t port;     // when ok
  const char* printed;
};

TEST(EndpointTest, ParseUdpTable) {
  const ParseCase cases[] = {
      {"127.0.0.1:7070", true, "127.0.0.1", 7070, "127.0.0.1:7070"},
      {"0.0.0.0:1", true, "0.0.0.0", 1, "0.0.0.0:1"},
      {"10.1.2.3:65535", true, "10.1.2.3", 65535, "10.1.2.3:65535"},
      {"[::1]:7070", true, "::1", 7070, "[::1]:7070"},
      {"[fe80::1:2]:53", true, "fe80::1:2", 53, "[fe80::1:2]:53"},
      {"[::ffff:127.0.0.1]:80", true, "::ffff:127.0.0.1", 80, "[::ffff:127.0.0.1]:80"},
      {"127.0.0.1:007070", false, "", 0, ""},  // more than 5 digits
      {"127.0.0.1:0", false, "", 0, ""},
      {"127.0.0.1:65536", false, "", 0, ""},
      {"127.0.0.1:99999", false, "", 0, ""},
      {"127.0.0.1:-1", false, "", 0, ""},
      {"127.0.0.1:+80", false, "", 0, ""},
      {"127.0.0.1:80x", false, "", 0, ""},
      {"127.0.0.1: 80", false, "", 0, ""},
      {"127.0.0.1:", false, "", 0, ""},
      {"127.0.0.1", false, "", 0, ""},
      {":7070", false, "", 0, ""},
      {"", false, "", 0, ""},
      {"localhost:7070", false, "", 0, ""},
      {"256.0.0.1:7070", false, "", 0, ""},
      {"::1:7070", false, "", 0, ""},  // IPv6 needs brackets
      {"[::1]", false, "", 0, ""},
      {"[::1]7070", false, "", 0, ""},
      {"[127.0.0.1]:7070", false, "", 0, ""},
      {"[::1:7070", false, "", 0, ""},
      {"[]:7070", false, "", 0, ""},
  };
  for (const ParseCase& c : cases) {
    SCOPED_TRACE(c.text);
    std::optional<DaemonAddress> parsed = DaemonAddress::ParseUdp(c.text);
    ASSERT_EQ(parsed.has_value(), c.ok);
    if (!c.ok) continue;
    EXPECT_EQ(parsed->kind, DaemonAddress::Kind::kUdp);
    EXPECT_EQ(parsed->host, c.host);
    EXPECT_EQ(parsed->port, c.port);
    EXPECT_EQ(parsed->ToString(), c.printed);
    // Printing round-trips.
    std::optional<DaemonAddress> again = DaemonAddress::ParseUdp(parsed->ToString());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->host, parsed->host);
    EXPECT_EQ(again->port, parsed->port);
  }
}

TEST(EndpointTest, Unix) {
  DaemonAddress endpoint = DaemonAddress::Unix("/run/tally/tally.sock");
  EXPECT_EQ(endpoint.kind, DaemonAddress::Kind::kUnix);
  EXPECT_EQ(endpoint.path, "/run/tally/tally.sock");
  EXPECT_EQ(endpoint.ToString(), "unix:/run/tally/tally.sock");
}

TEST(EndpointTest, DefaultIsUdpLoopback) {
  DaemonAddress endpoint;
  endpoint.port = kDefaultUdpPort;
  EXPECT_EQ(endpoint.ToString(), "127.0.0.1:7070");
}

// Embedders that still spell the old name keep building for one release.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
static_assert(std::is_same_v<Endpoint, DaemonAddress>);
#pragma GCC diagnostic pop

}  // namespace
}  // namespace tally

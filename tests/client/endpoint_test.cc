// Endpoint parsing and printing.
#include <gtest/gtest.h>

#include <optional>
#include <string>

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
    std::optional<Endpoint> parsed = Endpoint::ParseUdp(c.text);
    ASSERT_EQ(parsed.has_value(), c.ok);
    if (!c.ok) continue;
    EXPECT_EQ(parsed->kind, Endpoint::Kind::kUdp);
    EXPECT_EQ(parsed->host, c.host);
    EXPECT_EQ(parsed->port, c.port);
    EXPECT_EQ(parsed->ToString(), c.printed);
    // Printing round-trips.
    std::optional<Endpoint> again = Endpoint::ParseUdp(parsed->ToString());
    ASSERT_TRUE(again.has_value());
    EXPECT_EQ(again->host, parsed->host);
    EXPECT_EQ(again->port, parsed->port);
  }
}

TEST(EndpointTest, Unix) {
  Endpoint endpoint = Endpoint::Unix("/run/tally/tally.sock");
  EXPECT_EQ(endpoint.kind, Endpoint::Kind::kUnix);
  EXPECT_EQ(endpoint.path, "/run/tally/tally.sock");
  EXPECT_EQ(endpoint.ToString(), "unix:/run/tally/tally.sock");
}

TEST(EndpointTest, DefaultIsUdpLoopback) {
  Endpoint endpoint;
  endpoint.port = kDefaultUdpPort;
  EXPECT_EQ(endpoint.ToString(), "127.0.0.1:7070");
}

}  // namespace
}  // namespace tally

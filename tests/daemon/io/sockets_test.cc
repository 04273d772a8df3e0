// daemon/io/sockets.h: the SO_REUSEPORT UDP group.
#include "daemon/io/sockets.h"

#include <gtest/gtest.h>

#include <optional>
#include <set>
#include <string>
#include <vector>

namespace tally::io {
namespace {

// Linux lets a SO_REUSEPORT socket bound to port 0 land on a port another
// SO_REUSEPORT socket of the same user holds; the two then split each other's
// datagrams. It once put a tallyd's gossip socket on its own client port (a
// 7-node test never formed: its client port got the gossip). Groups bound to
// port 0 now always get a port of their own. 300 groups of 2 make a shared
// port likely without the fix (about 1 in 100 per bind on 28k ephemeral ports).
TEST(BindUdpGroupTest, PortZeroGroupsNeverShareAPort) {
  const HostPort any{"127.0.0.1", 0, false};
  std::vector<std::vector<UniqueFd>> groups;
  std::set<std::string> addresses;
  for (int i = 0; i < 300; ++i) {
    std::vector<UniqueFd> sockets;
    std::string bound, error;
    ASSERT_TRUE(BindUdpGroup(any, 2, &sockets, &bound, &error)) << error;
    ASSERT_EQ(sockets.size(), 2u);
    EXPECT_TRUE(addresses.insert(bound).second) << bound << " was given twice";
    groups.push_back(std::move(sockets));
  }
}

// A given port that another group holds is refused, not shared.
TEST(BindUdpGroupTest, AHeldPortIsRefused) {
  std::vector<UniqueFd> first, second;
  std::string bound, error;
  ASSERT_TRUE(BindUdpGroup(HostPort{"127.0.0.1", 0, false}, 2, &first, &bound, &error)) << error;
  std::optional<HostPort> taken = ParseHostPort(bound, &error);
  ASSERT_TRUE(taken.has_value()) << error;
  std::string again;
  EXPECT_FALSE(BindUdpGroup(*taken, 2, &second, &again, &error));
  EXPECT_NE(error.find("bind udp"), std::string::npos) << error;
  EXPECT_TRUE(second.empty());
}

}  // namespace
}  // namespace tally::io

// CgroupCpuLimit over fake cgroup trees: the CPUs a container's CPU limit
// allows, for cgroup v2, v1 and both at once.
#include "daemon/io/cpu_quota.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/support/daemon_process.h"

namespace tally::io {
namespace {

namespace fs = std::filesystem;

class CpuQuotaTest : public ::testing::Test {
 protected:
  // Writes `text` to ROOT/relative, making its directories.
  void Write(const std::string& relative, const std::string& text) {
    const fs::path file = fs::path(dir_.path()) / relative;
    fs::create_directories(file.parent_path());
    std::ofstream(file) << text;
  }
  void MakeDir(const std::string& relative) {
    fs::create_directories(fs::path(dir_.path()) / relative);
  }
  int Limit(const std::string& proc_self_cgroup) {
    return CgroupCpuLimit(dir_.path(), proc_self_cgroup);
  }

  tally::testing::TempDir dir_;
};

TEST_F(CpuQuotaTest, V2QuotaRoundsUp) {
  Write("kubepods/pod1/cpu.max", "150000 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1\n"), 2);
  Write("kubepods/pod1/cpu.max", "200000 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1\n"), 2);
  Write("kubepods/pod1/cpu.max", "50000 100000\n");  // 500m: still one thread
  EXPECT_EQ(Limit("0::/kubepods/pod1\n"), 1);
}

TEST_F(CpuQuotaTest, V2NoQuotaIsZero) {
  Write("system.slice/tallyd.service/cpu.max", "max 100000\n");
  EXPECT_EQ(Limit("0::/system.slice/tallyd.service\n"), 0);
  EXPECT_EQ(Limit(""), 0);
  EXPECT_EQ(Limit("0::/not/there\n"), 0);
}

// The tightest limit on the way to the root wins: a pod's limit caps the
// container below it that sets none, or a looser one.
TEST_F(CpuQuotaTest, V2TightestAncestorWins) {
  Write("kubepods/cpu.max", "800000 100000\n");
  Write("kubepods/pod1/cpu.max", "300000 100000\n");
  Write("kubepods/pod1/c1/cpu.max", "max 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1/c1\n"), 3);
  Write("kubepods/pod1/c1/cpu.max", "600000 100000\n");
  EXPECT_EQ(Limit("0::/kubepods/pod1/c1\n"), 3);
  // Inside a cgroup namespace the path is "/" and the root holds the limit.
  Write("cpu.max", "100000 100000\n");
  EXPECT_EQ(Limit("0::/\n"), 1);
}

TEST_F(CpuQuotaTest, MalformedFilesCountAsNoQuota) {
  for (const char* text : {"", "garbage", "150000", "150000 0", "-5 100000", "1e5 100000",
                           "150000 100000 7", "99999999999999999999 100000"}) {
    Write("g/cpu.max", text);
    EXPECT_EQ(Limit("0::/g\n"), 0) << text;
  }
  // A path that climbs out of the mount is not followed.
  Write("cpu.max", "100000 100000\n");
  EXPECT_EQ(Limit("0::/../etc\n"), 0);
  // Lines that are not cgroup lines are skipped.
  EXPECT_EQ(Limit("nonsense\n::\n0::/\n"), 1);
}

TEST_F(CpuQuotaTest, V1CfsQuota) {
  Write("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "250000\n");
  Write("cpu,cpuacct/docker/abc/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(Limit("4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n"), 3);
  Write("cpu,cpuacct/docker/abc/cpu.cfs_quota_us", "-1\n");  // none
  EXPECT_EQ(Limit("2:cpu,cpuacct:/docker/abc\n"), 0);
}

// A container's own mount shows its group at the root while
// /proc/self/cgroup still names the host's path.
TEST_F(CpuQuotaTest, V1MountRootWhenThePathIsTheHostsView) {
  Write("cpu/cpu.cfs_quota_us", "200000\n");
  Write("cpu/cpu.cfs_period_us", "100000\n");
  EXPECT_EQ(Limit("3:cpu:/kubepods/burstable/pod9/xyz\n"), 2);
}

// A hybrid host has both; the tighter wins.
TEST_F(CpuQuotaTest, HybridTakesTheTighter) {
  Write("cpu,cpuacct/s/cpu.cfs_quota_us", "400000\n");
  Write("cpu,cpuacct/s/cpu.cfs_period_us", "100000\n");
  Write("unified/cpu.max", "max 100000\n");
  MakeDir("s");
  Write("s/cpu.max", "200000 100000\n");
  EXPECT_EQ(Limit("2:cpu,cpuacct:/s\n0::/s\n"), 2);
}

}  // namespace
}  // namespace tally::io

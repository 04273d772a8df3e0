// Snapshot files on a real file system: atomic replacement, every kind of
// damaged or foreign file reported (never a crash), directories that are
// missing or read-only, and the default state directory.
#include "daemon/io/snapshot_file.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "crdt/key_id.h"
#include "crdt/key_store.h"
#include "tests/support/daemon_process.h"

namespace tally::io {
namespace {

namespace fs = std::filesystem;
using tally::testing::TempDir;

constexpr int64_t kNow = 1'700'000'000'000;
constexpr uint64_t kHour = 3'600'000;

persist::EncodedSnapshot Snapshot(const std::string& node = "node-a",
                                  const std::string& cluster = "prod", int keys = 50) {
  crdt::KeyStore store({.max_keys = 1000, .buckets_per_window = 10});
  const crdt::SlotIndex slot = store.slots().Intern({node, 1});
  crdt::KeyStore::Lookup how;
  for (int i = 0; i < keys; ++i) {
    auto* e = store.FindOrCreate(crdt::HashKey(std::to_string(i), "/", kHour), kHour, kNow, &how);
    e->counter.Add(slot, crdt::BucketOf(kNow, e->counter.geometry()), 1 + i);
  }
  return persist::EncodeSnapshot(store, {cluster, node, 1, kNow, 10});
}

persist::SnapshotExpectations Expect() {
  persist::SnapshotExpectations e;
  e.cluster_name = "prod";
  e.node_id = "node-a";
  e.generation = 2;
  e.buckets_per_window = 10;
  e.now_wall_ms = kNow + 1000;
  return e;
}

std::vector<char> ReadRaw(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<char>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void WriteRaw(const fs::path& path, const std::vector<char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Names in `dir` other than `keep` (left-over temporary files).
std::vector<std::string> Others(const fs::path& dir, const std::string& keep) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().filename() != keep) out.push_back(e.path().filename().string());
  }
  return out;
}

TEST(SnapshotFileTest, WrittenSnapshotReadsBackAndReplacesTheOldOneAtomically) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot("node-a", "prod", 10), &error)) << error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot("node-a", "prod", 30), &error)) << error;
  SnapshotReadResult r = ReadSnapshotFile(path, Expect());
  ASSERT_EQ(r.outcome, SnapshotReadResult::Outcome::kLoaded) << r.message;
  EXPECT_EQ(r.snapshot.keys.size(), 30u);
  EXPECT_NE(r.message.find(path.string()), std::string::npos) << r.message;
  EXPECT_TRUE(Others(dir.path(), kSnapshotFileName).empty());  // no temporary file left
  struct stat st {};
  ASSERT_EQ(::stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

TEST(SnapshotFileTest, NoFileIsAFirstStart) {
  TempDir dir;
  SnapshotReadResult r = ReadSnapshotFile(SnapshotPath(dir.path()), Expect());
  EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kMissing);
  EXPECT_FALSE(r.message.empty());
}

TEST(SnapshotFileTest, TruncatedFilesAreRejectedWithAReason) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot(), &error)) << error;
  const std::vector<char> whole = ReadRaw(path);
  for (size_t keep :
       {size_t{0}, size_t{5}, size_t{40}, size_t{90}, whole.size() / 2, whole.size() - 1}) {
    WriteRaw(path, std::vector<char>(whole.begin(), whole.begin() + static_cast<long>(keep)));
    SnapshotReadResult r = ReadSnapshotFile(path, Expect());
    EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kRejected) << keep;
    EXPECT_EQ(r.snapshot.status, persist::SnapshotStatus::kTruncated) << keep << ": " << r.message;
    EXPECT_NE(r.message.find("truncated"), std::string::npos) << r.message;
    EXPECT_TRUE(r.snapshot.keys.empty());
  }
}

TEST(SnapshotFileTest, FlippedBytesAreRejected) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot(), &error)) << error;
  const std::vector<char> whole = ReadRaw(path);
  for (size_t at = 16; at < whole.size(); at += 7) {
    std::vector<char> bad = whole;
    bad[at] = static_cast<char>(bad[at] ^ 0x20);
    WriteRaw(path, bad);
    SnapshotReadResult r = ReadSnapshotFile(path, Expect());
    EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kRejected) << at;
    EXPECT_NE(r.message.find("checksum"), std::string::npos) << at << ": " << r.message;
  }
}

TEST(SnapshotFileTest, ASnapshotOfAnotherNodeOrClusterIsRejected) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot("node-b", "prod"), &error)) << error;
  SnapshotReadResult r = ReadSnapshotFile(path, Expect());
  EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kRejected);
  EXPECT_EQ(r.snapshot.status, persist::SnapshotStatus::kOtherNode);
  EXPECT_NE(r.message.find("'node-b'"), std::string::npos) << r.message;

  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot("node-a", "staging"), &error)) << error;
  r = ReadSnapshotFile(path, Expect());
  EXPECT_EQ(r.snapshot.status, persist::SnapshotStatus::kOtherCluster);
  EXPECT_NE(r.message.find("'staging'"), std::string::npos) << r.message;
}

TEST(SnapshotFileTest, OversizedAndNonRegularFilesAreNotRead) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot(), &error)) << error;
  persist::SnapshotExpectations small = Expect();
  small.max_bytes = 100;
  SnapshotReadResult r = ReadSnapshotFile(path, small);
  EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kUnreadable);
  EXPECT_NE(r.message.find("limit"), std::string::npos) << r.message;

  // A directory, and a FIFO (opening it must not block).
  r = ReadSnapshotFile(dir.path(), Expect());
  EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kUnreadable) << r.message;
  const fs::path fifo = fs::path(dir.path()) / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  r = ReadSnapshotFile(fifo, Expect());
  EXPECT_EQ(r.outcome, SnapshotReadResult::Outcome::kUnreadable) << r.message;
}

TEST(SnapshotFileTest, AMissingDirectoryIsReportedNotCreated) {
  TempDir dir;
  const fs::path path = fs::path(dir.path()) / "no" / "such" / kSnapshotFileName;
  std::string error;
  EXPECT_FALSE(WriteSnapshotFile(path, Snapshot(), &error));
  EXPECT_NE(error.find((fs::path(dir.path()) / "no" / "such").string()), std::string::npos)
      << error;
  EXPECT_FALSE(fs::exists(fs::path(dir.path()) / "no"));
}

// Makes `dir` refuse new files, also to root (who ignores mode bits): the
// immutable attribute. Undone on destruction.
class ReadOnlyDir {
 public:
  explicit ReadOnlyDir(const fs::path& dir) : dir_(dir) {
    ::chmod(dir.c_str(), 0555);
    if (::geteuid() != 0) {
      ok_ = true;
      return;
    }
    fd_ = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int flags = 0;
    if (fd_ >= 0 && ::ioctl(fd_, FS_IOC_GETFLAGS, &flags) == 0) {
      flags |= FS_IMMUTABLE_FL;
      ok_ = ::ioctl(fd_, FS_IOC_SETFLAGS, &flags) == 0;
    }
  }
  ~ReadOnlyDir() {
    if (fd_ >= 0) {
      int flags = 0;
      if (::ioctl(fd_, FS_IOC_GETFLAGS, &flags) == 0) {
        flags &= ~FS_IMMUTABLE_FL;
        ::ioctl(fd_, FS_IOC_SETFLAGS, &flags);
      }
      ::close(fd_);
    }
    ::chmod(dir_.c_str(), 0700);
  }
  bool ok() const { return ok_; }

 private:
  fs::path dir_;
  int fd_ = -1;
  bool ok_ = false;
};

TEST(SnapshotFileTest, AReadOnlyDirectoryIsReportedAndTheOldSnapshotKept) {
  TempDir dir;
  const fs::path path = SnapshotPath(dir.path());
  std::string error;
  ASSERT_TRUE(WriteSnapshotFile(path, Snapshot("node-a", "prod", 10), &error)) << error;
  {
    ReadOnlyDir read_only(dir.path());
    if (!read_only.ok()) GTEST_SKIP() << "cannot make a directory read-only for root here";
    EXPECT_FALSE(WriteSnapshotFile(path, Snapshot("node-a", "prod", 30), &error));
    EXPECT_NE(error.find(dir.path()), std::string::npos) << error;
    // Reading still works, and finds the old snapshot whole.
    SnapshotReadResult r = ReadSnapshotFile(path, Expect());
    ASSERT_EQ(r.outcome, SnapshotReadResult::Outcome::kLoaded) << r.message;
    EXPECT_EQ(r.snapshot.keys.size(), 10u);
  }
  EXPECT_TRUE(Others(dir.path(), kSnapshotFileName).empty());
}

TEST(SnapshotFileTest, AFailedRenameLeavesNoTemporaryFile) {
  TempDir dir;
  // The target is a non-empty directory: rename(2) refuses to replace it.
  const fs::path path = fs::path(dir.path()) / "target";
  fs::create_directories(path / "inside");
  std::string error;
  EXPECT_FALSE(WriteSnapshotFile(path, Snapshot(), &error));
  EXPECT_NE(error.find("rename"), std::string::npos) << error;
  EXPECT_TRUE(Others(dir.path(), "target").empty());
}

TEST(SnapshotFileTest, DefaultStateDirFollowsSystemdThenRootThenXdg) {
  auto env = [](std::map<std::string, std::string> vars) {
    return [vars = std::move(vars)](const char* name) -> const char* {
      auto it = vars.find(name);
      return it == vars.end() ? nullptr : it->second.c_str();
    };
  };
  EXPECT_EQ(
      DefaultStateDir(env({{"STATE_DIRECTORY", "/var/lib/tally"}, {"HOME", "/home/u"}}), 1000),
      fs::path("/var/lib/tally"));
  EXPECT_EQ(DefaultStateDir(env({{"STATE_DIRECTORY", "/srv/a:/srv/b"}}), 0), fs::path("/srv/a"));
  EXPECT_EQ(DefaultStateDir(env({{"HOME", "/root"}}), 0), fs::path("/var/lib/tally"));
  EXPECT_EQ(DefaultStateDir(env({{"XDG_STATE_HOME", "/home/u/st"}, {"HOME", "/home/u"}}), 1000),
            fs::path("/home/u/st/tally"));
  EXPECT_EQ(DefaultStateDir(env({{"XDG_STATE_HOME", "relative"}, {"HOME", "/home/u"}}), 1000),
            fs::path("/home/u/.local/state/tally"));
  EXPECT_EQ(DefaultStateDir(env({{"HOME", "/home/u"}}), 1000),
            fs::path("/home/u/.local/state/tally"));
  EXPECT_EQ(DefaultStateDir(env({}), 1000), std::nullopt);
  EXPECT_TRUE(DefaultStateDir().has_value() || ::geteuid() != 0);
}

TEST(SnapshotFileTest, EnsureStateDirCreatesPrivateDirectories) {
  TempDir dir;
  const fs::path state = fs::path(dir.path()) / "a" / "b";
  std::string error;
  ASSERT_TRUE(EnsureStateDir(state, &error)) << error;
  ASSERT_TRUE(EnsureStateDir(state, &error)) << error;  // idempotent
  struct stat st {};
  ASSERT_EQ(::stat(state.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  WriteRaw(fs::path(dir.path()) / "file", {'x'});
  EXPECT_FALSE(EnsureStateDir(fs::path(dir.path()) / "file", &error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace tally::io

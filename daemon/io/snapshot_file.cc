#include "daemon/io/snapshot_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <system_error>

#include "daemon/io/sockets.h"

namespace tally::io {

namespace fs = std::filesystem;

namespace {

bool Fail(std::string* error, const std::string& what, const fs::path& path, int err) {
  if (error != nullptr) *error = what + " " + path.string() + ": " + std::strerror(err);
  return false;
}

bool WriteAll(int fd, std::span<const std::byte> bytes) {
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    bytes = bytes.subspan(static_cast<size_t>(n));
  }
  return true;
}

bool FsyncRetrying(int fd) {
  while (::fsync(fd) != 0) {
    if (errno != EINTR) return false;
  }
  return true;
}

}  // namespace

bool WriteFileAtomically(const fs::path& path, std::span<const std::span<const std::byte>> pieces,
                         std::string* error) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  // mkstemp's template: a hidden name next to the target (same file system,
  // so rename is atomic), unique per writer.
  std::string name = path.filename().string();
  name.insert(0, 1, '.');
  name.append(".tmp.XXXXXX");
  std::string temp = (dir / name).string();
  UniqueFd fd(::mkostemp(temp.data(), O_CLOEXEC));
  if (!fd.valid()) return Fail(error, "cannot create a temporary file in", dir, errno);
  auto abandon = [&](const std::string& what, int err) {
    fd.Reset();
    ::unlink(temp.c_str());
    return Fail(error, what, temp, err);
  };
  // mkostemp makes the file 0600; keep it that way.
  for (std::span<const std::byte> piece : pieces) {
    if (!WriteAll(fd.get(), piece)) return abandon("cannot write", errno);
  }
  if (!FsyncRetrying(fd.get())) return abandon("cannot fsync", errno);
  if (::close(fd.Release()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return Fail(error, "cannot close", temp, err);
  }
  if (::rename(temp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(temp.c_str());
    return Fail(error, "cannot rename a temporary file to", path, err);
  }
  // The rename is durable only once the directory entry is.
  UniqueFd dir_fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid()) return Fail(error, "written, but cannot open the directory", dir, errno);
  if (!FsyncRetrying(dir_fd.get())) {
    return Fail(error, "written, but cannot fsync the directory", dir, errno);
  }
  return true;
}

bool WriteSnapshotFile(const fs::path& path, const persist::EncodedSnapshot& snapshot,
                       std::string* error) {
  const std::span<const std::byte> pieces[] = {snapshot.header, snapshot.payload};
  return WriteFileAtomically(path, pieces, error);
}

ReadFileStatus ReadFileBounded(const fs::path& path, uint64_t max_bytes,
                               std::vector<std::byte>* bytes, std::string* error) {
  bytes->clear();
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd.valid()) {
    if (errno == ENOENT) return ReadFileStatus::kMissing;
    Fail(error, "cannot open", path, errno);
    return ReadFileStatus::kError;
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    Fail(error, "cannot stat", path, errno);
    return ReadFileStatus::kError;
  }
  if (!S_ISREG(st.st_mode)) {
    if (error != nullptr) *error = path.string() + " is not a regular file";
    return ReadFileStatus::kError;
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    if (error != nullptr) {
      *error = path.string() + " holds " + std::to_string(st.st_size) +
               " bytes, more than the limit of " + std::to_string(max_bytes);
    }
    return ReadFileStatus::kTooLarge;
  }
  // One byte more than fstat saw, so that a file still growing shows; read
  // on while it does, but never past the limit.
  const uint64_t limit = max_bytes == UINT64_MAX ? max_bytes : max_bytes + 1;
  bytes->resize(static_cast<size_t>(st.st_size) + 1);
  size_t got = 0;
  for (;;) {
    if (got == bytes->size()) {
      if (got > max_bytes) {
        if (error != nullptr) *error = path.string() + " grew past the limit while read";
        bytes->clear();
        return ReadFileStatus::kTooLarge;
      }
      bytes->resize(static_cast<size_t>(std::min<uint64_t>(limit, got + 65536)));
    }
    const ssize_t n = ::read(fd.get(), bytes->data() + got, bytes->size() - got);
    if (n < 0) {
      if (errno == EINTR) continue;
      Fail(error, "cannot read", path, errno);
      bytes->clear();
      return ReadFileStatus::kError;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  bytes->resize(got);
  return ReadFileStatus::kOk;
}

SnapshotReadResult ReadSnapshotFile(const fs::path& path,
                                    const persist::SnapshotExpectations& expect) {
  SnapshotReadResult result;
  std::vector<std::byte> bytes;
  std::string error;
  switch (ReadFileBounded(path, expect.max_bytes, &bytes, &error)) {
    case ReadFileStatus::kMissing:
      result.outcome = SnapshotReadResult::Outcome::kMissing;
      result.message = "no snapshot at " + path.string() + ": starting with no counts";
      return result;
    case ReadFileStatus::kTooLarge:
    case ReadFileStatus::kError:
      result.outcome = SnapshotReadResult::Outcome::kUnreadable;
      result.message = "snapshot ignored, starting with no counts: " + error;
      return result;
    case ReadFileStatus::kOk:
      break;
  }
  result.snapshot = persist::DecodeSnapshot(bytes, expect);
  if (result.snapshot.ok()) {
    result.outcome = SnapshotReadResult::Outcome::kLoaded;
    result.message = "snapshot " + path.string() + " loaded: " + result.snapshot.reason;
  } else {
    result.outcome = SnapshotReadResult::Outcome::kRejected;
    result.message = "snapshot " + path.string() + " ignored (" +
                     persist::SnapshotStatusName(result.snapshot.status) + ": " +
                     result.snapshot.reason + "), starting with no counts";
  }
  return result;
}

std::string MoveRejectedAside(const fs::path& path) {
  fs::path aside = path;
  aside += ".rejected";
  std::error_code ec;
  fs::rename(path, aside, ec);
  return ec ? "; could not move it aside: " + ec.message() : "; kept as " + aside.string();
}

std::optional<fs::path> DefaultStateDir(const std::function<const char*(const char*)>& getenv,
                                        uid_t euid) {
  auto var = [&](const char* name) -> std::string {
    const char* v = getenv(name);
    return v == nullptr ? std::string() : std::string(v);
  };
  // systemd sets STATE_DIRECTORY to the absolute paths of StateDirectory=,
  // colon-separated when there are several.
  if (std::string dirs = var("STATE_DIRECTORY"); !dirs.empty()) {
    std::string first = dirs.substr(0, dirs.find(':'));
    if (!first.empty() && first.front() == '/') return fs::path(first);
  }
  if (euid == 0) return fs::path("/var/lib/tally");
  // The XDG base directory spec ignores relative values.
  if (std::string xdg = var("XDG_STATE_HOME"); !xdg.empty() && xdg.front() == '/') {
    return fs::path(xdg) / "tally";
  }
  if (std::string home = var("HOME"); !home.empty() && home.front() == '/') {
    return fs::path(home) / ".local" / "state" / "tally";
  }
  return std::nullopt;
}

std::optional<fs::path> DefaultStateDir() {
  return DefaultStateDir([](const char* name) { return std::getenv(name); }, ::geteuid());
}

bool EnsureStateDir(const fs::path& dir, std::string* error) {
  std::error_code ec;
  // Parents first, each 0700 when new (create_directories would use 0777 & umask).
  fs::path partial;
  for (const fs::path& part : dir) {
    partial /= part;
    if (partial.empty() || partial == partial.root_path()) continue;
    if (::mkdir(partial.c_str(), 0700) != 0 && errno != EEXIST) {
      return Fail(error, "cannot create", partial, errno);
    }
  }
  if (!fs::is_directory(dir, ec)) {
    if (error != nullptr) *error = dir.string() + " is not a directory";
    return false;
  }
  return true;
}

}  // namespace tally::io

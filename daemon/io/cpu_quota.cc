#include "daemon/io/cpu_quota.h"

#include <algorithm>
#include <charconv>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string_view>
#include <vector>

namespace tally::io {
namespace {

namespace fs = std::filesystem;

// The first line of a small file, or nothing.
bool ReadFirstLine(const fs::path& file, std::string* line) {
  std::ifstream in(file);
  return in && std::getline(in, *line);
}

bool ParseInt(std::string_view text, int64_t* value) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, *value);
  return ec == std::errc() && ptr == end;
}

// ceil(quota / period) for a set quota (both positive), else 0.
int CpusOf(int64_t quota_us, int64_t period_us) {
  if (quota_us <= 0 || period_us <= 0) return 0;
  const int64_t cpus = quota_us / period_us + (quota_us % period_us != 0 ? 1 : 0);
  return static_cast<int>(std::clamp<int64_t>(cpus, 1, 1 << 20));
}

// cgroup v2 `cpu.max`: "max 100000" (no quota) or "150000 100000".
int CpusOfCpuMax(const fs::path& dir) {
  std::string line;
  if (!ReadFirstLine(dir / "cpu.max", &line)) return 0;
  const size_t space = line.find(' ');
  if (space == std::string::npos) return 0;
  int64_t quota = 0, period = 0;
  if (!ParseInt(std::string_view(line).substr(0, space), &quota) ||
      !ParseInt(std::string_view(line).substr(space + 1), &period)) {
    return 0;  // "max", or not a quota
  }
  return CpusOf(quota, period);
}

// cgroup v1: cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us.
int CpusOfCfs(const fs::path& dir) {
  std::string quota_text, period_text;
  int64_t quota = 0, period = 0;
  if (!ReadFirstLine(dir / "cpu.cfs_quota_us", &quota_text) ||
      !ReadFirstLine(dir / "cpu.cfs_period_us", &period_text) || !ParseInt(quota_text, &quota) ||
      !ParseInt(period_text, &period)) {
    return 0;
  }
  return CpusOf(quota, period);
}

// The smallest positive `cpus_in(dir)` over `mount`/`path` and its parents up
// to `mount`; 0 if none.
template <typename F>
int TightestUpTo(const fs::path& mount, std::string_view path, F cpus_in) {
  int tightest = 0;
  auto consider = [&](const fs::path& dir) {
    std::error_code ec;
    if (!fs::is_directory(dir, ec)) return;
    const int cpus = cpus_in(dir);
    if (cpus > 0 && (tightest == 0 || cpus < tightest)) tightest = cpus;
  };
  // Walk PATH's components from the deepest; ".." never climbs out of mount.
  std::vector<std::string_view> parts;
  for (size_t start = 0; start < path.size();) {
    size_t slash = path.find('/', start);
    if (slash == std::string_view::npos) slash = path.size();
    const std::string_view part = path.substr(start, slash - start);
    if (part == "..") return 0;
    if (!part.empty() && part != ".") parts.push_back(part);
    start = slash + 1;
  }
  for (size_t depth = parts.size(); depth > 0; --depth) {
    fs::path dir = mount;
    for (size_t i = 0; i < depth; ++i) dir /= std::string(parts[i]);
    consider(dir);
  }
  consider(mount);
  return tightest;
}

bool HasController(std::string_view list, std::string_view name) {
  for (size_t start = 0; start <= list.size();) {
    size_t comma = list.find(',', start);
    if (comma == std::string_view::npos) comma = list.size();
    if (list.substr(start, comma - start) == name) return true;
    start = comma + 1;
  }
  return false;
}

}  // namespace

int CgroupCpuLimit(const std::string& cgroup_root, const std::string& proc_self_cgroup) {
  const fs::path root(cgroup_root);
  int tightest = 0;
  auto take = [&](int cpus) {
    if (cpus > 0 && (tightest == 0 || cpus < tightest)) tightest = cpus;
  };
  std::istringstream lines(proc_self_cgroup);
  for (std::string line; std::getline(lines, line);) {
    // "hierarchy-id:controller,list:path"
    const size_t first = line.find(':');
    const size_t second = first == std::string::npos ? first : line.find(':', first + 1);
    if (second == std::string::npos) continue;
    const std::string_view id = std::string_view(line).substr(0, first);
    const std::string_view controllers =
        std::string_view(line).substr(first + 1, second - first - 1);
    const std::string_view path = std::string_view(line).substr(second + 1);
    if (id == "0" && controllers.empty()) {
      take(TightestUpTo(root, path, CpusOfCpuMax));
    } else if (HasController(controllers, "cpu")) {
      for (const char* mount : {"cpu,cpuacct", "cpu"}) {
        std::error_code ec;
        if (!fs::is_directory(root / mount, ec)) continue;
        take(TightestUpTo(root / mount, path, CpusOfCfs));
        break;
      }
    }
  }
  return tightest;
}

int CgroupCpuLimit() {
  std::ifstream in("/proc/self/cgroup");
  std::stringstream text;
  text << in.rdbuf();
  return CgroupCpuLimit("/sys/fs/cgroup", text.str());
}

}  // namespace tally::io

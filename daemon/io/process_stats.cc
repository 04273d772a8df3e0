#include "daemon/io/process_stats.h"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

namespace tally::io {
namespace {

std::optional<std::string> ReadFile(const char* path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// "btime N" of /proc/stat: boot time, seconds since the epoch.
std::optional<uint64_t> BootTimeSeconds() {
  std::ifstream in("/proc/stat");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("btime ", 0) == 0) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return std::nullopt;
}

uint64_t CountOpenFds() {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return 0;
  uint64_t n = 0;
  while (const dirent* e = readdir(dir)) {
    if (e->d_name[0] != '.') ++n;
  }
  closedir(dir);
  return n > 0 ? n - 1 : 0;  // not the directory stream's own fd
}

}  // namespace

std::optional<ProcessStats> ReadProcessStats() {
  const std::optional<std::string> stat = ReadFile("/proc/self/stat");
  if (!stat) return std::nullopt;
  // The command name (field 2) may hold spaces and parentheses: fields
  // are counted after its last ')'.
  const size_t close = stat->rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(stat->substr(close + 2));
  // Field 3 (state) is the first after the name; utime is field 14,
  // stime 15, starttime 22, vsize 23, rss 24 (proc(5)).
  std::string field;
  uint64_t utime = 0, stime = 0, starttime = 0, vsize = 0, rss_pages = 0;
  for (int index = 3; index <= 24 && fields >> field; ++index) {
    const uint64_t value = std::strtoull(field.c_str(), nullptr, 10);
    if (index == 14) utime = value;
    if (index == 15) stime = value;
    if (index == 22) starttime = value;
    if (index == 23) vsize = value;
    if (index == 24) rss_pages = value;
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  const long page = sysconf(_SC_PAGESIZE);
  ProcessStats s;
  if (ticks > 0) {
    s.cpu_seconds = static_cast<double>(utime + stime) / static_cast<double>(ticks);
    if (const std::optional<uint64_t> boot = BootTimeSeconds()) {
      s.start_time_seconds =
          static_cast<double>(*boot) + static_cast<double>(starttime) / static_cast<double>(ticks);
    }
  }
  s.virtual_memory_bytes = vsize;
  s.resident_memory_bytes = rss_pages * static_cast<uint64_t>(page > 0 ? page : 4096);
  s.open_fds = CountOpenFds();
  rlimit limit{};
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY) {
    s.max_fds = limit.rlim_cur;
  }
  return s;
}

}  // namespace tally::io

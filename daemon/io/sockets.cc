#include "daemon/io/sockets.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstring>
#include <utility>

namespace tally::io {
namespace {

std::string Errno(const char* what, int err) { return std::string(what) + ": " + strerror(err); }

// Fills a sockaddr for `a`. Returns its length.
socklen_t MakeSockaddr(const HostPort& a, sockaddr_storage* out) {
  memset(out, 0, sizeof(*out));
  if (a.v6) {
    auto* s6 = reinterpret_cast<sockaddr_in6*>(out);
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(a.port);
    inet_pton(AF_INET6, a.host.c_str(), &s6->sin6_addr);
    return sizeof(sockaddr_in6);
  }
  auto* s4 = reinterpret_cast<sockaddr_in*>(out);
  s4->sin_family = AF_INET;
  s4->sin_port = htons(a.port);
  inet_pton(AF_INET, a.host.c_str(), &s4->sin_addr);
  return sizeof(sockaddr_in);
}

bool MakeUnixAddr(const std::string& path, sockaddr_un* addr, std::string* error) {
  memset(addr, 0, sizeof(*addr));
  addr->sun_family = AF_UNIX;
  if (path.empty() || path.size() >= sizeof(addr->sun_path)) {
    *error = "unix socket path must be 1.." + std::to_string(sizeof(addr->sun_path) - 1) +
             " bytes: '" + path + "'";
    return false;
  }
  memcpy(addr->sun_path, path.data(), path.size());
  return true;
}

// mkdir -p with mode 0755 for every missing component.
bool MakeParentDirs(const std::string& path, std::string* error) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return true;
  std::string dir = path.substr(0, slash);
  for (size_t pos = 1; pos <= dir.size(); ++pos) {
    if (pos != dir.size() && dir[pos] != '/') continue;
    std::string prefix = dir.substr(0, pos);
    if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
      *error = Errno(("mkdir " + prefix).c_str(), errno);
      return false;
    }
  }
  struct stat st;
  if (stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    *error = "not a directory: " + dir;
    return false;
  }
  return true;
}

// Returns true if a process accepts on the socket file at `addr` (so it must
// not be unlinked). A connect that is refused means the file is stale.
bool SocketIsLive(const sockaddr_un& addr, int type) {
  UniqueFd probe(socket(AF_UNIX, type | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return false;
  int r;
  do {
    r = connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr));
  } while (r != 0 && errno == EINTR);
  if (r == 0) return true;
  // EAGAIN: a live listener with a full backlog. EPROTOTYPE: a live socket of
  // another type. Either way someone owns it.
  return errno == EAGAIN || errno == EPROTOTYPE;
}

// Big buffers absorb bursts while a thread is busy. The *FORCE variants
// exceed net.core.{r,w}mem_max but need CAP_NET_ADMIN; without it the kernel
// caps the plain request at the maximum, which is fine too.
void SetBufferSizes(int fd) {
  const int bytes = 4 << 20;
  if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof(bytes));
  }
  if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &bytes, sizeof(bytes)) != 0) {
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof(bytes));
  }
}

}  // namespace

std::optional<HostPort> ParseHostPort(std::string_view text, std::string* why) {
  HostPort out;
  std::string_view host, port;
  if (!text.empty() && text.front() == '[') {
    size_t close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':') {
      *why = "expected [IPV6]:PORT, got '" + std::string(text) + "'";
      return std::nullopt;
    }
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
    out.v6 = true;
  } else {
    size_t colon = text.rfind(':');
    if (colon == std::string_view::npos || text.find(':') != colon) {
      *why = "expected HOST:PORT (IPv6 as [ADDR]:PORT), got '" + std::string(text) + "'";
      return std::nullopt;
    }
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
  }
  out.host = std::string(host);
  unsigned char buf[sizeof(in6_addr)];
  if (inet_pton(out.v6 ? AF_INET6 : AF_INET, out.host.c_str(), buf) != 1) {
    *why =
        "not a numeric " + std::string(out.v6 ? "IPv6" : "IPv4") + " address: '" + out.host + "'";
    return std::nullopt;
  }
  unsigned value = 0;
  auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value > 65535) {
    *why = "port must be 0..65535, got '" + std::string(port) + "'";
    return std::nullopt;
  }
  out.port = static_cast<uint16_t>(value);
  return out;
}

std::string FormatSockaddr(const sockaddr* addr, socklen_t len) {
  char host[INET6_ADDRSTRLEN] = {};
  if (addr->sa_family == AF_INET && len >= sizeof(sockaddr_in)) {
    auto* s4 = reinterpret_cast<const sockaddr_in*>(addr);
    inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
    return std::string(host) + ":" + std::to_string(ntohs(s4->sin_port));
  }
  if (addr->sa_family == AF_INET6 && len >= sizeof(sockaddr_in6)) {
    auto* s6 = reinterpret_cast<const sockaddr_in6*>(addr);
    inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
    // Appended piecewise: GCC 12 warns (-Wrestrict, falsely) on "[" + string.
    std::string out = "[";
    out.append(host).append("]:").append(std::to_string(ntohs(s6->sin6_port)));
    return out;
  }
  return "?";
}

socklen_t ToSockaddr(const HostPort& address, sockaddr_storage* addr) {
  return MakeSockaddr(address, addr);
}

bool ParseSockaddr(std::string_view text, sockaddr_storage* addr, socklen_t* len) {
  std::string why;
  std::optional<HostPort> hp = ParseHostPort(text, &why);
  if (!hp) return false;
  *len = MakeSockaddr(*hp, addr);
  return true;
}

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) Reset(other.Release());
  return *this;
}

int UniqueFd::Release() { return std::exchange(fd_, -1); }

void UniqueFd::Reset(int fd) {
  // close() must not be retried on EINTR on Linux: the fd is gone either way.
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

namespace {

// BindUdpGroup for a given port (non-zero) or, with port 0, the port the
// kernel picks for the first socket. `*bind_errno` is the errno of a failed
// bind (0 otherwise).
bool BindUdpGroupOnce(const HostPort& address, int count, std::vector<UniqueFd>* sockets,
                      std::string* bound, std::string* error, int* bind_errno) {
  *bind_errno = 0;
  sockets->clear();
  sockaddr_storage addr;
  socklen_t addr_len = MakeSockaddr(address, &addr);
  int family = address.v6 ? AF_INET6 : AF_INET;
  const int one = 1;

  if (address.port != 0) {
    UniqueFd probe(socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0));
    if (!probe.valid()) {
      *error = Errno("socket", errno);
      return false;
    }
    if (address.v6) setsockopt(probe.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(probe.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
      *bind_errno = errno;
      *error = Errno(
          ("bind udp " + FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), addr_len)).c_str(),
          errno);
      return false;
    }
  }

  for (int i = 0; i < count; ++i) {
    UniqueFd fd(socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
    if (!fd.valid()) {
      *error = Errno("socket", errno);
      return false;
    }
    if (setsockopt(fd.get(), SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
      *error = Errno("setsockopt SO_REUSEPORT", errno);
      return false;
    }
    if (address.v6) setsockopt(fd.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    SetBufferSizes(fd.get());
    if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0) {
      *bind_errno = errno;
      *error = Errno(
          ("bind udp " + FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), addr_len)).c_str(),
          errno);
      sockets->clear();
      return false;
    }
    if (i == 0) {
      // Port 0: the rest of the group must join the port the kernel picked.
      socklen_t len = sizeof(addr);
      if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        *error = Errno("getsockname", errno);
        return false;
      }
      addr_len = len;
      *bound = FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), addr_len);
    }
    sockets->push_back(std::move(fd));
  }
  return true;
}

// A port no socket holds now, reuseport or not: the kernel's pick for a
// socket bound without SO_REUSEPORT. 0 with `*error` set on failure.
uint16_t FreeUdpPort(const HostPort& address, std::string* error) {
  sockaddr_storage addr;
  socklen_t addr_len = MakeSockaddr(address, &addr);
  const int one = 1;
  UniqueFd probe(socket(address.v6 ? AF_INET6 : AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) {
    *error = Errno("socket", errno);
    return 0;
  }
  if (address.v6) setsockopt(probe.get(), IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  if (bind(probe.get(), reinterpret_cast<sockaddr*>(&addr), addr_len) != 0 ||
      getsockname(probe.get(), reinterpret_cast<sockaddr*>(&addr), &addr_len) != 0) {
    *error =
        Errno(("bind udp " + FormatSockaddr(reinterpret_cast<sockaddr*>(&addr), addr_len)).c_str(),
              errno);
    return 0;
  }
  return ntohs(addr.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port
                                          : reinterpret_cast<sockaddr_in*>(&addr)->sin_port);
}

}  // namespace

bool BindUdpGroup(const HostPort& address, int count, std::vector<UniqueFd>* sockets,
                  std::string* bound, std::string* error) {
  int bind_errno = 0;
  if (address.port != 0) {
    return BindUdpGroupOnce(address, count, sockets, bound, error, &bind_errno);
  }
  // Port 0: a SO_REUSEPORT socket's automatic port may be one another
  // SO_REUSEPORT socket of this user already holds (Linux counts them as
  // compatible), and the two would then split each other's traffic: it once
  // put tallyd's gossip socket on its own client port. So the port comes
  // from a socket bound without SO_REUSEPORT, and the group then takes it as
  // a given port (probed again); a port taken in between is retried.
  for (int attempt = 0;; ++attempt) {
    HostPort fixed = address;
    fixed.port = FreeUdpPort(address, error);
    if (fixed.port == 0) return false;
    if (BindUdpGroupOnce(fixed, count, sockets, bound, error, &bind_errno)) return true;
    if (bind_errno != EADDRINUSE || attempt == 7) return false;
  }
}

UnixSocketFile::UnixSocketFile(UnixSocketFile&& other) noexcept
    : fd_(std::move(other.fd_)),
      path_(std::exchange(other.path_, {})),
      dev_(other.dev_),
      ino_(other.ino_) {}

UnixSocketFile& UnixSocketFile::operator=(UnixSocketFile&& other) noexcept {
  if (this != &other) {
    Unlink();
    fd_ = std::move(other.fd_);
    path_ = std::exchange(other.path_, {});
    dev_ = other.dev_;
    ino_ = other.ino_;
  }
  return *this;
}

bool UnixSocketFile::Bind(const std::string& path, int type, std::string* error,
                          UnixSocketAccess access) {
  sockaddr_un addr;
  if (!MakeUnixAddr(path, &addr, error)) return false;
  if (!MakeParentDirs(path, error)) return false;

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      *error = "refusing to replace non-socket file " + path;
      return false;
    }
    if (SocketIsLive(addr, type)) {
      *error = "socket " + path + " is in use by a running process";
      return false;
    }
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      *error = Errno(("unlink stale socket " + path).c_str(), errno);
      return false;
    }
  } else if (errno != ENOENT) {
    *error = Errno(("lstat " + path).c_str(), errno);
    return false;
  }

  UniqueFd fd(socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) {
    *error = Errno("socket", errno);
    return false;
  }
  SetBufferSizes(fd.get());
  // The file bind creates takes the socket's mode (minus the umask): never
  // wider than owner and group, even for the moment before the chmod below.
  fchmod(fd.get(), kUnixSocketMode);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    *error = Errno(("bind " + path).c_str(), errno);
    return false;
  }
  // Remember what we created before anything can fail, so it gets cleaned up.
  if (lstat(path.c_str(), &st) == 0) {
    dev_ = st.st_dev;
    ino_ = st.st_ino;
  }
  path_ = path;
  fd_ = std::move(fd);
  // Owner and group only by default: a client spends the limits of whoever
  // it names, so the socket is no more open than the group the operator puts
  // its clients in (docs/DESIGN.md; --unix-group, else the daemon's group, or
  // the directory's with the setgid bit). The mode is exact whatever the umask.
  if (access.gid >= 0 &&
      chown(path.c_str(), static_cast<uid_t>(-1), static_cast<gid_t>(access.gid)) != 0) {
    *error = Errno(("chown " + path + " to group " + std::to_string(access.gid)).c_str(), errno);
    return false;
  }
  if (chmod(path.c_str(), access.mode & 0666) != 0) {
    *error = Errno(("chmod " + path).c_str(), errno);
    return false;
  }
  if (type == SOCK_SEQPACKET && listen(fd_.get(), SOMAXCONN) != 0) {
    *error = Errno(("listen " + path).c_str(), errno);
    return false;
  }
  return true;
}

void UnixSocketFile::Unlink() {
  if (path_.empty()) return;
  struct stat st;
  if (lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    unlink(path_.c_str());
  }
  path_.clear();
}

}  // namespace tally::io

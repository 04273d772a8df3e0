// Socket setup for tallyd: address parsing, the SO_REUSEPORT UDP group and
// Unix socket files. Plain POSIX: the hot path uses recvmmsg/sendmmsg on the
// raw descriptors, and Boost 1.81 has no seqpacket protocol, so sockets are
// made here and only wrapped by Asio for readiness waits.
//
// Thread safety: free functions are reentrant; UnixSocketFile is not shared.
#ifndef TALLY_DAEMON_IO_SOCKETS_H_
#define TALLY_DAEMON_IO_SOCKETS_H_

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tally::io {

// A numeric host and a port, e.g. from "127.0.0.1:7070" or "[::1]:7070".
struct HostPort {
  std::string host;  // without brackets
  uint16_t port = 0;
  bool v6 = false;
};

// Parses HOST:PORT with a numeric IPv4 or bracketed IPv6 host. Returns nullopt
// and sets `*why` on anything else.
std::optional<HostPort> ParseHostPort(std::string_view text, std::string* why);

// Formats a bound address as "127.0.0.1:PORT" or "[::1]:PORT".
std::string FormatSockaddr(const sockaddr* addr, socklen_t len);

// Fills `*addr` for `address` (as parsed by ParseHostPort); returns its length.
socklen_t ToSockaddr(const HostPort& address, sockaddr_storage* addr);

// "HOST:PORT" -> a sockaddr in one step; false for anything ParseHostPort rejects.
bool ParseSockaddr(std::string_view text, sockaddr_storage* addr, socklen_t* len);

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  ~UniqueFd() { Reset(); }
  UniqueFd(UniqueFd&& other) noexcept : fd_(other.Release()) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  // Gives up ownership: returns the descriptor (or -1), which the caller must close.
  int Release();
  // Closes the owned descriptor (if any) and takes ownership of `fd`.
  void Reset(int fd = -1);

 private:
  int fd_ = -1;
};

// Binds `count` non-blocking UDP sockets to `address` with SO_REUSEPORT so the
// kernel spreads clients over them. The first takes the requested port (0 =
// a port no socket holds, found with a socket bound without SO_REUSEPORT),
// the rest join it. The port is first probed without SO_REUSEPORT so we fail,
// rather than silently share traffic, when another socket holds it. On
// success sets `*bound` to the resolved address.
bool BindUdpGroup(const HostPort& address, int count, std::vector<UniqueFd>* sockets,
                  std::string* bound, std::string* error);

// Mode of the Unix socket files tallyd creates: owner and group may connect.
inline constexpr unsigned kUnixSocketMode = 0660;

// Who may connect to the Unix socket files: their mode (read and write bits
// only; --unix-mode) and group (--unix-group; -1 keeps the daemon's group, or
// the directory's when it has the setgid bit).
struct UnixSocketAccess {
  unsigned mode = kUnixSocketMode;
  int64_t gid = -1;
};

// A bound Unix socket file. Unlinks the file on destruction if it is still the
// one we created (same device and inode), so we never remove a successor's.
class UnixSocketFile {
 public:
  UnixSocketFile() = default;
  ~UnixSocketFile() { Unlink(); }
  UnixSocketFile(UnixSocketFile&& other) noexcept;
  UnixSocketFile& operator=(UnixSocketFile&& other) noexcept;
  UnixSocketFile(const UnixSocketFile&) = delete;
  UnixSocketFile& operator=(const UnixSocketFile&) = delete;

  // Creates a non-blocking socket of `type` (SOCK_DGRAM or SOCK_SEQPACKET) at
  // `path`: creates missing parent directories (0755), unlinks a stale socket
  // file (one nobody accepts on), refuses a live socket or a non-socket file.
  // The file is never wider than owner and group from its creation on, then
  // gets `access.mode` exactly (whatever the umask) and, when set,
  // `access.gid` (a failed chown fails the bind: a socket left in the wrong
  // group would lock its clients out or let others in).
  // SOCK_SEQPACKET sockets are also put into listening state.
  bool Bind(const std::string& path, int type, std::string* error,
            UnixSocketAccess access = UnixSocketAccess{});

  int fd() const { return fd_.get(); }
  // Hands the descriptor to the caller (who must close it); the file stays ours.
  int ReleaseFd() { return fd_.Release(); }
  const std::string& path() const { return path_; }
  // Closes the socket (the file stays until Unlink or destruction).
  void Close() { fd_.Reset(); }
  // Removes the file if it is still ours. Idempotent.
  void Unlink();

 private:
  UniqueFd fd_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_SOCKETS_H_

// Test helpers for running a real tallyd as a child process.
//
//   tally::testing::TempDir dir;                       // mkdtemp, removed at exit
//   tally::testing::DaemonProcess d;
//   ASSERT_TRUE(d.Start({"--udp", "127.0.0.1:0", "--unix", dir.File("d.sock"),
//                        "--unix-seq", dir.File("d.seq")}, &error)) << error;
//   ... talk to d.udp_port(), d.unix_path(), d.seq_path() ...
//   EXPECT_EQ(d.Stop(), 0);
//
// Cluster mode ("--gossip 127.0.0.1:0 --node-id n1 ..."): the listening line
// also carries gossip=ADDR node=NAME (gossip_address(), node_id()); Kill9()
// crashes the node and Restart() starts it again with the same arguments
// (pass the resolved gossip address to keep its port).
//
// Tests must always pass "--udp 127.0.0.1:0" and socket paths inside their own
// TempDir so that tests can run in parallel. Header-only; needs TALLY_BIN_DIR
// (defined for every test target) unless a binary path is given explicitly.
//
// Thread safety: none of these classes is thread-safe; use each from one thread.
// Start children from a thread that outlives them (e.g. the test's main
// thread): PR_SET_PDEATHSIG, which kills them if the test dies, fires when
// the forking *thread* exits.
#ifndef TALLY_TESTS_SUPPORT_DAEMON_PROCESS_H_
#define TALLY_TESTS_SUPPORT_DAEMON_PROCESS_H_

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <vector>

extern char** environ;

namespace tally::testing {

// A fresh directory under $TMPDIR (or /tmp), removed recursively on destruction.
// Keep socket paths short: sun_path holds at most 107 bytes.
class TempDir {
 public:
  TempDir() {
    const char* base = getenv("TMPDIR");
    std::string tmpl =
        std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/tally-test-XXXXXX";
    if (mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    if (path_.empty()) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Empty if mkdtemp failed.
  const std::string& path() const { return path_; }
  // path() + "/" + name.
  std::string File(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

// Under a sanitizer every process runs several times slower, so scripts/test.sh
// sets TALLY_TEST_WAIT_SCALE (e.g. 3): waits for processes and conditions
// last that many times longer. What a test asserts does not change.
inline std::chrono::milliseconds ScaledWait(std::chrono::milliseconds timeout) {
  static const double scale = [] {
    const char* text = getenv("TALLY_TEST_WAIT_SCALE");
    const double value = text != nullptr ? atof(text) : 1.0;
    return value > 1.0 ? value : 1.0;
  }();
  return std::chrono::milliseconds(
      static_cast<int64_t>(static_cast<double>(timeout.count()) * scale));
}

namespace internal {

inline int64_t MsUntil(std::chrono::steady_clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                  deadline - std::chrono::steady_clock::now())
                  .count();
  return left < 0 ? 0 : left;
}

// Exit code of a waitpid status: the code itself, or 128 + signal.
inline int ExitCodeOf(int wait_status) {
  if (WIFEXITED(wait_status)) return WEXITSTATUS(wait_status);
  if (WIFSIGNALED(wait_status)) return 128 + WTERMSIG(wait_status);
  return -1;
}

// Waits for `pid` to exit within `timeout` without sleeping: a pidfd becomes
// readable when the process exits. Returns false on timeout (not reaped).
inline bool WaitExit(pid_t pid, std::chrono::milliseconds timeout, int* wait_status) {
  auto deadline = std::chrono::steady_clock::now() + ScaledWait(timeout);
  int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  for (;;) {
    pid_t r = waitpid(pid, wait_status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      if (pidfd >= 0) close(pidfd);
      return false;
    }
    if (r == 0) {
      int64_t left = MsUntil(deadline);
      if (left == 0) {
        if (pidfd >= 0) close(pidfd);
        return false;
      }
      if (pidfd >= 0) {
        pollfd p{pidfd, POLLIN, 0};
        poll(&p, 1, static_cast<int>(left));
      } else {
        // No pidfd (old kernel): coarse polling is the only portable option.
        usleep(10'000);
      }
    }
  }
  if (pidfd >= 0) close(pidfd);
  return true;
}

// Builds a NULL-terminated argv whose strings live in `storage`.
inline std::vector<char*> MakeArgv(std::vector<std::string>* storage) {
  std::vector<char*> argv;
  for (auto& s : *storage) argv.push_back(s.data());
  argv.push_back(nullptr);
  return argv;
}

// What a process that did not exit in time is doing, for the test's output:
// each thread's name, state and kernel wait channel from /proc, then every
// thread's stack from gdb when it is installed (at most 30 s).
inline std::string DescribeStuckProcess(pid_t pid) {
  namespace fs = std::filesystem;
  const auto read_first_line = [](const fs::path& path) {
    std::ifstream in(path);
    std::string line;
    std::getline(in, line);
    return line;
  };
  std::string out = "pid " + std::to_string(pid) + " threads (tid name state wchan):\n";
  std::error_code ec;
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    const std::string stat = read_first_line(task.path() / "stat");
    const size_t paren = stat.rfind(')');
    const std::string state =
        paren != std::string::npos && paren + 2 < stat.size() ? stat.substr(paren + 2, 1) : "?";
    out += "  " + task.path().filename().string() + " " + read_first_line(task.path() / "comm") +
           " " + state + " " + read_first_line(task.path() / "wchan") + "\n";
  }
  // Its children (a sanitizer's leak-check tracer is one), by the same columns.
  for (const auto& task : fs::directory_iterator("/proc/" + std::to_string(pid) + "/task", ec)) {
    std::istringstream children(read_first_line(task.path() / "children"));
    for (std::string child; children >> child;) {
      const fs::path dir = fs::path("/proc") / child;
      const std::string stat = read_first_line(dir / "stat");
      const size_t paren = stat.rfind(')');
      out += "  child " + child + " " + read_first_line(dir / "comm") + " " +
             (paren != std::string::npos && paren + 2 < stat.size() ? stat.substr(paren + 2, 1)
                                                                    : "?") +
             " " + read_first_line(dir / "wchan") + "\n";
    }
  }
  if (access("/usr/bin/gdb", X_OK) == 0) {
    const std::string command = "timeout 30 /usr/bin/gdb -p " + std::to_string(pid) +
                                " -batch -nx -ex 'thread apply all bt' 2>&1";
    if (FILE* gdb = popen(command.c_str(), "r")) {
      char buf[4096];
      size_t n;
      while ((n = fread(buf, 1, sizeof buf, gdb)) > 0) out.append(buf, n);
      pclose(gdb);
    }
  }
  return out;
}

}  // namespace internal

// Path of the tallyd under test.
inline std::string TallydPath() {
#ifdef TALLY_BIN_DIR
  return std::string(TALLY_BIN_DIR) + "/tallyd";
#else
  return "tallyd";
#endif
}

// tallyd's Envoy doors are on by default (--grpc 127.0.0.1:8081, --http
// 127.0.0.1:8080), and so are its Unix sockets at /run/tally/: every tallyd a
// test started would claim the same two ports and two paths (two tests run
// at once then collided on /run/tally/tally.sock). A tallyd started through
// this file (as `binary`, or behind env or `ip netns exec` as one of `args`,
// whose own arguments then come last) gets "--grpc none" and "--http none"
// appended for each door its arguments do not name (under either of its
// names), and "--unix ''" / "--unix-seq ''" for a socket they do not name (a
// named --unix path carries the seqpacket socket beside it, as tallyd does;
// with --config the file may name them, and nothing is added).
inline std::vector<std::string> WithoutDefaultDoors(const std::string& binary,
                                                    std::vector<std::string> args) {
  const std::string tallyd = TallydPath();
  bool is_tallyd = binary == tallyd;
  bool grpc_given = false, http_given = false, seq_given = false, config_given = false;
  std::optional<std::string> unix_path;
  auto names = [](const std::string& arg, const char* flag) {
    const std::string f(flag);
    return arg == f || arg.rfind(f + "=", 0) == 0;
  };
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == tallyd) is_tallyd = true;
    grpc_given = grpc_given || names(a, "--grpc") || names(a, "--grpc-listen");
    http_given = http_given || names(a, "--http") || names(a, "--http-listen");
    seq_given = seq_given || names(a, "--unix-seq");
    config_given = config_given || names(a, "--config");
    if (a == "--unix") unix_path = i + 1 < args.size() ? args[i + 1] : "";
    if (a.rfind("--unix=", 0) == 0) unix_path = a.substr(7);
  }
  if (!is_tallyd) return args;
  if (!grpc_given) args.insert(args.end(), {"--grpc", "none"});
  if (!http_given) args.insert(args.end(), {"--http", "none"});
  if (config_given) return args;  // its file may name the sockets
  if (!unix_path) args.insert(args.end(), {"--unix", ""});
  if (!seq_given && (!unix_path || unix_path->empty())) args.insert(args.end(), {"--unix-seq", ""});
  return args;
}

struct ProcessResult {
  int exit_code = -1;  // exit code, 128 + signal, or -1 if it could not run / timed out
  std::string out;     // everything written to stdout
  std::string err;     // everything written to stderr
};

// Runs `binary args...` to completion, capturing stdout and stderr. Kills it
// (SIGKILL) if it runs longer than `timeout`; exit_code is then -1.
inline ProcessResult RunProcess(const std::string& binary, const std::vector<std::string>& args,
                                std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  ProcessResult result;
  int out_pipe[2], err_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return result;
  if (pipe2(err_pipe, O_CLOEXEC) != 0) {
    close(out_pipe[0]);
    close(out_pipe[1]);
    return result;
  }
  std::vector<std::string> storage{binary};
  const std::vector<std::string> full_args = WithoutDefaultDoors(binary, args);
  storage.insert(storage.end(), full_args.begin(), full_args.end());
  std::vector<char*> argv = internal::MakeArgv(&storage);
  pid_t pid = fork();
  if (pid == 0) {
    // Child: only async-signal-safe calls from here on.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out_pipe[1], STDOUT_FILENO);
    dup2(err_pipe[1], STDERR_FILENO);
    execve(argv[0], argv.data(), environ);
    _exit(127);
  }
  close(out_pipe[1]);
  close(err_pipe[1]);
  if (pid < 0) {
    close(out_pipe[0]);
    close(err_pipe[0]);
    return result;
  }
  auto deadline = std::chrono::steady_clock::now() + ScaledWait(timeout);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  std::string* sinks[2] = {&result.out, &result.err};
  int open_fds = 2;
  bool timed_out = false;
  while (open_fds > 0) {
    int64_t left = internal::MsUntil(deadline);
    if (left == 0) {
      timed_out = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || fds[i].revents == 0) continue;
      char buf[4096];
      ssize_t r = read(fds[i].fd, buf, sizeof(buf));
      if (r > 0) {
        sinks[i]->append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      }
    }
  }
  for (auto& f : fds) {
    if (f.fd >= 0) close(f.fd);
  }
  int status = 0;
  if (timed_out || !internal::WaitExit(pid, std::chrono::seconds(5), &status)) {
    kill(pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return result;
  }
  result.exit_code = internal::ExitCodeOf(status);
  return result;
}

// Runs tallyd with `args` to completion (for --help, --check-config, bad flags).
inline ProcessResult RunTallyd(const std::vector<std::string>& args,
                               std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return RunProcess(TallydPath(), args, timeout);
}

// A tallyd child process. Start() forks/execs it with stdout piped and waits
// for its "tallyd listening udp=ADDR unix=PATH seq=PATH" line; stderr (logs)
// is inherited so it shows up in the test output. The destructor always stops
// the process. Moving is not supported: keep it in place (or in a unique_ptr).
class DaemonProcess {
 public:
  DaemonProcess() = default;
  ~DaemonProcess() { Stop(); }
  DaemonProcess(const DaemonProcess&) = delete;
  DaemonProcess& operator=(const DaemonProcess&) = delete;

  // Starts `binary` (default: TALLY_BIN_DIR/tallyd) with `args` and waits up to
  // `timeout` for the listening line. On failure (exec error, early exit,
  // timeout, unparsable line) kills and reaps the child, returns false and sets
  // `*error` (if not null). REQUIRES: not already started.
  bool Start(const std::vector<std::string>& args, std::string* error,
             std::chrono::milliseconds timeout = std::chrono::seconds(15),
             const std::string& binary = TallydPath()) {
    std::string unused;
    if (error == nullptr) error = &unused;
    if (pid_ > 0) {
      *error = "already started";
      return false;
    }
    int out_pipe[2];
    if (pipe2(out_pipe, O_CLOEXEC) != 0) {
      *error = std::string("pipe2: ") + strerror(errno);
      return false;
    }
    std::vector<std::string> storage{binary};
    const std::vector<std::string> full_args = WithoutDefaultDoors(binary, args);
    storage.insert(storage.end(), full_args.begin(), full_args.end());
    std::vector<char*> argv = internal::MakeArgv(&storage);
    pid_t pid = fork();
    if (pid == 0) {
      // Child: only async-signal-safe calls from here on. PDEATHSIG keeps a
      // crashed test from leaking daemons.
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      dup2(out_pipe[1], STDOUT_FILENO);
      execve(argv[0], argv.data(), environ);
      _exit(127);
    }
    close(out_pipe[1]);
    if (pid < 0) {
      close(out_pipe[0]);
      *error = std::string("fork: ") + strerror(errno);
      return false;
    }
    pid_ = pid;
    out_fd_ = out_pipe[0];
    last_args_ = args;
    last_binary_ = binary;

    auto deadline = std::chrono::steady_clock::now() + ScaledWait(timeout);
    std::string buffer;
    for (;;) {
      size_t nl = buffer.find('\n');
      while (nl != std::string::npos) {
        std::string line = buffer.substr(0, nl);
        buffer.erase(0, nl + 1);
        if (line.rfind("tallyd listening ", 0) == 0) {
          if (ParseListening(line)) {
            listening_line_ = line;
            return true;
          }
          *error = "unparsable listening line: " + line;
          Stop();
          return false;
        }
        nl = buffer.find('\n');
      }
      int64_t left = internal::MsUntil(deadline);
      if (left == 0) {
        *error = "timed out waiting for the listening line";
        Stop();
        return false;
      }
      pollfd p{out_fd_, POLLIN, 0};
      int n = poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) continue;
      char buf[1024];
      ssize_t r = read(out_fd_, buf, sizeof(buf));
      if (r > 0) {
        buffer.append(buf, static_cast<size_t>(r));
        continue;
      }
      if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
      // EOF: the daemon exited (or closed stdout) before listening.
      int code = Stop();
      *error = "tallyd exited before listening, exit code " + std::to_string(code);
      return false;
    }
  }

  // Sends SIGTERM, waits up to `grace` for exit, then SIGKILLs; reaps the
  // child. Returns its exit code (128 + signal if killed by one), or -1 if it
  // was not running. Idempotent.
  int Stop(std::chrono::milliseconds grace = std::chrono::seconds(5)) {
    if (pid_ <= 0) return -1;
    int status = 0;
    int code = -1;
    // SIGCONT first: a stopped process (SIGSTOP tests) must run to see the
    // SIGTERM. Never after it: a SIGCONT discards pending stop signals, and
    // a sanitizer's leak check at exit stops the process with ptrace (its
    // SIGSTOP); a SIGCONT landing then (this thread descheduled between the
    // two kills under load) left LeakSanitizer's tracer waiting forever for
    // the stop and the daemon spinning until SIGKILL (seen in the ASan stage,
    // the traced main thread running 15 s after its final stats).
    kill(pid_, SIGCONT);
    kill(pid_, SIGTERM);
    if (internal::WaitExit(pid_, grace, &status)) {
      code = internal::ExitCodeOf(status);
    } else {
      std::fprintf(stderr, "DaemonProcess: still running %lld ms after SIGTERM; %s",
                   static_cast<long long>(ScaledWait(grace).count()),
                   internal::DescribeStuckProcess(pid_).c_str());
      kill(pid_, SIGKILL);
      while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
      }
      code = internal::ExitCodeOf(status);
    }
    pid_ = -1;
    if (out_fd_ >= 0) {
      close(out_fd_);
      out_fd_ = -1;
    }
    return code;
  }

  // Kills the process with SIGKILL (a crash: no leave, no cleanup) and reaps
  // it. Returns 128 + 9, or -1 if it was not running.
  int Kill9() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = -1;
    if (out_fd_ >= 0) {
      close(out_fd_);
      out_fd_ = -1;
    }
    return internal::ExitCodeOf(status);
  }

  // Starts the process again with the arguments (and binary) of the last
  // Start, or with `args` when given. REQUIRES: not running.
  bool Restart(std::string* error, const std::vector<std::string>* args = nullptr,
               std::chrono::milliseconds timeout = std::chrono::seconds(15)) {
    std::vector<std::string> a = args != nullptr ? *args : last_args_;
    std::string binary = last_binary_.empty() ? TallydPath() : last_binary_;
    return Start(a, error, timeout, binary);
  }

  // Sends `sig` without waiting (e.g. to test signal handling with WaitExit()).
  bool Signal(int sig) { return pid_ > 0 && kill(pid_, sig) == 0; }

  // Waits up to `timeout` for the process to exit on its own; returns its exit
  // code, or -2 on timeout (still running, still owned).
  int WaitExit(std::chrono::milliseconds timeout) {
    if (pid_ <= 0) return -1;
    int status = 0;
    if (!internal::WaitExit(pid_, timeout, &status)) return -2;
    pid_ = -1;
    if (out_fd_ >= 0) {
      close(out_fd_);
      out_fd_ = -1;
    }
    return internal::ExitCodeOf(status);
  }

  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }
  // From the listening line; empty / 0 when that transport is disabled ("-").
  const std::string& udp_host() const { return udp_host_; }
  uint16_t udp_port() const { return udp_port_; }
  const std::string& unix_path() const { return unix_path_; }
  const std::string& seq_path() const { return seq_path_; }
  const std::string& listening_line() const { return listening_line_; }
  // Cluster mode only (else empty): the advertised gossip "ip:port" and node id.
  const std::string& gossip_address() const { return gossip_address_; }
  const std::string& node_id() const { return node_id_; }
  // The Envoy doors' bound "host:port" from the listening line; "" when off.
  const std::string& grpc_address() const { return grpc_address_; }
  const std::string& http_address() const { return http_address_; }
  const std::vector<std::string>& last_args() const { return last_args_; }

 private:
  // "tallyd listening udp=ADDR unix=PATH seq=PATH[ gossip=ADDR node=NAME]";
  // ADDR is HOST:PORT or [V6]:PORT. Paths may contain spaces, so split on
  // the " key=" markers (node names have no spaces).
  bool ParseListening(std::string line) {
    gossip_address_.clear();
    node_id_.clear();
    grpc_address_.clear();
    http_address_.clear();
    // " grpc=ADDR" and " http=ADDR" come last, each only when that door is on.
    for (auto [key, out] : {std::pair<const char*, std::string*>{" http=", &http_address_},
                            {" grpc=", &grpc_address_}}) {
      const size_t at = line.rfind(key);
      if (at != std::string::npos && line.find(' ', at + 1) == std::string::npos) {
        *out = line.substr(at + std::strlen(key));
        line.resize(at);
      }
    }
    size_t n = line.rfind(" node=");
    size_t g = line.rfind(" gossip=");
    if (n != std::string::npos && g != std::string::npos && g < n) {
      gossip_address_ = line.substr(g + 8, n - (g + 8));
      node_id_ = line.substr(n + 6);
      line.resize(g);
    }
    size_t u = line.find(" udp=");
    size_t x = line.find(" unix=");
    size_t s = line.find(" seq=");
    if (u == std::string::npos || x == std::string::npos || s == std::string::npos || u > x ||
        x > s) {
      return false;
    }
    std::string udp = line.substr(u + 5, x - (u + 5));
    std::string unix_path = line.substr(x + 6, s - (x + 6));
    std::string seq = line.substr(s + 5);
    udp_host_.clear();
    udp_port_ = 0;
    if (udp != "-") {
      size_t colon = udp.rfind(':');
      if (colon == std::string::npos) return false;
      std::string host = udp.substr(0, colon);
      if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
        host = host.substr(1, host.size() - 2);
      }
      unsigned port = 0;
      const char* b = udp.data() + colon + 1;
      const char* e = udp.data() + udp.size();
      auto [p, ec] = std::from_chars(b, e, port);
      if (ec != std::errc() || p != e || port == 0 || port > 65535) return false;
      udp_host_ = host;
      udp_port_ = static_cast<uint16_t>(port);
    }
    unix_path_ = unix_path == "-" ? "" : unix_path;
    seq_path_ = seq == "-" ? "" : seq;
    return true;
  }

  pid_t pid_ = -1;
  int out_fd_ = -1;
  std::string udp_host_;
  uint16_t udp_port_ = 0;
  std::string unix_path_;
  std::string seq_path_;
  std::string listening_line_;
  std::string gossip_address_;
  std::string node_id_;
  std::string grpc_address_;
  std::string http_address_;
  std::vector<std::string> last_args_;
  std::string last_binary_;
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_DAEMON_PROCESS_H_

// Network namespaces for multi-process fault tests: one namespace per node
// (or per group of nodes), wired to a bridge in a hub namespace, and
// nftables rules inside them (cuts, random loss). Every namespace the lab
// creates is deleted when it goes away, even when the test failed; the
// namespaces of a crashed earlier run (its pid gone) are reaped on start.
//
//   NetnsLab lab("loss");
//   std::string why;
//   if (!lab.Usable(&why)) GTEST_SKIP() << why;     // not root, no ip/nft
//   std::string ns;
//   ASSERT_TRUE(lab.AddHost("n1", "10.203.0.1", &ns, &why)) << why;
//   ASSERT_TRUE(lab.Nft(ns, {"add", "table", "inet", "t"}, &why)) << why;
//
// Names are "tally-<tag>-<pid>-<suffix>"; interfaces live inside the
// namespaces, so parallel tests never collide. Not thread-safe.
#ifndef TALLY_TESTS_SUPPORT_NETNS_LAB_H_
#define TALLY_TESTS_SUPPORT_NETNS_LAB_H_

#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally::testing {

class NetnsLab {
 public:
  // `tag`: a short word naming the test (letters only).
  explicit NetnsLab(std::string tag) : prefix_("tally-" + std::move(tag) + "-") {
    for (const char* p : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
      if (access(p, X_OK) == 0) {
        ip_ = p;
        break;
      }
    }
    for (const char* p : {"/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft"}) {
      if (access(p, X_OK) == 0) {
        nft_ = p;
        break;
      }
    }
  }
  ~NetnsLab() {
    for (auto it = created_.rbegin(); it != created_.rend(); ++it) Run({ip_, "netns", "del", *it});
  }
  NetnsLab(const NetnsLab&) = delete;
  NetnsLab& operator=(const NetnsLab&) = delete;

  // True iff namespaces and nftables can be used here (root, ip, nft, and a
  // namespace can actually be created); otherwise `*why` says what is missing.
  // Reaps namespaces left by crashed runs of this tag.
  bool Usable(std::string* why) {
    if (geteuid() != 0) {
      *why = "needs root (network namespaces, nftables)";
      return false;
    }
    if (ip_.empty() || nft_.empty()) {
      *why = "iproute2 'ip' or 'nft' not found";
      return false;
    }
    ReapStale();
    std::string ns;
    if (!AddNamespace("probe", &ns, why)) {
      *why = "cannot create a network namespace here: " + *why;
      return false;
    }
    return true;
  }

  const std::string& ip() const { return ip_; }
  const std::string& nft() const { return nft_; }

  // Creates namespace prefix-pid-`suffix` with loopback up.
  bool AddNamespace(const std::string& suffix, std::string* ns, std::string* error) {
    *ns = prefix_ + std::to_string(getpid()) + "-" + suffix;
    if (!Run({ip_, "netns", "add", *ns}, error)) return false;
    created_.push_back(*ns);
    return Run({ip_, "-n", *ns, "link", "set", "lo", "up"}, error);
  }

  // A namespace for one host at `address` (/24), wired by a veth pair to a
  // bridge in the lab's hub namespace (created on first use). Inside it the
  // interface is "eth0".
  bool AddHost(const std::string& suffix, const std::string& address, std::string* ns,
               std::string* error) {
    if (hub_.empty()) {
      if (!AddNamespace("hub", &hub_, error)) return false;
      if (!Run({ip_, "-n", hub_, "link", "add", "br0", "type", "bridge"}, error) ||
          !Run({ip_, "-n", hub_, "link", "set", "br0", "up"}, error)) {
        return false;
      }
    }
    if (!AddNamespace(suffix, ns, error)) return false;
    const std::string port = "p" + std::to_string(++ports_);
    const std::vector<std::vector<std::string>> steps = {
        {ip_, "link", "add", port, "netns", hub_, "type", "veth", "peer", "name", "eth0", "netns",
         *ns},
        {ip_, "-n", hub_, "link", "set", port, "master", "br0"},
        {ip_, "-n", hub_, "link", "set", port, "up"},
        {ip_, "-n", *ns, "addr", "add", address + "/24", "dev", "eth0"},
        {ip_, "-n", *ns, "link", "set", "eth0", "up"},
    };
    for (const auto& step : steps) {
      if (!Run(step, error)) return false;
    }
    return WaitLinkUp(*ns, "eth0", error);
  }

  // A veth pair between two namespaces: `dev_a` in `ns_a` at `address_a`,
  // `dev_b` in `ns_b` at `address_b` (both /24).
  bool Link(const std::string& ns_a, const std::string& dev_a, const std::string& address_a,
            const std::string& ns_b, const std::string& dev_b, const std::string& address_b,
            std::string* error) {
    const std::vector<std::vector<std::string>> steps = {
        {ip_, "link", "add", dev_a, "netns", ns_a, "type", "veth", "peer", "name", dev_b, "netns",
         ns_b},
        {ip_, "-n", ns_a, "addr", "add", address_a + "/24", "dev", dev_a},
        {ip_, "-n", ns_b, "addr", "add", address_b + "/24", "dev", dev_b},
        {ip_, "-n", ns_a, "link", "set", dev_a, "up"},
        {ip_, "-n", ns_b, "link", "set", dev_b, "up"},
    };
    for (const auto& step : steps) {
      if (!Run(step, error)) return false;
    }
    return WaitLinkUp(ns_a, dev_a, error) && WaitLinkUp(ns_b, dev_b, error);
  }

  // Runs `nft args...` inside `ns`.
  bool Nft(const std::string& ns, const std::vector<std::string>& args, std::string* error) {
    std::vector<std::string> cmd = {ip_, "netns", "exec", ns, nft_};
    cmd.insert(cmd.end(), args.begin(), args.end());
    return Run(cmd, error);
  }

  // Drops `percent`% of the packets that arrive in `ns` on `device`, chosen
  // at random per packet (replaces an earlier loss rule in that namespace).
  bool SetLoss(const std::string& ns, const std::string& device, int percent, std::string* error) {
    ClearLoss(ns);
    return Nft(ns, {"add", "table", "inet", "tally_loss"}, error) &&
           Nft(ns,
               {"add", "chain", "inet", "tally_loss", "in",
                "{ type filter hook input priority 0; }"},
               error) &&
           Nft(ns,
               {"add", "rule", "inet", "tally_loss", "in", "iifname", device, "numgen", "random",
                "mod", "100", "<", std::to_string(percent), "counter", "drop"},
               error);
  }
  void ClearLoss(const std::string& ns) {
    std::string ignored;
    Nft(ns, {"delete", "table", "inet", "tally_loss"}, &ignored);
  }
  // Packets the loss rule in `ns` dropped so far (-1 if unknown).
  int64_t LossDrops(const std::string& ns) {
    ProcessResult r =
        RunProcess(ip_, {"netns", "exec", ns, nft_, "list", "table", "inet", "tally_loss"});
    size_t at = r.out.find("counter packets ");
    if (r.exit_code != 0 || at == std::string::npos) return -1;
    return std::atoll(r.out.c_str() + at + 16);
  }

  // Runs a command (argv[0] a path); false with its output in `*error` on failure.
  static bool Run(const std::vector<std::string>& argv, std::string* error = nullptr) {
    std::vector<std::string> args(argv.begin() + 1, argv.end());
    ProcessResult r = RunProcess(argv[0], args, std::chrono::seconds(20));
    if (r.exit_code == 0) return true;
    if (error != nullptr) {
      *error = argv[0];
      for (const std::string& a : args) *error += " " + a;
      *error += ": exit " + std::to_string(r.exit_code) + ": " + r.out + r.err;
    }
    return false;
  }

 private:
  // Polls (every 20 ms, up to 10 s) until `dev` in `ns` has carrier.
  bool WaitLinkUp(const std::string& ns, const std::string& dev, std::string* error) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    for (;;) {
      ProcessResult r = RunProcess(ip_, {"-n", ns, "-o", "link", "show", dev});
      if (r.out.find("LOWER_UP") != std::string::npos) return true;
      if (std::chrono::steady_clock::now() >= deadline) {
        *error = dev + " in " + ns + " did not come up: " + r.out + r.err;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));  // poll pacing
    }
  }

  // Namespaces prefix-<pid>-* whose pid is gone: left by a crashed run.
  void ReapStale() {
    std::error_code ec;
    for (const auto& entry : std::filesystem::directory_iterator("/run/netns", ec)) {
      const std::string name = entry.path().filename().string();
      if (name.rfind(prefix_, 0) != 0) continue;
      const pid_t pid = static_cast<pid_t>(std::atoi(name.c_str() + prefix_.size()));
      if (pid > 0 && pid != getpid() && kill(pid, 0) != 0 && errno == ESRCH) {
        Run({ip_, "netns", "del", name});
      }
    }
  }

  std::string prefix_;
  std::string ip_, nft_;
  std::string hub_;
  int ports_ = 0;
  std::vector<std::string> created_;
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_NETNS_LAB_H_

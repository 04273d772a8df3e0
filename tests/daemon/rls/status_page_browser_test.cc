// The status page (GET /, daemon/rls/status_page.h) in a real browser: three
// tallyd members with the HTTP door, checks flowing into n1 (plain ones over
// UDP and rules-form ones over HTTP), then Debian's headless chromium loads
// n1's page, runs its script (which polls /status.json) and dumps the DOM:
// the three member ids, a non-zero check rate, the busiest key, the rule at
// its limit and the other members' join events must be on the page. A
// screenshot is taken too (TALLY_STATUS_SCREENSHOT=FILE keeps a copy, as
// docs/status-page.png was made).
//
// Skips (with the reason) only when chromium is not installed. Every process
// it starts is stopped by pid: the tallyds by the harness, chromium (and the
// helpers it forks, which share its process group) here.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <boost/json.hpp>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "tally/client.h"
#include "tests/cluster/cluster_harness.h"
#include "tests/support/daemon_process.h"
#include "tests/support/http_request.h"

namespace tally::testing {
namespace {

namespace json = boost::json;

std::string ChromiumPath() {
  for (const char* p : {"/usr/bin/chromium", "/usr/bin/chromium-browser"}) {
    if (access(p, X_OK) == 0) return p;
  }
  return "";
}

// Runs chromium with `args` in a process group of its own, returns its
// stdout (stderr goes to `log`). Kills the whole group (its id is the pid
// started here) when it is done or after `timeout`, so no helper outlives
// the test.
struct BrowserRun {
  int exit_code = -1;  // -1: did not finish in time
  std::string out;
};

BrowserRun RunBrowser(const std::string& binary, std::vector<std::string> args,
                      const std::string& log, std::chrono::milliseconds timeout) {
  BrowserRun run;
  int out_pipe[2];
  if (pipe2(out_pipe, O_CLOEXEC) != 0) return run;
  args.insert(args.begin(), binary);
  std::vector<char*> argv = internal::MakeArgv(&args);
  const pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    dup2(out_pipe[1], STDOUT_FILENO);
    const int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (err >= 0) dup2(err, STDERR_FILENO);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  close(out_pipe[1]);
  if (pid < 0) {
    close(out_pipe[0]);
    return run;
  }
  setpgid(pid, pid);  // also here: no race with the child's own call
  const auto deadline = std::chrono::steady_clock::now() + ScaledWait(timeout);
  char buffer[65536];
  for (;;) {
    const int64_t left = internal::MsUntil(deadline);
    if (left == 0) break;
    pollfd p{out_pipe[0], POLLIN, 0};
    const int n = poll(&p, 1, static_cast<int>(left));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    const ssize_t got = read(out_pipe[0], buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // EOF: chromium closed its stdout
    run.out.append(buffer, static_cast<size_t>(got));
  }
  close(out_pipe[0]);
  int status = 0;
  if (internal::WaitExit(pid, std::chrono::milliseconds(internal::MsUntil(deadline) + 5000),
                         &status)) {
    run.exit_code = internal::ExitCodeOf(status);
  } else {
    kill(-pid, SIGKILL);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
  }
  kill(-pid, SIGKILL);  // helpers still in its group (none, normally)
  return run;
}

std::vector<std::string> BrowserArgs(const TempDir& dir) {
  return {"--headless",
          "--no-sandbox",  // tests run as root in containers
          "--disable-gpu",
          "--no-first-run",
          "--disable-extensions",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-dev-shm-usage",
          "--user-data-dir=" + dir.File("chromium-profile")};
}

// The text of the element with id `id` ("" if none).
std::string ElementText(const std::string& dom, const std::string& id) {
  std::smatch m;
  if (!std::regex_search(dom, m, std::regex("id=\"" + id + "\"[^>]*>([^<]*)<"))) return "";
  return m[1];
}

double NumberIn(std::string text) {
  std::erase(text, ',');
  try {
    return std::stod(text);
  } catch (const std::exception&) {
    return -1;
  }
}

// The inner HTML of <tbody id="ID">.
std::string TableBody(const std::string& dom, const std::string& id) {
  const size_t at = dom.find("<tbody id=\"" + id + "\"");
  if (at == std::string::npos) return "";
  const size_t end = dom.find("</tbody>", at);
  return dom.substr(at, end == std::string::npos ? std::string::npos : end - at);
}

constexpr const char* kRules = R"(domain: edge
descriptors:
  - key: tier
    value: gold
    rate_limits:
      - {unit: minute, requests_per_unit: 5, name: burst}
)";

TEST(StatusPageBrowserTest, ThreeMembersAndALiveCheckRateInChromium) {
  const std::string chromium = ChromiumPath();
  if (chromium.empty()) {
    GTEST_SKIP() << "chromium is not installed (scripts/install-deps.sh installs it)";
  }
  TempDir dir;
  ASSERT_FALSE(dir.path().empty());
  std::ofstream(dir.File("rules.yaml")) << kRules;
  ClusterHarness c;
  std::string error;
  ASSERT_TRUE(c.StartNodes(3, {"--http", "127.0.0.1:0", "--rules", dir.File("rules.yaml")}, &error))
      << error;
  ASSERT_TRUE(c.WaitFormed(std::chrono::seconds(15), &error)) << error;
  const std::string http = c.node(0).process.http_address();
  ASSERT_FALSE(http.empty()) << c.node(0).process.listening_line();

  // Rules-form checks over HTTP: tier gold allows 5 a minute, so the eighth
  // is denied and the rule is at its limit.
  const std::string gold =
      R"({"domain":"edge","descriptors":[{"entries":[{"key":"tier","value":"gold"}]}]})";
  int denied = 0;
  for (int i = 0; i < 8; ++i) {
    const HttpResult r = HttpPost(http, "/v1/check", gold);
    ASSERT_EQ(r.status, 200) << r.body;
    denied += json::parse(r.body).at("allowed").as_bool() ? 0 : 1;
  }
  EXPECT_EQ(denied, 3);

  // Plain checks over UDP into n1 until the browser is done, so the page's
  // rates are live whenever it polls.
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> sent{0};
  std::thread sender([&] {
    std::string why;
    std::unique_ptr<Client> client = Client::Connect(c.node(0).udp(), ClientOptions{}, &why);
    if (!client) return;
    CheckRequest r;
    r.endpoint = "api";
    r.limit = 50;
    r.window_ms = 60'000;
    for (uint64_t i = 0; !stop.load(); ++i) {
      r.user_id = "user" + std::to_string(i % 3);
      client->Check(r);
      sent.fetch_add(1);
      // Pacing (about 200 checks/s), not a wait for a condition.
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  struct JoinOnExit {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~JoinOnExit() {
      stop.store(true);
      thread.join();
    }
  } join_sender{stop, sender};

  // The JSON behind the page: a rate once the once-a-second sampler saw the
  // checks, and a sampled busiest key.
  std::string last;
  ASSERT_TRUE(PollUntil(std::chrono::seconds(20), [&] {
    last = HttpGet(http, "/status.json").body;
    try {
      const json::value v = json::parse(last);
      return v.at("rates").at("checks_per_s_10s").to_number<double>() > 0 &&
             !v.at("busiest_keys").at("keys").as_array().empty();
    } catch (const std::exception&) {
      return false;
    }
  })) << last;

  const std::string url = "http://" + http + "/";
  std::vector<std::string> dump_args = BrowserArgs(dir);
  // Virtual time runs the page's script and its first polls; fetches pause it.
  dump_args.insert(dump_args.end(), {"--dump-dom", "--virtual-time-budget=5000", url});
  const BrowserRun dump =
      RunBrowser(chromium, dump_args, dir.File("chromium-dump.log"), std::chrono::seconds(90));
  std::ifstream log_in(dir.File("chromium-dump.log"));
  const std::string log((std::istreambuf_iterator<char>(log_in)), {});
  ASSERT_EQ(dump.exit_code, 0) << log;
  const std::string& dom = dump.out;
  ASSERT_NE(dom.find("</html>"), std::string::npos) << dom << log;

  EXPECT_EQ(ElementText(dom, "node-id"), "n1") << dom;
  for (const char* id : {"n1", "n2", "n3"}) {
    EXPECT_NE(dom.find(std::string("data-member=\"") + id + "\""), std::string::npos)
        << id << " not on the page:\n"
        << TableBody(dom, "members");
  }
  const std::string members = TableBody(dom, "members");
  EXPECT_EQ(std::regex_search(members, std::regex(">alive<")), true) << members;
  EXPECT_GT(NumberIn(ElementText(dom, "checks-10s")), 0) << dom;
  EXPECT_GT(NumberIn(ElementText(dom, "checks-1m")), 0) << dom;
  EXPECT_GE(NumberIn(ElementText(dom, "total-checks")), 8) << dom;
  EXPECT_EQ(ElementText(dom, "owning"), "owning");
  EXPECT_EQ(ElementText(dom, "rules-digest").size(), 12u) << "the rules' digest, cut";
  // The chart has its two lines.
  size_t polylines = 0;
  for (size_t at = dom.find("<polyline"); at != std::string::npos;
       at = dom.find("<polyline", at + 1)) {
    ++polylines;
  }
  EXPECT_EQ(polylines, 2u) << dom;
  EXPECT_NE(TableBody(dom, "keys").find(">user"), std::string::npos) << TableBody(dom, "keys");
  const std::string rules = TableBody(dom, "rules");
  EXPECT_NE(rules.find(">edge.tier_gold<"), std::string::npos) << rules;
  EXPECT_NE(rules.find(">burst<"), std::string::npos) << rules;
  EXPECT_NE(rules.find("100 % of the limit"), std::string::npos) << rules;
  // n1 saw n2 and n3 join.
  const std::string events = TableBody(dom, "events");
  EXPECT_NE(events.find(">n2<"), std::string::npos) << events;
  EXPECT_NE(events.find(">n3<"), std::string::npos) << events;
  EXPECT_EQ(ElementText(dom, "error"), "") << "the page's last poll failed";

  // A screenshot of the same page.
  const std::string png = dir.File("status-page.png");
  std::vector<std::string> shot_args = BrowserArgs(dir);
  shot_args.insert(shot_args.end(), {"--hide-scrollbars", "--screenshot=" + png,
                                     "--window-size=1280,900", "--virtual-time-budget=5000", url});
  const BrowserRun shot =
      RunBrowser(chromium, shot_args, dir.File("chromium-shot.log"), std::chrono::seconds(90));
  EXPECT_EQ(shot.exit_code, 0);
  std::ifstream png_in(png, std::ios::binary);
  std::string header(8, '\0');
  png_in.read(header.data(), 8);
  EXPECT_EQ(header, std::string("\x89PNG\r\n\x1a\n", 8)) << "no screenshot at " << png;
  if (const char* keep = std::getenv("TALLY_STATUS_SCREENSHOT"); keep != nullptr && *keep) {
    std::error_code ec;
    std::filesystem::copy_file(png, keep, std::filesystem::copy_options::overwrite_existing, ec);
    EXPECT_FALSE(ec) << ec.message();
  }
  EXPECT_GT(sent.load(), 0u);
}

}  // namespace
}  // namespace tally::testing

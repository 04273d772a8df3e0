// Architecture rule 2: nothing under crdt/, membership/, the node core
// (daemon/core/), the snapshot codec (persist/) or the wire codecs (wire/) touches the outside
// world. The core takes time and randomness from its driver; it never
// includes Asio, reads a clock, sleeps, starts a thread, locks, logs or opens
// a socket or file. This test fails the build's suite when such code appears.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace fs = std::filesystem;

struct Rule {
  const char* what;
  std::regex pattern;
};

const std::vector<Rule>& Rules() {
  static const std::vector<Rule> rules = {
      {"Asio", std::regex(R"(boost/asio|asio\.hpp)")},
      {"reading a clock",
       std::regex(R"(::now\s*\(|clock_gettime|gettimeofday|\btime\s*\(\s*(nullptr|NULL|0)\s*\))")},
      {"threads", std::regex(R"(std::thread|std::jthread|<thread>|pthread_create|std::async)")},
      {"locks", std::regex(R"(<mutex>|std::mutex|<shared_mutex>|<condition_variable>)")},
      {"unseeded randomness",
       std::regex(R"(\brand\s*\(|\bsrand\s*\(|random_device|arc4random|getrandom)")},
      {"sleeping", std::regex(R"(sleep_for|sleep_until|\busleep\s*\(|\bsleep\s*\(|nanosleep)")},
      {"sockets", std::regex(R"(\bsocket\s*\(|<sys/socket\.h>|recvmmsg|sendmmsg)")},
      {"files and consoles",
       std::regex(R"(<fstream>|<iostream>|\bfopen\s*\(|std::cout|std::cerr)")},
      {"logging", std::regex(R"(spdlog)")},
  };
  return rules;
}

// Strips // and /* */ comments so prose may mention what code may not do.
std::string StripComments(const std::string& text) {
  static const std::regex line_comment(R"(//[^\n]*)");
  static const std::regex block_comment(R"(/\*[\s\S]*?\*/)");
  return std::regex_replace(std::regex_replace(text, block_comment, ""), line_comment, "");
}

std::vector<std::string> Violations(const std::string& name, const std::string& source) {
  std::vector<std::string> found;
  std::string code = StripComments(source);
  for (const Rule& rule : Rules()) {
    if (std::regex_search(code, rule.pattern)) found.push_back(name + ": " + rule.what);
  }
  return found;
}

TEST(PurityTest, CheckerCatchesEachForbiddenThing) {
  const char* bad[] = {
      "#include <boost/asio.hpp>\n",
      "auto t = std::chrono::steady_clock::now();\n",
      "std::thread t([]{});\n",
      "std::mutex mu;\n",
      "int x = rand();\n",
      "std::this_thread::sleep_for(1s);\n",
      "int fd = socket(AF_INET, SOCK_DGRAM, 0);\n",
      "std::cout << 1;\n",
      "spdlog::info(\"x\");\n",
  };
  for (const char* src : bad) EXPECT_FALSE(Violations("snippet", src).empty()) << src;
  EXPECT_TRUE(Violations("ok", "// std::thread is fine in a comment\nint now_ms = 0;\n").empty());
}

TEST(PurityTest, PureFoldersTouchNothingOutside) {
  const fs::path root = TALLY_SOURCE_DIR;
  size_t files = 0;
  std::vector<std::string> violations;
  for (const char* dir : {"crdt", "membership", "daemon/core", "persist", "wire"}) {
    if (!fs::exists(root / dir)) continue;
    for (const auto& entry : fs::recursive_directory_iterator(root / dir)) {
      if (!entry.is_regular_file()) continue;
      auto ext = entry.path().extension();
      if (ext != ".h" && ext != ".cc") continue;
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      ++files;
      for (auto& v : Violations(fs::relative(entry.path(), root).string(), text.str())) {
        violations.push_back(v);
      }
    }
  }
  EXPECT_GE(files, 6u) << "the pure folders were not found under " << root;
  for (const auto& v : violations) ADD_FAILURE() << v;
}

}  // namespace

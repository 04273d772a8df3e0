// The rules engine is pure except rules/load_files.*: the parser, the index
// and Resolve never touch files, clocks, threads, locks, sockets or logs
// (architecture rule 1; the daemon's doors call them on the hot path).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

TEST(RulesPurityTest, OnlyLoadFilesDoesIo) {
  const std::pair<const char*, std::regex> forbidden[] = {
      {"files", std::regex(R"(<fstream>|<filesystem>|\bfopen\s*\(|\bopen\s*\(|<cstdio>.*fread)")},
      {"consoles", std::regex(R"(<iostream>|std::cout|std::cerr|\bprintf\s*\()")},
      {"clocks", std::regex(R"(::now\s*\(|clock_gettime|gettimeofday)")},
      {"threads and locks", std::regex(R"(<thread>|std::thread|<mutex>|<shared_mutex>|<atomic>)")},
      {"sockets", std::regex(R"(<sys/socket\.h>|\bsocket\s*\()")},
      {"Asio, the daemon or the node", std::regex(R"(asio|daemon/|crdt/|membership/|spdlog)")},
  };
  const std::regex comments(R"(//[^\n]*|/\*[\s\S]*?\*/)");
  size_t files = 0;
  for (const auto& entry : fs::directory_iterator(fs::path(TALLY_SOURCE_DIR) / "rules")) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("load_files.", 0) == 0) continue;
    std::ifstream in(entry.path());
    std::stringstream text;
    text << in.rdbuf();
    const std::string code = std::regex_replace(text.str(), comments, "");
    ++files;
    for (const auto& [what, pattern] : forbidden) {
      EXPECT_FALSE(std::regex_search(code, pattern)) << "rules/" << name << " uses " << what;
    }
  }
  EXPECT_GE(files, 6u);
}

}  // namespace

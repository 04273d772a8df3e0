// The request/answer mapping of the Envoy doors (daemon/rls/rls_mapping.*,
// rls_json.*, v1_check.*, descriptor_wire.*) is pure like the rules it calls: no files, clocks,
// threads, locks, sockets, logs or gRPC; the servers (rls_server.cc) do the I/O.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>

namespace {

namespace fs = std::filesystem;

TEST(RlsPurityTest, MappingAndJsonDoNoIo) {
  const std::pair<const char*, std::regex> forbidden[] = {
      {"files", std::regex(R"(<fstream>|<filesystem>|\bfopen\s*\(|\bopen\s*\()")},
      {"consoles", std::regex(R"(<iostream>|std::cout|std::cerr|\bprintf\s*\()")},
      {"clocks", std::regex(R"(::now\s*\(|clock_gettime|gettimeofday|ReadClock)")},
      {"threads and locks", std::regex(R"(<thread>|std::thread|<mutex>|<shared_mutex>|<atomic>)")},
      {"sockets", std::regex(R"(<sys/socket\.h>|\bsocket\s*\()")},
      {"Asio, gRPC, logs or the daemon's I/O",
       std::regex(R"(asio|grpc|spdlog|daemon/io/|daemon/core/)")},
  };
  const std::regex comments(R"(//[^\n]*|/\*[\s\S]*?\*/)");
  size_t files = 0;
  for (const char* name :
       {"rls_mapping.h", "rls_mapping.cc", "rls_json.h", "rls_json.cc", "v1_check.h", "v1_check.cc",
        "descriptor_wire.h", "descriptor_wire.cc", "v1_report.h", "v1_report.cc"}) {
    std::ifstream in(fs::path(TALLY_SOURCE_DIR) / "daemon" / "rls" / name);
    ASSERT_TRUE(in) << name;
    std::stringstream text;
    text << in.rdbuf();
    const std::string code = std::regex_replace(text.str(), comments, "");
    ++files;
    for (const auto& [what, pattern] : forbidden) {
      EXPECT_FALSE(std::regex_search(code, pattern)) << "daemon/rls/" << name << " uses " << what;
    }
  }
  EXPECT_EQ(files, 10u);
}

}  // namespace

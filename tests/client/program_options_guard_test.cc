// client/program_options_guard.h: Boost's placeholders are refused, other
// uses of '%' pass, and every program that parses flags refuses them instead
// of hanging.
#include "client/program_options_guard.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally {
namespace {

TEST(ProgramOptionsGuardTest, FindsEachPlaceholderAndNothingElse) {
  for (std::string_view token : {"%canonical_option%", "%option%", "%original_token%", "%prefix%",
                                 "%value%", "%invalid_line%", "%a%"}) {
    std::string text = "a";
    text.append(token).append("b");
    EXPECT_EQ(flags::FindBoostPlaceholder(text), token);
  }
  EXPECT_EQ(flags::FindBoostPlaceholder("x%value%y%option%"), "%value%");  // the first
  for (const char* ordinary :
       {"", "100%", "a%20%21", "%%", "%Value%", "%opt ion%", "%value", "%x1%"}) {
    EXPECT_EQ(flags::FindBoostPlaceholder(ordinary), "") << ordinary;
  }
}

TEST(ProgramOptionsGuardTest, RefusesArgumentsAfterTheProgramName) {
  const char* fine[] = {"%value%", "--limit", "10", "user%20x"};  // argv[0] is not looked at
  EXPECT_EQ(flags::RefuseBoostPlaceholders(4, fine), "");
  const char* bad[] = {"tally", "check", "--x%canonical_option%"};
  const std::string why = flags::RefuseBoostPlaceholders(3, bad);
  EXPECT_NE(why.find("argument 2 holds '%canonical_option%'"), std::string::npos) << why;
}

// Before the guard each of these ran until killed.
TEST(ProgramOptionsGuardTest, EveryProgramExitsTwo) {
  const std::string bin = TALLY_BIN_DIR;
  const std::vector<std::pair<std::string, std::vector<std::string>>> runs = {
      {"tallyd", {"--x%canonical_option%"}},
      {"tally", {"check", "--x%canonical_option%"}},
      {"tally", {"status", "--timeout-ms=x%canonical_option%"}},
      {"tally-load", {"--x%canonical_option%"}},
  };
  for (const auto& [program, args] : runs) {
    SCOPED_TRACE(program + " " + args.back());
    const testing::ProcessResult result = testing::RunProcess(bin + "/" + program, args);
    EXPECT_EQ(result.exit_code, 2);
    EXPECT_NE(result.err.find("cannot report on"), std::string::npos) << result.err;
  }
}

}  // namespace
}  // namespace tally

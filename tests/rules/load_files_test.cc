// LoadRules: a file or a directory of *.yaml / *.yml, one domain each; any
// error rejects the whole load and every error names its file and line.
#include "rules/load_files.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "tests/rules/rules_test_util.h"

namespace tally::rules {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;
using testing::Joined;

class LoadRulesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           ("tally_rules_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Write(const fs::path& relative, const std::string& text) {
    const fs::path path = dir_ / relative;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << text;
    return path.string();
  }
  static std::string Domain(const std::string& name) {
    return "domain: " + name +
           "\ndescriptors:\n  - key: k\n    rate_limit: {unit: second, "
           "requests_per_unit: 1}\n";
  }

  fs::path dir_;
};

TEST_F(LoadRulesTest, SingleFileOfAnyName) {
  const std::string path = Write("rules.conf", Domain("one"));
  const BuildResult result = LoadRules(path);
  ASSERT_TRUE(result.ok()) << Joined(result.errors);
  EXPECT_TRUE(result.rules->HasDomain("one"));
  EXPECT_EQ(result.rules->sources(), std::vector<std::string>{path});
}

TEST_F(LoadRulesTest, DirectoryTakesYamlAndYmlOnly) {
  Write("a.yaml", Domain("a"));
  Write("b.yml", Domain("b"));
  Write("notes.txt", "not yaml at all: [");
  Write(".hidden.yaml", "broken: [");
  Write("sub/c.yaml", Domain("c"));  // subdirectories are not read
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_TRUE(result.ok()) << Joined(result.errors);
  EXPECT_EQ(result.rules->domain_count(), 2u);
  EXPECT_TRUE(result.rules->HasDomain("a"));
  EXPECT_TRUE(result.rules->HasDomain("b"));
  EXPECT_FALSE(result.rules->HasDomain("c"));
}

TEST_F(LoadRulesTest, KubernetesConfigMapLayout) {
  // A ConfigMap volume: the files are links into a hidden, timestamped folder.
  Write("..2024_01_01/api.yaml", Domain("api"));
  fs::create_directory_symlink("..2024_01_01", dir_ / "..data");
  fs::create_symlink("..data/api.yaml", dir_ / "api.yaml");
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_TRUE(result.ok()) << Joined(result.errors);
  EXPECT_EQ(result.rules->domain_count(), 1u);
  EXPECT_TRUE(result.rules->HasDomain("api"));
}

TEST_F(LoadRulesTest, EmptyDirectoryIsAnEmptyRuleSet) {
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_TRUE(result.ok());
  EXPECT_EQ(result.rules->domain_count(), 0u);
  EXPECT_EQ(result.rules->digest(), RuleSet::Empty()->digest());
}

TEST_F(LoadRulesTest, DuplicateDomainsNameBothFiles) {
  const std::string a = Write("a.yaml", Domain("same"));
  const std::string b = Write("b.yaml", "# second\n" + Domain("same"));
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_FALSE(result.ok());
  ASSERT_EQ(result.errors.size(), 1u) << Joined(result.errors);
  EXPECT_EQ(result.errors[0].ToString(),
            b + ":2:1: duplicate domain 'same': also in " + a + ":1:1");
}

TEST_F(LoadRulesTest, OneBadFileRejectsTheLoadAndEveryErrorIsReported) {
  Write("a.yaml", Domain("a"));
  const std::string b = Write("b.yaml", "domain: b\ndescriptors:\n  - key: k\n    rate: 1\n");
  const std::string c = Write("c.yaml", "domain: c\ndescriptors: [\n");
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.rules, nullptr);
  ASSERT_EQ(result.errors.size(), 2u) << Joined(result.errors);
  EXPECT_THAT(result.errors[0].ToString(), HasSubstr(b + ":4:5: unknown field 'rate'"));
  EXPECT_THAT(result.errors[1].ToString(), HasSubstr(c + ":3:1: YAML syntax"));
}

TEST_F(LoadRulesTest, MissingPath) {
  const BuildResult result = LoadRules((dir_ / "nope").string());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.errors[0].ToString(), (dir_ / "nope").string() + ": no such file or directory");
}

TEST_F(LoadRulesTest, OversizedFileIsReadOnlyUpToTheBound) {
  const std::string big = Write("big.yaml", "domain: big\n" + std::string(2 * kMaxFileBytes, '#'));
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.errors[0].ToString(), big + ": file is larger than 1048576 bytes");
}

TEST_F(LoadRulesTest, UnreadableFileIsAnError) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads any file";
  const std::string path = Write("locked.yaml", Domain("x"));
  fs::permissions(path, fs::perms::none);
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.errors[0].ToString(), path + ": cannot open for reading");
}

TEST_F(LoadRulesTest, DanglingLinkIsSkipped) {
  Write("a.yaml", Domain("a"));
  fs::create_symlink(dir_ / "gone.yaml", dir_ / "dangling.yaml");
  const BuildResult result = LoadRules(dir_.string());
  ASSERT_TRUE(result.ok()) << Joined(result.errors);
  EXPECT_EQ(result.rules->domain_count(), 1u);
}

}  // namespace
TEST(ChangeConcernsRulesTest, OnlyChangesThatCanChangeTheRules) {
  // One rules file: its own name, and Kubernetes' ..data swaps.
  EXPECT_TRUE(ChangeConcernsRules("rules.yaml", "rules.yaml"));
  EXPECT_TRUE(ChangeConcernsRules("..data", "rules.yaml"));
  EXPECT_TRUE(ChangeConcernsRules("..2026_12_05_11_00_00.123", "rules.yaml"));
  EXPECT_TRUE(ChangeConcernsRules("", "rules.yaml"));  // the directory itself
  EXPECT_FALSE(ChangeConcernsRules("tallyd.log", "rules.yaml"));
  EXPECT_FALSE(ChangeConcernsRules("other.yaml", "rules.yaml"));
  EXPECT_FALSE(ChangeConcernsRules(".rules.yaml.swp", "rules.yaml"));
  // A rules directory: whatever LoadRules would read.
  EXPECT_TRUE(ChangeConcernsRules("edge.yaml", ""));
  EXPECT_TRUE(ChangeConcernsRules("edge.yml", ""));
  EXPECT_TRUE(ChangeConcernsRules("..data", ""));
  EXPECT_FALSE(ChangeConcernsRules("tallyd.log", ""));
  EXPECT_FALSE(ChangeConcernsRules(".edge.yaml.swp", ""));
}

}  // namespace tally::rules

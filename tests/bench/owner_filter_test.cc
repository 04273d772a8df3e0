// tally-load's key selection by owner (bench/owner_filter.h), against a
// fake owner lookup: no daemon involved.
#include "bench/owner_filter.h"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace tally::load {
namespace {

TEST(LoadUserIdTest, Format) {
  EXPECT_EQ(LoadUserId(0), "u0");
  EXPECT_EQ(LoadUserId(123456789), "u123456789");
  EXPECT_EQ(LoadUserId(UINT64_MAX), "u18446744073709551615");
  std::string reused = "something long already";
  FormatLoadUserId(42, &reused);
  EXPECT_EQ(reused, "u42");
}

TEST(OwnerFilterTest, ParseAndPrint) {
  std::string error;
  for (const char* text : {"all", "local", "remote", "node=b", "node=node=x"}) {
    std::optional<OwnerFilter> f = OwnerFilter::Parse(text, &error);
    ASSERT_TRUE(f) << text;
    EXPECT_EQ(f->ToString(), text);
  }
  EXPECT_EQ(OwnerFilter::Parse("node=b", &error)->node_id(), "b");
  EXPECT_FALSE(OwnerFilter::Parse("all", &error)->selects());
  EXPECT_TRUE(OwnerFilter::Parse("local", &error)->selects());
  for (const char* text : {"", "Local", "node=", "node", "remote ", "b"}) {
    error.clear();
    EXPECT_FALSE(OwnerFilter::Parse(text, &error)) << text;
    EXPECT_NE(error.find("local"), std::string::npos) << error;
  }
}

TEST(OwnerFilterTest, Keeps) {
  EXPECT_TRUE(OwnerFilter::All().Keeps("b", "a"));
  EXPECT_TRUE(OwnerFilter::Local().Keeps("a", "a"));
  EXPECT_FALSE(OwnerFilter::Local().Keeps("b", "a"));
  EXPECT_FALSE(OwnerFilter::Remote().Keeps("a", "a"));
  EXPECT_TRUE(OwnerFilter::Remote().Keeps("b", "a"));
  EXPECT_TRUE(OwnerFilter::Node("b").Keeps("b", "a"));
  EXPECT_TRUE(OwnerFilter::Node("a").Keeps("a", "a"));
  EXPECT_FALSE(OwnerFilter::Node("c").Keeps("b", "a"));
}

// A 3-member cluster seen from "a": key i is owned by "abc"[i % 3].
struct FakeCluster {
  std::string answerer = "a";
  std::vector<std::vector<uint64_t>> calls;  // the indices of each lookup batch

  static std::string OwnerOf(uint64_t i) { return std::string(1, "abc"[i % 3]); }

  OwnerLookupBatch Batch() {
    return [this](std::span<const uint64_t> ids) {
      calls.emplace_back(ids.begin(), ids.end());
      std::vector<OwnerLookup> out;
      for (uint64_t i : ids) {
        OwnerLookup a;
        a.ok = true;
        a.answerer = answerer;
        a.owner = OwnerOf(i);
        out.push_back(a);
      }
      return out;
    };
  }
};

TEST(SelectKeysTest, AllNeedsNoLookups) {
  FakeCluster fake;
  KeySelection s = SelectKeys(OwnerFilter::All(), 5, 100, 4, fake.Batch());
  EXPECT_TRUE(s.error.empty()) << s.error;
  EXPECT_EQ(s.indices, (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(s.examined, 0u);
  EXPECT_TRUE(fake.calls.empty());
}

TEST(SelectKeysTest, LocalKeepsTheAnswerersKeys) {
  FakeCluster fake;
  KeySelection s = SelectKeys(OwnerFilter::Local(), 4, 1000, 5, fake.Batch());
  EXPECT_TRUE(s.error.empty()) << s.error;
  EXPECT_EQ(s.indices, (std::vector<uint64_t>{0, 3, 6, 9}));
  EXPECT_EQ(s.answerer, "a");
  // Stops at the 4th kept key (index 9): 10 examined, in 2 batches of 5.
  EXPECT_EQ(s.examined, 10u);
  ASSERT_EQ(fake.calls.size(), 2u);
  EXPECT_EQ(fake.calls[0], (std::vector<uint64_t>{0, 1, 2, 3, 4}));
  EXPECT_EQ(fake.calls[1], (std::vector<uint64_t>{5, 6, 7, 8, 9}));
  EXPECT_EQ(s.owners, (std::map<std::string, uint64_t>{{"a", 4}, {"b", 3}, {"c", 3}}));
}

TEST(SelectKeysTest, RemoteAndNode) {
  FakeCluster fake;
  KeySelection remote = SelectKeys(OwnerFilter::Remote(), 4, 1000, 64, fake.Batch());
  EXPECT_TRUE(remote.error.empty()) << remote.error;
  EXPECT_EQ(remote.indices, (std::vector<uint64_t>{1, 2, 4, 5}));
  EXPECT_EQ(remote.examined, 6u);
  KeySelection c = SelectKeys(OwnerFilter::Node("c"), 3, 1000, 64, fake.Batch());
  EXPECT_TRUE(c.error.empty()) << c.error;
  EXPECT_EQ(c.indices, (std::vector<uint64_t>{2, 5, 8}));
}

TEST(SelectKeysTest, ChunkSizeDoesNotChangeTheSelection) {
  std::optional<KeySelection> first;
  for (uint64_t chunk : {1, 2, 3, 7, 64, 1000}) {
    SCOPED_TRACE(chunk);
    FakeCluster fake;
    KeySelection s = SelectKeys(OwnerFilter::Remote(), 50, 10'000, chunk, fake.Batch());
    ASSERT_TRUE(s.error.empty()) << s.error;
    ASSERT_EQ(s.indices.size(), 50u);
    if (!first) {
      first = s;
      continue;
    }
    EXPECT_EQ(s.indices, first->indices);
    EXPECT_EQ(s.examined, first->examined);
    EXPECT_EQ(s.owners, first->owners);
  }
}

TEST(SelectKeysTest, TooFewMatchesIsAnError) {
  FakeCluster fake;
  KeySelection s = SelectKeys(OwnerFilter::Node("zed"), 2, 30, 8, fake.Batch());
  EXPECT_TRUE(s.indices.empty());
  EXPECT_EQ(s.examined, 30u);  // stopped at max_examined, last batch cut to 6
  EXPECT_EQ(fake.calls.back().size(), 6u);
  EXPECT_NE(s.error.find("only 0 of the 30 keys"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find("node=zed"), std::string::npos) << s.error;
  EXPECT_NE(s.error.find("a: 10, b: 10, c: 10"), std::string::npos) << s.error;
}

TEST(SelectKeysTest, FailedLookupIsAnError) {
  FakeCluster fake;
  OwnerLookupBatch inner = fake.Batch();
  KeySelection s =
      SelectKeys(OwnerFilter::Local(), 10, 1000, 4, [&](std::span<const uint64_t> ids) {
        std::vector<OwnerLookup> out = inner(ids);
        for (size_t i = 0; i < ids.size(); ++i) {
          if (ids[i] == 5) out[i] = {false, "", "", "no reply"};
        }
        return out;
      });
  EXPECT_EQ(s.indices, (std::vector<uint64_t>{0, 3}));
  EXPECT_NE(s.error.find("owner of key u5: no reply"), std::string::npos) << s.error;
}

TEST(SelectKeysTest, NoOwnerOrTwoAnswerersOrShortAnswerIsAnError) {
  KeySelection no_owner =
      SelectKeys(OwnerFilter::Local(), 1, 10, 4, [](std::span<const uint64_t> ids) {
        return std::vector<OwnerLookup>(ids.size(), OwnerLookup{true, "a", "", ""});
      });
  EXPECT_NE(no_owner.error.find("key u0 has no owner in a's view"), std::string::npos)
      << no_owner.error;

  KeySelection two = SelectKeys(OwnerFilter::Local(), 5, 10, 4, [](std::span<const uint64_t> ids) {
    std::vector<OwnerLookup> out;
    for (uint64_t i : ids) out.push_back({true, i == 2 ? "b" : "a", "a", ""});
    return out;
  });
  EXPECT_NE(two.error.find("both a and b"), std::string::npos) << two.error;

  KeySelection short_answer =
      SelectKeys(OwnerFilter::Remote(), 1, 10, 4,
                 [](std::span<const uint64_t>) { return std::vector<OwnerLookup>(1); });
  EXPECT_NE(short_answer.error.find("1 answers for 4 keys"), std::string::npos)
      << short_answer.error;
}

}  // namespace
}  // namespace tally::load

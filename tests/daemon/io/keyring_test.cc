// The key file (daemon/io/keyring.h): parsing, loading, writing, key ids.
#include "daemon/io/keyring.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include "tests/support/daemon_process.h"

namespace tally::io {
namespace {

using tally::testing::TempDir;

PeerKey Key(uint8_t fill) {
  PeerKey k;
  k.fill(fill);
  return k;
}

std::string WriteFile(const TempDir& dir, const std::string& name, const std::string& text,
                      mode_t mode = 0600) {
  std::string path = dir.File(name);
  std::ofstream(path) << text;
  chmod(path.c_str(), mode);
  return path;
}

std::optional<Keyring> ParseOk(const std::string& text) {
  std::string why;
  std::optional<Keyring> ring = Keyring::Parse(text, &why);
  EXPECT_TRUE(ring.has_value()) << why << "\n" << text;
  return ring;
}

std::string ParseError(const std::string& text) {
  std::string why;
  std::optional<Keyring> ring = Keyring::Parse(text, &why);
  EXPECT_FALSE(ring.has_value()) << text;
  EXPECT_FALSE(why.empty());
  return why;
}

// Key ids travel in every sealed packet: pinned so a change is deliberate.
// The value is Python's hashlib.blake2b(b"tally key id v1" + bytes(32),
// digest_size=16), first 4 bytes: an implementation other than libsodium.
TEST(KeyringTest, KeyIdIsPinnedAndFormatted) {
  EXPECT_EQ(FormatKeyId(0x0a1b2c3d), "0a1b2c3d");
  EXPECT_EQ(FormatKeyId(ComputeKeyId(Key(0))), "4123aa0f");
  EXPECT_NE(ComputeKeyId(Key(0)), ComputeKeyId(Key(1)));
  EXPECT_EQ(EncodeKey(Key(0)), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
}

TEST(KeyringTest, ParsesKeysInOrderWithCommentsAndBlankLines) {
  const PeerKey a = GenerateKey(), b = GenerateKey();
  std::optional<Keyring> ring =
      ParseOk("# a comment\n\n   \n" + EncodeKey(a) + "\n\t# indented comment\n" + EncodeKey(b) +
              "   # trailing comment\r\n");
  ASSERT_TRUE(ring);
  ASSERT_EQ(ring->size(), 2u);
  EXPECT_EQ(ring->primary().key, a);
  EXPECT_EQ(ring->primary().id, ComputeKeyId(a));
  EXPECT_EQ(ring->ids(), (std::vector<KeyId>{ComputeKeyId(a), ComputeKeyId(b)}));
  ASSERT_NE(ring->Find(ComputeKeyId(b)), nullptr);
  EXPECT_EQ(*ring->Find(ComputeKeyId(b)), b);
  EXPECT_EQ(ring->Find(ComputeKeyId(a) ^ 1), nullptr);
  // No newline at the end is fine too.
  EXPECT_TRUE(ParseOk(EncodeKey(a)));
}

TEST(KeyringTest, RejectsBadBase64NamingTheLine) {
  const std::string good = EncodeKey(GenerateKey());
  std::string bad = good;
  bad[3] = '!';
  EXPECT_NE(ParseError("# c\n" + good + "\n" + bad + "\n").find("line 3"), std::string::npos);
  EXPECT_NE(ParseError(bad).find("base64"), std::string::npos);
  // Missing padding, URL-safe alphabet.
  EXPECT_NE(ParseError(good.substr(0, 43)).find("base64"), std::string::npos);
  std::string url = EncodeKey(Key(0xfb));  // "+"/"/" in the standard alphabet
  for (char& c : url) c = c == '+' ? '-' : c == '/' ? '_' : c;
  ParseError(url);
}

TEST(KeyringTest, RejectsShortAndLongKeys) {
  // 16 and 48 bytes of valid base64.
  EXPECT_NE(ParseError("AAAAAAAAAAAAAAAAAAAAAA==").find("16 bytes"), std::string::npos);
  EXPECT_NE(ParseError(std::string(64, 'A')).find("48 bytes"), std::string::npos);
  EXPECT_NE(ParseError(std::string(400, 'A')).find("400 base64 characters"), std::string::npos);
  EXPECT_NE(ParseError("QQ==").find("1 bytes"), std::string::npos);
}

TEST(KeyringTest, RejectsEmptyCommentOnlyRepeatedAndTooMany) {
  EXPECT_NE(ParseError("").find("no keys"), std::string::npos);
  EXPECT_NE(ParseError("# only a comment\n\n  \n").find("no keys"), std::string::npos);
  const std::string k = EncodeKey(GenerateKey());
  EXPECT_NE(ParseError(k + "\n" + k + "\n").find("repeats"), std::string::npos);
  EXPECT_NE(ParseError(k + " junk\n").find("comment"), std::string::npos);
  std::string many;
  for (size_t i = 0; i <= kMaxKeyringKeys; ++i) many += EncodeKey(GenerateKey()) + "\n";
  EXPECT_NE(ParseError(many).find("more than"), std::string::npos);
  std::string why;
  EXPECT_FALSE(Keyring::FromKeys({}, &why));
  EXPECT_FALSE(Keyring::Parse(std::string(kMaxKeyringFileBytes + 1, '#'), &why));
}

TEST(KeyringTest, LoadChecksTheFile) {
  TempDir dir;
  const PeerKey a = GenerateKey();
  std::string why, warning;
  std::string path = WriteFile(dir, "ring", EncodeKey(a) + "\n");
  std::optional<Keyring> ring = Keyring::Load(path, &why, &warning);
  ASSERT_TRUE(ring) << why;
  EXPECT_EQ(ring->primary().key, a);
  EXPECT_TRUE(warning.empty()) << warning;

  // Readable by others: loads, with a warning.
  std::string open_path = WriteFile(dir, "open", EncodeKey(a) + "\n", 0644);
  ASSERT_TRUE(Keyring::Load(open_path, &why, &warning)) << why;
  EXPECT_NE(warning.find("0644"), std::string::npos) << warning;

  EXPECT_FALSE(Keyring::Load(dir.File("missing"), &why));
  EXPECT_NE(why.find("No such file"), std::string::npos) << why;
  EXPECT_FALSE(Keyring::Load(dir.path(), &why));
  EXPECT_NE(why.find("not a regular file"), std::string::npos) << why;
  // A FIFO neither hangs nor loads.
  std::string fifo = dir.File("fifo");
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  EXPECT_FALSE(Keyring::Load(fifo, &why));
  EXPECT_NE(why.find("not a regular file"), std::string::npos) << why;
  std::string bad = WriteFile(dir, "bad", "# c\nnot-a-key\n");
  EXPECT_FALSE(Keyring::Load(bad, &why));
  EXPECT_NE(why.find(bad), std::string::npos) << why;
  EXPECT_NE(why.find("line 2"), std::string::npos) << why;
}

TEST(KeyringTest, NewKeyringTextParsesBackToOneFreshKey) {
  std::optional<Keyring> a = ParseOk(NewKeyringText());
  std::optional<Keyring> b = ParseOk(NewKeyringText());
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->size(), 1u);
  EXPECT_NE(a->primary().key, b->primary().key);
  // Appending a generated text to a keyring adds a secondary key (rotation).
  std::optional<Keyring> both = ParseOk(NewKeyringText() + NewKeyringText());
  ASSERT_TRUE(both);
  EXPECT_EQ(both->size(), 2u);
}

TEST(KeyringTest, WriteNewFileIsPrivateAndNeverOverwrites) {
  TempDir dir;
  const mode_t old_umask = umask(0);  // the file must be 0600 whatever the umask
  std::string path = dir.File("new.keyring");
  std::string why;
  const std::string text = NewKeyringText();
  const bool wrote = WriteNewKeyringFile(path, text, &why);
  umask(old_umask);
  ASSERT_TRUE(wrote) << why;
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0600u);
  std::string warning;
  ASSERT_TRUE(Keyring::Load(path, &why, &warning)) << why;
  EXPECT_TRUE(warning.empty());

  EXPECT_FALSE(WriteNewKeyringFile(path, NewKeyringText(), &why));
  EXPECT_NE(why.find("never overwritten"), std::string::npos) << why;
  std::optional<Keyring> still = Keyring::Load(path, &why);
  ASSERT_TRUE(still);
  EXPECT_EQ(still->primary().key, ParseOk(text)->primary().key);
}

}  // namespace
}  // namespace tally::io

// The doors to runtime limit overrides (daemon/io/limit_door.h, check.capnp
// protocol 5) in a single-node daemon: who may write, what checks see, get,
// paged lists within the reply bound, and bad requests answered with an error.
#include "daemon/io/limit_door.h"

#include <arpa/inet.h>
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <gtest/gtest.h>

#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "client/admin.h"
#include "daemon/io/daemon.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/snapshot_file.h"
#include "tally/check.capnp.h"
#include "tally/client.h"
#include "tests/support/daemon_process.h"

namespace tally::testing {
namespace {

using Bytes = std::vector<std::byte>;

const Instant kNow{std::chrono::milliseconds(1'700'000'000'000), std::chrono::seconds(5)};

wire::LimitSelectorValue Key(const std::string& user, uint64_t window_ms = 60'000) {
  wire::LimitSelectorValue s;
  s.is_key = true;
  s.user_id = user;
  s.endpoint = "/api";
  s.window_ms = window_ms;
  return s;
}

// One single-node processor per door, sharing the limiter and the map.
class LimitDoorTest : public ::testing::Test {
 protected:
  LimitDoorTest() : limiter_(LimiterOptions{}), overrides_("solo") {}

  io::MessageProcessor& Processor(io::Door door) {
    for (auto& [d, p] : processors_) {
      if (d == door) return *p;
    }
    io::ProcessorContext context;
    context.limiter = &limiter_;
    context.identity = &identity_;
    context.counters = &counters_;
    context.door = door;
    context.overrides = &overrides_;
    processors_.emplace_back(door, std::make_unique<io::MessageProcessor>(context));
    return *processors_.back().second;
  }

  // Sends `request` through `door` and decodes the one reply into reader_.
  void Send(const Bytes& request, io::Door door, bool loopback = true) {
    io::MessageProcessor& p = Processor(door);
    p.Reset();
    std::vector<io::Reply> replies;
    ASSERT_EQ(p.Handle(request, false, kNow, 0, &replies, loopback), io::Handled::kAnswered);
    ASSERT_EQ(replies.size(), 1u);
    last_reply_bytes_ = replies[0].bytes.size();
    std::string why;
    ASSERT_EQ(reader_.Decode(replies[0].bytes, &why), Status::kOk) << why;
  }

  wire::LimitWriteReport Write(const wire::LimitWriteQuery& q, io::Door door = io::Door::kUnix,
                               bool loopback = true) {
    Bytes request;
    wire::EncodeLimitWrite(q, &request, 256);
    Send(request, door, loopback);
    EXPECT_EQ(reader_.kind(), wire::MessageKind::kLimitWriteResponse);
    return reader_.limit_write_report();
  }

  CheckResult Check(const std::string& user, uint64_t limit, uint64_t hits = 0) {
    CheckRequestRef c;
    c.request_id = 0;
    c.user_id = user;
    c.endpoint = "/api";
    c.limit = limit;
    c.window_ms = 60'000;
    c.hits = hits;
    Bytes request;
    wire::EncodeChecks(std::span(&c, 1), &request);
    Send(request, io::Door::kUdp);
    EXPECT_EQ(reader_.kind(), wire::MessageKind::kResponses);
    return reader_.responses().empty() ? CheckResult{} : reader_.responses()[0];
  }

  Limiter limiter_;
  io::Counters counters_;
  io::DaemonIdentity identity_{"solo", 1, std::chrono::seconds(0), "127.0.0.1:7070"};
  io::LocalOverrides overrides_;
  std::vector<std::pair<io::Door, std::unique_ptr<io::MessageProcessor>>> processors_;
  wire::ClientMessageReader reader_;
  size_t last_reply_bytes_ = 0;
};

TEST_F(LimitDoorTest, WritesComeFromUnixDoorsAndLoopbackUdpOnly) {
  wire::LimitWriteQuery q{1, Key("alice"), false, 3, 0, 0};
  wire::LimitWriteReport r = Write(q, io::Door::kUdp, /*loopback=*/false);
  EXPECT_EQ(r.status, Status::kPermissionDenied);
  EXPECT_EQ(r.error, io::kWriteRefused);
  EXPECT_EQ(r.request_id, 1u);
  EXPECT_FALSE(overrides_.Apply({}, nullptr));  // nothing written
  EXPECT_EQ(Check("alice", 10).limit, 10u);
  // The plain Handle of a UDP processor refuses too (no source known).
  {
    Bytes request;
    wire::EncodeLimitWrite(q, &request, 256);
    std::vector<io::Reply> replies;
    Processor(io::Door::kUdp).Reset();
    Processor(io::Door::kUdp).Handle(request, false, kNow, 0, &replies);
    ASSERT_EQ(replies.size(), 1u);
    ASSERT_EQ(reader_.Decode(replies[0].bytes, nullptr), Status::kOk);
    EXPECT_EQ(reader_.limit_write_report().status, Status::kPermissionDenied);
  }
  for (io::Door door : {io::Door::kUdp, io::Door::kUnix, io::Door::kSeqpacket}) {
    r = Write(q, door, /*loopback=*/true);
    EXPECT_EQ(r.status, Status::kOk) << r.error;
    EXPECT_EQ(r.outcome, wire::LimitOutcome::kApplied);
    EXPECT_EQ(r.node_id, "solo");
  }
}

TEST_F(LimitDoorTest, ChecksSeeTheOverrideAndRemovalRestoresTheCallersLimit) {
  EXPECT_EQ(Check("bob", 10).limit, 10u);
  ASSERT_EQ(Write({1, Key("bob"), false, 2, 0, 0}).status, Status::kOk);
  CheckResult c = Check("bob", 10, 1);
  EXPECT_EQ(c.limit, 2u);
  EXPECT_TRUE(c.allowed);
  EXPECT_TRUE(Check("bob", 10, 1).allowed);
  EXPECT_FALSE(Check("bob", 10, 1).allowed);  // 2 per minute now
  EXPECT_EQ(Check("carol", 10).limit, 10u);   // another key is untouched

  Bytes get;
  wire::EncodeLimitGet({Key("bob")}, &get, 512);
  Send(get, io::Door::kUdp, false);  // reads are allowed from anywhere
  ASSERT_EQ(reader_.kind(), wire::MessageKind::kLimitOverridesResponse);
  ASSERT_EQ(reader_.limit_overrides_report().overrides.size(), 1u);
  EXPECT_EQ(reader_.limit_overrides_report().overrides[0].limit, 2u);
  EXPECT_EQ(reader_.limit_overrides_report().overrides[0].window_ms, 60'000u);
  EXPECT_EQ(reader_.limit_overrides_report().overrides[0].updated_ms, 1'700'000'000'000);

  ASSERT_EQ(Write({2, Key("bob"), true, 0, 0, 0}).outcome, wire::LimitOutcome::kApplied);
  c = Check("bob", 10, 1);
  EXPECT_EQ(c.limit, 10u);
  EXPECT_TRUE(c.allowed);
  Send(get, io::Door::kUdp);
  ASSERT_EQ(reader_.limit_overrides_report().overrides.size(), 1u);
  EXPECT_TRUE(reader_.limit_overrides_report().overrides[0].removed);

  wire::StatusReport status =
      io::SingleNodeStatus(&limiter_, &identity_, counters_, kNow, &overrides_);
  auto counter = [&](const std::string& name) {
    for (const auto& [n, v] : status.counters) {
      if (n == name) return static_cast<int64_t>(v);
    }
    return int64_t{-1};
  };
  EXPECT_EQ(counter("overrides_live"), 0);
  EXPECT_EQ(counter("overrides_held"), 1);
  EXPECT_EQ(counter("overrides_written"), 2);
  EXPECT_EQ(counter("overrides_used"), 3);
}

TEST_F(LimitDoorTest, DescriptorWritesTakeUnitsOrWindows) {
  wire::LimitSelectorValue d;
  d.domain = "messaging";
  d.entries = {{"message_type", "marketing"}};
  for (const auto& [unit, window_ms] : std::vector<std::pair<uint8_t, uint64_t>>{
           {1, 1000}, {2, 60'000}, {3, 3'600'000}, {4, 86'400'000}, {0, 1234}}) {
    ASSERT_EQ(Write({1, d, false, 9, unit, 1234}).status, Status::kOk);
    Bytes get;
    wire::EncodeLimitGet({d}, &get);
    Send(get, io::Door::kSeqpacket);
    ASSERT_EQ(reader_.limit_overrides_report().overrides.size(), 1u);
    EXPECT_EQ(reader_.limit_overrides_report().overrides[0].window_ms, window_ms);
  }
  wire::LimitWriteReport r = Write({1, d, false, 9, 6, 0});  // year: no fixed window
  EXPECT_EQ(r.status, Status::kInvalidArgument);
  EXPECT_EQ(r.outcome, wire::LimitOutcome::kInvalid);
  EXPECT_NE(r.error.find("unit"), std::string::npos);
  // A window no rules door enforces (over 31 days, or none) is refused at the
  // write, not stored to refuse every check later.
  for (uint64_t window_ms : {uint64_t{0}, kMaxWindowMs + 1, uint64_t{366} * 86'400'000}) {
    r = Write({1, d, false, 9, 0, window_ms});
    EXPECT_EQ(r.status, Status::kInvalidArgument) << window_ms;
    EXPECT_NE(r.error.find("31 days"), std::string::npos) << r.error;
  }
  r = Write({1, d, false, 9, 0, kMaxWindowMs});
  EXPECT_EQ(r.status, Status::kOk) << r.error;
}

TEST_F(LimitDoorTest, BadRequestsAreAnsweredWithAnError) {
  struct Case {
    wire::LimitWriteQuery q;
    std::string error_has;
  };
  wire::LimitSelectorValue no_entries;
  no_entries.domain = "d";
  wire::LimitSelectorValue long_text = Key(std::string(300, 'u'));
  std::vector<Case> cases = {
      {{1, no_entries, false, 1, 1, 0}, "entries"},
      {{2, long_text, false, 1, 0, 0}, "longer than 256"},
      {{3, Key("u", 0), false, 1, 0, 0}, "window"},
      {{4, Key("u"), false, uint64_t{1} << 40, 0, 0}, "limit"},
      {{5, no_entries, false, 1, 0, 1000}, "entries"},  // a window, no entries
  };
  for (const Case& c : cases) {
    wire::LimitWriteReport r = Write(c.q);
    EXPECT_EQ(r.status, Status::kInvalidArgument) << c.error_has;
    EXPECT_EQ(r.request_id, c.q.request_id);
    EXPECT_NE(r.error.find(c.error_has), std::string::npos) << r.error;
  }
  // A descriptor window out of range.
  wire::LimitSelectorValue d;
  d.domain = "d";
  d.entries = {{"k", "v"}};
  EXPECT_EQ(Write({6, d, false, 1, 0, 0}).status, Status::kInvalidArgument);
  // No selector: the decoder's error, answered to the request id.
  {
    capnp::MallocMessageBuilder builder;
    auto root = builder.initRoot<wire::ClientMessage>();
    root.setVersion(wire::PROTOCOL_VERSION);
    root.initLimitWrite().setRequestId(42);
    kj::Array<capnp::word> words = capnp::messageToFlatArray(builder);
    Bytes request(reinterpret_cast<const std::byte*>(words.asBytes().begin()),
                  reinterpret_cast<const std::byte*>(words.asBytes().end()));
    Send(request, io::Door::kUnix);
    EXPECT_EQ(reader_.limit_write_report().status, Status::kInvalidArgument);
    EXPECT_EQ(reader_.limit_write_report().request_id, 42u);
    EXPECT_EQ(reader_.limit_write_report().error, "no selector");
  }
  // A get of a bad selector.
  Bytes get;
  wire::EncodeLimitGet({no_entries}, &get, 256);
  Send(get, io::Door::kUnix);
  EXPECT_EQ(reader_.limit_overrides_report().status, Status::kInvalidArgument);
  // Nothing was written by any of it.
  EXPECT_EQ(Check("u", 10).limit, 10u);
}

TEST_F(LimitDoorTest, ListsArePagedWithinThreeTimesTheQuery) {
  std::set<std::string> written;
  for (int i = 0; i < 300; ++i) {
    const std::string user = "user-" + std::to_string(i) + std::string(i % 40, 'x');
    ASSERT_EQ(Write({0, Key(user), false, static_cast<uint64_t>(i), 0, 0}).status, Status::kOk);
    written.insert(user);
  }
  // One removed: a list shows only those in force.
  ASSERT_EQ(Write({0, Key("user-7" + std::string(7, 'x')), true, 0, 0, 0}).status, Status::kOk);
  written.erase("user-7" + std::string(7, 'x'));
  for (size_t query_bytes : {size_t{2048}, size_t{256}}) {
    for (io::Door door : {io::Door::kUdp, io::Door::kSeqpacket}) {
      std::set<std::string> seen;
      wire::LimitListQuery q;
      int pages = 0;
      for (;; ++pages) {
        ASSERT_LT(pages, 400);
        Bytes request;
        wire::EncodeLimitList(q, &request, query_bytes);
        Send(request, door, false);
        ASSERT_EQ(reader_.kind(), wire::MessageKind::kLimitOverridesResponse)
            << "query " << request.size() << " bytes, page " << pages << ", door "
            << static_cast<int>(door) << ", asked " << reader_.padding_required_bytes();
        if (door == io::Door::kUdp) EXPECT_LE(last_reply_bytes_, 3 * request.size());
        const wire::LimitOverridesReport& r = reader_.limit_overrides_report();
        ASSERT_EQ(r.status, Status::kOk) << r.error;
        for (const auto& o : r.overrides) {
          EXPECT_FALSE(o.removed);
          EXPECT_TRUE(seen.insert(o.selector.user_id).second) << "listed twice";
        }
        if (r.next_cursor.empty()) break;
        ASSERT_FALSE(r.overrides.empty());
        q.cursor = r.next_cursor;
      }
      EXPECT_EQ(seen, written);
      if (door == io::Door::kSeqpacket) EXPECT_EQ(pages, 0);  // one datagram holds all
      if (door == io::Door::kUdp) EXPECT_GT(pages, 1);
    }
  }
}

TEST_F(LimitDoorTest, AListTooSmallForOneEntryAsksForPadding) {
  wire::LimitSelectorValue big;
  big.domain = std::string(256, 'd');
  for (int i = 0; i < 16; ++i)
    big.entries.emplace_back(std::string(256, 'k'), std::string(256, 'v'));
  ASSERT_EQ(Write({1, big, false, 5, 2, 0}).status, Status::kOk);
  Bytes request;
  wire::EncodeLimitList({}, &request);
  Send(request, io::Door::kUdp);
  ASSERT_EQ(reader_.kind(), wire::MessageKind::kPaddingRequired);
  EXPECT_LE(last_reply_bytes_, 3 * request.size());
  wire::EncodeLimitList({}, &request, reader_.padding_required_bytes());
  Send(request, io::Door::kUdp);
  ASSERT_EQ(reader_.kind(), wire::MessageKind::kLimitOverridesResponse);
  EXPECT_LE(last_reply_bytes_, 3 * request.size());
  ASSERT_EQ(reader_.limit_overrides_report().overrides.size(), 1u);
  EXPECT_EQ(reader_.limit_overrides_report().overrides[0].selector, big);
}

TEST(LimitDoorSourceTest, LoopbackSourcesAreTheLoopbackNetworks) {
  auto v4 = [](const char* ip) {
    sockaddr_storage ss{};
    auto* in = reinterpret_cast<sockaddr_in*>(&ss);
    in->sin_family = AF_INET;
    inet_pton(AF_INET, ip, &in->sin_addr);
    return io::IsLoopbackSource(ss, sizeof(sockaddr_in));
  };
  auto v6 = [](const char* ip) {
    sockaddr_storage ss{};
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&ss);
    in6->sin6_family = AF_INET6;
    inet_pton(AF_INET6, ip, &in6->sin6_addr);
    return io::IsLoopbackSource(ss, sizeof(sockaddr_in6));
  };
  EXPECT_TRUE(v4("127.0.0.1"));
  EXPECT_TRUE(v4("127.255.0.9"));
  EXPECT_FALSE(v4("10.0.0.1"));
  EXPECT_FALSE(v4("128.0.0.1"));
  EXPECT_FALSE(v4("0.0.0.0"));
  EXPECT_TRUE(v6("::1"));
  EXPECT_TRUE(v6("::ffff:127.0.0.1"));
  EXPECT_FALSE(v6("::ffff:10.0.0.1"));
  EXPECT_FALSE(v6("fe80::1"));
  sockaddr_storage unix_addr{};
  unix_addr.ss_family = AF_UNIX;
  EXPECT_FALSE(io::IsLoopbackSource(unix_addr, sizeof(sockaddr_storage)));
}

// Through a real daemon on port 0 and the client library.
TEST(LimitDoorDaemonTest, SetCheckGetListRemoveThroughTheClient) {
  TempDir dir;
  io::DaemonOptions o;
  o.udp = "127.0.0.1:0";
  o.unix_seq_path = dir.File("s.sock");
  o.threads = 1;
  o.stats_interval = std::chrono::seconds(0);
  o.handle_signals = false;
  io::Daemon daemon(o);
  std::string error;
  ASSERT_TRUE(daemon.Start(&error)) << error;
  std::thread runner([&] { daemon.Run(); });
  std::optional<DaemonAddress> udp = DaemonAddress::ParseUdp(daemon.udp_address());
  ASSERT_TRUE(udp.has_value());
  ClientOptions options;
  options.timeout = std::chrono::milliseconds(500);
  std::unique_ptr<Client> client = Client::Connect(*udp, options, &error);
  ASSERT_NE(client, nullptr) << error;
  const CheckRequest check{0, "dave", "/api", 100, 60'000, 1};
  EXPECT_EQ(client->Check(check).limit, 100u);

  wire::LimitWriteReport w;
  ASSERT_TRUE(WriteLimit(*udp, options, {1, Key("dave"), false, 1, 0, 0}, &w, &error)) << error;
  EXPECT_EQ(w.status, Status::kOk) << w.error;
  CheckResult r = client->Check(check);
  EXPECT_EQ(r.limit, 1u);
  EXPECT_FALSE(r.allowed);  // the first hit already spent the one allowed

  wire::LimitOverridesReport got;
  ASSERT_TRUE(GetLimit(*udp, options, {Key("dave")}, &got, &error)) << error;
  ASSERT_EQ(got.overrides.size(), 1u);
  EXPECT_EQ(got.overrides[0].limit, 1u);
  ASSERT_TRUE(ListLimits(DaemonAddress::Unix(dir.File("s.sock")), options, {}, &got, &error))
      << error;
  ASSERT_EQ(got.overrides.size(), 1u);
  EXPECT_TRUE(got.next_cursor.empty());

  ASSERT_TRUE(WriteLimit(*udp, options, {2, Key("dave"), true, 0, 0, 0}, &w, &error)) << error;
  EXPECT_EQ(w.outcome, wire::LimitOutcome::kApplied);
  r = client->Check(check);
  EXPECT_EQ(r.limit, 100u);
  EXPECT_TRUE(r.allowed);
  daemon.Stop();
  runner.join();
}

// ---- a single node's overrides across a restart (LocalOverrides' file) ----

uint64_t CounterOf(const io::LocalOverrides& o, const std::string& name) {
  std::vector<std::pair<std::string, uint64_t>> counters;
  o.AppendCounters(&counters);
  for (const auto& [n, v] : counters) {
    if (n == name) return v;
  }
  ADD_FAILURE() << "no counter " << name;
  return 0;
}

crdt::Selector KeySelector(const std::string& user) { return io::SelectorFromWire(Key(user)); }

TEST(LocalOverridesPersistenceTest, EveryChangeIsSavedAndAFreshMapRestoresIt) {
  TempDir dir;
  const std::filesystem::path path = dir.File(io::LocalOverrides::kOverridesFileName);
  const int64_t now_ms = 1'700'000'000'000;
  io::LocalOverrides before("solo");
  before.EnablePersistence(path, persist::SnapshotHeader{"tally", "solo", 1, 0, 10});
  using Result = crdt::LimitOverrides::MergeResult;
  ASSERT_EQ(before.Write(KeySelector("amy"), {false, 3, 0}, now_ms), Result::kApplied);
  EXPECT_EQ(CounterOf(before, "overrides_saves"), 1u);
  ASSERT_EQ(before.Write(KeySelector("bo"), {false, 4, 0}, now_ms + 1), Result::kApplied);
  ASSERT_EQ(before.Write(KeySelector("bo"), {true, 0, 0}, now_ms + 2), Result::kApplied);
  EXPECT_EQ(CounterOf(before, "overrides_saves"), 3u);
  // Nothing changed since: no rewrite.
  std::string error;
  EXPECT_TRUE(before.Persist(now_ms + 3, &error)) << error;
  EXPECT_EQ(CounterOf(before, "overrides_saves"), 3u);

  // The next process: another generation, its wall clock a minute behind.
  persist::SnapshotExpectations expect;
  expect.cluster_name = "tally";
  expect.node_id = "solo";
  expect.generation = 2;
  expect.now_wall_ms = now_ms - 60'000;
  expect.max_clock_ahead_ms = 120'000;
  io::SnapshotReadResult read = io::ReadSnapshotFile(path, expect);
  ASSERT_EQ(read.outcome, io::SnapshotReadResult::Outcome::kLoaded) << read.message;
  EXPECT_TRUE(read.snapshot.keys.empty());
  io::LocalOverrides after("solo");
  const crdt::OverrideRestoreCounts n = after.Restore(read.snapshot);
  EXPECT_EQ(n.applied, 2u);  // amy's override and bo's removal
  EXPECT_EQ(CounterOf(after, "overrides_restored"), 2u);
  EXPECT_EQ(CounterOf(after, "overrides_live"), 1u);
  after.ReadLocked([&](const crdt::LimitOverrides& map) {
    ASSERT_TRUE(map.Find(KeySelector("amy")).has_value());
    EXPECT_EQ(map.Find(KeySelector("amy"))->limit, 3u);
    EXPECT_FALSE(map.Find(KeySelector("bo")).has_value());
    ASSERT_NE(map.FindEntry(KeySelector("bo").Key()), nullptr);  // the tombstone
  });
  // Checks see the restored explicit override at once.
  std::vector<CheckRequestRef> out;
  const CheckRequest amy{0, "amy", "/api", 100, 60'000, 1};
  const CheckRequestRef ref(amy);
  ASSERT_TRUE(after.Apply(std::span(&ref, 1), &out));
  EXPECT_EQ(out[0].limit, 3u);
  // A write with the clock behind still wins over the restored entry.
  EXPECT_EQ(after.Write(KeySelector("amy"), {false, 9, 0}, now_ms - 60'000), Result::kApplied);
  after.ReadLocked(
      [&](const crdt::LimitOverrides& map) { EXPECT_EQ(map.Find(KeySelector("amy"))->limit, 9u); });
}

TEST(LocalOverridesPersistenceTest, AFailedSaveKeepsTheWriteAndIsCounted) {
  TempDir dir;
  io::LocalOverrides o("solo");
  o.EnablePersistence(dir.File("missing-dir/overrides.snapshot"),
                      persist::SnapshotHeader{"tally", "solo", 1, 0, 10});
  EXPECT_EQ(o.Write(KeySelector("amy"), {false, 3, 0}, 1'700'000'000'000),
            crdt::LimitOverrides::MergeResult::kApplied);
  EXPECT_EQ(CounterOf(o, "overrides_save_errors"), 1u);
  EXPECT_EQ(CounterOf(o, "overrides_live"), 1u);
  std::string error;
  EXPECT_FALSE(o.Persist(1'700'000'000'001, &error));
  EXPECT_NE(error.find("missing-dir"), std::string::npos) << error;
}

}  // namespace
}  // namespace tally::testing

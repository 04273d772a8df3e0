// Swim on its own, fed hand-made messages on fake time: the protocol rules one
// at a time, and hostile input.
#include "membership/swim.h"

#include <gtest/gtest.h>

#include <limits>
#include <string>
#include <vector>

#include "membership/random.h"
#include "membership/timing.h"

namespace tally::membership {
namespace {

using std::chrono::milliseconds;
using std::chrono::nanoseconds;

constexpr int64_t kEpochMs = 1'700'000'000'000;

std::string Addr(const std::string& id) { return id + ":7946"; }
Instant At(int64_t ms) { return Instant{milliseconds(kEpochMs + ms), milliseconds(ms)}; }

SwimMessage From(const std::string& id, SwimBody body, std::vector<MemberUpdate> piggyback = {},
                 uint64_t generation = 1, int64_t wall_ms = kEpochMs) {
  SwimMessage m;
  m.sender_id = id;
  m.sender_address = Addr(id);
  m.sender_generation = generation;
  m.sender_wall_ms = wall_ms;
  m.body = std::move(body);
  m.piggyback = std::move(piggyback);
  return m;
}

MemberUpdate Rumor(const std::string& id, MemberState state, uint64_t generation,
                   uint64_t incarnation, const std::string& origin = {}) {
  return MemberUpdate{id, Addr(id), generation, incarnation, state, origin};
}

template <typename T>
std::vector<const Outbound*> OfKind(const std::vector<Outbound>& out) {
  std::vector<const Outbound*> found;
  for (const auto& o : out) {
    if (std::holds_alternative<T>(o.msg.body)) found.push_back(&o);
  }
  return found;
}

// One Swim "me" that knows `peers` (alive, generation 1).
struct Harness {
  explicit Harness(std::vector<std::string> peers, SwimConfig config = {})
      : swim(config, {"me", Addr("me"), 1}, {}, 1234) {
    swim.Start(At(0), &out);
    if (!peers.empty()) Know(peers, 0);
  }
  void Know(const std::vector<std::string>& peers, int64_t at_ms) {
    PushPull pp{/*reply=*/true, false, {}};
    for (const auto& p : peers) pp.members.push_back(Rumor(p, MemberState::kAlive, 1, 0));
    Deliver(peers[0], pp, {}, at_ms);
  }
  void Deliver(const std::string& from, SwimBody body, std::vector<MemberUpdate> piggyback,
               int64_t at_ms, int64_t wall_ms = -1) {
    out.clear();
    swim.OnMessage(Addr(from),
                   From(from, std::move(body), std::move(piggyback), 1,
                        wall_ms < 0 ? kEpochMs + at_ms : wall_ms),
                   At(at_ms), &out);
  }
  void Gossip(const std::string& from, std::vector<MemberUpdate> rumors, int64_t at_ms) {
    Deliver(from, membership::Gossip{}, std::move(rumors), at_ms);
  }
  // Ticks every due deadline up to `until_ms`, collecting everything sent.
  std::vector<Outbound> RunUntil(int64_t until_ms) {
    std::vector<Outbound> all;
    for (;;) {
      const nanoseconds next = swim.NextDeadline();
      if (next > milliseconds(until_ms)) break;
      const auto ms = std::chrono::duration_cast<milliseconds>(next).count();
      std::vector<Outbound> o;
      swim.Tick(Instant{milliseconds(kEpochMs + ms), next}, &o);
      EXPECT_GT(swim.NextDeadline(), next) << "no progress at " << ms;
      for (auto& x : o) all.push_back(std::move(x));
    }
    return all;
  }
  MemberState StateOf(const std::string& id) const { return swim.members().Find(id)->state; }

  Swim swim;
  std::vector<Outbound> out;
};

TEST(SwimTest, StartAnnouncesToSeedsByPushPull) {
  Swim s({}, {"me", Addr("me"), 7}, {Addr("a"), Addr("me"), Addr("a"), Addr("b")}, 1);
  std::vector<Outbound> out;
  s.Start(At(0), &out);
  ASSERT_EQ(out.size(), 2u);  // own address and the duplicate skipped
  for (const auto& o : out) {
    EXPECT_TRUE(o.stream);
    const auto& pp = std::get<PushPull>(o.msg.body);
    EXPECT_TRUE(pp.join);
    EXPECT_FALSE(pp.reply);
    ASSERT_EQ(pp.members.size(), 1u);
    EXPECT_EQ(pp.members[0].id, "me");
    EXPECT_EQ(pp.members[0].generation, 7u);
  }
  EXPECT_EQ(s.members().Find("me")->state, MemberState::kAlive);
  EXPECT_GT(s.alive_set_version(), 0u);
}

TEST(SwimTest, PushPullMergesAndReplies) {
  Harness h({});
  PushPull pp{
      false, true, {Rumor("a", MemberState::kAlive, 1, 0), Rumor("b", MemberState::kAlive, 1, 3)}};
  const uint64_t v = h.swim.alive_set_version();
  h.Deliver("a", pp, {}, 10);
  auto replies = OfKind<PushPull>(h.out);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]->to_address, Addr("a"));
  EXPECT_TRUE(replies[0]->stream);
  EXPECT_TRUE(std::get<PushPull>(replies[0]->msg.body).reply);
  EXPECT_EQ(std::get<PushPull>(replies[0]->msg.body).members.size(), 3u);
  EXPECT_EQ(h.swim.members().size(), 3u);
  EXPECT_EQ(h.swim.members().Find("b")->incarnation, 3u);
  EXPECT_GT(h.swim.alive_set_version(), v);
}

TEST(SwimTest, UpSetChangesNameTheMembersBehindEachVersionBump) {
  Harness h({});
  h.swim.ClearUpSetChanges();
  const uint64_t v = h.swim.alive_set_version();
  PushPull pp{
      false, true, {Rumor("a", MemberState::kAlive, 1, 0), Rumor("b", MemberState::kAlive, 1, 3)}};
  h.Deliver("a", pp, {}, 10);
  EXPECT_EQ(h.swim.alive_set_version(), v + 2);
  EXPECT_EQ(h.swim.up_set_changes(), (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(h.swim.up_set_changes_overflowed());
  h.swim.ClearUpSetChanges();
  EXPECT_TRUE(h.swim.up_set_changes().empty());
  // More changes than the journal keeps: it says so and drops them.
  std::vector<MemberUpdate> many;
  for (int i = 0; i < 200; ++i) {
    std::string id = std::to_string(i);
    id.insert(id.begin(), 'm');
    many.push_back(Rumor(id, MemberState::kAlive, 1, 0));
  }
  h.Deliver("a", PushPull{false, false, many}, {}, 20);
  EXPECT_TRUE(h.swim.up_set_changes_overflowed());
  EXPECT_TRUE(h.swim.up_set_changes().empty());
  EXPECT_EQ(h.swim.alive_set_version(), v + 202);
  h.swim.ClearUpSetChanges();
  EXPECT_FALSE(h.swim.up_set_changes_overflowed());
}

TEST(RandomTest, SampleIndexesPicksWhatSampleWould) {
  // Gossip picks targets by position; it must draw and pick exactly as
  // Sample over the candidate list did.
  for (size_t size : {0, 1, 2, 3, 5, 40, 1000}) {
    for (size_t k : {0, 1, 3, 7}) {
      Rng a(size * 31 + k), b(size * 31 + k);
      std::vector<size_t> all(size);
      for (size_t i = 0; i < size; ++i) all[i] = i;
      for (int round = 0; round < 20; ++round) {
        EXPECT_EQ(SampleIndexes(a, size, k), Sample(b, all, k)) << size << " " << k;
      }
      EXPECT_EQ(a(), b());  // the same draws were consumed
    }
  }
}

TEST(SwimTest, AnswersOnlyPingsMeantForItself) {
  Harness h({"a"});
  h.Deliver("a", Ping{77, "me"}, {}, 5);
  auto acks = OfKind<Ack>(h.out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(std::get<Ack>(acks[0]->msg.body).seq, 77u);
  EXPECT_EQ(acks[0]->to_address, Addr("a"));
  EXPECT_FALSE(acks[0]->stream);
  // Someone who believes this address still belongs to "old-owner".
  h.Deliver("a", Ping{78, "old-owner"}, {}, 6);
  EXPECT_TRUE(h.out.empty());
  EXPECT_EQ(h.swim.stats().wrong_target, 1u);
}

TEST(SwimTest, LearnsEachMembersRulesDigestFirstHandFromPingsAndAcks) {
  Harness h({"a", "b"});
  const std::string mine(kRulesDigestBytes, '\x01'), theirs(kRulesDigestBytes, '\x02'),
      newer(kRulesDigestBytes, '\x03');
  h.swim.SetRulesDigest(mine);
  EXPECT_EQ(*h.swim.RulesDigestOf("me"), mine);
  EXPECT_EQ(h.swim.RulesDigestOf("a"), nullptr);  // not heard yet
  // Our ack carries our digest.
  h.Deliver("a", Ping{77, "me", theirs}, {}, 5);
  auto acks = OfKind<Ack>(h.out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(std::get<Ack>(acks[0]->msg.body).rules_digest, mine);
  ASSERT_NE(h.swim.RulesDigestOf("a"), nullptr);
  EXPECT_EQ(*h.swim.RulesDigestOf("a"), theirs);
  // So do our pings; an ack to one tells us the target's digest (a reload).
  bool acked = false;
  for (const Outbound& o : h.RunUntil(3000)) {
    const auto* ping = std::get_if<Ping>(&o.msg.body);
    if (ping == nullptr || acked) continue;
    EXPECT_EQ(ping->rules_digest, mine);
    h.Deliver(ping->target_id, Ack{ping->seq, newer}, {}, 3000);
    ASSERT_NE(h.swim.RulesDigestOf(ping->target_id), nullptr);
    EXPECT_EQ(*h.swim.RulesDigestOf(ping->target_id), newer);
    acked = true;
  }
  EXPECT_TRUE(acked);
  // No rules doors: an empty digest is remembered as such.
  h.Deliver("b", Ping{78, "me"}, {}, 3001);
  ASSERT_NE(h.swim.RulesDigestOf("b"), nullptr);
  EXPECT_EQ(*h.swim.RulesDigestOf("b"), "");
  // Gossip carries none and changes nothing; nor does a stranger's ping.
  h.Gossip("a", {}, 3002);
  EXPECT_NE(h.swim.RulesDigestOf("a"), nullptr);
  h.Deliver("z", Ping{79, "me", theirs}, {}, 3003);
  EXPECT_EQ(h.swim.RulesDigestOf("z"), nullptr);
}

TEST(SwimTest, IgnoresAndCountsARulesDigestOfTheWrongLength) {
  Harness h({"a"});
  const std::string good(kRulesDigestBytes, '\x07');
  h.Deliver("a", Ping{1, "me", good}, {}, 5);
  const uint64_t invalid = h.swim.stats().invalid;
  for (const std::string& bad : {std::string(kRulesDigestBytes - 1, 'x'),
                                 std::string(kRulesDigestBytes + 1, 'x'), std::string(4000, 'x')}) {
    h.Deliver("a", Ping{2, "me", bad}, {}, 6);
    EXPECT_EQ(OfKind<Ack>(h.out).size(), 1u) << "the ping itself is still answered";
  }
  EXPECT_EQ(h.swim.stats().invalid, invalid + 3);
  EXPECT_EQ(*h.swim.RulesDigestOf("a"), good);  // the last good one stays
}

TEST(SwimTest, ForgetsARulesDigestWithTheProcessThatSentIt) {
  SwimConfig config;
  config.dead_reap_ms = 5000;
  Harness h({"a"}, config);
  h.Deliver("a", Ping{1, "me", std::string(kRulesDigestBytes, 'a')}, {}, 5);
  ASSERT_NE(h.swim.RulesDigestOf("a"), nullptr);
  // "a" restarts (a higher generation): the old process's digest is not its.
  h.Gossip("a", {Rumor("a", MemberState::kAlive, 2, 0)}, 10);
  EXPECT_EQ(h.swim.RulesDigestOf("a"), nullptr);
  // Dead and reaped: forgotten with its entry.
  h.Gossip("b", {Rumor("a", MemberState::kDead, 2, 0, "b")}, 20);
  h.RunUntil(20000);
  EXPECT_EQ(h.swim.members().Find("a"), nullptr);
  EXPECT_EQ(h.swim.RulesDigestOf("a"), nullptr);
}

TEST(SwimTest, PrecedenceAsSeenThroughTheProtocol) {
  // For X held in each state at (generation 10, incarnation 5), feed one rumor
  // and compare the table with the precedence rule.
  const MemberState states[] = {MemberState::kAlive, MemberState::kSuspect, MemberState::kDead,
                                MemberState::kLeft};
  for (MemberState cur : states) {
    for (MemberState up : states) {
      for (int dg : {-1, 0, 1}) {
        for (int di : {-1, 0, 1}) {
          Harness h({"a", "b", "c"});
          h.Gossip("a", {Rumor("x", MemberState::kAlive, 10, 5)}, 1);
          if (cur != MemberState::kAlive) h.Gossip("a", {Rumor("x", cur, 10, 5, "a")}, 2);
          ASSERT_EQ(h.StateOf("x"), cur);
          MemberUpdate r = Rumor("x", up, 10 + dg, 5 + di, "b");
          h.Gossip("b", {r}, 3);
          const Member* x = h.swim.members().Find("x");
          // Except that only an alive rumor brings a new generation: the
          // member could not refute anything else (a forged `left` with
          // generation + 1 evicted a live member for good, issue 9).
          const bool wins =
              PrecedenceKey(r.generation, r.incarnation, r.state) > PrecedenceKey(10, 5, cur) &&
              (dg <= 0 || up == MemberState::kAlive);
          const auto want = wins ? std::make_tuple(r.generation, r.incarnation, r.state)
                                 : std::make_tuple(uint64_t{10}, uint64_t{5}, cur);
          EXPECT_EQ(std::make_tuple(x->generation, x->incarnation, x->state), want)
              << StateName(cur) << " <- " << StateName(up) << " dg " << dg << " di " << di;
          // A suspect state always has a timer; nothing else does.
          EXPECT_EQ(h.swim.SuspicionOf("x") != nullptr, x->state == MemberState::kSuspect);
        }
      }
    }
  }
}

TEST(SwimTest, OnlyAnAliveRumorIntroducesAMember) {
  Harness h({"a"});
  for (MemberState s : {MemberState::kSuspect, MemberState::kDead, MemberState::kLeft}) {
    h.Gossip("a", {Rumor("ghost", s, 1, 0, "a")}, 1);
    EXPECT_EQ(h.swim.members().Find("ghost"), nullptr);
  }
  h.Gossip("a", {Rumor("new", MemberState::kAlive, 1, 0)}, 2);
  ASSERT_NE(h.swim.members().Find("new"), nullptr);
}

TEST(SwimTest, RefutesRumorsAboutItselfTable) {
  struct Row {
    MemberState state;
    int generation_delta;
    uint64_t accused;  // own incarnation is 3 before the rumor
    uint64_t want_incarnation;
    bool health_up;
  };
  const Row rows[] = {
      {MemberState::kSuspect, 0, 2, 3, false},  // stale
      {MemberState::kSuspect, 0, 3, 4, true},   // current: refute to 3 + 1
      {MemberState::kSuspect, 0, 9, 10, true},  // higher: max(own, accused) + 1
      {MemberState::kDead, 0, 3, 4, true},
      {MemberState::kDead, 0, 20, 21, true},
      {MemberState::kLeft, 0, 3, 4, false},                      // we did not leave: out-bid it
      {MemberState::kAlive, 0, 3, 3, false},                     // our own news
      {MemberState::kAlive, 0, 8, 9, false},                     // forged: out-bid it
      {MemberState::kSuspect, -1, 50, 3, false},                 // our previous process
      {MemberState::kSuspect, 1, 50, 3, false},                  // a newer process under our name
      {MemberState::kDead, 0, Swim::kMaxIncarnation, 3, false},  // absurd
      {MemberState::kDead, 0, Swim::kMaxIncarnation + 1, 3, false},  // absurd
  };
  for (const Row& r : rows) {
    Harness h({"a", "b"});
    // Get to incarnation 3 by three refutations.
    for (uint64_t i = 0; i < 3; ++i)
      h.Gossip("a", {Rumor("me", MemberState::kSuspect, 1, i, "a")}, 1);
    ASSERT_EQ(h.swim.incarnation(), 3u);
    const int health = h.swim.local_health();
    h.Gossip("b", {Rumor("me", r.state, 1 + r.generation_delta, r.accused, "b")}, 2);
    EXPECT_EQ(h.swim.incarnation(), r.want_incarnation)
        << StateName(r.state) << " " << r.generation_delta << " " << r.accused;
    EXPECT_EQ(h.swim.members().Find("me")->state, MemberState::kAlive);
    EXPECT_EQ(h.swim.members().Find("me")->incarnation, h.swim.incarnation());
    EXPECT_EQ(h.swim.local_health() > health, r.health_up) << StateName(r.state) << r.accused;
    if (r.want_incarnation > 3) {
      // The refutation rides on the very next packet.
      h.Deliver("a", Ping{1, "me"}, {}, 3);
      auto acks = OfKind<Ack>(h.out);
      ASSERT_EQ(acks.size(), 1u);
      bool carried = false;
      for (const auto& u : acks[0]->msg.piggyback) {
        carried |=
            u.id == "me" && u.state == MemberState::kAlive && u.incarnation == r.want_incarnation;
      }
      EXPECT_TRUE(carried);
    }
  }
}

// Two processes with one node id: the older hears a rumor of the newer,
// asks it at its address, and stops once the newer answers itself; the
// newer keeps the name. A rumor nobody confirms stops nothing.
TEST(SwimTest, ANewerProcessOfOurNameSupersedesUsOnlyWhenItSpeaksItself) {
  Harness older({"a"});
  Swim newer({}, {"me", "me-new:7946", 2}, {}, 99);
  std::vector<Outbound> newer_out;
  newer.Start(At(0), &newer_out);

  // The rumor (a restart elsewhere, as others saw it): the older asks there.
  older.Gossip("a", {MemberUpdate{"me", "me-new:7946", 2, 0, MemberState::kAlive, {}}}, 10);
  EXPECT_FALSE(older.swim.superseded_by().has_value());
  std::vector<Outbound> asked = older.RunUntil(20);
  std::vector<const Outbound*> pings = OfKind<Ping>(asked);
  ASSERT_EQ(pings.size(), 1u);
  EXPECT_EQ(pings[0]->to_address, "me-new:7946");
  EXPECT_EQ(std::get<Ping>(pings[0]->msg.body).target_id, "me");
  EXPECT_EQ(older.swim.stats().name_checks, 1u);

  // The newer answers the older's ping of its name, and stays itself.
  newer_out.clear();
  newer.OnMessage(Addr("me"), pings[0]->msg, At(21), &newer_out);
  std::vector<const Outbound*> acks = OfKind<Ack>(newer_out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]->to_address, Addr("me"));
  EXPECT_FALSE(newer.superseded_by().has_value());
  EXPECT_GE(newer.stats().foreign_self, 1u);

  // Its answer, first-hand, supersedes the older: it stops taking part.
  older.out.clear();
  older.swim.OnMessage("me-new:7946", acks[0]->msg, At(22), &older.out);
  ASSERT_TRUE(older.swim.superseded_by().has_value());
  EXPECT_EQ(older.swim.superseded_by()->address, "me-new:7946");
  EXPECT_EQ(older.swim.superseded_by()->generation, 2u);
  EXPECT_EQ(older.swim.NextDeadline(), nanoseconds::max());
  EXPECT_TRUE(older.swim.LeaveFlushed());
  older.Deliver("a", Ping{5, "me"}, {}, 30);
  EXPECT_TRUE(older.out.empty()) << "a superseded process answers nothing";
  older.swim.Leave(At(31), &older.out);
  EXPECT_TRUE(older.out.empty()) << "nor announces a left that would lock the newer out";
  EXPECT_FALSE(older.swim.left());
}

TEST(SwimTest, ARumorOfANewerProcessOfOurNameAloneStopsNothing) {
  Harness h({"a"});
  h.Gossip("a", {MemberUpdate{"me", "forged:1", 9, 0, MemberState::kAlive, {}}}, 10);
  // Nobody answers there: a few pings, then the check is dropped.
  std::vector<Outbound> sent = h.RunUntil(20'000);
  size_t to_forged = 0;
  for (const Outbound& o : sent) to_forged += o.to_address == "forged:1" ? 1 : 0;
  EXPECT_EQ(to_forged, static_cast<size_t>(Swim::kNameCheckTries));
  EXPECT_EQ(h.swim.stats().name_checks, static_cast<uint64_t>(Swim::kNameCheckTries));
  EXPECT_FALSE(h.swim.superseded_by().has_value());
  // A rumor is not the newer process speaking: still a member, still answering.
  h.Deliver("a", Ping{7, "me"}, {}, 20'001);
  EXPECT_EQ(OfKind<Ack>(h.out).size(), 1u);
  // An older process of our name is answered, never obeyed.
  std::vector<Outbound> out;
  SwimMessage old = From("me", Ping{3, "me"}, {}, /*generation=*/0);
  old.sender_address = "old:1";
  h.swim.OnMessage("old:1", old, At(20'002), &out);
  EXPECT_EQ(OfKind<Ack>(out).size(), 1u);
  EXPECT_FALSE(h.swim.superseded_by().has_value());
}

TEST(SwimTest, SuspicionShrinksWithIndependentConfirmations) {
  // n = 6 up: k = 2, min = 4 s, max = 24 s.
  Harness h({"a", "b", "c", "d", "x"});
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 1000);
  const Suspicion* s = h.swim.SuspicionOf("x");
  ASSERT_NE(s, nullptr);
  EXPECT_EQ(s->k(), 2);
  EXPECT_EQ(s->timeout(), milliseconds(24000));
  // The accuser repeating itself is not a confirmation; nor is a duplicate.
  h.Gossip("b", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 1100);
  EXPECT_EQ(s->timeout(), milliseconds(24000));
  h.Gossip("b", {Rumor("x", MemberState::kSuspect, 1, 0, "b")}, 1200);
  EXPECT_EQ(s->confirmations(), 1);
  EXPECT_EQ(s->timeout(), milliseconds(11381));
  h.Gossip("c", {Rumor("x", MemberState::kSuspect, 1, 0, "b")}, 1300);
  EXPECT_EQ(s->confirmations(), 1);
  // The confirmation is passed on so others can count it too.
  h.Gossip("c", {Rumor("x", MemberState::kSuspect, 1, 0, "c")}, 1400);
  EXPECT_EQ(s->timeout(), milliseconds(4000));
  EXPECT_EQ(s->deadline(), milliseconds(1000 + 4000));
  h.RunUntil(4999);
  EXPECT_EQ(h.StateOf("x"), MemberState::kSuspect);
  auto sent = h.RunUntil(5000);
  EXPECT_EQ(h.StateOf("x"), MemberState::kDead);
  EXPECT_EQ(h.swim.stats().deaths_declared, 1u);
  EXPECT_EQ(h.swim.SuspicionOf("x"), nullptr);
}

// Lifeguard: a node that was not run for a while (a GC or swap pause, a
// stopped process) could not hear refutations meanwhile; its own stall must
// not count towards the suspicions it holds (the slow_node scenario at 3
// nodes declared healthy members dead this way).
TEST(SwimTest, OwnStallDoesNotCountAgainstSuspicions) {
  Harness h({"a", "b", "x"});
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 1000);
  const Suspicion* s = h.swim.SuspicionOf("x");
  ASSERT_NE(s, nullptr);
  const milliseconds deadline = std::chrono::duration_cast<milliseconds>(s->deadline());
  ASSERT_GT(deadline, milliseconds(3500));
  // Not run from 1000 ms to 3500 ms (more than a probe interval).
  std::vector<Outbound> o;
  h.swim.Tick(At(3500), &o);
  EXPECT_EQ(h.swim.stats().own_stalls, 1u);
  EXPECT_EQ(s->deadline(), deadline + milliseconds(2500));
  // Run again at the old deadline: x is still suspect, and a refutation
  // that waited in our input queue during the stall still saves it.
  h.swim.Tick(At(deadline.count()), &o);
  EXPECT_EQ(h.StateOf("x"), MemberState::kSuspect);
  h.Gossip("x", {Rumor("x", MemberState::kAlive, 1, 1)}, deadline.count());
  EXPECT_EQ(h.StateOf("x"), MemberState::kAlive);
  EXPECT_EQ(h.swim.stats().deaths_declared, 0u);
}

TEST(SwimTest, RefutationCancelsTheSuspicion) {
  Harness h({"a", "b", "c", "x"});
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 1000);
  ASSERT_NE(h.swim.SuspicionOf("x"), nullptr);
  h.Gossip("x", {Rumor("x", MemberState::kAlive, 1, 1)}, 2000);
  EXPECT_EQ(h.swim.SuspicionOf("x"), nullptr);
  EXPECT_EQ(h.StateOf("x"), MemberState::kAlive);
  EXPECT_EQ(h.swim.stats().suspects_refuted, 1u);
}

TEST(SwimTest, FewMembersSuspicionRunsForTheMinimum) {
  Harness h({"x"});  // n = 2: k = 0
  h.Gossip("x", {Rumor("x", MemberState::kSuspect, 1, 0, "zz")}, 0);
  ASSERT_NE(h.swim.SuspicionOf("x"), nullptr);
  EXPECT_EQ(h.swim.SuspicionOf("x")->timeout(), milliseconds(4000));
}

// Ticks until the harness pings `target` and returns that ping; pings to
// anyone else are acked at once so health stays at zero.
Outbound NextPingTo(Harness& h, const std::string& target, int64_t* now_ms) {
  for (int i = 0; i < 1000; ++i) {
    const auto next = std::chrono::duration_cast<milliseconds>(h.swim.NextDeadline()).count();
    *now_ms = next;
    std::vector<Outbound> o;
    h.swim.Tick(At(next), &o);
    for (auto& x : o) {
      auto* p = std::get_if<Ping>(&x.msg.body);
      if (p == nullptr) continue;
      if (p->target_id == target) return x;
      h.Deliver(p->target_id, Ack{p->seq}, {}, next);
    }
  }
  ADD_FAILURE() << "never pinged " << target;
  return {};
}

std::string IdOf(const std::string& address) { return address.substr(0, address.find(':')); }

// A node behind its input queue (run on time, but slower than its input)
// reads what members sent seconds ago: at a suspicion's deadline it has not
// read the refutation yet. The verdict waits once for the input's age
// (slow_node at 3 nodes: the slow owner declared healthy peers dead).
// Returns the suspicion's deadline; `a`'s messages up to it were `age_ms` old.
// Runs us every 200 ms over [from, to), reading a's messages `age_ms` late.
void ReadStaleInput(Harness& h, int64_t from, int64_t to, int64_t age_ms) {
  for (int64_t at = from; at < to; at += 200) {
    h.Deliver("a", membership::Gossip{}, {}, at, kEpochMs + at - age_ms);
  }
}

int64_t SuspectXWhileInputIsOld(Harness& h, int64_t age_ms) {
  int64_t t = 0;
  Outbound ping = NextPingTo(h, "a", &t);
  // a's clock agrees with ours: offset 0 after one sample (rtt 20 ms).
  h.Deliver("a", Ack{std::get<Ping>(ping.msg.body).seq}, {}, t + 20, kEpochMs + t + 10);
  EXPECT_TRUE(h.swim.ClockOffsetMs("a").has_value());
  const int64_t start = t + 100;
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, start);
  const Suspicion* s = h.swim.SuspicionOf("x");
  EXPECT_NE(s, nullptr);
  if (s == nullptr) return 0;
  const int64_t deadline = std::chrono::duration_cast<milliseconds>(s->deadline()).count();
  ReadStaleInput(h, start + 200, deadline, age_ms);  // no stall of our own
  return deadline;
}

TEST(SwimTest, AVerdictWaitsForTheAgeOfTheInputBeingRead) {
  Harness h({"a", "b", "x"});
  const int64_t deadline = SuspectXWhileInputIsOld(h, 3000);
  std::vector<Outbound> o;
  h.swim.Tick(At(deadline), &o);
  EXPECT_EQ(h.StateOf("x"), MemberState::kSuspect);
  EXPECT_EQ(h.swim.stats().deaths_postponed, 1u);
  // x's refutation, sent before the deadline, is read 3 s late: x lives.
  h.Gossip("x", {Rumor("x", MemberState::kAlive, 1, 1)}, deadline + 2000);
  EXPECT_EQ(h.StateOf("x"), MemberState::kAlive);
  EXPECT_EQ(h.swim.stats().deaths_declared, 0u);
}

TEST(SwimTest, AVerdictWaitsOnceAndAtMostItsTimeout) {
  Harness h({"a", "b", "x"});
  const int64_t deadline = SuspectXWhileInputIsOld(h, 60'000);
  const milliseconds timeout = h.swim.SuspicionOf("x")->timeout();
  std::vector<Outbound> o;
  h.swim.Tick(At(deadline), &o);
  EXPECT_EQ(h.StateOf("x"), MemberState::kSuspect);
  // Input a minute old still waits only one timeout more, and only once.
  ReadStaleInput(h, deadline + 200, deadline + timeout.count(), 60'000);
  h.swim.Tick(At(deadline + timeout.count()), &o);
  EXPECT_EQ(h.StateOf("x"), MemberState::kDead);
  EXPECT_EQ(h.swim.stats().deaths_postponed, 1u);
  EXPECT_EQ(h.swim.stats().deaths_declared, 1u);
}

// A sender's wall stamp is untrusted: the most absurd ones neither overflow
// the age (UBSan's float-cast check in the sanitizer stage) nor wait more
// than once, one timeout.
TEST(SwimTest, AbsurdSenderStampsAreClampedAndWaitOnlyOnce) {
  for (int64_t stamp : {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()}) {
    Harness h({"a", "b", "x"});
    const int64_t deadline = SuspectXWhileInputIsOld(h, 0);
    const milliseconds timeout = h.swim.SuspicionOf("x")->timeout();
    h.Deliver("a", membership::Gossip{}, {}, deadline - 100, stamp);
    std::vector<Outbound> o;
    h.swim.Tick(At(deadline), &o);
    // Whatever the stamp says, the verdict falls within one more timeout.
    if (h.StateOf("x") != MemberState::kDead) h.swim.Tick(At(deadline + timeout.count()), &o);
    EXPECT_EQ(h.StateOf("x"), MemberState::kDead) << stamp;
    EXPECT_LE(h.swim.stats().deaths_postponed, 1u);
  }
}

// With fresh input nothing waits: the verdict falls at the deadline.
TEST(SwimTest, FreshInputLetsTheVerdictFallAtTheDeadline) {
  Harness h({"a", "b", "x"});
  const int64_t deadline = SuspectXWhileInputIsOld(h, 0);
  std::vector<Outbound> o;
  h.swim.Tick(At(deadline), &o);
  EXPECT_EQ(h.StateOf("x"), MemberState::kDead);
  EXPECT_EQ(h.swim.stats().deaths_postponed, 0u);
}

TEST(SwimTest, ClockOffsetFromPingAck) {
  Harness h({"b"});
  int64_t t = 0;
  Outbound ping = NextPingTo(h, "b", &t);
  EXPECT_EQ(ping.msg.sender_wall_ms, kEpochMs + t);
  // b's clock is 250 ms ahead; rtt 20 ms, b stamps at the midpoint.
  const uint64_t seq = std::get<Ping>(ping.msg.body).seq;
  h.Deliver("b", Ack{seq}, {}, t + 20, kEpochMs + t + 10 + 250);
  ASSERT_TRUE(h.swim.ClockOffsetMs("b").has_value());
  EXPECT_NEAR(*h.swim.ClockOffsetMs("b"), 250.0, 1e-9);
  EXPECT_NEAR(h.swim.ClockEstimateOf("b")->rtt_ms, 20.0, 1e-9);
  EXPECT_NEAR(h.swim.ClockEstimateOf("b")->uncertainty_ms, 11.0, 1e-9);
  // A slow round trip (100 ms > 2 x 20 ms) is dropped, whatever it says.
  ping = NextPingTo(h, "b", &t);
  h.Deliver("b", Ack{std::get<Ping>(ping.msg.body).seq}, {}, t + 100, kEpochMs + t + 50 + 900);
  EXPECT_NEAR(*h.swim.ClockOffsetMs("b"), 250.0, 1e-9);
  EXPECT_EQ(h.swim.ClockEstimateOf("b")->rejected, 1u);
  EXPECT_FALSE(h.swim.ClockOffsetMs("nobody").has_value());
}

TEST(SwimTest, AckFromAStrangerDoesNotCount) {
  Harness h({"b", "c"});
  int64_t t = 0;
  Outbound ping = NextPingTo(h, "b", &t);
  h.Deliver("c", Ack{std::get<Ping>(ping.msg.body).seq}, {}, t + 1);
  EXPECT_EQ(h.swim.stats().probe_acks, 0u);
  EXPECT_EQ(h.swim.stats().unmatched, 1u);
}

TEST(SwimTest, HealthRisesOnMissedNacksStretchesProbingAndFallsOnAcks) {
  Harness h({"a", "b", "c", "d"});
  int64_t t0 = 0;
  NextPingTo(h, "a", &t0);
  ASSERT_EQ(h.swim.local_health(), 0);
  // "a" stays silent: ping-reqs go out at the probe timeout...
  auto sent = h.RunUntil(t0 + 500);
  auto reqs = OfKind<PingReq>(sent);
  ASSERT_EQ(reqs.size(), 3u);
  for (const auto* r : reqs) EXPECT_EQ(std::get<PingReq>(r->msg.body).target_id, "a");
  // ...one relay nacks, two stay silent: +2 when the round ends.
  h.Deliver(IdOf(reqs[0]->to_address), Nack{std::get<PingReq>(reqs[0]->msg.body).seq}, {},
            t0 + 700);
  h.RunUntil(t0 + 999);
  EXPECT_EQ(h.swim.local_health(), 0);
  sent = h.RunUntil(t0 + 1000);
  EXPECT_EQ(h.swim.local_health(), 2);
  EXPECT_EQ(h.StateOf("a"), MemberState::kSuspect);
  EXPECT_EQ(h.swim.stats().nacks_received, 1u);
  EXPECT_EQ(h.swim.probe_interval(), milliseconds(3000));
  EXPECT_EQ(h.swim.probe_timeout(), milliseconds(1500));
  // The next round started at t0 + 1000; an ack lowers the score...
  auto pings = OfKind<Ping>(sent);
  ASSERT_EQ(pings.size(), 1u);
  const auto& p = std::get<Ping>(pings[0]->msg.body);
  h.Deliver(p.target_id, Ack{p.seq}, {}, t0 + 1010);
  EXPECT_EQ(h.swim.local_health(), 1);
  // ...but that round was scheduled at the stretched interval.
  EXPECT_TRUE(OfKind<Ping>(h.RunUntil(t0 + 3999)).empty());
  EXPECT_EQ(OfKind<Ping>(h.RunUntil(t0 + 4000)).size(), 1u);
}

TEST(SwimTest, FailedProbeWithAllNacksLeavesHealthAlone) {
  Harness h({"a", "b", "c", "d"});
  int64_t t0 = 0;
  NextPingTo(h, "a", &t0);
  auto sent = h.RunUntil(t0 + 500);
  auto reqs = OfKind<PingReq>(sent);
  ASSERT_EQ(reqs.size(), 3u);
  for (const auto* r : reqs) {
    h.Deliver(IdOf(r->to_address), Nack{std::get<PingReq>(r->msg.body).seq}, {}, t0 + 900);
  }
  h.RunUntil(t0 + 1000);
  EXPECT_EQ(h.StateOf("a"), MemberState::kSuspect);
  EXPECT_EQ(h.swim.local_health(), 0);  // the relays vouch that we are fine
}

TEST(SwimTest, RelayedAckCountsAsSuccess) {
  Harness h({"a", "b", "c", "d"});
  int64_t t0 = 0;
  NextPingTo(h, "a", &t0);
  auto sent = h.RunUntil(t0 + 500);
  auto reqs = OfKind<PingReq>(sent);
  ASSERT_EQ(reqs.size(), 3u);
  h.Deliver(IdOf(reqs[1]->to_address), Ack{std::get<PingReq>(reqs[1]->msg.body).seq}, {}, t0 + 600);
  h.RunUntil(t0 + 1000);
  EXPECT_EQ(h.StateOf("a"), MemberState::kAlive);
  EXPECT_EQ(h.swim.stats().probe_failures, 0u);
  EXPECT_EQ(h.swim.ClockEstimateOf("a"), nullptr);  // relayed: no clock sample
}

TEST(SwimTest, BuddySystemTellsTheSuspectFirstHand) {
  Harness h({"a", "x"});
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 10);
  // Anything we send to x (here an ack) carries the suspicion, with us as origin.
  h.Deliver("x", Ping{5, "me"}, {}, 20);
  auto acks = OfKind<Ack>(h.out);
  ASSERT_EQ(acks.size(), 1u);
  bool carried = false;
  for (const auto& u : acks[0]->msg.piggyback) {
    carried |= u.id == "x" && u.state == MemberState::kSuspect && u.origin == "me";
  }
  EXPECT_TRUE(carried);
}

// Regression (tally-sim --scenario partition_bridge --nodes 50 --seed 5005):
// we refuted a suspicion while cut off from some accusers; after the heal an
// accuser kept telling us the old suspicion (buddy system) and we only
// re-gossiped our refutation to random members, so it declared us dead. A
// stale accusation told to us is answered to its sender at once.
TEST(SwimTest, AStaleAccusationIsAnsweredToItsSender) {
  Harness h({"a", "b"});
  h.Gossip("a", {Rumor("me", MemberState::kSuspect, 1, 0, "a")}, 10);
  ASSERT_EQ(h.swim.incarnation(), 1u);
  h.Gossip("b", {Rumor("me", MemberState::kSuspect, 1, 0, "b")}, 20);
  auto replies = OfKind<Gossip>(h.out);
  ASSERT_EQ(replies.size(), 1u);
  EXPECT_EQ(replies[0]->to_address, Addr("b"));
  EXPECT_EQ(replies[0]->msg.sender_incarnation, 1u);
  bool carried = false;
  for (const auto& u : replies[0]->msg.piggyback) {
    carried |= u.id == "me" && u.state == MemberState::kAlive && u.incarnation == 1;
  }
  EXPECT_TRUE(carried);
  EXPECT_EQ(h.swim.incarnation(), 1u);  // nothing new to out-bid
  EXPECT_EQ(h.swim.stats().stale_accusations, 1u);
  // A stale dead rumor too; a stale alive one is no accusation.
  h.Gossip("b", {Rumor("me", MemberState::kDead, 1, 0, "b")}, 30);
  EXPECT_EQ(OfKind<Gossip>(h.out).size(), 1u);
  h.Gossip("b", {Rumor("me", MemberState::kAlive, 1, 0)}, 40);
  EXPECT_TRUE(OfKind<Gossip>(h.out).empty());
  // An accuser's ping is answered by the ack, which carries our incarnation.
  h.Deliver("b", Ping{7, "me"}, {Rumor("me", MemberState::kSuspect, 1, 0, "b")}, 50);
  EXPECT_TRUE(OfKind<Gossip>(h.out).empty());
  ASSERT_EQ(OfKind<Ack>(h.out).size(), 1u);
  EXPECT_EQ(OfKind<Ack>(h.out)[0]->msg.sender_incarnation, 1u);
}

TEST(SwimTest, AMessageFromAMemberIsFirstHandNewsOfIt) {
  Harness h({"a", "x"});
  h.Gossip("a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}, 10);
  SwimMessage m = From("x", Gossip{});
  m.sender_incarnation = 1;  // x refuted; we missed the rumor itself
  h.out.clear();
  h.swim.OnMessage(Addr("x"), m, At(20), &h.out);
  EXPECT_EQ(h.StateOf("x"), MemberState::kAlive);
  EXPECT_EQ(h.swim.members().Find("x")->incarnation, 1u);
  EXPECT_EQ(h.swim.SuspicionOf("x"), nullptr);
  EXPECT_EQ(h.swim.stats().first_hand_updates, 1u);
  // A header never introduces a stranger, nor undoes a leave.
  h.out.clear();
  h.swim.OnMessage(Addr("s"), From("stranger", Gossip{}), At(30), &h.out);
  EXPECT_EQ(h.swim.members().Find("stranger"), nullptr);
  h.Gossip("a", {Rumor("a", MemberState::kLeft, 1, 3)}, 40);
  SwimMessage late = From("a", Gossip{});
  late.sender_incarnation = 3;
  h.swim.OnMessage(Addr("a"), late, At(50), &h.out);
  EXPECT_EQ(h.StateOf("a"), MemberState::kLeft);
}

TEST(SwimTest, AStrangerTalkingToUsIsAskedForItsFullState) {
  // A join rumor reaches each member only with high probability (swarm seeds
  // 869, 1426, 1594: a member missed one until the 30-60 s push-pull).
  Harness h({"a"});
  h.Gossip("x", {}, 100);
  auto asked = OfKind<PushPull>(h.out);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0]->to_address, Addr("x"));
  EXPECT_TRUE(asked[0]->stream);
  EXPECT_FALSE(std::get<PushPull>(asked[0]->msg.body).reply);
  EXPECT_EQ(h.swim.members().Find("x"), nullptr);  // the header alone introduces nobody
  EXPECT_EQ(h.swim.stats().prompted_push_pulls, 1u);
  // At most one per probe interval, whoever asks.
  h.Gossip("y", {}, 600);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  h.Deliver("y", Ping{3, "me"}, {}, 1200);
  ASSERT_EQ(OfKind<PushPull>(h.out).size(), 1u);
  EXPECT_EQ(OfKind<PushPull>(h.out)[0]->to_address, Addr("y"));
  // Its own table introduces it; a process that is leaving says so there.
  h.Deliver("x", PushPull{true, false, {Rumor("x", MemberState::kAlive, 1, 0)}}, {}, 1300);
  EXPECT_EQ(h.StateOf("x"), MemberState::kAlive);
  h.Deliver("y", PushPull{true, false, {Rumor("y", MemberState::kLeft, 1, 1)}}, {}, 1400);
  EXPECT_EQ(h.swim.members().Find("y"), nullptr);
  // A stranger's rumor about itself introduces it: nothing to ask.
  h.Gossip("z", {Rumor("z", MemberState::kAlive, 1, 0)}, 5000);
  EXPECT_EQ(h.StateOf("z"), MemberState::kAlive);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  EXPECT_EQ(h.swim.stats().prompted_push_pulls, 2u);
}

TEST(SwimTest, JoinsHeardAreFollowedByOnePushPullOnceTheySettle) {
  // A storm of join rumors: one of them may miss us (swarm seed 1594, and
  // 50-node fault_free seeds 3001 and 4014, where the missed member never
  // talked to us). A dissemination time after the last join we heard, one
  // push-pull with a random member compares tables.
  SwimConfig config;
  config.push_pull_interval_ms = 3'600'000;  // the periodic one out of the way
  config.reconnect_interval_ms = 3000;       // ...and nobody declared dead meanwhile
  Harness h({"a"}, config);
  auto push_pulls = [](const std::vector<Outbound>& out) {
    size_t n = 0;
    for (const auto& o : out) {
      if (std::holds_alternative<PushPull>(o.msg.body) && !std::get<PushPull>(o.msg.body).reply) {
        ++n;
      }
    }
    return n;
  };
  const int64_t settle_ms =
      timing::RetransmitLimit(config.retransmit_mult, 2) * config.gossip_interval_ms +
      2 * config.probe_interval_ms;
  h.Gossip("a", {Rumor("b", MemberState::kAlive, 1, 0)}, 1000);
  h.RunUntil(1500);
  h.Gossip("a", {Rumor("c", MemberState::kAlive, 1, 0)}, 1500);  // postpones it
  const int64_t due = 1500 + settle_ms;
  EXPECT_EQ(push_pulls(h.RunUntil(due - 1)), 0u);
  EXPECT_EQ(push_pulls(h.RunUntil(due + 1)), 1u);
  // One per reconnect interval at most, and nothing without a new join.
  h.Gossip("a", {Rumor("d", MemberState::kAlive, 1, 0)}, due + 10);
  EXPECT_EQ(push_pulls(h.RunUntil(due + 1 + config.reconnect_interval_ms - 10)), 0u);
  EXPECT_EQ(push_pulls(h.RunUntil(due + 20 + config.reconnect_interval_ms)), 1u);
  EXPECT_EQ(push_pulls(h.RunUntil(due + 20 + 3 * config.reconnect_interval_ms)), 0u);
}

TEST(SwimTest, ARefutedSuspicionPromptsAFullStateExchange) {
  // A `left` gossiped while we were cut off never reaches us again: its
  // retransmissions are spent (swarm seeds 604, 1492).
  Harness h({"a", "b"});
  h.Gossip("b", {Rumor("a", MemberState::kSuspect, 1, 0, "b")}, 10);
  ASSERT_EQ(h.StateOf("a"), MemberState::kSuspect);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  h.Gossip("b", {Rumor("a", MemberState::kAlive, 1, 1)}, 2000);
  EXPECT_EQ(h.StateOf("a"), MemberState::kAlive);
  auto asked = OfKind<PushPull>(h.out);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0]->to_address, Addr("a"));
  EXPECT_EQ(h.swim.stats().suspects_refuted, 1u);
}

TEST(SwimTest, AViewDigestThatKeepsDifferingPromptsOneFullStateExchange) {
  // A member missed a `left` (50-node join_leave seed 39103: n0040 held n0027
  // alive for 33 s) and the leaver never talks to it again. Pings and acks
  // carry the up set's digest; one that still differs once our view has been
  // quiet for a rumor's retransmit time plus a probe round gets a push-pull.
  SwimConfig config;
  config.push_pull_interval_ms = 3'600'000;  // the periodic one out of the way
  Harness h({"a", "b"}, config);
  const uint64_t mine = h.swim.view_digest();
  EXPECT_NE(mine, 0u);
  // Ours travels on what we send.
  h.Deliver("a", Ping{1, "me"}, {}, 100, -1);
  auto acks = OfKind<Ack>(h.out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(std::get<Ack>(acks[0]->msg.body).view_digest, mine);
  const int64_t settle_ms =
      timing::RetransmitLimit(config.retransmit_mult, 3) * config.gossip_interval_ms +
      config.probe_interval_ms;
  // Equal digests, or none (an older sender): nothing.
  h.Deliver("a", Ack{7, "", mine}, {}, 200);
  h.Deliver("a", Ack{7, "", 0}, {}, 300);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  // A difference first starts the clock; within the settle time nothing.
  const uint64_t other = mine ^ 0x1234;
  h.Deliver("a", Ping{2, "me", "", other}, {}, 1000);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  h.Deliver("b", Ping{3, "me", "", other}, {}, 1000 + settle_ms - 1);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  // Still differing after it: one exchange with the sender.
  h.Deliver("b", Ack{8, "", other}, {}, 1000 + settle_ms + 1);
  auto asked = OfKind<PushPull>(h.out);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0]->to_address, Addr("b"));
  EXPECT_FALSE(std::get<PushPull>(asked[0]->msg.body).reply);
  EXPECT_EQ(h.swim.stats().view_push_pulls, 1u);
  // News of our own restarts the wait: the difference may be in flight.
  const int64_t t = 1000 + settle_ms + 1 + 2 * settle_ms;
  h.Deliver("a", Ping{4, "me", "", other}, {}, t);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());
  h.Gossip("a", {Rumor("c", MemberState::kAlive, 1, 0)}, t + 10);
  EXPECT_NE(h.swim.view_digest(), mine);
  h.Deliver("a", Ping{5, "me", "", other}, {}, t + settle_ms + 20);
  EXPECT_TRUE(OfKind<PushPull>(h.out).empty());  // the wait started again at this one
  h.Deliver("a", Ping{6, "me", "", other}, {}, t + 2 * settle_ms + 30);
  EXPECT_EQ(OfKind<PushPull>(h.out).size(), 1u);
  EXPECT_EQ(h.swim.stats().view_push_pulls, 2u);
  // A stranger's digest counts for nothing here (it has its own rule).
  h.Deliver("x", Ping{7, "me", "", other}, {}, t + 5 * settle_ms);
  EXPECT_EQ(h.swim.stats().view_push_pulls, 2u);
}

TEST(SwimTest, TheDigestIsTheUpSetOfIdsAndGenerations) {
  // Two members with the same up set agree whatever order they learned it in
  // and whoever is suspect; a restart (new generation) or a departure changes it.
  Harness x({"a", "b"});
  Swim y({}, {"a", Addr("a"), 1}, {}, 99);
  std::vector<Outbound> out;
  y.Start(At(0), &out);
  y.OnMessage(Addr("b"),
              From("b", PushPull{true,
                                 false,
                                 {Rumor("me", MemberState::kAlive, 1, 0),
                                  Rumor("b", MemberState::kAlive, 1, 0)}}),
              At(0), &out);
  EXPECT_EQ(x.swim.view_digest(), y.view_digest());
  x.Gossip("a", {Rumor("b", MemberState::kSuspect, 1, 0, "a")}, 10);
  EXPECT_EQ(x.swim.view_digest(), y.view_digest());
  const uint64_t before = x.swim.view_digest();
  x.Gossip("a", {Rumor("b", MemberState::kAlive, 2, 0)}, 20);  // b restarted
  EXPECT_NE(x.swim.view_digest(), before);
  x.Gossip("a", {Rumor("b", MemberState::kLeft, 2, 1)}, 30);
  const uint64_t left = x.swim.view_digest();
  EXPECT_NE(left, before);
  y.OnMessage(Addr("b"), From("b", Gossip{}, {Rumor("b", MemberState::kLeft, 1, 1)}), At(40), &out);
  EXPECT_EQ(y.view_digest(), left);
}

TEST(SwimTest, AnotherLayerHearingANewerProcessAsksItForItsTable) {
  // 50-node crash_restart seed 39118: n0029 missed n0005's restart and
  // refused its deltas (an unknown generation) for 12 s. The node layer
  // reports each sender; one our table does not hold prompts a push-pull.
  Harness h({"a"});
  std::vector<Outbound> out;
  h.swim.OnPeerHeard("a", 1, Addr("a"), At(100), &out);  // the process we hold
  h.swim.OnPeerHeard("me", 9, Addr("me"), At(100), &out);
  EXPECT_TRUE(OfKind<PushPull>(out).empty());
  h.swim.OnPeerHeard("a", 2, Addr("a"), At(200), &out);  // a restart we missed
  auto asked = OfKind<PushPull>(out);
  ASSERT_EQ(asked.size(), 1u);
  EXPECT_EQ(asked[0]->to_address, Addr("a"));
  EXPECT_EQ(h.StateOf("a"), MemberState::kAlive);
  EXPECT_EQ(h.swim.members().Find("a")->generation, 1u);  // the header introduces nothing
  out.clear();
  h.swim.OnPeerHeard("a", 3, Addr("a"), At(300), &out);  // rate-limited like a stranger
  EXPECT_TRUE(OfKind<PushPull>(out).empty());
  h.swim.OnPeerHeard("a", 3, Addr("a"), At(1300), &out);
  EXPECT_EQ(OfKind<PushPull>(out).size(), 1u);
  // A stranger's node messages come with every join: its SWIM messages and
  // the settle push-pull cover it.
  out.clear();
  h.swim.OnPeerHeard("x", 1, Addr("x"), At(5000), &out);
  EXPECT_TRUE(OfKind<PushPull>(out).empty());
  EXPECT_EQ(h.swim.stats().prompted_push_pulls, 2u);
}

TEST(SwimTest, ServesPingReqRelayingTheAckOrANack) {
  Harness h({"a", "b"});
  h.Deliver("a", PingReq{500, "b", Addr("b"), true}, {}, 100);
  auto pings = OfKind<Ping>(h.out);
  ASSERT_EQ(pings.size(), 1u);
  EXPECT_EQ(pings[0]->to_address, Addr("b"));
  const uint64_t relay_seq = std::get<Ping>(pings[0]->msg.body).seq;
  h.Deliver("b", Ack{relay_seq}, {}, 150);
  auto acks = OfKind<Ack>(h.out);
  ASSERT_EQ(acks.size(), 1u);
  EXPECT_EQ(acks[0]->to_address, Addr("a"));
  EXPECT_EQ(std::get<Ack>(acks[0]->msg.body).seq, 500u);

  // Silent target: a nack at 80% of the probe timeout.
  h.Deliver("a", PingReq{501, "b", Addr("b"), true}, {}, 1000);
  auto sent = h.RunUntil(1399);
  EXPECT_TRUE(OfKind<Nack>(sent).empty());
  sent = h.RunUntil(1400);
  auto nacks = OfKind<Nack>(sent);
  ASSERT_EQ(nacks.size(), 1u);
  EXPECT_EQ(std::get<Nack>(nacks[0]->msg.body).seq, 501u);
  EXPECT_EQ(nacks[0]->to_address, Addr("a"));
}

TEST(SwimTest, LeaveAnnouncesLeftAndStopsProbing) {
  Harness h({"a", "b", "c"});
  h.RunUntil(3000);
  std::vector<Outbound> out;
  h.swim.Leave(At(3001), &out);
  EXPECT_TRUE(h.swim.left());
  EXPECT_EQ(h.swim.members().Find("me")->state, MemberState::kLeft);
  EXPECT_EQ(h.swim.incarnation(), 1u);
  ASSERT_FALSE(out.empty());
  for (const auto& o : out) {
    bool carries = false;
    for (const auto& u : o.msg.piggyback) carries |= u.id == "me" && u.state == MemberState::kLeft;
    EXPECT_TRUE(carries);
  }
  auto sent = h.RunUntil(20000);
  EXPECT_TRUE(OfKind<Ping>(sent).empty());
  EXPECT_TRUE(OfKind<PushPull>(sent).empty());
  EXPECT_TRUE(h.swim.LeaveFlushed());
  // Having left, it no longer argues about itself.
  h.Gossip("a", {Rumor("me", MemberState::kDead, 1, 1, "a")}, 20001);
  EXPECT_EQ(h.swim.incarnation(), 1u);
}

TEST(SwimTest, DeadAndLeftMembersAreReaped) {
  SwimConfig config;
  config.dead_reap_ms = 60000;
  Harness h({"a", "b"}, config);
  h.Gossip("a", {Rumor("b", MemberState::kDead, 1, 0, "a")}, 10);
  ASSERT_EQ(h.StateOf("b"), MemberState::kDead);
  h.RunUntil(59000);
  EXPECT_NE(h.swim.members().Find("b"), nullptr);
  h.RunUntil(62000);
  EXPECT_EQ(h.swim.members().Find("b"), nullptr);
  // Once forgotten, a stale dead rumor does not bring it back.
  h.Gossip("a", {Rumor("b", MemberState::kDead, 1, 0, "a")}, 62001);
  EXPECT_EQ(h.swim.members().Find("b"), nullptr);
}

TEST(SwimTest, HostileInputNeverCrashesOrCorruptsTheTable) {
  Harness h({"a", "b", "c"});
  Rng rng(99);
  auto pick = [&rng](std::initializer_list<std::string> v) {
    return *(v.begin() + UniformBelow(rng, v.size()));
  };
  const std::initializer_list<std::string> ids = {"a",
                                                  "b",
                                                  "me",
                                                  "",
                                                  std::string("n\0ul", 4),
                                                  std::string(300, 'x'),
                                                  "z",
                                                  "y",
                                                  std::string(255, 'L')};
  const std::initializer_list<std::string> addrs = {
      Addr("a"), "", Addr("me"), "1.2.3.4:5", std::string(400, 'q'), std::string(255, 'A')};
  const uint64_t incs[] = {0,
                           1,
                           2,
                           Swim::kMaxIncarnation - 1,
                           Swim::kMaxIncarnation,
                           Swim::kMaxIncarnation + 1,
                           std::numeric_limits<uint64_t>::max()};
  int64_t t = 0;
  for (int i = 0; i < 20000; ++i) {
    t += static_cast<int64_t>(UniformBelow(rng, 50));
    std::vector<MemberUpdate> rumors;
    const size_t n = UniformBelow(rng, 4);
    for (size_t j = 0; j < n; ++j) {
      rumors.push_back(MemberUpdate{pick(ids), pick(addrs), UniformBelow(rng, 3),
                                    incs[UniformBelow(rng, std::size(incs))],
                                    static_cast<MemberState>(UniformBelow(rng, 6)), pick(ids)});
    }
    SwimBody body;
    switch (UniformBelow(rng, 6)) {
      case 0:
        body = Ping{rng(), pick(ids)};
        break;
      case 1:
        body = Ack{UniformBelow(rng, 2) ? rng() : h.swim.stats().probes};
        break;
      case 2:
        body = PingReq{rng(), pick(ids), pick(addrs), UniformBelow(rng, 2) == 0};
        break;
      case 3:
        body = Nack{rng()};
        break;
      case 4:
        body = Gossip{};
        break;
      default:
        body = PushPull{UniformBelow(rng, 2) == 0, false, rumors};
        break;
    }
    SwimMessage m;
    m.version = static_cast<uint16_t>(UniformBelow(rng, 3));
    m.sender_id = pick(ids);
    m.sender_address = pick(addrs);
    m.sender_generation = UniformBelow(rng, 3);
    m.sender_wall_ms = static_cast<int64_t>(rng());
    m.body = body;
    m.piggyback = rumors;
    std::vector<Outbound> out;
    h.swim.OnMessage(pick(addrs), m, At(t), &out);
    if (UniformBelow(rng, 4) == 0) h.swim.Tick(At(t), &out);
    for (const auto& o : out) {
      EXPECT_LE(EstimatedEncodedBytes(o.msg), o.stream ? SIZE_MAX : size_t{1400});
      EXPECT_NE(o.to_address, Addr("me"));
    }
  }
  for (const auto& [id, m] : h.swim.members()) {
    EXPECT_FALSE(id.empty());
    EXPECT_LE(id.size(), Swim::kMaxIdBytes);
    EXPECT_EQ(id.find('\0'), std::string::npos);
    EXPECT_LE(m.incarnation, Swim::kMaxIncarnation);
  }
  const Member* me = h.swim.members().Find("me");
  ASSERT_NE(me, nullptr);
  EXPECT_EQ(me->state, MemberState::kAlive);
  EXPECT_EQ(me->generation, 1u);
  EXPECT_LE(h.swim.incarnation(), Swim::kMaxIncarnation);
  EXPECT_GT(h.swim.stats().invalid, 0u);
}

// A replayed membership message (an authentic datagram recorded earlier and
// sent again, e.g. to a node that restarted and lost its replay memory,
// docs/RELIABILITY.md) changes nothing: rumors are ordered by (generation,
// incarnation, state), so an old one never supersedes what came after it.
// Neither a refuted suspicion nor an old death can kill a live member, and
// neither an old alive nor an old suspect can resurrect one that left.
TEST(SwimTest, ReplayedOldMessagesNeitherKillNorResurrect) {
  struct Sent {
    std::string from;
    std::vector<MemberUpdate> rumors;
  };
  struct Step {
    Sent message;
    MemberState x_after;
  };
  // x's life: suspected, refutes, declared dead, restarts (generation 2),
  // suspected again, refutes, leaves.
  const std::vector<Step> history = {
      {{"a", {Rumor("x", MemberState::kAlive, 1, 0)}}, MemberState::kAlive},
      {{"a", {Rumor("x", MemberState::kSuspect, 1, 0, "a")}}, MemberState::kSuspect},
      {{"x", {Rumor("x", MemberState::kAlive, 1, 1)}}, MemberState::kAlive},
      {{"b", {Rumor("x", MemberState::kDead, 1, 1, "b")}}, MemberState::kDead},
      {{"x", {Rumor("x", MemberState::kAlive, 2, 0)}}, MemberState::kAlive},
      {{"a", {Rumor("x", MemberState::kSuspect, 2, 0, "a")}}, MemberState::kSuspect},
      {{"x", {Rumor("x", MemberState::kAlive, 2, 1)}}, MemberState::kAlive},
      {{"x", {Rumor("x", MemberState::kLeft, 2, 2)}}, MemberState::kLeft},
  };
  for (size_t upto = 1; upto <= history.size(); ++upto) {
    SCOPED_TRACE(::testing::Message() << "after step " << upto);
    Harness h({"a", "b", "c"});
    int64_t t = 1;
    for (size_t i = 0; i < upto; ++i) {
      h.Gossip(history[i].message.from, history[i].message.rumors, t++);
      ASSERT_EQ(h.StateOf("x"), history[i].x_after) << "step " << i + 1;
    }
    const Member before = *h.swim.members().Find("x");
    // Every earlier message again, newest first and then oldest first.
    for (size_t i = upto; i-- > 0;)
      h.Gossip(history[i].message.from, history[i].message.rumors, t++);
    for (size_t i = 0; i < upto; ++i)
      h.Gossip(history[i].message.from, history[i].message.rumors, t++);
    const Member* after = h.swim.members().Find("x");
    ASSERT_NE(after, nullptr);
    EXPECT_EQ(std::make_tuple(after->generation, after->incarnation, after->state),
              std::make_tuple(before.generation, before.incarnation, before.state));
    EXPECT_EQ(h.swim.SuspicionOf("x") != nullptr, after->state == MemberState::kSuspect);
  }
}

}  // namespace
}  // namespace tally::membership

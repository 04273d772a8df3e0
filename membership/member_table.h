// MemberTable: what this node believes about every member it knows, itself
// included, and the precedence rule that decides which rumor wins.
//
// Identity. A member is a name (`id`) plus the process that holds it: the
// `generation` (one per process start, chosen by the driver, e.g. its start
// wall time in ms) and the `address` of that process's gossip socket. The
// `incarnation` counts the process's refutations; only the member itself
// raises it. A restarted node keeps its name, takes a higher generation and
// possibly a new address, and wins over everything said about its previous
// process (so memberlist issue 157, a restarted node refused as a name
// conflict, cannot happen here).
//
// Precedence. A rumor is keyed by (generation, incarnation, state) compared
// lexicographically, with alive < suspect < dead < left; a rumor supersedes
// the table's entry iff its key is strictly greater. That gives SWIM's rules:
//   * alive(i) beats alive/suspect/dead(j) iff i > j (a refutation),
//   * suspect(i) beats alive(j) iff i >= j, suspect(j) iff i > j (equal
//     keys are Lifeguard confirmations, handled by Swim),
//   * dead(i) beats alive/suspect(j) iff i >= j (not a stale dead, i < j),
//   * left(i) beats all of incarnation <= i: leaving raises the incarnation
//     above everything the member said before, and a member that left never
//     speaks again in that generation,
//   * any higher generation beats every state of a lower one.
// Because it is a total order, merging rumors in any order ends in the same
// table.
//
// Thread safety: none (owned by one Swim).
#ifndef TALLY_MEMBERSHIP_MEMBER_TABLE_H_
#define TALLY_MEMBERSHIP_MEMBER_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "membership/message.h"
#include "tally/types.h"

namespace tally::membership {

struct Member {
  std::string id;
  std::string address;
  uint64_t generation = 0;
  uint64_t incarnation = 0;
  MemberState state = MemberState::kAlive;
  Instant since;  // when this node last saw the state (or process) change

  // Up: alive or suspect. Up members are probed, own keys on the ring and
  // count in n; a suspect stays up so a false suspicion moves no keys.
  bool up() const { return state == MemberState::kAlive || state == MemberState::kSuspect; }
  MemberUpdate ToUpdate(std::string origin = {}) const;
};

// The rumor key; see the header comment.
inline auto PrecedenceKey(uint64_t generation, uint64_t incarnation, MemberState state) {
  return std::make_tuple(generation, incarnation, static_cast<int>(state));
}

// True iff `update` is strictly newer than what `current` says.
bool Supersedes(const MemberUpdate& update, const Member& current);

// True iff `update` states the same (generation, incarnation, state) as `current`.
bool SameRumor(const MemberUpdate& update, const Member& current);

class MemberTable {
 public:
  using Map = std::map<std::string, Member, std::less<>>;

  // nullptr when unknown.
  const Member* Find(std::string_view id) const;
  Member* FindMutable(std::string_view id);

  // Inserts or replaces the entry of `member.id`.
  Member& Upsert(Member member);
  void Erase(std::string_view id);

  size_t size() const { return members_.size(); }
  // Members that are up (alive or suspect), self included when up.
  size_t CountUp() const;
  size_t CountIn(MemberState state) const;

  // Sorted by id, so iteration is the same on every platform.
  const Map& all() const { return members_; }
  Map::const_iterator begin() const { return members_.begin(); }
  Map::const_iterator end() const { return members_.end(); }

  // The up members sorted by id (what the ring is built from).
  std::vector<const Member*> UpMembers() const;

 private:
  Map members_;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_MEMBER_TABLE_H_

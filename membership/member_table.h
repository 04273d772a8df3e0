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

#include <array>
#include <boost/unordered/unordered_flat_map.hpp>
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

  MemberTable() = default;
  // Copies rebuild the indexes (they point into the table's own entries).
  MemberTable(const MemberTable& other);
  MemberTable& operator=(const MemberTable& other);
  // Moves keep them: map nodes stay where they are.
  MemberTable(MemberTable&&) noexcept = default;
  MemberTable& operator=(MemberTable&&) noexcept = default;

  // nullptr when unknown. A caller of FindMutable may change any field but
  // `id` and `state`; states change through SetState, which keeps the counts
  // and the up/down indexes. O(1) (hashed): Swim looks up every rumor.
  const Member* Find(std::string_view id) const;
  Member* FindMutable(std::string_view id);

  // Inserts or replaces the entry of `member.id`.
  Member& Upsert(Member member);
  void Erase(std::string_view id);
  // REQUIRES: `member` is an entry of this table.
  void SetState(Member* member, MemberState state);

  size_t size() const { return members_.size(); }
  // Members that are up (alive or suspect), self included when up. O(1):
  // kept per state, as Swim asks on every datagram it sends.
  size_t CountUp() const { return CountIn(MemberState::kAlive) + CountIn(MemberState::kSuspect); }
  size_t CountIn(MemberState state) const { return counts_[static_cast<size_t>(state)]; }

  // Sorted by id, so iteration is the same on every platform.
  const Map& all() const { return members_; }
  Map::const_iterator begin() const { return members_.begin(); }
  Map::const_iterator end() const { return members_.end(); }

  // The up members, and the others (dead or left), each sorted by id and
  // kept as the table changes: a caller picks among the up members, or
  // visits only the down ones, without walking every member.
  const std::vector<const Member*>& up() const { return up_; }
  const std::vector<const Member*>& down() const { return down_; }
  // The up members sorted by id (what the ring is built from); a copy of up().
  std::vector<const Member*> UpMembers() const { return up_; }

  // The ids of the entries inserted, replaced, erased or given a state since
  // the last ClearChanges(), oldest first (an id may repeat; read each one's
  // entry now), so a reader reports what changed without walking the table.
  // Past kMaxChanges the list is dropped and changes_overflowed() is true:
  // then compare the whole table. Every change goes through Upsert, Erase or
  // SetState (FindMutable's callers finish with SetState).
  static constexpr size_t kMaxChanges = 256;
  const std::vector<std::string>& changes() const { return changes_; }
  bool changes_overflowed() const { return changes_overflowed_; }
  void ClearChanges() {
    changes_.clear();
    changes_overflowed_ = false;
  }

 private:
  std::vector<const Member*>& IndexOf(const Member& m) { return m.up() ? up_ : down_; }
  static void IndexInsert(std::vector<const Member*>* index, const Member* m);
  static void IndexErase(std::vector<const Member*>* index, const Member* m);
  void Reindex();
  void NoteChange(std::string_view id);

  Map members_;
  std::vector<std::string> changes_;
  bool changes_overflowed_ = false;
  std::array<size_t, kMemberStateCount> counts_{};
  // Ids are short: kept in the hash table's own slots (small-string), so a
  // lookup compares without touching the member's node.
  struct IdHash {
    using is_transparent = void;
    size_t operator()(std::string_view id) const { return boost::hash<std::string_view>()(id); }
  };
  struct IdEq {
    using is_transparent = void;
    bool operator()(std::string_view a, std::string_view b) const { return a == b; }
  };
  boost::unordered_flat_map<std::string, Member*, IdHash, IdEq> by_id_;
  std::vector<const Member*> up_, down_;
};

}  // namespace tally::membership

#endif  // TALLY_MEMBERSHIP_MEMBER_TABLE_H_

#include "membership/member_table.h"

#include <algorithm>
#include <cassert>

namespace tally::membership {

MemberUpdate Member::ToUpdate(std::string origin) const {
  return MemberUpdate{id, address, generation, incarnation, state, std::move(origin)};
}

bool Supersedes(const MemberUpdate& update, const Member& current) {
  return PrecedenceKey(update.generation, update.incarnation, update.state) >
         PrecedenceKey(current.generation, current.incarnation, current.state);
}

bool SameRumor(const MemberUpdate& update, const Member& current) {
  return PrecedenceKey(update.generation, update.incarnation, update.state) ==
         PrecedenceKey(current.generation, current.incarnation, current.state);
}

MemberTable::MemberTable(const MemberTable& other)
    : members_(other.members_),
      changes_(other.changes_),
      changes_overflowed_(other.changes_overflowed_) {
  Reindex();
}

MemberTable& MemberTable::operator=(const MemberTable& other) {
  if (this != &other) {
    members_ = other.members_;
    changes_ = other.changes_;
    changes_overflowed_ = other.changes_overflowed_;
    Reindex();
  }
  return *this;
}

void MemberTable::NoteChange(std::string_view id) {
  if (changes_overflowed_) return;
  if (changes_.size() >= kMaxChanges) {
    changes_.clear();
    changes_overflowed_ = true;
    return;
  }
  changes_.emplace_back(id);
}

void MemberTable::Reindex() {
  counts_ = {};
  by_id_.clear();
  up_.clear();
  down_.clear();
  for (auto& [id, m] : members_) {
    ++counts_[static_cast<size_t>(m.state)];
    by_id_.emplace(id, &m);
    IndexOf(m).push_back(&m);  // the map iterates in id order
  }
}

void MemberTable::IndexInsert(std::vector<const Member*>* index, const Member* m) {
  auto it = std::lower_bound(index->begin(), index->end(), m->id,
                             [](const Member* a, const std::string& id) { return a->id < id; });
  index->insert(it, m);
}

void MemberTable::IndexErase(std::vector<const Member*>* index, const Member* m) {
  auto it = std::lower_bound(index->begin(), index->end(), m->id,
                             [](const Member* a, const std::string& id) { return a->id < id; });
  assert(it != index->end() && *it == m);
  index->erase(it);
}

const Member* MemberTable::Find(std::string_view id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

Member* MemberTable::FindMutable(std::string_view id) {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

Member& MemberTable::Upsert(Member member) {
  NoteChange(member.id);
  ++counts_[static_cast<size_t>(member.state)];
  auto it = members_.find(member.id);
  if (it == members_.end()) {
    std::string key = member.id;
    auto inserted = members_.emplace(std::move(key), std::move(member)).first;
    Member& m = inserted->second;
    by_id_.emplace(inserted->first, &m);
    IndexInsert(&IndexOf(m), &m);
    return m;
  }
  Member& m = it->second;
  --counts_[static_cast<size_t>(m.state)];
  const bool was_up = m.up();
  m = std::move(member);
  if (was_up != m.up()) {
    IndexErase(was_up ? &up_ : &down_, &m);
    IndexInsert(&IndexOf(m), &m);
  }
  return m;
}

void MemberTable::Erase(std::string_view id) {
  auto it = members_.find(id);
  if (it == members_.end()) return;
  NoteChange(id);
  --counts_[static_cast<size_t>(it->second.state)];
  IndexErase(&IndexOf(it->second), &it->second);
  by_id_.erase(it->first);
  members_.erase(it);
}

void MemberTable::SetState(Member* member, MemberState state) {
  NoteChange(member->id);
  --counts_[static_cast<size_t>(member->state)];
  ++counts_[static_cast<size_t>(state)];
  const bool was_up = member->up();
  member->state = state;
  if (was_up != member->up()) {
    IndexErase(was_up ? &up_ : &down_, member);
    IndexInsert(&IndexOf(*member), member);
  }
}

}  // namespace tally::membership

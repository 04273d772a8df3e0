#include "membership/member_table.h"

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

const Member* MemberTable::Find(std::string_view id) const {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second;
}

Member* MemberTable::FindMutable(std::string_view id) {
  auto it = members_.find(id);
  return it == members_.end() ? nullptr : &it->second;
}

Member& MemberTable::Upsert(Member member) {
  auto it = members_.find(member.id);
  if (it == members_.end()) {
    std::string key = member.id;
    return members_.emplace(std::move(key), std::move(member)).first->second;
  }
  it->second = std::move(member);
  return it->second;
}

void MemberTable::Erase(std::string_view id) {
  auto it = members_.find(id);
  if (it != members_.end()) members_.erase(it);
}

size_t MemberTable::CountUp() const {
  size_t n = 0;
  for (const auto& [id, m] : members_) n += m.up() ? 1 : 0;
  return n;
}

size_t MemberTable::CountIn(MemberState state) const {
  size_t n = 0;
  for (const auto& [id, m] : members_) n += m.state == state ? 1 : 0;
  return n;
}

std::vector<const Member*> MemberTable::UpMembers() const {
  std::vector<const Member*> up;
  for (const auto& [id, m] : members_) {
    if (m.up()) up.push_back(&m);
  }
  return up;
}

}  // namespace tally::membership

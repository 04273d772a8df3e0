// Node: the events drivers report (node_events.h). Each is found by comparing
// what the Node holds now with what it said last, and only where something
// changed: the member table's change list (MemberTable::changes), the clock
// estimators' version, a few flags and counters.
#include <cmath>
#include <string>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Ms;

// How often clock offsets are compared with the warning level at most: they
// move with every probe's sample, and a warning a second late loses nothing.
constexpr int64_t kClockCheckIntervalNs = 1'000'000'000;
// How often another process under our id is said at most.
constexpr int64_t kForeignSelfIntervalNs = 60'000'000'000;

}  // namespace

std::string_view NodeEventKindName(NodeEvent::Kind kind) {
  using Kind = NodeEvent::Kind;
  switch (kind) {
    case Kind::kMemberJoined:
      return "member_joined";
    case Kind::kMemberRestarted:
      return "member_restarted";
    case Kind::kMemberState:
      return "member_state";
    case Kind::kMemberForgotten:
      return "member_forgotten";
    case Kind::kOwningChanged:
      return "owning_changed";
    case Kind::kClockOffsetFar:
      return "clock_offset_far";
    case Kind::kClockOffsetBack:
      return "clock_offset_back";
    case Kind::kSuperseded:
      return "superseded";
    case Kind::kJoinUnanswered:
      return "join_unanswered";
    case Kind::kJoinAnswered:
      return "join_answered";
    case Kind::kKeyTableFull:
      return "key_table_full";
    case Kind::kKeyTableRoom:
      return "key_table_room";
    case Kind::kForeignSelf:
      return "foreign_self";
  }
  return "unknown";
}

void Node::NoteEvents(Instant now, Outbox* out) {
  if (!started_) return;
  NoteMemberEvents(out);
  NoteClockEvents(now, out);

  if (const auto& successor = swim_.superseded_by(); successor && !superseded_reported_) {
    superseded_reported_ = true;
    NodeEvent e{.kind = NodeEvent::Kind::kSuperseded};
    e.address = successor->address;
    e.generation = successor->generation;
    out->events.push_back(std::move(e));
  }
  if (const bool owning = MayOwn(); owning != owning_reported_) {
    owning_reported_ = owning;
    NodeEvent e{.kind = NodeEvent::Kind::kOwningChanged};
    e.owning = owning;
    e.text = NotOwningReason();
    out->events.push_back(std::move(e));
  }
  if (const bool unanswered = JoinUnanswered(now); unanswered != join_warning_reported_) {
    join_warning_reported_ = unanswered;
    NodeEvent e{.kind =
                    unanswered ? NodeEvent::Kind::kJoinUnanswered : NodeEvent::Kind::kJoinAnswered};
    if (unanswered) e.text = JoinWarning(now);
    out->events.push_back(std::move(e));
  }
  if (key_repairs_paused_ != key_table_full_reported_) {
    key_table_full_reported_ = key_repairs_paused_;
    NodeEvent e{.kind = key_repairs_paused_ ? NodeEvent::Kind::kKeyTableFull
                                            : NodeEvent::Kind::kKeyTableRoom};
    e.count = core_.store().size();
    out->events.push_back(std::move(e));
  }
  const uint64_t foreign = swim_.stats().foreign_self;
  if (foreign > foreign_self_reported_ &&
      (foreign_self_reported_ == 0 ||
       now.monotonic.count() - foreign_self_reported_ns_ >= kForeignSelfIntervalNs)) {
    foreign_self_reported_ = foreign;
    foreign_self_reported_ns_ = now.monotonic.count();
    NodeEvent e{.kind = NodeEvent::Kind::kForeignSelf};
    e.count = foreign;
    e.generation = config_.generation;
    out->events.push_back(std::move(e));
  }
}

void Node::NoteMemberEvents(Outbox* out) {
  const membership::MemberTable& table = swim_.members();
  if (table.changes().empty() && !table.changes_overflowed()) return;
  auto note = [&](const std::string& id) {
    const membership::Member* m = table.Find(id);
    auto it = members_reported_.find(id);
    if (m == nullptr) {
      if (it == members_reported_.end()) return;
      NodeEvent e{.kind = NodeEvent::Kind::kMemberForgotten};
      e.member_id = id;
      e.from_state = it->second.state;
      e.incarnation = it->second.incarnation;
      e.generation = it->second.generation;
      out->events.push_back(std::move(e));
      members_reported_.erase(it);
      return;
    }
    ReportedMember now{std::string(membership::StateName(m->state)), m->incarnation, m->generation,
                       m->address};
    NodeEvent e;
    e.member_id = id;
    e.address = m->address;
    e.state = now.state;
    e.incarnation = m->incarnation;
    e.generation = m->generation;
    if (it == members_reported_.end()) {
      // Self is no news; its later states (left) are.
      const bool self = id == config_.node_id;
      members_reported_.emplace(id, std::move(now));
      if (self) return;
      e.kind = NodeEvent::Kind::kMemberJoined;
    } else if (it->second == now) {
      return;
    } else {
      e.from_state = it->second.state;
      e.previous_generation = it->second.generation;
      if (it->second.generation != now.generation) {
        e.kind = NodeEvent::Kind::kMemberRestarted;
      } else if (it->second.state != now.state) {
        e.kind = NodeEvent::Kind::kMemberState;
      } else {
        it->second = std::move(now);  // a new incarnation alone is no news
        return;
      }
      it->second = std::move(now);
    }
    out->events.push_back(std::move(e));
  };
  if (table.changes_overflowed()) {
    for (const auto& [id, m] : table) note(id);
    std::vector<std::string> gone;
    for (const auto& [id, r] : members_reported_) {
      if (table.Find(id) == nullptr) gone.push_back(id);
    }
    for (const std::string& id : gone) note(id);
  } else {
    for (const std::string& id : table.changes()) note(id);
  }
  swim_.ClearMemberChanges();
}

void Node::NoteClockEvents(Instant now, Outbox* out) {
  if (swim_.clock_version() == clock_reported_version_) return;
  if (clock_checked_ns_ != INT64_MIN &&
      now.monotonic.count() - clock_checked_ns_ < kClockCheckIntervalNs) {
    return;  // looked less than a second ago; the version stays unseen until the next look
  }
  clock_reported_version_ = swim_.clock_version();
  clock_checked_ns_ = now.monotonic.count();
  const double warn_ms = static_cast<double>(config_.warn_clock_offset_ms);
  for (const auto& [id, estimator] : swim_.clock_estimators()) {
    if (id == config_.node_id) continue;
    const std::optional<double> offset = swim_.ClockOffsetMs(id);
    if (!offset) continue;
    const bool far = std::abs(*offset) > warn_ms;
    auto it = clock_far_.find(id);
    const bool was_far = it != clock_far_.end();
    if (far == was_far) continue;
    if (far) {
      clock_far_.emplace(id);
    } else {
      clock_far_.erase(it);
    }
    NodeEvent e{.kind = far ? NodeEvent::Kind::kClockOffsetFar : NodeEvent::Kind::kClockOffsetBack};
    e.member_id = id;
    e.clock_offset_ms = *offset;
    out->events.push_back(std::move(e));
  }
  // A member whose estimator went (a restart, or forgotten) starts afresh.
  std::erase_if(clock_far_,
                [&](const std::string& id) { return !swim_.clock_estimators().contains(id); });
}

}  // namespace tally::core

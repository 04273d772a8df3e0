// NodeEvent: what the Node did that an operator hears about (a log line, the
// status page's membership events, a process that has to stop), said once per
// change in the Outbox of the call that made it. Drivers report events; they
// do not walk the member table and compare it with what they saw before, so
// the daemon, the simulator and the tests all see the same changes.
#ifndef TALLY_DAEMON_CORE_NODE_EVENTS_H_
#define TALLY_DAEMON_CORE_NODE_EVENTS_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace tally::core {

struct NodeEvent {
  enum class Kind : uint8_t {
    // Members (never self): `member_id`, `address`, `state`, `incarnation`,
    // `generation` as the table holds them now.
    kMemberJoined,     // a member we did not know
    kMemberRestarted,  // a new process (generation) of a known member;
                       // `previous_generation` and `from_state` were the old one's
    kMemberState,      // its state changed (`from_state` -> `state`)
    kMemberForgotten,  // dropped from the table (dead or left long enough);
                       // `from_state` its last state, `state` empty
    // This node may own keys again (`owning`), or may not and `text` says why
    // (warming up, clock offset, superseded). Also said at the first call
    // when the node starts not owning.
    kOwningChanged,
    // A member's clock offset (`clock_offset_ms`, its clock minus ours) went
    // past NodeConfig::warn_clock_offset_ms, or back under it.
    kClockOffsetFar,
    kClockOffsetBack,
    // A newer process holds our node id, at `address` with `generation`
    // (Swim::superseded_by): the driver stops this process.
    kSuperseded,
    // No seed answered within join_warning_ms (`text`: which, how long); the
    // node serves alone and keeps trying. kJoinAnswered: a seed answered since.
    kJoinUnanswered,
    kJoinAnswered,
    // The key table is full (`count` live keys): new keys are refused and key
    // repairs paused; kKeyTableRoom: room again.
    kKeyTableFull,
    kKeyTableRoom,
    // Messages or rumors of another process under our node id (`count` so
    // far, SwimStats::foreign_self): said when the count grew, at most once a
    // minute.
    kForeignSelf,
  };

  Kind kind = Kind::kMemberJoined;
  std::string member_id;
  std::string address;
  std::string state;
  std::string from_state;
  uint64_t incarnation = 0;
  uint64_t generation = 0;
  uint64_t previous_generation = 0;
  double clock_offset_ms = 0;
  bool owning = true;
  uint64_t count = 0;
  std::string text;
};

// "member_joined", "owning_changed", ...: for logs, traces and tests.
std::string_view NodeEventKindName(NodeEvent::Kind kind);

}  // namespace tally::core

#endif  // TALLY_DAEMON_CORE_NODE_EVENTS_H_

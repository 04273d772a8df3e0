// HybridClock: a hybrid logical clock (Kulkarni et al., "Logical Physical
// Clocks", 2014) for ordering writes made on different members, such as the
// runtime limit overrides (crdt/limit_overrides.h).
//
// A timestamp is (wall_ms, logical): wall_ms follows the largest physical
// time seen (local or received), logical orders events within one wall_ms.
// Every timestamp a clock issues is larger than every timestamp it issued or
// received before, so a write made after seeing another write orders after
// it, whatever the members' clock offsets; concurrent writes order by wall
// time first (a member whose clock is ahead wins them, which is why a
// received timestamp too far in the future is refused, not adopted).
//
// Pure: the physical time is passed in (injected, never read here).
// Not thread-safe; one clock per node, used by the node's owner.
#ifndef TALLY_CRDT_HYBRID_CLOCK_H_
#define TALLY_CRDT_HYBRID_CLOCK_H_

#include <compare>
#include <cstdint>

namespace tally::crdt {

struct HlcTimestamp {
  int64_t wall_ms = 0;
  uint32_t logical = 0;
  friend auto operator<=>(const HlcTimestamp&, const HlcTimestamp&) = default;
};

class HybridClock {
 public:
  // A received timestamp more than this far ahead of the local physical
  // clock is refused by Observe (a peer's clock gone wrong, or a forgery,
  // would otherwise win every later write).
  static constexpr int64_t kMaxAheadMs = 30'000;

  // A timestamp for a local event at physical time `now_ms`.
  HlcTimestamp Now(int64_t now_ms) {
    if (now_ms > last_.wall_ms) {
      last_ = {now_ms, 0};
    } else {
      Tick();
    }
    return last_;
  }

  // Takes in a timestamp received at physical time `now_ms`. False (and the
  // clock unchanged) if `received` is more than kMaxAheadMs ahead of
  // `now_ms`; the caller then drops what carried it.
  bool Observe(HlcTimestamp received, int64_t now_ms) {
    if (received.wall_ms > now_ms + kMaxAheadMs) return false;
    if (received > last_) last_ = received;
    return true;
  }

  // Takes in a timestamp this node issued or accepted before a restart (read
  // back from a snapshot), without Observe's bound: after a restore every
  // new timestamp must order after the restored ones even when the wall
  // clock went back meanwhile, or a new write would lose to an old one. The
  // caller bounds what it restores (persist/snapshot.h checks each stamp
  // against the snapshot's write time).
  void Restore(HlcTimestamp persisted) {
    if (persisted > last_) last_ = persisted;
  }

  HlcTimestamp last() const { return last_; }

 private:
  void Tick() {
    if (last_.logical == UINT32_MAX) {
      last_ = {last_.wall_ms + 1, 0};  // 4G events in one ms: borrow the next ms
    } else {
      ++last_.logical;
    }
  }

  HlcTimestamp last_;
};

}  // namespace tally::crdt

#endif  // TALLY_CRDT_HYBRID_CLOCK_H_

// Runtime limit overrides: writing one here, sending the map to members, and
// taking in what members send (crdt/limit_overrides.h; docs/DESIGN.md,
// "Runtime limit overrides").
#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {

namespace {

using node_internal::Kind;

wire::LimitOverrideValue OverrideToWire(const crdt::OverrideEntry& e) {
  wire::LimitOverrideValue w;
  w.kind = static_cast<uint8_t>(e.selector.kind);
  w.domain = e.selector.domain;
  w.entries = e.selector.entries;
  w.user = e.selector.user;
  w.endpoint = e.selector.endpoint;
  w.selector_window_ms = e.selector.window_ms;
  w.removed = e.value.removed;
  w.limit = e.value.limit;
  w.window_ms = e.value.window_ms;
  w.stamp_wall_ms = e.stamp.wall_ms;
  w.stamp_logical = e.stamp.logical;
  w.writer = e.writer;
  w.rule = e.selector.rule;
  return w;
}

crdt::OverrideEntry OverrideFromWire(const wire::LimitOverrideValue& w) {
  crdt::OverrideEntry e;
  e.selector.kind = static_cast<crdt::Selector::Kind>(w.kind);
  e.selector.domain = w.domain;
  e.selector.entries = w.entries;
  e.selector.user = w.user;
  e.selector.endpoint = w.endpoint;
  e.selector.window_ms = w.selector_window_ms;
  e.value.removed = w.removed;
  e.value.limit = w.limit;
  e.value.window_ms = w.window_ms;
  e.stamp = {w.stamp_wall_ms, w.stamp_logical};
  e.writer = w.writer;
  e.selector.rule = w.rule;
  return e;
}

}  // namespace

crdt::OverrideRestoreCounts Node::RestoreOverrides(const persist::DecodedSnapshot& snapshot) {
  return crdt::RestoreOverrides(snapshot.overrides, snapshot.override_clock, &overrides_,
                                &override_clock_);
}

crdt::LimitOverrides::MergeResult Node::WriteOverride(const crdt::Selector& selector,
                                                      const crdt::OverrideValue& value, Instant now,
                                                      Outbox* out) {
  crdt::OverrideEntry entry;
  entry.selector = selector;
  entry.value = value;
  entry.writer = override_writer_;
  // Validate before stamping: a refused write must not move the clock.
  if (!crdt::Validate(entry).empty()) return crdt::LimitOverrides::MergeResult::kInvalid;
  entry.stamp = override_clock_.Now(now.wall.count());
  const crdt::LimitOverrides::MergeResult result = overrides_.Write(entry);
  if (result != crdt::LimitOverrides::MergeResult::kApplied) return result;
  ++counters_.overrides_written;
  for (size_t i = 0; i < view_.size(); ++i) {
    if (i != self_index_) SendOverrides(view_[i].address, {entry}, now, out);
  }
  return result;
}

void Node::SendOverrides(const std::string& address,
                         const std::vector<crdt::OverrideEntry>& entries, Instant now,
                         Outbox* out) {
  constexpr size_t kBudgetBytes = node_internal::kPushBudgetBytes;  // a stream push
  size_t i = 0;
  while (i < entries.size()) {
    wire::NodeMessageValue msg;
    msg.kind = Kind::kOverrides;
    size_t bytes = 128;
    for (; i < entries.size(); ++i) {
      wire::LimitOverrideValue w = OverrideToWire(entries[i]);
      const size_t cost = wire::EncodedOverrideBound(w);
      if (!msg.overrides.empty() &&
          (bytes + cost > kBudgetBytes || msg.overrides.size() >= wire::kMaxOverridesPerMessage)) {
        break;
      }
      bytes += cost;
      msg.overrides.push_back(std::move(w));
    }
    counters_.overrides_sent += msg.overrides.size();
    SendNode(address, msg, true, now, out);
  }
}

void Node::HandleOverrides(const PeerSender& sender,
                           const std::vector<wire::LimitOverrideValue>& in, Instant now) {
  // Only members write the map: an override from anyone else is refused
  // whole (with a keyring, only key holders reach this at all).
  if (!MemberIndex(sender).has_value()) {
    counters_.overrides_refused += in.size();
    return;
  }
  for (const wire::LimitOverrideValue& w : in) {
    const crdt::OverrideEntry entry = OverrideFromWire(w);
    if (!crdt::Validate(entry).empty() || !override_clock_.Observe(entry.stamp, now.wall.count())) {
      ++counters_.overrides_refused;
      continue;
    }
    switch (overrides_.Merge(entry)) {
      case crdt::LimitOverrides::MergeResult::kApplied:
        ++counters_.overrides_applied;
        break;
      case crdt::LimitOverrides::MergeResult::kStale:
        ++counters_.overrides_stale;
        break;
      case crdt::LimitOverrides::MergeResult::kInvalid:
      case crdt::LimitOverrides::MergeResult::kFull:
        ++counters_.overrides_refused;
        break;
    }
  }
}

}  // namespace tally::core

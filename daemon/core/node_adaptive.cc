// Load-adaptive limits in a cluster (docs/DESIGN.md, "Load-adaptive limits"):
// each rule's controller runs on one member, its owner by rendezvous over the
// view; every member sums the reports it takes and sends the sums to the
// owner; the owner publishes a changed limit through the override map, so
// every member applies the same one.
#include <algorithm>

#include "daemon/core/node.h"
#include "daemon/core/node_internal.h"

namespace tally::core {
namespace {

using node_internal::Kind;

// The ring position of a rule: window 0 is no check's window, so no key a
// check counts under.
crdt::KeyId AdaptiveRuleKey(std::string_view domain, std::string_view rule) {
  return crdt::HashKey(domain, rule, 0);
}

crdt::Selector AdaptiveSelector(const AdaptiveRuleConfig& r) {
  crdt::Selector s;
  s.kind = crdt::Selector::Kind::kAdaptive;
  s.domain = r.domain;
  s.rule = r.rule;
  return s;
}

}  // namespace

void Node::SetAdaptiveRules(std::vector<AdaptiveRuleConfig> rules) {
  adaptive_.SetRules(std::move(rules));
}

AdaptiveHost::ReportResult Node::ReportSignal(std::string_view domain, std::string_view rule,
                                              double value, uint64_t count) {
  return adaptive_.Report(domain, rule, value, count);
}

uint32_t Node::AdaptiveOwnerIndex(size_t i) const {
  if (view_.empty() || self_index_ >= view_.size()) return self_index_;
  const AdaptiveRuleConfig& r = adaptive_.rule(i);
  std::vector<uint32_t> ranking;
  ring_.PreferenceList(AdaptiveRuleKey(r.domain, r.rule), view_.size(), &ranking);
  // The first member that is up, as the first member of a key's ranking a
  // side reaches decides its checks: each side of a partition has one owner.
  for (uint32_t m : ranking) {
    if (m == self_index_ ? MayOwn() : SwimAlive(view_[m].id)) return m;
  }
  return self_index_;  // nobody else is up, and we may not own: still ours to step
}

std::string Node::AdaptiveOwner(size_t i, Instant) const {
  const uint32_t m = AdaptiveOwnerIndex(i);
  return m < view_.size() ? view_[m].id : config_.node_id;
}

void Node::AdaptiveRound(Instant now, Outbox* out) {
  const uint64_t now_ms = static_cast<uint64_t>(now.monotonic.count() / 1'000'000);
  // Sums for other owners, by owner address, sent once per round.
  boost::unordered_flat_map<std::string, std::vector<wire::AdaptiveReportValue>> to_owner;
  for (size_t i = 0; i < adaptive_.rule_count(); ++i) {
    const uint32_t owner = AdaptiveOwnerIndex(i);
    const AdaptiveRuleConfig& r = adaptive_.rule(i);
    if (owner != self_index_ && owner < view_.size()) {
      const AdaptiveSum sum = adaptive_.TakePending(i);
      if (sum.count > 0) {
        to_owner[view_[owner].address].push_back({r.domain, r.rule, sum.sum, sum.count, sum.max});
      }
      continue;
    }
    const std::string key = crdt::Selector::AdaptiveKey(r.domain, r.rule);
    const crdt::OverrideEntry* entry = overrides_.FindEntry(key);
    std::optional<uint32_t> published;
    bool by_other = false;
    if (entry != nullptr && !entry->value.removed) {
      published = static_cast<uint32_t>(std::min<uint64_t>(entry->value.limit, UINT32_MAX));
      by_other = entry->writer != override_writer_;
    }
    const AdaptiveHost::OwnedStep step = adaptive_.StepOwned(i, published, by_other, now_ms);
    if (!step.publish.has_value()) continue;
    crdt::OverrideValue value;
    value.limit = *step.publish;
    value.window_ms = r.config.window_ms;
    if (WriteOverride(AdaptiveSelector(r), value, now, out) ==
        crdt::LimitOverrides::MergeResult::kApplied) {
      ++counters_.adaptive_limits_written;
    }
  }
  // Sorted: the trace's order must not follow the map's.
  std::vector<std::string> owners;
  owners.reserve(to_owner.size());
  for (const auto& [address, sums] : to_owner) owners.push_back(address);
  std::sort(owners.begin(), owners.end());
  for (const std::string& address : owners) {
    std::vector<wire::AdaptiveReportValue>& sums = to_owner[address];
    size_t i = 0;
    while (i < sums.size()) {
      wire::NodeMessageValue msg;
      msg.kind = Kind::kAdaptiveReports;
      size_t bytes = 128;
      for (; i < sums.size(); ++i) {
        const size_t cost = wire::EncodedAdaptiveReportBound(sums[i]);
        if (!msg.adaptive_reports.empty() && bytes + cost > config_.max_packet_bytes) break;
        bytes += cost;
        msg.adaptive_reports.push_back(std::move(sums[i]));
      }
      counters_.adaptive_sums_sent += msg.adaptive_reports.size();
      // A datagram: a lost sum costs one flush interval's evidence, never a
      // wrong limit (the owner holds its limit without reports).
      SendNode(address, msg, false, now, out);
    }
  }
}

void Node::HandleAdaptiveReports(const PeerSender& sender,
                                 const std::vector<wire::AdaptiveReportValue>& in) {
  // Only members' sums move a limit (with a keyring, only key holders reach
  // this at all).
  if (!MemberIndex(sender).has_value()) {
    counters_.adaptive_sums_refused += in.size();
    return;
  }
  for (const wire::AdaptiveReportValue& r : in) {
    // A sum for a rule we do not own is taken too: the view that made the
    // sender pick us may be newer than ours, and the next round sends it on.
    if (adaptive_.Absorb(r.domain, r.rule, AdaptiveSum{r.sum, r.count, r.max}) ==
        AdaptiveHost::ReportResult::kAccepted) {
      ++counters_.adaptive_sums_received;
    } else {
      ++counters_.adaptive_sums_refused;
    }
  }
}

}  // namespace tally::core

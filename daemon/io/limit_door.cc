#include "daemon/io/limit_door.h"

#include <netinet/in.h>
#include <spdlog/spdlog.h>

#include <cstring>

#include "daemon/io/snapshot_file.h"

namespace tally::io {
namespace {

// FNV-1a of the node id: a single node's writer id (only a tie-break
// between equal stamps, which one writer never makes).
uint64_t WriterOf(const std::string& node_id) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : node_id) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001b3ull;
  }
  return h;
}

}  // namespace

LocalOverrides::LocalOverrides(std::string node_id) : writer_(WriterOf(node_id)) {}

crdt::OverrideRestoreCounts LocalOverrides::Restore(const persist::DecodedSnapshot& snapshot) {
  std::lock_guard<std::mutex> lock(mu_);
  const crdt::OverrideRestoreCounts counts =
      crdt::RestoreOverrides(snapshot.overrides, snapshot.override_clock, &overrides_, &clock_);
  restored_ += counts.applied + counts.stale;
  restore_refused_ += counts.refused;
  PublishLocked();
  return counts;
}

void LocalOverrides::EnablePersistence(std::filesystem::path path, persist::SnapshotHeader header) {
  std::lock_guard<std::mutex> file_lock(file_mu_);
  path_ = std::move(path);
  header_ = std::move(header);
}

bool LocalOverrides::Persist(int64_t now_wall_ms, std::string* error) {
  std::lock_guard<std::mutex> file_lock(file_mu_);
  if (path_.empty()) return true;
  persist::SnapshotEncoder encoder;
  uint64_t version = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    version = overrides_.version();
    if (persisted_any_ && version == persisted_version_) return true;
    encoder.SetOverrides(overrides_.Entries(), clock_.last());
  }
  header_.written_wall_ms = now_wall_ms;
  const persist::EncodedSnapshot sealed = encoder.Finish(header_);
  if (!WriteSnapshotFile(path_, sealed, error)) {
    save_errors_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  persisted_version_ = version;
  persisted_any_ = true;
  saves_.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void LocalOverrides::PublishLocked() {
  live_explicit_.store(overrides_.live_explicit(), std::memory_order_release);
  if (overrides_.version() != published_version_) {
    // The rules doors read descriptor overrides from this table, as a
    // cluster member's read the driver's (ClusterDriver::published_overrides).
    published_version_ = overrides_.version();
    auto table = std::make_shared<const crdt::DescriptorOverrideTable>(overrides_);
    published_.Publish(table->empty() ? nullptr : std::move(table));
  }
}

crdt::LimitOverrides::MergeResult LocalOverrides::Write(const crdt::Selector& selector,
                                                        const crdt::OverrideValue& value,
                                                        int64_t now_wall_ms, bool persist) {
  crdt::OverrideEntry entry;
  entry.selector = selector;
  entry.value = value;
  entry.writer = writer_;
  if (!crdt::Validate(entry).empty()) return crdt::LimitOverrides::MergeResult::kInvalid;
  crdt::LimitOverrides::MergeResult result;
  {
    std::lock_guard<std::mutex> lock(mu_);
    entry.stamp = clock_.Now(now_wall_ms);
    result = overrides_.Write(entry);
    if (result == crdt::LimitOverrides::MergeResult::kApplied) ++written_;
    PublishLocked();
  }
  if (persist && result == crdt::LimitOverrides::MergeResult::kApplied) {
    // On disk before the write is answered. A failure leaves the write in
    // force (the map is the truth while we run) and is retried at the next
    // change and at shutdown.
    std::string error;
    if (!Persist(now_wall_ms, &error)) {
      spdlog::error(
          "limit override applied but not saved (lost at a restart unless a later "
          "save succeeds): {}",
          error);
    }
  }
  return result;
}

bool LocalOverrides::Apply(std::span<const CheckRequestRef> checks,
                           std::vector<CheckRequestRef>* out) {
  if (live_explicit_.load(std::memory_order_acquire) == 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  bool any = false;
  for (size_t i = 0; i < checks.size(); ++i) {
    const CheckRequestRef& check = checks[i];
    const std::optional<crdt::OverrideValue> o = overrides_.FindKey(
        crdt::Selector::ExplicitKey(check.user_id, check.endpoint, check.window_ms));
    if (!o) continue;
    if (!any) {
      out->assign(checks.begin(), checks.end());
      any = true;
    }
    (*out)[i].limit = o->limit;
    used_.fetch_add(1, std::memory_order_relaxed);
  }
  return any;
}

void LocalOverrides::AppendCounters(std::vector<std::pair<std::string, uint64_t>>* out) const {
  std::lock_guard<std::mutex> lock(mu_);
  // A single node has no peers: sent, applied, stale and refused stay 0.
  out->emplace_back("overrides_live", overrides_.live());
  out->emplace_back("overrides_held", overrides_.size());
  out->emplace_back("overrides_written", written_);
  out->emplace_back("overrides_sent", 0);
  out->emplace_back("overrides_applied", 0);
  out->emplace_back("overrides_stale", 0);
  out->emplace_back("overrides_refused", 0);
  out->emplace_back("overrides_used", used_.load(std::memory_order_relaxed));
  // With --state-dir: merged from the file at start, refused by the map,
  // and the file's rewrites.
  out->emplace_back("overrides_restored", restored_);
  out->emplace_back("overrides_restore_refused", restore_refused_);
  out->emplace_back("overrides_saves", saves_.load(std::memory_order_relaxed));
  out->emplace_back("overrides_save_errors", save_errors_.load(std::memory_order_relaxed));
}

crdt::Selector SelectorFromWire(const wire::LimitSelectorValue& w) {
  crdt::Selector s;
  if (w.is_key) {
    s.kind = crdt::Selector::Kind::kExplicit;
    s.user = w.user_id;
    s.endpoint = w.endpoint;
    s.window_ms = w.window_ms;
  } else {
    s.kind = crdt::Selector::Kind::kDescriptor;
    s.domain = w.domain;
    s.entries = w.entries;
  }
  return s;
}

wire::LimitSelectorValue SelectorToWire(const crdt::Selector& s) {
  wire::LimitSelectorValue w;
  w.is_key = s.kind == crdt::Selector::Kind::kExplicit;
  if (w.is_key) {
    w.user_id = s.user;
    w.endpoint = s.endpoint;
    w.window_ms = s.window_ms;
  } else {
    w.domain = s.domain;
    w.entries = s.entries;
  }
  return w;
}

bool WriteValueFromWire(const wire::LimitWriteQuery& query, crdt::OverrideValue* out,
                        std::string* error) {
  *out = crdt::OverrideValue{};
  if (query.remove) {
    out->removed = true;
    return true;
  }
  out->limit = query.limit;
  if (query.selector.is_key) return true;  // the key's window is the selector's
  constexpr uint64_t kSecondMs = 1000, kDayMs = 86'400'000;
  // RateLimitUnit's numbers, as rules::UnitWindowMs reads them.
  switch (query.unit) {
    case 0:
      // The rules path enforces windows up to tally's longest: a longer
      // override would be stored, spread and then refuse every check.
      if (query.window_ms < kMinWindowMs || query.window_ms > kMaxWindowMs) {
        *error = "window_ms " + std::to_string(query.window_ms) +
                 " is outside tally's windows (1 ms to 31 days)";
        return false;
      }
      out->window_ms = query.window_ms;
      return true;
    case 1:
      out->window_ms = kSecondMs;
      return true;
    case 2:
      out->window_ms = 60 * kSecondMs;
      return true;
    case 3:
      out->window_ms = 3600 * kSecondMs;
      return true;
    case 4:
      out->window_ms = kDayMs;
      return true;
    case 5:
      out->window_ms = 30 * kDayMs;  // envoyproxy/ratelimit's month, as the rules
      return true;
    case 7:
      out->window_ms = 7 * kDayMs;
      return true;
    default:
      *error = "unit " + std::to_string(query.unit) +
               " has no window tally enforces: use second, minute, hour, day, week or month";
      return false;
  }
}

wire::LimitOverrideReport OverrideReportOf(const crdt::OverrideEntry& entry) {
  wire::LimitOverrideReport r;
  r.selector = SelectorToWire(entry.selector);
  r.removed = entry.value.removed;
  r.limit = entry.value.limit;
  r.window_ms = entry.selector.kind == crdt::Selector::Kind::kExplicit ? entry.selector.window_ms
                                                                       : entry.value.window_ms;
  if (entry.value.removed) r.window_ms = 0;
  r.updated_ms = entry.stamp.wall_ms;
  return r;
}

bool IsLoopbackSource(const sockaddr_storage& addr, socklen_t len) {
  if (addr.ss_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in{};
    std::memcpy(&in, &addr, sizeof(in));
    return (ntohl(in.sin_addr.s_addr) >> 24) == 127;
  }
  if (addr.ss_family == AF_INET6 && len >= static_cast<socklen_t>(sizeof(sockaddr_in6))) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, &addr, sizeof(in6));
    if (IN6_IS_ADDR_LOOPBACK(&in6.sin6_addr)) return true;
    return IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr) && in6.sin6_addr.s6_addr[12] == 127;
  }
  return false;
}

}  // namespace tally::io

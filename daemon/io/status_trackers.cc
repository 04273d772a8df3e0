#include "daemon/io/status_trackers.h"

#include <algorithm>
#include <random>
#include <utility>

namespace tally::io {

// ---------------------------------------------------------------- RateHistory

void RateHistory::Record(int64_t wall_ms, int64_t monotonic_ms, uint64_t checks_total,
                         uint64_t denied_total) {
  std::lock_guard<std::mutex> lock(mu_);
  if (have_baseline_ && monotonic_ms > last_monotonic_ms_ && checks_total >= last_checks_ &&
      denied_total >= last_denied_) {
    samples_.push_back(RateSample{wall_ms, monotonic_ms - last_monotonic_ms_,
                                  checks_total - last_checks_, denied_total - last_denied_});
    while (samples_.size() > capacity_) samples_.pop_front();
  }
  if (!have_baseline_ || monotonic_ms > last_monotonic_ms_) {
    have_baseline_ = true;
    last_monotonic_ms_ = monotonic_ms;
    last_checks_ = checks_total;
    last_denied_ = denied_total;
  }
}

std::vector<RateSample> RateHistory::Samples() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {samples_.begin(), samples_.end()};
}

// ---------------------------------------------------------------- BusiestKeys

BusiestKeys::BusiestKeys(uint32_t sample_period, size_t capacity,
                         std::chrono::milliseconds generation)
    : sample_period_(std::max<uint32_t>(sample_period, 1)),
      capacity_(std::max<size_t>(capacity, 1)),
      generation_(std::max<std::chrono::milliseconds>(generation, std::chrono::milliseconds(1))) {}

uint32_t BusiestKeys::NextGap() const {
  if (sample_period_ == 1) return 1;
  // Uniform in [1, 2 * period - 1]: mean `period`, never a fixed stride.
  thread_local std::minstd_rand rng(std::random_device{}());
  return 1 + static_cast<uint32_t>(rng() % (2 * sample_period_ - 1));
}

void BusiestKeys::RotateLocked(std::chrono::steady_clock::time_point now) {
  if (!started_) {
    started_ = true;
    current_.start = now;
    return;
  }
  if (now - current_.start < generation_) return;
  // Two periods or more without a sample: the older counts are stale too.
  have_previous_ = now - current_.start < 2 * generation_;
  previous_ = std::move(current_);
  current_ = Generation{};
  current_.start = now;
  if (!have_previous_) previous_ = Generation{};
}

void BusiestKeys::Sample(std::span<const CheckRequestRef> checks,
                         std::chrono::steady_clock::time_point now) {
  auto cut = [](std::string_view s) { return s.substr(0, kMaxShownKeyBytes); };
  std::lock_guard<std::mutex> lock(mu_);
  RotateLocked(now);
  std::vector<Entry>& entries = current_.entries;
  for (const CheckRequestRef& c : checks) {
    const std::string_view user = cut(c.user_id), endpoint = cut(c.endpoint);
    auto it = std::find_if(entries.begin(), entries.end(), [&](const Entry& e) {
      return e.window_ms == c.window_ms && e.user_id == user && e.endpoint == endpoint;
    });
    if (it == entries.end()) {
      if (entries.size() < capacity_) {
        it = entries.insert(entries.end(), Entry{});
      } else {
        // Space-Saving: the lightest entry makes room and lends its count.
        it = std::min_element(entries.begin(), entries.end(),
                              [](const Entry& a, const Entry& b) { return a.checks < b.checks; });
      }
      it->user_id.assign(user);
      it->endpoint.assign(endpoint);
      it->window_ms = c.window_ms;
    }
    it->limit = c.limit;
    it->checks += 1;
    it->hits += c.hits;
  }
}

std::vector<KeyRate> BusiestKeys::Top(size_t n, std::chrono::steady_clock::time_point now) const {
  std::vector<Entry> merged;
  std::chrono::steady_clock::time_point since;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_) return {};
    // Counts older than two periods are stale: nothing was sampled since.
    if (now - current_.start >= 2 * generation_) return {};
    since = have_previous_ ? previous_.start : current_.start;
    merged = current_.entries;
    if (have_previous_ && now - current_.start < generation_) {
      for (const Entry& old : previous_.entries) {
        auto it = std::find_if(merged.begin(), merged.end(), [&](const Entry& e) {
          return e.window_ms == old.window_ms && e.user_id == old.user_id &&
                 e.endpoint == old.endpoint;
        });
        if (it == merged.end()) {
          merged.push_back(old);
        } else {
          it->checks += old.checks;
          it->hits += old.hits;
        }
      }
    } else {
      since = current_.start;
    }
  }
  std::sort(merged.begin(), merged.end(),
            [](const Entry& a, const Entry& b) { return a.checks > b.checks; });
  if (merged.size() > n) merged.resize(n);
  const double seconds = std::max(1.0, std::chrono::duration<double>(now - since).count());
  const double weight = static_cast<double>(sample_period_);
  std::vector<KeyRate> out;
  out.reserve(merged.size());
  for (Entry& e : merged) {
    out.push_back(KeyRate{std::move(e.user_id), std::move(e.endpoint), e.window_ms, e.limit,
                          static_cast<double>(e.checks) * weight / seconds,
                          static_cast<double>(e.hits) * weight / seconds});
  }
  return out;
}

// ---------------------------------------------------------------- MembershipEventLog

void MembershipEventLog::Record(MembershipEvent event) {
  if (event.wall_ms == 0) {
    event.wall_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch())
                        .count();
  }
  std::lock_guard<std::mutex> lock(mu_);
  events_.push_front(std::move(event));
  while (events_.size() > capacity_) events_.pop_back();
  ++total_;
}

std::vector<MembershipEvent> MembershipEventLog::Recent() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {events_.begin(), events_.end()};
}

uint64_t MembershipEventLog::total() const {
  std::lock_guard<std::mutex> lock(mu_);
  return total_;
}

}  // namespace tally::io

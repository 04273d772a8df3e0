#include "sim/oracles.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "crdt/window_counter.h"
#include "daemon/core/limiter_core.h"
#include "membership/timing.h"

namespace tally::sim {
namespace {

std::string Fmt(const char* format, double a) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), format, a);
  return buf;
}

std::string Seconds(TrueNs ns) { return Fmt("%.2f s", static_cast<double>(ns) / 1e9); }

std::vector<std::vector<uint32_t>> DecisionsByRequest(const RunRecord& run) {
  std::vector<std::vector<uint32_t>> by(run.requests.size());
  for (uint32_t i = 0; i < run.decisions.size(); ++i) {
    const uint64_t id = run.decisions[i].request_id;
    if (id >= 1 && id <= by.size()) by[id - 1].push_back(i);
  }
  return by;
}

// The first heal at or after `t`; -1 if none.
TrueNs HealAfter(const RunRecord& run, TrueNs t) {
  for (const FaultLogEntry& f : run.faults) {
    if (f.kind == FaultAction::Kind::kHeal && f.at_ns >= t) return f.at_ns;
  }
  return -1;
}

}  // namespace

void ExpectedFirstSuspicion(size_t n, double* mean_periods, double* sd_periods) {
  *mean_periods = 1 + membership::timing::ExpectedFirstProbeRoundRobin(n);
  *sd_periods = 0;
  if (n < 2) return;
  // S(t) = G^(t)^m, G^ linear between G(j) and G(j+1); E[D^2] = 2 int t S(t) dt.
  const size_t m = n - 1;
  const double md = static_cast<double>(m);
  constexpr int kSteps = 64;
  double first = 0, second = 0;
  double g0 = membership::timing::RoundRobinNoProbeProbability(n, 0);
  for (size_t j = 0; j + 1 < 2 * m; ++j) {
    const double g1 = membership::timing::RoundRobinNoProbeProbability(n, j + 1);
    for (int s = 0; s < kSteps; ++s) {
      const double u = (s + 0.5) / kSteps;
      const double t = static_cast<double>(j) + u;
      const double surv = std::pow(g0 + (g1 - g0) * u, md);
      first += surv / kSteps;
      second += 2 * t * surv / kSteps;
    }
    g0 = g1;
    if (std::pow(g0, md) < 1e-15) break;
  }
  *sd_periods = std::sqrt(std::max(0.0, second - first * first));
}

PooledSuspicion JudgePooledFirstSuspicion(const std::vector<double>& ratios,
                                          const std::vector<double>& cvs, size_t min_samples) {
  PooledSuspicion p;
  p.samples = ratios.size();
  if (ratios.empty() || cvs.size() != ratios.size()) return p;
  double sum = 0, variance = 0;
  for (size_t i = 0; i < ratios.size(); ++i) {
    sum += ratios[i];
    variance += cvs[i] * cvs[i];
  }
  const double k = static_cast<double>(ratios.size());
  p.mean_ratio = sum / k;
  // Three standard errors, widened for the skew of the mean of k draws from a
  // distribution with an exponential's tail (skewness 2 / sqrt(k)) by the
  // Cornish-Fisher term (z^2 - 1) / 6 x skewness at z = 3.
  const double z = 3 + (8.0 / 6.0) * 2 / std::sqrt(k);
  p.allowed = std::max(0.10, z * std::sqrt(variance) / k);
  p.judged = ratios.size() >= min_samples;
  p.pass = !p.judged || std::fabs(p.mean_ratio - 1) <= p.allowed;
  return p;
}

namespace {

// G(j), j = 0 .. 2m (m = n - 1 probers): the chance that one prober has not
// reached the crashed member within its next j probe slots.
std::vector<double> NoProbeTable(size_t n) {
  std::vector<double> g(2 * (n - 1) + 1);
  for (size_t j = 0; j < g.size(); ++j) {
    g[j] = membership::timing::RoundRobinNoProbeProbability(n, j);
  }
  return g;
}

}  // namespace

void FirstSuspicionMeanInterval(size_t n, size_t k, double tail, double* lo_periods,
                                double* hi_periods) {
  *lo_periods = *hi_periods = 1;
  if (n < 2 || k == 0) return;
  const double md = static_cast<double>(n - 1);
  // S(t) = G^(t)^m falls from 1 at t = 0 to 0 at t = 2m - 1, G^ linear
  // between integers: invert it exactly for a uniform draw u = S(t).
  const std::vector<double> g = NoProbeTable(n);
  auto draw = [&](double u) {
    const double target = std::pow(u, 1.0 / md);  // G^(t) = u^(1/m)
    // The last j with G(j) >= target (G falls with j).
    const auto first_below =
        std::partition_point(g.begin(), g.end(), [target](double x) { return x >= target; });
    const size_t j =
        first_below == g.begin() ? 0 : static_cast<size_t>(first_below - g.begin()) - 1;
    const double span = g[j] - (j + 1 < g.size() ? g[j + 1] : 0.0);
    const double frac = span > 0 ? (g[j] - target) / span : 0;
    return 1 + static_cast<double>(j) + std::clamp(frac, 0.0, 1.0);
  };
  const size_t trials = 40000;
  std::vector<double> means(trials);
  uint64_t state = 0x9e3779b97f4a7c15ull ^ (n * 1315423911ull) ^ k;
  auto uniform = [&state] {  // splitmix64, (0, 1)
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (static_cast<double>(z >> 11) + 0.5) / 9007199254740992.0;
  };
  for (double& mean : means) {
    double sum = 0;
    for (size_t i = 0; i < k; ++i) sum += draw(uniform());
    mean = sum / static_cast<double>(k);
  }
  std::sort(means.begin(), means.end());
  const auto at = [&](double q) {
    const auto i = static_cast<size_t>(
        std::clamp(q * static_cast<double>(trials - 1), 0.0, static_cast<double>(trials - 1)));
    return means[i];
  };
  *lo_periods = at(tail);
  *hi_periods = at(1 - tail);
}

void FirstSuspicionMeanBound(size_t n, size_t k, double tail, double* lo_periods,
                             double* hi_periods) {
  *lo_periods = *hi_periods = 1;
  if (n < 2 || k == 0) return;
  const size_t m = n - 1;
  const double md = static_cast<double>(m);
  // S(t) = G^(t)^m on [0, 2m - 1], G^ linear between integers (as above).
  const std::vector<double> g = NoProbeTable(n);
  const double support = static_cast<double>(2 * m - 1);
  auto survival = [&](double t) {
    if (t <= 0) return 1.0;
    if (t >= support) return 0.0;
    const auto j = static_cast<size_t>(t);
    const double u = t - static_cast<double>(j);
    return std::pow(g[j] + (g[j + 1] - g[j]) * u, md);
  };
  // The t where S(t) = q (S falls from 1 to 0): bisection, S is monotone.
  auto inverse = [&](double q) {
    double a = 0, b = support;
    for (int i = 0; i < 100; ++i) {
      const double mid = (a + b) / 2;
      (survival(mid) > q ? a : b) = mid;
    }
    return (a + b) / 2;
  };
  if (k == 1) {
    *lo_periods = 1 + inverse(1 - tail);
    *hi_periods = 1 + inverse(tail);
    return;
  }
  // The model's mass per cell of 1/64 period, up to where what is left is
  // below 1e-20; that rest is put at the support's end (conservative above,
  // and 1e-20 moves no bound at the tails the oracle uses).
  constexpr double kCell = 1.0 / 64;
  double end = 0;
  while (end < support && survival(end) >= 1e-20) end += kCell;
  end = std::min(end, support);
  const auto cells = static_cast<size_t>(std::ceil(end / kCell));
  std::vector<double> mass, lower, upper;
  for (size_t i = 0; i < cells; ++i) {
    const double t0 = static_cast<double>(i) * kCell;
    const double t1 = std::min(end, t0 + kCell);
    mass.push_back(survival(t0) - survival(t1));
    lower.push_back(1 + t0);
    upper.push_back(1 + t1);
  }
  if (survival(end) > 0) {
    mass.push_back(survival(end));
    lower.push_back(1 + end);
    upper.push_back(1 + support);
  }
  // log E[exp(lambda X)], each cell's mass at the edge that keeps the bound
  // conservative on that side (its upper edge above the mean, lower below).
  auto log_mgf = [&](double lambda, const std::vector<double>& at) {
    double top = -1e300;
    for (size_t i = 0; i < mass.size(); ++i) top = std::max(top, lambda * at[i]);
    double sum = 0;
    for (size_t i = 0; i < mass.size(); ++i) sum += mass[i] * std::exp(lambda * at[i] - top);
    return top + std::log(sum);
  };
  const double kd = static_cast<double>(k);
  // Chernoff: log P(mean >= x) <= k min over lambda >= 0 of (log M(lambda) -
  // lambda x), a convex function of lambda: golden-section search.
  auto chernoff_log = [&](double x, double sign, const std::vector<double>& at) {
    auto f = [&](double lambda) { return log_mgf(sign * lambda, at) - sign * lambda * x; };
    double a = 0, b = 400;
    const double r = (std::sqrt(5.0) - 1) / 2;
    double c = b - r * (b - a), d = a + r * (b - a);
    double fc = f(c), fd = f(d);
    for (int i = 0; i < 60; ++i) {
      if (fc < fd) {
        b = d, d = c, fd = fc;
        c = b - r * (b - a), fc = f(c);
      } else {
        a = c, c = d, fc = fd;
        d = a + r * (b - a), fd = f(d);
      }
    }
    return kd * std::min({0.0, fc, fd});
  };
  double mean_upper = 0, mean_lower = 0;
  for (size_t i = 0; i < mass.size(); ++i) {
    mean_upper += mass[i] * upper[i];
    mean_lower += mass[i] * lower[i];
  }
  const double log_tail = std::log(tail);
  // The smallest x above the mean whose bound is <= tail, and the largest
  // below it: bisection (each bound is monotone in x).
  double a = mean_upper, b = 1 + support;
  for (int i = 0; i < 50; ++i) {
    const double mid = (a + b) / 2;
    (chernoff_log(mid, 1, upper) > log_tail ? a : b) = mid;
  }
  *hi_periods = b;
  a = 1;
  b = mean_lower;
  for (int i = 0; i < 50; ++i) {
    const double mid = (a + b) / 2;
    (chernoff_log(mid, -1, lower) > log_tail ? b : a) = mid;
  }
  *lo_periods = a;
}

double LastDeadBoundS(const SimConfig& config, size_t n) {
  const auto& sw = config.node.swim;
  const auto min_timeout = membership::timing::SuspicionMinTimeout(
      sw.suspicion_mult, n, std::chrono::milliseconds(sw.probe_interval_ms));
  const auto max_timeout =
      membership::timing::SuspicionMaxTimeout(sw.suspicion_max_timeout_mult, min_timeout);
  const double probe_s = static_cast<double>(sw.probe_interval_ms) / 1000.0;
  return probe_s * (membership::timing::WorstCaseFirstProbeRoundRobinPeriods(n) + 1) +
         static_cast<double>(max_timeout.count()) / 1000.0 +
         membership::timing::RetransmitLimit(sw.retransmit_mult, n) *
             static_cast<double>(sw.gossip_interval_ms) / 1000.0;
}

uint64_t MaxInWindow(const std::vector<std::pair<TrueNs, uint64_t>>& events, TrueNs length_ns) {
  uint64_t best = 0, sum = 0;
  size_t i = 0;
  for (size_t j = 0; j < events.size(); ++j) {
    sum += events[j].second;
    while (events[i].first <= events[j].first - length_ns) sum -= events[i++].second;
    best = std::max(best, sum);
  }
  return best;
}

double DecidersInWindow(const std::vector<DeciderPiece>& pieces, double base, TrueNs from,
                        TrueNs to) {
  double d = base;
  for (const DeciderPiece& p : pieces) {
    if (to >= p.from_ns && from < p.to_ns) d = std::max(d, p.deciders);
  }
  return d;
}

std::vector<WindowSample> WindowSamples(const std::vector<std::pair<TrueNs, uint64_t>>& events,
                                        TrueNs length_ns, uint64_t limit, double sides,
                                        const std::vector<DeciderPiece>& pieces, uint64_t extra) {
  std::vector<WindowSample> samples;
  if (events.empty()) return samples;
  // The sum over (t - length, t] is largest at an event; the allowed
  // deciders only fall where a window stops overlapping a piece, at
  // t = piece end + length. Those are the only ends worth checking.
  std::vector<TrueNs> ends;
  ends.reserve(events.size() + pieces.size());
  for (const auto& e : events) ends.push_back(e.first);
  for (const DeciderPiece& p : pieces) ends.push_back(p.to_ns + length_ns);
  std::sort(ends.begin(), ends.end());
  ends.erase(std::unique(ends.begin(), ends.end()), ends.end());
  uint64_t sum = 0;
  size_t in = 0, out = 0;  // events [out, in) are in the window
  for (TrueNs t : ends) {
    while (in < events.size() && events[in].first <= t) sum += events[in++].second;
    while (out < in && events[out].first <= t - length_ns) sum -= events[out++].second;
    if (sum == 0) continue;
    const double d = DecidersInWindow(pieces, sides, t - length_ns, t);
    samples.push_back(
        {t, sum, static_cast<uint64_t>(std::floor(static_cast<double>(limit) * d)) + extra});
  }
  return samples;
}

WindowCheck CheckWindows(const std::vector<std::pair<TrueNs, uint64_t>>& events, TrueNs length_ns,
                         uint64_t limit, double sides, const std::vector<DeciderPiece>& pieces,
                         uint64_t extra) {
  WindowCheck w;
  for (const WindowSample& x : WindowSamples(events, length_ns, limit, sides, pieces, extra)) {
    if (x.sum > w.most) {
      w.most = x.sum;
      w.most_end_ns = x.end_ns;
      w.bound_at_most = x.bound;
    }
    const double fill =
        static_cast<double>(x.sum) / static_cast<double>(std::max<uint64_t>(x.bound, 1));
    if (fill > w.worst_fill) {
      w.worst_fill = fill;
      w.worst_sum = x.sum;
      w.worst_bound = x.bound;
      w.worst_end_ns = x.end_ns;
    }
    if (x.sum > x.bound) w.violated = true;
  }
  return w;
}

std::vector<std::vector<std::pair<TrueNs, uint64_t>>> AdmittedByKey(const RunRecord& run) {
  const auto by_request = DecisionsByRequest(run);
  std::vector<std::vector<std::pair<TrueNs, uint64_t>>> events(run.keys.size());
  for (size_t i = 0; i < run.requests.size(); ++i) {
    const RequestRecord& r = run.requests[i];
    if (r.hits == 0 || r.key >= run.keys.size()) continue;
    TrueNs at = -1;
    bool any_allowed = false;
    for (uint32_t di : by_request[i]) {
      const DecisionRecord& d = run.decisions[di];
      if (!d.allowed) continue;
      any_allowed = true;
      if (at < 0 || d.at_ns < at) at = d.at_ns;
    }
    // What the client was told counts; without a reply, what a node counted.
    const bool admitted = r.replies > 0 ? (r.allowed && r.status == Status::kOk) : any_allowed;
    if (!admitted) continue;
    if (at < 0) at = r.replied_ns >= 0 ? r.replied_ns : r.sent_ns;
    events[r.key].emplace_back(at, r.hits);
  }
  for (auto& e : events) std::sort(e.begin(), e.end());
  return events;
}

std::vector<OracleResult> Evaluate(const RunRecord& run, const Bounds& b, Figures* fig) {
  std::vector<OracleResult> results;
  const SimConfig& cfg = run.config;
  const auto by_request = DecisionsByRequest(run);
  fig->requests = run.requests.size();
  fig->decisions = run.decisions.size();

  // ---- 1. exact: the cluster decides as one central limiter would.
  if (b.exact) {
    OracleResult r{"exact"};
    core::LimiterCore central(cfg.node.limiter, crdt::ReplicaSlot{"central", 1});
    uint64_t compared = 0, mismatches = 0, duplicates = 0, missing = 0;
    for (size_t i = 0; i < run.requests.size(); ++i) {
      const RequestRecord& q = run.requests[i];
      if (by_request[i].size() > 1) ++duplicates;
      if (by_request[i].empty() && q.sent_ns < run.end_ns - kNsPerS) {
        ++missing;
        if (r.detail.empty())
          r.detail = "request " + std::to_string(q.request_id) + " never decided";
      }
    }
    for (const DecisionRecord& d : run.decisions) {
      if (d.key >= run.keys.size() || d.request_id == 0 || d.request_id > run.requests.size()) {
        continue;
      }
      const RequestRecord& q = run.requests[d.request_id - 1];
      const KeySpec& k = run.keys[q.key];
      const CheckRequestRef ref = k.Check(q.request_id, q.hits);
      Instant at;
      at.wall = std::chrono::milliseconds(d.wall_ms);
      at.monotonic = std::chrono::nanoseconds(d.at_ns);
      const CheckResult c = central.Check(ref, at);
      ++compared;
      const bool reply_differs = q.replies > 0 && q.allowed != d.allowed;
      if (c.allowed != d.allowed || reply_differs) {
        ++mismatches;
        if (r.detail.empty()) {
          r.detail = "request " + std::to_string(q.request_id) + " (" + k.user_id +
                     ") at t=" + std::to_string(d.at_ns / kNsPerMs) + "ms: cluster " +
                     (d.allowed ? "allowed" : "denied") + ", central " +
                     (c.allowed ? "allowed" : "denied") + (reply_differs ? ", reply differs" : "");
        }
      }
    }
    fig->exact_agreement =
        compared == 0 ? 1.0 : static_cast<double>(compared - mismatches) / compared;
    r.value = Fmt("%.4f%%", 100 * fig->exact_agreement) + " of " + std::to_string(compared);
    if (duplicates + missing > 0) {
      r.value += ", " + std::to_string(duplicates) + " decided twice, " + std::to_string(missing) +
                 " never";
    }
    r.bound = "100%, each once";
    r.value_num = fig->exact_agreement;
    r.bound_num = 1;
    r.pass = mismatches == 0 && duplicates == 0 && missing == 0;
    results.push_back(r);
  }

  // ---- 2. excess over the limit in true-time sliding windows.
  {
    OracleResult r{"excess"};
    const auto admitted = AdmittedByKey(run);
    std::vector<std::vector<std::pair<TrueNs, uint64_t>>> requested(run.keys.size());
    for (const RequestRecord& q : run.requests) {
      if (q.key < run.keys.size() && q.hits > 0) requested[q.key].emplace_back(q.sent_ns, q.hits);
    }
    // Decider changes and clock spread per key, for the clock terms.
    std::vector<uint64_t> changes(run.keys.size(), 0);
    std::vector<double> lo(run.keys.size(), 1e18), hi(run.keys.size(), -1e18);
    std::vector<std::pair<uint32_t, uint64_t>> last(run.keys.size(), {UINT32_MAX, 0});
    for (const DecisionRecord& d : run.decisions) {
      if (d.key >= run.keys.size()) continue;
      const std::pair<uint32_t, uint64_t> who{d.host, d.generation};
      if (last[d.key].first != UINT32_MAX && last[d.key] != who) ++changes[d.key];
      last[d.key] = who;
      lo[d.key] = std::min(lo[d.key], d.clock_error_ms);
      hi[d.key] = std::max(hi[d.key], d.clock_error_ms);
    }
    double tightest = -1;
    uint64_t violations = 0, total_admitted = 0;
    for (size_t k = 0; k < run.keys.size(); ++k) {
      const KeySpec& key = run.keys[k];
      for (const auto& e : admitted[k]) total_admitted += e.second;
      const TrueNs window_ns = static_cast<TrueNs>(key.window_ms) * kNsPerMs;
      // What every window allows beyond limit x sides: the tails and clock terms.
      uint64_t extra = 0;
      // Each change of decider can lose the previous decider's unreplicated
      // tail; a key whose decider never changed gets no allowance.
      const uint64_t failovers = std::min<uint64_t>(static_cast<uint64_t>(b.failovers), changes[k]);
      if (failovers > 0 && b.tail_ns > 0) {
        extra += failovers * std::min<uint64_t>(key.limit, MaxInWindow(requested[k], b.tail_ns));
      }
      if (b.clock_terms) {
        const int64_t bucket_ms =
            crdt::GeometryFor(key.window_ms, cfg.node.limiter.buckets_per_window).bucket_ms;
        // The hits admitted in the delta + bucket_ms that a decider ahead by
        // delta treats as expired early: the most admitted in any interval
        // of that length, capped at the limit. Not limit x (delta +
        // bucket_ms) / W, which assumes admissions spread evenly over the
        // window: a burst at a window's start is all forgotten at once
        // (swarm seed 20547: 2 of a 2 s window's 4 hits in its first 31 ms,
        // a step of +0.298 s, 6 admitted where that formula allowed 5).
        auto term = [&](double delta_ms) {
          const auto span_ms = static_cast<uint64_t>(std::ceil(std::max(0.0, delta_ms))) +
                               static_cast<uint64_t>(bucket_ms);
          return std::min<uint64_t>(
              key.limit, MaxInWindow(admitted[k], static_cast<TrueNs>(span_ms) * kNsPerMs));
        };
        for (int64_t step : b.clock_steps_ms) extra += term(static_cast<double>(std::llabs(step)));
        if (changes[k] > 0) extra += changes[k] * term(hi[k] - lo[k]);
      }
      const WindowCheck w =
          CheckWindows(admitted[k], window_ns, key.limit, b.sides, b.decider_pieces, extra);
      const uint64_t most = w.most;
      // The bound quoted for the key: at its fullest window.
      const uint64_t bound =
          w.worst_end_ns >= 0
              ? w.worst_bound
              : static_cast<uint64_t>(std::floor(static_cast<double>(key.limit) * b.sides)) + extra;
      fig->key_peak.push_back(most);
      fig->key_bound.push_back(bound);
      fig->key_extra.push_back(extra);
      const double ratio = static_cast<double>(most) / static_cast<double>(key.limit);
      if (ratio > fig->max_excess_ratio) {
        fig->max_excess_ratio = ratio;
        fig->worst_key = key.user_id;
        fig->worst_window_end_ns = w.most_end_ns;
        fig->worst_bound_ratio =
            static_cast<double>(w.bound_at_most) / static_cast<double>(key.limit);
      }
      if (most > key.limit) fig->excess_hits += most - key.limit;
      const double fill = w.worst_fill;
      fig->max_fill = std::max(fig->max_fill, fill);
      if (w.violated) {
        ++violations;
        if (r.detail.empty() || fill > tightest) {
          r.detail = key.user_id + " (window " + std::to_string(key.window_ms) +
                     " ms): " + std::to_string(w.worst_sum) + " admitted in the window ending t=" +
                     Fmt("%.3f s", static_cast<double>(w.worst_end_ns) / 1e9) + ", limit " +
                     std::to_string(key.limit) + ", bound " + std::to_string(w.worst_bound);
        }
      }
      if (fill > tightest) {
        tightest = fill;
        r.bound_num = static_cast<double>(bound) / static_cast<double>(key.limit);
      }
    }
    fig->admitted = total_admitted;
    r.value = Fmt("%.2fx limit", fig->max_excess_ratio) + " (" + fig->worst_key + ")";
    r.value_num = fig->max_excess_ratio;
    r.bound = Fmt("limit x %.0f", b.sides);
    if (!b.decider_pieces.empty()) {
      double most = b.sides;
      for (const DeciderPiece& p : b.decider_pieces) most = std::max(most, p.deciders);
      r.bound = Fmt("limit x D (<= %.0f)", most);
    }
    if (b.failovers > 0) r.bound += " + " + std::to_string(b.failovers) + " tails";
    if (b.clock_terms) r.bound += " + clock terms";
    if (violations > 0) r.detail = std::to_string(violations) + " keys over; worst " + r.detail;
    r.pass = violations == 0;
    results.push_back(r);
  }

  // ---- replies: exactly one per datagram to a node that stayed up.
  {
    OracleResult r{"replies"};
    uint64_t duplicates = 0, unanswered = 0, errors = 0, answered = 0;
    // Reported, not judged: what the faults cost a client in waiting.
    std::vector<TrueNs> waits;
    waits.reserve(run.requests.size());
    for (const RequestRecord& q : run.requests) {
      if (q.replies > 1) ++duplicates;
      if (q.replies > 0) ++answered;
      if (q.replies > 0 && q.replied_ns >= q.sent_ns) waits.push_back(q.replied_ns - q.sent_ns);
      if (q.replies > 0 && q.status != Status::kOk) ++errors;
      const bool stayed = q.entry_host < run.final_generation.size() &&
                          run.final_generation[q.entry_host] == q.entry_generation;
      if (q.replies == 0 && stayed && q.sent_ns < run.end_ns - 2 * kNsPerS) {
        ++unanswered;
        if (r.detail.empty()) {
          r.detail = "request " + std::to_string(q.request_id) + " at " +
                     run.host_ids[q.entry_host] + ", t=" + std::to_string(q.sent_ns / kNsPerMs) +
                     "ms, never answered";
        }
      }
    }
    r.value = std::to_string(answered) + " answered, " + std::to_string(unanswered) + " lost, " +
              std::to_string(duplicates) + " twice, " + std::to_string(errors) + " errors";
    if (!waits.empty()) {
      const size_t p99 = (waits.size() - 1) * 99 / 100;
      std::nth_element(waits.begin(), waits.begin() + p99, waits.end());
      const TrueNs p99_ns = waits[p99];
      const TrueNs max_ns = *std::max_element(waits.begin(), waits.end());
      r.value += Fmt("; wait p99 %.1f ms", p99_ns / 1e6) + Fmt(", max %.1f ms", max_ns / 1e6);
    }
    r.bound = "0 lost, 0 twice, 0 errors";
    r.pass = duplicates == 0 && unanswered == 0 && errors == 0;
    r.value_num = static_cast<double>(unanswered + duplicates + errors);
    results.push_back(r);
  }

  // ---- 3. convergence after quiesce.
  if (cfg.quiesce_ns > 0 && cfg.quiesce_ns < run.end_ns) {
    OracleResult r{"convergence"};
    TrueNs allowed = b.convergence_ns;
    r.bound = "<= " + Seconds(b.convergence_ns);
    bool membership_pending = false;
    if (b.convergence_after_agreement_ns >= 0 && !run.ownership.empty()) {
      const OwnershipEpoch& e = run.ownership.back();
      if (e.agreed_ns >= 0) {
        const TrueNs after = e.agreed_ns - cfg.quiesce_ns + b.convergence_after_agreement_ns;
        if (after > allowed) {
          allowed = after;
          r.bound = "<= " + Seconds(allowed) + " (" + Seconds(b.convergence_after_agreement_ns) +
                    " after membership agreed)";
        }
      } else {
        membership_pending = true;
      }
    }
    r.bound_num = static_cast<double>(allowed) / 1e9;
    const bool unconverged_late =
        run.converged_ns < 0 || run.converged_ns - cfg.quiesce_ns > allowed;
    if (membership_pending && b.unwatched_not_judged && unconverged_late) {
      r.value = run.converged_ns < 0 ? "not yet" : Seconds(run.converged_ns - cfg.quiesce_ns);
      r.detail =
          "not judged: membership had not agreed when the run ended; " + run.convergence_note;
      r.judged = false;
      r.value_num = -1;
    } else if (run.converged_ns < 0 && b.unwatched_not_judged &&
               run.end_ns < cfg.quiesce_ns + allowed) {
      r.value = "not yet (" + Seconds(run.end_ns - cfg.quiesce_ns) + " watched)";
      r.detail = "not judged: the run ended within the bound; " + run.convergence_note;
      r.judged = false;
      r.value_num = -1;
    } else if (run.converged_ns < 0) {
      r.value = "never (" + Seconds(run.end_ns - cfg.quiesce_ns) + " watched)";
      r.detail = run.convergence_note;
      r.pass = false;
      r.value_num = -1;
    } else {
      const TrueNs took = run.converged_ns - cfg.quiesce_ns;
      fig->convergence_s = static_cast<double>(took) / 1e9;
      r.value = Seconds(took) + " (" + std::to_string(run.convergence_keys) + " live keys)";
      r.value_num = fig->convergence_s;
      r.pass = took <= allowed;
    }
    results.push_back(r);
  }

  // ---- 4. failure detection.
  const double probe_s = static_cast<double>(cfg.node.swim.probe_interval_ms) / 1000.0;
  if (b.detection && !run.detections.empty()) {
    OracleResult first{"first suspicion"};
    OracleResult dead{"all mark dead"};
    double n_sum = 0;
    size_t never = 0, last_checked = 0, unmarked = 0;
    double worst_last = -1, worst_bound = 0;
    size_t overlapping = 0;
    size_t excluded = 0;
    for (const DetectionRecord& d : run.detections) {
      if (std::find(b.detection_excluded_ns.begin(), b.detection_excluded_ns.end(), d.crash_ns) !=
          b.detection_excluded_ns.end()) {
        ++excluded;
        continue;
      }
      const bool superseded = d.restarted_ns >= 0;
      // The expectation assumes every other member is alive: a sample taken
      // while an earlier crash is still in the probe lists is not comparable.
      bool clean = true;
      for (const DetectionRecord& e : run.detections) {
        if (e.crash_ns >= d.crash_ns) continue;
        const bool settled = (e.last_dead_ns >= 0 && e.last_dead_ns <= d.crash_ns) ||
                             (e.restarted_ns >= 0 && e.restarted_ns + 2 * kNsPerS <= d.crash_ns);
        clean = clean && settled;
      }
      if (!clean && d.first_suspect_ns >= 0) {
        ++overlapping;
      } else if (d.first_suspect_ns >= 0 && (!superseded || d.first_suspect_ns < d.restarted_ns)) {
        fig->first_suspicion_s.push_back(static_cast<double>(d.first_suspect_ns - d.crash_ns) /
                                         1e9);
        n_sum += static_cast<double>(d.members_at_crash);
      } else if (!superseded) {
        ++never;
      }
      if (superseded) continue;
      const double bound_s = LastDeadBoundS(cfg, d.members_at_crash);
      // Only crashes the run watched long enough for the bound count.
      if (static_cast<double>(run.end_ns - d.crash_ns) / 1e9 < bound_s) continue;
      ++last_checked;
      if (d.observers_marked < d.observers) ++unmarked;
      const double last_s =
          d.last_dead_ns >= 0 ? static_cast<double>(d.last_dead_ns - d.crash_ns) / 1e9 : 1e9;
      if (last_s > worst_last) {
        worst_last = last_s;
        worst_bound = bound_s;
      }
    }
    const size_t k = fig->first_suspicion_s.size();
    double mean = 0;
    for (double s : fig->first_suspicion_s) mean += s;
    if (k > 0) mean /= static_cast<double>(k);
    if (k > 0) {
      double mp = 0, sdp = 0;
      ExpectedFirstSuspicion(static_cast<size_t>(std::lround(n_sum / static_cast<double>(k))), &mp,
                             &sdp);
      fig->expected_first_suspicion_s = mp * probe_s;
      fig->expected_first_suspicion_sd_s = sdp * probe_s;
    }
    const double expected = fig->expected_first_suspicion_s;
    // One run has few crashes: allow 10% or three standard errors of the
    // mean, whichever is wider (the seed sweep applies the strict 10%), and
    // beyond that band the interval the model leaves the mean of k crashes
    // with probability at most 1e-7 on each side (FirstSuspicionMeanBound):
    // the tail is long, so one or two crashes may land far above the band,
    // and a one-run check at the 99.73% interval failed a right model once
    // in ~740 single-crash runs (swarm seed 4129); at 1e-7 a sweep of a
    // million swarm seeds (some 120,000 judged crashes) would see one such
    // failure with probability under 3%.
    // The distribution itself is judged by the pooled test of a sweep. The
    // band stays below: the model starts at one round, but a probe already
    // in flight when its target crashed concludes sooner (seed 74: 1.00 s at
    // 10 nodes).
    const double three_se =
        k > 0 ? 3 * fig->expected_first_suspicion_sd_s / std::sqrt(static_cast<double>(k)) : 0;
    double lo = std::max(0.0, expected - std::max(b.detection_tolerance * expected, three_se));
    double hi = expected + std::max(b.detection_tolerance * expected, three_se);
    if (k > 0) {
      double lo_p = 0, hi_p = 0;
      FirstSuspicionMeanBound(static_cast<size_t>(std::lround(n_sum / static_cast<double>(k))), k,
                              kOneRunDetectionTail, &lo_p, &hi_p);
      lo = std::min(lo, lo_p * probe_s);
      hi = std::max(hi, hi_p * probe_s);
    }
    first.value = Fmt("mean %.2f s", mean) + " over " + std::to_string(k);
    if (overlapping > 0) first.value += " (+" + std::to_string(overlapping) + " overlapping)";
    if (excluded > 0) first.value += " (" + std::to_string(excluded) + " not judged)";
    if (k == 0 && never == 0 && b.detection_mean) {
      // Every crash was left out or superseded before a suspicion: nothing to compare.
      first.judged = false;
    }
    first.value_num = mean;
    first.bound_num = expected;
    if (!first.judged) {
      first.bound = "(no crash to judge)";
    } else if (b.detection_mean) {
      first.bound = Fmt("%.2f s", expected) + Fmt(" (%.2f", lo) + Fmt("..%.2f)", hi);
      first.pass = k > 0 && never == 0 && mean >= lo && mean <= hi;
    } else {
      first.bound = Fmt("(expect %.2f s; lossy)", expected);
      first.pass = never == 0;
    }
    if (never > 0) first.detail = std::to_string(never) + " crashes never suspected";
    results.push_back(first);
    if (last_checked > 0) {
      fig->last_dead_s = worst_last;
      dead.value = Fmt("%.2f s", worst_last) + " (" + std::to_string(last_checked) + " crashes)";
      dead.bound = Fmt("<= %.2f s", worst_bound);
      dead.value_num = worst_last;
      dead.bound_num = worst_bound;
      dead.pass = unmarked == 0 && worst_last <= worst_bound;
      if (unmarked > 0) dead.detail = std::to_string(unmarked) + " crashes not marked dead by all";
      results.push_back(dead);
    }
  }
  {
    const MembershipRecord& m = run.membership;
    OracleResult r{"false positives"};
    r.value = std::to_string(m.false_suspicions) + " suspicions, " +
              std::to_string(m.false_deaths) + " deaths";
    if (m.slow_node_accusations > 0) {
      r.value += " (" + std::to_string(m.slow_node_accusations) + " by the slow node)";
    }
    r.bound = std::string(b.no_false_suspicions ? "0 suspicions" : "") +
              (b.no_false_suspicions && b.no_false_deaths ? ", " : "") +
              (b.no_false_deaths ? "0 deaths" : "");
    if (r.bound.empty()) r.bound = "(reported)";
    r.pass = (!b.no_false_suspicions || m.false_suspicions == 0) &&
             (!b.no_false_deaths || m.false_deaths == 0);
    r.value_num = static_cast<double>(m.false_deaths);
    if (!m.examples.empty()) r.detail = m.examples.front();
    results.push_back(r);
  }

  // ---- 5. ownership agreement once membership is stable.
  if (!run.ownership.empty()) {
    OracleResult r{"ownership"};
    const OwnershipEpoch& e = run.ownership.back();
    size_t disagreements = 0;
    for (const OwnershipEpoch& x : run.ownership) disagreements += x.disagreements;
    r.bound = "agree <= " + Seconds(b.membership_ns) + " after the last change";
    r.bound_num = static_cast<double>(b.membership_ns) / 1e9;
    const bool deadline = b.membership_deadline_ns >= 0;
    if (deadline) {
      r.bound = "agree by t=" + Seconds(b.membership_deadline_ns);
      r.bound_num = static_cast<double>(b.membership_deadline_ns) / 1e9;
    }
    const TrueNs due = deadline ? b.membership_deadline_ns : e.changed_ns + b.membership_ns;
    if (e.agreed_ns < 0 && b.unwatched_not_judged && run.end_ns < due) {
      r.value = e.stable_ns < 0 ? "not yet stable" : "stable, lists not yet equal";
      r.detail = "not judged: the run ended within the bound (last change at t=" +
                 std::to_string(e.changed_ns / kNsPerMs) + "ms)";
      r.judged = false;
      r.value_num = -1;
    } else if (e.agreed_ns < 0) {
      r.value = e.stable_ns < 0 ? "membership never stable" : "stable, lists differ";
      r.pass = false;
      r.value_num = -1;
      r.detail = "last membership change at t=" + std::to_string(e.changed_ns / kNsPerMs) + "ms";
    } else {
      const TrueNs took = e.agreed_ns - e.changed_ns;
      fig->membership_s = static_cast<double>(took) / 1e9;
      r.value = Seconds(took);
      r.value_num = fig->membership_s;
      r.pass = took <= b.membership_ns;
      if (deadline) {
        r.value = "agreed at t=" + Seconds(e.agreed_ns) + " (" + Seconds(took) +
                  " after the last change)";
        r.value_num = static_cast<double>(e.agreed_ns) / 1e9;
        r.pass = e.agreed_ns <= b.membership_deadline_ns;
      }
    }
    if (disagreements > 0) {
      r.value += ", " + std::to_string(disagreements) + " disagreements while stable";
      r.pass = false;
    }
    results.push_back(r);
  }

  // ---- runtime limit overrides: spread within the bounds, and used.
  if (b.override_push_ns >= 0 && !run.override_writes.empty()) {
    OracleResult r{"override spread"};
    TrueNs worst_push = 0, worst_heal = 0;
    size_t judged = 0, late = 0, unwatched = 0;
    for (const OverrideWriteRecord& w : run.override_writes) {
      if (!w.applied) {
        ++late;
        if (r.detail.empty()) r.detail = "a write at t=" + Seconds(w.at_ns) + " was refused";
        continue;
      }
      const TrueNs heal = HealAfter(run, w.at_ns);
      for (size_t i = 0; i < w.seen_ns.size(); ++i) {
        // Hosts up at the write and still the same process at the end.
        if (w.generation[i] == 0 || i >= run.final_generation.size() ||
            run.final_generation[i] != w.generation[i]) {
          continue;
        }
        const bool pushed = w.reachable[i] != 0;
        if (!pushed && heal < 0) continue;  // never reachable again
        const TrueNs from = pushed ? w.at_ns : heal;
        const TrueNs deadline = from + (pushed ? b.override_push_ns : b.override_heal_ns);
        if (w.seen_ns[i] < 0 && deadline > run.end_ns) {
          ++unwatched;
          continue;
        }
        ++judged;
        const TrueNs took = w.seen_ns[i] < 0 ? run.end_ns - from : w.seen_ns[i] - from;
        (pushed ? worst_push : worst_heal) = std::max(pushed ? worst_push : worst_heal, took);
        if (w.seen_ns[i] < 0 || w.seen_ns[i] > deadline) {
          ++late;
          if (r.detail.empty()) {
            r.detail = run.host_ids[i] + " held the write of t=" + Seconds(w.at_ns) + " by " +
                       run.host_ids[w.host] + (w.descriptor ? " (descriptor)" : " (explicit)") +
                       (w.seen_ns[i] < 0 ? " never" : " at t=" + Seconds(w.seen_ns[i])) +
                       ", deadline t=" + Seconds(deadline);
          }
        }
      }
    }
    r.value = "push " + Fmt("%.3f s", static_cast<double>(worst_push) / 1e9) + ", after heal " +
              Fmt("%.2f s", static_cast<double>(worst_heal) / 1e9) + " (" + std::to_string(judged) +
              " host-writes)";
    r.bound = "push <= " + Fmt("%.3f s", static_cast<double>(b.override_push_ns) / 1e9) +
              ", heal <= " + Fmt("%.2f s", static_cast<double>(b.override_heal_ns) / 1e9);
    if (unwatched > 0) r.value += ", " + std::to_string(unwatched) + " past the end";
    r.value_num = static_cast<double>(worst_heal) / 1e9;
    r.bound_num = static_cast<double>(b.override_heal_ns) / 1e9;
    r.pass = late == 0 && judged > 0;
    if (judged == 0 && r.detail.empty()) r.detail = "no host-write could be judged";
    results.push_back(r);

    OracleResult u{"override use"};
    // The explicit writes per key (the Node applies those to checks).
    std::map<uint32_t, std::vector<const OverrideWriteRecord*>> by_key;
    for (const OverrideWriteRecord& w : run.override_writes) {
      if (!w.descriptor && w.applied) by_key[w.key].push_back(&w);
    }
    // A write sent while the request was on its way may reach the entry
    // node first: such requests are not judged.
    constexpr TrueNs kInFlightNs = kNsPerS;
    size_t checked = 0, wrong = 0, skipped = 0;
    for (const auto& [key, writes] : by_key) {
      for (const RequestRecord& q : run.requests) {
        if (q.key != key || by_request[q.request_id - 1].empty()) continue;
        const uint32_t h = q.entry_host;
        const OverrideWriteRecord* held = nullptr;      // newest the entry node held by then
        const OverrideWriteRecord* possible = nullptr;  // newest it could have held
        for (const OverrideWriteRecord* w : writes) {
          if (h < w->seen_ns.size() && w->seen_ns[h] >= 0 && w->seen_ns[h] <= q.sent_ns &&
              (held == nullptr || crdt::Wins(w->entry, held->entry))) {
            held = w;
          }
          // Could it have reached the entry node: written by then, and
          // pushed to it or healed towards it.
          const TrueNs by = q.sent_ns + kInFlightNs;
          const TrueNs heal = HealAfter(run, w->at_ns);
          const bool reaches =
              h < w->reachable.size() && (w->reachable[h] != 0 || (heal >= 0 && heal <= by));
          if (w->at_ns <= by && reaches &&
              (possible == nullptr || crdt::Wins(w->entry, possible->entry))) {
            possible = w;
          }
        }
        if (held != possible) {
          ++skipped;
          continue;
        }
        const uint64_t expected = held == nullptr || held->entry.value.removed
                                      ? run.keys[key].limit
                                      : held->entry.value.limit;
        for (uint32_t d : by_request[q.request_id - 1]) {
          ++checked;
          if (run.decisions[d].limit != expected) {
            ++wrong;
            if (u.detail.empty()) {
              u.detail = "request " + std::to_string(q.request_id) + " (" + run.keys[key].user_id +
                         ") entered " + run.host_ids[h] + " at t=" + Seconds(q.sent_ns) +
                         ": decided with limit " + std::to_string(run.decisions[d].limit) +
                         ", held " + std::to_string(expected);
            }
          }
        }
      }
    }
    u.value = std::to_string(checked) + " decisions, " + std::to_string(wrong) +
              " with another limit (" + std::to_string(skipped) + " in flight at a change)";
    u.bound = "0 with another limit";
    u.value_num = static_cast<double>(wrong);
    u.pass = wrong == 0 && checked > 0;
    if (checked == 0 && u.detail.empty()) u.detail = "no decision of an overridden key";
    results.push_back(u);
  }

  if (!b.must_not_own.empty()) {
    OracleResult r{"clock gate"};
    size_t gated = 0;
    for (const std::string& id : b.must_not_own) {
      if (std::find(run.not_owning_at_end.begin(), run.not_owning_at_end.end(), id) !=
          run.not_owning_at_end.end()) {
        ++gated;
      } else if (r.detail.empty()) {
        r.detail = id + " still owns keys with its clock beyond max_clock_offset_ms";
      }
    }
    r.value = std::to_string(gated) + " of " + std::to_string(b.must_not_own.size()) +
              " off-clock nodes stopped owning";
    r.bound = "all";
    r.pass = gated == b.must_not_own.size();
    results.push_back(r);
  }
  return results;
}

}  // namespace tally::sim

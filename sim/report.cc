#include "sim/report.h"

#include <algorithm>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace tally::sim {
namespace {

std::string Pad(const std::string& s, size_t width) {
  return s.size() >= width ? s : s + std::string(width - s.size(), ' ');
}

std::string JsonEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", c);
          out += buf;
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string XmlEscape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string Num(double v) {
  if (!std::isfinite(v)) return "null";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.6g", v);
  return buf;
}

std::string Hex(uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof(buf), "%016" PRIx64, v);
  return buf;
}

}  // namespace

std::string SummaryTable(const Outcome& o) {
  std::ostringstream out;
  out << "scenario " << o.scenario << "  seed " << o.seed << "  nodes " << o.nodes << "  duration "
      << o.duration_s << " s" << (o.drop_replication ? "  (replication dropped)" : "") << "\n";
  size_t w_name = 6, w_value = 5, w_bound = 5;
  for (const OracleResult& r : o.results) {
    w_name = std::max(w_name, r.name.size());
    w_value = std::max(w_value, r.value.size());
    w_bound = std::max(w_bound, r.bound.size());
  }
  out << "  " << Pad("oracle", w_name) << "  " << Pad("value", w_value) << "  "
      << Pad("bound", w_bound) << "  result\n";
  for (const OracleResult& r : o.results) {
    out << "  " << Pad(r.name, w_name) << "  " << Pad(r.value, w_value) << "  "
        << Pad(r.bound, w_bound) << "  " << (r.pass ? "pass" : "FAIL") << "\n";
    if (!r.pass && !r.detail.empty())
      out << "  " << std::string(w_name, ' ') << "  -> " << r.detail << "\n";
  }
  for (const LegOutcome& leg : o.legs) {
    const CostRecord& c = leg.cost;
    char buf[200];
    std::snprintf(buf, sizeof(buf),
                  "  cost at %zu nodes (from t=%.0f s): %.1f msgs/node/s, %.0f bytes/node/s, "
                  "%.1f checks/node/s:",
                  leg.nodes, static_cast<double>(c.from_ns) / 1e9, c.messages_per_node_s,
                  c.bytes_per_node_s, c.client_checks_per_node_s);
    out << buf;
    const double d = static_cast<double>(std::max<size_t>(c.nodes, 1)) * std::max(c.seconds, 1e-9);
    for (const auto& [kind, k] : c.by_kind) {
      std::snprintf(buf, sizeof(buf), " %s %.1f/%.0fB", kind.c_str(),
                    static_cast<double>(k.messages) / d, static_cast<double>(k.bytes) / d);
      out << buf;
    }
    out << "\n";
  }
  out << "  trace " << Hex(o.trace_hash) << "  events " << o.events << "  -> "
      << (o.pass ? "PASS" : "FAIL") << "\n";
  return out.str();
}

std::string ToJson(const std::vector<Outcome>& outcomes) {
  std::ostringstream out;
  out << "{\n  \"runs\": [\n";
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const Outcome& o = outcomes[i];
    const Figures& f = o.figures;
    out << "    {\"scenario\": \"" << JsonEscape(o.scenario) << "\", \"seed\": " << o.seed
        << ", \"nodes\": " << o.nodes << ", \"duration_s\": " << Num(o.duration_s)
        << ", \"pass\": " << (o.pass ? "true" : "false") << ", \"trace_hash\": \""
        << Hex(o.trace_hash) << "\", \"events\": " << o.events << ", \"command\": \""
        << JsonEscape(ReproduceCommand(o)) << "\",\n";
    out << "     \"oracles\": [";
    for (size_t j = 0; j < o.results.size(); ++j) {
      const OracleResult& r = o.results[j];
      out << (j ? ",\n                  " : "") << "{\"name\": \"" << JsonEscape(r.name)
          << "\", \"value\": \"" << JsonEscape(r.value) << "\", \"bound\": \""
          << JsonEscape(r.bound) << "\", \"pass\": " << (r.pass ? "true" : "false")
          << ", \"value_num\": " << Num(r.value_num) << ", \"bound_num\": " << Num(r.bound_num);
      if (!r.detail.empty()) out << ", \"detail\": \"" << JsonEscape(r.detail) << "\"";
      out << "}";
    }
    out << "],\n";
    out << "     \"figures\": {\"max_excess_ratio\": " << Num(f.max_excess_ratio)
        << ", \"worst_key\": \"" << JsonEscape(f.worst_key)
        << "\", \"excess_hits\": " << f.excess_hits
        << ", \"exact_agreement\": " << Num(f.exact_agreement)
        << ", \"convergence_s\": " << Num(f.convergence_s) << ", \"first_suspicion_s\": [";
    for (size_t j = 0; j < f.first_suspicion_s.size(); ++j) {
      out << (j ? ", " : "") << Num(f.first_suspicion_s[j]);
    }
    out << "], \"expected_first_suspicion_s\": " << Num(f.expected_first_suspicion_s)
        << ", \"last_dead_s\": " << Num(f.last_dead_s)
        << ", \"membership_s\": " << Num(f.membership_s) << ", \"requests\": " << f.requests
        << ", \"admitted_hits\": " << f.admitted << ", \"decisions\": " << f.decisions << "},\n";
    out << "     \"cost\": [";
    for (size_t j = 0; j < o.legs.size(); ++j) {
      const LegOutcome& l = o.legs[j];
      out << (j ? ", " : "") << "{\"nodes\": " << l.nodes
          << ", \"messages_per_node_s\": " << Num(l.cost.messages_per_node_s)
          << ", \"bytes_per_node_s\": " << Num(l.cost.bytes_per_node_s)
          << ", \"checks_per_node_s\": " << Num(l.cost.client_checks_per_node_s) << "}";
    }
    out << "]}" << (i + 1 < outcomes.size() ? "," : "") << "\n";
  }
  out << "  ]\n}\n";
  return out.str();
}

std::string TimelineSvg(const Outcome& o) {
  const RunRecord& run = o.record;
  constexpr int kWidth = 1100, kLeft = 70, kRight = 30, kTop = 110, kPanel = 150, kGap = 38;
  const auto admitted = AdmittedByKey(run);
  // The key furthest over its limit (if any is), then the busiest by admitted hits.
  std::vector<size_t> busy(run.keys.size());
  std::vector<uint64_t> totals(run.keys.size(), 0);
  for (size_t k = 0; k < run.keys.size(); ++k) {
    busy[k] = k;
    for (const auto& e : admitted[k]) totals[k] += e.second;
  }
  std::stable_sort(busy.begin(), busy.end(),
                   [&](size_t a, size_t b) { return totals[a] > totals[b]; });
  const Figures& fig = o.figures;
  std::vector<size_t> order;
  if (fig.key_peak.size() == run.keys.size()) {
    size_t worst = SIZE_MAX;
    double worst_ratio = 1;
    for (size_t k = 0; k < run.keys.size(); ++k) {
      const double r =
          static_cast<double>(fig.key_peak[k]) / static_cast<double>(run.keys[k].limit);
      if (r > worst_ratio) {
        worst_ratio = r;
        worst = k;
      }
    }
    if (worst != SIZE_MAX) order.push_back(worst);
  }
  for (size_t k : busy) {
    if (order.size() >= 3) break;
    if (std::find(order.begin(), order.end(), k) == order.end()) order.push_back(k);
  }
  const size_t panels = order.size();
  const int height = kTop + static_cast<int>(panels) * (kPanel + kGap) + 40;
  const double end_s = static_cast<double>(run.end_ns) / 1e9;
  const double plot_w = kWidth - kLeft - kRight;
  auto X = [&](double t_s) { return kLeft + plot_w * t_s / end_s; };

  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << kWidth << " " << height
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  svg << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  char buf[512];
  std::snprintf(buf, sizeof(buf), "tally-sim %s: seed %llu, %zu nodes, %.0f s; max %.2fx limit; %s",
                o.scenario.c_str(), static_cast<unsigned long long>(o.seed), o.nodes, end_s,
                o.figures.max_excess_ratio, o.pass ? "all oracles pass" : "FAILED");
  svg << "<text x=\"" << kLeft << "\" y=\"22\" font-size=\"15\" font-weight=\"bold\">"
      << XmlEscape(buf) << "</text>\n";
  svg << "<text x=\"" << kLeft
      << "\" y=\"40\" fill=\"#444\">admitted hits in the trailing window (blue) vs. the limit "
         "(black dashed) for the busiest keys; faults marked across all panels</text>\n";

  // Faults: bands for partition..heal and slow..fast, lines for the rest.
  struct Mark {
    double t;
    std::string color, label;
  };
  std::vector<Mark> marks;
  std::vector<std::pair<double, double>> partitions, slows;
  double open_partition = -1, open_slow = -1;
  for (const FaultLogEntry& f : run.faults) {
    const double t = static_cast<double>(f.at_ns) / 1e9;
    using K = FaultAction::Kind;
    switch (f.kind) {
      case K::kPartition:
        open_partition = t;
        marks.push_back({t, "#e67e22", f.label});
        break;
      case K::kHeal:
        if (open_partition >= 0) partitions.push_back({open_partition, t});
        open_partition = -1;
        marks.push_back({t, "#27ae60", f.label});
        break;
      case K::kSlow:
        open_slow = t;
        marks.push_back({t, "#8e5a2b", f.label});
        break;
      case K::kUnslow:
        if (open_slow >= 0) slows.push_back({open_slow, t});
        open_slow = -1;
        marks.push_back({t, "#8e5a2b", f.label});
        break;
      case K::kCrash:
        marks.push_back({t, "#c0392b", f.label});
        break;
      case K::kRestart:
        marks.push_back({t, "#27ae60", f.label});
        break;
      case K::kJoin:
      case K::kLeave:
        marks.push_back({t, "#2471a3", f.label});
        break;
      case K::kClockJump:
        marks.push_back({t, "#8e44ad", f.label});
        break;
      default:
        break;
    }
  }
  if (open_partition >= 0) partitions.push_back({open_partition, end_s});
  if (open_slow >= 0) slows.push_back({open_slow, end_s});
  const int panels_top = kTop, panels_bottom = kTop + static_cast<int>(panels) * (kPanel + kGap);
  for (const auto& [a, b] : partitions) {
    svg << "<rect x=\"" << X(a) << "\" y=\"" << panels_top << "\" width=\"" << X(b) - X(a)
        << "\" height=\"" << panels_bottom - panels_top
        << "\" fill=\"#f5cba7\" opacity=\"0.45\"/>\n";
  }
  for (const auto& [a, b] : slows) {
    svg << "<rect x=\"" << X(a) << "\" y=\"" << panels_top << "\" width=\"" << X(b) - X(a)
        << "\" height=\"" << panels_bottom - panels_top
        << "\" fill=\"#e5d3b3\" opacity=\"0.45\"/>\n";
  }
  if (run.config.quiesce_ns > 0 && run.config.quiesce_ns < run.end_ns) {
    const double q = X(static_cast<double>(run.config.quiesce_ns) / 1e9);
    svg << "<line x1=\"" << q << "\" y1=\"" << panels_top << "\" x2=\"" << q << "\" y2=\""
        << panels_bottom << "\" stroke=\"#999\" stroke-dasharray=\"2,3\"/>\n";
    svg << "<text x=\"" << q + 3 << "\" y=\"" << panels_bottom - 4
        << "\" fill=\"#777\">traffic stops</text>\n";
  }
  for (size_t i = 0; i < marks.size(); ++i) {
    const double x = X(marks[i].t);
    const int row = static_cast<int>(i % 4);
    svg << "<line x1=\"" << x << "\" y1=\"" << 52 + row * 14 << "\" x2=\"" << x << "\" y2=\""
        << panels_bottom << "\" stroke=\"" << marks[i].color << "\" stroke-width=\"1.3\"/>\n";
    svg << "<text x=\"" << x + 3 << "\" y=\"" << 62 + row * 14 << "\" fill=\"" << marks[i].color
        << "\">" << XmlEscape(marks[i].label) << "</text>\n";
  }

  for (size_t p = 0; p < panels; ++p) {
    const size_t k = order[p];
    const KeySpec& key = run.keys[k];
    const int top = kTop + static_cast<int>(p) * (kPanel + kGap);
    const TrueNs window = static_cast<TrueNs>(key.window_ms) * kNsPerMs;
    const TrueNs step = std::max<TrueNs>(window / 10, run.end_ns / 1200);
    std::vector<std::pair<double, uint64_t>> series;
    uint64_t sum = 0, peak = 0;
    size_t lo = 0, hi = 0;
    const auto& ev = admitted[k];
    for (TrueNs t = 0; t <= run.end_ns; t += step) {
      while (hi < ev.size() && ev[hi].first <= t) sum += ev[hi++].second;
      while (lo < hi && ev[lo].first <= t - window) sum -= ev[lo++].second;
      series.push_back({static_cast<double>(t) / 1e9, sum});
      peak = std::max(peak, sum);
    }
    const double bound = k < fig.key_bound.size() ? static_cast<double>(fig.key_bound[k])
                                                  : static_cast<double>(key.limit);
    // The sampled series can miss the exact peak the oracle found.
    if (k < fig.key_peak.size()) peak = std::max(peak, fig.key_peak[k]);
    const double y_max = std::max({static_cast<double>(peak), bound, 1.0}) * 1.15;
    auto Y = [&](double v) { return top + kPanel - kPanel * v / y_max; };
    svg << "<rect x=\"" << kLeft << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\""
        << kPanel << "\" fill=\"none\" stroke=\"#bbb\"/>\n";
    std::snprintf(buf, sizeof(buf), "%s %s, window %llu ms, limit %llu: peak %llu (%.2fx)%s",
                  key.user_id.c_str(), key.endpoint.c_str(),
                  static_cast<unsigned long long>(key.window_ms),
                  static_cast<unsigned long long>(key.limit), static_cast<unsigned long long>(peak),
                  static_cast<double>(peak) / static_cast<double>(key.limit),
                  peak > static_cast<uint64_t>(bound) ? "  OVER THE BOUND" : "");
    svg << "<text x=\"" << kLeft << "\" y=\"" << top - 6 << "\" font-weight=\"bold\">"
        << XmlEscape(buf) << "</text>\n";
    // Limit and, with sides > 1, the partition bound.
    svg << "<line x1=\"" << kLeft << "\" y1=\"" << Y(static_cast<double>(key.limit)) << "\" x2=\""
        << kLeft + plot_w << "\" y2=\"" << Y(static_cast<double>(key.limit))
        << "\" stroke=\"black\" stroke-dasharray=\"6,4\"/>\n";
    svg << "<text x=\"" << kLeft - 6 << "\" y=\"" << Y(static_cast<double>(key.limit)) + 4
        << "\" text-anchor=\"end\">" << key.limit << "</text>\n";
    if (bound > static_cast<double>(key.limit)) {
      svg << "<line x1=\"" << kLeft << "\" y1=\"" << Y(bound) << "\" x2=\"" << kLeft + plot_w
          << "\" y2=\"" << Y(bound) << "\" stroke=\"#c0392b\" stroke-dasharray=\"3,3\"/>\n";
      svg << "<text x=\"" << kLeft + plot_w - 4 << "\" y=\"" << Y(bound) - 4
          << "\" text-anchor=\"end\" fill=\"#c0392b\">oracle bound " << static_cast<uint64_t>(bound)
          << "</text>\n";
    }
    svg << "<text x=\"" << kLeft - 6 << "\" y=\"" << top + kPanel
        << "\" text-anchor=\"end\">0</text>\n";
    svg << "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"1.4\" points=\"";
    for (const auto& [t, v] : series) svg << X(t) << "," << Y(static_cast<double>(v)) << " ";
    svg << "\"/>\n";
  }
  // Time axis.
  const double tick = end_s > 120 ? 20 : end_s > 40 ? 10 : 5;
  for (double t = 0; t <= end_s + 1e-9; t += tick) {
    svg << "<line x1=\"" << X(t) << "\" y1=\"" << panels_bottom - kGap + 4 << "\" x2=\"" << X(t)
        << "\" y2=\"" << panels_bottom - kGap + 9 << "\" stroke=\"#555\"/>\n";
    svg << "<text x=\"" << X(t) << "\" y=\"" << panels_bottom - kGap + 22
        << "\" text-anchor=\"middle\">" << t << " s</text>\n";
  }
  svg << "</svg>\n";
  return svg.str();
}

}  // namespace tally::sim

// tally-sim: runs tally's cluster (many core::Node instances) on a simulated
// network and clocks under a scenario's fault schedule, and checks the
// oracles. Exit status 0 only when every oracle of every seed passed.
//
//   tally-sim --list
//   tally-sim --scenario NAME [--nodes N] [--seed S | --seeds A..B]
//             [--duration SECONDS] [--json FILE] [--svg FILE] [--drop-replication]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include "sim/report.h"
#include "sim/scenarios.h"

namespace {

using tally::sim::Outcome;

void Usage() {
  std::cerr << "usage: tally-sim --list\n"
               "       tally-sim --scenario NAME [--nodes N] [--seed S | --seeds A..B]\n"
               "                 [--duration SECONDS] [--json FILE] [--svg FILE]\n"
               "                 [--drop-replication]   (test switch: a broken cluster)\n"
               "                 [--dump-key USER_ID]   (debugging: its decisions and replicas)\n";
}

bool ParseU64(const std::string& s, uint64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  *v = std::strtoull(s.c_str(), &end, 10);
  return end != nullptr && *end == '\0';
}

bool WriteFile(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  return static_cast<bool>(f);
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario_name, json_path, svg_path;
  uint64_t seed_from = 1, seed_to = 1, nodes = 0;
  double duration_s = 0;
  bool list = false, drop_replication = false;
  std::string dump_key;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << arg << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--list") {
      list = true;
    } else if (arg == "--scenario") {
      scenario_name = value();
    } else if (arg == "--nodes") {
      if (!ParseU64(value(), &nodes) || nodes < 3) {
        std::cerr << "--nodes needs an integer >= 3\n";
        return 2;
      }
    } else if (arg == "--seed") {
      if (!ParseU64(value(), &seed_from)) return Usage(), 2;
      seed_to = seed_from;
    } else if (arg == "--seeds") {
      const std::string v = value();
      const size_t dots = v.find("..");
      if (dots == std::string::npos || !ParseU64(v.substr(0, dots), &seed_from) ||
          !ParseU64(v.substr(dots + 2), &seed_to) || seed_to < seed_from) {
        std::cerr << "--seeds needs A..B with A <= B\n";
        return 2;
      }
    } else if (arg == "--duration") {
      duration_s = std::atof(value().c_str());
      if (!(duration_s > 0)) {
        std::cerr << "--duration needs seconds > 0\n";
        return 2;
      }
    } else if (arg == "--json") {
      json_path = value();
    } else if (arg == "--svg") {
      svg_path = value();
    } else if (arg == "--dump-key") {
      dump_key = value();
    } else if (arg == "--drop-replication") {
      drop_replication = true;
    } else if (arg == "--help" || arg == "-h") {
      Usage();
      return 0;
    } else {
      std::cerr << "unknown argument " << arg << "\n";
      Usage();
      return 2;
    }
  }
  if (list) {
    for (const auto& s : tally::sim::Scenarios()) {
      std::printf("%-21s %4zu nodes %4.0f s  %s\n", s.name.c_str(), s.default_nodes,
                  s.default_duration_s, s.goal.c_str());
    }
    return 0;
  }
  const tally::sim::Scenario* scenario = tally::sim::FindScenario(scenario_name);
  if (scenario == nullptr) {
    std::cerr << (scenario_name.empty() ? "--scenario is required"
                                        : "unknown scenario " + scenario_name)
              << " (see --list)\n";
    return 2;
  }
  if (duration_s > 0 && duration_s < scenario->min_duration_s) {
    std::cerr << scenario->name << " needs --duration >= " << scenario->min_duration_s
              << " s for its fault schedule\n";
    return 2;
  }

  std::vector<Outcome> outcomes;
  std::vector<double> suspicion_samples;
  double expected_suspicion = 0;
  bool all_pass = true, failure_charted = false;
  const bool several = seed_to > seed_from;
  for (uint64_t seed = seed_from; seed <= seed_to; ++seed) {
    tally::sim::ScenarioParams params;
    params.seed = seed;
    params.nodes = nodes;
    params.duration_s = duration_s;
    params.drop_replication = drop_replication;
    params.dump_key = dump_key;
    const bool chart = !svg_path.empty();
    const auto started = std::chrono::steady_clock::now();  // speed report only
    Outcome o = tally::sim::RunScenario(*scenario, params, chart);
    const double wall_s =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::cout << o.debug;
    if (!several || !o.pass) {
      std::cout << tally::sim::SummaryTable(o);
    } else {
      std::printf("seed %-6llu %s  trace %016llx  max excess %.2fx\n",
                  static_cast<unsigned long long>(seed), o.pass ? "pass" : "FAIL",
                  static_cast<unsigned long long>(o.trace_hash), o.figures.max_excess_ratio);
    }
    std::printf("  simulated %.0f s in %.2f s wall (%.1fx real time, %llu events)\n", o.simulated_s,
                wall_s, o.simulated_s / std::max(wall_s, 1e-9),
                static_cast<unsigned long long>(o.events));
    if (!o.pass) {
      std::printf("  FAILED seed %llu; reproduce: %s\n", static_cast<unsigned long long>(seed),
                  tally::sim::ReproduceCommand(o).c_str());
    }
    // The chart shows the first seed, or the first failing one.
    if (chart && (outcomes.empty() || (!o.pass && !failure_charted))) {
      failure_charted = !o.pass;
      if (!WriteFile(svg_path, tally::sim::TimelineSvg(o))) {
        std::cerr << "cannot write " << svg_path << "\n";
        return 2;
      }
    }
    all_pass = all_pass && o.pass;
    if (o.bounds.detection_mean) {
      suspicion_samples.insert(suspicion_samples.end(), o.figures.first_suspicion_s.begin(),
                               o.figures.first_suspicion_s.end());
      expected_suspicion = o.figures.expected_first_suspicion_s;
    }
    o.record = {};  // the chart is written; keep the summary only
    outcomes.push_back(std::move(o));
  }
  if (several && !suspicion_samples.empty() && expected_suspicion > 0) {
    // Over a sweep the sample is large enough for the strict 10% criterion.
    double mean = 0;
    for (double s : suspicion_samples) mean += s;
    mean /= static_cast<double>(suspicion_samples.size());
    const bool ok = std::fabs(mean - expected_suspicion) <= 0.10 * expected_suspicion;
    std::printf(
        "sweep: first suspicion mean %.3f s over %zu crashes, expected %.3f s (+-10%%): %s\n", mean,
        suspicion_samples.size(), expected_suspicion, ok ? "pass" : "FAIL");
    if (suspicion_samples.size() < 30) {
      std::printf("  (fewer than 30 samples: widen the seed range for a strict test)\n");
    } else {
      all_pass = all_pass && ok;
    }
  }
  if (several) {
    size_t failed = 0;
    for (const Outcome& o : outcomes) failed += o.pass ? 0 : 1;
    std::printf("%s: %zu of %zu seeds passed\n", scenario->name.c_str(), outcomes.size() - failed,
                outcomes.size());
  }
  if (!json_path.empty() && !WriteFile(json_path, tally::sim::ToJson(outcomes))) {
    std::cerr << "cannot write " << json_path << "\n";
    return 2;
  }
  return all_pass ? 0 : 1;
}

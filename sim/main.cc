// tally-sim: runs tally's cluster (many core::Node instances) on a simulated
// network and clocks under a scenario's fault schedule, or a swarm of
// randomly drawn ones, and checks the oracles. Exit status 0 only when every
// oracle of every seed passed.
//
//   tally-sim --list
//   tally-sim --scenario NAME[,NAME...]|all [--nodes N] [--seed S | --seeds A..B]
//             [--duration SECONDS] [--json FILE] [--svg FILE] [--drop-replication]
//   tally-sim --swarm [--seed S | --seeds A..B] [--max-nodes N] [--verbose] [--shrink]
//   tally-sim --swarm-schedule FILE|TEXT [--shrink]
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "sim/report.h"
#include "sim/scenarios.h"
#include "sim/swarm.h"

namespace {

using tally::sim::Outcome;

constexpr uint64_t kDefaultMaxNodes = 200;

void Usage() {
  std::cerr
      << "usage: tally-sim --list\n"
         "       tally-sim --scenario NAME[,NAME...]|all [--nodes N] [--seed S | --seeds A..B]\n"
         "                 [--duration SECONDS] [--json FILE] [--svg FILE]\n"
         "                 [--drop-replication]   (test switch: a broken cluster)\n"
         "                 [--dump-key USER_ID]   (debugging: its decisions and replicas)\n"
         "       tally-sim --swarm [--seed S | --seeds A..B] [--max-nodes N (200)]\n"
         "                 [--verbose] [--shrink] [--print-schedule] [--dump-key USER_ID]\n"
         "       tally-sim --swarm-schedule FILE|TEXT [--shrink] [--verbose]\n"
         "                 (a schedule as --print-schedule writes it; inline, lines join "
         "with ';')\n";
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

double Since(std::chrono::steady_clock::time_point start) {  // speed report only
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// ---------------------------------------------------------------- scenarios

struct ScenarioArgs {
  uint64_t seed_from = 1, seed_to = 1, nodes = 0;
  double duration_s = 0;
  bool drop_replication = false;
  std::string dump_key, json_path, svg_path;
};

// Runs one scenario over the seeds; false when any seed failed.
bool RunScenarioSeeds(const tally::sim::Scenario& scenario, const ScenarioArgs& a,
                      std::vector<Outcome>* outcomes) {
  // First suspicions of judged crashes as multiples of their run's
  // expectation, and the model's coefficient of variation for each.
  std::vector<double> suspicion_ratios, suspicion_cvs;
  bool all_pass = true, failure_charted = false;
  const bool several = a.seed_to > a.seed_from;
  size_t ran = 0, failed = 0;
  for (uint64_t seed = a.seed_from; seed <= a.seed_to; ++seed) {
    tally::sim::ScenarioParams params;
    params.seed = seed;
    params.nodes = a.nodes;
    params.duration_s = a.duration_s;
    params.drop_replication = a.drop_replication;
    params.dump_key = a.dump_key;
    const bool chart = !a.svg_path.empty();
    const auto started = std::chrono::steady_clock::now();
    Outcome o = tally::sim::RunScenario(scenario, params, chart);
    const double wall_s = Since(started);
    std::cout << o.debug;
    if (!several || !o.pass) {
      std::cout << tally::sim::SummaryTable(o);
    } else {
      std::printf("%s seed %-6llu %s  trace %016llx  max excess %.2fx\n", scenario.name.c_str(),
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
    if (chart && (outcomes->empty() || (!o.pass && !failure_charted))) {
      failure_charted = !o.pass;
      if (!WriteFile(a.svg_path, tally::sim::TimelineSvg(o))) {
        std::cerr << "cannot write " << a.svg_path << "\n";
        std::exit(2);
      }
    }
    all_pass = all_pass && o.pass;
    ++ran;
    failed += o.pass ? 0 : 1;
    if (o.bounds.detection_mean && o.figures.expected_first_suspicion_s > 0) {
      const double expected = o.figures.expected_first_suspicion_s;
      for (double x : o.figures.first_suspicion_s) {
        suspicion_ratios.push_back(x / expected);
        suspicion_cvs.push_back(o.figures.expected_first_suspicion_sd_s / expected);
      }
    }
    o.record = {};  // the chart is written; keep the summary only
    outcomes->push_back(std::move(o));
  }
  if (several && !suspicion_ratios.empty()) {
    // Pooled over the sweep (sim/oracles.h, JudgePooledFirstSuspicion).
    const tally::sim::PooledSuspicion pooled =
        tally::sim::JudgePooledFirstSuspicion(suspicion_ratios, suspicion_cvs);
    std::printf("sweep: first suspicion over %zu crashes: %.3f x the expectation (1 +- %.3f): %s\n",
                pooled.samples, pooled.mean_ratio, pooled.allowed,
                !pooled.judged ? "reported"
                : pooled.pass  ? "pass"
                               : "FAIL");
    if (!pooled.judged) {
      std::printf("  (fewer than 30 samples: widen the seed range for a strict test)\n");
    }
    all_pass = all_pass && pooled.pass;
  }
  if (several) {
    std::printf("%s: %zu of %zu seeds passed\n", scenario.name.c_str(), ran - failed, ran);
  }
  return all_pass;
}

// ---------------------------------------------------------------- swarm

struct SwarmArgs {
  uint64_t seed_from = 1, seed_to = 1, max_nodes = kDefaultMaxNodes;
  bool verbose = false, shrink = false, print_schedule = false;
  std::string dump_key, schedule;
};

std::string SwarmCommand(uint64_t seed, uint64_t max_nodes) {
  std::string cmd = "tally-sim --swarm --seed " + std::to_string(seed);
  if (max_nodes != kDefaultMaxNodes) cmd += " --max-nodes " + std::to_string(max_nodes);
  return cmd;
}

std::string InlineSchedule(const tally::sim::SwarmCase& c) {
  std::string text = tally::sim::FormatCase(c);
  while (!text.empty() && text.back() == '\n') text.pop_back();
  for (char& ch : text) {
    if (ch == '\n') ch = ';';
  }
  return "tally-sim --swarm-schedule '" + text + "'";
}

std::string FailedOracles(const tally::sim::SwarmOutcome& o) {
  std::string out;
  for (const tally::sim::OracleResult& r : o.results) {
    if (r.pass) continue;
    out += "    " + r.name + ": " + r.value + " (bound " + r.bound + ")";
    if (!r.detail.empty()) out += ": " + r.detail;
    out += "\n";
  }
  return out;
}

std::string FirstFailed(const tally::sim::SwarmOutcome& o) {
  for (const tally::sim::OracleResult& r : o.results) {
    if (!r.pass) return r.name;
  }
  return "";
}

void PrintCase(const tally::sim::SwarmCase& c) {
  std::cout << tally::sim::DescribeCase(c) << "  faults:\n" << tally::sim::DescribeFaults(c);
}

struct ClassStat {
  size_t seeds = 0, failed = 0;  // seeds with the class, and of those failing
  size_t in_play = 0;            // seeds with a window over the limit with it in play
  double worst = 0, bound = 0;   // the largest admitted / limit there, and the bound then
  uint64_t seed = 0;
  double fill = 0;  // the largest admitted / bound there
  uint64_t fill_seed = 0;
};

// Shrinks a failing case and prints the reduced schedule; the failure must
// stay the same oracle's.
void ShrinkAndReport(const tally::sim::SwarmCase& c, const std::string& oracle) {
  std::printf("  shrinking (keeping '%s' failing)...\n", oracle.c_str());
  const auto started = std::chrono::steady_clock::now();
  size_t runs = 0;
  auto fails = [&](const tally::sim::SwarmCase& candidate) {
    ++runs;
    const tally::sim::SwarmOutcome o = tally::sim::RunCase(candidate);
    for (const tally::sim::OracleResult& r : o.results) {
      if (!r.pass && r.name == oracle) return true;
    }
    return false;
  };
  auto progress = [](const std::string& step) { std::printf("    %s\n", step.c_str()); };
  const tally::sim::SwarmCase small = tally::sim::Shrink(c, fails, progress);
  const tally::sim::SwarmOutcome o = tally::sim::RunCase(small);
  std::printf("  shrunk in %zu runs (%.1f s wall) to %zu nodes, %zu faults:\n", runs,
              Since(started), small.nodes, small.faults.size());
  PrintCase(small);
  std::cout << "  failed oracles:\n" << FailedOracles(o);
  std::cout << "  reproduce the shrunk schedule: " << InlineSchedule(small) << "\n";
}

int RunSwarm(const SwarmArgs& a) {
  std::vector<tally::sim::SwarmCase> cases;
  std::vector<uint64_t> seeds;
  if (!a.schedule.empty()) {
    std::string text = a.schedule;
    std::ifstream file(a.schedule);
    if (file) {
      std::stringstream ss;
      ss << file.rdbuf();
      text = ss.str();
    }
    tally::sim::SwarmCase c;
    std::string error;
    if (!tally::sim::ParseCase(text, &c, &error)) {
      std::cerr << "--swarm-schedule: " << error << "\n";
      return 2;
    }
    cases.push_back(c);
  } else {
    for (uint64_t seed = a.seed_from; seed <= a.seed_to; ++seed) {
      cases.push_back(tally::sim::DrawCase(seed, a.max_nodes));
    }
  }
  const auto started = std::chrono::steady_clock::now();
  std::map<std::string, ClassStat> classes;
  std::map<std::string, size_t> not_judged;
  std::vector<uint64_t> failed_seeds;
  size_t passed = 0, small = 0, medium = 0, large = 0, min_n = SIZE_MAX, max_n = 0;
  // First suspicions of judged crashes, as multiples of their expectation
  // (sizes differ per seed), and the model's coefficient of variation for
  // each: pooled and judged from 30 on (JudgePooledFirstSuspicion).
  std::vector<double> suspicion_ratios, suspicion_cvs;
  bool suspicion_ok = true;
  double sim_s = 0;
  for (const tally::sim::SwarmCase& c : cases) {
    tally::sim::SwarmRunOptions options;
    options.dump_key = a.dump_key;
    const auto t0 = std::chrono::steady_clock::now();
    const tally::sim::SwarmOutcome o = tally::sim::RunCase(c, options);
    const double wall = Since(t0);
    sim_s += o.simulated_s;
    min_n = std::min(min_n, c.nodes);
    max_n = std::max(max_n, c.nodes);
    (c.nodes <= 16 ? small : c.nodes <= 64 ? medium : large)++;
    for (const tally::sim::OracleResult& r : o.results) {
      if (!r.judged) ++not_judged[r.name];
    }
    for (const auto& [k, e] : o.excess_by_class) {
      ClassStat& s = classes[k];
      ++s.in_play;
      if (e.ratio > s.worst) {
        s.worst = e.ratio;
        s.bound = e.bound_ratio;
        s.seed = c.seed;
      }
      if (e.fill > s.fill) {
        s.fill = e.fill;
        s.fill_seed = c.seed;
      }
    }
    if (o.figures.expected_first_suspicion_s > 0) {
      for (double x : o.figures.first_suspicion_s) {
        suspicion_ratios.push_back(x / o.figures.expected_first_suspicion_s);
        suspicion_cvs.push_back(o.figures.expected_first_suspicion_sd_s /
                                o.figures.expected_first_suspicion_s);
      }
    }
    for (const std::string& k : o.classes) {
      ++classes[k].seeds;
      classes[k].failed += o.pass ? 0 : 1;
    }
    std::cout << o.debug;
    const std::string command =
        a.schedule.empty() ? SwarmCommand(c.seed, a.max_nodes) : InlineSchedule(c);
    std::printf(
        "seed %-6llu %3zu nodes %zu faults %-12s %s  excess %.2fx (bound %.2fx)  %.0f s in %.2f "
        "s\n",
        static_cast<unsigned long long>(c.seed), c.nodes, c.faults.size(),
        std::string(tally::core::PartitionPolicyName(c.policy)).c_str(), o.pass ? "pass" : "FAIL",
        o.figures.max_excess_ratio, o.figures.worst_bound_ratio, o.simulated_s, wall);
    if (a.verbose || !o.pass) {
      PrintCase(c);
      std::printf("  oracles:\n");
      for (const tally::sim::OracleResult& r : o.results) {
        std::printf("    %-16s %-5s %s (bound %s)%s%s\n", r.name.c_str(),
                    !r.judged ? "n/j"
                    : r.pass  ? "pass"
                              : "FAIL",
                    r.value.c_str(), r.bound.c_str(), r.detail.empty() ? "" : ": ",
                    r.detail.c_str());
      }
      std::printf("  trace %016llx, %llu events\n", static_cast<unsigned long long>(o.trace_hash),
                  static_cast<unsigned long long>(o.events));
    }
    if (a.print_schedule) std::cout << tally::sim::FormatCase(c);
    if (o.pass) {
      ++passed;
    } else {
      failed_seeds.push_back(c.seed);
      std::cout << "  FAILED:\n" << FailedOracles(o) << "  reproduce: " << command << "\n";
      if (a.shrink) ShrinkAndReport(c, FirstFailed(o));
    }
    std::fflush(stdout);
  }
  if (cases.size() > 1) {
    std::printf("swarm: %zu seeds, %zu passed, %zu failed", cases.size(), passed,
                cases.size() - passed);
    if (!failed_seeds.empty()) {
      std::printf(" (seeds");
      for (size_t i = 0; i < failed_seeds.size() && i < 30; ++i) {
        std::printf(" %llu", static_cast<unsigned long long>(failed_seeds[i]));
      }
      std::printf("%s)", failed_seeds.size() > 30 ? " ..." : "");
    }
    std::printf("; sizes %zu..%zu (3-16: %zu, 17-64: %zu, 65+: %zu); %.0f s simulated in %.1f s\n",
                min_n, max_n, small, medium, large, sim_s, Since(started));
    if (!suspicion_ratios.empty()) {
      const tally::sim::PooledSuspicion pooled =
          tally::sim::JudgePooledFirstSuspicion(suspicion_ratios, suspicion_cvs);
      suspicion_ok = pooled.pass;
      std::printf(
          "  first suspicion over %zu judged crashes: %.3f x the expectation (1 +- %.3f%s): %s\n",
          pooled.samples, pooled.mean_ratio, pooled.allowed,
          pooled.judged ? "" : ", judged from 30 crashes",
          !pooled.judged ? "reported"
          : pooled.pass  ? "pass"
                         : "FAIL");
    }
    if (!not_judged.empty()) {
      std::printf("  not judged (the run ended within their bound):");
      for (const auto& [name, count] : not_judged) std::printf(" %s %zu", name.c_str(), count);
      std::printf("\n");
    }
    std::printf("  %-26s %6s %6s  %-34s %s\n", "fault class", "seeds", "failed",
                "worst excess in play (its bound)", "fullest window (admitted/bound)");
    for (const auto& [name, s] : classes) {
      std::printf("  %-26s %6zu %6zu  ", name.c_str(), s.seeds, s.failed);
      if (s.in_play == 0) {
        std::printf("%-34s -\n", "-");
        continue;
      }
      char worst[64];
      std::snprintf(worst, sizeof(worst), "%.2fx (%.2fx) seed %llu", s.worst, s.bound,
                    static_cast<unsigned long long>(s.seed));
      std::printf("%-34s %.0f%% seed %llu\n", worst, 100 * s.fill,
                  static_cast<unsigned long long>(s.fill_seed));
    }
    std::printf(
        "  (seeds: runs with the class; worst excess and fullest window: over the windows above\n"
        "   the limit that overlapped a fault of the class, from its start to its recovery;\n"
        "   \"none\": windows above the limit that no fault overlapped)\n");
  }
  return passed == cases.size() && suspicion_ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::string scenario_name;
  ScenarioArgs sa;
  SwarmArgs wa;
  bool list = false, swarm = false, seeds_given = false;
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
    } else if (arg == "--swarm") {
      swarm = true;
    } else if (arg == "--swarm-schedule") {
      swarm = true;
      wa.schedule = value();
    } else if (arg == "--max-nodes") {
      if (!ParseU64(value(), &wa.max_nodes) || wa.max_nodes < 3) {
        std::cerr << "--max-nodes needs an integer >= 3\n";
        return 2;
      }
    } else if (arg == "--verbose") {
      wa.verbose = true;
    } else if (arg == "--shrink") {
      wa.shrink = true;
    } else if (arg == "--print-schedule") {
      wa.print_schedule = true;
    } else if (arg == "--nodes") {
      if (!ParseU64(value(), &sa.nodes) || sa.nodes < 3) {
        std::cerr << "--nodes needs an integer >= 3\n";
        return 2;
      }
    } else if (arg == "--seed") {
      if (!ParseU64(value(), &sa.seed_from)) return Usage(), 2;
      sa.seed_to = sa.seed_from;
      seeds_given = true;
    } else if (arg == "--seeds") {
      const std::string v = value();
      const size_t dots = v.find("..");
      if (dots == std::string::npos || !ParseU64(v.substr(0, dots), &sa.seed_from) ||
          !ParseU64(v.substr(dots + 2), &sa.seed_to) || sa.seed_to < sa.seed_from) {
        std::cerr << "--seeds needs A..B with A <= B\n";
        return 2;
      }
      seeds_given = true;
    } else if (arg == "--duration") {
      sa.duration_s = std::atof(value().c_str());
      if (!(sa.duration_s > 0)) {
        std::cerr << "--duration needs seconds > 0\n";
        return 2;
      }
    } else if (arg == "--json") {
      sa.json_path = value();
    } else if (arg == "--svg") {
      sa.svg_path = value();
    } else if (arg == "--dump-key") {
      sa.dump_key = value();
      wa.dump_key = sa.dump_key;
    } else if (arg == "--drop-replication") {
      sa.drop_replication = true;
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
  if (swarm) {
    if (!scenario_name.empty()) {
      std::cerr << "--swarm and --scenario are exclusive\n";
      return 2;
    }
    if (!wa.schedule.empty() && seeds_given) {
      std::cerr << "--swarm-schedule carries its own seed\n";
      return 2;
    }
    wa.seed_from = sa.seed_from;
    wa.seed_to = sa.seed_to;
    return RunSwarm(wa);
  }
  std::vector<const tally::sim::Scenario*> scenarios;
  if (scenario_name == "all") {
    // Every scenario but scale (a comparison of runs at fixed sizes).
    for (const auto& s : tally::sim::Scenarios()) {
      if (!s.legs) scenarios.push_back(&s);
    }
  } else if (scenario_name.empty()) {
    std::cerr << "--scenario or --swarm is required (see --list)\n";
    return 2;
  } else {
    // NAME or NAME,NAME,... (in that order).
    std::stringstream names(scenario_name);
    std::string name;
    while (std::getline(names, name, ',')) {
      const tally::sim::Scenario* s = tally::sim::FindScenario(name);
      if (s == nullptr) {
        std::cerr << "unknown scenario " << name << " (see --list)\n";
        return 2;
      }
      scenarios.push_back(s);
    }
  }
  for (const tally::sim::Scenario* s : scenarios) {
    if (sa.duration_s > 0 && sa.duration_s < s->min_duration_s) {
      std::cerr << s->name << " needs --duration >= " << s->min_duration_s
                << " s for its fault schedule\n";
      return 2;
    }
  }
  std::vector<Outcome> outcomes;
  std::vector<std::string> failed;
  for (const tally::sim::Scenario* s : scenarios) {
    if (!RunScenarioSeeds(*s, sa, &outcomes)) failed.push_back(s->name);
  }
  if (scenarios.size() > 1) {
    std::printf("all scenarios: %zu of %zu passed every seed", scenarios.size() - failed.size(),
                scenarios.size());
    for (const std::string& f : failed)
      std::printf("%s %s", &f == &failed.front() ? "; failed:" : "", f.c_str());
    std::printf("\n");
  }
  if (!sa.json_path.empty() && !WriteFile(sa.json_path, tally::sim::ToJson(outcomes))) {
    std::cerr << "cannot write " << sa.json_path << "\n";
    return 2;
  }
  return failed.empty() ? 0 : 1;
}

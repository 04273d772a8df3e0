// Scenarios: named experiments, each a SimConfig (cluster, network, clocks,
// workload, fault schedule) plus the Bounds its oracles are held to. Every
// scenario's definition in scenarios.cc opens with its goal and method.
#ifndef TALLY_SIM_SCENARIOS_H_
#define TALLY_SIM_SCENARIOS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "sim/oracles.h"
#include "sim/simulator.h"

namespace tally::sim {

struct ScenarioParams {
  uint64_t seed = 1;
  size_t nodes = 0;       // 0: the scenario's default
  double duration_s = 0;  // 0: the scenario's default
  bool drop_replication = false;
  std::string dump_key;  // debugging, see SimConfig::dump_key
};

struct ScenarioCase {
  SimConfig config;
  Bounds bounds;
  std::string debug;
};

struct Scenario {
  std::string name;
  std::string goal;  // one line, for --list
  size_t default_nodes = 10;
  double default_duration_s = 60;
  double min_duration_s = 30;
  std::function<ScenarioCase(const ScenarioParams&)> build;
  // Cluster sizes for scenarios that compare several runs (scale); empty: one run.
  std::function<std::vector<size_t>(size_t nodes)> legs;
};

// The timing terms the scenarios' bounds (and the swarm's, sim/swarm.h) are
// built from.
// Time for a cluster of `nodes` to form: joins spread over start_spread, then
// gossip and handoff settle.
TrueNs Warmup(size_t nodes);
// A rumor's spread: RetransmitLimit(n) gossip rounds plus two probe periods.
TrueNs Dissemination(const SimConfig& c, size_t n);
// State convergence once membership settled: the last deltas resent
// (replication_interval + 3 x replication_retry) and two anti-entropy rounds.
TrueNs ConvergenceBase(const SimConfig& c);
// Sides of a healed partition meet again: the periodic reconnect
// (reconnect_interval) plus two disseminations of the refutations.
TrueNs Reconnect(const SimConfig& c, size_t n);
// An owner's unreplicated tail: one replication interval plus the largest
// one-way latency of the link configuration plus 1 ms.
TrueNs Tail(const SimConfig& c);

const std::vector<Scenario>& Scenarios();
const Scenario* FindScenario(const std::string& name);

struct LegOutcome {
  size_t nodes = 0;
  CostRecord cost;
  double pushpull_allowance_bytes = 0;  // per node per second, see scale
};

struct Outcome {
  std::string scenario;
  uint64_t seed = 0;
  size_t nodes = 0;
  double duration_s = 0;
  bool drop_replication = false;
  std::vector<OracleResult> results;
  Figures figures;
  uint64_t trace_hash = 0;
  uint64_t events = 0;
  double simulated_s = 0;
  std::vector<LegOutcome> legs;
  bool pass = true;
  RunRecord record;  // of the (last) run, kept when asked (for the chart)
  Bounds bounds;
  std::string debug;
};

// Runs `scenario` once per leg (once for most) and judges it.
Outcome RunScenario(const Scenario& scenario, const ScenarioParams& params, bool keep_record);

// The command line that reproduces an outcome.
std::string ReproduceCommand(const Outcome& outcome);

}  // namespace tally::sim

#endif  // TALLY_SIM_SCENARIOS_H_

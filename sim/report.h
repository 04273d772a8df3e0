// Output of tally-sim: the terminal summary table, the JSON figures and the
// SVG timeline chart (hand-written, no dependencies).
#ifndef TALLY_SIM_REPORT_H_
#define TALLY_SIM_REPORT_H_

#include <string>
#include <vector>

#include "sim/scenarios.h"

namespace tally::sim {

// The per-oracle table of one outcome, ending with the trace hash.
std::string SummaryTable(const Outcome& outcome);

// All outcomes (one per seed) as a JSON document.
std::string ToJson(const std::vector<Outcome>& outcomes);

// Timeline of one run: admitted hits in the trailing window vs. the limit for
// the busiest keys, with crashes, partitions, heals and other faults marked.
// REQUIRES: the outcome kept its RunRecord.
std::string TimelineSvg(const Outcome& outcome);

}  // namespace tally::sim

#endif  // TALLY_SIM_REPORT_H_

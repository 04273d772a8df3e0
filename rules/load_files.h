// Reading rules files from disk: the only part of tally_rules that does I/O.
#ifndef TALLY_RULES_LOAD_FILES_H_
#define TALLY_RULES_LOAD_FILES_H_

#include <string>
#include <string_view>

#include "rules/rules.h"

namespace tally::rules {

// Loads `path`: a single file (any name), or a directory whose *.yaml and
// *.yml entries (regular files or links to them; not hidden ones, not
// subdirectories, so a Kubernetes ConfigMap mount's "..data" links and
// folders are skipped) each hold one domain. Files are read in name order.
// Any unreadable, oversized or invalid file rejects the whole load, with
// every error reported as file:line:column (errors name files as given by
// `path` plus their name). An empty directory gives a rule set with no
// domain. Blocking file I/O: call it off the hot path.
BuildResult LoadRules(const std::string& path);

// Whether a change to the entry `name` of the watched directory can change
// what LoadRules reads: `rules_file` is the rules file's name when a single
// file is loaded (its directory is watched, since editors and Kubernetes
// replace files by renaming), empty when the rules path is the directory.
// Kubernetes' "..data" swaps and events about the directory itself (empty
// `name`) always count; other files beside the rules (a log, an editor's
// swap file) do not, so writing them reloads nothing.
bool ChangeConcernsRules(std::string_view name, std::string_view rules_file);

}  // namespace tally::rules

#endif  // TALLY_RULES_LOAD_FILES_H_

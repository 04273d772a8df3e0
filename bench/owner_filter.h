// tally-load's key selection by owner: which of its generated keys a run
// uses, by the member that decides each key in the target node's view.
//
//   std::optional<OwnerFilter> f = OwnerFilter::Parse("remote", &error);
//   KeySelection s = SelectKeys(*f, 10'000, 1'000'000, 256, lookup_batch);
//   ... key i of the run is LoadUserId(s.indices[i]) ...
//
// A cluster member decides the keys it owns itself and forwards the others to
// their owner, so `local` keys measure the decided-here path and `remote`
// keys the forwarded path (one more hop each way). The lookups themselves
// (the admin owner query) are the caller's: this file is pure and holds no
// sockets, clocks or threads, so the selection is testable and deterministic.
//
// Thread safety: everything here is reentrant; SelectKeys calls the lookup
// function from the calling thread only (the function may fan out itself).
#ifndef TALLY_BENCH_OWNER_FILTER_H_
#define TALLY_BENCH_OWNER_FILTER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tally::load {

// The user id of generated key `index`: "u<index>" (every key of a run has
// the same endpoint and window; only the user id varies).
std::string LoadUserId(uint64_t index);
// Replaces `*out` with LoadUserId(index) without allocating once `*out` has room.
void FormatLoadUserId(uint64_t index, std::string* out);

class OwnerFilter {
 public:
  enum class Mode {
    kAll,     // every key (no lookups)
    kLocal,   // keys the answering node owns: decided where the client sends them
    kRemote,  // keys another member owns: forwarded
    kNode,    // keys a named member owns
  };

  OwnerFilter() = default;
  static OwnerFilter All() { return OwnerFilter(); }
  static OwnerFilter Local() { return OwnerFilter(Mode::kLocal, ""); }
  static OwnerFilter Remote() { return OwnerFilter(Mode::kRemote, ""); }
  static OwnerFilter Node(std::string id) { return OwnerFilter(Mode::kNode, std::move(id)); }

  // "all", "local", "remote" or "node=ID" (ID non-empty). nullopt with
  // `*error` otherwise.
  static std::optional<OwnerFilter> Parse(std::string_view text, std::string* error);

  Mode mode() const { return mode_; }
  const std::string& node_id() const { return node_id_; }
  bool selects() const { return mode_ != Mode::kAll; }  // whether lookups are needed

  // Whether a key owned by `owner` is kept when `answerer` (the node the
  // load is sent to) is the one that said so.
  bool Keeps(std::string_view owner, std::string_view answerer) const;

  // The text Parse accepts for this filter.
  std::string ToString() const;

 private:
  OwnerFilter(Mode mode, std::string id) : mode_(mode), node_id_(std::move(id)) {}

  Mode mode_ = Mode::kAll;
  std::string node_id_;
};

// One key's owner as the target answered.
struct OwnerLookup {
  bool ok = false;
  std::string answerer;  // the node that answered (its id)
  std::string owner;     // the first of the preference list; empty: no owner
  std::string error;     // when !ok
};

// Looks up the owners of the given key indices; returns one OwnerLookup per
// index, in the same order.
using OwnerLookupBatch = std::function<std::vector<OwnerLookup>(std::span<const uint64_t>)>;

struct KeySelection {
  std::vector<uint64_t> indices;  // the kept key indices, ascending
  uint64_t examined = 0;          // candidates looked up (kept or not)
  std::string answerer;           // who answered the lookups
  // Owner -> how many of the examined keys it owns (every owner seen).
  std::map<std::string, uint64_t> owners;
  std::string error;  // set iff fewer than `want` keys were kept
};

// Examines key indices 0, 1, 2, ... in chunks of `chunk` (one lookup_batch
// call each), keeping those `filter` keeps, until `want` are kept or
// `max_examined` have been looked up. Candidates are examined in index order
// and the result stops at exactly `want`, so the selection depends only on
// the owners, not on the chunk size. With a filter that selects nothing
// (OwnerFilter::All) the result is 0..want-1 without lookups. Fails (error
// set, indices what was kept so far) on a failed lookup, a key without an
// owner, answers from more than one node, or too few matches.
// REQUIRES: want >= 1, chunk >= 1.
KeySelection SelectKeys(const OwnerFilter& filter, uint64_t want, uint64_t max_examined,
                        uint64_t chunk, const OwnerLookupBatch& lookup_batch);

}  // namespace tally::load

#endif  // TALLY_BENCH_OWNER_FILTER_H_

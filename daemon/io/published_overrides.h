// PublishedOverrides: the descriptor-form runtime limit overrides in force
// on this member (crdt::DescriptorOverrideTable), published by the
// ClusterDriver after every change of the Node's map and read by the rules
// doors (daemon/rls/) on their own threads without the Node's lock
// (docs/DESIGN.md, "Runtime limit overrides").
//
// Reading costs one atomic load while no override is in force, and a
// shared_ptr copy otherwise; a call keeps the table it loaded, so it sees
// one version of the map whole, never a mix.
#ifndef TALLY_DAEMON_IO_PUBLISHED_OVERRIDES_H_
#define TALLY_DAEMON_IO_PUBLISHED_OVERRIDES_H_

#include <atomic>
#include <cstddef>
#include <memory>
#include <utility>

#include "crdt/limit_overrides.h"

namespace tally::io {

class PublishedOverrides {
 public:
  using Table = crdt::DescriptorOverrideTable;

  // The table in force, or null when it is empty. Any thread.
  std::shared_ptr<const Table> Load() const {
    if (size_.load(std::memory_order_acquire) == 0) return nullptr;
    return table_.load(std::memory_order_acquire);
  }
  // Replaces the table (null: none). Any thread; publishers serialize
  // among themselves (the driver publishes under the Node's lock).
  void Publish(std::shared_ptr<const Table> table) {
    const size_t size = table ? table->size() : 0;
    table_.store(std::move(table), std::memory_order_release);
    // After the table: a reader that sees the size finds a table at least as new.
    size_.store(size, std::memory_order_release);
  }

 private:
  std::atomic<size_t> size_{0};
  std::atomic<std::shared_ptr<const Table>> table_;
};

}  // namespace tally::io

#endif  // TALLY_DAEMON_IO_PUBLISHED_OVERRIDES_H_

#include "daemon/io/snapshot_writer.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <string_view>
#include <utility>

namespace tally::io {
namespace {

uint64_t Us(SnapshotWriter::Steady::duration d) {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(d).count());
}

}  // namespace

persist::SnapshotExpectations ExpectSnapshot(const SnapshotIdentity& identity, int64_t now_wall_ms,
                                             uint64_t max_bytes) {
  persist::SnapshotExpectations expect;
  expect.cluster_name = identity.cluster_name;
  expect.node_id = identity.node_id;
  expect.generation = identity.generation;
  expect.buckets_per_window = identity.buckets_per_window;
  expect.now_wall_ms = now_wall_ms;
  expect.max_bytes = max_bytes;
  return expect;
}

void ReportUnloadedSnapshot(const SnapshotReadResult& read, const std::filesystem::path& path,
                            SnapshotCounters* counters) {
  switch (read.outcome) {
    case SnapshotReadResult::Outcome::kLoaded:
      return;  // the caller's to count: it restored the keys
    case SnapshotReadResult::Outcome::kMissing:
      counters->restore_missing = 1;
      spdlog::info("{}", read.message);
      return;
    case SnapshotReadResult::Outcome::kUnreadable:
    case SnapshotReadResult::Outcome::kRejected:
      (read.outcome == SnapshotReadResult::Outcome::kRejected ? counters->restore_rejected
                                                              : counters->restore_unreadable) = 1;
      spdlog::warn("{}{}", read.message, MoveRejectedAside(path));
      return;
  }
}

void CountRestoredKeys(const persist::DecodedSnapshot& snapshot,
                       const persist::RestoreStats& restored, SnapshotCounters* counters) {
  counters->restore_loaded = 1;
  counters->restored_keys = restored.keys_merged;
  counters->restore_dropped = snapshot.dropped_expired + snapshot.dropped_geometry +
                              snapshot.dropped_future + restored.keys_expired +
                              restored.keys_refused;
}

SnapshotWriter::SnapshotWriter(std::vector<std::byte>* buffer, size_t keys)
    : buffer_(buffer), start_(Steady::now()), encoder_({}, [&] {
        buffer->reserve(persist::SnapshotPayloadReserve(keys));
        return std::move(*buffer);
      }()) {}

bool SnapshotWriter::Finish(const char* why, const SnapshotIdentity& identity,
                            int64_t written_wall_ms, const std::filesystem::path& path,
                            std::mutex* stats_mu, SnapshotCounters* stats) {
  persist::SnapshotHeader header;
  header.cluster_name = identity.cluster_name;
  header.node_id = identity.node_id;
  header.generation = identity.generation;
  header.written_wall_ms = written_wall_ms;
  header.buckets_per_window = identity.buckets_per_window;
  persist::EncodedSnapshot sealed = encoder_.Finish(header);
  const Steady::time_point encoded = Steady::now();
  std::string error;
  const bool ok = WriteSnapshotFile(path, sealed, &error);
  const Steady::time_point written = Steady::now();
  const size_t bytes = sealed.size();  // before the payload goes back to the buffer
  *buffer_ = std::move(sealed.payload);
  {
    std::lock_guard<std::mutex> lock(*stats_mu);
    SnapshotCounters& c = *stats;
    c.longest_slice_us = std::max(c.longest_slice_us, Us(longest_hold_));
    if (ok) {
      ++c.writes;
      c.last_keys = sealed.keys;
      c.last_bytes = bytes;
      c.last_overrides = sealed.overrides;
      c.last_encode_us = Us(encoded - start_);
      c.last_write_us = Us(written - encoded);
    } else {
      ++c.write_errors;
    }
  }
  if (!ok) {
    spdlog::error("{} snapshot not written: {}", why, error);
    return false;
  }
  spdlog::log(std::string_view(why) == "periodic" ? spdlog::level::debug : spdlog::level::info,
              "{} snapshot: {} keys, {} limit overrides, {} bytes to {} (encode {} ms, longest "
              "lock hold {} us, write {} ms)",
              why, sealed.keys, sealed.overrides, bytes, path.string(), Us(encoded - start_) / 1000,
              Us(longest_hold_), Us(written - encoded) / 1000);
  return true;
}

}  // namespace tally::io

#include "daemon/io/message_processor.h"

#include <cassert>
#include <chrono>
#include <utility>

namespace tally::io {
namespace {

// Room for the ClientMessage envelope (segment table, root struct, list tag)
// on top of the per-response bounds.
constexpr size_t kEnvelopeBytes = 128;
// Error texts are ours or the decoder's and short; the cap keeps any future
// long reason from blowing a reply past one datagram.
constexpr size_t kMaxErrorBytes = 512;

}  // namespace

Instant ReadClock() {
  Instant now;
  now.wall = std::chrono::duration_cast<std::chrono::milliseconds>(
      std::chrono::system_clock::now().time_since_epoch());
  now.monotonic = std::chrono::duration_cast<std::chrono::nanoseconds>(
      std::chrono::steady_clock::now().time_since_epoch());
  return now;
}

MessageProcessor::MessageProcessor(Limiter* limiter, bool echo, Counters* counters)
    : limiter_(limiter), echo_(echo), counters_(counters) {
  assert(echo_ || limiter_ != nullptr);
}

std::vector<std::byte>* MessageProcessor::NextBuffer() {
  if (buffers_used_ == buffers_.size()) buffers_.emplace_back();
  return &buffers_[buffers_used_++];
}

void MessageProcessor::ReplyError(Status status, std::string reason, uint32_t tag,
                                  std::vector<Reply>* replies) {
  counters_->malformed.fetch_add(1, std::memory_order_relaxed);
  if (reason.size() > kMaxErrorBytes) reason.resize(kMaxErrorBytes);
  results_.clear();
  CheckResult& r = results_.emplace_back();
  r.request_id = 0;
  r.status = status;
  r.allowed = false;
  r.error = std::move(reason);
  EncodeResults(tag, replies);
}

void MessageProcessor::EncodeResults(uint32_t tag, std::vector<Reply>* replies) {
  const size_t budget = wire::kMaxDatagramBytes - kEnvelopeBytes;
  std::span<const CheckResult> all(results_);
  size_t start = 0;
  size_t bytes = 0;
  auto emit = [&](size_t end) {
    std::vector<std::byte>* out = NextBuffer();
    wire::EncodeResponses(all.subspan(start, end - start), out);
    replies->push_back(Reply{std::span<const std::byte>(*out), tag});
  };
  for (size_t i = 0; i < all.size(); ++i) {
    size_t bound = wire::EncodedResponseBound(all[i].error.size());
    if (i > start && bytes + bound > budget) {
      emit(i);
      start = i;
      bytes = 0;
    }
    bytes += bound;
  }
  // An empty checks list still gets an (empty) answer, so callers never hang.
  emit(all.size());
}

void MessageProcessor::Handle(std::span<const std::byte> message, bool truncated, Instant now,
                              uint32_t tag, std::vector<Reply>* replies) {
  if (echo_) {
    replies->push_back(Reply{message, tag});
    return;
  }
  if (truncated) {
    ReplyError(Status::kMalformed,
               "message larger than " + std::to_string(wire::kMaxDatagramBytes) + " bytes", tag,
               replies);
    return;
  }
  why_.clear();
  Status status = reader_.Decode(message, &why_);
  if (status != Status::kOk) {
    ReplyError(status, why_.empty() ? std::string(StatusName(status)) : why_, tag, replies);
    return;
  }
  if (reader_.kind() != wire::MessageKind::kChecks) {
    counters_->malformed.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  results_.clear();
  for (const CheckRequestRef& check : reader_.checks()) {
    results_.push_back(limiter_->Check(check, now));
    if (results_.back().error.size() > kMaxErrorBytes) results_.back().error.resize(kMaxErrorBytes);
  }
  EncodeResults(tag, replies);
}

}  // namespace tally::io

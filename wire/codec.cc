#include "wire/codec.h"

#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>
#include <kj/io.h>

#include <cstring>

#include "tally/check.capnp.h"

namespace tally::wire {
namespace {

constexpr size_t kWordBytes = sizeof(capnp::word);

// Cap'n Proto's generated enum mirrors tally::Status ordinal for ordinal.
static_assert(static_cast<uint16_t>(tally::Status::kOk) == static_cast<uint16_t>(wire::Status::OK));
static_assert(static_cast<uint16_t>(tally::Status::kInternal) ==
              static_cast<uint16_t>(wire::Status::INTERNAL));

tally::Status FromWire(wire::Status s) {
  auto v = static_cast<uint16_t>(s);
  if (v > static_cast<uint16_t>(tally::Status::kInternal)) return tally::Status::kInternal;
  return static_cast<tally::Status>(v);
}

std::string_view AsView(capnp::Data::Reader data) {
  return {reinterpret_cast<const char*>(data.begin()), data.size()};
}

kj::ArrayPtr<const kj::byte> AsBytes(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

// Serializes a single- or multi-segment builder into `out`.
void Flatten(capnp::MessageBuilder& builder, std::vector<std::byte>* out) {
  size_t words = capnp::computeSerializedSizeInWords(builder);
  out->resize(words * kWordBytes);
  kj::ArrayOutputStream stream(
      kj::arrayPtr(reinterpret_cast<kj::byte*>(out->data()), out->size()));
  capnp::writeMessage(stream, builder);
}

// A scratch first segment so typical messages build without malloc.
thread_local capnp::word scratch_segment[kMaxDatagramBytes / kWordBytes + 16];

}  // namespace

tally::Status ClientMessageReader::Decode(std::span<const std::byte> bytes, std::string* why) {
  checks_.clear();
  responses_.clear();
  version_ = 0;
  auto fail = [why](tally::Status status, std::string reason) {
    if (why != nullptr) *why = std::move(reason);
    return status;
  };
  if (bytes.empty()) return fail(tally::Status::kMalformed, "empty message");
  if (bytes.size() % kWordBytes != 0) {
    return fail(tally::Status::kMalformed, "message size is not a multiple of 8 bytes");
  }
  if (bytes.size() > kMaxDatagramBytes + kWordBytes) {
    return fail(tally::Status::kMalformed, "message too large");
  }
  const auto* words = reinterpret_cast<const capnp::word*>(bytes.data());
  if (reinterpret_cast<uintptr_t>(bytes.data()) % alignof(capnp::word) != 0) {
    aligned_.resize(bytes.size() / kWordBytes);
    std::memcpy(aligned_.data(), bytes.data(), bytes.size());
    words = reinterpret_cast<const capnp::word*>(aligned_.data());
  }
  capnp::ReaderOptions options;
  // Generous for honest messages, tight against pointer-aliasing amplification.
  options.traversalLimitInWords = 4 * (bytes.size() / kWordBytes) + 64;
  options.nestingLimit = 8;
  try {
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(words, bytes.size() / kWordBytes), options);
    auto root = reader.getRoot<wire::ClientMessage>();
    version_ = root.getVersion();
    if (version_ == 0) return fail(tally::Status::kMalformed, "missing protocol version");
    switch (root.which()) {
      case wire::ClientMessage::CHECKS: {
        kind_ = MessageKind::kChecks;
        auto list = root.getChecks();
        checks_.reserve(list.size());
        for (auto c : list) {
          CheckRequestRef ref;
          ref.request_id = c.getRequestId();
          ref.user_id = AsView(c.getUserId());
          ref.endpoint = AsView(c.getEndpoint());
          ref.limit = c.getLimit();
          ref.window_ms = c.getWindowMs();
          ref.hits = c.getHits();
          checks_.push_back(ref);
        }
        return tally::Status::kOk;
      }
      case wire::ClientMessage::RESPONSES: {
        kind_ = MessageKind::kResponses;
        auto list = root.getResponses();
        responses_.reserve(list.size());
        for (auto r : list) {
          CheckResult result;
          result.request_id = r.getRequestId();
          result.status = FromWire(r.getStatus());
          result.allowed = r.getAllowed();
          result.remaining = r.getRemaining();
          result.retry_after_ms = r.getRetryAfterMs();
          result.reset_after_ms = r.getResetAfterMs();
          result.limit = r.getLimit();
          if (r.hasError()) result.error = r.getError().cStr();
          responses_.push_back(std::move(result));
        }
        return tally::Status::kOk;
      }
    }
    return fail(tally::Status::kUnsupportedVersion, "unknown message kind (newer protocol?)");
  } catch (const kj::Exception& e) {
    checks_.clear();
    responses_.clear();
    return fail(tally::Status::kMalformed, std::string("undecodable: ") + e.getDescription().cStr());
  }
}

void EncodeChecks(std::span<const CheckRequestRef> checks, std::vector<std::byte>* out) {
  capnp::MallocMessageBuilder builder(kj::arrayPtr(scratch_segment, std::size(scratch_segment)));
  auto root = builder.initRoot<wire::ClientMessage>();
  root.setVersion(wire::PROTOCOL_VERSION);
  auto list = root.initChecks(static_cast<unsigned>(checks.size()));
  for (size_t i = 0; i < checks.size(); ++i) {
    const auto& c = checks[i];
    auto w = list[static_cast<unsigned>(i)];
    w.setRequestId(c.request_id);
    w.setUserId(AsBytes(c.user_id));
    w.setEndpoint(AsBytes(c.endpoint));
    w.setLimit(c.limit);
    w.setWindowMs(c.window_ms);
    w.setHits(c.hits);
  }
  Flatten(builder, out);
}

void EncodeResponses(std::span<const CheckResult> responses, std::vector<std::byte>* out) {
  capnp::MallocMessageBuilder builder(kj::arrayPtr(scratch_segment, std::size(scratch_segment)));
  auto root = builder.initRoot<wire::ClientMessage>();
  root.setVersion(wire::PROTOCOL_VERSION);
  auto list = root.initResponses(static_cast<unsigned>(responses.size()));
  for (size_t i = 0; i < responses.size(); ++i) {
    const auto& r = responses[i];
    auto w = list[static_cast<unsigned>(i)];
    w.setRequestId(r.request_id);
    w.setStatus(static_cast<wire::Status>(static_cast<uint16_t>(r.status)));
    w.setAllowed(r.allowed);
    w.setRemaining(r.remaining);
    w.setRetryAfterMs(r.retry_after_ms);
    w.setResetAfterMs(r.reset_after_ms);
    w.setLimit(r.limit);
    if (!r.error.empty()) w.setError(r.error);
  }
  Flatten(builder, out);
}

size_t EncodedCheckBound(size_t user_id_bytes, size_t endpoint_bytes) {
  auto round_up = [](size_t n) { return (n + kWordBytes - 1) / kWordBytes * kWordBytes; };
  // Struct: 4 data words + 2 pointers; each Data blob padded to a word.
  return 6 * kWordBytes + round_up(user_id_bytes) + round_up(endpoint_bytes);
}

size_t EncodedResponseBound(size_t error_bytes) {
  // Struct: 6 data words + 1 pointer; Text adds a NUL before padding.
  return 7 * kWordBytes + (error_bytes + 1 + kWordBytes - 1) / kWordBytes * kWordBytes;
}

}  // namespace tally::wire

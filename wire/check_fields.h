// The CheckRequest / CheckResponse fields as both wire codecs write them:
// clients' messages (codec.cc) and forwards between nodes (node_codec.cc)
// carry the same structs, so they are filled and mapped in one place.
// Internal to wire/; not part of the public API.
#ifndef TALLY_WIRE_CHECK_FIELDS_H_
#define TALLY_WIRE_CHECK_FIELDS_H_

#include <cstdint>
#include <string_view>

#include "tally/check.capnp.h"
#include "tally/types.h"

namespace tally::wire {

// Cap'n Proto's generated enum mirrors tally::Status ordinal for ordinal.
static_assert(static_cast<uint16_t>(tally::Status::kOk) == static_cast<uint16_t>(wire::Status::OK));
static_assert(static_cast<uint16_t>(tally::Status::kInternal) ==
              static_cast<uint16_t>(wire::Status::INTERNAL));
static_assert(static_cast<uint16_t>(tally::Status::kPermissionDenied) ==
              static_cast<uint16_t>(wire::Status::PERMISSION_DENIED));

inline wire::Status StatusToWire(tally::Status s) {
  return static_cast<wire::Status>(static_cast<uint16_t>(s));
}

// A status a newer peer may send that we do not know reads as kInternal.
inline tally::Status StatusFromWire(wire::Status s) {
  auto v = static_cast<uint16_t>(s);
  if (v > static_cast<uint16_t>(tally::Status::kPermissionDenied)) return tally::Status::kInternal;
  return static_cast<tally::Status>(v);
}

inline kj::ArrayPtr<const kj::byte> AsWireBytes(std::string_view s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

// `with_endpoint` false leaves the endpoint null (a forward that refers to an
// earlier item's, wire/node.capnp's ForwardedCheck.endpointOfItem).
inline void FillCheck(const tally::CheckRequestRef& c, wire::CheckRequest::Builder w,
                      bool with_endpoint = true) {
  w.setRequestId(c.request_id);
  w.setUserId(AsWireBytes(c.user_id));
  if (with_endpoint) w.setEndpoint(AsWireBytes(c.endpoint));
  w.setLimit(c.limit);
  w.setWindowMs(c.window_ms);
  w.setHits(c.hits);
}

inline void FillResponse(const tally::CheckResult& r, wire::CheckResponse::Builder w) {
  w.setRequestId(r.request_id);
  w.setStatus(StatusToWire(r.status));
  w.setAllowed(r.allowed);
  w.setRemaining(r.remaining);
  w.setRetryAfterMs(r.retry_after_ms);
  w.setResetAfterMs(r.reset_after_ms);
  w.setLimit(r.limit);
  // Byte-exact (capnp's std::string conversion would cut at a NUL), as the
  // node codec reads it back.
  if (!r.error.empty()) w.setError(capnp::Text::Reader(r.error.c_str(), r.error.size()));
}

}  // namespace tally::wire

#endif  // TALLY_WIRE_CHECK_FIELDS_H_

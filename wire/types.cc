#include "tally/types.h"

#include <unistd.h>

#include <cstdlib>

namespace tally {

std::string_view StatusName(Status status) {
  switch (status) {
    case Status::kOk: return "ok";
    case Status::kInvalidArgument: return "invalid_argument";
    case Status::kOverCapacity: return "over_capacity";
    case Status::kMalformed: return "malformed";
    case Status::kUnsupportedVersion: return "unsupported_version";
    case Status::kUnavailable: return "unavailable";
    case Status::kInternal: return "internal";
    case Status::kPermissionDenied: return "permission_denied";
  }
  return "unknown";
}

Status ValidateRequest(const CheckRequestRef& request, std::string* why) {
  auto fail = [why](const char* reason) {
    if (why != nullptr) *why = reason;
    return Status::kInvalidArgument;
  };
  if (request.user_id.empty()) return fail("user_id is empty");
  if (request.endpoint.empty()) return fail("endpoint is empty");
  if (request.user_id.size() + request.endpoint.size() > kMaxKeyBytes) {
    return fail("user_id + endpoint exceed 4096 bytes");
  }
  if (request.window_ms < kMinWindowMs) return fail("window must be at least 1 ms");
  if (request.window_ms > kMaxWindowMs) return fail("window exceeds 31 days");
  if (request.limit > kMaxLimit) return fail("limit exceeds 4294967295");
  if (request.hits > kMaxLimit) return fail("hits exceed 4294967295");
  return Status::kOk;
}

std::string DefaultUnixDir() {
  if (::geteuid() == 0) return "/run/tally";
  if (const char* xdg = std::getenv("XDG_RUNTIME_DIR"); xdg != nullptr && *xdg != '\0') {
    return std::string(xdg) + "/tally";
  }
  return "/tmp/tally-" + std::to_string(::geteuid());
}

std::string DefaultUnixPath() { return DefaultUnixDir() + "/tally.sock"; }
std::string DefaultUnixSeqpacketPath() { return DefaultUnixDir() + "/tally.seq.sock"; }

std::string UnixSeqpacketPathFor(const std::string& unix_path) {
  const std::string suffix = ".sock";
  if (unix_path.size() > suffix.size() &&
      unix_path.compare(unix_path.size() - suffix.size(), suffix.size(), suffix) == 0) {
    return unix_path.substr(0, unix_path.size() - suffix.size()) + ".seq.sock";
  }
  return unix_path + ".seq";
}

}  // namespace tally

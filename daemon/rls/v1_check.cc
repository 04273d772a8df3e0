#include "daemon/rls/v1_check.h"

#include <boost/json.hpp>

#include "daemon/rls/rls_json.h"

namespace tally::rls {
namespace {

namespace json = boost::json;

bool Fail(std::string* error, std::string message) {
  *error = std::move(message);
  return false;
}

bool ReadU64(const json::object& o, std::string_view name, bool required, uint64_t* out,
             std::string* error) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || v->is_null()) {
    return required ? Fail(error, std::string(name) + " is required") : true;
  }
  if (v->is_uint64()) {
    *out = v->as_uint64();
  } else if (v->is_int64() && v->as_int64() >= 0) {
    *out = static_cast<uint64_t>(v->as_int64());
  } else {
    return Fail(error, std::string(name) + " must be a non-negative integer");
  }
  return true;
}

bool ReadString(const json::object& o, std::string_view name, std::string* out,
                std::string* error) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) return Fail(error, std::string(name) + " must be a string");
  *out = std::string(v->as_string());
  return true;
}

int64_t RetryAfter(uint64_t retry_after_ms) {
  return retry_after_ms == kNeverFits ? -1 : static_cast<int64_t>(retry_after_ms);
}

}  // namespace

bool ParseV1Request(std::string_view body, V1Request* request, std::string* error) {
  json::parse_options options;
  options.max_depth = 16;
  boost::system::error_code ec;
  json::value root = json::parse(body, ec, {}, options);
  if (ec) return Fail(error, "invalid JSON: " + ec.message());
  if (!root.is_object()) return Fail(error, "the request must be a JSON object");
  const json::object& o = root.as_object();
  const bool rules_form = o.contains("domain") || o.contains("descriptors");
  const bool explicit_form = o.contains("user_id") || o.contains("endpoint");
  if (rules_form && explicit_form) {
    return Fail(error, "give either user_id/endpoint/limit/window_ms or domain/descriptors");
  }
  if (rules_form) {
    request->form = V1Form::kRules;
    return ParseJsonRequest(body, &request->rules, error);
  }
  if (!explicit_form) {
    return Fail(error,
                "expected {\"user_id\",\"endpoint\",\"limit\",\"window_ms\",\"hits\"} or "
                "{\"domain\",\"descriptors\",\"hits_addend\"}");
  }
  for (const auto& kv : o) {
    const std::string_view k = kv.key();
    if (k != "user_id" && k != "endpoint" && k != "limit" && k != "window_ms" && k != "hits" &&
        k != "request_id") {
      return Fail(error, "unknown field '" + std::string(k) + "'");
    }
  }
  request->form = V1Form::kExplicit;
  CheckRequest& c = request->check;
  c = CheckRequest{};
  if (!ReadString(o, "user_id", &c.user_id, error) ||
      !ReadString(o, "endpoint", &c.endpoint, error) ||
      !ReadU64(o, "limit", true, &c.limit, error) ||
      !ReadU64(o, "window_ms", true, &c.window_ms, error) ||
      !ReadU64(o, "hits", false, &c.hits, error) ||
      !ReadU64(o, "request_id", false, &c.request_id, error)) {
    return false;
  }
  std::string why;
  if (ValidateRequest(c, &why) != Status::kOk) return Fail(error, why);
  return true;
}

std::string FormatV1Result(const CheckResult& r) {
  if (r.status != Status::kOk) {
    return FormatV1Error(r.status, r.error.empty() ? std::string(StatusName(r.status)) : r.error);
  }
  json::object o;
  o["allowed"] = r.allowed;
  o["remaining"] = r.remaining;
  o["retry_after_ms"] = RetryAfter(r.retry_after_ms);
  o["reset_after_ms"] = r.reset_after_ms;
  o["limit"] = r.limit;
  o["status"] = "ok";
  o["request_id"] = r.request_id;
  return json::serialize(o);
}

std::string FormatV1Answer(const RlsAnswer& answer) {
  json::object o;
  o["allowed"] = answer.overall_code != Code::kOverLimit;
  o["status"] = "ok";
  json::array descriptors;
  for (const RlsStatus& s : answer.statuses) {
    json::object d;
    const bool allowed = s.code != Code::kOverLimit;
    d["allowed"] = allowed;
    d["remaining"] = s.limit_remaining;
    // The mapping keeps one duration: the wait before a retry when denied,
    // else until the window frees what was counted.
    d["retry_after_ms"] = allowed ? 0 : s.duration_until_reset_ms;
    d["reset_after_ms"] = s.duration_until_reset_ms;
    if (s.current_limit) {
      d["limit"] = s.current_limit->requests_per_unit;
      d["name"] = s.current_limit->name;
      // Lower case, as the rules files spell units.
      std::string unit(rules::UnitName(s.current_limit->unit));
      for (char& c : unit) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
      d["unit"] = unit;
    } else {
      d["limit"] = nullptr;
    }
    descriptors.push_back(std::move(d));
  }
  o["descriptors"] = std::move(descriptors);
  return json::serialize(o);
}

std::string FormatV1Error(Status status, std::string_view error) {
  json::object o;
  o["allowed"] = false;
  o["status"] = StatusName(status);
  o["error"] = error;
  return json::serialize(o);
}

}  // namespace tally::rls

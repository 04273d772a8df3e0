#include "daemon/rls/v1_report.h"

#include <boost/json.hpp>
#include <cmath>

namespace tally::rls {
namespace {

namespace json = boost::json;

constexpr size_t kMaxNameBytes = 256;  // as rules::kMaxNameBytes and crdt::kMaxSelectorText

bool Fail(std::string* error, std::string message) {
  *error = std::move(message);
  return false;
}

bool ReadName(const json::object& o, std::string_view name, std::string* out, std::string* error) {
  const json::value* v = o.if_contains(name);
  if (v == nullptr || !v->is_string()) return Fail(error, std::string(name) + " must be a string");
  const json::string& s = v->as_string();
  if (s.empty()) return Fail(error, std::string(name) + " must not be empty");
  if (s.size() > kMaxNameBytes) {
    return Fail(error, std::string(name) + " is longer than " + std::to_string(kMaxNameBytes) +
                           " bytes");
  }
  *out = std::string(s);
  return true;
}

}  // namespace

bool ParseV1Report(std::string_view body, V1Report* report, std::string* error) {
  json::parse_options options;
  options.max_depth = 4;
  boost::system::error_code ec;
  json::value root = json::parse(body, ec, {}, options);
  if (ec) return Fail(error, "invalid JSON: " + ec.message());
  if (!root.is_object()) return Fail(error, "the report must be a JSON object");
  const json::object& o = root.as_object();
  for (const auto& kv : o) {
    const std::string_view k = kv.key();
    if (k != "domain" && k != "rule" && k != "value" && k != "count") {
      return Fail(error, "unknown field '" + std::string(k) + "'");
    }
  }
  *report = V1Report{};
  if (!ReadName(o, "domain", &report->domain, error) ||
      !ReadName(o, "rule", &report->rule, error)) {
    return false;
  }
  const json::value* value = o.if_contains("value");
  if (value == nullptr || !value->is_number()) return Fail(error, "value must be a number");
  report->value = value->to_number<double>();
  if (!std::isfinite(report->value)) return Fail(error, "value must be finite");
  if (const json::value* count = o.if_contains("count"); count != nullptr) {
    if (count->is_uint64()) {
      report->count = count->as_uint64();
    } else if (count->is_int64() && count->as_int64() >= 0) {
      report->count = static_cast<uint64_t>(count->as_int64());
    } else {
      return Fail(error, "count must be a non-negative integer");
    }
  }
  return true;
}

}  // namespace tally::rls

#include "daemon/rls/rls_json.h"

#include <boost/json.hpp>
#include <cstdio>
#include <limits>

namespace tally::rls {
namespace {

namespace json = boost::json;

const json::value* Field(const json::object& o, std::string_view snake, std::string_view camel) {
  if (const json::value* v = o.if_contains(snake)) return v;
  return o.if_contains(camel);
}

bool KnownFields(const json::object& o, std::initializer_list<std::string_view> names,
                 std::string_view where, std::string* error) {
  for (const auto& kv : o) {
    bool known = false;
    for (std::string_view n : names) known = known || kv.key() == n;
    if (!known) {
      *error = "unknown field '" + std::string(kv.key()) + "' in " + std::string(where);
      return false;
    }
  }
  return true;
}

bool ReadString(const json::value* v, std::string_view name, std::string* out, std::string* error) {
  if (v == nullptr || v->is_null()) return true;
  if (!v->is_string()) {
    *error = std::string(name) + " must be a string";
    return false;
  }
  *out = std::string(v->as_string());
  return true;
}

// proto3 JSON: a uint32 is a number or a decimal string.
bool ReadU32(const json::value* v, std::string_view name, uint32_t* out, std::string* error) {
  if (v == nullptr || v->is_null()) return true;
  uint64_t n = 0;
  if (v->is_uint64()) {
    n = v->as_uint64();
  } else if (v->is_int64() && v->as_int64() >= 0) {
    n = static_cast<uint64_t>(v->as_int64());
  } else if (v->is_string()) {
    const json::string& s = v->as_string();
    if (s.empty() || s.size() > 10) {
      *error = std::string(name) + " must be a uint32";
      return false;
    }
    for (char c : s) {
      if (c < '0' || c > '9') {
        *error = std::string(name) + " must be a uint32";
        return false;
      }
      n = n * 10 + static_cast<uint64_t>(c - '0');
    }
  } else {
    *error = std::string(name) + " must be a uint32";
    return false;
  }
  if (n > std::numeric_limits<uint32_t>::max()) {
    *error = std::string(name) + " exceeds 4294967295";
    return false;
  }
  *out = static_cast<uint32_t>(n);
  return true;
}

bool ReadUnit(const json::value* v, rules::Unit* out, std::string* error) {
  if (v == nullptr || v->is_null()) return true;
  if (v->is_string()) {
    std::optional<rules::Unit> unit = rules::ParseUnit(v->as_string());
    if (v->as_string() == "UNKNOWN") unit = rules::Unit::kUnknown;
    if (!unit) {
      *error = "unknown unit '" + std::string(v->as_string()) + "'";
      return false;
    }
    *out = *unit;
    return true;
  }
  if (v->is_int64() && v->as_int64() >= 0 && v->as_int64() <= 7) {
    *out = static_cast<rules::Unit>(v->as_int64());
    return true;
  }
  *error = "unit must be a unit name or number 0..7";
  return false;
}

const char* CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "OK";
    case Code::kOverLimit:
      return "OVER_LIMIT";
    default:
      return "UNKNOWN";
  }
}

}  // namespace

bool ParseJsonRequest(std::string_view body, RlsRequest* request, std::string* error) {
  *request = RlsRequest{};
  boost::system::error_code ec;
  json::parse_options options;
  options.max_depth = 16;
  json::value root = json::parse(body, ec, {}, options);
  if (ec) {
    *error = "invalid JSON: " + ec.message();
    return false;
  }
  if (!root.is_object()) {
    *error = "the body must be a JSON object";
    return false;
  }
  const json::object& o = root.as_object();
  if (!KnownFields(o, {"domain", "descriptors", "hits_addend", "hitsAddend"}, "the request",
                   error)) {
    return false;
  }
  if (!ReadString(o.if_contains("domain"), "domain", &request->domain, error)) return false;
  if (request->domain.size() > kMaxDomainBytes) {
    // RlsPlan::Build refuses it too; refused here like the other counts the
    // body can inflate, so an accepted request is within every bound.
    *error = "rate limit domain exceeds 256 bytes";
    return false;
  }
  if (!ReadU32(Field(o, "hits_addend", "hitsAddend"), "hits_addend", &request->hits_addend,
               error)) {
    return false;
  }
  const json::value* descriptors = o.if_contains("descriptors");
  if (descriptors == nullptr || descriptors->is_null()) return true;
  if (!descriptors->is_array()) {
    *error = "descriptors must be an array";
    return false;
  }
  if (descriptors->as_array().size() > kMaxDescriptors) {
    *error = "more than 64 descriptors";
    return false;
  }
  for (const json::value& dv : descriptors->as_array()) {
    if (!dv.is_object()) {
      *error = "a descriptor must be an object";
      return false;
    }
    const json::object& d = dv.as_object();
    if (!KnownFields(d, {"entries", "limit"}, "a descriptor", error)) return false;
    RlsDescriptor descriptor;
    if (const json::value* entries = d.if_contains("entries");
        entries != nullptr && !entries->is_null()) {
      if (!entries->is_array()) {
        *error = "entries must be an array";
        return false;
      }
      if (entries->as_array().size() > kMaxEntriesPerDescriptor) {
        *error = "a descriptor has more than 16 entries";
        return false;
      }
      for (const json::value& ev : entries->as_array()) {
        if (!ev.is_object()) {
          *error = "an entry must be an object";
          return false;
        }
        const json::object& e = ev.as_object();
        if (!KnownFields(e, {"key", "value"}, "an entry", error)) return false;
        RlsEntry entry;
        if (!ReadString(e.if_contains("key"), "key", &entry.key, error) ||
            !ReadString(e.if_contains("value"), "value", &entry.value, error)) {
          return false;
        }
        descriptor.entries.push_back(std::move(entry));
      }
    }
    if (const json::value* limit = d.if_contains("limit"); limit != nullptr && !limit->is_null()) {
      if (!limit->is_object()) {
        *error = "limit must be an object";
        return false;
      }
      const json::object& l = limit->as_object();
      if (!KnownFields(l, {"requests_per_unit", "requestsPerUnit", "unit"}, "a limit", error)) {
        return false;
      }
      rules::LimitOverride override;
      if (!ReadU32(Field(l, "requests_per_unit", "requestsPerUnit"), "requests_per_unit",
                   &override.requests_per_unit, error) ||
          !ReadUnit(l.if_contains("unit"), &override.unit, error)) {
        return false;
      }
      descriptor.limit = override;
    }
    request->descriptors.push_back(std::move(descriptor));
  }
  return true;
}

std::string FormatJsonAnswer(const RlsAnswer& answer) {
  json::object root;
  root["overallCode"] = CodeName(answer.overall_code);
  json::array statuses;
  for (const RlsStatus& s : answer.statuses) {
    json::object status;
    status["code"] = CodeName(s.code);
    if (s.current_limit) {
      json::object limit;
      if (!s.current_limit->name.empty()) limit["name"] = s.current_limit->name;
      if (s.current_limit->requests_per_unit != 0) {
        limit["requestsPerUnit"] = s.current_limit->requests_per_unit;
      }
      limit["unit"] = rules::UnitName(s.current_limit->unit);
      status["currentLimit"] = std::move(limit);
    }
    if (s.limit_remaining != 0) status["limitRemaining"] = s.limit_remaining;
    if (s.duration_until_reset_ms != 0) {
      char text[48];
      const uint64_t ms = s.duration_until_reset_ms;
      if (ms % 1000 == 0) {
        std::snprintf(text, sizeof(text), "%llus", static_cast<unsigned long long>(ms / 1000));
      } else {
        std::snprintf(text, sizeof(text), "%llu.%03llus",
                      static_cast<unsigned long long>(ms / 1000),
                      static_cast<unsigned long long>(ms % 1000));
      }
      status["durationUntilReset"] = text;
    }
    statuses.push_back(std::move(status));
  }
  root["statuses"] = std::move(statuses);
  return json::serialize(root);
}

std::string FormatJsonError(std::string_view message) {
  json::object o;
  o["error"] = message;
  return json::serialize(o);
}

}  // namespace tally::rls

// envoyproxy/ratelimit's YAML format, read strictly: every field is checked in
// its own place, unknown fields and bad values are errors with a position, and
// the walk is bounded (depth, descriptors, nodes visited, string lengths) so a
// hostile file costs little. yaml-cpp builds the node tree (its own parser
// stops at a nesting depth of 2000); this file never recurses deeper than
// kMaxDepth descriptor levels.
#include "rules/parse.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <exception>
#include <map>
#include <optional>
#include <sstream>
#include <string_view>

namespace tally::rules {
namespace {

constexpr std::array<std::string_view, 2> kTopFields = {"domain", "descriptors"};
constexpr std::array<std::string_view, 9> kDescriptorFields = {
    "key",         "value",           "rate_limit",      "rate_limits",    "descriptors",
    "shadow_mode", "detailed_metric", "value_to_metric", "share_threshold"};
constexpr std::array<std::string_view, 6> kRateLimitFields = {
    "unit", "requests_per_unit", "unlimited", "name", "replaces", "adaptive"};
constexpr std::array<std::string_view, 4> kAdaptiveFields = {"min", "max", "signal", "target"};
constexpr std::array<std::string_view, 1> kReplacesFields = {"name"};

template <size_t N>
std::string FieldList(const std::array<std::string_view, N>& fields) {
  std::string out;
  for (std::string_view f : fields) {
    if (!out.empty()) out += ", ";
    out += f;
  }
  return out;
}

template <size_t N>
bool Known(const std::array<std::string_view, N>& fields, std::string_view name) {
  return std::find(fields.begin(), fields.end(), name) != fields.end();
}

// Shown in messages: short, printable.
std::string Quote(std::string_view text) {
  std::string out = "'";
  for (char c : text.substr(0, 64)) {
    out += (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) ? '?' : c;
  }
  if (text.size() > 64) out += "...";
  out += "'";
  return out;
}

// Sees whether a second, non-empty YAML document follows the first, and
// where it starts (null mark if none). yaml-cpp's LoadAll can return empty
// documents forever on some malformed input, so this asks for two at most.
class DocumentCounter : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    start_ = mark;
    content_ = false;
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override { content_ = true; }
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {
    content_ = true;
  }
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {
    content_ = true;
  }
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {
    content_ = true;
  }
  void OnMapEnd() override {}

  const YAML::Mark& start() const { return start_; }
  bool content() const { return content_; }

 private:
  YAML::Mark start_ = YAML::Mark::null_mark();
  bool content_ = false;
};

YAML::Mark SecondDocument(const std::string& text) {
  std::istringstream in(text);
  YAML::Parser parser(in);
  DocumentCounter counter;
  if (!parser.HandleNextDocument(counter)) return YAML::Mark::null_mark();
  if (!parser.HandleNextDocument(counter) || !counter.content()) return YAML::Mark::null_mark();
  return counter.start();
}

class FileParser {
 public:
  FileParser(const RuleSource& source, ParsedFile* out, std::vector<RuleError>* errors)
      : source_(source), out_(out), errors_(errors) {}

  bool Run() {
    out_->source = source_.name;
    if (source_.text.size() > kMaxFileBytes) {
      FileError("file is larger than " + std::to_string(kMaxFileBytes) + " bytes");
      return Finish();
    }
    YAML::Node document;
    YAML::Mark second_document = YAML::Mark::null_mark();
    try {
      document = YAML::Load(source_.text);
      second_document = SecondDocument(source_.text);
    } catch (const YAML::Exception& e) {
      Error(e.mark, "YAML syntax: " + e.msg);
      return Finish();
    } catch (const std::exception& e) {
      FileError(std::string("YAML syntax: ") + e.what());
      return Finish();
    }
    try {
      if (!second_document.is_null()) {
        Error(second_document, "a rules file holds one YAML document (one domain)");
      } else if (document.IsNull()) {
        FileError("empty file: expected a map with 'domain' and 'descriptors'");
      } else {
        Top(document);
      }
    } catch (const std::exception& e) {
      // yaml-cpp throws on misuse only; keep it an error, never a crash.
      FileError(std::string("internal error reading YAML: ") + e.what());
    }
    return Finish();
  }

 private:
  bool Finish() {
    if (error_count_ > kMaxErrorsPerFile) {
      errors_->push_back(
          {source_.name, 0, 0,
           std::to_string(error_count_ - kMaxErrorsPerFile) + " more errors not shown"});
    }
    return error_count_ == 0;
  }

  void Error(const YAML::Mark& mark, std::string reason) {
    ++error_count_;
    if (error_count_ > kMaxErrorsPerFile) return;
    RuleError e{source_.name, 0, 0, std::move(reason)};
    if (!mark.is_null() && mark.line >= 0) {
      e.line = static_cast<uint32_t>(mark.line) + 1;
      e.column = static_cast<uint32_t>(std::max(mark.column, 0)) + 1;
    }
    errors_->push_back(std::move(e));
  }
  void FileError(std::string reason) { Error(YAML::Mark::null_mark(), std::move(reason)); }

  // Counts a visited node; false (with one error) once the budget is spent,
  // which also ends walks through cyclic or exponential alias graphs.
  bool Visit(const YAML::Node& node) {
    if (++nodes_visited_ <= kMaxYamlNodesPerFile) return true;
    if (!budget_reported_) {
      budget_reported_ = true;
      Error(node.Mark(), "file too complex: more than " + std::to_string(kMaxYamlNodesPerFile) +
                             " YAML nodes walked (aliases included)");
    }
    return false;
  }

  // A scalar's text, checked for type and length. `what` names it in errors.
  bool String(const YAML::Node& node, std::string_view what, size_t max_bytes, std::string* out) {
    if (!Visit(node)) return false;
    if (node.IsNull()) {
      out->clear();
      return true;
    }
    if (!node.IsScalar()) {
      Error(node.Mark(), std::string(what) + " must be a string");
      return false;
    }
    const std::string& text = node.Scalar();
    if (text.size() > max_bytes) {
      Error(node.Mark(),
            std::string(what) + " is longer than " + std::to_string(max_bytes) + " bytes");
      return false;
    }
    *out = text;
    return true;
  }

  // YAML 1.1 booleans, as envoyproxy/ratelimit's YAML library reads them.
  bool Bool(const YAML::Node& node, std::string_view what, bool* out) {
    if (!Visit(node)) return false;
    if (node.IsScalar()) {
      static constexpr std::array<std::string_view, 11> kTrue = {
          "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y"};
      static constexpr std::array<std::string_view, 11> kFalse = {
          "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N"};
      const std::string& text = node.Scalar();
      if (std::find(kTrue.begin(), kTrue.end(), text) != kTrue.end()) {
        *out = true;
        return true;
      }
      if (std::find(kFalse.begin(), kFalse.end(), text) != kFalse.end()) {
        *out = false;
        return true;
      }
    }
    Error(node.Mark(), std::string(what) + " must be true or false");
    return false;
  }

  bool Uint32(const YAML::Node& node, std::string_view what, uint32_t* out) {
    if (!Visit(node)) return false;
    if (node.IsScalar()) {
      const std::string& text = node.Scalar();
      uint64_t value = 0;
      bool ok = !text.empty() && text.size() <= 10;
      for (char c : text) {
        if (c < '0' || c > '9') {
          ok = false;
          break;
        }
        value = value * 10 + static_cast<uint64_t>(c - '0');
      }
      if (ok && value <= UINT32_MAX) {
        *out = static_cast<uint32_t>(value);
        return true;
      }
    }
    Error(node.Mark(), std::string(what) + " must be a whole number from 0 to 4294967295");
    return false;
  }

  // A plain decimal (digits, at most one '.', at least one digit; no sign,
  // exponent, inf or nan), at most 32 characters: what a target is written as.
  bool Decimal(const YAML::Node& node, std::string_view what, double* out) {
    if (!Visit(node)) return false;
    if (node.IsScalar()) {
      const std::string& text = node.Scalar();
      size_t digits = 0, dots = 0;
      for (char c : text) {
        if (c >= '0' && c <= '9') {
          ++digits;
        } else if (c == '.') {
          ++dots;
        } else {
          digits = 0;
          break;
        }
      }
      if (digits > 0 && dots <= 1 && text.size() <= 32) {
        double value = 0;
        const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
        if (ec == std::errc() && end == text.data() + text.size() && std::isfinite(value)) {
          *out = value;
          return true;
        }
      }
    }
    Error(node.Mark(), std::string(what) + " must be a decimal number such as 250 or 0.05");
    return false;
  }

  // Iterates a map's fields: checks each name is a known, unrepeated string
  // and calls `field(name, key_node, value_node)`. False on any error.
  template <size_t N, typename Fn>
  bool Fields(const YAML::Node& map, std::string_view what,
              const std::array<std::string_view, N>& known, Fn&& field) {
    if (!Visit(map)) return false;
    if (!map.IsMap()) {
      Error(map.Mark(), std::string(what) + " must be a map");
      return false;
    }
    bool ok = true;
    std::array<bool, N> seen{};
    for (auto it = map.begin(); it != map.end(); ++it) {
      // Copies: the iterator's -> yields a temporary proxy.
      const YAML::Node key = it->first;
      if (!Visit(key)) return false;
      if (!key.IsScalar()) {
        Error(key.Mark(), "field names in " + std::string(what) + " must be strings");
        ok = false;
        continue;
      }
      const std::string& name = key.Scalar();
      const size_t index = static_cast<size_t>(
          std::find(known.begin(), known.end(), std::string_view(name)) - known.begin());
      if (index == N) {
        Error(key.Mark(), "unknown field " + Quote(name) + " in " + std::string(what) +
                              " (expected one of: " + FieldList(known) + ")");
        ok = false;
        continue;
      }
      if (seen[index]) {
        Error(key.Mark(), "field " + Quote(name) + " appears twice in " + std::string(what));
        ok = false;
        continue;
      }
      seen[index] = true;
      const YAML::Node value = it->second;
      // A null value's mark can be unset; report at the field name then.
      if (!field(std::string_view(name), key, value)) ok = false;
    }
    return ok;
  }

  void Top(const YAML::Node& root) {
    bool has_domain = false;
    std::optional<YAML::Node> descriptors;
    Fields(root, "the file's top level", kTopFields,
           [&](std::string_view name, const YAML::Node& key, const YAML::Node& value) {
             if (name == "domain") {
               has_domain = true;
               out_->domain_line = static_cast<uint32_t>(std::max(key.Mark().line, 0)) + 1;
               out_->domain_column = static_cast<uint32_t>(std::max(key.Mark().column, 0)) + 1;
               if (!String(value, "domain", kMaxDomainBytes, &out_->domain)) return false;
               if (out_->domain.empty()) {
                 Error(key.Mark(), "domain must not be empty");
                 return false;
               }
               return true;
             }
             descriptors.emplace(value);
             return true;
           });
    if (!has_domain && root.IsMap()) Error(root.Mark(), "missing field 'domain'");
    if (descriptors) DescriptorList(*descriptors, 1, &out_->descriptors);
  }

  // A `descriptors:` list at nesting level `depth` (1 = top).
  bool DescriptorList(const YAML::Node& list, size_t depth, std::vector<ParsedDescriptor>* out) {
    if (!Visit(list)) return false;
    if (list.IsNull()) return true;
    if (!list.IsSequence()) {
      Error(list.Mark(), "descriptors must be a list of maps");
      return false;
    }
    if (depth > kMaxDepth) {
      Error(list.Mark(), "descriptors nested deeper than " + std::to_string(kMaxDepth) + " levels");
      return false;
    }
    bool ok = true;
    for (auto it = list.begin(); it != list.end(); ++it) {
      if (out_->descriptor_count >= kMaxDescriptorsPerFile) {
        Error(it->Mark(),
              "more than " + std::to_string(kMaxDescriptorsPerFile) + " descriptors in one file");
        return false;
      }
      ++out_->descriptor_count;
      ParsedDescriptor d;
      if (Descriptor(*it, depth, &d)) {
        out->push_back(std::move(d));
      } else {
        ok = false;
      }
      if (budget_reported_) return false;
    }
    return ok;
  }

  bool Descriptor(const YAML::Node& map, size_t depth, ParsedDescriptor* d) {
    const YAML::Mark mark = map.Mark();
    d->line = mark.line >= 0 ? static_cast<uint32_t>(mark.line) + 1 : 0;
    d->column = mark.column >= 0 ? static_cast<uint32_t>(mark.column) + 1 : 0;
    // yaml-cpp's Node::operator= writes through to the document, so nodes
    // are kept in optionals (copy-constructed) and positions as marks.
    bool has_key = false, has_rate_limit = false;
    YAML::Mark share_mark = YAML::Mark::null_mark();
    std::optional<YAML::Node> children;
    bool ok = Fields(map, "a descriptor", kDescriptorFields,
                     [&](std::string_view name, const YAML::Node& key, const YAML::Node& value) {
                       if (name == "key") {
                         has_key = true;
                         if (!String(value, "key", kMaxRuleKeyBytes, &d->key)) return false;
                         if (d->key.empty()) {
                           Error(key.Mark(), "descriptor key must not be empty");
                           return false;
                         }
                         return true;
                       }
                       if (name == "value")
                         return String(value, "value", kMaxRuleValueBytes, &d->value);
                       if (name == "rate_limit" || name == "rate_limits") {
                         if (has_rate_limit) {
                           Error(key.Mark(),
                                 "a descriptor takes either rate_limit or rate_limits, not both");
                           return false;
                         }
                         has_rate_limit = true;
                         if (name == "rate_limit")
                           return RateLimit(value, key, /*in_list=*/false, d);
                         return RateLimitList(value, key, d);
                       }
                       if (name == "descriptors") {
                         children.emplace(value);
                         return true;
                       }
                       if (name == "shadow_mode")
                         return Bool(value, "shadow_mode", &d->shadow_mode);
                       if (name == "detailed_metric")
                         return Bool(value, "detailed_metric", &d->detailed_metric);
                       if (name == "value_to_metric")
                         return Bool(value, "value_to_metric", &d->value_to_metric);
                       share_mark = key.Mark();
                       return Bool(value, "share_threshold", &d->share_threshold);
                     });
    if (!has_key && map.IsMap()) {
      Error(mark, "descriptor has no 'key'");
      ok = false;
    }
    if (d->share_threshold && (d->value.empty() || d->value.back() != '*')) {
      Error(share_mark, "share_threshold needs a wildcard value (ending with '*')");
      ok = false;
    }
    if (children && !DescriptorList(*children, depth + 1, &d->children)) ok = false;
    return ok;
  }

  bool RateLimitList(const YAML::Node& list, const YAML::Node& key, ParsedDescriptor* d) {
    if (!Visit(list)) return false;
    if (!list.IsSequence() || list.size() == 0) {
      Error(list.IsNull() ? key.Mark() : list.Mark(),
            "rate_limits must be a non-empty list of rate_limit maps");
      return false;
    }
    if (list.size() > kMaxLimitsPerDescriptor) {
      Error(list.Mark(),
            "more than " + std::to_string(kMaxLimitsPerDescriptor) + " limits on one descriptor");
      return false;
    }
    bool ok = true;
    for (auto it = list.begin(); it != list.end(); ++it) {
      if (!RateLimit(*it, key, /*in_list=*/true, d)) ok = false;
    }
    return ok;
  }

  // One rate_limit map, appended to d->limits.
  bool RateLimit(const YAML::Node& map, const YAML::Node& key, bool in_list, ParsedDescriptor* d) {
    if (map.IsNull()) {
      Error(key.Mark(), "rate_limit is empty: give unit and requests_per_unit, or unlimited");
      return false;
    }
    Limit limit;
    bool has_unit = false, has_requests = false;
    YAML::Mark unit_mark = map.Mark(), requests_mark = map.Mark(), unlimited_mark = map.Mark(),
               adaptive_mark = map.Mark();
    bool ok = Fields(
        map, "a rate_limit", kRateLimitFields,
        [&](std::string_view name, const YAML::Node& field_key, const YAML::Node& value) {
          if (name == "unit") {
            has_unit = true;
            unit_mark = value.Mark();
            std::string text;
            if (!String(value, "unit", 32, &text)) return false;
            const std::optional<Unit> unit = ParseUnit(text);
            if (!unit) {
              Error(value.Mark(), "invalid rate limit unit " + Quote(text) +
                                      " (expected second, minute, hour, day, week or month)");
              return false;
            }
            if (UnitWindowMs(*unit) == 0) {
              Error(value.Mark(),
                    "unit " + Quote(text) + " is longer than tally's longest window (31 days)");
              return false;
            }
            limit.unit = *unit;
            limit.window_ms = UnitWindowMs(*unit);
            return true;
          }
          if (name == "requests_per_unit") {
            has_requests = true;
            requests_mark = field_key.Mark();
            return Uint32(value, "requests_per_unit", &limit.requests_per_unit);
          }
          if (name == "unlimited") {
            unlimited_mark = field_key.Mark();
            return Bool(value, "unlimited", &limit.unlimited);
          }
          if (name == "name") {
            if (!String(value, "name", kMaxNameBytes, &limit.name)) return false;
            return true;
          }
          if (name == "adaptive") {
            adaptive_mark = field_key.Mark();
            return Adaptive(value, field_key, &limit);
          }
          return Replaces(value, field_key, &limit.replaces);
        });
    if (!ok) return false;
    const YAML::Mark at = map.Mark();
    if (limit.unlimited) {
      if (in_list) {
        Error(unlimited_mark,
              "unlimited is not allowed in rate_limits: use rate_limit: {unlimited: true}");
        return false;
      }
      if (has_unit) {
        Error(unit_mark, "should not specify rate limit unit when unlimited");
        return false;
      }
      if (has_requests) {
        Error(requests_mark, "should not specify requests_per_unit when unlimited");
        return false;
      }
      limit.window_ms = 0;
    } else {
      if (!has_unit) {
        Error(at, "rate_limit has no 'unit'");
        ok = false;
      }
      if (!has_requests) {
        Error(at, "rate_limit has no 'requests_per_unit' (write 0 to refuse every request)");
        ok = false;
      }
      if (!ok) return false;
    }
    if (limit.adaptive && !AdaptiveFits(limit, adaptive_mark)) return false;
    for (const std::string& replaced : limit.replaces) {
      if (!limit.name.empty() && replaced == limit.name) {
        Error(at,
              "replaces should not contain the name of the same rate limit " + Quote(limit.name));
        return false;
      }
    }
    for (const Limit& other : d->limits) {
      if (other.unit == limit.unit) {
        Error(unit_mark, "two limits with unit " + std::string(UnitName(limit.unit)) +
                             " on one descriptor (they would share one counter)");
        return false;
      }
    }
    d->limits.push_back(std::move(limit));
    return true;
  }

  // An `adaptive:` block's own fields (docs/ENVOY.md, "Load-adaptive
  // limits"); how it fits its limit is AdaptiveFits.
  bool Adaptive(const YAML::Node& map, const YAML::Node& key, Limit* limit) {
    if (map.IsNull()) {
      Error(key.Mark(), "adaptive is empty: give min, max, signal and target");
      return false;
    }
    AdaptiveSpec spec;
    bool has_min = false, has_max = false, has_signal = false, has_target = false;
    YAML::Mark target_mark = map.Mark();
    bool ok = Fields(
        map, "an adaptive block", kAdaptiveFields,
        [&](std::string_view name, const YAML::Node& field_key, const YAML::Node& value) {
          if (name == "min") {
            has_min = true;
            if (!Uint32(value, "adaptive min", &spec.min)) return false;
            if (spec.min == 0) {
              Error(value.Mark(), "adaptive min must be at least 1 (0 would refuse every request)");
              return false;
            }
            return true;
          }
          if (name == "max") {
            has_max = true;
            return Uint32(value, "adaptive max", &spec.max);
          }
          if (name == "signal") {
            has_signal = true;
            std::string text;
            if (!String(value, "adaptive signal", 32, &text)) return false;
            const std::optional<AdaptiveSignal> signal = ParseAdaptiveSignal(text);
            if (!signal) {
              Error(value.Mark(), "unknown adaptive signal " + Quote(text) +
                                      " (expected latency_ms or error_rate)");
              return false;
            }
            spec.signal = *signal;
            return true;
          }
          has_target = true;
          target_mark = value.Mark().is_null() ? field_key.Mark() : value.Mark();
          return Decimal(value, "adaptive target", &spec.target);
        });
    if (!ok) return false;
    const YAML::Mark at = map.Mark();
    for (const auto& [has, field] : {std::pair<bool, const char*>{has_min, "min"},
                                     {has_max, "max"},
                                     {has_signal, "signal"},
                                     {has_target, "target"}}) {
      if (!has) {
        Error(at, std::string("adaptive has no '") + field + "'");
        ok = false;
      }
    }
    if (!ok) return false;
    if (spec.min > spec.max) {
      Error(at, "adaptive min " + std::to_string(spec.min) + " is above max " +
                    std::to_string(spec.max));
      return false;
    }
    if (spec.signal == AdaptiveSignal::kErrorRate && !(spec.target > 0 && spec.target < 1)) {
      Error(target_mark, "an error_rate target must be above 0 and below 1");
      return false;
    }
    if (spec.signal == AdaptiveSignal::kLatencyMs &&
        !(spec.target > 0 && spec.target <= kMaxAdaptiveLatencyTargetMs)) {
      Error(target_mark, "a latency_ms target must be above 0 and at most 3600000 (one hour)");
      return false;
    }
    limit->adaptive = spec;
    return true;
  }

  // How a parsed adaptive block fits the rest of its limit, and the
  // uniqueness of its name in the file (one domain): the name is the
  // controller's identity.
  bool AdaptiveFits(const Limit& limit, const YAML::Mark& at) {
    const AdaptiveSpec& spec = *limit.adaptive;
    if (limit.unlimited) {
      Error(at, "an unlimited rate limit cannot be adaptive");
      return false;
    }
    if (limit.name.empty()) {
      Error(at, "an adaptive rate limit needs a 'name' (its controller's identity)");
      return false;
    }
    if (limit.requests_per_unit < spec.min || limit.requests_per_unit > spec.max) {
      Error(at, "requests_per_unit " + std::to_string(limit.requests_per_unit) +
                    " (the adaptive limit's start) must be within min " + std::to_string(spec.min) +
                    " and max " + std::to_string(spec.max));
      return false;
    }
    if (out_->adaptive_count >= kMaxAdaptiveLimits) {
      Error(at, "more than " + std::to_string(kMaxAdaptiveLimits) + " adaptive rate limits");
      return false;
    }
    const auto [it, inserted] = adaptive_names_.emplace(limit.name, at);
    if (!inserted) {
      Error(at, "two adaptive rate limits named " + Quote(limit.name) +
                    " in one domain (also at line " +
                    std::to_string(std::max(it->second.line, 0) + 1) + ")");
      return false;
    }
    ++out_->adaptive_count;
    return true;
  }

  bool Replaces(const YAML::Node& list, const YAML::Node& key, std::vector<std::string>* out) {
    if (!Visit(list)) return false;
    if (list.IsNull()) return true;
    if (!list.IsSequence()) {
      Error(list.Mark(), "replaces must be a list of {name: ...} maps");
      return false;
    }
    if (list.size() > kMaxReplacesPerLimit) {
      Error(list.Mark(),
            "more than " + std::to_string(kMaxReplacesPerLimit) + " replaces on one rate limit");
      return false;
    }
    bool ok = true;
    for (auto it = list.begin(); it != list.end(); ++it) {
      std::string name;
      bool has_name = false;
      const YAML::Node entry = *it;
      bool entry_ok = Fields(entry, "a replaces entry", kReplacesFields,
                             [&](std::string_view, const YAML::Node&, const YAML::Node& value) {
                               has_name = true;
                               return String(value, "replaces name", kMaxNameBytes, &name);
                             });
      if (entry_ok && (!has_name || name.empty())) {
        Error(entry.Mark(), "should not have an empty replaces entry");
        entry_ok = false;
      }
      if (entry_ok) {
        out->push_back(std::move(name));
      } else {
        ok = false;
      }
    }
    return ok;
  }

  const RuleSource& source_;
  ParsedFile* out_;
  std::vector<RuleError>* errors_;
  size_t error_count_ = 0;
  size_t nodes_visited_ = 0;
  std::map<std::string, YAML::Mark, std::less<>> adaptive_names_;  // name -> its block
  bool budget_reported_ = false;
};

}  // namespace

bool ParseRuleFile(const RuleSource& source, ParsedFile* out, std::vector<RuleError>* errors) {
  *out = ParsedFile{};
  return FileParser(source, out, errors).Run();
}

}  // namespace tally::rules

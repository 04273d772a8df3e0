// The HTTP door's JSON bodies (daemon/rls/): POST /json (ParseJsonRequest)
// and POST /v1/check (ParseV1Request), both untrusted client input.
// Properties: neither parser crashes, throws or allocates without bound; an
// accepted /json request stays within the documented limits (descriptors,
// entries per descriptor, domain bytes); an accepted explicit /v1/check is a
// valid check (ValidateRequest) and an accepted rules form is what /json reads
// from the same text; every refusal carries a reason, and the error answer
// built from that reason (untrusted bytes echoed back) is JSON that parses
// and gives the reason back unchanged.
// Seeds: fuzz/corpus/http_json_fuzz/. scripts/fuzz.sh http_json_fuzz SECONDS.
#include <boost/json.hpp>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "daemon/rls/rls_json.h"
#include "daemon/rls/v1_check.h"
#include "fuzz/fuzz_check.h"

namespace {

// The error answer must carry `reason` verbatim, however it was escaped.
void CheckErrorAnswer(const std::string& answer, const std::string& reason) {
  boost::system::error_code ec;
  boost::json::value value = boost::json::parse(answer, ec);
  FUZZ_CHECK(!ec && value.is_object());
  const boost::json::value* error = value.as_object().if_contains("error");
  FUZZ_CHECK(error != nullptr && error->is_string());
  FUZZ_CHECK(std::string_view(error->as_string()) == reason);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);

  tally::rls::RlsRequest json;
  std::string json_error;
  const bool json_ok = tally::rls::ParseJsonRequest(body, &json, &json_error);
  if (json_ok) {
    FUZZ_CHECK(json.descriptors.size() <= tally::rls::kMaxDescriptors);
    FUZZ_CHECK(json.domain.size() <= tally::rls::kMaxDomainBytes);
    for (const tally::rls::RlsDescriptor& d : json.descriptors) {
      FUZZ_CHECK(d.entries.size() <= tally::rls::kMaxEntriesPerDescriptor);
    }
  } else {
    FUZZ_CHECK(!json_error.empty());
    CheckErrorAnswer(tally::rls::FormatJsonError(json_error), json_error);
  }

  tally::rls::V1Request v1;
  std::string v1_error;
  if (tally::rls::ParseV1Request(body, &v1, &v1_error)) {
    if (v1.form == tally::rls::V1Form::kExplicit) {
      std::string why;
      FUZZ_CHECK(tally::ValidateRequest(v1.check, &why) == tally::Status::kOk);
    } else {
      FUZZ_CHECK(v1.rules.descriptors.size() <= tally::rls::kMaxDescriptors);
      FUZZ_CHECK(v1.rules.domain.size() <= tally::rls::kMaxDomainBytes);
    }
  } else {
    FUZZ_CHECK(!v1_error.empty());
    CheckErrorAnswer(tally::rls::FormatV1Error(tally::Status::kInvalidArgument, v1_error),
                     v1_error);
  }
  return 0;
}

// CheckRequests for tests, built one named field at a time.
#ifndef TALLY_TESTS_SUPPORT_REQUESTS_H_
#define TALLY_TESTS_SUPPORT_REQUESTS_H_

#include <cstdint>
#include <string>
#include <utility>

#include "tally/types.h"

namespace tally::testing {

// A CheckRequest whose setters each return a changed copy, so a test file
// names its usual request once and varies it per call:
//
//   const CheckRequestBuilder kRequest = CheckRequestBuilder().Endpoint("/e");
//   client->Check(kRequest.Id(1).User("a"));
//   core.Check(kRequest.Limit(3).WindowMs(1000).Hits(0), AtMs(10'000));
//
// It is a CheckRequest, so it goes wherever one (or a CheckRequestRef) is taken.
class CheckRequestBuilder : public CheckRequest {
 public:
  // user "alice" on endpoint "/api", a limit of 10 per 60 s window, 1 hit, and
  // request id 0 (no deduplication).
  CheckRequestBuilder() : CheckRequest{0, "alice", "/api", 10, 60'000, 1} {}

  CheckRequestBuilder Id(uint64_t id) const {
    CheckRequestBuilder b = *this;
    b.request_id = id;
    return b;
  }
  CheckRequestBuilder User(std::string user) const {
    CheckRequestBuilder b = *this;
    b.user_id = std::move(user);
    return b;
  }
  CheckRequestBuilder Endpoint(std::string name) const {
    CheckRequestBuilder b = *this;
    b.endpoint = std::move(name);
    return b;
  }
  CheckRequestBuilder Limit(uint64_t hits_per_window) const {
    CheckRequestBuilder b = *this;
    b.limit = hits_per_window;
    return b;
  }
  CheckRequestBuilder WindowMs(uint64_t window_length_ms) const {
    CheckRequestBuilder b = *this;
    b.window_ms = window_length_ms;
    return b;
  }
  CheckRequestBuilder Hits(uint64_t count) const {
    CheckRequestBuilder b = *this;
    b.hits = count;
    return b;
  }
};

}  // namespace tally::testing

#endif  // TALLY_TESTS_SUPPORT_REQUESTS_H_

#include "daemon/io/check_gateway.h"

#include <cassert>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

#include "daemon/io/cluster_driver.h"
#include "daemon/io/limit_door.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/status_trackers.h"
#include "wire/codec.h"

namespace tally::io {
namespace {

std::vector<CheckResult> Failed(std::span<const CheckRequestRef> checks, Status status,
                                const std::string& error) {
  std::vector<CheckResult> results(checks.size());
  for (size_t i = 0; i < checks.size(); ++i) {
    results[i].request_id = checks[i].request_id;
    results[i].status = status;
    results[i].error = error;
  }
  return results;
}

// Collects the Node's reply to one checks message. The driver holds the only
// reference until the reply is sent (or the token expires): the destructor is
// the "no answer" path.
class GatewaySink : public ReplySink {
 public:
  GatewaySink(size_t expected, CheckGateway::Done done)
      : expected_(expected), done_(std::move(done)) {
    results_.reserve(expected);
  }
  ~GatewaySink() override {
    if (!finished_) Finish(Status::kUnavailable, "no answer from the cluster");
  }

  void SendReply(std::span<const std::byte> bytes) override {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return;
    wire::ClientMessageReader reader;
    std::string why;
    if (reader.Decode(bytes, &why) != Status::kOk ||
        reader.kind() != wire::MessageKind::kResponses) {
      Finish(Status::kInternal, "undecodable reply: " + why);
      return;
    }
    for (const CheckResult& r : reader.responses()) {
      // A whole-message error (malformed, unsupported) is one result with id 0.
      if (r.status == Status::kMalformed || r.status == Status::kUnsupportedVersion) {
        Finish(r.status, r.error);
        return;
      }
      results_.push_back(r);
    }
    if (results_.size() >= expected_) {
      results_.resize(expected_);
      finished_ = true;
      done_(results_);
    }
  }

 private:
  void Finish(Status status, const std::string& error) {
    finished_ = true;
    results_.assign(expected_, CheckResult{});
    for (CheckResult& r : results_) {
      r.status = status;
      r.error = error;
    }
    done_(results_);
  }

  std::mutex mu_;
  const size_t expected_;
  CheckGateway::Done done_;
  std::vector<CheckResult> results_;
  bool finished_ = false;
};

}  // namespace

CheckGateway::CheckGateway(Limiter* limiter, ClusterDriver* cluster, BusiestKeys* keys,
                           LocalOverrides* overrides)
    : limiter_(limiter), cluster_(cluster), keys_(keys), overrides_(overrides) {
  assert((limiter_ == nullptr) != (cluster_ == nullptr));
}

void CheckGateway::Decide(std::span<const CheckRequestRef> checks, Done done) {
  size_t bytes = wire::kMessageOverheadBytes;
  for (const CheckRequestRef& c : checks) {
    bytes += wire::EncodedCheckBound(c.user_id.size(), c.endpoint.size());
  }
  if (checks.empty() || bytes > wire::kMaxDatagramBytes) {
    done(Failed(checks, Status::kInvalidArgument,
                checks.empty() ? "no checks" : "too many or too large checks for one request"));
    return;
  }
  if (keys_ != nullptr) keys_->Offer(checks);
  const Instant now = ReadClock();
  if (limiter_ != nullptr) {
    thread_local std::vector<CheckResult> results;
    thread_local std::vector<CheckRequestRef> overridden;
    if (overrides_ != nullptr && overrides_->Apply(checks, &overridden)) {
      limiter_->CheckBatch(overridden, now, &results);
    } else {
      limiter_->CheckBatch(checks, now, &results);
    }
    done(results);
    return;
  }
  std::vector<std::byte> message;
  wire::EncodeChecks(checks, &message);
  ReplyTarget target;
  target.sink = std::make_shared<GatewaySink>(checks.size(), std::move(done));
  const ClientDatagram datagram{message, &target};
  cluster_->HandleClientDatagrams(std::span<const ClientDatagram>(&datagram, 1), now);
}

LimiterStats CheckGateway::limiter_stats() const {
  return limiter_ != nullptr ? limiter_->GetStats() : cluster_->limiter_stats();
}

}  // namespace tally::io

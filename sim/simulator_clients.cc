// Client traffic: the workload's check datagrams sent to an entry host, and
// the replies matched back to the requests they answer.
#include "sim/simulator.h"

namespace tally::sim {

void Simulator::ClientArrival(TrueNs t) {
  if (entry_hosts_.empty()) return;
  workload_.MakeBatch(&batch_);
  const uint32_t entry = entry_hosts_[rng_.Below(entry_hosts_.size())];
  const uint64_t token = datagram_requests_.size() + 1;
  std::vector<uint64_t> ids;
  refs_.clear();
  for (const Workload::Check& c : batch_) {
    const KeySpec& k = workload_.keys()[c.key];
    RequestRecord r;
    r.request_id = record_.requests.size() + 1;
    r.key = static_cast<uint32_t>(c.key);
    r.entry_host = entry;
    r.entry_generation = hosts_[entry].generation;
    r.hits = c.hits;
    r.sent_ns = t;
    record_.requests.push_back(r);
    ids.push_back(r.request_id);
    refs_.push_back(k.Check(r.request_id, c.hits));
  }
  datagram_requests_.push_back(std::move(ids));
  const uint64_t pi = AllocPacket();
  Packet& p = packets_[pi];
  p.from = UINT32_MAX;
  p.token = token;
  wire::EncodeChecks(refs_, &p.bytes);
  Host& h = hosts_[entry];
  if (cost_active_ && t < config_.cost_to_ns) ++h.client_datagrams;
  // The client sits next to its node: the datagram arrives now, never lost.
  Input(h, Event{t, seq_++, EventKind::kClient, entry, pi});
}

void Simulator::RecordReply(const core::Outbox::ClientReply& reply, TrueNs t) {
  Trace(7, t, reply.reply_token, HashBytes(reply.bytes));
  if (reply.reply_token == 0 || reply.reply_token > datagram_requests_.size()) return;
  const std::vector<uint64_t>& ids = datagram_requests_[reply.reply_token - 1];
  std::string why;
  if (reply_reader_.Decode(reply.bytes, &why) != Status::kOk ||
      reply_reader_.kind() != wire::MessageKind::kResponses) {
    for (uint64_t id : ids) {
      RequestRecord& r = record_.requests[id - 1];
      ++r.replies;
      r.status = Status::kMalformed;
    }
    return;
  }
  const auto& responses = reply_reader_.responses();
  for (size_t i = 0; i < ids.size(); ++i) {
    RequestRecord& r = record_.requests[ids[i] - 1];
    ++r.replies;
    if (r.replies > 1) continue;
    r.replied_ns = t;
    if (i >= responses.size() || responses[i].request_id != r.request_id) {
      r.status = Status::kInternal;  // reply does not match the request
      continue;
    }
    r.allowed = responses[i].allowed;
    r.status = responses[i].status;
  }
}

}  // namespace tally::sim

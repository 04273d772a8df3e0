// ClusterDriver: gossip UDP. Peer datagrams received in recvmmsg batches and
// handed to the Node; peer packets sealed and sent (datagrams in one
// sendmmsg, stream packets to their TCP connection).
#include <sys/socket.h>

#include "daemon/io/cluster_driver_impl.h"
#include "daemon/io/message_processor.h"
#include "daemon/io/sockets.h"

namespace tally::io {
namespace {

constexpr int kMaxGossipBatchesPerWakeup = 8;

}  // namespace

void ClusterDriver::Impl::SendPeers(std::vector<core::Outbox::PeerPacket>& packets) {
  if (packets.empty()) return;
  std::vector<sockaddr_storage> addrs;
  std::vector<socklen_t> lens;
  std::vector<iovec> iov;
  std::vector<size_t> datagram_index;
  addrs.reserve(packets.size());
  const int64_t wall_ms = ReadClock().wall.count();
  for (size_t i = 0; i < packets.size(); ++i) {
    core::Outbox::PeerPacket& p = packets[i];
    peer_auth->SealInPlace(&p.bytes, wall_ms);
    if (p.stream) {
      EnqueueStream(p.to_address, std::move(p.bytes));
      continue;
    }
    sockaddr_storage addr;
    socklen_t len = 0;
    if (!ParseSockaddr(p.to_address, &addr, &len)) {
      peer_bad_address.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    addrs.push_back(addr);
    lens.push_back(len);
    datagram_index.push_back(i);
  }
  if (datagram_index.empty()) return;
  std::vector<mmsghdr> msgs(datagram_index.size());
  iov.resize(datagram_index.size());
  uint64_t bytes = 0;
  for (size_t k = 0; k < datagram_index.size(); ++k) {
    core::Outbox::PeerPacket& p = packets[datagram_index[k]];
    iov[k] = iovec{p.bytes.data(), p.bytes.size()};
    bytes += p.bytes.size();
    msghdr& h = msgs[k].msg_hdr;
    h = msghdr{};
    h.msg_name = &addrs[k];
    h.msg_namelen = lens[k];
    h.msg_iov = &iov[k];
    h.msg_iovlen = 1;
  }
  auto [sent, failed] = SendDatagrams(gossip_udp.native_handle(), msgs);
  gossip_datagrams_out.fetch_add(sent, std::memory_order_relaxed);
  gossip_bytes_out.fetch_add(bytes, std::memory_order_relaxed);  // attempted
  if (failed > 0) gossip_send_errors.fetch_add(failed, std::memory_order_relaxed);
}

// ---------------------------------------------------------------- gossip UDP

void ClusterDriver::Impl::ArmGossip() {
  gossip_udp.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                        [this](const boost::system::error_code& ec) {
                          if (ec) return;
                          OnGossipReadable();
                        });
}

void ClusterDriver::Impl::OnGossipReadable() {
  if (gossip_rx.Drain(gossip_udp.native_handle(), kMaxGossipBatchesPerWakeup, "gossip recvmmsg",
                      [this](size_t n) { HandleGossipBatch(n); })) {
    ArmGossip();
  }
}

void ClusterDriver::Impl::HandleGossipBatch(size_t n) {
  uint64_t bytes = 0;
  Batch b;
  {
    std::lock_guard<std::mutex> lock(mu);
    const Instant now = ReadClock();
    for (size_t i = 0; i < n; ++i) {
      if (gossip_rx.truncated(i)) continue;  // larger than any peer datagram
      const std::string from = FormatSockaddr(reinterpret_cast<sockaddr*>(&gossip_rx.address(i)),
                                              gossip_rx.address_length(i));
      std::span<const std::byte> data = gossip_rx.data(i);
      bytes += data.size();
      if (!OpenPeerLocked(from, now, &data)) continue;
      node->OnPeerMessage(from, data, now, &b.out);
    }
    FlushPeerInputLocked(now, &b);
  }
  gossip_datagrams_in.fetch_add(n, std::memory_order_relaxed);
  gossip_bytes_in.fetch_add(bytes, std::memory_order_relaxed);
  Send(b);
}

}  // namespace tally::io

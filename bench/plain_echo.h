// PlainEcho: the wire's floor for tally-load. One thread, one socket, a bare
// recvmmsg/sendmmsg loop that sends every datagram straight back (a seqpacket
// listener: poll over the connections, recv/send). No Asio, no decoding, no
// dispatch: what any server of the same datagrams cannot beat on this machine,
// so tallyd's throughput and latency are quoted as ratios of it
// (docs/PERFORMANCE.md). tallyd's own --echo mode is a different floor: its
// driver code without the decision.
#ifndef TALLY_BENCH_PLAIN_ECHO_H_
#define TALLY_BENCH_PLAIN_ECHO_H_

#include <atomic>
#include <memory>
#include <string>
#include <thread>

namespace tally::load {

class PlainEcho {
 public:
  enum class Kind { kUdp, kUnixDatagram, kUnixSeqpacket };

  // Binds `address`: "HOST:PORT" (port 0 picks one) for kUdp, a socket path
  // for the Unix kinds (an existing file there is an error). `cpu` >= 0 pins
  // the thread to that CPU. Null with `*error` on failure.
  static std::unique_ptr<PlainEcho> Start(Kind kind, const std::string& address, int cpu,
                                          std::string* error);
  // Stops the thread, closes every socket and unlinks a Unix path it bound.
  ~PlainEcho();
  PlainEcho(const PlainEcho&) = delete;
  PlainEcho& operator=(const PlainEcho&) = delete;

  // "127.0.0.1:PORT" / "[::1]:PORT" for kUdp, the path otherwise.
  const std::string& address() const { return address_; }
  // Datagrams echoed so far. Any thread.
  uint64_t echoed() const { return echoed_.load(std::memory_order_relaxed); }

 private:
  PlainEcho() = default;
  void Loop();
  void LoopSeqpacket();

  Kind kind_ = Kind::kUdp;
  int fd_ = -1;
  int stop_fd_ = -1;  // eventfd: wakes the loop's poll to stop
  std::string address_;
  std::string unlink_path_;
  std::atomic<uint64_t> echoed_{0};
  std::thread thread_;
};

}  // namespace tally::load

#endif  // TALLY_BENCH_PLAIN_ECHO_H_

// Peer datagrams and stream frames (wire/peer.capnp) as the Node
// decodes them: the header, SWIM bodies and node bodies (ReadNode).
// Properties: no crash, leak or exception on any bytes; a decoded SWIM or node
// message survives encode -> decode unchanged (a node message packed and
// unpacked, kPackedMarker); a SWIM encoding stays within
// membership::EstimatedEncodedBytes, which the senders' packet budget relies on.
// Our encoder writes the current schema's full-size structs, so a message of
// smaller ones (an older sender's, or a forger's) may re-encode past a
// datagram; the reader then refuses it for kinds sent as datagrams, and the
// value is checked through the node codec alone.
#include <capnp/serialize.h>

#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "fuzz/node_value_equal.h"
#include "wire/codec.h"
#include "wire/peer.capnp.h"
#include "wire/peer_codec.h"

namespace {

// Reads an unpacked node message with the node codec only (no transport
// bounds). Returns false with *why when it does not decode.
bool ReadNodeBody(const std::vector<std::byte>& encoded, tally::wire::NodeMessageValue* value,
                  std::string* why) {
  std::vector<capnp::word> words(encoded.size() / sizeof(capnp::word));
  std::memcpy(words.data(), encoded.data(), words.size() * sizeof(capnp::word));
  capnp::FlatArrayMessageReader reader(kj::arrayPtr(words.data(), words.size()));
  return tally::wire::ReadNodeMessage(reader.getRoot<tally::wire::peer::PeerMessage>().getNode(),
                                      value, why);
}

bool SentAsDatagram(tally::wire::NodeMessageValue::Kind kind) {
  using Kind = tally::wire::NodeMessageValue::Kind;
  return kind != Kind::kStatePush && kind != Kind::kHandoffDone && kind != Kind::kOverrides;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static tally::wire::PeerMessageReader reader;  // reused, as the daemon does
  static tally::wire::PeerMessageReader again;
  std::string why;
  if (reader.Decode(tally::fuzz::AsBytes(data, size), &why) != tally::Status::kOk) {
    FUZZ_CHECK(!why.empty());
    return 0;
  }
  std::vector<std::byte> encoded;
  if (reader.is_swim()) {
    const tally::membership::SwimMessage msg = reader.swim();
    tally::wire::EncodeSwim(msg, &encoded);
    FUZZ_CHECK(encoded.size() <= tally::membership::EstimatedEncodedBytes(msg));
    tally::membership::SwimMessage decoded;
    FUZZ_CHECK(again.Decode(encoded, &decoded, &why) == tally::Status::kOk);
    FUZZ_CHECK(decoded == msg);
    return 0;
  }
  if (!reader.is_node()) return 0;  // a body kind this build does not know
  tally::wire::NodeMessageValue value;
  if (!reader.ReadNode(&value, &why)) {
    FUZZ_CHECK(!why.empty());
    return 0;
  }
  const tally::wire::PeerHeader header{reader.sender_id(), reader.sender_address(),
                                       reader.sender_generation(), reader.sender_wall_ms()};
  for (const bool packed : {false, true}) {
    tally::wire::EncodeNodeMessage(header, value, &encoded, packed);
    FUZZ_CHECK(again.Decode(encoded, &why) == tally::Status::kOk);
    FUZZ_CHECK(again.is_node());
    FUZZ_CHECK(again.sender_id() == header.sender_id);
    FUZZ_CHECK(again.sender_address() == header.sender_address);
    FUZZ_CHECK(again.sender_generation() == header.sender_generation);
    FUZZ_CHECK(again.sender_wall_ms() == header.sender_wall_ms);
    tally::wire::NodeMessageValue decoded;
    if (!packed && encoded.size() > tally::wire::kMaxDatagramBytes && SentAsDatagram(value.kind)) {
      FUZZ_CHECK(!again.ReadNode(&decoded, &why));
      FUZZ_CHECK(why == "node message larger than a datagram");
      FUZZ_CHECK(ReadNodeBody(encoded, &decoded, &why));
      FUZZ_CHECK(tally::fuzz::SameNodeValue(decoded, value));
      return 0;  // packed, it would unpack past a datagram too
    }
    FUZZ_CHECK(again.ReadNode(&decoded, &why));
    FUZZ_CHECK(tally::fuzz::SameNodeValue(decoded, value));
  }
  return 0;
}

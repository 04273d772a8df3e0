// Node messages (wire/node.capnp: forward, replicate, digest, ...)
// read straight from a NodeMessage root, so the fuzzer spends no effort on
// the PeerMessage envelope (peer_codec_fuzz covers that path).
// Properties: ReadNodeMessage never crashes or leaks (capnp errors are
// exceptions, caught here as the peer codec does); what it accepts survives
// BuildNodeMessage -> ReadNodeMessage unchanged.
#include <capnp/message.h>
#include <capnp/serialize.h>
#include <kj/exception.h>

#include <cstring>
#include <string>
#include <vector>

#include "fuzz/fuzz_check.h"
#include "fuzz/node_value_equal.h"
#include "wire/node_codec.h"

namespace {

// Reads a NodeMessage from whole words, with the peer codec's limits.
// Returns false on malformed bytes (a kj::Exception) or nonsensical content.
bool Read(kj::ArrayPtr<const capnp::word> words, tally::wire::NodeMessageValue* value) {
  capnp::ReaderOptions options;
  options.traversalLimitInWords = 4 * words.size() + 64;
  options.nestingLimit = 8;
  std::string why;
  try {
    capnp::FlatArrayMessageReader reader(words, options);
    if (tally::wire::ReadNodeMessage(reader.getRoot<tally::wire::NodeMessage>(), value, &why)) {
      return true;
    }
    FUZZ_CHECK(!why.empty());
    return false;
  } catch (const kj::Exception&) {
    return false;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size % sizeof(capnp::word) != 0) return 0;  // the peer codec refuses these
  // Word-aligned, as the peer codec makes it before reading.
  std::vector<uint64_t> aligned(size / sizeof(capnp::word));
  std::memcpy(aligned.data(), data, size);
  const kj::ArrayPtr<const capnp::word> words(reinterpret_cast<const capnp::word*>(aligned.data()),
                                              aligned.size());
  tally::wire::NodeMessageValue value;
  if (!Read(words, &value)) return 0;

  capnp::MallocMessageBuilder builder;
  tally::wire::BuildNodeMessage(value, builder.initRoot<tally::wire::NodeMessage>());
  kj::Array<capnp::word> flat = capnp::messageToFlatArray(builder);
  tally::wire::NodeMessageValue decoded;
  FUZZ_CHECK(Read(flat, &decoded));
  FUZZ_CHECK(tally::fuzz::SameNodeValue(decoded, value));
  return 0;
}

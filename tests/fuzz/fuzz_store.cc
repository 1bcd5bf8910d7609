// libFuzzer target: the rendezvous store's wire parsers (csrc/transport/store_protocol.h) on
// hostile bytes, with length claims anywhere up to 2^64 - 1.
//
// The first byte picks the target, the rest is its input:
//   0  RequestParser: the bytes are a stream of requests, fed in chunks whose sizes come from the
//      input too; at kDecide a bit of the input keeps or skips the value, and now and then a value
//      is abandoned part-way (skip_value). Oracles: feed() always makes progress until the request
//      is done, failed or waits for a decision; the value's buffer never exceeds twice the bytes
//      received plus 4 KiB whatever the claim; every completed request obeys the protocol's rules
//      (known command, key <= 4096 bytes, GET/ADD argument 8 bytes, DELETE no value, a kept SET
//      value exactly as long as claimed); and feeding the same stream in one piece gives the same
//      requests and the same error.
//   1  the handshake checks: check_client_hello on every prefix agrees with the rules (magic,
//      auth 0/1, zero reserved bytes) and never accepts a prefix of a refused hello;
//      check_server_hello likewise.
//   2  RecordReader (keyed connections' records, protocol version 3): the bytes are a stream of
//      records fed in chunks whose sizes come from the input. Oracles: every record handed out
//      has a length in 1..kMaxRecord and is exactly the stream's bytes at its place; a length
//      outside that range is an error as soon as its 4 bytes are in (and only then); the buffer
//      never holds more than one record (capacity <= kRecordOverhead + kMaxRecord) nor more
//      than max(4 KiB, twice the bytes received of the record); feeding the stream in one piece
//      gives the same records and the same error.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/transport/store_protocol.h"

namespace sp = ringpress::store_protocol;

namespace {

struct Outcome {
  std::vector<sp::Request> requests;
  std::string error;
  bool skipped_part_way = false;
};

// Feeds `stream` in chunks (sizes from `sizes`, cycled; 0 = the rest), deciding SET values from
// `choices`. Checks the per-step oracles; returns what came out.
Outcome run(const std::uint8_t* stream, std::size_t n, const std::uint8_t* sizes, std::size_t ns,
            const std::uint8_t* choices, std::size_t nc, bool allow_skip) {
  Outcome out;
  sp::RequestParser p;
  std::size_t pos = 0, step = 0, decision = 0, skipc = 0;
  std::uint64_t value_bytes_in = 0;  // value bytes fed to the current request
  while (pos < n || p.done() || p.state() == sp::RequestParser::State::kDecide) {
    if (p.failed()) break;
    if (p.state() == sp::RequestParser::State::kDecide) {
      const bool keep = nc == 0 || (choices[decision++ % nc] & 1);
      p.keep_value(keep);
      value_bytes_in = 0;
      continue;
    }
    if (p.done()) {
      sp::Request r = p.take();
      value_bytes_in = 0;
      if (r.key.size() > sp::kMaxKey) std::abort();
      switch (r.cmd) {
        case sp::kCmdSet:
          if (r.value_length > sp::kMaxValue) std::abort();
          if (r.discarded ? !r.value.empty() : r.value.size() != r.value_length) std::abort();
          break;
        case sp::kCmdGet:
        case sp::kCmdAdd:
          if (r.value_length != 8 || r.value.size() != 8) std::abort();
          break;
        case sp::kCmdDelete:
          if (r.value_length != 0 || !r.value.empty()) std::abort();
          break;
        default: std::abort();
      }
      out.requests.push_back(std::move(r));
      continue;
    }
    std::size_t chunk = ns ? sizes[step++ % ns] : 0;
    if (chunk == 0 || chunk > n - pos) chunk = n - pos;
    const auto before = p.state();
    const std::size_t used = p.feed(stream + pos, chunk);
    if (used > chunk) std::abort();
    if (used == 0 && !p.failed() && !p.done() && p.state() != sp::RequestParser::State::kDecide)
      std::abort();  // no progress on a non-empty chunk
    if (before == sp::RequestParser::State::kValue || before == sp::RequestParser::State::kDecide)
      value_bytes_in += used;
    const std::size_t cap = p.request().value.capacity();
    if (cap > 2 * value_bytes_in + 4096 + 16) std::abort();  // allocated ahead of the bytes
    // Now and then give a value up part-way (the server's memory limit).
    if (allow_skip && p.state() == sp::RequestParser::State::kValue && nc &&
        (choices[skipc++ % nc] & 6) == 6) {
      p.skip_value();
      if (p.state() == sp::RequestParser::State::kSkip) {
        out.skipped_part_way = true;
        if (p.request().value.capacity() != 0) std::abort();
      } else if (p.request().cmd == sp::kCmdSet) {
        std::abort();  // a SET's value must be skippable
      }
    }
    pos += used;
  }
  out.error = p.error();
  if (p.failed() == out.error.empty()) std::abort();
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) return 0;
  const std::uint8_t sel = data[0] % 3;
  ++data;
  --size;
  if (sel == 0) {
    // Layout: u8 nsizes, nsizes chunk sizes, u8 nchoices, choices, then the stream.
    const std::size_t ns = std::min<std::size_t>(data[0], size - 1);
    const std::uint8_t* sizes = data + 1;
    std::size_t pos = 1 + ns;
    if (pos >= size) return 0;
    const std::size_t nc = std::min<std::size_t>(data[pos], size - pos - 1);
    const std::uint8_t* choices = data + pos + 1;
    pos += 1 + nc;
    const std::uint8_t* stream = data + pos;
    const std::size_t n = size - pos;
    const Outcome chunked = run(stream, n, sizes, ns, choices, nc, /*allow_skip=*/true);
    // The same stream in one piece must agree on every request and the error, unless a value
    // was abandoned part-way (which changes what follows).
    if (!chunked.skipped_part_way) {
      const Outcome whole = run(stream, n, nullptr, 0, choices, nc, /*allow_skip=*/false);
      if (whole.error != chunked.error || whole.requests.size() != chunked.requests.size())
        std::abort();
      for (std::size_t i = 0; i < whole.requests.size(); ++i) {
        const auto &a = whole.requests[i], &b = chunked.requests[i];
        if (a.cmd != b.cmd || a.key != b.key || a.value != b.value ||
            a.value_length != b.value_length || a.discarded != b.discarded)
          std::abort();
      }
    }
    return 0;
  }
  if (sel == 2) {
    // Layout: u8 nsizes, nsizes chunk sizes (x 257, so records up to 64 KiB get cut), the stream.
    const std::size_t ns = std::min<std::size_t>(data[0], size - 1);
    const std::uint8_t* sizes = data + 1;
    const std::uint8_t* stream = data + 1 + ns;
    const std::size_t n = size - 1 - ns;
    auto cut = [&](bool chunked, std::string* error) {
      std::vector<std::vector<std::uint8_t>> records;
      sp::RecordReader r;
      std::size_t pos = 0, step = 0, start = 0;
      while (pos < n) {
        std::size_t chunk = chunked && ns ? std::size_t(sizes[step++ % ns]) * 257 : 0;
        if (chunk == 0 || chunk > n - pos) chunk = n - pos;
        const std::size_t used = r.feed(stream + pos, chunk);
        if (used > chunk || (used == 0 && !r.failed() && !r.ready())) std::abort();
        pos += used;
        if (r.capacity() > sp::kRecordOverhead + sp::kMaxRecord) std::abort();
        if (r.capacity() > std::max<std::size_t>(4096, 2 * (pos - start))) std::abort();
        if (r.failed()) {
          // Only a complete length field outside 1..kMaxRecord is an error.
          if (pos - start != sp::kRecordHeader) std::abort();
          const std::uint32_t len = sp::get_u32(stream + start);
          if (len != 0 && len <= sp::kMaxRecord) std::abort();
          *error = r.error();
          return records;
        }
        if (r.ready()) {
          const std::size_t total = sp::kRecordOverhead + r.length();
          if (r.length() == 0 || r.length() > sp::kMaxRecord || pos - start != total) std::abort();
          if (std::memcmp(r.header(), stream + start, total) != 0) std::abort();
          records.emplace_back(stream + start, stream + pos);
          r.next();
          start = pos;
        }
      }
      return records;
    };
    std::string e1, e2;
    if (cut(true, &e1) != cut(false, &e2) || e1 != e2) std::abort();
    return 0;
  }
  // sel == 1: handshake checks.
  std::uint8_t hello[sp::kServerHello] = {};
  std::memcpy(hello, data, std::min(size, sizeof hello));
  bool refused = false;
  for (std::size_t n = 0; n <= sp::kClientHello; ++n) {
    const bool ok = sp::check_client_hello(hello, n).empty();
    bool valid = std::memcmp(hello, sp::kMagic, std::min<std::size_t>(n, 8)) == 0;
    if (n > 8) valid = valid && hello[8] <= sp::kAuthKey;
    for (std::size_t i = 9; i < std::min<std::size_t>(n, 16); ++i) valid = valid && hello[i] == 0;
    if (ok != valid) std::abort();
    if (refused && ok) std::abort();  // a longer prefix of a refused hello
    refused = refused || !ok;
  }
  std::uint8_t auth = 0xff;
  const bool ok = sp::check_server_hello(hello, &auth).empty();
  if (ok != sp::check_client_hello(hello, sp::kClientHello).empty()) std::abort();
  if (ok && auth != hello[8]) std::abort();
  return 0;
}

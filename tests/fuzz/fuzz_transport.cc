// libFuzzer target: the transport's parsers (csrc/transport/protocol.h) on hostile bytes.
//
// The first byte picks the parser, the rest is its input:
//   0  check_hello       80-byte handshake; oracle: accepted exactly when every rule holds
//   1  check_header      32-byte header + 32-byte expected header + flags; oracle: accepted only
//                        when the fields match the rules of docs/wire-format.md
//   2  raise_remote_abort an ABORT payload; must raise a ringpress::Error (never crash); plus a
//                        round trip: encode_abort of an error built from the bytes decodes back
//   3  the top-k codec's decode (the sparse allreduce's payloads)
//   4  Codec::decode of every registered wire codec (ringpress/codec.h), chosen by a byte;
//      plus an encode -> decode round trip
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/transport/protocol.h"
#include "ringpress/codec.h"

namespace rp = ringpress;
namespace pr = ringpress::protocol;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t sel = data[0] % 5;
  ++data;
  --size;
  if (sel == 0) {
    pr::Hello h{};
    std::memcpy(&h, data, std::min(size, sizeof h));
    const std::string secret(pr::kSecretChars, 'a');
    const int me = 1, n = 4;
    const bool accepted = pr::check_hello(h, secret, me, n).empty();
    const bool valid = h.magic == pr::kHelloMagic && h.version == pr::kProtocolVersion &&
                       h.reserved == 0 &&
                       std::memcmp(h.secret, secret.data(), secret.size()) == 0 && h.to == 1u &&
                       h.from > 1u && h.from < 4u;
    if (accepted != valid) std::abort();
    return 0;
  }
  if (sel == 1) {
    rp::MsgHeader h{}, x{};
    std::memcpy(&h, data, std::min(size, sizeof h));
    if (size > sizeof h) std::memcpy(&x, data + sizeof h, std::min(size - sizeof h, sizeof x));
    rp::Expect e;
    e.h = x;
    e.len_exact = size > 2 * sizeof h ? (data[2 * sizeof h] & 1) : true;
    e.capacity = size > 2 * sizeof h + 1 ? data[2 * sizeof h + 1] * 1000u : x.len;
    bool accepted = true;
    try {
      pr::check_header(h, e, 0, 1);
    } catch (const rp::Error& err) {
      accepted = false;
      if (std::strlen(err.what()) == 0) std::abort();
    }
    const bool valid = h.type == 1 && h.coll == x.coll && h.seq == x.seq && h.dtype == x.dtype &&
                       h.redop == x.redop && h.codec == x.codec && h.count == x.count &&
                       h.step == x.step && (e.len_exact ? h.len == x.len : h.len <= e.capacity);
    if (accepted != valid) std::abort();
    return 0;
  }
  if (sel == 3) {
    if (size < 2) return 0;
    const std::size_t n = 1 + (data[0] | (data[1] << 8)) % 4096;
    std::vector<float> dense(n, 0.0f);
    try {
      rp::CodecParams p;
      auto topk =
          rp::make_codec(rp::WireCompression::kTopK, p, rp::DType::kF32, rp::ReduceOp::kSum);
      topk->decode(data + 2, size - 2, dense.data(), n, true);
    } catch (const rp::WireFormatError&) {
    } catch (const rp::UsageError&) {
    }
    return 0;
  }
  if (sel == 4) {
    if (size < 3) return 0;
    static const std::vector<rp::CodecInfo> all = [] {
      std::vector<rp::CodecInfo> v;
      for (const rp::CodecInfo& i : rp::codecs()) {
        if (i.make != nullptr) v.push_back(i);
      }
      return v;
    }();
    rp::CodecParams c;
    c.block = 1 + data[0] / 8;
    c.ratio = 0.01 + (data[0] % 5) * 0.2;
    // The other parameters a codec may read (each reads its own): sparse values as fp16,
    // stochastic rounding, exact top-k, a threshold inside the round trip's value range.
    c.values = (data[1] & 1) ? "fp16" : "fp32";
    c.stochastic = (data[1] & 2) != 0;
    c.sampled = (data[1] & 4) == 0;
    c.threshold = (data[1] >> 3) * 4.0;
    const std::size_t count = 1 + (data[1] | (data[2] << 8)) % 2048;
    auto codec = rp::make_codec(static_cast<rp::WireCompression>(all[data[0] % all.size()].id), c,
                                rp::DType::kF32, rp::ReduceOp::kSum);
    std::vector<float> dst(count, 0.0f);
    try {
      codec->decode(data + 3, size - 3, dst.data(), count, (data[0] & 1) != 0);
    } catch (const rp::WireFormatError&) {
    }
    // Round trip: finite input encodes within the bound and decodes without complaint.
    std::vector<float> x(count);
    const std::size_t m = size - 3;
    for (std::size_t i = 0; i < count; ++i) {
      x[i] = m ? static_cast<float>(data[3 + i % m] % 200) - 100.0f : static_cast<float>(i % 7);
    }
    std::vector<unsigned char> enc(codec->bound(count));
    const std::size_t len = codec->encode(x.data(), count, enc.data(), data[1]);
    if (len > enc.size()) std::abort();
    codec->decode(enc.data(), len, dst.data(), count, false);
    return 0;
  }
  rp::Bytes b(data, data + size);
  try {
    pr::raise_remote_abort(b, 0, 1);
  } catch (const rp::Error& err) {
    if (err.rank() != 0) std::abort();
  }
  // Round trip: any detail text survives encode -> decode (truncated to the 4096-byte limit).
  std::string detail(reinterpret_cast<const char*>(data), std::min<std::size_t>(size, 4096));
  rp::UsageError src(rp::ErrorContext{3, 2, "allreduce"}, detail, __FILE__, __LINE__);
  try {
    pr::raise_remote_abort(pr::encode_abort(src, 3), 0, 1);
  } catch (const rp::UsageError& err) {
    if (err.peer() != 2 || err.detail().find(detail) == std::string::npos) std::abort();
    return 0;
  } catch (...) {
  }
  std::abort();
}

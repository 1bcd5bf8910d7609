// libFuzzer target: the transport's parsers (csrc/transport/protocol.h) on hostile bytes.
//
// The first byte picks the parser, the rest is its input:
//   0  the handshake (handshake.h): check_hello on 48 hostile bytes (oracle: accepted exactly
//      when every rule holds), check_reply / check_proof on hostile bytes (never accepted: a
//      MAC under the key cannot be guessed), and a genuine exchange (always accepted)
//   5  SecureChannel::read on hostile bytes from a socket: raises TransportError or returns
//      bytes, never reads past a record's bound or crashes
//   1  check_header      32-byte header + 32-byte expected header + flags; oracle: accepted only
//                        when the fields match the rules of docs/wire-format.md
//   2  raise_remote_abort an ABORT payload; must raise a ringpress::Error (never crash); plus a
//                        round trip: encode_abort of an error built from the bytes decodes back
//   3  the top-k codec's decode (the sparse allreduce's payloads)
//   4  Codec::decode of every registered wire codec (ringpress/codec.h), chosen by a byte;
//      plus an encode -> decode round trip
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../../csrc/transport/handshake.h"
#include "../../csrc/transport/protocol.h"
#include "../../csrc/transport/secure_channel.h"
#include "ringpress/codec.h"

namespace rp = ringpress;
namespace pr = ringpress::protocol;
namespace hs = ringpress::handshake;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t sel = data[0] % 6;
  ++data;
  --size;
  if (sel == 0) {
    static const ringpress::crypto::Key key =
        ringpress::crypto::job_key_from_material("fuzzing key material, 32 characters or more");
    hs::Hello h{};
    std::memcpy(&h, data, std::min(size, sizeof h));
    const int n = 4;
    const bool enc = size > sizeof h && (data[sizeof h] & 1);
    // A member (rank 1, no joiners: higher ranks dial it) or a joiner of a grow (rank 2, joiners
    // from rank 2 on: every member and the higher joiner dial it).
    const bool joiner = size > sizeof h && (data[sizeof h] & 2);
    const int me = joiner ? 2 : 1, first_joiner = joiner ? 2 : n;
    const bool accepted = hs::check_hello(h, me, n, enc, first_joiner).empty();
    const bool from_ok = joiner ? (h.from < 4u && h.from != 2u) : (h.from > 1u && h.from < 4u);
    const bool valid = h.magic == hs::kHelloMagic && h.version == hs::kVersion &&
                       (h.flags & ~hs::kFlagEncrypt) == 0 &&
                       h.to == static_cast<std::uint32_t>(me) && from_ok &&
                       (((h.flags & hs::kFlagEncrypt) != 0) == enc);
    if (accepted != valid) std::abort();
    // Hostile reply and proof: a MAC under the key is never guessed.
    hs::Reply r{};
    hs::Proof pf{};
    if (size > sizeof h) std::memcpy(&r, data + sizeof h, std::min(size - sizeof h, sizeof r));
    if (size > sizeof h + sizeof r)
      std::memcpy(&pf, data + sizeof h + sizeof r, std::min(size - sizeof h - sizeof r, sizeof pf));
    if (hs::check_reply(key, h, r).empty() || hs::check_proof(key, h, r, pf).empty()) std::abort();
    // A genuine exchange goes through; the link keys of both ends agree.
    const hs::Hello gh = hs::make_hello(2, 1, enc);
    const hs::Reply gr = hs::make_reply(key, gh, 1);
    if (!hs::check_hello(gh, 1, 4, enc, 4).empty() || !hs::check_reply(key, gh, gr).empty() ||
        !hs::check_proof(key, gh, gr, hs::make_proof(key, gh, gr)).empty())
      std::abort();
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
  if (sel == 5) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    const std::size_t k = std::min<std::size_t>(size, 1 << 16);
    (void)!::write(sv[0], data, k);
    ::close(sv[0]);
    ringpress::crypto::Key a{}, b{};
    b[0] = 1;
    ringpress::transport_impl::SecureChannel ch(1, a, 1, b, 2, (size & 1) != 0);
    std::vector<std::uint8_t> dst(1 + (size % 300));
    try {
      for (int i = 0; i < 64; ++i) {
        int err = 0;
        const long r = ch.read(sv[1], dst.data(), dst.size(), &err);
        if (r < 0) break;
        if (static_cast<std::size_t>(r) > dst.size()) std::abort();
      }
    } catch (const rp::TransportError&) {
    }
    ::close(sv[1]);
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

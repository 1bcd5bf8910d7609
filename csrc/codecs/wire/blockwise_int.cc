// Wire codecs "int8" (id 4), "int4" (id 5) and "int2" (id 7): blockwise quantization, one float32
// scale per `block` elements (quantize.h). One family, one class: the three differ only in bits.
// Payload: B = ceil(n / block) little-endian float32 scales, then the packed codes (int8: one byte
// each; int4: two per byte, low nibble first; int2: four per byte, element 4i + j in bits
// 2j..2j+1). Length exactly 4B + ceil(n * bits / 8).
// Contract: round to nearest (|x - x'| <= scale / 2), or with `stochastic` unbiased rounding keyed
// by the encode seed (quantize.h's stream: seed, counter offset 0 at the payload's first element;
// |x - x'| <= scale). A block with NaN or Inf input gets a NaN scale and zero codes and decodes
// to NaN (quantize.h); with error feedback its residual is 0. Decode rejects a wrong length and a
// negative or infinite scale (WireFormatError); an int2 code 10 (-2) decodes to -2 x scale.
// Cost: one pass each way at memory speed, decode+reduce included (dst += q * scale, or with a
// residual (dst + r) + q * scale: decode_reduce_fold); error feedback (with the caller's x += r
// folded in) inside the encode's pass, block by block in L1.
#include <cstring>

#include "builtin.h"
#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {

class BlockwiseInt final : public Codec {
 public:
  BlockwiseInt(int bits, const CodecParams& p) {
    p_.bits = bits;
    p_.block = p.block;
    p_.rounding = p.stochastic ? quant::Rounding::kStochastic : quant::Rounding::kNearest;
  }
  std::size_t bound(std::size_t count) const override {
    const std::size_t scales =
        checked_mul<UsageError>(quant::num_blocks(count, p_.block), sizeof(float), "payload size");
    return checked_add<UsageError>(scales, quant::blockwise_payload_bytes(count, p_.bits),
                                   "payload size");
  }
  std::size_t min_payload(std::size_t count) const override { return bound(count); }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t seed) override {
    auto* scales = static_cast<float*>(out);
    auto* payload =
        static_cast<std::uint8_t*>(out) + quant::num_blocks(count, p_.block) * sizeof(float);
    quant::BlockwiseParams bp = p_;
    bp.seed = seed;
    quant::blockwise_encode(static_cast<const float*>(src), count, bp, payload, scales);
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, fixed_payload_len(*this, count), WireFormatError,
                  "a quantized segment has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    const float* scales = checked_scales(in, nb, count, false);
    const auto* codes = static_cast<const std::uint8_t*>(in) + nb * sizeof(float);
    auto* out = static_cast<float*>(dst);
    if (reduce) {
      quant::blockwise_decode_add(codes, scales, count, p_, out);  // dst + decoded, one pass
    } else {
      quant::blockwise_decode(codes, scales, count, p_, out);
    }
  }
  bool folds_decode_reduce() const override { return true; }
  void decode_reduce_fold(const void* in, std::size_t len, float* dst, const float* r,
                          std::size_t count) override {
    RP_ENFORCE_EQ(len, fixed_payload_len(*this, count), WireFormatError,
                  "a quantized segment has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    const float* scales = checked_scales(in, nb, count, false);
    quant::blockwise_decode_add_residual(static_cast<const std::uint8_t*>(in) + nb * sizeof(float),
                                         scales, count, p_, r, dst);
  }
  std::size_t encode_feedback(float* x, float* r, std::size_t count, void* out, std::uint64_t seed,
                              bool keep) override {
    // r = x (the container's in-place call): the generic steps (the fused kernel needs two
    // buffers).
    if (r == x) return Codec::encode_feedback(x, r, count, out, seed, keep);
    return feedback(x, r, count, out, seed, false, keep);
  }
  std::size_t encode_feedback_fold(float* x, float* r, std::size_t count, void* out,
                                   std::uint64_t seed, bool keep) override {
    return feedback(x, r, count, out, seed, true, keep);
  }

 private:
  // Encode, x - decoded into r, and (keep) x = decoded, per block in L1 (quantize.h).
  std::size_t feedback(float* x, float* r, std::size_t count, void* out, std::uint64_t seed,
                       bool add, bool keep) {
    quant::BlockwiseParams bp = p_;
    bp.seed = seed;
    const std::size_t nb = quant::num_blocks(count, p_.block);
    quant::blockwise_encode_feedback(x, r, count, bp,
                                     static_cast<std::uint8_t*>(out) + nb * sizeof(float),
                                     static_cast<float*>(out), add, keep);
    return bound(count);
  }

  quant::BlockwiseParams p_;
};

std::unique_ptr<Codec> make(int bits, const CodecParams& p) {
  check_block(p);
  return std::make_unique<BlockwiseInt>(bits, p);
}

}  // namespace

std::unique_ptr<Codec> make_int8(const CodecParams& p, DType, ReduceOp) {
  return make(8, p);
}
std::unique_ptr<Codec> make_int4(const CodecParams& p, DType, ReduceOp) {
  return make(4, p);
}
std::unique_ptr<Codec> make_int2(const CodecParams& p, DType, ReduceOp) {
  return make(2, p);
}

}  // namespace ringpress::wire_codecs

// Wire codecs "int8" (id 4), "int4" (id 5) and "int2" (id 7): blockwise quantization, one float32
// scale per `block` elements (quantize.h). One family, one class: the three differ only in bits.
// Payload: B = ceil(n / block) little-endian float32 scales, then the packed codes (int8: one byte
// each; int4: two per byte, low nibble first; int2: four per byte, element 4i + j in bits
// 2j..2j+1). Length exactly 4B + ceil(n * bits / 8).
// Contract: round to nearest (|x - x'| <= scale / 2), or with `stochastic` unbiased rounding keyed
// by the encode seed (quantize.h's stream: seed, counter offset 0 at the payload's first element;
// |x - x'| <= scale). Non-finite input raises UsageError. Decode rejects a wrong length and a
// negative, NaN or infinite scale (WireFormatError); an int2 code 10 (-2) decodes to -2 x scale.
// Cost: one pass each way at memory speed; decode+reduce one more pass.
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
    float* scales = checked_scales(in, nb, count, reduce);
    float* out = reduce ? scales + nb : static_cast<float*>(dst);
    quant::blockwise_decode(static_cast<const std::uint8_t*>(in) + nb * sizeof(float), scales,
                            count, p_, out);
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }

 private:
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

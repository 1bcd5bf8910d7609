// Wire codec "ternary" (id 9): TernGrad (quantize.h, ternary.cc): scale = max |x| of each
// `block`, q in {-1, 0, +1} with P(q = sign x) = |x| / scale, drawn from the counter-based stream
// of the encode seed (counter offset 0 at the payload's first element); x' = q x scale.
// Payload: the int2 layout (id 7): B = ceil(n / block) little-endian float32 scales, then
// ceil(n / 4) bytes of 2-bit two's-complement codes, element 4i + j in bits 2j..2j+1. Length
// exactly 4B + ceil(n / 4). The same bytes as "int2" with stochastic rounding and the same seed;
// a row of its own so that the name states the contract.
// Contract: unbiased (E[x'] = x up to 2^-24 x scale), |x - x'| <= scale. A block with NaN or Inf
// input gets a NaN scale and zero codes and decodes to NaN (quantize.h). Decode rejects a wrong
// length and a negative or infinite scale
// (WireFormatError); a code 10 (-2, never written) decodes to -2 x scale.
// Cost: one pass each way at memory speed; 2 bits per element + 4 bytes per block on the wire.
// Ring schedule: every hop re-rounds the partial sum stochastically (still unbiased).
#include "builtin.h"
#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {

class TernaryCodec final : public Codec {
 public:
  explicit TernaryCodec(const CodecParams& p) { p_.block = p.block; }
  std::size_t bound(std::size_t count) const override {
    const std::size_t scales =
        checked_mul<UsageError>(quant::num_blocks(count, p_.block), sizeof(float), "payload size");
    return checked_add<UsageError>(scales, quant::ternary_payload_bytes(count), "payload size");
  }
  std::size_t min_payload(std::size_t count) const override { return bound(count); }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t seed) override {
    auto* scales = static_cast<float*>(out);
    auto* codes =
        static_cast<std::uint8_t*>(out) + quant::num_blocks(count, p_.block) * sizeof(float);
    quant::TernaryParams tp = p_;
    tp.seed = seed;
    quant::ternary_encode(static_cast<const float*>(src), count, tp, codes, scales);
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, fixed_payload_len(*this, count), WireFormatError,
                  "a ternary payload has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    float* scales = checked_scales(in, nb, count, reduce);
    float* out = reduce ? scales + nb : static_cast<float*>(dst);
    quant::ternary_decode(static_cast<const std::uint8_t*>(in) + nb * sizeof(float), scales, count,
                          p_, out);
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }

 private:
  quant::TernaryParams p_;
};

}  // namespace

std::unique_ptr<Codec> make_ternary(const CodecParams& p, DType, ReduceOp) {
  check_block(p);
  return std::make_unique<TernaryCodec>(p);
}

}  // namespace ringpress::wire_codecs

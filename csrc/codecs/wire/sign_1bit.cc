// Wire codec "sign" (id 8): 1-bit signs with one scale per `block` elements, EF-SignSGD
// (quantize.h, sign.cc): scale = mean |x| of the block, x' = -scale where the sign bit of x is set
// (-0.0 included), else +scale.
// Payload: B = ceil(n / block) little-endian float32 scales, then ceil(n / 8) bytes of sign bits,
// element 8i + j in bit j of byte i (1 = negative); unused high bits of the last byte are written
// 0 and ignored by decode. Length exactly 4B + ceil(n / 8).
// Contract: biased (|x - x'| <= |x| + scale, no tighter bound): meant for error feedback, which
// carries x - x' to the next step. Deterministic (no seed). A block with NaN or Inf input gets a
// NaN scale and zero bits and decodes to NaN (quantize.h). Decode rejects a wrong length and a
// negative or infinite scale (WireFormatError).
// Cost: encode two passes over each block (sum of |x|, then the bits; the block stays in L1),
// decode one pass; 1 bit per element + 4 bytes per block on the wire (32x smaller than float32
// for large blocks). Ring schedule: each hop re-signs the partial sum (one more 1-bit rounding
// per hop), which error feedback at every hop (ring_codec.cc) carries forward.
#include "builtin.h"
#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {

class SignCodec final : public Codec {
 public:
  explicit SignCodec(const CodecParams& p) { p_.block = p.block; }
  std::size_t bound(std::size_t count) const override {
    const std::size_t scales =
        checked_mul<UsageError>(quant::num_blocks(count, p_.block), sizeof(float), "payload size");
    return checked_add<UsageError>(scales, quant::sign_payload_bytes(count), "payload size");
  }
  std::size_t min_payload(std::size_t count) const override { return bound(count); }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t) override {
    auto* scales = static_cast<float*>(out);
    auto* bits =
        static_cast<std::uint8_t*>(out) + quant::num_blocks(count, p_.block) * sizeof(float);
    quant::sign_encode(static_cast<const float*>(src), count, p_, bits, scales);
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, fixed_payload_len(*this, count), WireFormatError,
                  "a sign payload has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    float* scales = checked_scales(in, nb, count, reduce);
    float* out = reduce ? scales + nb : static_cast<float*>(dst);
    quant::sign_decode(static_cast<const std::uint8_t*>(in) + nb * sizeof(float), scales, count, p_,
                       out);
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }

 private:
  quant::SignParams p_;
};

}  // namespace

std::unique_ptr<Codec> make_sign(const CodecParams& p, DType, ReduceOp) {
  check_block(p);
  return std::make_unique<SignCodec>(p);
}

}  // namespace ringpress::wire_codecs

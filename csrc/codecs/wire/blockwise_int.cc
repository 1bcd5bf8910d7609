// Wire codecs "int8" (id 4) and "int4" (id 5): blockwise quantization, one float32 scale per
// `block` elements (quantize.h, round to nearest). Payload: num_blocks little-endian float32
// scales, then the packed codes (int8: one byte each; int4: two per byte, low nibble first).
// Cost: one pass each way at memory speed; decode+reduce one more pass. Decode rejects a wrong
// length and a negative, NaN or infinite scale (WireFormatError).
#include <cmath>
#include <cstring>

#include "builtin.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {

class BlockwiseInt final : public Codec {
 public:
  BlockwiseInt(int bits, std::size_t block) {
    p_.bits = bits;
    p_.block = block;
    p_.rounding = quant::Rounding::kNearest;
  }
  std::size_t bound(std::size_t count) const override {
    return quant::num_blocks(count, p_.block) * sizeof(float) +
           quant::blockwise_payload_bytes(count, p_.bits);
  }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t) override {
    auto* scales = static_cast<float*>(out);
    auto* payload =
        static_cast<std::uint8_t*>(out) + quant::num_blocks(count, p_.block) * sizeof(float);
    quant::blockwise_encode(static_cast<const float*>(src), count, p_, payload, scales);
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, bound(count), WireFormatError, "a quantized segment has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    // Scales arrive unaligned inside the message: copy them out.
    auto* scales = static_cast<float*>(scratch(Scratch::kDecode, (nb + count) * sizeof(float)));
    if (nb) std::memcpy(scales, in, nb * sizeof(float));
    for (std::size_t b = 0; b < nb; ++b) {
      RP_ENFORCE(std::isfinite(scales[b]) && scales[b] >= 0.0f, WireFormatError,
                 "a quantized segment carries a bad scale");
    }
    float* out = reduce ? scales + nb : static_cast<float*>(dst);
    quant::blockwise_decode(static_cast<const std::uint8_t*>(in) + nb * sizeof(float), scales,
                            count, p_, out);
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }

 private:
  quant::BlockwiseParams p_;
};

std::unique_ptr<Codec> make(int bits, const CodecParams& p) {
  RP_ENFORCE(p.block >= 1 && p.block <= (1u << 20), UsageError,
             "quantization block must be in [1, 2^20], got ", p.block);
  return std::make_unique<BlockwiseInt>(bits, p.block);
}

}  // namespace

std::unique_ptr<Codec> make_int8(const CodecParams& p, DType, ReduceOp) {
  return make(8, p);
}
std::unique_ptr<Codec> make_int4(const CodecParams& p, DType, ReduceOp) {
  return make(4, p);
}

}  // namespace ringpress::wire_codecs

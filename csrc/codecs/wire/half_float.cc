// Wire codecs "bf16" (id 2) and "fp16" (id 3): float32 sent as 16-bit floats, round to nearest
// even (quantize.h kernels). Payload: count little-endian u16, nothing else.
// Cost: one pass each way at memory speed; decode+reduce one more pass. Lossy: relative error
// <= 2^-8 (bf16) / 2^-11 (fp16) per value; fp16 overflows to +-Inf from |x| >= 65520.
#include "builtin.h"
#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {

class HalfFloat final : public Codec {
 public:
  explicit HalfFloat(bool bf16) : bf16_(bf16) {}
  std::size_t bound(std::size_t count) const override {
    return checked_mul<UsageError>(count, std::size_t{2}, "16-bit float payload size");
  }
  std::size_t min_payload(std::size_t count) const override { return bound(count); }
  std::size_t word() const override { return 2; }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t) override {
    auto* h = static_cast<std::uint16_t*>(out);
    if (bf16_) {
      quant::fp32_to_bf16(static_cast<const float*>(src), count, h);
    } else {
      quant::fp32_to_fp16(static_cast<const float*>(src), count, h);
    }
    return count * 2;
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, fixed_payload_len(*this, count), WireFormatError,
                  "a 16-bit float segment has the wrong length");
    float* out = reduce ? static_cast<float*>(scratch(Scratch::kDecode, count * sizeof(float)))
                        : static_cast<float*>(dst);
    auto* h = static_cast<const std::uint16_t*>(in);
    if (bf16_) {
      quant::bf16_to_fp32(h, count, out);
    } else {
      quant::fp16_to_fp32(h, count, out);
    }
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }

 private:
  bool bf16_;
};

}  // namespace

std::unique_ptr<Codec> make_bf16(const CodecParams&, DType, ReduceOp) {
  return std::make_unique<HalfFloat>(true);
}
std::unique_ptr<Codec> make_fp16(const CodecParams&, DType, ReduceOp) {
  return std::make_unique<HalfFloat>(false);
}

}  // namespace ringpress::wire_codecs

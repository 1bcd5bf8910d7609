// Per-segment wire codecs (see segment_codec.h): lossless frames, bf16/fp16, blockwise int8/int4.
#include "segment_codec.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "ringpress/lossless.h"
#include "ringpress/quantize.h"
#include "ringpress/wire.h"

namespace ringpress {

const char* wire_compression_name(WireCompression c) noexcept {
  switch (c) {
    case WireCompression::kNone: return "none";
    case WireCompression::kLossless: return "lossless";
    case WireCompression::kBF16: return "bf16";
    case WireCompression::kFP16: return "fp16";
    case WireCompression::kInt8: return "int8";
    case WireCompression::kInt4: return "int4";
    case WireCompression::kTopK: return "topk";
    case WireCompression::kAuto: return "auto";
  }
  return "?";
}

WireCompression wire_compression_from_name(const std::string& name) {
  for (auto c : {WireCompression::kNone, WireCompression::kLossless, WireCompression::kBF16,
                 WireCompression::kFP16, WireCompression::kInt8, WireCompression::kInt4,
                 WireCompression::kTopK, WireCompression::kAuto}) {
    if (name == wire_compression_name(c)) return c;
  }
  RP_THROW(UsageError, "unknown wire compression '", name,
           "'; expected none, lossless, bf16, fp16, int8, int4, topk or auto");
}

namespace ring {
namespace {

// Decoded values land here before being reduced into the destination (one per engine thread).
float* scratch_floats(std::size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

unsigned char* scratch_bytes(std::size_t n) {
  thread_local std::vector<unsigned char> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

class LosslessCodec final : public SegmentCodec {
 public:
  LosslessCodec(const CompressionOptions& c, DType dtype, ReduceOp op) : dtype_(dtype), op_(op) {
    opts_.codec = codec_from_name(c.codec.c_str());
    opts_.level = c.level;
    opts_.threads = 1;
  }
  std::size_t bound(std::size_t count) const override {
    return encode_bound(count * dtype_size(dtype_), 1, 0);
  }
  std::size_t encode(const void* src, std::size_t count, void* out) override {
    std::uint64_t shape[1] = {count};
    return lossless_encode(src, count * dtype_size(dtype_), dtype_, shape, 1, opts_, out, bound(count));
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    const std::size_t bytes = count * dtype_size(dtype_);
    if (!reduce) {
      lossless_decode(in, len, dst, bytes);  // validates the frame and its size
      return;
    }
    unsigned char* tmp = scratch_bytes(bytes);
    lossless_decode(in, len, tmp, bytes);
    reduce_into(dtype_, op_, dst, tmp, count);
  }
  bool exact() const override { return true; }

 private:
  DType dtype_;
  ReduceOp op_;
  LosslessOptions opts_;
};

class HalfCodec final : public SegmentCodec {
 public:
  explicit HalfCodec(bool bf16) : bf16_(bf16) {}
  std::size_t bound(std::size_t count) const override { return count * 2; }
  std::size_t encode(const void* src, std::size_t count, void* out) override {
    auto* h = static_cast<std::uint16_t*>(out);
    if (bf16_) {
      quant::fp32_to_bf16(static_cast<const float*>(src), count, h);
    } else {
      quant::fp32_to_fp16(static_cast<const float*>(src), count, h);
    }
    return count * 2;
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, count * 2, WireFormatError, "a 16-bit float segment has the wrong length");
    float* out = reduce ? scratch_floats(count) : static_cast<float*>(dst);
    auto* h = static_cast<const std::uint16_t*>(in);
    if (bf16_) {
      quant::bf16_to_fp32(h, count, out);
    } else {
      quant::fp16_to_fp32(h, count, out);
    }
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }
  bool exact() const override { return false; }

 private:
  bool bf16_;
};

// Payload: num_blocks float32 scales, then the packed integers.
class BlockwiseCodec final : public SegmentCodec {
 public:
  BlockwiseCodec(int bits, std::size_t block) {
    p_.bits = bits;
    p_.block = block;
    p_.rounding = quant::Rounding::kNearest;
  }
  std::size_t bound(std::size_t count) const override {
    return quant::num_blocks(count, p_.block) * sizeof(float) + quant::blockwise_payload_bytes(count, p_.bits);
  }
  std::size_t encode(const void* src, std::size_t count, void* out) override {
    auto* scales = static_cast<float*>(out);
    auto* payload = static_cast<std::uint8_t*>(out) + quant::num_blocks(count, p_.block) * sizeof(float);
    quant::blockwise_encode(static_cast<const float*>(src), count, p_, payload, scales);
    return bound(count);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    RP_ENFORCE_EQ(len, bound(count), WireFormatError, "a quantized segment has the wrong length");
    const std::size_t nb = quant::num_blocks(count, p_.block);
    // Scales arrive unaligned inside the message: copy them out.
    float* scales = scratch_floats(nb + count);
    std::memcpy(scales, in, nb * sizeof(float));
    for (std::size_t b = 0; b < nb; ++b) {
      RP_ENFORCE(std::isfinite(scales[b]) && scales[b] >= 0.0f, WireFormatError,
                 "a quantized segment carries a bad scale");
    }
    float* out = reduce ? scales + nb : static_cast<float*>(dst);
    quant::blockwise_decode(static_cast<const std::uint8_t*>(in) + nb * sizeof(float), scales, count, p_, out);
    if (reduce) reduce_into(DType::kF32, ReduceOp::kSum, dst, out, count);
  }
  bool exact() const override { return false; }

 private:
  quant::BlockwiseParams p_;
};

// Decoded values for error feedback: not scratch_floats, which decode() itself uses.
float* feedback_floats(std::size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n) buf.resize(n);
  return buf.data();
}

}  // namespace

std::size_t SegmentCodec::encode_feedback(float* x, float* r, std::size_t count, void* out, bool keep) {
  const std::size_t bytes = encode(x, count, out);
  float* dec = feedback_floats(count);
  decode(out, bytes, dec, count, false);
  for (std::size_t i = 0; i < count; ++i) r[i] = x[i] - dec[i];
  if (keep && count) std::memcpy(x, dec, count * sizeof(float));
  return bytes;
}

}  // namespace ring

void check_compression(const CompressionOptions& c, DType dtype, ReduceOp op) {
  if (c.kind == WireCompression::kAuto) {
    // Kinds that cannot apply to this dtype/op are simply not candidates (auto_select.h); the
    // parameters of the rest must be valid.
    const bool f32 = dtype == DType::kF32 && (op == ReduceOp::kSum || op == ReduceOp::kAvg);
    for (int k = 1; k < 7; ++k) {
      if (!(c.allow & (1u << k)) || (!f32 && k != static_cast<int>(WireCompression::kLossless))) continue;
      CompressionOptions one = c;
      one.kind = static_cast<WireCompression>(k);
      check_compression(one, dtype, op);
    }
    return;
  }
  if (c.kind == WireCompression::kTopK) {
    RP_ENFORCE(dtype == DType::kF32, UsageError, "topk compression needs float32 data, got ",
               dtype_name(dtype));
    RP_ENFORCE(op == ReduceOp::kSum || op == ReduceOp::kAvg, UsageError,
               "topk compression supports sum and avg, not ", reduce_op_name(op));
    RP_ENFORCE(c.ratio > 0.0 && c.ratio <= 1.0, UsageError, "topk ratio must be in (0, 1], got ", c.ratio);
    return;
  }
  if (c.kind != WireCompression::kNone) (void)ring::make_segment_codec(c, dtype, op);
}

namespace ring {

std::unique_ptr<SegmentCodec> make_segment_codec(const CompressionOptions& c, DType dtype, ReduceOp op) {
  if (c.kind == WireCompression::kLossless) return std::make_unique<LosslessCodec>(c, dtype, op);
  RP_ENFORCE(dtype == DType::kF32, UsageError, "wire compression '", wire_compression_name(c.kind),
             "' needs float32 data, got ", dtype_name(dtype), " (use 'lossless' for other dtypes)");
  RP_ENFORCE(op == ReduceOp::kSum || op == ReduceOp::kAvg, UsageError, "wire compression '",
             wire_compression_name(c.kind), "' supports sum and avg, not ", reduce_op_name(op));
  switch (c.kind) {
    case WireCompression::kBF16: return std::make_unique<HalfCodec>(true);
    case WireCompression::kFP16: return std::make_unique<HalfCodec>(false);
    case WireCompression::kInt8:
    case WireCompression::kInt4:
      RP_ENFORCE(c.block >= 1 && c.block <= (1u << 20), UsageError, "quantization block must be in [1, 2^20], got ",
                 c.block);
      return std::make_unique<BlockwiseCodec>(c.kind == WireCompression::kInt8 ? 8 : 4, c.block);
    default: break;
  }
  RP_THROW(UsageError, "no segment codec for '", wire_compression_name(c.kind), "'");
}

}  // namespace ring
}  // namespace ringpress

// The wire codec registry (codec.h): the builtin rows, lookup, run-time registration, and the one
// error-feedback helper. Adding a builtin codec: its file in this directory plus one row below.
#include <array>
#include <atomic>
#include <cmath>
#include <cstring>
#include <mutex>
#include <vector>

#include "builtin.h"
#include "ringpress/codec.h"
#include "ringpress/error.h"

namespace ringpress {
namespace {

using wire_codecs::make_bf16;
using wire_codecs::make_fp16;
using wire_codecs::make_int2;
using wire_codecs::make_int4;
using wire_codecs::make_int8;
using wire_codecs::make_lossless;
using wire_codecs::make_randomk;
using wire_codecs::make_sign;
using wire_codecs::make_ternary;
using wire_codecs::make_threshold;
using wire_codecs::make_topk;

constexpr auto kAny = CodecDTypes::kReducible;
constexpr auto kF32 = CodecDTypes::kFloat32Sum;
constexpr auto kRing = CodecSchedule::kRing;
constexpr auto kGather = CodecSchedule::kAllgather;

constexpr std::uint32_t kLosslessParams = kParamCodec | kParamLevel;
constexpr std::uint32_t kIntParams = kParamBlock | kParamStochastic;
constexpr std::uint32_t kSparseParams = kParamValues;

// id, name, payload version, exact, dtypes, schedule, factory, doc, params read. Ids are
// wire-format (docs/wire-format.md): never renumber one, add new ones after the last.
const CodecInfo kBuiltin[] = {
    {0, "none", 1, true, kAny, kRing, nullptr, "no codec: the plain algorithms", 0},
    {1, "lossless", 1, true, kAny, kRing, make_lossless, "shuffle + zstd/lz4 frames, bit-exact",
     kLosslessParams},
    {2, "bf16", 1, false, kF32, kRing, make_bf16, "float32 as bfloat16, round to nearest even", 0},
    {3, "fp16", 1, false, kF32, kRing, make_fp16, "float32 as float16, round to nearest even", 0},
    {4, "int8", 1, false, kF32, kRing, make_int8, "blockwise int8, one float32 scale per block",
     kIntParams},
    {5, "int4", 1, false, kF32, kRing, make_int4, "blockwise int4, one float32 scale per block",
     kIntParams},
    {6, "topk", 1, false, kF32, kGather, make_topk,
     "k largest magnitudes: delta-coded indices + values",
     kParamRatio | kParamSampled | kParamTolerance | kSparseParams},
    {7, "int2", 1, false, kF32, kRing, make_int2, "blockwise int2, one float32 scale per block",
     kIntParams},
    {8, "sign", 1, false, kF32, kRing, make_sign, "1-bit signs, one mean |x| scale per block",
     kParamBlock},
    {9, "ternary", 1, false, kF32, kRing, make_ternary,
     "TernGrad: {-1, 0, +1} x max|x| per block, stochastic, unbiased", kParamBlock},
    {10, "randomk", 1, false, kF32, kGather, make_randomk,
     "k entries at seeded random positions: delta-coded indices + values",
     kParamRatio | kSparseParams},
    {11, "threshold", 1, false, kF32, kGather, make_threshold,
     "every |x| >= threshold: delta-coded indices + values", kParamThreshold | kSparseParams},
};

struct Registry {
  std::mutex mu;  // writers only; readers see a slot once `present` is set (release/acquire)
  std::array<CodecInfo, kMaxCodecs> rows{};
  std::array<std::atomic<bool>, kMaxCodecs> present{};
};

void add(Registry& reg, const CodecInfo& info) {
  RP_ENFORCE(info.id < kMaxCodecs, UsageError, "codec '", info.name, "': id ", int(info.id),
             " is not below ", kMaxCodecs);
  RP_ENFORCE(info.name != nullptr && *info.name != '\0' && std::strcmp(info.name, "auto") != 0,
             UsageError, "a codec needs a name other than 'auto'");
  std::lock_guard<std::mutex> lock(reg.mu);
  for (int i = 0; i < kMaxCodecs; ++i) {
    if (!reg.present[i].load(std::memory_order_relaxed)) continue;
    RP_ENFORCE(i != info.id, UsageError, "codec id ", int(info.id), " is taken by '",
               reg.rows[i].name, "'");
    RP_ENFORCE(std::strcmp(reg.rows[i].name, info.name) != 0, UsageError, "codec name '", info.name,
               "' is taken by id ", i);
  }
  reg.rows[info.id] = info;
  reg.present[info.id].store(true, std::memory_order_release);
}

Registry& registry() {
  static Registry* reg = [] {
    auto* r = new Registry();  // never destroyed: codecs may be looked up during exit
    for (const CodecInfo& info : kBuiltin) add(*r, info);
    return r;
  }();
  return *reg;
}

std::string known_names() {
  std::string s;
  for (const CodecInfo& c : codecs()) s += std::string(s.empty() ? "" : ", ") + c.name;
  return s + ", auto";
}

}  // namespace

std::vector<CodecInfo> codecs() {
  Registry& reg = registry();
  std::vector<CodecInfo> out;
  for (int i = 0; i < kMaxCodecs; ++i) {
    if (reg.present[i].load(std::memory_order_acquire)) out.push_back(reg.rows[i]);
  }
  return out;
}

const CodecInfo* find_codec(int id) noexcept {
  if (id < 0 || id >= kMaxCodecs) return nullptr;
  Registry& reg = registry();
  return reg.present[id].load(std::memory_order_acquire) ? &reg.rows[id] : nullptr;
}

const CodecInfo& codec_by_name(const std::string& name) {
  Registry& reg = registry();
  for (int i = 0; i < kMaxCodecs; ++i) {
    if (reg.present[i].load(std::memory_order_acquire) && name == reg.rows[i].name)
      return reg.rows[i];
  }
  RP_THROW(UsageError, "unknown compression '", name, "'; expected one of ", known_names());
}

void register_codec(const CodecInfo& info) {
  RP_ENFORCE(info.make != nullptr, UsageError, "codec '", info.name, "' needs a factory");
  add(registry(), info);
}

bool codec_accepts(const CodecInfo& info, DType dtype, ReduceOp op) noexcept {
  if (info.dtypes == CodecDTypes::kReducible) return reduce_supported(dtype);
  return dtype == DType::kF32 && (op == ReduceOp::kSum || op == ReduceOp::kAvg);
}

std::unique_ptr<Codec> make_codec(WireCompression id, const CodecParams& params, DType dtype,
                                  ReduceOp op) {
  const CodecInfo* info = find_codec(static_cast<int>(id));
  RP_ENFORCE(info != nullptr && info->make != nullptr, UsageError, "no wire codec with id ",
             static_cast<int>(id));
  if (!codec_accepts(*info, dtype, op)) {
    if (!reduce_supported(dtype) || info->dtypes == CodecDTypes::kReducible) {
      RP_THROW(UsageError, "compression '", info->name, "' does not support dtype ",
               dtype_name(dtype));
    }
    RP_ENFORCE(dtype == DType::kF32, UsageError, "compression '", info->name,
               "' needs float32 data, got ", dtype_name(dtype),
               " (use 'lossless' for other dtypes)");
    RP_THROW(UsageError, "compression '", info->name, "' supports sum and avg, not ",
             reduce_op_name(op));
  }
  return info->make(params, dtype, op);
}

std::vector<std::string> codec_param_names(std::uint32_t mask) {
  static const char* const kNames[] = {"codec",     "level",      "block",     "ratio", "sampled",
                                       "tolerance", "stochastic", "threshold", "values"};
  std::vector<std::string> out;
  for (std::size_t i = 0; i < sizeof(kNames) / sizeof(kNames[0]); ++i) {
    if (mask & (1u << i)) out.emplace_back(kNames[i]);
  }
  return out;
}

const char* wire_compression_name(WireCompression c) noexcept {
  if (c == WireCompression::kAuto) return "auto";
  const CodecInfo* info = find_codec(static_cast<int>(c));
  return info ? info->name : "?";
}

WireCompression wire_compression_from_name(const std::string& name) {
  if (name == "auto") return WireCompression::kAuto;
  return static_cast<WireCompression>(codec_by_name(name).id);
}

std::size_t Codec::encode_feedback(float* x, float* r, std::size_t count, void* out,
                                   std::uint64_t seed, bool keep) {
  const std::size_t bytes = encode(x, count, out, seed);
  auto* dec = static_cast<float*>(
      wire_codecs::scratch(wire_codecs::Scratch::kFeedback, count * sizeof(float)));
  decode(out, bytes, dec, count, false);
  // A non-finite decoded value (a NaN block, a bf16 overflow) leaves no residual: r stays finite.
  for (std::size_t i = 0; i < count; ++i) r[i] = feedback_residual(x[i], dec[i]);
  if (keep && count) std::memcpy(x, dec, count * sizeof(float));
  return bytes;
}

std::size_t Codec::encode_feedback_add(const float* g, float* r, std::size_t count, void* out,
                                       std::uint64_t seed) {
  for (std::size_t i = 0; i < count; ++i) r[i] += g[i];
  return encode_feedback(r, r, count, out, seed, false);
}

std::size_t Codec::encode_feedback_fold(float* x, float* r, std::size_t count, void* out,
                                        std::uint64_t seed, bool keep) {
  reduce_into(DType::kF32, ReduceOp::kSum, x, r, count);  // x += r, the dispatched SIMD sum
  return encode_feedback(x, r, count, out, seed, keep);
}

void Codec::decode_reduce_fold(const void* in, std::size_t len, float* dst, const float* r,
                               std::size_t count) {
  reduce_into(DType::kF32, ReduceOp::kSum, dst, r, count);
  decode(in, len, dst, count, true);
}

namespace wire_codecs {

void* scratch(Scratch which, std::size_t bytes) {
  thread_local std::vector<unsigned char> bufs[3];
  auto& b = bufs[static_cast<int>(which)];
  // float-aligned: vector<unsigned char> storage comes from operator new (max_align_t aligned).
  if (b.size() < bytes) b.resize(bytes);
  return b.data();
}

std::size_t fixed_payload_len(const Codec& c, std::size_t count) {
  try {
    return c.bound(count);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kUsage) throw;
    RP_THROW(WireFormatError, "no payload can hold ", count, " elements: ", e.detail());
  }
}

void check_block(const CodecParams& p) {
  RP_ENFORCE(p.block >= 1 && p.block <= (1u << 20), UsageError,
             "quantization block must be in [1, 2^20], got ", p.block);
}

float* checked_scales(const void* in, std::size_t nb, std::size_t count, bool reduce) {
  auto* scales =
      static_cast<float*>(scratch(Scratch::kDecode, (nb + (reduce ? count : 0)) * sizeof(float)));
  if (nb) std::memcpy(scales, in, nb * sizeof(float));
  for (std::size_t b = 0; b < nb; ++b) {
    // The NaN encoders write (0x7fc00000): a block whose input was not finite (quantize.h); it
    // decodes to NaN. Any other NaN, an infinity or a negative value is not a scale.
    std::uint32_t u;
    std::memcpy(&u, &scales[b], 4);
    RP_ENFORCE(u == 0x7fc00000u || (std::isfinite(scales[b]) && scales[b] >= 0.0f), WireFormatError,
               "a quantized payload carries a bad scale (block ", b, ": ", scales[b],
               "; scales must be finite and >= 0, or the NaN 0x7fc00000)");
  }
  return scales;
}

}  // namespace wire_codecs
}  // namespace ringpress

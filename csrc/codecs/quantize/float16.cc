// fp32 <-> IEEE binary16 conversion (contract: ringpress/quantize.h).
//
// Round-to-nearest-even; NaN -> quiet NaN (top payload bits kept), Inf -> Inf, |x| >= 65520 ->
// Inf, fp16 subnormals exact both ways. Cost: 4 bytes read + 2 written per element, one pass.
// Kernels: F16C (vcvtps2ph / vcvtph2ps, per-function target attribute, chosen once when the CPU
// has F16C and simd_level() >= AVX2), otherwise the portable branch-free bit manipulation below
// (compiled for baseline, AVX2 and AVX-512 via target attributes so the compiler vectorises it).
#include <cstring>

#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"
#include "ringpress/thread_pool.h"
#include "target.h"
#if RP_Q_X86
#include <immintrin.h>
#define RP_TARGET_F16C __attribute__((target("avx2,f16c")))
#endif

namespace ringpress::quant {
namespace {

inline __attribute__((always_inline)) std::uint16_t f32_to_f16_bits(float xf) {
  std::uint32_t u;
  std::memcpy(&u, &xf, 4);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  // Normal fp16 range: rebias the exponent (127 -> 15) and round the 13 dropped bits to even;
  // a carry correctly moves into the exponent.
  const std::uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // Subnormal range (|x| < 2^-14): adding 0.5f puts the fp16 subnormal unit 2^-24 at the last
  // mantissa bit, so the FPU performs the RNE; 0x400 (the smallest normal) comes out right.
  float fa;
  std::memcpy(&fa, &a, 4);
  const float s = fa + 0.5f;
  std::uint32_t sb;
  std::memcpy(&sb, &s, 4);
  const std::uint32_t sub = sb - 0x3f000000u;
  const std::uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  std::uint32_t r = a < 0x38800000u ? sub : normal;
  r = a >= 0x477ff000u ? 0x7c00u : r;
  r = a > 0x7f800000u ? nan : r;
  return static_cast<std::uint16_t>(sign | r);
}

inline __attribute__((always_inline)) float f16_to_f32_value(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t a = h & 0x7fffu;
  const std::uint32_t normal = (a << 13) + 0x38000000u;
  const std::uint32_t special = (a << 13) | 0x7f800000u | (a > 0x7c00u ? 0x00400000u : 0u);
  // Subnormal: 0.5 + a*2^-24 is exact in fp32, subtracting 0.5 leaves a*2^-24 exactly.
  const std::uint32_t tb = 0x3f000000u + a;
  float t;
  std::memcpy(&t, &tb, 4);
  t -= 0.5f;
  std::uint32_t sub;
  std::memcpy(&sub, &t, 4);
  std::uint32_t r = a >= 0x7c00u ? special : normal;
  r = a < 0x400u ? sub : r;
  r |= sign;
  float out;
  std::memcpy(&out, &r, 4);
  return out;
}

inline __attribute__((always_inline)) void to_f16_body(const float* __restrict x, std::size_t n,
                                                       std::uint16_t* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = f32_to_f16_bits(x[i]);
}
inline __attribute__((always_inline)) void from_f16_body(const std::uint16_t* __restrict h,
                                                         std::size_t n, float* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = f16_to_f32_value(h[i]);
}

using ToF16 = void (*)(const float*, std::size_t, std::uint16_t*);
using FromF16 = void (*)(const std::uint16_t*, std::size_t, float*);

void to_f16_generic(const float* x, std::size_t n, std::uint16_t* out) {
  to_f16_body(x, n, out);
}
void from_f16_generic(const std::uint16_t* h, std::size_t n, float* out) {
  from_f16_body(h, n, out);
}

#if RP_Q_X86
RP_TARGET_F16C void to_f16_f16c(const float* x, std::size_t n, std::uint16_t* out) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i),
                     _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
  }
  for (; i < n; ++i) out[i] = f32_to_f16_bits(x[i]);
}
RP_TARGET_F16C void from_f16_f16c(const std::uint16_t* h, std::size_t n, float* out) {
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i));
    _mm256_storeu_ps(out + i, _mm256_cvtph_ps(v));
  }
  for (; i < n; ++i) out[i] = f16_to_f32_value(h[i]);
}
#endif

bool use_f16c() {
#if RP_Q_X86
  static const bool yes = cpu_features().f16c && simd_level() >= SimdLevel::kAVX2;
  return yes;
#else
  return false;
#endif
}

constexpr std::size_t kChunk = std::size_t(1) << 16;

template <typename In, typename Out, typename Fn>
void run_chunked(const In* in, std::size_t n, Out* out, int threads, Fn fn) {
  const std::size_t chunks = (n + kChunk - 1) / kChunk;
  if (threads <= 1 || chunks <= 1) {
    if (n) fn(in, n, out);
    return;
  }
  parallel_for(chunks, threads, [&](std::size_t c, int) {
    const std::size_t b = c * kChunk;
    const std::size_t len = n - b < kChunk ? n - b : kChunk;
    fn(in + b, len, out + b);
  });
}

void check_ptrs(const void* a, const void* b, std::size_t n, const char* op) {
  if (n && (a == nullptr || b == nullptr)) {
    ScopedErrorContext ctx(op);
    RP_THROW(UsageError, "null buffer for ", n, " elements");
  }
}

}  // namespace

const char* fp16_kernel_name() {
  return use_f16c() ? "f16c" : "generic";
}

void fp32_to_fp16_generic(const float* x, std::size_t n, std::uint16_t* out) {
  to_f16_generic(x, n, out);
}
void fp16_to_fp32_generic(const std::uint16_t* h, std::size_t n, float* out) {
  from_f16_generic(h, n, out);
}

void fp32_to_fp16(const float* x, std::size_t n, std::uint16_t* out, int threads) {
  check_ptrs(x, out, n, "quant.fp32_to_fp16");
  ToF16 fn = to_f16_generic;
#if RP_Q_X86
  if (use_f16c()) fn = to_f16_f16c;
#endif
  run_chunked(x, n, out, threads, fn);
}

void fp16_to_fp32(const std::uint16_t* h, std::size_t n, float* out, int threads) {
  check_ptrs(h, out, n, "quant.fp16_to_fp32");
  FromF16 fn = from_f16_generic;
#if RP_Q_X86
  if (use_f16c()) fn = from_f16_f16c;
#endif
  run_chunked(h, n, out, threads, fn);
}

}  // namespace ringpress::quant

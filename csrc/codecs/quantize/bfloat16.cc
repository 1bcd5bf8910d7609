// fp32 <-> bfloat16 conversion (contract: ringpress/quantize.h).
//
// bf16 is the high half of fp32: encode rounds the low 16 bits to nearest-even (a carry may
// reach the exponent, so values rounding past FLT_MAX become Inf, as IEEE requires); NaN keeps
// its top payload bits with the quiet bit set; decode is a 16-bit shift (exact).
// Cost: 4 bytes read + 2 written per element, one pass, branch-free; compiled for baseline, AVX2
// and AVX-512 (target attributes), the table picked from simd_level().
#include <cstring>

#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"
#include "ringpress/thread_pool.h"
#include "target.h"

namespace ringpress::quant {
namespace {

inline __attribute__((always_inline)) void to_bf16_body(const float* __restrict x, std::size_t n,
                                                        std::uint16_t* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) {
    std::uint32_t u;
    std::memcpy(&u, x + i, 4);
    const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    const std::uint32_t nan = (u >> 16) | 0x0040u;
    out[i] = static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
  }
}
inline __attribute__((always_inline)) void from_bf16_body(const std::uint16_t* __restrict h,
                                                          std::size_t n, float* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t u = static_cast<std::uint32_t>(h[i]) << 16;
    // A signalling NaN comes back quiet.
    const std::uint32_t q = (u & 0x7fffffffu) > 0x7f800000u ? (u | 0x00400000u) : u;
    std::memcpy(out + i, &q, 4);
  }
}

using ToBf16 = void (*)(const float*, std::size_t, std::uint16_t*);
using FromBf16 = void (*)(const std::uint16_t*, std::size_t, float*);

void to_bf16_generic(const float* x, std::size_t n, std::uint16_t* o) {
  to_bf16_body(x, n, o);
}
void from_bf16_generic(const std::uint16_t* h, std::size_t n, float* o) {
  from_bf16_body(h, n, o);
}
#if RP_Q_X86
RP_TARGET_AVX2 void to_bf16_avx2(const float* x, std::size_t n, std::uint16_t* o) {
  to_bf16_body(x, n, o);
}
RP_TARGET_AVX2 void from_bf16_avx2(const std::uint16_t* h, std::size_t n, float* o) {
  from_bf16_body(h, n, o);
}
RP_TARGET_AVX512 void to_bf16_avx512(const float* x, std::size_t n, std::uint16_t* o) {
  to_bf16_body(x, n, o);
}
RP_TARGET_AVX512 void from_bf16_avx512(const std::uint16_t* h, std::size_t n, float* o) {
  from_bf16_body(h, n, o);
}
#endif

struct Bf16Kernels {
  ToBf16 to;
  FromBf16 from;
};

const Bf16Kernels& kernels() {
  static const Bf16Kernels k = [] {
#if RP_Q_X86
    const SimdLevel lvl = simd_level();
    if (lvl >= SimdLevel::kAVX512) return Bf16Kernels{to_bf16_avx512, from_bf16_avx512};
    if (lvl >= SimdLevel::kAVX2) return Bf16Kernels{to_bf16_avx2, from_bf16_avx2};
#endif
    return Bf16Kernels{to_bf16_generic, from_bf16_generic};
  }();
  return k;
}

constexpr std::size_t kChunk = std::size_t(1) << 16;

template <typename In, typename Out, typename Fn>
void run_chunked(const In* in, std::size_t n, Out* out, int threads, Fn fn, const char* op) {
  if (n && (in == nullptr || out == nullptr)) {
    ScopedErrorContext ctx(op);
    RP_THROW(UsageError, "null buffer for ", n, " elements");
  }
  const std::size_t chunks = (n + kChunk - 1) / kChunk;
  if (threads <= 1 || chunks <= 1) {
    if (n) fn(in, n, out);
    return;
  }
  parallel_for(chunks, threads, [&](std::size_t c, int) {
    const std::size_t b = c * kChunk;
    fn(in + b, n - b < kChunk ? n - b : kChunk, out + b);
  });
}

}  // namespace

void fp32_to_bf16(const float* x, std::size_t n, std::uint16_t* out, int threads) {
  run_chunked(x, n, out, threads, kernels().to, "quant.fp32_to_bf16");
}
void bf16_to_fp32(const std::uint16_t* h, std::size_t n, float* out, int threads) {
  run_chunked(h, n, out, threads, kernels().from, "quant.bf16_to_fp32");
}

}  // namespace ringpress::quant

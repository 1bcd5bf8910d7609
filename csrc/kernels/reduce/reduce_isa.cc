// Element-wise reduction kernels (contract: ringpress/reduce.h), compiled once per ISA.
//
// This file is not built on its own: CMake generates reduce_{generic,avx2,avx512}.cc, each of which
// defines RP_ISA_NS and #includes this file, and compiles them with that ISA's flags (generic: -O3
// only; avx2: -mavx2 -mf16c -mfma; avx512: -mavx512{f,bw,vl,dq} -mf16c -mfma). reduce.cc picks one
// copy once from simd_level().
//
// Why it is written this way
//   * Everything lives in ringpress::reduce_isa::RP_ISA_NS and nothing here may have external
//     linkage outside it: an inline function or template shared with the baseline build (a std::
//     algorithm, a helper from another header) compiled here with -mavx512f could be the copy the
//     linker keeps for everyone, and the wheel would die with SIGILL on an older CPU. So only
//     builtins, intrinsics (always_inline) and our own namespaced templates are used; the includes
//     below contribute declarations and enums only.
//   * The loops are plain C++ that GCC auto-vectorises for whichever ISA the copy is compiled for;
//     the pointer cases (out == a, out == b, out == a == b, disjoint) get separate loops so the
//     compiler needs no run-time alias checks.
//   * Integer sum/prod run in unsigned arithmetic and truncate (wraps modulo 2^bits, no UB).
//   * Float min/max are np.minimum/np.maximum: a NaN in either operand gives NaN.
//   * f16/bf16 are widened to f32, combined in f32 and rounded back to nearest-even once (NaN
//     stays NaN, quiet). bf16 does this per element in one auto-vectorised loop; f16 goes through
//     L1-sized f32 scratch blocks (F16C / AVX-512 vcvtph2ps/vcvtps2ph when the copy has them,
//     else a bit-exact software conversion), so the combine is the same f32 loop.
//   * scale_avg: floats divide (true division, f16/bf16 via f32); integers up to 32 bits divide in
//     double and truncate, which is exact (|q - fl(q)| <= 2^-22/d < 1/d, the distance from a
//     non-integer quotient x/d to the nearest integer) and vectorises, unlike integer division;
//     int64/uint64 use integer division.
// Cost: one pass, 2n elements read + n written; f16 adds an L1-resident f32 round trip.
#ifndef RP_ISA_NS
#error "reduce_isa.cc is compiled through the generated reduce_<isa>.cc wrappers (RP_ISA_NS)"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "ringpress/dtype.h"
#include "ringpress/reduce.h"

#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace ringpress::reduce_isa::RP_ISA_NS {

void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n);
void scale_avg(DType dtype, void* data, std::size_t n, int divisor);
const char* isa_name() noexcept;

namespace {

#define RP_INLINE inline __attribute__((always_inline))

// ------------------------------------------------------------------ operators
// The unsigned type in which integer sum/prod are computed (uint8 widens to uint32 so the
// product cannot overflow int after promotion).
template <typename T>
struct Wide {
  using type = std::make_unsigned_t<T>;
};
template <>
struct Wide<std::uint8_t> {
  using type = std::uint32_t;
};
template <>
struct Wide<std::int16_t> {  // a uint16 product would overflow int after promotion
  using type = std::uint32_t;
};
template <>
struct Wide<std::uint16_t> {
  using type = std::uint32_t;
};

struct OpSum {
  template <typename T>
  static RP_INLINE T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using W = typename Wide<T>::type;
      return static_cast<T>(static_cast<W>(static_cast<W>(a) + static_cast<W>(b)));
    } else {
      return a + b;
    }
  }
};
struct OpProd {
  template <typename T>
  static RP_INLINE T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      using W = typename Wide<T>::type;
      return static_cast<T>(static_cast<W>(static_cast<W>(a) * static_cast<W>(b)));
    } else {
      return a * b;
    }
  }
};
struct OpMin {
  template <typename T>
  static RP_INLINE T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return b < a ? b : a;
    } else {
      return (a < b || a != a) ? a : b;  // a NaN in a -> a; a NaN in b fails a < b -> b
    }
  }
};
struct OpMax {
  template <typename T>
  static RP_INLINE T apply(T a, T b) {
    if constexpr (std::is_integral_v<T>) {
      return a < b ? b : a;
    } else {
      return (a > b || a != a) ? a : b;
    }
  }
};

// ------------------------------------------------------------------ generic loops
template <typename T, typename F>
void loop_disjoint(T* __restrict out, const T* __restrict a, const T* __restrict b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) out[i] = F::apply(a[i], b[i]);
}
template <typename T, typename F>
void loop_out_is_a(T* __restrict io, const T* __restrict b, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) io[i] = F::apply(io[i], b[i]);
}
template <typename T, typename F>
void loop_out_is_b(T* __restrict io, const T* __restrict a, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) io[i] = F::apply(a[i], io[i]);
}
template <typename T, typename F>
void loop_all_same(T* io, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) io[i] = F::apply(io[i], io[i]);
}

template <typename T, typename F>
void run(void* out_v, const void* a_v, const void* b_v, std::size_t n) {
  T* out = static_cast<T*>(out_v);
  const T* a = static_cast<const T*>(a_v);
  const T* b = static_cast<const T*>(b_v);
  if (out == a && out == b) {
    loop_all_same<T, F>(out, n);
  } else if (out == a) {
    loop_out_is_a<T, F>(out, b, n);
  } else if (out == b) {
    loop_out_is_b<T, F>(out, a, n);
  } else {
    loop_disjoint<T, F>(out, a, b, n);
  }
}

// ------------------------------------------------------------------ f16 / bf16 conversion
RP_INLINE std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
RP_INLINE float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Branch-free select. The float additions below are evaluated unconditionally; written as
// ternaries, GCC sinks them into the branch that uses them and then (under the default
// -ftrapping-math) refuses to if-convert, which leaves the loop scalar.
RP_INLINE std::uint32_t select(bool c, std::uint32_t x, std::uint32_t y) {
  const std::uint32_t m = 0u - static_cast<std::uint32_t>(c);
  return (x & m) | (y & ~m);
}

// Software IEEE binary16 conversion, bit-identical to vcvtps2ph (round to nearest-even) /
// vcvtph2ps, including subnormals, Inf and NaN (quieted, top payload bits kept). Same algorithm
// as csrc/codecs/quantize/float16.cc, duplicated here so that it is compiled per ISA.
RP_INLINE std::uint16_t f32_to_f16_soft(float xf) {
  const std::uint32_t u = bits_of(xf);
  const std::uint32_t sign = (u >> 16) & 0x8000u;
  const std::uint32_t a = u & 0x7fffffffu;
  // Normal range: rebias 127 -> 15 and round the 13 dropped bits to even (a carry moves into the
  // exponent, up to Inf).
  const std::uint32_t normal = (a - 0x38000000u + 0xfffu + ((a >> 13) & 1u)) >> 13;
  // |x| < 2^-14: adding 0.5f puts the fp16 subnormal unit 2^-24 at the last mantissa bit, so the
  // FPU rounds to nearest-even for us.
  const std::uint32_t sub = bits_of(float_of(a) + 0.5f) - 0x3f000000u;
  const std::uint32_t nan = 0x7e00u | ((a >> 13) & 0x3ffu);
  std::uint32_t r = select(a < 0x38800000u, sub, normal);
  r = select(a >= 0x477ff000u, 0x7c00u, r);
  r = select(a > 0x7f800000u, nan, r);
  return static_cast<std::uint16_t>(sign | r);
}
RP_INLINE float f16_to_f32_soft(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t a = h & 0x7fffu;
  const std::uint32_t normal = (a << 13) + 0x38000000u;
  const std::uint32_t special = (a << 13) | 0x7f800000u | select(a > 0x7c00u, 0x00400000u, 0u);
  // Subnormal: 0.5 + a*2^-24 is exact in f32; subtracting 0.5 leaves a*2^-24 exactly.
  const std::uint32_t sub = bits_of(float_of(0x3f000000u + a) - 0.5f);
  std::uint32_t r = select(a >= 0x7c00u, special, normal);
  r = select(a < 0x400u, sub, r);
  return float_of(r | sign);
}

RP_INLINE std::uint16_t f32_to_bf16(float f) {
  const std::uint32_t u = bits_of(f);
  const std::uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const std::uint32_t nan = (u >> 16) | 0x0040u;  // keep the top payload bits, set quiet
  return static_cast<std::uint16_t>((u & 0x7fffffffu) > 0x7f800000u ? nan : rounded);
}
RP_INLINE float bf16_to_f32(std::uint16_t h) {
  return float_of(static_cast<std::uint32_t>(h) << 16);
}

struct CvtF16 {
  // By blocks: with F16C the conversions are intrinsics; without it the fused software chain
  // measured ~25% slower than blocks under SSE2 (register pressure, emulated 32->16 packing).
  static constexpr bool kFused = false;
  static RP_INLINE float to_f32(std::uint16_t h) { return f16_to_f32_soft(h); }
  static RP_INLINE std::uint16_t from_f32(float f) { return f32_to_f16_soft(f); }
  static void widen(const std::uint16_t* __restrict h, std::size_t n, float* __restrict f) {
    std::size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
      // maskz forms with a full mask: the plain intrinsics use _mm*_undefined_*(), which GCC 12
      // reports as -Wmaybe-uninitialized (GCC bug 105593); same instruction.
      _mm512_storeu_ps(f + i,
                       _mm512_maskz_cvtph_ps(
                           0xffff, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      _mm256_storeu_ps(f + i,
                       _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
    }
#endif
    for (; i < n; ++i) f[i] = f16_to_f32_soft(h[i]);
  }
  static void narrow(const float* __restrict f, std::size_t n, std::uint16_t* __restrict h) {
    std::size_t i = 0;
#if defined(__AVX512F__)
    for (; i + 16 <= n; i += 16) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + i),
                          _mm512_maskz_cvtps_ph(0xffff, _mm512_loadu_ps(f + i),
                                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#elif defined(__F16C__)
    for (; i + 8 <= n; i += 8) {
      _mm_storeu_si128(
          reinterpret_cast<__m128i*>(h + i),
          _mm256_cvtps_ph(_mm256_loadu_ps(f + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
#endif
    for (; i < n; ++i) h[i] = f32_to_f16_soft(f[i]);
  }
};

struct CvtBF16 {
  static constexpr bool kFused = true;
  static RP_INLINE float to_f32(std::uint16_t h) { return bf16_to_f32(h); }
  static RP_INLINE std::uint16_t from_f32(float f) { return f32_to_bf16(f); }
};

// Blocks of 1024 elements: 8 KiB of f32 scratch, stays in L1 between widen, combine and narrow.
constexpr std::size_t kHalfBlock = 1024;

// Widen, combine, round per element in one loop, which the compiler vectorises whole (bf16:
// the conversions are shifts and adds; ~2x faster than going through the f32 scratch blocks).
template <typename Cvt, typename F>
struct HalfOp {
  static RP_INLINE std::uint16_t apply(std::uint16_t a, std::uint16_t b) {
    return Cvt::from_f32(F::apply(Cvt::to_f32(a), Cvt::to_f32(b)));
  }
};

template <typename Cvt, typename F>
void run_half(void* out_v, const void* a_v, const void* b_v, std::size_t n) {
  if constexpr (Cvt::kFused) {
    run<std::uint16_t, HalfOp<Cvt, F>>(out_v, a_v, b_v, n);
  } else {
    auto* out = static_cast<std::uint16_t*>(out_v);
    const auto* a = static_cast<const std::uint16_t*>(a_v);
    const auto* b = static_cast<const std::uint16_t*>(b_v);
    alignas(64) float fa[kHalfBlock];
    alignas(64) float fb[kHalfBlock];
    for (std::size_t i = 0; i < n; i += kHalfBlock) {
      const std::size_t m = n - i < kHalfBlock ? n - i : kHalfBlock;
      // Both inputs are in scratch before this block of out is written, so out may be a or b.
      Cvt::widen(a + i, m, fa);
      Cvt::widen(b + i, m, fb);
      loop_out_is_a<float, F>(fa, fb, m);
      Cvt::narrow(fa, m, out + i);
    }
  }
}

template <typename F>
void dispatch_dtype(DType dtype, void* out, const void* a, const void* b, std::size_t n) {
  switch (dtype) {
    case DType::kF32: run<float, F>(out, a, b, n); break;
    case DType::kF64: run<double, F>(out, a, b, n); break;
    case DType::kF16: run_half<CvtF16, F>(out, a, b, n); break;
    case DType::kBF16: run_half<CvtBF16, F>(out, a, b, n); break;
    case DType::kI32: run<std::int32_t, F>(out, a, b, n); break;
    case DType::kI64: run<std::int64_t, F>(out, a, b, n); break;
    case DType::kU8: run<std::uint8_t, F>(out, a, b, n); break;
    case DType::kI8: run<std::int8_t, F>(out, a, b, n); break;
    case DType::kI16: run<std::int16_t, F>(out, a, b, n); break;
    case DType::kU16: run<std::uint16_t, F>(out, a, b, n); break;
    case DType::kU32: run<std::uint32_t, F>(out, a, b, n); break;
    case DType::kU64: run<std::uint64_t, F>(out, a, b, n); break;
    default: break;  // reduce.cc validated the dtype
  }
}

// ------------------------------------------------------------------ scale_avg
template <typename T>
void div_float(T* __restrict x, std::size_t n, T d) {
  for (std::size_t i = 0; i < n; ++i) x[i] = x[i] / d;
}
// int32 / uint8: exact truncating division through double (see the header comment).
template <typename T>
void div_via_double(T* __restrict x, std::size_t n, double d) {
  for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<T>(static_cast<double>(x[i]) / d);
}
template <typename T>
void div_int(T* __restrict x, std::size_t n, T d) {
  for (std::size_t i = 0; i < n; ++i) x[i] = x[i] / d;
}
template <typename Cvt>
void div_half(std::uint16_t* x, std::size_t n, float d) {
  if constexpr (Cvt::kFused) {
    for (std::size_t i = 0; i < n; ++i) x[i] = Cvt::from_f32(Cvt::to_f32(x[i]) / d);
  } else {
    alignas(64) float f[kHalfBlock];
    for (std::size_t i = 0; i < n; i += kHalfBlock) {
      const std::size_t m = n - i < kHalfBlock ? n - i : kHalfBlock;
      Cvt::widen(x + i, m, f);
      div_float<float>(f, m, d);
      Cvt::narrow(f, m, x + i);
    }
  }
}

}  // namespace

void reduce3(DType dtype, ReduceOp op, void* out, const void* a, const void* b, std::size_t n) {
  if (n == 0) return;
  switch (op) {
    case ReduceOp::kSum:
    case ReduceOp::kAvg: dispatch_dtype<OpSum>(dtype, out, a, b, n); break;
    case ReduceOp::kMin: dispatch_dtype<OpMin>(dtype, out, a, b, n); break;
    case ReduceOp::kMax: dispatch_dtype<OpMax>(dtype, out, a, b, n); break;
    case ReduceOp::kProd: dispatch_dtype<OpProd>(dtype, out, a, b, n); break;
  }
}

void scale_avg(DType dtype, void* data, std::size_t n, int divisor) {
  if (n == 0 || divisor == 1) return;
  // Divisors above 2^24 are not exact in f32; f32 data then divides in double (rounded twice,
  // still far more accurate than dividing by a rounded divisor). No real world size gets there.
  const bool exact_f32 = divisor <= (1 << 24);
  switch (dtype) {
    case DType::kF32:
      if (exact_f32) {
        div_float<float>(static_cast<float*>(data), n, static_cast<float>(divisor));
      } else {
        float* x = static_cast<float*>(data);
        for (std::size_t i = 0; i < n; ++i)
          x[i] = static_cast<float>(static_cast<double>(x[i]) / divisor);
      }
      break;
    case DType::kF64:
      div_float<double>(static_cast<double*>(data), n, static_cast<double>(divisor));
      break;
    case DType::kF16:
      div_half<CvtF16>(static_cast<std::uint16_t*>(data), n, static_cast<float>(divisor));
      break;
    case DType::kBF16:
      div_half<CvtBF16>(static_cast<std::uint16_t*>(data), n, static_cast<float>(divisor));
      break;
    case DType::kI32:
      div_via_double<std::int32_t>(static_cast<std::int32_t*>(data), n, divisor);
      break;
    case DType::kI64: div_int<std::int64_t>(static_cast<std::int64_t*>(data), n, divisor); break;
    case DType::kU64:
      div_int<std::uint64_t>(static_cast<std::uint64_t*>(data), n,
                             static_cast<std::uint64_t>(divisor));
      break;
    case DType::kU8:
      div_via_double<std::uint8_t>(static_cast<std::uint8_t*>(data), n, divisor);
      break;
    case DType::kI8:
      div_via_double<std::int8_t>(static_cast<std::int8_t*>(data), n, divisor);
      break;
    case DType::kI16:
      div_via_double<std::int16_t>(static_cast<std::int16_t*>(data), n, divisor);
      break;
    case DType::kU16:
      div_via_double<std::uint16_t>(static_cast<std::uint16_t*>(data), n, divisor);
      break;
    case DType::kU32:
      div_via_double<std::uint32_t>(static_cast<std::uint32_t*>(data), n, divisor);
      break;
    default: break;  // reduce.cc validated the dtype
  }
}

const char* isa_name() noexcept {
#define RP_STR2_(x) #x
#define RP_STR_(x) RP_STR2_(x)
  return RP_STR_(RP_ISA_NS);
#undef RP_STR_
#undef RP_STR2_
}

#undef RP_INLINE

}  // namespace ringpress::reduce_isa::RP_ISA_NS

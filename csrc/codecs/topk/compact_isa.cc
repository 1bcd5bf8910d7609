// Threshold compaction, the pass that reads all of x in sampled and threshold top-k: every i in
// [begin, end) with abs_bits(x[i]) >= tbits is appended (index, value) in ascending order.
//
// Contract: the same output as internal::compact_range (topk_internal.h) at every SIMD level,
// bit for bit (NaN payloads and -0 included: values are copied as bits, compared as |x| bits).
// ip/vp need room for (end - begin) + 1 more entries past c: every level writes whole vectors
// of candidates at c and advances c by the number of hits only.
// The accumulating form (error feedback's x' = r + g folded into the same pass) also stores
// r[i] = r[i] + g[i] for every i in [begin, end) (one IEEE add, as `r[i] += g[i]`) and compacts
// those sums.
// Cost: one read of x (accumulating: reads of g and r, one write of r); per vector a compare and
// a mask test, and for a vector holding hits a permute (AVX2: 8 lanes through a 256-entry table
// of lane orders) or a compress (AVX-512) of the values and their indices. Kernels are compiled
// by target attributes and chosen once from simd_level().
#include <cstdint>

#include "ringpress/cpu.h"
#include "topk_internal.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RP_TK_X86 1
#define RP_TK_AVX2 __attribute__((target("avx2,popcnt")))
#define RP_TK_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,popcnt")))
#else
#define RP_TK_X86 0
#endif

namespace ringpress::topk::internal {
namespace {

std::size_t compact_generic(const float* x, std::size_t begin, std::size_t end, std::uint32_t tbits,
                            std::uint32_t* ip, float* vp, std::size_t c) {
  return compact_range(x, begin, end, tbits, ip, vp, c);
}

std::size_t accumulate_generic(const float* g, float* r, std::size_t begin, std::size_t end,
                               std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c) {
  for (std::size_t i = begin; i < end; ++i) {
    const float a = r[i] + g[i];
    r[i] = a;
    ip[c] = static_cast<std::uint32_t>(i);
    vp[c] = a;
    c += abs_bits(a) >= tbits;
  }
  return c;
}

#if RP_TK_X86
// For each 8-bit mask, the lanes whose bit is set, in order, packed one byte per lane (the
// rest zero): the permutation that moves an AVX2 vector's hits to its front.
struct LaneOrders {
  std::uint64_t v[256];
  constexpr LaneOrders() : v{} {
    for (unsigned m = 0; m < 256; ++m) {
      std::uint64_t packed = 0;
      unsigned out = 0;
      for (unsigned lane = 0; lane < 8; ++lane) {
        if (m & (1u << lane)) packed |= std::uint64_t{lane} << (8 * out++);
      }
      v[m] = packed;
    }
  }
};
constexpr LaneOrders kLaneOrders{};

RP_TK_AVX2 inline std::size_t pack8_avx2(__m256 v, __m256i idx, unsigned mask, std::uint32_t* ip,
                                         float* vp, std::size_t c) {
  const __m256i perm =
      _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(static_cast<long long>(kLaneOrders.v[mask])));
  _mm256_storeu_ps(vp + c, _mm256_permutevar8x32_ps(v, perm));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(ip + c), _mm256_permutevar8x32_epi32(idx, perm));
  return c + static_cast<std::size_t>(__builtin_popcount(mask));
}

RP_TK_AVX2 std::size_t compact_avx2(const float* x, std::size_t begin, std::size_t end,
                                    std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                    std::size_t c) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  // |x| bits are <= 0x7FFFFFFF, so "bits >= t" is the signed "bits > t - 1" (t = 0 gives -1).
  const __m256i below = _mm256_set1_epi32(static_cast<int>(tbits - 1u));
  const __m256i eight = _mm256_set1_epi32(8);
  __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(begin)),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  std::size_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i);
    const __m256 b = _mm256_loadu_ps(x + i + 8);
    const __m256i ha =
        _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(a), abs_mask), below);
    const __m256i hb =
        _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(b), abs_mask), below);
    const __m256i any = _mm256_or_si256(ha, hb);
    if (!_mm256_testz_si256(any, any)) {
      const auto ma = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(ha)));
      const auto mb = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(hb)));
      c = pack8_avx2(a, idx, ma, ip, vp, c);
      c = pack8_avx2(b, _mm256_add_epi32(idx, eight), mb, ip, vp, c);
    }
    idx = _mm256_add_epi32(idx, _mm256_add_epi32(eight, eight));
  }
  return compact_range(x, i, end, tbits, ip, vp, c);
}

RP_TK_AVX2 std::size_t accumulate_avx2(const float* g, float* r, std::size_t begin, std::size_t end,
                                       std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                       std::size_t c) {
  const __m256i abs_mask = _mm256_set1_epi32(0x7FFFFFFF);
  const __m256i below = _mm256_set1_epi32(static_cast<int>(tbits - 1u));
  const __m256i eight = _mm256_set1_epi32(8);
  __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(begin)),
                                 _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  std::size_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __m256 a = _mm256_add_ps(_mm256_loadu_ps(r + i), _mm256_loadu_ps(g + i));
    const __m256 b = _mm256_add_ps(_mm256_loadu_ps(r + i + 8), _mm256_loadu_ps(g + i + 8));
    _mm256_storeu_ps(r + i, a);
    _mm256_storeu_ps(r + i + 8, b);
    const __m256i ha =
        _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(a), abs_mask), below);
    const __m256i hb =
        _mm256_cmpgt_epi32(_mm256_and_si256(_mm256_castps_si256(b), abs_mask), below);
    const __m256i any = _mm256_or_si256(ha, hb);
    if (!_mm256_testz_si256(any, any)) {
      const auto ma = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(ha)));
      const auto mb = static_cast<unsigned>(_mm256_movemask_ps(_mm256_castsi256_ps(hb)));
      c = pack8_avx2(a, idx, ma, ip, vp, c);
      c = pack8_avx2(b, _mm256_add_epi32(idx, eight), mb, ip, vp, c);
    }
    idx = _mm256_add_epi32(idx, _mm256_add_epi32(eight, eight));
  }
  return accumulate_generic(g, r, i, end, tbits, ip, vp, c);
}

RP_TK_AVX512 std::size_t accumulate_avx512(const float* g, float* r, std::size_t begin,
                                           std::size_t end, std::uint32_t tbits, std::uint32_t* ip,
                                           float* vp, std::size_t c) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i below = _mm512_set1_epi32(static_cast<int>(tbits - 1u));
  const __m512i sixteen = _mm512_set1_epi32(16);
  __m512i idx =
      _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(begin)),
                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  std::size_t i = begin;
  for (; i + 32 <= end; i += 32) {
    const __m512 a = _mm512_add_ps(_mm512_loadu_ps(r + i), _mm512_loadu_ps(g + i));
    const __m512 b = _mm512_add_ps(_mm512_loadu_ps(r + i + 16), _mm512_loadu_ps(g + i + 16));
    _mm512_storeu_ps(r + i, a);
    _mm512_storeu_ps(r + i + 16, b);
    const __mmask16 ma =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(a), abs_mask), below);
    const __mmask16 mb =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(b), abs_mask), below);
    if ((ma | mb) != 0) {
      _mm512_storeu_ps(vp + c, _mm512_maskz_compress_ps(ma, a));
      _mm512_storeu_si512(ip + c, _mm512_maskz_compress_epi32(ma, idx));
      c += static_cast<std::size_t>(__builtin_popcount(ma));
      const __m512i idx_b = _mm512_add_epi32(idx, sixteen);
      _mm512_storeu_ps(vp + c, _mm512_maskz_compress_ps(mb, b));
      _mm512_storeu_si512(ip + c, _mm512_maskz_compress_epi32(mb, idx_b));
      c += static_cast<std::size_t>(__builtin_popcount(mb));
    }
    idx = _mm512_add_epi32(idx, _mm512_add_epi32(sixteen, sixteen));
  }
  return accumulate_generic(g, r, i, end, tbits, ip, vp, c);
}

RP_TK_AVX512 std::size_t compact_avx512(const float* x, std::size_t begin, std::size_t end,
                                        std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                        std::size_t c) {
  const __m512i abs_mask = _mm512_set1_epi32(0x7FFFFFFF);
  const __m512i below = _mm512_set1_epi32(static_cast<int>(tbits - 1u));
  const __m512i sixteen = _mm512_set1_epi32(16);
  __m512i idx =
      _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(begin)),
                       _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
  std::size_t i = begin;
  for (; i + 32 <= end; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i);
    const __m512 b = _mm512_loadu_ps(x + i + 16);
    const __mmask16 ma =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(a), abs_mask), below);
    const __mmask16 mb =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(_mm512_castps_si512(b), abs_mask), below);
    if ((ma | mb) != 0) {
      // maskz_compress + a full store, not compressstoreu (microcoded and slow on some cores).
      _mm512_storeu_ps(vp + c, _mm512_maskz_compress_ps(ma, a));
      _mm512_storeu_si512(ip + c, _mm512_maskz_compress_epi32(ma, idx));
      c += static_cast<std::size_t>(__builtin_popcount(ma));
      const __m512i idx_b = _mm512_add_epi32(idx, sixteen);
      _mm512_storeu_ps(vp + c, _mm512_maskz_compress_ps(mb, b));
      _mm512_storeu_si512(ip + c, _mm512_maskz_compress_epi32(mb, idx_b));
      c += static_cast<std::size_t>(__builtin_popcount(mb));
    }
    idx = _mm512_add_epi32(idx, _mm512_add_epi32(sixteen, sixteen));
  }
  return compact_range(x, i, end, tbits, ip, vp, c);
}
#endif

using CompactFn = std::size_t (*)(const float*, std::size_t, std::size_t, std::uint32_t,
                                  std::uint32_t*, float*, std::size_t);

CompactFn compact_for(SimdLevel level) {
#if RP_TK_X86
  if (level >= SimdLevel::kAVX512 && simd_level_supported(SimdLevel::kAVX512))
    return compact_avx512;
  if (level >= SimdLevel::kAVX2 && simd_level_supported(SimdLevel::kAVX2)) return compact_avx2;
#endif
  (void)level;
  return compact_generic;
}

using AccumulateFn = std::size_t (*)(const float*, float*, std::size_t, std::size_t, std::uint32_t,
                                     std::uint32_t*, float*, std::size_t);

AccumulateFn accumulate_for(SimdLevel level) {
#if RP_TK_X86
  if (level >= SimdLevel::kAVX512 && simd_level_supported(SimdLevel::kAVX512))
    return accumulate_avx512;
  if (level >= SimdLevel::kAVX2 && simd_level_supported(SimdLevel::kAVX2)) return accumulate_avx2;
#endif
  (void)level;
  return accumulate_generic;
}

}  // namespace

std::size_t accumulate_range_at(SimdLevel level, const float* g, float* r, std::size_t begin,
                                std::size_t end, std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                std::size_t c) {
  return accumulate_for(level)(g, r, begin, end, tbits, ip, vp, c);
}

std::size_t accumulate_range_best(const float* g, float* r, std::size_t begin, std::size_t end,
                                  std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                  std::size_t c) {
  static const AccumulateFn fn = accumulate_for(simd_level());
  return fn(g, r, begin, end, tbits, ip, vp, c);
}

std::size_t compact_range_at(SimdLevel level, const float* x, std::size_t begin, std::size_t end,
                             std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c) {
  return compact_for(level)(x, begin, end, tbits, ip, vp, c);
}

std::size_t compact_range_best(const float* x, std::size_t begin, std::size_t end,
                               std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c) {
  static const CompactFn fn = compact_for(simd_level());
  return fn(x, begin, end, tbits, ip, vp, c);
}

}  // namespace ringpress::topk::internal

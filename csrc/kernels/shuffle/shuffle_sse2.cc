// SSE2 shuffle kernels (layout: ringpress/shuffle.h; bit-exact with shuffle_generic.cc).
//
// Needs SSE2 only (this file is compiled with -msse2 and must not use SSSE3 or later).
// SIMD paths: byte shuffle/unshuffle for element sizes 2, 4, 8 (16 elements per step); bit
// shuffle/unshuffle for element sizes 1, 2, 4, 8. Other sizes, and buffers shorter than one step,
// use the generic kernels; the last partial step is redone as one full step ending at n (it
// rewrites a few bytes with the same values), so there is no scalar tail.
//   byte shuffle:   pack-based even/odd byte splits (pand/psrlw + packuswb), log2(s) rounds.
//   byte unshuffle: punpckl/hbw, wd, dq interleaves, log2(s) rounds.
//   bit shuffle:    byte shuffle in registers, then pmovmskb of each byte plane shifted left
//                   by paddb (one 16-bit store per bit plane per 16 elements).
//   bit unshuffle:  8 bit-plane vectors -> 3 punpcklbw/punpckhbw rounds (the 8 plane bytes of a
//                   group of 8 elements side by side in a qword) -> 8x8 bit-matrix transpose in
//                   each qword (psrlq/psllq/pand/pxor) -> byte planes of 128 elements (via a 1 KiB
//                   buffer for s > 1) -> byte unshuffle. Needs n >= 128.
//   bit kernels, n > 16384/s elements: each block of 16384/s elements goes through a 16 KiB stack
//                   buffer so that each of the 8*s bit planes is read/written 2048/s contiguous
//                   bytes at a time (small interleaved accesses to 8*s streams n/8 bytes apart,
//                   often 4 KiB-aliased, thrash L1), and the next block's plane spans are
//                   prefetched. The shuffles (byte and bit) prefetch the element stream 8 KiB
//                   ahead: among the plane streams the hardware prefetchers lose it (2-3x slower
//                   on DRAM-sized buffers without).
// Cost: one read and one write of the buffer (plus an L1-resident copy for the bit kernels).
// Measured (AMD EPYC Zen 4, 1 thread, gcc 12 -O3; GB/s at 256 KiB (L2) / 64 MiB (DRAM)):
//   s=4: byte shuffle 35 / 22, byte unshuffle 57 / 19, bit shuffle 7.6 / 6.5,
//        bit unshuffle 8.1 / 6.1
//   s=2: byte 47 / 21; s=8: byte 25 / 21.   generic s=4: byte 4.4 / 4.4, bit 0.2 / 0.2;
//   memcpy 135 / 22.
#include <emmintrin.h>

#include <cstddef>
#include <cstdint>

#include "ringpress/shuffle.h"

namespace ringpress::shuffle_isa {
namespace {

typedef std::uint8_t u8;
typedef std::size_t usize;

inline __m128i ld(const u8* p) {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
}
inline void st(u8* p, __m128i v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), v);
}
inline void st16(u8* p, unsigned v) {
  std::uint16_t x = static_cast<std::uint16_t>(v);
  __builtin_memcpy(p, &x, 2);
}

// Block starts for n >= B: 0, B, 2B, ... and a last block n-B overlapping the previous one.
inline usize next_block(usize i, usize n, usize B) {
  i += B;
  return (i < n && i + B > n) ? n - B : i;
}

// Software prefetch of the element stream when writing s (byte) or 8*s (bit) plane streams: the
// hardware prefetchers lose track of it, which halves the speed or worse on DRAM-sized buffers.
const usize kPrefetchAhead = 8192;  // bytes ahead on the element stream
inline void prefetch(const u8* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
}
inline void prefetch_span(const u8* p, usize span) {
  for (usize j = 0; j < span; j += 64) prefetch(p + j);
}

// Even/odd byte split of the 32 bytes a:b -> e = bytes 0,2,..,30, o = bytes 1,3,..,31.
inline void split(__m128i a, __m128i b, __m128i& e, __m128i& o) {
  const __m128i m = _mm_set1_epi16(0x00FF);
  e = _mm_packus_epi16(_mm_and_si128(a, m), _mm_and_si128(b, m));
  o = _mm_packus_epi16(_mm_srli_epi16(a, 8), _mm_srli_epi16(b, 8));
}

// 16 elements at p -> byte planes P[b] (byte b of the 16 elements).
inline void planes2(const u8* p, __m128i* P) {
  split(ld(p), ld(p + 16), P[0], P[1]);
}

inline void planes4(const u8* p, __m128i* P) {
  __m128i e01, o01, e23, o23;
  split(ld(p), ld(p + 16), e01, o01);       // e: b0,b2 of elements 0..7; o: b1,b3
  split(ld(p + 32), ld(p + 48), e23, o23);  // elements 8..15
  split(e01, e23, P[0], P[2]);
  split(o01, o23, P[1], P[3]);
}

inline void planes8(const u8* p, __m128i* P) {
  __m128i e[4], o[4];
  for (int q = 0; q < 4; ++q) split(ld(p + 32 * q), ld(p + 32 * q + 16), e[q], o[q]);
  // e[q]: b0,b2,b4,b6 of elements 4q..4q+3; o[q]: b1,b3,b5,b7
  __m128i ee0, eo0, ee1, eo1, oe0, oo0, oe1, oo1;
  split(e[0], e[1], ee0, eo0);  // ee: b0,b4 of elements 0..7; eo: b2,b6
  split(e[2], e[3], ee1, eo1);
  split(o[0], o[1], oe0, oo0);  // oe: b1,b5; oo: b3,b7
  split(o[2], o[3], oe1, oo1);
  split(ee0, ee1, P[0], P[4]);
  split(eo0, eo1, P[2], P[6]);
  split(oe0, oe1, P[1], P[5]);
  split(oo0, oo1, P[3], P[7]);
}

// Byte planes P[b] of 16 elements -> the 16 elements at out.
inline void unplanes2(const __m128i* P, u8* out) {
  st(out, _mm_unpacklo_epi8(P[0], P[1]));
  st(out + 16, _mm_unpackhi_epi8(P[0], P[1]));
}

inline void unplanes4(const __m128i* P, u8* out) {
  const __m128i x01l = _mm_unpacklo_epi8(P[0], P[1]), x01h = _mm_unpackhi_epi8(P[0], P[1]);
  const __m128i x23l = _mm_unpacklo_epi8(P[2], P[3]), x23h = _mm_unpackhi_epi8(P[2], P[3]);
  st(out, _mm_unpacklo_epi16(x01l, x23l));
  st(out + 16, _mm_unpackhi_epi16(x01l, x23l));
  st(out + 32, _mm_unpacklo_epi16(x01h, x23h));
  st(out + 48, _mm_unpackhi_epi16(x01h, x23h));
}

inline void unplanes8(const __m128i* P, u8* out) {
  __m128i xl[4], xh[4];  // elements 0..7 / 8..15, bytes 2q,2q+1
  for (int q = 0; q < 4; ++q) {
    xl[q] = _mm_unpacklo_epi8(P[2 * q], P[2 * q + 1]);
    xh[q] = _mm_unpackhi_epi8(P[2 * q], P[2 * q + 1]);
  }
  __m128i y[2][4];  // y[h][m]: bytes 4h..4h+3 of elements 4m..4m+3
  for (int h = 0; h < 2; ++h) {
    y[h][0] = _mm_unpacklo_epi16(xl[2 * h], xl[2 * h + 1]);
    y[h][1] = _mm_unpackhi_epi16(xl[2 * h], xl[2 * h + 1]);
    y[h][2] = _mm_unpacklo_epi16(xh[2 * h], xh[2 * h + 1]);
    y[h][3] = _mm_unpackhi_epi16(xh[2 * h], xh[2 * h + 1]);
  }
  for (int m = 0; m < 4; ++m) {
    st(out + 32 * m, _mm_unpacklo_epi32(y[0][m], y[1][m]));
    st(out + 32 * m + 16, _mm_unpackhi_epi32(y[0][m], y[1][m]));
  }
}

inline void load_planes(const u8* p, usize s, __m128i* P) {
  if (s == 1)
    P[0] = ld(p);
  else if (s == 2)
    planes2(p, P);
  else if (s == 4)
    planes4(p, P);
  else
    planes8(p, P);
}

inline void store_unplanes(const __m128i* P, usize s, u8* out) {
  if (s == 1)
    st(out, P[0]);
  else if (s == 2)
    unplanes2(P, out);
  else if (s == 4)
    unplanes4(P, out);
  else
    unplanes8(P, out);
}

// ---------------------------------------------------------------- byte shuffle
template <int S>  // internal linkage (anonymous namespace): never shared with other TUs
void byte_shuffle_s(const u8* src, u8* dst, usize n) {
  const usize B = 16;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m128i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) st(dst + b * n + i, P[b]);
  }
}

template <int S>
void byte_unshuffle_s(const u8* const* pl, u8* dst, usize n) {
  const usize B = 16;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m128i P[S];
    for (int b = 0; b < S; ++b) P[b] = ld(pl[b] + i);
    store_unplanes(P, S, dst + i * S);
  }
}

// ---------------------------------------------------------------- bit shuffle
// Bit k of the 16 bytes of v -> 16 bits at out + k*pb (element j at bit j).
inline void bits16(__m128i v, u8* out, usize pb) {
  for (int k = 7; k >= 0; --k) {
    st16(out + k * pb, static_cast<unsigned>(_mm_movemask_epi8(v)));
    v = _mm_add_epi8(v, v);
  }
}

template <int S>
void bit_shuffle_run(const u8* src, u8* dst, usize n, usize pb) {
  const usize B = 16;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m128i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) bits16(P[b], dst + 8 * b * pb + i / 8, pb);
  }
}

// 8x8 bit-matrix transpose in each 64-bit lane: bit 8r+c -> bit 8c+r.
inline __m128i transpose8x8(__m128i x) {
  const __m128i c1 = _mm_set1_epi64x(0x00AA00AA00AA00AALL);
  const __m128i c2 = _mm_set1_epi64x(0x0000CCCC0000CCCCLL);
  const __m128i c3 = _mm_set1_epi64x(0x00000000F0F0F0F0LL);
  __m128i t;
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 7)), c1);
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 7)));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 14)), c2);
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 14)));
  t = _mm_and_si128(_mm_xor_si128(x, _mm_srli_epi64(x, 28)), c3);
  x = _mm_xor_si128(x, _mm_xor_si128(t, _mm_slli_epi64(t, 28)));
  return x;
}

// Bit planes 8b..8b+7 (plane stride pb), elements i..i+127 -> byte b of those elements: R[m]
// holds elements i+16m..i+16m+15.
inline void bits_to_bytes128(const u8* in, usize pb, __m128i* R) {
  __m128i q[8];
  for (int k = 0; k < 8; ++k) q[k] = ld(in + k * pb);  // byte g: group g (8 elements), bit plane k
  __m128i r1[2][4];                                    // [g3][k1k0]
  for (int k = 0; k < 4; ++k) {
    r1[0][k] = _mm_unpacklo_epi8(q[k], q[k + 4]);
    r1[1][k] = _mm_unpackhi_epi8(q[k], q[k + 4]);
  }
  __m128i r2[2][2][2];  // [g3][g2][k0]
  for (int g3 = 0; g3 < 2; ++g3)
    for (int k0 = 0; k0 < 2; ++k0) {
      r2[g3][0][k0] = _mm_unpacklo_epi8(r1[g3][k0], r1[g3][k0 + 2]);
      r2[g3][1][k0] = _mm_unpackhi_epi8(r1[g3][k0], r1[g3][k0 + 2]);
    }
  for (int g3 = 0; g3 < 2; ++g3)
    for (int g2 = 0; g2 < 2; ++g2) {
      // 64-bit lane g0 of R[4g3+2g2+g1]: byte k = plane k, group 8g3+4g2+2g1+g0
      R[4 * g3 + 2 * g2] = transpose8x8(_mm_unpacklo_epi8(r2[g3][g2][0], r2[g3][g2][1]));
      R[4 * g3 + 2 * g2 + 1] = transpose8x8(_mm_unpackhi_epi8(r2[g3][g2][0], r2[g3][g2][1]));
    }
}

template <int S>
void bit_unshuffle_run(const u8* src, u8* dst, usize n, usize pb) {
  const usize B = 128;
  alignas(16) u8 tmp[8 * 128];
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    for (int b = 0; b < S; ++b) {
      __m128i R[8];
      bits_to_bytes128(src + 8 * b * pb + i / 8, pb, R);
      if (S == 1) {
        for (int m = 0; m < 8; ++m) st(dst + i + 16 * m, R[m]);
      } else {
        for (int m = 0; m < 8; ++m) st(tmp + b * 128 + 16 * m, R[m]);
      }
    }
    if (S > 1) {
      for (int m = 0; m < 8; ++m) {
        __m128i P[S];
        for (int b = 0; b < S; ++b) P[b] = ld(tmp + b * 128 + 16 * m);
        store_unplanes(P, S, dst + (i + 16 * m) * S);
      }
    }
  }
}

// The 8*s bit planes lie n/8 bytes apart: interleaved small accesses to that many streams (often
// 4 KiB-aliased) thrash L1. Above kBlock elements the planes of each kBlock-element block go
// through an L1-resident buffer and move to/from the buffer kBlock/8 contiguous bytes at a time.
const usize kBlockBytes = 16384;  // buffer size; a block is kBlockBytes / s elements

inline void copy_span(u8* dst, const u8* src, usize span) {
  for (usize j = 0; j < span; j += sizeof(__m128i)) st(dst + j, ld(src + j));
}

template <int S>
void bit_shuffle_s(const u8* src, u8* dst, usize n) {
  const usize kBlock = kBlockBytes / S, pb = n / 8, span = kBlock / 8;
  if (n <= kBlock) return bit_shuffle_run<S>(src, dst, n, pb);
  alignas(64) u8 tmp[kBlockBytes];
  for (usize i = 0; i < n; i = next_block(i, n, kBlock)) {
    bit_shuffle_run<S>(src + i * S, tmp, kBlock, span);
    for (usize p = 0; p < 8 * S; ++p) {
      u8* out = dst + p * pb + i / 8;
      prefetch_span(out + span, span);  // this plane's span of the next block
      copy_span(out, tmp + p * span, span);
    }
  }
}

template <int S>
void bit_unshuffle_s(const u8* src, u8* dst, usize n) {
  const usize kBlock = kBlockBytes / S, pb = n / 8, span = kBlock / 8;
  if (n <= kBlock) return bit_unshuffle_run<S>(src, dst, n, pb);
  alignas(64) u8 tmp[kBlockBytes];
  for (usize i = 0; i < n; i = next_block(i, n, kBlock)) {
    for (usize p = 0; p < 8 * S; ++p) {
      const u8* in = src + p * pb + i / 8;
      prefetch_span(in + span, span);
      copy_span(tmp + p * span, in, span);
    }

    bit_unshuffle_run<S>(tmp, dst + i * S, kBlock, span);
  }
}

// ---------------------------------------------------------------- entry points
void byte_shuffle_sse2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 16) return byte_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 2: return byte_shuffle_s<2>(src, dst, n);
    case 4: return byte_shuffle_s<4>(src, dst, n);
    case 8: return byte_shuffle_s<8>(src, dst, n);
    default: return byte_shuffle_generic(src, dst, n, s);
  }
}

void byte_unshuffle_planes_sse2(const u8* const* pl, u8* dst, usize n, usize s, bool) {
  if (n < 16) return byte_unshuffle_planes_generic(pl, dst, n, s, false);
  switch (s) {
    case 2: return byte_unshuffle_s<2>(pl, dst, n);
    case 4: return byte_unshuffle_s<4>(pl, dst, n);
    case 8: return byte_unshuffle_s<8>(pl, dst, n);
    default: return byte_unshuffle_planes_generic(pl, dst, n, s, false);
  }
}

void byte_unshuffle_sse2(const u8* src, u8* dst, usize n, usize s) {
  if (s != 2 && s != 4 && s != 8) return byte_unshuffle_generic(src, dst, n, s);
  const u8* pl[8];
  for (usize b = 0; b < s; ++b) pl[b] = src + b * n;
  byte_unshuffle_planes_sse2(pl, dst, n, s, false);
}

void bit_shuffle_sse2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 16) return bit_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 1: return bit_shuffle_s<1>(src, dst, n);
    case 2: return bit_shuffle_s<2>(src, dst, n);
    case 4: return bit_shuffle_s<4>(src, dst, n);
    case 8: return bit_shuffle_s<8>(src, dst, n);
    default: return bit_shuffle_generic(src, dst, n, s);
  }
}

void bit_unshuffle_sse2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 128) return bit_unshuffle_generic(src, dst, n, s);
  switch (s) {
    case 1: return bit_unshuffle_s<1>(src, dst, n);
    case 2: return bit_unshuffle_s<2>(src, dst, n);
    case 4: return bit_unshuffle_s<4>(src, dst, n);
    case 8: return bit_unshuffle_s<8>(src, dst, n);
    default: return bit_unshuffle_generic(src, dst, n, s);
  }
}

}  // namespace

const ShuffleKernels kSSE2 = {"sse2",
                              byte_shuffle_sse2,
                              byte_unshuffle_sse2,
                              bit_shuffle_sse2,
                              bit_unshuffle_sse2,
                              byte_unshuffle_planes_sse2,
                              bit_unshuffle_sse2};

}  // namespace ringpress::shuffle_isa

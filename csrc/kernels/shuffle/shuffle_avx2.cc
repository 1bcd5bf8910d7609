// AVX2 shuffle kernels (layout: ringpress/shuffle.h; bit-exact with shuffle_generic.cc).
//
// Needs AVX2 (compiled with -mavx2 -mbmi2; BMI2 is not used).
// SIMD paths: byte shuffle/unshuffle for element sizes 2, 4, 8 (32 elements per step); bit
// shuffle/unshuffle for element sizes 1, 2, 4, 8. Other sizes, and buffers shorter than one step,
// use the generic kernels; the last partial step is redone as one full step ending at n (it
// rewrites a few bytes with the same values), so there is no scalar tail.
//   byte shuffle:   each 256-bit register is loaded as two 128-bit halves 16*s bytes apart
//                   (vinserti128), so that in-lane vpshufb + punpck{l,h}{wd,dq,qdq} rounds leave
//                   every byte plane in order: s=4 costs 4 vpshufb + 8 unpacks per 128 bytes.
//   byte unshuffle: punpck{l,h}{bw,wd,dq} rounds + vperm2i128 to put the lanes back in order.
//   bit shuffle:    byte shuffle in registers, then vpmovmskb of each byte plane shifted left by
//                   vpaddb (one 32-bit store per bit plane per 32 elements).
//   bit unshuffle:  n >= 256: 8 bit-plane vectors -> 3 vpunpck{l,h}bw rounds (the 8 plane bytes of
//                   a group of 8 elements side by side in a qword) -> 8x8 bit-matrix transpose in
//                   each qword -> vperm2i128 -> byte planes of 256 elements (via a 2 KiB buffer
//                   for s > 1) -> byte unshuffle. 32 <= n < 256: per bit plane, vpbroadcastd of 32
//                   bits, vpshufb to spread byte j/8 to byte j, vpand+vpcmpeqb to test bit j%8.
//   bit kernels, n > 16384/s elements: each block of 16384/s elements goes through a 16 KiB stack
//                   buffer so that each of the 8*s bit planes is read/written 2048/s contiguous
//                   bytes at a time (small interleaved accesses to 8*s streams n/8 bytes apart,
//                   often 4 KiB-aliased, thrash L1), and the next block's plane spans are
//                   prefetched. The shuffles (byte and bit) prefetch the element stream 8 KiB
//                   ahead: among the plane streams the hardware prefetchers lose it (2-3x slower
//                   on DRAM-sized buffers without).
// Cost: one read and one write of the buffer (plus an L1-resident copy for the bit kernels).
// Measured (AMD EPYC Zen 4, 1 thread, gcc 12 -O3; GB/s at 256 KiB (L2) / 64 MiB (DRAM)):
//   s=4: byte shuffle 100 / 22, byte unshuffle 113 / 22, bit shuffle 15 / 10,
//        bit unshuffle 15 / 8.5
//   s=2: byte 90 / 22; s=8: byte 86 / 21.   generic s=4: byte 4.4 / 4.4, bit 0.2 / 0.2;
//   memcpy 135 / 22.
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>

#include "ringpress/shuffle.h"

namespace ringpress::shuffle_isa {
namespace {

typedef std::uint8_t u8;
typedef std::size_t usize;

inline __m256i ld(const u8* p) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
}
inline void st(u8* p, __m256i v) {
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v);
}
// A store of the output stream: cache-bypassing (non-temporal) with NT, for outputs far larger
// than the caches; p is then 32-byte aligned.
template <bool NT>
inline void stw(u8* p, __m256i v) {
  if constexpr (NT)
    _mm256_stream_si256(reinterpret_cast<__m256i*>(p), v);
  else
    st(p, v);
}
// 128-bit halves from two addresses: lane 0 from lo, lane 1 from hi.
inline __m256i ld2(const u8* lo, const u8* hi) {
  return _mm256_inserti128_si256(
      _mm256_castsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lo))),
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(hi)), 1);
}
inline void st32(u8* p, unsigned v) {
  __builtin_memcpy(p, &v, 4);
}
inline unsigned ld32(const u8* p) {
  unsigned v;
  __builtin_memcpy(&v, p, 4);
  return v;
}

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

// 32 elements at p -> byte planes P[b] (byte b of the 32 elements, in order).
inline void planes2(const u8* p, __m256i* P) {
  const __m256i m = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,  //
                                     0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  // lane L of v0: elements 16L+0..7, of v1: 16L+8..15; qword 0 = byte 0, qword 1 = byte 1
  const __m256i v0 = _mm256_shuffle_epi8(ld2(p, p + 32), m);
  const __m256i v1 = _mm256_shuffle_epi8(ld2(p + 16, p + 48), m);
  P[0] = _mm256_unpacklo_epi64(v0, v1);
  P[1] = _mm256_unpackhi_epi64(v0, v1);
}

inline void planes4(const u8* p, __m256i* P) {
  const __m256i m = _mm256_setr_epi8(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,  //
                                     0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m256i v[4];  // lane L of v[j]: elements 16L+4j..16L+4j+3, dword b = byte b
  for (int j = 0; j < 4; ++j) v[j] = _mm256_shuffle_epi8(ld2(p + 16 * j, p + 64 + 16 * j), m);
  const __m256i a01l = _mm256_unpacklo_epi32(v[0], v[1]), a01h = _mm256_unpackhi_epi32(v[0], v[1]);
  const __m256i a23l = _mm256_unpacklo_epi32(v[2], v[3]), a23h = _mm256_unpackhi_epi32(v[2], v[3]);
  P[0] = _mm256_unpacklo_epi64(a01l, a23l);
  P[1] = _mm256_unpackhi_epi64(a01l, a23l);
  P[2] = _mm256_unpacklo_epi64(a01h, a23h);
  P[3] = _mm256_unpackhi_epi64(a01h, a23h);
}

inline void planes8(const u8* p, __m256i* P) {
  const __m256i m = _mm256_setr_epi8(0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,  //
                                     0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15);
  __m256i v[8];  // lane L of v[j]: elements 16L+2j, 16L+2j+1; word b = byte b of both
  for (int j = 0; j < 8; ++j) v[j] = _mm256_shuffle_epi8(ld2(p + 16 * j, p + 128 + 16 * j), m);
  __m256i al[4], ah[4];  // a[q]: words of v[2q], v[2q+1] interleaved; l: bytes 0..3, h: 4..7
  for (int q = 0; q < 4; ++q) {
    al[q] = _mm256_unpacklo_epi16(v[2 * q], v[2 * q + 1]);
    ah[q] = _mm256_unpackhi_epi16(v[2 * q], v[2 * q + 1]);
  }
  __m256i b[2][4];  // b[r][c]: qword 0/1 = bytes 2c, 2c+1 of v[4r..4r+3]
  for (int r = 0; r < 2; ++r) {
    b[r][0] = _mm256_unpacklo_epi32(al[2 * r], al[2 * r + 1]);
    b[r][1] = _mm256_unpackhi_epi32(al[2 * r], al[2 * r + 1]);
    b[r][2] = _mm256_unpacklo_epi32(ah[2 * r], ah[2 * r + 1]);
    b[r][3] = _mm256_unpackhi_epi32(ah[2 * r], ah[2 * r + 1]);
  }
  for (int c = 0; c < 4; ++c) {
    P[2 * c] = _mm256_unpacklo_epi64(b[0][c], b[1][c]);
    P[2 * c + 1] = _mm256_unpackhi_epi64(b[0][c], b[1][c]);
  }
}

// Byte planes P[b] of 32 elements -> the 32 elements at out.
template <bool NT = false>
inline void unplanes2(const __m256i* P, u8* out) {
  const __m256i lo = _mm256_unpacklo_epi8(P[0], P[1]);  // lane L: elements 16L+0..7
  const __m256i hi = _mm256_unpackhi_epi8(P[0], P[1]);  // lane L: elements 16L+8..15
  stw<NT>(out, _mm256_permute2x128_si256(lo, hi, 0x20));
  stw<NT>(out + 32, _mm256_permute2x128_si256(lo, hi, 0x31));
}

template <bool NT = false>
inline void unplanes4(const __m256i* P, u8* out) {
  const __m256i x01l = _mm256_unpacklo_epi8(P[0], P[1]), x01h = _mm256_unpackhi_epi8(P[0], P[1]);
  const __m256i x23l = _mm256_unpacklo_epi8(P[2], P[3]), x23h = _mm256_unpackhi_epi8(P[2], P[3]);
  // y[m] lane L: elements 16L+4m..16L+4m+3
  const __m256i y0 = _mm256_unpacklo_epi16(x01l, x23l), y1 = _mm256_unpackhi_epi16(x01l, x23l);
  const __m256i y2 = _mm256_unpacklo_epi16(x01h, x23h), y3 = _mm256_unpackhi_epi16(x01h, x23h);
  stw<NT>(out, _mm256_permute2x128_si256(y0, y1, 0x20));
  stw<NT>(out + 32, _mm256_permute2x128_si256(y2, y3, 0x20));
  stw<NT>(out + 64, _mm256_permute2x128_si256(y0, y1, 0x31));
  stw<NT>(out + 96, _mm256_permute2x128_si256(y2, y3, 0x31));
}

template <bool NT = false>
inline void unplanes8(const __m256i* P, u8* out) {
  __m256i xl[4], xh[4];  // lane L: elements 16L+0..7 / 16L+8..15, bytes 2q, 2q+1
  for (int q = 0; q < 4; ++q) {
    xl[q] = _mm256_unpacklo_epi8(P[2 * q], P[2 * q + 1]);
    xh[q] = _mm256_unpackhi_epi8(P[2 * q], P[2 * q + 1]);
  }
  __m256i y[2][4];  // y[h][m] lane L: bytes 4h..4h+3 of elements 16L+4m..16L+4m+3
  for (int h = 0; h < 2; ++h) {
    y[h][0] = _mm256_unpacklo_epi16(xl[2 * h], xl[2 * h + 1]);
    y[h][1] = _mm256_unpackhi_epi16(xl[2 * h], xl[2 * h + 1]);
    y[h][2] = _mm256_unpacklo_epi16(xh[2 * h], xh[2 * h + 1]);
    y[h][3] = _mm256_unpackhi_epi16(xh[2 * h], xh[2 * h + 1]);
  }
  for (int m = 0; m < 4; ++m) {
    // z0 lane L: elements 16L+4m, +1; z1: 16L+4m+2, +3
    const __m256i z0 = _mm256_unpacklo_epi32(y[0][m], y[1][m]);
    const __m256i z1 = _mm256_unpackhi_epi32(y[0][m], y[1][m]);
    stw<NT>(out + 32 * m, _mm256_permute2x128_si256(z0, z1, 0x20));
    stw<NT>(out + 128 + 32 * m, _mm256_permute2x128_si256(z0, z1, 0x31));
  }
}

inline void load_planes(const u8* p, usize s, __m256i* P) {
  if (s == 1)
    P[0] = ld(p);
  else if (s == 2)
    planes2(p, P);
  else if (s == 4)
    planes4(p, P);
  else
    planes8(p, P);
}

template <bool NT = false>
inline void store_unplanes(const __m256i* P, usize s, u8* out) {
  if (s == 1)
    stw<NT>(out, P[0]);
  else if (s == 2)
    unplanes2<NT>(P, out);
  else if (s == 4)
    unplanes4<NT>(P, out);
  else
    unplanes8<NT>(P, out);
}

// ---------------------------------------------------------------- byte shuffle
template <int S>  // internal linkage (anonymous namespace): never shared with other TUs
void byte_shuffle_s(const u8* src, u8* dst, usize n) {
  const usize B = 32;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m256i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) st(dst + b * n + i, P[b]);
  }
}

template <int S>
void byte_unshuffle_s(const u8* const* pl, u8* dst, usize n) {
  const usize B = 32;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m256i P[S];
    for (int b = 0; b < S; ++b) P[b] = ld(pl[b] + i);
    store_unplanes(P, S, dst + i * S);
  }
}

// The same bytes with non-temporal stores, which need 32-byte aligned addresses: the elements
// before the first aligned output vector and after the last whole step go through scalar
// copies (the regular kernel's overlapping last step would not be aligned). The caller checks
// that dst % 32 is a multiple of S.
inline void unshuffle_scalar(const u8* const* pl, u8* dst, usize s, usize from, usize to) {
  for (usize i = from; i < to; ++i)
    for (usize b = 0; b < s; ++b) dst[i * s + b] = pl[b][i];
}

template <int S>
void byte_unshuffle_stream_s(const u8* const* pl, u8* dst, usize n) {
  const usize B = 32;
  const usize mis = reinterpret_cast<std::uintptr_t>(dst) % 32;
  const usize head = std::min<usize>(n, mis ? (32 - mis) / S : 0);
  const usize end = head + (n - head) / B * B;
  unshuffle_scalar(pl, dst, S, 0, head);
  for (usize i = head; i < end; i += B) {
    __m256i P[S];
    for (int b = 0; b < S; ++b) P[b] = ld(pl[b] + i);
    store_unplanes<true>(P, S, dst + i * S);
  }
  _mm_sfence();
  unshuffle_scalar(pl, dst, S, end, n);
}

// ---------------------------------------------------------------- bit shuffle
// Bit k of the 32 bytes of v -> 32 bits at out + k*pb (byte j at bit j).
inline void bits32(__m256i v, u8* out, usize pb) {
  for (int k = 7; k >= 0; --k) {
    st32(out + k * pb, static_cast<unsigned>(_mm256_movemask_epi8(v)));
    v = _mm256_add_epi8(v, v);
  }
}

template <int S>
void bit_shuffle_run(const u8* src, u8* dst, usize n, usize pb) {
  const usize B = 32;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m256i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) bits32(P[b], dst + 8 * b * pb + i / 8, pb);
  }
}

// 32 bits at in + k*pb (k = 0..7) -> 32 bytes, byte j = sum over k of bit j of plane k << k.
inline __m256i bytes32(const u8* in, usize pb) {
  const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,  //
                                          2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
  const __m256i sel = _mm256_set1_epi64x(static_cast<long long>(0x8040201008040201ULL));
  __m256i acc = _mm256_setzero_si256();
  for (int k = 7; k >= 0; --k) {
    const __m256i x = _mm256_set1_epi32(static_cast<int>(ld32(in + k * pb)));
    const __m256i t = _mm256_and_si256(_mm256_shuffle_epi8(x, spread), sel);
    // acc = 2*acc + (bit set ? 1 : 0); cmpeq gives -1 where set
    acc = _mm256_sub_epi8(_mm256_add_epi8(acc, acc), _mm256_cmpeq_epi8(t, sel));
  }
  return acc;
}

template <int S>
void bit_unshuffle_small(const u8* src, u8* dst, usize n, usize pb) {  // 32 <= n < 256
  const usize B = 32;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m256i P[S];
    for (int b = 0; b < S; ++b) P[b] = bytes32(src + 8 * b * pb + i / 8, pb);
    store_unplanes(P, S, dst + i * S);
  }
}

// 8x8 bit-matrix transpose in each 64-bit lane: bit 8r+c -> bit 8c+r.
inline __m256i transpose8x8(__m256i x) {
  const __m256i c1 = _mm256_set1_epi64x(0x00AA00AA00AA00AALL);
  const __m256i c2 = _mm256_set1_epi64x(0x0000CCCC0000CCCCLL);
  const __m256i c3 = _mm256_set1_epi64x(0x00000000F0F0F0F0LL);
  __m256i t;
  t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 7)), c1);
  x = _mm256_xor_si256(x, _mm256_xor_si256(t, _mm256_slli_epi64(t, 7)));
  t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 14)), c2);
  x = _mm256_xor_si256(x, _mm256_xor_si256(t, _mm256_slli_epi64(t, 14)));
  t = _mm256_and_si256(_mm256_xor_si256(x, _mm256_srli_epi64(x, 28)), c3);
  x = _mm256_xor_si256(x, _mm256_xor_si256(t, _mm256_slli_epi64(t, 28)));
  return x;
}

// Bit planes 8b..8b+7 (plane stride pb) of 256 elements -> byte b of those elements: R[q] holds
// elements 32q..32q+31. Three punpcklbw/punpckhbw rounds put the 8 plane bytes of each group of 8
// elements side by side in a qword; the 8x8 bit transpose turns that qword into the 8 bytes.
inline void bits_to_bytes256(const u8* in, usize pb, __m256i* R) {
  __m256i q[8];
  for (int k = 0; k < 8; ++k) q[k] = ld(in + k * pb);  // lane L byte g: group 16L+g, plane k
  __m256i r1[2][4];                                    // [g3][k1k0]
  for (int k = 0; k < 4; ++k) {
    r1[0][k] = _mm256_unpacklo_epi8(q[k], q[k + 4]);
    r1[1][k] = _mm256_unpackhi_epi8(q[k], q[k + 4]);
  }
  __m256i r2[2][2][2];  // [g3][g2][k0]
  for (int g3 = 0; g3 < 2; ++g3)
    for (int k0 = 0; k0 < 2; ++k0) {
      r2[g3][0][k0] = _mm256_unpacklo_epi8(r1[g3][k0], r1[g3][k0 + 2]);
      r2[g3][1][k0] = _mm256_unpackhi_epi8(r1[g3][k0], r1[g3][k0 + 2]);
    }
  __m256i t[8];  // t[4g3+2g2+g1] lane L qword g0: elements 8*(16L+8g3+4g2+2g1+g0)..+7
  for (int g3 = 0; g3 < 2; ++g3)
    for (int g2 = 0; g2 < 2; ++g2) {
      t[4 * g3 + 2 * g2] = transpose8x8(_mm256_unpacklo_epi8(r2[g3][g2][0], r2[g3][g2][1]));
      t[4 * g3 + 2 * g2 + 1] = transpose8x8(_mm256_unpackhi_epi8(r2[g3][g2][0], r2[g3][g2][1]));
    }
  for (int m = 0; m < 4; ++m) {
    R[m] = _mm256_permute2x128_si256(t[2 * m], t[2 * m + 1], 0x20);
    R[4 + m] = _mm256_permute2x128_si256(t[2 * m], t[2 * m + 1], 0x31);
  }
}

template <int S, bool NT = false>
void bit_unshuffle_run(const u8* src, u8* dst, usize n, usize pb) {  // n >= 256
  const usize B = 256;
  alignas(32) u8 tmp[S > 1 ? S * 256 : 1];
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    for (int b = 0; b < S; ++b) {
      __m256i R[8];
      bits_to_bytes256(src + 8 * b * pb + i / 8, pb, R);
      for (int q = 0; q < 8; ++q) {
        if (S == 1)
          stw<NT>(dst + i + 32 * q, R[q]);
        else
          st(tmp + b * 256 + 32 * q, R[q]);
      }
    }
    if (S > 1) {
      for (int q = 0; q < 8; ++q) {
        __m256i P[S];
        for (int b = 0; b < S; ++b) P[b] = ld(tmp + b * 256 + 32 * q);
        store_unplanes<NT>(P, S, dst + (i + 32 * q) * S);
      }
    }
  }
}

// The 8*s bit planes lie n/8 bytes apart: interleaved small accesses to that many streams (often
// 4 KiB-aliased) thrash L1. Above kBlock elements the planes of each kBlock-element block go
// through an L1-resident buffer and move to/from the buffer kBlock/8 contiguous bytes at a time.
const usize kBlockBytes = 16384;  // buffer size; a block is kBlockBytes / s elements

inline void copy_span(u8* dst, const u8* src, usize span) {
  for (usize j = 0; j < span; j += sizeof(__m256i)) st(dst + j, ld(src + j));
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

// One block of kBlockBytes / S elements starting at element i: the planes' spans of it into
// the L1-resident buffer tmp (prefetching the next block's), then unshuffled from there.
template <int S, bool NT = false>
inline void bit_unshuffle_block(const u8* src, u8* dst, usize i, usize pb, u8* tmp) {
  const usize span = kBlockBytes / S / 8;
  for (usize p = 0; p < 8 * S; ++p) {
    const u8* in = src + p * pb + i / 8;
    prefetch_span(in + span, span);
    copy_span(tmp + p * span, in, span);
  }
  bit_unshuffle_run<S, NT>(tmp, dst + i * S, kBlockBytes / S, span);
}

template <int S>
void bit_unshuffle_s(const u8* src, u8* dst, usize n) {
  const usize kBlock = kBlockBytes / S, pb = n / 8;
  if (n < 256) return bit_unshuffle_small<S>(src, dst, n, pb);
  if (n <= kBlock) return bit_unshuffle_run<S>(src, dst, n, pb);
  alignas(64) u8 tmp[kBlockBytes];
  for (usize i = 0; i < n; i = next_block(i, n, kBlock))
    bit_unshuffle_block<S>(src, dst, i, pb, tmp);
}

// Elements [from, to) (multiples of 8) of a bit unshuffle whose planes lie pb bytes apart.
inline void bit_unshuffle_scalar(const u8* src, u8* dst, usize s, usize pb, usize from, usize to) {
  for (usize i = from; i < to; ++i)
    for (usize b = 0; b < s; ++b) {
      unsigned v = 0;
      for (usize k = 0; k < 8; ++k) v |= ((src[(8 * b + k) * pb + i / 8] >> (i % 8)) & 1u) << k;
      dst[i * s + b] = static_cast<u8>(v);
    }
}
template <int S>
void bit_unshuffle_range(const u8* src, u8* dst, usize pb, usize from, usize to) {
  const usize c = to - from;
  if (c >= 256)
    bit_unshuffle_run<S>(src + from / 8, dst + from * S, c, pb);
  else if (c >= 32)
    bit_unshuffle_small<S>(src + from / 8, dst + from * S, c, pb);
  else
    bit_unshuffle_scalar(src, dst, S, pb, from, to);
}

// The same bytes as bit_unshuffle_s with non-temporal stores, which need 32-byte aligned
// addresses: the first `head` elements (a multiple of 8 that aligns dst + head * S) and the tail
// after the last whole block go through the regular kernels, the whole blocks between stream.
template <int S>
void bit_unshuffle_stream_s(const u8* src, u8* dst, usize n, usize head) {
  const usize kBlock = kBlockBytes / S, pb = n / 8;
  bit_unshuffle_range<S>(src, dst, pb, 0, head);
  alignas(64) u8 tmp[kBlockBytes];
  usize i = head;
  for (; i + kBlock <= n; i += kBlock) bit_unshuffle_block<S, true>(src, dst, i, pb, tmp);
  _mm_sfence();
  bit_unshuffle_range<S>(src, dst, pb, i, n);
}

// ---------------------------------------------------------------- entry points
void byte_shuffle_avx2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 32) return byte_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 2: return byte_shuffle_s<2>(src, dst, n);
    case 4: return byte_shuffle_s<4>(src, dst, n);
    case 8: return byte_shuffle_s<8>(src, dst, n);
    default: return byte_shuffle_generic(src, dst, n, s);
  }
}

void byte_unshuffle_planes_avx2(const u8* const* pl, u8* dst, usize n, usize s, bool stream) {
  if (n < 32) return byte_unshuffle_planes_generic(pl, dst, n, s, false);
  if (stream && n >= 2 * 32 && reinterpret_cast<std::uintptr_t>(dst) % 32 % s == 0) {
    switch (s) {
      case 2: return byte_unshuffle_stream_s<2>(pl, dst, n);
      case 4: return byte_unshuffle_stream_s<4>(pl, dst, n);
      case 8: return byte_unshuffle_stream_s<8>(pl, dst, n);
      default: break;
    }
  }
  switch (s) {
    case 2: return byte_unshuffle_s<2>(pl, dst, n);
    case 4: return byte_unshuffle_s<4>(pl, dst, n);
    case 8: return byte_unshuffle_s<8>(pl, dst, n);
    default: return byte_unshuffle_planes_generic(pl, dst, n, s, false);
  }
}

void byte_unshuffle_avx2(const u8* src, u8* dst, usize n, usize s) {
  if (s != 2 && s != 4 && s != 8) return byte_unshuffle_generic(src, dst, n, s);
  const u8* pl[8];
  for (usize b = 0; b < s; ++b) pl[b] = src + b * n;
  byte_unshuffle_planes_avx2(pl, dst, n, s, false);
}

void bit_shuffle_avx2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 32) return bit_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 1: return bit_shuffle_s<1>(src, dst, n);
    case 2: return bit_shuffle_s<2>(src, dst, n);
    case 4: return bit_shuffle_s<4>(src, dst, n);
    case 8: return bit_shuffle_s<8>(src, dst, n);
    default: return bit_shuffle_generic(src, dst, n, s);
  }
}

void bit_unshuffle_avx2(const u8* src, u8* dst, usize n, usize s) {
  if (n < 32) return bit_unshuffle_generic(src, dst, n, s);
  switch (s) {
    case 1: return bit_unshuffle_s<1>(src, dst, n);
    case 2: return bit_unshuffle_s<2>(src, dst, n);
    case 4: return bit_unshuffle_s<4>(src, dst, n);
    case 8: return bit_unshuffle_s<8>(src, dst, n);
    default: return bit_unshuffle_generic(src, dst, n, s);
  }
}

// Streams whole blocks when some head of 8k elements aligns the output (see bit_unshuffle_stream_s)
// and at least two blocks follow it; otherwise the regular kernel.
void bit_unshuffle_stream_avx2(const u8* src, u8* dst, usize n, usize s) {
  if (s == 1 || s == 2 || s == 4 || s == 8) {
    const usize block = kBlockBytes / s;
    for (usize head = 0; head < 32 && head + 2 * block <= n; head += 8) {
      if (reinterpret_cast<std::uintptr_t>(dst + head * s) % 32 != 0) continue;
      switch (s) {
        case 1: return bit_unshuffle_stream_s<1>(src, dst, n, head);
        case 2: return bit_unshuffle_stream_s<2>(src, dst, n, head);
        case 4: return bit_unshuffle_stream_s<4>(src, dst, n, head);
        default: return bit_unshuffle_stream_s<8>(src, dst, n, head);
      }
    }
  }
  bit_unshuffle_avx2(src, dst, n, s);
}

}  // namespace

const ShuffleKernels kAVX2 = {"avx2",
                              byte_shuffle_avx2,
                              byte_unshuffle_avx2,
                              bit_shuffle_avx2,
                              bit_unshuffle_avx2,
                              byte_unshuffle_planes_avx2,
                              bit_unshuffle_stream_avx2};

}  // namespace ringpress::shuffle_isa

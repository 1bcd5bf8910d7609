// AVX-512 shuffle kernels (layout: ringpress/shuffle.h; bit-exact with shuffle_generic.cc).
//
// Needs AVX-512 F/BW/VL/DQ only (compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mbmi2);
// no VBMI, no GFNI. SIMD paths: byte shuffle/unshuffle for element sizes 2, 4, 8 (64 elements per
// step); bit shuffle/unshuffle for element sizes 1, 2, 4, 8. Other sizes, and buffers shorter than
// one step, use the generic kernels; the last partial step is redone as one full step ending at n
// (it rewrites a few bytes with the same values), so there is no scalar tail.
//   byte shuffle:   in-lane vpshufb, then two-source permutes (vpermt2q for s=2; vpermt2d +
//                   vshufi64x2 for s=4; vpermt2w + 2 rounds of vshufi64x2 for s=8): s=4 costs
//                   4 vpshufb + 4 vpermt2d + 4 vshufi64x2 per 256 bytes.
//   byte unshuffle: the inverse permutes in reverse order.
//   bit shuffle:    byte shuffle in registers, then vptestmb against 1<<k gives bit plane k of
//                   64 elements as a 64-bit mask (one 8-byte store per bit plane per 64 elements).
//   bit unshuffle:  each 64-bit plane word is the mask of a masked vpaddb of 1<<k, which builds
//                   the byte plane of 64 elements; then the byte unshuffle.
//   bit kernels, n > 16384/s elements: each block of 16384/s elements goes through a 16 KiB stack
//                   buffer so that each of the 8*s bit planes is read/written 2048/s contiguous
//                   bytes at a time (small interleaved accesses to 8*s streams n/8 bytes apart,
//                   often 4 KiB-aliased, thrash L1), and the next block's plane spans are
//                   prefetched. The shuffles (byte and bit) prefetch the element stream 8 KiB
//                   ahead: among the plane streams the hardware prefetchers lose it (2-3x slower
//                   on DRAM-sized buffers without).
// Cost: one read and one write of the buffer (plus an L1-resident copy for the bit kernels).
// Measured (AMD EPYC Zen 4, 1 thread, gcc 12 -O3; GB/s at 256 KiB (L2) / 64 MiB (DRAM)):
//   s=4: byte shuffle 113 / 22, byte unshuffle 113 / 22, bit shuffle 25 / 14,
//        bit unshuffle 26 / 11
//   s=2: byte 118 / 22; s=8: byte 108 / 20.   generic s=4: byte 4.4 / 4.4, bit 0.2 / 0.2;
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

// vpermt2d indices, s=4: kIdx4Fwd[h] gathers bytes 2h, 2h+1 of the 32 elements in two registers
// (after the in-lane vpshufb), kIdx4Inv[x] undoes it.
alignas(64) const std::int32_t kIdx4Fwd[2][16] = {
    {0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29},
    {2, 6, 10, 14, 18, 22, 26, 30, 3, 7, 11, 15, 19, 23, 27, 31}};
alignas(64) const std::int32_t kIdx4Inv[2][16] = {
    {0, 8, 16, 24, 1, 9, 17, 25, 2, 10, 18, 26, 3, 11, 19, 27},
    {4, 12, 20, 28, 5, 13, 21, 29, 6, 14, 22, 30, 7, 15, 23, 31}};
// vpermt2w indices, s=8: kIdx8[h] gathers bytes 4h..4h+3 of 16 elements in two registers; the
// permutation is its own inverse.
alignas(64) const std::int16_t kIdx8[2][32] = {
    {0, 8,  16, 24, 32, 40, 48, 56, 1, 9,  17, 25, 33, 41, 49, 57,
     2, 10, 18, 26, 34, 42, 50, 58, 3, 11, 19, 27, 35, 43, 51, 59},
    {4, 12, 20, 28, 36, 44, 52, 60, 5, 13, 21, 29, 37, 45, 53, 61,
     6, 14, 22, 30, 38, 46, 54, 62, 7, 15, 23, 31, 39, 47, 55, 63}};

inline __m512i ld(const u8* p) {
  return _mm512_loadu_si512(p);
}
inline void st(u8* p, __m512i v) {
  _mm512_storeu_si512(p, v);
}
// A store of the output stream: cache-bypassing (non-temporal) with NT, for outputs far larger
// than the caches; p is then 64-byte aligned.
template <bool NT>
inline void stw(u8* p, __m512i v) {
  if constexpr (NT)
    _mm512_stream_si512(reinterpret_cast<__m512i*>(p), v);
  else
    st(p, v);
}
inline __m512i ldidx(const void* p) {
  return _mm512_load_si512(p);
}
inline void st64(u8* p, std::uint64_t v) {
  __builtin_memcpy(p, &v, 8);
}
inline std::uint64_t ld64(const u8* p) {
  std::uint64_t v;
  __builtin_memcpy(&v, p, 8);
  return v;
}
// vshufi64x2 through its zero-masked form with a full mask (same instruction): gcc 12 warns
// -Wmaybe-uninitialized about the undefined source of the plain intrinsic.
#define RP_SHUF128(a, b, imm) _mm512_maskz_shuffle_i64x2((__mmask8)0xFF, (a), (b), (imm))

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

// In-lane vpshufb orders (the same 16 bytes in each lane): kMask2 puts the 8 even bytes then
// the 8 odd bytes; kMask2Inv undoes it and also puts byte b of 2 elements in word b (s=8);
// kMask4 groups byte b of 4 elements in dword b (a 4x4 transpose, its own inverse).
alignas(64) const u8 kMask2[64] = {0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                   0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                   0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                   0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15};
alignas(64) const u8 kMask2Inv[64] = {0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                      0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                      0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15,
                                      0, 8, 1, 9, 2, 10, 3, 11, 4, 12, 5, 13, 6, 14, 7, 15};
alignas(64) const u8 kMask4[64] = {0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                   0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                   0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15,
                                   0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15};
inline __m512i mask2() {
  return ldidx(kMask2);
}
inline __m512i mask2inv() {
  return ldidx(kMask2Inv);
}
inline __m512i mask4() {
  return ldidx(kMask4);
}
inline __m512i mask8() {
  return mask2inv();
}
inline __m512i mask8inv() {
  return mask2();
}

// 64 elements at p -> byte planes P[b] (byte b of the 64 elements, in order).
inline void planes2(const u8* p, __m512i* P) {
  const __m512i m = mask2();
  const __m512i i0 = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14);
  const __m512i i1 = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  const __m512i v0 = _mm512_shuffle_epi8(ld(p), m);  // qword 2L: byte 0, 2L+1: byte 1
  const __m512i v1 = _mm512_shuffle_epi8(ld(p + 64), m);
  P[0] = _mm512_permutex2var_epi64(v0, i0, v1);
  P[1] = _mm512_permutex2var_epi64(v0, i1, v1);
}

inline void planes4(const u8* p, __m512i* P) {
  const __m512i m = mask4();
  const __m512i i0 = ldidx(kIdx4Fwd[0]), i1 = ldidx(kIdx4Fwd[1]);
  __m512i v[4];  // lane L of v[j]: elements 16j+4L..16j+4L+3, dword b = byte b
  for (int j = 0; j < 4; ++j) v[j] = _mm512_shuffle_epi8(ld(p + 64 * j), m);
  // w[r][h]: 128-bit chunks = byte 2h of elements 32r+0..15, 32r+16..31, byte 2h+1 of the same
  __m512i w[2][2];
  for (int r = 0; r < 2; ++r) {
    w[r][0] = _mm512_permutex2var_epi32(v[2 * r], i0, v[2 * r + 1]);
    w[r][1] = _mm512_permutex2var_epi32(v[2 * r], i1, v[2 * r + 1]);
  }
  for (int h = 0; h < 2; ++h) {
    P[2 * h] = RP_SHUF128(w[0][h], w[1][h], 0x44);
    P[2 * h + 1] = RP_SHUF128(w[0][h], w[1][h], 0xEE);
  }
}

inline void planes8(const u8* p, __m512i* P) {
  const __m512i m = mask8();
  const __m512i i0 = ldidx(kIdx8[0]), i1 = ldidx(kIdx8[1]);
  __m512i v[8];  // lane L of v[j]: elements 8j+2L, 8j+2L+1; word b = byte b of both
  for (int j = 0; j < 8; ++j) v[j] = _mm512_shuffle_epi8(ld(p + 64 * j), m);
  // w[q][h]: chunk c = byte 4h+c of elements 16q..16q+15
  __m512i w[4][2];
  for (int q = 0; q < 4; ++q) {
    w[q][0] = _mm512_permutex2var_epi16(v[2 * q], i0, v[2 * q + 1]);
    w[q][1] = _mm512_permutex2var_epi16(v[2 * q], i1, v[2 * q + 1]);
  }
  // x[r][h][g]: chunks = byte b=4h+2g of elements 32r+0..15, byte b+1 of the same,
  //             byte b of elements 32r+16..31, byte b+1 of the same
  for (int h = 0; h < 2; ++h)
    for (int g = 0; g < 2; ++g) {
      __m512i x0, x1;
      if (g == 0) {
        x0 = RP_SHUF128(w[0][h], w[1][h], 0x44);
        x1 = RP_SHUF128(w[2][h], w[3][h], 0x44);
      } else {
        x0 = RP_SHUF128(w[0][h], w[1][h], 0xEE);
        x1 = RP_SHUF128(w[2][h], w[3][h], 0xEE);
      }
      P[4 * h + 2 * g] = RP_SHUF128(x0, x1, 0x88);
      P[4 * h + 2 * g + 1] = RP_SHUF128(x0, x1, 0xDD);
    }
}

// Byte planes P[b] of 64 elements -> the 64 elements at out.
template <bool NT = false>
inline void unplanes2(const __m512i* P, u8* out) {
  const __m512i m = mask2inv();
  const __m512i i0 = _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11);
  const __m512i i1 = _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15);
  stw<NT>(out, _mm512_shuffle_epi8(_mm512_permutex2var_epi64(P[0], i0, P[1]), m));
  stw<NT>(out + 64, _mm512_shuffle_epi8(_mm512_permutex2var_epi64(P[0], i1, P[1]), m));
}

template <bool NT = false>
inline void unplanes4(const __m512i* P, u8* out) {
  const __m512i m = mask4();
  const __m512i i0 = ldidx(kIdx4Inv[0]), i1 = ldidx(kIdx4Inv[1]);
  for (int r = 0; r < 2; ++r) {
    const int imm = r;  // chunks 0,1 (r = 0) or 2,3 (r = 1) of each plane
    __m512i w0, w1;
    if (imm == 0) {
      w0 = RP_SHUF128(P[0], P[1], 0x44);
      w1 = RP_SHUF128(P[2], P[3], 0x44);
    } else {
      w0 = RP_SHUF128(P[0], P[1], 0xEE);
      w1 = RP_SHUF128(P[2], P[3], 0xEE);
    }
    stw<NT>(out + 128 * r, _mm512_shuffle_epi8(_mm512_permutex2var_epi32(w0, i0, w1), m));
    stw<NT>(out + 128 * r + 64, _mm512_shuffle_epi8(_mm512_permutex2var_epi32(w0, i1, w1), m));
  }
}

template <bool NT = false>
inline void unplanes8(const __m512i* P, u8* out) {
  const __m512i m = mask8inv();
  const __m512i i0 = ldidx(kIdx8[0]), i1 = ldidx(kIdx8[1]);
  const __m512i j0 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
  const __m512i j1 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  __m512i x[2][2][2];  // [r][h][g], as in planes8
  for (int h = 0; h < 2; ++h)
    for (int g = 0; g < 2; ++g) {
      const int b = 4 * h + 2 * g;
      x[0][h][g] = _mm512_permutex2var_epi64(P[b], j0, P[b + 1]);
      x[1][h][g] = _mm512_permutex2var_epi64(P[b], j1, P[b + 1]);
    }
  for (int r = 0; r < 2; ++r) {
    __m512i w[2][2];  // [q - 2r][h]
    for (int h = 0; h < 2; ++h) {
      w[0][h] = RP_SHUF128(x[r][h][0], x[r][h][1], 0x44);
      w[1][h] = RP_SHUF128(x[r][h][0], x[r][h][1], 0xEE);
    }
    for (int q = 0; q < 2; ++q) {
      u8* o = out + 128 * (2 * r + q);
      stw<NT>(o, _mm512_shuffle_epi8(_mm512_permutex2var_epi16(w[q][0], i0, w[q][1]), m));
      stw<NT>(o + 64, _mm512_shuffle_epi8(_mm512_permutex2var_epi16(w[q][0], i1, w[q][1]), m));
    }
  }
}

inline void load_planes(const u8* p, usize s, __m512i* P) {
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
inline void store_unplanes(const __m512i* P, usize s, u8* out) {
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
  const usize B = 64;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m512i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) st(dst + b * n + i, P[b]);
  }
}

template <int S>
void byte_unshuffle_s(const u8* const* pl, u8* dst, usize n) {
  const usize B = 64;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m512i P[S];
    for (int b = 0; b < S; ++b) P[b] = ld(pl[b] + i);
    store_unplanes(P, S, dst + i * S);
  }
}

// The same bytes with non-temporal stores, which need 64-byte aligned addresses: the elements
// before the first aligned output vector and after the last whole step go through scalar
// copies (the regular kernel's overlapping last step would not be aligned). The caller checks
// that dst % 64 is a multiple of S.
inline void unshuffle_scalar(const u8* const* pl, u8* dst, usize s, usize from, usize to) {
  for (usize i = from; i < to; ++i)
    for (usize b = 0; b < s; ++b) dst[i * s + b] = pl[b][i];
}

template <int S>
void byte_unshuffle_stream_s(const u8* const* pl, u8* dst, usize n) {
  const usize B = 64;
  const usize mis = reinterpret_cast<std::uintptr_t>(dst) % 64;
  const usize head = std::min<usize>(n, mis ? (64 - mis) / S : 0);
  const usize end = head + (n - head) / B * B;
  unshuffle_scalar(pl, dst, S, 0, head);
  for (usize i = head; i < end; i += B) {
    __m512i P[S];
    for (int b = 0; b < S; ++b) P[b] = ld(pl[b] + i);
    store_unplanes<true>(P, S, dst + i * S);
  }
  _mm_sfence();
  unshuffle_scalar(pl, dst, S, end, n);
}

// ---------------------------------------------------------------- bit shuffle
// Bit k of the 64 bytes of v -> 64 bits at out + k*pb (byte j at bit j).
inline void bits64(__m512i v, u8* out, usize pb) {
  for (int k = 0; k < 8; ++k)
    st64(out + k * pb, _mm512_test_epi8_mask(v, _mm512_set1_epi8(static_cast<char>(1 << k))));
}

template <int S>
void bit_shuffle_run(const u8* src, u8* dst, usize n, usize pb) {
  const usize B = 64;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m512i P[S];
    for (usize j = 0; j < S * B; j += 64) prefetch(src + i * S + kPrefetchAhead + j);
    load_planes(src + i * S, S, P);
    for (int b = 0; b < S; ++b) bits64(P[b], dst + 8 * b * pb + i / 8, pb);
  }
}

// 64 bits at in + k*pb (k = 0..7) -> 64 bytes, byte j = sum over k of bit j of plane k << k.
inline __m512i bytes64(const u8* in, usize pb) {
  __m512i acc = _mm512_maskz_mov_epi8(ld64(in), _mm512_set1_epi8(1));
  for (int k = 1; k < 8; ++k)
    acc = _mm512_mask_add_epi8(acc, ld64(in + k * pb), acc,
                               _mm512_set1_epi8(static_cast<char>(1 << k)));
  return acc;
}

template <int S, bool NT = false>
void bit_unshuffle_run(const u8* src, u8* dst, usize n, usize pb) {  // n >= 64
  const usize B = 64;
  for (usize i = 0; i < n; i = next_block(i, n, B)) {
    __m512i P[S];
    for (int b = 0; b < S; ++b) P[b] = bytes64(src + 8 * b * pb + i / 8, pb);
    store_unplanes<NT>(P, S, dst + i * S);
  }
}

// The 8*s bit planes lie n/8 bytes apart: interleaved small accesses to that many streams (often
// 4 KiB-aliased) thrash L1. Above kBlock elements the planes of each kBlock-element block go
// through an L1-resident buffer and move to/from the buffer kBlock/8 contiguous bytes at a time.
const usize kBlockBytes = 16384;  // buffer size; a block is kBlockBytes / s elements

inline void copy_span(u8* dst, const u8* src, usize span) {
  for (usize j = 0; j < span; j += sizeof(__m512i)) st(dst + j, ld(src + j));
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
  if (c >= 64)
    bit_unshuffle_run<S>(src + from / 8, dst + from * S, c, pb);
  else
    bit_unshuffle_scalar(src, dst, S, pb, from, to);
}

// The same bytes as bit_unshuffle_s with non-temporal stores, which need 64-byte aligned
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
void byte_shuffle_avx512(const u8* src, u8* dst, usize n, usize s) {
  if (n < 64) return byte_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 2: return byte_shuffle_s<2>(src, dst, n);
    case 4: return byte_shuffle_s<4>(src, dst, n);
    case 8: return byte_shuffle_s<8>(src, dst, n);
    default: return byte_shuffle_generic(src, dst, n, s);
  }
}

void byte_unshuffle_planes_avx512(const u8* const* pl, u8* dst, usize n, usize s, bool stream) {
  if (n < 64) return byte_unshuffle_planes_generic(pl, dst, n, s, false);
  if (stream && n >= 2 * 64 && reinterpret_cast<std::uintptr_t>(dst) % 64 % s == 0) {
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

void byte_unshuffle_avx512(const u8* src, u8* dst, usize n, usize s) {
  if (s != 2 && s != 4 && s != 8) return byte_unshuffle_generic(src, dst, n, s);
  const u8* pl[8];
  for (usize b = 0; b < s; ++b) pl[b] = src + b * n;
  byte_unshuffle_planes_avx512(pl, dst, n, s, false);
}

void bit_shuffle_avx512(const u8* src, u8* dst, usize n, usize s) {
  if (n < 64) return bit_shuffle_generic(src, dst, n, s);
  switch (s) {
    case 1: return bit_shuffle_s<1>(src, dst, n);
    case 2: return bit_shuffle_s<2>(src, dst, n);
    case 4: return bit_shuffle_s<4>(src, dst, n);
    case 8: return bit_shuffle_s<8>(src, dst, n);
    default: return bit_shuffle_generic(src, dst, n, s);
  }
}

void bit_unshuffle_avx512(const u8* src, u8* dst, usize n, usize s) {
  if (n < 64) return bit_unshuffle_generic(src, dst, n, s);
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
void bit_unshuffle_stream_avx512(const u8* src, u8* dst, usize n, usize s) {
  if (s == 1 || s == 2 || s == 4 || s == 8) {
    const usize block = kBlockBytes / s;
    for (usize head = 0; head < 64 && head + 2 * block <= n; head += 8) {
      if (reinterpret_cast<std::uintptr_t>(dst + head * s) % 64 != 0) continue;
      switch (s) {
        case 1: return bit_unshuffle_stream_s<1>(src, dst, n, head);
        case 2: return bit_unshuffle_stream_s<2>(src, dst, n, head);
        case 4: return bit_unshuffle_stream_s<4>(src, dst, n, head);
        default: return bit_unshuffle_stream_s<8>(src, dst, n, head);
      }
    }
  }
  bit_unshuffle_avx512(src, dst, n, s);
}

}  // namespace

#undef RP_SHUF128

const ShuffleKernels kAVX512 = {"avx512",
                                byte_shuffle_avx512,
                                byte_unshuffle_avx512,
                                bit_shuffle_avx512,
                                bit_unshuffle_avx512,
                                byte_unshuffle_planes_avx512,
                                bit_unshuffle_stream_avx512};

}  // namespace ringpress::shuffle_isa

// Generic (portable C++) shuffle kernels: the reference every SIMD kernel must match bit for bit,
// and the fallback on CPUs without SSE2/AVX2/AVX-512 or for element sizes the SIMD files do not
// specialise. Layout: see ringpress/shuffle.h. Cost: one pass, O(nbytes).
#include <cstring>

#include "ringpress/shuffle.h"

namespace ringpress::shuffle_isa {
namespace {

// Transpose an 8x8 bit matrix held in a uint64: bit (8*r + c) moves to bit (8*c + r).
// Row r is byte r of the word (element r), column c is bit c; after the transpose byte c holds
// bit c of each of the 8 elements, element r's bit at position r.
inline std::uint64_t transpose8x8(std::uint64_t x) {
  std::uint64_t t;
  t = (x ^ (x >> 7)) & 0x00AA00AA00AA00AAULL;
  x = x ^ t ^ (t << 7);
  t = (x ^ (x >> 14)) & 0x0000CCCC0000CCCCULL;
  x = x ^ t ^ (t << 14);
  t = (x ^ (x >> 28)) & 0x00000000F0F0F0F0ULL;
  x = x ^ t ^ (t << 28);
  return x;
}

inline std::uint64_t load_le64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int j = 7; j >= 0; --j) v = (v << 8) | p[j];
  return v;
}

}  // namespace

void byte_shuffle_generic(const std::uint8_t* src, std::uint8_t* dst, std::size_t n,
                          std::size_t s) {
  if (s == 1) {
    if (n) std::memcpy(dst, src, n);
    return;
  }
  for (std::size_t b = 0; b < s; ++b) {
    std::uint8_t* plane = dst + b * n;
    const std::uint8_t* in = src + b;
    for (std::size_t i = 0; i < n; ++i) plane[i] = in[i * s];
  }
}

void byte_unshuffle_generic(const std::uint8_t* src, std::uint8_t* dst, std::size_t n,
                            std::size_t s) {
  if (s == 1) {
    if (n) std::memcpy(dst, src, n);
    return;
  }
  for (std::size_t b = 0; b < s; ++b) {
    const std::uint8_t* plane = src + b * n;
    std::uint8_t* out = dst + b;
    for (std::size_t i = 0; i < n; ++i) out[i * s] = plane[i];
  }
}

void byte_unshuffle_planes_generic(const std::uint8_t* const* planes, std::uint8_t* dst,
                                   std::size_t n, std::size_t s, bool) {
  for (std::size_t b = 0; b < s; ++b) {
    const std::uint8_t* plane = planes[b];
    std::uint8_t* out = dst + b;
    for (std::size_t i = 0; i < n; ++i) out[i * s] = plane[i];
  }
}

void bit_shuffle_generic(const std::uint8_t* src, std::uint8_t* dst, std::size_t n, std::size_t s) {
  const std::size_t plane_bytes = n / 8;
  for (std::size_t g = 0; g < plane_bytes; ++g) {  // group of 8 elements
    const std::uint8_t* e = src + g * 8 * s;
    for (std::size_t b = 0; b < s; ++b) {
      std::uint8_t row[8];
      for (int r = 0; r < 8; ++r) row[r] = e[r * s + b];
      std::uint64_t t = transpose8x8(load_le64(row));
      for (int k = 0; k < 8; ++k) dst[(8 * b + k) * plane_bytes + g] = std::uint8_t(t >> (8 * k));
    }
  }
}

void bit_unshuffle_generic(const std::uint8_t* src, std::uint8_t* dst, std::size_t n,
                           std::size_t s) {
  const std::size_t plane_bytes = n / 8;
  for (std::size_t g = 0; g < plane_bytes; ++g) {
    std::uint8_t* e = dst + g * 8 * s;
    for (std::size_t b = 0; b < s; ++b) {
      std::uint8_t col[8];
      for (int k = 0; k < 8; ++k) col[k] = src[(8 * b + k) * plane_bytes + g];
      std::uint64_t t = transpose8x8(load_le64(col));  // the transpose is its own inverse
      for (int r = 0; r < 8; ++r) e[r * s + b] = std::uint8_t(t >> (8 * r));
    }
  }
}

const ShuffleKernels kGeneric = {"generic",
                                 byte_shuffle_generic,
                                 byte_unshuffle_generic,
                                 bit_shuffle_generic,
                                 bit_unshuffle_generic,
                                 byte_unshuffle_planes_generic,
                                 bit_unshuffle_generic};

}  // namespace ringpress::shuffle_isa

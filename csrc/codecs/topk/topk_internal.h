// Private helpers shared by the top-k files (csrc/codecs/topk/*.cc); not part of the public API.
// Plain baseline code: no ISA-specific flags, so sharing these inlines is safe (architecture.md,
// rule 2).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ringpress/topk.h"

namespace ringpress::topk::internal {

constexpr std::uint32_t kAbsMask = 0x7FFFFFFFu;
constexpr std::uint32_t kInfBits = 0x7F800000u;  // |x| bits above this are NaN

inline std::uint32_t abs_bits(float v) noexcept {
  std::uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b & kAbsMask;
}

// splitmix64 finaliser, and a counter-based stream: draw j of seed is a pure function of both.
inline std::uint64_t mix64(std::uint64_t z) noexcept {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
inline std::uint64_t counter_random(std::uint64_t seed, std::uint64_t j) noexcept {
  return mix64(mix64(seed ^ 0x6A09E667F3BCC909ull) + (j + 1) * 0x9E3779B97F4A7C15ull);
}
// Maps a 64-bit random value to [0, range) (multiply-high; bias <= range / 2^64).
inline std::uint64_t bounded(std::uint64_t r, std::uint64_t range) noexcept {
  return static_cast<std::uint64_t>((static_cast<unsigned __int128>(r) * range) >> 64);
}

// The k-th largest (1 <= k <= m) of the m bit patterns b (read-only), and via count_greater the
// number of b[i] strictly greater than it. Adaptive radix step (4096 bins over [min, max]) and
// nth_element on the one bucket that holds it. exact.cc.
std::uint32_t kth_largest_bits(const std::uint32_t* b, std::size_t m, std::size_t k,
                               std::size_t* count_greater);

// In place: keep the exact top-k (by |value|, ties by lowest index) of a candidate list in
// ascending index order; order is preserved. No-op when size <= k. exact.cc.
void compact_topk(SparseVector* v, std::size_t k);

// Collects every i with abs_bits(x[i]) >= tbits into out (ascending), growing it as needed;
// expected is a capacity hint. threshold.cc.
void collect_at_least(const float* x, std::size_t n, std::uint32_t tbits, std::size_t expected,
                      SparseVector* out);

// UsageError if any collected value is NaN. threshold.cc.
void check_no_nan(const SparseVector& v);

}  // namespace ringpress::topk::internal

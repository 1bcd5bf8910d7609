// Private helpers shared by the top-k files (csrc/codecs/topk/*.cc); not part of the public API.
// Plain baseline code: no ISA-specific flags, so sharing these inlines is safe (architecture.md,
// rule 2).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "ringpress/cpu.h"
#include "ringpress/topk.h"

namespace ringpress::topk::internal {

constexpr std::uint32_t kAbsMask = 0x7FFFFFFFu;

inline std::uint32_t abs_bits(float v) noexcept {
  std::uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b & kAbsMask;
}

// splitmix64 finaliser, and a counter-based stream: draw j of seed is a pure function of both.
// Appends every i in [begin, end) with abs_bits(x[i]) >= tbits to ip/vp starting at position c
// and returns the new count. ip/vp need room for (end - begin) + 1 more entries: the loop writes
// each candidate unconditionally and advances only on a hit (branch-free), and skips 16-element
// lanes whose largest magnitude is below the threshold.
inline std::size_t compact_range(const float* x, std::size_t begin, std::size_t end,
                                 std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                 std::size_t c) noexcept {
  constexpr std::size_t kLane = 16;
  std::size_t i = begin;
  for (; i + kLane <= end; i += kLane) {
    std::uint32_t m = 0;
    for (std::size_t j = 0; j < kLane; ++j) m = std::max(m, abs_bits(x[i + j]));
    if (m < tbits) continue;
    for (std::size_t j = 0; j < kLane; ++j) {
      ip[c] = static_cast<std::uint32_t>(i + j);
      vp[c] = x[i + j];
      c += abs_bits(x[i + j]) >= tbits;
    }
  }
  for (; i < end; ++i) {
    ip[c] = static_cast<std::uint32_t>(i);
    vp[c] = x[i];
    c += abs_bits(x[i]) >= tbits;
  }
  return c;
}

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

// compact_range compiled for a SIMD level (compact_isa.cc): the same output bit for bit, the same
// room needed in ip/vp. _at runs the given level's kernel (the generic one where that level is
// not supported here; tests compare levels), _best the one simd_level() picks.
std::size_t compact_range_at(SimdLevel level, const float* x, std::size_t begin, std::size_t end,
                             std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c);
std::size_t compact_range_best(const float* x, std::size_t begin, std::size_t end,
                               std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c);

// The accumulating compaction (compact_isa.cc): r[i] = r[i] + g[i] for every i in [begin, end),
// and every i whose new |r[i]| bits are >= tbits appended with that sum, as compact_range would
// after the add; the same room in ip/vp. _at: one level's kernel (tests), _best: simd_level()'s.
std::size_t accumulate_range_at(SimdLevel level, const float* g, float* r, std::size_t begin,
                                std::size_t end, std::uint32_t tbits, std::uint32_t* ip, float* vp,
                                std::size_t c);
std::size_t accumulate_range_best(const float* g, float* r, std::size_t begin, std::size_t end,
                                  std::uint32_t tbits, std::uint32_t* ip, float* vp, std::size_t c);

// collect_at_least over x = r + g, storing the sums into r on the way (threshold.cc).
void collect_at_least_accumulate(const float* g, float* r, std::size_t n, std::uint32_t tbits,
                                 std::size_t expected, SparseVector* out);

}  // namespace ringpress::topk::internal

// Sparsification: top-k selectors, random-k, fixed threshold, index coding, scatter-add.
//
// Contract common to every selector:
//   input   x[0..n) fp32, n < 2^32 (indices are uint32). Magnitude order is the order of |x| as
//           IEEE-754 bit patterns with the sign cleared: +0 == -0, +inf is above every number,
//           and NaN above +inf (as torch.topk ranks it; among NaNs a larger payload first).
//   output  SparseVector{indices, values}: indices strictly ascending, values[i] = x[indices[i]]
//           (the original signed value, bit-exact). The vectors are resized (their capacity is
//           kept, so a reused SparseVector does not reallocate).
//   NaN     not an error: the selectors rank it by its bit pattern, so the top-k (and every
//           threshold) holds the NaNs before any number, and a NaN is sent, never silently
//           dropped while numbers go. random-k does not look at values: NaNs are copied.
//   ties    exact top-k (and a refined sampled top-k) break ties at the threshold by lowest index,
//           so exactly k elements are returned and the result is deterministic.
//   errors  bad arguments (k > n, n >= 2^32, negative/NaN threshold, ...) raise UsageError.
//   threads single-threaded; results never depend on threading (random-k uses a counter-based
//           PRNG keyed by (seed, draw number)).
//
// Index coding (encode_indices / decode_indices), little-endian:
//   u32 count | blocks of up to 128 indices: u8 width w (0..32), then ceil(m*w/8) bytes holding m
//   deltas of w bits each, LSB-first. delta_0 = idx_0 (of the stream), delta_i = idx_i - idx_{i-1}
//   - 1 (strictly ascending indices give deltas >= 0). Decoding validates everything (truncation,
//   width > 32, index >= universe, 32-bit overflow, count > universe or > capacity, trailing bytes)
//   and raises WireFormatError; it never reads outside [in, in + len).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace ringpress::topk {

struct SparseVector {
  std::vector<std::uint32_t> indices;  // strictly ascending
  std::vector<float> values;           // values[i] == x[indices[i]]
  std::size_t size() const noexcept { return indices.size(); }
};

// Exact top-k by magnitude (csrc/codecs/topk/exact.cc). Exactly min(k, n) = k elements.
// Radix select: pass 1 builds a 4096-bin histogram of the top 12 bits of |x|; pass 2 collects the
// elements in buckets >= the threshold bucket (~k plus that bucket's population); the threshold
// inside the bucket is found by nth_element on the bucket. Cost: 2 reads of x; writes 8 bytes per
// returned element (+ the threshold bucket, transiently).
void topk_exact(const float* x, std::size_t n, std::size_t k, SparseVector* out);

struct SampledOptions {
  double tolerance = 0.05;  // result size m satisfies k <= m <= ceil(k * (1 + tolerance))
  bool exact = false;       // true: always exactly k (the exact top-k)
  std::uint64_t seed = 0;   // sample positions are a pure function of (seed, n)
  // Positions sampled (with replacement). Each is a cache and TLB miss in a large x (two with
  // error feedback's r + g), and more samples only tighten the candidate count, which the exact
  // cut on the candidates trims anyway: for 16M floats and ratio 1%, 2^14 samples collect ~1.34 k
  // candidates against ~1.16 k for 2^16, and select ~1-1.4 ms (of ~15) sooner (docs/benchmarks.md).
  std::size_t sample_size = 1u << 14;
};

// Sampled-threshold top-k, Deep-Gradient-Compression style (csrc/codecs/topk/sampled.cc).
// Guarantee (not probabilistic): the result is the exact top-m set for some m with
//   k <= m <= ceil(k * (1 + tolerance))   (m == k when options.exact or tolerance == 0),
// i.e. every returned |x| >= every non-returned |x| (slack 0); when m > k the result is exactly
// {i : |x_i| >= t} for a threshold t (ties at t all included), so the m - k extra elements are
// the next-largest magnitudes after the exact top-k. Only the cost is probabilistic:
// a sample estimates a deliberately loose threshold (k * (1 + ~4 sigma) expected candidates);
// one pass collects the candidates; if their count exceeds the tolerance an exact selection runs
// on the candidates only. If the estimate was too tight (count < k, probability ~1e-4 per call),
// it falls back to topk_exact (2 more passes).
// Cost: sample_size random reads + 1 read of x; writes 8 bytes per candidate (k (1 + 4 / sqrt(mu)
// + 4 / mu) with mu = k * sample_size / n: ~1.34 k at ratio 1%).
// Small inputs (n <= 4 * sample_size) go straight to topk_exact.
void topk_sampled(const float* x, std::size_t n, std::size_t k, const SampledOptions& options,
                  SparseVector* out);

// topk_sampled of x = r + g that also leaves r = r + g (every element, one float add each, as
// `r[i] += g[i]`): the same entries and the same r as that add followed by topk_sampled(r, ...),
// but the add happens in the pass that collects the candidates, so memory is read once less
// (error feedback: r is the residual, g the new gradient).
void topk_sampled_accumulate(const float* g, float* r, std::size_t n, std::size_t k,
                             const SampledOptions& options, SparseVector* out);

// Random-k (csrc/codecs/topk/randomk.cc): k distinct indices drawn uniformly without replacement
// (Floyd's algorithm on an n-bit bitmap with a counter-based splitmix PRNG), sorted, and their
// values. Deterministic per (seed, n, k). Does not inspect values (NaN is copied).
// Cost: k random bit operations, a scan of n/8 bitmap bytes, k gathers from x.
void randomk(const float* x, std::size_t n, std::size_t k, std::uint64_t seed, SparseVector* out);

// Fixed threshold (csrc/codecs/topk/threshold.cc): every i with |x_i| >= t, exact (compares bit
// patterns of |x|, so no rounding). t must be >= 0 (or -0) and not NaN; t == 0 selects all.
// Cost: 1 read of x; writes 8 bytes per selected element.
void threshold_select(const float* x, std::size_t n, float t, SparseVector* out);

// Index coding (csrc/codecs/topk/indices.cc), format above.
// Upper bound of the encoded size of count indices (for output allocation).
std::size_t indices_max_encoded_size(std::size_t count) noexcept;
// Exact encoded size; validates like encode_indices.
std::size_t indices_encoded_size(const std::uint32_t* idx, std::size_t count, std::size_t universe);
// Encodes count strictly ascending indices, all < universe (UsageError otherwise, and if
// capacity < the encoded size). Returns the bytes written.
// Cost: one pass over the indices, ~(1 + bits per delta / 8) bytes per index.
std::size_t encode_indices(const std::uint32_t* idx, std::size_t count, std::size_t universe,
                           void* out, std::size_t capacity);
// The count stored in an encoded stream (WireFormatError if len < 4).
std::size_t indices_decoded_count(const void* in, std::size_t len);
// Decodes a stream of exactly len bytes into out[0..count) and returns count. WireFormatError on
// any malformation (see above); UsageError if count > out_capacity.
std::size_t decode_indices(const void* in, std::size_t len, std::size_t universe,
                           std::uint32_t* out, std::size_t out_capacity);
// Decodes the stream as decode_indices does and adds float32 value j (little-endian, read from
// values + 4 j, any alignment; the caller guarantees count of them) at index j: dense[idx_j] +=
// value_j, one block of 128 at a time, each block's indices checked (< universe) before it is
// added. On WireFormatError the blocks before the bad one have been added. Returns the count.
std::size_t decode_indices_add(const void* in, std::size_t len, std::size_t universe,
                               const void* values, float* dense);

// dense[idx[i]] += val[i] for i < count (csrc/codecs/topk/indices.cc). Duplicate indices add up.
// All indices are validated (< n) before dense is touched: UsageError leaves dense unchanged.
void scatter_add(const std::uint32_t* idx, const float* val, std::size_t count, float* dense,
                 std::size_t n);

}  // namespace ringpress::topk

// Sampled-threshold top-k (Deep Gradient Compression style), ringpress/topk.h.
//
// Contract (deterministic, not probabilistic): the result is the exact top-m set for some
//   k <= m <= ceil(k * (1 + tolerance))   (m == k when options.exact),
// ties at the cut included when m > k, broken by lowest index when m == k. Order is that of the
// |x| bit patterns, so NaN ranks above +-Inf (topk_exact).
// Method: draw sample_size positions (counter-based PRNG of (seed, draw)), take the r-th largest
// sampled |x| as threshold t with r = mu + 4 sqrt(mu) + 4, mu = k * s / n, so that {|x| >= t}
// contains the top-k except with probability ~1e-4 (binomial tail); one pass collects those
// candidates (~k (1 + 4 / sqrt(mu)) of them); if there are more than ceil(k (1 + tol)), an exact
// selection runs on the candidates only (compact_topk); if fewer than k, fall back to topk_exact.
// Cost: s random reads + 1 read of x + 8 bytes written per candidate; the fallback adds 2 reads.
// n <= 4 s, k == 0, k == n or r > s/2 use topk_exact directly.
// topk_sampled_accumulate: the same on x = r + g, with r = r + g stored in the collecting pass
// (error feedback's add folded in: reads of g and r and one write of r instead of an add pass
// (2 reads, 1 write) and then a read of r); samples are r[i] + g[i] computed the same way.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {
namespace {

using namespace internal;

// The method's plan for n elements: r (the rank of the threshold among the samples), or 0 when
// topk_exact applies directly. Checks the arguments.
std::size_t plan(const void* x, std::size_t n, std::size_t k, const SampledOptions& options,
                 SparseVector* out) {
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  RP_ENFORCE(n == 0 || x != nullptr, UsageError, "x is null");
  RP_ENFORCE_LE(n, std::size_t{std::numeric_limits<std::uint32_t>::max()}, UsageError,
                "indices are uint32");
  RP_ENFORCE_LE(k, n, UsageError, "k must not exceed the number of elements");
  RP_ENFORCE(std::isfinite(options.tolerance) && options.tolerance >= 0.0, UsageError,
             "tolerance must be finite and >= 0, got ", options.tolerance);
  RP_ENFORCE_GE(options.sample_size, std::size_t{1}, UsageError, "sample_size must be >= 1");
  const std::size_t s = options.sample_size;
  if (k == 0 || k == n || n <= 4 * s) return 0;
  const double mu = static_cast<double>(k) * static_cast<double>(s) / static_cast<double>(n);
  const std::size_t r = static_cast<std::size_t>(std::ceil(mu + 4.0 * std::sqrt(mu) + 4.0));
  return r > s / 2 ? 0 : r;
}

// Draws the sample of |value(i)| bits; returns the threshold bits.
template <class Value>
std::uint32_t threshold_bits(Value value, std::size_t n, std::size_t r,
                             const SampledOptions& options) {
  static thread_local std::vector<std::uint32_t> sample;
  const std::size_t s = options.sample_size;
  sample.resize(s);
  for (std::size_t j = 0; j < s; ++j)
    sample[j] = abs_bits(value(bounded(counter_random(options.seed, j), n)));
  std::size_t gt = 0;
  return kth_largest_bits(sample.data(), s, r, &gt);
}

std::size_t expected_candidates(std::size_t n, std::size_t r, const SampledOptions& options) {
  return static_cast<std::size_t>(static_cast<double>(r) * static_cast<double>(n) /
                                  static_cast<double>(options.sample_size));
}

// After the collecting pass over x: the fallback when too few were collected, and the exact cut
// when too many.
void finish(const float* x, std::size_t n, std::size_t k, const SampledOptions& options,
            SparseVector* out) {
  const std::size_t c = out->size();
  if (c < k) return topk_exact(x, n, k, out);  // threshold estimate too tight (rare)
  const std::size_t limit =
      options.exact
          ? k
          : static_cast<std::size_t>(std::ceil(static_cast<double>(k) * (1.0 + options.tolerance)));
  if (c > limit) compact_topk(out, k);
}

void add_into(const float* g, float* r, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) r[i] += g[i];
}

}  // namespace

void topk_sampled(const float* x, std::size_t n, std::size_t k, const SampledOptions& options,
                  SparseVector* out) {
  ScopedErrorContext ctx("topk.sampled");
  const std::size_t r = plan(x, n, k, options, out);
  if (r == 0) return topk_exact(x, n, k, out);
  const std::uint32_t t = threshold_bits([&](std::size_t i) { return x[i]; }, n, r, options);
  collect_at_least(x, n, t, expected_candidates(n, r, options), out);
  finish(x, n, k, options, out);
}

void topk_sampled_accumulate(const float* g, float* r, std::size_t n, std::size_t k,
                             const SampledOptions& options, SparseVector* out) {
  ScopedErrorContext ctx("topk.sampled");
  RP_ENFORCE(n == 0 || r != nullptr, UsageError, "r is null");
  const std::size_t rank = plan(g, n, k, options, out);
  if (rank == 0) {
    add_into(g, r, n);
    return topk_exact(r, n, k, out);
  }
  const std::uint32_t t =
      threshold_bits([&](std::size_t i) { return r[i] + g[i]; }, n, rank, options);
  collect_at_least_accumulate(g, r, n, t, expected_candidates(n, rank, options), out);
  finish(r, n, k, options, out);
}

}  // namespace ringpress::topk

// Sampled-threshold top-k (Deep Gradient Compression style), ringpress/topk.h.
//
// Contract (deterministic, not probabilistic): the result is the exact top-m set for some
//   k <= m <= ceil(k * (1 + tolerance))   (m == k when options.exact),
// ties at the cut included when m > k, broken by lowest index when m == k. NaN raises UsageError.
// Method: draw sample_size positions (counter-based PRNG of (seed, draw)), take the r-th largest
// sampled |x| as threshold t with r = mu + 4 sqrt(mu) + 4, mu = k * s / n, so that {|x| >= t}
// contains the top-k except with probability ~1e-4 (binomial tail); one pass collects those
// candidates (~k (1 + 4 / sqrt(mu)) of them); if there are more than ceil(k (1 + tol)), an exact
// selection runs on the candidates only (compact_topk); if fewer than k, fall back to topk_exact.
// Cost: s random reads + 1 read of x + 8 bytes written per candidate; the fallback adds 2 reads.
// n <= 4 s, k == 0, k == n or r > s/2 use topk_exact directly.
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {

void topk_sampled(const float* x, std::size_t n, std::size_t k, const SampledOptions& options,
                  SparseVector* out) {
  using namespace internal;
  ScopedErrorContext ctx("topk.sampled");
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  RP_ENFORCE(n == 0 || x != nullptr, UsageError, "x is null");
  RP_ENFORCE_LE(n, std::size_t{std::numeric_limits<std::uint32_t>::max()}, UsageError,
                "indices are uint32");
  RP_ENFORCE_LE(k, n, UsageError, "k must not exceed the number of elements");
  RP_ENFORCE(std::isfinite(options.tolerance) && options.tolerance >= 0.0, UsageError,
             "tolerance must be finite and >= 0, got ", options.tolerance);
  RP_ENFORCE_GE(options.sample_size, std::size_t{1}, UsageError, "sample_size must be >= 1");
  const std::size_t s = options.sample_size;
  if (k == 0 || k == n || n <= 4 * s) return topk_exact(x, n, k, out);
  const double mu = static_cast<double>(k) * static_cast<double>(s) / static_cast<double>(n);
  const std::size_t r = static_cast<std::size_t>(std::ceil(mu + 4.0 * std::sqrt(mu) + 4.0));
  if (r > s / 2) return topk_exact(x, n, k, out);

  static thread_local std::vector<std::uint32_t> sample;
  sample.resize(s);
  std::uint32_t mx = 0;
  for (std::size_t j = 0; j < s; ++j) {
    const std::uint32_t b = abs_bits(x[bounded(counter_random(options.seed, j), n)]);
    sample[j] = b;
    mx = std::max(mx, b);
  }
  RP_ENFORCE(mx <= kInfBits, UsageError, "input contains NaN (top-k selection is undefined)");
  std::size_t gt = 0;
  const std::uint32_t t = kth_largest_bits(sample.data(), s, r, &gt);
  const double expected = static_cast<double>(r) * static_cast<double>(n) / static_cast<double>(s);
  collect_at_least(x, n, t, static_cast<std::size_t>(expected), out);
  check_no_nan(*out);
  const std::size_t c = out->size();
  if (c < k) return topk_exact(x, n, k, out);  // threshold estimate too tight (rare)
  const std::size_t limit =
      options.exact
          ? k
          : static_cast<std::size_t>(std::ceil(static_cast<double>(k) * (1.0 + options.tolerance)));
  if (c > limit) compact_topk(out, k);
}

}  // namespace ringpress::topk

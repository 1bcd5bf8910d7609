// Random-k sparsification (ringpress/topk.h).
//
// Contract: k distinct indices uniform over the k-subsets of [0, n) (up to the multiply-high
// range bias <= n / 2^64), ascending, with their values; a pure function of (seed, n, k) —
// draw j uses counter_random(seed, j), so no state or threading influences it. Values are not
// inspected (NaN is copied like any value).
// Method: Floyd's algorithm (for j = n-k .. n-1: t = uniform[0, j]; take t, or j if t is taken)
// on an n-bit bitmap, then a scan of the bitmap emits the indices in order.
// Cost: k random bit tests/sets in an n/8-byte bitmap, a scan of n/64 words, k reads of x;
// writes 8 bytes per element. k == n copies x.
#include <limits>
#include <vector>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {

void randomk(const float* x, std::size_t n, std::size_t k, std::uint64_t seed, SparseVector* out) {
  using namespace internal;
  ScopedErrorContext ctx("topk.randomk");
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  RP_ENFORCE(n == 0 || x != nullptr, UsageError, "x is null");
  RP_ENFORCE_LE(n, std::size_t{std::numeric_limits<std::uint32_t>::max()}, UsageError,
                "indices are uint32");
  RP_ENFORCE_LE(k, n, UsageError, "k must not exceed the number of elements");
  auto& I = out->indices;
  auto& V = out->values;
  I.resize(k);
  V.resize(k);
  if (k == n) {
    for (std::size_t j = 0; j < n; ++j) {
      I[j] = static_cast<std::uint32_t>(j);
      V[j] = x[j];
    }
    return;
  }
  if (k == 0) return;
  static thread_local std::vector<std::uint64_t> bitmap;
  const std::size_t words = (n + 63) / 64;
  bitmap.assign(words, 0);
  std::uint64_t* bm = bitmap.data();
  for (std::size_t j = n - k; j < n; ++j) {
    std::uint64_t t = bounded(counter_random(seed, j), j + 1);
    const std::uint64_t bit = std::uint64_t{1} << (t & 63);
    if (bm[t >> 6] & bit) t = j;
    bm[t >> 6] |= std::uint64_t{1} << (t & 63);
  }
  std::size_t c = 0;
  for (std::size_t w = 0; w < words; ++w) {
    std::uint64_t word = bm[w];
    while (word) {
      const std::size_t idx = w * 64 + static_cast<std::size_t>(__builtin_ctzll(word));
      word &= word - 1;
      I[c] = static_cast<std::uint32_t>(idx);
      V[c] = x[idx];
      ++c;
    }
  }
  RP_ENFORCE_EQ(c, k, InternalError, "Floyd sampling produced the wrong count");
}

}  // namespace ringpress::topk

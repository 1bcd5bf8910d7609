// Exact top-k by magnitude: radix select on the bit patterns of |x| (ringpress/topk.h).
//
// Contract: exactly k elements, the k largest |x|; ties at the threshold go to the lowest indices;
// indices ascending, values bit-exact copies. Order is that of the |x| bit patterns, so NaN ranks
// above +-Inf (as in torch.topk; among NaNs a larger payload first). k == n copies x.
// Cost: pass 1 reads x and builds a 4096-bin histogram of bits 30..19 of |x| (8 exponent + 4
// mantissa bits; 4 interleaved histograms avoid store-forwarding stalls on repeated values);
// pass 2 reads x and collects every element of the buckets at or above the threshold bucket
// (k plus that bucket's population, written to out); then the threshold inside the bucket is
// found by nth_element over that bucket only, and the list is compacted in place.
// Worst case (all |x| equal) the transient list is n long; time stays O(n).
#include <algorithm>
#include <array>
#include <limits>
#include <vector>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {
namespace internal {

std::uint32_t kth_largest_bits(const std::uint32_t* b, std::size_t m, std::size_t k,
                               std::size_t* count_greater) {
  std::uint32_t lo = std::numeric_limits<std::uint32_t>::max(), hi = 0;
  for (std::size_t i = 0; i < m; ++i) {
    lo = std::min(lo, b[i]);
    hi = std::max(hi, b[i]);
  }
  if (lo == hi) {
    *count_greater = 0;
    return lo;
  }
  const std::uint32_t span = hi - lo;
  const int width = 32 - __builtin_clz(span);
  const int shift = width > 12 ? width - 12 : 0;
  std::array<std::uint32_t, 4097> hist{};
  for (std::size_t i = 0; i < m; ++i) ++hist[(b[i] - lo) >> shift];
  std::size_t above = 0;
  std::uint32_t bucket = (span >> shift) + 1;
  while (bucket > 0) {
    --bucket;
    if (above + hist[bucket] >= k) break;
    above += hist[bucket];
  }
  // Members of the bucket; the (k - above)-th largest of them is the answer.
  static thread_local std::vector<std::uint32_t> members;
  members.clear();
  members.reserve(hist[bucket]);
  for (std::size_t i = 0; i < m; ++i) {
    if (((b[i] - lo) >> shift) == bucket) members.push_back(b[i]);
  }
  const std::size_t need = k - above;
  std::nth_element(members.begin(), members.begin() + (need - 1), members.end(),
                   std::greater<std::uint32_t>());
  const std::uint32_t t = members[need - 1];
  std::size_t gt = above;
  for (std::uint32_t v : members) gt += v > t;
  *count_greater = gt;
  return t;
}

void compact_topk(SparseVector* v, std::size_t k) {
  const std::size_t m = v->size();
  if (m <= k) return;
  if (k == 0) {
    v->indices.clear();
    v->values.clear();
    return;
  }
  static thread_local std::vector<std::uint32_t> bits;
  bits.resize(m);
  for (std::size_t i = 0; i < m; ++i) bits[i] = abs_bits(v->values[i]);
  std::size_t gt = 0;
  const std::uint32_t t = kth_largest_bits(bits.data(), m, k, &gt);
  std::size_t ties = k - gt;  // elements equal to t to keep, lowest indices first
  std::uint32_t* ip = v->indices.data();
  float* vp = v->values.data();
  std::size_t c = 0;
  for (std::size_t i = 0; i < m; ++i) {
    const std::uint32_t b = bits[i];
    const bool tie = b == t && ties > 0;
    ties -= tie;
    ip[c] = ip[i];
    vp[c] = vp[i];
    c += (b > t) | tie;
  }
  v->indices.resize(c);
  v->values.resize(c);
}

}  // namespace internal

void topk_exact(const float* x, std::size_t n, std::size_t k, SparseVector* out) {
  using namespace internal;
  ScopedErrorContext ctx("topk.exact");
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  RP_ENFORCE(n == 0 || x != nullptr, UsageError, "x is null");
  RP_ENFORCE_LE(n, std::size_t{std::numeric_limits<std::uint32_t>::max()}, UsageError,
                "indices are uint32");
  RP_ENFORCE_LE(k, n, UsageError, "k must not exceed the number of elements");

  auto& I = out->indices;
  auto& V = out->values;
  if (k == 0) {
    I.clear();
    V.clear();
    return;
  }
  if (k == n) {
    I.resize(n);
    V.resize(n);
    for (std::size_t j = 0; j < n; ++j) I[j] = static_cast<std::uint32_t>(j);
    std::copy(x, x + n, V.begin());
    return;
  }
  // Pass 1: histogram of bits 30..19 of |x|.
  constexpr int kShift = 19;
  constexpr std::size_t kBins = std::size_t{1} << (31 - kShift);
  static thread_local std::vector<std::uint32_t> hist4;
  hist4.assign(4 * kBins, 0);
  std::uint32_t* h = hist4.data();
  const auto* xb = reinterpret_cast<const std::uint32_t*>(x);
  std::size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    std::uint32_t b[4];
    std::memcpy(b, xb + i, sizeof b);
    for (int j = 0; j < 4; ++j) {
      b[j] &= kAbsMask;
      ++h[j * kBins + (b[j] >> kShift)];
    }
  }
  for (; i < n; ++i) {
    ++h[abs_bits(x[i]) >> kShift];
  }
  // Threshold bucket: the highest bucket whose cumulative count from the top reaches k.
  std::size_t cum = 0;
  std::size_t bucket = kBins;
  while (bucket > 0) {
    --bucket;
    cum +=
        std::size_t{h[bucket]} + h[kBins + bucket] + h[2 * kBins + bucket] + h[3 * kBins + bucket];
    if (cum >= k) break;
  }
  // Pass 2: collect the cum elements with |x| bits >= bucket << kShift.
  const std::uint32_t tbits = static_cast<std::uint32_t>(bucket) << kShift;
  // The SIMD compaction writes whole vectors at the next free slot: at most 32 past the last hit.
  const std::size_t room = std::min(cum + 33, n + 1);
  if (I.size() < room) I.resize(room);
  if (V.size() < room) V.resize(room);
  std::uint32_t* ip = I.data();
  float* vp = V.data();
  const std::size_t c = compact_range_best(x, 0, n, tbits, ip, vp, 0);
  RP_ENFORCE_EQ(c, cum, InternalError, "pass 2 disagrees with the histogram");
  I.resize(c);
  V.resize(c);
  compact_topk(out, k);
}

}  // namespace ringpress::topk

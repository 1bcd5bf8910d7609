// Fixed-threshold selection: every i with |x_i| >= t (ringpress/topk.h).
//
// Contract: exact; compares the bit patterns of |x| and |t| as uint32 (monotone for non-NaN
// floats), so no rounding is involved; t must be >= 0 (or -0) and not NaN. A NaN in x is selected
// at every threshold (its bit pattern exceeds every allowed t), as +-Inf is.
// Cost: 1 read of x (compact_isa.cc: vectors with no hit are skipped after one compare, the
// others compacted by a permute or compress); writes 8 bytes per selected element.
#include <algorithm>
#include <cmath>
#include <limits>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {
namespace internal {

namespace {

// Runs pass(begin, end, ip, vp, c) over chunks of [0, n), growing out so that each chunk has the
// room the compaction kernels need ((end - begin) + 1 past c).
template <class Pass>
void collect_chunks(std::size_t n, std::size_t expected, SparseVector* out, Pass pass) {
  constexpr std::size_t kChunk = 4096;  // capacity is checked once per chunk
  auto& I = out->indices;
  auto& V = out->values;
  std::size_t cap = std::max<std::size_t>(expected + expected / 4, kChunk) + kChunk + 1;
  cap = std::min(cap, n + 1);
  if (I.size() < cap) I.resize(cap);
  if (V.size() < cap) V.resize(cap);
  cap = std::min(I.size(), V.size());
  std::size_t c = 0;
  for (std::size_t base = 0; base < n; base += kChunk) {
    const std::size_t end = std::min(n, base + kChunk);
    if (cap - c < kChunk + 1) {
      cap = std::min(std::max(cap * 2, c + kChunk + 1), n + 1);
      I.resize(cap);
      V.resize(cap);
    }
    c = pass(base, end, I.data(), V.data(), c);
  }
  I.resize(c);
  V.resize(c);
}

}  // namespace

void collect_at_least(const float* x, std::size_t n, std::uint32_t tbits, std::size_t expected,
                      SparseVector* out) {
  collect_chunks(n, expected, out,
                 [&](std::size_t b, std::size_t e, std::uint32_t* ip, float* vp, std::size_t c) {
                   return compact_range_best(x, b, e, tbits, ip, vp, c);
                 });
}

void collect_at_least_accumulate(const float* g, float* r, std::size_t n, std::uint32_t tbits,
                                 std::size_t expected, SparseVector* out) {
  collect_chunks(n, expected, out,
                 [&](std::size_t b, std::size_t e, std::uint32_t* ip, float* vp, std::size_t c) {
                   return accumulate_range_best(g, r, b, e, tbits, ip, vp, c);
                 });
}

}  // namespace internal

void threshold_select(const float* x, std::size_t n, float t, SparseVector* out) {
  ScopedErrorContext ctx("topk.threshold");
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  RP_ENFORCE(n == 0 || x != nullptr, UsageError, "x is null");
  RP_ENFORCE_LE(n, std::size_t{std::numeric_limits<std::uint32_t>::max()}, UsageError,
                "indices are uint32");
  RP_ENFORCE(!std::isnan(t) && !(t < 0.0f), UsageError, "threshold must be >= 0, got ", t);
  const std::uint32_t tbits = internal::abs_bits(t);
  internal::collect_at_least(x, n, tbits, n / 64, out);
}

}  // namespace ringpress::topk

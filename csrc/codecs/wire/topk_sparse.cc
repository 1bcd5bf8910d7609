// Wire codec "topk" (id 6): each rank sends its k = min(n, ceil(ratio * n)) largest-magnitude
// entries: sampled threshold (the exact top-m for some k <= m <= ceil(k (1 + tolerance)), keyed by
// the encode seed) or, with sampled = false, exactly k (ties at the threshold to the lowest index;
// topk.h). +-Inf ranks above every number and NaN above +-Inf, so non-finite input is sent first
// (the sum is not finite there on every rank) and, with error feedback, leaves no residual.
// Payload, decode, error feedback: sparse_payload.h (u64 I | I bytes of delta-coded indices | m
// float32 values, or float16 with values = "fp16"). Schedule: allgather (allreduce_sparse.cc).
// Cost: selection ~1 pass over n (sampled; exact: 2 passes, radix select); payload ~m (bits per
// index delta / 8 + 4) bytes (+ 2 instead of + 4 for fp16 values); decode+add m scattered adds.
#include <algorithm>
#include <cmath>

#include "ringpress/error.h"
#include "sparse_payload.h"

namespace ringpress::wire_codecs {
namespace {

class TopKSparse final : public SparseCodec {
 public:
  explicit TopKSparse(const CodecParams& p)
      : SparseCodec(p), ratio_(p.ratio), sampled_(p.sampled), tolerance_(p.tolerance) {}

 protected:
  bool sends_nonfinite_first() const override { return true; }
  std::size_t max_selected(std::size_t n) const override {
    const std::size_t k = k_of(ratio_, n);
    if (!sampled_) return k;
    return std::min<std::size_t>(
        n, static_cast<std::size_t>(std::ceil(static_cast<double>(k) * (1.0 + tolerance_))) + 1);
  }
  void select(const float* x, std::size_t n, std::uint64_t seed, topk::SparseVector* sv) override {
    const std::size_t k = k_of(ratio_, n);
    if (sampled_) {
      topk::SampledOptions so;
      so.tolerance = tolerance_;
      so.seed = seed;
      topk::topk_sampled(x, n, k, so, sv);
    } else {
      topk::topk_exact(x, n, k, sv);
    }
  }
  void select_accumulate(const float* g, float* r, std::size_t n, std::uint64_t seed,
                         topk::SparseVector* sv) override {
    if (!sampled_) return SparseCodec::select_accumulate(g, r, n, seed, sv);
    topk::SampledOptions so;
    so.tolerance = tolerance_;
    so.seed = seed;
    topk::topk_sampled_accumulate(g, r, n, k_of(ratio_, n), so, sv);
  }

 private:
  double ratio_;
  bool sampled_;
  double tolerance_;
};

}  // namespace

std::unique_ptr<Codec> make_topk(const CodecParams& p, DType, ReduceOp) {
  RP_ENFORCE(p.ratio > 0.0 && p.ratio <= 1.0, UsageError, "topk ratio must be in (0, 1], got ",
             p.ratio);
  RP_ENFORCE(p.tolerance >= 0.0 && p.tolerance <= 1.0, UsageError,
             "topk tolerance must be in [0, 1], got ", p.tolerance);
  SparseCodec::check_values(p);
  return std::make_unique<TopKSparse>(p);
}

}  // namespace ringpress::wire_codecs

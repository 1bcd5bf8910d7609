// Wire codec "threshold" (id 11): each rank sends every entry with |x| >= threshold (compared as
// float32 bit patterns, exact; threshold 0 sends everything; topk.h, threshold.cc). NaN and +-Inf
// are always sent (the sum is not finite there on every rank). How many entries go out depends on
// the data: up to n (the bound assumes n). Payload, decode, error feedback: sparse_payload.h (u64 I
// | I bytes of delta-coded indices | m float32 values, or float16 with values = "fp16"). Schedule:
// allgather (allreduce_sparse.cc). Cost: one pass over n; payload ~m (bits per index delta / 8 + 4)
// bytes (+ 2 for fp16 values); decode+add m scattered adds. With error feedback the residual grows
// until it crosses the threshold, so small entries are delayed, not lost.
#include <cmath>

#include "ringpress/error.h"
#include "sparse_payload.h"

namespace ringpress::wire_codecs {
namespace {

class ThresholdSparse final : public SparseCodec {
 public:
  explicit ThresholdSparse(const CodecParams& p)
      : SparseCodec(p), threshold_(static_cast<float>(p.threshold)) {}

 protected:
  std::size_t max_selected(std::size_t n) const override { return n; }
  bool sends_nonfinite_first() const override { return true; }
  void select(const float* x, std::size_t n, std::uint64_t, topk::SparseVector* sv) override {
    topk::threshold_select(x, n, threshold_, sv);
  }

 private:
  float threshold_;
};

}  // namespace

std::unique_ptr<Codec> make_threshold(const CodecParams& p, DType, ReduceOp) {
  const float t = static_cast<float>(p.threshold);
  RP_ENFORCE(std::isfinite(t) && t >= 0.0f, UsageError,
             "threshold must be finite and >= 0 (as float32), got ", p.threshold);
  SparseCodec::check_values(p);
  return std::make_unique<ThresholdSparse>(p);
}

}  // namespace ringpress::wire_codecs

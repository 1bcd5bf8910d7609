// Wire codec "randomk" (id 10): each rank sends k = min(n, ceil(ratio * n)) entries at positions
// drawn uniformly without replacement from the encode seed (topk.h, randomk.cc: Floyd's algorithm,
// counter-based PRNG). In a collective the seed is the request's sequence number, so every rank
// sends the same positions. Values are not inspected (NaN and Inf are sent as they are, if drawn;
// with error feedback none stays in the residual, drawn or not: sparse_payload.h); the estimate is
// unbiased after scaling by n / k, which the caller applies if it wants one. Payload, decode, error
// feedback: sparse_payload.h (u64 I | I bytes of delta-coded indices | k float32 values, or float16
// with values = "fp16"). Schedule: allgather (allreduce_sparse.cc). Cost: k random bit operations
// on an n-bit bitmap, a scan of n / 8 bytes, k gathers; payload ~k (bits per index delta / 8 + 4)
// bytes (+ 2 for fp16 values); decode+add k scattered adds.
#include "ringpress/error.h"
#include "sparse_payload.h"

namespace ringpress::wire_codecs {
namespace {

class RandomKSparse final : public SparseCodec {
 public:
  explicit RandomKSparse(const CodecParams& p) : SparseCodec(p), ratio_(p.ratio) {}

 protected:
  std::size_t max_selected(std::size_t n) const override { return k_of(ratio_, n); }
  void select(const float* x, std::size_t n, std::uint64_t seed, topk::SparseVector* sv) override {
    topk::randomk(x, n, k_of(ratio_, n), seed, sv);
  }

 private:
  double ratio_;
};

}  // namespace

std::unique_ptr<Codec> make_randomk(const CodecParams& p, DType, ReduceOp) {
  RP_ENFORCE(p.ratio > 0.0 && p.ratio <= 1.0, UsageError, "randomk ratio must be in (0, 1], got ",
             p.ratio);
  SparseCodec::check_values(p);
  return std::make_unique<RandomKSparse>(p);
}

}  // namespace ringpress::wire_codecs

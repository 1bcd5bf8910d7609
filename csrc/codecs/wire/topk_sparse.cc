// Wire codec "topk" (id 6): each rank sends its k = ceil(ratio * n) largest-magnitude entries
// (sampled threshold, k <= m <= ceil(1.05 k), or exact: topk.h). Payload: u64 index-stream bytes
// B | B bytes of delta-coded indices (topk.h, "Index coding") | m float32 values. Schedule:
// allgather (allreduce_sparse.cc): every rank decodes every payload and adds it, in rank order.
// Cost: selection ~1 pass over n (sampled); payload ~m (bits per index delta / 8 + 4) bytes;
// decode+add m scattered adds. Error feedback: the sent entries leave the residual (r = x with
// them zeroed), an override of the generic helper that needs no decode pass.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "builtin.h"
#include "ringpress/error.h"
#include "ringpress/topk.h"

namespace ringpress::wire_codecs {
namespace {

class TopKSparse final : public Codec {
 public:
  explicit TopKSparse(const CodecParams& p) : ratio_(p.ratio), sampled_(p.sampled) {}

  std::size_t k_of(std::size_t n) const {
    return std::min<std::size_t>(
        n, static_cast<std::size_t>(std::ceil(ratio_ * static_cast<double>(n))));
  }
  std::size_t max_selected(std::size_t n) const {
    const std::size_t k = k_of(n);
    if (!sampled_) return k;
    topk::SampledOptions so;
    return std::min<std::size_t>(
        n, static_cast<std::size_t>(std::ceil(static_cast<double>(k) * (1.0 + so.tolerance))) + 1);
  }
  std::size_t bound(std::size_t count) const override {
    const std::size_t m = max_selected(count);
    return 8 + topk::indices_max_encoded_size(m) + m * sizeof(float);
  }
  std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t seed) override {
    select(static_cast<const float*>(src), count, seed);
    return write(count, out);
  }
  void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) override {
    auto* dense = static_cast<float*>(dst);
    if (!reduce && count) std::memset(dense, 0, count * sizeof(float));
    const auto* p = static_cast<const unsigned char*>(in);
    RP_ENFORCE(len >= 8, WireFormatError, "a sparse payload of ", len, " bytes");
    std::uint64_t ib = 0;
    std::memcpy(&ib, p, 8);
    RP_ENFORCE(ib <= len - 8, WireFormatError, "a sparse payload with an index block of ", ib,
               " bytes in ", len);
    const std::size_t k = topk::indices_decoded_count(p + 8, ib);
    RP_ENFORCE(k <= count && (len - 8 - ib) == k * sizeof(float), WireFormatError,
               "a sparse payload with ", k, " indices but ", len - 8 - ib, " value bytes");
    if (k == 0) return;
    idx_.resize(k);
    val_.resize(k);
    topk::decode_indices(p + 8, ib, count, idx_.data(), k);
    std::memcpy(val_.data(), p + 8 + ib, k * sizeof(float));
    topk::scatter_add(idx_.data(), val_.data(), k, dense, count);
  }
  std::size_t encode_feedback(float* x, float* r, std::size_t count, void* out, std::uint64_t seed,
                              bool keep) override {
    select(x, count, seed);
    const std::size_t bytes = write(count, out);
    // r = x - decode(out): x with the sent entries zeroed; keep: x = decode(out).
    if (r != x && count) std::memcpy(r, x, count * sizeof(float));
    for (std::uint32_t i : sv_.indices) r[i] = 0.0f;
    if (keep) {
      if (count) std::memset(x, 0, count * sizeof(float));
      for (std::size_t j = 0; j < sv_.size(); ++j) x[sv_.indices[j]] = sv_.values[j];
    }
    return bytes;
  }

 private:
  void select(const float* x, std::size_t n, std::uint64_t seed) {
    RP_ENFORCE(n <= 0xffffffffu, UsageError, "topk handles at most 2^32-1 elements, got ", n);
    const std::size_t k = k_of(n);
    if (sampled_) {
      topk::SampledOptions so;
      so.seed = seed;
      topk::topk_sampled(x, n, k, so, &sv_);
    } else {
      topk::topk_exact(x, n, k, &sv_);
    }
  }
  std::size_t write(std::size_t n, void* out) {
    auto* o = static_cast<unsigned char*>(out);
    const std::size_t k = sv_.size();
    const std::size_t ib =
        topk::encode_indices(sv_.indices.data(), k, n, o + 8, topk::indices_max_encoded_size(k));
    const std::uint64_t ib64 = ib;
    std::memcpy(o, &ib64, 8);
    if (k > 0) std::memcpy(o + 8 + ib, sv_.values.data(), k * sizeof(float));
    return 8 + ib + k * sizeof(float);
  }

  double ratio_;
  bool sampled_;
  topk::SparseVector sv_;
  std::vector<std::uint32_t> idx_;
  std::vector<float> val_;
};

}  // namespace

std::unique_ptr<Codec> make_topk(const CodecParams& p, DType, ReduceOp) {
  RP_ENFORCE(p.ratio > 0.0 && p.ratio <= 1.0, UsageError, "topk ratio must be in (0, 1], got ",
             p.ratio);
  return std::make_unique<TopKSparse>(p);
}

}  // namespace ringpress::wire_codecs

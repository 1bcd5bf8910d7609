// allreduce(): picks the algorithm by size (recursive doubling at or below the small-message
// threshold, the pipelined ring above it) and finishes avg with one division.
// Cost: that of the algorithm chosen (allreduce_small.cc, allreduce_ring.cc); avg adds one local
// pass and no communication. A fused request (allreduce_coalesced) carries a digest of its split
// in the header (split_digest): same cost, no extra message.
#include "ring.h"
#include "ringpress/hash.h"

namespace ringpress {

void check_compression(const CompressionOptions& c, DType dtype, ReduceOp op) {
  if (c.kind == WireCompression::kNone) return;
  if (c.kind == WireCompression::kAuto) {
    // Codecs that cannot apply to this dtype/op are simply not candidates (auto_select.h); the
    // parameters of the rest must be valid.
    for (const CodecInfo& info : codecs()) {
      if (info.make == nullptr || !(c.allow & (1u << info.id)) || !codec_accepts(info, dtype, op))
        continue;
      (void)make_codec(static_cast<WireCompression>(info.id), c, dtype, op);
    }
    return;
  }
  (void)make_codec(c.kind, c, dtype, op);  // the dtype rule and the parameters
}

std::uint64_t split_digest(const std::vector<std::size_t>& sizes) {
  std::vector<std::uint64_t> v(sizes.begin(), sizes.end());  // the same bytes on every host
  const std::uint64_t d = xxh3_64(v.data(), v.size() * sizeof(std::uint64_t));
  return d ? d : 1;
}

void allreduce(const OpContext& oc, const AllreduceOptions& o) {
  RP_ENFORCE(reduce_supported(o.dtype), UsageError, "allreduce does not support dtype ",
             dtype_name(o.dtype));
  RP_ENFORCE(o.data != nullptr || o.count == 0, UsageError, "allreduce of a null buffer");
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  const std::size_t small = o.small_bytes ? o.small_bytes : default_small_bytes();
  if (o.compression.kind != WireCompression::kNone) {
    const CodecInfo* info = find_codec(static_cast<int>(o.compression.kind));
    RP_ENFORCE(info != nullptr, UsageError, "allreduce: compression id ", int(o.compression.kind),
               " is not a registered codec");
    if (info->schedule == CodecSchedule::kAllgather) {
      allreduce_sparse(oc, o);
    } else {
      allreduce_ring_compressed(oc, o);
    }
    if (o.op == ReduceOp::kAvg && oc.ctx.size() > 1)
      scale_avg(o.dtype, o.data, o.count, oc.ctx.size());
    return;
  }
  AllreduceAlgo algo = o.algo;
  if (algo == AllreduceAlgo::kAuto) {
    algo = bytes <= small ? AllreduceAlgo::kRecursiveDoubling : AllreduceAlgo::kRing;
  }
  if (algo == AllreduceAlgo::kRecursiveDoubling) {
    allreduce_recursive_doubling(oc, o);
  } else {
    allreduce_ring(oc, o);
  }
  if (o.op == ReduceOp::kAvg && oc.ctx.size() > 1)
    scale_avg(o.dtype, o.data, o.count, oc.ctx.size());
}

}  // namespace ringpress

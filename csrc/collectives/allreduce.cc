// allreduce(): picks the algorithm by size (recursive doubling at or below the small-message
// threshold, the pipelined ring above it) and finishes avg with one division.
// Cost: that of the algorithm chosen (allreduce_small.cc, allreduce_ring.cc); avg adds one local
// pass and no communication.
#include "ring.h"

namespace ringpress {

void allreduce(const OpContext& oc, const AllreduceOptions& o) {
  RP_ENFORCE(reduce_supported(o.dtype), UsageError, "allreduce does not support dtype ",
             dtype_name(o.dtype));
  RP_ENFORCE(o.data != nullptr || o.count == 0, UsageError, "allreduce of a null buffer");
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  const std::size_t small = o.small_bytes ? o.small_bytes : default_small_bytes();
  if (o.compression.kind != WireCompression::kNone) {
    if (o.compression.kind == WireCompression::kTopK) {
      allreduce_sparse(oc, o);
    } else {
      allreduce_ring_compressed(oc, o);
    }
    if (o.op == ReduceOp::kAvg && oc.ctx.size() > 1) scale_avg(o.dtype, o.data, o.count, oc.ctx.size());
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
  if (o.op == ReduceOp::kAvg && oc.ctx.size() > 1) scale_avg(o.dtype, o.data, o.count, oc.ctx.size());
}

}  // namespace ringpress

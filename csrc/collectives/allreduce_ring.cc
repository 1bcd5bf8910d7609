// Ring allreduce: reduce-scatter then allgather over the pipelined ring (ring.h).
//
// Cost (P ranks, n bytes): 2(P-1) alpha + 2 (P-1)/P n beta + (P-1)/P n gamma. Bandwidth-optimal:
// each rank sends and receives 2(P-1)/P n bytes whatever P is; pipelining by segments overlaps
// the reduce of one segment with the transfer of the next. Chosen above the small-message
// threshold (allreduce.cc).
#include "ring.h"

namespace ringpress {

ring::Plan ring::allreduce_plan(const AllreduceOptions& o, int P) {
  Plan plan;
  plan.data = static_cast<unsigned char*>(o.data);
  even_blocks(o.count, P, &plan.off, &plan.len);
  plan.dtype = o.dtype;
  plan.op = o.op;
  plan.coll = o.split_digest ? CollKind::kAllreduceCoalesced : CollKind::kAllreduce;
  plan.total = o.split_digest ? o.split_digest : o.count;  // the header's count
  plan.segment_bytes = o.segment_bytes;
  return plan;
}

void allreduce_ring(const OpContext& oc, const AllreduceOptions& o) {
  ring::run(oc, ring::allreduce_plan(o, oc.ctx.size()));
}

}  // namespace ringpress

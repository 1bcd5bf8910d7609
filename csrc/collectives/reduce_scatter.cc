// Reduce-scatter: the reduce-scatter half of the pipelined ring (ring.h), or recursive halving
// (reduce_scatter_halving.cc) in a power-of-two group of 4+ ranks when the total is at most the
// halving threshold (RINGPRESS_HALVING_BYTES); either on a copy of the input (the input is left
// unchanged). At most the small-message threshold on several hosts with two or more ranks on
// some host: one leader per host (reduce_scatter_small_hier.cc).
//
// Cost: (P-1) alpha + (P-1)/P n beta + (P-1)/P n gamma, plus one local copy of n bytes; recursive
// halving: the same bytes in log2 P steps.
#include <cstring>

#include "group.h"
#include "ring.h"
#include "ringpress/buffer_pool.h"

namespace ringpress {

void reduce_scatter(const OpContext& oc, const ReduceScatterOptions& o) {
  const int P = oc.ctx.size();
  RP_ENFORCE(reduce_supported(o.dtype), UsageError, "reduce_scatter does not support dtype ",
             dtype_name(o.dtype));
  RP_ENFORCE_EQ(o.counts.size(), static_cast<std::size_t>(P), UsageError,
                "reduce_scatter needs one count per rank");
  ring::Plan plan;
  const std::size_t total = ring::count_blocks(o.counts, &plan.off, &plan.len);
  const std::size_t es = dtype_size(o.dtype);
  const std::size_t r = static_cast<std::size_t>(oc.ctx.rank());
  // out may be null where this rank's block is empty
  RP_ENFORCE((o.in != nullptr && (o.out != nullptr || o.counts[r] == 0)) || total == 0, UsageError,
             "reduce_scatter with a null buffer");
  if (use_small_leaders(oc.ctx, total * es, o.small_bytes)) {
    reduce_scatter_small_hierarchical(oc, o, plan.off, total);
    if (o.op == ReduceOp::kAvg && P > 1) scale_avg(o.dtype, o.out, o.counts[r], P);
    return;
  }
  const std::size_t my_off = plan.off[r];  // in_ring_order permutes plan.off
  std::shared_ptr<Buffer> work = Buffer::acquire(total * es);
  if (total > 0) std::memcpy(work->data(), o.in, total * es);
  // The total where all blocks are equal, else a digest of the counts (as allgather.cc).
  bool equal = true;
  for (auto c : o.counts) equal = equal && c == o.counts[0];
  const std::uint64_t hcount = o.header_count ? o.header_count
                               : equal        ? total
                                              : counts_digest(o.counts, o.op);
  if (use_doubling(oc.ctx, total * es, o.halving_bytes)) {  // block r ends on rank r
    std::vector<std::size_t> off = plan.off;
    off.push_back(total);
    reduce_scatter_halving(oc, work->data(), off, o.dtype, o.op, hcount);
  } else {
    plan.data = work->data();
    plan.dtype = o.dtype;
    plan.op = o.op;
    plan.coll = CollKind::kReduceScatter;
    plan.total = hcount;
    plan.segment_bytes = o.segment_bytes;
    plan.reduce_scatter = true;
    plan.allgather = false;
    in_ring_order(oc, &plan.off, &plan.len,
                  [&](const OpContext& ordered) { ring::run(ordered, plan); });
  }
  if (o.counts[r] > 0) std::memcpy(o.out, work->data() + my_off * es, o.counts[r] * es);
  if (o.op == ReduceOp::kAvg && P > 1) scale_avg(o.dtype, o.out, o.counts[r], P);
}

}  // namespace ringpress

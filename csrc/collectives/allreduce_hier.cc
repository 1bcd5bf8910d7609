// Hierarchical allreduce for jobs with several ranks per host (NCCL's idea, our code): the
// network carries each host's sum once, in L parallel rings, and compression applies only there.
//
// H hosts with L ranks each (Topology::uniform(); allreduce.cc falls back to a host-ordered flat
// ring otherwise). Rank r is local rank l of its host.
//   1. intra-host reduce-scatter (ring.h, shared memory): the buffer in L blocks; local rank l
//      ends with block l summed over its host.
//   2. inter-host allreduce of block l among the H ranks of local index l (one per host, in host
//      order): allreduce_flat() on that group, so the plain ring or recursive doubling by size, or
//      the request's codec (compressed ring, sparse allgather). The L groups run in parallel on
//      disjoint pairs.
//   3. intra-host allgather of the L blocks (ring.h).
// Cost (n bytes; s = shared-memory, x = network alpha/beta; c = compression ratio):
//   2(L-1)(alpha_s + n/L beta_s) + (L-1)/L n gamma            phases 1 and 3
//   + 2(H-1)(alpha_x + n/(L H) beta_x / c) + (H-1)/H n/L gamma  phase 2, per rank
// Each host's network traffic is 2 (H-1)/H n / c, the same as one rank per host, where a flat ring
// over P = H L ranks sends 2 (P-1)/P n / c per rank, L times as much per host (and with cyclic
// placement every hop crosses the network). Phases run one after another (no overlap between
// them; each is pipelined by segments inside).
// Exactness: phases 1 and 3 are exact (fp32 partial sums, as the flat ring); a lossy codec rounds
// only in phase 2, once per inter-host hop, so its error grows with H, not with P. Every rank ends
// with the same bits (phase 2's guarantee within a group; phase 3 copies).
// Error feedback (o.residual, lossy codecs): this rank's residual is added to its input before
// phase 1 and cleared; phase 2 then keeps in the residual's block l the rounding of what this
// rank encoded (its host's partial sums). So, summed over ranks, outputs plus residuals equal
// inputs plus the residuals that came in (the flat ring's invariant, ring_codec.cc), with the
// feedback of a host's rounding held by the local rank that owns the block.
#include <cstring>

#include "group.h"
#include "ring.h"

namespace ringpress {

void allreduce_hierarchical(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const int H = t.hosts;
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  const int L = static_cast<int>(local.size());
  int l = 0;
  while (local[static_cast<std::size_t>(l)] != me) ++l;
  std::vector<int> cross(static_cast<std::size_t>(H));
  for (int h = 0; h < H; ++h) {
    const std::vector<int> on = t.ranks_on(h);
    RP_ENFORCE(static_cast<int>(on.size()) == L, InternalError,
               "hierarchical allreduce needs the same number of ranks on every host");
    cross[static_cast<std::size_t>(h)] = on[static_cast<std::size_t>(l)];
  }
  GroupView lv(ctx, local), xv(ctx, cross);
  const OpContext loc{lv, oc.seq, oc.deadline, oc.timeline, oc.stages};
  const OpContext xoc{xv, oc.seq, oc.deadline, oc.timeline, oc.stages};
  const std::size_t es = dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);

  const bool lossy = o.compression.kind != WireCompression::kNone &&
                     !find_codec(static_cast<int>(o.compression.kind))->exact;
  float* residual = lossy ? o.residual : nullptr;
  if (residual != nullptr && o.count > 0) {
    reduce_into(DType::kF32, ReduceOp::kSum, data, residual, o.count);
    std::memset(residual, 0, o.count * sizeof(float));
  }

  ring::Plan plan;
  plan.data = data;
  ring::even_blocks(o.count, L, &plan.off, &plan.len);
  plan.dtype = o.dtype;
  plan.op = o.op;
  plan.coll = o.split_digest ? CollKind::kAllreduceCoalesced : CollKind::kAllreduce;
  plan.total = o.split_digest ? o.split_digest : o.count;
  plan.segment_bytes = o.segment_bytes;
  plan.reduce_scatter = true;
  plan.allgather = false;
  ring::run(loc, plan);

  const std::size_t off = plan.off[static_cast<std::size_t>(l)];
  const std::size_t len = plan.len[static_cast<std::size_t>(l)];
  if (len > 0) {  // the same on every rank of the group (same count, same L)
    AllreduceOptions x = o;
    x.data = data + off * es;
    x.count = len;
    x.residual = residual != nullptr ? residual + off : nullptr;
    x.split_digest = 0;
    x.algo = AllreduceAlgo::kAuto;
    allreduce_flat(xoc, x);
  }

  plan.reduce_scatter = false;
  plan.allgather = true;
  ring::run(loc, plan);
}

}  // namespace ringpress

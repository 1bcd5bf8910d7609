// Allgather (equal or variable block sizes): the allgather half of the pipelined ring (ring.h),
// or recursive doubling (allgather_doubling.cc) in a power-of-two group of 4+ ranks when the total
// is at most the halving threshold (RINGPRESS_HALVING_BYTES); at most the small-message threshold
// on several hosts with two or more ranks on some host, one leader per host
// (allgather_small_hier.cc).
//
// Cost: (P-1) alpha + (N - n_r) beta where N is the total size and n_r this rank's block; the
// blocks travel in segments, each forwarded as soon as it arrives. Recursive doubling: the same
// bytes in log2 P steps. The caller's overlap work (AllgatherOptions::overlap) runs in the waits
// and adds no messages.
#include <cstring>

#include "group.h"
#include "ring.h"

namespace ringpress {

void allgather(const OpContext& oc, const AllgatherOptions& o) {
  const int P = oc.ctx.size();
  RP_ENFORCE_EQ(o.counts.size(), static_cast<std::size_t>(P), UsageError,
                "allgather needs one count per rank");
  ring::Plan plan;
  const std::size_t total = ring::count_blocks(o.counts, &plan.off, &plan.len);
  RP_ENFORCE(o.out != nullptr || total == 0, UsageError, "allgather into a null buffer");
  const std::size_t es = dtype_size(o.dtype);
  auto* out = static_cast<unsigned char*>(o.out);
  const std::size_t r = static_cast<std::size_t>(oc.ctx.rank());
  if (o.in != nullptr && o.in != out + plan.off[r] * es && plan.len[r] > 0) {
    std::memmove(out + plan.off[r] * es, o.in, plan.len[r] * es);
  }
  bool equal = true;
  for (auto c : o.counts) equal = equal && c == o.counts[0];
  const CollKind coll = equal ? CollKind::kAllgather : CollKind::kAllgatherv;
  if (use_small_leaders(oc.ctx, total * es, o.small_bytes)) {
    allgather_small_hierarchical(oc, o, plan.off, coll, total);
    return;
  }
  // Headers carry the total where every rank's block is the same size, else a digest of the
  // counts (group.h): lengths that agree message by message need not show two ranks that split
  // the same total differently.
  const std::uint64_t hcount = o.header_count ? o.header_count
                               : equal        ? total
                                              : counts_digest(o.counts, ReduceOp::kSum);
  if (use_doubling(oc.ctx, total * es, o.halving_bytes)) {
    std::vector<std::size_t> off = plan.off;
    off.push_back(total);
    allgather_doubling(oc, o, off, coll, hcount);
    return;
  }
  plan.data = out;
  plan.dtype = o.dtype;
  plan.coll = coll;
  plan.total = hcount;
  plan.segment_bytes = o.segment_bytes;
  plan.reduce_scatter = false;
  plan.allgather = true;
  plan.overlap = o.overlap ? &o.overlap : nullptr;
  in_ring_order(oc, &plan.off, &plan.len,
                [&](const OpContext& ordered) { ring::run(ordered, plan); });
}

}  // namespace ringpress

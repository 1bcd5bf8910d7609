// Small allgather for jobs with several ranks on some host (allgather.cc picks it at or below the
// small-message threshold), the shape of the small allreduce (allreduce_small_hier.cc):
//   1. every rank of a host but its leader (its lowest rank) sends its block to the leader over
//      shared memory, straight into its place in the leader's output;
//   2. the H leaders allgather their hosts' bundles (each host's blocks, ranks in rank order)
//      over the network (allgather.cc on the leaders: recursive doubling or the ring); where
//      hosts do not hold consecutive ranks the leader packs its bundle into a staging buffer and
//      unpacks the others into rank order;
//   3. the leader sends the whole output to each rank of its host.
// Cost (N bytes in all, n_r this rank's block, hosts of L ranks): alpha_s + n_r beta_s into the
// leader, the leaders' allgather of N over H ranks, alpha_s + N beta_s back; against (P - 1)
// alpha (the ring) or log2 P alpha (doubling) over all ranks. The network carries each byte once
// into each host either way; what this saves is messages and wake-ups: ranks that are not
// leaders send one message and wait for one. Hosts may hold different numbers of ranks.
#include <cstring>
#include <vector>

#include "group.h"
#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"

namespace ringpress {

void allgather_small_hierarchical(const OpContext& oc, const AllgatherOptions& o,
                                  const std::vector<std::size_t>& off, CollKind coll,
                                  std::size_t total) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  const std::size_t es = dtype_size(o.dtype);
  auto* out = static_cast<unsigned char*>(o.out);
  auto block = [&](int q) { return out + off[static_cast<std::size_t>(q)] * es; };
  auto len = [&](int q) { return o.counts[static_cast<std::size_t>(q)] * es; };
  // Every header carries the digest of the counts (group.h): rank-by-rank lengths alone would
  // not show two ranks that split the same total differently.
  const std::uint64_t digest = counts_digest(o.counts, ReduceOp::kSum);
  auto hdr = [&](std::uint32_t step, std::size_t bytes) {
    return ring::header(coll, o.dtype, ReduceOp::kSum, oc.seq, step, digest, bytes);
  };
  fault::hit("allgather_leaders");
  if (me != local.front()) {
    Ticket st = ctx.post_send(local.front(), hdr(0, len(me)), block(me));
    Ticket rt = ctx.post_recv(local.front(), ring::expect(hdr(1, total * es)), out);
    ctx.wait(st, oc.deadline);
    ctx.wait(rt, oc.deadline);
    return;
  }
  std::vector<Ticket> tk;
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_recv(local[i], ring::expect(hdr(0, len(local[i]))), block(local[i])));
  for (const Ticket& x : tk) ctx.wait(x, oc.deadline);

  const HostBundles b = host_bundles(t, o.counts);
  const auto h = static_cast<std::size_t>(t.host[static_cast<std::size_t>(me)]);
  std::shared_ptr<Buffer> staging;
  unsigned char* bundles = out;
  if (!b.identity) {
    staging = Buffer::acquire(total * es);
    bundles = staging->data();
    for (int q : local)
      std::memcpy(bundles + b.at[static_cast<std::size_t>(q)] * es, block(q), len(q));
  }
  AllgatherOptions x;
  x.in = bundles + b.off[h] * es;
  x.out = bundles;
  x.counts = b.counts;
  x.dtype = o.dtype;
  x.segment_bytes = o.segment_bytes;
  x.halving_bytes = o.halving_bytes;
  x.header_count = digest;
  GroupView lv(ctx, host_leaders(t));
  allgather(OpContext{lv, oc.seq, oc.deadline, oc.timeline, oc.stages}, x);
  if (!b.identity) {
    for (int q = 0; q < ctx.size(); ++q)
      std::memcpy(block(q), bundles + b.at[static_cast<std::size_t>(q)] * es, len(q));
  }

  tk.clear();
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_send(local[i], hdr(1, total * es), out));
  for (const Ticket& s : tk) ctx.wait(s, oc.deadline);
}

}  // namespace ringpress

// Small reduce_scatter for jobs with several ranks on some host (reduce_scatter.cc picks it at or
// below the small-message threshold), the shape of the small allreduce (allreduce_small_hier.cc):
//   1. every rank of a host but its leader (its lowest rank) sends its whole input to the leader
//      over shared memory; the leader reduces them in rank order (its own first);
//   2. the H leaders reduce_scatter their hosts' sums over the network (reduce_scatter.cc on the
//      leaders: recursive halving or the ring), each getting its host's bundle (its ranks'
//      blocks, in rank order; packed into that order first where hosts do not hold consecutive
//      ranks);
//   3. the leader sends each rank of its host its block.
// Cost (N bytes in all, n_r this rank's block, hosts of L ranks): alpha_s + N beta_s into the
// leader, (L - 1) N gamma there, the leaders' reduce_scatter of N over H ranks, alpha_s + n_r
// beta_s back; against (P - 1) alpha (the ring) or log2 P alpha (halving) over all ranks. Each
// block's sum is computed once (by one leader) and copied: every rank's block has one set of
// bits, whatever the summation order. avg: summed here, divided by P by reduce_scatter().
#include <cstring>
#include <vector>

#include "group.h"
#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"

namespace ringpress {

void reduce_scatter_small_hierarchical(const OpContext& oc, const ReduceScatterOptions& o,
                                       const std::vector<std::size_t>& off, std::size_t total) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  const std::size_t es = dtype_size(o.dtype);
  const std::size_t bytes = total * es;
  const ReduceOp op = o.op == ReduceOp::kAvg ? ReduceOp::kSum : o.op;
  auto len = [&](int q) { return o.counts[static_cast<std::size_t>(q)] * es; };
  // Every header carries the digest of the counts and the op (group.h): the leaders' own step
  // sums whatever the op, and lengths alone would not show a total split differently.
  const std::uint64_t digest = counts_digest(o.counts, o.op);
  auto hdr = [&](std::uint32_t step, std::size_t n) {
    return ring::header(CollKind::kReduceScatter, o.dtype, o.op, oc.seq, step, digest, n);
  };
  fault::hit("reduce_scatter_leaders");
  if (me != local.front()) {
    Ticket st = ctx.post_send(local.front(), hdr(0, bytes), o.in);
    Ticket rt = ctx.post_recv(local.front(), ring::expect(hdr(1, len(me))), o.out);
    ctx.wait(st, oc.deadline);
    ctx.wait(rt, oc.deadline);
    return;
  }
  const std::size_t L = local.size();
  std::shared_ptr<Buffer> work = Buffer::acquire(bytes);
  if (bytes > 0) std::memcpy(work->data(), o.in, bytes);
  if (L > 1) {
    std::shared_ptr<Buffer> tmp = Buffer::acquire((L - 1) * bytes);
    std::vector<Ticket> rt(L - 1);
    for (std::size_t i = 1; i < L; ++i)
      rt[i - 1] =
          ctx.post_recv(local[i], ring::expect(hdr(0, bytes)), tmp->data() + (i - 1) * bytes);
    for (std::size_t i = 1; i < L; ++i) {
      ctx.wait(rt[i - 1], oc.deadline);
      reduce_into(o.dtype, op, work->data(), tmp->data() + (i - 1) * bytes, total);
    }
  }

  const HostBundles b = host_bundles(t, o.counts);
  const auto h = static_cast<std::size_t>(t.host[static_cast<std::size_t>(me)]);
  std::shared_ptr<Buffer> packed;
  const unsigned char* bundles = work->data();
  if (!b.identity) {
    packed = Buffer::acquire(bytes);
    for (int q = 0; q < ctx.size(); ++q) {
      std::memcpy(packed->data() + b.at[static_cast<std::size_t>(q)] * es,
                  work->data() + off[static_cast<std::size_t>(q)] * es, len(q));
    }
    bundles = packed->data();
  }
  std::shared_ptr<Buffer> mine = Buffer::acquire(b.counts[h] * es);  // this host's bundle, summed
  ReduceScatterOptions x;
  x.in = bundles;
  x.out = mine->data();
  x.counts = b.counts;
  x.dtype = o.dtype;
  x.op = op;
  x.segment_bytes = o.segment_bytes;
  x.halving_bytes = o.halving_bytes;
  x.header_count = digest;
  GroupView lv(ctx, host_leaders(t));
  reduce_scatter(OpContext{lv, oc.seq, oc.deadline, oc.timeline, oc.stages}, x);

  auto at = [&](int q) {
    return mine->data() + (b.at[static_cast<std::size_t>(q)] - b.off[h]) * es;
  };
  std::vector<Ticket> st;
  for (std::size_t i = 1; i < L; ++i)
    st.push_back(ctx.post_send(local[i], hdr(1, len(local[i])), at(local[i])));
  if (len(me) > 0) std::memcpy(o.out, at(me), len(me));
  for (const Ticket& s : st) ctx.wait(s, oc.deadline);
}

}  // namespace ringpress

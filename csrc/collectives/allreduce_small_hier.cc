// Small-message allreduce for jobs with several ranks on some host (allreduce.cc picks it at or
// below the small-message threshold): a leader per host does the network's part.
//   1. every rank of a host but its leader (its lowest rank) sends its buffer to the leader over
//      shared memory; the leader combines them in rank order (its own first);
//   2. the H leaders run recursive doubling among themselves (allreduce_small.cc), over the
//      network;
//   3. the leader sends the result to each rank of its host.
// Cost (n bytes, host of L ranks, H hosts): 2 (alpha_s + n beta_s) + (L-1) n gamma at the leader
// + ceil(log2 H) (alpha_x + n beta_x + n gamma) (+ 2 network steps when H is not a power of two).
// Recursive doubling over all P = H L ranks takes log2 P rounds in which every rank exchanges,
// log2 H of them over the network (host order) or all of them (rank order, cyclic placement):
// P log2 P messages against H log2 H here on the network, and ranks that are not leaders do
// nothing between their send and the result (which matters where ranks share CPUs). Hosts may
// hold different numbers of ranks. Every rank ends with the leader's bits: the same everywhere.
#include <vector>

#include "group.h"
#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"

namespace ringpress {

void allreduce_small_hierarchical(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  const int leader = local.front();
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);
  const CollKind coll = o.split_digest ? CollKind::kAllreduceCoalesced : CollKind::kAllreduce;
  const std::uint64_t hcount = o.split_digest ? o.split_digest : o.count;
  auto hdr = [&](std::uint32_t step) {
    return ring::header(coll, o.dtype, o.op, oc.seq, step, hcount, bytes);
  };
  fault::hit("recursive_doubling");
  if (me != leader) {
    Ticket st = ctx.post_send(leader, hdr(0), data);
    Ticket rt = ctx.post_recv(leader, ring::expect(hdr(1)), data);
    ctx.wait(st, oc.deadline);
    ctx.wait(rt, oc.deadline);
    return;
  }
  const std::size_t L = local.size();
  if (L > 1) {
    std::shared_ptr<Buffer> tmp = Buffer::acquire((L - 1) * bytes);
    std::vector<Ticket> rt(L - 1);
    for (std::size_t i = 1; i < L; ++i)
      rt[i - 1] = ctx.post_recv(local[i], ring::expect(hdr(0)), tmp->data() + (i - 1) * bytes);
    for (std::size_t i = 1; i < L; ++i) {
      ctx.wait(rt[i - 1], oc.deadline);
      reduce_into(o.dtype, o.op, data, tmp->data() + (i - 1) * bytes, o.count);
    }
  }
  GroupView lv(ctx, host_leaders(t));
  allreduce_recursive_doubling(OpContext{lv, oc.seq, oc.deadline, oc.timeline, oc.stages}, o);
  std::vector<Ticket> st(L > 1 ? L - 1 : 0);
  for (std::size_t i = 1; i < L; ++i) st[i - 1] = ctx.post_send(local[i], hdr(1), data);
  for (const Ticket& tk : st) ctx.wait(tk, oc.deadline);
}

}  // namespace ringpress

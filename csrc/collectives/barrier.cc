// Barrier: the dissemination algorithm. Round k: send an empty message to r + 2^k, receive one
// from r - 2^k. Cost: ceil(log2 P) alpha. No rank leaves before every rank has entered.
// barrier() takes it where every host holds one rank (or there is one host); with several ranks
// on some host of several, a leader per host (barrier_hier.cc).
#include "group.h"
#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void barrier(const OpContext& oc) {
  if (multi_rank_hosts(oc.ctx)) {
    barrier_hierarchical(oc);
  } else {
    barrier_dissemination(oc);
  }
}

void barrier_dissemination(const OpContext& oc) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  std::uint32_t step = 0;
  for (int d = 1; d < P; d <<= 1, ++step) {
    fault::hit("barrier");
    MsgHeader h =
        ring::header(CollKind::kBarrier, DType::kBytes, ReduceOp::kSum, oc.seq, step, 0, 0);
    Ticket rt = ctx.post_recv((r - d + P) % P, ring::expect(h), nullptr);
    Ticket st = ctx.post_send((r + d) % P, h, nullptr);
    ctx.wait(rt, oc.deadline);
    ctx.wait(st, oc.deadline);
  }
}

}  // namespace ringpress

// Barrier for jobs with several ranks on some host (barrier.cc picks it): a leader per host (its
// lowest rank) waits for an empty message from each rank of its host over shared memory, the
// leaders run the dissemination barrier among themselves over the network, and each leader then
// releases its host's ranks with one more empty message.
// Cost: 2 alpha_s + ceil(log2 H) alpha_x on the critical path; the network carries H ceil(log2 H)
// messages instead of P ceil(log2 P), and ranks that are not leaders wait for one message instead
// of taking part in every round (which matters where ranks share CPUs). No rank leaves before
// every rank has entered: a leader hears from its whole host before its first network round, and
// releases it only after its last. Hosts may hold different numbers of ranks.
#include <vector>

#include "group.h"
#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void barrier_hierarchical(const OpContext& oc) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  auto hdr = [&](std::uint32_t step) {
    return ring::header(CollKind::kBarrier, DType::kBytes, ReduceOp::kSum, oc.seq, step, 0, 0);
  };
  fault::hit("barrier");
  if (me != local.front()) {
    Ticket st = ctx.post_send(local.front(), hdr(0), nullptr);
    Ticket rt = ctx.post_recv(local.front(), ring::expect(hdr(1)), nullptr);
    ctx.wait(st, oc.deadline);
    ctx.wait(rt, oc.deadline);
    return;
  }
  std::vector<Ticket> tk;
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_recv(local[i], ring::expect(hdr(0)), nullptr));
  for (const Ticket& x : tk) ctx.wait(x, oc.deadline);
  GroupView lv(ctx, host_leaders(t));
  barrier_dissemination(OpContext{lv, oc.seq, oc.deadline, oc.timeline, oc.stages});
  tk.clear();
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_send(local[i], hdr(1), nullptr));
  for (const Ticket& x : tk) ctx.wait(x, oc.deadline);
}

}  // namespace ringpress

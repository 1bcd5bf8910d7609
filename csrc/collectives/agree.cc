// Agreement exchange: opens every rooted collective (broadcast, gather, scatter; torch's reduce
// runs reduce_scatter + gather), so that ranks which disagree on the root, the dtype or the
// element count fail at that collective, on every rank, before any data moves.
//
// Why it is needed: in a rooted collective the data pattern depends on the root. Two ranks that
// each believe they are the root only send, and return normally with different data; ranks that
// each believe the other is the root wait for each other until the timeout; and the next
// collective would read the stray messages as its own. A header check alone (every message
// carries the root) sees the mismatch only on a rank that happens to receive such a message.
//
// The exchange: zero-length messages whose header carries the collective, the sequence number,
// the dtype, the root (redop byte) and the element count where all ranks share it, so every
// receive checks them (protocol.cc) with steps kAgreeStep + round.
//   round 0: rank r sends to both ring neighbours r+1 and r-1 and receives from both;
//   round k = 1 .. ceil(log2 P)-1: send to r + 2^k, receive from r - 2^k (dissemination), each
//   round sent only after the previous round's receives were checked.
// Soundness: if the ranks disagree, some ring edge joins two ranks that disagree, and both its
// ends see the mismatch in round 0. Rank q completes only after hearing (transitively) from every
// rank at distance d = q - s that is a sum of distinct 2^k, k >= 1, having checked round 0 first:
// that covers every even d, and of the two ends of an edge one is at an even distance from q. So
// no rank completes: the one that saw the mismatch aborts and every rank raises it at this
// collective (the abort reaches ranks blocked on another peer through the hang-up, failure.cc).
// The exchange pattern does not depend on the root, so it cannot deadlock on a disagreement.
// Cost: ceil(log2 P) alpha (zero-byte messages) before the collective's own messages; P = 2:
// one exchange with the peer.
//
// On several hosts with two or more ranks on some host (multi_rank_hosts, group.h), through one
// leader per host (each host's lowest rank), as the barrier does (barrier_hier.cc): every other
// rank of a host sends its header to the leader (step kAgreeStep + 0, shared memory), the leader
// checks them all, the leaders run the exchange above among themselves, and each leader then
// releases its host (kAgreeStep + 1), which its ranks check too. A rank that disagrees with its
// leader is seen by the leader before the leader's first network round; leaders that disagree
// are seen by the exchange; in either case no leader completes (the exchange's argument; a
// leader that aborted never sends its rounds), so no rank is released, and every rank raises at
// this collective. Cost: 2 alpha_s + ceil(log2 H) alpha_x; the network carries H ceil(log2 H)
// messages instead of P ceil(log2 P), and ranks that are not leaders wait for one message.
#include "group.h"
#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress::ring {
namespace {

void agree_through_leaders(const OpContext& oc, MsgHeader h) {
  Context& ctx = oc.ctx;
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  const std::vector<int> local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  auto at = [&](std::uint32_t step) {
    MsgHeader x = h;
    x.step = step;
    return x;
  };
  if (me != local.front()) {
    Ticket st = ctx.post_send(local.front(), at(kAgreeStep), nullptr);
    Ticket rt = ctx.post_recv(local.front(), expect(at(kAgreeStep + 1)), nullptr);
    ctx.wait(st, oc.deadline);
    ctx.wait(rt, oc.deadline);
    return;
  }
  std::vector<Ticket> tk;
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_recv(local[i], expect(at(kAgreeStep)), nullptr));
  for (const Ticket& x : tk) ctx.wait(x, oc.deadline);
  GroupView lv(ctx, host_leaders(t));
  agree(OpContext{lv, oc.seq, oc.deadline, oc.timeline, oc.stages}, static_cast<CollKind>(h.coll),
        static_cast<DType>(h.dtype), h.redop, h.count);
  tk.clear();
  for (std::size_t i = 1; i < local.size(); ++i)
    tk.push_back(ctx.post_send(local[i], at(kAgreeStep + 1), nullptr));
  for (const Ticket& x : tk) ctx.wait(x, oc.deadline);
}

}  // namespace

void agree(const OpContext& oc, CollKind coll, DType dtype, int root, std::uint64_t count) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  if (P == 1) return;
  const int r = ctx.rank();
  MsgHeader h = header(coll, dtype, ReduceOp::kSum, oc.seq, kAgreeStep, count, 0);
  h.redop = static_cast<std::uint8_t>(root);  // the root's low 8 bits, as in the data messages
  if (multi_rank_hosts(ctx)) {
    agree_through_leaders(oc, h);
    return;
  }
  const int right = (r + 1) % P;
  const int left = (r + P - 1) % P;
  {
    // Round 0, both directions (one message each way when the neighbours are the same rank).
    Ticket rl = ctx.post_recv(left, expect(h), nullptr);
    Ticket rr = right != left ? ctx.post_recv(right, expect(h), nullptr) : rl;
    Ticket sr = ctx.post_send(right, h, nullptr);
    Ticket sl = right != left ? ctx.post_send(left, h, nullptr) : sr;
    ctx.wait(rl, oc.deadline);
    ctx.wait(rr, oc.deadline);
    ctx.wait(sr, oc.deadline);
    ctx.wait(sl, oc.deadline);
  }
  std::uint32_t round = 1;
  for (int d = 2; d < P; d <<= 1, ++round) {
    h.step = kAgreeStep + round;
    Ticket rt = ctx.post_recv((r - d % P + P) % P, expect(h), nullptr);
    Ticket st = ctx.post_send((r + d) % P, h, nullptr);
    ctx.wait(rt, oc.deadline);
    ctx.wait(st, oc.deadline);
  }
}

}  // namespace ringpress::ring

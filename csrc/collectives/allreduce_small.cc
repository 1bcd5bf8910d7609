// Recursive-doubling allreduce, the latency-optimal choice for small messages.
//
// P a power of two: log2(P) rounds; in round k rank r exchanges its whole buffer with r XOR 2^k
// and combines. Otherwise (MPICH's fold): with p2 the largest power of two <= P and rem = P - p2,
// the first 2*rem ranks pair up (even sends to odd, odd combines) so p2 ranks run the doubling,
// then each odd rank returns the result to its even partner.
// Cost: floor(log2 P) (alpha + n beta + n gamma), plus 2 (alpha + n beta) (fold and unfold) when
// P is not a power of two. Every pair combines its operands in the same order (lower side first),
// so results are bit-identical on every rank.
#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"

namespace ringpress {

void allreduce_recursive_doubling(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  if (P == 1) return;
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);
  std::shared_ptr<Buffer> tmp = Buffer::acquire(bytes);
  std::uint32_t step = 0;
  const CollKind coll = o.split_digest ? CollKind::kAllreduceCoalesced : CollKind::kAllreduce;
  const std::uint64_t hcount = o.split_digest ? o.split_digest : o.count;
  auto hdr = [&](std::uint32_t s) {
    return ring::header(coll, o.dtype, o.op, oc.seq, s, hcount, bytes);
  };
  // Operands are combined lower-rank side first on both partners, so even the non-commutative
  // corners (min/max of +0 and -0, NaN payloads) give the same bits on every rank.
  auto exchange = [&](int peer, bool peer_is_lower, std::uint32_t s) {
    fault::hit("recursive_doubling");
    Ticket rt = ctx.post_recv(peer, ring::expect(hdr(s)), tmp->data());
    Ticket st = ctx.post_send(peer, hdr(s), data);
    ctx.wait(rt, oc.deadline);
    ctx.wait(st, oc.deadline);
    if (peer_is_lower) {
      reduce3(o.dtype, o.op, data, tmp->data(), data, o.count);
    } else {
      reduce_into(o.dtype, o.op, data, tmp->data(), o.count);
    }
  };

  int p2 = 1;
  while (p2 * 2 <= P) p2 *= 2;
  const int rem = P - p2;
  int newrank;
  // Fold: ranks < 2*rem pair up.
  if (r < 2 * rem) {
    if (r % 2 == 0) {
      Ticket st = ctx.post_send(r + 1, hdr(0), data);
      ctx.wait(st, oc.deadline);
      newrank = -1;
    } else {
      Ticket rt = ctx.post_recv(r - 1, ring::expect(hdr(0)), tmp->data());
      ctx.wait(rt, oc.deadline);
      reduce3(o.dtype, o.op, data, tmp->data(), data, o.count);  // even (lower) rank first
      newrank = r / 2;
    }
  } else {
    newrank = r - rem;
  }
  step = 1;
  if (newrank >= 0) {
    for (int mask = 1; mask < p2; mask <<= 1, ++step) {
      int newpeer = newrank ^ mask;
      int peer = newpeer < rem ? newpeer * 2 + 1 : newpeer + rem;
      exchange(peer, newpeer < newrank, step);
    }
  } else {
    for (int mask = 1; mask < p2; mask <<= 1) ++step;
  }
  // Unfold: odd ranks return the result to their even partner.
  if (r < 2 * rem) {
    if (r % 2 == 1) {
      Ticket st = ctx.post_send(r - 1, hdr(step), data);
      ctx.wait(st, oc.deadline);
    } else {
      Ticket rt = ctx.post_recv(r + 1, ring::expect(hdr(step)), data);
      ctx.wait(rt, oc.deadline);
    }
  }
}

}  // namespace ringpress

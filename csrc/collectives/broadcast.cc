// Broadcast: a binomial tree for small messages, a pipelined chain for large ones, both after the
// agreement exchange (agree.cc) that makes a root, dtype or count that differs between ranks a
// collective mismatch on every rank, before any data moves.
//
// Agreement: ceil(log2 P) alpha (zero-byte messages). Tree: ceil(log2 P) rounds, (alpha + n beta)
// each. Chain (ranks in ring order from the root, the message cut into segments that flow down
// the chain as they arrive): (P - 2 + n/s) (alpha + s beta) for segment size s: close to n beta
// for large n, whatever P. Tree and chain follow ring order (group.h): the chain crosses between
// hosts once per host.
#include "group.h"
#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void broadcast(const OpContext& oc, const BroadcastOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  RP_ENFORCE(o.root >= 0 && o.root < P, UsageError, "broadcast root ", o.root, " is not a rank of ",
             P);
  RP_ENFORCE(o.data != nullptr || o.count == 0, UsageError, "broadcast of a null buffer");
  if (P == 1) return;
  ring::agree(oc, CollKind::kBroadcast, o.dtype, o.root, o.count);
  const int r = ctx.rank();
  const std::size_t es = dtype_size(o.dtype);
  const std::size_t bytes = o.count * es;
  auto* data = static_cast<unsigned char*>(o.data);
  // Positions in ring order (host order where ranks share hosts: group.h), relative to the root's;
  // at(v) is the rank at relative position v. The tree's low levels and the chain's hops then stay
  // inside a host where they can.
  bool identity = true;
  const std::vector<int> order = ring_order(ctx, &identity);
  std::vector<int> pos(static_cast<std::size_t>(P));
  for (int i = 0; i < P; ++i) pos[static_cast<std::size_t>(order[static_cast<std::size_t>(i)])] = i;
  const int root_pos = pos[static_cast<std::size_t>(o.root)];
  const int vr = (pos[static_cast<std::size_t>(r)] - root_pos + P) % P;
  auto at = [&](int v) { return order[static_cast<std::size_t>((v + root_pos) % P)]; };
  auto hdr = [&](std::uint32_t step, std::size_t len) {
    MsgHeader h =
        ring::header(CollKind::kBroadcast, o.dtype, ReduceOp::kSum, oc.seq, step, o.count, len);
    h.redop = static_cast<std::uint8_t>(o.root);  // a root mismatch is a collective mismatch
    return h;
  };
  if (bytes <= default_small_bytes()) {
    // Binomial tree: receive from the parent, then send to children at decreasing distances.
    fault::hit("broadcast");
    int mask = 1;
    while (mask < P) {
      if (vr & mask) {
        const int parent = at(vr - mask);
        ctx.wait(ctx.post_recv(parent, ring::expect(hdr(0, bytes)), data), oc.deadline);
        break;
      }
      mask <<= 1;
    }
    std::vector<Ticket> sent;
    for (mask >>= 1; mask > 0; mask >>= 1) {
      if (vr + mask < P) sent.push_back(ctx.post_send(at(vr + mask), hdr(0, bytes), data));
    }
    for (auto& t : sent) ctx.wait(t, oc.deadline);
    return;
  }
  const std::size_t seg_bytes = o.segment_bytes ? o.segment_bytes : default_segment_bytes();
  const std::size_t seg = std::max<std::size_t>(es, seg_bytes / es * es);
  const int next = at(vr + 1);
  const int prev = at(vr + P - 1);
  const bool last = vr == P - 1;
  std::vector<Ticket> sent;
  std::uint32_t step = 0;
  for (std::size_t off = 0; off < bytes; off += seg, ++step) {
    fault::hit("broadcast");
    std::size_t len = std::min(seg, bytes - off);
    if (vr != 0)
      ctx.wait(ctx.post_recv(prev, ring::expect(hdr(step, len)), data + off), oc.deadline);
    if (!last) sent.push_back(ctx.post_send(next, hdr(step, len), data + off));
  }
  if (!sent.empty()) ctx.wait(sent.back(), oc.deadline);
}

}  // namespace ringpress

// Broadcast: a binomial tree for small messages, a pipelined chain for large ones, both after the
// agreement exchange (agree.cc) that makes a root, dtype or count that differs between ranks a
// collective mismatch on every rank, before any data moves.
//
// Agreement: ceil(log2 P) alpha (zero-byte messages). Tree: ceil(log2 P) rounds, (alpha + n beta)
// each. Chain (ranks in ring order from the root, the message cut into segments that flow down
// the chain as they arrive): (P - 2 + n/s) (alpha + s beta) for segment size s: close to n beta
// for large n, whatever P.
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
  const int vr = (r - o.root + P) % P;  // rank relative to the root
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
        int parent = ((vr - mask) + o.root) % P;
        ctx.wait(ctx.post_recv(parent, ring::expect(hdr(0, bytes)), data), oc.deadline);
        break;
      }
      mask <<= 1;
    }
    std::vector<Ticket> sent;
    for (mask >>= 1; mask > 0; mask >>= 1) {
      if (vr + mask < P)
        sent.push_back(ctx.post_send((vr + mask + o.root) % P, hdr(0, bytes), data));
    }
    for (auto& t : sent) ctx.wait(t, oc.deadline);
    return;
  }
  const std::size_t seg_bytes = o.segment_bytes ? o.segment_bytes : default_segment_bytes();
  const std::size_t seg = std::max<std::size_t>(es, seg_bytes / es * es);
  const int next = (r + 1) % P;
  const int prev = (r + P - 1) % P;
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

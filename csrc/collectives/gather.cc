// Gather: after the agreement exchange (agree.cc: a root or dtype that differs between ranks is a
// collective mismatch on every rank, before any data moves), every rank sends its block straight
// to the root, which posts all P-1 receives at once, each into that rank's own output buffer.
// Cost: ceil(log2 P) alpha (agreement) + alpha + n beta per sender; the root receives (P-1) n
// bytes (its link is the bottleneck, as for any gather). The root's own block is a copy. A size
// that differs from what the root expects is seen by the root only ("size mismatch"): the other
// ranks raise it through the abort, possibly at their next collective.
#include <cstring>

#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void gather(const OpContext& oc, const GatherOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE(o.root >= 0 && o.root < P, UsageError, "gather root ", o.root, " is not a rank of ",
             P);
  const std::size_t es = dtype_size(o.dtype);
  RP_ENFORCE(o.in != nullptr || o.count == 0, UsageError, "gather of a null buffer");
  if (r == o.root) {  // every check before the agreement: nothing is sent for a refused call
    RP_ENFORCE_EQ(o.outs.size(), static_cast<std::size_t>(P), UsageError,
                  "gather needs one output per rank on the root");
    for (const auto& [ptr, n] : o.outs) {
      RP_ENFORCE(ptr != nullptr || n == 0, UsageError, "gather into a null buffer on the root");
    }
    RP_ENFORCE_EQ(o.outs[r].second, o.count, UsageError,
                  "gather: the root's own output and input sizes differ");
  }
  if (P > 1) ring::agree(oc, CollKind::kGather, o.dtype, o.root, 0);
  fault::hit("gather");
  // count = this message's elements: the sender states what it sends, the root what it expects.
  auto hdr = [&](std::size_t count) {
    MsgHeader h =
        ring::header(CollKind::kGather, o.dtype, ReduceOp::kSum, oc.seq, 0, count, count * es);
    h.redop = static_cast<std::uint8_t>(o.root);  // a root mismatch is a collective mismatch
    return h;
  };
  if (r != o.root) {
    ctx.wait(ctx.post_send(o.root, hdr(o.count), o.in), oc.deadline);
    return;
  }
  std::vector<Ticket> recvs;
  for (int p = 0; p < P; ++p) {
    if (p != r)
      recvs.push_back(ctx.post_recv(p, ring::expect(hdr(o.outs[p].second)), o.outs[p].first));
  }
  if (o.count && o.outs[r].first != o.in) std::memmove(o.outs[r].first, o.in, o.count * es);
  for (auto& t : recvs) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

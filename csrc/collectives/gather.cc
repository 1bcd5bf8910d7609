// Gather: every rank sends its block straight to the root, which posts all P-1 receives at once.
// Cost: alpha + n beta per sender; the root receives (P-1) n bytes (its link is the bottleneck,
// as for any gather). The root's own block is a local copy.
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
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  RP_ENFORCE(o.in != nullptr || bytes == 0, UsageError, "gather of a null buffer");
  RP_ENFORCE(r != o.root || o.out != nullptr || bytes == 0, UsageError,
             "gather into a null buffer on the root");
  fault::hit("gather");
  MsgHeader h = ring::header(CollKind::kGather, o.dtype, ReduceOp::kSum, oc.seq, 0, o.count, bytes);
  h.redop = static_cast<std::uint8_t>(o.root);  // a root mismatch is a collective mismatch
  if (r != o.root) {
    ctx.wait(ctx.post_send(o.root, h, o.in), oc.deadline);
    return;
  }
  auto* out = static_cast<unsigned char*>(o.out);
  std::vector<Ticket> recvs;
  for (int p = 0; p < P; ++p) {
    if (p != r) recvs.push_back(ctx.post_recv(p, ring::expect(h), out + p * bytes));
  }
  if (bytes && out + r * bytes != o.in) std::memmove(out + r * bytes, o.in, bytes);
  for (auto& t : recvs) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

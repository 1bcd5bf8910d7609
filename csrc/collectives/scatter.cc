// Scatter: the root posts one send per rank at once; every other rank receives its block.
// Cost: alpha + n beta per receiver; the root sends (P-1) n bytes. The root's block is a copy.
#include <cstring>

#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void scatter(const OpContext& oc, const ScatterOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE(o.root >= 0 && o.root < P, UsageError, "scatter root ", o.root, " is not a rank of ",
             P);
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  RP_ENFORCE(o.out != nullptr || bytes == 0, UsageError, "scatter into a null buffer");
  RP_ENFORCE(r != o.root || o.in != nullptr || bytes == 0, UsageError,
             "scatter from a null buffer on the root");
  fault::hit("scatter");
  MsgHeader h =
      ring::header(CollKind::kScatter, o.dtype, ReduceOp::kSum, oc.seq, 0, o.count, bytes);
  h.redop = static_cast<std::uint8_t>(o.root);
  if (r != o.root) {
    ctx.wait(ctx.post_recv(o.root, ring::expect(h), o.out), oc.deadline);
    return;
  }
  const auto* in = static_cast<const unsigned char*>(o.in);
  std::vector<Ticket> sends;
  for (int p = 0; p < P; ++p) {
    if (p != r) sends.push_back(ctx.post_send(p, h, in + p * bytes));
  }
  if (bytes && in + r * bytes != o.out) std::memmove(o.out, in + r * bytes, bytes);
  for (auto& t : sends) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

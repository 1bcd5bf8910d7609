// Scatter: after the agreement exchange (agree.cc: a root or dtype that differs between ranks is
// a collective mismatch on every rank, before any data moves), the root posts one send per rank
// at once, each from that rank's own input buffer; every other rank receives its block. Cost:
// ceil(log2 P) alpha (agreement) + alpha + n beta per receiver; the root sends (P-1) n bytes. The
// root's block is a copy.
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
  const std::size_t es = dtype_size(o.dtype);
  RP_ENFORCE(o.out != nullptr || o.count == 0, UsageError, "scatter into a null buffer");
  if (r == o.root) {  // every check before the agreement: nothing is sent for a refused call
    RP_ENFORCE_EQ(o.ins.size(), static_cast<std::size_t>(P), UsageError,
                  "scatter needs one input per rank on the root");
    for (const auto& [ptr, n] : o.ins) {
      RP_ENFORCE(ptr != nullptr || n == 0, UsageError, "scatter from a null buffer on the root");
    }
    RP_ENFORCE_EQ(o.ins[r].second, o.count, UsageError,
                  "scatter: the root's own input and output sizes differ");
  }
  if (P > 1) ring::agree(oc, CollKind::kScatter, o.dtype, o.root, 0);
  fault::hit("scatter");
  auto hdr = [&](std::size_t count) {
    MsgHeader h =
        ring::header(CollKind::kScatter, o.dtype, ReduceOp::kSum, oc.seq, 0, count, count * es);
    h.redop = static_cast<std::uint8_t>(o.root);
    return h;
  };
  if (r != o.root) {
    ctx.wait(ctx.post_recv(o.root, ring::expect(hdr(o.count)), o.out), oc.deadline);
    return;
  }
  std::vector<Ticket> sends;
  for (int p = 0; p < P; ++p) {
    if (p != r) sends.push_back(ctx.post_send(p, hdr(o.ins[p].second), o.ins[p].first));
  }
  if (o.count && o.ins[r].first != o.out) std::memmove(o.out, o.ins[r].first, o.count * es);
  for (auto& t : sends) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

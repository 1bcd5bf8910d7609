// All-to-all with per-peer counts: every receive and send is posted at once (receives first, in
// order of distance so that the nearest exchanges start first), then all are awaited; the
// transport progresses them together. Cost per rank: (P-1) alpha + max(sent, received) beta
// when links are full duplex. The block to itself is a local copy.
#include <cstring>

#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void alltoall(const OpContext& oc, const AlltoallOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE_EQ(o.send_counts.size(), static_cast<std::size_t>(P), UsageError,
                "alltoall needs one send count per rank");
  RP_ENFORCE_EQ(o.recv_counts.size(), static_cast<std::size_t>(P), UsageError,
                "alltoall needs one receive count per rank");
  const std::size_t es = dtype_size(o.dtype);
  std::vector<std::size_t> soff(P + 1, 0), roff(P + 1, 0);
  for (int p = 0; p < P; ++p) {
    soff[p + 1] = soff[p] + o.send_counts[p];
    roff[p + 1] = roff[p] + o.recv_counts[p];
  }
  RP_ENFORCE(o.in != nullptr || soff[P] == 0, UsageError, "alltoall from a null buffer");
  RP_ENFORCE(o.out != nullptr || roff[P] == 0, UsageError, "alltoall into a null buffer");
  RP_ENFORCE_EQ(o.send_counts[r], o.recv_counts[r], UsageError,
                "alltoall: this rank's send and receive counts for itself differ");
  fault::hit("alltoall");
  const auto* in = static_cast<const unsigned char*>(o.in);
  auto* out = static_cast<unsigned char*>(o.out);
  std::vector<Ticket> tickets;
  tickets.reserve(2 * static_cast<std::size_t>(P));
  for (int k = 1; k < P; ++k) {
    const int from = (r - k + P) % P;
    // count = this block's elements: the sender states what it sends, the receiver what it
    // expects; a split mismatch is a collective mismatch.
    MsgHeader h = ring::header(CollKind::kAlltoall, o.dtype, ReduceOp::kSum, oc.seq, 0,
                               o.recv_counts[from], o.recv_counts[from] * es);
    tickets.push_back(ctx.post_recv(from, ring::expect(h), out + roff[from] * es));
  }
  for (int k = 1; k < P; ++k) {
    const int to = (r + k) % P;
    MsgHeader h = ring::header(CollKind::kAlltoall, o.dtype, ReduceOp::kSum, oc.seq, 0,
                               o.send_counts[to], o.send_counts[to] * es);
    tickets.push_back(ctx.post_send(to, h, in + soff[to] * es));
  }
  if (o.send_counts[r]) std::memmove(out + roff[r] * es, in + soff[r] * es, o.send_counts[r] * es);
  for (auto& t : tickets) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

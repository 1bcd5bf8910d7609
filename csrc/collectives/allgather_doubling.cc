// Recursive-doubling allgather (equal or variable block sizes) for P a power of two.
//
// Rank r starts with its own block r in place. Round j = 0..log2(P)-1 (mask = 2^j): r and
// r XOR mask exchange their windows, the 2^j consecutive blocks each holds (aligned at a multiple
// of 2^j), so after the round each holds the 2^(j+1) blocks of both. Blocks are laid out in rank
// order, so every window is one contiguous range: one message each way per round.
// Cost: log2(P) alpha + (N - n_r) beta, where N is the total size and n_r this rank's block (the
// ring's bytes, in log2 P steps instead of P-1). Rounds are not pipelined by segments, so it is
// chosen for totals up to the halving threshold (allgather.cc). The caller's overlap work
// (AllgatherOptions::overlap) runs in the waits, as in the ring.
#include "ring.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

void allgather_doubling(const OpContext& oc, const AllgatherOptions& o,
                        const std::vector<std::size_t>& off, CollKind coll, std::size_t total) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE(P >= 2 && (P & (P - 1)) == 0, InternalError,
             "recursive doubling needs a power-of-two group, got ", P, " ranks");
  const std::size_t es = dtype_size(o.dtype);
  auto* out = static_cast<unsigned char*>(o.out);
  // off[b]: first element of block b; off[P]: the end.
  auto bytes = [&](int lo, int hi) {
    return (off[static_cast<std::size_t>(hi)] - off[static_cast<std::size_t>(lo)]) * es;
  };
  bool overlap_left = static_cast<bool>(o.overlap);
  auto wait = [&](const Ticket& t) {
    while (overlap_left && !ctx.test(t)) overlap_left = o.overlap();
    ctx.wait(t, oc.deadline);
  };
  std::uint32_t step = 0;
  for (int mask = 1; mask < P; mask <<= 1, ++step) {
    fault::hit("doubling.allgather");
    const int lo = r & ~(mask - 1);  // this rank's window [lo, lo + mask)
    const int plo = lo ^ mask;       // the partner's
    StageScope ts(oc, Stage::kWait, "wait", bytes(plo, plo + mask));
    Ticket rt = ctx.post_recv(r ^ mask,
                              ring::expect(ring::header(coll, o.dtype, ReduceOp::kSum, oc.seq, step,
                                                        total, bytes(plo, plo + mask))),
                              out + off[static_cast<std::size_t>(plo)] * es);
    Ticket st = ctx.post_send(
        r ^ mask,
        ring::header(coll, o.dtype, ReduceOp::kSum, oc.seq, step, total, bytes(lo, lo + mask)),
        out + off[static_cast<std::size_t>(lo)] * es);
    wait(rt);
    wait(st);
  }
}

}  // namespace ringpress

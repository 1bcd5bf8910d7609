// Recursive-halving reduce-scatter (equal or variable block sizes) for P a power of two, on the
// caller's working copy of the input.
//
// Round j = 0..log2(P)-1 (mask = P / 2^(j+1), from the top bit down): r and r XOR mask split
// their current window of blocks in two contiguous halves; each sends the half the other keeps
// and reduces the half it keeps as it arrives (Expect::reduce). The half kept is the one holding
// block r, so after the last round rank r holds block r fully reduced (in rank order, as
// reduce_scatter's contract says). The partial sums of block b meet along a binary tree that
// ends on rank b.
// Cost: log2(P) alpha + (P-1)/P n beta + (P-1)/P n gamma for equal blocks: the ring's bytes in
// log2 P steps instead of P-1; the first round moves half the buffer between r and r XOR P/2.
// Rounds are not pipelined by segments, so it is chosen up to the halving threshold
// (reduce_scatter.cc).
#include "ring.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

void reduce_scatter_halving(const OpContext& oc, unsigned char* work,
                            const std::vector<std::size_t>& off, DType dtype, ReduceOp op,
                            std::size_t total) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE(P >= 2 && (P & (P - 1)) == 0, InternalError,
             "recursive halving needs a power-of-two group, got ", P, " ranks");
  const std::size_t es = dtype_size(dtype);
  // off[b]: first element of block b; off[P]: the end.
  auto bytes = [&](int lo, int hi) {
    return (off[static_cast<std::size_t>(hi)] - off[static_cast<std::size_t>(lo)]) * es;
  };
  auto hdr = [&](std::uint32_t step, std::size_t len) {
    return ring::header(CollKind::kReduceScatter, dtype, op, oc.seq, step, total, len);
  };
  int lo = 0, hi = P;
  std::uint32_t step = 0;
  for (int mask = P / 2; mask >= 1; mask >>= 1, ++step) {
    fault::hit("halving.reduce_scatter");
    const int mid = lo + (hi - lo) / 2;
    const bool lower = (r & mask) == 0;
    const int klo = lower ? lo : mid, khi = lower ? mid : hi;  // kept
    const int slo = lower ? mid : lo, shi = lower ? hi : mid;  // sent
    StageScope ts(oc, Stage::kReduce, "reduce", bytes(klo, khi));
    Expect e = ring::expect(hdr(step, bytes(klo, khi)));
    e.reduce = true;
    Ticket rt = ctx.post_recv(r ^ mask, e, work + off[static_cast<std::size_t>(klo)] * es);
    Ticket st = ctx.post_send(r ^ mask, hdr(step, bytes(slo, shi)),
                              work + off[static_cast<std::size_t>(slo)] * es);
    ctx.wait(rt, oc.deadline);
    ctx.wait(st, oc.deadline);
    lo = klo;
    hi = khi;
  }
}

}  // namespace ringpress

// Recursive-halving allreduce (Rabenseifner): a reduce-scatter by recursive halving, then an
// allgather by recursive doubling, for P a power of two (P >= 4; at P = 2 it is the ring).
//
// The buffer is split into P blocks (even_blocks). Reduce-scatter, round j = 0..L-1 (L = log2 P,
// mask = 2^j): rank r and r XOR mask split their current window of blocks in two contiguous
// halves; each sends the half the other keeps and reduces the half it keeps as it arrives (the
// transport reduces out of the shm ring or a staging buffer: Expect::reduce). The half kept is
// the lower one when bit j of r is 0. After L rounds rank r holds one block fully reduced: block
// bitreverse_L(r). The allgather replays the rounds backwards (mask 2^(L-1) down to 1), each
// rank sending its window and receiving the partner's, adjacent one, until both hold them all.
// Each block's final sum is computed on one rank only and copied to the others, so every rank
// ends with the same bits.
// The first reduce-scatter round (mask 1) moves the largest half, n/2, between r and r XOR 1:
// in host order (group.h) neighbours usually share a host, so the biggest exchange stays in
// memory and the ones that cross hosts are the smallest.
// Cost: 2 log2(P) alpha + 2 (P-1)/P n beta + (P-1)/P n gamma: the ring's bandwidth and reduce
// terms with log2 P instead of P-1 latency terms per phase. With an exact codec (lossless) every
// message is encoded and decoded: 2 (P-1)/P n of encode and of decode, bytes / ratio on the
// wire. Each round is one message each way, not pipelined by segments, so it is chosen for mid
// sizes (allreduce.cc) where the ring's 2(P-1) hops cost more than its pipelining gains.
#include <algorithm>

#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

void allreduce_halving(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  RP_ENFORCE(P >= 2 && (P & (P - 1)) == 0, InternalError,
             "recursive halving needs a power-of-two group, got ", P, " ranks");
  const std::size_t es = dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);
  std::vector<std::size_t> off, len;
  ring::even_blocks(o.count, P, &off, &len);
  off.push_back(o.count);  // off[P]: the end
  auto at = [&](int b) { return data + off[static_cast<std::size_t>(b)] * es; };
  auto count = [&](int lo, int hi) {
    return off[static_cast<std::size_t>(hi)] - off[static_cast<std::size_t>(lo)];
  };
  // An exact codec (lossless; allreduce.cc routes no other here) encodes each message and the
  // receiver decodes it into place, reducing in the reduce-scatter: the same operations in the
  // same order as the plain exchange, so the same bits.
  const WireCompression kind = o.compression.kind;
  std::unique_ptr<Codec> codec;
  std::shared_ptr<Buffer> sbuf, rbuf;
  if (kind != WireCompression::kNone) {
    codec = make_codec(kind, o.compression, o.dtype, o.op);
    const std::size_t cap = std::max<std::size_t>(codec->bound(o.count), 1);
    sbuf = Buffer::acquire(cap);
    rbuf = Buffer::acquire(cap);
  }
  const CollKind coll = o.split_digest ? CollKind::kAllreduceCoalesced : CollKind::kAllreduce;
  const std::uint64_t hcount = o.split_digest ? o.split_digest : o.count;
  auto hdr = [&](std::uint32_t step, std::size_t bytes, bool reduce) {
    const auto rop = reduce ? o.op : static_cast<ReduceOp>(0);
    return ring::header(coll, o.dtype, rop, oc.seq, step, hcount, bytes, kind);
  };
  // One round with `peer`: send blocks [slo, shi), receive blocks [rlo, rhi) (reduced into the
  // buffer when reduce), both posted at once.
  auto round = [&](int peer, std::uint32_t step, int slo, int shi, int rlo, int rhi, bool reduce) {
    const std::size_t ns = count(slo, shi), nr = count(rlo, rhi);
    if (!codec) {
      // The transport reduces while it receives, so a reduce-scatter round is the wait and the
      // reduce.
      StageScope ts(oc, reduce ? Stage::kReduce : Stage::kWait, reduce ? "reduce" : "wait",
                    nr * es);
      Expect e = ring::expect(hdr(step, nr * es, reduce));
      e.reduce = reduce;
      Ticket rt = ctx.post_recv(peer, e, at(rlo));
      Ticket st = ctx.post_send(peer, hdr(step, ns * es, reduce), at(slo));
      ctx.wait(rt, oc.deadline);
      ctx.wait(st, oc.deadline);
      return;
    }
    std::size_t received = 0;
    Expect e = ring::expect(hdr(step, 0, reduce));
    e.len_exact = false;
    e.capacity = codec->bound(nr);
    e.received = &received;
    Ticket rt = ctx.post_recv(peer, e, rbuf->data());
    std::size_t bytes;
    {
      StageScope ts(oc, Stage::kEncode, "encode", ns * es);
      bytes = codec->encode(at(slo), ns, sbuf->data(), oc.seq);
    }
    if (fault::hit("halving.encode") == fault::Action::kCorrupt)
      fault::corrupt(sbuf->data(), bytes);
    Ticket st = ctx.post_send(peer, hdr(step, bytes, reduce), sbuf->data());
    {
      StageScope ts(oc, Stage::kWait, "wait", nr * es);
      ctx.wait(rt, oc.deadline);
    }
    {
      StageScope ts(oc, Stage::kDecode, reduce ? "decode+reduce" : "decode", nr * es);
      // A payload that does not decode names its sender (by its rank in the job).
      ScopedErrorContext from_peer("", -1, ctx.global_rank(peer));
      codec->decode(rbuf->data(), received, at(rlo), nr, reduce);
    }
    ctx.wait(st, oc.deadline);  // sbuf is reused by the next round
  };

  int lo = 0, hi = P;  // this rank's window of blocks
  std::uint32_t step = 0;
  for (int mask = 1; mask < P; mask <<= 1, ++step) {
    fault::hit("halving.reduce_scatter");
    const int mid = lo + (hi - lo) / 2;
    if ((r & mask) == 0) {
      round(r ^ mask, step, mid, hi, lo, mid, true);
      hi = mid;
    } else {
      round(r ^ mask, step, lo, mid, mid, hi, true);
      lo = mid;
    }
  }
  for (int mask = P / 2; mask >= 1; mask >>= 1, ++step) {
    fault::hit("halving.allgather");
    const int width = hi - lo;
    // The partner's window is the other half of the window this pair split in the matching
    // reduce-scatter round: above ours when this bit of r is 0, below otherwise.
    const int plo = (r & mask) == 0 ? hi : lo - width;
    round(r ^ mask, step, lo, hi, plo, plo + width, false);
    lo = std::min(lo, plo);
    hi = lo + 2 * width;
  }
}

}  // namespace ringpress

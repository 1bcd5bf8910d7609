// Allgather schedule of a wire codec (CodecSchedule::kAllgather: the sparse codecs topk,
// randomk, threshold; nothing here knows which): every rank sends its whole encoded payload once.
//
//   1. residual += x (error feedback: what this rank dropped last time), if a residual is given,
//      and the codec encodes that (Codec::encode_feedback_add; sampled top-k folds the add into
//      its selection pass);
//   2. payload = codec.encode(x) (top-k: k = ceil(ratio * n) entries, sampled threshold within
//      +tolerance or exact; random-k: k positions from the request's seed, the same on every
//      rank; threshold: every |x| >= t); with feedback, codec.encode_feedback leaves in the
//      residual what the payload does not carry (the dropped mass is kept, not lost);
//   3. allgather the payload sizes, then allgatherv the payloads (no padding to the largest);
//   4. x = 0, then every payload is decoded (hostile input: WireFormatError naming the sender)
//      and added in rank order, so every rank computes the same sum in the same order. The
//      zeroing, and (rank 0) the add of this rank's own payload, which comes first, run during
//      step 3's waits (AllgatherOptions::overlap).
// Cost (top-k): select ~1 pass over n (sampled); allgather of sizes (P-1)(alpha + 8 beta);
// allgatherv (P-1) alpha + (P-1) m beta for payloads of m ~ k (bits per index delta / 8 + 4)
// bytes; then P scatter-adds of k entries and one zeroing pass over n, the zeroing (and one add)
// hidden behind the transfer where that takes longer. Against the ring's 2 (P-1)/P
// 4n bytes, the traffic shrinks by ~8n / (P m): for P = 2 and ratio 1%, about 80x.
#include <algorithm>
#include <cstring>
#include <vector>

#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

void allreduce_sparse(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const std::size_t n = o.count;
  auto* x = static_cast<float*>(o.data);
  std::unique_ptr<Codec> codec = make_codec(o.compression.kind, o.compression, o.dtype, o.op);
  const std::size_t cap = codec->bound(n);
  std::shared_ptr<Buffer> mine = Buffer::acquire(std::max<std::size_t>(cap, 1));
  std::size_t mine_len = 0;
  {
    StageScope ts(oc, Stage::kSelect, "select", n * 4);
    if (o.residual) {
      // x' = x + r accumulated in the residual itself, encoded from there, and the residual
      // becomes x' - decode(payload) in place (top-k: the sent entries zeroed, no further pass);
      // x is then free to receive the sum. Sampled top-k does the add in its collecting pass.
      mine_len = codec->encode_feedback_add(x, o.residual, n, mine->data(), oc.seq);
    } else {
      mine_len = codec->encode(x, n, mine->data(), oc.seq);
    }
  }
  if (fault::hit("sparse.encode") == fault::Action::kCorrupt)
    fault::corrupt(mine->data(), mine_len);
  if (P == 1) {
    codec->decode(mine->data(), mine_len, x, n, false);
    return;
  }
  // x is not read again, so it is zeroed while the allgathers wait on the network, a slice per
  // progress pass; then rank 0 adds its own payload there too, since it comes first in rank order.
  // (Not any rank of two: a + b and b + a have the same value but, for two NaNs, not the same
  // bits, x86 keeping the first operand's payload, so the ranks would disagree.)
  const int me = ctx.rank();
  const bool own_early = me == 0;
  std::size_t zeroed = 0;
  bool own_added = false;
  auto overlap = [&]() -> bool {
    constexpr std::size_t kSlice = std::size_t{1} << 18;  // floats: 1 MiB, ~60 us of memset
    if (zeroed < n) {
      const std::size_t m = std::min(kSlice, n - zeroed);
      std::memset(x + zeroed, 0, m * sizeof(float));
      zeroed += m;
      return zeroed < n || (own_early && !own_added);
    }
    if (own_early && !own_added) {
      own_added = true;
      codec->decode(mine->data(), mine_len, x, n, true);
    }
    return false;
  };
  // Sizes first (8 bytes each), so the payload allgather needs no padding.
  std::vector<std::uint64_t> sizes(static_cast<std::size_t>(P), 0);
  sizes[static_cast<std::size_t>(ctx.rank())] = mine_len;
  AllgatherOptions ga;
  ga.in = nullptr;
  ga.out = sizes.data();
  ga.counts.assign(static_cast<std::size_t>(P), 1);
  ga.dtype = DType::kU64;
  ga.overlap = overlap;
  allgather(oc, ga);
  std::vector<std::size_t> counts(sizes.begin(), sizes.end());
  std::size_t total = 0;
  for (int q = 0; q < P; ++q) {
    const std::size_t c = counts[static_cast<std::size_t>(q)];
    if (c > cap) {  // allocate only what the codec's bound for n elements justifies
      RP_THROW_CTX(WireFormatError, (ErrorContext{ctx.rank(), q, current_error_context().op}),
                   "rank ", q, " announced a ", wire_compression_name(o.compression.kind),
                   " payload of ", c, " bytes for ", n, " elements (at most ", cap, ")");
    }
    total += c;
  }
  std::shared_ptr<Buffer> all = Buffer::acquire(std::max<std::size_t>(total, 1));
  AllgatherOptions gv;
  gv.in = mine->data();
  gv.out = all->data();
  gv.counts = counts;
  gv.dtype = DType::kU8;
  gv.segment_bytes = o.segment_bytes;
  gv.overlap = overlap;
  allgather(oc, gv);
  StageScope ts(oc, Stage::kScatterAdd, "scatter_add", total);
  while (overlap()) {  // what the waits left of it
  }
  std::size_t off = 0;
  for (int q = 0; q < P; ++q) {
    const std::size_t c = counts[static_cast<std::size_t>(q)];
    if (q != me || !own_added) {
      ScopedErrorContext from_q(
          "", -1, ctx.global_rank(q));  // a payload that does not decode names its sender
      codec->decode(all->data() + off, c, x, n, true);
    }
    off += c;
  }
}

}  // namespace ringpress

// Hierarchical allreduce for jobs with several ranks per host (NCCL's idea, our code): the
// network carries each host's sum once, in L parallel rings, and compression applies only there.
//
// H hosts with L ranks each (Topology::uniform(); allreduce.cc falls back to a host-ordered flat
// ring otherwise). Rank r is local rank l of its host.
//   1. intra-host reduce-scatter (ring.h, shared memory): the buffer in L blocks; local rank l
//      ends with block l summed over its host.
//   2. inter-host allreduce of block l among the H ranks of local index l (one per host, in host
//      order): allreduce_flat() on that group, so the plain ring or recursive doubling by size, or
//      the request's codec (compressed ring, sparse allgather). The L groups run in parallel on
//      disjoint pairs.
//   3. intra-host allgather of the L blocks (ring.h).
// Cost (n bytes; s = shared-memory, x = network alpha/beta; c = compression ratio):
//   2(L-1)(alpha_s + n/L beta_s) + (L-1)/L n gamma            phases 1 and 3
//   + 2(H-1)(alpha_x + n/(L H) beta_x / c) + (H-1)/H n/L gamma  phase 2, per rank
// Each host's network traffic is 2 (H-1)/H n / c, the same as one rank per host, where a flat ring
// over P = H L ranks sends 2 (P-1)/P n / c per rank, L times as much per host (and with cyclic
// placement every hop crosses the network).
// Pipelining: a request of at least two chunks (chunk = L H segments, at most kMaxChunks chunks)
// whose phase 2 is a ring (plain, or a codec with the ring schedule: lossless and the quantizers)
// runs the three phases chunk by chunk, with the inter-host ring of chunk k beside the intra-host
// rings of chunks k+1 (reduce-scatter) and k-1 (allgather): the network and shared-memory pairs
// are disjoint, and one thread drives both rings (ring::Stepper, Context::wait_any). The cost is
// then about the slower of the two levels plus one chunk of the other, max(phase 2, phases 1 + 3)
// + (phases 1 + 3) / K, instead of their sum. Phase 2 is then always the ring (never recursive
// halving or doubling), for plain and lossless alike, so lossless keeps plain's bits. Smaller
// requests and top-k (an allgather schedule) run the three phases one after another.
// Exactness: phases 1 and 3 are exact (fp32 partial sums, as the flat ring); a lossy codec rounds
// only in phase 2, once per inter-host hop, so its error grows with H, not with P. Every rank ends
// with the same bits (phase 2's guarantee within a group; phase 3 copies).
// Error feedback (o.residual, lossy codecs): this rank's residual is added to its input before
// phase 1 and cleared; phase 2 then keeps in the residual's block l the rounding of what this
// rank encoded (its host's partial sums). So, summed over ranks, outputs plus residuals equal
// inputs plus the residuals that came in (the flat ring's invariant, ring_codec.cc), with the
// feedback of a host's rounding held by the local rank that owns the block.
#include <algorithm>
#include <cstring>
#include <memory>

#include "group.h"
#include "ring.h"
#include "ringpress/trace.h"

namespace ringpress {
namespace {

constexpr std::size_t kMaxChunks = 16;

// The intra-host reduce-scatter of count elements at data over the host's L ranks (block l ends
// at local rank l); with reduce_scatter/allgather swapped, the allgather of the same blocks.
ring::Plan intra_plan(const AllreduceOptions& o, unsigned char* data, std::size_t count, int L) {
  AllreduceOptions part = o;
  part.data = data;
  part.count = count;
  ring::Plan p = ring::allreduce_plan(part, L);
  p.total = o.split_digest ? o.split_digest : o.count;  // the whole request's, as in the header
  p.allgather = false;
  return p;
}

// The inter-host request for the block of count elements at element offset `at` of the buffer.
AllreduceOptions block_options(const AllreduceOptions& o, std::size_t at, std::size_t count,
                               float* residual) {
  AllreduceOptions x = o;
  x.data = static_cast<unsigned char*>(o.data) + at * dtype_size(o.dtype);
  x.count = count;
  x.residual = residual != nullptr ? residual + at : nullptr;
  // split_digest stays: a fused request's inter-host headers carry its digest too, so hosts that
  // fuse the same total differently disagree there (phases 1 and 3 never leave a host).
  x.algo = AllreduceAlgo::kAuto;
  return x;
}

// The pipelined schedule (see the header): K chunks; the intra-host pairs run RS(0), RS(1), AG(0),
// RS(2), AG(1), ..., RS(K-1), AG(K-2), AG(K-1), the inter-host pairs AR(0), ..., AR(K-1), one
// ring at a time on each level. AR(k) starts once RS(k)'s receives are done on this rank, AG(k)
// once AR(k)'s are. Every rank of a group runs that group's rings in the same order, so each
// pair's messages match in FIFO order.
void pipelined(const OpContext& loc, const OpContext& xoc, const OpContext& oc,
               const AllreduceOptions& o, float* residual, int l, int L, int H, std::size_t K) {
  const bool plain = o.compression.kind == WireCompression::kNone;
  const std::size_t es = dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);
  std::vector<std::size_t> coff, clen;
  ring::even_blocks(o.count, static_cast<int>(K), &coff, &clen);

  // Plans live here for the whole call: a Runner keeps a reference to its plan.
  std::vector<ring::Plan> rs(K), ar(K), ag(K);
  std::vector<AllreduceOptions> xo(K);  // block l of each chunk across hosts
  for (std::size_t k = 0; k < K; ++k) {
    ring::Plan& p = rs[k] = intra_plan(o, data + coff[k] * es, clen[k], L);
    ag[k] = p;
    ag[k].reduce_scatter = false;
    ag[k].allgather = true;
    const auto b = static_cast<std::size_t>(l);
    xo[k] = block_options(o, coff[k] + p.off[b], p.len[b], residual);
    if (plain) ar[k] = ring::allreduce_plan(xo[k], H);
  }
  struct LocalStep {
    bool allgather;
    std::size_t chunk;
  };
  std::vector<LocalStep> local;
  for (std::size_t k = 0; k < K; ++k) {
    local.push_back({false, k});
    if (k > 0) local.push_back({true, k - 1});
  }
  local.push_back({true, K - 1});

  std::vector<char> rs_done(K, 0), ar_done(K, 0);
  std::unique_ptr<ring::Stepper> lr, xr;  // the running ring of each level
  // Rings whose receives are done but whose last sends may still be in flight: the next ring on
  // their pairs has started (its messages queue behind theirs); they are finished at the end.
  std::vector<std::unique_ptr<ring::Stepper>> draining;
  std::size_t li = 0, xi = 0;            // next step to start on each level
  std::size_t l_chunk = 0, x_chunk = 0;  // the chunk of the running ring
  bool l_allgather = false;
  // Advances s; true (and s released) once its receives are done.
  auto advance = [&](std::unique_ptr<ring::Stepper>& s) {
    const bool finished = s->advance();
    if (!finished && !s->receives_done()) return false;
    if (!finished) draining.push_back(std::move(s));
    s.reset();
    return true;
  };
  for (;;) {
    bool moved = true;
    while (moved) {
      moved = false;
      if (!lr && li < local.size() && (!local[li].allgather || ar_done[local[li].chunk])) {
        l_chunk = local[li].chunk;
        l_allgather = local[li].allgather;
        lr = std::make_unique<ring::Runner>(loc, l_allgather ? ag[l_chunk] : rs[l_chunk]);
        ++li;
        moved = true;
      }
      if (lr && advance(lr)) {
        if (!l_allgather) rs_done[l_chunk] = 1;
        moved = true;
      }
      if (!xr && xi < K && rs_done[xi]) {
        x_chunk = xi++;
        if (plain) {
          xr = std::make_unique<ring::Runner>(xoc, ar[x_chunk]);
        } else {  // the codec's ring (its residual block, if any)
          xr = ring::compressed_runner(xoc, xo[x_chunk]);
        }
        moved = true;
      }
      if (xr && advance(xr)) {
        ar_done[x_chunk] = 1;
        moved = true;
      }
    }
    if (!lr && !xr && li == local.size() && xi == K) break;
    Ticket t[2];
    std::size_t n = 0;
    if (lr) t[n++] = lr->blocker();
    if (xr) t[n++] = xr->blocker();
    RP_ENFORCE(n > 0, InternalError, "hierarchical pipeline stalled (local step ", li, " of ",
               local.size(), ", chunk ", xi, " of ", K, ")");
    StageScope ts(oc, Stage::kWait, "wait", 0);
    (void)oc.ctx.wait_any(t, n, oc.deadline);
  }
  for (std::unique_ptr<ring::Stepper>& s : draining) {
    while (!s->advance()) oc.ctx.wait(s->blocker(), oc.deadline);
  }
}

}  // namespace

std::size_t hierarchical_chunks(std::size_t bytes, int L, int H, std::size_t segment_bytes) {
  const std::size_t seg = segment_bytes ? segment_bytes : default_segment_bytes();
  const std::size_t unit = static_cast<std::size_t>(L) * static_cast<std::size_t>(H) * seg;
  return std::min(kMaxChunks, bytes / std::max<std::size_t>(unit, 1));
}

void allreduce_hierarchical(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const HostLevels lev = host_levels(ctx);
  const int H = ctx.topology().hosts;
  const int L = static_cast<int>(lev.local.size());
  const int l = lev.l;
  GroupView lv(ctx, lev.local), xv(ctx, lev.cross);
  const OpContext loc{lv, oc.seq, oc.deadline, oc.timeline, oc.stages};
  const OpContext xoc{xv, oc.seq, oc.deadline, oc.timeline, oc.stages};
  const std::size_t es = dtype_size(o.dtype);
  auto* data = static_cast<unsigned char*>(o.data);

  const bool lossy = o.compression.kind != WireCompression::kNone &&
                     !find_codec(static_cast<int>(o.compression.kind))->exact;
  float* residual = lossy ? o.residual : nullptr;
  if (residual != nullptr && o.count > 0) {
    reduce_into(DType::kF32, ReduceOp::kSum, data, residual, o.count);
    std::memset(residual, 0, o.count * sizeof(float));
  }

  // Pipelined: plain requests and codecs with the ring schedule (not top-k's allgather).
  if (o.compression.kind == WireCompression::kNone ||
      find_codec(static_cast<int>(o.compression.kind))->schedule == CodecSchedule::kRing) {
    const std::size_t K = hierarchical_chunks(o.count * es, L, H, o.segment_bytes);
    if (K >= 2) {
      pipelined(loc, xoc, oc, o, residual, l, L, H, K);
      return;
    }
  }

  ring::Plan plan = intra_plan(o, data, o.count, L);
  ring::run(loc, plan);

  const std::size_t len = plan.len[static_cast<std::size_t>(l)];
  if (len > 0) {  // the same on every rank of the group (same count, same L)
    allreduce_flat(xoc, block_options(o, plan.off[static_cast<std::size_t>(l)], len, residual));
  }

  plan.reduce_scatter = false;
  plan.allgather = true;
  ring::run(loc, plan);
}

}  // namespace ringpress

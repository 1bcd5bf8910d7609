// allreduce(): picks the algorithm by topology and size, and finishes avg with one division.
//   * several hosts, the same number of ranks on each, some host with two or more: hierarchical
//     (allreduce_hier.cc): intra-host reduce-scatter, inter-host allreduce of each local rank's
//     block, intra-host allgather; compression only on the inter-host step.
//   * several hosts, some with two or more ranks, a small exact request: a leader per host
//     gathers, the leaders run recursive doubling, and scatter the result
//     (allreduce_small_hier.cc).
//   * otherwise one flat group (allreduce_flat): recursive doubling at or below the small-message
//     threshold; above it, in a power-of-two group of 4+ ranks, recursive halving up to the
//     halving threshold (allreduce_halving.cc); else the pipelined ring (or the request's codec
//     schedule); the last two over the ranks in host order (group.h), so a ring crosses between
//     hosts once per host.
// RINGPRESS_TOPOLOGY=flat keeps the rank-order ring of every size (no hierarchy, no reordering).
// Cost: that of the algorithm chosen (allreduce_small.cc, allreduce_ring.cc, ring_codec.cc,
// allreduce_sparse.cc, allreduce_hier.cc); avg adds one local pass and no communication. A fused
// request (allreduce_coalesced) carries a digest of its split in the header (split_digest): same
// cost, no extra message.
#include "group.h"
#include "ring.h"
#include "ringpress/hash.h"

namespace ringpress {

void check_compression(const CompressionOptions& c, DType dtype, ReduceOp op) {
  if (c.kind == WireCompression::kNone) return;
  if (c.kind == WireCompression::kAuto) {
    // Codecs that cannot apply to this dtype/op are simply not candidates (auto_select.h); the
    // parameters of the rest must be valid.
    for (const CodecInfo& info : codecs()) {
      if (info.make == nullptr || !(c.allow & (1u << info.id)) || !codec_accepts(info, dtype, op))
        continue;
      (void)make_codec(static_cast<WireCompression>(info.id), c, dtype, op);
    }
    return;
  }
  (void)make_codec(c.kind, c, dtype, op);  // the dtype rule and the parameters
}

std::uint64_t split_digest(const std::vector<std::size_t>& sizes) {
  std::vector<std::uint64_t> v(sizes.begin(), sizes.end());  // the same bytes on every host
  const std::uint64_t d = xxh3_64(v.data(), v.size() * sizeof(std::uint64_t));
  return d ? d : 1;
}

void allreduce_flat(const OpContext& oc, const AllreduceOptions& o) {
  const std::size_t bytes = o.count * dtype_size(o.dtype);
  const std::size_t small = o.small_bytes ? o.small_bytes : default_small_bytes();
  const std::size_t halving = o.halving_bytes ? o.halving_bytes : default_halving_bytes();
  const int P = oc.ctx.size();
  const bool pow2 = P >= 4 && (P & (P - 1)) == 0;
  const bool plain = o.compression.kind == WireCompression::kNone;
  const CodecInfo* codec = plain ? nullptr : find_codec(static_cast<int>(o.compression.kind));
  // Plain requests and exact codecs (lossless) share the choice below, so lossless gives plain's
  // bits at every size; a lossy codec always runs its codec's schedule (the ring or allgather).
  const bool exact = plain || codec->exact;
  AllreduceAlgo algo = exact ? o.algo : AllreduceAlgo::kRing;
  if (algo == AllreduceAlgo::kAuto) {
    algo = bytes <= small             ? AllreduceAlgo::kRecursiveDoubling
           : pow2 && bytes <= halving ? AllreduceAlgo::kHalving
                                      : AllreduceAlgo::kRing;
  }
  RP_ENFORCE(algo != AllreduceAlgo::kHalving || pow2, UsageError,
             "recursive halving needs a power-of-two group of 4 or more ranks, this one has ", P);
  if (algo == AllreduceAlgo::kRecursiveDoubling) {
    // log2 P rounds: the order of ranks matters little. Uncompressed also under lossless: a
    // small message gains nothing from a codec.
    allreduce_recursive_doubling(oc, o);
    return;
  }
  // The ring schedules and recursive halving, in host order when ranks share hosts (rank order
  // otherwise): the ring crosses between hosts once per host, and halving's largest exchange
  // (with r XOR 1) stays on a host.
  in_ring_order(oc, nullptr, nullptr, [&](const OpContext& ordered) {
    if (algo == AllreduceAlgo::kHalving) {
      allreduce_halving(ordered, o);  // with the exact codec, if any, on every message
    } else if (plain) {
      allreduce_ring(ordered, o);
    } else if (codec->schedule == CodecSchedule::kAllgather) {
      allreduce_sparse(ordered, o);
    } else {
      allreduce_ring_compressed(ordered, o);
    }
  });
}

bool use_hierarchy(const Context& ctx, const AllreduceOptions& o) {
  if (!two_level_allreduce(ctx, o.algo)) return false;
  // Small plain messages: recursive doubling's log2 P rounds beat three phases. Exact codecs
  // (lossless) choose as plain does, so their bits stay plain's.
  const std::size_t small = o.small_bytes ? o.small_bytes : default_small_bytes();
  const bool lossy = o.compression.kind != WireCompression::kNone &&
                     !find_codec(static_cast<int>(o.compression.kind))->exact;
  return lossy || o.count * dtype_size(o.dtype) > small;
}

// Small exact requests (plain, or an exact codec: uncompressed at this size, as allreduce_flat
// does) on several hosts, some holding two or more ranks: a leader per host
// (allreduce_small_hier.cc).
bool use_small_hierarchy(const Context& ctx, const AllreduceOptions& o) {
  if (o.algo != AllreduceAlgo::kAuto || !multi_rank_hosts(ctx)) return false;
  const bool exact = o.compression.kind == WireCompression::kNone ||
                     find_codec(static_cast<int>(o.compression.kind))->exact;
  const std::size_t small = o.small_bytes ? o.small_bytes : default_small_bytes();
  return exact && o.count * dtype_size(o.dtype) <= small;
}

void allreduce(const OpContext& oc, const AllreduceOptions& o) {
  RP_ENFORCE(reduce_supported(o.dtype), UsageError, "allreduce does not support dtype ",
             dtype_name(o.dtype));
  RP_ENFORCE(o.data != nullptr || o.count == 0, UsageError, "allreduce of a null buffer");
  if (o.compression.kind != WireCompression::kNone) {
    const CodecInfo* info = find_codec(static_cast<int>(o.compression.kind));
    RP_ENFORCE(info != nullptr, UsageError, "allreduce: compression id ", int(o.compression.kind),
               " is not a registered codec");
  }
  if (use_hierarchy(oc.ctx, o)) {
    allreduce_hierarchical(oc, o);
  } else if (use_small_hierarchy(oc.ctx, o)) {
    allreduce_small_hierarchical(oc, o);
  } else {
    allreduce_flat(oc, o);
  }
  if (o.op == ReduceOp::kAvg && oc.ctx.size() > 1)
    scale_avg(o.dtype, o.data, o.count, oc.ctx.size());
}

}  // namespace ringpress

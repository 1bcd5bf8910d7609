// Collectives: an options struct plus a free function each (gloo's shape). One algorithm per file
// in csrc/collectives/, each with its cost in its header comment and in docs/algorithms.md.
//
// Contract shared by all of them
//   * Every rank calls the same collectives in the same order with matching arguments; the
//     sequence number `seq` (the engine's request counter) and the arguments travel in every
//     message header, so a mismatch raises UsageError on the rank that sees it and aborts the job
//     (every rank raises).
//   * Buffers are raw memory owned by the caller; nothing is retained after return.
//   * Results are bit-identical on every rank (each element is combined in one fixed order and the
//     result is then copied, or the combination is commutative and computed identically).
//   * Errors and the deadline: see transport.h. The thread-local ScopedErrorContext names the op.
//
// Notation in costs: P ranks, n bytes, alpha = per-message latency, beta = seconds per byte.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "ringpress/codec.h"
#include "ringpress/dtype.h"
#include "ringpress/reduce.h"
#include "ringpress/transport.h"

namespace ringpress {

class Timeline;
struct StageTimes;

struct OpContext {
  Context& ctx;
  std::uint32_t seq = 0;
  Deadline deadline;
  Timeline* timeline = nullptr;  // stage events (engine.h), nullptr when off
  StageTimes* stages = nullptr;  // per-stage time and byte counters (engine.h), or nullptr
};

// kAuto: by topology and size (allreduce.cc); kRing, kRecursiveDoubling, kHalving: that flat
// algorithm (kHalving: plain and exact codecs only).
enum class AllreduceAlgo : std::uint8_t {
  kAuto = 0,
  kRing = 1,
  kRecursiveDoubling = 2,
  kHalving = 3,  // recursive halving + doubling (Rabenseifner); power-of-two groups
};

// Compression on the wire for allreduce: one of the registered wire codecs (ringpress/codec.h),
// carried by the schedule its row names: the compressed ring (ring_codec.cc: every segment
// encoded per hop; lossy codecs round once per hop) or the allgather of whole payloads
// (allreduce_sparse.cc: top-k). Lossy codecs need float32 and sum/avg. Every rank ends with the
// same bits: the owner of a block keeps the decoded value of what it sent, not its exact partial
// sum. Optional error feedback on each rank's own contribution through `residual`
// (AllreduceOptions). kAuto: the communicator picks one of `allow` per request (auto_select.h).
struct CompressionOptions : CodecParams {
  WireCompression kind = WireCompression::kNone;
  std::uint32_t allow = 1u << 1;  // auto: bit per codec id it may pick (default lossless)
};
// Raises UsageError when `c` cannot apply to dtype/op (lossy kinds: float32 with sum or avg).
void check_compression(const CompressionOptions& c, DType dtype, ReduceOp op);

// Default tuning (overridable per call; env RINGPRESS_SEGMENT_BYTES, RINGPRESS_SMALL_BYTES,
// RINGPRESS_HALVING_BYTES).
std::size_t default_segment_bytes();
std::size_t default_small_bytes();
std::size_t default_halving_bytes();

struct AllreduceOptions {
  void* data = nullptr;  // in place
  std::size_t count = 0;
  DType dtype = DType::kF32;
  ReduceOp op = ReduceOp::kSum;
  AllreduceAlgo algo = AllreduceAlgo::kAuto;
  std::size_t segment_bytes = 0;  // 0 = default
  std::size_t small_bytes = 0;    // auto: recursive doubling at or below this size; 0 = default
  // auto: recursive halving above small_bytes and up to this size where the group is a power of
  // two of 4 or more ranks; 0 = default
  std::size_t halving_bytes = 0;
  CompressionOptions compression;  // kNone: plain
  // Error feedback (the sparse codecs and the lossy ring kinds; none and lossless leave it
  // unchanged): `count` float32 values this rank failed to send last time; added to the input
  // before compressing and replaced by what this call drops (ring kinds: the rounding of this
  // rank's own contribution only, ring_codec.cc). nullptr: none.
  float* residual = nullptr;
  // Fused requests (the engine's allreduce_coalesced; plain, uncompressed): nonzero = a digest of
  // the tensor sizes, carried in the header's count with CollKind::kAllreduceCoalesced, so ranks
  // that split the same total differently raise a collective mismatch at the first message.
  std::uint64_t split_digest = 0;
};
// The digest allreduce_coalesced carries: XXH3-64 of the sizes (u64 little-endian), never 0.
std::uint64_t split_digest(const std::vector<std::size_t>& sizes);
void allreduce(const OpContext& oc, const AllreduceOptions& o);
// Ring allreduce with every segment compressed on the wire (ring_codec.cc): CodecSchedule::kRing.
void allreduce_ring_compressed(const OpContext& oc, const AllreduceOptions& o);
// Allgather of each rank's whole payload, decoded and summed in rank order (allreduce_sparse.cc):
// CodecSchedule::kAllgather (top-k).
void allreduce_sparse(const OpContext& oc, const AllreduceOptions& o);
// The three flat algorithms (allreduce_ring.cc, allreduce_small.cc, allreduce_halving.cc), the
// hierarchical one (allreduce_hier.cc: several ranks on each of several hosts), and
// allreduce_flat: one group, algorithm by size and codec, no avg division (allreduce.cc).
// allreduce() picks among them.
void allreduce_ring(const OpContext& oc, const AllreduceOptions& o);
void allreduce_recursive_doubling(const OpContext& oc, const AllreduceOptions& o);
void allreduce_halving(const OpContext& oc, const AllreduceOptions& o);
void allreduce_hierarchical(const OpContext& oc, const AllreduceOptions& o);
// Small messages with several ranks on some host: a leader per host (allreduce_small_hier.cc).
void allreduce_small_hierarchical(const OpContext& oc, const AllreduceOptions& o);
void allreduce_flat(const OpContext& oc, const AllreduceOptions& o);

struct BroadcastOptions {
  void* data = nullptr;
  std::size_t count = 0;
  DType dtype = DType::kU8;
  int root = 0;
  std::size_t segment_bytes = 0;
};
void broadcast(const OpContext& oc, const BroadcastOptions& o);

// Allgather with per-rank counts (equal counts is the common case). out holds sum(counts)
// elements, rank r's block at offset sum(counts[0:r]); `in` may alias rank r's block of out.
struct AllgatherOptions {
  const void* in = nullptr;
  void* out = nullptr;
  std::vector<std::size_t> counts;  // elements per rank (size P)
  DType dtype = DType::kU8;
  std::size_t segment_bytes = 0;
  // Optional local work overlapped with the transfer: called between progress passes while this
  // rank waits on the ring, one slice (tens of microseconds) per call, until it returns false
  // (and on every later call). allgather does not finish it: what is left is the caller's.
  std::function<bool()> overlap;
  // Recursive doubling where the group is a power of two of 4 or more ranks and the total is at
  // most this many bytes; 0 = default_halving_bytes().
  std::size_t halving_bytes = 0;
  // Through one leader per host where several hosts hold two or more ranks on some host and the
  // total is at most this many bytes; 0 = default_small_bytes().
  std::size_t small_bytes = 0;
  // The headers' count field: 0 = the total (internal: the leaders' step carries a digest).
  std::uint64_t header_count = 0;
};
// The ring (allgather.cc) or, by size and group (above), recursive doubling or the leaders.
void allgather(const OpContext& oc, const AllgatherOptions& o);
// A leader per host (allgather_small_hier.cc); off: the blocks' offsets in rank order.
void allgather_small_hierarchical(const OpContext& oc, const AllgatherOptions& o,
                                  const std::vector<std::size_t>& off, CollKind coll,
                                  std::size_t total);
// Recursive doubling over blocks laid out at off[0..P] (allgather_doubling.cc); P a power of two.
void allgather_doubling(const OpContext& oc, const AllgatherOptions& o,
                        const std::vector<std::size_t>& off, CollKind coll, std::size_t total);

// Reduce-scatter: in holds sum(counts) elements; rank r receives the reduction of block r
// (offset sum(counts[0:r])) in out (counts[r] elements). in is not modified.
struct ReduceScatterOptions {
  const void* in = nullptr;
  void* out = nullptr;
  std::vector<std::size_t> counts;
  DType dtype = DType::kF32;
  ReduceOp op = ReduceOp::kSum;
  std::size_t segment_bytes = 0;
  // Recursive halving where the group is a power of two of 4 or more ranks and the total is at
  // most this many bytes; 0 = default_halving_bytes().
  std::size_t halving_bytes = 0;
  // Through one leader per host, as AllgatherOptions::small_bytes.
  std::size_t small_bytes = 0;
  // The headers' count field: 0 = the total (internal: the leaders' step carries a digest).
  std::uint64_t header_count = 0;
};
// The ring (reduce_scatter.cc) or, by size and group (above), recursive halving or the leaders.
void reduce_scatter(const OpContext& oc, const ReduceScatterOptions& o);
// A leader per host (reduce_scatter_small_hier.cc): rank r's block of the reduction (no avg
// division) in o.out; off: the blocks' offsets in rank order.
void reduce_scatter_small_hierarchical(const OpContext& oc, const ReduceScatterOptions& o,
                                       const std::vector<std::size_t>& off, std::size_t total);
// Recursive halving on a working copy `work` of blocks laid out at off[0..P]
// (reduce_scatter_halving.cc); P a power of two. Rank r's block ends reduced in place.
void reduce_scatter_halving(const OpContext& oc, unsigned char* work,
                            const std::vector<std::size_t>& off, DType dtype, ReduceOp op,
                            std::size_t total);

void barrier(const OpContext& oc);
// The two barriers barrier() picks between (barrier.cc: dissemination over all ranks;
// barrier_hier.cc: a leader per host, for several ranks on some host of several).
void barrier_dissemination(const OpContext& oc);
void barrier_hierarchical(const OpContext& oc);

// Gather: rank r's `count` elements land in the root's outs[r] (a buffer and its element count,
// which must equal what rank r sends; other ranks pass no outs). Linear: every rank sends its
// block straight to the root. Cost: alpha + n beta per rank, (P-1) n beta into the root
// (gather.cc).
struct GatherOptions {
  const void* in = nullptr;
  std::size_t count = 0;                            // elements this rank sends
  std::vector<std::pair<void*, std::size_t>> outs;  // root: one per rank
  DType dtype = DType::kBytes;
  int root = 0;
};
void gather(const OpContext& oc, const GatherOptions& o);

// Scatter: the root's ins[r] (a buffer and its element count, which must equal what rank r
// expects) lands in rank r's `out` (`count` elements). Linear, the mirror of gather (scatter.cc).
struct ScatterOptions {
  std::vector<std::pair<const void*, std::size_t>> ins;  // root: one per rank
  void* out = nullptr;
  std::size_t count = 0;  // elements this rank receives
  DType dtype = DType::kBytes;
  int root = 0;
};
void scatter(const OpContext& oc, const ScatterOptions& o);

// All-to-all with per-peer counts: send_counts[p] elements of `in` (blocks in rank order) go to
// rank p, recv_counts[p] elements from rank p land in `out` (blocks in rank order). A sender's
// count and the receiver's expected count must agree (else UsageError naming both). Every
// exchange is posted at once: cost max(sent, received) beta + (P-1) alpha per rank
// (alltoall.cc).
struct AlltoallOptions {
  const void* in = nullptr;
  void* out = nullptr;
  std::vector<std::size_t> send_counts, recv_counts;  // size P each
  DType dtype = DType::kBytes;
};
void alltoall(const OpContext& oc, const AlltoallOptions& o);

// Point-to-point (p2p.cc): messages between one pair, matched in posting order per direction.
// A message carries (p2p sequence of that direction, tag, bytes); the receiver's must agree (a
// different tag or size is a UsageError naming both). Several sends and receives posted together
// (one PointToPoint list) progress concurrently, so a pair exchanging data both ways cannot
// deadlock on full socket buffers. Cost: alpha + n beta per message.
struct PeerMessage {
  bool send = true;
  int peer = 0;
  void* data = nullptr;  // send: read; receive: written
  std::size_t bytes = 0;
  std::uint32_t tag = 0;
  std::uint32_t seq = 0;  // this direction's p2p sequence number (the engine counts them)
};
void point_to_point(const OpContext& oc, const std::vector<PeerMessage>& msgs);

}  // namespace ringpress

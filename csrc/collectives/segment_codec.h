// Per-segment wire codecs for compressed collectives (internal header; kinds in collectives.h).
//
// Contract
//   encode(src, count, out)   writes at most bound(count) bytes, returns how many.
//   decode(in, len, dst, count, reduce)
//                             dst = decoded (reduce=false) or dst = dst + decoded (reduce=true,
//                             in float32 for the lossy kinds; the collective's op for lossless).
//                             The bytes come from the network: a payload that does not decode to
//                             exactly `count` elements raises WireFormatError, never overreads.
//   encode_feedback(x, r, count, out, keep)
//                             encode with error feedback (lossy float32 kinds): out = encode(x),
//                             r = x - decode(out) (what this encoding dropped); keep: x = decode(out)
//                             too. Returns the bytes written. Cost: the encode plus one decode and
//                             one subtract pass over the segment (L1/L2 resident).
// Cost per segment of n elements (one thread): lossless ~1-3 GB/s (zstd-1, shuffle),
// bf16/fp16 and int8 blockwise at memory speed (~10+ GB/s); decode+reduce one extra pass.
#pragma once

#include <cstddef>
#include <memory>

#include "ringpress/collectives.h"

namespace ringpress::ring {

class SegmentCodec {
 public:
  virtual ~SegmentCodec() = default;
  virtual std::size_t bound(std::size_t count) const = 0;
  virtual std::size_t encode(const void* src, std::size_t count, void* out) = 0;
  virtual void decode(const void* in, std::size_t len, void* dst, std::size_t count, bool reduce) = 0;
  virtual bool exact() const = 0;  // decode(encode(x)) == x bit for bit
  std::size_t encode_feedback(float* x, float* r, std::size_t count, void* out, bool keep);
};

// Top-k payload of rank `from` (allreduce_sparse.cc): decoded and added into dense (n elements).
// Hostile input: any inconsistency raises WireFormatError.
void add_sparse_payload(const unsigned char* p, std::size_t len, float* dense, std::size_t n, int from);

// Raises UsageError for a kind the dtype/op cannot use (lossy kinds: float32 with sum or avg).
std::unique_ptr<SegmentCodec> make_segment_codec(const CompressionOptions& c, DType dtype, ReduceOp op);

}  // namespace ringpress::ring

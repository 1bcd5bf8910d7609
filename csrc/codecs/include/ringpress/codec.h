// Wire codecs: one interface for every compression a collective can put on the wire, and one
// registry of them (c-blosc2's habit: a table of id, name, version, rule and factory). Every list
// of kinds (the collectives' checks, auto mode's model, the engine's stats, the Python bindings
// and ringpress.codec_names()) is derived from this table; nothing else enumerates codecs.
//
// Contract of a Codec (one instance per collective call; not thread-safe; payload layouts in
// docs/wire-format.md, "Wire codec payloads"):
//   bound(count)        the largest payload encode() can write for `count` elements.
//   encode(src, count, out, seed)
//                       writes at most bound(count) bytes, returns how many. `seed` keys any
//                       randomness (the request's sequence number: the same on every rank).
//   decode(in, len, dst, count, reduce)
//                       dst = decoded (reduce=false) or dst = dst (op) decoded (reduce=true:
//                       float32 sum for lossy codecs, the collective's op for exact ones). The
//                       bytes come from the network: a payload that does not decode to exactly
//                       `count` elements raises WireFormatError, never overreads, never allocates
//                       more than `count` elements justify.
//   encode_feedback(x, r, count, out, seed, keep)
//                       error feedback, the one helper every lossy path uses (the collectives and
//                       the compressed-tensor container, compressor.h): out = encode(x),
//                       r = x - decode(out) (what this encoding drops), and with keep, x =
//                       decode(out) too. The caller adds r to x before (x' = x + r), so over any
//                       number of steps outputs + residuals = inputs (up to fp32 rounding).
//                       Where decode(out) is not finite (NaN or Inf input, a bf16 overflow), r =
//                       0: that step's value is lost and r never carries NaN into later steps. r
//                       may be x itself (then keep must be false). A codec may override it with a
//                       faster equivalent (the sparse codecs: r = x with the sent entries
//                       replaced by what rounding their values dropped).
//   encode_feedback_add(g, r, count, out, seed)
//                       the step with the caller's add folded in: r += g (every element, one
//                       float add each), then encode_feedback(r, r, ...). The default does exactly
//                       that; a codec may fold the add into its own pass over r (sampled top-k:
//                       one read of memory less), with the same payload and the same r.
//   encode_feedback_fold(x, r, count, out, seed, keep)
//                       the same with the collective's add folded in: x += r (every element, one
//                       float add each; r is not x), then encode_feedback(x, r, ...). The
//                       default does exactly that; the blockwise int codecs do all of it, and
//                       encode_feedback itself, in their encode's one pass over memory.
//   decode_reduce_fold(in, len, dst, r, count)
//                       a float32-sum decode with the collective's add of r folded in: dst =
//                       (dst + r) + decoded, the same two float adds per element as
//                       reduce_into(dst, r) then decode(..., reduce=true), which the default
//                       does; the blockwise int codecs do it in their decode's one pass and say
//                       so with folds_decode_reduce() (a caller may otherwise do the add
//                       earlier, e.g. while it waits for `in`).
//   min_payload(count)  the smallest payload decode() can accept for `count` elements (default 0;
//                       fixed-size codecs: bound(count)). A reader of a hostile length field
//                       (the container) checks min_payload(n) <= len <= bound(n) before it
//                       allocates n elements.
//   word()              element size of the bulk of the payload (2 for 16-bit values, 4 for
//                       float32 values, else 1): a lossless stage on top shuffles by it.
//   bound(count) raises UsageError when `count` exceeds what the codec can carry (the sparse
//   codecs: 2^32 - 1 elements), so a caller learns it before allocating anything.
//
// Registry rules: ids are < kMaxCodecs (the auto mode's `allow` is a bit mask of ids) and travel
// in the message header's `codec` byte; id 0 is "none" (no codec: the plain algorithms). Builtin
// rows live in wire/registry.cc; register_codec() adds one at run time (a test's toy codec, a
// plugin): one file with the codec and its row.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringpress/dtype.h"
#include "ringpress/reduce.h"

namespace ringpress {

// Ids of the builtin codecs (the registry's rows). kAuto is not a codec: the communicator picks
// one of `allow` per request (auto_select.h).
enum class WireCompression : std::uint8_t {
  kNone = 0,
  kLossless = 1,
  kBF16 = 2,
  kFP16 = 3,
  kInt8 = 4,
  kInt4 = 5,
  kTopK = 6,
  kInt2 = 7,
  kSign = 8,
  kTernary = 9,
  kRandomK = 10,
  kThreshold = 11,
  kAuto = 0xff,
};
constexpr int kMaxCodecs = 32;

// Parameters every codec may read (each reads its own, listed in its row's `params` mask;
// the others are ignored). None travels in a collective's messages: every rank must pass the
// same values (the compressed-tensor container records the ones its codec reads).
struct CodecParams {
  std::string codec = "zstd";   // lossless: zstd | lz4
  int level = 1;                // lossless: compression level
  std::size_t block = 512;      // int8/int4/int2/sign/ternary: elements per scale, [1, 2^20]
  double ratio = 0.01;          // topk/randomk: fraction of elements each rank sends, (0, 1]
  bool sampled = true;          // topk: sampled threshold (k <= m <= ceil(k (1 + tolerance)))
                                // instead of exact selection
  double tolerance = 0.05;      // topk sampled: slack of the selection size, [0, 1]
  bool stochastic = false;      // int8/int4/int2: stochastic rounding keyed by the encode seed
  double threshold = 0.0;       // threshold: keep every |x| >= threshold (finite, >= 0)
  std::string values = "fp32";  // topk/randomk/threshold: kept values as fp32 | fp16
};

// Bits of CodecInfo::params: which CodecParams fields a codec reads.
enum CodecParam : std::uint32_t {
  kParamCodec = 1u << 0,
  kParamLevel = 1u << 1,
  kParamBlock = 1u << 2,
  kParamRatio = 1u << 3,
  kParamSampled = 1u << 4,
  kParamTolerance = 1u << 5,
  kParamStochastic = 1u << 6,
  kParamThreshold = 1u << 7,
  kParamValues = 1u << 8,
};
// The names of the bits set in `mask`, in bit order ("block", "ratio", ...).
std::vector<std::string> codec_param_names(std::uint32_t mask);

// One element of error feedback's residual: x - decoded, or +0 where decoded is not finite (NaN or
// Inf: that value is lost and r does not carry it on). The select is integer masking, which
// compilers vectorize (a float compare-and-branch here kept the loops scalar).
inline float feedback_residual(float x, float decoded) {
  const float e = x - decoded;
  std::uint32_t db, eb;
  std::memcpy(&db, &decoded, 4);
  std::memcpy(&eb, &e, 4);
  eb &= 0u - static_cast<std::uint32_t>((db & 0x7f800000u) != 0x7f800000u);
  float r;
  std::memcpy(&r, &eb, 4);
  return r;
}

class Codec {
 public:
  virtual ~Codec() = default;
  virtual std::size_t bound(std::size_t count) const = 0;
  virtual std::size_t encode(const void* src, std::size_t count, void* out, std::uint64_t seed) = 0;
  virtual void decode(const void* in, std::size_t len, void* dst, std::size_t count,
                      bool reduce) = 0;
  virtual std::size_t encode_feedback(float* x, float* r, std::size_t count, void* out,
                                      std::uint64_t seed, bool keep);
  virtual std::size_t encode_feedback_add(const float* g, float* r, std::size_t count, void* out,
                                          std::uint64_t seed);
  virtual std::size_t encode_feedback_fold(float* x, float* r, std::size_t count, void* out,
                                           std::uint64_t seed, bool keep);
  virtual void decode_reduce_fold(const void* in, std::size_t len, float* dst, const float* r,
                                  std::size_t count);
  virtual bool folds_decode_reduce() const { return false; }
  virtual std::size_t min_payload(std::size_t /*count*/) const { return 0; }
  virtual std::size_t word() const { return 1; }
};

// Which collective schedule carries a codec's payloads.
enum class CodecSchedule : std::uint8_t {
  kRing = 0,  // pipelined ring: every segment encoded per hop (ring_codec.cc)
  // Each rank's whole payload allgathered, decoded and summed (allreduce_sparse.cc): codecs
  // whose payloads cannot be summed hop by hop (sparse ones: a re-selection at every hop would
  // drop mass, and payload sizes differ per rank).
  kAllgather = 1,
};

// Which data a codec accepts.
enum class CodecDTypes : std::uint8_t {
  kReducible = 0,   // any reducible dtype, any op (exact codecs)
  kFloat32Sum = 1,  // float32 with sum or avg (lossy codecs)
};

struct CodecInfo {
  std::uint8_t id = 0;       // on the wire
  const char* name = "";     // "int8"
  std::uint8_t version = 1;  // payload layout version (docs/wire-format.md)
  bool exact = false;        // decode(encode(x)) == x bit for bit
  CodecDTypes dtypes = CodecDTypes::kFloat32Sum;
  CodecSchedule schedule = CodecSchedule::kRing;
  // Builds a codec for (params, dtype, op); raises UsageError on bad parameters. nullptr for none.
  std::unique_ptr<Codec> (*make)(const CodecParams&, DType, ReduceOp) = nullptr;
  const char* doc = "";
  std::uint32_t params = 0;  // CodecParam bits: the parameters the codec reads
};

// The registered codecs, ordered by id (none first).
std::vector<CodecInfo> codecs();
// The row of `id`, or nullptr.
const CodecInfo* find_codec(int id) noexcept;
// The row named `name`; UsageError listing the names otherwise ("auto" is not a codec).
const CodecInfo& codec_by_name(const std::string& name);
// Adds a row. UsageError if the id is >= kMaxCodecs or taken, or the name is taken.
void register_codec(const CodecInfo& info);

// Checks the dtype rule and the parameters (UsageError naming the codec), then builds it.
std::unique_ptr<Codec> make_codec(WireCompression id, const CodecParams& params, DType dtype,
                                  ReduceOp op);
// The dtype rule alone.
bool codec_accepts(const CodecInfo& info, DType dtype, ReduceOp op) noexcept;

// Names, for messages and bindings ("auto" for kAuto, "?" for an unknown id).
const char* wire_compression_name(WireCompression c) noexcept;
// A codec's id by name, or kAuto for "auto"; UsageError otherwise.
WireCompression wire_compression_from_name(const std::string& name);

}  // namespace ringpress

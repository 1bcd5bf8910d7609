// Lossless stage: blocked shuffle + lz4/zstd, per-block and per-plane choice by measurement.
// Format: docs/wire-format.md. Contract and cost: ringpress/lossless.h.
//
// Encoder per block (auto mode):
//   sparse block (most sampled bytes zero, e.g. top-k output): trial-code a 16 KiB sample
//     unshuffled and byte-shuffled, code the whole block with the winner;
//   dense block, zstd: byte-shuffle into a cache-resident scratch, estimate each plane's
//     compressibility from the byte entropy of a sample, code only the planes predicted to pay
//     (with zstd parameters suited to entropy-type redundancy), store the rest raw;
//   dense block, lz4: bit shuffle, code the whole block (lz4 has no entropy stage);
//   Anything whose coded size is not smaller than raw is stored raw.
// Threading: blocks are independent. With one thread they are written in place, in order; with
// several, each block is written to its own slot (offset i * (block_size + 4 * elemsize)) and the
// slots are compacted afterwards, so no block waits for another.
#include "ringpress/lossless.h"

#include <lz4.h>
#include <zstd.h>
#include <zstd_errors.h>

#include <climits>
#include <cmath>
#include <cstring>
#include <exception>
#include <string>
#include <vector>

#include "ringpress/error.h"
#include "ringpress/shuffle.h"
#include "ringpress/thread_pool.h"

namespace ringpress {
namespace {

using wire::BlockEntry;
using wire::Codec;
using wire::Coding;
using wire::Filter;

constexpr std::uint32_t kDefaultBlockBytes = 256 * 1024;
constexpr double kCodeEntropyBits = 7.5;  // code a plane predicted below this many bits/byte
constexpr double kSparseZeroFraction = 0.5;
constexpr std::size_t kSparseTrialBytes = 16 * 1024;
// zstd parameters for byte planes at fast levels (<= kPlaneProfileMaxLevel). A dense plane's
// redundancy is in its symbol distribution (e.g. float exponents), not in long repeats: a small
// hash table that stays in L1 and a long minimum match turn zstd into a nearly pure entropy
// coder. Measured on real fp32 gradient exponent planes: 3x faster than plain level 1 (1050 vs
// 360 MB/s) with a slightly better ratio (2.299 vs 2.282).
constexpr int kPlaneProfileMaxLevel = 3;
constexpr int kPlaneHashLog = 9;
constexpr int kPlaneMinMatch = 7;

// Decoded frames of at least this size are written with non-temporal stores by the unshuffle
// (ShuffleKernels::byte_unshuffle_planes, bit_unshuffle_stream): they exceed the caches, so
// ordinary stores would first read every output line from memory. Measured on fp32 gradients
// (one thread, Intel Xeon at AVX2, decoding into the same buffer again and again), streaming
// against ordinary stores: 64 MiB 3.13-3.48 against 2.61-2.72 GB/s, 32 MiB 3.63-3.95 against
// 3.00-3.43, 24 MiB 4.14-4.24 against 3.40-4.16, 16 MiB 4.36-4.44 against 4.43-4.49 (there the
// output still partly stays in cache). (The encoder's output is read again by the block
// checksum, so it keeps ordinary stores: shuffling into a scratch and streaming the raw planes
// out was slower, 1.6 against 1.8 GB/s.)
constexpr std::size_t kStreamOutputBytes = std::size_t{24} << 20;

enum class Profile { kDefault, kPlane };

// Per-thread codec contexts and scratch (pool workers are long-lived threads, so these persist
// and their pages stay faulted in between calls).
struct WorkerState {
  ZSTD_CCtx* cctx = nullptr;
  ZSTD_DCtx* dctx = nullptr;
  int cctx_level = INT_MIN;
  Profile cctx_profile = Profile::kDefault;
  std::vector<std::uint8_t> scratch;
  std::vector<std::uint8_t> scratch2;
  ~WorkerState() {
    ZSTD_freeCCtx(cctx);
    ZSTD_freeDCtx(dctx);
  }
  std::uint8_t* buf(std::size_t n) {
    if (scratch.size() < n) scratch.resize(n);
    return scratch.data();
  }
  std::uint8_t* buf2(std::size_t n) {
    if (scratch2.size() < n) scratch2.resize(n);
    return scratch2.data();
  }
  // Scratch of an unusually large block (a frame's block_size may be up to 2^30) is returned when
  // that block fails to decode: a hostile frame leaves no memory behind on a pool thread.
  void trim() {
    constexpr std::size_t kKeep = std::size_t(16) << 20;
    if (scratch.capacity() > kKeep) std::vector<std::uint8_t>().swap(scratch);
    if (scratch2.capacity() > kKeep) std::vector<std::uint8_t>().swap(scratch2);
  }
};
struct TrimOnError {
  WorkerState& ws;
  int unwinding = std::uncaught_exceptions();
  ~TrimOnError() {
    if (std::uncaught_exceptions() > unwinding) ws.trim();
  }
};
thread_local WorkerState t_worker;

// Codes n bytes into dst; returns the coded size, or 0 when it would not be smaller than cap.
std::size_t code(Codec c, int level, const std::uint8_t* src, std::size_t n, std::uint8_t* dst,
                 std::size_t cap, WorkerState& ws, Profile profile = Profile::kDefault) {
  if (cap == 0) return 0;
  if (c == Codec::kLz4) {
    return static_cast<std::size_t>(LZ4_compress_fast(reinterpret_cast<const char*>(src),
                                                      reinterpret_cast<char*>(dst), int(n),
                                                      int(cap), level < 1 ? 1 : level));
  }
  if (!ws.cctx) {
    ws.cctx = ZSTD_createCCtx();
    RP_ENFORCE(ws.cctx != nullptr, CodecError, "ZSTD_createCCtx failed (out of memory)");
  }
  if (level > kPlaneProfileMaxLevel) profile = Profile::kDefault;
  if (ws.cctx_level != level || ws.cctx_profile != profile) {
    ZSTD_CCtx_setParameter(ws.cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(ws.cctx, ZSTD_c_contentSizeFlag, 1);
    ZSTD_CCtx_setParameter(ws.cctx, ZSTD_c_checksumFlag, 0);
    const bool plane = profile == Profile::kPlane;
    ZSTD_CCtx_setParameter(ws.cctx, ZSTD_c_hashLog, plane ? kPlaneHashLog : 0);  // 0 = level's
    ZSTD_CCtx_setParameter(ws.cctx, ZSTD_c_minMatch, plane ? kPlaneMinMatch : 0);
    ws.cctx_level = level;
    ws.cctx_profile = profile;
  }
  const std::size_t r = ZSTD_compress2(ws.cctx, dst, cap, src, n);
  if (ZSTD_isError(r)) {
    if (ZSTD_getErrorCode(r) == ZSTD_error_dstSize_tooSmall) return 0;
    RP_THROW(CodecError, "zstd compression failed: ", ZSTD_getErrorName(r));
  }
  return r;
}

void decode_payload(Codec c, const std::uint8_t* src, std::size_t n, std::uint8_t* dst,
                    std::size_t expect, WorkerState& ws, std::uint64_t block) {
  if (c == Codec::kLz4) {
    RP_ENFORCE_LE(n, std::size_t(INT_MAX), WireFormatError, "block ", block,
                  ": lz4 payload too large");
    const int r = LZ4_decompress_safe(reinterpret_cast<const char*>(src),
                                      reinterpret_cast<char*>(dst), int(n), int(expect));
    RP_ENFORCE(r >= 0, WireFormatError, "block ", block, ": corrupt lz4 payload");
    RP_ENFORCE_EQ(std::size_t(r), expect, WireFormatError, "block ", block,
                  ": lz4 payload decoded to the wrong size");
    return;
  }
  // Only the standard frame format (RFC 8878): libzstd may be built with legacy-format support,
  // whose older decoders must never see network bytes.
  RP_ENFORCE(n >= 4 && src[0] == 0x28 && src[1] == 0xB5 && src[2] == 0x2F && src[3] == 0xFD,
             WireFormatError, "block ", block, ": payload is not a zstd frame (bad magic)");
  RP_ENFORCE_EQ(ZSTD_findFrameCompressedSize(src, n), n, WireFormatError, "block ", block,
                ": payload is not exactly one zstd frame");
  RP_ENFORCE_EQ(ZSTD_getFrameContentSize(src, n), (unsigned long long)expect, WireFormatError,
                "block ", block, ": zstd frame content size");
  if (!ws.dctx) {
    ws.dctx = ZSTD_createDCtx();
    RP_ENFORCE(ws.dctx != nullptr, CodecError, "ZSTD_createDCtx failed (out of memory)");
  }
  const std::size_t r = ZSTD_decompressDCtx(ws.dctx, dst, expect, src, n);
  if (ZSTD_isError(r)) {
    RP_THROW(WireFormatError, "block ", block, ": corrupt zstd payload (", ZSTD_getErrorName(r),
             ")");
  }
  RP_ENFORCE_EQ(r, expect, WireFormatError, "block ", block,
                ": zstd payload decoded to the wrong size");
}

// The sample the block predictors look at: kSampleChunks chunks of kSampleChunk bytes spread
// evenly over p[0, n) (all of it when n is at most kSampleBytes). fn(chunk, bytes) per chunk.
constexpr std::size_t kSampleChunks = 32, kSampleChunk = 128;
constexpr std::size_t kSampleBytes = kSampleChunks * kSampleChunk;

template <typename Fn>
void for_each_sample_chunk(const std::uint8_t* p, std::size_t n, Fn&& fn) {
  if (n <= kSampleBytes) {
    fn(p, n);
    return;
  }
  const std::size_t stride = (n - kSampleChunk) / (kSampleChunks - 1);
  // All chunks' lines requested first: a block not yet in cache then costs about one memory
  // latency instead of one per chunk.
  for (std::size_t c = 0; c < kSampleChunks; ++c)
    for (std::size_t j = 0; j < kSampleChunk; j += 64) __builtin_prefetch(p + c * stride + j);
  for (std::size_t c = 0; c < kSampleChunks; ++c) fn(p + c * stride, kSampleChunk);
}

// c * log2(c) for every count a sample can hold, so the entropy needs no log per symbol.
const double* count_log_table() {
  static const std::vector<double> table = [] {
    std::vector<double> t(kSampleBytes + 1, 0.0);
    for (std::size_t c = 2; c <= kSampleBytes; ++c) t[c] = double(c) * std::log2(double(c));
    return t;
  }();
  return table.data();
}

// Shannon entropy (bits/byte) of the sample of p[0, n):
// log2(N) - sum(c * log2 c) / N over the byte counts c of the N sampled bytes.
double sampled_entropy(const std::uint8_t* p, std::size_t n) {
  std::uint32_t hist[4][256] = {};
  std::size_t total = 0;
  for_each_sample_chunk(p, n, [&](const std::uint8_t* q, std::size_t m) {
    std::size_t j = 0;
    for (; j + 4 <= m; j += 4) {
      ++hist[0][q[j]];
      ++hist[1][q[j + 1]];
      ++hist[2][q[j + 2]];
      ++hist[3][q[j + 3]];
    }
    for (; j < m; ++j) ++hist[0][q[j]];
    total += m;
  });
  if (total == 0) return 0.0;
  const double* clog = count_log_table();
  double sum = 0.0;
  for (int v = 0; v < 256; ++v) sum += clog[hist[0][v] + hist[1][v] + hist[2][v] + hist[3][v]];
  return std::log2(double(total)) - sum / double(total);
}

// The fraction of zero bytes in the sample of p[0, n).
double sampled_zero_fraction(const std::uint8_t* p, std::size_t n) {
  std::size_t zeros = 0, total = 0;
  for_each_sample_chunk(p, n, [&](const std::uint8_t* q, std::size_t m) {
    for (std::size_t j = 0; j < m; ++j) zeros += q[j] == 0;
    total += m;
  });
  return total ? double(zeros) / double(total) : 0.0;
}

// Does coding this plane with zstd pay? Its sampled byte entropy predicts zstd's entropy stage.
bool plane_pays(const std::uint8_t* p, std::size_t n) {
  return sampled_entropy(p, n) < kCodeEntropyBits;
}

struct EncodeJob {
  const std::uint8_t* src;
  std::size_t nbytes;
  std::size_t s;
  const LosslessOptions* opts;
  std::uint32_t block_size;
};

// Whole-block coding with an optional filter; returns stored size (0 = did not pay).
std::size_t encode_whole(const EncodeJob& J, const std::uint8_t* blk, std::size_t len, Filter f,
                         std::uint8_t* out, WorkerState& ws) {
  const std::uint8_t* in = blk;
  if (f != Filter::kNone) {
    std::uint8_t* sc = ws.buf(len);
    if (f == Filter::kByteShuffle)
      byte_shuffle(blk, sc, len, J.s);
    else
      bit_shuffle(blk, sc, len, J.s);
    in = sc;
  }
  return code(J.opts->codec, J.opts->level, in, len, out, len - 1, ws);
}

// Encodes block i into out (capacity len + 4*s); fills entry. Returns stored size.
std::size_t encode_block(const EncodeJob& J, std::size_t i, std::uint8_t* out, BlockEntry& e,
                         WorkerState& ws) {
  const std::size_t start = i * std::size_t(J.block_size);
  const std::size_t len = std::min<std::size_t>(J.block_size, J.nbytes - start);
  const std::uint8_t* blk = J.src + start;
  const LosslessOptions& o = *J.opts;
  e = BlockEntry{};
  std::size_t stored = 0;

  auto set_raw = [&] {
    e.filter = Filter::kNone;
    e.coding = Coding::kRaw;
    e.plane_mask = 0;
    std::memcpy(out, blk, len);
    stored = len;
  };

  if (o.codec == Codec::kNone) {
    set_raw();
  } else if (o.shuffle == ShuffleMode::kNone || o.shuffle == ShuffleMode::kByte ||
             o.shuffle == ShuffleMode::kBit || J.s == 1) {
    Filter f = Filter::kNone;
    if (o.shuffle == ShuffleMode::kByte && J.s > 1) f = Filter::kByteShuffle;
    if (o.shuffle == ShuffleMode::kBit) f = Filter::kBitShuffle;
    const bool predict = o.shuffle == ShuffleMode::kAuto && o.codec == Codec::kZstd;
    if (predict && sampled_entropy(blk, len) >= kCodeEntropyBits) {
      set_raw();
    } else if ((stored = encode_whole(J, blk, len, f, out, ws)) != 0) {
      e.filter = f;
      e.coding = Coding::kWhole;
    } else {
      set_raw();
    }
  } else {  // auto, elemsize > 1
    if (sampled_zero_fraction(blk, len) >= kSparseZeroFraction || len % J.s != 0) {
      // Sparse (e.g. top-k output): unshuffled or byte-shuffled? Decide by a trial on a sample
      // of the block, then code the whole block once with the winner.
      Filter f = Filter::kNone;
      const std::size_t m = std::min<std::size_t>(len, kSparseTrialBytes) / J.s * J.s;
      if (len % J.s == 0 && m >= J.s) {
        const std::uint8_t* sample = blk + (len - m) / 2 / J.s * J.s;
        std::uint8_t* tmp = ws.buf2(2 * m + 64);
        const std::size_t a = encode_whole(J, sample, m, Filter::kNone, tmp, ws);
        const std::size_t b = encode_whole(J, sample, m, Filter::kByteShuffle, tmp + m + 32, ws);
        if (b && (!a || b < a)) f = Filter::kByteShuffle;
      }
      if ((stored = encode_whole(J, blk, len, f, out, ws)) != 0) {
        e.filter = f;
        e.coding = Coding::kWhole;
      } else {
        set_raw();
      }
    } else if (o.codec == Codec::kLz4) {
      // Dense, lz4: lz4 has no entropy stage, so byte planes gain little; bit planes turn the
      // nearly constant high exponent bits into long runs it can match.
      if ((stored = encode_whole(J, blk, len, Filter::kBitShuffle, out, ws)) != 0) {
        e.filter = Filter::kBitShuffle;
        e.coding = Coding::kWhole;
      } else {
        set_raw();
      }
    } else {
      // Dense, zstd: byte planes, code the ones that pay. The planes are shuffled straight into
      // the output (after the 4*s size table) so raw planes never move when no coded plane
      // precedes them (fp32 gradients: planes 0-2 raw, 3 coded); a coded plane is compressed into
      // scratch and copied back over its own source, which is safe because the write position
      // never passes the start of the next plane (coded size < plane size).
      const std::size_t plane = len / J.s;
      std::uint8_t* planes = out + 4 * J.s;
      byte_shuffle(blk, planes, len, J.s);
      std::uint16_t mask = 0;
      for (std::size_t b = 0; b < J.s; ++b) {
        if (plane_pays(planes + b * plane, plane)) mask |= std::uint16_t(1u << b);
      }
      std::uint16_t coded = 0;
      std::size_t pos = 4 * J.s;
      if (mask != 0) {
        std::uint8_t* sizes = out;
        std::uint8_t* tmp = ws.buf(plane);
        for (std::size_t b = 0; b < J.s; ++b) {
          const std::size_t rpos = 4 * J.s + b * plane;  // where plane b was shuffled to
          std::size_t n = 0;
          if (mask & (1u << b)) {
            n = code(o.codec, o.level, out + rpos, plane, tmp, plane - 1, ws, Profile::kPlane);
          }
          if (n) {
            coded |= std::uint16_t(1u << b);
            std::memcpy(out + pos, tmp, n);
          } else {
            if (pos != rpos) std::memmove(out + pos, out + rpos, plane);
            n = plane;
          }
          for (int k = 0; k < 4; ++k) sizes[4 * b + k] = std::uint8_t(n >> (8 * k));
          pos += n;
        }
      }
      if (coded == 0 || pos >= len) {
        set_raw();  // overwrites the shuffled planes with the original bytes
      } else {
        stored = pos;
        e.filter = Filter::kByteShuffle;
        e.coding = Coding::kPlanes;
        e.plane_mask = coded;
      }
    }
  }
  e.stored_size = static_cast<std::uint32_t>(stored);
  e.length = static_cast<std::uint32_t>(len);
  e.checksum = wire::checksum(out, stored);
  return stored;
}

// stream: the output is far larger than the caches (kStreamOutputBytes), so the byte unshuffle
// writes it with non-temporal stores (ShuffleKernels::byte_unshuffle_planes).
void decode_block(const wire::FrameInfo& info, const std::uint8_t* frame, std::size_t i,
                  std::uint8_t* dst, WorkerState& ws, bool stream) {
  const BlockEntry& e = info.blocks[i];
  const std::uint8_t* in = frame + e.offset;
  std::uint8_t* out = dst + i * std::size_t(info.block_size);
  const std::size_t len = e.length;
  const std::size_t s = info.elemsize;
  RP_ENFORCE_EQ(wire::checksum(in, e.stored_size), e.checksum, WireFormatError, "block ", i,
                ": checksum mismatch (corrupt data)");
  TrimOnError trim{ws};

  auto unfilter = [&](const std::uint8_t* from) {
    switch (e.filter) {
      case Filter::kNone:
        if (from != out) std::memcpy(out, from, len);
        break;
      case Filter::kByteShuffle:
        if (stream && len % s == 0 && s <= 16) {
          const std::uint8_t* planes[16];
          for (std::size_t b = 0; b < s; ++b) planes[b] = from + b * (len / s);
          byte_unshuffle_planes(planes, out, len / s, s, true);
        } else {
          byte_unshuffle(from, out, len, s);
        }
        break;
      case Filter::kBitShuffle:
        if (stream)
          bit_unshuffle_stream(from, out, len, s);
        else
          bit_unshuffle(from, out, len, s);
        break;
    }
  };

  switch (e.coding) {
    case Coding::kRaw: unfilter(in); return;
    case Coding::kWhole: {
      std::uint8_t* tmp = e.filter == Filter::kNone ? out : ws.buf(len);
      decode_payload(info.codec, in, e.stored_size, tmp, len, ws, i);
      unfilter(tmp);
      return;
    }
    case Coding::kPlanes: {
      // parse_frame: byte shuffle, len a multiple of s, s <= 16. Coded planes are decoded into
      // scratch; raw ones are unshuffled straight from the frame.
      const std::size_t plane = len / s;
      std::uint8_t* tmp = ws.buf(len);
      const std::uint8_t* planes[16];
      std::uint64_t pos = 4 * s;
      for (std::size_t b = 0; b < s; ++b) {
        const std::uint8_t* q = in + 4 * b;
        const std::uint32_t n = std::uint32_t(q[0]) | (std::uint32_t(q[1]) << 8) |
                                (std::uint32_t(q[2]) << 16) | (std::uint32_t(q[3]) << 24);
        RP_ENFORCE_LE(pos + n, std::uint64_t(e.stored_size), WireFormatError, "block ", i,
                      ": plane ", b, " runs past the block");
        if (e.plane_mask & (1u << b)) {
          decode_payload(info.codec, in + pos, n, tmp + b * plane, plane, ws, i);
          planes[b] = tmp + b * plane;
        } else {
          RP_ENFORCE_EQ(std::size_t(n), plane, WireFormatError, "block ", i, ": raw plane ", b,
                        " size");
          planes[b] = in + pos;
        }
        pos += n;
      }
      RP_ENFORCE_EQ(pos, std::uint64_t(e.stored_size), WireFormatError, "block ", i,
                    ": plane sizes do not add up to the stored size");
      byte_unshuffle_planes(planes, out, plane, s, stream);
      return;
    }
  }
}

}  // namespace

void check_lossless_options(const LosslessOptions& o, std::size_t s) {
  RP_ENFORCE(o.threads >= 1 && o.threads <= 1024, UsageError, "threads must be in [1, 1024], got ",
             o.threads);
  if (o.codec == Codec::kZstd) {
    const int lo = std::max(ZSTD_minCLevel(), -128);
    RP_ENFORCE(o.level >= lo && o.level <= ZSTD_maxCLevel(), UsageError, "zstd level must be in [",
               lo, ", ", ZSTD_maxCLevel(), "], got ", o.level);
  } else if (o.codec == Codec::kLz4) {
    RP_ENFORCE(o.level >= 1 && o.level <= 65, UsageError,
               "lz4 level (acceleration) must be in [1, 65], got ", o.level);
  }
  if (o.block_size) {
    RP_ENFORCE(o.block_size <= wire::kMaxBlockSize && o.block_size % s == 0, UsageError,
               "block_size must be a positive multiple of the element size (", s,
               ") and at most 2^30, got ", o.block_size);
  }
}

ShuffleMode shuffle_mode_from_name(const char* name) {
  const std::string n = name;
  if (n == "auto") return ShuffleMode::kAuto;
  if (n == "none") return ShuffleMode::kNone;
  if (n == "byte") return ShuffleMode::kByte;
  if (n == "bit") return ShuffleMode::kBit;
  RP_THROW(UsageError, "unknown shuffle '", n, "' (expected auto, none, byte or bit)");
}

wire::Codec codec_from_name(const char* name) {
  const std::string n = name;
  if (n == "zstd") return Codec::kZstd;
  if (n == "lz4") return Codec::kLz4;
  if (n == "none") return Codec::kNone;
  RP_THROW(UsageError, "unknown codec '", n, "' (expected zstd, lz4 or none)");
}

std::uint32_t default_block_size(std::size_t elemsize) noexcept {
  return static_cast<std::uint32_t>(kDefaultBlockBytes / elemsize * elemsize);
}

std::size_t encode_bound(std::size_t nbytes, int ndim, std::uint32_t block_size) noexcept {
  if (block_size == 0) block_size = kDefaultBlockBytes;
  const std::size_t nblocks = (nbytes + block_size - 1) / block_size;
  return std::size_t(wire::table_end(ndim, nblocks)) + nbytes + nblocks * 4 * 16;
}

std::size_t lossless_encode(const void* src, std::size_t nbytes, DType dtype,
                            const std::uint64_t* shape, int ndim, const LosslessOptions& opts,
                            void* dst, std::size_t dst_cap) {
  ScopedErrorContext ctx("compress");
  const std::size_t s = dtype_size(dtype);
  check_lossless_options(opts, s);
  RP_ENFORCE(ndim >= 0 && ndim <= wire::kMaxNdim, UsageError, "at most ", wire::kMaxNdim,
             " dimensions are supported, got ", ndim);
  unsigned __int128 elems = 1;
  for (int d = 0; d < ndim; ++d) elems *= shape[d];
  if (ndim > 0 || dtype != DType::kBytes) {
    RP_ENFORCE(elems * s == nbytes, UsageError,
               "shape x element size does not match the buffer size ", nbytes);
  }
  std::uint32_t bs = opts.block_size ? opts.block_size : default_block_size(s);
  const std::size_t nblocks = (nbytes + bs - 1) / bs;
  const std::size_t need = encode_bound(nbytes, ndim, bs);
  RP_ENFORCE_GE(dst_cap, need, UsageError, "output buffer too small (encode_bound)");

  wire::FrameInfo info;
  info.dtype = dtype;
  info.ndim = ndim;
  for (int d = 0; d < ndim; ++d) info.shape[d] = shape[d];
  info.codec = opts.codec;
  info.level = opts.codec == Codec::kNone ? 0 : static_cast<std::int8_t>(opts.level);
  info.elemsize = static_cast<std::uint32_t>(s);
  info.block_size = bs;
  info.nbytes = nbytes;
  info.blocks.resize(nblocks);

  auto* out = static_cast<std::uint8_t*>(dst);
  const std::size_t data_start = std::size_t(wire::table_end(ndim, nblocks));
  EncodeJob job{static_cast<const std::uint8_t*>(src), nbytes, s, &opts, bs};
  std::size_t pos = data_start;
  if (opts.threads <= 1 || nblocks <= 1) {
    for (std::size_t i = 0; i < nblocks; ++i)
      pos += encode_block(job, i, out + pos, info.blocks[i], t_worker);
  } else {
    const std::size_t slot = std::size_t(bs) + 4 * s;
    parallel_for(nblocks, opts.threads, [&](std::size_t i, int) {
      encode_block(job, i, out + data_start + i * slot, info.blocks[i], t_worker);
    });
    for (std::size_t i = 0; i < nblocks; ++i) {  // compact the slots (moves only downwards)
      const std::uint8_t* from = out + data_start + i * slot;
      if (from != out + pos) std::memmove(out + pos, from, info.blocks[i].stored_size);
      pos += info.blocks[i].stored_size;
    }
  }
  wire::write_header_and_table(out, info);
  return pos;
}

void lossless_decode(const void* frame, std::size_t len, void* dst, std::size_t dst_len,
                     int threads) {
  lossless_decode(wire::parse_frame(frame, len), frame, dst, dst_len, threads);
}

void lossless_decode(const wire::FrameInfo& info, const void* frame, void* dst, std::size_t dst_len,
                     int threads) {
  ScopedErrorContext ctx("decompress");
  RP_ENFORCE_EQ(std::uint64_t(dst_len), info.nbytes, UsageError,
                "output buffer size does not match the frame's decoded size");
  RP_ENFORCE(threads >= 1 && threads <= 1024, UsageError, "threads must be in [1, 1024], got ",
             threads);
  const auto* f = static_cast<const std::uint8_t*>(frame);
  auto* out = static_cast<std::uint8_t*>(dst);
  const bool stream = dst_len >= kStreamOutputBytes;
  parallel_for(info.blocks.size(), threads,
               [&](std::size_t i, int) { decode_block(info, f, i, out, t_worker, stream); });
}

}  // namespace ringpress

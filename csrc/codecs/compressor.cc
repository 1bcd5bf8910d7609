// Gradient compressors behind the compressed-tensor container (see ringpress/compressor.h and
// docs/wire-format.md, "Compressed-tensor container"). This file only assembles and validates
// containers; the kernels live in csrc/codecs/quantize/ and csrc/codecs/topk/, the sections are
// frames of the lossless stage (csrc/codecs/lossless.cc).
#include "ringpress/compressor.h"

#include <cmath>
#include <cstring>

#include "ringpress/error.h"
#include "ringpress/quantize.h"
#include "ringpress/topk.h"

namespace ringpress {
namespace {

constexpr std::uint8_t kMagic[4] = {0x52, 0x50, 0x5A, 0x43};  // "RPZC"
constexpr std::uint8_t kVersion = 1;
constexpr std::uint8_t kMethodVersion = 1;
constexpr std::size_t kHeader = 32;

// Per-thread scratch: kept between calls so its pages stay mapped.
struct Scratch {
  std::vector<std::uint8_t> codes, index_stream;
  std::vector<float> scales, dense;
  std::vector<std::uint16_t> halves;
  std::vector<std::uint32_t> indices;
  topk::SparseVector sparse;
};
thread_local Scratch t_scratch;

template <typename T>
T* grow(std::vector<T>& v, std::size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

void st32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
void st64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
std::uint32_t ld32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
std::uint64_t ld64(const std::uint8_t* p) {
  return ld32(p) | (std::uint64_t(ld32(p + 4)) << 32);
}

std::size_t sections_for(CompressMethod m) {
  return (m == CompressMethod::kFP16 || m == CompressMethod::kBF16) ? 1 : 2;
}
bool uses_block(CompressMethod m) {
  return m == CompressMethod::kInt || m == CompressMethod::kSign || m == CompressMethod::kTernary;
}
bool bits_allowed(CompressMethod m, int bits) {
  switch (m) {
    case CompressMethod::kFP16:
    case CompressMethod::kBF16: return bits == 16;
    case CompressMethod::kInt: return bits == 8 || bits == 4 || bits == 2;
    case CompressMethod::kSign: return bits == 1;
    case CompressMethod::kTernary: return bits == 2;
    case CompressMethod::kSparse: return bits == 32 || bits == 16;
  }
  return false;
}
int bits_of(const CompressorSpec& s) {
  switch (s.method) {
    case CompressMethod::kFP16:
    case CompressMethod::kBF16: return 16;
    case CompressMethod::kSign: return 1;
    case CompressMethod::kTernary: return 2;
    default: return s.bits;
  }
}

// Checksum of header bytes [0, 28) followed by the shape and section-size table.
std::uint32_t header_check(const std::uint8_t* buf, std::size_t table_bytes) {
  std::vector<std::uint8_t> tmp(28 + table_bytes);
  std::memcpy(tmp.data(), buf, 28);
  std::memcpy(tmp.data() + 28, buf + kHeader, table_bytes);
  return static_cast<std::uint32_t>(wire::checksum(tmp.data(), tmp.size()));
}

std::uint32_t section_block_size(const LosslessOptions& lo, DType dt) {
  return lo.block_size ? lo.block_size : default_block_size(dtype_size(dt));
}

// Sizes of the raw sections (before the lossless stage) for n elements.
struct Layout {
  DType dtype[2];
  std::size_t count[2];  // elements of each section
};

Layout dense_layout(const CompressorSpec& s, std::size_t n) {
  Layout L{};
  switch (s.method) {
    case CompressMethod::kFP16:
      L.dtype[0] = DType::kF16;
      L.count[0] = n;
      break;
    case CompressMethod::kBF16:
      L.dtype[0] = DType::kBF16;
      L.count[0] = n;
      break;
    case CompressMethod::kInt:
    case CompressMethod::kSign:
    case CompressMethod::kTernary:
      L.dtype[0] = DType::kF32;
      L.count[0] = quant::num_blocks(n, s.block);
      L.dtype[1] = DType::kBytes;
      L.count[1] = s.method == CompressMethod::kInt    ? quant::blockwise_payload_bytes(n, s.bits)
                   : s.method == CompressMethod::kSign ? quant::sign_payload_bytes(n)
                                                       : quant::ternary_payload_bytes(n);
      break;
    case CompressMethod::kSparse: break;
  }
  return L;
}

void check_spec(const CompressorSpec& s, std::size_t n) {
  RP_ENFORCE(bits_allowed(s.method, bits_of(s)), UsageError, "bits ", bits_of(s),
             " not allowed for ", compress_method_name(s.method));
  if (uses_block(s.method)) RP_ENFORCE_GE(s.block, 1u, UsageError, "block must be >= 1");
  if (s.method == CompressMethod::kSparse) {
    RP_ENFORCE_LT(n, std::size_t(1) << 32, UsageError, "sparse compressors take < 2^32 elements");
    if (s.selector != SparseSelector::kThreshold) {
      RP_ENFORCE(s.ratio > 0.0 && s.ratio <= 1.0, UsageError, "ratio must be in (0, 1], got ",
                 s.ratio);
    } else {
      RP_ENFORCE(std::isfinite(s.threshold) && s.threshold >= 0.0f, UsageError,
                 "threshold must be finite and >= 0, got ", s.threshold);
    }
    RP_ENFORCE(s.tolerance >= 0.0 && s.tolerance <= 1.0, UsageError, "tolerance must be in [0, 1]");
  }
}

std::size_t frame_bound(const LosslessOptions& lo, DType dt, std::size_t count) {
  return encode_bound(count * dtype_size(dt), 1, section_block_size(lo, dt));
}

std::size_t put_section(const LosslessOptions& lo, const void* data, DType dt, std::size_t count,
                        std::uint8_t* dst, std::size_t cap) {
  const std::uint64_t shape[1] = {count};
  return lossless_encode(data, count * dtype_size(dt), dt, shape, 1, lo, dst, cap);
}

// Decodes section i (a frame) into dst after checking its dtype and 1-D length.
void get_section(const std::uint8_t* buf, const ContainerInfo& info, std::size_t i, DType dt,
                 std::size_t count, void* dst, int threads) {
  const std::uint8_t* p = buf + info.section_offsets[i];
  const std::size_t len = info.section_sizes[i];
  const wire::FrameInfo f = wire::parse_frame(p, len);
  RP_ENFORCE(f.dtype == dt, WireFormatError, "section ", i, " has dtype ", dtype_name(f.dtype),
             ", expected ", dtype_name(dt));
  RP_ENFORCE(f.ndim == 1 && f.shape[0] == count, WireFormatError, "section ", i,
             " must be 1-D with ", count, " elements");
  lossless_decode(p, len, dst, count * dtype_size(dt), threads);
}

}  // namespace

const char* compress_method_name(CompressMethod m) noexcept {
  switch (m) {
    case CompressMethod::kFP16: return "fp16";
    case CompressMethod::kBF16: return "bf16";
    case CompressMethod::kInt: return "int";
    case CompressMethod::kSign: return "sign";
    case CompressMethod::kTernary: return "ternary";
    case CompressMethod::kSparse: return "sparse";
  }
  return "unknown";
}

std::size_t sparse_k(const CompressorSpec& spec, std::size_t n) noexcept {
  if (n == 0) return 0;
  const double k = std::round(spec.ratio * double(n));
  if (k < 1.0) return 1;
  return k > double(n) ? n : static_cast<std::size_t>(k);
}

std::size_t compressor_bound(const CompressorSpec& s, std::size_t n, int ndim) {
  std::size_t total = kHeader + 8 * std::size_t(ndim) + 8 * sections_for(s.method);
  if (s.method == CompressMethod::kSparse) {
    // The threshold selector can keep every element.
    const std::size_t kmax =
        s.selector == SparseSelector::kThreshold ? n
        : s.selector == SparseSelector::kSampled
            ? std::min<std::size_t>(
                  n, std::size_t(std::ceil(sparse_k(s, n) * (1.0 + s.tolerance))) + 1)
            : sparse_k(s, n);
    total += frame_bound(s.lossless, DType::kBytes, topk::indices_max_encoded_size(kmax));
    total += frame_bound(s.lossless, s.bits == 16 ? DType::kF16 : DType::kF32, kmax);
  } else {
    const Layout L = dense_layout(s, n);
    for (std::size_t i = 0; i < sections_for(s.method); ++i)
      total += frame_bound(s.lossless, L.dtype[i], L.count[i]);
  }
  return total;
}

std::size_t compressor_encode(const CompressorSpec& s, const float* x, std::size_t n,
                              const std::uint64_t* shape, int ndim, std::uint64_t seed,
                              float* residual, void* dst, std::size_t dst_cap, int threads) {
  ScopedErrorContext ctx(std::string("compress.") + compress_method_name(s.method));
  check_spec(s, n);
  RP_ENFORCE(ndim >= 0 && ndim <= wire::kMaxNdim, UsageError, "at most 8 dimensions, got ", ndim);
  RP_ENFORCE_GE(dst_cap, compressor_bound(s, n, ndim), UsageError, "output buffer too small");
  LosslessOptions lo = s.lossless;
  lo.threads = threads;
  Scratch& S = t_scratch;

  // Error feedback: compress v = x + residual, computed in the residual buffer.
  const float* v = x;
  if (residual) {
    for (std::size_t i = 0; i < n; ++i) residual[i] += x[i];
    v = residual;
  }

  auto* out = static_cast<std::uint8_t*>(dst);
  const std::size_t nsec = sections_for(s.method);
  std::size_t pos = kHeader + 8 * std::size_t(ndim) + 8 * nsec;
  std::uint64_t sizes[2] = {0, 0};
  auto put = [&](std::size_t i, const void* data, DType dt, std::size_t count) {
    sizes[i] = put_section(lo, data, dt, count, out + pos, dst_cap - pos);
    pos += sizes[i];
  };

  switch (s.method) {
    case CompressMethod::kFP16:
    case CompressMethod::kBF16: {
      std::uint16_t* h = grow(S.halves, n);
      if (s.method == CompressMethod::kFP16)
        quant::fp32_to_fp16(v, n, h, threads);
      else
        quant::fp32_to_bf16(v, n, h, threads);
      put(0, h, s.method == CompressMethod::kFP16 ? DType::kF16 : DType::kBF16, n);
      if (residual) {
        float* d = grow(S.dense, n);
        if (s.method == CompressMethod::kFP16)
          quant::fp16_to_fp32(h, n, d, threads);
        else
          quant::bf16_to_fp32(h, n, d, threads);
        for (std::size_t i = 0; i < n; ++i) residual[i] -= d[i];
      }
      break;
    }
    case CompressMethod::kInt:
    case CompressMethod::kSign:
    case CompressMethod::kTernary: {
      const Layout L = dense_layout(s, n);
      float* sc = grow(S.scales, L.count[0]);
      std::uint8_t* codes = grow(S.codes, L.count[1]);
      quant::BlockwiseParams bp;
      bp.bits = s.bits;
      bp.block = s.block;
      bp.rounding = s.stochastic ? quant::Rounding::kStochastic : quant::Rounding::kNearest;
      bp.seed = seed;
      bp.threads = threads;
      quant::SignParams sp{s.block, threads};
      quant::TernaryParams tp{s.block, seed, 0, threads};
      if (s.method == CompressMethod::kInt)
        quant::blockwise_encode(v, n, bp, codes, sc);
      else if (s.method == CompressMethod::kSign)
        quant::sign_encode(v, n, sp, codes, sc);
      else
        quant::ternary_encode(v, n, tp, codes, sc);
      put(0, sc, DType::kF32, L.count[0]);
      put(1, codes, DType::kBytes, L.count[1]);
      if (residual) {
        float* d = grow(S.dense, n);
        if (s.method == CompressMethod::kInt)
          quant::blockwise_decode(codes, sc, n, bp, d);
        else if (s.method == CompressMethod::kSign)
          quant::sign_decode(codes, sc, n, sp, d);
        else
          quant::ternary_decode(codes, sc, n, tp, d);
        for (std::size_t i = 0; i < n; ++i) residual[i] -= d[i];
      }
      break;
    }
    case CompressMethod::kSparse: {
      topk::SparseVector& sv = S.sparse;
      const std::size_t k = sparse_k(s, n);
      switch (s.selector) {
        case SparseSelector::kExact: topk::topk_exact(v, n, k, &sv); break;
        case SparseSelector::kSampled: {
          topk::SampledOptions o;
          o.tolerance = s.tolerance;
          o.seed = seed;
          topk::topk_sampled(v, n, k, o, &sv);
          break;
        }
        case SparseSelector::kRandom: topk::randomk(v, n, k, seed, &sv); break;
        case SparseSelector::kThreshold: topk::threshold_select(v, n, s.threshold, &sv); break;
      }
      const std::size_t count = sv.size();
      std::uint8_t* stream = grow(S.index_stream, topk::indices_max_encoded_size(count));
      const std::size_t slen = topk::encode_indices(sv.indices.data(), count, n, stream,
                                                    topk::indices_max_encoded_size(count));
      put(0, stream, DType::kBytes, slen);
      const float* vals = sv.values.data();
      if (s.bits == 16) {
        std::uint16_t* h = grow(S.halves, count);
        quant::fp32_to_fp16(vals, count, h, 1);
        put(1, h, DType::kF16, count);
        if (residual) {
          float* d = grow(S.dense, count);
          quant::fp16_to_fp32(h, count, d, 1);
          for (std::size_t j = 0; j < count; ++j) residual[sv.indices[j]] -= d[j];
        }
      } else {
        put(1, vals, DType::kF32, count);
        if (residual) {
          for (std::size_t j = 0; j < count; ++j) residual[sv.indices[j]] -= vals[j];
        }
      }
      break;
    }
  }

  // Header, shape, section sizes, then the header check over them.
  std::memset(out, 0, kHeader);
  std::memcpy(out, kMagic, 4);
  out[4] = kVersion;
  out[6] = static_cast<std::uint8_t>(s.method);
  out[7] = kMethodVersion;
  out[8] = static_cast<std::uint8_t>(DType::kF32);
  out[9] = static_cast<std::uint8_t>(ndim);
  out[10] = static_cast<std::uint8_t>(bits_of(s));
  st32(out + 12, uses_block(s.method) ? s.block : 0);
  st64(out + 16, n);
  st32(out + 24, static_cast<std::uint32_t>(nsec));
  std::uint8_t* p = out + kHeader;
  for (int d = 0; d < ndim; ++d, p += 8) st64(p, shape[d]);
  for (std::size_t i = 0; i < nsec; ++i, p += 8) st64(p, sizes[i]);
  st32(out + 28, header_check(out, std::size_t(p - (out + kHeader))));
  return pos;
}

ContainerInfo parse_container(const void* buf, std::size_t len) {
  ScopedErrorContext ctx("decompress.container");
  const auto* b = static_cast<const std::uint8_t*>(buf);
  ContainerInfo info;
  RP_ENFORCE_GE(len, kHeader, WireFormatError, "buffer too short for a container header");
  if (std::memcmp(b, kMagic, 4) != 0) {
    RP_THROW(WireFormatError,
             "bad magic: not a ringpress compressed-tensor container (expected 'RPZC')");
  }
  RP_ENFORCE_EQ(b[4], kVersion, WireFormatError, "unsupported container version");
  RP_ENFORCE_EQ(b[5], 0, WireFormatError, "reserved container flags must be zero");
  RP_ENFORCE(b[6] >= 1 && b[6] <= 6, WireFormatError, "unknown compression method ", int(b[6]));
  info.method = static_cast<CompressMethod>(b[6]);
  RP_ENFORCE_EQ(b[7], kMethodVersion, WireFormatError, "unsupported method version");
  RP_ENFORCE_EQ(b[8], static_cast<std::uint8_t>(DType::kF32), WireFormatError,
                "reconstructed dtype must be float32 (code 11)");
  RP_ENFORCE_LE(b[9], wire::kMaxNdim, WireFormatError, "too many dimensions");
  info.ndim = b[9];
  info.bits = b[10];
  RP_ENFORCE(bits_allowed(info.method, info.bits), WireFormatError, "bits ", info.bits,
             " not allowed for method ", compress_method_name(info.method));
  RP_ENFORCE_EQ(b[11], 0, WireFormatError, "reserved byte must be zero");
  info.block = ld32(b + 12);
  if (uses_block(info.method)) {
    RP_ENFORCE_GE(info.block, 1u, WireFormatError, "block must be >= 1");
  } else {
    RP_ENFORCE_EQ(info.block, 0u, WireFormatError, "block must be 0 for this method");
  }
  info.n = ld64(b + 16);
  RP_ENFORCE_LE(info.n, (1ull << 62), WireFormatError, "element count too large");
  if (info.method == CompressMethod::kSparse) {
    RP_ENFORCE_LT(info.n, (1ull << 32), WireFormatError, "sparse containers hold < 2^32 elements");
  }
  const std::uint32_t nsec = ld32(b + 24);
  RP_ENFORCE_EQ(std::size_t(nsec), sections_for(info.method), WireFormatError,
                "wrong section count");
  const std::size_t table = 8 * std::size_t(info.ndim) + 8 * std::size_t(nsec);
  RP_ENFORCE_GE(len, kHeader + table, WireFormatError, "container truncated inside its table");
  RP_ENFORCE_EQ(ld32(b + 28), header_check(b, table), WireFormatError,
                "container header checksum mismatch");
  unsigned __int128 elems = 1;
  const std::uint8_t* p = b + kHeader;
  for (int d = 0; d < info.ndim; ++d, p += 8) {
    info.shape[d] = ld64(p);
    elems *= info.shape[d];
    RP_ENFORCE(elems <= (1ull << 62), WireFormatError, "shape has too many elements");
  }
  RP_ENFORCE(elems == info.n, WireFormatError, "shape product does not match n (", info.n, ")");
  std::uint64_t off = kHeader + table;
  for (std::uint32_t i = 0; i < nsec; ++i, p += 8) {
    const std::uint64_t sz = ld64(p);
    RP_ENFORCE_LE(sz, std::uint64_t(len) - off, WireFormatError, "section ", i,
                  " runs past the container");
    info.section_offsets.push_back(off);
    info.section_sizes.push_back(sz);
    off += sz;
  }
  RP_ENFORCE_EQ(off, std::uint64_t(len), WireFormatError, "trailing bytes after the container");
  info.size = off;
  return info;
}

void compressor_decode(const void* buf, std::size_t len, float* out, std::size_t out_n,
                       int threads) {
  const ContainerInfo info = parse_container(buf, len);
  ScopedErrorContext ctx(std::string("decompress.") + compress_method_name(info.method));
  RP_ENFORCE_EQ(std::uint64_t(out_n), info.n, UsageError,
                "output size does not match the container");
  const auto* b = static_cast<const std::uint8_t*>(buf);
  const std::size_t n = out_n;
  Scratch& S = t_scratch;
  CompressorSpec s;
  s.method = info.method;
  s.bits = info.bits;
  s.block = info.block;

  switch (info.method) {
    case CompressMethod::kFP16:
    case CompressMethod::kBF16: {
      std::uint16_t* h = grow(S.halves, n);
      const bool f16 = info.method == CompressMethod::kFP16;
      get_section(b, info, 0, f16 ? DType::kF16 : DType::kBF16, n, h, threads);
      if (f16)
        quant::fp16_to_fp32(h, n, out, threads);
      else
        quant::bf16_to_fp32(h, n, out, threads);
      return;
    }
    case CompressMethod::kInt:
    case CompressMethod::kSign:
    case CompressMethod::kTernary: {
      const Layout L = dense_layout(s, n);
      float* sc = grow(S.scales, L.count[0]);
      std::uint8_t* codes = grow(S.codes, L.count[1]);
      get_section(b, info, 0, DType::kF32, L.count[0], sc, threads);
      get_section(b, info, 1, DType::kBytes, L.count[1], codes, threads);
      for (std::size_t i = 0; i < L.count[0]; ++i) {
        RP_ENFORCE(std::isfinite(sc[i]) && sc[i] >= 0.0f, WireFormatError, "scale ", i,
                   " is negative or not finite");
      }
      if (info.method == CompressMethod::kInt) {
        quant::BlockwiseParams bp;
        bp.bits = info.bits;
        bp.block = info.block;
        bp.threads = threads;
        quant::blockwise_decode(codes, sc, n, bp, out);
      } else if (info.method == CompressMethod::kSign) {
        quant::sign_decode(codes, sc, n, quant::SignParams{info.block, threads}, out);
      } else {
        quant::ternary_decode(codes, sc, n, quant::TernaryParams{info.block, 0, 0, threads}, out);
      }
      return;
    }
    case CompressMethod::kSparse: {
      // Index stream: its frame header says how long it is; its count must be <= n.
      const std::uint8_t* p0 = b + info.section_offsets[0];
      const wire::FrameInfo f0 = wire::parse_frame(p0, info.section_sizes[0]);
      RP_ENFORCE(f0.dtype == DType::kBytes && f0.ndim == 1, WireFormatError,
                 "section 0 (indices) must be a 1-D bytes frame");
      const std::size_t slen = std::size_t(f0.nbytes);
      std::uint8_t* stream = grow(S.index_stream, slen);
      get_section(b, info, 0, DType::kBytes, slen, stream, threads);
      const std::size_t count = topk::indices_decoded_count(stream, slen);
      RP_ENFORCE_LE(count, n, WireFormatError, "more indices than elements");
      std::uint32_t* idx = grow(S.indices, count);
      topk::decode_indices(stream, slen, n, idx, count);
      std::memset(out, 0, n * sizeof(float));
      if (info.bits == 16) {
        std::uint16_t* h = grow(S.halves, count);
        get_section(b, info, 1, DType::kF16, count, h, threads);
        float* d = grow(S.dense, count);
        quant::fp16_to_fp32(h, count, d, 1);
        for (std::size_t j = 0; j < count; ++j) out[idx[j]] = d[j];
      } else {
        float* vals = grow(S.dense, count);
        get_section(b, info, 1, DType::kF32, count, vals, threads);
        for (std::size_t j = 0; j < count; ++j) out[idx[j]] = vals[j];
      }
      return;
    }
  }
}

}  // namespace ringpress

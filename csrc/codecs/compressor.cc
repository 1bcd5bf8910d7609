// The compressed-tensor container, version 2 (contract: ringpress/compressor.h; layout:
// docs/wire-format.md, "Compressed-tensor container"). This file only frames and validates: the
// payload is a registry codec's (csrc/codecs/wire/), error feedback is Codec::encode_feedback,
// and the optional lossless stage is one frame (csrc/codecs/lossless.cc).
#include "ringpress/compressor.h"

#include <cmath>
#include <cstring>
#include <exception>
#include <string>

#include "ringpress/error.h"

namespace ringpress {
namespace {

constexpr std::uint8_t kMagic[4] = {0x52, 0x50, 0x5A, 0x43};  // "RPZC"
constexpr std::uint8_t kFlagLossless = 0x01;
// param_flags (header byte 10)
constexpr std::uint8_t kPfStochastic = 0x01, kPfSampled = 0x02, kPfHalfValues = 0x04;
constexpr std::uint64_t kMaxElements = 1ull << 62;

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
void stf64(std::uint8_t* p, double v) {
  std::uint64_t u;
  std::memcpy(&u, &v, 8);
  st64(p, u);
}
double ldf64(const std::uint8_t* p) {
  const std::uint64_t u = ld64(p);
  double v;
  std::memcpy(&v, &u, 8);
  return v;
}
void stf32(std::uint8_t* p, float v) {
  std::uint32_t u;
  std::memcpy(&u, &v, 4);
  st32(p, u);
}
float ldf32(const std::uint8_t* p) {
  const std::uint32_t u = ld32(p);
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}

std::size_t table_end(int ndim) {
  return kContainerHeader + 8 * std::size_t(ndim);
}

// Low 32 bits of XXH3-64 over header bytes [0, 60) followed by the shape.
std::uint32_t header_check(const std::uint8_t* buf, int ndim) {
  std::vector<std::uint8_t> tmp(60 + 8 * std::size_t(ndim));
  std::memcpy(tmp.data(), buf, 60);
  if (ndim) std::memcpy(tmp.data() + 60, buf + kContainerHeader, 8 * std::size_t(ndim));
  return static_cast<std::uint32_t>(wire::checksum(tmp.data(), tmp.size()));
}

std::uint64_t round_up(std::uint64_t v, std::uint64_t w) {
  return (v + w - 1) / w * w;
}

// The frame dtype of a lossless stage that shuffles by `word` bytes.
DType stage_dtype(std::size_t word) {
  return word == 4 ? DType::kU32 : word == 2 ? DType::kU16 : DType::kBytes;
}
std::size_t stage_word(DType d) {
  return d == DType::kU32 ? 4 : d == DType::kU16 ? 2 : d == DType::kBytes ? 1 : 0;
}

// Per-thread scratch (kept between calls so its pages stay mapped); 8-byte aligned.
struct Scratch {
  std::vector<std::uint64_t> raw;  // a payload before the lossless stage / an aligned copy
};
thread_local Scratch t_scratch;
std::uint8_t* scratch_bytes(std::size_t bytes) {
  auto& v = t_scratch.raw;
  if (v.size() * 8 < bytes) v.resize((bytes + 7) / 8);
  return reinterpret_cast<std::uint8_t*>(v.data());
}
// Scratch above this is returned when a call that grew it fails, so a hostile container leaves
// no memory behind (a successful call keeps it mapped for the next one, as before).
constexpr std::size_t kScratchKeepBytes = std::size_t(16) << 20;
struct ScratchTrim {
  ScratchTrim() = default;
  ScratchTrim(const ScratchTrim&) = delete;
  ScratchTrim& operator=(const ScratchTrim&) = delete;
  ~ScratchTrim() {
    if (std::uncaught_exceptions() > unwinding_ && t_scratch.raw.capacity() * 8 > kScratchKeepBytes)
      std::vector<std::uint64_t>().swap(t_scratch.raw);
  }
  int unwinding_ = std::uncaught_exceptions();
};

// The codec row of a container, or why it cannot be one.
const CodecInfo& lossy_row(WireCompression id) {
  const CodecInfo* info = find_codec(static_cast<int>(id));
  RP_ENFORCE(info != nullptr, UsageError, "no wire codec has id ", int(id));
  RP_ENFORCE(info->make != nullptr && !info->exact && info->dtypes == CodecDTypes::kFloat32Sum,
             UsageError, "a container holds a lossy float32 wire codec; '", info->name,
             "' is not one");
  return *info;
}

std::size_t stage_bound(const LosslessOptions& lo, std::size_t raw, std::size_t word) {
  const std::size_t padded = round_up(raw, word);
  const std::uint32_t bs = lo.block_size ? lo.block_size : default_block_size(word);
  return encode_bound(padded, 1, bs);
}

}  // namespace

std::size_t compressor_bound(const CompressorSpec& s, std::size_t n, int ndim) {
  lossy_row(s.codec);
  std::unique_ptr<Codec> codec = make_codec(s.codec, s.params, DType::kF32, ReduceOp::kSum);
  const std::size_t raw = codec->bound(n);
  const std::size_t body =
      s.lossless.codec == wire::Codec::kNone ? raw : stage_bound(s.lossless, raw, codec->word());
  return table_end(ndim) + body;
}

std::size_t compressor_encode(const CompressorSpec& s, const float* x, std::size_t n,
                              const std::uint64_t* shape, int ndim, std::uint64_t seed,
                              float* residual, void* dst, std::size_t dst_cap, int threads) {
  const CodecInfo& info = lossy_row(s.codec);
  ScopedErrorContext ctx(std::string("compress.") + info.name);
  RP_ENFORCE(ndim >= 0 && ndim <= wire::kMaxNdim, UsageError, "at most 8 dimensions, got ", ndim);
  unsigned __int128 elems = 1;
  for (int d = 0; d < ndim; ++d) elems *= shape[d];
  RP_ENFORCE(elems == n, UsageError, "the shape holds ", std::uint64_t(elems), " elements, not ",
             n);
  RP_ENFORCE_LE(std::uint64_t(n), kMaxElements, UsageError, "at most 2^62 elements");
  std::unique_ptr<Codec> codec = make_codec(s.codec, s.params, DType::kF32, ReduceOp::kSum);
  const bool staged = s.lossless.codec != wire::Codec::kNone;
  LosslessOptions lo = s.lossless;
  lo.threads = threads;
  if (staged) check_lossless_options(lo, codec->word());
  RP_ENFORCE_GE(dst_cap, compressor_bound(s, n, ndim), UsageError, "output buffer too small");

  auto* out = static_cast<std::uint8_t*>(dst);
  const std::size_t body = table_end(ndim);
  // The codecs write their payloads through typed pointers: give them an 8-aligned buffer.
  const bool direct = !staged && reinterpret_cast<std::uintptr_t>(out + body) % 8 == 0;
  std::uint8_t* raw_out = direct ? out + body : scratch_bytes(codec->bound(n) + 8);
  std::size_t raw;
  if (residual) {
    // Error feedback: v = x + r, built in r, encoded from there; the shared helper leaves in r
    // what the payload does not carry (r = v - decode(payload)).
    for (std::size_t i = 0; i < n; ++i) residual[i] += x[i];
    raw = codec->encode_feedback(residual, residual, n, raw_out, seed, false);
  } else {
    raw = codec->encode(x, n, raw_out, seed);
  }

  std::size_t stored;
  if (staged) {
    const std::size_t w = codec->word();
    const std::size_t padded = round_up(raw, w);
    std::memset(raw_out + raw, 0, padded - raw);
    const std::uint64_t fshape[1] = {padded / w};
    stored =
        lossless_encode(raw_out, padded, stage_dtype(w), fshape, 1, lo, out + body, dst_cap - body);
  } else {
    if (!direct && raw) std::memcpy(out + body, raw_out, raw);
    stored = raw;
  }

  // Header: the parameters the codec reads, the others zero.
  const std::uint32_t mask = info.params;
  std::memset(out, 0, kContainerHeader);
  std::memcpy(out, kMagic, 4);
  out[4] = kContainerVersion;
  out[5] = staged ? kFlagLossless : 0;
  out[6] = info.id;
  out[7] = info.version;
  out[8] = static_cast<std::uint8_t>(DType::kF32);
  out[9] = static_cast<std::uint8_t>(ndim);
  std::uint8_t pf = 0;
  if ((mask & kParamStochastic) && s.params.stochastic) pf |= kPfStochastic;
  if ((mask & kParamSampled) && s.params.sampled) pf |= kPfSampled;
  if ((mask & kParamValues) && s.params.values == "fp16") pf |= kPfHalfValues;
  out[10] = pf;
  if (mask & kParamBlock) st32(out + 12, static_cast<std::uint32_t>(s.params.block));
  st64(out + 16, n);
  if (mask & kParamRatio) stf64(out + 24, s.params.ratio);
  if (mask & kParamTolerance) stf64(out + 32, s.params.tolerance);
  if (mask & kParamThreshold) stf32(out + 40, static_cast<float>(s.params.threshold));
  st64(out + 48, raw);
  st32(out + 56, static_cast<std::uint32_t>(wire::checksum(out + body, stored)));
  for (int d = 0; d < ndim; ++d) st64(out + kContainerHeader + 8 * std::size_t(d), shape[d]);
  st32(out + 60, header_check(out, ndim));
  return body + stored;
}

ContainerInfo parse_container(const void* buf, std::size_t len) {
  ScopedErrorContext ctx("decompress.container");
  const auto* b = static_cast<const std::uint8_t*>(buf);
  ContainerInfo c;
  RP_ENFORCE(len >= 5, WireFormatError, "buffer too short for a container header (", len,
             " bytes)");
  if (std::memcmp(b, kMagic, 4) != 0) {
    RP_THROW(WireFormatError,
             "bad magic: not a ringpress compressed-tensor container (expected 'RPZC')");
  }
  if (b[4] == 1) {
    RP_THROW(WireFormatError,
             "container version 1 (per-method sections, before the wire codec registry) is "
             "retired and no longer decoded; re-encode the tensor with this ringpress "
             "(docs/wire-format.md, changelog)");
  }
  RP_ENFORCE(b[4] == kContainerVersion, WireFormatError, "unsupported container version ",
             int(b[4]), " (this decoder reads version ", int(kContainerVersion), ")");
  RP_ENFORCE_GE(len, kContainerHeader, WireFormatError, "buffer too short for a container header");
  c.version = b[4];
  RP_ENFORCE((b[5] & ~kFlagLossless) == 0, WireFormatError,
             "reserved container flags set: ", int(b[5]));
  c.lossless = (b[5] & kFlagLossless) != 0;
  const CodecInfo* info = find_codec(b[6]);
  RP_ENFORCE(info != nullptr && info->make != nullptr, WireFormatError, "unknown wire codec id ",
             int(b[6]));
  RP_ENFORCE(!info->exact && info->dtypes == CodecDTypes::kFloat32Sum, WireFormatError, "codec '",
             info->name, "' (id ", int(b[6]), ") is not a lossy float32 codec");
  c.codec = static_cast<WireCompression>(b[6]);
  RP_ENFORCE(b[7] == info->version, WireFormatError, "codec '", info->name, "' payload version ",
             int(b[7]), " (this decoder reads version ", int(info->version), ")");
  c.codec_version = b[7];
  RP_ENFORCE(b[8] == static_cast<std::uint8_t>(DType::kF32), WireFormatError,
             "reconstructed dtype must be float32 (code 11), got ", int(b[8]));
  RP_ENFORCE(b[9] <= wire::kMaxNdim, WireFormatError, "too many dimensions: ", int(b[9]));
  c.ndim = b[9];
  const std::uint32_t mask = info->params;
  c.param_mask = mask;
  const std::uint8_t pf = b[10];
  auto needs = [&](bool set, std::uint32_t bit, const char* what) {
    RP_ENFORCE(!set || (mask & bit), WireFormatError, "parameter '", what, "' is set but codec '",
               info->name, "' does not read it");
  };
  RP_ENFORCE((pf & ~(kPfStochastic | kPfSampled | kPfHalfValues)) == 0, WireFormatError,
             "reserved parameter flags set: ", int(pf));
  needs(pf & kPfStochastic, kParamStochastic, "stochastic");
  needs(pf & kPfSampled, kParamSampled, "sampled");
  needs(pf & kPfHalfValues, kParamValues, "values");
  RP_ENFORCE(b[11] == 0, WireFormatError, "reserved byte 11 must be zero");
  const std::uint32_t block = ld32(b + 12);
  needs(block != 0, kParamBlock, "block");
  c.n = ld64(b + 16);
  RP_ENFORCE_LE(c.n, kMaxElements, WireFormatError, "element count too large");
  const std::uint64_t ratio_bits = ld64(b + 24), tol_bits = ld64(b + 32);
  const std::uint32_t thr_bits = ld32(b + 40);
  needs(ratio_bits != 0, kParamRatio, "ratio");
  needs(tol_bits != 0, kParamTolerance, "tolerance");
  needs(thr_bits != 0, kParamThreshold, "threshold");
  RP_ENFORCE(ld32(b + 44) == 0, WireFormatError, "reserved bytes 44..47 must be zero");
  c.raw_size = ld64(b + 48);
  const std::size_t tend = table_end(c.ndim);
  RP_ENFORCE_GE(len, tend, WireFormatError, "container truncated inside its shape");
  RP_ENFORCE_EQ(ld32(b + 60), header_check(b, c.ndim), WireFormatError,
                "container header checksum mismatch");
  unsigned __int128 elems = 1;
  for (int d = 0; d < c.ndim; ++d) {
    c.shape[d] = ld64(b + kContainerHeader + 8 * std::size_t(d));
    elems *= c.shape[d];
    RP_ENFORCE(elems <= kMaxElements, WireFormatError, "shape has too many elements");
  }
  RP_ENFORCE(elems == c.n, WireFormatError, "shape product does not match n (", c.n, ")");

  // The codec, rebuilt from the recorded parameters (its factory's rules are the format's).
  CodecParams& p = c.params;
  if (mask & kParamBlock) p.block = block;
  if (mask & kParamRatio) p.ratio = ldf64(b + 24);
  if (mask & kParamTolerance) p.tolerance = ldf64(b + 32);
  if (mask & kParamThreshold) p.threshold = ldf32(b + 40);
  if (mask & kParamStochastic) p.stochastic = (pf & kPfStochastic) != 0;
  if (mask & kParamSampled) p.sampled = (pf & kPfSampled) != 0;
  if (mask & kParamValues) p.values = (pf & kPfHalfValues) ? "fp16" : "fp32";
  std::unique_ptr<Codec> codec;
  try {
    codec = make_codec(c.codec, p, DType::kF32, ReduceOp::kSum);
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kUsage) throw;
    RP_THROW(WireFormatError, "the container's parameters are not valid for codec '", info->name,
             "': ", e.detail());
  }
  std::size_t hi_bound = 0, lo_bound = 0;
  try {  // overflow-checked in the codecs: a UsageError for an n no payload can hold
    hi_bound = codec->bound(std::size_t(c.n));
    lo_bound = codec->min_payload(std::size_t(c.n));
  } catch (const Error& e) {
    if (e.kind() != ErrorKind::kUsage) throw;
    RP_THROW(WireFormatError, "codec '", info->name, "' cannot carry the container's ", c.n,
             " elements: ", e.detail());
  }
  // The payload must justify n (and so the n floats a decoder allocates) before anything else.
  RP_ENFORCE(c.raw_size >= lo_bound && c.raw_size <= hi_bound, WireFormatError, "a '", info->name,
             "' payload of ", c.raw_size, " bytes for ", c.n, " elements (allowed: ", lo_bound,
             "..", hi_bound, ")");

  c.payload_offset = tend;
  c.stored_size = len - tend;
  c.size = len;
  RP_ENFORCE_EQ(ld32(b + 56), static_cast<std::uint32_t>(wire::checksum(b + tend, c.stored_size)),
                WireFormatError, "container payload checksum mismatch");
  if (!c.lossless) {
    RP_ENFORCE_EQ(c.stored_size, c.raw_size, WireFormatError,
                  "the stored payload's size differs from the header's");
    return c;
  }
  const wire::FrameInfo f = wire::parse_frame(b + tend, std::size_t(c.stored_size));
  const std::size_t w = stage_word(f.dtype);
  RP_ENFORCE(w != 0, WireFormatError, "the lossless stage's frame has dtype ", dtype_name(f.dtype),
             " (allowed: bytes, uint16, uint32)");
  RP_ENFORCE(f.ndim == 1 && f.nbytes == round_up(c.raw_size, w), WireFormatError,
             "the lossless stage's frame must be 1-D with the payload's ", c.raw_size,
             " bytes padded to a multiple of ", w, ", got ", f.nbytes, " bytes");
  c.lossless_codec = f.codec;
  return c;
}

namespace {

// The payload of a validated container: a pointer into buf, or an 8-aligned copy (the lossless
// stage undone, or an unaligned buffer). Valid until this thread's next call.
const std::uint8_t* payload_of(const ContainerInfo& c, const std::uint8_t* b, int threads) {
  const std::uint8_t* stored = b + c.payload_offset;
  if (c.lossless) {
    const wire::FrameInfo f = wire::parse_frame(stored, std::size_t(c.stored_size));
    const std::size_t nbytes = std::size_t(f.nbytes);  // raw_size padded (checked)
    std::uint8_t* raw = scratch_bytes(nbytes);
    lossless_decode(f, stored, raw, nbytes, threads);
    for (std::size_t i = std::size_t(c.raw_size); i < nbytes; ++i) {
      RP_ENFORCE(raw[i] == 0, WireFormatError, "the lossless stage's padding must be zero");
    }
    return raw;
  }
  if (reinterpret_cast<std::uintptr_t>(stored) % 8 == 0) return stored;
  std::uint8_t* raw = scratch_bytes(std::size_t(c.raw_size));
  if (c.raw_size) std::memcpy(raw, stored, std::size_t(c.raw_size));
  return raw;
}

}  // namespace

std::uint64_t default_max_elements(std::size_t container_len) noexcept {
  const std::uint64_t per_byte =
      std::uint64_t(container_len) > ~std::uint64_t(0) / kDefaultElementsPerByte
          ? ~std::uint64_t(0)
          : std::uint64_t(container_len) * kDefaultElementsPerByte;
  return per_byte > kDefaultMaxElements ? per_byte : kDefaultMaxElements;
}

ContainerInfo parse_container_bounded(const void* buf, std::size_t len,
                                      std::uint64_t max_elements) {
  ContainerInfo c = parse_container(buf, len);
  const std::uint64_t cap = max_elements ? max_elements : default_max_elements(len);
  if (c.n > cap) {
    ScopedErrorContext ctx("decompress.container");
    RP_THROW(WireFormatError, "a ", len, "-byte '", wire_compression_name(c.codec),
             "' container claims ", c.n, " elements, more than the ", cap, " allowed (",
             max_elements ? "max_elements" : "default: max(2^24, 64 x its bytes)",
             "); pass out= or a larger max_elements to accept it");
  }
  return c;
}

std::vector<std::uint8_t> container_payload(const void* buf, std::size_t len, int threads) {
  const ContainerInfo c = parse_container(buf, len);
  ScopedErrorContext ctx("decompress.container");
  ScratchTrim trim;
  const std::uint8_t* p = payload_of(c, static_cast<const std::uint8_t*>(buf), threads);
  return std::vector<std::uint8_t>(p, p + c.raw_size);
}

void compressor_decode(const void* buf, std::size_t len, float* out, std::size_t out_n,
                       int threads) {
  const ContainerInfo c = parse_container(buf, len);
  ScopedErrorContext ctx(std::string("decompress.") + wire_compression_name(c.codec));
  RP_ENFORCE_EQ(std::uint64_t(out_n), c.n, UsageError, "output size does not match the container");
  ScratchTrim trim;
  const std::uint8_t* p = payload_of(c, static_cast<const std::uint8_t*>(buf), threads);
  std::unique_ptr<Codec> codec = make_codec(c.codec, c.params, DType::kF32, ReduceOp::kSum);
  codec->decode(p, std::size_t(c.raw_size), out, out_n, false);
}

}  // namespace ringpress

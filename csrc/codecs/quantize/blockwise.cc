// Blockwise symmetric int8 / int4 / int2 quantization with one fp32 scale per block, nearest or
// stochastic rounding (contract, packing and formulas: ringpress/quantize.h).
//
// Cost: per block one max|x| pass (the block is then in L1) and one quantize pass, so x is read
// from memory once; out: bits/8 bytes per element + 4 bytes per block. Decode: one pass.
// Error: nearest |x - q*scale| <= scale/2 (+ fp32 rounding of x*inv, ~6e-8 relative);
// stochastic E[q*scale] = x up to 2^-24*scale, |x - q*scale| <= scale.
// Kernels: branch-free loops over 32-bit lanes (round-half-even through the 1.5*2^23 magic add,
// floor by truncate-and-adjust, the PRNG in 32-bit multiplies), compiled for baseline, AVX2 and
// AVX-512 through target attributes; the table is picked once from simd_level(). Codes never
// depend on the kernel (all fp32 ops are single IEEE operations, no FMA), nor on threads.
// Sub-byte widths quantize a tile into an int8 scratch and pack it into the bit stream.
#include <cmath>
#include <cstring>

#include "ringpress/codec.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"
#include "ringpress/thread_pool.h"
#include "target.h"
#define RP_AI inline __attribute__((always_inline))

namespace ringpress::quant {
namespace {

using detail::kRoundMagic;
using detail::kRoundMagicBits;

constexpr std::size_t kTile = 4096;                        // sub-byte scratch tile (elements)
constexpr std::size_t kChunkElems = std::size_t(1) << 16;  // parallel_for granularity

// ---------------------------------------------------------------- kernel bodies
RP_AI std::int32_t max_abs_bits_body(const float* __restrict x, std::size_t n) {
  std::int32_t m = 0;
  for (std::size_t i = 0; i < n; ++i) {
    std::int32_t u;
    std::memcpy(&u, x + i, 4);
    u &= 0x7fffffff;
    m = u > m ? u : m;
  }
  return m;
}

RP_AI void nearest_body(const float* __restrict x, std::size_t n, float pre, float inv,
                        std::int32_t qmax, std::int8_t* __restrict q) {
  for (std::size_t i = 0; i < n; ++i) {
    const float v = (x[i] * pre) * inv;
    const float r = v + kRoundMagic;  // round-half-even to an integer in the low mantissa bits
    std::uint32_t rb;
    std::memcpy(&rb, &r, 4);
    std::int32_t c = static_cast<std::int32_t>(rb - kRoundMagicBits);
    c = c > qmax ? qmax : c;
    c = c < -qmax ? -qmax : c;
    q[i] = static_cast<std::int8_t>(c);
  }
}

RP_AI void stochastic_body(const float* __restrict x, std::size_t n, float pre, float inv,
                           std::int32_t qmax, std::uint32_t k0, std::uint32_t hc, std::uint32_t lo0,
                           std::int8_t* __restrict q) {
  for (std::size_t i = 0; i < n; ++i) {
    const std::uint32_t h = detail::prng_draw(k0, hc, lo0 + static_cast<std::uint32_t>(i));
    const float v = (x[i] * pre) * inv;
    std::int32_t t = static_cast<std::int32_t>(v);  // truncate, then adjust to floor
    const std::int32_t adj = static_cast<float>(t) > v ? 1 : 0;
    t -= adj;
    const float frac = v - static_cast<float>(t);  // exact, in [0, 1]
    const float u = static_cast<float>(static_cast<std::int32_t>(h >> 8));
    std::int32_t c = t + (u < frac * 16777216.0f ? 1 : 0);
    c = c > qmax ? qmax : c;
    c = c < -qmax ? -qmax : c;
    q[i] = static_cast<std::int8_t>(c);
  }
}

RP_AI void dequant_body(const std::int8_t* __restrict q, std::size_t n, float scale,
                        float* __restrict out) {
  for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}

// Error feedback on one tile, after encode: d = q * scale (the decoder's value), r = x - d (0
// where d is not finite: codec.h), and with keep x = d. x and r never alias here.
RP_AI void feedback_body(const std::int8_t* __restrict q, std::size_t n, float scale,
                         float* __restrict x, float* __restrict r, bool keep) {
  if (keep) {
    for (std::size_t i = 0; i < n; ++i) {
      const float d = static_cast<float>(q[i]) * scale;
      r[i] = feedback_residual(x[i], d);
      x[i] = d;
    }
  } else {
    for (std::size_t i = 0; i < n; ++i) {
      r[i] = feedback_residual(x[i], static_cast<float>(q[i]) * scale);
    }
  }
}

// dst += q * scale (decode + float32 sum in one pass: the same two IEEE operations).
RP_AI void dequant_add_body(const std::int8_t* __restrict q, std::size_t n, float scale,
                            float* __restrict dst) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = dst[i] + static_cast<float>(q[i]) * scale;
}

// dst = (dst + r) + q * scale (decode+reduce with the caller's residual add folded in).
RP_AI void dequant_add_r_body(const std::int8_t* __restrict q, std::size_t n, float scale,
                              const float* __restrict r, float* __restrict dst) {
  for (std::size_t i = 0; i < n; ++i) dst[i] = (dst[i] + r[i]) + static_cast<float>(q[i]) * scale;
}

// x += r (the caller's residual, folded into the encode's pass).
RP_AI void add_body(float* __restrict x, const float* __restrict r, std::size_t n) {
  for (std::size_t i = 0; i < n; ++i) x[i] = x[i] + r[i];
}

using MaxFn = std::int32_t (*)(const float*, std::size_t);
using NearestFn = void (*)(const float*, std::size_t, float, float, std::int32_t, std::int8_t*);
using StochFn = void (*)(const float*, std::size_t, float, float, std::int32_t, std::uint32_t,
                         std::uint32_t, std::uint32_t, std::int8_t*);
using DequantFn = void (*)(const std::int8_t*, std::size_t, float, float*);
using FeedbackFn = void (*)(const std::int8_t*, std::size_t, float, float*, float*, bool);
using AddFn = void (*)(float*, const float*, std::size_t);
using DequantAddRFn = void (*)(const std::int8_t*, std::size_t, float, const float*, float*);

struct Kernels {
  MaxFn max_abs_bits;
  NearestFn nearest;
  StochFn stochastic;
  DequantFn dequant;
  FeedbackFn feedback;
  DequantFn dequant_add;
  AddFn add;
  DequantAddRFn dequant_add_r;
};

#define RP_QUANT_KERNELS(suffix, attr)                                                           \
  attr std::int32_t max_abs_bits_##suffix(const float* x, std::size_t n) {                       \
    return max_abs_bits_body(x, n);                                                              \
  }                                                                                              \
  attr void nearest_##suffix(const float* x, std::size_t n, float pre, float inv,                \
                             std::int32_t qmax, std::int8_t* q) {                                \
    nearest_body(x, n, pre, inv, qmax, q);                                                       \
  }                                                                                              \
  attr void stochastic_##suffix(const float* x, std::size_t n, float pre, float inv,             \
                                std::int32_t qmax, std::uint32_t k0, std::uint32_t hc,           \
                                std::uint32_t lo0, std::int8_t* q) {                             \
    stochastic_body(x, n, pre, inv, qmax, k0, hc, lo0, q);                                       \
  }                                                                                              \
  attr void dequant_##suffix(const std::int8_t* q, std::size_t n, float scale, float* out) {     \
    dequant_body(q, n, scale, out);                                                              \
  }                                                                                              \
  attr void feedback_##suffix(const std::int8_t* q, std::size_t n, float scale, float* x,        \
                              float* r, bool keep) {                                             \
    feedback_body(q, n, scale, x, r, keep);                                                      \
  }                                                                                              \
  attr void dequant_add_##suffix(const std::int8_t* q, std::size_t n, float scale, float* dst) { \
    dequant_add_body(q, n, scale, dst);                                                          \
  }                                                                                              \
  attr void add_##suffix(float* x, const float* r, std::size_t n) {                              \
    add_body(x, r, n);                                                                           \
  }                                                                                              \
  attr void dequant_add_r_##suffix(const std::int8_t* q, std::size_t n, float scale,             \
                                   const float* r, float* dst) {                                 \
    dequant_add_r_body(q, n, scale, r, dst);                                                     \
  }

RP_QUANT_KERNELS(generic, )
#if RP_Q_X86
RP_QUANT_KERNELS(avx2, RP_TARGET_AVX2)
RP_QUANT_KERNELS(avx512, RP_TARGET_AVX512)
#endif
#undef RP_QUANT_KERNELS

const Kernels& kernels() {
  static const Kernels k = [] {
#if RP_Q_X86
    const SimdLevel lvl = simd_level();
    if (lvl >= SimdLevel::kAVX512) {
      return Kernels{max_abs_bits_avx512, nearest_avx512,      stochastic_avx512,
                     dequant_avx512,      feedback_avx512,     dequant_add_avx512,
                     add_avx512,          dequant_add_r_avx512};
    }
    if (lvl >= SimdLevel::kAVX2) {
      return Kernels{max_abs_bits_avx2, nearest_avx2,     stochastic_avx2, dequant_avx2,
                     feedback_avx2,     dequant_add_avx2, add_avx2,        dequant_add_r_avx2};
    }
#endif
    return Kernels{max_abs_bits_generic, nearest_generic,      stochastic_generic,
                   dequant_generic,      feedback_generic,     dequant_add_generic,
                   add_generic,          dequant_add_r_generic};
  }();
  return k;
}

void check_bits(int bits) {
  RP_ENFORCE(bits == 8 || bits == 4 || bits == 2, UsageError, "bits must be 8, 4 or 2, got ", bits);
}

void check_buffers(std::size_t n, const void* a, const void* b, const void* c) {
  RP_ENFORCE(n == 0 || (a && b && c), UsageError, "null buffer for ", n, " elements");
  RP_ENFORCE(n <= (~std::size_t(0)) / 8, UsageError, "element count ", n, " too large");
}

struct EncodeCtx {
  const float* x;
  std::size_t n;
  const BlockwiseParams* p;
  std::uint8_t* payload;
  float* scales;
  std::uint32_t k0, k1;
  const Kernels* k;
  // Error feedback (blockwise_encode_feedback): x is then this writable buffer, r is not x.
  float* xw = nullptr;
  float* r = nullptr;
  bool add = false;
  bool keep = false;
};

// Quantizes elements [s, s+len) (all in one block) into q; stochastic counters split where the
// low 32 bits of the counter wrap.
void quantize_span(const EncodeCtx& c, std::size_t s, std::size_t len, float pre, float inv,
                   std::int32_t qmax, std::int8_t* q) {
  if (c.p->rounding == Rounding::kNearest) {
    c.k->nearest(c.x + s, len, pre, inv, qmax, q);
    return;
  }
  std::size_t j = 0;
  while (j < len) {
    const std::uint64_t ctr = c.p->offset + s + j;
    const auto lo = static_cast<std::uint32_t>(ctr);
    const std::uint64_t to_wrap = (std::uint64_t(1) << 32) - lo;
    const std::size_t seg = len - j < to_wrap ? len - j : static_cast<std::size_t>(to_wrap);
    const std::uint32_t hc = detail::prng_hi_key(c.k1, static_cast<std::uint32_t>(ctr >> 32));
    c.k->stochastic(c.x + s + j, seg, pre, inv, qmax, c.k0, hc, lo, q + j);
    j += seg;
  }
}

void encode_chunk(void* vctx, std::size_t b0, std::size_t b1) {
  const EncodeCtx& c = *static_cast<const EncodeCtx*>(vctx);
  const std::size_t block = c.p->block;
  const int bits = c.p->bits;
  const std::int32_t qmax = detail::qmax_for_bits(bits);
  std::int8_t scratch[kTile];
  for (std::size_t b = b0; b < b1; ++b) {
    const std::size_t s = b * block;
    const std::size_t len = c.n - s < block ? c.n - s : block;
    // Error feedback: the block's x' = x + r, then its max, all while the block is in L1.
    if (c.add) c.k->add(c.xw + s, c.r + s, len);
    const std::int32_t mb = c.k->max_abs_bits(c.x + s, len);
    // A block holding NaN or +-Inf: a NaN scale and zero codes (it decodes to NaN, as a plain
    // sum would give a non-finite value there; the GPU encoder writes the same bytes).
    const bool bad = mb >= 0x7f800000;
    float m;
    std::memcpy(&m, &mb, 4);
    const float pre = m < detail::kTinyBlock ? detail::kPreScale : 1.0f;
    const float qf = static_cast<float>(qmax);
    const float inv = mb == 0 || bad ? 0.0f : qf / (m * pre);
    float scale = mb == 0 ? 0.0f : m / qf;
    // Near FLT_MAX, m / qmax can round up so that qmax * scale overflows to inf on decode: step
    // the scale down until the largest code dequantizes to a finite value (same rule on the GPU).
    if (bad) {
      scale = detail::kNaNScale;
    } else {
      while (!std::isfinite(qf * scale)) scale = std::nextafter(scale, 0.0f);
    }
    c.scales[b] = scale;
    for (std::size_t t = 0; t < len; t += kTile) {
      const std::size_t tl = len - t < kTile ? len - t : kTile;
      std::int8_t* q = bits == 8 ? reinterpret_cast<std::int8_t*>(c.payload) + s + t : scratch;
      if (mb == 0 || bad) {
        std::memset(q, 0, tl);
      } else {
        quantize_span(c, s + t, tl, pre, inv, qmax, q);
      }
      if (bits != 8) detail::pack_codes(q, s + t, tl, bits, c.payload);
      // The codes are what the decoder unpacks (|q| <= qmax fits the width): its values now.
      if (c.r) c.k->feedback(q, tl, scale, c.xw + s + t, c.r + s + t, c.keep);
    }
  }
}

struct DecodeCtx {
  const std::uint8_t* payload;
  const float* scales;
  std::size_t n;
  const BlockwiseParams* p;
  float* out;
  const Kernels* k;
  bool add = false;          // out += decoded (blockwise_decode_add)
  const float* r = nullptr;  // with add: out = (out + r) + decoded
};

void decode_chunk(void* vctx, std::size_t b0, std::size_t b1) {
  const DecodeCtx& c = *static_cast<const DecodeCtx*>(vctx);
  const std::size_t block = c.p->block;
  const int bits = c.p->bits;
  std::int8_t scratch[kTile];
  for (std::size_t b = b0; b < b1; ++b) {
    const std::size_t s = b * block;
    const std::size_t len = c.n - s < block ? c.n - s : block;
    const float scale = c.scales[b];
    const DequantFn dq = c.add ? c.k->dequant_add : c.k->dequant;
    auto put = [&](const std::int8_t* q, std::size_t at, std::size_t m) {
      if (c.r) {
        c.k->dequant_add_r(q, m, scale, c.r + at, c.out + at);
      } else {
        dq(q, m, scale, c.out + at);
      }
    };
    if (bits == 8) {
      put(reinterpret_cast<const std::int8_t*>(c.payload) + s, s, len);
      continue;
    }
    for (std::size_t t = 0; t < len; t += kTile) {
      const std::size_t tl = len - t < kTile ? len - t : kTile;
      detail::unpack_codes(c.payload, s + t, tl, bits, scratch);
      put(scratch, s + t, tl);
    }
  }
}

std::size_t gcd8(std::size_t block) {
  std::size_t g = 8;
  while (block % g) g /= 2;
  return g;
}

}  // namespace

namespace detail {

void check_block(std::size_t block, const char* what) {
  RP_ENFORCE(block >= 1, UsageError, what, " block size must be >= 1, got ", block);
}

void for_each_chunk(std::size_t n, std::size_t block, int threads,
                    void (*fn)(void* ctx, std::size_t b0, std::size_t b1), void* ctx) {
  const std::size_t nb = num_blocks(n, block);
  if (nb == 0) return;
  const std::size_t m = 8 / gcd8(block);  // blocks per byte-aligned group
  std::size_t bpc = kChunkElems / block;
  if (bpc < 1) bpc = 1;
  bpc = (bpc + m - 1) / m * m;
  const std::size_t chunks = (nb + bpc - 1) / bpc;
  if (threads <= 1 || chunks <= 1) {
    fn(ctx, 0, nb);
    return;
  }
  parallel_for(chunks, threads, [&](std::size_t i, int) {
    const std::size_t b0 = i * bpc;
    fn(ctx, b0, nb - b0 < bpc ? nb : b0 + bpc);
  });
}

void pack_codes(const std::int8_t* q, std::size_t start, std::size_t len, int bits,
                std::uint8_t* payload) {
  const unsigned per = 8u / static_cast<unsigned>(bits);
  const unsigned mask = (1u << bits) - 1u;
  std::size_t j = 0, i = start;
  for (; j < len && i % per != 0; ++j, ++i) {  // head: byte shared with earlier elements
    const unsigned sh = static_cast<unsigned>(i % per) * static_cast<unsigned>(bits);
    std::uint8_t& byte = payload[i / per];
    byte = static_cast<std::uint8_t>((byte & ~(mask << sh)) |
                                     ((static_cast<unsigned>(q[j]) & mask) << sh));
  }
  const std::size_t full = (len - j) / per;
  std::uint8_t* __restrict p = payload + i / per;
  const std::int8_t* __restrict s = q + j;
  if (bits == 4) {
    for (std::size_t k = 0; k < full; ++k) {
      p[k] = static_cast<std::uint8_t>((s[2 * k] & 0xf) | ((s[2 * k + 1] & 0xf) << 4));
    }
  } else if (bits == 2) {
    for (std::size_t k = 0; k < full; ++k) {
      p[k] = static_cast<std::uint8_t>((s[4 * k] & 3) | ((s[4 * k + 1] & 3) << 2) |
                                       ((s[4 * k + 2] & 3) << 4) | ((s[4 * k + 3] & 3) << 6));
    }
  } else {
    for (std::size_t k = 0; k < full; ++k) {
      unsigned byte = 0;
      for (unsigned t = 0; t < 8; ++t) byte |= (static_cast<unsigned>(s[8 * k + t]) & 1u) << t;
      p[k] = static_cast<std::uint8_t>(byte);
    }
  }
  j += full * per;
  i += full * per;
  if (j < len) {  // tail: a fresh byte, upper bits zero
    unsigned byte = 0;
    for (unsigned sh = 0; j < len; ++j, sh += static_cast<unsigned>(bits)) {
      byte |= (static_cast<unsigned>(q[j]) & mask) << sh;
    }
    payload[i / per] = static_cast<std::uint8_t>(byte);
  }
}

void unpack_codes(const std::uint8_t* payload, std::size_t start, std::size_t len, int bits,
                  std::int8_t* q) {
  const unsigned per = 8u / static_cast<unsigned>(bits);
  const unsigned ext = 8u - static_cast<unsigned>(bits);
  auto one = [&](std::size_t i) {
    const unsigned sh = static_cast<unsigned>(i % per) * static_cast<unsigned>(bits);
    const unsigned v = (static_cast<unsigned>(payload[i / per]) >> sh) << ext;
    const auto b8 = static_cast<std::int8_t>(static_cast<std::uint8_t>(v));
    return bits == 1 ? static_cast<std::int8_t>(static_cast<std::uint8_t>(v) >> 7)
                     : static_cast<std::int8_t>(b8 >> ext);
  };
  std::size_t j = 0, i = start;
  for (; j < len && i % per != 0; ++j, ++i) q[j] = one(i);
  const std::size_t full = (len - j) / per;
  const std::uint8_t* __restrict p = payload + i / per;
  std::int8_t* __restrict d = q + j;
  if (bits == 4) {
    for (std::size_t k = 0; k < full; ++k) {
      const auto b = static_cast<std::int8_t>(p[k]);
      d[2 * k] = static_cast<std::int8_t>(static_cast<std::int8_t>(p[k] << 4) >> 4);
      d[2 * k + 1] = static_cast<std::int8_t>(b >> 4);
    }
  } else if (bits == 2) {
    for (std::size_t k = 0; k < full; ++k) {
      for (unsigned t = 0; t < 4; ++t) {
        d[4 * k + t] = static_cast<std::int8_t>(static_cast<std::int8_t>(p[k] << (6 - 2 * t)) >> 6);
      }
    }
  } else {
    for (std::size_t k = 0; k < full; ++k) {
      for (unsigned t = 0; t < 8; ++t) d[8 * k + t] = static_cast<std::int8_t>((p[k] >> t) & 1);
    }
  }
  j += full * per;
  i += full * per;
  for (; j < len; ++j, ++i) q[j] = one(i);
}

}  // namespace detail

std::size_t num_blocks(std::size_t n, std::size_t block) {
  detail::check_block(block, "quant");
  return n / block + (n % block != 0);
}

std::size_t blockwise_payload_bytes(std::size_t n, int bits) {
  check_bits(bits);
  RP_ENFORCE(n <= (~std::size_t(0)) / 8, UsageError, "element count ", n, " too large");
  return (n * static_cast<std::size_t>(bits) + 7) / 8;
}

namespace {
// x is read (and, with feedback, written through xw): encode_chunk's context.
void encode_impl(const float* x, std::size_t n, const BlockwiseParams& p, std::uint8_t* payload,
                 float* scales, float* xw, float* r, bool add, bool keep) {
  ScopedErrorContext ctx("quant.blockwise_encode");
  check_bits(p.bits);
  detail::check_block(p.block, "blockwise");
  check_buffers(n, x, payload, scales);
  RP_ENFORCE(xw == nullptr || n == 0 || (r != nullptr && r != x), UsageError,
             "error feedback needs a residual buffer that is not the input");
  const std::uint64_t key = detail::splitmix64(p.seed);
  EncodeCtx c{x,
              n,
              &p,
              payload,
              scales,
              static_cast<std::uint32_t>(key),
              static_cast<std::uint32_t>(key >> 32),
              &kernels()};
  c.xw = xw;
  c.r = r;
  c.add = add;
  c.keep = keep;
  detail::for_each_chunk(n, p.block, p.threads, encode_chunk, &c);
}
}  // namespace

void blockwise_encode(const float* x, std::size_t n, const BlockwiseParams& p,
                      std::uint8_t* payload, float* scales) {
  encode_impl(x, n, p, payload, scales, nullptr, nullptr, false, false);
}

void blockwise_encode_feedback(float* x, float* r, std::size_t n, const BlockwiseParams& p,
                               std::uint8_t* payload, float* scales, bool add, bool keep) {
  encode_impl(x, n, p, payload, scales, x, r, add, keep);
}

namespace {
void decode_impl(const std::uint8_t* payload, const float* scales, std::size_t n,
                 const BlockwiseParams& p, float* out, bool add, const float* r) {
  ScopedErrorContext ctx("quant.blockwise_decode");
  check_bits(p.bits);
  detail::check_block(p.block, "blockwise");
  check_buffers(n, payload, scales, out);
  DecodeCtx c{payload, scales, n, &p, out, &kernels(), add, r};
  detail::for_each_chunk(n, p.block, p.threads, decode_chunk, &c);
}
}  // namespace

void blockwise_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                      const BlockwiseParams& p, float* out) {
  decode_impl(payload, scales, n, p, out, false, nullptr);
}

void blockwise_decode_add(const std::uint8_t* payload, const float* scales, std::size_t n,
                          const BlockwiseParams& p, float* out) {
  decode_impl(payload, scales, n, p, out, true, nullptr);
}

void blockwise_decode_add_residual(const std::uint8_t* payload, const float* scales, std::size_t n,
                                   const BlockwiseParams& p, const float* r, float* out) {
  RP_ENFORCE(n == 0 || r != nullptr, UsageError, "null residual for ", n, " elements");
  decode_impl(payload, scales, n, p, out, true, r);
}

}  // namespace ringpress::quant

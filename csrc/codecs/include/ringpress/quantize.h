// Lossy quantization kernels of the gradient compressors (raw buffers; no wire format here).
//
// Families (one file each under csrc/codecs/quantize/):
//   float16.cc   fp32 <-> IEEE fp16, round-to-nearest-even              2 bytes/elem, 1 pass
//   bfloat16.cc  fp32 <-> bf16, round-to-nearest-even                    2 bytes/elem, 1 pass
//   blockwise.cc symmetric int8 / int4 / int2 with one fp32 scale per block
//   sign.cc      1-bit sign with scale = mean|x| per block (EF-SignSGD)
//   ternary.cc   TernGrad: scale = max|x| per block, q = sign(x) * Bernoulli(|x| / scale)
//   prng.cc      the counter-based PRNG shared with the CUDA twins (csrc/cuda/quantize.cu)
//
// Common conventions
//   * Blocks: element i belongs to block i / block; the last block may be short. The number of
//     scales is num_blocks(n, block) = ceil(n / block). block must be >= 1 (UsageError).
//   * Packed payloads are one continuous little-endian bit stream over all n elements, blocks
//     are NOT byte aligned: element i occupies bits [i*b, i*b + b) of the stream, i.e. byte
//     (i*b)/8 at bit offset (i*b)%8 (the lowest bits hold the earliest element). Unused high bits
//     of the final byte are written as 0.
//       int8: one two's-complement byte per element.
//       int4: two per byte, element 2k in bits 0..3, 2k+1 in bits 4..7 (two's complement nibble).
//       int2: four per byte, element 4k+j in bits 2j..2j+1 (two's complement: 00=0, 01=+1,
//             11=-1; 10 (-2) is never produced, a decoder maps it to -2*scale).
//       sign: eight per byte, element 8k+j in bit j; 1 = negative (sign bit of x set, so -0.0
//             is negative), 0 = non-negative.
//   * Non-finite input (NaN or +-Inf) anywhere in a block (blockwise, ternary, sign): the block
//     gets a NaN scale (bits 0x7fc00000) and all-zero codes, so it decodes to NaN in every
//     element (where a plain sum would also be non-finite, at block granularity); the other
//     blocks are unaffected. The CUDA twins write the same bytes. These raw decoders accept any
//     bytes; the wire and container decoders reject negative or infinite scales first (a NaN
//     scale is the non-finite block).
//   * threads: encode/decode run parallel_for over chunks of whole blocks (chunks start on byte
//     boundaries); results are bit-identical for every thread count.
//   * Stochastic rounding draws, for element i, u = prng_u32(seed, offset + i) >> 8 (24 bits), so
//     codes depend only on (seed, offset + i, x), never on threading, chunking or CPU vs GPU.
//
// Blockwise integer quantization (bits b in {8, 4, 2}, qmax = 127, 7, 1):
//   m = max|x| over the block; scale = m / qmax (fp32 division), stepped down by one ulp at a time
//   while qmax * scale would overflow to inf (only for m near FLT_MAX); m == 0 -> scale 0, codes 0.
//   v = (x * pre) * inv with inv = qmax / (m * pre), pre = 2^64 if m < 2^-96 else 1 (keeps inv
//   finite for tiny blocks; all operations single fp32 IEEE ops, no FMA).
//   nearest:    q = round-half-even(v), clamped to [-qmax, qmax]; |x - q*scale| <= scale/2
//               (plus fp32 rounding of the products, ~1e-7 relative); exact for x on the grid
//               k*scale when v is computed exactly.
//   stochastic: q = floor(v) + [u < frac(v) * 2^24], clamped; E[q*scale] = x up to 2^-24*scale,
//               |x - q*scale| <= scale.
//   dequant: x' = q * scale. Cost: 1 read of x (the block max is taken in L1), b/8 bytes out per
//   element + 4/block bytes of scales.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define RP_QHD __host__ __device__ __forceinline__
#else
#define RP_QHD inline
#endif

namespace ringpress::quant {

// ------------------------------------------------------------------ fp16 / bf16 (float16.cc,
// bfloat16.cc). RNE; NaN -> quiet NaN (payload's top bits kept, quiet bit set); +-Inf -> +-Inf;
// fp16: |x| >= 65520 -> +-Inf (IEEE overflow under RNE), fp16 subnormals produced and read
// exactly. bf16: no overflow beyond RNE carry (values rounding past FLT_MAX become Inf).
// Decoding is exact (both formats are subsets of fp32); a signalling NaN is returned quiet.
void fp32_to_fp16(const float* x, std::size_t n, std::uint16_t* out, int threads = 1);
void fp16_to_fp32(const std::uint16_t* h, std::size_t n, float* out, int threads = 1);
void fp32_to_bf16(const float* x, std::size_t n, std::uint16_t* out, int threads = 1);
void bf16_to_fp32(const std::uint16_t* h, std::size_t n, float* out, int threads = 1);
// Which fp16 kernel runs here: "f16c" (hardware vcvtps2ph/vcvtph2ps) or "generic".
const char* fp16_kernel_name();
// The portable kernels regardless of the CPU (tests compare them to the hardware path).
void fp32_to_fp16_generic(const float* x, std::size_t n, std::uint16_t* out);
void fp16_to_fp32_generic(const std::uint16_t* h, std::size_t n, float* out);

// ------------------------------------------------------------------ blockwise int8/int4/int2
enum class Rounding : std::uint8_t { kNearest = 0, kStochastic = 1 };

struct BlockwiseParams {
  int bits = 8;             // 8, 4 or 2
  std::size_t block = 512;  // elements per scale, >= 1
  Rounding rounding = Rounding::kNearest;
  std::uint64_t seed = 0;    // stochastic only
  std::uint64_t offset = 0;  // PRNG counter of element 0 (encode a tensor in pieces)
  int threads = 1;
};

std::size_t num_blocks(std::size_t n, std::size_t block);      // ceil(n / block)
std::size_t blockwise_payload_bytes(std::size_t n, int bits);  // ceil(n * bits / 8)
// payload: blockwise_payload_bytes(n, bits) bytes; scales: num_blocks(n, block) floats.
void blockwise_encode(const float* x, std::size_t n, const BlockwiseParams& p,
                      std::uint8_t* payload, float* scales);
void blockwise_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                      const BlockwiseParams& p, float* out);
// out[i] += decoded[i] (float32 adds, the same as decoding into a buffer and adding that): one
// pass instead of two.
void blockwise_decode_add(const std::uint8_t* payload, const float* scales, std::size_t n,
                          const BlockwiseParams& p, float* out);
// out[i] = (out[i] + r[i]) + decoded[i]: the same with a residual added first, in the same pass.
void blockwise_decode_add_residual(const std::uint8_t* payload, const float* scales, std::size_t n,
                                   const BlockwiseParams& p, const float* r, float* out);
// Error feedback in the encode's own pass over each block (while it is in L1): with add, first
// x += r; then payload/scales = blockwise_encode(x), r = x - decode(payload), and with keep,
// x = decode(payload). The same bytes and values as those steps one after another. r must not
// be x (UsageError). A block holding NaN/Inf gets r = 0 (and, with keep, x = NaN).
void blockwise_encode_feedback(float* x, float* r, std::size_t n, const BlockwiseParams& p,
                               std::uint8_t* payload, float* scales, bool add, bool keep);

// ------------------------------------------------------------------ sign (EF-SignSGD)
// scale = mean|x| of the block (sum in double, fixed order), x' = +-scale. |payload| = ceil(n/8).
struct SignParams {
  std::size_t block = 512;
  int threads = 1;
};
std::size_t sign_payload_bytes(std::size_t n);
void sign_encode(const float* x, std::size_t n, const SignParams& p, std::uint8_t* payload,
                 float* scales);
void sign_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                 const SignParams& p, float* out);

// ------------------------------------------------------------------ ternary (TernGrad)
// scale = max|x| of the block; q in {-1, 0, +1} with P(q = sign(x)) = |x| / scale; packed as
// int2 (layout above). Exactly blockwise int2 with stochastic rounding (same codes, same PRNG).
struct TernaryParams {
  std::size_t block = 512;
  std::uint64_t seed = 0;
  std::uint64_t offset = 0;
  int threads = 1;
};
std::size_t ternary_payload_bytes(std::size_t n);  // ceil(n / 4)
void ternary_encode(const float* x, std::size_t n, const TernaryParams& p, std::uint8_t* payload,
                    float* scales);
void ternary_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                    const TernaryParams& p, float* out);

// ------------------------------------------------------------------ PRNG (prng.cc)
// Counter-based: prng_u32(seed, i) is a fixed function of (seed, i), identical on CPU and GPU.
//   key = splitmix64(seed); k0 = low 32 bits, k1 = high 32 bits
//   prng_u32 = mix32(mix32(lo32(i) + k0) ^ (k1 + hi32(i) * 0x9E3779B9))
// mix32: x ^= x>>16; x *= 0x21f0aaad; x ^= x>>15; x *= 0x735a2d97; x ^= x>>15 (a bijection).
std::uint32_t prng_u32(std::uint64_t seed, std::uint64_t index);

namespace detail {

RP_QHD std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
RP_QHD std::uint32_t mix32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x21f0aaadu;
  x ^= x >> 15;
  x *= 0x735a2d97u;
  x ^= x >> 15;
  return x;
}
// hc = k1 + hi32(i) * 0x9E3779B9 (constant while the high 32 bits of the counter are).
RP_QHD std::uint32_t prng_hi_key(std::uint32_t k1, std::uint32_t hi) {
  return k1 + hi * 0x9E3779B9u;
}
RP_QHD std::uint32_t prng_draw(std::uint32_t k0, std::uint32_t hc, std::uint32_t lo) {
  return mix32(mix32(lo + k0) ^ hc);
}

constexpr std::uint32_t kRoundMagicBits = 0x4B400000u;  // 1.5 * 2^23
constexpr float kRoundMagic = 12582912.0f;
constexpr float kTinyBlock = 0x1p-96f;           // below: pre-scale by 2^64
constexpr float kNaNScale = __builtin_nanf("");  // a non-finite block's scale (0x7fc00000)
constexpr float kPreScale = 0x1p64f;

RP_QHD int qmax_for_bits(int bits) {
  return bits == 8 ? 127 : bits == 4 ? 7 : 1;
}

#if !defined(__CUDACC__)
// Shared plumbing of the CPU kernels (blockwise.cc). Not a stable API.
// Runs fn(first_block, end_block) over chunks of whole blocks whose first element is a multiple
// of 8 (so chunks never share a payload byte), on up to `threads` threads.
void for_each_chunk(std::size_t n, std::size_t block, int threads,
                    void (*fn)(void* ctx, std::size_t b0, std::size_t b1), void* ctx);
// Packs len codes (low `bits` bits of each q[j]) for elements [start, start + len) into the bit
// stream; bytes that begin inside the range are written whole (upper bits zeroed), a byte shared
// with earlier elements is read-modify-written. bits in {1, 2, 4}.
void pack_codes(const std::int8_t* q, std::size_t start, std::size_t len, int bits,
                std::uint8_t* payload);
// The inverse: sign-extended codes for bits 2 and 4, 0/1 for bits 1.
void unpack_codes(const std::uint8_t* payload, std::size_t start, std::size_t len, int bits,
                  std::int8_t* q);
void check_block(std::size_t block, const char* op);
#endif

}  // namespace detail
}  // namespace ringpress::quant

// 1-bit sign quantization with a per-block scale (EF-SignSGD; contract: ringpress/quantize.h).
//
// scale = mean|x| of the block (|x| summed in double over 8 fixed lanes, combined in a fixed
// order: identical for every thread count and kernel), x' = -scale if the sign bit of x is set,
// else +scale. The residual x - x' is what error feedback carries; there is no per-element bound
// beyond |x - x'| <= |x| + scale. Cost: one pass per block for the sum, one to pack the bits
// (block in L1); out: 1 bit per element + 4 bytes per block. A block with NaN/Inf input: a NaN
// scale and zero bits (quantize.h).
#include <cmath>
#include <cstring>

#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::quant {
namespace {

constexpr std::size_t kTile = 4096;

double sum_abs(const float* __restrict x, std::size_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) acc[k] += static_cast<double>(std::fabs(x[i + k]));
  }
  for (int k = 0; i < n; ++i, ++k) acc[k] += static_cast<double>(std::fabs(x[i]));
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

struct Ctx {
  const float* x;
  const std::uint8_t* in;
  const float* scales_in;
  std::size_t n, block;
  std::uint8_t* payload;
  float* scales;
  float* out;
};

void encode_chunk(void* vctx, std::size_t b0, std::size_t b1) {
  const Ctx& c = *static_cast<const Ctx*>(vctx);
  std::int8_t q[kTile];
  for (std::size_t b = b0; b < b1; ++b) {
    const std::size_t s = b * c.block;
    const std::size_t len = c.n - s < c.block ? c.n - s : c.block;
    const double sum = sum_abs(c.x + s, len);
    // NaN or +-Inf in the block: a NaN scale and zero bits (quantize.h; the GPU's bytes too).
    const bool bad = !std::isfinite(sum);
    c.scales[b] = bad ? detail::kNaNScale : static_cast<float>(sum / static_cast<double>(len));
    for (std::size_t t = 0; t < len; t += kTile) {
      const std::size_t tl = len - t < kTile ? len - t : kTile;
      const float* __restrict xs = c.x + s + t;
      for (std::size_t j = 0; j < tl; ++j) {
        std::uint32_t u;
        std::memcpy(&u, xs + j, 4);
        q[j] = static_cast<std::int8_t>(bad ? 0u : u >> 31);
      }
      detail::pack_codes(q, s + t, tl, 1, c.payload);
    }
  }
}

void decode_chunk(void* vctx, std::size_t b0, std::size_t b1) {
  const Ctx& c = *static_cast<const Ctx*>(vctx);
  std::int8_t q[kTile];
  for (std::size_t b = b0; b < b1; ++b) {
    const std::size_t s = b * c.block;
    const std::size_t len = c.n - s < c.block ? c.n - s : c.block;
    const float scale = c.scales_in[b];
    for (std::size_t t = 0; t < len; t += kTile) {
      const std::size_t tl = len - t < kTile ? len - t : kTile;
      detail::unpack_codes(c.in, s + t, tl, 1, q);
      float* __restrict o = c.out + s + t;
      for (std::size_t j = 0; j < tl; ++j) o[j] = q[j] ? -scale : scale;
    }
  }
}

void check(std::size_t n, std::size_t block, const void* a, const void* b, const void* d) {
  detail::check_block(block, "sign");
  RP_ENFORCE(n == 0 || (a && b && d), UsageError, "null buffer for ", n, " elements");
}

}  // namespace

std::size_t sign_payload_bytes(std::size_t n) {
  return n / 8 + (n % 8 != 0);
}

void sign_encode(const float* x, std::size_t n, const SignParams& p, std::uint8_t* payload,
                 float* scales) {
  ScopedErrorContext ctx("quant.sign_encode");
  check(n, p.block, x, payload, scales);
  Ctx c{x, nullptr, nullptr, n, p.block, payload, scales, nullptr};
  detail::for_each_chunk(n, p.block, p.threads, encode_chunk, &c);
}

void sign_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                 const SignParams& p, float* out) {
  ScopedErrorContext ctx("quant.sign_decode");
  check(n, p.block, payload, scales, out);
  Ctx c{nullptr, payload, scales, n, p.block, nullptr, nullptr, out};
  detail::for_each_chunk(n, p.block, p.threads, decode_chunk, &c);
}

}  // namespace ringpress::quant

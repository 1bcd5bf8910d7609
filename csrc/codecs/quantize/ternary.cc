// Ternary quantization (TernGrad; contract: ringpress/quantize.h).
//
// scale = max|x| of the block and q = sign(x) * Bernoulli(|x| / scale) is, term for term, the
// blockwise int2 quantizer with stochastic rounding (qmax = 1: v = x/scale in [-1, 1], q = floor(v)
// + [u < frac(v)], so P(q = sign x) = |v|), hence this file only fixes those parameters: codes,
// packing (2 bits, two's complement, element i at bits 2*(i%4) of byte i/4), PRNG and error
// handling are blockwise.cc's. Unbiased (up to 2^-24*scale), |x - x'| <= scale.
// Cost: one read of x, 2 bits per element + 4 bytes per block.
#include "ringpress/quantize.h"

namespace ringpress::quant {
namespace {
BlockwiseParams as_int2(const TernaryParams& p) {
  BlockwiseParams b;
  b.bits = 2;
  b.block = p.block;
  b.rounding = Rounding::kStochastic;
  b.seed = p.seed;
  b.offset = p.offset;
  b.threads = p.threads;
  return b;
}
}  // namespace

std::size_t ternary_payload_bytes(std::size_t n) {
  return n / 4 + (n % 4 != 0);
}

void ternary_encode(const float* x, std::size_t n, const TernaryParams& p, std::uint8_t* payload,
                    float* scales) {
  blockwise_encode(x, n, as_int2(p), payload, scales);
}

void ternary_decode(const std::uint8_t* payload, const float* scales, std::size_t n,
                    const TernaryParams& p, float* out) {
  blockwise_decode(payload, scales, n, as_int2(p), out);
}

}  // namespace ringpress::quant

// Counter-based PRNG of the stochastic quantizers (formula: ringpress/quantize.h).
//
// Contract: prng_u32(seed, i) depends only on (seed, i); the CUDA twins evaluate the same inline
// helpers (detail::mix32 / prng_draw), so CPU and GPU draw identical numbers.
// Cost: two 32-bit multiply-xorshift rounds per draw (the key derivation is per call, not per
// element), all 32-bit lanes so the kernels vectorise it.
#include "ringpress/quantize.h"

namespace ringpress::quant {

std::uint32_t prng_u32(std::uint64_t seed, std::uint64_t index) {
  const std::uint64_t key = detail::splitmix64(seed);
  const auto k0 = static_cast<std::uint32_t>(key);
  const auto k1 = static_cast<std::uint32_t>(key >> 32);
  return detail::prng_draw(k0, detail::prng_hi_key(k1, static_cast<std::uint32_t>(index >> 32)),
                           static_cast<std::uint32_t>(index));
}

}  // namespace ringpress::quant

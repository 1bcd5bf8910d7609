// CUDA twins of the sub-byte quantizers (ringpress/cuda.h, csrc/cuda/quantize.cu) against the CPU
// kernels (ringpress/quantize.h): payload bytes, scales (bit patterns) and decoded floats must be
// identical for blockwise int8/int4/int2 (nearest and stochastic with the same seed/offset, incl.
// an offset whose low 32 bits wrap inside the tensor), sign and ternary, over sizes 0, 1, 7,
// block-1, block+1, 1e5+3 and block sizes 1, 3, 64, 512, with subnormal, tiny (pre-scaled), huge
// (near FLT_MAX) and zero (+-0) blocks mixed in. GPU comparisons GTEST_SKIP without a device or
// without CUDA support; argument checks and the no-device errors run everywhere.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "ringpress/cuda.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

using namespace ringpress;
using namespace ringpress::quant;

namespace {

#define RP_REQUIRE_GPU()                                                  \
  do {                                                                    \
    if (!cuda::built()) GTEST_SKIP() << "built without CUDA support";     \
    if (cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device here"; \
  } while (0)

const std::size_t kBlocks[] = {1, 3, 64, 512};

std::vector<std::size_t> sizes_for(std::size_t block) {
  std::set<std::size_t> s = {0, 1, 7, block - 1, block + 1, 100003};
  return {s.begin(), s.end()};
}

// Normal data; block b (b % 6) is: 0, 5 normal; 1 subnormal; 2 tiny normal (max < 2^-96, the
// pre-scaled path); 3 huge (one element +-FLT_MAX, the scale step-down); 4 all zeros (+0/-0).
std::vector<float> make_data(std::size_t n, std::size_t block, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(n);
  for (std::size_t i = 0; i < n; ++i) {
    const float v = d(rng);
    const std::size_t b = i / block, r = i % block;
    switch (b % 6) {
      case 1: x[i] = std::ldexp(v, -135); break;
      case 2: x[i] = std::ldexp(v, -110); break;
      case 3: x[i] = r == 0 ? (v < 0 ? -FLT_MAX : FLT_MAX) : v * 1e37f; break;
      case 4: x[i] = (i & 1) ? -0.0f : 0.0f; break;
      default: x[i] = v; break;
    }
  }
  return x;
}

std::vector<std::uint32_t> bits_of(const std::vector<float>& v) {
  std::vector<std::uint32_t> u(v.size());
  if (!v.empty()) std::memcpy(u.data(), v.data(), v.size() * 4);
  return u;
}

struct Case {
  int bits;  // 8, 4, 2 (blockwise), 1 (sign), -2 (ternary)
  std::size_t block;
  bool stochastic;
  std::uint64_t seed, offset;
};

std::string describe(const Case& c, std::size_t n) {
  return "bits " + std::to_string(c.bits) + " block " + std::to_string(c.block) + " n " +
         std::to_string(n) + (c.stochastic ? " stochastic seed " : " nearest") +
         (c.stochastic ? std::to_string(c.seed) + " offset " + std::to_string(c.offset) : "");
}

std::size_t payload_size(int bits, std::size_t n) {
  if (bits == 1) return sign_payload_bytes(n);
  if (bits == -2) return ternary_payload_bytes(n);
  return blockwise_payload_bytes(n, bits);
}

void cpu_encode(const Case& c, const std::vector<float>& x, std::uint8_t* p, float* s) {
  if (c.bits == 1) {
    SignParams sp;
    sp.block = c.block;
    sign_encode(x.data(), x.size(), sp, p, s);
  } else if (c.bits == -2) {
    TernaryParams tp;
    tp.block = c.block;
    tp.seed = c.seed;
    tp.offset = c.offset;
    ternary_encode(x.data(), x.size(), tp, p, s);
  } else {
    BlockwiseParams bp;
    bp.bits = c.bits;
    bp.block = c.block;
    bp.rounding = c.stochastic ? Rounding::kStochastic : Rounding::kNearest;
    bp.seed = c.seed;
    bp.offset = c.offset;
    blockwise_encode(x.data(), x.size(), bp, p, s);
  }
}

void cpu_decode(const Case& c, const std::uint8_t* p, const float* s, std::size_t n, float* out) {
  if (c.bits == 1) {
    SignParams sp;
    sp.block = c.block;
    sign_decode(p, s, n, sp, out);
  } else {
    BlockwiseParams bp;
    bp.bits = c.bits == -2 ? 2 : c.bits;
    bp.block = c.block;
    blockwise_decode(p, s, n, bp, out);
  }
}

void gpu_encode(const Case& c, const std::vector<float>& x, std::uint8_t* p, float* s) {
  if (c.bits == 1) {
    cuda::sign_encode_host_staged(x.data(), x.size(), c.block, p, s);
  } else if (c.bits == -2) {
    cuda::ternary_encode_host_staged(x.data(), x.size(), c.block, c.seed, c.offset, p, s);
  } else {
    cuda::quantize_blockwise_host_staged(x.data(), x.size(), c.bits, c.block, c.stochastic, c.seed,
                                         c.offset, p, s);
  }
}

void gpu_decode(const Case& c, const std::uint8_t* p, const float* s, std::size_t n, float* out) {
  if (c.bits == 1) {
    cuda::sign_decode_host_staged(p, s, n, c.block, out);
  } else if (c.bits == -2) {
    cuda::ternary_decode_host_staged(p, s, n, c.block, out);
  } else {
    cuda::dequantize_blockwise_host_staged(p, s, n, c.bits, c.block, out);
  }
}

// Encodes x on both sides (outputs carry a guard element: no overrun), compares payload and scale
// bits, then decodes the CPU payload on both sides and compares the floats bit for bit.
void compare(const Case& c, const std::vector<float>& x) {
  const std::size_t n = x.size();
  SCOPED_TRACE(describe(c, n));
  const std::size_t pb = payload_size(c.bits, n), nb = num_blocks(n, c.block);
  std::vector<std::uint8_t> cp(pb + 1, 0xA5), gp(pb + 1, 0x5A);
  std::vector<float> cs(nb + 1, -7.0f), gs(nb + 1, -9.0f);
  cpu_encode(c, x, cp.data(), cs.data());
  gpu_encode(c, x, gp.data(), gs.data());
  ASSERT_EQ(gp.back(), 0x5A) << "payload overrun";
  ASSERT_EQ(gs.back(), -9.0f) << "scales overrun";
  cp.pop_back();
  gp.pop_back();
  cs.pop_back();
  gs.pop_back();
  ASSERT_EQ(bits_of(gs), bits_of(cs)) << "scales differ";
  for (std::size_t i = 0; i < pb; ++i) {
    ASSERT_EQ(int(gp[i]), int(cp[i]))
        << "payload byte " << i << " (elements from " << i * 8 / (c.bits < 0 ? 2 : c.bits) << ")";
  }
  std::vector<float> cd(n + 1, -3.0f), gd(n + 1, -5.0f);
  cpu_decode(c, cp.data(), cs.data(), n, cd.data());
  gpu_decode(c, cp.data(), cs.data(), n, gd.data());
  ASSERT_EQ(gd.back(), -5.0f) << "decode overrun";
  cd.pop_back();
  gd.pop_back();
  const auto a = bits_of(cd), b = bits_of(gd);
  for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(b[i], a[i]) << "decoded element " << i;
}

constexpr std::uint64_t kSeed = 0x5EED1234ABCDull;
// Low 32 bits of the counter wrap after 70 elements: the high key changes mid-tensor.
constexpr std::uint64_t kWrapOffset = (std::uint64_t(7) << 32) - 70;

}  // namespace

TEST(CudaQuantize, BlockwiseMatchesCpuBytes) {
  RP_REQUIRE_GPU();
  for (int bits : {8, 4, 2}) {
    for (std::size_t block : kBlocks) {
      for (std::size_t n : sizes_for(block)) {
        const auto x = make_data(n, block, static_cast<std::uint32_t>(n * 31 + block));
        compare({bits, block, false, 0, 0}, x);
        compare({bits, block, true, kSeed, 0}, x);
        compare({bits, block, true, kSeed + 1, kWrapOffset}, x);
      }
    }
  }
}

TEST(CudaQuantize, SignMatchesCpuBytes) {
  RP_REQUIRE_GPU();
  for (std::size_t block : {std::size_t(1), std::size_t(3), std::size_t(7), std::size_t(64),
                            std::size_t(512), std::size_t(100003)}) {
    for (std::size_t n : sizes_for(block)) {
      compare({1, block, false, 0, 0}, make_data(n, block, static_cast<std::uint32_t>(n + block)));
    }
  }
}

TEST(CudaQuantize, SignScaleKeepsTheCpuSumOrder) {
  RP_REQUIRE_GPU();
  // A block whose float scale changes under each of these other summation orders (sequential, other
  // lane pairings, a plain or fp32 running sum), repeated with normal blocks around it.
  const float e52 = 0x1p-52f, e53 = 0x1p-53f, e54 = 0x1p-54f, e24 = 0x1p-24f;
  const std::vector<float> crafted = {
      e52,  -1.5f, -e52, 1.0f, 0.75f, -e54,  0.75f, -(1.0f + 0x1p-23f),
      -e54, -e53,  e53,  1.0f, -e24,  0.75f, e54,   -e24};
  auto x = make_data(16 * 40, 16, 5);
  for (std::size_t b = 0; b < 40; b += 3) {
    std::copy(crafted.begin(), crafted.end(), x.begin() + b * 16);
  }
  compare({1, 16, false, 0, 0}, crafted);
  compare({1, 16, false, 0, 0}, x);
}

TEST(CudaQuantize, TernaryMatchesCpuBytes) {
  RP_REQUIRE_GPU();
  for (std::size_t block : kBlocks) {
    for (std::size_t n : sizes_for(block)) {
      const auto x = make_data(n, block, static_cast<std::uint32_t>(n * 7 + block));
      compare({-2, block, true, 0, 0}, x);
      compare({-2, block, true, kSeed, kWrapOffset}, x);
    }
  }
}

TEST(CudaQuantize, GridTiesAndInt2CodeMinusTwo) {
  RP_REQUIRE_GPU();
  // Exact half-steps (round half to even) in int8, int4 and int2 blocks.
  std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 126.5f, -3.5f,
                          7.0f,   0.5f, 1.5f, 2.5f, -2.5f, -6.5f, 6.5f,   -7.0f};
  for (int bits : {8, 4, 2}) {
    for (std::size_t block : {std::size_t(8), std::size_t(5)}) {
      compare({bits, block, false, 0, 0}, x);
      compare({bits, block, true, 3, 0}, x);
    }
  }
  // The int2 code 10 (never produced) decodes to -2 * scale on both sides.
  const std::vector<std::uint8_t> p = {0x8A, 0x02};  // codes -2, -2, 0, -2, -2
  const std::vector<float> s = {0.5f, 2.0f};
  std::vector<float> cd(5), gd(5);
  BlockwiseParams bp;
  bp.bits = 2;
  bp.block = 3;
  blockwise_decode(p.data(), s.data(), 5, bp, cd.data());
  cuda::dequantize_blockwise_host_staged(p.data(), s.data(), 5, 2, 3, gd.data());
  EXPECT_EQ(bits_of(gd), bits_of(cd));
}

TEST(CudaQuantize, NonFiniteBlockGetsTheCpusNaNScaleAndZeroCodes) {
  RP_REQUIRE_GPU();
  const std::size_t n = 1000, block = 64, bad_block = 3;
  for (float bad :
       {std::numeric_limits<float>::quiet_NaN(), -std::numeric_limits<float>::infinity()}) {
    auto x = make_data(n, block, 77);
    auto zeroed = x;
    for (std::size_t i = bad_block * block; i < (bad_block + 1) * block; ++i) zeroed[i] = 0.0f;
    x[bad_block * block + 10] = bad;
    for (int bits : {8, 4, 2, 1, -2}) {
      SCOPED_TRACE("bits " + std::to_string(bits));
      const Case c{bits, block, bits == -2, 11, 0};
      std::vector<std::uint8_t> cp(payload_size(bits, n)), gp(cp.size()), zp(cp.size());
      std::vector<float> cs(num_blocks(n, block)), gs(cs.size()), zs(cs.size());
      cpu_encode(c, x, cp.data(), cs.data());
      gpu_encode(c, x, gp.data(), gs.data());
      EXPECT_EQ(bits_of(gs), bits_of(cs));
      EXPECT_EQ(gp, cp);
      // The bad block: a NaN scale and zero codes; everything else is the encoding of the rest
      // (a zero block also has zero codes: sign codes of +0 are 0 too).
      std::uint32_t u;
      std::memcpy(&u, &cs[bad_block], 4);
      EXPECT_EQ(u, 0x7fc00000u);
      cpu_encode(c, zeroed, zp.data(), zs.data());
      zs[bad_block] = cs[bad_block];
      EXPECT_EQ(bits_of(zs), bits_of(cs));
      EXPECT_EQ(zp, cp);
      // Both decode the block to the same NaN bits (0x7fc00000; not the device's canonical NaN).
      std::vector<float> cd(n), gd(n);
      cpu_decode(c, cp.data(), cs.data(), n, cd.data());
      gpu_decode(c, cp.data(), cs.data(), n, gd.data());
      EXPECT_EQ(bits_of(gd), bits_of(cd));
      std::memcpy(&u, &cd[bad_block * block], 4);
      EXPECT_EQ(u, 0x7fc00000u);
    }
  }
}

// Runs everywhere: argument checks come first, then the no-device / no-CUDA errors.
TEST(CudaQuantize, ArgumentChecksAndNoDeviceErrors) {
  std::vector<float> x(16, 1.0f), out(16);
  std::vector<std::uint8_t> p(16);
  std::vector<float> s(16);
  EXPECT_THROW(
      cuda::quantize_blockwise_host_staged(x.data(), 16, 3, 4, false, 0, 0, p.data(), s.data()),
      UsageError);
  EXPECT_THROW(
      cuda::quantize_blockwise_host_staged(x.data(), 16, 4, 0, false, 0, 0, p.data(), s.data()),
      UsageError);
  EXPECT_THROW(cuda::sign_encode_host_staged(x.data(), 16, 0, p.data(), s.data()), UsageError);
  EXPECT_THROW(cuda::ternary_decode_host_staged(p.data(), s.data(), 16, 0, out.data()), UsageError);
  EXPECT_THROW(
      cuda::quantize_blockwise_device(x.data(), 16, 1, 4, false, 0, 0, p.data(), s.data(), nullptr),
      UsageError);
  EXPECT_THROW(cuda::dequantize_blockwise_device(p.data(), s.data(), 16, 4, 0, out.data(), nullptr),
               UsageError);
  EXPECT_THROW(cuda::sign_decode_device(nullptr, s.data(), 16, 4, out.data(), nullptr), UsageError);
  if (cuda::built() && cuda::device_count() > 0) return;
  const char* want = cuda::built() ? "no CUDA device" : "no CUDA support";
  try {
    cuda::quantize_blockwise_host_staged(x.data(), 16, 4, 4, true, 1, 2, p.data(), s.data());
    ADD_FAILURE() << "expected UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
  }
  EXPECT_THROW(cuda::sign_decode_host_staged(p.data(), s.data(), 16, 4, out.data()), UsageError);
  EXPECT_THROW(cuda::ternary_encode_host_staged(x.data(), 16, 4, 1, 2, p.data(), s.data()),
               UsageError);
  EXPECT_THROW(cuda::dequantize_blockwise_host_staged(p.data(), s.data(), 16, 2, 4, out.data()),
               UsageError);
}

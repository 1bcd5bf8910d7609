// Quantization kernels (ringpress/quantize.h): fp16/bf16 RNE against long-double / integer
// references, explicit tie and special cases and (when the CPU has it) the F16C instruction;
// blockwise int8/int4/int2, sign and ternary: error bounds, grid exactness, packing layout from the
// header's formulas, short last blocks, n = 0/1, bad parameters, non-finite input, determinism
// across thread counts/seeds/offsets, stochastic unbiasedness and the int8 relative L2 error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RP_TEST_X86 1
#else
#define RP_TEST_X86 0
#endif

using namespace ringpress;
using namespace ringpress::quant;

namespace {

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
std::uint32_t to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// Reference fp32 -> fp16 with long double arithmetic and nearbyintl (RNE).
std::uint16_t ref_f16(float x) {
  const std::uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (std::isnan(x)) return 0xffff;  // only "is NaN" is compared
  const long double a = std::fabs(static_cast<long double>(x));
  if (std::isinf(x)) return sign | 0x7c00;
  if (a == 0) return sign;
  int e = std::ilogb(static_cast<float>(a));
  if (e < -14) e = -14;
  const long double q = std::nearbyintl(std::ldexp(a, 10 - e));  // in [0, 2048]
  long bits =
      e == -14 && q < 1024 ? static_cast<long>(q) : ((e + 15L) << 10) + static_cast<long>(q) - 1024;
  if (bits >= 0x7c00) bits = 0x7c00;
  return static_cast<std::uint16_t>(sign | bits);
}

float ref_f16_value(std::uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  float v;
  if (e == 31) {
    v = m ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else if (e == 0) {
    v = std::ldexp(static_cast<float>(m), -24);
  } else {
    v = std::ldexp(static_cast<float>(m + 1024), e - 25);
  }
  return (h & 0x8000) ? -v : v;
}

std::uint16_t ref_bf16(float x) {
  const std::uint32_t u = to_bits(x);
  if (std::isnan(x)) return 0xffff;
  const std::uint32_t hi = u >> 16, lo = u & 0xffff;
  return static_cast<std::uint16_t>(hi + (lo > 0x8000 || (lo == 0x8000 && (hi & 1))));
}

bool f16_is_nan(std::uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
}
bool bf16_is_nan(std::uint16_t h) {
  return (h & 0x7f80) == 0x7f80 && (h & 0x7f);
}

std::vector<std::uint32_t> interesting_bits(std::size_t nrand) {
  std::vector<std::uint32_t> v = {0x00000000, 0x80000000, 0x7f800000, 0xff800000, 0x7fc00000,
                                  0x7f800001, 0xffbfffff, 0x7f7fffff, 0x00000001, 0x807fffff,
                                  0x477fefff, 0x477ff000, 0x477ff001, 0x387fffff, 0x38800000,
                                  0x33000000, 0x33000001, 0x32ffffff, 0x33c00000, 0x3f800000,
                                  0x3f801000, 0x3f803000, 0x3f801001, 0x3f808000, 0x3f818000};
  // All halfway points and neighbours of every fp16 value, then random patterns.
  for (std::uint32_t h = 0; h < 0x7c00; h += 7) {
    const float a = ref_f16_value(static_cast<std::uint16_t>(h));
    const float b = ref_f16_value(static_cast<std::uint16_t>(h + 1));
    const float mid = static_cast<float>((static_cast<double>(a) + b) / 2);
    for (std::uint32_t d : {0u, 1u, 0xffffffffu}) v.push_back(to_bits(mid) + d);
  }
  std::mt19937 rng(42);
  for (std::size_t i = 0; i < nrand; ++i) v.push_back(rng());
  return v;
}

// Code of element i per the header's packing formulas.
int ref_code(const std::vector<std::uint8_t>& payload, std::size_t i, int bits) {
  const std::size_t bit = i * bits;
  int c = (payload[bit / 8] >> (bit % 8)) & ((1 << bits) - 1);
  if (bits > 1 && (c >> (bits - 1))) c -= 1 << bits;
  return c;
}

std::vector<float> normal_data(std::size_t n, std::uint32_t seed, float sd = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, sd);
  std::vector<float> x(n);
  for (auto& v : x) v = d(rng);
  return x;
}

struct Encoded {
  std::vector<std::uint8_t> payload;
  std::vector<float> scales;
  std::vector<float> dq;
};

Encoded run_blockwise(const std::vector<float>& x, const BlockwiseParams& p) {
  Encoded e;
  const std::size_t n = x.size();
  e.payload.assign(blockwise_payload_bytes(n, p.bits) + 1, 0xA5);
  e.scales.assign(num_blocks(n, p.block) + 1, -7.0f);
  blockwise_encode(x.data(), n, p, e.payload.data(), e.scales.data());
  EXPECT_EQ(e.payload.back(), 0xA5) << "payload overrun";
  EXPECT_EQ(e.scales.back(), -7.0f) << "scales overrun";
  e.payload.pop_back();
  e.scales.pop_back();
  e.dq.assign(n, 0.0f);
  blockwise_decode(e.payload.data(), e.scales.data(), n, p, e.dq.data());
  return e;
}

}  // namespace

// ------------------------------------------------------------------ PRNG
TEST(QuantizePrng, DeterministicAndSeeded) {
  EXPECT_EQ(prng_u32(1, 5), prng_u32(1, 5));
  EXPECT_NE(prng_u32(1, 5), prng_u32(2, 5));
  EXPECT_NE(prng_u32(1, 5), prng_u32(1, 6));
  EXPECT_NE(prng_u32(1, 5), prng_u32(1, 5 + (std::uint64_t(1) << 32)));
  // Roughly uniform: mean of the top bit over many counters.
  int ones = 0;
  for (std::uint64_t i = 0; i < 100000; ++i) ones += prng_u32(9, i) >> 31;
  EXPECT_NEAR(ones / 100000.0, 0.5, 0.01);
}

// ------------------------------------------------------------------ fp16
TEST(QuantizeFp16, KnownBitPatterns) {
  struct Case {
    std::uint32_t in;
    std::uint16_t out;
  } cases[] = {
      {0x3f800000, 0x3c00},                        // 1.0
      {0xbf800000, 0xbc00},                        // -1.0
      {0x00000000, 0x0000}, {0x80000000, 0x8000},  // +-0
      {0x477fe000, 0x7bff},                        // 65504 (max)
      {0x477fefff, 0x7bff},                        // just below the overflow midpoint
      {0x477ff000, 0x7c00},                        // 65520: tie, rounds to even = Inf
      {0x7f7fffff, 0x7c00},                        // FLT_MAX -> Inf
      {0x7f800000, 0x7c00}, {0xff800000, 0xfc00},  // +-Inf
      {0x33800000, 0x0001},                        // 2^-24: smallest subnormal
      {0x33000000, 0x0000},                        // 2^-25: tie between 0 and 2^-24 -> 0 (even)
      {0x33000001, 0x0001},                        // just above the tie
      {0x33c00000, 0x0002},                        // 1.5 * 2^-24: tie between 1 and 2 -> 2
      {0x34200000, 0x0002},                        // 2.5 * 2^-24: tie between 2 and 3 -> 2
      {0x387fc000, 0x03ff},                        // largest subnormal
      {0x387fe000, 0x0400},  // tie between largest subnormal and smallest normal -> 0x400
      {0x38800000, 0x0400},  // 2^-14
      {0x3f801000, 0x3c00},  // 1 + 2^-11: tie -> 1.0 (even)
      {0x3f803000, 0x3c02},  // 1 + 3*2^-11: tie -> 1 + 2^-9 (even)
      {0x3f801001, 0x3c01},  // just above a tie
      {0x00000001, 0x0000},  // fp32 denormal -> 0
  };
  for (const auto& c : cases) {
    const float x = from_bits(c.in);
    std::uint16_t h = 0, g = 0;
    fp32_to_fp16(&x, 1, &h);
    fp32_to_fp16_generic(&x, 1, &g);
    EXPECT_EQ(h, c.out) << std::hex << "input 0x" << c.in;
    EXPECT_EQ(g, c.out) << std::hex << "input 0x" << c.in << " (generic)";
  }
  // NaN stays NaN (quiet), sign kept.
  for (std::uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xffa00000u, 0x7fffffffu}) {
    const float x = from_bits(nan);
    std::uint16_t h = 0, g = 0;
    fp32_to_fp16(&x, 1, &h);
    fp32_to_fp16_generic(&x, 1, &g);
    EXPECT_TRUE(f16_is_nan(h) && (h & 0x0200)) << std::hex << h;
    EXPECT_TRUE(f16_is_nan(g) && (g & 0x0200)) << std::hex << g;
    EXPECT_EQ(h >> 15, nan >> 31);
  }
}

TEST(QuantizeFp16, MatchesLongDoubleReference) {
  const auto bits = interesting_bits(1 << 20);
  std::vector<float> x(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) x[i] = from_bits(bits[i]);
  std::vector<std::uint16_t> h(x.size()), g(x.size());
  fp32_to_fp16(x.data(), x.size(), h.data(), 3);
  fp32_to_fp16_generic(x.data(), x.size(), g.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::uint16_t r = ref_f16(x[i]);
    if (r == 0xffff) {
      ASSERT_TRUE(f16_is_nan(h[i]) && f16_is_nan(g[i])) << i;
      continue;
    }
    ASSERT_EQ(h[i], r) << std::hex << "input 0x" << bits[i];
    ASSERT_EQ(g[i], r) << std::hex << "input 0x" << bits[i] << " (generic)";
  }
}

#if RP_TEST_X86
__attribute__((target("f16c"))) static std::uint16_t hw_f16(float x) {
  return static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) static float hw_f32(std::uint16_t h) {
  return _cvtsh_ss(h);
}
#endif

TEST(QuantizeFp16, GenericMatchesF16CInstructionBitForBit) {
#if RP_TEST_X86
  if (!cpu_features().f16c) GTEST_SKIP() << "CPU has no F16C";
  const auto bits = interesting_bits(1 << 20);
  std::vector<float> x(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) x[i] = from_bits(bits[i]);
  std::vector<std::uint16_t> g(x.size());
  fp32_to_fp16_generic(x.data(), x.size(), g.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    ASSERT_EQ(g[i], hw_f16(x[i])) << std::hex << "input 0x" << bits[i];
  }
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<float> f(all.size());
  fp16_to_fp32_generic(all.data(), all.size(), f.data());
  for (std::size_t i = 0; i < all.size(); ++i) {
    ASSERT_EQ(to_bits(f[i]), to_bits(hw_f32(all[i]))) << std::hex << "half 0x" << i;
  }
#else
  GTEST_SKIP() << "not x86";
#endif
}

TEST(QuantizeFp16, DecodeEveryHalfExactlyAndRoundTrip) {
  std::vector<std::uint16_t> all(65536);
  for (std::size_t i = 0; i < all.size(); ++i) all[i] = static_cast<std::uint16_t>(i);
  std::vector<float> f(all.size()), g(all.size());
  fp16_to_fp32(all.data(), all.size(), f.data(), 2);
  fp16_to_fp32_generic(all.data(), all.size(), g.data());
  std::vector<std::uint16_t> back(all.size());
  fp32_to_fp16(f.data(), f.size(), back.data());
  for (std::size_t i = 0; i < all.size(); ++i) {
    const float r = ref_f16_value(all[i]);
    if (std::isnan(r)) {
      ASSERT_TRUE(std::isnan(f[i]) && std::isnan(g[i])) << i;
      ASSERT_TRUE(to_bits(f[i]) & 0x00400000) << "NaN not quiet " << i;
      ASSERT_TRUE(to_bits(g[i]) & 0x00400000) << "NaN not quiet " << i;
      ASSERT_TRUE(f16_is_nan(back[i]));
      continue;
    }
    ASSERT_EQ(to_bits(f[i]), to_bits(r)) << std::hex << "half 0x" << i;
    ASSERT_EQ(to_bits(g[i]), to_bits(r)) << std::hex << "half 0x" << i;
    ASSERT_EQ(back[i], all[i]);
  }
}

// ------------------------------------------------------------------ bf16
TEST(QuantizeBf16, RneTiesSpecialsAndReference) {
  struct Case {
    std::uint32_t in;
    std::uint16_t out;
  } cases[] = {
      {0x3f800000, 0x3f80}, {0x3f808000, 0x3f80},  // tie -> even
      {0x3f818000, 0x3f82}, {0x3f808001, 0x3f81}, {0x3f807fff, 0x3f80},
      {0x7f7fffff, 0x7f80},  // FLT_MAX rounds to Inf
      {0x7f800000, 0x7f80}, {0xff800000, 0xff80}, {0x80000000, 0x8000},
      {0x00000001, 0x0000}, {0x00008000, 0x0000}, {0x00018000, 0x0002},  // denormals
  };
  for (const auto& c : cases) {
    const float x = from_bits(c.in);
    std::uint16_t h = 0;
    fp32_to_bf16(&x, 1, &h);
    EXPECT_EQ(h, c.out) << std::hex << "input 0x" << c.in;
  }
  for (std::uint32_t nan : {0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu}) {
    const float x = from_bits(nan);
    std::uint16_t h = 0;
    fp32_to_bf16(&x, 1, &h);
    EXPECT_TRUE(bf16_is_nan(h) && (h & 0x40)) << std::hex << h;
    float back = 0;
    fp16_to_fp32(&h, 0, &back);  // n = 0 is a no-op
    bf16_to_fp32(&h, 1, &back);
    EXPECT_TRUE(std::isnan(back));
  }
  const auto bits = interesting_bits(1 << 20);
  std::vector<float> x(bits.size());
  for (std::size_t i = 0; i < bits.size(); ++i) x[i] = from_bits(bits[i]);
  std::vector<std::uint16_t> h(x.size());
  fp32_to_bf16(x.data(), x.size(), h.data(), 3);
  std::vector<float> back(x.size());
  bf16_to_fp32(h.data(), h.size(), back.data(), 2);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const std::uint16_t r = ref_bf16(x[i]);
    if (r == 0xffff) {
      ASSERT_TRUE(bf16_is_nan(h[i]) && std::isnan(back[i])) << i;
      continue;
    }
    ASSERT_EQ(h[i], r) << std::hex << "input 0x" << bits[i];
    ASSERT_EQ(to_bits(back[i]), static_cast<std::uint32_t>(r) << 16);
  }
}

TEST(QuantizeConvert, ThreadCountsGiveIdenticalOutput) {
  const auto x = normal_data((1 << 18) + 13, 3);
  std::vector<std::uint16_t> a(x.size()), b(x.size()), c(x.size()), d(x.size());
  fp32_to_fp16(x.data(), x.size(), a.data(), 1);
  fp32_to_fp16(x.data(), x.size(), b.data(), 4);
  fp32_to_bf16(x.data(), x.size(), c.data(), 1);
  fp32_to_bf16(x.data(), x.size(), d.data(), 4);
  EXPECT_EQ(a, b);
  EXPECT_EQ(c, d);
  EXPECT_THROW(fp32_to_fp16(nullptr, 4, a.data()), UsageError);
}

// ------------------------------------------------------------------ blockwise
TEST(QuantizeBlockwise, ErrorBoundsAllWidthsBlocksAndSizes) {
  for (int bits : {8, 4, 2}) {
    const int qmax = bits == 8 ? 127 : bits == 4 ? 7 : 1;
    for (auto rounding : {Rounding::kNearest, Rounding::kStochastic}) {
      for (std::size_t block : {1u, 3u, 7u, 64u, 512u, 1000u}) {
        for (std::size_t n : {0u, 1u, 2u, 5u, 513u, 4099u}) {
          auto x = normal_data(n, static_cast<std::uint32_t>(n * 31 + block), 2.5f);
          BlockwiseParams p;
          p.bits = bits;
          p.block = block;
          p.rounding = rounding;
          p.seed = 11;
          const Encoded e = run_blockwise(x, p);
          ASSERT_EQ(e.scales.size(), (n + block - 1) / block);
          for (std::size_t i = 0; i < n; ++i) {
            const std::size_t b = i / block;
            const std::size_t s = b * block, len = std::min(block, n - s);
            float m = 0;
            for (std::size_t j = s; j < s + len; ++j) m = std::max(m, std::fabs(x[j]));
            ASSERT_EQ(e.scales[b], m / qmax);
            const int c = ref_code(e.payload, i, bits);
            ASSERT_LE(std::abs(c), qmax);
            ASSERT_EQ(e.dq[i], static_cast<float>(c) * e.scales[b]);
            const float bound =
                (rounding == Rounding::kNearest ? 0.5f : 1.0f) * e.scales[b] * (1 + 1e-5f);
            ASSERT_LE(std::fabs(x[i] - e.dq[i]), bound)
                << "bits " << bits << " block " << block << " n " << n << " i " << i;
          }
          // Unused high bits of the final byte are zero.
          if (bits < 8 && (n * bits) % 8) {
            ASSERT_EQ(e.payload.back() >> ((n * bits) % 8), 0);
          }
        }
      }
    }
  }
}

TEST(QuantizeBlockwise, ExactOnTheGridAndZeroBlocks) {
  for (int bits : {8, 4, 2}) {
    const int qmax = bits == 8 ? 127 : bits == 4 ? 7 : 1;
    const float s = 0.125f;
    std::vector<float> x;
    for (int k = -qmax; k <= qmax; ++k) x.push_back(k * s);  // max = qmax*s in the block
    x.resize(64, 0.0f);
    x.insert(x.end(), 64, 0.0f);  // an all-zero block
    BlockwiseParams p;
    p.bits = bits;
    p.block = 64;
    for (auto r : {Rounding::kNearest, Rounding::kStochastic}) {
      p.rounding = r;
      const Encoded e = run_blockwise(x, p);
      EXPECT_EQ(e.scales[0], s);
      EXPECT_EQ(e.scales[1], 0.0f);
      for (std::size_t i = 0; i < x.size(); ++i) {
        ASSERT_EQ(e.dq[i], x[i]) << "bits " << bits << " i " << i;
        if (i >= 64) ASSERT_EQ(ref_code(e.payload, i, bits), 0);
      }
    }
  }
}

TEST(QuantizeBlockwise, NearestTiesAndTinyBlocks) {
  // v = x/scale exactly k + 0.5: round half to even.
  std::vector<float> x = {127.0f, 0.5f, 1.5f, 2.5f, -0.5f, -1.5f, 126.5f, -3.5f};
  BlockwiseParams p;
  p.block = 8;
  Encoded e = run_blockwise(x, p);
  const int want[] = {127, 0, 2, 2, 0, -2, 126, -4};
  for (int i = 0; i < 8; ++i) EXPECT_EQ(ref_code(e.payload, i, 8), want[i]) << i;
  // Denormal-sized blocks: the scale stays finite and the bound holds.
  std::vector<float> tiny = {1e-40f, -3e-41f, 7e-42f, 0.0f, 1.4e-45f};
  for (int bits : {8, 4, 2}) {
    p.bits = bits;
    p.block = 5;
    e = run_blockwise(tiny, p);
    ASSERT_TRUE(std::isfinite(e.scales[0]));
    for (std::size_t i = 0; i < tiny.size(); ++i) {
      EXPECT_LE(std::fabs(tiny[i] - e.dq[i]), e.scales[0] * 0.5f + 1e-45f) << i;
    }
  }
}

TEST(QuantizeBlockwise, PackingLayout) {
  // int4, block 8, max 7 -> scale 1, codes are the values.
  std::vector<float> x = {7, -7, 1, 0, -1, 3, 2, -3, 5};
  BlockwiseParams p;
  p.bits = 4;
  p.block = 8;
  Encoded e = run_blockwise(x, p);
  ASSERT_EQ(e.payload.size(), 5u);
  EXPECT_EQ(e.payload[0], 0x97);  // 7 | (-7 & 15) << 4
  EXPECT_EQ(e.payload[1], 0x01);  // 1 | 0 << 4
  EXPECT_EQ(e.payload[2], 0x3f);  // -1 | 3 << 4
  EXPECT_EQ(e.payload[3], 0xd2);  // 2 | -3 << 4
  EXPECT_EQ(e.payload[4], 0x07);  // second block: 5 / (5/7) = 7, upper nibble 0
  // int2: {1, -1, 0, 1} -> 01, 11, 00, 01 -> 0b01001101.
  x = {1, -1, 0, 1, -1};
  p.bits = 2;
  p.block = 5;
  e = run_blockwise(x, p);
  ASSERT_EQ(e.payload.size(), 2u);
  EXPECT_EQ(e.payload[0], 0x4d);
  EXPECT_EQ(e.payload[1], 0x03);
  // int8: two's complement bytes; odd block (3) across the bit stream for int4.
  x = {-127, 127, 64, 1, -1, 2, 7};
  p.bits = 8;
  p.block = 3;
  e = run_blockwise(x, p);
  EXPECT_EQ(e.payload[0], 0x81);
  EXPECT_EQ(e.payload[1], 0x7f);
  p.bits = 4;
  e = run_blockwise(x, p);
  // block 0 (max 127): -7, 7, round(64*7/127) = 4; block 1 (max 2): 1*7/2 = 3.5 -> 4 (tie to
  // even), -3.5 -> -4, 2 -> 7; block 2: 7.
  const int want[] = {-7, 7, 4, 4, -4, 7, 7};
  for (int i = 0; i < 7; ++i) EXPECT_EQ(ref_code(e.payload, i, 4), want[i]) << i;
  EXPECT_EQ(e.payload[1], static_cast<std::uint8_t>(4 | (4 << 4)));
}

TEST(QuantizeBlockwise, SameResultForAnyThreadCountAndOffsetSplit) {
  const auto x = normal_data(300007, 5);
  for (int bits : {8, 4, 2}) {
    for (std::size_t block : {500u, 3u, 512u}) {
      for (auto r : {Rounding::kNearest, Rounding::kStochastic}) {
        BlockwiseParams p;
        p.bits = bits;
        p.block = block;
        p.rounding = r;
        p.seed = 1234;
        const Encoded ref = run_blockwise(x, p);
        for (int t : {2, 3, 8}) {
          p.threads = t;
          const Encoded e = run_blockwise(x, p);
          ASSERT_EQ(e.payload, ref.payload) << "threads " << t;
          ASSERT_EQ(e.scales, ref.scales);
          ASSERT_EQ(e.dq, ref.dq);
        }
        // Encoding in two pieces with offset = piece start gives the same stream.
        p.threads = 1;
        const std::size_t cut = block * 8 * 37;
        std::vector<float> a(x.begin(), x.begin() + cut), b(x.begin() + cut, x.end());
        const Encoded ea = run_blockwise(a, p);
        p.offset = cut;
        const Encoded eb = run_blockwise(b, p);
        std::vector<std::uint8_t> joined = ea.payload;
        joined.insert(joined.end(), eb.payload.begin(), eb.payload.end());
        ASSERT_EQ(joined, ref.payload);
      }
    }
  }
}

TEST(QuantizeBlockwise, SeedsChangeStochasticCodesOnly) {
  const auto x = normal_data(4096, 8);
  BlockwiseParams p;
  p.rounding = Rounding::kStochastic;
  p.seed = 1;
  const Encoded a = run_blockwise(x, p), a2 = run_blockwise(x, p);
  p.seed = 2;
  const Encoded b = run_blockwise(x, p);
  EXPECT_EQ(a.payload, a2.payload);
  EXPECT_NE(a.payload, b.payload);
  p.rounding = Rounding::kNearest;
  const Encoded n1 = run_blockwise(x, p);
  p.seed = 99;
  EXPECT_EQ(run_blockwise(x, p).payload, n1.payload);
}

TEST(QuantizeBlockwise, StochasticIsUnbiased) {
  // 16 values in one block; the mean of dequantized values over many seeds converges to x.
  std::vector<float> x = {1.0f,   -0.3f, 0.77f,  0.01f,  -0.99f, 0.5f,  0.25f, -0.6f,
                          0.123f, 0.9f,  -0.05f, 0.333f, -0.7f,  0.61f, 0.2f,  -0.44f};
  const int seeds = 4000;
  for (int bits : {8, 4, 2}) {
    BlockwiseParams p;
    p.bits = bits;
    p.block = 16;
    p.rounding = Rounding::kStochastic;
    std::vector<double> sum(x.size(), 0.0);
    float scale = 0;
    for (int s = 0; s < seeds; ++s) {
      p.seed = static_cast<std::uint64_t>(s) * 7919 + 1;
      const Encoded e = run_blockwise(x, p);
      scale = e.scales[0];
      for (std::size_t i = 0; i < x.size(); ++i) sum[i] += e.dq[i];
    }
    // Per draw the error is in [-scale, scale] with sd <= scale/2: 5 standard errors.
    const double tol = 5 * 0.5 * scale / std::sqrt(static_cast<double>(seeds));
    for (std::size_t i = 0; i < x.size(); ++i) {
      EXPECT_NEAR(sum[i] / seeds, x[i], tol) << "bits " << bits << " i " << i;
    }
  }
}

TEST(QuantizeBlockwise, Int8RelativeL2ErrorOnNormalData) {
  const auto x = normal_data(1 << 20, 77);
  for (auto r : {Rounding::kNearest, Rounding::kStochastic}) {
    BlockwiseParams p;
    p.rounding = r;
    p.threads = 2;
    const Encoded e = run_blockwise(x, p);
    double num = 0, den = 0;
    for (std::size_t i = 0; i < x.size(); ++i) {
      num += (double(x[i]) - e.dq[i]) * (double(x[i]) - e.dq[i]);
      den += double(x[i]) * x[i];
    }
    const double rel = std::sqrt(num / den);
    EXPECT_LT(rel, 0.02) << (r == Rounding::kNearest ? "nearest" : "stochastic");
    EXPECT_GT(rel, 0.001);
  }
}

TEST(QuantizeBlockwise, BadParametersAndNonFiniteInputRaiseUsageError) {
  std::vector<float> x(100, 1.0f), out(100);
  std::vector<std::uint8_t> payload(100);
  std::vector<float> scales(100);
  BlockwiseParams p;
  p.block = 0;
  EXPECT_THROW(blockwise_encode(x.data(), x.size(), p, payload.data(), scales.data()), UsageError);
  EXPECT_THROW(blockwise_decode(payload.data(), scales.data(), x.size(), p, out.data()),
               UsageError);
  EXPECT_THROW(num_blocks(10, 0), UsageError);
  p.block = 16;
  p.bits = 3;
  EXPECT_THROW(blockwise_encode(x.data(), x.size(), p, payload.data(), scales.data()), UsageError);
  EXPECT_THROW(blockwise_payload_bytes(10, 3), UsageError);
  p.bits = 8;
  EXPECT_THROW(blockwise_encode(nullptr, x.size(), p, payload.data(), scales.data()), UsageError);
  blockwise_encode(nullptr, 0, p, nullptr, nullptr);  // n = 0: nothing to do
}

TEST(QuantizeBlockwise, NonFiniteBlockGetsANaNScaleAndZeroCodes) {
  // Only the block holding NaN/Inf: its scale is NaN (0x7fc00000), its codes 0, so it decodes to
  // NaN; every other block is encoded as if the bad block were zeros. Any thread count.
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    for (int bits : {8, 4, 2}) {
      for (int t : {1, 4}) {
        BlockwiseParams p;
        p.bits = bits;
        p.block = 16;
        p.threads = t;
        std::vector<float> x = normal_data(100, 3), zeroed = x;
        for (std::size_t i = 32; i < 48; ++i) zeroed[i] = 0.0f;
        x[40] = bad;  // block 2 (elements 32..47)
        std::vector<std::uint8_t> pa(blockwise_payload_bytes(100, bits)), pz(pa.size());
        std::vector<float> sa(num_blocks(100, 16)), sz(sa.size()), out(100);
        blockwise_encode(x.data(), x.size(), p, pa.data(), sa.data());
        blockwise_encode(zeroed.data(), zeroed.size(), p, pz.data(), sz.data());
        EXPECT_EQ(to_bits(sa[2]), 0x7fc00000u);
        sz[2] = sa[2];
        EXPECT_EQ(pa, pz);
        for (std::size_t b = 0; b < sa.size(); ++b) EXPECT_EQ(to_bits(sa[b]), to_bits(sz[b]));
        blockwise_decode(pa.data(), sa.data(), 100, p, out.data());
        for (std::size_t i = 0; i < 100; ++i) {
          EXPECT_EQ(std::isnan(out[i]), i >= 32 && i < 48) << i;
        }
      }
    }
  }
}

// ------------------------------------------------------------------ sign
TEST(QuantizeSign, LayoutScaleAndDecode) {
  std::vector<float> x = {-1, 2, -0.0f, 3, 4, -5, 6, 7, -8};
  SignParams p;
  p.block = 8;
  std::vector<std::uint8_t> payload(sign_payload_bytes(x.size()));
  ASSERT_EQ(payload.size(), 2u);
  std::vector<float> scales(2), out(x.size());
  sign_encode(x.data(), x.size(), p, payload.data(), scales.data());
  EXPECT_EQ(payload[0], 0x25);  // bits 0, 2, 5 negative
  EXPECT_EQ(payload[1], 0x01);
  EXPECT_EQ(scales[0], 28.0f / 8);
  EXPECT_EQ(scales[1], 8.0f);
  sign_decode(payload.data(), scales.data(), x.size(), p, out.data());
  for (std::size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(out[i], std::signbit(x[i]) ? -scales[i / 8] : scales[i / 8]) << i;
  }
}

TEST(QuantizeSign, ThreadsOddBlocksAndErrors) {
  const auto x = normal_data(200003, 12);
  for (std::size_t block : {3u, 512u, 1001u}) {
    SignParams p;
    p.block = block;
    std::vector<std::uint8_t> a(sign_payload_bytes(x.size())), b(a.size());
    std::vector<float> sa(num_blocks(x.size(), block)), sb(sa.size()), out(x.size());
    sign_encode(x.data(), x.size(), p, a.data(), sa.data());
    p.threads = 3;
    sign_encode(x.data(), x.size(), p, b.data(), sb.data());
    ASSERT_EQ(a, b);
    ASSERT_EQ(sa, sb);
    sign_decode(b.data(), sb.data(), x.size(), p, out.data());
    for (std::size_t i = 0; i < x.size(); ++i) {
      ASSERT_EQ((a[i / 8] >> (i % 8)) & 1, std::signbit(x[i]) ? 1 : 0) << i;
      ASSERT_EQ(std::fabs(out[i]), sa[i / block]);
    }
  }
  std::vector<float> bad(64, -1.0f);
  bad[10] = std::numeric_limits<float>::quiet_NaN();
  std::vector<std::uint8_t> pl(8);
  std::vector<float> sc(1);
  // A non-finite block: a NaN scale and zero bits (quantize.h), no error.
  sign_encode(bad.data(), bad.size(), SignParams{}, pl.data(), sc.data());
  EXPECT_EQ(to_bits(sc[0]), 0x7fc00000u);
  EXPECT_EQ(pl, std::vector<std::uint8_t>(8, 0));
  SignParams zero;
  zero.block = 0;
  EXPECT_THROW(sign_encode(bad.data(), bad.size(), zero, pl.data(), sc.data()), UsageError);
}

// ------------------------------------------------------------------ ternary
TEST(QuantizeTernary, CodesAreTernaryUnbiasedAndMatchInt2Stochastic) {
  const auto x = normal_data(5000, 21);
  TernaryParams p;
  p.block = 100;
  p.seed = 5;
  std::vector<std::uint8_t> payload(ternary_payload_bytes(x.size()));
  std::vector<float> scales(num_blocks(x.size(), p.block)), out(x.size());
  ternary_encode(x.data(), x.size(), p, payload.data(), scales.data());
  ternary_decode(payload.data(), scales.data(), x.size(), p, out.data());
  BlockwiseParams bp;
  bp.bits = 2;
  bp.block = 100;
  bp.rounding = Rounding::kStochastic;
  bp.seed = 5;
  EXPECT_EQ(run_blockwise(x, bp).payload, payload);
  for (std::size_t i = 0; i < x.size(); ++i) {
    float m = 0;
    for (std::size_t j = i / 100 * 100; j < i / 100 * 100 + 100; ++j)
      m = std::max(m, std::fabs(x[j]));
    ASSERT_EQ(scales[i / 100], m);
    const int c = ref_code(payload, i, 2);
    ASSERT_TRUE(c == 0 || c == (x[i] > 0 ? 1 : -1)) << i;
    ASSERT_EQ(out[i], c * m);
  }
  // Unbiased: mean over seeds.
  std::vector<float> y = {0.9f, -0.1f, 0.4f, -1.0f};
  TernaryParams q;
  q.block = 4;
  std::vector<double> sum(4, 0);
  const int seeds = 4000;
  for (int s = 0; s < seeds; ++s) {
    q.seed = static_cast<std::uint64_t>(s);
    std::uint8_t pl[1];
    float sc[1], o[4];
    ternary_encode(y.data(), 4, q, pl, sc);
    ternary_decode(pl, sc, 4, q, o);
    for (int i = 0; i < 4; ++i) sum[i] += o[i];
  }
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(sum[i] / seeds, y[i], 5 * 0.5 / std::sqrt(seeds)) << i;
}

// The blockwise int codecs' fused passes (quantize.h, wire/blockwise_int.cc) against the steps they
// replace, bit for bit: encode_feedback (encode, decode, r = x - decoded, keep), its fold with the
// caller's x += r, and decode+reduce (dst += decoded, and (dst + r) + decoded). Every ISA level:
// ctest runs this file's tests once per RINGPRESS_SIMD level (tests/cpp/CMakeLists.txt). Both sides
// encode and decode with that level's kernels (whose bytes the golden payloads pin for every
// level); the fused kernels (feedback, add, dequant+add) are compared with the base Codec's
// baseline loops.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "ringpress/codec.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"
#include "ringpress/quantize.h"

using namespace ringpress;

namespace {

// Gradients-like values with the cases the scale rule and the kernels branch on: an all-zero
// block, a tiny block (pre-scaled), huge values (the scale stepped down near FLT_MAX), -0.0, ties.
std::vector<float> data(std::size_t n, std::size_t block, std::uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> nd(0.0f, 1e-3f);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(g);
  for (std::size_t s = 0; s < n; s += block) {
    const std::size_t len = std::min(block, n - s);
    switch ((s / block) % 5) {
      case 1:
        std::fill(x.begin() + s, x.begin() + s + len, 0.0f);
        if (len > 1) x[s + 1] = -0.0f;
        break;
      case 2:
        for (std::size_t i = 0; i < len; ++i) x[s + i] *= 1e-36f;
        break;
      case 3:
        x[s] = 3.4e38f;
        if (len > 2) x[s + 2] = -0.5f * x[s];
        break;
      default: break;
    }
  }
  return x;
}

std::vector<unsigned char> bytes(const float* p, std::size_t n) {
  return std::vector<unsigned char>(reinterpret_cast<const unsigned char*>(p),
                                    reinterpret_cast<const unsigned char*>(p + n));
}

struct Case {
  const char* name;
  std::size_t block;
  bool stochastic;
};

const Case kCases[] = {{"int8", 512, false},  {"int4", 512, false},    {"int2", 512, false},
                       {"int8", 3, true},     {"int4", 33, true},      {"int2", 1, false},
                       {"int4", 5000, false}, {"int8", 4096 + 7, true}};
const std::size_t kSizes[] = {0, 1, 7, 33, 513, 4101, 20011};

std::unique_ptr<Codec> make(const Case& c) {
  CodecParams p;
  p.block = c.block;
  p.stochastic = c.stochastic;
  return make_codec(wire_compression_from_name(c.name), p, DType::kF32, ReduceOp::kSum);
}

std::string label(const Case& c, std::size_t n, bool keep) {
  return std::string(c.name) + " block " + std::to_string(c.block) +
         (c.stochastic ? " stochastic" : " nearest") + " n " + std::to_string(n) +
         (keep ? " keep" : "") + " simd " + simd_level_name(simd_level());
}

}  // namespace

TEST(QuantizeFeedback, FusedEncodeFeedbackMatchesTheStepsBitForBit) {
  std::uint32_t seed = 1;
  for (const Case& c : kCases) {
    for (std::size_t n : kSizes) {
      for (bool keep : {false, true}) {
        for (bool fold : {false, true}) {
          SCOPED_TRACE(label(c, n, keep) + (fold ? " fold" : ""));
          const std::vector<float> x0 = data(n, c.block, seed++);
          std::vector<float> r0 = data(n, c.block * 3 + 1, seed++);
          for (auto& v : r0) v = std::max(-1.0f, std::min(1.0f, v * 0.25f));  // x + r finite
          auto fused = make(c), steps = make(c);
          const std::size_t bound = fused->bound(n);
          std::vector<std::uint64_t> out_a(bound / 8 + 2, 0), out_b(bound / 8 + 2, 0);
          std::vector<float> xa = x0, ra = r0, xb = x0, rb = r0;
          const std::size_t la =
              fold ? fused->encode_feedback_fold(xa.data(), ra.data(), n, out_a.data(), 77, keep)
                   : fused->encode_feedback(xa.data(), ra.data(), n, out_a.data(), 77, keep);
          // The steps: the base class's generic code (qualified call: no override).
          if (fold)
            for (std::size_t i = 0; i < n; ++i) xb[i] += rb[i];
          const std::size_t lb =
              steps->Codec::encode_feedback(xb.data(), rb.data(), n, out_b.data(), 77, keep);
          ASSERT_EQ(la, lb);
          ASSERT_EQ(std::memcmp(out_a.data(), out_b.data(), la), 0) << "payload bytes";
          ASSERT_EQ(bytes(ra.data(), n), bytes(rb.data(), n)) << "residual";
          ASSERT_EQ(bytes(xa.data(), n), bytes(xb.data(), n)) << "x";
        }
      }
    }
  }
}

TEST(QuantizeFeedback, InPlaceResidualGivesTheStepsValues) {
  // r = x (compressor.h: v = x + r built in r): the same values as the steps.
  const Case c{"int4", 64, false};
  auto codec = make(c);
  std::vector<float> r = data(1000, 64, 5), r2 = r;
  std::vector<std::uint64_t> out(codec->bound(1000) / 8 + 2), out2(out.size());
  codec->encode_feedback(r.data(), r.data(), r.size(), out.data(), 3, false);
  make(c)->Codec::encode_feedback(r2.data(), r2.data(), r2.size(), out2.data(), 3, false);
  EXPECT_EQ(bytes(r.data(), r.size()), bytes(r2.data(), r2.size()));
}

TEST(QuantizeFeedback, NonFiniteBlocksLeaveNoResidualAndTheResidualMustBeItsOwnBuffer) {
  // A block holding NaN/Inf (here one arriving through the folded add): decoded NaN, r = 0 there
  // (codec.h), the other blocks as usual; the generic steps agree.
  quant::BlockwiseParams p;
  p.bits = 4;
  p.block = 16;
  std::vector<float> x = data(100, 16, 7), r(100, 0.01f);
  r[70] = std::nanf("");
  x[20] = -INFINITY;
  std::vector<float> xb = x, rb = r;
  std::vector<std::uint8_t> payload(quant::blockwise_payload_bytes(100, 4));
  std::vector<float> scales(quant::num_blocks(100, 16));
  quant::blockwise_encode_feedback(x.data(), r.data(), 100, p, payload.data(), scales.data(), true,
                                   true);
  for (std::size_t i = 0; i < 100; ++i) {
    const bool bad = (i >= 16 && i < 32) || (i >= 64 && i < 80);
    EXPECT_EQ(std::isnan(x[i]), bad) << i;
    EXPECT_TRUE(std::isfinite(r[i])) << i;
    if (bad) EXPECT_EQ(r[i], 0.0f) << i;
  }
  CodecParams cp;
  cp.block = 16;
  auto steps = make_codec(WireCompression::kInt4, cp, DType::kF32, ReduceOp::kSum);
  for (std::size_t i = 0; i < 100; ++i) xb[i] += rb[i];
  std::vector<std::uint64_t> out(steps->bound(100) / 8 + 2);
  steps->Codec::encode_feedback(xb.data(), rb.data(), 100, out.data(), 0, true);
  EXPECT_EQ(bytes(r.data(), 100), bytes(rb.data(), 100));
  EXPECT_EQ(bytes(x.data(), 100), bytes(xb.data(), 100));  // kept: NaN blocks, decoded elsewhere
  EXPECT_EQ(std::memcmp(out.data(), scales.data(), scales.size() * 4), 0);
  EXPECT_EQ(std::memcmp(reinterpret_cast<const unsigned char*>(out.data()) + scales.size() * 4,
                        payload.data(), payload.size()),
            0);
  EXPECT_THROW(quant::blockwise_encode_feedback(x.data(), x.data(), 100, p, payload.data(),
                                                scales.data(), false, false),
               UsageError);
}

TEST(QuantizeFeedback, FusedFeedbackIsTheSameForAnyThreadCount) {
  quant::BlockwiseParams p;
  p.bits = 4;
  p.block = 128;
  p.rounding = quant::Rounding::kStochastic;
  p.seed = 9;
  const std::size_t n = 300000 + 17;
  const std::vector<float> x0 = data(n, p.block, 11), r0 = data(n, 301, 12);
  std::vector<std::vector<unsigned char>> seen;
  for (int threads : {1, 2, 3}) {
    p.threads = threads;
    std::vector<float> x = x0, r = r0;
    std::vector<std::uint8_t> payload(quant::blockwise_payload_bytes(n, 4));
    std::vector<float> scales(quant::num_blocks(n, p.block));
    quant::blockwise_encode_feedback(x.data(), r.data(), n, p, payload.data(), scales.data(), true,
                                     true);
    std::vector<unsigned char> all(payload.begin(), payload.end());
    for (const auto* v : {&scales, &x, &r}) {
      const auto b = bytes(v->data(), v->size());
      all.insert(all.end(), b.begin(), b.end());
    }
    seen.push_back(std::move(all));
  }
  EXPECT_EQ(seen[0], seen[1]);
  EXPECT_EQ(seen[0], seen[2]);
}

TEST(QuantizeFeedback, DecodeReduceAndItsFoldMatchTheSteps) {
  std::uint32_t seed = 100;
  for (const Case& c : kCases) {
    for (std::size_t n : kSizes) {
      SCOPED_TRACE(label(c, n, false));
      auto codec = make(c);
      const std::vector<float> x = data(n, c.block, seed++);
      std::vector<std::uint64_t> out(codec->bound(n) / 8 + 2);
      const std::size_t len = codec->encode(x.data(), n, out.data(), 5);
      const std::vector<float> acc0 = data(n, 97, seed++);
      std::vector<float> fused = acc0, dec(n), steps = acc0;
      codec->decode(out.data(), len, fused.data(), n, true);
      codec->decode(out.data(), len, dec.data(), n, false);
      for (std::size_t i = 0; i < n; ++i) steps[i] = steps[i] + dec[i];
      ASSERT_EQ(bytes(fused.data(), n), bytes(steps.data(), n));
      // With the residual folded in (the ring's receive): (dst + r) + decoded.
      const std::vector<float> r = data(n, 61, seed++);
      std::vector<float> folded = acc0, folded_base = acc0, by_hand = acc0;
      codec->decode_reduce_fold(out.data(), len, folded.data(), r.data(), n);
      codec->Codec::decode_reduce_fold(out.data(), len, folded_base.data(), r.data(), n);
      for (std::size_t i = 0; i < n; ++i) by_hand[i] = (by_hand[i] + r[i]) + dec[i];
      ASSERT_EQ(bytes(folded.data(), n), bytes(by_hand.data(), n));
      ASSERT_EQ(bytes(folded_base.data(), n), bytes(by_hand.data(), n));
    }
  }
}

// Auto mode's cost model (auto_select.h): plain and lossless are predicted with the algorithm
// plain actually runs at that size and group (recursive doubling, halving, or the ring).
#include <gtest/gtest.h>

#include "ringpress/auto_select.h"

using namespace ringpress;
using namespace ringpress::autosel;

namespace {

constexpr std::size_t kKiB = 1024;
constexpr double kAlpha = 1e-5;
constexpr double kBeta = 1e-9;
const Thresholds kDefault{64 * kKiB, 4096 * kKiB};

Model model() {
  Model m;
  m.valid = true;
  m.alpha_s = kAlpha;
  m.byte_s = kBeta;
  m.ratio.fill(1.0);
  return m;
}

double ring(int P, double n) {
  return 2.0 * (P - 1) * kAlpha + 2.0 * (P - 1) / P * n * kBeta;
}

}  // namespace

TEST(AutoModel, PlainFollowsTheAlgorithmOfItsSize) {
  const Model m = model();
  const double n = 256.0 * kKiB;
  // Recursive halving (P a power of two >= 4, above small and up to halving): 2 log2 P rounds.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 256 * kKiB, 4, kDefault),
                   4 * kAlpha + 1.5 * n * kBeta);
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 256 * kKiB, 8, kDefault),
                   6 * kAlpha + 1.75 * n * kBeta);
  // The ring above the halving threshold, and for groups that are no power of two (or 2 ranks).
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 8192 * kKiB, 4, kDefault),
                   ring(4, 8192.0 * kKiB));
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 256 * kKiB, 6, kDefault), ring(6, n));
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 256 * kKiB, 2, kDefault), ring(2, n));
  // Recursive doubling at or below small: every round sends the whole buffer; a group that is
  // no power of two adds the fold and unfold rounds.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 4 * kKiB, 8, kDefault),
                   3 * kAlpha + 3 * 4096.0 * kBeta);
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 4 * kKiB, 3, kDefault),
                   3 * kAlpha + 3 * 4096.0 * kBeta);
}

TEST(AutoModel, LosslessRunsPlainsAlgorithmLossyKindsTheRing) {
  Model m = model();
  m.ratio[static_cast<std::size_t>(WireCompression::kLossless)] = 2.0;
  m.ratio[static_cast<std::size_t>(WireCompression::kInt8)] = 2.0;
  const double n = 256.0 * kKiB;
  // Below small, lossless sends plain's messages uncompressed: plain's time.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kLossless, 4 * kKiB, 4, kDefault),
                   predict(m, WireCompression::kNone, 4 * kKiB, 4, kDefault));
  // In halving's range lossless has its rounds, int8 the ring's; both the compressed bytes.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kLossless, 256 * kKiB, 4, kDefault),
                   4 * kAlpha + 1.5 * n / 2 * kBeta);
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kInt8, 256 * kKiB, 4, kDefault),
                   6 * kAlpha + 1.5 * n / 2 * kBeta);
}

TEST(AutoModel, HalvingsShorterLatencyKeepsPlainWhereTheRingModelPickedACodec) {
  // 8 ranks, 256 KiB: int8 (ratio 4) with some codec work beats the ring's plain time by more
  // than 5%, but not plain's real algorithm (recursive halving, 6 latency terms instead of 14).
  Model m = model();
  const double n = 256.0 * kKiB;
  m.byte_s = 1e-4 / n;
  const auto k = static_cast<std::size_t>(WireCompression::kInt8);
  m.ratio[k] = 4.0;
  m.enc_s[k] = 7.6e-5 / (1.75 * n);  // int8 then takes 2.6e-4 s against plain's 2.35e-4 s
  const std::uint32_t allow = bit(WireCompression::kInt8);
  EXPECT_EQ(choose(m, 256 * kKiB, 8, allow, kDefault).kind, WireCompression::kNone);
  const Thresholds no_halving{64 * kKiB, 64 * kKiB};
  EXPECT_EQ(choose(m, 256 * kKiB, 8, allow, no_halving).kind, WireCompression::kInt8);
}

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

// Two levels (H hosts of L ranks, the hierarchical allreduce): compression applies to the
// inter-host step only, on n / L bytes per rank among H ranks; the shared-memory phases cost every
// kind the same; small exact requests go through one leader per host; pipelined requests cost
// about the slower level.
namespace {

constexpr double kAlphaS = 2e-6;  // shared memory
constexpr double kBetaS = 1e-10;

Model two_levels(int H, int L) {
  Model m = model();
  m.hosts = H;
  m.local = L;
  m.intra_alpha_s = kAlphaS;
  m.intra_byte_s = kBetaS;
  return m;
}

double intra(int L, double n) {
  return 2.0 * (L - 1) * kAlphaS + 2.0 * (L - 1) / L * n * kBetaS;
}

}  // namespace

TEST(AutoModel, TwoLevelsPredictTheHierarchysPhases) {
  Model m = two_levels(4, 4);
  const auto k = static_cast<std::size_t>(WireCompression::kInt8);
  m.ratio[k] = 4.0;
  m.enc_s[k] = 1e-10;
  m.dec_s[k] = 2e-10;
  // Segments of 8 MiB: 16 MiB is one chunk, so the phases run one after another; its 4 MiB
  // inter-host blocks are above the halving threshold (2 MiB): the ring.
  const Thresholds t{64 * kKiB, 2048 * kKiB, 8192 * kKiB};
  const double n = 16384.0 * kKiB, block = n / 4;
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 16384 * kKiB, 16, t),
                   intra(4, n) + ring(4, block));
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kInt8, 16384 * kKiB, 16, t),
                   intra(4, n) + 6 * kAlpha + 1.5 * block * (kBeta / 4 + 3e-10));
  // The inter-host block picks plain's algorithm by its own size: 1 MiB blocks on 4 hosts take
  // recursive halving.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 4096 * kKiB, 16, t),
                   intra(4, 4096.0 * kKiB) + 4 * kAlpha + 1.5 * 1024.0 * kKiB * kBeta);
  // Small exact requests: into the leader and back over shared memory, recursive doubling among
  // the 4 leaders (2 rounds of the whole buffer); lossless the same (sent uncompressed).
  const double small = 2 * (kAlphaS + 3 * 4096.0 * kBetaS) + 2 * kAlpha + 2 * 4096.0 * kBeta;
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 4 * kKiB, 16, t), small);
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kLossless, 4 * kKiB, 16, t), small);
  // Pipelined (64 KiB segments: 16 MiB is 16 chunks of 1 MiB): the slower level, here the
  // network, plus one chunk of the shared-memory phases; each level pays its latency per chunk.
  const Thresholds piped{64 * kKiB, 4096 * kKiB, 64 * kKiB};
  const double inter = 16 * ring(4, block / 16), local = 16 * intra(4, n / 16);
  ASSERT_GT(inter, local);
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 16384 * kKiB, 16, piped), inter + local / 16);
  // A model of other levels, or of one, is the flat ring's.
  EXPECT_DOUBLE_EQ(predict(m, WireCompression::kNone, 16384 * kKiB, 8, t), ring(8, n));
  EXPECT_DOUBLE_EQ(predict(model(), WireCompression::kNone, 16384 * kKiB, 16, t), ring(16, n));
}

TEST(AutoModel, TwoLevelsShareTheCodecWorkAmongAHostsRanks) {
  // The codec works on 1 / L of the buffer per rank at two levels, on all of it in a flat ring:
  // codec work that costs more than the wire time int8 saves on the whole buffer (flat: plain)
  // costs less on a quarter of it (two levels: int8).
  const auto k = static_cast<std::size_t>(WireCompression::kInt8);
  const std::uint32_t allow = bit(WireCompression::kInt8);
  const Thresholds t{64 * kKiB, 4096 * kKiB, 8192 * kKiB};
  Model flat = model();
  flat.byte_s = 1e-8;  // the link of each host (1 flat ring crosses it once per host)
  flat.ratio[k] = 4.0;
  flat.enc_s[k] = flat.dec_s[k] = 0.5 * 1e-8;  // E + D = beta > beta (1 - 1/4)
  EXPECT_EQ(choose(flat, 16384 * kKiB, 16, allow, t).kind, WireCompression::kNone);
  Model two = flat;
  two.hosts = 4;
  two.local = 4;
  two.intra_alpha_s = kAlphaS;
  two.intra_byte_s = kBetaS;
  two.byte_s = 4 * 1e-8;  // four inter-host groups share each host's link
  EXPECT_EQ(choose(two, 16384 * kKiB, 16, allow, t).kind, WireCompression::kInt8);
}

TEST(AutoModel, PipelinedHierarchyKeepsPlainWhenSharedMemoryIsTheSlowerLevel) {
  // Compressing the inter-host step cannot help once the shared-memory phases are the slower
  // level of the pipeline: the model keeps plain where the sum of the levels would say int8.
  const auto k = static_cast<std::size_t>(WireCompression::kInt8);
  const std::uint32_t allow = bit(WireCompression::kInt8);
  Model m = two_levels(4, 4);
  m.intra_byte_s = 2e-9;  // shared memory slower than the network's share of it
  m.ratio[k] = 4.0;
  const Thresholds piped{64 * kKiB, 4096 * kKiB, 64 * kKiB};
  EXPECT_EQ(choose(m, 16384 * kKiB, 16, allow, piped).kind, WireCompression::kNone);
  const Thresholds one_chunk{64 * kKiB, 4096 * kKiB, 8192 * kKiB};
  EXPECT_EQ(choose(m, 16384 * kKiB, 16, allow, one_chunk).kind, WireCompression::kInt8);
}

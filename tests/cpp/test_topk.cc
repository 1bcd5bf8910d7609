// Top-k sparsification (ringpress/topk.h): exact top-k against a std::sort reference (ties, NaN,
// edge sizes), the sampled selector's size tolerance and ordering guarantee over many seeds and
// distributions, random-k, fixed threshold, the index codec (round trip + hostile streams),
// scatter-add, and the threshold compaction of every SIMD level against the generic kernel.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "../../csrc/codecs/topk/topk_internal.h"
#include "ringpress/cpu.h"
#include "ringpress/cuda.h"
#include "ringpress/error.h"
#include "ringpress/topk.h"

using namespace ringpress;
using namespace ringpress::topk;

namespace {

std::uint32_t mag(float v) {
  std::uint32_t b;
  std::memcpy(&b, &v, 4);
  return b & 0x7FFFFFFFu;
}

enum class Dist { kNormal, kStudentT, kManyZeros, kFewValues, kAllEqual };

std::vector<float> make(Dist d, std::size_t n, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<float> x(n);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::student_t_distribution<float> st(2.0f);
  std::uniform_int_distribution<int> small(-3, 3);
  for (auto& v : x) {
    switch (d) {
      case Dist::kNormal: v = normal(rng) * 1e-3f; break;
      case Dist::kStudentT: v = st(rng); break;
      case Dist::kManyZeros:
        v = (rng() % 10 == 0) ? normal(rng) : ((rng() & 1) ? 0.0f : -0.0f);
        break;
      case Dist::kFewValues: v = static_cast<float>(small(rng)) * 0.5f; break;
      case Dist::kAllEqual: v = (rng() & 1) ? 2.0f : -2.0f; break;
    }
  }
  return x;
}

// Reference: stable sort of indices by |x| descending (ties: lower index first), take k, sort.
std::vector<std::uint32_t> reference_topk(const std::vector<float>& x, std::size_t k) {
  std::vector<std::uint32_t> idx(x.size());
  std::iota(idx.begin(), idx.end(), 0u);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](std::uint32_t a, std::uint32_t b) { return mag(x[a]) > mag(x[b]); });
  idx.resize(k);
  std::sort(idx.begin(), idx.end());
  return idx;
}

void expect_well_formed(const std::vector<float>& x, const SparseVector& s) {
  ASSERT_EQ(s.indices.size(), s.values.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    ASSERT_LT(s.indices[i], x.size());
    if (i) ASSERT_LT(s.indices[i - 1], s.indices[i]);
    ASSERT_EQ(std::memcmp(&s.values[i], &x[s.indices[i]], 4), 0);
  }
}

// min |x| over the selection >= max |x| outside it.
void expect_dominates(const std::vector<float>& x, const SparseVector& s) {
  std::vector<char> in(x.size(), 0);
  std::uint32_t lo = 0xFFFFFFFFu;
  for (auto i : s.indices) {
    in[i] = 1;
    lo = std::min(lo, mag(x[i]));
  }
  std::uint32_t hi_out = 0;
  bool any_out = false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (!in[i]) {
      hi_out = std::max(hi_out, mag(x[i]));
      any_out = true;
    }
  }
  if (!s.indices.empty() && any_out) EXPECT_GE(lo, hi_out);
}

const Dist kDists[] = {Dist::kNormal, Dist::kStudentT, Dist::kManyZeros, Dist::kFewValues,
                       Dist::kAllEqual};

}  // namespace

TEST(TopK, ExactMatchesReference) {
  std::uint32_t seed = 1;
  for (Dist d : kDists) {
    for (std::size_t n : {1u, 2u, 15u, 16u, 17u, 100u, 1000u, 4099u, 70001u}) {
      const auto x = make(d, n, seed++);
      for (std::size_t k : {std::size_t{0}, std::size_t{1}, n / 100, n / 10, n / 2, n - 1, n}) {
        SparseVector s;
        topk_exact(x.data(), n, k, &s);
        expect_well_formed(x, s);
        ASSERT_EQ(s.indices, reference_topk(x, k)) << "n=" << n << " k=" << k;
      }
    }
  }
}

TEST(TopK, ExactEdgeCases) {
  SparseVector s;
  s.indices = {7};
  s.values = {1.0f};
  topk_exact(nullptr, 0, 0, &s);
  EXPECT_EQ(s.size(), 0u);
  std::vector<float> x = {-3.0f};
  topk_exact(x.data(), 1, 1, &s);
  ASSERT_EQ(s.size(), 1u);
  EXPECT_EQ(s.values[0], -3.0f);
  EXPECT_THROW(topk_exact(x.data(), 1, 2, &s), UsageError);
  EXPECT_THROW(topk_exact(x.data(), 1, 1, nullptr), UsageError);
  // +-0 and infinities: -inf has the largest magnitude; -0 ties with +0 (lowest index wins).
  std::vector<float> y = {0.0f, -0.0f, 1.0f, -std::numeric_limits<float>::infinity(), -0.0f};
  topk_exact(y.data(), y.size(), 3, &s);
  EXPECT_EQ(s.indices, (std::vector<std::uint32_t>{0, 2, 3}));
  // Reusing an output that is larger than needed.
  std::vector<float> big = make(Dist::kNormal, 10000, 3);
  topk_exact(big.data(), big.size(), 5000, &s);
  topk_exact(y.data(), y.size(), 2, &s);
  EXPECT_EQ(s.indices, (std::vector<std::uint32_t>{2, 3}));
}

// NaN is no error: it ranks above +-Inf by its bit pattern (as in torch.topk; among NaNs a larger
// payload first), so every selector takes the NaNs before any number; with more NaNs than k, the
// reference order decides which (ties: lowest index).
TEST(TopK, NaNRanksAboveInfinity) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  std::uint32_t big_payload = 0x7FC0ABCDu;
  float nan2;
  std::memcpy(&nan2, &big_payload, 4);
  for (std::size_t pos : {0u, 5u, 199999u}) {
    auto x = make(Dist::kNormal, 200000, 11);
    x[pos] = (pos & 1) ? -nan : nan;
    x[(pos + 7) % x.size()] = -inf;
    x[(pos + 1000) % x.size()] = nan2;
    SparseVector s;
    for (std::size_t k :
         {std::size_t{1}, std::size_t{2}, std::size_t{3}, std::size_t{10}, std::size_t{2000}}) {
      topk_exact(x.data(), x.size(), k, &s);
      expect_well_formed(x, s);
      EXPECT_EQ(s.indices, reference_topk(x, k)) << "pos=" << pos << " k=" << k;
      SampledOptions opt;
      opt.sample_size = 1024;
      opt.exact = true;
      topk_sampled(x.data(), x.size(), k, opt, &s);
      EXPECT_EQ(s.indices, reference_topk(x, k)) << "sampled, pos=" << pos << " k=" << k;
    }
    // k = 1 takes the NaN with the larger payload; k = 3 the two NaNs and the -Inf.
    topk_exact(x.data(), x.size(), 1, &s);
    EXPECT_EQ(s.indices, (std::vector<std::uint32_t>{std::uint32_t((pos + 1000) % x.size())}));
    SampledOptions loose;
    loose.sample_size = 1024;
    topk_sampled(x.data(), x.size(), 100, loose, &s);
    expect_well_formed(x, s);
    expect_dominates(x, s);
    for (float t : {0.0f, 1.0f, inf}) {
      threshold_select(x.data(), x.size(), t, &s);
      expect_well_formed(x, s);
      EXPECT_TRUE(std::binary_search(s.indices.begin(), s.indices.end(), std::uint32_t(pos)));
      EXPECT_EQ(std::count_if(s.indices.begin(), s.indices.end(),
                              [&](std::uint32_t i) { return std::isnan(x[i]); }),
                2);
    }
    EXPECT_NO_THROW(randomk(x.data(), x.size(), 10, 1, &s));  // values not inspected
  }
  std::vector<float> x = {1.0f, 2.0f};
  SparseVector s;
  EXPECT_THROW(threshold_select(x.data(), 2, nan, &s), UsageError);
  EXPECT_THROW(threshold_select(x.data(), 2, -1.0f, &s), UsageError);
}

TEST(TopK, SampledWithinToleranceAndDominates) {
  std::uint32_t seed = 100;
  int refined_or_exact = 0, loose = 0;
  for (Dist d : kDists) {
    for (std::size_t n : {5000u, 300000u}) {
      const auto x = make(d, n, seed);
      for (std::size_t k : {std::size_t{1}, n / 1000, n / 100, n / 20}) {
        const auto ref = reference_topk(x, k);
        for (std::uint64_t s = 0; s < 8; ++s) {
          for (double tol : {0.0, 0.05, 0.5}) {
            SampledOptions opt;
            opt.seed = s * 7919 + seed;
            opt.tolerance = tol;
            opt.sample_size = 4096;
            SparseVector out;
            topk_sampled(x.data(), n, k, opt, &out);
            expect_well_formed(x, out);
            const auto hi = static_cast<std::size_t>(std::ceil(k * (1.0 + tol)));
            ASSERT_GE(out.size(), k);
            ASSERT_LE(out.size(), hi) << "n=" << n << " k=" << k << " tol=" << tol;
            expect_dominates(x, out);
            if (out.size() == k) {
              ASSERT_EQ(out.indices, ref);
              ++refined_or_exact;
            } else {
              ++loose;
            }
            opt.exact = true;
            topk_sampled(x.data(), n, k, opt, &out);
            ASSERT_EQ(out.indices, ref);
          }
        }
      }
      ++seed;
    }
  }
  EXPECT_GT(refined_or_exact, 0);
  EXPECT_GT(loose, 0);  // the tolerance path (m > k, no refinement) was exercised
}

TEST(TopK, SampledDeterministicPerSeedAndArgs) {
  const auto x = make(Dist::kStudentT, 500000, 5);
  SampledOptions opt;
  opt.seed = 42;
  opt.tolerance = 0.5;
  SparseVector a, b;
  topk_sampled(x.data(), x.size(), 5000, opt, &a);
  topk_sampled(x.data(), x.size(), 5000, opt, &b);
  EXPECT_EQ(a.indices, b.indices);
  opt.tolerance = -1.0;
  EXPECT_THROW(topk_sampled(x.data(), x.size(), 10, opt, &a), UsageError);
  opt.tolerance = 0.05;
  opt.sample_size = 0;
  EXPECT_THROW(topk_sampled(x.data(), x.size(), 10, opt, &a), UsageError);
  opt.sample_size = 64;
  EXPECT_THROW(topk_sampled(x.data(), x.size(), x.size() + 1, opt, &a), UsageError);
  topk_sampled(x.data(), x.size(), 0, opt, &a);
  EXPECT_EQ(a.size(), 0u);
}

TEST(TopK, RandomKDistinctSortedDeterministic) {
  const auto x = make(Dist::kNormal, 100000, 9);
  for (std::size_t k : {0u, 1u, 10u, 5000u, 50000u, 99999u, 100000u}) {
    SparseVector a, b, c;
    randomk(x.data(), x.size(), k, 1234, &a);
    randomk(x.data(), x.size(), k, 1234, &b);
    ASSERT_EQ(a.size(), k);
    expect_well_formed(x, a);
    EXPECT_EQ(a.indices, b.indices);
    if (k > 0 && k < x.size()) {
      randomk(x.data(), x.size(), k, 1235, &c);
      EXPECT_NE(a.indices, c.indices);
    }
  }
  // Roughly uniform: each position drawn about k/n of the time.
  std::vector<int> hits(100, 0);
  for (std::uint64_t s = 0; s < 2000; ++s) {
    SparseVector a;
    randomk(x.data(), 100, 10, s, &a);
    for (auto i : a.indices) ++hits[i];
  }
  for (int h : hits) {
    EXPECT_GT(h, 120);
    EXPECT_LT(h, 280);
  }
  SparseVector a;
  EXPECT_THROW(randomk(x.data(), 10, 11, 0, &a), UsageError);
}

TEST(TopK, ThresholdExact) {
  for (Dist d : kDists) {
    const auto x = make(d, 50001, 21);
    for (float t :
         {0.0f, -0.0f, 1e-4f, 0.5f, 1.0f, 2.0f, 3.0f, std::numeric_limits<float>::infinity()}) {
      SparseVector s;
      threshold_select(x.data(), x.size(), t, &s);
      expect_well_formed(x, s);
      std::vector<std::uint32_t> ref;
      for (std::size_t i = 0; i < x.size(); ++i) {
        if (std::fabs(x[i]) >= t) ref.push_back(static_cast<std::uint32_t>(i));
      }
      ASSERT_EQ(s.indices, ref) << "t=" << t;
    }
  }
  SparseVector s;
  threshold_select(nullptr, 0, 1.0f, &s);
  EXPECT_EQ(s.size(), 0u);
}

TEST(TopK, IndexCodecRoundTrip) {
  std::mt19937 rng(77);
  for (std::size_t universe : {1u, 2u, 1000u, 1u << 20, 16u << 20}) {
    for (double density : {0.0, 0.001, 0.01, 0.3, 1.0}) {
      std::vector<std::uint32_t> idx;
      if (universe <= (1u << 20) || density <= 0.01) {
        for (std::size_t i = 0; i < universe; ++i) {
          if (std::uniform_real_distribution<double>(0, 1)(rng) < density) {
            idx.push_back(static_cast<std::uint32_t>(i));
          }
        }
      }
      const std::size_t size = indices_encoded_size(idx.data(), idx.size(), universe);
      ASSERT_LE(size, indices_max_encoded_size(idx.size()));
      std::vector<std::uint8_t> buf(size);
      ASSERT_EQ(encode_indices(idx.data(), idx.size(), universe, buf.data(), buf.size()), size);
      ASSERT_EQ(indices_decoded_count(buf.data(), buf.size()), idx.size());
      std::vector<std::uint32_t> back(idx.size() + 1);
      ASSERT_EQ(decode_indices(buf.data(), buf.size(), universe, back.data(), back.size()),
                idx.size());
      back.resize(idx.size());
      ASSERT_EQ(back, idx);
    }
  }
  // Extremes: index 2^32 - 1 in the full universe, and a single huge gap.
  std::vector<std::uint32_t> idx = {0, 0xFFFFFFFEu, 0xFFFFFFFFu};
  const std::size_t U = std::size_t{1} << 32;
  std::vector<std::uint8_t> buf(indices_max_encoded_size(3));
  const std::size_t size = encode_indices(idx.data(), 3, U, buf.data(), buf.size());
  std::vector<std::uint32_t> back(3);
  ASSERT_EQ(decode_indices(buf.data(), size, U, back.data(), 3), 3u);
  EXPECT_EQ(back, idx);
}

// decode_indices_add is decode_indices then scatter_add of the values (read at any alignment),
// bit for bit, across block boundaries; a bad stream raises WireFormatError, and an index past
// the universe is caught before its block touches dense.
TEST(TopK, DecodeIndicesAddEqualsDecodeThenScatterAdd) {
  std::mt19937 rng(5);
  const std::size_t universe = 300001;
  for (double density : {0.0, 0.0005, 0.01, 0.4}) {
    std::vector<std::uint32_t> idx;
    for (std::size_t i = 0; i < universe; ++i)
      if (std::uniform_real_distribution<double>(0, 1)(rng) < density)
        idx.push_back(static_cast<std::uint32_t>(i));
    std::vector<float> val(idx.size());
    for (auto& v : val) v = std::normal_distribution<float>(0, 1)(rng);
    std::vector<std::uint8_t> buf(indices_max_encoded_size(idx.size()));
    buf.resize(encode_indices(idx.data(), idx.size(), universe, buf.data(), buf.size()));
    std::vector<unsigned char> vals(val.size() * 4 + 1);  // values at an odd address
    if (!val.empty()) std::memcpy(vals.data() + 1, val.data(), val.size() * 4);
    std::vector<float> base(universe);
    for (auto& v : base) v = std::normal_distribution<float>(0, 1)(rng);
    std::vector<float> want = base, got = base;
    scatter_add(idx.data(), val.data(), idx.size(), want.data(), universe);
    ASSERT_EQ(decode_indices_add(buf.data(), buf.size(), universe, vals.data() + 1, got.data()),
              idx.size());
    ASSERT_EQ(0, std::memcmp(want.data(), got.data(), universe * 4)) << density;
    if (idx.size() > 200) {
      std::vector<float> d = base;  // the universe one short of the last index: caught first
      EXPECT_THROW(
          decode_indices_add(buf.data(), buf.size(), idx.back(), vals.data() + 1, d.data()),
          WireFormatError);
      auto cut = buf;
      cut.pop_back();
      EXPECT_THROW(decode_indices_add(cut.data(), cut.size(), universe, vals.data() + 1, d.data()),
                   WireFormatError);
    }
  }
}

TEST(TopK, IndexCodecRejectsBadInput) {
  std::vector<std::uint8_t> buf(64);
  const std::vector<std::uint32_t> bad_order = {1, 1};
  EXPECT_THROW(encode_indices(bad_order.data(), 2, 10, buf.data(), buf.size()), UsageError);
  const std::vector<std::uint32_t> out_of_range = {1, 10};
  EXPECT_THROW(encode_indices(out_of_range.data(), 2, 10, buf.data(), buf.size()), UsageError);
  const std::vector<std::uint32_t> ok = {1, 5, 9};
  EXPECT_THROW(encode_indices(ok.data(), 3, 10, buf.data(), 2), UsageError);
  const std::size_t size = encode_indices(ok.data(), 3, 10, buf.data(), buf.size());
  buf.resize(size);
  std::vector<std::uint32_t> out(16);
  // Every truncation is rejected.
  for (std::size_t len = 0; len < size; ++len) {
    std::vector<std::uint8_t> t(buf.begin(), buf.begin() + len);  // exact-size heap block
    EXPECT_THROW(decode_indices(t.data(), t.size(), 10, out.data(), out.size()), WireFormatError)
        << len;
  }
  // Trailing byte, smaller universe, too-small output.
  auto extra = buf;
  extra.push_back(0);
  EXPECT_THROW(decode_indices(extra.data(), extra.size(), 10, out.data(), 16), WireFormatError);
  EXPECT_THROW(decode_indices(buf.data(), size, 9, out.data(), 16), WireFormatError);
  EXPECT_THROW(decode_indices(buf.data(), size, 2, out.data(), 16), WireFormatError);
  EXPECT_THROW(decode_indices(buf.data(), size, 10, out.data(), 2), UsageError);
  // Width > 32.
  auto wide = buf;
  wide[4] = 33;
  EXPECT_THROW(decode_indices(wide.data(), wide.size(), 10, out.data(), 16), WireFormatError);
  // Huge count with no blocks.
  std::vector<std::uint8_t> huge = {0xFF, 0xFF, 0xFF, 0x7F};
  EXPECT_THROW(decode_indices(huge.data(), huge.size(), std::size_t{1} << 32, out.data(), 16),
               UsageError);
  EXPECT_THROW(decode_indices(huge.data(), huge.size(), 100, out.data(), 16), WireFormatError);
  // 32-bit wrap-around: deltas that would overflow uint32 are out of range, not wrapped.
  std::vector<std::uint8_t> wrap = {2, 0, 0, 0, 32, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF};
  EXPECT_THROW(decode_indices(wrap.data(), wrap.size(), std::size_t{1} << 32, out.data(), 16),
               WireFormatError);
  // Random garbage never crashes: it decodes or raises WireFormatError.
  std::mt19937 rng(5);
  out.resize(1024);
  for (int it = 0; it < 20000; ++it) {
    std::vector<std::uint8_t> g(rng() % 40);
    for (auto& c : g) c = static_cast<std::uint8_t>(rng());
    if (g.size() >= 4) g[3] = 0, g[2] = 0, g[1] = static_cast<std::uint8_t>(g[1] & 1);
    try {
      const std::size_t n = decode_indices(g.data(), g.size(), 1000, out.data(), out.size());
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_LT(out[i], 1000u);
        if (i) ASSERT_LT(out[i - 1], out[i]);
      }
    } catch (const WireFormatError&) {
    } catch (const UsageError&) {
    }
  }
}

TEST(TopK, ScatterAdd) {
  std::vector<float> dense(10, 1.0f);
  const std::vector<std::uint32_t> idx = {0, 3, 3, 9};
  const std::vector<float> val = {1.0f, 2.0f, 3.0f, -1.0f};
  scatter_add(idx.data(), val.data(), idx.size(), dense.data(), dense.size());
  EXPECT_EQ(dense, (std::vector<float>{2, 1, 1, 6, 1, 1, 1, 1, 1, 0}));
  const auto before = dense;
  const std::vector<std::uint32_t> bad = {0, 10};
  EXPECT_THROW(scatter_add(bad.data(), val.data(), 2, dense.data(), dense.size()), UsageError);
  EXPECT_EQ(dense, before);  // untouched on error
  scatter_add(nullptr, nullptr, 0, nullptr, 0);
  // Round trip: top-k then scatter into zeros reproduces the selected entries.
  const auto x = make(Dist::kStudentT, 10000, 8);
  SparseVector s;
  topk_exact(x.data(), x.size(), 100, &s);
  std::vector<float> z(x.size(), 0.0f);
  scatter_add(s.indices.data(), s.values.data(), s.size(), z.data(), z.size());
  for (auto i : s.indices) EXPECT_EQ(z[i], x[i]);
}

// Every SIMD level's compaction writes the generic kernel's entries, bit for bit: odd sizes and
// offsets (vector tails, unaligned starts), thresholds 0, -0's bits, denormal, 1, the largest
// finite and +Inf, inputs with NaN payloads, +-Inf, -0 and denormals, dense and sparse hits.
// Each call also starts at a nonzero count c and its room is exactly (end - begin) + 1 past c:
// entries before c and after the room stay untouched.
class CompactLevel : public ::testing::TestWithParam<SimdLevel> {};

TEST_P(CompactLevel, SameEntriesAsGeneric) {
  const SimdLevel level = GetParam();
  if (!simd_level_supported(level)) GTEST_SKIP() << simd_level_name(level) << " not supported";
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            -std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            -0.0f,
                            0.0f,
                            std::numeric_limits<float>::denorm_min(),
                            -std::numeric_limits<float>::max()};
  const std::uint32_t thresholds[] = {
      0u, 1u, mag(1.0f), mag(2.5f), mag(std::numeric_limits<float>::max()), 0x7F800000u};
  std::uint32_t nan_payload = 0x7FC01234u;
  float odd_nan;
  std::memcpy(&odd_nan, &nan_payload, 4);
  int cases = 0;
  for (std::size_t n : {0u, 1u, 7u, 15u, 16u, 17u, 31u, 32u, 33u, 63u, 100u, 1000u, 4099u}) {
    for (int density : {0, 1, 2}) {  // specials: none, some, half of the elements
      std::vector<float> x(n + 3);
      for (auto& v : x) v = normal(rng);
      if (density > 0) {
        std::uniform_int_distribution<std::size_t> pos(0, x.size() - 1);
        const std::size_t m = density == 1 ? x.size() / 10 + 1 : x.size() / 2;
        for (std::size_t j = 0; j < m; ++j) x[pos(rng)] = specials[j % 8];
        x[pos(rng)] = odd_nan;
      }
      for (std::size_t begin : {std::size_t{0}, std::size_t{1}, std::size_t{3}}) {
        const std::size_t end = begin + n <= x.size() ? begin + n : x.size();
        for (std::uint32_t t : thresholds) {
          const std::size_t c0 = 5, room = (end - begin) + 1, guard = 8;
          std::vector<std::uint32_t> ig(c0 + room + guard, 0xA5A5A5A5u), il = ig;
          std::vector<float> vg(c0 + room + guard, 3.0f), vl = vg;
          const std::size_t cg = internal::compact_range_at(SimdLevel::kGeneric, x.data(), begin,
                                                            end, t, ig.data(), vg.data(), c0);
          const std::size_t cl =
              internal::compact_range_at(level, x.data(), begin, end, t, il.data(), vl.data(), c0);
          ASSERT_EQ(cg, cl) << "n=" << n << " begin=" << begin << " t=" << t;
          ASSERT_EQ(0, std::memcmp(ig.data(), il.data(), cg * 4)) << "n=" << n << " t=" << t;
          ASSERT_EQ(0, std::memcmp(vg.data(), vl.data(), cg * 4)) << "n=" << n << " t=" << t;
          for (std::size_t j = c0 + room; j < ig.size(); ++j) {
            ASSERT_EQ(il[j], 0xA5A5A5A5u) << "wrote past its room at " << j;
            ASSERT_EQ(vl[j], 3.0f) << "wrote past its room at " << j;
          }
          // The generic result is the definition: every hit, ascending.
          std::size_t want = c0;
          for (std::size_t i = begin; i < end; ++i) {
            if (mag(x[i]) < t) continue;
            ASSERT_EQ(ig[want], i);
            ++want;
          }
          ASSERT_EQ(want, cg);
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 600);
}

// The accumulating kernel: r = r + g for every element and the compaction of those sums, the
// generic kernel's r and entries bit for bit at every level (specials in g and in r: Inf + -Inf
// makes NaN, which is collected like any NaN).
TEST_P(CompactLevel, AccumulateSameAsGeneric) {
  const SimdLevel level = GetParam();
  if (!simd_level_supported(level)) GTEST_SKIP() << simd_level_name(level) << " not supported";
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const float specials[] = {std::numeric_limits<float>::quiet_NaN(),
                            std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(),
                            -0.0f,
                            0.0f,
                            std::numeric_limits<float>::denorm_min()};
  int cases = 0;
  for (std::size_t n : {0u, 1u, 15u, 16u, 31u, 32u, 33u, 100u, 4099u}) {
    for (int density : {0, 1}) {
      std::vector<float> g(n + 3), r(n + 3);
      for (auto& v : g) v = normal(rng);
      for (auto& v : r) v = 0.5f * normal(rng);
      if (density) {
        std::uniform_int_distribution<std::size_t> pos(0, g.size() - 1);
        for (std::size_t j = 0; j < g.size() / 5 + 1; ++j) {
          g[pos(rng)] = specials[j % 6];
          r[pos(rng)] = specials[(j + 2) % 6];
        }
      }
      for (std::size_t begin : {std::size_t{0}, std::size_t{3}}) {
        const std::size_t end = std::min(begin + n, g.size());
        for (std::uint32_t t : {0u, mag(1.0f), mag(2.5f), 0x7F800000u}) {
          const std::size_t c0 = 2, room = (end - begin) + 1;
          std::vector<std::uint32_t> ig(c0 + room + 8, 7u), il = ig;
          std::vector<float> vg(c0 + room + 8, 3.0f), vl = vg;
          std::vector<float> rg = r, rl = r;
          const std::size_t cg = internal::accumulate_range_at(
              SimdLevel::kGeneric, g.data(), rg.data(), begin, end, t, ig.data(), vg.data(), c0);
          const std::size_t cl = internal::accumulate_range_at(level, g.data(), rl.data(), begin,
                                                               end, t, il.data(), vl.data(), c0);
          ASSERT_EQ(cg, cl) << "n=" << n << " t=" << t;
          ASSERT_EQ(0, std::memcmp(rg.data(), rl.data(), rg.size() * 4)) << "n=" << n;
          ASSERT_EQ(0, std::memcmp(ig.data(), il.data(), cg * 4)) << "n=" << n << " t=" << t;
          ASSERT_EQ(0, std::memcmp(vg.data(), vl.data(), cg * 4)) << "n=" << n << " t=" << t;
          for (std::size_t j = c0 + room; j < il.size(); ++j) ASSERT_EQ(il[j], 7u);
          // The generic kernel is the definition: the sums in place, elements outside untouched.
          for (std::size_t i = 0; i < r.size(); ++i) {
            const float want = i >= begin && i < end ? r[i] + g[i] : r[i];
            ASSERT_EQ(0, std::memcmp(&rg[i], &want, 4)) << i;
          }
          ++cases;
        }
      }
    }
  }
  EXPECT_GT(cases, 100);
}

// topk_sampled_accumulate is the add followed by topk_sampled: the same entries and the same r,
// on the sampled path (n > 4 x sample size) and the direct exact path, with NaN too (selected
// first).
TEST(TopK, SampledAccumulateEqualsAddThenSampled) {
  for (Dist d : {Dist::kNormal, Dist::kStudentT, Dist::kManyZeros, Dist::kFewValues}) {
    for (std::size_t n : {std::size_t{1000}, std::size_t{300001}}) {
      std::vector<float> g = make(d, n, 5), r0 = make(Dist::kNormal, n, 6);
      for (auto& v : r0) v *= 0.25f;
      SampledOptions so;
      so.seed = 3;
      for (std::size_t k : {std::size_t{1}, n / 100, n / 10}) {
        std::vector<float> ra = r0, rb = r0;
        SparseVector a, b;
        topk_sampled_accumulate(g.data(), ra.data(), n, k, so, &a);
        for (std::size_t i = 0; i < n; ++i) rb[i] += g[i];
        topk_sampled(rb.data(), n, k, so, &b);
        ASSERT_EQ(a.indices, b.indices) << "n=" << n << " k=" << k;
        ASSERT_EQ(0, std::memcmp(a.values.data(), b.values.data(), a.size() * 4));
        ASSERT_EQ(0, std::memcmp(ra.data(), rb.data(), n * 4));
      }
    }
  }
  const std::size_t n = 300001;
  std::vector<float> g(n, 1.0f), r(n, 0.5f);
  g[n / 2] = std::numeric_limits<float>::quiet_NaN();
  SparseVector out;
  topk_sampled_accumulate(g.data(), r.data(), n, n / 100, SampledOptions{}, &out);
  EXPECT_EQ(r[0], 1.5f);
  EXPECT_EQ(r[n - 1], 1.5f);
  EXPECT_TRUE(std::isnan(r[n / 2]));
  ASSERT_GE(out.size(), n / 100);
  EXPECT_TRUE(std::binary_search(out.indices.begin(), out.indices.end(), std::uint32_t(n / 2)));
}

INSTANTIATE_TEST_SUITE_P(Levels, CompactLevel,
                         ::testing::Values(SimdLevel::kSSE2, SimdLevel::kAVX2, SimdLevel::kAVX512),
                         [](const ::testing::TestParamInfo<SimdLevel>& info) {
                           return std::string(simd_level_name(info.param));
                         });

TEST(TopK, CudaThresholdMatchesCpu) {
  if (!cuda::built() || cuda::device_count() == 0) GTEST_SKIP() << "no CUDA device";
  for (Dist d : kDists) {
    for (std::size_t n : {0u, 1u, 2047u, 2048u, 100003u}) {
      const auto x = make(d, n, 31);
      for (float t : {0.0f, 0.5f, 2.0f}) {
        SparseVector ref;
        threshold_select(x.data(), n, t, &ref);
        std::vector<unsigned> idx(n + 1);
        std::vector<float> val(n + 1);
        const std::size_t m =
            cuda::topk_threshold_select_host_staged(x.data(), n, t, idx.data(), val.data(), n + 1);
        ASSERT_EQ(m, ref.size());
        idx.resize(m);
        val.resize(m);
        EXPECT_EQ(idx, ref.indices);
        EXPECT_EQ(val, ref.values);
      }
    }
  }
  auto x = make(Dist::kNormal, 1000, 3);
  x[500] = std::numeric_limits<float>::quiet_NaN();
  std::vector<unsigned> idx(1000);
  std::vector<float> val(1000);
  SparseVector ref;  // NaN is selected at every threshold, as on the CPU
  threshold_select(x.data(), 1000, 1.0f, &ref);
  const std::size_t m =
      cuda::topk_threshold_select_host_staged(x.data(), 1000, 1.0f, idx.data(), val.data(), 1000);
  ASSERT_EQ(m, ref.size());
  idx.resize(m);
  EXPECT_EQ(idx, ref.indices);
  EXPECT_TRUE(std::binary_search(idx.begin(), idx.end(), 500u));
}

// Recursive-halving allreduce (allreduce_halving.cc) on the real transports, ranks as threads:
// exact results for integer and float reductions at counts that leave blocks empty or uneven,
// float sums in the algorithm's own order (a balanced pairwise tree over the ranks, the same
// bits on every rank), and a mismatched count raising on every rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <mutex>
#include <random>
#include <vector>

#include "rank_threads.h"
#include "ringpress/engine.h"

namespace rp = ringpress;

namespace {

// Halving for every message above one byte (the small threshold at its minimum), whatever the
// size; a power-of-two group of 4 or more picks it (allreduce.cc).
void run_halving(int P, const std::string& transport,
                 const std::function<void(rp::Communicator&)>& body) {
  rp_test::run_rank_threads(
      P,
      [&](rp::CommOptions& o) {
        o.context.transport = transport;
        o.context.shm_ring_bytes = 64 * 1024;  // messages larger than the ring wrap around it
        o.small_bytes = 1;
        o.halving_bytes = std::numeric_limits<std::size_t>::max();
      },
      body);
}

// The error tests: shared memory, 10 s deadlines, halving and doubling for everything.
void error_test_options(rp::CommOptions& o) {
  o.context.transport = "shm";
  o.context.timeout = std::chrono::seconds(10);
  o.op_timeout = std::chrono::seconds(10);
  o.small_bytes = 1;
  o.halving_bytes = std::numeric_limits<std::size_t>::max();
}

// A broken communicator's close may report the error again; the test has already seen it.
void close_quietly(rp::Communicator& c) {
  try {
    c.close();
  } catch (const rp::Error&) {
  }
}

// Rank r's float input: random, different on every rank (the same generator in every thread).
std::vector<float> random_input(int r, std::size_t n) {
  std::mt19937 gen(1234u + static_cast<unsigned>(r));
  std::uniform_real_distribution<float> d(-1.0f, 1.0f);
  std::vector<float> x(n);
  for (float& v : x) v = d(gen);
  return x;
}

// The sum in halving's order: round j adds the partial sums of the rank groups that differ in bit
// j, i.e. a balanced pairwise tree over the ranks in order: ((x0+x1)+(x2+x3))+... .
float tree_sum(const std::vector<std::vector<float>>& in, std::size_t i, int lo, int hi) {
  if (hi - lo == 1) return in[static_cast<std::size_t>(lo)][i];
  const int mid = lo + (hi - lo) / 2;
  return tree_sum(in, i, lo, mid) + tree_sum(in, i, mid, hi);
}

class CommHalving : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(CommHalving, ExactReductionsAtEveryBlockShape) {
  const int P = std::get<0>(GetParam());
  // Counts below P (empty blocks), uneven, and larger than the shm ring.
  const std::vector<std::size_t> counts = {1, 3, 7, 13, 1001, 40003, (std::size_t{1} << 17) + 5};
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    const int r = c.rank();
    for (std::size_t n : counts) {
      std::vector<std::int64_t> s(n);
      for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
      c.allreduce(s.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false);
      const std::int64_t ranks = P * (P + 1) / 2, offs = P * (P - 1) / 2;
      for (std::size_t i = 0; i < n; ++i)
        ASSERT_EQ(s[i], static_cast<std::int64_t>(i) * ranks - offs) << "n=" << n << " i=" << i;

      // The same through lossless (every message encoded, empty ones included).
      std::vector<std::int64_t> z(n);
      for (std::size_t i = 0; i < n; ++i) z[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
      rp::CompressionOptions lossless;
      lossless.kind = rp::WireCompression::kLossless;
      c.allreduce(z.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false, lossless);
      ASSERT_EQ(z, s) << "lossless, n=" << n;

      std::vector<std::int32_t> mx(n), mn(n);
      for (std::size_t i = 0; i < n; ++i) mx[i] = mn[i] = static_cast<std::int32_t>((i + r) % P);
      c.allreduce(mx.data(), n, rp::DType::kI32, rp::ReduceOp::kMax, false);
      c.allreduce(mn.data(), n, rp::DType::kI32, rp::ReduceOp::kMin, false);
      for (std::size_t i = 0; i < n; ++i) {
        ASSERT_EQ(mx[i], P - 1) << "n=" << n << " i=" << i;
        ASSERT_EQ(mn[i], 0) << "n=" << n << " i=" << i;
      }

      // Small integers: exact in float32 in any order; avg divides by a power of two.
      std::vector<float> f(n);
      for (std::size_t i = 0; i < n; ++i) f[i] = static_cast<float>((i % 7) + r);
      c.allreduce(f.data(), n, rp::DType::kF32, rp::ReduceOp::kAvg, false);
      for (std::size_t i = 0; i < n; ++i)
        ASSERT_EQ(f[i], static_cast<float>(i % 7) + static_cast<float>(P - 1) / 2.0f)
            << "n=" << n << " i=" << i;

      std::vector<double> p(n, r == 0 ? 3.0 : 2.0);
      c.allreduce(p.data(), n, rp::DType::kF64, rp::ReduceOp::kProd, false);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(p[i], 3.0 * std::ldexp(1.0, P - 1));

      std::vector<std::uint8_t> u(n);
      for (std::size_t i = 0; i < n; ++i)
        u[i] = static_cast<std::uint8_t>(r == int(i % P) ? 200 : 7);
      c.allreduce(u.data(), n, rp::DType::kU8, rp::ReduceOp::kMax, false);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(u[i], 200) << "n=" << n << " i=" << i;
    }
  });
}

// Plain and lossless (its own messages, encoded and decoded per round) give the tree's bits.
TEST_P(CommHalving, FloatSumsFollowThePairwiseTreeOnEveryRank) {
  const int P = std::get<0>(GetParam());
  const std::size_t n = 50021;
  std::vector<std::vector<float>> in(static_cast<std::size_t>(P)), plain(in.size()),
      lossless(in.size());
  for (int r = 0; r < P; ++r) in[static_cast<std::size_t>(r)] = random_input(r, n);
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    std::vector<float> x = random_input(c.rank(), n), y = x;
    c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
    const int enc = static_cast<int>(rp::Stage::kEncode),
              dec = static_cast<int>(rp::Stage::kDecode);
    EXPECT_EQ(c.stats().stage_bytes[static_cast<std::size_t>(enc)], 0u);
    rp::CompressionOptions co;
    co.kind = rp::WireCompression::kLossless;
    c.allreduce(y.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co);
    plain[static_cast<std::size_t>(c.rank())] = std::move(x);
    lossless[static_cast<std::size_t>(c.rank())] = std::move(y);
    // The codec ran: each rank encoded and decoded 2 (P-1)/P of the buffer.
    const auto st = c.stats();
    const std::uint64_t moved = 2 * (n - n / static_cast<std::size_t>(P)) * sizeof(float);
    EXPECT_NEAR(double(st.stage_bytes[static_cast<std::size_t>(enc)]), double(moved), 8.0 * P);
    EXPECT_NEAR(double(st.stage_bytes[static_cast<std::size_t>(dec)]), double(moved), 8.0 * P);
  });
  for (int r = 0; r < P; ++r) {
    for (const auto* out : {&plain, &lossless}) {
      const auto& o = (*out)[static_cast<std::size_t>(r)];
      const char* what = out == &plain ? "plain" : "lossless";
      ASSERT_EQ(o.size(), n) << what << " rank " << r;
      for (std::size_t i = 0; i < n; ++i) {
        const float want = tree_sum(in, i, 0, P);
        ASSERT_EQ(std::memcmp(&o[i], &want, sizeof want), 0)
            << what << " rank " << r << " i=" << i << ": " << o[i] << " != " << want;
      }
    }
  }
}

// A fused request (several tensors, the header carrying their split's digest) takes halving too.
TEST_P(CommHalving, CoalescedRequestsReduceEveryTensor) {
  const int P = std::get<0>(GetParam());
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    const int r = c.rank();
    std::vector<std::vector<std::int32_t>> ts = {std::vector<std::int32_t>(5, r),
                                                 std::vector<std::int32_t>(30001, 2 * r),
                                                 std::vector<std::int32_t>(3, 7)};
    std::vector<std::pair<void*, std::size_t>> bufs;
    for (auto& t : ts) bufs.emplace_back(t.data(), t.size());
    ASSERT_TRUE(c.allreduce_coalesced(bufs, rp::DType::kI32, rp::ReduceOp::kSum, false)->wait());
    const int sum = P * (P - 1) / 2;
    for (auto v : ts[0]) ASSERT_EQ(v, sum);
    for (auto v : ts[1]) ASSERT_EQ(v, 2 * sum);
    for (auto v : ts[2]) ASSERT_EQ(v, 7 * P);
  });
}

// Allgather by recursive doubling: equal and variable blocks (empty ones included), from a
// separate input and in place.
TEST_P(CommHalving, AllgatherGathersEveryBlockInRankOrder) {
  const int P = std::get<0>(GetParam());
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    const int r = c.rank();
    for (int variant = 0; variant < 3; ++variant) {
      std::vector<std::size_t> counts(static_cast<std::size_t>(P));
      for (int q = 0; q < P; ++q)
        counts[static_cast<std::size_t>(q)] = variant == 0   ? 20011
                                              : variant == 1 ? static_cast<std::size_t>(q) * 3001
                                                             : (q % 3 == 1 ? 0 : 17);
      std::vector<std::size_t> off(counts.size() + 1, 0);
      for (std::size_t q = 0; q < counts.size(); ++q) off[q + 1] = off[q] + counts[q];
      std::vector<std::int32_t> out(off.back(), -1);
      const std::size_t me = static_cast<std::size_t>(r);
      std::vector<std::int32_t> in(counts[me]);
      for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::int32_t>(r * 100000 + i);
      const bool in_place = variant == 1;
      if (in_place) std::copy(in.begin(), in.end(), out.begin() + static_cast<long>(off[me]));
      c.allgather(in_place ? out.data() + off[me] : in.data(), out.data(), counts, rp::DType::kI32,
                  false);
      for (int q = 0; q < P; ++q)
        for (std::size_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i)
          ASSERT_EQ(out[off[static_cast<std::size_t>(q)] + i],
                    static_cast<std::int32_t>(q * 100000 + i))
              << "variant " << variant << " block " << q << " i=" << i;
    }
  });
}

// Reduce-scatter by recursive halving: rank r gets block r reduced, equal and variable blocks.
TEST_P(CommHalving, ReduceScatterReducesEveryRanksBlock) {
  const int P = std::get<0>(GetParam());
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    const int r = c.rank();
    for (int variant = 0; variant < 2; ++variant) {
      std::vector<std::size_t> counts(static_cast<std::size_t>(P));
      for (int q = 0; q < P; ++q)
        counts[static_cast<std::size_t>(q)] =
            variant == 0 ? 10007 : static_cast<std::size_t>((q * 7919) % 5 == 0 ? 0 : q * 2003);
      std::size_t total = 0;
      for (auto n : counts) total += n;
      std::vector<std::int64_t> in(total);
      for (std::size_t i = 0; i < total; ++i) in[i] = static_cast<std::int64_t>(i) + r;
      const std::vector<std::int64_t> copy = in;
      const std::size_t me = static_cast<std::size_t>(r);
      std::size_t my_off = 0;
      for (std::size_t q = 0; q < me; ++q) my_off += counts[q];
      std::vector<std::int64_t> out(counts[me] + 1, -7);  // one guard element
      c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kI64, rp::ReduceOp::kSum, false);
      for (std::size_t i = 0; i < counts[me]; ++i)
        ASSERT_EQ(out[i], static_cast<std::int64_t>(P) * static_cast<std::int64_t>(my_off + i) +
                              P * (P - 1) / 2)
            << "variant " << variant << " i=" << i;
      ASSERT_EQ(out[counts[me]], -7) << "wrote past the block";
      ASSERT_EQ(in, copy) << "the input changed";
      std::vector<float> f(total, static_cast<float>(r));
      std::vector<float> fo(counts[me] + 1, -1.0f);
      c.reduce_scatter(f.data(), fo.data(), counts, rp::DType::kF32, rp::ReduceOp::kMax, false);
      for (std::size_t i = 0; i < counts[me]; ++i) ASSERT_EQ(fo[i], static_cast<float>(P - 1));
      // avg: the sum, divided once by P (a power of two: exact here).
      c.reduce_scatter(f.data(), fo.data(), counts, rp::DType::kF32, rp::ReduceOp::kAvg, false);
      for (std::size_t i = 0; i < counts[me]; ++i)
        ASSERT_EQ(fo[i], static_cast<float>(P - 1) / 2.0f) << "avg, i=" << i;
    }
  });
}

// Top-k's allreduce allgathers the payload sizes and then the payloads, with its own zeroing
// overlapped in the waits (AllgatherOptions::overlap): with ratio 1 every entry is sent, so the
// result is the exact sum (small integers), on every rank.
TEST_P(CommHalving, SparseAllreduceOverDoublingAllgathers) {
  const int P = std::get<0>(GetParam());
  run_halving(P, std::get<1>(GetParam()), [&](rp::Communicator& c) {
    const std::size_t n = 30011;
    std::vector<float> x(n);
    for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i % 11) + c.rank());
    rp::CompressionOptions co;
    co.kind = rp::WireCompression::kTopK;
    co.ratio = 1.0;
    c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co);
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_EQ(x[i], static_cast<float>(P * (i % 11) + P * (P - 1) / 2)) << "i=" << i;
  });
}

INSTANTIATE_TEST_SUITE_P(Transports, CommHalving,
                         ::testing::Combine(::testing::Values(4, 8),
                                            ::testing::Values("tcp", "shm")),
                         [](const auto& info) {
                           return std::get<1>(info.param) + std::to_string(std::get<0>(info.param));
                         });

// With the default thresholds, lossless takes plain's algorithm at every size (recursive doubling
// when small, halving in the middle, the ring above), so its result has plain's bits.
TEST(CommHalvingDefaults, LosslessMatchesPlainAtEverySize) {
  const int P = 4;
  rp_test::run_rank_threads(
      P, [](rp::CommOptions& o) { o.context.transport = "shm"; },
      [&](rp::Communicator& c) {
        for (std::size_t n : {std::size_t{1000}, std::size_t{100003}, std::size_t{1} << 21}) {
          std::vector<float> x = random_input(c.rank(), n), y = x;
          c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
          rp::CompressionOptions co;
          co.kind = rp::WireCompression::kLossless;
          c.allreduce(y.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co);
          ASSERT_EQ(std::memcmp(x.data(), y.data(), n * sizeof(float)), 0)
              << "n=" << n << " rank " << c.rank();
        }
      });
}

// Allgather and reduce_scatter with counts that differ across ranks (the same total, blocks
// split differently) raise on every rank instead of exchanging the wrong ranges: in the call on
// the ranks whose exchange disagrees, at the next call on the others. Where blocks differ in
// size the headers carry a digest of the whole split, not the total (allgather.cc), so a split
// that differs only at boundaries whose windows add up the same is seen too (the second case:
// ranks 0 and 1 split 2,1,3,2 and ranks 2 and 3 1,2,2,3; every exchange's length agrees).
TEST(CommHalvingErrors, MismatchedSplitsRaiseOnEveryRank) {
  const int P = 4;
  for (const int split : {0, 1}) {
    for (const char* op : {"allgather", "reduce_scatter"}) {
      std::mutex mu;
      std::vector<std::string> kinds(P);
      rp_test::run_rank_threads(P, error_test_options, [&](rp::Communicator& c) {
        std::vector<std::size_t> counts(P, 1000);
        // The same total, blocks 2 and 3 split differently: rank 3's exchange with rank 2 (and
        // allgather's kind, equal against variable blocks) disagrees.
        if (split == 0 && c.rank() == 3) counts = {1000, 1000, 1500, 500};
        if (split == 1) {
          counts = c.rank() < 2 ? std::vector<std::size_t>{1000, 500, 1500, 1000}
                                : std::vector<std::size_t>{500, 1000, 1000, 1500};
        }
        std::vector<float> big(4000, 1.0f), out(4000);
        try {
          if (std::string(op) == "allgather") {
            c.allgather(big.data(), out.data(), counts, rp::DType::kF32, false);
          } else {
            c.reduce_scatter(big.data(), out.data(), counts, rp::DType::kF32, rp::ReduceOp::kSum,
                             false);
          }
          // Ranks 0 and 1 may finish their own (consistent) exchanges before ranks 2 and 3
          // find the mismatch: they learn it from the abort at their next call.
          c.barrier(false);
        } catch (const rp::Error& e) {
          std::lock_guard<std::mutex> lock(mu);
          kinds[static_cast<std::size_t>(c.rank())] = rp::error_kind_name(e.kind());
        }
        EXPECT_TRUE(c.broken()) << op << " rank " << c.rank();
        close_quietly(c);
      });
      for (int r = 0; r < P; ++r) {
        EXPECT_EQ(kinds[static_cast<std::size_t>(r)], "UsageError")
            << op << " split " << split << " rank " << r;
      }
    }
  }
}

// Ranks that disagree on the count raise on every rank (the first exchange's header carries the
// collective's count), within the timeout, and the communicator reports itself broken.
TEST(CommHalvingErrors, MismatchedCountRaisesOnEveryRank) {
  const int P = 4;
  std::mutex mu;
  std::vector<std::string> kinds(P);
  rp_test::run_rank_threads(P, error_test_options, [&](rp::Communicator& c) {
    std::vector<float> x(1000 + (c.rank() == 2 ? 1 : 0), 1.0f);
    try {
      c.allreduce(x.data(), x.size(), rp::DType::kF32, rp::ReduceOp::kSum, false);
    } catch (const rp::Error& e) {
      std::lock_guard<std::mutex> lock(mu);
      kinds[static_cast<std::size_t>(c.rank())] = rp::error_kind_name(e.kind());
    }
    EXPECT_TRUE(c.broken()) << "rank " << c.rank();
    close_quietly(c);
  });
  for (int r = 0; r < P; ++r) EXPECT_EQ(kinds[static_cast<std::size_t>(r)], "UsageError") << r;
}

}  // namespace

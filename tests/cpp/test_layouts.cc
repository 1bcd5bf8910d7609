// Every collective on every layout of issue 17's matrix: H hosts x L ranks per host for H, L in
// {1, 2, 4}, block and cyclic placement, and hosts of different sizes; ranks are threads over the
// real transports (shared memory within a "host", TCP across: ContextOptions::host_id). Small
// and large sizes of each collective, so both the leaders' paths and the (pipelined) hierarchy
// or host-ordered rings run. Exact kinds against the reference computed here (integers exactly,
// float sums within rounding and bit-identical on every rank, lossless = plain's bits), int8
// within its bound and with error feedback's invariant.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "rank_threads.h"
#include "ringpress/codec.h"
#include "ringpress/engine.h"

namespace rp = ringpress;

namespace {

struct LayoutCase {
  std::string name;
  std::vector<int> host;  // per rank
};

std::vector<LayoutCase> layouts() {
  std::vector<LayoutCase> v;
  for (int H : {1, 2, 4}) {
    for (int L : {1, 2, 4}) {
      for (bool cyclic : {false, true}) {
        if (cyclic && (H == 1 || L == 1)) continue;  // the same as block
        LayoutCase c;
        c.name = std::to_string(H) + "x" + std::to_string(L) + (cyclic ? " cyclic" : " block");
        for (int r = 0; r < H * L; ++r) c.host.push_back(cyclic ? r % H : r / L);
        v.push_back(c);
      }
    }
  }
  v.push_back({"hosts of 1, 2 and 3", {0, 1, 1, 2, 2, 2}});
  v.push_back({"hosts of 3 and 1, interleaved", {0, 1, 0, 0}});
  return v;
}

float value(int r, std::size_t i) {
  return static_cast<float>(static_cast<int>((i * 13 + static_cast<std::size_t>(r) * 7) % 29) -
                            14) *
         0.37f;
}

void run_layout(const LayoutCase& lay, const std::function<void(rp::Communicator&)>& body) {
  rp_test::run_rank_threads(
      static_cast<int>(lay.host.size()),
      [&](rp::CommOptions& o) {
        o.context.host_id =
            "host" + std::to_string(lay.host[static_cast<std::size_t>(o.context.rank)]);
        o.context.timeout = std::chrono::seconds(60);
        o.context.shm_ring_bytes = 1u << 16;
        o.segment_bytes = 4096;  // large requests pipeline in several chunks
        o.small_bytes = 1024;    // and small ones take the leaders
      },
      body);
}

}  // namespace

TEST(Layouts, EveryCollectiveOnEveryLayout) {
  for (const LayoutCase& lay : layouts()) {
    const int P = static_cast<int>(lay.host.size());
    SCOPED_TRACE(lay.name);
    std::mutex mu;
    std::vector<std::vector<float>> plain(static_cast<std::size_t>(P)),
        q8_out(static_cast<std::size_t>(P)), q8_res(static_cast<std::size_t>(P));
    run_layout(lay, [&](rp::Communicator& c) {
      const int r = c.rank();
      const auto me = static_cast<std::size_t>(r);
      const std::string at = lay.name + " rank " + std::to_string(r);
      // allreduce: int64 exact, float32 sum (plain and lossless), int8 with error feedback
      for (const std::size_t n : {std::size_t{0}, std::size_t{7}, std::size_t{70001}}) {
        std::vector<std::int64_t> a(n);
        for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
        c.allreduce(a.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false);
        for (std::size_t i = 0; i < n; ++i) {
          ASSERT_EQ(a[i], static_cast<std::int64_t>(i) * P * (P + 1) / 2 - P * (P - 1) / 2)
              << at << " n=" << n << " i=" << i;
        }
      }
      for (const std::size_t n : {std::size_t{7}, std::size_t{70001}}) {
        std::vector<float> x(n), y(n);
        for (std::size_t i = 0; i < n; ++i) x[i] = y[i] = value(r, i);
        c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
        rp::CompressionOptions lz;
        lz.kind = rp::WireCompression::kLossless;
        c.allreduce(y.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, lz);
        for (std::size_t i = 0; i < n; ++i) {
          double want = 0;
          for (int q = 0; q < P; ++q) want += value(q, i);
          ASSERT_NEAR(x[i], want, 1e-4 * P) << at << " n=" << n << " i=" << i;
        }
        ASSERT_EQ(0, std::memcmp(x.data(), y.data(), n * sizeof(float)))
            << at << " n=" << n << ": lossless differs from plain";
        if (n > 7) {
          std::lock_guard<std::mutex> lock(mu);
          plain[me] = x;
        }
      }
      {
        const std::size_t n = 70001;
        std::vector<float> x(n), res(n, 0.0f);
        for (std::size_t i = 0; i < n; ++i) x[i] = value(r, i) + 0.01f * static_cast<float>(i % 5);
        rp::CompressionOptions q8;
        q8.kind = rp::WireCompression::kInt8;
        c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, q8, res.data());
        double num = 0, den = 0;
        for (std::size_t i = 0; i < n; ++i) {
          double want = 0;
          for (int q = 0; q < P; ++q) want += value(q, i) + 0.01f * static_cast<float>(i % 5);
          num += (x[i] - want) * (x[i] - want);
          den += want * want;
        }
        ASSERT_LT(std::sqrt(num / den), 0.03) << at << ": int8 relative error";
        std::lock_guard<std::mutex> lock(mu);
        q8_out[me] = x;
        q8_res[me] = res;
      }
      // allgather(v) and reduce_scatter, small (the leaders) and large (rings)
      for (const std::size_t per : {std::size_t{3}, std::size_t{5000}}) {
        std::vector<std::size_t> counts(static_cast<std::size_t>(P));
        for (int q = 0; q < P; ++q) counts[static_cast<std::size_t>(q)] = per + (q % 3);
        std::vector<std::size_t> off(static_cast<std::size_t>(P) + 1, 0);
        for (std::size_t q = 0; q < counts.size(); ++q) off[q + 1] = off[q] + counts[q];
        const std::size_t total = off.back();
        std::vector<std::int32_t> mine(counts[me]), all(total, -1);
        for (std::size_t i = 0; i < mine.size(); ++i)
          mine[i] = static_cast<std::int32_t>(100000 * r + static_cast<int>(i));
        c.allgather(mine.data(), all.data(), counts, rp::DType::kI32, false);
        for (int q = 0; q < P; ++q) {
          for (std::size_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i) {
            ASSERT_EQ(all[off[static_cast<std::size_t>(q)] + i],
                      static_cast<std::int32_t>(100000 * q + static_cast<int>(i)))
                << at << " allgather per=" << per << " block " << q << " i=" << i;
          }
        }
        std::vector<std::int64_t> in(total), out(counts[me]);
        for (std::size_t i = 0; i < total; ++i) in[i] = static_cast<std::int64_t>(i) * (r + 2);
        c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kI64, rp::ReduceOp::kSum, false);
        for (std::size_t i = 0; i < counts[me]; ++i) {
          const auto g = static_cast<std::int64_t>(off[me] + i);
          ASSERT_EQ(out[i], g * (P * (P + 1) / 2 + P)) << at << " reduce_scatter per=" << per;
        }
      }
      // broadcast from the last rank: the tree (small) and the chain (large)
      for (const std::size_t n : {std::size_t{7}, std::size_t{70001}}) {
        std::vector<std::int32_t> b(n);
        for (std::size_t i = 0; i < n; ++i) b[i] = r == P - 1 ? static_cast<std::int32_t>(i) : -1;
        c.broadcast(b.data(), n, rp::DType::kI32, P - 1, false);
        for (std::size_t i = 0; i < n; ++i)
          ASSERT_EQ(b[i], static_cast<std::int32_t>(i)) << at << " broadcast n=" << n;
      }
      // gather and scatter through rank 0, alltoall, barrier
      {
        std::vector<std::int32_t> blk(5, r), all(5 * static_cast<std::size_t>(P), -1), got(5, -1);
        std::vector<std::pair<void*, std::size_t>> outs;
        std::vector<std::pair<const void*, std::size_t>> ins;
        if (r == 0) {
          for (int q = 0; q < P; ++q) {
            outs.emplace_back(all.data() + 5 * q, 5);
            ins.emplace_back(all.data() + 5 * q, 5);
          }
        }
        c.gather(blk.data(), 5, outs, rp::DType::kI32, 0, false);
        if (r == 0) {
          for (std::size_t i = 0; i < all.size(); ++i)
            ASSERT_EQ(all[i], static_cast<std::int32_t>(i / 5)) << at << " gather i=" << i;
        }
        c.scatter(ins, got.data(), 5, rp::DType::kI32, 0, false);
        for (std::int32_t v : got) ASSERT_EQ(v, r) << at << " scatter";
        std::vector<std::int32_t> send(2 * static_cast<std::size_t>(P)),
            recv(2 * static_cast<std::size_t>(P), -1);
        for (int q = 0; q < P; ++q) {
          send[2 * static_cast<std::size_t>(q)] = 1000 * r + q;
          send[2 * static_cast<std::size_t>(q) + 1] = -(1000 * r + q);
        }
        const std::vector<std::size_t> two(static_cast<std::size_t>(P), 2);
        c.alltoall(send.data(), recv.data(), two, two, rp::DType::kI32, false);
        for (int q = 0; q < P; ++q) {
          ASSERT_EQ(recv[2 * static_cast<std::size_t>(q)], 1000 * q + r) << at << " alltoall";
          ASSERT_EQ(recv[2 * static_cast<std::size_t>(q) + 1], -(1000 * q + r))
              << at << " alltoall";
        }
        c.barrier(false);
      }
    });
    if (HasFailure()) return;
    // int8: the same bits everywhere, and outputs plus residuals make up the inputs
    for (std::size_t i = 0; i < q8_out[0].size(); ++i) {
      double want = 0, got = q8_out[0][i];
      for (int q = 0; q < P; ++q) {
        want += value(q, i) + 0.01f * static_cast<float>(i % 5);
        got += q8_res[static_cast<std::size_t>(q)][i];
        ASSERT_EQ(q8_out[static_cast<std::size_t>(q)][i], q8_out[0][i]) << lay.name << " i=" << i;
      }
      ASSERT_NEAR(got, want, 1e-4 * (1.0 + std::fabs(want)) * P) << lay.name << " i=" << i;
    }
    for (int q = 1; q < P; ++q) {
      ASSERT_EQ(0, std::memcmp(plain[0].data(), plain[static_cast<std::size_t>(q)].data(),
                               plain[0].size() * sizeof(float)))
          << lay.name << ": rank " << q << "'s float sum differs from rank 0's";
    }
  }
}

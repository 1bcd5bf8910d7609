// Communicators as threads of one process over an in-memory store (DESIGN habit 9): the real
// transports (tcp sockets on loopback, shm rings) and the engine, fast enough to run under the
// sanitizers (scripts/sanitize.sh runs these under TSan too).
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <numeric>
#include <thread>
#include <vector>

#include "rank_threads.h"
#include "ringpress/engine.h"
#include "ringpress/store.h"

namespace rp = ringpress;

namespace {

void run_threads(int P, const std::string& transport,
                 const std::function<void(rp::Communicator&)>& body, std::size_t segment_bytes = 0,
                 std::size_t ring_bytes = 0) {
  rp_test::run_rank_threads(
      P,
      [&](rp::CommOptions& o) {
        o.context.transport = transport;
        if (ring_bytes) o.context.shm_ring_bytes = ring_bytes;
        o.segment_bytes = segment_bytes;
      },
      body);
}

class CommThreads : public ::testing::TestWithParam<std::tuple<int, std::string>> {};

TEST_P(CommThreads, AllreduceBroadcastAllgatherBarrier) {
  const int P = std::get<0>(GetParam());
  const std::string transport = std::get<1>(GetParam());
  run_threads(
      P, transport,
      [P](rp::Communicator& c) {
        const int r = c.rank();
        for (std::size_t n :
             {std::size_t{0}, std::size_t{1}, std::size_t{13}, std::size_t{40000}}) {
          std::vector<float> x(n);
          for (std::size_t i = 0; i < n; ++i) x[i] = static_cast<float>((i % 5) + r);
          c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
          for (std::size_t i = 0; i < n; ++i) {
            ASSERT_EQ(x[i], static_cast<float>(P * (i % 5) + P * (P - 1) / 2))
                << "n=" << n << " i=" << i;
          }
          std::vector<std::int64_t> m(n, r);
          c.allreduce(m.data(), n, rp::DType::kI64, rp::ReduceOp::kMax, false);
          for (auto v : m) ASSERT_EQ(v, P - 1);
        }
        std::vector<double> b(1000, r);
        c.broadcast(b.data(), b.size(), rp::DType::kF64, P - 1, false);
        for (double v : b) ASSERT_EQ(v, P - 1);
        std::vector<std::int32_t> in(3, r), out(3 * static_cast<std::size_t>(P));
        c.allgather(in.data(), out.data(), std::vector<std::size_t>(static_cast<std::size_t>(P), 3),
                    rp::DType::kI32, false);
        for (int q = 0; q < P; ++q) {
          for (int k = 0; k < 3; ++k) ASSERT_EQ(out[static_cast<std::size_t>(q * 3 + k)], q);
        }
        // Async requests complete in order; callbacks fire once.
        std::atomic<int> fired{0};
        std::vector<std::vector<float>> bufs(6, std::vector<float>(5000, 1.0f));
        std::vector<std::shared_ptr<rp::Work>> works;
        for (auto& v : bufs) {
          works.push_back(
              c.allreduce(v.data(), v.size(), rp::DType::kF32, rp::ReduceOp::kSum, true));
          works.back()->on_complete([&fired](rp::Work&) { fired++; });
        }
        for (auto& w : works) ASSERT_TRUE(w->wait());
        // Callbacks run on the communicator's callback threads just after waiters are released.
        for (int spin = 0; spin < 2000 && fired.load() < 6; ++spin) {
          std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        EXPECT_EQ(fired.load(), 6);
        for (auto& v : bufs) ASSERT_EQ(v[4999], static_cast<float>(P));
        c.barrier(false);
      },
      4096, 8192);
}

TEST_P(CommThreads, CallbackMayWaitForALaterRequestAndRunACollective) {
  // torch's PowerSGD hook does both inside a future's then(): a callback must not run on the
  // thread that executes requests, or the later request never runs.
  const int P = std::get<0>(GetParam());
  run_threads(P, std::get<1>(GetParam()), [P](rp::Communicator& c) {
    std::vector<float> a(10000, 1.0f), b(100, 2.0f), y(10, static_cast<float>(c.rank()));
    std::atomic<bool> done{false};
    std::string error;
    auto w1 = c.allreduce(a.data(), a.size(), rp::DType::kF32, rp::ReduceOp::kSum, true);
    auto w2 = c.allreduce(b.data(), b.size(), rp::DType::kF32, rp::ReduceOp::kSum, true);
    // w1, w2 are queued on every rank before the callback's collective: the same order everywhere.
    w1->on_complete([&](rp::Work&) {
      try {
        w2->wait();
        c.allreduce(y.data(), y.size(), rp::DType::kF32, rp::ReduceOp::kSum, false);
      } catch (const std::exception& e) {
        error = e.what();
      }
      done = true;
    });
    for (int i = 0; i < 20000 && !done.load(); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    ASSERT_TRUE(done.load());
    EXPECT_EQ(error, "");
    EXPECT_EQ(b[0], 2.0f * static_cast<float>(P));
    EXPECT_EQ(y[9], static_cast<float>(P * (P - 1) / 2));
  });
}

// The ring's reduce-scatter reduces straight out of the transport (Expect::reduce). A broadcast
// of 1..8 bytes before each allreduce leaves the byte stream at every offset, so elements arrive
// misaligned in a shm ring, cut in two by its wrap-around (a 4 KiB ring), or split across TCP
// reads; every result must still be exact. Sizes are above the small-message switch (64 KiB), so
// the ring runs, in 1000-byte segments.
TEST_P(CommThreads, ReducingReceivesAtEveryStreamOffset) {
  const int P = std::get<0>(GetParam());
  const std::string transport = std::get<1>(GetParam());
  run_threads(
      P, transport,
      [P](rp::Communicator& c) {
        const int r = c.rank();
        const int tri = P * (P - 1) / 2;  // sum of the ranks
        for (std::size_t shift = 0; shift < 8; ++shift) {
          std::vector<std::uint8_t> pad(shift + 1, static_cast<std::uint8_t>(r + 1));
          c.broadcast(pad.data(), pad.size(), rp::DType::kU8, 0, false);
          for (auto v : pad) ASSERT_EQ(v, 1);
          const std::size_t n8 = 70000 / 8 + shift;
          std::vector<double> d(n8);
          for (std::size_t i = 0; i < n8; ++i) d[i] = static_cast<double>(i % 7) + 0.5 * r;
          c.allreduce(d.data(), n8, rp::DType::kF64, rp::ReduceOp::kSum, false);
          for (std::size_t i = 0; i < n8; ++i) {
            ASSERT_EQ(d[i], static_cast<double>(P * (i % 7)) + 0.5 * tri)
                << "shift=" << shift << " i=" << i;
          }
          const std::size_t n2 = 70000 / 2 + shift;
          std::vector<std::int16_t> s(n2);
          for (std::size_t i = 0; i < n2; ++i)
            s[i] = static_cast<std::int16_t>(static_cast<int>(i % 11) - r);
          c.allreduce(s.data(), n2, rp::DType::kI16, rp::ReduceOp::kSum, false);
          for (std::size_t i = 0; i < n2; ++i) {
            ASSERT_EQ(s[i], static_cast<std::int16_t>(P * static_cast<int>(i % 11) - tri))
                << "shift=" << shift << " i=" << i;
          }
          const std::size_t n4 = 70000 / 4 + shift;
          std::vector<float> f(n4);
          for (std::size_t i = 0; i < n4; ++i) f[i] = static_cast<float>((i % 13) * (r + 1));
          c.allreduce(f.data(), n4, rp::DType::kF32, rp::ReduceOp::kMax, false);
          for (std::size_t i = 0; i < n4; ++i) {
            ASSERT_EQ(f[i], static_cast<float>((i % 13) * P)) << "shift=" << shift << " i=" << i;
          }
        }
      },
      /*segment_bytes=*/1000, /*ring_bytes=*/4096);
}

// The _now forms (no Work) give the Work forms' results, take their turn behind async requests
// still queued (the same order on every rank), and count as requests (sequence numbers, stats).
TEST_P(CommThreads, NowFormsMatchTheWorkFormsAndKeepTheOrder) {
  const int P = std::get<0>(GetParam());
  run_threads(P, std::get<1>(GetParam()), [P](rp::Communicator& c) {
    const int r = c.rank();
    const auto p = static_cast<std::size_t>(P);
    for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{1023}, std::size_t{70000}}) {
      std::vector<float> a(n), b(n);
      for (std::size_t i = 0; i < n; ++i) a[i] = b[i] = static_cast<float>(i % 7) * 0.5f + r;
      c.allreduce(a.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
      c.allreduce_now(b.data(), n, rp::DType::kF32, rp::ReduceOp::kSum);
      ASSERT_TRUE(n == 0 || std::memcmp(a.data(), b.data(), n * sizeof(float)) == 0) << "n=" << n;

      std::vector<std::int32_t> in(n, r * 10 + 1), g1(n * p), g2(n * p);
      c.allgather(in.data(), g1.data(), std::vector<std::size_t>(p, n), rp::DType::kI32, false);
      c.allgather_now(in.data(), g2.data(), n, rp::DType::kI32);
      ASSERT_EQ(g1, g2);

      std::vector<double> rs_in(n * p);
      for (std::size_t i = 0; i < rs_in.size(); ++i) rs_in[i] = static_cast<double>(i + r);
      std::vector<double> o1(n), o2(n);
      c.reduce_scatter(rs_in.data(), o1.data(), std::vector<std::size_t>(p, n), rp::DType::kF64,
                       rp::ReduceOp::kMax, false);
      c.reduce_scatter_now(rs_in.data(), o2.data(), n, rp::DType::kF64, rp::ReduceOp::kMax);
      ASSERT_EQ(o1, o2);
      for (std::size_t i = 0; i < n; ++i) ASSERT_EQ(o2[i], static_cast<double>(r * n + i + P - 1));
    }
    // Behind queued async requests: the _now call waits its turn instead of overtaking them.
    std::vector<std::vector<float>> bufs(4, std::vector<float>(50000, 1.0f));
    std::vector<std::shared_ptr<rp::Work>> works;
    for (auto& v : bufs)
      works.push_back(c.allreduce(v.data(), v.size(), rp::DType::kF32, rp::ReduceOp::kSum, true));
    const std::uint32_t before = c.sequence();
    std::vector<float> y(10, static_cast<float>(r));
    c.allreduce_now(y.data(), y.size(), rp::DType::kF32, rp::ReduceOp::kSum);
    c.barrier_now();
    EXPECT_EQ(c.sequence(), before + 2);
    for (auto& w : works) EXPECT_TRUE(w->is_completed());
    for (auto& v : bufs) ASSERT_EQ(v[49999], static_cast<float>(P));
    EXPECT_EQ(y[9], static_cast<float>(P * (P - 1) / 2));
  });
}

INSTANTIATE_TEST_SUITE_P(Transports, CommThreads,
                         ::testing::Combine(::testing::Values(2, 3),
                                            ::testing::Values("tcp", "shm")),
                         [](const auto& info) {
                           return std::get<1>(info.param) + std::to_string(std::get<0>(info.param));
                         });

TEST(CommErrors, MismatchedCountRaisesUsageErrorOnEveryRank) {
  auto store = std::make_shared<rp::HashStore>();
  std::vector<std::string> kinds(3);
  std::vector<std::thread> threads;
  for (int r = 0; r < 3; ++r) {
    threads.emplace_back([&, r] {
      rp::CommOptions o;
      o.context.rank = r;
      o.context.size = 3;
      o.context.transport = "shm";
      o.context.timeout = std::chrono::seconds(10);
      o.op_timeout = std::chrono::seconds(10);
      rp::Communicator c(store, o);
      std::vector<float> x(100 + (r == 1 ? 1 : 0), 1.0f);
      try {
        c.allreduce(x.data(), x.size(), rp::DType::kF32, rp::ReduceOp::kSum, false);
      } catch (const rp::Error& e) {
        kinds[static_cast<std::size_t>(r)] = rp::error_kind_name(e.kind());
      }
      EXPECT_TRUE(c.broken());
      // The communicator keeps its first error.
      EXPECT_THROW(c.barrier(false), rp::UsageError);
    });
  }
  for (auto& t : threads) t.join();
  for (auto& k : kinds) EXPECT_EQ(k, "UsageError");
}

TEST(CommErrors, ArgumentErrorsLeaveTheCommunicatorUsable) {
  run_threads(2, "tcp", [](rp::Communicator& c) {
    std::vector<std::int16_t> bad(4);
    EXPECT_THROW(c.allreduce(bad.data(), 4, rp::DType::kBool, rp::ReduceOp::kSum, false),
                 rp::UsageError);
    EXPECT_THROW(c.broadcast(bad.data(), 4, rp::DType::kI16, 7, false), rp::UsageError);
    EXPECT_FALSE(c.broken());
    std::vector<float> x(10, 2.0f);
    c.allreduce(x.data(), 10, rp::DType::kF32, rp::ReduceOp::kProd, false);
    EXPECT_EQ(x[0], 4.0f);
  });
}

// The _now forms check their arguments as the Work forms do (a UsageError naming the op, the
// communicator still usable); after a failure they raise the communicator's first error.
TEST(CommErrors, NowFormsRaiseTheWorkFormsErrors) {
  run_threads(2, "shm", [](rp::Communicator& c) {
    std::vector<std::int16_t> bad(8);
    try {
      c.allreduce_now(bad.data(), 4, rp::DType::kBool, rp::ReduceOp::kSum);
      ADD_FAILURE() << "no error";
    } catch (const rp::UsageError& e) {
      EXPECT_EQ(e.op(), "allreduce");
      EXPECT_EQ(e.rank(), c.rank());
    }
    EXPECT_THROW(c.reduce_scatter_now(bad.data(), nullptr, 4, rp::DType::kI16, rp::ReduceOp::kSum),
                 rp::UsageError);
    EXPECT_THROW(c.allgather_now(bad.data(), nullptr, 4, rp::DType::kI16), rp::UsageError);
    EXPECT_FALSE(c.broken());
    std::vector<float> x(10, 2.0f);
    c.allreduce_now(x.data(), 10, rp::DType::kF32, rp::ReduceOp::kProd);
    EXPECT_EQ(x[0], 4.0f);
  });
  // A count mismatch breaks the communicator on every rank; later _now calls raise that error.
  run_threads(2, "tcp", [](rp::Communicator& c) {
    std::vector<float> x(100 + static_cast<std::size_t>(c.rank()), 1.0f);
    EXPECT_THROW(c.allreduce_now(x.data(), x.size(), rp::DType::kF32, rp::ReduceOp::kSum),
                 rp::UsageError);
    EXPECT_TRUE(c.broken());
    EXPECT_THROW(c.barrier_now(), rp::UsageError);
  });
}

TEST(CommFusion, CoalescedMatchesSeparate) {
  run_threads(2, "shm", [](rp::Communicator& c) {
    std::vector<std::vector<double>> parts{std::vector<double>(3, 1.0 + c.rank()),
                                           std::vector<double>(0), std::vector<double>(70000, 0.5)};
    std::vector<std::pair<void*, std::size_t>> bufs;
    for (auto& p : parts) bufs.emplace_back(p.data(), p.size());
    c.allreduce_coalesced(bufs, rp::DType::kF64, rp::ReduceOp::kSum, false);
    EXPECT_EQ(parts[0][2], 3.0);
    EXPECT_EQ(parts[2][69999], 1.0);
  });
}

}  // namespace

// gather, scatter, alltoall(v) and point-to-point batches (collectives.h) on real transports,
// ranks as threads, P = 2..6: every element checked; mismatched sizes and tags are UsageErrors
// on the ranks that see them; a root (or coalesced split) that differs between ranks is a
// UsageError at that very call on every rank (the agreement exchange, agree.cc).
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <numeric>
#include <vector>

#include "rank_threads.h"
#include "ringpress/engine.h"

namespace rp = ringpress;
using rp_test::run_rank_threads;

namespace {

void tcp(rp::CommOptions& o) {
  o.context.transport = "tcp";
}
void any(rp::CommOptions&) {}

// Rank p's block for rank q: distinct values everywhere.
std::int32_t val(int p, int q, std::size_t i) {
  return static_cast<std::int32_t>(1000000 * p + 1000 * q + static_cast<int>(i));
}

TEST(Rooted, GatherAndScatterEveryRootUnevenSizes) {
  for (int P = 2; P <= 6; ++P) {
    run_rank_threads(P, P % 2 ? tcp : any, [P](rp::Communicator& c) {
      const int r = c.rank();
      for (int root = 0; root < P; ++root) {
        // rank p sends p + 3 elements (uneven), to the root's per-rank buffers
        std::vector<std::int32_t> mine(static_cast<std::size_t>(r + 3));
        for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = val(r, root, i);
        std::vector<std::vector<std::int32_t>> got(static_cast<std::size_t>(P));
        std::vector<std::pair<void*, std::size_t>> outs;
        if (r == root) {
          for (int p = 0; p < P; ++p) {
            got[p].assign(static_cast<std::size_t>(p + 3), -1);
            outs.emplace_back(got[p].data(), got[p].size());
          }
        }
        c.gather(mine.data(), mine.size(), outs, rp::DType::kI32, root, false);
        if (r == root) {
          for (int p = 0; p < P; ++p)
            for (std::size_t i = 0; i < got[p].size(); ++i)
              ASSERT_EQ(got[p][i], val(p, root, i)) << "gather P=" << P << " from " << p;
        }
        // scatter back: the root sends rank p's block (p + 3 elements)
        std::vector<std::pair<const void*, std::size_t>> ins;
        std::vector<std::vector<std::int32_t>> src(static_cast<std::size_t>(P));
        if (r == root) {
          for (int p = 0; p < P; ++p) {
            src[p].resize(static_cast<std::size_t>(p + 3));
            for (std::size_t i = 0; i < src[p].size(); ++i) src[p][i] = val(root, p, i);
            ins.emplace_back(src[p].data(), src[p].size());
          }
        }
        std::vector<std::int32_t> out(static_cast<std::size_t>(r + 3), -1);
        c.scatter(ins, out.data(), out.size(), rp::DType::kI32, root, false);
        for (std::size_t i = 0; i < out.size(); ++i)
          ASSERT_EQ(out[i], val(root, r, i)) << "scatter P=" << P << " root " << root;
      }
    });
  }
}

TEST(Rooted, AlltoallvEveryPairDistinct) {
  for (int P = 2; P <= 6; ++P) {
    run_rank_threads(P, P % 2 ? tcp : any, [P](rp::Communicator& c) {
      const int r = c.rank();
      // rank p sends (p + q) % 4 elements to rank q (zero included)
      auto n = [](int p, int q) { return static_cast<std::size_t>((p + q) % 4); };
      std::vector<std::size_t> sc(P), rc(P);
      std::vector<std::int32_t> in, want;
      for (int q = 0; q < P; ++q) {
        sc[q] = n(r, q);
        for (std::size_t i = 0; i < sc[q]; ++i) in.push_back(val(r, q, i));
      }
      for (int p = 0; p < P; ++p) {
        rc[p] = n(p, r);
        for (std::size_t i = 0; i < rc[p]; ++i) want.push_back(val(p, r, i));
      }
      std::vector<std::int32_t> out(want.size(), -1);
      c.alltoall(in.data(), out.data(), sc, rc, rp::DType::kI32, false);
      EXPECT_EQ(out, want) << "P=" << P << " rank " << r;
    });
  }
}

TEST(P2P, RingExchangeBothWaysLargerThanBuffersDoesNotDeadlock) {
  for (int P : {2, 3, 5}) {
    run_rank_threads(P, P == 3 ? tcp : any, [P](rp::Communicator& c) {
      const int r = c.rank(), nxt = (r + 1) % P, prv = (r + P - 1) % P;
      const std::size_t n = std::size_t{3} << 20;  // 12 MiB each way: more than any buffer
      std::vector<std::int32_t> a(n, r), b(n, -r), from_prv(n), from_nxt(n);
      for (int round = 0; round < 2; ++round) {
        std::vector<rp::PeerMessage> msgs(4);
        msgs[0] = {true, nxt, a.data(), n * 4, 7, 0};
        msgs[1] = {true, prv, b.data(), n * 4, 8, 0};
        msgs[2] = {false, prv, from_prv.data(), n * 4, 7, 0};
        msgs[3] = {false, nxt, from_nxt.data(), n * 4, 8, 0};
        if (P == 2) msgs.resize(4);  // prv == nxt: two messages each way, FIFO per direction
        c.point_to_point(msgs, false);
        EXPECT_EQ(from_prv[n - 1], prv);
        EXPECT_EQ(from_nxt[0], -nxt);
      }
      // collectives still agree afterwards (p2p takes no collective sequence number)
      float x = 1.f;
      c.allreduce(&x, 1, rp::DType::kF32, rp::ReduceOp::kSum, false);
      EXPECT_EQ(x, static_cast<float>(P));
    });
  }
}

TEST(P2P, OnlySomeRanksTalkThenEveryoneRunsACollective) {
  run_rank_threads(3, any, [](rp::Communicator& c) {
    std::int64_t v = 0;
    if (c.rank() == 0) {
      v = 42;
      for (int i = 0; i < 3; ++i) c.point_to_point({{true, 2, &v, 8, 1, 0}}, false);
    } else if (c.rank() == 2) {
      for (int i = 0; i < 3; ++i) c.point_to_point({{false, 0, &v, 8, 1, 0}}, false);
      EXPECT_EQ(v, 42);
    }
    float x = static_cast<float>(c.rank());
    c.allreduce(&x, 1, rp::DType::kF32, rp::ReduceOp::kSum, false);
    EXPECT_EQ(x, 3.f);
  });
}

TEST(P2P, ATagOrSizeMismatchIsAUsageErrorOnTheReceiver) {
  std::vector<std::string> seen(2);
  run_rank_threads(2, any, [&](rp::Communicator& c) {
    std::int32_t v = 5;
    try {
      if (c.rank() == 0) {
        c.point_to_point({{true, 1, &v, 4, 3, 0}}, false);
      } else {
        c.point_to_point({{false, 0, &v, 4, 4, 0}}, false);  // expects tag 4
      }
    } catch (const rp::UsageError& e) {
      seen[c.rank()] = e.what();
    } catch (const rp::Error&) {
      seen[c.rank()] = "other";  // the sender learns of the abort as a transport error
    }
  });
  EXPECT_NE(seen[1].find("mismatch"), std::string::npos) << seen[1];
}

TEST(Rooted, GatherSizeMismatchNamesBothSides) {
  std::vector<std::string> seen(2);
  run_rank_threads(2, any, [&](rp::Communicator& c) {
    std::vector<std::int32_t> buf(8), a(8), b(8);
    try {
      std::vector<std::pair<void*, std::size_t>> outs;
      if (c.rank() == 0) outs = {{a.data(), 4}, {b.data(), 4}};  // expects 4 from rank 1
      c.gather(buf.data(), c.rank() == 0 ? 4 : 6, outs, rp::DType::kI32, 0, false);
    } catch (const rp::Error& e) {
      seen[c.rank()] = e.what();
    }
  });
  EXPECT_NE(seen[0].find("gather"), std::string::npos) << seen[0];
  EXPECT_NE(seen[0].find("x6"), std::string::npos) << seen[0];
  EXPECT_NE(seen[0].find("x4"), std::string::npos) << seen[0];
}

// Rank P-1 believes another rank is the root: every rank must raise the mismatch at this call
// (none returns normally, none waits for its timeout), before any data moves.
TEST(Rooted, RootMismatchRaisesAtThatCallOnEveryRank) {
  for (int P = 2; P <= 5; ++P) {
    for (int kind = 0; kind < 3; ++kind) {  // broadcast, gather, scatter
      std::vector<std::string> seen(static_cast<std::size_t>(P));
      std::vector<double> took(static_cast<std::size_t>(P), 0);
      run_rank_threads(
          P, [](rp::CommOptions& o) { o.op_timeout = std::chrono::seconds(20); },
          [&](rp::Communicator& c) {
            const auto r = static_cast<std::size_t>(c.rank());
            seen[r] = rp_test::rooted_call(c, kind, c.rank() == P - 1 ? 1 : 0, &took[r]);
          });
      for (int r = 0; r < P; ++r) {
        EXPECT_EQ(seen[r].rfind("other: ", 0), std::string::npos)
            << "not a UsageError: " << seen[r];
        EXPECT_NE(seen[r].find("collective mismatch"), std::string::npos)
            << "P=" << P << " kind " << kind << " rank " << r << ": " << seen[r];
        EXPECT_NE(seen[r].find("root"), std::string::npos) << seen[r];
        EXPECT_LT(took[r], 10.0) << "P=" << P << " kind " << kind << " rank " << r;
      }
    }
  }
}

TEST(Coalesced, SplitMismatchIsAUsageErrorOnEveryRankAndAgreeingSplitsSum) {
  for (int P : {2, 3}) {
    std::vector<std::string> seen(static_cast<std::size_t>(P));
    run_rank_threads(P, any, [&](rp::Communicator& c) {
      const int r = c.rank();
      std::vector<float> a(8, 1.0f);
      // same total (8), rank 0 splits 3 + 5, the others 5 + 3
      const std::size_t k = r == 0 ? 3 : 5;
      try {
        c.allreduce_coalesced({{a.data(), k}, {a.data() + k, 8 - k}}, rp::DType::kF32,
                              rp::ReduceOp::kSum, false);
        seen[r] = "returned normally";
      } catch (const rp::UsageError& e) {
        seen[r] = e.what();
      }
    });
    for (int r = 0; r < P; ++r) {
      EXPECT_NE(seen[r].find("split"), std::string::npos)
          << "P=" << P << " rank " << r << ": " << seen[r];
    }
    run_rank_threads(P, any, [&](rp::Communicator& c) {
      std::vector<float> a(3, 1.0f), b(5, 2.0f);
      c.allreduce_coalesced({{a.data(), 3}, {b.data(), 5}}, rp::DType::kF32, rp::ReduceOp::kSum,
                            false);
      for (float v : a) EXPECT_EQ(v, static_cast<float>(P));
      for (float v : b) EXPECT_EQ(v, 2.0f * static_cast<float>(P));
    });
  }
}

}  // namespace

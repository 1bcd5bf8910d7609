// Topology and hierarchical allreduce (allreduce_hier.cc, group.h), ranks as threads over the real
// transports. Several hosts are played on one machine with ContextOptions::host_id: ranks with
// equal ids share memory, the others talk TCP, as on separate hosts.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "rank_threads.h"
#include "ringpress/codec.h"
#include "ringpress/engine.h"

namespace rp = ringpress;

namespace {

// host_of(rank) gives the host each rank plays; small segments so every phase pipelines, and a
// small-message threshold of 1 byte so even tiny buffers take the hierarchical path.
void run_hosts(int P, const std::function<int(int)>& host_of,
               const std::function<void(rp::Communicator&)>& body, std::size_t small_bytes = 1) {
  rp_test::run_rank_threads(
      P,
      [&](rp::CommOptions& o) {
        o.context.host_id = "host" + std::to_string(host_of(o.context.rank));
        o.context.timeout = std::chrono::seconds(60);
        o.context.shm_ring_bytes = 1u << 16;
        o.segment_bytes = 4096;
        o.small_bytes = small_bytes;
      },
      body);
}

float input(int r, std::size_t i) {
  return static_cast<float>(static_cast<int>((i * 7 + static_cast<std::size_t>(r) * 13) % 23) -
                            11) *
         0.25f;
}

struct Layout {
  int P, H;
  bool cyclic;  // rank r on host r mod H; else blocks of P/H consecutive ranks
  int host(int r) const { return cyclic ? r % H : r / (P / H); }
};

// Layouts given rank by rank: hosts of different sizes, host counts that are not powers of two.
struct HostMap {
  int P;
  std::vector<int> host;      // per rank
  bool leader(int r) const {  // its host's lowest rank
    for (int q = 0; q < r; ++q)
      if (host[static_cast<std::size_t>(q)] == host[static_cast<std::size_t>(r)]) return false;
    return true;
  }
  int host_of(int r) const { return host[static_cast<std::size_t>(r)]; }
};
const std::vector<HostMap>& host_maps() {
  static const std::vector<HostMap> maps = {
      {4, {0, 1, 0, 1}}, {5, {0, 0, 1, 1, 1}}, {7, {0, 1, 2, 0, 1, 2, 2}}};
  return maps;
}

}  // namespace

TEST(Topology, HostIdsGroupRanksAndPickTheTransport) {
  const Layout lay{6, 2, true};
  run_hosts(
      lay.P, [&](int r) { return lay.host(r); },
      [&](rp::Communicator& c) {
        const std::vector<int> want = {0, 1, 0, 1, 0, 1};
        EXPECT_EQ(c.hosts(), want) << "rank " << c.rank();
        for (int q = 0; q < c.size(); ++q) {
          if (q == c.rank()) continue;
          EXPECT_EQ(c.transport(q), lay.host(q) == lay.host(c.rank()) ? "shm" : "tcp")
              << "rank " << c.rank() << " peer " << q;
        }
      });
}

// Every layout with several ranks on several hosts, exact integer sums and float32 results that
// are bit-identical on every rank; max and avg too.
TEST(Hierarchy, AllreduceMatchesTheReferenceOnEveryLayout) {
  for (const Layout lay : {Layout{4, 2, true}, Layout{6, 2, false}, Layout{6, 3, true},
                           Layout{8, 2, true}, Layout{4, 3, false}}) {
    // {4, 3, blocks}: hosts of 1, 1 and 2 ranks: not uniform, the host-ordered flat ring.
    const int P = lay.P;
    const std::vector<std::size_t> sizes = {0, 1, 7, 1023, 70001};
    std::mutex mu;
    std::vector<std::vector<std::vector<float>>> outs(sizes.size(),
                                                      std::vector<std::vector<float>>(P));
    run_hosts(
        P, [&](int r) { return lay.host(r); },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          for (std::size_t s = 0; s < sizes.size(); ++s) {
            const std::size_t n = sizes[s];
            std::vector<std::int64_t> a(n);
            for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
            c.allreduce(a.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false);
            for (std::size_t i = 0; i < n; ++i) {
              const std::int64_t want =
                  static_cast<std::int64_t>(i) * P * (P + 1) / 2 - P * (P - 1) / 2;
              ASSERT_EQ(a[i], want) << "P=" << P << " H=" << lay.H << " n=" << n << " i=" << i;
            }
            std::vector<float> x(n), m(n);
            for (std::size_t i = 0; i < n; ++i) x[i] = m[i] = input(r, i) * 1.37f;
            c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kAvg, false);
            c.allreduce(m.data(), n, rp::DType::kF32, rp::ReduceOp::kMax, false);
            for (std::size_t i = 0; i < n; ++i) {
              double want = 0;
              float mx = -1e30f;
              for (int q = 0; q < P; ++q) {
                want += input(q, i) * 1.37f;
                mx = std::max(mx, input(q, i) * 1.37f);
              }
              ASSERT_NEAR(x[i], want / P, 1e-5) << "P=" << P << " n=" << n << " i=" << i;
              ASSERT_EQ(m[i], mx) << "P=" << P << " n=" << n << " i=" << i;
            }
            std::lock_guard<std::mutex> lock(mu);
            outs[s][static_cast<std::size_t>(r)] = x;
          }
        });
    if (HasFailure()) return;
    for (std::size_t s = 0; s < sizes.size(); ++s) {
      for (int q = 1; q < P && sizes[s] > 0; ++q) {
        ASSERT_EQ(0, std::memcmp(outs[s][0].data(), outs[s][static_cast<std::size_t>(q)].data(),
                                 sizes[s] * sizeof(float)))
            << "P=" << P << " H=" << lay.H << " n=" << sizes[s] << ": rank " << q
            << " differs from rank 0";
      }
    }
  }
}

// The point of the hierarchy: with 2 hosts x 2 ranks placed cyclically, each rank sends n/2 bytes
// over the network (2 (H-1)/H n / L). The host-ordered flat ring would send 1.5 n from two ranks
// and nothing from the others, the rank-order ring 1.5 n from every rank. Control: 4 hosts of
// one rank (flat, everything over TCP).
TEST(Hierarchy, EachRankSendsItsShareOfTheNetworkTraffic) {
  const std::size_t n = 1u << 18;  // float32: 1 MiB
  const double mib = static_cast<double>(n * sizeof(float));
  for (const int H : {2, 4}) {
    std::mutex mu;
    std::vector<double> tcp(4, 0);
    run_hosts(
        4, [&](int r) { return r % H; },
        [&](rp::Communicator& c) {
          std::vector<float> x(n, 1.0f);
          const std::uint64_t before = c.stats().tcp_bytes_sent;
          c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
          const std::uint64_t sent = c.stats().tcp_bytes_sent - before;
          ASSERT_EQ(x[0], 4.0f);
          ASSERT_EQ(x[n - 1], 4.0f);
          std::lock_guard<std::mutex> lock(mu);
          tcp[static_cast<std::size_t>(c.rank())] = static_cast<double>(sent) / mib;
        });
    for (int r = 0; r < 4; ++r) {
      const double want = H == 2 ? 0.5 : 1.5;  // fractions of n (record and header overhead ~1%)
      EXPECT_GT(tcp[static_cast<std::size_t>(r)], want * 0.99) << "H=" << H << " rank " << r;
      EXPECT_LT(tcp[static_cast<std::size_t>(r)], want * 1.05) << "H=" << H << " rank " << r;
    }
  }
}

// Compression only on the inter-host step: a lossy codec rounds once per inter-host hop, so 8
// ranks on 2 hosts lose about what 2 ranks do, far less than 8 ranks on 8 hosts; with error
// feedback the outputs plus every rank's residual still equal the inputs, and every rank holds
// the same bits. Also top-k (the allgather schedule) and a fused request.
TEST(Hierarchy, LossyCodecsRoundPerHostAndKeepTheInvariant) {
  const std::size_t n = 40000;
  auto grad = [](int r, std::size_t i) {
    return std::sin(0.001f * static_cast<float>(i) * static_cast<float>(r + 3)) +
           0.01f * static_cast<float>((i * 31 + static_cast<std::size_t>(r)) % 17);
  };
  auto rel_error = [&](int P, int H, const char* codec) {
    std::mutex mu;
    std::vector<std::vector<float>> outs(P), res(P);
    run_hosts(
        P, [&](int r) { return r % H; },
        [&](rp::Communicator& c) {
          rp::CompressionOptions co;
          co.kind = static_cast<rp::WireCompression>(rp::codec_by_name(codec).id);
          co.ratio = 0.05;
          std::vector<float> x(n), res_r(n, 0.0f);
          for (std::size_t i = 0; i < n; ++i) x[i] = grad(c.rank(), i);
          c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co, res_r.data());
          std::lock_guard<std::mutex> lock(mu);
          outs[static_cast<std::size_t>(c.rank())] = x;
          res[static_cast<std::size_t>(c.rank())] = res_r;
        });
    double num = 0, den = 0;
    for (std::size_t i = 0; i < n; ++i) {
      double want = 0, got = outs[0][i];
      for (int q = 0; q < P; ++q) {
        want += grad(q, i);
        got += res[static_cast<std::size_t>(q)][i];
      }
      EXPECT_LE(std::fabs(got - want), 1e-4 * (1.0 + std::fabs(want)) * P)
          << codec << " P=" << P << " H=" << H << " i=" << i;
      num += (outs[0][i] - want) * (outs[0][i] - want);
      den += want * want;
    }
    for (int q = 1; q < P; ++q) {
      EXPECT_EQ(0, std::memcmp(outs[0].data(), outs[static_cast<std::size_t>(q)].data(),
                               n * sizeof(float)))
          << codec << " P=" << P << " H=" << H << ": rank " << q << " differs";
    }
    return std::sqrt(num / den);
  };
  const double hier = rel_error(8, 2, "int4");   // 2 hosts x 4 ranks
  const double flat8 = rel_error(8, 8, "int4");  // 8 hosts x 1 rank: the flat compressed ring
  const double flat2 = rel_error(2, 2, "int4");  // 2 hosts x 1 rank
  std::printf("int4 relative error: 2 hosts x 4 ranks %.4f, 8 x 1 %.4f, 2 x 1 %.4f\n", hier, flat8,
              flat2);
  EXPECT_LT(hier, 0.8 * flat8) << "hierarchical " << hier << " flat P=8 " << flat8;
  EXPECT_LT(hier, 1.5 * flat2) << "hierarchical " << hier << " flat P=2 " << flat2;
  // The bound: 4 hosts x 4 ranks within 1.2x of 4 hosts x 1 rank (int8 and int4).
  for (const char* codec : {"int8", "int4"}) {
    const double h16 = rel_error(16, 4, codec), f4 = rel_error(4, 4, codec);
    std::printf("%s relative error: 4 hosts x 4 ranks %.4f, 4 x 1 %.4f\n", codec, h16, f4);
    EXPECT_LE(h16, 1.2 * f4) << codec;
  }
  (void)rel_error(4, 2, "topk");  // the sparse schedule inside the hierarchy: invariant, same bits
  (void)rel_error(6, 3, "int8");
}

// Auto mode models the levels the allreduce runs (auto_select.cc): on several hosts of two or
// more ranks the hierarchy's (H hosts of L ranks, measured on the shared-memory groups and the
// inter-host groups), on one host the flat group's. Every rank picks the same kind at every step,
// and the result is the pick's: exact sums for an exact kind, outputs plus residuals equal to the
// inputs for a lossy one.
TEST(Hierarchy, AutoModelsTheLevelsTheAllreduceRuns) {
  const std::size_t n = 30000;
  for (const int H : {2, 1}) {
    std::mutex mu;
    std::vector<std::vector<int>> picks(4);
    std::vector<std::vector<float>> outs(4), before(4), after(4);
    run_hosts(
        4, [&](int r) { return r % H; },
        [&](rp::Communicator& c) {
          rp::CompressionOptions co;
          co.kind = rp::WireCompression::kAuto;
          co.allow = (1u << static_cast<int>(rp::WireCompression::kLossless)) |
                     (1u << static_cast<int>(rp::WireCompression::kInt8));
          std::vector<float> x(n), r(n, 0.0f), r0;
          std::vector<int> mine;
          for (int step = 0; step < 3; ++step) {
            for (std::size_t i = 0; i < n; ++i) x[i] = input(c.rank(), i + step);
            r0 = r;
            c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, co, r.data());
            const rp::CommStats s = c.stats();
            mine.push_back(s.auto_last);
            EXPECT_EQ(s.auto_hosts, H) << "rank " << c.rank();
            EXPECT_EQ(s.auto_ranks_per_host, 4 / H) << "rank " << c.rank();
          }
          std::lock_guard<std::mutex> lock(mu);
          const auto me = static_cast<std::size_t>(c.rank());
          picks[me] = mine;
          outs[me] = x;
          before[me] = r0;
          after[me] = r;
        },
        64 << 10);
    for (int q = 1; q < 4; ++q) EXPECT_EQ(picks[0], picks[static_cast<std::size_t>(q)]) << q;
    // The last step: its output plus the residuals after it equal its inputs plus the residuals
    // before it (exact kinds deliver the residual and leave zero; the inputs are exact in fp32).
    const bool exact = picks[0].back() != static_cast<int>(rp::WireCompression::kInt8);
    for (std::size_t i = 0; i < n; ++i) {
      double want = 0, got = outs[0][i];
      for (std::size_t q = 0; q < 4; ++q) {
        want += input(static_cast<int>(q), i + 2) + before[q][i];
        got += after[q][i];
        if (exact) ASSERT_EQ(after[q][i], 0.0f) << "H=" << H << " rank " << q;
      }
      ASSERT_LE(std::fabs(got - want), 1e-4 * (1.0 + std::fabs(want))) << "H=" << H << " i=" << i;
    }
  }
}

// Large requests run the three phases pipelined chunk by chunk (allreduce_hier.cc): K = bytes /
// (L H segments) chunks, at most 16. Sizes on both sides of K = 2, an uneven K = 3 and a capped
// K = 16 with a ragged tail: exact integer sums; float32 sums of inexact values identical on
// every rank and, with lossless compression (the codec ring on the inter-host step), the same
// bits as plain. (The lossy codecs' pipelined runs: LossyCodecsRoundPerHostAndKeepTheInvariant,
// whose 8-, 16- and 6-rank requests take 4, 2 and 6 chunks.)
TEST(Hierarchy, PipelinedChunksMatchTheReferenceAndLosslessKeepsPlainBits) {
  for (const Layout lay : {Layout{8, 2, true}, Layout{6, 3, false}}) {
    const int P = lay.P, H = lay.H, L = P / H;
    const std::size_t unit = static_cast<std::size_t>(L * H) * 4096 / sizeof(float);
    const std::vector<std::size_t> sizes = {2 * unit - 1, 2 * unit + 5, 3 * unit + unit / 2 + 1,
                                            24 * unit + 7};
    std::mutex mu;
    std::vector<std::vector<std::vector<float>>> plain(sizes.size(),
                                                       std::vector<std::vector<float>>(P));
    run_hosts(
        P, [&](int r) { return lay.host(r); },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          rp::CompressionOptions lossless;
          lossless.kind = static_cast<rp::WireCompression>(rp::codec_by_name("lossless").id);
          for (std::size_t s = 0; s < sizes.size(); ++s) {
            const std::size_t n = sizes[s];
            std::vector<std::int32_t> a(n);
            for (std::size_t i = 0; i < n; ++i)
              a[i] = static_cast<std::int32_t>(i % 1000) * (r + 1);
            c.allreduce(a.data(), n, rp::DType::kI32, rp::ReduceOp::kSum, false);
            for (std::size_t i = 0; i < n; ++i) {
              ASSERT_EQ(a[i], static_cast<std::int32_t>(i % 1000) * P * (P + 1) / 2)
                  << "P=" << P << " n=" << n << " i=" << i;
            }
            auto value = [](int q, std::size_t i) {
              return std::sin(0.37f * static_cast<float>(i % 4099) + static_cast<float>(q)) /
                     static_cast<float>(1 + (i + static_cast<std::size_t>(q)) % 7);
            };
            std::vector<float> x(n), y(n);
            for (std::size_t i = 0; i < n; ++i) x[i] = y[i] = value(r, i);
            c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
            c.allreduce(y.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false, lossless);
            ASSERT_EQ(0, std::memcmp(x.data(), y.data(), n * sizeof(float)))
                << "P=" << P << " n=" << n << ": lossless differs from plain on rank " << r;
            for (std::size_t i = 0; i < n; i += 97) {
              double want = 0;
              for (int q = 0; q < P; ++q) want += value(q, i);
              ASSERT_NEAR(x[i], want, 1e-5 * P) << "P=" << P << " n=" << n << " i=" << i;
            }
            std::lock_guard<std::mutex> lock(mu);
            plain[s][static_cast<std::size_t>(r)] = x;
          }
        });
    if (HasFailure()) return;
    for (std::size_t s = 0; s < sizes.size(); ++s) {
      for (int q = 1; q < P; ++q) {
        ASSERT_EQ(0, std::memcmp(plain[s][0].data(), plain[s][static_cast<std::size_t>(q)].data(),
                                 sizes[s] * sizeof(float)))
            << "P=" << P << " n=" << sizes[s] << ": rank " << q << " differs from rank 0";
      }
    }
  }
}

// Small requests (at most the small-message threshold) on several hosts, some with two or more
// ranks: a leader per host gathers its host's buffers over shared memory, the leaders run
// recursive doubling over TCP, and send the result back (allreduce_small_hier.cc). Exact integer
// sums, max and float sums identical on every rank, on uneven hosts and a host count that is not
// a power of two; only the leaders (each host's lowest rank) send anything over TCP.
TEST(Hierarchy, SmallRequestsGoThroughOneLeaderPerHost) {
  for (const HostMap& cs : host_maps()) {
    const int P = cs.P;
    const std::vector<std::size_t> sizes = {1, 7, 1000};  // float32 / int64: at most 8000 bytes
    std::mutex mu;
    std::vector<std::vector<std::vector<float>>> outs(sizes.size(),
                                                      std::vector<std::vector<float>>(P));
    run_hosts(
        P, [&](int r) { return cs.host_of(r); },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          const bool leader = cs.leader(r);
          for (std::size_t s = 0; s < sizes.size(); ++s) {
            const std::size_t n = sizes[s];
            const std::uint64_t tcp_before = c.stats().tcp_bytes_sent;
            std::vector<std::int64_t> a(n);
            for (std::size_t i = 0; i < n; ++i) a[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
            c.allreduce(a.data(), n, rp::DType::kI64, rp::ReduceOp::kSum, false);
            for (std::size_t i = 0; i < n; ++i) {
              ASSERT_EQ(a[i], static_cast<std::int64_t>(i) * P * (P + 1) / 2 - P * (P - 1) / 2)
                  << "P=" << P << " n=" << n << " i=" << i;
            }
            std::vector<float> x(n), m(n);
            for (std::size_t i = 0; i < n; ++i) x[i] = m[i] = input(r, i) * 1.37f + 0.1f * r;
            c.allreduce(x.data(), n, rp::DType::kF32, rp::ReduceOp::kSum, false);
            c.allreduce(m.data(), n, rp::DType::kF32, rp::ReduceOp::kMax, false);
            for (std::size_t i = 0; i < n; ++i) {
              double want = 0;
              float mx = -1e30f;
              for (int q = 0; q < P; ++q) {
                want += input(q, i) * 1.37f + 0.1f * q;
                mx = std::max(mx, input(q, i) * 1.37f + 0.1f * q);
              }
              ASSERT_NEAR(x[i], want, 1e-4 * P) << "P=" << P << " n=" << n << " i=" << i;
              ASSERT_EQ(m[i], mx) << "P=" << P << " n=" << n << " i=" << i;
            }
            if (!leader) {
              EXPECT_EQ(c.stats().tcp_bytes_sent, tcp_before)
                  << "P=" << P << " n=" << n << ": rank " << r << " is no leader but used TCP";
            }
            std::lock_guard<std::mutex> lock(mu);
            outs[s][static_cast<std::size_t>(r)] = x;
          }
        },
        /*small_bytes=*/8192);
    if (HasFailure()) return;
    for (std::size_t s = 0; s < sizes.size(); ++s) {
      for (int q = 1; q < P; ++q) {
        ASSERT_EQ(0, std::memcmp(outs[s][0].data(), outs[s][static_cast<std::size_t>(q)].data(),
                                 sizes[s] * sizeof(float)))
            << "P=" << P << " n=" << sizes[s] << ": rank " << q << " differs from rank 0";
      }
    }
  }
}

// The barrier on several hosts with several ranks on some host: a leader per host
// (barrier_hier.cc). No rank leaves before every rank has entered (ranks enter one by one, 20 ms
// apart, in an order that puts leaders last and first), and only leaders use TCP.
TEST(Hierarchy, BarrierThroughOneLeaderPerHost) {
  for (const HostMap& cs : host_maps()) {
    const int P = cs.P;
    for (int round = 0; round < 2; ++round) {
      std::atomic<int> entered{0};
      run_hosts(
          P, [&](int r) { return cs.host_of(r); },
          [&](rp::Communicator& c) {
            const int r = c.rank();
            const int order = round == 0 ? r : P - 1 - r;  // round 0: rank 0 first, 1: last
            std::this_thread::sleep_for(std::chrono::milliseconds(20 * order));
            const std::uint64_t tcp_before = c.stats().tcp_bytes_sent;
            entered.fetch_add(1);
            c.barrier(false);
            EXPECT_EQ(entered.load(), P) << "P=" << P << ": rank " << r << " left early";
            if (!cs.leader(r)) {
              EXPECT_EQ(c.stats().tcp_bytes_sent, tcp_before)
                  << "P=" << P << ": rank " << r << " is no leader but used TCP";
            }
          });
    }
  }
}

// The agreement that opens broadcast, gather and scatter (agree.cc) goes through one leader per
// host on such jobs: ranks that are not leaders send no agreement over TCP, and a rank that
// believes in another root, a leader or not, makes every rank raise the collective mismatch at
// that call, well within the timeout (Rooted.RootMismatchRaisesAtThatCallOnEveryRank on one
// host).
TEST(Hierarchy, RootedAgreementThroughOneLeaderPerHost) {
  for (const HostMap& cs : host_maps()) {
    const int P = cs.P;
    // Agreeing ranks: the broadcast is right. On 2 hosts x 2 ranks (cyclic: host order 0 2 1 3)
    // with root 0 the non-leaders 2 and 3 are leaves of the tree, so a broadcast of nothing
    // (agreement and empty tree messages) sends nothing over TCP from them; the exchange over
    // all ranks would (their ring neighbours are on the other host).
    run_hosts(
        P, [&](int r) { return cs.host_of(r); },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          std::vector<std::int32_t> b(4, r);
          const std::uint64_t before = c.stats().tcp_bytes_sent;
          c.broadcast(b.data(), 0, rp::DType::kI32, 0, false);
          if (P == 4 && !cs.leader(r)) {
            EXPECT_EQ(c.stats().tcp_bytes_sent, before) << "rank " << r << " used TCP";
          }
          c.broadcast(b.data(), 4, rp::DType::kI32, P - 1, false);
          for (std::int32_t v : b) EXPECT_EQ(v, P - 1) << "P=" << P << " rank " << r;
        });
    // One rank believes another root: rank 1 (a leader or not, by layout) and the last rank.
    for (const int odd : {1, P - 1}) {
      for (int kind = 0; kind < 3; ++kind) {  // broadcast, gather, scatter
        std::vector<std::string> seen(static_cast<std::size_t>(P));
        std::vector<double> took(static_cast<std::size_t>(P), 0);
        rp_test::run_rank_threads(
            P,
            [&](rp::CommOptions& o) {
              o.context.host_id = "host" + std::to_string(cs.host_of(o.context.rank));
              o.context.timeout = std::chrono::seconds(60);
              o.op_timeout = std::chrono::seconds(20);
            },
            [&](rp::Communicator& c) {
              const auto r = static_cast<std::size_t>(c.rank());
              seen[r] = rp_test::rooted_call(c, kind, c.rank() == odd ? 2 : 0, &took[r]);
            });
        for (int r = 0; r < P; ++r) {
          const std::string& w = seen[static_cast<std::size_t>(r)];
          EXPECT_EQ(w.rfind("other: ", 0), std::string::npos) << "not a UsageError: " << w;
          EXPECT_NE(w.find("collective mismatch"), std::string::npos)
              << "P=" << P << " odd " << odd << " kind " << kind << " rank " << r << ": " << w;
          EXPECT_NE(w.find("root"), std::string::npos) << w;
          EXPECT_LT(took[static_cast<std::size_t>(r)], 10.0) << "P=" << P << " rank " << r;
        }
      }
    }
  }
}

// Small allgather and reduce_scatter go through one leader per host too (allgather_small_hier.cc,
// reduce_scatter_small_hier.cc): equal and unequal blocks (an empty one among them), blocks of
// hosts that hold no consecutive ranks (cyclic: the leaders pack and unpack), sum, max and avg;
// exact integer results, float sums within rounding of the reference; ranks that are not leaders
// send nothing over TCP (fails with RINGPRESS_TOPOLOGY=flat).
TEST(Hierarchy, SmallAllgatherAndReduceScatterThroughOneLeaderPerHost) {
  for (const HostMap& cs : host_maps()) {
    const int P = cs.P;
    for (const bool equal : {true, false}) {
      std::vector<std::size_t> counts(static_cast<std::size_t>(P));
      for (int q = 0; q < P; ++q)
        counts[static_cast<std::size_t>(q)] =
            equal ? 37 : (q % 3 == 1 ? 0 : static_cast<std::size_t>((q * 5) % 7) + 1);
      std::vector<std::size_t> off(static_cast<std::size_t>(P) + 1, 0);
      for (int q = 0; q < P; ++q)
        off[static_cast<std::size_t>(q) + 1] =
            off[static_cast<std::size_t>(q)] + counts[static_cast<std::size_t>(q)];
      const std::size_t total = off.back();
      run_hosts(
          P, [&](int r) { return cs.host_of(r); },
          [&](rp::Communicator& c) {
            const int r = c.rank();
            const auto me = static_cast<std::size_t>(r);
            const std::uint64_t tcp_before = c.stats().tcp_bytes_sent;
            // allgather(v) of int32
            std::vector<std::int32_t> mine(counts[me]), all(total, -1);
            for (std::size_t i = 0; i < mine.size(); ++i)
              mine[i] = static_cast<std::int32_t>(1000 * r + static_cast<int>(i));
            c.allgather(mine.data(), all.data(), counts, rp::DType::kI32, false);
            for (int q = 0; q < P; ++q) {
              for (std::size_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i) {
                ASSERT_EQ(all[off[static_cast<std::size_t>(q)] + i],
                          static_cast<std::int32_t>(1000 * q + static_cast<int>(i)))
                    << "P=" << P << " rank " << r << " block " << q << " i=" << i;
              }
            }
            // reduce_scatter: int64 sum and max, float32 avg
            std::vector<std::int64_t> in(total), out(counts[me] + 1, -7);
            for (std::size_t i = 0; i < total; ++i)
              in[i] = static_cast<std::int64_t>(i) * (r + 1) - r;
            c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kI64, rp::ReduceOp::kSum,
                             false);
            for (std::size_t i = 0; i < counts[me]; ++i) {
              const auto g = static_cast<std::int64_t>(off[me] + i);
              ASSERT_EQ(out[i], g * P * (P + 1) / 2 - P * (P - 1) / 2)
                  << "P=" << P << " rank " << r << " i=" << i;
            }
            ASSERT_EQ(out[counts[me]], -7) << "wrote past its block";
            c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kI64, rp::ReduceOp::kMax,
                             false);
            for (std::size_t i = 0; i < counts[me]; ++i) {
              const auto g = static_cast<std::int64_t>(off[me] + i);
              ASSERT_EQ(out[i], std::max(g * P - (P - 1), g)) << "P=" << P << " i=" << i;
            }
            std::vector<float> fin(total), fout(counts[me]);
            for (std::size_t i = 0; i < total; ++i) fin[i] = input(r, i);
            c.reduce_scatter(fin.data(), fout.data(), counts, rp::DType::kF32, rp::ReduceOp::kAvg,
                             false);
            for (std::size_t i = 0; i < counts[me]; ++i) {
              double want = 0;
              for (int q = 0; q < P; ++q) want += input(q, off[me] + i);
              ASSERT_NEAR(fout[i], want / P, 1e-5) << "P=" << P << " rank " << r << " i=" << i;
            }
            if (!cs.leader(r)) {
              EXPECT_EQ(c.stats().tcp_bytes_sent, tcp_before)
                  << "P=" << P << ": rank " << r << " is no leader but used TCP";
            }
          },
          /*small_bytes=*/8192);
    }
  }
}

// Mismatches the leaders' paths must see although every message's length agrees: hosts that
// split the same total into the same host bundles differently (allgather, reduce_scatter), and
// hosts that reduce with avg and sum. Every rank raises the collective mismatch at that call.
TEST(Hierarchy, SmallAllgatherAndReduceScatterMismatchesAcrossHosts) {
  // 2 hosts x 2 ranks, cyclic (hosts {0, 2} and {1, 3}); bundles of 4 elements either way.
  const std::vector<std::size_t> a = {1, 2, 3, 2}, b = {3, 2, 1, 2};
  for (int kind = 0; kind < 3; ++kind) {  // allgather, reduce_scatter split, reduce_scatter op
    std::vector<std::string> seen(4);
    run_hosts(
        4, [](int r) { return r % 2; },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          const std::vector<std::size_t>& counts = kind == 2 || r % 2 == 0 ? a : b;
          std::vector<float> in(8, 1.0f), out(8, 0.0f);
          try {
            if (kind == 0) {
              c.allgather(in.data(), out.data(), counts, rp::DType::kF32, false);
            } else {
              const rp::ReduceOp op =
                  kind == 2 && r % 2 == 1 ? rp::ReduceOp::kAvg : rp::ReduceOp::kSum;
              c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kF32, op, false);
            }
            seen[static_cast<std::size_t>(r)] = "returned normally";
          } catch (const rp::UsageError& e) {
            seen[static_cast<std::size_t>(r)] = e.what();
          } catch (const rp::Error& e) {
            seen[static_cast<std::size_t>(r)] = std::string("other: ") + e.what();
          }
        },
        /*small_bytes=*/8192);
    for (int r = 0; r < 4; ++r) {
      const std::string& w = seen[static_cast<std::size_t>(r)];
      EXPECT_EQ(w.rfind("other: ", 0), std::string::npos) << "not a UsageError: " << w;
      EXPECT_NE(w.find("collective mismatch"), std::string::npos)
          << "kind " << kind << " rank " << r << ": " << w;
    }
  }
}

TEST(Hierarchy, CoalescedRequestsSplitTheSameWay) {
  run_hosts(
      4, [](int r) { return r % 2; },
      [](rp::Communicator& c) {
        std::vector<std::int32_t> a(1000, c.rank()), b(3, 1), d(70001, 2);
        c.allreduce_coalesced({{a.data(), a.size()}, {b.data(), b.size()}, {d.data(), d.size()}},
                              rp::DType::kI32, rp::ReduceOp::kSum, false);
        EXPECT_EQ(a[999], 6);
        EXPECT_EQ(b[2], 4);
        EXPECT_EQ(d[70000], 8);
      });
  // Hosts that fuse the same total differently (host 0: 30000 + 50000, host 1: 50000 + 30000):
  // within a host the ranks agree, so only the inter-host step can see it; every rank raises the
  // split mismatch, none returns with mismatched sums.
  std::vector<std::string> seen(4);
  run_hosts(
      4, [](int r) { return r % 2; },
      [&](rp::Communicator& c) {
        std::vector<float> a(80000, 1.0f);
        const std::size_t k = c.rank() % 2 == 0 ? 30000 : 50000;
        try {
          c.allreduce_coalesced({{a.data(), k}, {a.data() + k, 80000 - k}}, rp::DType::kF32,
                                rp::ReduceOp::kSum, false);
          seen[static_cast<std::size_t>(c.rank())] = "returned normally";
        } catch (const rp::Error& e) {
          seen[static_cast<std::size_t>(c.rank())] = e.what();
        }
      });
  for (int r = 0; r < 4; ++r) {
    EXPECT_NE(seen[static_cast<std::size_t>(r)].find("split"), std::string::npos)
        << "rank " << r << ": " << seen[static_cast<std::size_t>(r)];
  }
}

// Rings and chains in host order (group.h): allgatherv, reduce_scatter with uneven counts and
// broadcast from every root (tree and chain) on cyclic layouts, every element checked.
TEST(Hierarchy, HostOrderedAllgatherReduceScatterAndBroadcast) {
  for (const Layout lay : {Layout{6, 2, true}, Layout{6, 3, true}, Layout{5, 2, true}}) {
    const int P = lay.P;
    run_hosts(
        P, [&](int r) { return lay.host(r); },
        [&](rp::Communicator& c) {
          const int r = c.rank();
          std::vector<std::size_t> counts(static_cast<std::size_t>(P));
          std::size_t total = 0;
          for (int q = 0; q < P; ++q) total += counts[static_cast<std::size_t>(q)] = 1000 + 977 * q;
          std::vector<std::int32_t> mine(counts[static_cast<std::size_t>(r)]), all(total);
          for (std::size_t i = 0; i < mine.size(); ++i) mine[i] = r * 100000 + static_cast<int>(i);
          c.allgather(mine.data(), all.data(), counts, rp::DType::kI32, false);
          std::size_t off = 0;
          for (int q = 0; q < P; ++q) {
            for (std::size_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i) {
              ASSERT_EQ(all[off + i], q * 100000 + static_cast<int>(i))
                  << "allgather P=" << P << " rank " << r << " block " << q << " i=" << i;
            }
            off += counts[static_cast<std::size_t>(q)];
          }
          std::vector<std::int64_t> in(total), out(counts[static_cast<std::size_t>(r)]);
          for (std::size_t i = 0; i < total; ++i) in[i] = static_cast<std::int64_t>(i) + r;
          c.reduce_scatter(in.data(), out.data(), counts, rp::DType::kI64, rp::ReduceOp::kSum,
                           false);
          off = 0;
          for (int q = 0; q < r; ++q) off += counts[static_cast<std::size_t>(q)];
          for (std::size_t i = 0; i < out.size(); ++i) {
            ASSERT_EQ(out[i], static_cast<std::int64_t>(off + i) * P + P * (P - 1) / 2)
                << "reduce_scatter P=" << P << " rank " << r << " i=" << i;
          }
          for (int root = 0; root < P; ++root) {
            for (std::size_t n : {std::size_t{100}, std::size_t{300000}}) {  // tree, chain
              std::vector<std::int32_t> b(n, r == root ? root + 7 : -1);
              if (r == root) b[n - 1] = 42;
              c.broadcast(b.data(), n, rp::DType::kI32, root, false);
              ASSERT_EQ(b[0], root + 7) << "broadcast P=" << P << " root " << root << " n=" << n;
              ASSERT_EQ(b[n - 1], 42) << "broadcast P=" << P << " root " << root << " n=" << n;
            }
          }
        });
  }
}

// Host order at work: with 2 hosts x 2 ranks placed cyclically the ring is 0 2 1 3, so rank 0 and
// rank 1 pass data on to a rank of their own host (shared memory, no TCP bytes), and ranks 2 and
// 3 carry the traffic between hosts. In rank order every hop would cross the network.
TEST(Hierarchy, HostOrderedRingsCrossBetweenHostsOncePerHost) {
  std::mutex mu;
  std::vector<std::uint64_t> tcp(4, 0);
  run_hosts(
      4, [](int r) { return r % 2; },
      [&](rp::Communicator& c) {
        const std::size_t n = 1u << 16;
        std::vector<float> in(n, 1.0f), out(4 * n);
        const std::uint64_t before = c.stats().tcp_bytes_sent;
        c.allgather(in.data(), out.data(), std::vector<std::size_t>(4, n), rp::DType::kF32, false);
        std::vector<float> b(n, 2.0f);
        c.broadcast(b.data(), n, rp::DType::kF32, 0, false);  // chain 0 2 1 3: one crossing
        std::lock_guard<std::mutex> lock(mu);
        tcp[static_cast<std::size_t>(c.rank())] = c.stats().tcp_bytes_sent - before;
      });
  // Ranks 0 and 1 send only the broadcast's agreement messages over TCP (a few headers).
  EXPECT_LT(tcp[0], 1024u);
  EXPECT_LT(tcp[1], 1024u);
  EXPECT_GT(tcp[2], 3 * (1u << 16) * sizeof(float));  // the allgather's 3 blocks, and more
  EXPECT_GT(tcp[3], 3 * (1u << 16) * sizeof(float));
}

// AllgatherOptions::overlap (collectives.h): local work run in slices while a rank waits on the
// ring. Ranks as threads over the real transports, calling the collective on their contexts.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "ringpress/collectives.h"
#include "ringpress/store.h"
#include "ringpress/transport.h"

namespace rp = ringpress;

namespace {

class OverlapTest : public ::testing::TestWithParam<const char*> {};

// Rank 0 reaches the allgather at once, the others 300 ms later, so rank 0 waits and its overlap
// must run in that wait. Each rank's work has 5 steps: the ring never calls it again once it
// said it was done, what the waits left is the caller's, and the data is what plain allgather
// gives.
TEST_P(OverlapTest, AllgatherRunsTheWorkWhileItWaitsAndNeverPastTheEnd) {
  const int P = 3;
  const std::size_t kSteps = 5;
  auto store = std::make_shared<rp::HashStore>();
  std::vector<std::string> errors(P);
  std::vector<std::size_t> in_waits(P, 0), calls(P, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        rp::ContextOptions o;
        o.rank = r;
        o.size = P;
        o.timeout = std::chrono::seconds(30);
        o.bind_addr = "127.0.0.1";
        o.transport = GetParam();
        o.secret = std::string(40, 'k');
        auto ctx = rp::Context::create(store, o);
        const std::vector<std::size_t> counts = {1000, 1, 70001};
        std::vector<std::uint32_t> mine(counts[static_cast<std::size_t>(r)]);
        for (std::size_t i = 0; i < mine.size(); ++i)
          mine[i] = static_cast<std::uint32_t>(r * 1000003 + i);
        std::vector<std::uint32_t> out(1000 + 1 + 70001, 0xFFFFFFFFu);
        std::size_t done = 0;
        rp::AllgatherOptions g;
        g.in = mine.data();
        g.out = out.data();
        g.counts = counts;
        g.dtype = rp::DType::kU32;
        g.segment_bytes = 4096;
        g.overlap = [&]() -> bool {
          ++calls[static_cast<std::size_t>(r)];
          if (done < kSteps) {
            ++done;
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          return done < kSteps;
        };
        if (r != 0) std::this_thread::sleep_for(std::chrono::milliseconds(300));
        rp::OpContext oc{*ctx, 1, rp::Clock::now() + std::chrono::seconds(30)};
        rp::allgather(oc, g);
        in_waits[static_cast<std::size_t>(r)] = done;
        while (g.overlap()) {
        }
        EXPECT_EQ(done, kSteps);
        std::size_t off = 0;
        for (int q = 0; q < P; ++q) {
          for (std::size_t i = 0; i < counts[static_cast<std::size_t>(q)]; ++i) {
            ASSERT_EQ(out[off + i], static_cast<std::uint32_t>(q * 1000003 + i))
                << "rank " << r << " block " << q << " element " << i;
          }
          off += counts[static_cast<std::size_t>(q)];
        }
        ctx->close();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < P; ++r) EXPECT_EQ(errors[static_cast<std::size_t>(r)], "") << "rank " << r;
  // Rank 0 waited 300 ms for the others: all 5 steps (10 ms) ran inside its waits.
  EXPECT_EQ(in_waits[0], kSteps);
  // Called once per step, plus at most the caller's one call that finds nothing left.
  for (int r = 0; r < P; ++r) {
    EXPECT_GE(calls[static_cast<std::size_t>(r)], kSteps) << "rank " << r;
    EXPECT_LE(calls[static_cast<std::size_t>(r)], kSteps + 1) << "rank " << r;
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, OverlapTest, ::testing::Values("tcp", "shm"));

}  // namespace

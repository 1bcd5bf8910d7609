// Recovery in one process (ranks as threads over the real transports; the sanitizer builds run
// these too): shrink on a healthy job keeps every member, renumbered alike and at epoch 1; grow
// admits a thread that joins; collectives are correct after each step; a grow whose list of
// joiners reached only some members (the others shrink) still admits the joiner everywhere. Kills
// of real processes are tested in tests/python/test_recovery.py.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "rank_threads.h"
#include "ringpress/engine.h"
#include "ringpress/store.h"
#include "ringpress/transport.h"

namespace {

using ringpress::Communicator;
using ringpress::DType;
using ringpress::ReduceOp;

float sum_of_ranks(Communicator& c) {
  std::vector<float> x(1000, static_cast<float>(c.rank() + 1));
  c.allreduce(x.data(), x.size(), DType::kF32, ReduceOp::kSum, false);
  for (float v : x) EXPECT_EQ(v, x[0]);
  return x[0];
}

class Recovery : public ::testing::TestWithParam<const char*> {};

TEST_P(Recovery, ShrinkKeepsEveryLiveMemberAndGrowAdmitsAJoiner) {
  const int P = 3;
  auto store = std::make_shared<ringpress::HashStore>();
  std::vector<std::string> errors(P + 1);
  std::atomic<bool> joined{false};
  auto options = [&](int r) {
    ringpress::CommOptions o;
    o.context.rank = r;
    o.context.size = P;
    o.context.timeout = std::chrono::seconds(30);
    o.context.bind_addr = "127.0.0.1";
    o.context.transport = GetParam();
    o.context.secret = std::string(40, 'k');
    return o;
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto c = std::make_unique<Communicator>(store, options(r));
        EXPECT_EQ(sum_of_ranks(*c), 6.0f);
        std::vector<int> left;
        std::unique_ptr<Communicator> s = c->shrink(&left);
        EXPECT_TRUE(c->closed());
        EXPECT_TRUE(left.empty());
        EXPECT_EQ(s->size(), P);
        EXPECT_EQ(s->rank(), r);
        EXPECT_EQ(s->epoch(), 1u);
        EXPECT_EQ(sum_of_ranks(*s), 6.0f);
        // Grow until the joiner is in (every member calls grow() the same number of times:
        // rank 0 decides, the others follow its broadcast).
        std::unique_ptr<Communicator> g;
        for (int i = 0; i < 5000 && !g; ++i) {
          g = s->grow();
          if (!g) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        }
        ASSERT_TRUE(g != nullptr);
        EXPECT_EQ(g->size(), P + 1);
        EXPECT_EQ(g->rank(), r);
        EXPECT_EQ(g->epoch(), 2u);
        EXPECT_EQ(sum_of_ranks(*g), 10.0f);
        g->close();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  threads.emplace_back([&] {
    try {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      std::unique_ptr<Communicator> j = Communicator::join(store, options(0));
      joined = true;
      EXPECT_EQ(j->size(), P + 1);
      EXPECT_EQ(j->rank(), P);
      EXPECT_EQ(j->epoch(), 2u);
      EXPECT_EQ(sum_of_ranks(*j), 10.0f);
      j->close();
    } catch (const std::exception& e) {
      errors[P] = e.what();
    }
  });
  for (auto& t : threads) t.join();
  EXPECT_TRUE(joined.load());
  for (int r = 0; r <= P; ++r) EXPECT_EQ(errors[static_cast<std::size_t>(r)], "") << "thread " << r;
}

// A grow that reached only some members (a member lost while rank 0 handed the list round):
// those that got the list grow, the others shrink, and all of them, with the joiner, end in the
// same context, because the list travels in the agreement. `got` says which members got it
// (rank 0 always has it: it made it).
void grow_reaching_only(const char* transport, std::vector<bool> got) {
  const int P = static_cast<int>(got.size());
  auto store = std::make_shared<ringpress::HashStore>();
  auto options = [&](int r) {
    ringpress::ContextOptions o;
    o.rank = r;
    o.size = P;
    o.timeout = std::chrono::seconds(30);
    o.bind_addr = "127.0.0.1";
    o.transport = transport;
    o.secret = std::string(40, 'k');
    return o;
  };
  std::string list;
  rp_test::ThreadBarrier listed(P);
  std::vector<std::string> errors(static_cast<std::size_t>(P) + 1);
  auto expect_grown = [&](ringpress::Context& c, int rank) {
    EXPECT_EQ(c.size(), P + 1);
    EXPECT_EQ(c.rank(), rank);
    EXPECT_EQ(c.epoch(), 1u);
    EXPECT_EQ(c.joined(), std::vector<int>{P});
    EXPECT_FALSE(c.broken());
  };
  std::vector<std::thread> threads;
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        auto c = ringpress::Context::create(store, options(r));
        if (r == 0) {
          for (int i = 0; i < 5000 && list.empty(); ++i) {
            list = c->admit_joiners(*store);
            if (list.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
        }
        listed.wait();
        ASSERT_FALSE(list.empty());
        std::vector<int> left;
        std::unique_ptr<ringpress::Context> n =
            got[static_cast<std::size_t>(r)]
                ? c->grow(*store, list, std::chrono::seconds(30), &left)
                : c->shrink(std::chrono::seconds(30), &left);
        ASSERT_TRUE(n != nullptr);
        EXPECT_TRUE(left.empty());
        expect_grown(*n, r);
        n->close();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  threads.emplace_back([&] {
    try {
      auto j = ringpress::Context::join(store, options(0));
      expect_grown(*j, P);
      j->close();
    } catch (const std::exception& e) {
      errors[static_cast<std::size_t>(P)] = e.what();
    }
  });
  for (auto& t : threads) t.join();
  for (int r = 0; r <= P; ++r) EXPECT_EQ(errors[static_cast<std::size_t>(r)], "") << "thread " << r;
}

TEST_P(Recovery, AGrowThatReachedSomeMembersAdmitsTheJoinerEverywhere) {
  grow_reaching_only(GetParam(), {true, true, false});
}

TEST_P(Recovery, AGrowOnlyRankZeroKnewOfStillAdmitsTheJoiner) {
  grow_reaching_only(GetParam(), {true, false, false});
}

INSTANTIATE_TEST_SUITE_P(Transports, Recovery, ::testing::Values("tcp", "shm"));

}  // namespace

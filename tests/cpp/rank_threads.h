// Ranks as threads of one process over an in-memory store (DESIGN habit 9), on the real
// transports: each thread makes a Communicator (rank, size, loopback and 30 s deadlines filled in,
// then `configure` adjusts the options), runs `body` and closes it. An exception on any rank
// becomes a test failure naming that rank.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringpress/engine.h"
#include "ringpress/store.h"

namespace rp_test {

// A reusable barrier among the rank threads, outside ringpress. A rank may finish a collective
// while a peer is still reading its last bytes; a test whose next call is meant to fail (a
// mismatch, a fault) waits here first, so the failure cannot reach a peer still in the call
// before, which would rightly fail too (an abort is job-wide).
class ThreadBarrier {
 public:
  explicit ThreadBarrier(int n) : n_(n) {}
  void wait() {
    std::unique_lock<std::mutex> lock(mu_);
    const long gen = gen_;
    if (++arrived_ == n_) {
      arrived_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen_ != gen; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int n_;
  int arrived_ = 0;
  long gen_ = 0;
};

inline void run_rank_threads(int P, const std::function<void(ringpress::CommOptions&)>& configure,
                             const std::function<void(ringpress::Communicator&)>& body) {
  auto store = std::make_shared<ringpress::HashStore>();
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<std::size_t>(P));
  for (int r = 0; r < P; ++r) {
    threads.emplace_back([&, r] {
      try {
        ringpress::CommOptions o;
        o.context.rank = r;
        o.context.size = P;
        o.context.timeout = std::chrono::seconds(30);
        o.context.bind_addr = "127.0.0.1";
        configure(o);
        ringpress::Communicator c(store, o);
        body(c);
        c.close();
      } catch (const std::exception& e) {
        errors[static_cast<std::size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < P; ++r) EXPECT_EQ(errors[static_cast<std::size_t>(r)], "") << "rank " << r;
}

// One rooted call of 16 int32 elements with `root` as this rank believes it: broadcast (kind 0),
// gather (1) or scatter (2). Returns "returned normally", the UsageError's message, or "other: "
// and another error's; *seconds: how long the call took.
inline std::string rooted_call(ringpress::Communicator& c, int kind, int root, double* seconds) {
  const int P = c.size();
  std::vector<std::int32_t> buf(16, c.rank()), all(16 * static_cast<std::size_t>(P));
  std::vector<std::pair<void*, std::size_t>> outs;
  std::vector<std::pair<const void*, std::size_t>> ins;
  if (c.rank() == root) {
    for (int p = 0; p < P; ++p) {
      outs.emplace_back(all.data() + 16 * p, 16);
      ins.emplace_back(all.data() + 16 * p, 16);
    }
  }
  const auto t0 = std::chrono::steady_clock::now();
  std::string seen;
  try {
    if (kind == 0) c.broadcast(buf.data(), 16, ringpress::DType::kI32, root, false);
    if (kind == 1) c.gather(buf.data(), 16, outs, ringpress::DType::kI32, root, false);
    if (kind == 2) c.scatter(ins, buf.data(), 16, ringpress::DType::kI32, root, false);
    seen = "returned normally";
  } catch (const ringpress::UsageError& e) {
    seen = e.what();
  } catch (const ringpress::Error& e) {
    seen = std::string("other: ") + e.what();
  }
  *seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return seen;
}

}  // namespace rp_test

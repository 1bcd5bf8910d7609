// Worker pool behind parallel_for (see ringpress/thread_pool.h).
//
// Ownership and locking: the pool is a leaked singleton (workers must outlive static destructors
// of callers). job_mutex_ serialises whole jobs; state_mutex_ guards the job fields and the
// condition variables. Lock order: job_mutex_ before state_mutex_.
// fork(): a child inherits the pool object but not its worker threads (and possibly a locked
// mutex), so a pthread_atfork child handler drops the pool (leaking it) and the child builds a
// fresh one on first use.
// Error context: workers run each job under the caller's ScopedErrorContext (rank/peer/op), so
// an error raised on a worker carries the same context as one raised on the calling thread.
#include "ringpress/thread_pool.h"

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "ringpress/error.h"

namespace ringpress {
namespace {

class Pool {
 public:
  void run(std::size_t n, int threads, const std::function<void(std::size_t, int)>& fn) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    ensure_workers(threads - 1);
    {
      std::lock_guard<std::mutex> lk(state_mutex_);
      fn_ = &fn;
      n_ = n;
      next_.store(0);
      error_ = nullptr;
      ctx_ = current_error_context();  // workers raise errors with the caller's rank/op
      active_ = threads - 1;           // helpers taking part in this job
      pending_ = active_;
      ++generation_;
    }
    start_cv_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lk(state_mutex_);
    done_cv_.wait(lk, [&] { return pending_ == 0; });
    fn_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void ensure_workers(int want) {
    while (static_cast<int>(workers_.size()) < want) {
      const int id = static_cast<int>(workers_.size()) + 1;
      workers_.emplace_back([this, id] { loop(id); });
      workers_.back().detach();
    }
  }

  void loop(int id) {
    std::uint64_t seen = 0;
    for (;;) {
      ErrorContext ctx;
      {
        std::unique_lock<std::mutex> lk(state_mutex_);
        start_cv_.wait(lk, [&] { return generation_ != seen; });
        seen = generation_;
        if (id > active_) continue;  // not part of this job
        ctx = ctx_;
      }
      {
        ScopedErrorContext inherit(ctx.op, ctx.rank, ctx.peer);
        work(id);
      }
      std::lock_guard<std::mutex> lk(state_mutex_);
      if (--pending_ == 0) done_cv_.notify_all();
    }
  }

  void work(int worker) {
    for (;;) {
      const std::size_t i = next_.fetch_add(1);
      if (i >= n_) return;
      try {
        (*fn_)(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lk(state_mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(n_);  // skip the rest
      }
    }
  }

  std::mutex job_mutex_;
  std::mutex state_mutex_;
  std::condition_variable start_cv_, done_cv_;
  std::vector<std::thread> workers_;
  const std::function<void(std::size_t, int)>* fn_ = nullptr;
  std::size_t n_ = 0;
  std::atomic<std::size_t> next_{0};
  std::exception_ptr error_;
  ErrorContext ctx_;
  int active_ = 0;
  int pending_ = 0;
  std::uint64_t generation_ = 0;
};

std::atomic<Pool*> g_pool{nullptr};  // leaked: detached workers reference it

Pool& pool() {
  Pool* p = g_pool.load(std::memory_order_acquire);
  if (!p) {
    Pool* fresh = new Pool();
    if (g_pool.compare_exchange_strong(p, fresh, std::memory_order_acq_rel)) {
      p = fresh;
    } else {
      delete fresh;  // another thread installed one first (no workers started yet)
    }
  }
  return *p;
}

const int g_atfork_registered =
    pthread_atfork(nullptr, nullptr, [] { g_pool.store(nullptr, std::memory_order_release); });

}  // namespace

int hardware_threads() noexcept {
  unsigned n = std::thread::hardware_concurrency();
  return n ? static_cast<int>(n) : 1;
}

void parallel_for(std::size_t n, int threads, const std::function<void(std::size_t, int)>& fn) {
  // Compare in size_t (n may exceed INT_MAX); n == 0 gives threads 0, which runs inline.
  if (threads > 0 && static_cast<std::size_t>(threads) > n) threads = static_cast<int>(n);
  if (threads <= 1) {
    for (std::size_t i = 0; i < n; ++i) fn(i, 0);
    return;
  }
  pool().run(n, threads, fn);
}

}  // namespace ringpress

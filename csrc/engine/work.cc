// Work handles and the callback pool (see engine.h). Completion is published under the mutex;
// callbacks run outside it, on the pool's threads.
#include <cxxabi.h>

#include "ringpress/engine.h"

namespace ringpress {

bool Work::is_completed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return done_;
}

std::exception_ptr Work::exception() const {
  std::lock_guard<std::mutex> lock(mu_);
  return error_;
}

bool Work::wait(std::chrono::milliseconds timeout) {
  if (runner_ && !is_completed()) {
    std::lock_guard<std::mutex> g(runner_->mu);
    if (runner_->comm) runner_->comm->run_until(*this);
  }
  std::unique_lock<std::mutex> lock(mu_);
  if (timeout.count() < 0) {
    cv_.wait(lock, [&] { return done_; });
  } else if (!cv_.wait_for(lock, timeout, [&] { return done_; })) {
    return false;
  }
  if (error_) std::rethrow_exception(error_);
  return true;
}

void Work::on_complete(std::function<void(Work&)> fn) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!done_) {
      callbacks_.push_back(std::move(fn));
      return;
    }
  }
  fn(*this);
}

void Work::finish_with(std::function<void()> fn) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (!done_ && !finishing_) {
      finishers_.push_back(std::move(fn));
      return;
    }
    cv_.wait(lock, [&] { return done_; });
    if (error_) return;
  }
  fn();
}

void Work::hold(std::shared_ptr<void> h) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!done_) holds_.push_back(std::move(h));
}

namespace {
void run_callbacks(Work& w, std::vector<std::function<void(Work&)>>& cbs) {
  for (auto& cb : cbs) {
    try {
      cb(w);
    } catch (abi::__forced_unwind&) {
      // pthread_exit / cancellation (CPython ends a thread that wants the GIL while the
      // interpreter finalizes this way): it must unwind on, or the process aborts.
      throw;
    } catch (...) {
      // A callback's failure must not take the engine (or the pool) down; it is its own to report.
    }
  }
}
}  // namespace

void Work::complete(std::exception_ptr err) {
  std::vector<std::function<void(Work&)>> cbs;
  std::vector<std::shared_ptr<void>> holds;
  std::vector<std::function<void()>> finishers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    finishers.swap(finishers_);
    finishing_ = true;
  }
  for (auto& fn : finishers) {
    if (err) break;
    try {
      fn();
    } catch (...) {
      err = std::current_exception();
    }
  }
  finishers.clear();
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = err;
    done_ = true;
    cbs.swap(callbacks_);
    holds.swap(holds_);
  }
  cv_.notify_all();
  holds.clear();
  if (cbs.empty()) return;
  if (!pool_) {
    run_callbacks(*this, cbs);
    return;
  }
  // The pool's closure keeps this Work alive until its callbacks have run.
  auto self = shared_from_this();
  pool_->post([self, cbs = std::move(cbs)]() mutable { run_callbacks(*self, cbs); });
}

// ------------------------------------------------------------------ CallbackPool

namespace {
thread_local const CallbackPool* t_pool = nullptr;  // the pool whose callback this thread runs
}

void CallbackPool::post(std::function<void()> fn) {
  std::unique_lock<std::mutex> lock(mu_);
  queue_.push_back(std::move(fn));
  ++outstanding_;
  if (static_cast<int>(queue_.size()) <= idle_) {
    lock.unlock();
    cv_.notify_one();
    return;
  }
  lock.unlock();
  try {
    std::thread(run, shared_from_this()).detach();
  } catch (const std::system_error&) {
    // No thread to be had: an idle one will come to it, or the next post's thread will.
    cv_.notify_one();
  }
}

void CallbackPool::run(std::shared_ptr<CallbackPool> self) {
  t_pool = self.get();
  std::unique_lock<std::mutex> lock(self->mu_);
  for (;;) {
    ++self->idle_;
    const bool got =
        self->cv_.wait_for(lock, std::chrono::seconds(10), [&] { return !self->queue_.empty(); });
    --self->idle_;
    if (!got) return;
    std::function<void()> fn = std::move(self->queue_.front());
    self->queue_.pop_front();
    lock.unlock();
    {
      // Counted done however fn ends (it only unwinds for a thread exit, see run_callbacks).
      struct Done {
        CallbackPool& p;
        ~Done() {
          std::lock_guard<std::mutex> g(p.mu_);
          --p.outstanding_;
          p.drained_.notify_all();
        }
      } done{*self};
      fn();
      fn = nullptr;  // drop the Work (and what its callbacks hold) before reporting it done
    }
    lock.lock();
  }
}

bool CallbackPool::drain(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  const int mine = t_pool == this ? 1 : 0;
  return drained_.wait_for(lock, timeout, [&] { return outstanding_ <= mine; });
}

}  // namespace ringpress

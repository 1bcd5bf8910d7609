// Work handles (see engine.h). Completion is published under the mutex; callbacks run outside it.
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

void Work::complete(std::exception_ptr err) {
  std::vector<std::function<void(Work&)>> cbs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    error_ = err;
    done_ = true;
    cbs.swap(callbacks_);
  }
  cv_.notify_all();
  for (auto& cb : cbs) {
    try {
      cb(*this);
    } catch (...) {
      // A callback's failure must not take the engine down; it is the callback's to report.
    }
  }
}

}  // namespace ringpress

// WorkRingpress (contract in work.h).
#include "work.h"

#include <ATen/core/jit_type.h>
#include <ATen/record_function.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "ringpress/error.h"

namespace ringpress::torchpg {

std::exception_ptr torch_error(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& re) {
    const std::string msg = std::string(error_kind_name(re.kind())) + ": " + re.what();
    try {
      if (re.kind() == ErrorKind::kTransport || re.kind() == ErrorKind::kTimeout) {
        C10_THROW_ERROR(DistNetworkError, msg);
      }
      C10_THROW_ERROR(DistBackendError, msg);
    } catch (...) {
      return std::current_exception();
    }
  } catch (...) {
    return std::current_exception();
  }
}

c10::intrusive_ptr<WorkRingpress> WorkRingpress::create(
    int rank, c10d::OpType type, const char* profiling_title, std::shared_ptr<ringpress::Work> core,
    std::vector<at::Tensor> outputs, const std::optional<std::vector<at::Tensor>>& inputs) {
  // No profiler or observer listening: skip the record (c10d::Work would allocate one to find
  // out that it is inactive, per op).
  if (!at::hasCallbacks()) profiling_title = nullptr;
  auto w = c10::make_intrusive<WorkRingpress>(rank, type, profiling_title, std::move(core),
                                              std::move(outputs), inputs);
  if (!w->core_) {
    w->settle();
  } else if (w->recordFunctionEndCallback_) {
    w->settle_on_completion();  // the profiler span ends when the op does, waited for or not
  }
  return w;
}

c10::intrusive_ptr<WorkRingpress> WorkRingpress::pending(int rank, c10d::OpType type,
                                                         std::vector<at::Tensor> outputs) {
  auto w = c10::make_intrusive<WorkRingpress>(rank, type, nullptr, nullptr, std::move(outputs));
  w->pending_.store(true);
  return w;
}

void WorkRingpress::attach(std::shared_ptr<ringpress::Work> core) {
  core_ = std::move(core);
  pending_.store(false);
}

WorkRingpress::WorkRingpress(int rank, c10d::OpType type, const char* profiling_title,
                             std::shared_ptr<ringpress::Work> core, std::vector<at::Tensor> outputs,
                             const std::optional<std::vector<at::Tensor>>& inputs)
    : c10d::Work(rank, type, profiling_title, inputs),
      core_(std::move(core)),
      outputs_(std::move(outputs)) {}

WorkRingpress::~WorkRingpress() = default;

void WorkRingpress::set_device_outputs(std::vector<std::pair<at::Tensor, at::Tensor>> outs) {
  if (outs.empty()) return;
  {
    std::lock_guard<std::mutex> lock(device_mu_);
    device_outs_ = std::move(outs);
    outputs_.clear();
    for (auto& p : device_outs_) outputs_.push_back(p.first);
    if (outcome_known_) {  // settled already (a synchronous op): copy now, on this thread
      copy_to_device_locked();
      return;
    }
  }
  // The copy back is the op's last step: done when the request completes, waited for or not.
  if (core_) settle_on_completion();
}

void WorkRingpress::copy_to_device_locked() {
  if (error_ || device_outs_.empty() || copied_) return;
  try {
    const at::Device dev = device_outs_.front().first.device();
    c10::impl::VirtualGuardImpl impl(dev.type());
    for (auto& [device, host] : device_outs_) device.copy_(host, /*non_blocking=*/true);
    copied_.emplace(dev.type());
    copied_->record(impl.getStream(dev));
  } catch (...) {
    error_ = std::current_exception();
  }
}

void WorkRingpress::block_current_stream() {
  std::lock_guard<std::mutex> lock(device_mu_);
  if (!copied_ || device_outs_.empty()) return;
  const at::Device dev = device_outs_.front().first.device();
  c10::impl::VirtualGuardImpl impl(dev.type());
  copied_->block(impl.getStream(dev));
}

void WorkRingpress::synchronize() {
  if (done_.load(std::memory_order_acquire)) block_current_stream();
}

void WorkRingpress::settle_on_completion() {
  {
    std::lock_guard<std::mutex> lock(future_mu_);
    if (callback_) return;
    callback_ = true;
  }
  // A strong reference: the core Work drops its callbacks once they ran, so this is no cycle
  // beyond the request's life.
  c10::intrusive_ptr<WorkRingpress> self = c10::intrusive_ptr<WorkRingpress>::reclaim_copy(this);
  core_->on_complete([self](ringpress::Work&) { self->settle(); });
}

void WorkRingpress::complete_future() {
  c10::intrusive_ptr<c10::ivalue::Future> fut;
  {
    std::lock_guard<std::mutex> lock(future_mu_);
    if (!future_ || future_claimed_) return;
    future_claimed_ = true;
    fut = future_;
  }
  // Outside the lock: markCompleted runs the future's callbacks (DDP's then()) inline.
  if (error_) {
    fut->setError(torch_error(error_));
  } else {
    fut->markCompleted(c10::IValue(outputs_));
  }
}

void WorkRingpress::settle() {
  std::call_once(settled_, [&] {
    {
      std::lock_guard<std::mutex> lock(device_mu_);
      error_ = core_ ? core_->exception() : nullptr;
      outcome_known_ = true;
      copy_to_device_locked();
    }
    if (recordFunctionEndCallback_) {
      recordFunctionEndCallback_();
      recordFunctionEndCallback_ = nullptr;
    }
    done_.store(true, std::memory_order_release);
  });
  complete_future();
}

bool WorkRingpress::isCompleted() {
  if (pending_.load()) return false;
  if (done_.load(std::memory_order_acquire)) return true;
  if (core_ && core_->is_completed()) {
    settle();
    return true;
  }
  return false;
}

bool WorkRingpress::isSuccess() const {
  return done_.load(std::memory_order_acquire) && !error_;
}

std::exception_ptr WorkRingpress::exception() const {
  return done_.load(std::memory_order_acquire) ? error_ : nullptr;
}

std::vector<at::Tensor> WorkRingpress::result() {
  wait();
  return outputs_;
}

bool WorkRingpress::wait(std::chrono::milliseconds timeout) {
  if (pending_.load()) {
    ScopedErrorContext ec("wait", rank_);
    RP_THROW(UsageError,
             "this Work belongs to a coalescing block (batch_isend_irecv) that has "
             "not ended: wait on the Work the block returns");
  }
  if (core_ && !done_.load(std::memory_order_acquire)) {
    // torch's kNoTimeout is 0: no limit beyond the request's own deadline.
    const auto limit = timeout.count() > 0 ? timeout : std::chrono::milliseconds(-1);
    bool ok = false;
    try {
      ok = core_->wait(limit);
    } catch (...) {
      ok = true;  // settle() reads the error from the core Work
    }
    if (!ok) {
      ScopedErrorContext ec(core_->name().c_str(), rank_);
      RP_THROW(TimeoutError, "Work.wait: the request (seq ", core_->seq(),
               ") is not complete after ", timeout.count(), " ms (it keeps its own deadline)");
    }
    settle();
  }
  if (error_) std::rethrow_exception(error_);
  block_current_stream();
  return true;
}

c10::intrusive_ptr<c10::ivalue::Future> WorkRingpress::getFuture() {
  {
    std::lock_guard<std::mutex> lock(future_mu_);
    if (!future_) {
      future_ =
          c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()));
    }
  }
  if (done_.load(std::memory_order_acquire)) {
    complete_future();  // settle() ran before the future existed
  } else if (pending_.load()) {
    ScopedErrorContext ec("get_future", rank_);
    RP_THROW(UsageError, "this Work belongs to a coalescing block that has not ended");
  } else {
    settle_on_completion();
  }
  return future_;
}

}  // namespace ringpress::torchpg

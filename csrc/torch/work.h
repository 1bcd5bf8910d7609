// A ringpress request seen as a c10d::Work.
//
// Contract
//   * wait(): blocks until the request is done (running it on this thread when the engine has
//     not started it yet: engine.h; staged outputs were copied back by the request's finishers),
//     ends the profiler record and completes the future once, and rethrows the
//     request's error, a ringpress error naming the op, rank and peer. A timeout (> 0) that
//     passes first raises ringpress TimeoutError; the request keeps its own deadline.
//   * getFuture(): a c10::ivalue::Future holding the op's outputs (a list of tensors, as gloo's);
//     completed from the engine's callback pool (never the engine thread) or by whoever observes
//     completion first (wait, isCompleted). A failed request sets the future's error, as a torch
//     error type (torch_error below), which DDP's reducer and Future.wait() rethrow.
//   * isCompleted() never blocks.
//   * Device (CUDA) tensors: see set_device_outputs().
//   * The Work keeps every tensor the request touches alive until it completes (Work::hold), so
//     dropping the handle early is safe.
// Cost: no thread in the loop for wait(); a completion callback is registered only when
// getFuture() is called or the profiler records the op.
#pragma once

#include <ATen/core/ivalue.h>
#include <c10/core/Event.h>

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <torch/csrc/distributed/c10d/Work.hpp>
#include <vector>

#include "ringpress/engine.h"

namespace ringpress::torchpg {

// A ringpress error as the torch error type that futures hand on (DDP's reducer, autograd and
// torch.futures know c10 errors, not ours): DistNetworkError for a lost or silent peer,
// DistBackendError otherwise, the message led by the ringpress class name (it names the op, rank
// and peer). Other exceptions pass unchanged.
std::exception_ptr torch_error(std::exception_ptr e);

class WorkRingpress : public c10d::Work {
 public:
  // core == nullptr: complete already (an op with nothing to do), unless attach() follows.
  // Copies into the caller's tensors are the core request's finishers (Work::finish_with), so
  // they are done before anyone sees the request complete.
  static c10::intrusive_ptr<WorkRingpress> create(
      int rank, c10d::OpType type, const char* profiling_title,
      std::shared_ptr<ringpress::Work> core, std::vector<at::Tensor> outputs,
      const std::optional<std::vector<at::Tensor>>& inputs = std::nullopt);
  // A Work whose request does not exist yet (a p2p op inside a coalescing block): wait() raises
  // until attach() gives it the block's request.
  static c10::intrusive_ptr<WorkRingpress> pending(int rank, c10d::OpType type,
                                                   std::vector<at::Tensor> outputs);
  void attach(std::shared_ptr<ringpress::Work> core);
  // Device tensors staged through pinned host memory: (device tensor, host copy). Once the request
  // succeeds, whoever settles it first copies each host copy back, asynchronously on that thread's
  // current stream, and records an event; wait() and synchronize() make the caller's current
  // stream wait for it (as NCCL's work does), the future carries it (its devices). Set right after
  // create(), before the Work is returned.
  void set_device_outputs(std::vector<std::pair<at::Tensor, at::Tensor>> outs);
  WorkRingpress(int rank, c10d::OpType type, const char* profiling_title,
                std::shared_ptr<ringpress::Work> core, std::vector<at::Tensor> outputs,
                const std::optional<std::vector<at::Tensor>>& inputs = std::nullopt);
  ~WorkRingpress() override;

  bool isCompleted() override;
  bool isSuccess() const override;
  std::exception_ptr exception() const override;
  std::vector<at::Tensor> result() override;
  bool wait(std::chrono::milliseconds timeout = kNoTimeout) override;
  void synchronize() override;
  void abort() override {}
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override;
  uint64_t getSequencenumber() const override { return core_ ? core_->seq() : 0; }

 private:
  // Once the core request is done: end the profiler record, complete the future.
  void settle();
  // settle() when the core request completes (once; the callback keeps this Work alive).
  void settle_on_completion();
  void complete_future();

  std::shared_ptr<ringpress::Work> core_;  // null: completed at creation (nothing to do)
  std::vector<at::Tensor> outputs_;
  std::atomic<bool> pending_{false};  // made by pending(), not attached yet
  std::mutex device_mu_;              // guards the three below, error_ and outputs_ until done_
  std::vector<std::pair<at::Tensor, at::Tensor>> device_outs_;
  bool outcome_known_ = false;        // settle() read the request's outcome
  std::optional<c10::Event> copied_;  // the copy back to the device, once done
  void copy_to_device_locked();
  void block_current_stream();
  std::once_flag settled_;
  std::exception_ptr error_;  // set in settle()
  std::atomic<bool> done_{false};
  std::mutex future_mu_;  // guards the three below
  c10::intrusive_ptr<c10::ivalue::Future> future_;
  bool future_claimed_ = false;  // someone completes (or completed) future_
  bool callback_ = false;        // settle_on_completion() registered
};

}  // namespace ringpress::torchpg

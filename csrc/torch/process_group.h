// ProcessGroupRingpress: the "ringpress" torch.distributed backend, a c10d::Backend over one
// ringpress Communicator (the only code in ringpress that includes torch headers).
//
// Contract
//   * Made by ringpress.torch's creator for dist.init_process_group("ringpress" | "cpu:ringpress,
//     cuda:nccl" | ...) and dist.new_group(backend="ringpress"): torch gives it the group's
//     prefix store, rank, size and timeout; the communicator rendezvouses through that store.
//     torch owns everything else (the group name, per-device routing, debug wrappers, profiler
//     spans of the c10d ops); this adds a span per op named "ringpress:<op>".
//   * Every op is one engine request (or a few, queued together) that returns at once with a
//     WorkRingpress (work.h); ops run in call order, the same on every rank, like any collective.
//     A call torch marks synchronous (asyncOp=false) runs on the caller's thread when the engine
//     is idle (engine.h), so dist.all_reduce costs what Communicator.allreduce costs.
//   * Byte-moving ops (broadcast, all_gather*, gather, scatter, all_to_all*, send/recv) take every
//     dtype (they move bytes); reductions take the dtypes and ops listed in docs/torch.md.
//     Non-contiguous tensors are staged through a contiguous copy (one copy in, one out).
//   * Errors: arguments are checked before anything is queued and raise ringpress UsageError
//     naming the op and rank, leaving the group usable; a failed request (dead peer, mismatch,
//     timeout) raises its ringpress error from wait() and the future on every rank.
//   * Point-to-point: send/recv match in posting order per direction with the tag checked; inside
//     a coalescing block (batch_isend_irecv) they are posted together, so exchanges cannot
//     deadlock on full buffers. recvAnysource is refused.
// Costs: the ringpress collectives' (docs/algorithms.md); staging adds one copy each way.
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

#include "ringpress/engine.h"

namespace ringpress::torchpg {

class ProcessGroupRingpress : public c10d::Backend {
 public:
  ProcessGroupRingpress(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                        std::chrono::milliseconds timeout);
  ~ProcessGroupRingpress() override;
  // Closes the communicator of every ringpress group still alive in this process (requests fail
  // fast, completion callbacks run to their end). ringpress.torch calls it at interpreter exit,
  // while Python still runs the callbacks (torch futures, DDP hooks): a callback thread that
  // touches Python once finalization has begun is ended by CPython inside a destructor, and the
  // process aborts. Idempotent; call without the GIL.
  static void close_all();

  const std::string getBackendName() const override { return "ringpress"; }
  c10::intrusive_ptr<Options> getBackendOptions() override;
  void setTimeout(std::chrono::milliseconds timeout) override;
  bool supportsCoalescing() const override { return true; }
  // dist.split_group: a new communicator over `ranks` (this group's ranks, sorted the same on
  // every member), rendezvousing through `store` under a prefix naming them; nullptr on ranks
  // that are not members. torch calls split() once per device type the group serves (cpu and
  // cuda, both ringpress here) with the same store: the second call returns the first's backend,
  // as the parent serves both devices with one. (Two rendezvous under the same keys raced: the
  // second could read the first's finished addresses and key, a 30 s TimeoutError under load.)
  bool supportsSplitting() const override { return true; }
  c10::intrusive_ptr<c10d::Backend> split(const c10::intrusive_ptr<c10d::Store>& store,
                                          const std::vector<int>& ranks,
                                          const c10::intrusive_ptr<Options>& opts) override;
  // Sequence numbers (TORCH_DISTRIBUTED_DEBUG=DETAIL's wrapper checks them across ranks): the
  // communicator's count of collective requests, which starts at 0 on every rank.
  void setSequenceNumberForGroup() override {}
  uint64_t getSequenceNumberForGroup() override { return comm_->sequence(); }
  void startCoalescing() override;
  c10::intrusive_ptr<c10d::Work> endCoalescing() override;

  using Work = c10d::Work;
  using Tensors = std::vector<at::Tensor>;
  c10::intrusive_ptr<Work> broadcast(Tensors& tensors, const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<Work> allreduce(Tensors& tensors, const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<Work> allreduce_coalesced(
      Tensors& tensors, const c10d::AllreduceCoalescedOptions& opts) override;
  c10::intrusive_ptr<Work> reduce(Tensors& tensors, const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<Work> allgather(std::vector<Tensors>& outputs, Tensors& inputs,
                                     const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<Work> allgather_coalesced(std::vector<Tensors>& outputs, Tensors& inputs,
                                               const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<Work> allgather_into_tensor_coalesced(
      Tensors& outputs, Tensors& inputs, const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<Work> gather(std::vector<Tensors>& outputs, Tensors& inputs,
                                  const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<Work> scatter(Tensors& outputs, std::vector<Tensors>& inputs,
                                   const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<Work> reduce_scatter(Tensors& outputs, std::vector<Tensors>& inputs,
                                          const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<Work> _reduce_scatter_base(at::Tensor& output, at::Tensor& input,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<Work> reduce_scatter_tensor_coalesced(
      Tensors& outputs, Tensors& inputs, const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                         std::vector<int64_t>& output_split_sizes,
                                         std::vector<int64_t>& input_split_sizes,
                                         const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<Work> alltoall(Tensors& outputs, Tensors& inputs,
                                    const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<Work> send(Tensors& tensors, int dst, int tag) override;
  c10::intrusive_ptr<Work> recv(Tensors& tensors, int src, int tag) override;
  c10::intrusive_ptr<Work> recvAnysource(Tensors& tensors, int tag) override;
  c10::intrusive_ptr<Work> barrier(const c10d::BarrierOptions& opts) override;
  void shutdown() override;
  void abort() override;

  // The communicator (stats, transports) and the DDP hook's compressed allreduce.
  Communicator& comm() { return *comm_; }
  // One DDP bucket: a compressed allreduce in place, with error feedback through `residual`
  // (float32, the bucket's size) and, for top-k with momentum correction, `velocity`'s sent
  // entries zeroed. Returns the future DDP wants, completed with `value` (of `type`: the bucket
  // as a Python object for a Python hook) from the engine's callback pool, running no Python.
  c10::intrusive_ptr<c10::ivalue::Future> allreduce_bucket(
      const at::Tensor& bucket, ReduceOp op, const CompressionOptions& compression,
      const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& velocity,
      c10::IValue value, c10::TypePtr type);

 private:
  struct Batch;  // p2p messages of a coalescing block
  c10::intrusive_ptr<Work> p2p(Tensors& tensors, int peer, int tag, bool send);

  std::shared_ptr<Communicator> comm_;  // shared with the registry close_all() reads
  std::chrono::milliseconds timeout_;
  // The last split(): its store and ranks, and what it made (see split()). Not owned: while the
  // backend it made lives, so does that store (the backend's prefix store holds it).
  const c10d::Store* split_store_ = nullptr;
  std::vector<int> split_ranks_;
  c10::weak_intrusive_ptr<c10d::Backend> split_made_{c10::intrusive_ptr<c10d::Backend>()};
  std::unique_ptr<Batch> batch_;  // non-null between startCoalescing and endCoalescing
};

}  // namespace ringpress::torchpg

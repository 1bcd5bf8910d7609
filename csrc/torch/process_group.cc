// ProcessGroupRingpress (contract in process_group.h): argument checks, dtype/op mapping and
// staging; every transfer is a ringpress engine request.
#include "process_group.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>

#include "ringpress/error.h"
#include "store_adapter.h"
#include "work.h"

namespace ringpress::torchpg {

using c10d::OpType;
using RedOp = c10d::ReduceOp;

namespace {

// ------------------------------------------------------------------ tensors
void check_tensor(const at::Tensor& t) {
  RP_ENFORCE(t.defined(), UsageError, "an undefined tensor");
  RP_ENFORCE(t.layout() == at::kStrided, UsageError,
             "only dense (strided) tensors are supported, got ", t.layout());
  RP_ENFORCE(t.device().is_cpu(), UsageError, "tensor on ", t.device(),
             ": this op takes CPU tensors (all_reduce, broadcast, all_gather_into_tensor and "
             "reduce_scatter_tensor stage device tensors through host memory; or use a mixed "
             "backend such as 'cpu:ringpress,cuda:nccl')");
}

void check_tensors(const std::vector<at::Tensor>& ts, std::size_t want = 0) {
  RP_ENFORCE(!ts.empty(), UsageError, "an empty tensor list");
  if (want) {
    RP_ENFORCE_EQ(ts.size(), want, UsageError, "tensors in the list");
  }
  for (const auto& t : ts) check_tensor(t);
}

std::shared_ptr<void> keep(std::vector<at::Tensor> ts) {
  return std::make_shared<std::vector<at::Tensor>>(std::move(ts));
}

std::size_t nbytes(const at::Tensor& t) {
  return t.numel() * t.element_size();
}

// A tensor as the engine needs it: contiguous memory. `host` is `user` itself when it already is.
struct Staged {
  at::Tensor user, host;
  bool copied() const { return !host.is_same(user); }
};
Staged stage(const at::Tensor& t, bool copy_in) {
  if (t.is_contiguous()) return {t, t};
  return {t, copy_in ? t.contiguous() : at::empty(t.sizes(), t.options())};
}

// Registers the copy of staged outputs back into the caller's tensors (before completion).
void copy_back(ringpress::Work& w, std::vector<Staged> outs) {
  std::vector<Staged> todo;
  for (auto& s : outs)
    if (s.copied()) todo.push_back(s);
  if (todo.empty()) return;
  w.finish_with([todo = std::move(todo)] {
    for (const auto& s : todo) s.user.copy_(s.host);
  });
}

// The bytes of rank p's block of a flat uint8 buffer, as a tensor shaped like `like`.
at::Tensor block_as(const at::Tensor& flat, std::size_t p, const at::Tensor& like) {
  const auto nb = static_cast<int64_t>(nbytes(like));
  return flat.narrow(0, static_cast<int64_t>(p) * nb, nb)
      .view(like.scalar_type())
      .view(like.sizes());
}

at::Tensor bytes_of(const at::Tensor& contiguous) {
  return contiguous.reshape({-1}).view(at::kByte);
}

// ------------------------------------------------------------------ device tensors
// A device (CUDA) tensor goes through pinned host memory (torch's caching host allocator: the
// staging buffers are reused, and a block is not handed out again before the copies that use it
// have finished). The copy in is queued on the caller's current stream; the engine waits for its
// event before the op's request runs, so the caller never blocks. The copy back is the Work's
// (work.h: on the settling thread's stream, the caller's stream then waits for it).
bool on_device(const at::Tensor& t) {
  return t.defined() && !t.device().is_cpu();
}

struct DeviceStage {
  std::vector<std::pair<at::Tensor, at::Tensor>> outs;  // (device tensor, host copy)
  std::vector<std::shared_ptr<c10::Event>> ready;       // copies to the host in flight
  std::vector<at::Tensor> held;

  at::Tensor host(const at::Tensor& t, bool copy_in, bool output) {
    RP_ENFORCE(t.layout() == at::kStrided, UsageError, "only dense (strided) tensors");
    at::Tensor h = at::empty(t.sizes(), t.options().device(at::kCPU).pinned_memory(true));
    if (copy_in) {
      h.copy_(t, /*non_blocking=*/true);
      c10::impl::VirtualGuardImpl impl(t.device().type());
      auto ev = std::make_shared<c10::Event>(t.device().type());
      ev->record(impl.getStream(t.device()));
      ready.push_back(std::move(ev));
    }
    if (output) outs.emplace_back(t, h);
    held.push_back(h);
    return h;
  }
  // Queues, before the op, the engine's wait for the copies to the host.
  void before(Communicator& comm) {
    if (ready.empty()) return;
    auto w = comm.local("device_to_host", [ready = ready] {
      for (const auto& e : ready) e->synchronize();
    });
    w->hold(keep(held));
  }
  c10::intrusive_ptr<c10d::Work> after(c10::intrusive_ptr<c10d::Work> w) {
    auto* rw = dynamic_cast<WorkRingpress*>(w.get());
    RP_ENFORCE(rw != nullptr, InternalError, "staged op without a ringpress Work");
    rw->set_device_outputs(std::move(outs));
    return w;
  }
};

// ------------------------------------------------------------------ reductions
struct Reduction {
  DType dtype = DType::kF32;
  ReduceOp op = ReduceOp::kSum;
  bool complex = false;  // reduce the float view of a complex tensor (sum / avg)
  RedOp::RedOpType bitwise = RedOp::UNUSED;  // BAND/BOR/BXOR: gather and fold (integers, bool)
  std::optional<double> premul;              // PREMUL_SUM: scale by this, then sum
  at::Tensor premul_tensor;
};

const char* op_name(RedOp::RedOpType op) {
  switch (op) {
    case RedOp::SUM: return "SUM";
    case RedOp::AVG: return "AVG";
    case RedOp::PRODUCT: return "PRODUCT";
    case RedOp::MIN: return "MIN";
    case RedOp::MAX: return "MAX";
    case RedOp::BAND: return "BAND";
    case RedOp::BOR: return "BOR";
    case RedOp::BXOR: return "BXOR";
    case RedOp::PREMUL_SUM: return "PREMUL_SUM";
    default: return "UNUSED";
  }
}

std::optional<DType> numeric_dtype(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return DType::kF32;
    case at::kDouble: return DType::kF64;
    case at::kHalf: return DType::kF16;
    case at::kBFloat16: return DType::kBF16;
    case at::kInt: return DType::kI32;
    case at::kLong: return DType::kI64;
    case at::kByte: return DType::kU8;
    case at::kChar: return DType::kI8;
    case at::kShort: return DType::kI16;
    case at::kUInt16: return DType::kU16;
    case at::kUInt32: return DType::kU32;
    case at::kUInt64: return DType::kU64;
    default: return std::nullopt;
  }
}

Reduction reduction(const at::Tensor& t, const RedOp& rop) {
  const RedOp::RedOpType op = rop.op_;
  const at::ScalarType st = t.scalar_type();
  Reduction r;
  if (op == RedOp::BAND || op == RedOp::BOR || op == RedOp::BXOR) {
    RP_ENFORCE(at::isIntegralType(st, /*includeBool=*/true), UsageError, "reduce op ", op_name(op),
               " needs an integer or bool tensor, got ", st);
    r.bitwise = op;
    return r;
  }
  if (st == at::kBool) {
    // 0/1 bytes: logical or as max, logical and as min.
    RP_ENFORCE(op != RedOp::AVG && op != RedOp::PREMUL_SUM, UsageError, "reduce op ", op_name(op),
               " is not defined for bool tensors (SUM/MAX/BOR: or, PRODUCT/MIN/BAND: and)");
    r.dtype = DType::kU8;
    r.op = (op == RedOp::SUM || op == RedOp::MAX) ? ReduceOp::kMax : ReduceOp::kMin;
    return r;
  }
  if (at::isComplexType(st)) {
    RP_ENFORCE(op == RedOp::SUM || op == RedOp::AVG, UsageError, "reduce op ", op_name(op),
               " is not defined for complex tensors (SUM and AVG are)");
    r.complex = true;
    r.dtype = st == at::kComplexDouble ? DType::kF64 : DType::kF32;
    RP_ENFORCE(st == at::kComplexFloat || st == at::kComplexDouble, UsageError,
               "complex reductions take complex64 and complex128, got ", st);
    r.op = op == RedOp::AVG ? ReduceOp::kAvg : ReduceOp::kSum;
    return r;
  }
  const auto d = numeric_dtype(st);
  RP_ENFORCE(d.has_value() && reduce_supported(*d), UsageError, "dtype ", st,
             " cannot be reduced (reductions take float32/64, float16, bfloat16, int8/16/32/64, "
             "uint8, bool, complex64/128; other dtypes move through byte-moving ops)");
  r.dtype = *d;
  switch (op) {
    case RedOp::SUM: r.op = ReduceOp::kSum; break;
    case RedOp::AVG: r.op = ReduceOp::kAvg; break;
    case RedOp::PRODUCT: r.op = ReduceOp::kProd; break;
    case RedOp::MIN: r.op = ReduceOp::kMin; break;
    case RedOp::MAX: r.op = ReduceOp::kMax; break;
    case RedOp::PREMUL_SUM: {
      RP_ENFORCE(at::isFloatingType(st), UsageError, "PREMUL_SUM needs a floating tensor, got ",
                 st);
      auto* sup = dynamic_cast<c10d::PreMulSumSupplement*>(rop.supplement_.get());
      RP_ENFORCE(sup != nullptr, UsageError, "PREMUL_SUM without its factor");
      if (sup->tensor_factor.defined()) {
        r.premul_tensor = sup->tensor_factor.to(at::kCPU);
      } else {
        r.premul = sup->double_factor;
      }
      r.op = ReduceOp::kSum;
      break;
    }
    default: RP_THROW(UsageError, "reduce op ", op_name(op), " is not supported");
  }
  return r;
}

// The buffer the engine reduces: the float view of a complex tensor, premultiplied for
// PREMUL_SUM (in place on the staged copy: the tensor is overwritten by the result anyway).
at::Tensor reduce_view(const Staged& s, const Reduction& r) {
  at::Tensor b = r.complex ? at::view_as_real(s.host) : s.host;
  if (r.premul) b.mul_(*r.premul);
  if (r.premul_tensor.defined()) b.mul_(r.premul_tensor);
  return b;
}

// Bitwise folds of gathered blocks, in rank order (the same on every rank).
void fold_bitwise(RedOp::RedOpType op, const at::Tensor& gathered, const at::Tensor& out) {
  at::Tensor acc = gathered[0].clone();
  for (int64_t p = 1; p < gathered.size(0); ++p) {
    if (op == RedOp::BAND) {
      acc.bitwise_and_(gathered[p]);
    } else if (op == RedOp::BOR) {
      acc.bitwise_or_(gathered[p]);
    } else {
      acc.bitwise_xor_(gathered[p]);
    }
  }
  out.copy_(acc.view(out.sizes()));
}

}  // namespace

// ------------------------------------------------------------------ life cycle
namespace {
// The communicators of this process's groups (close_all).
std::mutex& live_mu() {
  static std::mutex mu;
  return mu;
}
std::vector<std::weak_ptr<Communicator>>& live_comms() {
  static auto* live = new std::vector<std::weak_ptr<Communicator>>();  // never destroyed: exit-safe
  return *live;
}
}  // namespace

struct ProcessGroupRingpress::Batch {
  std::vector<PeerMessage> msgs;
  std::vector<Staged> outs;  // receives to copy back
  std::vector<at::Tensor> tensors;
  std::vector<c10::intrusive_ptr<WorkRingpress>> works;
};

ProcessGroupRingpress::ProcessGroupRingpress(const c10::intrusive_ptr<c10d::Store>& store, int rank,
                                             int size, std::chrono::milliseconds timeout)
    : c10d::Backend(rank, size), timeout_(timeout) {
  CommOptions o;
  o.context.rank = rank;
  o.context.size = size;
  o.context.timeout = timeout;
  comm_ = std::make_shared<Communicator>(
      std::make_shared<PrefixStore>("ringpress/torch", std::make_shared<TorchStore>(store)), o);
  std::lock_guard<std::mutex> g(live_mu());
  auto& live = live_comms();
  live.erase(std::remove_if(live.begin(), live.end(), [](const auto& w) { return w.expired(); }),
             live.end());
  live.push_back(comm_);
}

void ProcessGroupRingpress::close_all() {
  std::vector<std::weak_ptr<Communicator>> live;
  {
    std::lock_guard<std::mutex> g(live_mu());
    live = live_comms();
  }
  for (auto& w : live) {
    if (auto comm = w.lock()) {
      try {
        comm->close();
      } catch (const std::exception&) {
        // Nothing to report to at exit.
      }
    }
  }
}

ProcessGroupRingpress::~ProcessGroupRingpress() {
  try {
    comm_->close();
  } catch (...) {
  }
}

c10::intrusive_ptr<c10d::Backend::Options> ProcessGroupRingpress::getBackendOptions() {
  return c10::make_intrusive<Options>("ringpress", comm_->timeout());
}

c10::intrusive_ptr<c10d::Backend> ProcessGroupRingpress::split(
    const c10::intrusive_ptr<c10d::Store>& store, const std::vector<int>& ranks,
    const c10::intrusive_ptr<Options>& opts) {
  ScopedErrorContext ec("split_group", rank_);
  const auto me = std::find(ranks.begin(), ranks.end(), rank_);
  if (me == ranks.end()) return nullptr;
  // The same split for the group's next device type (process_group.h): one backend serves both.
  if (store.get() == split_store_ && ranks == split_ranks_) {
    if (auto made = split_made_.lock()) return made;
  }
  std::string name = "split";
  for (int r : ranks) {
    RP_ENFORCE(r >= 0 && r < size_, UsageError, "split_group: rank ", r, " is not a rank of ",
               size_);
    name += "_" + std::to_string(r);
  }
  const auto timeout = opts ? opts->timeout : comm_->timeout();
  auto made = c10::make_intrusive<ProcessGroupRingpress>(
      c10::make_intrusive<c10d::PrefixStore>(name, store), static_cast<int>(me - ranks.begin()),
      static_cast<int>(ranks.size()), timeout);
  split_store_ = store.get();
  split_ranks_ = ranks;
  split_made_ = c10::weak_intrusive_ptr<c10d::Backend>(
      c10::static_intrusive_pointer_cast<c10d::Backend>(made));
  return made;
}

void ProcessGroupRingpress::setTimeout(std::chrono::milliseconds timeout) {
  comm_->set_timeout(timeout);
}

void ProcessGroupRingpress::shutdown() {
  comm_->close();
}
void ProcessGroupRingpress::abort() {
  comm_->close();
}

// ------------------------------------------------------------------ reductions
c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::allreduce(
    Tensors& tensors, const c10d::AllreduceOptions& opts) {
  ScopedErrorContext ec("all_reduce", rank_);
  if (tensors.size() == 1 && on_device(tensors[0])) {
    DeviceStage ds;
    std::vector<at::Tensor> host{ds.host(tensors[0], true, true)};
    ds.before(*comm_);
    return ds.after(allreduce(host, opts));
  }
  check_tensors(tensors);
  if (tensors.size() > 1) {
    c10d::AllreduceCoalescedOptions co;
    co.reduceOp = opts.reduceOp;
    return allreduce_coalesced(tensors, co);
  }
  const at::Tensor& t = tensors[0];
  const Reduction red = reduction(t, opts.reduceOp);
  std::shared_ptr<ringpress::Work> core;
  if (red.bitwise != RedOp::UNUSED) {
    Staged in = stage(t, true);
    at::Tensor gathered =
        at::empty({size_, t.numel()}, t.options().memory_format(at::MemoryFormat::Contiguous));
    core =
        comm_->allgather(in.host.data_ptr(), gathered.data_ptr(),
                         std::vector<std::size_t>(size_, nbytes(t)), DType::kBytes, opts.asyncOp);
    core->hold(keep({in.host, gathered, t}));
    core->finish_with([op = red.bitwise, gathered, t] { fold_bitwise(op, gathered, t); });
  } else {
    Staged s = stage(t, true);
    at::Tensor b = reduce_view(s, red);
    core = comm_->allreduce(b.data_ptr(), b.numel(), red.dtype, red.op, opts.asyncOp);
    core->hold(keep({s.host, t}));
    copy_back(*core, {s});
  }
  return WorkRingpress::create(rank_, OpType::ALLREDUCE, "ringpress:all_reduce", core, tensors,
                               tensors);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::allreduce_coalesced(
    Tensors& tensors, const c10d::AllreduceCoalescedOptions& opts) {
  ScopedErrorContext ec("all_reduce_coalesced", rank_);
  check_tensors(tensors);
  const Reduction red = reduction(tensors[0], opts.reduceOp);
  bool fusable =
      red.bitwise == RedOp::UNUSED && !red.complex && !red.premul && !red.premul_tensor.defined();
  for (const auto& t : tensors) {
    fusable = fusable && t.scalar_type() == tensors[0].scalar_type();
  }
  if (!fusable) {
    // One request per tensor, in order; the last one's completion means all are done.
    std::shared_ptr<ringpress::Work> last;
    c10d::AllreduceOptions one;
    one.reduceOp = opts.reduceOp;
    c10::intrusive_ptr<c10d::Work> w;
    for (auto& t : tensors) {
      std::vector<at::Tensor> single{t};
      w = allreduce(single, one);
    }
    return w;  // requests complete in queue order: the last one done means all are
  }
  std::vector<Staged> staged;
  std::vector<std::pair<void*, std::size_t>> bufs;
  std::vector<at::Tensor> held;
  for (const auto& t : tensors) {
    staged.push_back(stage(t, true));
    bufs.emplace_back(staged.back().host.data_ptr(), static_cast<std::size_t>(t.numel()));
    held.push_back(staged.back().host);
    held.push_back(t);
  }
  auto core = comm_->allreduce_coalesced(std::move(bufs), red.dtype, red.op, opts.asyncOp);
  core->hold(keep(std::move(held)));
  copy_back(*core, std::move(staged));
  return WorkRingpress::create(rank_, OpType::ALLREDUCE_COALESCED, "ringpress:all_reduce_coalesced",
                               core, tensors, tensors);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::reduce(Tensors& tensors,
                                                             const c10d::ReduceOptions& opts) {
  ScopedErrorContext ec("reduce", rank_);
  check_tensors(tensors, 1);
  const int root = static_cast<int>(opts.rootRank);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "reduce root ", root, " is not a rank of ",
             size_);
  const at::Tensor& t = tensors[0];
  const Reduction red = reduction(t, opts.reduceOp);
  RP_ENFORCE(red.bitwise == RedOp::UNUSED, UsageError, "reduce with ", op_name(red.bitwise),
             " is not supported (all_reduce takes it)");
  // Reduce-scatter, then gather the reduced blocks straight into the root's tensor: n (P-1)/P
  // bytes sent per rank, then n/P, about half what an allreduce moves.
  Staged s = stage(t, true);
  if ((red.premul || red.premul_tensor.defined()) && !s.copied()) {
    s.host = t.clone();  // premultiplied: a copy, since the ranks that are not the root keep t
  }
  at::Tensor b = reduce_view(s, red).reshape({-1});
  const std::size_t n = static_cast<std::size_t>(b.numel());
  const std::size_t es = static_cast<std::size_t>(b.element_size());
  std::vector<std::size_t> counts(static_cast<std::size_t>(size_), n / size_);
  for (std::size_t p = 0; p < n % static_cast<std::size_t>(size_); ++p) ++counts[p];
  at::Tensor mine = at::empty({static_cast<int64_t>(counts[rank_])}, b.options());
  comm_->reduce_scatter(b.data_ptr(), mine.data_ptr(), counts, red.dtype, red.op, opts.asyncOp)
      ->hold(keep({s.host, mine, t}));
  std::vector<std::pair<void*, std::size_t>> outs;
  if (rank_ == root) {
    auto* base = static_cast<unsigned char*>(b.data_ptr());
    std::size_t off = 0;
    for (std::size_t c : counts) {
      outs.emplace_back(base + off * es, c);
      off += c;
    }
  }
  auto core =
      comm_->gather(mine.data_ptr(), counts[rank_], std::move(outs), red.dtype, root, opts.asyncOp);
  core->hold(keep({mine, s.host, t}));
  if (rank_ == root) copy_back(*core, {s});
  return WorkRingpress::create(rank_, OpType::REDUCE, "ringpress:reduce", core, tensors, tensors);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::reduce_scatter(
    Tensors& outputs, std::vector<Tensors>& inputs, const c10d::ReduceScatterOptions& opts) {
  ScopedErrorContext ec("reduce_scatter", rank_);
  check_tensors(outputs, 1);
  RP_ENFORCE_EQ(inputs.size(), std::size_t{1}, UsageError, "input lists");
  check_tensors(inputs[0], static_cast<std::size_t>(size_));
  const at::Tensor& out = outputs[0];
  for (const auto& i : inputs[0]) {
    RP_ENFORCE(i.numel() == out.numel() && i.scalar_type() == out.scalar_type(), UsageError,
               "every input must match the output's ", out.numel(), " ", out.scalar_type(),
               ", got ", i.numel(), " ", i.scalar_type());
  }
  std::vector<at::Tensor> flat;
  for (const auto& i : inputs[0]) flat.push_back(i.reshape({-1}));
  at::Tensor in = at::cat(flat);
  return _reduce_scatter_base(outputs[0], in, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  ScopedErrorContext ec("reduce_scatter_tensor", rank_);
  if (on_device(input) || on_device(output)) {
    DeviceStage ds;
    at::Tensor out = ds.host(output, false, true);
    at::Tensor in = ds.host(input, true, false);
    ds.before(*comm_);
    return ds.after(_reduce_scatter_base(out, in, opts));
  }
  check_tensor(output);
  check_tensor(input);
  RP_ENFORCE(input.numel() == output.numel() * size_ && input.scalar_type() == output.scalar_type(),
             UsageError, "the input must hold ", size_, " x ", output.numel(), " ",
             output.scalar_type(), ", got ", input.numel(), " ", input.scalar_type());
  const Reduction red = reduction(output, opts.reduceOp);
  RP_ENFORCE(red.bitwise == RedOp::UNUSED, UsageError, "reduce_scatter with ", op_name(red.bitwise),
             " is not supported (all_reduce takes it)");
  Staged in = stage(input, true);
  // Premultiply a copy: the input is not ours to change.
  Staged src = (red.premul || red.premul_tensor.defined()) && !in.copied()
                   ? Staged{input, input.clone()}
                   : in;
  at::Tensor ib = reduce_view(src, red);
  Staged out = stage(output, false);
  at::Tensor ob = red.complex ? at::view_as_real(out.host) : out.host;
  const std::size_t per = static_cast<std::size_t>(ob.numel());
  auto core =
      comm_->reduce_scatter(ib.data_ptr(), ob.data_ptr(), std::vector<std::size_t>(size_, per),
                            red.dtype, red.op, opts.asyncOp);
  core->hold(keep({src.host, out.host, output, input}));
  copy_back(*core, {out});
  std::vector<at::Tensor> outs{output};
  return WorkRingpress::create(rank_, OpType::_REDUCE_SCATTER_BASE, "ringpress:reduce_scatter",
                               core, outs, std::vector<at::Tensor>{input});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::reduce_scatter_tensor_coalesced(
    Tensors& outputs, Tensors& inputs, const c10d::ReduceScatterOptions& opts) {
  ScopedErrorContext ec("reduce_scatter_tensor_coalesced", rank_);
  RP_ENFORCE_EQ(outputs.size(), inputs.size(), UsageError, "outputs and inputs");
  c10::intrusive_ptr<c10d::Work> w;
  for (std::size_t i = 0; i < outputs.size(); ++i)
    w = _reduce_scatter_base(outputs[i], inputs[i], opts);
  if (!w) return WorkRingpress::create(rank_, OpType::COALESCED, nullptr, nullptr, outputs);
  return w;
}

// ------------------------------------------------------------------ byte movers
c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::broadcast(
    Tensors& tensors, const c10d::BroadcastOptions& opts) {
  ScopedErrorContext ec("broadcast", rank_);
  if (tensors.size() == 1 && on_device(tensors[0])) {
    DeviceStage ds;
    std::vector<at::Tensor> host{ds.host(tensors[0], rank_ == opts.rootRank, true)};
    ds.before(*comm_);
    return ds.after(broadcast(host, opts));
  }
  check_tensors(tensors);
  const int root = static_cast<int>(opts.rootRank);
  RP_ENFORCE(opts.rootTensor == 0, UsageError, "rootTensor must be 0");
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "broadcast root ", root, " is not a rank of ",
             size_);
  std::shared_ptr<ringpress::Work> core;
  for (const auto& t : tensors) {
    Staged s = stage(t, rank_ == root);
    core = comm_->broadcast(s.host.data_ptr(), nbytes(t), DType::kBytes, root, opts.asyncOp);
    core->hold(keep({s.host, t}));
    copy_back(*core, {s});
  }
  return WorkRingpress::create(rank_, OpType::BROADCAST, "ringpress:broadcast", core, tensors,
                               tensors);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::allgather(
    std::vector<Tensors>& outputs, Tensors& inputs, const c10d::AllgatherOptions& opts) {
  ScopedErrorContext ec("all_gather", rank_);
  check_tensors(inputs);
  RP_ENFORCE_EQ(outputs.size(), inputs.size(), UsageError, "output lists");
  std::shared_ptr<ringpress::Work> core;
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    const at::Tensor& in = inputs[i];
    check_tensors(outputs[i], static_cast<std::size_t>(size_));
    for (const auto& o : outputs[i]) {
      RP_ENFORCE(o.numel() == in.numel() && o.scalar_type() == in.scalar_type(), UsageError,
                 "every output must match the input's ", in.numel(), " ", in.scalar_type(),
                 ", got ", o.numel(), " ", o.scalar_type());
    }
    Staged s = stage(in, true);
    at::Tensor flat = at::empty({static_cast<int64_t>(nbytes(in) * size_)}, at::kByte);
    core =
        comm_->allgather(s.host.data_ptr(), flat.data_ptr(),
                         std::vector<std::size_t>(size_, nbytes(in)), DType::kBytes, opts.asyncOp);
    core->hold(keep({s.host, flat, in}));
    core->finish_with([flat, outs = outputs[i]] {
      for (std::size_t p = 0; p < outs.size(); ++p) outs[p].copy_(block_as(flat, p, outs[p]));
    });
  }
  std::vector<at::Tensor> all;
  for (auto& l : outputs) all.insert(all.end(), l.begin(), l.end());
  return WorkRingpress::create(rank_, OpType::ALLGATHER, "ringpress:all_gather", core, all, inputs);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::_allgather_base(
    at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& opts) {
  ScopedErrorContext ec("all_gather_into_tensor", rank_);
  if (on_device(input) || on_device(output)) {
    DeviceStage ds;
    at::Tensor out = ds.host(output, false, true);
    at::Tensor in = ds.host(input, true, false);
    ds.before(*comm_);
    return ds.after(_allgather_base(out, in, opts));
  }
  check_tensor(output);
  check_tensor(input);
  RP_ENFORCE(output.numel() == input.numel() * size_ && output.scalar_type() == input.scalar_type(),
             UsageError, "the output must hold ", size_, " x ", input.numel(), " ",
             input.scalar_type(), ", got ", output.numel(), " ", output.scalar_type());
  Staged in = stage(input, true);
  Staged out = stage(output, false);
  auto core =
      comm_->allgather(in.host.data_ptr(), out.host.data_ptr(),
                       std::vector<std::size_t>(size_, nbytes(input)), DType::kBytes, opts.asyncOp);
  core->hold(keep({in.host, out.host, input, output}));
  copy_back(*core, {out});
  return WorkRingpress::create(rank_, OpType::_ALLGATHER_BASE, "ringpress:all_gather_into_tensor",
                               core, std::vector<at::Tensor>{output},
                               std::vector<at::Tensor>{input});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::allgather_coalesced(
    std::vector<Tensors>& outputs, Tensors& inputs, const c10d::AllgatherOptions& opts) {
  return allgather(outputs, inputs, opts);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::allgather_into_tensor_coalesced(
    Tensors& outputs, Tensors& inputs, const c10d::AllgatherOptions& opts) {
  ScopedErrorContext ec("all_gather_into_tensor_coalesced", rank_);
  RP_ENFORCE_EQ(outputs.size(), inputs.size(), UsageError, "outputs and inputs");
  c10::intrusive_ptr<c10d::Work> w;
  for (std::size_t i = 0; i < outputs.size(); ++i) w = _allgather_base(outputs[i], inputs[i], opts);
  if (!w) return WorkRingpress::create(rank_, OpType::COALESCED, nullptr, nullptr, outputs);
  return w;
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::gather(std::vector<Tensors>& outputs,
                                                             Tensors& inputs,
                                                             const c10d::GatherOptions& opts) {
  ScopedErrorContext ec("gather", rank_);
  check_tensors(inputs, 1);
  const int root = static_cast<int>(opts.rootRank);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "gather root ", root, " is not a rank of ",
             size_);
  const at::Tensor& in = inputs[0];
  std::vector<at::Tensor> outs;
  std::vector<Staged> staged;
  std::vector<std::pair<void*, std::size_t>> bufs;
  std::vector<at::Tensor> held;
  if (rank_ == root) {
    RP_ENFORCE_EQ(outputs.size(), std::size_t{1}, UsageError, "output lists on the root");
    outs = outputs[0];
    check_tensors(outs, static_cast<std::size_t>(size_));
    for (const auto& o : outs) {
      RP_ENFORCE(o.numel() == in.numel() && o.scalar_type() == in.scalar_type(), UsageError,
                 "every output must match the input's ", in.numel(), " ", in.scalar_type(),
                 ", got ", o.numel(), " ", o.scalar_type());
      staged.push_back(stage(o, false));  // each block lands in its tensor, copied if strided
      bufs.emplace_back(staged.back().host.data_ptr(), nbytes(o));
      held.push_back(staged.back().host);
    }
  } else {
    RP_ENFORCE(outputs.empty() || outputs[0].empty(), UsageError, "only the root (rank ", root,
               ") passes a gather list");
  }
  Staged s = stage(in, true);
  held.push_back(s.host);
  auto core = comm_->gather(s.host.data_ptr(), nbytes(in), std::move(bufs), DType::kBytes, root,
                            opts.asyncOp);
  core->hold(keep(held));
  copy_back(*core, std::move(staged));
  return WorkRingpress::create(rank_, OpType::GATHER, "ringpress:gather", core, outs, inputs);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::scatter(Tensors& outputs,
                                                              std::vector<Tensors>& inputs,
                                                              const c10d::ScatterOptions& opts) {
  ScopedErrorContext ec("scatter", rank_);
  check_tensors(outputs, 1);
  const int root = static_cast<int>(opts.rootRank);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "scatter root ", root, " is not a rank of ",
             size_);
  const at::Tensor& out = outputs[0];
  std::vector<std::pair<const void*, std::size_t>> bufs;
  std::vector<at::Tensor> held;
  if (rank_ == root) {
    RP_ENFORCE_EQ(inputs.size(), std::size_t{1}, UsageError, "input lists on the root");
    check_tensors(inputs[0], static_cast<std::size_t>(size_));
    for (const auto& i : inputs[0]) {
      RP_ENFORCE(i.numel() == out.numel() && i.scalar_type() == out.scalar_type(), UsageError,
                 "every input must match the output's ", out.numel(), " ", out.scalar_type(),
                 ", got ", i.numel(), " ", i.scalar_type());
      held.push_back(i.contiguous());  // the tensor itself when it already is
      bufs.emplace_back(held.back().data_ptr(), nbytes(i));
    }
  } else {
    RP_ENFORCE(inputs.empty() || inputs[0].empty(), UsageError, "only the root (rank ", root,
               ") passes a scatter list");
  }
  Staged s = stage(out, false);
  held.push_back(s.host);
  held.push_back(out);
  auto core = comm_->scatter(std::move(bufs), s.host.data_ptr(), nbytes(out), DType::kBytes, root,
                             opts.asyncOp);
  core->hold(keep(held));
  copy_back(*core, {s});
  return WorkRingpress::create(rank_, OpType::SCATTER, "ringpress:scatter", core, outputs);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::alltoall_base(
    at::Tensor& output, at::Tensor& input, std::vector<int64_t>& output_split_sizes,
    std::vector<int64_t>& input_split_sizes, const c10d::AllToAllOptions& opts) {
  ScopedErrorContext ec("all_to_all_single", rank_);
  check_tensor(output);
  check_tensor(input);
  RP_ENFORCE(output.scalar_type() == input.scalar_type(), UsageError,
             "input and output dtypes differ: ", input.scalar_type(), " vs ", output.scalar_type());
  // Splits count rows (the first dimension); empty splits: equal shares.
  auto counts = [&](const at::Tensor& t, const std::vector<int64_t>& splits, const char* what) {
    const int64_t rows = t.dim() ? t.size(0) : 1;
    const std::size_t row_bytes = rows ? nbytes(t) / static_cast<std::size_t>(rows) : 0;
    std::vector<std::size_t> c(size_);
    if (splits.empty()) {
      RP_ENFORCE(rows % size_ == 0, UsageError, what, ": ", rows, " rows do not split evenly over ",
                 size_, " ranks");
      for (auto& x : c) x = static_cast<std::size_t>(rows / size_) * row_bytes;
    } else {
      RP_ENFORCE_EQ(splits.size(), static_cast<std::size_t>(size_), UsageError, what,
                    " split sizes");
      int64_t sum = 0;
      for (int p = 0; p < size_; ++p) {
        RP_ENFORCE(splits[p] >= 0, UsageError, what, " split ", p, " is negative");
        sum += splits[p];
        c[p] = static_cast<std::size_t>(splits[p]) * row_bytes;
      }
      RP_ENFORCE_EQ(sum, rows, UsageError, what, " splits must add up to the tensor's rows");
    }
    return c;
  };
  auto send = counts(input, input_split_sizes, "input");
  auto recv = counts(output, output_split_sizes, "output");
  Staged in = stage(input, true);
  Staged out = stage(output, false);
  auto core = comm_->alltoall(in.host.data_ptr(), out.host.data_ptr(), std::move(send),
                              std::move(recv), DType::kBytes, opts.asyncOp);
  core->hold(keep({in.host, out.host, input, output}));
  copy_back(*core, {out});
  return WorkRingpress::create(rank_, OpType::ALLTOALL_BASE, "ringpress:all_to_all_single", core,
                               std::vector<at::Tensor>{output}, std::vector<at::Tensor>{input});
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::alltoall(Tensors& outputs, Tensors& inputs,
                                                               const c10d::AllToAllOptions& opts) {
  ScopedErrorContext ec("all_to_all", rank_);
  check_tensors(outputs, static_cast<std::size_t>(size_));
  check_tensors(inputs, static_cast<std::size_t>(size_));
  std::vector<std::size_t> send(size_), recv(size_);
  std::vector<at::Tensor> parts;
  for (int p = 0; p < size_; ++p) {
    RP_ENFORCE(inputs[p].scalar_type() == outputs[p].scalar_type(), UsageError, "input and output ",
               p, " dtypes differ");
    send[p] = nbytes(inputs[p]);
    recv[p] = nbytes(outputs[p]);
    parts.push_back(bytes_of(inputs[p].contiguous()));
  }
  at::Tensor in = at::cat(parts);
  std::size_t total = 0;
  for (auto r : recv) total += r;
  at::Tensor flat = at::empty({static_cast<int64_t>(total)}, at::kByte);
  auto core =
      comm_->alltoall(in.data_ptr(), flat.data_ptr(), send, recv, DType::kBytes, opts.asyncOp);
  core->hold(keep({in, flat}));
  core->finish_with([flat, outs = outputs, recv] {
    std::size_t off = 0;
    for (std::size_t p = 0; p < outs.size(); ++p) {
      outs[p].copy_(flat.narrow(0, static_cast<int64_t>(off), static_cast<int64_t>(recv[p]))
                        .view(outs[p].scalar_type())
                        .view(outs[p].sizes()));
      off += recv[p];
    }
  });
  return WorkRingpress::create(rank_, OpType::ALLTOALL, "ringpress:all_to_all", core, outputs,
                               inputs);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::barrier(const c10d::BarrierOptions& opts) {
  ScopedErrorContext ec("barrier", rank_);
  auto core = comm_->barrier(opts.asyncOp);
  return WorkRingpress::create(rank_, OpType::BARRIER, "ringpress:barrier", core, {});
}

// ------------------------------------------------------------------ point-to-point
c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::p2p(Tensors& tensors, int peer, int tag,
                                                          bool send) {
  check_tensors(tensors, 1);
  RP_ENFORCE(peer >= 0 && peer < size_ && peer != rank_, UsageError, "peer ", peer,
             " is not another rank of ", size_);
  RP_ENFORCE(tag >= 0, UsageError, "tags must be non-negative, got ", tag);
  const at::Tensor& t = tensors[0];
  Staged s = stage(t, send);
  PeerMessage m;
  m.send = send;
  m.peer = peer;
  m.data = s.host.data_ptr();
  m.bytes = nbytes(t);
  m.tag = static_cast<std::uint32_t>(tag);
  const OpType type = send ? OpType::SEND : OpType::RECV;
  if (batch_) {
    batch_->msgs.push_back(m);
    batch_->tensors.push_back(s.host);
    batch_->tensors.push_back(t);
    if (!send) batch_->outs.push_back(s);
    auto w = WorkRingpress::pending(rank_, type, tensors);
    batch_->works.push_back(w);
    return w;
  }
  auto core = comm_->point_to_point({m}, true);
  core->hold(keep({s.host, t}));
  if (!send) copy_back(*core, {s});
  return WorkRingpress::create(rank_, type, send ? "ringpress:send" : "ringpress:recv", core,
                               tensors, tensors);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::send(Tensors& tensors, int dst, int tag) {
  ScopedErrorContext ec("send", rank_);
  return p2p(tensors, dst, tag, true);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::recv(Tensors& tensors, int src, int tag) {
  ScopedErrorContext ec("recv", rank_);
  return p2p(tensors, src, tag, false);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::recvAnysource(Tensors& tensors, int tag) {
  ScopedErrorContext ec("recv_anysource", rank_);
  RP_THROW(UsageError,
           "receiving from any source is not supported: ringpress matches point-to-point "
           "messages per pair in posting order; name the source rank");
}

void ProcessGroupRingpress::startCoalescing() {
  ScopedErrorContext ec("start_coalescing", rank_);
  RP_ENFORCE(!batch_, UsageError, "a coalescing block is already open");
  batch_ = std::make_unique<Batch>();
}

c10::intrusive_ptr<c10d::Work> ProcessGroupRingpress::endCoalescing() {
  ScopedErrorContext ec("end_coalescing", rank_);
  RP_ENFORCE(batch_ != nullptr, UsageError, "no coalescing block is open");
  std::unique_ptr<Batch> b = std::move(batch_);
  std::vector<at::Tensor> outs;
  for (auto& s : b->outs) outs.push_back(s.user);
  if (b->msgs.empty()) {
    return WorkRingpress::create(rank_, OpType::COALESCED, nullptr, nullptr, outs);
  }
  auto core = comm_->point_to_point(std::move(b->msgs), true);
  core->hold(keep(std::move(b->tensors)));
  copy_back(*core, std::move(b->outs));
  for (auto& w : b->works) w->attach(core);
  return WorkRingpress::create(rank_, OpType::COALESCED, "ringpress:coalesced", core, outs);
}

// ------------------------------------------------------------------ compressed (DDP hook)
c10::intrusive_ptr<c10::ivalue::Future> ProcessGroupRingpress::allreduce_bucket(
    const at::Tensor& bucket, ReduceOp op, const CompressionOptions& compression,
    const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& velocity,
    c10::IValue value, c10::TypePtr type) {
  ScopedErrorContext ec("ddp_bucket", rank_);
  // A device bucket is reduced in pinned host memory (DeviceStage) and copied back when done;
  // the future then carries the device, so its users' streams wait for that copy.
  DeviceStage ds;
  const at::Tensor host = on_device(bucket) ? ds.host(bucket, true, true) : bucket;
  check_tensor(host);
  RP_ENFORCE(host.is_contiguous(), UsageError, "the bucket must be contiguous");
  const auto d = numeric_dtype(host.scalar_type());
  RP_ENFORCE(d.has_value(), UsageError, "dtype ", host.scalar_type(), " cannot be reduced");
  auto check_f32 = [&](const at::Tensor& t, const char* what) {
    check_tensor(t);
    RP_ENFORCE(t.scalar_type() == at::kFloat && t.is_contiguous() && t.numel() == bucket.numel(),
               UsageError, "the ", what, " must be a contiguous float32 tensor of ", bucket.numel(),
               " elements");
  };
  float* r = nullptr;
  std::vector<at::Tensor> held{bucket};
  if (residual && residual->defined()) {
    check_f32(*residual, "residual");
    r = residual->data_ptr<float>();
    held.push_back(*residual);
  }
  ds.before(*comm_);
  auto core = comm_->allreduce(host.data_ptr(), host.numel(), *d, op, true, compression, r);
  held.push_back(host);
  core->hold(keep(held));
  if (velocity && velocity->defined() && r && compression.kind == WireCompression::kTopK) {
    check_f32(*velocity, "velocity");
    // Momentum correction: the entries top-k sent restart their velocity at zero.
    core->finish_with([v = *velocity, res = *residual] { v.masked_fill_(res == 0, 0.0); });
  }
  std::vector<c10::Device> devices;
  if (on_device(bucket)) devices.push_back(bucket.device());
  auto fut = c10::make_intrusive<c10::ivalue::Future>(std::move(type), devices);
  core->on_complete([fut, value = std::move(value), bucket, host](ringpress::Work& w) {
    std::exception_ptr err = w.exception();
    if (!err && !host.is_same(bucket)) {
      try {
        // On this thread's current stream; markCompleted records the future's events after it.
        bucket.copy_(host, /*non_blocking=*/true);
      } catch (...) {
        err = std::current_exception();
      }
    }
    if (err) {
      fut->setError(torch_error(err));
    } else {
      fut->markCompleted(value);
    }
  });
  return fut;
}

}  // namespace ringpress::torchpg

// Communicator: the engine's request queue and worker thread, argument checks, fusion, close.
// Contract in engine.h.
//
// Ownership and locking: mu_ guards queue_, busy_, stop_, closed_, next_seq_, broken_error_ and
// stats_. The transport Context is used by exactly one thread at a time: whoever set busy_ (the
// worker, or a caller running a synchronous request inline while the engine was idle).
#include <pthread.h>
#include <unistd.h>

#include <cstring>

#include "ringpress/auto_select.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/engine.h"
#include "ringpress/env.h"
#include "ringpress/fault.h"

namespace ringpress {

namespace {
// Counts fork()s that made this process (a pthread_atfork child handler): a communicator
// remembers the count it was made under, and a differing count means "a forked child", checked
// with one relaxed load per request where getpid() would cost a system call.
std::atomic<unsigned> g_forks{0};
unsigned fork_generation() {
  static const bool registered = [] {
    pthread_atfork(nullptr, nullptr, [] { g_forks.fetch_add(1, std::memory_order_relaxed); });
    return true;
  }();
  (void)registered;
  return g_forks.load(std::memory_order_relaxed);
}

}  // namespace

namespace {
std::size_t total_count(const std::vector<std::size_t>& counts) {
  std::size_t total = 0;
  for (auto c : counts) total += c;
  return total;
}

// Argument > environment > default (env.h); one timeout variable for the rendezvous and ops.
CommOptions normalized(CommOptions o) {
  env::check_retired();
  o.context.timeout = env::pick(o.context.timeout, "RINGPRESS_TIMEOUT");
  if (o.op_timeout.count() <= 0) o.op_timeout = o.context.timeout;
  if (o.timeline_path.empty()) {
    if (const auto t = env::raw("RINGPRESS_TIMELINE")) {
      o.timeline_path = *t + "." + std::to_string(o.context.rank) + ".json";
    }
  }
  return o;
}
}  // namespace

Communicator::Communicator(std::shared_ptr<Store> store, const CommOptions& opts)
    : opts_(normalized(opts)), auto_(std::make_shared<autosel::AutoState>()) {
  store_ = store;
  start(Context::create(std::move(store), opts_.context));
}

Communicator::Communicator(std::unique_ptr<Context> ctx, std::shared_ptr<Store> store,
                           const CommOptions& opts)
    : opts_(opts), auto_(std::make_shared<autosel::AutoState>()) {
  store_ = std::move(store);
  start(std::move(ctx));
}

void Communicator::start(std::unique_ptr<Context> ctx) {
  op_timeout_ms_.store(opts_.op_timeout.count(), std::memory_order_relaxed);
  timeline_.enable(!opts_.timeline_path.empty());
  ctx_ = std::move(ctx);
  rank_ = ctx_->rank();
  size_ = ctx_->size();
  single_copy_auto_ = ctx_->options().shm_single_copy == "auto";
  opts_.context.rank = rank_;
  opts_.context.size = size_;
  p2p_sent_.assign(static_cast<std::size_t>(size_), 0);
  p2p_received_.assign(static_cast<std::size_t>(size_), 0);
  worker_ = std::thread([this] { worker_loop(); });
  runner_->comm = this;
  creator_pid_ = getpid();
  fork_generation_ = fork_generation();
}

std::unique_ptr<Communicator> Communicator::join(std::shared_ptr<Store> store,
                                                 const CommOptions& opts) {
  CommOptions o = normalized(opts);
  std::unique_ptr<Context> ctx = Context::join(store, o.context);
  return std::unique_ptr<Communicator>(new Communicator(std::move(ctx), std::move(store), o));
}

std::uint64_t Communicator::epoch() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ctx_ ? ctx_->epoch() : 0;
}

std::vector<int> Communicator::joined() const {
  std::lock_guard<std::mutex> lock(mu_);
  return ctx_ ? ctx_->joined() : std::vector<int>{};
}

std::unique_ptr<Communicator> Communicator::reform(
    const char* what, const std::function<std::unique_ptr<Context>(Context&)>& fn) {
  {
    std::unique_lock<std::mutex> lock(mu_);
    RP_ENFORCE(!closed_, UsageError, what, "() on a closed communicator");
    RP_ENFORCE(getpid() == creator_pid_, UsageError, what, "() in a forked child");
    // Requests already queued run first (on a broken context they fail at once).
    idle_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    busy_ = true;
  }
  auto release = [&] {
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    idle_cv_.notify_all();
    cv_.notify_all();
  };
  std::unique_ptr<Context> next;
  try {
    ScopedErrorContext ec(what, rank_);
    next = fn(*ctx_);
  } catch (...) {
    release();
    throw;
  }
  if (!next) {
    release();
    return nullptr;
  }
  // The old context is retired (its connections dropped): this communicator is done, without
  // the closing barrier (its members are in the new one).
  {
    std::lock_guard<std::mutex> g(runner_->mu);
    runner_->comm = nullptr;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    busy_ = false;
    closed_ = true;
    stop_ = true;
    broken_error_ =
        std::make_exception_ptr(UsageError(ErrorContext{rank_, -1, what},
                                           std::string("this communicator was re-formed by ") +
                                               what + "(): use the communicator it returned",
                                           __FILE__, __LINE__));
  }
  cv_.notify_all();
  idle_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  return std::unique_ptr<Communicator>(new Communicator(std::move(next), store_, opts_));
}

std::unique_ptr<Communicator> Communicator::shrink(std::vector<int>* left_out) {
  const auto timeout = op_timeout();
  return reform("shrink", [&](Context& c) { return c.shrink(timeout, left_out); });
}

std::unique_ptr<Communicator> Communicator::grow(std::vector<int>* left_out) {
  RP_ENFORCE(store_ != nullptr, UsageError, "grow() needs the store the job rendezvoused through");
  const auto timeout = op_timeout();
  // Rank 0 asks the store who waits, admits them, and hands the list to the others (a broadcast
  // of its length, then of the list when there is one): the common case costs one store round
  // trip on rank 0 and one 8-byte broadcast. If a member is lost during the broadcasts, some
  // members raise and shrink while others grow: both re-form the same way, and the list reaches
  // everyone in the agreement (recovery.cc).
  std::string joiners;
  if (rank_ == 0) joiners = ctx_->admit_joiners(*store_);
  std::uint64_t len = joiners.size();
  if (auto w = broadcast(&len, 1, DType::kU64, 0, false)) w->wait();
  if (len == 0) return nullptr;
  fault::hit("grow.list");
  RP_ENFORCE(len <= (64u << 20), TransportError, "a list of joiners of ", len, " bytes");
  joiners.resize(len);
  if (auto w = broadcast(joiners.data(), len, DType::kU8, 0, false)) w->wait();
  return reform("grow", [&](Context& c) { return c.grow(*store_, joiners, timeout, left_out); });
}

Communicator::~Communicator() {
  try {
    close();
  } catch (...) {
  }
  // close() joins the worker; if it failed before that, a joinable std::thread would
  // std::terminate the process here. (The worker runs no user code, so it never closes us.)
  if (worker_.joinable()) worker_.detach();
}

void Communicator::set_timeout(std::chrono::milliseconds timeout) {
  RP_ENFORCE_GT(timeout.count(), 0, UsageError, "the timeout must be positive");
  op_timeout_ms_.store(timeout.count(), std::memory_order_relaxed);
}

std::string Communicator::transport(int peer) const {
  RP_ENFORCE(peer >= 0 && peer < size_, UsageError, "peer ", peer, " is not a rank of ", size_);
  if (peer == rank_) return "self";
  std::lock_guard<std::mutex> lock(mu_);
  RP_ENFORCE(!closed_, UsageError, "the communicator is closed");
  return transport_kind_name(ctx_->kind(peer));
}

std::vector<int> Communicator::hosts() const {
  std::lock_guard<std::mutex> lock(mu_);
  RP_ENFORCE(!closed_, UsageError, "the communicator is closed");
  return ctx_->topology().host;
}

std::uint32_t Communicator::sequence() const {
  std::lock_guard<std::mutex> lock(mu_);
  return next_seq_;
}

bool Communicator::closed() const noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

bool Communicator::broken() const noexcept {
  return ctx_ && ctx_->broken();
}

CommStats Communicator::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  CommStats s = stats_;
  if (ctx_) {  // (a forked child's close() let go of it)
    s.bytes_sent = ctx_->bytes_sent();
    s.bytes_received = ctx_->bytes_received();
    s.tcp_bytes_sent = ctx_->tcp_bytes_sent();
    s.single_copy_bytes = ctx_->single_copy_bytes();
  }
  for (int i = 0; i < static_cast<int>(Stage::kCount); ++i) {
    s.stage_s[static_cast<std::size_t>(i)] =
        static_cast<double>(stages_.ns[static_cast<std::size_t>(i)].load()) * 1e-9;
    s.stage_bytes[static_cast<std::size_t>(i)] = stages_.bytes[static_cast<std::size_t>(i)].load();
  }
  return s;
}

void Communicator::execute(const char* name, std::uint32_t seq, std::uint64_t bytes, Fn& fn,
                           Work& work, Clock::time_point queued, int tid) {
  work.complete(run(name, seq, bytes, call_fn<Fn>, &fn, queued, tid));
}

std::exception_ptr Communicator::run(const char* name, std::uint32_t seq, std::uint64_t bytes,
                                     void (*call)(void*, const OpContext&), void* fn,
                                     Clock::time_point queued, int tid) {
  ScopedErrorContext ec(name, rank_);
  std::exception_ptr err;
  {
    std::lock_guard<std::mutex> lock(mu_);
    err = broken_error_;
  }
  if (!err) {
    auto start = Clock::now();
    if (queued == Clock::time_point{}) queued = start;  // run_now: never queued
    timeline_.add("queued", "engine", tid, queued, start, seq, bytes);
    try {
      TimelineScope scope(&timeline_, name, "op", tid, seq, bytes);
      OpContext oc{*ctx_, seq, start + op_timeout(), timeline_.enabled() ? &timeline_ : nullptr,
                   &stages_};
      ctx_->set_caller_waits(tid == 0);  // the caller's thread runs it (inline or run_until)
      // (Requests below the single-copy threshold are not learned: no policy, no clock read.)
      const bool learn = single_copy_auto_ && bytes >= kSingleCopyMinTotal;
      const bool by_ref = !learn || single_copy_.choose(name, bytes);
      ctx_->set_single_copy(by_ref);
      call(fn, oc);
      if (learn && single_copy_.record(name, bytes, by_ref, Clock::now() - start)) {
        std::lock_guard<std::mutex> lock(mu_);
        stats_.single_copy = single_copy_.settled();
      }
    } catch (const Error& e) {
      ctx_->abort(e);  // no-op if the transport already aborted (and kept the first error)
      err = std::current_exception();
    } catch (const std::exception& e) {
      InternalError ie(ErrorContext{rank_, -1, name}, e.what(), __FILE__, __LINE__);
      ctx_->abort(ie);
      err = std::make_exception_ptr(ie);
    }
    std::lock_guard<std::mutex> lock(mu_);
    ++stats_.ops;
    stats_.payload_bytes += bytes;
    if (err && !broken_error_) broken_error_ = err;
  }
  return err;
}

void Communicator::worker_loop() {
  for (;;) {
    Request req;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock, [&] { return stop_ || (!queue_.empty() && !busy_); });
      if (queue_.empty()) {
        if (stop_) return;
        continue;
      }
      req = std::move(queue_.front());
      queue_.pop_front();
      busy_ = true;
    }
    execute(req.name, req.seq, req.bytes, req.fn, *req.work, req.queued, 1);
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy_ = false;
    }
    idle_cv_.notify_all();
    cv_.notify_all();
  }
}

void Communicator::run_until(const Work& w) {
  if (g_forks.load(std::memory_order_relaxed) != fork_generation_) return;
  std::unique_lock<std::mutex> lock(mu_);
  if (busy_ || stop_) return;
  bool queued = false;
  for (const Request& r : queue_) {
    if (r.work.get() == &w) {
      queued = true;
      break;
    }
  }
  if (!queued) return;
  busy_ = true;
  for (bool last = false; !last;) {
    Request req = std::move(queue_.front());
    queue_.pop_front();
    last = req.work.get() == &w;
    lock.unlock();
    execute(req.name, req.seq, req.bytes, req.fn, *req.work, req.queued, 0);
    req = Request{};  // drop the request's closure (and its buffers' holds) outside the lock
    lock.lock();
  }
  become_idle(lock);
}

void Communicator::become_idle(std::unique_lock<std::mutex>& lock) {
  busy_ = false;
  // Wake the worker only if requests arrived meanwhile: a futex wake per call would double
  // the latency of small synchronous collectives.
  const bool pending = !queue_.empty();
  lock.unlock();
  if (pending) cv_.notify_all();
  idle_cv_.notify_all();
}

void Communicator::check_not_forked() const {
  // A forked child shares the parent's sockets and shared memory: its bytes would interleave
  // with the parent's streams. It has no engine thread either, and mu_ may have been held by one
  // of the parent's threads at the fork: checked before taking it.
  RP_ENFORCE(g_forks.load(std::memory_order_relaxed) == fork_generation_, UsageError,
             "this communicator belongs to process ", creator_pid_, ": a forked child (pid ",
             getpid(), ") cannot use it; create one in the child");
}

Communicator::WorkPtr Communicator::submit(const char* name, std::uint64_t bytes, Fn fn, bool async,
                                           bool collective) {
  check_not_forked();
  std::unique_lock<std::mutex> lock(mu_);
  RP_ENFORCE(!closed_, UsageError, "the communicator is closed");
  if (broken_error_) std::rethrow_exception(broken_error_);
  const std::uint32_t seq = collective ? next_seq_++ : 0;
  auto work = std::make_shared<Work>(seq, name, callbacks_, runner_);
  const auto now = Clock::now();
  if (!async && queue_.empty() && !busy_) {
    // Idle engine, synchronous call: run here, no thread hand-off.
    busy_ = true;
    lock.unlock();
    execute(name, seq, bytes, fn, *work, now, 0);
    lock.lock();
    become_idle(lock);
    work->wait();
    return work;
  }
  queue_.push_back(Request{name, seq, bytes, std::move(fn), work, now});
  lock.unlock();
  cv_.notify_all();
  if (!async) work->wait();
  return work;
}

template <class F>
void Communicator::run_now(const char* name, std::uint64_t bytes, F&& fn) {
  check_not_forked();
  std::unique_lock<std::mutex> lock(mu_);
  if (closed_ || broken_error_ || !queue_.empty() || busy_) {
    // Closed, broken or busy: the general path says so, or queues the request behind the others.
    lock.unlock();
    submit(name, bytes, Fn(std::forward<F>(fn)), false);
    return;
  }
  const std::uint32_t seq = next_seq_++;
  busy_ = true;
  lock.unlock();
  std::exception_ptr err =
      run(name, seq, bytes, call_fn<std::remove_reference_t<F>>, &fn, Clock::time_point{}, 0);
  lock.lock();
  become_idle(lock);
  if (err) std::rethrow_exception(err);
}

AllreduceOptions Communicator::allreduce_options(void* data, std::size_t count, DType dtype,
                                                 ReduceOp op) const {
  RP_ENFORCE(reduce_supported(dtype), UsageError, "allreduce does not support dtype ",
             dtype_name(dtype), " (supported: floats, bfloat16, and integers of 8 to 64 bits)");
  RP_ENFORCE(data != nullptr || count == 0, UsageError, "allreduce of a null buffer");
  AllreduceOptions o;
  o.data = data;
  o.count = count;
  o.dtype = dtype;
  o.op = op;
  o.segment_bytes = opts_.segment_bytes;
  o.small_bytes = opts_.small_bytes;
  o.halving_bytes = opts_.halving_bytes;
  return o;
}

void Communicator::allreduce_now(void* data, std::size_t count, DType dtype, ReduceOp op) {
  ScopedErrorContext ec("allreduce", rank_);
  run_now("allreduce", count * dtype_size(dtype),
          [o = allreduce_options(data, count, dtype, op)](const OpContext& oc) {
            ringpress::allreduce(oc, o);
          });
}

Communicator::WorkPtr Communicator::allreduce(void* data, std::size_t count, DType dtype,
                                              ReduceOp op, bool async,
                                              const CompressionOptions& compression,
                                              float* residual) {
  ScopedErrorContext ec("allreduce", rank_);
  AllreduceOptions o = allreduce_options(data, count, dtype, op);
  o.compression = compression;
  o.residual = residual;
  // Argument errors surface here, before anything is queued or sent. Error feedback: the sparse
  // codecs and the lossy ring kinds (which need float32 data: check_compression) use the residual;
  // none and lossless lose nothing and leave it unchanged.
  check_compression(compression, dtype, op);
  if (compression.kind == WireCompression::kAuto) {
    // Sparse codecs (the allgather schedule) drop what they do not send: auto may pick one only
    // when error feedback keeps it.
    for (const CodecInfo& info : codecs()) {
      RP_ENFORCE(info.schedule != CodecSchedule::kAllgather ||
                     !(compression.allow & (1u << info.id)) || residual != nullptr,
                 UsageError, "auto mode may pick ", info.name,
                 " (a sparse codec) only with error feedback: pass a residual");
    }
    return submit(
        "allreduce", count * dtype_size(dtype),
        [this, o](const OpContext& oc) mutable { allreduce_auto(oc, o); }, async);
  }
  return submit(
      "allreduce", count * dtype_size(dtype),
      [o](const OpContext& oc) { ringpress::allreduce(oc, o); }, async);
}

// Auto mode (collectives/auto_select.cc): the collective decides; the engine keeps the stats.
void Communicator::allreduce_auto(const OpContext& oc, AllreduceOptions o) {
  const autosel::AutoOutcome out = autosel::allreduce_auto(oc, std::move(o), *auto_);
  std::lock_guard<std::mutex> lock(mu_);
  if (out.calibrated) ++stats_.auto_calibrations;
  const auto k = static_cast<std::size_t>(out.choice.kind);
  ++stats_.auto_counts[k];
  stats_.auto_last = static_cast<int>(k);
  for (std::size_t i = 0; i < static_cast<std::size_t>(autosel::kKinds); ++i) {
    stats_.auto_predicted_s[i] = out.choice.predicted_s[i];
  }
  stats_.auto_actual_s = out.actual_s;
  const bool two = auto_->model.hosts > 0;
  stats_.auto_hosts = two ? auto_->model.hosts : 1;
  stats_.auto_ranks_per_host = two ? auto_->model.local : oc.ctx.size();
}

Communicator::WorkPtr Communicator::allreduce_coalesced(
    std::vector<std::pair<void*, std::size_t>> buffers, DType dtype, ReduceOp op, bool async) {
  ScopedErrorContext ec("allreduce_coalesced", rank_);
  RP_ENFORCE(reduce_supported(dtype), UsageError, "allreduce does not support dtype ",
             dtype_name(dtype));
  RP_ENFORCE(!buffers.empty(), UsageError, "allreduce_coalesced needs at least one buffer");
  std::size_t total = 0;
  std::vector<std::size_t> sizes;
  sizes.reserve(buffers.size());
  for (auto& b : buffers) {
    RP_ENFORCE(b.first != nullptr || b.second == 0, UsageError, "allreduce of a null buffer");
    total += b.second;
    sizes.push_back(b.second);
  }
  AllreduceOptions o;
  o.count = total;
  // The split is part of the agreement: ranks fusing the same total differently would otherwise
  // sum mismatched tensors without an error (the header carries this digest instead of the count).
  o.split_digest = split_digest(sizes);
  o.dtype = dtype;
  o.op = op;
  o.segment_bytes = opts_.segment_bytes;
  o.small_bytes = opts_.small_bytes;
  o.halving_bytes = opts_.halving_bytes;
  const std::size_t es = dtype_size(dtype);
  return submit(
      "allreduce_coalesced", total * es,
      [o, buffers = std::move(buffers), es](const OpContext& oc) mutable {
        // Tensor fusion: pack, one collective, unpack.
        std::shared_ptr<Buffer> fused = Buffer::acquire(o.count * es);
        std::size_t off = 0;
        for (auto& b : buffers) {
          if (b.second) std::memcpy(fused->data() + off, b.first, b.second * es);
          off += b.second * es;
        }
        o.data = fused->data();
        ringpress::allreduce(oc, o);
        off = 0;
        for (auto& b : buffers) {
          if (b.second) std::memcpy(b.first, fused->data() + off, b.second * es);
          off += b.second * es;
        }
      },
      async);
}

Communicator::WorkPtr Communicator::broadcast(void* data, std::size_t count, DType dtype, int root,
                                              bool async) {
  ScopedErrorContext ec("broadcast", rank_);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "broadcast root ", root, " is not a rank of ",
             size_);
  RP_ENFORCE(data != nullptr || count == 0, UsageError, "broadcast of a null buffer");
  BroadcastOptions o;
  o.data = data;
  o.count = count;
  o.dtype = dtype;
  o.root = root;
  o.segment_bytes = opts_.segment_bytes;
  return submit(
      "broadcast", count * dtype_size(dtype),
      [o](const OpContext& oc) { ringpress::broadcast(oc, o); }, async);
}

AllgatherOptions Communicator::allgather_options(const void* in, void* out,
                                                 std::vector<std::size_t> counts,
                                                 DType dtype) const {
  RP_ENFORCE_EQ(counts.size(), static_cast<std::size_t>(size_), UsageError,
                "allgather needs one count per rank");
  RP_ENFORCE(out != nullptr || total_count(counts) == 0, UsageError,
             "allgather into a null buffer");
  AllgatherOptions o;
  o.in = in;
  o.out = out;
  o.counts = std::move(counts);
  o.dtype = dtype;
  o.segment_bytes = opts_.segment_bytes;
  o.halving_bytes = opts_.halving_bytes;
  o.small_bytes = opts_.small_bytes;
  return o;
}

Communicator::WorkPtr Communicator::allgather(const void* in, void* out,
                                              std::vector<std::size_t> counts, DType dtype,
                                              bool async) {
  ScopedErrorContext ec("allgather", rank_);
  AllgatherOptions o = allgather_options(in, out, std::move(counts), dtype);
  const std::uint64_t bytes = total_count(o.counts) * dtype_size(dtype);
  return submit(
      "allgather", bytes, [o](const OpContext& oc) { ringpress::allgather(oc, o); }, async);
}

void Communicator::allgather_now(const void* in, void* out, std::size_t count, DType dtype) {
  ScopedErrorContext ec("allgather", rank_);
  AllgatherOptions o = allgather_options(
      in, out, std::vector<std::size_t>(static_cast<std::size_t>(size_), count), dtype);
  const std::uint64_t bytes = total_count(o.counts) * dtype_size(dtype);
  run_now("allgather", bytes,
          [o = std::move(o)](const OpContext& oc) { ringpress::allgather(oc, o); });
}

ReduceScatterOptions Communicator::reduce_scatter_options(const void* in, void* out,
                                                          std::vector<std::size_t> counts,
                                                          DType dtype, ReduceOp op) const {
  RP_ENFORCE(reduce_supported(dtype), UsageError, "reduce_scatter does not support dtype ",
             dtype_name(dtype));
  RP_ENFORCE_EQ(counts.size(), static_cast<std::size_t>(size_), UsageError,
                "reduce_scatter needs one count per rank");
  const std::size_t total = total_count(counts);
  RP_ENFORCE((in != nullptr && (out != nullptr || counts[static_cast<std::size_t>(rank_)] == 0)) ||
                 total == 0,
             UsageError, "reduce_scatter with a null buffer");
  ReduceScatterOptions o;
  o.in = in;
  o.out = out;
  o.counts = std::move(counts);
  o.dtype = dtype;
  o.op = op;
  o.segment_bytes = opts_.segment_bytes;
  o.halving_bytes = opts_.halving_bytes;
  o.small_bytes = opts_.small_bytes;
  return o;
}

Communicator::WorkPtr Communicator::reduce_scatter(const void* in, void* out,
                                                   std::vector<std::size_t> counts, DType dtype,
                                                   ReduceOp op, bool async) {
  ScopedErrorContext ec("reduce_scatter", rank_);
  ReduceScatterOptions o = reduce_scatter_options(in, out, std::move(counts), dtype, op);
  const std::uint64_t bytes = total_count(o.counts) * dtype_size(dtype);
  return submit(
      "reduce_scatter", bytes, [o](const OpContext& oc) { ringpress::reduce_scatter(oc, o); },
      async);
}

void Communicator::reduce_scatter_now(const void* in, void* out, std::size_t count, DType dtype,
                                      ReduceOp op) {
  ScopedErrorContext ec("reduce_scatter", rank_);
  ReduceScatterOptions o = reduce_scatter_options(
      in, out, std::vector<std::size_t>(static_cast<std::size_t>(size_), count), dtype, op);
  const std::uint64_t bytes = total_count(o.counts) * dtype_size(dtype);
  run_now("reduce_scatter", bytes,
          [o = std::move(o)](const OpContext& oc) { ringpress::reduce_scatter(oc, o); });
}

Communicator::WorkPtr Communicator::barrier(bool async) {
  return submit("barrier", 0, [](const OpContext& oc) { ringpress::barrier(oc); }, async);
}

void Communicator::barrier_now() {
  ScopedErrorContext ec("barrier", rank_);
  run_now("barrier", 0, [](const OpContext& oc) { ringpress::barrier(oc); });
}

Communicator::WorkPtr Communicator::gather(const void* in, std::size_t count,
                                           std::vector<std::pair<void*, std::size_t>> outs,
                                           DType dtype, int root, bool async) {
  ScopedErrorContext ec("gather", rank_);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "gather root ", root, " is not a rank of ",
             size_);
  RP_ENFORCE(in != nullptr || count == 0, UsageError, "gather of a null buffer");
  if (rank_ == root) {
    RP_ENFORCE_EQ(outs.size(), static_cast<std::size_t>(size_), UsageError,
                  "gather needs one output per rank on the root");
    RP_ENFORCE_EQ(outs[static_cast<std::size_t>(root)].second, count, UsageError,
                  "gather: the root's own output and input sizes differ");
    for (const auto& [ptr, n] : outs) {
      RP_ENFORCE(ptr != nullptr || n == 0, UsageError, "gather into a null buffer on the root");
    }
  }
  GatherOptions o;
  o.in = in;
  o.count = count;
  o.outs = std::move(outs);
  o.dtype = dtype;
  o.root = root;
  return submit(
      "gather", count * dtype_size(dtype), [o](const OpContext& oc) { ringpress::gather(oc, o); },
      async);
}

Communicator::WorkPtr Communicator::scatter(std::vector<std::pair<const void*, std::size_t>> ins,
                                            void* out, std::size_t count, DType dtype, int root,
                                            bool async) {
  ScopedErrorContext ec("scatter", rank_);
  RP_ENFORCE(root >= 0 && root < size_, UsageError, "scatter root ", root, " is not a rank of ",
             size_);
  RP_ENFORCE(out != nullptr || count == 0, UsageError, "scatter into a null buffer");
  if (rank_ == root) {
    RP_ENFORCE_EQ(ins.size(), static_cast<std::size_t>(size_), UsageError,
                  "scatter needs one input per rank on the root");
    RP_ENFORCE_EQ(ins[static_cast<std::size_t>(root)].second, count, UsageError,
                  "scatter: the root's own input and output sizes differ");
    for (const auto& [ptr, n] : ins) {
      RP_ENFORCE(ptr != nullptr || n == 0, UsageError, "scatter from a null buffer on the root");
    }
  }
  ScatterOptions o;
  o.ins = std::move(ins);
  o.out = out;
  o.count = count;
  o.dtype = dtype;
  o.root = root;
  return submit(
      "scatter", count * dtype_size(dtype), [o](const OpContext& oc) { ringpress::scatter(oc, o); },
      async);
}

Communicator::WorkPtr Communicator::alltoall(const void* in, void* out,
                                             std::vector<std::size_t> send_counts,
                                             std::vector<std::size_t> recv_counts, DType dtype,
                                             bool async) {
  ScopedErrorContext ec("alltoall", rank_);
  RP_ENFORCE_EQ(send_counts.size(), static_cast<std::size_t>(size_), UsageError,
                "alltoall needs one send count per rank");
  RP_ENFORCE_EQ(recv_counts.size(), static_cast<std::size_t>(size_), UsageError,
                "alltoall needs one receive count per rank");
  std::size_t sent = 0, received = 0;
  for (auto c : send_counts) sent += c;
  for (auto c : recv_counts) received += c;
  RP_ENFORCE(in != nullptr || sent == 0, UsageError, "alltoall from a null buffer");
  RP_ENFORCE(out != nullptr || received == 0, UsageError, "alltoall into a null buffer");
  RP_ENFORCE_EQ(send_counts[static_cast<std::size_t>(rank_)],
                recv_counts[static_cast<std::size_t>(rank_)], UsageError,
                "alltoall: the send and receive counts for this rank itself differ");
  AlltoallOptions o;
  o.in = in;
  o.out = out;
  o.send_counts = std::move(send_counts);
  o.recv_counts = std::move(recv_counts);
  o.dtype = dtype;
  return submit(
      "alltoall", sent * dtype_size(dtype),
      [o](const OpContext& oc) { ringpress::alltoall(oc, o); }, async);
}

Communicator::WorkPtr Communicator::local(const char* name, std::function<void()> fn) {
  return submit(
      name, 0, [fn = std::move(fn)](const OpContext&) { fn(); }, true, /*collective=*/false);
}

Communicator::WorkPtr Communicator::point_to_point(std::vector<PeerMessage> msgs, bool async) {
  const bool single = msgs.size() == 1;
  const char* name = single ? (msgs[0].send ? "send" : "recv") : "send/recv";
  ScopedErrorContext ec(name, rank_);
  std::uint64_t bytes = 0;
  for (const PeerMessage& m : msgs) {
    RP_ENFORCE(m.peer >= 0 && m.peer < size_ && m.peer != rank_, UsageError, name, " peer ", m.peer,
               " is not another rank of ", size_);
    RP_ENFORCE(m.data != nullptr || m.bytes == 0, UsageError, name, " with a null buffer");
    bytes += m.bytes;
  }
  return submit(
      name, bytes,
      [this, msgs = std::move(msgs)](const OpContext& oc) mutable {
        // Numbered here, in execution order (= this rank's submission order).
        for (PeerMessage& m : msgs) {
          auto& counter = m.send ? p2p_sent_ : p2p_received_;
          m.seq = counter[static_cast<std::size_t>(m.peer)]++;
        }
        ringpress::point_to_point(oc, msgs);
      },
      async, /*collective=*/false);
}

void Communicator::close() {
  {
    // From here on waiters wait for the worker (which close() lets drain the queue).
    std::lock_guard<std::mutex> g(runner_->mu);
    runner_->comm = nullptr;
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    if (getpid() != creator_pid_) {
      // A forked child holds a copy without the worker thread or a right to the connections.
      worker_.detach();
      (void)ctx_.release();
      return;
    }
    idle_cv_.wait(lock, [&] { return queue_.empty() && !busy_; });
    stop_ = true;
  }
  cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  if (!ctx_->broken() && size_ > 1) {
    // No rank closes its connections while a peer may still need data from it.
    ctx_->begin_close();
    try {
      ScopedErrorContext ec("close", rank_);
      OpContext oc{*ctx_, next_seq_++, Clock::now() + op_timeout(), nullptr};
      ringpress::barrier(oc);
    } catch (const Error&) {
      // A peer that already failed or left: nothing more to wait for.
    }
  }
  ctx_->close();
  // Callbacks of completed requests (e.g. torch futures) have run when close() returns; bounded,
  // so a callback that blocks forever cannot hold close() with it.
  (void)callbacks_->drain(std::chrono::seconds(10));
  if (!opts_.timeline_path.empty()) {
    try {
      timeline_.write(opts_.timeline_path, rank_);
    } catch (const Error&) {
    }
  }
}

}  // namespace ringpress

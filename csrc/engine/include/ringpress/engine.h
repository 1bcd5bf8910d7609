// The engine: executes collective requests in submission order on one background thread, with
// async Work handles, a Chrome-trace timeline, and the Communicator facade used by Python.
//
// Contract
//   * Requests run strictly in submission order; every rank must submit the same sequence (the
//     request's sequence number travels in every message and is checked by the receiver).
//   * A synchronous request submitted while the engine is idle runs inline on the caller's thread
//     (no hand-off: small-message latency is the transport's, not a thread wake-up's). Likewise
//     Work::wait() on a queued request that the engine thread has not started yet, while no
//     request runs, runs the queue up to and including that request on the waiting thread (an
//     async submit followed by wait(), which is what torch.distributed does for every call, then
//     costs what a synchronous call costs).
//   * Work: is_completed() never blocks; wait(timeout) blocks until done (or returns false when
//     the timeout passes first) and rethrows the request's error; callbacks run once, on the thread
//     that completed the request, right after waiters are released (or at once, on the caller's
//     thread, if already complete), so a callback may inspect its own Work.
//   * Failure: the first error breaks the communicator (the transport context aborts, telling all
//     peers); the failed request and every later one raise that error. Argument errors found
//     before a request is queued (bad dtype, sizes) raise at once and leave it usable.
//   * Fusion: allreduce_coalesced() packs many tensors into one buffer and one collective (the
//     caller groups them, so every rank fuses identically without a negotiation round).
//   * Thread-safety: the Communicator's methods may be called from any thread; requests are
//     ordered by the time submit takes the queue lock.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ringpress/collectives.h"
#include "ringpress/single_copy_policy.h"
#include "ringpress/store.h"
#include "ringpress/trace.h"
#include "ringpress/transport.h"

namespace ringpress {
namespace autosel {
struct AutoState;  // ringpress/auto_select.h
}

// Runs completion callbacks off the engine thread (work.cc). A callback may block — wait for a
// later request, submit a synchronous collective (torch's PowerSGD hook does both inside a
// future's then()) — so a callback never runs on the thread that executes requests, and a queued
// callback never waits behind a blocked one: a new thread starts whenever none is idle. Threads
// that stay idle for 10 s exit. Callbacks of one Work run in registration order on one thread;
// callbacks of different Works may run concurrently.
class CallbackPool : public std::enable_shared_from_this<CallbackPool> {
 public:
  void post(std::function<void()> fn);
  // Waits until every callback posted so far has returned (a callback calling this does not
  // wait for itself). Returns false if `timeout` passed first.
  bool drain(std::chrono::milliseconds timeout);

 private:
  static void run(std::shared_ptr<CallbackPool> self);
  std::mutex mu_;
  std::condition_variable cv_;       // new callback
  std::condition_variable drained_;  // outstanding_ fell
  std::deque<std::function<void()>> queue_;
  int idle_ = 0;
  int outstanding_ = 0;  // queued + running
};

class Communicator;

// Lets Work::wait() run queued requests on the waiting thread (see the contract above). close()
// detaches it (comm = nullptr) under mu, so no waiter touches a communicator being destroyed.
struct InlineRunner {
  std::mutex mu;
  Communicator* comm = nullptr;
};

class Work : public std::enable_shared_from_this<Work> {
 public:
  bool is_completed() const;
  // Blocks until complete (timeout < 0: no limit); false if the timeout passed first.
  // Rethrows the request's error.
  bool wait(std::chrono::milliseconds timeout = std::chrono::milliseconds(-1));
  std::exception_ptr exception() const;
  // Runs fn(*this) once when complete: now, on this thread, if it already is; else on a thread of
  // the communicator's CallbackPool (never on the engine thread, so fn may block or wait).
  void on_complete(std::function<void(Work&)> fn);
  // Runs fn once if the request succeeds, on the thread that completes it, before waiters and
  // callbacks see it complete (a copy of results into the caller's memory); or now, on this
  // thread, if it already has (after waiting for a completion in progress). An exception from fn
  // run at completion becomes the request's error.
  void finish_with(std::function<void()> fn);
  // Keeps `h` alive until the request has completed (the buffers it reads and writes, when the
  // caller may drop its own references first); released right after completion.
  void hold(std::shared_ptr<void> h);
  std::uint32_t seq() const noexcept { return seq_; }
  const std::string& name() const noexcept { return name_; }

  // Engine side.
  Work(std::uint32_t seq, std::string name, std::shared_ptr<CallbackPool> pool = nullptr,
       std::shared_ptr<InlineRunner> runner = nullptr)
      : seq_(seq), name_(std::move(name)), pool_(std::move(pool)), runner_(std::move(runner)) {}
  void complete(std::exception_ptr err);

 private:
  const std::uint32_t seq_;
  const std::string name_;
  const std::shared_ptr<CallbackPool> pool_;    // null: callbacks run in complete()'s thread
  const std::shared_ptr<InlineRunner> runner_;  // null: wait() only waits
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::exception_ptr error_;
  std::vector<std::function<void(Work&)>> callbacks_;
  std::vector<std::shared_ptr<void>> holds_;
  std::vector<std::function<void()>> finishers_;
  bool finishing_ = false;  // complete() took finishers_ and runs them
};

struct CommOptions {
  ContextOptions context;
  // Unset (0 / empty) options come from the environment, else the default (env.h).
  std::chrono::milliseconds op_timeout{0};  // 0: context.timeout (RINGPRESS_TIMEOUT, 300 s)
  std::string timeline_path;  // non-empty: record and write here at close (else RINGPRESS_TIMELINE)
  std::size_t segment_bytes = 0;  // 0: default_segment_bytes()
  std::size_t small_bytes = 0;    // 0: default_small_bytes()
  std::size_t halving_bytes = 0;  // 0: default_halving_bytes()
};

struct CommStats {
  std::uint64_t ops = 0;
  std::uint64_t bytes_sent = 0;
  std::uint64_t bytes_received = 0;
  std::uint64_t tcp_bytes_sent = 0;     // the part of bytes_sent that went over TCP (the network)
  std::uint64_t single_copy_bytes = 0;  // the part of bytes_received read from shm peers' buffers
  std::uint64_t payload_bytes = 0;      // user bytes passed to collectives
  // Auto mode (compression="auto"): how often each kind was picked, and the last request's
  // choice with the model's predicted time of every allowed kind (< 0: not allowed) and the
  // time it actually took.
  std::array<std::uint64_t, kMaxCodecs> auto_counts{};  // by codec id (ringpress/codec.h)
  int auto_last = -1;
  std::array<double, kMaxCodecs> auto_predicted_s{};
  double auto_actual_s = 0;
  int auto_calibrations = 0;
  // The levels the model describes: H hosts of L ranks (the hierarchical paths), or 1 and P.
  int auto_hosts = 0;
  int auto_ranks_per_host = 0;
  // RINGPRESS_SHM_SINGLE_COPY=auto: the classes settled so far (ringpress/single_copy_policy.h).
  std::vector<SingleCopyChoice> single_copy;
  std::array<double, static_cast<int>(Stage::kCount)> stage_s{};             // time per stage
  std::array<std::uint64_t, static_cast<int>(Stage::kCount)> stage_bytes{};  // bytes through it
};

class Communicator {
 public:
  Communicator(std::shared_ptr<Store> store, const CommOptions& opts);
  ~Communicator();
  Communicator(const Communicator&) = delete;
  Communicator& operator=(const Communicator&) = delete;

  int rank() const noexcept { return rank_; }
  int size() const noexcept { return size_; }
  // Collective requests submitted so far (the next one's sequence number), the same on every rank.
  std::uint32_t sequence() const;
  std::string transport(int peer) const;  // "tcp" | "shm" | "self"
  // Per rank, the index of its host (ranks that share a host; transport.h Topology).
  std::vector<int> hosts() const;
  // Deadline of each request from now on (requests already running keep theirs). Thread-safe.
  void set_timeout(std::chrono::milliseconds timeout);
  std::chrono::milliseconds timeout() const noexcept { return op_timeout(); }

  using WorkPtr = std::shared_ptr<Work>;
  WorkPtr allreduce(void* data, std::size_t count, DType dtype, ReduceOp op, bool async,
                    const CompressionOptions& compression = CompressionOptions(),
                    float* residual = nullptr);
  WorkPtr allreduce_coalesced(std::vector<std::pair<void*, std::size_t>> buffers, DType dtype,
                              ReduceOp op, bool async);
  WorkPtr broadcast(void* data, std::size_t count, DType dtype, int root, bool async);
  WorkPtr allgather(const void* in, void* out, std::vector<std::size_t> counts, DType dtype,
                    bool async);
  WorkPtr reduce_scatter(const void* in, void* out, std::vector<std::size_t> counts, DType dtype,
                         ReduceOp op, bool async);
  WorkPtr barrier(bool async);
  // Synchronous calls without a Work (the bindings' numpy fast paths; allgather and
  // reduce_scatter with `count` elements per rank): on the caller's thread when the engine is
  // idle, else queued behind the requests in flight and waited for. Errors are thrown as
  // Work::wait() throws them. At 4 KiB this saves a quarter of the call (docs/benchmarks.md).
  void allreduce_now(void* data, std::size_t count, DType dtype, ReduceOp op);
  void allgather_now(const void* in, void* out, std::size_t count, DType dtype);
  void reduce_scatter_now(const void* in, void* out, std::size_t count, DType dtype, ReduceOp op);
  void barrier_now();
  // Sends `count` elements; the root passes one (buffer, count) per rank to receive into.
  WorkPtr gather(const void* in, std::size_t count, std::vector<std::pair<void*, std::size_t>> outs,
                 DType dtype, int root, bool async);
  // Receives `count` elements; the root passes one (buffer, count) per rank to send.
  WorkPtr scatter(std::vector<std::pair<const void*, std::size_t>> ins, void* out,
                  std::size_t count, DType dtype, int root, bool async);
  WorkPtr alltoall(const void* in, void* out, std::vector<std::size_t> send_counts,
                   std::vector<std::size_t> recv_counts, DType dtype, bool async);
  // Runs fn on the thread that runs requests, in order with them: a local step (waiting for a
  // device-to-host copy) that sends nothing and takes no sequence number. An exception from fn
  // fails the request like any other (and breaks the communicator).
  WorkPtr local(const char* name, std::function<void()> fn);
  // Point-to-point: a batch of sends and receives posted together (collectives.h). They are
  // requests like the others (run in submission order with this rank's collectives) but do not
  // take a collective sequence number: only the two ranks of each message take part. Each
  // direction of a pair numbers its messages; `seq` of the messages is filled in here.
  WorkPtr point_to_point(std::vector<PeerMessage> msgs, bool async);

  // Recovery (docs/errors.md "Recovery"; transport.h has the transport's side).
  // shrink(): collective of the survivors after a failure (or at any time): they agree on who is
  // gone and get a new communicator over the rest, ranks renumbered in the old order, without a
  // store. Requests already queued run (or fail) first. `left_out` receives the old ranks that
  // are not in it. This communicator is then closed: its calls raise UsageError.
  std::unique_ptr<Communicator> shrink(std::vector<int>* left_out = nullptr);
  // grow(): collective of the members at a point they choose (a step boundary): admits the
  // processes waiting in join() on the store this communicator rendezvoused through. Returns
  // nullptr when none waits (this communicator goes on), else the grown communicator (joiners
  // take the next ranks) and closes this one.
  std::unique_ptr<Communicator> grow(std::vector<int>* left_out = nullptr);
  // The joining side: blocks until the members call grow() (up to the timeout).
  static std::unique_ptr<Communicator> join(std::shared_ptr<Store> store, const CommOptions& opts);
  // Which membership this is: 0 after the rendezvous, +1 per shrink or grow.
  std::uint64_t epoch() const;
  // The ranks of this communicator that joined when it was formed (a grow, or a shrink that
  // admitted the joiners of a grow that failed on its way); empty otherwise.
  std::vector<int> joined() const;

  // Orderly shutdown (waits for queued work, runs a barrier, closes connections, writes the
  // timeline). Idempotent; the destructor calls it.
  void close();
  bool closed() const noexcept;
  bool broken() const noexcept;
  CommStats stats() const;
  Timeline& timeline() noexcept { return timeline_; }
  // Work::wait()'s helper: if `w` is queued and no request is running, runs the queue up to and
  // including `w` on this thread. Returns at once otherwise.
  void run_until(const Work& w);
  std::size_t write_timeline(const std::string& path) const { return timeline_.write(path, rank_); }

 private:
  Communicator(std::unique_ptr<Context> ctx, std::shared_ptr<Store> store, const CommOptions& opts);
  void start(std::unique_ptr<Context> ctx);
  std::unique_ptr<Communicator> reform(const char* what,
                                       const std::function<std::unique_ptr<Context>(Context&)>& fn);
  using Fn = std::function<void(const OpContext&)>;
  // collective = false: a p2p request (no collective sequence number; Work::seq() is 0).
  WorkPtr submit(const char* name, std::uint64_t bytes, Fn fn, bool async, bool collective = true);
  void execute(const char* name, std::uint32_t seq, std::uint64_t bytes, Fn& fn, Work& work,
               Clock::time_point queued, int tid);
  // Runs one request (call(fn, oc)) and returns its error, if any; execute() completes a Work
  // with it, run_now() throws it.
  std::exception_ptr run(const char* name, std::uint32_t seq, std::uint64_t bytes,
                         void (*call)(void*, const OpContext&), void* fn, Clock::time_point queued,
                         int tid);
  template <class F>
  static void call_fn(void* fn, const OpContext& oc) {
    (*static_cast<F*>(fn))(oc);
  }
  template <class F>
  void run_now(const char* name, std::uint64_t bytes, F&& fn);
  // After running requests on a caller's thread (mu_ held by `lock`): clears busy_, unlocks, and
  // wakes the worker if requests arrived meanwhile and anyone waiting for an idle engine.
  void become_idle(std::unique_lock<std::mutex>& lock);
  void check_not_forked() const;
  // Argument checks and options of the collectives that have a Work and a _now form.
  AllreduceOptions allreduce_options(void* data, std::size_t count, DType dtype, ReduceOp op) const;
  AllgatherOptions allgather_options(const void* in, void* out, std::vector<std::size_t> counts,
                                     DType dtype) const;
  ReduceScatterOptions reduce_scatter_options(const void* in, void* out,
                                              std::vector<std::size_t> counts, DType dtype,
                                              ReduceOp op) const;
  void worker_loop();
  void allreduce_auto(const OpContext& oc, AllreduceOptions o);

  struct Request {
    const char* name;
    std::uint32_t seq;
    std::uint64_t bytes;
    Fn fn;
    WorkPtr work;
    Clock::time_point queued;
  };

  std::chrono::milliseconds op_timeout() const noexcept {
    return std::chrono::milliseconds(op_timeout_ms_.load(std::memory_order_relaxed));
  }

  int rank_ = 0;
  int size_ = 1;
  CommOptions opts_;
  std::atomic<long long> op_timeout_ms_{0};  // opts_.op_timeout, changeable by set_timeout()
  std::unique_ptr<Context> ctx_;
  std::shared_ptr<Store> store_;  // the rendezvous store (grow reads who waits to join)
  Timeline timeline_;
  StageTimes stages_;

  mutable std::mutex mu_;
  std::condition_variable cv_;       // worker: new request or stop
  std::condition_variable idle_cv_;  // close(): queue drained
  std::deque<Request> queue_;
  bool busy_ = false;
  bool stop_ = false;
  bool closed_ = false;
  std::uint32_t next_seq_ = 0;
  // p2p sequence per peer and direction; touched only by the thread running requests.
  std::vector<std::uint32_t> p2p_sent_, p2p_received_;
  std::exception_ptr broken_error_;
  CommStats stats_;
  int creator_pid_ = 0;
  unsigned fork_generation_ = 0;  // see communicator.cc: a forked child sees another count
  std::shared_ptr<autosel::AutoState> auto_;  // auto mode state, used by the request-running thread
  // shm_single_copy "auto": learns per class (used by the request-running thread; its settled
  // classes are copied into stats_ under mu_).
  bool single_copy_auto_ = false;
  SingleCopyPolicy single_copy_;
  std::thread worker_;  // a forked child must not join the parent's worker or close its sockets
  std::shared_ptr<CallbackPool> callbacks_ = std::make_shared<CallbackPool>();
  std::shared_ptr<InlineRunner> runner_ = std::make_shared<InlineRunner>();
};

}  // namespace ringpress

// The segmented, pipelined ring shared by allreduce (reduce-scatter + allgather), reduce_scatter
// and allgather (internal header).
//
// The working buffer is split into P blocks (block b = elements [off[b], off[b]+len[b])).
//   reduce-scatter, step s = 0..P-2: send block (r-s-1) to the right, receive block (r-s-2) from
//     the left and reduce it into the working buffer as it arrives (the transport reduces out of
//     the shm ring, or out of a small staging buffer over TCP: Expect::reduce). After P-1 steps
//     rank r holds block r fully reduced (every element combined in the same chain order on
//     every rank).
//   allgather, step s = 0..P-2: send block (r-s) to the right, receive block (r-s-1) from the left
//     straight into the working buffer.
// Each block is cut into segments of segment_bytes. A segment moves on as soon as it is ready: the
// send of (step s+1, segment k) is posted right after (step s, segment k) was reduced/received,
// so reduce of one segment overlaps the transfer of the next ones (the pipeline), and the last
// reduce-scatter segments flow straight into the allgather.
// Cost (P ranks, n bytes): reduce-scatter (P-1)(alpha + n/P beta) + (P-1)/P n gamma (reduce);
// allgather (P-1)(alpha + n/P beta); pipelining hides all but about one segment of each stage.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <vector>

#include "ringpress/collectives.h"

namespace ringpress::ring {

struct Plan {
  unsigned char* data = nullptr;  // working buffer
  std::vector<std::size_t> off;   // per block, elements
  std::vector<std::size_t> len;   // per block, elements
  DType dtype = DType::kF32;
  ReduceOp op = ReduceOp::kSum;
  CollKind coll = CollKind::kAllreduce;
  std::size_t total = 0;  // elements in the whole collective (header count)
  std::size_t segment_bytes = 0;
  bool reduce_scatter = true;
  bool allgather = true;
  // Local work run in slices while this rank waits (AllgatherOptions::overlap), or nullptr.
  const std::function<bool()>* overlap = nullptr;
};

// Runs the plan to completion on this thread (the loop below, blocking on each receive).
void run(const OpContext& oc, const Plan& plan);

// One segment of the schedule.
struct Item {
  int block;
  std::size_t elem;   // first element of the segment
  std::size_t count;  // elements in the segment
  bool rs;            // reduce-scatter phase (else allgather)
};
// Rank r's send and receive sequences (the same on every rank for the same plan): send group
// g+1 carries what receive group g produced; the first `first_group` sends are ready at once.
struct Schedule {
  std::vector<Item> sends, recvs;
  std::size_t first_group = 0;
};
Schedule schedule(const Plan& plan, int P, int r);

// A ring schedule as a resumable state machine, so that one thread can drive two of them on
// disjoint sets of pairs at once (allreduce_hier.cc pipelines its intra-host rings with the
// inter-host one). Per pair, messages keep the order of the schedule, so two Steppers must never
// share a pair while both are unfinished. The OpContext must outlive the Stepper.
class Stepper {
 public:
  virtual ~Stepper() = default;
  // Non-blocking: posts what is ready and consumes completed receives (one progress pass per
  // ticket tested). True once every receive is done and the last send has left.
  virtual bool advance() = 0;
  // Only while advance() returns false: the ticket whose completion lets the schedule move.
  virtual const Ticket& blocker() const = 0;
  // Every receive is done (so the working buffer holds the result) and every send is posted;
  // only the last sends may still be in flight. The next schedule on the same pairs may start
  // (its messages queue behind these), as long as this one is driven to the end afterwards.
  virtual bool receives_done() const = 0;
};

// The plain ring of a Plan (the plan and its buffer must outlive the Runner); run() drives one
// to completion alone.
class Runner final : public Stepper {
 public:
  Runner(const OpContext& oc, const Plan& plan);
  bool advance() override;
  const Ticket& blocker() const override;
  bool receives_done() const override { return next_ == sc_.recvs.size(); }

 private:
  friend void run(const OpContext& oc, const Plan& plan);
  bool post_recv(std::size_t i, bool block);
  void post_send(std::size_t j);
  void fill_window(bool block);
  void complete_recv();  // receive next_ is done: post what it made ready

  const OpContext& oc_;
  const Plan& plan_;
  std::size_t es_;
  int right_, left_;
  Schedule sc_;
  std::size_t rs_sends_ = 0, rs_recvs_ = 0;
  std::vector<Ticket> send_tickets_, recv_tickets_;
  std::size_t sends_posted_ = 0;  // sends are posted strictly in order
  std::size_t posted_ = 0;        // receives posted (in order)
  std::size_t next_ = 0;          // the receive to complete next
  bool overlap_left_ = false;
  bool finished_ = false;
};

// The plain ring allreduce of `o` (reduce-scatter + allgather) over P ranks (allreduce_ring.cc).
Plan allreduce_plan(const AllreduceOptions& o, int P);

// The compressed ring allreduce of `o` (ring_codec.cc) as a Stepper: o.compression is a codec
// with the ring schedule; o.data (and o.residual) must outlive it.
std::unique_ptr<Stepper> compressed_runner(const OpContext& oc, const AllreduceOptions& o);

// Split n elements into P nearly equal blocks (the first n % P get one more).
void even_blocks(std::size_t n, int P, std::vector<std::size_t>* off,
                 std::vector<std::size_t>* len);

// Blocks of the given per-rank counts, laid out one after another; returns the total.
std::size_t count_blocks(const std::vector<std::size_t>& counts, std::vector<std::size_t>* off,
                         std::vector<std::size_t>* len);

// Header for a message of this collective.
MsgHeader header(CollKind coll, DType dtype, ReduceOp op, std::uint32_t seq, std::uint32_t step,
                 std::uint64_t count, std::uint64_t len,
                 WireCompression codec = WireCompression::kNone);
Expect expect(const MsgHeader& h);

// The agreement exchange that opens a rooted collective (agree.cc): zero-length messages carrying
// (coll, seq, dtype, root, count) in ceil(log2 P) rounds, so ranks that disagree on any of them
// raise a collective mismatch at this collective, every rank, before any data moves. `count` 0
// where ranks may legitimately differ (gather, scatter: per-rank sizes).
void agree(const OpContext& oc, CollKind coll, DType dtype, int root, std::uint64_t count);

}  // namespace ringpress::ring

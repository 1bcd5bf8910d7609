// The pipelined ring (see ring.h for the schedule, its cost and why segments flow as they do).
#include "ring.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "ringpress/env.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

// Read once per process (env.h): every communicator in it pipelines alike.
std::size_t default_segment_bytes() {
  static const std::size_t v = env::positive("RINGPRESS_SEGMENT_BYTES");
  return v;
}

std::size_t default_small_bytes() {
  static const std::size_t v = env::positive("RINGPRESS_SMALL_BYTES");
  return v;
}

std::size_t default_halving_bytes() {
  static const std::size_t v = env::positive("RINGPRESS_HALVING_BYTES");
  return v;
}

namespace ring {

void even_blocks(std::size_t n, int P, std::vector<std::size_t>* off,
                 std::vector<std::size_t>* len) {
  off->assign(static_cast<std::size_t>(P), 0);
  len->assign(static_cast<std::size_t>(P), 0);
  std::size_t base = n / static_cast<std::size_t>(P), extra = n % static_cast<std::size_t>(P);
  std::size_t o = 0;
  for (int b = 0; b < P; ++b) {
    std::size_t l = base + (static_cast<std::size_t>(b) < extra ? 1 : 0);
    (*off)[static_cast<std::size_t>(b)] = o;
    (*len)[static_cast<std::size_t>(b)] = l;
    o += l;
  }
}

std::size_t count_blocks(const std::vector<std::size_t>& counts, std::vector<std::size_t>* off,
                         std::vector<std::size_t>* len) {
  *len = counts;
  off->assign(counts.size(), 0);
  std::size_t total = 0;
  for (std::size_t b = 0; b < counts.size(); ++b) {
    (*off)[b] = total;
    total += counts[b];
  }
  return total;
}

MsgHeader header(CollKind coll, DType dtype, ReduceOp op, std::uint32_t seq, std::uint32_t step,
                 std::uint64_t count, std::uint64_t len, WireCompression codec) {
  MsgHeader h;
  h.codec = static_cast<std::uint8_t>(codec);
  h.coll = static_cast<std::uint8_t>(coll);
  h.dtype = static_cast<std::uint8_t>(dtype);
  h.redop = static_cast<std::uint8_t>(op);
  h.seq = seq;
  h.step = step;
  h.count = count;
  h.len = len;
  return h;
}

Expect expect(const MsgHeader& h) {
  Expect e;
  e.h = h;
  e.capacity = h.len;
  e.len_exact = true;
  return e;
}

Schedule schedule(const Plan& plan, int P, int r) {
  const std::size_t es = dtype_size(plan.dtype);
  const std::size_t seg_bytes = plan.segment_bytes ? plan.segment_bytes : default_segment_bytes();
  const std::size_t seg = std::max<std::size_t>(1, seg_bytes / es);
  auto mod = [P](int x) { return ((x % P) + P) % P; };
  Schedule sc;
  auto append = [&](std::vector<Item>* v, int block, bool rs) {
    const std::size_t b = static_cast<std::size_t>(block);
    for (std::size_t k = 0; k < plan.len[b]; k += seg) {
      v->push_back(Item{block, plan.off[b] + k, std::min(seg, plan.len[b] - k), rs});
    }
  };
  if (plan.reduce_scatter) {
    for (int s = 0; s <= P - 2; ++s) {
      append(&sc.sends, mod(r - s - 1), true);
      if (s == 0) sc.first_group = sc.sends.size();
      append(&sc.recvs, mod(r - s - 2), true);
    }
  }
  if (plan.allgather) {
    for (int s = 0; s <= P - 2; ++s) {
      std::size_t before = sc.sends.size();
      append(&sc.sends, mod(r - s), false);
      if (!plan.reduce_scatter && s == 0) sc.first_group = sc.sends.size() - before;
      append(&sc.recvs, mod(r - s - 1), false);
    }
  }
  return sc;
}

namespace {
constexpr std::size_t kWindow = 4;  // receives posted ahead of the one being completed
}

Runner::Runner(const OpContext& oc, const Plan& plan)
    : oc_(oc),
      plan_(plan),
      es_(dtype_size(plan.dtype)),
      right_((oc.ctx.rank() + 1) % oc.ctx.size()),
      left_((oc.ctx.rank() + oc.ctx.size() - 1) % oc.ctx.size()),
      sc_(schedule(plan, oc.ctx.size(), oc.ctx.rank())) {
  // Send and receive sequences (see ring.h): send group g+1 carries what receive group g
  // produced; the first send group is ready at once.
  send_tickets_.resize(sc_.sends.size());
  recv_tickets_.resize(sc_.recvs.size());
  // Index of the reduce-scatter send of each allgather receive target (same block and segment):
  // an allgather receive overwrites that region, so that send must have left first.
  for (const Item& it : sc_.sends) rs_sends_ += it.rs ? 1 : 0;
  for (const Item& it : sc_.recvs) rs_recvs_ += it.rs ? 1 : 0;
  overlap_left_ = plan.overlap != nullptr && *plan.overlap;
  if (oc.ctx.size() == 1) {
    finished_ = true;
    return;
  }
  for (std::size_t j = 0; j < sc_.first_group; ++j) post_send(j);
  fill_window(false);
}

void Runner::post_send(std::size_t j) {
  const Item& it = sc_.sends[j];
  const std::uint8_t redop = plan_.reduce_scatter ? static_cast<std::uint8_t>(plan_.op) : 0;
  MsgHeader h = header(plan_.coll, plan_.dtype, static_cast<ReduceOp>(redop), oc_.seq,
                       static_cast<std::uint32_t>(j), plan_.total, it.count * es_);
  send_tickets_[j] = oc_.ctx.post_send(right_, h, plan_.data + it.elem * es_);
  sends_posted_ = j + 1;
}

// Post receive i; false if it cannot be posted yet (its target region has not been sent, or, not
// blocking, has not left yet). Blocking waits run the plan's overlap work while they wait.
bool Runner::post_recv(std::size_t i, bool block) {
  const Item& it = sc_.recvs[i];
  const std::uint8_t redop = plan_.reduce_scatter ? static_cast<std::uint8_t>(plan_.op) : 0;
  MsgHeader h = header(plan_.coll, plan_.dtype, static_cast<ReduceOp>(redop), oc_.seq,
                       static_cast<std::uint32_t>(i), plan_.total, it.count * es_);
  if (it.rs) {
    // Reduced into the working buffer as it arrives (straight out of a shm ring). Safe to post
    // early: this segment's own send comes one step later, after this receive completed.
    Expect e = expect(h);
    e.reduce = true;
    recv_tickets_[i] = oc_.ctx.post_recv(left_, e, plan_.data + it.elem * es_);
    return true;
  }
  // Allgather receive i overwrites the region of reduce-scatter send j = i - rs_recvs (same
  // block and segment): that send must have left the buffer first.
  const std::size_t j = i - rs_recvs_;
  if (j < rs_sends_) {
    if (j >= sends_posted_) return false;
    if (block) {
      while (overlap_left_ && !oc_.ctx.test(send_tickets_[j])) overlap_left_ = (*plan_.overlap)();
      oc_.ctx.wait(send_tickets_[j], oc_.deadline);
    } else if (!oc_.ctx.test(send_tickets_[j])) {
      return false;
    }
  }
  recv_tickets_[i] = oc_.ctx.post_recv(left_, expect(h), plan_.data + it.elem * es_);
  return true;
}

void Runner::fill_window(bool block) {
  while (posted_ < sc_.recvs.size() && posted_ < next_ + kWindow && post_recv(posted_, block))
    ++posted_;
}

void Runner::complete_recv() {
  if (next_ + sc_.first_group < sc_.sends.size()) post_send(next_ + sc_.first_group);
  ++next_;
}

bool Runner::advance() {
  while (!finished_) {
    if (next_ == sc_.recvs.size()) {
      if (!sc_.sends.empty() && !oc_.ctx.test(send_tickets_.back())) return false;
      finished_ = true;
      break;
    }
    fill_window(false);
    if (posted_ <= next_ || !oc_.ctx.test(recv_tickets_[next_])) return false;
    fault::hit(sc_.recvs[next_].rs ? "ring.reduce_scatter" : "ring.allgather");
    complete_recv();
  }
  return true;
}

const Ticket& Runner::blocker() const {
  if (next_ == sc_.recvs.size()) return send_tickets_.back();
  if (posted_ > next_) return recv_tickets_[next_];
  // Receive next_ is an allgather receive waiting for its region's reduce-scatter send, which
  // was posted (send group g+1 follows receive group g, and that receive is already done).
  return send_tickets_[next_ - rs_recvs_];
}

void run(const OpContext& oc, const Plan& plan) {
  Context& ctx = oc.ctx;
  if (ctx.size() == 1) return;
  Runner rr(oc, plan);
  // Waits for t; while it is not done, the plan's overlap work runs a slice per progress pass.
  auto wait = [&](const Ticket& t) {
    while (rr.overlap_left_ && !ctx.test(t)) rr.overlap_left_ = (*plan.overlap)();
    ctx.wait(t, oc.deadline);
  };
  const std::vector<Item>& recvs = rr.sc_.recvs;
  for (; rr.next_ < recvs.size();) {
    const std::size_t i = rr.next_;
    rr.fill_window(true);
    RP_ENFORCE(i < rr.posted_, InternalError, "ring schedule stalled at receive ", i, " of ",
               recvs.size());
    const Item& it = recvs[i];
    fault::hit(it.rs ? "ring.reduce_scatter" : "ring.allgather");
    if (it.rs) {
      // The transport reduces while it receives, so this stage is the wait and the reduce.
      StageScope ts(oc, Stage::kReduce, "reduce", it.count * rr.es_);
      wait(rr.recv_tickets_[i]);
    } else {
      StageScope ts(oc, Stage::kWait, "wait", it.count * rr.es_);
      wait(rr.recv_tickets_[i]);
    }
    rr.complete_recv();
  }
  if (!rr.sc_.sends.empty()) wait(rr.send_tickets_.back());
  rr.finished_ = true;
}

}  // namespace ring
}  // namespace ringpress

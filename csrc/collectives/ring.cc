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

void run(const OpContext& oc, const Plan& plan) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  if (P == 1) return;
  const std::size_t es = dtype_size(plan.dtype);
  const int right = (r + 1) % P;
  const int left = (r + P - 1) % P;
  // Send and receive sequences (see ring.h): send group g+1 carries what receive group g produced.
  Schedule sc = schedule(plan, P, r);
  const std::vector<Item>& sends = sc.sends;
  const std::vector<Item>& recvs = sc.recvs;
  const std::size_t first_group = sc.first_group;  // items in the first send group (ready at once)
  const std::uint8_t redop = plan.reduce_scatter ? static_cast<std::uint8_t>(plan.op) : 0;
  auto make_header = [&](std::size_t index, const Item& it) {
    MsgHeader h = header(plan.coll, plan.dtype, static_cast<ReduceOp>(redop), oc.seq,
                         static_cast<std::uint32_t>(index), plan.total, it.count * es);
    return h;
  };

  constexpr std::size_t kWindow = 4;
  std::vector<Ticket> send_tickets(sends.size());
  std::vector<Ticket> recv_tickets(recvs.size());
  // Index of the reduce-scatter send of each allgather receive target (same block and segment):
  // an allgather receive overwrites that region, so that send must have left first.
  std::size_t rs_sends = 0, rs_recvs = 0;
  for (const Item& it : sends) rs_sends += it.rs ? 1 : 0;
  for (const Item& it : recvs) rs_recvs += it.rs ? 1 : 0;

  std::size_t sends_posted = 0;  // sends are posted strictly in order
  auto post_send = [&](std::size_t j) {
    const Item& it = sends[j];
    send_tickets[j] = ctx.post_send(right, make_header(j, it), plan.data + it.elem * es);
    sends_posted = j + 1;
  };
  // Waits for t; while it is not done, the plan's overlap work runs a slice per progress pass.
  bool overlap_left = plan.overlap != nullptr && *plan.overlap;
  auto wait = [&](const Ticket& t) {
    while (overlap_left && !ctx.test(t)) overlap_left = (*plan.overlap)();
    ctx.wait(t, oc.deadline);
  };
  std::size_t posted = 0;
  // Post receive i; false if it must wait (its target region has not been sent yet).
  auto post_recv = [&](std::size_t i) {
    const Item& it = recvs[i];
    MsgHeader h = make_header(i, it);
    if (it.rs) {
      // Reduced into the working buffer as it arrives (straight out of a shm ring). Safe to post
      // early: this segment's own send comes one step later, after this receive completed.
      Expect e = expect(h);
      e.reduce = true;
      recv_tickets[i] = ctx.post_recv(left, e, plan.data + it.elem * es);
      return true;
    }
    // Allgather receive i overwrites the region of reduce-scatter send j = i - rs_recvs (same
    // block and segment): that send must have left the buffer first.
    const std::size_t j = i - rs_recvs;
    if (j < rs_sends) {
      if (j >= sends_posted) return false;
      wait(send_tickets[j]);
    }
    recv_tickets[i] = ctx.post_recv(left, expect(h), plan.data + it.elem * es);
    return true;
  };
  auto fill_window = [&](std::size_t processed) {
    while (posted < recvs.size() && posted < processed + kWindow && post_recv(posted)) ++posted;
  };

  for (std::size_t j = 0; j < first_group; ++j) post_send(j);
  fill_window(0);
  for (std::size_t i = 0; i < recvs.size(); ++i) {
    RP_ENFORCE(i < posted, InternalError, "ring schedule stalled at receive ", i, " of ",
               recvs.size());
    const Item& it = recvs[i];
    fault::hit(it.rs ? "ring.reduce_scatter" : "ring.allgather");
    if (it.rs) {
      // The transport reduces while it receives, so this stage is the wait and the reduce.
      StageScope ts(oc, Stage::kReduce, "reduce", it.count * es);
      wait(recv_tickets[i]);
    } else {
      StageScope ts(oc, Stage::kWait, "wait", it.count * es);
      wait(recv_tickets[i]);
    }
    if (i + first_group < sends.size()) post_send(i + first_group);
    fill_window(i + 1);
  }
  if (!sends.empty()) wait(send_tickets.back());
}

}  // namespace ring
}  // namespace ringpress

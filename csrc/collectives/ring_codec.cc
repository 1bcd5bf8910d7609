// Compressed ring allreduce: the pipelined ring of ring.h with every segment encoded on the wire.
//
// Schedule: the same blocks, steps and segments as ring.cc. Differences:
//   reduce-scatter  a rank encodes its (partial-sum) segment into a send slot and sends the
//                   variable-length payload; the receiver decodes and reduces it (dequantize-add
//                   for lossy kinds, so each hop requantizes the new partial sum).
//   allgather       the owner of a block encodes its final segment once, and for a lossy kind
//                   replaces its own values with the decoded ones; every other rank decodes the
//                   payload and forwards the same bytes unchanged. So all ranks hold identical
//                   bits, and the allgather adds no requantization error.
// Cost (P ranks, n bytes, compression ratio c, encode/decode rates E/D per byte):
//   2(P-1) alpha + 2 (P-1)/P n (beta/c + E + D) + (P-1)/P n gamma;
// the pipeline overlaps encoding of segment k+1 with the transfer of segment k, so on a slow link
// the time approaches 2 (P-1)/P n beta / c. Lossy error: one quantization per hop of the
// reduce-scatter (P-1 for the last block) plus one for the allgather.
//
// Error feedback (o.residual, n float32 kept by the caller; lossy kinds only: lossless leaves it
// unchanged). Each rank compensates the rounding of every segment it encodes, not only of its own
// input (error feedback at every hop, as DoubleSqueeze does at worker and server):
//   * this rank's contribution is x' = x + r, added segment by segment just before first use
//     (its first-hop encode for block r-1; the reduce of the arriving partial sum otherwise);
//   * every element is encoded by this rank exactly once per call: in a reduce-scatter send
//     (value p = partial sum of the ranks before it + x'; p = x' for block r-1, the first hop),
//     or, for block r, in the owner's allgather encoding (p = the full sum). There r = p - D(E(p)).
// So the result is sum over ranks of x' minus sum over ranks of the new r, up to the fp32
// rounding of the additions: the outputs summed over steps plus every rank's final residual equal
// the inputs summed, for any number of steps (the topk invariant), and a rounding bias (int4 on
// values just below a threshold) is carried forward instead of accumulating. For block r-1,
// r = x' - D(E(x')) of this rank's own data; elsewhere it also holds the requantization error of
// the partial sums this rank forwarded. Cost: two elementwise passes over n (add r, new r) and a
// decode of the (P-1)/P n elements sent in the reduce-scatter (the owner's encoding is decoded
// anyway); no extra encode, bytes or messages. P = 1: nothing is encoded and x, r are unchanged.
// After an error x and r hold partial results (the communicator is broken anyway, errors.md).
#include <algorithm>
#include <cstring>

#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"
#include "ringpress/trace.h"

namespace ringpress {

using ring::Item;

void allreduce_ring_compressed(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  std::unique_ptr<Codec> codec = make_codec(o.compression.kind, o.compression, o.dtype, o.op);
  const bool exact = find_codec(static_cast<int>(o.compression.kind))->exact;
  if (P == 1) return;
  const std::size_t es = dtype_size(o.dtype);
  const int right = (r + 1) % P;
  const int left = (r + P - 1) % P;
  auto* data = static_cast<unsigned char*>(o.data);
  ring::Plan plan;
  ring::even_blocks(o.count, P, &plan.off, &plan.len);
  plan.dtype = o.dtype;
  plan.segment_bytes = o.segment_bytes;
  const ring::Schedule sc = ring::schedule(plan, P, r);
  const std::vector<Item>& sends = sc.sends;
  const std::vector<Item>& recvs = sc.recvs;
  const std::size_t first_group = sc.first_group;

  // The codec id travels in the header's codec byte: a rank compressing differently from its
  // peers is a collective mismatch, not garbage.
  auto make_header = [&](std::size_t index, std::size_t bytes) {
    return ring::header(CollKind::kAllreduce, o.dtype, o.op, oc.seq,
                        static_cast<std::uint32_t>(index), o.count, bytes, o.compression.kind);
  };

  // Every message gets its own slot (offsets below): the sender never waits for a send to leave
  // before encoding the next one, and a received payload stays in place while it is forwarded.
  // Waiting for a send inside the schedule would deadlock two ranks whose transport buffers are
  // full of each other's unread messages. Memory: about 2 (P-1)/P n / c for each direction.
  // Slots start on 64-byte boundaries: a codec writes its payload through typed pointers (the
  // blockwise scales are floats), and an odd-sized int4 payload would misalign the next slot.
  auto slot = [](std::size_t bytes) { return (bytes + 63) & ~std::size_t{63}; };
  std::vector<std::size_t> soff(sends.size() + 1, 0), roff(recvs.size() + 1, 0);
  for (std::size_t j = 0; j < sends.size(); ++j)
    soff[j + 1] = soff[j] + slot(codec->bound(sends[j].count));
  for (std::size_t i = 0; i < recvs.size(); ++i)
    roff[i + 1] = roff[i] + slot(codec->bound(recvs[i].count));
  std::shared_ptr<Buffer> sbuf = Buffer::acquire(std::max<std::size_t>(soff.back(), 1));
  std::shared_ptr<Buffer> rbuf = Buffer::acquire(std::max<std::size_t>(roff.back(), 1));
  constexpr std::size_t kWindow = 8;  // receives posted ahead
  std::vector<Ticket> send_tickets(sends.size());
  std::vector<bool> send_posted(sends.size(), false);
  std::vector<Ticket> recv_tickets(recvs.size());
  std::vector<std::size_t> received(recvs.size(), 0);

  // Error feedback (header comment): x += r where this rank's data first enters the ring (the
  // first group's sends, block r-1, and the reduce-scatter receives, every other block: each
  // element once), then r = p - D(E(p)) at every encode.
  float* const residual = exact ? nullptr : o.residual;
  auto add_residual = [&](const Item& it) {
    float* x = reinterpret_cast<float*>(data) + it.elem;
    const float* rr = residual + it.elem;
    for (std::size_t k = 0; k < it.count; ++k) x[k] += rr[k];
  };

  // Encode data[it] into its slot and send it as message j.
  auto encode_and_send = [&](std::size_t j, bool owner_final) {
    const Item& it = sends[j];
    unsigned char* out = sbuf->data() + soff[j];
    unsigned char* seg = data + it.elem * es;
    std::size_t bytes;
    if (residual) {
      StageScope ts(oc, Stage::kEncode, "encode+feedback", it.count * es);
      if (j < first_group) add_residual(it);
      // The owner keeps the decoded values (below); r = what this encoding dropped.
      bytes = codec->encode_feedback(reinterpret_cast<float*>(seg), residual + it.elem, it.count,
                                     out, oc.seq, owner_final);
    } else {
      StageScope ts(oc, Stage::kEncode, "encode", it.count * es);
      bytes = codec->encode(seg, it.count, out, oc.seq);
      if (owner_final && !exact) {
        // Keep what everyone else will decode, so every rank ends with the same bits.
        codec->decode(out, bytes, seg, it.count, false);
      }
    }
    if (fault::hit("ring.encode") == fault::Action::kCorrupt) fault::corrupt(out, bytes);
    send_tickets[j] = ctx.post_send(right, make_header(j, bytes), out);
    send_posted[j] = true;
  };

  std::size_t posted = 0;
  auto post_recv = [&](std::size_t i) {
    Expect e = ring::expect(make_header(i, 0));
    e.len_exact = false;
    e.capacity = codec->bound(recvs[i].count);
    e.received = &received[i];
    recv_tickets[i] = ctx.post_recv(left, e, rbuf->data() + roff[i]);
  };
  auto fill_window = [&](std::size_t processed) {
    while (posted < recvs.size() && posted < processed + kWindow) post_recv(posted++);
  };

  fill_window(0);
  // Bytes move only while this thread drives the transport: push each encoded segment out before
  // encoding the next, so the wire starts after one segment's encode, not the whole block's.
  for (std::size_t j = 0; j < first_group; ++j) {
    encode_and_send(j, false);
    (void)ctx.test(send_tickets[j]);
  }
  for (std::size_t i = 0; i < recvs.size(); ++i) {
    const Item& it = recvs[i];
    fault::hit(it.rs ? "ring.reduce_scatter" : "ring.allgather");
    if (residual && it.rs) {
      // The only receive reduced into this segment: add r first (while the message may still be
      // in flight), so the partial sum lands on x' = x + r.
      StageScope ts(oc, Stage::kReduce, "feedback", it.count * es);
      add_residual(it);
    }
    {
      StageScope ts(oc, Stage::kWait, "wait", it.count * es);
      ctx.wait(recv_tickets[i], oc.deadline);
    }
    unsigned char* in = rbuf->data() + roff[i];
    {
      fault::hit("ring.decode");
      StageScope ts(oc, Stage::kDecode, it.rs ? "decode+reduce" : "decode", it.count * es);
      // A payload that does not decode names its sender (by its rank in the job).
      ScopedErrorContext from_left("", -1, ctx.global_rank(left));
      codec->decode(in, received[i], data + it.elem * es, it.count, it.rs);
    }
    const std::size_t j = i + first_group;
    if (j < sends.size()) {
      if (it.rs) {
        // Next hop of the reduce-scatter, or (last step) this rank's final block: encode.
        encode_and_send(j, !sends[j].rs);
      } else {
        // Allgather: forward the received bytes unchanged.
        send_tickets[j] = ctx.post_send(right, make_header(j, received[i]), in);
        send_posted[j] = true;
      }
    }
    fill_window(i + 1);
  }
  for (std::size_t j = sends.size(); j-- > 0;) {
    if (send_posted[j]) {
      ctx.wait(send_tickets[j], oc.deadline);
      break;
    }
  }
}

}  // namespace ringpress

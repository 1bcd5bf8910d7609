// Compressed ring allreduce: the pipelined ring of ring.h with every segment encoded on the wire.
//
// Schedule: the same blocks, steps and segments as ring.cc. Differences:
//   reduce-scatter  a rank encodes its (partial-sum) segment into a send slot and sends the
//                   variable-length payload; the receiver decodes and reduces it (dequantize-add
//                   for lossy kinds, so each hop requantizes the new partial sum).
//   allgather       the owner of a block encodes its final segment once, and for a lossy kind
//                   replaces its own values with the decoded ones; every other rank decodes the
//                   payload and forwards the same bytes unchanged. So all ranks hold identical bits,
//                   and the allgather adds no requantization error.
// Cost (P ranks, n bytes, compression ratio c, encode/decode rates E/D per byte):
//   2(P-1) alpha + 2 (P-1)/P n (beta/c + E + D) + (P-1)/P n gamma;
// the pipeline overlaps encoding of segment k+1 with the transfer of segment k, so on a slow link
// the time approaches 2 (P-1)/P n beta / c. Lossy error: one quantization per hop of the
// reduce-scatter (P-1 for the last block) plus one for the allgather.
#include <algorithm>
#include <cstring>

#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/engine.h"
#include "ringpress/fault.h"
#include "segment_codec.h"

namespace ringpress {

using ring::Item;

void allreduce_ring_compressed(const OpContext& oc, const AllreduceOptions& o) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  std::unique_ptr<ring::SegmentCodec> codec = ring::make_segment_codec(o.compression, o.dtype, o.op);
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

  // The compression kind travels in the high bits of the op byte: a rank compressing differently
  // from its peers is a collective mismatch, not garbage.
  const auto redop = static_cast<ReduceOp>(static_cast<std::uint8_t>(o.op) |
                                           (static_cast<std::uint8_t>(o.compression.kind) << 4));
  auto make_header = [&](std::size_t index, std::size_t bytes) {
    return ring::header(CollKind::kAllreduce, o.dtype, redop, oc.seq, static_cast<std::uint32_t>(index),
                        o.count, bytes);
  };

  // Every message gets its own slot (offsets below): the sender never waits for a send to leave
  // before encoding the next one, and a received payload stays in place while it is forwarded.
  // Waiting for a send inside the schedule would deadlock two ranks whose transport buffers are
  // full of each other's unread messages. Memory: about 2 (P-1)/P n / c for each direction.
  std::vector<std::size_t> soff(sends.size() + 1, 0), roff(recvs.size() + 1, 0);
  for (std::size_t j = 0; j < sends.size(); ++j) soff[j + 1] = soff[j] + codec->bound(sends[j].count);
  for (std::size_t i = 0; i < recvs.size(); ++i) roff[i + 1] = roff[i] + codec->bound(recvs[i].count);
  std::shared_ptr<Buffer> sbuf = Buffer::acquire(std::max<std::size_t>(soff.back(), 1));
  std::shared_ptr<Buffer> rbuf = Buffer::acquire(std::max<std::size_t>(roff.back(), 1));
  constexpr std::size_t kWindow = 8;  // receives posted ahead
  std::vector<Ticket> send_tickets(sends.size());
  std::vector<bool> send_posted(sends.size(), false);
  std::vector<Ticket> recv_tickets(recvs.size());
  std::vector<std::size_t> received(recvs.size(), 0);

  // Encode data[it] into its slot and send it as message j.
  auto encode_and_send = [&](std::size_t j, bool owner_final) {
    const Item& it = sends[j];
    unsigned char* out = sbuf->data() + soff[j];
    std::size_t bytes;
    {
      StageScope ts(oc, Stage::kEncode, "encode", it.count * es);
      bytes = codec->encode(data + it.elem * es, it.count, out);
      if (owner_final && !codec->exact()) {
        // Keep what everyone else will decode, so every rank ends with the same bits.
        codec->decode(out, bytes, data + it.elem * es, it.count, false);
      }
    }
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
    {
      StageScope ts(oc, Stage::kWait, "wait", it.count * es);
      ctx.wait(recv_tickets[i], oc.deadline);
    }
    unsigned char* in = rbuf->data() + roff[i];
    {
      StageScope ts(oc, Stage::kDecode, it.rs ? "decode+reduce" : "decode", it.count * es);
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

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
// anyway); no extra encode, bytes or messages. The blockwise int codecs fold all of it into their
// own passes over L1 blocks (Codec::encode_feedback_fold on the first hop, decode_reduce_fold where
// a partial sum arrives, the new r inside the encode), so for them feedback costs no pass of its
// own; other codecs add r where a partial sum arrives in a pass before the wait (overlapping it).
// P = 1: nothing is encoded and x, r are unchanged.
// After an error x and r hold partial results (the communicator is broken anyway, errors.md).
#include <algorithm>
#include <cstring>

#include "ring.h"
#include "ringpress/buffer_pool.h"
#include "ringpress/fault.h"
#include "ringpress/reduce.h"
#include "ringpress/trace.h"

namespace ringpress {

using ring::Item;

namespace ring {

// The schedule of the function below as a resumable state machine (ring.h, Stepper).
class CodecRunner final : public Stepper {
 public:
  CodecRunner(const OpContext& oc, const AllreduceOptions& o);
  bool advance() override;
  const Ticket& blocker() const override;
  bool receives_done() const override { return i_ == sc_.recvs.size(); }
  void run();  // to completion on this thread, blocking on each receive

 private:
  bool step(bool block);  // handle receive i_; false when it is not there yet (block = false)
  void encode_and_send(std::size_t j, bool owner_final);
  void post_recv(std::size_t i);
  void fill_window();
  const Ticket* last_send() const;

  static constexpr std::size_t kWindow = 8;  // receives posted ahead
  const OpContext& oc_;
  const AllreduceOptions o_;
  std::unique_ptr<Codec> codec_;
  bool exact_;
  std::size_t es_;
  int right_, left_;
  Plan plan_;
  Schedule sc_;
  std::vector<std::size_t> soff_, roff_;
  std::shared_ptr<Buffer> sbuf_, rbuf_;
  std::vector<Ticket> send_tickets_, recv_tickets_;
  std::vector<bool> send_posted_;
  std::vector<std::size_t> received_;
  float* residual_;
  bool fold_ = false;  // the codec adds r inside its decode+reduce (Codec::folds_decode_reduce)
  std::size_t posted_ = 0;  // receives posted
  std::size_t i_ = 0;       // the receive to handle next
  bool entered_ = false;    // receive i_'s work before its wait is done
};

CodecRunner::CodecRunner(const OpContext& oc, const AllreduceOptions& o)
    : oc_(oc),
      o_(o),
      codec_(make_codec(o.compression.kind, o.compression, o.dtype, o.op)),
      exact_(find_codec(static_cast<int>(o.compression.kind))->exact),
      es_(dtype_size(o.dtype)),
      right_((oc.ctx.rank() + 1) % oc.ctx.size()),
      left_((oc.ctx.rank() + oc.ctx.size() - 1) % oc.ctx.size()) {
  const int P = oc.ctx.size();
  even_blocks(o.count, P, &plan_.off, &plan_.len);
  plan_.dtype = o.dtype;
  plan_.segment_bytes = o.segment_bytes;
  sc_ = schedule(plan_, P, oc.ctx.rank());
  // Every message gets its own slot (offsets below): the sender never waits for a send to leave
  // before encoding the next one, and a received payload stays in place while it is forwarded.
  // Waiting for a send inside the schedule would deadlock two ranks whose transport buffers are
  // full of each other's unread messages. Memory: about 2 (P-1)/P n / c for each direction.
  // Slots start on 64-byte boundaries: a codec writes its payload through typed pointers (the
  // blockwise scales are floats), and an odd-sized int4 payload would misalign the next slot.
  auto slot = [](std::size_t bytes) { return (bytes + 63) & ~std::size_t{63}; };
  const std::vector<Item>& sends = sc_.sends;
  const std::vector<Item>& recvs = sc_.recvs;
  soff_.assign(sends.size() + 1, 0);
  roff_.assign(recvs.size() + 1, 0);
  for (std::size_t j = 0; j < sends.size(); ++j)
    soff_[j + 1] = soff_[j] + slot(codec_->bound(sends[j].count));
  for (std::size_t i = 0; i < recvs.size(); ++i)
    roff_[i + 1] = roff_[i] + slot(codec_->bound(recvs[i].count));
  sbuf_ = Buffer::acquire(std::max<std::size_t>(soff_.back(), 1));
  rbuf_ = Buffer::acquire(std::max<std::size_t>(roff_.back(), 1));
  send_tickets_.resize(sends.size());
  send_posted_.assign(sends.size(), false);
  recv_tickets_.resize(recvs.size());
  received_.assign(recvs.size(), 0);
  // Error feedback (header comment): x += r where this rank's data first enters the ring (the
  // first group's sends, block r-1, and the reduce-scatter receives, every other block: each
  // element once), then r = p - D(E(p)) at every encode.
  residual_ = exact_ ? nullptr : o.residual;
  fold_ = residual_ != nullptr && codec_->folds_decode_reduce();

  fill_window();
  // Bytes move only while this thread drives the transport: push each encoded segment out before
  // encoding the next, so the wire starts after one segment's encode, not the whole block's.
  for (std::size_t j = 0; j < sc_.first_group; ++j) {
    encode_and_send(j, false);
    (void)oc_.ctx.test(send_tickets_[j]);
  }
}

// Encode data[it] into its slot and send it as message j. The codec id travels in the header's
// codec byte: a rank compressing differently from its peers is a collective mismatch, not
// garbage.
void CodecRunner::encode_and_send(std::size_t j, bool owner_final) {
  const Item& it = sc_.sends[j];
  unsigned char* out = sbuf_->data() + soff_[j];
  unsigned char* seg = static_cast<unsigned char*>(o_.data) + it.elem * es_;
  std::size_t bytes;
  if (residual_) {
    StageScope ts(oc_, Stage::kEncode, "encode+feedback", it.count * es_);
    // The owner keeps the decoded values (below); r = what this encoding dropped. The first
    // hop of this rank's own block adds r first (x' = x + r), in the codec's pass.
    auto* x = reinterpret_cast<float*>(seg);
    bytes = j < sc_.first_group ? codec_->encode_feedback_fold(x, residual_ + it.elem, it.count,
                                                               out, oc_.seq, owner_final)
                                : codec_->encode_feedback(x, residual_ + it.elem, it.count, out,
                                                          oc_.seq, owner_final);
  } else {
    StageScope ts(oc_, Stage::kEncode, "encode", it.count * es_);
    bytes = codec_->encode(seg, it.count, out, oc_.seq);
    if (owner_final && !exact_) {
      // Keep what everyone else will decode, so every rank ends with the same bits.
      codec_->decode(out, bytes, seg, it.count, false);
    }
  }
  if (fault::hit("ring.encode") == fault::Action::kCorrupt) fault::corrupt(out, bytes);
  send_tickets_[j] =
      oc_.ctx.post_send(right_,
                        header(CollKind::kAllreduce, o_.dtype, o_.op, oc_.seq,
                               static_cast<std::uint32_t>(j), o_.count, bytes, o_.compression.kind),
                        out);
  send_posted_[j] = true;
}

void CodecRunner::post_recv(std::size_t i) {
  Expect e = expect(header(CollKind::kAllreduce, o_.dtype, o_.op, oc_.seq,
                           static_cast<std::uint32_t>(i), o_.count, 0, o_.compression.kind));
  e.len_exact = false;
  e.capacity = codec_->bound(sc_.recvs[i].count);
  e.received = &received_[i];
  recv_tickets_[i] = oc_.ctx.post_recv(left_, e, rbuf_->data() + roff_[i]);
}

void CodecRunner::fill_window() {
  while (posted_ < sc_.recvs.size() && posted_ < i_ + kWindow) post_recv(posted_++);
}

bool CodecRunner::step(bool block) {
  const Item& it = sc_.recvs[i_];
  if (!entered_) {
    fault::hit(it.rs ? "ring.reduce_scatter" : "ring.allgather");
    if (residual_ && it.rs && !fold_) {
      // The only receive reduced into this segment: add r first (while the message may still be
      // in flight), so the partial sum lands on x' = x + r.
      StageScope ts(oc_, Stage::kReduce, "feedback", it.count * es_);
      reduce_into(DType::kF32, ReduceOp::kSum, reinterpret_cast<float*>(o_.data) + it.elem,
                  residual_ + it.elem, it.count);
    }
    entered_ = true;
  }
  if (block) {
    StageScope ts(oc_, Stage::kWait, "wait", it.count * es_);
    oc_.ctx.wait(recv_tickets_[i_], oc_.deadline);
  } else if (!oc_.ctx.test(recv_tickets_[i_])) {
    return false;
  }
  unsigned char* in = rbuf_->data() + roff_[i_];
  {
    fault::hit("ring.decode");
    StageScope ts(oc_, Stage::kDecode, it.rs ? "decode+reduce" : "decode", it.count * es_);
    // A payload that does not decode names its sender (by its rank in the job).
    ScopedErrorContext from_left("", -1, oc_.ctx.global_rank(left_));
    if (residual_ && it.rs && fold_) {
      // The same add of r, folded into the codec's decode+reduce pass ((x + r) + decoded).
      codec_->decode_reduce_fold(in, received_[i_], reinterpret_cast<float*>(o_.data) + it.elem,
                                 residual_ + it.elem, it.count);
    } else {
      codec_->decode(in, received_[i_], static_cast<unsigned char*>(o_.data) + it.elem * es_,
                     it.count, it.rs);
    }
  }
  const std::size_t j = i_ + sc_.first_group;
  if (j < sc_.sends.size()) {
    if (it.rs) {
      // Next hop of the reduce-scatter, or (last step) this rank's final block: encode.
      encode_and_send(j, !sc_.sends[j].rs);
    } else {
      // Allgather: forward the received bytes unchanged.
      send_tickets_[j] = oc_.ctx.post_send(
          right_,
          header(CollKind::kAllreduce, o_.dtype, o_.op, oc_.seq, static_cast<std::uint32_t>(j),
                 o_.count, received_[i_], o_.compression.kind),
          in);
      send_posted_[j] = true;
    }
  }
  ++i_;
  entered_ = false;
  fill_window();
  return true;
}

const Ticket* CodecRunner::last_send() const {
  for (std::size_t j = sc_.sends.size(); j-- > 0;)
    if (send_posted_[j]) return &send_tickets_[j];
  return nullptr;
}

bool CodecRunner::advance() {
  while (i_ < sc_.recvs.size())
    if (!step(false)) return false;
  const Ticket* t = last_send();
  return t == nullptr || oc_.ctx.test(*t);
}

const Ticket& CodecRunner::blocker() const {
  if (i_ < sc_.recvs.size()) return recv_tickets_[i_];
  return *last_send();  // advance() returned false: there is one
}

void CodecRunner::run() {
  while (i_ < sc_.recvs.size()) (void)step(true);
  if (const Ticket* t = last_send()) oc_.ctx.wait(*t, oc_.deadline);
}

std::unique_ptr<Stepper> compressed_runner(const OpContext& oc, const AllreduceOptions& o) {
  return std::make_unique<CodecRunner>(oc, o);
}

}  // namespace ring

void allreduce_ring_compressed(const OpContext& oc, const AllreduceOptions& o) {
  if (oc.ctx.size() == 1) {
    (void)make_codec(o.compression.kind, o.compression, o.dtype, o.op);  // its checks
    return;
  }
  ring::CodecRunner(oc, o).run();
}

}  // namespace ringpress

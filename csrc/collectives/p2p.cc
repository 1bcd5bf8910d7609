// Point-to-point messages (contract in collectives.h): every message of the list is posted at
// once, receives first, then all are awaited. The header carries the direction's p2p sequence
// number (not the collective sequence: other ranks do not see these requests) and the tag in the
// `step` field, so the receiver checks both. Cost: alpha + n beta per message.
#include "ring.h"
#include "ringpress/fault.h"

namespace ringpress {

void point_to_point(const OpContext& oc, const std::vector<PeerMessage>& msgs) {
  Context& ctx = oc.ctx;
  const int P = ctx.size();
  const int r = ctx.rank();
  std::vector<Ticket> tickets;
  tickets.reserve(msgs.size());
  for (int pass = 0; pass < 2; ++pass) {
    for (const PeerMessage& m : msgs) {
      if (m.send == (pass == 0)) continue;  // receives first
      RP_ENFORCE(m.peer >= 0 && m.peer < P && m.peer != r, UsageError, "p2p peer ", m.peer,
                 " is not another rank of ", P);
      RP_ENFORCE(m.data != nullptr || m.bytes == 0, UsageError, "p2p with a null buffer");
      fault::hit(m.send ? "send" : "recv");
      MsgHeader h = ring::header(CollKind::kSendRecv, DType::kBytes, ReduceOp::kSum, m.seq, m.tag,
                                 m.bytes, m.bytes);
      tickets.push_back(m.send ? ctx.post_send(m.peer, h, m.data)
                               : ctx.post_recv(m.peer, ring::expect(h), m.data));
    }
  }
  for (auto& t : tickets) ctx.wait(t, oc.deadline);
}

}  // namespace ringpress

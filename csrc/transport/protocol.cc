// Transport wire protocol: pure parsing/validation functions (see protocol.h).
#include "protocol.h"

#include <iomanip>
#include <sstream>

#include "ringpress/codec.h"
#include "ringpress/dtype.h"
#include "ringpress/reduce.h"

namespace ringpress::protocol {

std::string describe(const MsgHeader& h) {
  std::ostringstream os;
  const auto coll = static_cast<CollKind>(h.coll);
  os << coll_kind_name(coll) << " #" << h.seq;
  if (h.dtype != 0 && dtype_valid(h.dtype)) os << " " << dtype_name(static_cast<DType>(h.dtype));
  if (coll == CollKind::kAllreduceCoalesced) {
    // count carries a digest of the tensor sizes (wire-format.md), not an element count
    os << " split " << std::hex << std::setw(16) << std::setfill('0') << h.count << std::dec;
  } else if (h.step < kAgreeStep || h.count != 0) {
    os << " x" << h.count;
  }
  if (h.step >= kAgreeStep) os << " (agreement)";
  if (coll == CollKind::kAllreduce || coll == CollKind::kAllreduceCoalesced ||
      static_cast<CollKind>(h.coll) == CollKind::kReduceScatter ||
      static_cast<CollKind>(h.coll) == CollKind::kReduce) {
    if (h.redop < kNumReduceOps) os << " " << reduce_op_name(static_cast<ReduceOp>(h.redop));
    if (h.codec != 0) {
      const CodecInfo* c = find_codec(h.codec);
      os << " compressed " << (c ? c->name : "?") << "(" << static_cast<int>(h.codec) << ")";
    }
  } else if (static_cast<CollKind>(h.coll) == CollKind::kBroadcast ||
             static_cast<CollKind>(h.coll) == CollKind::kGather ||
             static_cast<CollKind>(h.coll) == CollKind::kScatter) {
    os << " root " << static_cast<int>(h.redop);  // the root's low 8 bits (wire-format.md)
  } else if (static_cast<CollKind>(h.coll) == CollKind::kSendRecv) {
    os << " tag " << h.step;  // point-to-point: step carries the tag
  }
  return os.str();
}

// Abort payload: u8 kind, i32 origin rank, i32 peer, u32 op length, op, u32 detail length, detail.
Bytes encode_abort(const Error& e, int origin) {
  Bytes out;
  auto put32 = [&](std::uint32_t v) {
    for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
  };
  out.push_back(static_cast<std::uint8_t>(e.kind()));
  put32(static_cast<std::uint32_t>(origin));
  put32(static_cast<std::uint32_t>(e.peer()));
  std::string op = e.op().substr(0, 256);
  std::string detail = e.detail().substr(0, 4096);
  put32(static_cast<std::uint32_t>(op.size()));
  out.insert(out.end(), op.begin(), op.end());
  put32(static_cast<std::uint32_t>(detail.size()));
  out.insert(out.end(), detail.begin(), detail.end());
  return out;
}

// The error a rank raises when a peer's ABORT arrives. Hostile input: every length is checked.
[[noreturn]] void raise_remote_abort(const Bytes& b, int rank, int from) {
  std::size_t p = 0;
  auto get32 = [&](std::uint32_t* v) {
    if (p + 4 > b.size()) return false;
    *v = 0;
    for (int i = 0; i < 4; ++i) *v |= static_cast<std::uint32_t>(b[p + i]) << (8 * i);
    p += 4;
    return true;
  };
  std::uint32_t origin = 0, peer = 0, oplen = 0, dlen = 0;
  ErrorContext ctx{rank, from, current_error_context().op};
  if (b.empty() || b[0] > static_cast<std::uint8_t>(ErrorKind::kInternal)) {
    RP_THROW_CTX(TransportError, ctx, "peer ", from, " aborted the job with an unreadable message");
  }
  ErrorKind kind = static_cast<ErrorKind>(b[0]);
  p = 1;
  if (!get32(&origin) || !get32(&peer) || !get32(&oplen) || p + oplen > b.size()) {
    RP_THROW_CTX(TransportError, ctx, "peer ", from, " aborted the job with a truncated message");
  }
  std::string op(reinterpret_cast<const char*>(b.data() + p), oplen);
  p += oplen;
  if (!get32(&dlen) || p + dlen > b.size()) {
    RP_THROW_CTX(TransportError, ctx, "peer ", from, " aborted the job with a truncated message");
  }
  std::string detail(reinterpret_cast<const char*>(b.data() + p), dlen);
  int culprit = static_cast<int>(peer);
  // Name the peer that caused the failure (e.g. the one that died), not the messenger.
  ctx.peer = culprit >= 0 ? culprit : static_cast<int>(origin);
  if (!op.empty()) ctx.op = op;
  detail::throw_error(kind, ctx, detail::str_cat("rank ", origin, " aborted the job: ", detail),
                      __FILE__, __LINE__);
}

// An exception_ptr holding the concrete class of `e` (a plain copy would slice to Error).
std::exception_ptr concrete_error(const Error& e) {
  ErrorContext c{e.rank(), e.peer(), e.op()};
  switch (e.kind()) {
    case ErrorKind::kUsage:
      return std::make_exception_ptr(UsageError(c, e.detail(), e.file(), e.line()));
    case ErrorKind::kTransport:
      return std::make_exception_ptr(TransportError(c, e.detail(), e.file(), e.line()));
    case ErrorKind::kTimeout:
      return std::make_exception_ptr(TimeoutError(c, e.detail(), e.file(), e.line()));
    case ErrorKind::kWireFormat:
      return std::make_exception_ptr(WireFormatError(c, e.detail(), e.file(), e.line()));
    case ErrorKind::kCodec:
      return std::make_exception_ptr(CodecError(c, e.detail(), e.file(), e.line()));
    case ErrorKind::kInternal: break;
  }
  return std::make_exception_ptr(InternalError(c, e.detail(), e.file(), e.line()));
}

void check_header(const MsgHeader& h, const Expect& e, int rank, int peer) {
  ErrorContext ctx{rank, peer, current_error_context().op};
  const MsgHeader& x = e.h;
  if (h.type != static_cast<std::uint8_t>(MsgType::kData)) {
    RP_THROW_CTX(TransportError, ctx, "peer ", peer, " sent message type ",
                 static_cast<int>(h.type), " where data was expected");
  }
  // Point-to-point messages carry their tag in `step`: a different tag is the caller's mismatch.
  const bool p2p = x.coll == static_cast<std::uint8_t>(CollKind::kSendRecv);
  if (h.coll != x.coll || h.seq != x.seq || h.dtype != x.dtype || h.redop != x.redop ||
      h.codec != x.codec || h.count != x.count || (p2p && h.step != x.step)) {
    RP_THROW_CTX(UsageError, ctx, "collective mismatch: rank ", rank, " runs ", describe(x),
                 " but peer ", peer, " runs ", describe(h),
                 " (every rank must issue the same collectives in the same order with the same"
                 " dtype, op, compression and element count)");
  }
  if (h.step != x.step) {
    RP_THROW_CTX(InternalError, ctx, "message step ", h.step, " from peer ", peer, " where step ",
                 x.step, " was expected in ", describe(x));
  }
  if (e.len_exact ? h.len != x.len : h.len > e.capacity) {
    RP_THROW_CTX(UsageError, ctx, "size mismatch in ", describe(x), ": peer ", peer, " sent ",
                 h.len, " bytes, this rank expected ", e.len_exact ? "" : "at most ",
                 e.len_exact ? x.len : e.capacity);
  }
}

}  // namespace ringpress::protocol

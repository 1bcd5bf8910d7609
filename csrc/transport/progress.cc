// Transport progress: the epoll/spin loop's sleep, per-pair reads and writes over a socket or a
// shm ring, header acceptance and the shm control channel (doorbell, bye, abort bytes).
//
// Contract: progress_all() moves every posted send and receive as far as the sockets and rings
// allow without blocking, completes operations in posting order per pair (FIFO matching), and
// raises (TransportError, or the peer's own error from its ABORT) on the first failure; wait()
// and test() (context.cc) turn that into a context abort. A header is checked against what the
// receiver expects before any payload byte is read into the caller's buffer.
// Cost: one pass is O(pairs) plus one sendmsg/recv (or ring copy) per pair with work; sends to a
// pair are batched into one write of up to 16 iovecs / 1 MiB. sleep_until() costs one
// epoll_wait, and a doorbell syscall only when the shm peer announced that it sleeps.
// Ownership: shm and unprotected reads and writes go straight into/out of the caller's posted
// buffers (a shm message by reference is read from the writer's posted buffer, which its send
// keeps until the reader has counted it done: recv_by_ref; up to kRefWindow references are out
// per ring, and what is written behind them completes after them); a TCP pair's go through its
// SecureChannel, which seals into its own output buffer and opens records straight into the
// caller's buffer. Driven by the context's one thread; no locks.
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "context_impl.h"
#include "ringpress/fault.h"
#include "ringpress/reduce.h"

namespace ringpress::transport_impl {

using namespace protocol;

namespace {

// A TCP pair's staging buffer for reducing receives: big enough for one read to carry many
// records, small enough to stay in cache while it is reduced.
constexpr std::size_t kReduceStagingBytes = std::size_t{256} << 10;
// Shm messages go by reference where the pair agreed at setup (single copy), the engine allows it
// (set_single_copy), the message is at least kSingleCopyMinBytes and its collective moves at
// least kSingleCopyMinTotal (transport.h). Measured
// (2 ranks, 256 KiB segments, docs/benchmarks.md): a collective that fits the caches is faster
// through the ring (1 MiB allreduce 172 us by reference against 128 us through the ring: the
// system call, page pinning and the wait for the reader cost more than an in-cache copy; 2 MiB
// 305 against 286 us); from 2.5 MiB on the copy the reference saved won on an Intel Xeon VM (3 MiB
// 372 against 433 us, 16 MiB 2.01 against 2.88 ms) but lost on an AMD EPYC VM up to 8 MiB, hence
// the engine's choice per size (ringpress/single_copy_policy.h).
constexpr std::size_t kSingleCopyMinBytes = std::size_t{64} << 10;
// References a writer may have out at once on a ring (each holds its send until the reader has
// counted it done). Measured against one at a time (2 ranks, alternating builds): 8 MiB
// allreduce 811-848 against 890-962 us, 16 MiB 1.44-1.54 against 1.59-1.63 ms; 16 and 4 were
// within noise of each other (docs/benchmarks.md).
constexpr std::uint64_t kRefWindow = 16;
// One process_vm_readv moves at most this much of a plain (non-reducing) reference.
constexpr std::size_t kSingleCopyChunkBytes = std::size_t{1} << 20;

// dst[i] = dst[i] op src[i] for n elements; src may sit at any byte offset (a ring position after
// an odd-length message): then it is copied to an aligned buffer first, a piece at a time.
void reduce_unaligned(DType dt, ReduceOp op, unsigned char* dst, const unsigned char* src,
                      std::size_t n, std::size_t es) {
  if (reinterpret_cast<std::uintptr_t>(src) % es == 0) return reduce_into(dt, op, dst, src, n);
  alignas(64) unsigned char buf[4096];
  const std::size_t per = sizeof buf / es;
  while (n > 0) {
    const std::size_t m = std::min(per, n);
    std::memcpy(buf, src, m * es);
    reduce_into(dt, op, dst, buf, m);
    dst += m * es;
    src += m * es;
    n -= m;
  }
}

// A reducing receive's sink: the next n payload bytes of op, reduced into op.data. An element cut
// by the end of a read waits in op.partial for the rest of its bytes. Advances op.off.
void reduce_feed(void* ctx, const unsigned char* src, std::size_t n) {
  RecvOp& op = *static_cast<RecvOp*>(ctx);
  const auto dt = static_cast<DType>(op.e.h.dtype);
  const auto rop = static_cast<ReduceOp>(op.e.h.redop);
  const std::size_t es = dtype_size(dt);
  unsigned char* dst = op.data + (op.off - op.partial_len);  // the first element not reduced yet
  op.off += n;
  if (op.partial_len > 0) {
    const std::size_t take = std::min(es - op.partial_len, n);
    std::memcpy(op.partial + op.partial_len, src, take);
    op.partial_len += take;
    src += take;
    n -= take;
    if (op.partial_len < es) return;
    reduce_into(dt, rop, dst, op.partial, 1);
    dst += es;
    op.partial_len = 0;
  }
  const std::size_t whole = n / es;
  if (whole > 0) reduce_unaligned(dt, rop, dst, src, whole, es);
  op.partial_len = n - whole * es;
  if (op.partial_len > 0) std::memcpy(op.partial, src + whole * es, op.partial_len);
}

// Is this message worth sending by reference? (The header's count is the collective's element
// count, except for a fused allreduce, where it is a digest of the split: those stay on the ring.)
bool worth_single_copy(const MsgHeader& h) {
  if (h.len < kSingleCopyMinBytes) return false;
  if (h.coll == static_cast<std::uint8_t>(CollKind::kAllreduceCoalesced)) return false;
  const std::size_t es = dtype_size(static_cast<DType>(h.dtype));
  return es > 0 && h.count >= kSingleCopyMinTotal / es;
}

}  // namespace

// Sleeps in epoll_wait until a socket has news, the deadline, or at most 200 ms. A shm ring has
// no fd: its reader/writer first announces that it sleeps (so the peer rings the doorbell on the
// control socket), and wakes the announcement off again afterwards.
void ContextImpl::sleep_until(Deadline deadline) {
  if (idle_since_ == Clock::time_point{}) idle_since_ = Clock::now();  // timeout attribution
  // Announce sleep on every shm ring we wait for; if one turns out ready, do not sleep.
  bool must_stay = false;
  for (auto& pp : pairs_) {
    if (!pp || !pp->link) continue;
    Pair& p = *pp;
    if (!p.recvs.empty() && !p.link->sleep_as_reader()) must_stay = true;
    if (!p.sends.empty()) {
      const SendOp& f = p.sends.front();
      const bool ref_wait = f.by_ref && f.off == f.end();  // written, the reader still reading
      if (!(ref_wait ? p.link->sleep_as_writer_for_ref(f.ref.number) : p.link->sleep_as_writer()))
        must_stay = true;
    }
  }
  if (!must_stay) {
    epoll_event evs[64];
    int rc = epoll_wait(epoll_.get(), evs, 64, net::ms_until(deadline, 200));
    for (int i = 0; i < rc; ++i) {
      Pair& p = *pairs_[evs[i].data.u32];
      if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p.peer_hung_up = true;
      if (p.kind == TransportKind::kShm && (evs[i].events & EPOLLIN)) p.ctl_readable = true;
    }
  }
  // Nothing posted or completed since the announcements (epoll only sets flags), so the same
  // conditions name the rings that announced.
  for (auto& pp : pairs_) {
    if (!pp || !pp->link) continue;
    if (!pp->recvs.empty()) pp->link->wake_as_reader();
    if (!pp->sends.empty()) pp->link->wake_as_writer();
  }
}

bool ContextImpl::progress_all() {
  bool any = false;
  for (auto& pp : pairs_) {
    if (pp) any |= progress_pair(*pp);
  }
  if (any) idle_since_ = Clock::time_point{};  // (failure.cc: fail_timeout)
  return any;
}

// One pair's step. Whatever it raises fails this pair first (it keeps the error), then the
// caller aborts the context.
bool ContextImpl::progress_pair(Pair& p) {
  try {
    bool any = false;
    if (p.ctl_readable) any |= progress_ctl(p);
    if (!p.sends.empty() || (p.chan && p.chan->output_pending())) any |= progress_send(p);
    if (!p.recvs.empty()) any |= progress_recv(p);
    if (p.peer_hung_up) handle_hup(p);
    return any;
  } catch (...) {
    mark_failed(p, std::current_exception());
    throw;
  }
}

// ------------------------------------------------------------------ byte streams

std::size_t ContextImpl::stream_write(Pair& p, const iovec* iov, int n) {
  if (p.link) {
    bool wake = false;
    std::size_t w = p.link->write_some(iov, n, &wake);
    if (w == shm::Link::kCorrupt) {
      fail_pair(p, detail::str_cat("the shared-memory ring to peer ", p.peer,
                                   " is corrupt (its read position is ",
                                   "not within the ring): the peer wrote over it"));
    }
    if (wake) doorbell(p);
    return w;
  }
  int err = 0;
  const long w = tcp_write(p, iov, n, &err);
  if (w >= 0) return static_cast<std::size_t>(w);
  fail_pair(p, detail::str_cat("send to peer ", p.peer, " (", p.endpoint, ") failed: ",
                               std::strerror(err), " (peer process died or closed?)"));
}

void ContextImpl::fail_corrupt_rx(Pair& p) {
  fail_pair(p, detail::str_cat("the shared-memory ring from peer ", p.peer,
                               " is corrupt (its write position ",
                               "is not within the ring): the peer wrote over it"));
}

std::size_t ContextImpl::stream_read(Pair& p, void* dst, std::size_t len) {
  if (p.link) {
    bool wake = false;
    std::size_t r = p.link->read_some(dst, len, &wake);
    if (r == shm::Link::kCorrupt) fail_corrupt_rx(p);
    if (wake) doorbell(p);
    return r;
  }
  int err = 0;
  const long r = tcp_read(p, dst, len, &err);
  if (r >= 0) return static_cast<std::size_t>(r);
  if (err == 0) {
    fail_pair(p, detail::str_cat("peer ", p.peer, " (", p.endpoint, ") closed the connection",
                                 p.peer_said_bye ? "" : " (process died or exited early?)"));
  }
  fail_pair(p, detail::str_cat("receive from peer ", p.peer, " (", p.endpoint,
                               ") failed: ", std::strerror(err)));
}

std::size_t ContextImpl::stream_reduce(Pair& p, RecvOp& op) {
  const std::size_t want = op.h.len - op.off;
  if (p.link) {
    bool wake = false;
    const std::size_t r = p.link->consume_some(want, reduce_feed, &op, &wake);
    if (r == shm::Link::kCorrupt) fail_corrupt_rx(p);
    if (wake) doorbell(p);
    return r;
  }
  if (p.staging.empty()) p.staging.resize(kReduceStagingBytes);
  const std::size_t r = stream_read(p, p.staging.data(), std::min(want, p.staging.size()));
  if (r > 0) reduce_feed(&op, p.staging.data(), r);
  return r;
}

long ContextImpl::tcp_write(Pair& p, const iovec* iov, int n, int* err) {
  return p.chan ? p.chan->write(p.fd.get(), iov, n, err) : net::send_some(p.fd.get(), iov, n, err);
}

long ContextImpl::tcp_read(Pair& p, void* dst, std::size_t len, int* err) {
  return p.chan ? p.chan->read(p.fd.get(), dst, len, err)
                : net::recv_some(p.fd.get(), dst, len, err);
}

void ContextImpl::tcp_read_all(Pair& p, void* dst, std::size_t len, Deadline deadline,
                               const char* what) {
  auto* d = static_cast<unsigned char*>(dst);
  while (len > 0) {
    int err = 0;
    const long r = tcp_read(p, d, len, &err);
    if (r > 0) {
      d += r;
      len -= static_cast<std::size_t>(r);
      continue;
    }
    if (r < 0) {
      RP_THROW(TransportError, what, ": peer ", p.peer, " ",
               err ? std::strerror(err) : "closed the connection");
    }
    if (net::wait_io(p.fd.get(), POLLIN, deadline, &err) == net::Io::kTimeout)
      RP_THROW(TimeoutError, what, ": timed out");
  }
}

bool ContextImpl::tcp_write_all(Pair& p, const void* src, std::size_t len, Deadline deadline) {
  // The stream must be at a message boundary with nothing sealed ahead (callers make sure).
  const auto* s = static_cast<const unsigned char*>(src);
  std::size_t done = 0;
  while (done < len || (p.chan && p.chan->output_pending())) {
    iovec iov{const_cast<unsigned char*>(s) + done, len - done};
    int err = 0;
    const long w = tcp_write(p, &iov, done < len ? 1 : 0, &err);
    if (w < 0) return false;
    done += static_cast<std::size_t>(w);
    if (w == 0 && net::wait_io(p.fd.get(), POLLOUT, deadline, &err) != net::Io::kOk) return false;
  }
  return true;
}

bool ContextImpl::finish_partial_sends(Pair& p, Deadline deadline) {
  auto mid_message = [&] {
    return !p.sends.empty() && (p.sends.front().off > 0 || (p.chan && p.chan->plain_pending() > 0));
  };
  while (mid_message()) {
    SendOp& op = p.sends.front();
    iovec iov[2];
    int n = 0;
    // (a truncating fault is not finished)
    const std::size_t end = sizeof(MsgHeader) + (op.by_ref ? sizeof(RefDesc) : op.h.len);
    if (op.off < sizeof(MsgHeader))
      iov[n++] = {reinterpret_cast<unsigned char*>(&op.h) + op.off, sizeof(MsgHeader) - op.off};
    const std::size_t from = std::max(op.off, sizeof(MsgHeader));
    if (from < end)
      iov[n++] = {const_cast<unsigned char*>(op.body()) + (from - sizeof(MsgHeader)), end - from};
    int err = 0;
    long w = tcp_write(p, iov, n, &err);
    if (w < 0) return false;
    // Bytes sealed ahead of this message (the next ones) complete them in turn.
    while (w > 0 && !p.sends.empty()) {
      SendOp& f = p.sends.front();
      const std::size_t fend = sizeof(MsgHeader) + (f.by_ref ? sizeof(RefDesc) : f.h.len);
      const std::size_t take = std::min<std::size_t>(fend - f.off, static_cast<std::size_t>(w));
      f.off += take;
      w -= static_cast<long>(take);
      if (f.off == fend) {
        p.sends.pop_front();
        ++p.sends_done;
      }
    }
    if (mid_message() && net::wait_io(p.fd.get(), POLLOUT, deadline, &err) != net::Io::kOk)
      return false;
  }
  return true;
}

void ContextImpl::doorbell(Pair& p) {
  unsigned char b = kCtlDoorbell;
  iovec iov{&b, 1};
  int err = 0;
  // A full socket already holds doorbells: dropping this one loses nothing.
  (void)net::send_some(p.fd.get(), &iov, 1, &err);
}

bool ContextImpl::progress_send(Pair& p) {
  bool any = false;
  // (A side with single copy off neither publishes its probe word nor probes the peer's, so the
  // pair never agreed to it: setup_shm, rendezvous.cc.)
  const bool by_ref_ok = single_copy_allowed_ && p.link && p.link->peer_reads_by_ref();
  while (!p.sends.empty()) {
    SendOp& front = p.sends.front();
    // Written. A message by reference completes once the reader has copied the payload out of
    // our buffer; messages written behind it wait for it (completions stay in order).
    if (front.off == front.end() && (!front.by_ref || p.link->refs_done() >= front.ref.number)) {
      if (front.by_ref) bytes_sent_ += front.h.len;  // its payload, read by the peer
      p.sends.pop_front();
      ++p.sends_done;
      any = true;
      continue;
    }
    // The first message not fully written (those before it are references the reader has not
    // finished, and messages written behind them). At most kRefWindow references are out.
    auto first = p.sends.begin();
    while (first != p.sends.end() && first->off == first->end()) ++first;
    if (first == p.sends.end()) break;
    if (p.link) {  // (refs_done lives in shared memory: a count past ours is not trusted)
      const std::uint64_t done = p.link->refs_done();
      if (done < p.refs_sent && p.refs_sent - done >= kRefWindow) break;
    }
    iovec iov[16];
    int n = 0;
    // Batch several small messages into one write; a message by reference ends the batch.
    std::size_t batch = 0;
    for (auto it = first; it != p.sends.end() && n + 2 <= 16 && batch < (1u << 20); ++it) {
      SendOp& op = *it;
      if (!op.by_ref && op.off == 0 && by_ref_ok && !op.truncate_at && worth_single_copy(op.h)) {
        op.by_ref = true;
        op.h.type = static_cast<std::uint8_t>(MsgType::kDataRef);
        op.ref.addr = reinterpret_cast<std::uintptr_t>(op.data);
        op.ref.number = ++p.refs_sent;
        switch (fault::hit("send.ref")) {  // a hostile descriptor, for the fault tests
          case fault::Action::kGarbage: ++op.ref.number; break;
          case fault::Action::kCorrupt: op.ref.addr = 0; break;  // page zero is never mapped
          default: break;
        }
      }
      const std::size_t end = op.end();
      std::size_t off = op.off;
      if (off < sizeof(MsgHeader)) {
        std::size_t k = std::min(end, sizeof(MsgHeader)) - off;
        iov[n++] = {reinterpret_cast<unsigned char*>(&op.h) + off, k};
        off += k;
      }
      if (off < end)
        iov[n++] = {const_cast<unsigned char*>(op.body()) + (off - sizeof(MsgHeader)), end - off};
      batch += end - op.off;
      if (op.truncate_at || op.by_ref) break;
    }
    std::size_t w = stream_write(p, iov, n);
    if (w == 0) break;
    any = true;
    if (p.kind == TransportKind::kTcp) tcp_bytes_sent_ += w;
    for (auto it = first; w > 0; ++it) {
      SendOp& op = *it;
      std::size_t take = std::min(op.end() - op.off, w);
      op.off += take;
      w -= take;
      bytes_sent_ += take;
      if (op.off == op.end() && op.truncate_at) exit_after_truncate(p);
    }
  }
  return any;
}

void ContextImpl::accept_header(Pair& p, RecvOp& op) {
  MsgHeader h;
  std::memcpy(&h, p.hdr, sizeof h);
  p.hdr_have = 0;
  if (h.magic != MsgHeader::kMagic) {
    RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " (", p.endpoint,
                 ") sent bytes that are not a ringpress message (bad magic 0x", std::hex, h.magic,
                 ")");
  }
  if (h.version != MsgHeader::kVersion) {
    RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " (", p.endpoint,
                 ") speaks message header version ", static_cast<int>(h.version), ", this rank ",
                 static_cast<int>(MsgHeader::kVersion), " (mixed ringpress versions in one job?)");
  }
  if (h.type == static_cast<std::uint8_t>(MsgType::kAbort) && p.kind == TransportKind::kTcp) {
    RP_ENFORCE(h.len <= kMaxAbortBytes, TransportError, "oversized abort message from peer ",
               p.peer);
    Bytes b(h.len);
    tcp_read_all(p, b.data(), b.size(), Clock::now() + std::chrono::seconds(2), "abort message");
    raise_remote_abort(b, opts_.rank, p.peer);
  }
  op.by_ref = h.type == static_cast<std::uint8_t>(MsgType::kDataRef);
  if (op.by_ref) {
    // Only where this side agreed to read the peer's memory at setup (shm, probe passed).
    if (!p.link || !p.link->reads_by_ref()) {
      RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer,
                   " sent a message by reference, which this rank did not agree to read");
    }
    h.type = static_cast<std::uint8_t>(MsgType::kData);
  }
  if (h.type != static_cast<std::uint8_t>(MsgType::kData)) {
    RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " sent message type ",
                 static_cast<int>(h.type), " where data was expected");
  }
  check_header(h, op.e, opts_.rank, p.peer);
  op.h = h;
  op.have_header = true;
  op.ref_have = 0;
}

bool ContextImpl::progress_recv(Pair& p) {
  bool any = false;
  while (!p.recvs.empty()) {
    RecvOp& op = p.recvs.front();
    if (!op.have_header) {
      std::size_t r = stream_read(p, p.hdr + p.hdr_have, sizeof(MsgHeader) - p.hdr_have);
      if (r == 0) break;
      any = true;
      bytes_received_ += r;
      p.hdr_have += r;
      if (p.hdr_have < sizeof(MsgHeader)) break;
      accept_header(p, op);
    }
    if (op.by_ref) {
      if (!recv_by_ref(p, op)) break;
      any = true;
      if (op.e.received) *op.e.received = op.h.len;
      p.recvs.pop_front();
      ++p.recvs_done;
      continue;
    }
    if (op.off < op.h.len) {
      // (a reducing receive's sink advances op.off itself, over one or two pieces of the ring)
      const std::size_t r =
          op.e.reduce ? stream_reduce(p, op) : stream_read(p, op.data + op.off, op.h.len - op.off);
      if (r == 0) break;
      any = true;
      bytes_received_ += r;
      if (!op.e.reduce) op.off += r;
      if (op.off < op.h.len) continue;
    }
    if (op.e.received) *op.e.received = op.h.len;
    p.recvs.pop_front();
    ++p.recvs_done;
    any = true;
  }
  return any;
}

// A message by reference: its descriptor from the ring, then the payload straight from the
// writer's buffer (into the receive's buffer, or a piece at a time into staging to be reduced),
// then the count that releases the writer's send. The header was checked against what this
// receive expects (its length among it) before anything is read. Returns false while the
// descriptor has not fully arrived.
bool ContextImpl::recv_by_ref(Pair& p, RecvOp& op) {
  if (op.ref_have < sizeof(RefDesc)) {
    auto* d = reinterpret_cast<unsigned char*>(&op.ref);
    const std::size_t r = stream_read(p, d + op.ref_have, sizeof(RefDesc) - op.ref_have);
    bytes_received_ += r;
    op.ref_have += r;
    if (op.ref_have < sizeof(RefDesc)) return false;
    if (op.ref.number != p.refs_read + 1) {
      fail_pair(p, detail::str_cat("peer ", p.peer, " sent reference ", op.ref.number, " where ",
                                   p.refs_read + 1, " was next"));
    }
  }
  auto read = [&](unsigned char* dst, std::size_t n) {
    const long r = p.link->read_peer(dst, op.ref.addr + op.off, n);
    if (r <= 0) {
      fail_pair(p, detail::str_cat("single-copy read of ", n, " bytes from peer ", p.peer,
                                   " failed: ", r < 0 ? std::strerror(errno) : "nothing read",
                                   " (peer process died or sent a bad address?)"));
    }
    bytes_received_ += static_cast<std::size_t>(r);
    single_copy_bytes_ += static_cast<std::size_t>(r);
    return static_cast<std::size_t>(r);
  };
  while (op.off < op.h.len) {
    const std::size_t want = op.h.len - op.off;
    if (op.e.reduce) {
      if (p.staging.empty()) p.staging.resize(kReduceStagingBytes);
      const std::size_t got = read(p.staging.data(), std::min(want, p.staging.size()));
      reduce_feed(&op, p.staging.data(), got);  // advances op.off
    } else {
      op.off += read(op.data + op.off, std::min(want, kSingleCopyChunkBytes));
    }
  }
  bool wake = false;
  p.link->finish_ref(++p.refs_read, &wake);
  if (wake) doorbell(p);
  return true;
}

bool ContextImpl::progress_ctl(Pair& p) {
  bool any = false;
  unsigned char buf[256];
  for (;;) {
    int err = 0;
    const long r = net::recv_some(p.fd.get(), buf, sizeof buf, &err);
    if (r > 0) {
      for (long i = 0; i < r; ++i) {
        if (buf[i] == kCtlDoorbell) {
          any = true;
        } else if (buf[i] == kCtlBye) {
          p.peer_said_bye = true;
        } else if (buf[i] == kCtlAbort) {
          // 'A' + u32 length + payload; the rest may still be in the socket.
          Bytes rest(buf + i + 1, buf + r);
          std::size_t need = 4;
          Deadline dl = Clock::now() + std::chrono::seconds(2);
          if (rest.size() < need) {
            std::size_t have = rest.size();
            rest.resize(need);
            net::read_all(p.fd.get(), rest.data() + have, need - have, dl, "abort message");
          }
          std::uint32_t len = 0;
          std::memcpy(&len, rest.data(), 4);
          RP_ENFORCE(len <= kMaxAbortBytes, TransportError, "oversized abort from peer ", p.peer);
          std::size_t have = rest.size();
          rest.resize(4 + len);
          if (have < 4 + len)
            net::read_all(p.fd.get(), rest.data() + have, 4 + len - have, dl, "abort message");
          raise_remote_abort(Bytes(rest.begin() + 4, rest.end()), opts_.rank, p.peer);
        } else {
          RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " (", p.endpoint,
                       ") sent an unknown control byte ", static_cast<int>(buf[i]));
        }
      }
      continue;
    }
    if (r == 0) {  // nothing more for now
      p.ctl_readable = false;
      break;
    }
    p.peer_hung_up = true;  // end of stream or a socket error
    p.ctl_readable = false;
    break;
  }
  return any;
}

}  // namespace ringpress::transport_impl

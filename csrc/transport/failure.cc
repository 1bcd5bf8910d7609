// Transport failure handling: error recording (the context's and each pair's), the ABORT a
// failing rank sends to every peer, finding the ABORT that explains a peer's hang-up, and the
// fault-injection exit of a truncated send.
//
// Contract: the first error wins. fail() records it (abort(): error_, broken_, every live pair
// kFailed with it) and rethrows it; every later call on the context, or on a failed pair,
// rethrows the same error (docs/errors.md). A peer that hangs up is blamed only after looking for
// an ABORT from it or from any other peer that hung up, so the rank that failed first is named
// on every rank, whoever delivered the news.
// Cost: nothing on the data path. abort() waits at most 200 ms for all peers together (plus at
// most 200 ms per half-written TCP message it finishes first); draining a dead peer's socket for
// its ABORT takes at most 1 s per pair.
// Ownership: abort() may finish a half-written send only while wait() is on the stack
// (driving_): after that the posted buffer may be gone. Driven by the context's one thread.
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "context_impl.h"
#include "ringpress/fault.h"

namespace ringpress::transport_impl {

using namespace protocol;

void ContextImpl::fail(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    if (err.kind() == ErrorKind::kTimeout && !broken_.load()) {
      fail_timeout(err);
    } else {
      abort(err);
    }
  } catch (const std::exception& ex) {
    abort(InternalError(ctx(-1), ex.what(), __FILE__, __LINE__));
  }
  std::rethrow_exception(error_ ? error_ : e);
}

// Records a pair's first error; a pair already failed (or closed) keeps what it has.
void ContextImpl::mark_failed(Pair& p, std::exception_ptr e) noexcept {
  if (p.state != PairState::kReady && p.state != PairState::kClosing) return;
  set_state(p, PairState::kFailed);  // legal from both (context_impl.h)
  p.error = std::move(e);
}

// RINGPRESS_FAULT=send:truncate: the message stopped half way has been written; leave now, like
// a rank that crashes mid-message (fault.h's kill/stop/exit happen inside fault::hit instead).
void ContextImpl::exit_after_truncate(const Pair& p) {
  fault::exit_after_truncate(p.peer);
}

// The peer hung up. While this pair is closing that is expected; otherwise it fails the pair.
void ContextImpl::handle_hup(Pair& p) {
  if (p.state == PairState::kClosing) {
    // Orderly shutdown: a hang-up only matters if we still need data (stream_read reports it).
    if (p.kind == TransportKind::kShm && !p.recvs.empty() && p.link->readable() == 0) {
      RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " closed while data was expected");
    }
    return;
  }
  if (p.kind == TransportKind::kShm) {
    progress_ctl(p);  // an ABORT before the hang-up explains it
    RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " (shm, control ", p.endpoint,
                 ") closed its connection: the process died or closed the communicator early");
  }
  drain_for_abort(p);
}

// A TCP peer hung up. Read what it sent before (data we no longer need: the job is failing) to
// find an ABORT explaining why; otherwise report the hang-up itself.
bool ContextImpl::try_drain_for_abort(Pair& p, Deadline until) {
  const Deadline dl = until == Deadline{} ? Clock::now() + std::chrono::seconds(1)
                                          : std::min(until, Clock::now() + std::chrono::seconds(1));
  std::vector<unsigned char> sink(1 << 16);
  auto read_exact = [&](void* dst, std::size_t len) {
    auto* d = static_cast<unsigned char*>(dst);
    while (len > 0) {
      int err = 0;
      long r = -1;
      try {
        r = tcp_read(p, d, len, &err);
      } catch (const Error&) {
        return false;  // a record that does not authenticate: nothing to learn from this peer
      }
      if (r > 0) {
        d += r;
        len -= static_cast<std::size_t>(r);
      } else if (r == 0 && Clock::now() < dl) {  // nothing yet: wait a little
        pollfd pf{p.fd.get(), POLLIN, 0};
        ::poll(&pf, 1, 10);
      } else {
        return false;
      }
    }
    return true;
  };
  // Resume at a message boundary: finish the current partial header/payload first.
  if (!p.recvs.empty() && p.recvs.front().have_header) {
    RecvOp& op = p.recvs.front();
    std::size_t left = op.h.len - op.off;
    while (left > 0) {
      std::size_t k = std::min(left, sink.size());
      if (!read_exact(sink.data(), k)) break;
      left -= k;
    }
    if (left == 0) p.hdr_have = 0;
  }
  for (int guard = 0; guard < 100000; ++guard) {
    if (!read_exact(p.hdr + p.hdr_have, sizeof(MsgHeader) - p.hdr_have)) break;
    p.hdr_have = 0;
    MsgHeader h;
    std::memcpy(&h, p.hdr, sizeof h);
    if (h.magic != MsgHeader::kMagic || h.version != MsgHeader::kVersion) break;
    if (h.type == static_cast<std::uint8_t>(MsgType::kAbort) && h.len <= kMaxAbortBytes) {
      Bytes b(h.len);
      if (!read_exact(b.data(), b.size())) break;
      raise_remote_abort(b, opts_.rank, p.peer);
    }
    if (h.type == static_cast<std::uint8_t>(MsgType::kBye)) p.peer_said_bye = true;
    std::uint64_t left = h.len;
    bool ok = true;
    while (left > 0 && ok) {
      std::size_t k = static_cast<std::size_t>(std::min<std::uint64_t>(left, sink.size()));
      ok = read_exact(sink.data(), k);
      left -= k;
    }
    if (!ok) break;
  }
  return false;
}

void ContextImpl::drain_for_abort(Pair& p) {
  fail_pair(p, detail::str_cat("peer ", p.peer, " (", p.endpoint, ") closed its connection",
                               p.peer_said_bye ? " (it closed its communicator)" : "",
                               ": the process died or left the job early"));
}

// A pair failed. The first peer to see a death aborts the job and tells everyone, so before
// blaming this peer, look for an ABORT explaining it: on this pair, then on any other pair that
// hung up (the messenger may itself have gone away before we read its message).
void ContextImpl::fail_pair(Pair& p, const std::string& what) {
  if (p.kind == TransportKind::kTcp) try_drain_for_abort(p);
  for (auto& qq : pairs_) {
    if (!qq || qq.get() == &p || !qq->fd.valid()) continue;
    pollfd pf{qq->fd.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&pf, 1, 0) <= 0 || !(pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) continue;
    if (qq->kind == TransportKind::kShm) {
      progress_ctl(*qq);
    } else {
      try_drain_for_abort(*qq);
    }
  }
  RP_THROW_CTX(TransportError, ctx(p.peer), what);
}

// ------------------------------------------------------------------ timeout attribution
//
// A deadline names the peer this rank was waiting for, but that peer may itself be waiting for
// another (a rank that stops calling leaves a chain of healthy ranks blocked behind it; 7 of 40
// timeouts named a healthy rank before this). So:
//   * the rank whose deadline passed aborts naming the peer it waited for, then listens for that
//     peer's abort for a short grace time; a peer that answers with a timeout naming a third rank
//     passes the blame on, and the rank listens to that one in turn, until a peer stays silent;
//   * a rank that receives a timeout abort while it has been blocked for a while waiting for
//     another peer names that peer (what it knows first hand; the abort may even name this rank,
//     which is then not the silent one) and follows the chain the same way. A rank that has only
//     just arrived (it moved bytes since it last slept) takes the abort's culprit: when that is
//     itself, it is the one that stopped calling.
// The error this rank raises is the end of the chain. Cost: a timeout error comes kTimeoutGrace
// after the deadline (nothing on the data path).

namespace {
constexpr auto kTimeoutGrace = std::chrono::milliseconds(750);
constexpr auto kBlockedMin = std::chrono::milliseconds(100);
}  // namespace

int ContextImpl::waiting_on(int except) const {
  for (int pass = 0; pass < 2; ++pass) {  // receives first, then sends that cannot leave
    for (const auto& pp : pairs_) {
      if (!pp || pp->peer == except || pp->state != PairState::kReady) continue;
      if (pass == 0 ? !pp->recvs.empty() : !pp->sends.empty()) return pp->peer;
    }
  }
  return -1;
}

std::exception_ptr ContextImpl::listen_for_abort(Pair& p, Deadline until) {
  while (Clock::now() < until && p.fd.valid()) {
    pollfd pf{p.fd.get(), POLLIN | POLLRDHUP, 0};
    if (::poll(&pf, 1, net::ms_until(until, 50)) <= 0) continue;
    try {
      if (p.kind == TransportKind::kShm) {
        progress_ctl(p);  // raises on an 'A' control message
        if (p.peer_hung_up) return nullptr;
      } else {
        try_drain_for_abort(p, until);  // raises the ABORT; returns at end of stream or `until`
        return nullptr;
      }
    } catch (...) {
      return std::current_exception();
    }
  }
  return nullptr;
}

void ContextImpl::fail_timeout(const Error& err) {
  const int me = opts_.rank;
  ErrorContext ec{me, err.peer(), err.op()};
  std::string detail = err.detail();
  // A peer's abort failed the pair it came on (progress_pair); this rank's own deadline none.
  int from = -1;
  for (const auto& pp : pairs_) {
    if (pp && pp->state == PairState::kFailed) from = pp->peer;
  }
  if (from >= 0) {
    // A peer's timeout abort. If this rank has itself been blocked on another peer for a while,
    // that peer is the one it knows to be silent (first hand); the abort's culprit is second hand
    // (and wrong when it names this rank). A rank that has only just arrived takes the abort as
    // it is: when it names this rank, this rank is the one that stopped calling.
    const bool blocked =
        idle_since_ != Clock::time_point{} && Clock::now() - idle_since_ >= kBlockedMin;
    const int w = blocked ? waiting_on(from) : -1;
    if (w >= 0 && w != ec.peer) {
      const Pair& wp = *pairs_[static_cast<std::size_t>(w)];
      ec.peer = w;
      detail = detail::str_cat(
          detail, "; this rank had been waiting for peer ", w, " (", transport_kind_name(wp.kind),
          " ", wp.endpoint, ") for ",
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - idle_since_).count(),
          " ms");
    }
  }
  TimeoutError first(ec, detail, err.file(), err.line());
  abort(first);  // tells every peer now: the blamed one passes the blame on if it is not silent
  // Follow the chain while each blamed peer answers with a timeout naming another rank.
  std::exception_ptr best;
  std::vector<bool> asked(pairs_.size(), false);
  const Deadline until = Clock::now() + kTimeoutGrace;
  int c = ec.peer;
  while (c >= 0 && c != me && c < static_cast<int>(pairs_.size()) &&
         !asked[static_cast<std::size_t>(c)] && pairs_[static_cast<std::size_t>(c)]) {
    asked[static_cast<std::size_t>(c)] = true;
    // The messenger's abort was read already: it is that peer's answer.
    std::exception_ptr got = c == from
                                 ? concrete_error(err)
                                 : listen_for_abort(*pairs_[static_cast<std::size_t>(c)], until);
    if (!got) break;  // silent: the chain ends here
    try {
      std::rethrow_exception(got);
    } catch (const Error& e2) {
      if (e2.kind() != ErrorKind::kTimeout) {
        best = concrete_error(Error(e2.kind(), ErrorContext{me, e2.peer(), e2.op()}, e2.detail(),
                                    e2.file(), e2.line()));
        break;  // another failure (e.g. a death) explains the silence
      }
      if (e2.peer() < 0 || e2.peer() == c || e2.peer() == me) break;  // c confirmed
      ec.peer = e2.peer();
      detail = detail::str_cat(detail, "; peer ", c, " reports: ", e2.detail());
      best = std::make_exception_ptr(TimeoutError(ec, detail, err.file(), err.line()));
      c = e2.peer();
    } catch (...) {
      break;
    }
  }
  if (best) error_ = best;
}

// ------------------------------------------------------------------ abort

void ContextImpl::abort(const Error& err) noexcept {
  if (broken_.load()) return;
  try {
    error_ = concrete_error(err);
  } catch (...) {
  }
  broken_.store(true, std::memory_order_release);
  for (auto& pp : pairs_) {
    if (pp) mark_failed(*pp, error_);
  }
  Bytes payload;
  try {
    payload = encode_abort(err, opts_.rank);
  } catch (...) {
  }
  // One bounded wait for all peers: a peer whose socket buffer is full (it is stuck, or slow to
  // read) gets what fits by then; a cut-off abort reads as a truncated message there.
  const Deadline dl = Clock::now() + std::chrono::milliseconds(200);
  auto send_abort = [](Pair& p, const Bytes& m, Deadline d) {
    try {
      net::write_all(p.fd.get(), m.data(), m.size(), d, "abort");
    } catch (...) {
    }
  };
  for (auto& pp : pairs_) {
    if (!pp || !pp->fd.valid()) continue;
    Pair& p = *pp;
    if (!payload.empty()) {
      if (p.kind == TransportKind::kShm) {
        Bytes m;
        m.push_back(kCtlAbort);
        std::uint32_t len = static_cast<std::uint32_t>(payload.size());
        m.insert(m.end(), reinterpret_cast<unsigned char*>(&len),
                 reinterpret_cast<unsigned char*>(&len) + 4);
        m.insert(m.end(), payload.begin(), payload.end());
        send_abort(p, m, dl);
      } else {
        // An abort inside a half-written message would read as garbage: finish that message
        // (and any sealed ahead of it) first (bounded: 200 ms), or give up and only hang up.
        // Only while the collective is still on the stack (inside wait()): after it unwound, a
        // send may point into a scratch buffer that is gone.
        bool boundary = p.sends.empty() ||
                        (p.sends.front().off == 0 && !(p.chan && p.chan->plain_pending() > 0));
        if (!boundary && driving_) {
          try {
            boundary = finish_partial_sends(p, Clock::now() + std::chrono::milliseconds(200));
          } catch (...) {
            boundary = false;
          }
        }
        if (!boundary) {
          ::shutdown(p.fd.get(), SHUT_WR);
          continue;
        }
        MsgHeader h;
        h.type = static_cast<std::uint8_t>(MsgType::kAbort);
        h.len = payload.size();
        Bytes m(reinterpret_cast<unsigned char*>(&h),
                reinterpret_cast<unsigned char*>(&h) + sizeof h);
        m.insert(m.end(), payload.begin(), payload.end());
        try {
          (void)tcp_write_all(p, m.data(), m.size(), dl);
        } catch (...) {
        }
      }
    }
    // Half-close: the peer reads our ABORT then end-of-stream; we keep reading (close()
    // drains), so our kernel never answers with a reset that would destroy the message.
    ::shutdown(p.fd.get(), SHUT_WR);
  }
}

}  // namespace ringpress::transport_impl

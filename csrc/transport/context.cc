// Transport context: the ContextImpl class (construction, post/test/wait, close) and the Pair
// state machine. Rendezvous is in rendezvous.cc, the progress loop in progress.cc, failure and
// abort handling in failure.cc; context_impl.h declares what they share.
//
// Contract: ringpress/transport.h. Cost: posting is O(1) (a deque push, no syscall); wait() spins
// for spin_us() after the last progress (opts.spin_us, or 200 us / 50 us by whether this host's
// ranks have a CPU each and the caller is blocked in the request), then sleeps in epoll_wait
// (sleep_until, progress.cc);
// close() waits at most 200 ms (500 ms after an abort) draining what peers still send.
// Ownership and threading: see context_impl.h (one driving thread, no locks; pairs owned here).
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <fstream>
#include <thread>

#include "context_impl.h"
#include "ringpress/env.h"
#include "ringpress/fault.h"
#include "ringpress/reduce.h"

namespace ringpress {

const char* transport_kind_name(TransportKind kind) noexcept {
  return kind == TransportKind::kShm ? "shm" : "tcp";
}

const char* coll_kind_name(CollKind kind) noexcept {
  switch (kind) {
    case CollKind::kNone: return "none";
    case CollKind::kAllreduce: return "allreduce";
    case CollKind::kBroadcast: return "broadcast";
    case CollKind::kAllgather: return "allgather";
    case CollKind::kReduceScatter: return "reduce_scatter";
    case CollKind::kBarrier: return "barrier";
    case CollKind::kAllgatherv: return "allgatherv";
    case CollKind::kReduce: return "reduce";
    case CollKind::kSendRecv: return "send/recv";
    case CollKind::kGather: return "gather";
    case CollKind::kScatter: return "scatter";
    case CollKind::kAlltoall: return "alltoall";
    case CollKind::kAllreduceCoalesced: return "allreduce_coalesced";
  }
  return "?";
}

std::string host_identity() {
  std::string boot;
  std::ifstream f("/proc/sys/kernel/random/boot_id");
  std::getline(f, boot);
  char buf[256] = {0};
  ssize_t n = readlink("/proc/self/ns/net", buf, sizeof buf - 1);
  std::string netns = n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
  char host[256] = {0};
  gethostname(host, sizeof host - 1);
  return std::string(host) + "|" + boot + "|" + netns;
}

std::vector<int> Topology::ranks_on(int h) const {
  std::vector<int> out;
  for (std::size_t r = 0; r < host.size(); ++r) {
    if (host[r] == h) out.push_back(static_cast<int>(r));
  }
  return out;
}

bool Topology::uniform() const {
  std::vector<int> per(static_cast<std::size_t>(hosts), 0);
  for (int h : host) ++per[static_cast<std::size_t>(h)];
  return std::all_of(per.begin(), per.end(), [&](int c) { return c == per[0]; });
}

Topology Topology::single(int n) {
  Topology t;
  t.host.assign(static_cast<std::size_t>(n), 0);
  t.hosts = 1;
  return t;
}

namespace transport_impl {

using namespace protocol;

// ------------------------------------------------------------------ the Pair state machine

const char* pair_state_name(PairState s) noexcept {
  switch (s) {
    case PairState::kConnecting: return "connecting";
    case PairState::kReady: return "ready";
    case PairState::kClosing: return "closing";
    case PairState::kClosed: return "closed";
    case PairState::kFailed: return "failed";
  }
  return "?";
}

// The one table of legal transitions (context_impl.h draws it).
bool pair_transition_allowed(PairState from, PairState to) noexcept {
  switch (from) {
    case PairState::kConnecting: return to == PairState::kReady;
    case PairState::kReady: return to == PairState::kClosing || to == PairState::kFailed;
    case PairState::kClosing: return to == PairState::kFailed || to == PairState::kClosed;
    case PairState::kFailed: return to == PairState::kClosed;
    case PairState::kClosed: return false;
  }
  return false;
}

void ContextImpl::set_state(Pair& p, PairState to) {
  if (!pair_transition_allowed(p.state, to)) {
    RP_THROW_CTX(InternalError, ctx(p.peer), "illegal pair state transition ",
                 pair_state_name(p.state), " -> ", pair_state_name(to), " for peer ", p.peer);
  }
  p.state = to;
}

// ------------------------------------------------------------------ construction

namespace {
// Argument > environment > default (env.h), checked.
ContextOptions normalized(ContextOptions o) {
  o.transport = env::pick(o.transport, "RINGPRESS_TRANSPORT");
  o.bind_addr = env::pick(o.bind_addr, "RINGPRESS_BIND_ADDR");
  o.timeout = env::pick(o.timeout, "RINGPRESS_TIMEOUT");
  o.shm_ring_bytes = env::pick(std::uint64_t{o.shm_ring_bytes}, "RINGPRESS_SHM_RING_BYTES");
  RP_ENFORCE(o.transport == "auto" || o.transport == "tcp" || o.transport == "shm", UsageError,
             "transport must be auto, tcp or shm, got '", o.transport, "'");
  o.host_id = env::pick(o.host_id, "RINGPRESS_HOST_ID");
  o.shm_single_copy = env::pick(o.shm_single_copy, "RINGPRESS_SHM_SINGLE_COPY");
  RP_ENFORCE(o.shm_single_copy == "auto" || o.shm_single_copy == "on" || o.shm_single_copy == "off",
             UsageError, "RINGPRESS_SHM_SINGLE_COPY must be auto, on or off, got '",
             o.shm_single_copy, "'");
  if (o.spin_us < 0) {  // unset: RINGPRESS_SPIN_US, whose "auto" spin_us() resolves
    const std::string s = env::pick(std::string(), "RINGPRESS_SPIN_US");
    if (s != "auto") {
      char* end = nullptr;
      errno = 0;
      const long v = std::strtol(s.c_str(), &end, 10);
      RP_ENFORCE(!s.empty() && *end == '\0' && errno == 0 && v >= 0 && v <= 1000000, UsageError,
                 "RINGPRESS_SPIN_US must be auto or 0..1000000 (microseconds), got '", s, "'");
      o.spin_us = static_cast<int>(v);
    }
  }
  o.encrypt = env::pick(o.encrypt, "RINGPRESS_ENCRYPT");
  RP_ENFORCE(o.encrypt == "on" || o.encrypt == "off", UsageError,
             "encrypt (RINGPRESS_ENCRYPT) must be on or off, got '", o.encrypt, "'");
  return o;
}
}  // namespace

ContextOptions ContextImpl::normalize(const ContextOptions& opts) {
  return normalized(opts);
}

ContextImpl::ContextImpl(const ContextOptions& opts, bool encrypt)
    : opts_(opts), encrypt_(encrypt) {
  pairs_.resize(static_cast<std::size_t>(opts_.size));
  topo_ = Topology::single(opts_.size);
}

ContextImpl::ContextImpl(std::shared_ptr<Store> store, const ContextOptions& opts)
    : opts_(normalized(opts)) {
  RP_ENFORCE(opts_.size >= 1, UsageError, "world size must be >= 1, got ", opts_.size);
  RP_ENFORCE(opts_.rank >= 0 && opts_.rank < opts_.size, UsageError, "rank ", opts_.rank,
             " is outside [0, ", opts_.size, ")");
  encrypt_ = opts_.encrypt == "on";
  pairs_.resize(static_cast<std::size_t>(opts_.size));
  topo_ = Topology::single(opts_.size);
  if (opts_.size == 1) return;
  ScopedErrorContext ec("rendezvous", opts_.rank);
  rendezvous(*store);
  register_epoll();
}

// ------------------------------------------------------------------ posting and waiting

Pair& ContextImpl::pair(int peer) {
  RP_ENFORCE(peer >= 0 && peer < opts_.size && peer != opts_.rank, UsageError, "peer ", peer,
             " is not another rank of this communicator of size ", opts_.size);
  RP_ENFORCE(!closed_, UsageError, "the transport context is closed");
  Pair& p = *pairs_[static_cast<std::size_t>(peer)];
  if (p.state == PairState::kFailed && p.error) std::rethrow_exception(p.error);
  return p;
}

Ticket ContextImpl::post_send(int peer, const MsgHeader& h, const void* data) {
  check();
  Pair& p = pair(peer);
  SendOp op;
  op.h = h;
  op.h.magic = MsgHeader::kMagic;
  op.h.type = static_cast<std::uint8_t>(MsgType::kData);
  op.data = static_cast<const unsigned char*>(data);
  // Kill/stop/exit happen inside fault::hit; the two actions a message carries are set up here
  // (truncate finishes in progress_send, which calls exit_after_truncate).
  switch (fault::hit("send")) {
    case fault::Action::kGarbage: op.h.magic = 0xf00du; break;
    case fault::Action::kTruncate: op.truncate_at = sizeof(MsgHeader) + op.h.len / 2; break;
    default: break;
  }
  p.sends.push_back(op);
  Ticket t{peer, true, p.sends_posted++};
  return t;
}

Ticket ContextImpl::post_recv(int peer, const Expect& e, void* data) {
  check();
  if (e.reduce) {
    const bool ok_dtype = dtype_valid(e.h.dtype);
    const std::size_t es = ok_dtype ? dtype_size(static_cast<DType>(e.h.dtype)) : 0;
    RP_ENFORCE(ok_dtype && reduce_supported(static_cast<DType>(e.h.dtype)) && e.len_exact &&
                   e.capacity == e.h.len && es <= sizeof(RecvOp::partial) && e.h.len % es == 0 &&
                   e.h.redop < kNumReduceOps,
               InternalError, "a reducing receive needs a reducible dtype and an exact length ",
               "of whole elements (dtype code ", static_cast<unsigned>(e.h.dtype), ", ", e.h.len,
               " bytes)");
  }
  Pair& p = pair(peer);
  RecvOp op;
  op.e = e;
  op.data = static_cast<unsigned char*>(data);
  p.recvs.push_back(op);
  return Ticket{peer, false, p.recvs_posted++};
}

bool ContextImpl::test(const Ticket& t) {
  check();
  if (done(t)) return true;
  try {
    progress_all();
  } catch (...) {
    fail(std::current_exception());
  }
  return done(t);
}

int ContextImpl::spin_us() {
  if (opts_.spin_us >= 0) return opts_.spin_us;
  if (spin_cpus_ok_ < 0) {
    int local = 0;  // ranks on this host, this one included
    const std::size_t me = static_cast<std::size_t>(opts_.rank);
    for (int h : topo_.host) local += (me < topo_.host.size() && h == topo_.host[me]) ? 1 : 0;
    // The machine's CPUs, not this process's affinity mask: a launcher that binds each rank to
    // a core of its own (mpirun does) leaves a mask of one CPU per rank.
    spin_cpus_ok_ = local <= sysconf(_SC_NPROCESSORS_ONLN) ? 1 : 0;
  }
  return spin_cpus_ok_ && caller_waits_ ? 200 : 50;
}

void ContextImpl::wait(const Ticket& t, Deadline deadline) {
  (void)wait_any(&t, 1, deadline);
}

std::size_t ContextImpl::wait_any(const Ticket* t, std::size_t n, Deadline deadline) {
  RP_ENFORCE(n > 0, InternalError, "wait_any needs a ticket");
  check();
  auto first_done = [&] {
    std::size_t i = 0;
    while (i < n && !done(t[i])) ++i;
    return i;
  };
  std::size_t i = first_done();
  if (i < n) return i;
  struct Driving {
    bool& flag;
    explicit Driving(bool& f) : flag(f) { flag = true; }
    ~Driving() { flag = false; }
  } driving(driving_);
  try {
    const auto spin = std::chrono::microseconds(spin_us());
    auto spin_until = Clock::now() + spin;
    int idle = 0;
    for (;;) {
      // The deadline is checked before every round, also while bytes keep moving: a transfer
      // that never pauses (a large message over loopback, whose segments each arrive within one
      // round) must still end at the deadline. A ticket done before the call returns at once.
      const auto now = Clock::now();
      if (now >= deadline) {
        // Several tickets (a pipelined collective waiting on two rings): any of their peers may
        // be the silent one, so the message names them all; the error's peer is the first's.
        std::string what;
        for (std::size_t k = 0; k < n; ++k) {
          const Pair& p = *pairs_[static_cast<std::size_t>(t[k].peer)];
          what += std::string(k ? " or to " : "to ") + (t[k].send ? "send to" : "receive from") +
                  " peer " + std::to_string(t[k].peer) + " (" + transport_kind_name(p.kind) + " " +
                  p.endpoint + ")";
        }
        RP_THROW_CTX(TimeoutError, ctx(t[0].peer), "deadline passed while waiting ", what);
      }
      const bool moved = progress_all();
      if ((i = first_done()) < n) return i;
      if (moved) {
        idle = 0;
        spin_until = now + spin;
        continue;
      }
      if (now < spin_until) {
        if (++idle % 64 == 0) std::this_thread::yield();
        continue;
      }
      sleep_until(deadline);
    }
  } catch (...) {
    fail(std::current_exception());
  }
}

// ------------------------------------------------------------------ close

// From here on a peer's hang-up is expected (handle_hup, failure.cc): only data we still wait
// for makes it an error. The transitions here are legal by their guards, so set_state cannot
// throw inside these noexcept functions.
void ContextImpl::begin_close() noexcept {
  for (auto& pp : pairs_) {
    if (pp && pp->state == PairState::kReady) set_state(*pp, PairState::kClosing);
  }
}

void ContextImpl::close() noexcept {
  if (closed_) return;
  closed_ = true;
  begin_close();
  for (auto& pp : pairs_) {
    if (!pp || !pp->fd.valid()) continue;
    if (!broken_.load()) {
      // Best effort, never blocking: a peer that misses it sees end-of-stream instead.
      int err = 0;
      if (pp->kind == TransportKind::kShm) {
        unsigned char b = kCtlBye;
        iovec iov{&b, 1};
        (void)net::send_some(pp->fd.get(), &iov, 1, &err);
      } else if (pp->sends.empty()) {
        MsgHeader h;
        h.type = static_cast<std::uint8_t>(MsgType::kBye);
        iovec iov{&h, sizeof h};
        try {
          (void)tcp_write(*pp, &iov, 1, &err);
        } catch (...) {
        }
      }
    }
    ::shutdown(pp->fd.get(), SHUT_WR);
  }
  // Read what peers still send until they close (bounded): closing a socket with unread data
  // makes the kernel send a reset, which can destroy an ABORT or BYE the peer has yet to read.
  Deadline dl = Clock::now() + std::chrono::milliseconds(broken_.load() ? 500 : 200);
  unsigned char sink[1 << 14];
  for (auto& pp : pairs_) {
    if (!pp || !pp->fd.valid()) continue;
    for (;;) {
      int err = 0;
      const long r = net::recv_some(pp->fd.get(), sink, sizeof sink, &err);
      if (r < 0) break;  // end of stream or an error
      if (r > 0) continue;
      if (Clock::now() >= dl) break;
      pollfd pf{pp->fd.get(), POLLIN | POLLRDHUP, 0};
      ::poll(&pf, 1, net::ms_until(dl, 50));
    }
  }
  for (auto& pp : pairs_) {
    if (pp && (pp->state == PairState::kClosing || pp->state == PairState::kFailed))
      set_state(*pp, PairState::kClosed);
  }
  pairs_.clear();
  epoll_.reset();
}

}  // namespace transport_impl

std::unique_ptr<Context> Context::create(std::shared_ptr<Store> store, const ContextOptions& opts) {
  return std::make_unique<transport_impl::ContextImpl>(std::move(store), opts);
}

}  // namespace ringpress

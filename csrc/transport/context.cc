// Transport context: rendezvous, pairs (tcp | shm), the progress loop and failure handling.
// The contract is in ringpress/transport.h; the byte layouts in docs/wire-format.md
// ("Transport messages" and "Connection handshake").
//
// Threading: a Context is driven by one thread at a time (the engine's); nothing here locks.
// abort()/broken() may be called from that thread only, except broken() which is an atomic read.
#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <exception>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "net.h"
#include "protocol.h"
#include "ringpress/dtype.h"
#include "ringpress/env.h"
#include "ringpress/fault.h"
#include "ringpress/reduce.h"
#include "ringpress/transport.h"
#include "shm_ring.h"

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

namespace {

using net::Fd;

using namespace protocol;

std::string random_secret() {
  unsigned char raw[kSecretChars / 2];
  std::size_t got = 0;
  while (got < sizeof raw) {
    ssize_t n = getrandom(raw + got, sizeof raw - got, 0);
    RP_ENFORCE(n > 0 || errno == EINTR, InternalError, "getrandom: ", std::strerror(errno));
    if (n > 0) got += static_cast<std::size_t>(n);
  }
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (unsigned char c : raw) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  return s;
}

struct SendOp {
  MsgHeader h;
  const unsigned char* data = nullptr;
  std::size_t off = 0;          // bytes of (header + payload) already written
  std::size_t truncate_at = 0;  // fault injection: stop here and exit (0 = never)
  std::size_t end() const { return truncate_at ? truncate_at : sizeof(MsgHeader) + h.len; }
};

struct RecvOp {
  Expect e;
  unsigned char* data = nullptr;
  std::size_t off = 0;  // payload bytes already read (after the header was accepted)
  bool have_header = false;
  MsgHeader h;
};

struct Pair {
  int peer = -1;
  TransportKind kind = TransportKind::kTcp;
  Fd fd;
  std::string endpoint;
  std::unique_ptr<shm::Link> link;
  std::deque<SendOp> sends;
  std::uint64_t sends_done = 0;
  std::uint64_t sends_posted = 0;
  std::deque<RecvOp> recvs;
  std::uint64_t recvs_done = 0;
  std::uint64_t recvs_posted = 0;
  // Incoming header being assembled when no receive is posted yet (or for the posted one).
  unsigned char hdr[sizeof(MsgHeader)];
  std::size_t hdr_have = 0;
  bool hup = false;          // the socket reported hang-up
  bool ctl_pending = false;  // shm: control bytes may be waiting on the socket
  bool bye = false;          // the peer said goodbye (orderly close)
  bool wants_wake_read = false;
  bool wants_wake_write = false;
};

class ContextImpl final : public Context {
 public:
  ContextImpl(std::shared_ptr<Store> store, const ContextOptions& opts);
  ~ContextImpl() override { close(); }

  int rank() const noexcept override { return opts_.rank; }
  int size() const noexcept override { return opts_.size; }
  const ContextOptions& options() const noexcept override { return opts_; }
  TransportKind kind(int peer) const override {
    RP_ENFORCE(peer >= 0 && peer < opts_.size && peer != opts_.rank, UsageError,
               "no pair for peer ", peer);
    return pairs_[static_cast<std::size_t>(peer)]->kind;
  }

  Ticket post_send(int peer, const MsgHeader& h, const void* data) override;
  Ticket post_recv(int peer, const Expect& e, void* data) override;
  void wait(const Ticket& t, Deadline deadline) override;
  bool test(const Ticket& t) override;
  void abort(const Error& err) noexcept override;
  void check() const override {
    if (broken_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
  }
  bool broken() const noexcept override { return broken_.load(std::memory_order_acquire); }
  void begin_close() noexcept override { closing_ = true; }
  void close() noexcept override;
  std::uint64_t bytes_sent() const noexcept override { return bytes_sent_; }
  std::uint64_t bytes_received() const noexcept override { return bytes_received_; }
  int rejected_connections() const noexcept override { return rejected_; }

 private:
  void rendezvous(Store& store);
  void setup_shm(const std::vector<bool>& same_host, Deadline deadline);
  void register_epoll();
  Pair& pair(int peer) {
    RP_ENFORCE(peer >= 0 && peer < opts_.size && peer != opts_.rank, UsageError, "peer ", peer,
               " is not another rank of this communicator of size ", opts_.size);
    return *pairs_[static_cast<std::size_t>(peer)];
  }
  bool done(const Ticket& t) {
    Pair& p = *pairs_[static_cast<std::size_t>(t.peer)];
    return t.send ? p.sends_done > t.index : p.recvs_done > t.index;
  }
  ErrorContext ctx(int peer) const {
    return ErrorContext{opts_.rank, peer, current_error_context().op};
  }

  bool progress_all();
  bool progress_send(Pair& p);
  bool progress_recv(Pair& p);
  bool progress_ctl(Pair& p);
  void handle_hup(Pair& p);
  std::size_t stream_write(Pair& p, const iovec* iov, int n);
  std::size_t stream_read(Pair& p, void* dst, std::size_t len);
  void doorbell(Pair& p);
  void accept_header(Pair& p, RecvOp& op);
  [[noreturn]] void drain_for_abort(Pair& p);
  bool try_drain_for_abort(Pair& p);  // raises the peer's ABORT if one is readable
  [[noreturn]] void fail_pair(Pair& p, const std::string& what);
  void sleep_until(Deadline deadline);
  [[noreturn]] void fail(std::exception_ptr e);

  ContextOptions opts_;
  std::vector<std::unique_ptr<Pair>> pairs_;
  Fd epoll_;
  std::atomic<bool> broken_{false};
  std::exception_ptr error_;
  bool closing_ = false;
  bool closed_ = false;
  bool driving_ = false;  // inside wait()/test(): posted buffers are still alive
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  int rejected_ = 0;
  std::string job_;  // short id used in shm names
};

ContextImpl::ContextImpl(std::shared_ptr<Store> store, const ContextOptions& opts) : opts_(opts) {
  RP_ENFORCE(opts_.size >= 1, UsageError, "world size must be >= 1, got ", opts_.size);
  RP_ENFORCE(opts_.rank >= 0 && opts_.rank < opts_.size, UsageError, "rank ", opts_.rank,
             " is outside [0, ", opts_.size, ")");
  // Argument > environment > default (env.h).
  opts_.transport = env::pick(opts_.transport, "RINGPRESS_TRANSPORT");
  opts_.bind_addr = env::pick(opts_.bind_addr, "RINGPRESS_BIND_ADDR");
  opts_.timeout = env::pick(opts_.timeout, "RINGPRESS_TIMEOUT");
  opts_.shm_ring_bytes = env::pick(std::uint64_t{opts_.shm_ring_bytes}, "RINGPRESS_SHM_RING_BYTES");
  RP_ENFORCE(opts_.transport == "auto" || opts_.transport == "tcp" || opts_.transport == "shm",
             UsageError, "transport must be auto, tcp or shm, got '", opts_.transport, "'");
  pairs_.resize(static_cast<std::size_t>(opts_.size));
  if (opts_.size == 1) return;
  ScopedErrorContext ec("rendezvous", opts_.rank);
  rendezvous(*store);
  register_epoll();
}

void ContextImpl::rendezvous(Store& store) {
  const Deadline deadline = Clock::now() + opts_.timeout;
  const int me = opts_.rank;
  const int n = opts_.size;
  const std::string bind = opts_.bind_addr;
  std::string publish = bind;
  if (publish.empty() || publish == "0.0.0.0") {
    if (!opts_.route_hint.empty()) {
      publish = net::local_addr_toward(opts_.route_hint);
    } else {
      char host[256] = {0};
      gethostname(host, sizeof host - 1);
      try {
        publish = net::resolve_ipv4(host);
      } catch (const Error&) {
        publish = "127.0.0.1";
      }
    }
  }
  Fd listener = net::listen_tcp(bind.empty() ? "0.0.0.0" : bind, 0, n + 64, opts_.tcp_buffer_bytes);
  net::set_nonblocking(listener.get(), true);
  const int port = net::local_endpoint(listener.get()).port;
  const std::string me_host = host_identity();
  std::string info = publish + ":" + std::to_string(port) + "\n" + me_host;
  store.set("addr/" + std::to_string(me), Bytes(info.begin(), info.end()));
  fault::hit("rendezvous");

  std::string secret = opts_.secret;
  if (secret.empty()) {
    if (me == 0) {
      secret = random_secret();
      store.set("secret", Bytes(secret.begin(), secret.end()));
    } else {
      Bytes b = store.get("secret", opts_.timeout);
      secret.assign(b.begin(), b.end());
    }
  }
  RP_ENFORCE(secret.size() == kSecretChars, UsageError, "the job secret must be ", kSecretChars,
             " hex characters, got ", secret.size());
  job_ = secret.substr(0, 12);

  std::vector<std::string> hosts(static_cast<std::size_t>(n));
  std::vector<net::Endpoint> eps(static_cast<std::size_t>(n));
  for (int q = 0; q < n; ++q) {
    if (q == me) continue;
    Bytes b =
        store.get("addr/" + std::to_string(q),
                  std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
    std::string s(b.begin(), b.end());
    auto nl = s.find('\n');
    RP_ENFORCE(nl != std::string::npos, TransportError, "malformed address record for rank ", q);
    eps[static_cast<std::size_t>(q)] = net::parse_endpoint(s.substr(0, nl));
    hosts[static_cast<std::size_t>(q)] = s.substr(nl + 1);
  }

  // Phase 1: connect to every lower rank and say hello (does not wait for them).
  for (int q = 0; q < me; ++q) {
    ScopedErrorContext pc("connect", me, q);
    auto p = std::make_unique<Pair>();
    p->peer = q;
    p->fd = net::connect_tcp(eps[static_cast<std::size_t>(q)], deadline, opts_.tcp_buffer_bytes);
    p->endpoint = eps[static_cast<std::size_t>(q)].str();
    Hello h{};
    h.magic = kHelloMagic;
    h.version = kProtocolVersion;
    h.from = static_cast<std::uint32_t>(me);
    h.to = static_cast<std::uint32_t>(q);
    std::memcpy(h.secret, secret.data(), kSecretChars);
    net::write_all(p->fd.get(), &h, sizeof h, deadline, "handshake");
    pairs_[static_cast<std::size_t>(q)] = std::move(p);
  }

  // Phase 2: accept every higher rank. Connections are handled concurrently so one that never
  // speaks, or speaks garbage, delays nobody: it is dropped after its own short deadline.
  struct Pending {
    Fd fd;
    Hello h;
    std::size_t have = 0;
    Deadline until;
    std::string from;
  };
  std::vector<Pending> pending;
  int missing = n - 1 - me;
  auto reject = [&](Pending& pc, const std::string& why) {
    std::fprintf(stderr, "ringpress: rank %d rejected a connection from %s: %s\n", me,
                 pc.from.c_str(), why.c_str());
    ++rejected_;
    pc.fd.reset();
  };
  while (missing > 0) {
    if (Clock::now() >= deadline) {
      std::string who;
      int first = -1;
      for (int q = me + 1; q < n; ++q) {
        if (!pairs_[static_cast<std::size_t>(q)]) {
          who += (who.empty() ? "" : ", ") + std::to_string(q);
          if (first < 0) first = q;
        }
      }
      RP_THROW_CTX(TimeoutError, (ErrorContext{me, first, "rendezvous"}), "ranks [", who,
                   "] did not connect within ", opts_.timeout.count(), " ms");
    }
    std::vector<pollfd> pfds;
    pfds.push_back({listener.get(), POLLIN, 0});
    for (auto& pc : pending) pfds.push_back({pc.fd.get(), POLLIN, 0});
    int rc = ::poll(pfds.data(), pfds.size(), net::ms_until(deadline, 100));
    if (rc < 0 && errno != EINTR) RP_THROW(TransportError, "poll(): ", std::strerror(errno));
    if (pfds[0].revents & POLLIN) {
      for (;;) {
        int c = ::accept4(listener.get(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) break;
        Pending pc;
        pc.fd = Fd(c);
        pc.until = std::min(deadline, Clock::now() + std::chrono::seconds(10));
        pc.from = net::peer_endpoint(c).str();
        pending.push_back(std::move(pc));
      }
    }
    for (auto& pc : pending) {
      if (!pc.fd.valid()) continue;
      auto* dst = reinterpret_cast<unsigned char*>(&pc.h) + pc.have;
      ssize_t got = ::recv(pc.fd.get(), dst, sizeof(Hello) - pc.have, MSG_DONTWAIT);
      if (got == 0 || (got < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
        reject(pc, "closed before completing the handshake");
        continue;
      }
      if (got > 0) pc.have += static_cast<std::size_t>(got);
      if (pc.have >= 4 && pc.h.magic != kHelloMagic) {
        reject(pc, "not a ringpress handshake (bad magic)");
        continue;
      }
      if (pc.have < sizeof(Hello)) {
        if (Clock::now() >= pc.until) reject(pc, "handshake not completed in time");
        continue;
      }
      const Hello& h = pc.h;
      std::string why = check_hello(h, secret, me, n);
      if (why.empty() && pairs_[h.from])
        why = "rank " + std::to_string(h.from) + " is already connected";
      if (!why.empty()) {
        reject(pc, why);
      } else {
        int q = static_cast<int>(h.from);
        Ack ack{kAckMagic, static_cast<std::uint32_t>(me)};
        ScopedErrorContext pcx("accept", me, q);
        net::write_all(pc.fd.get(), &ack, sizeof ack, deadline, "handshake ack");
        auto p = std::make_unique<Pair>();
        p->peer = q;
        p->fd = std::move(pc.fd);
        p->endpoint = pc.from;
        pairs_[static_cast<std::size_t>(q)] = std::move(p);
        --missing;
      }
    }
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [](const Pending& pc) { return !pc.fd.valid(); }),
                  pending.end());
  }
  listener.reset();

  // Phase 3: the lower ranks' acknowledgements.
  for (int q = 0; q < me; ++q) {
    ScopedErrorContext pc("connect", me, q);
    Ack ack{};
    net::read_all(pairs_[static_cast<std::size_t>(q)]->fd.get(), &ack, sizeof ack, deadline,
                  "handshake ack");
    RP_ENFORCE(ack.magic == kAckMagic && static_cast<int>(ack.from) == q, TransportError,
               "bad handshake acknowledgement from ", eps[static_cast<std::size_t>(q)].str());
  }
  for (auto& p : pairs_) {
    if (!p) continue;
    net::set_nonblocking(p->fd.get(), true);
    net::set_nodelay(p->fd.get());
  }

  std::vector<bool> same(static_cast<std::size_t>(n), false);
  for (int q = 0; q < n; ++q) {
    if (q == me) continue;
    bool local = hosts[static_cast<std::size_t>(q)] == me_host;
    same[static_cast<std::size_t>(q)] =
        opts_.transport == "shm" || (opts_.transport == "auto" && local);
    RP_ENFORCE(!(opts_.transport == "shm" && !local), UsageError, "transport=shm but rank ", q,
               " is on another host (", hosts[static_cast<std::size_t>(q)], ")");
  }
  setup_shm(same, deadline);
}

void ContextImpl::setup_shm(const std::vector<bool>& same, Deadline deadline) {
  const int me = opts_.rank;
  const int n = opts_.size;
  // A: create a segment for each same-host higher rank and send its name.
  for (int q = me + 1; q < n; ++q) {
    if (!same[static_cast<std::size_t>(q)]) continue;
    ScopedErrorContext pc("shm.setup", me, q);
    Pair& p = *pairs_[static_cast<std::size_t>(q)];
    std::string name = "/ringpress-" + job_ + "-" + std::to_string(getpid()) + "-" +
                       std::to_string(me) + "-" + std::to_string(q);
    p.link = std::make_unique<shm::Link>(name, opts_.shm_ring_bytes, true, true);
    std::uint32_t len = static_cast<std::uint32_t>(name.size());
    net::write_all(p.fd.get(), &len, 4, deadline, "shm setup");
    net::write_all(p.fd.get(), name.data(), name.size(), deadline, "shm setup");
    p.kind = TransportKind::kShm;
  }
  // B: map the segments of same-host lower ranks and acknowledge.
  for (int q = 0; q < me; ++q) {
    if (!same[static_cast<std::size_t>(q)]) continue;
    ScopedErrorContext pc("shm.setup", me, q);
    Pair& p = *pairs_[static_cast<std::size_t>(q)];
    std::uint32_t len = 0;
    net::read_all(p.fd.get(), &len, 4, deadline, "shm setup");
    RP_ENFORCE(len > 0 && len < 256, TransportError, "bad shm segment name length ", len);
    std::string name(len, '\0');
    net::read_all(p.fd.get(), name.data(), len, deadline, "shm setup");
    RP_ENFORCE(name.rfind("/ringpress-", 0) == 0 && name.find('/', 1) == std::string::npos,
               TransportError, "bad shm segment name '", name, "'");
    p.link = std::make_unique<shm::Link>(name, opts_.shm_ring_bytes, false, false);
    unsigned char ok = 'K';
    net::write_all(p.fd.get(), &ok, 1, deadline, "shm setup");
    p.kind = TransportKind::kShm;
  }
  // C: once the peer has mapped it, the name can go: nothing is left behind after this point.
  for (int q = me + 1; q < n; ++q) {
    if (!same[static_cast<std::size_t>(q)]) continue;
    ScopedErrorContext pc("shm.setup", me, q);
    Pair& p = *pairs_[static_cast<std::size_t>(q)];
    unsigned char ok = 0;
    net::read_all(p.fd.get(), &ok, 1, deadline, "shm setup");
    RP_ENFORCE(ok == 'K', TransportError, "bad shm acknowledgement");
    p.link->unlink();
  }
}

void ContextImpl::register_epoll() {
  epoll_ = Fd(epoll_create1(EPOLL_CLOEXEC));
  RP_ENFORCE(epoll_.valid(), TransportError, "epoll_create1: ", std::strerror(errno));
  for (auto& p : pairs_) {
    if (!p) continue;
    epoll_event ev{};
    std::uint32_t events = EPOLLIN | EPOLLRDHUP | EPOLLET;
    if (p->kind == TransportKind::kTcp) events |= EPOLLOUT;
    ev.events = events;
    ev.data.u32 = static_cast<std::uint32_t>(p->peer);
    RP_ENFORCE(epoll_ctl(epoll_.get(), EPOLL_CTL_ADD, p->fd.get(), &ev) == 0, TransportError,
               "epoll_ctl: ", std::strerror(errno));
    p->ctl_pending = p->kind == TransportKind::kShm;
  }
}

// ------------------------------------------------------------------ posting and waiting

Ticket ContextImpl::post_send(int peer, const MsgHeader& h, const void* data) {
  check();
  Pair& p = pair(peer);
  SendOp op;
  op.h = h;
  op.h.magic = MsgHeader::kMagic;
  op.h.type = static_cast<std::uint8_t>(MsgType::kData);
  op.data = static_cast<const unsigned char*>(data);
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

void ContextImpl::wait(const Ticket& t, Deadline deadline) {
  check();
  if (done(t)) return;
  struct Driving {
    bool& flag;
    explicit Driving(bool& f) : flag(f) { flag = true; }
    ~Driving() { flag = false; }
  } driving(driving_);
  try {
    auto spin_until = Clock::now() + std::chrono::microseconds(opts_.spin_us);
    int idle = 0;
    while (!done(t)) {
      if (progress_all()) {
        idle = 0;
        spin_until = Clock::now() + std::chrono::microseconds(opts_.spin_us);
        continue;
      }
      auto now = Clock::now();
      if (now >= deadline) {
        Pair& p = *pairs_[static_cast<std::size_t>(t.peer)];
        RP_THROW_CTX(TimeoutError, ctx(t.peer), "deadline passed while waiting to ",
                     t.send ? "send to" : "receive from", " peer ", t.peer, " (",
                     transport_kind_name(p.kind), " ", p.endpoint, ")");
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

void ContextImpl::fail(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const Error& err) {
    abort(err);
  } catch (const std::exception& ex) {
    abort(InternalError(ctx(-1), ex.what(), __FILE__, __LINE__));
  }
  std::rethrow_exception(error_ ? error_ : e);
}

void ContextImpl::sleep_until(Deadline deadline) {
  // Announce sleep on every shm ring we wait for; if one turns out ready, do not sleep.
  bool must_stay = false;
  for (auto& pp : pairs_) {
    if (!pp || !pp->link) continue;
    Pair& p = *pp;
    if (!p.recvs.empty()) {
      p.wants_wake_read = true;
      if (!p.link->sleep_as_reader()) must_stay = true;
    }
    if (!p.sends.empty()) {
      p.wants_wake_write = true;
      if (!p.link->sleep_as_writer()) must_stay = true;
    }
  }
  if (!must_stay) {
    epoll_event evs[64];
    int rc = epoll_wait(epoll_.get(), evs, 64, net::ms_until(deadline, 200));
    for (int i = 0; i < rc; ++i) {
      Pair& p = *pairs_[evs[i].data.u32];
      if (evs[i].events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) p.hup = true;
      if (p.kind == TransportKind::kShm && (evs[i].events & EPOLLIN)) p.ctl_pending = true;
    }
  }
  for (auto& pp : pairs_) {
    if (!pp || !pp->link) continue;
    if (pp->wants_wake_read) pp->link->wake_as_reader();
    if (pp->wants_wake_write) pp->link->wake_as_writer();
    pp->wants_wake_read = pp->wants_wake_write = false;
  }
}

bool ContextImpl::progress_all() {
  bool any = false;
  for (auto& pp : pairs_) {
    if (!pp) continue;
    Pair& p = *pp;
    if (p.ctl_pending) any |= progress_ctl(p);
    if (!p.sends.empty()) any |= progress_send(p);
    if (!p.recvs.empty()) any |= progress_recv(p);
    if (p.hup) handle_hup(p);
  }
  return any;
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
  msghdr mh{};
  mh.msg_iov = const_cast<iovec*>(iov);
  mh.msg_iovlen = static_cast<std::size_t>(n);
  for (;;) {
    ssize_t w = ::sendmsg(p.fd.get(), &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) return static_cast<std::size_t>(w);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    fail_pair(p, detail::str_cat("send to peer ", p.peer, " (", p.endpoint, ") failed: ",
                                 std::strerror(errno), " (peer process died or closed?)"));
  }
}

std::size_t ContextImpl::stream_read(Pair& p, void* dst, std::size_t len) {
  if (p.link) {
    bool wake = false;
    std::size_t r = p.link->read_some(dst, len, &wake);
    if (r == shm::Link::kCorrupt) {
      fail_pair(p, detail::str_cat("the shared-memory ring from peer ", p.peer,
                                   " is corrupt (its write position ",
                                   "is not within the ring): the peer wrote over it"));
    }
    if (wake) doorbell(p);
    return r;
  }
  for (;;) {
    ssize_t r = ::recv(p.fd.get(), dst, len, MSG_DONTWAIT);
    if (r > 0) return static_cast<std::size_t>(r);
    if (r == 0) {
      fail_pair(p, detail::str_cat("peer ", p.peer, " (", p.endpoint, ") closed the connection",
                                   p.bye ? "" : " (process died or exited early?)"));
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    fail_pair(p, detail::str_cat("receive from peer ", p.peer, " (", p.endpoint,
                                 ") failed: ", std::strerror(errno)));
  }
}

void ContextImpl::doorbell(Pair& p) {
  unsigned char b = kCtlDoorbell;
  // A full socket already holds doorbells: dropping this one loses nothing.
  (void)::send(p.fd.get(), &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
}

bool ContextImpl::progress_send(Pair& p) {
  bool any = false;
  while (!p.sends.empty()) {
    iovec iov[16];
    int n = 0;
    // Batch several small messages into one write.
    std::size_t batch = 0;
    for (auto it = p.sends.begin(); it != p.sends.end() && n + 2 <= 16 && batch < (1u << 20);
         ++it) {
      SendOp& op = *it;
      const std::size_t end = op.end();
      std::size_t off = op.off;
      if (off < sizeof(MsgHeader)) {
        std::size_t k = std::min(end, sizeof(MsgHeader)) - off;
        iov[n++] = {reinterpret_cast<unsigned char*>(&op.h) + off, k};
        off += k;
      }
      if (off < end)
        iov[n++] = {const_cast<unsigned char*>(op.data) + (off - sizeof(MsgHeader)), end - off};
      batch += end - op.off;
      if (op.truncate_at) break;
    }
    std::size_t w = stream_write(p, iov, n);
    if (w == 0) break;
    any = true;
    bytes_sent_ += w;
    while (w > 0) {
      SendOp& op = p.sends.front();
      std::size_t take = std::min(op.end() - op.off, w);
      op.off += take;
      w -= take;
      if (op.off == op.end()) {
        if (op.truncate_at) {
          std::fprintf(stderr, "ringpress: RINGPRESS_FAULT truncated a message to peer %d\n",
                       p.peer);
          _exit(3);
        }
        p.sends.pop_front();
        ++p.sends_done;
      }
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
    net::read_all(p.fd.get(), b.data(), b.size(), Clock::now() + std::chrono::seconds(2),
                  "abort message");
    raise_remote_abort(b, opts_.rank, p.peer);
  }
  if (h.type != static_cast<std::uint8_t>(MsgType::kData)) {
    RP_THROW_CTX(TransportError, ctx(p.peer), "peer ", p.peer, " sent message type ",
                 static_cast<int>(h.type), " where data was expected");
  }
  check_header(h, op.e, opts_.rank, p.peer);
  op.h = h;
  op.have_header = true;
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
    if (op.off < op.h.len) {
      std::size_t r = stream_read(p, op.data + op.off, op.h.len - op.off);
      if (r == 0) break;
      any = true;
      bytes_received_ += r;
      op.off += r;
      if (op.off < op.h.len) continue;
    }
    if (op.e.received) *op.e.received = op.h.len;
    p.recvs.pop_front();
    ++p.recvs_done;
    any = true;
  }
  return any;
}

bool ContextImpl::progress_ctl(Pair& p) {
  bool any = false;
  unsigned char buf[256];
  for (;;) {
    ssize_t r = ::recv(p.fd.get(), buf, sizeof buf, MSG_DONTWAIT);
    if (r > 0) {
      for (ssize_t i = 0; i < r; ++i) {
        if (buf[i] == kCtlDoorbell) {
          any = true;
        } else if (buf[i] == kCtlBye) {
          p.bye = true;
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
    if (r == 0) {
      p.hup = true;
      p.ctl_pending = false;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      p.ctl_pending = false;
      break;
    }
    p.hup = true;
    p.ctl_pending = false;
    break;
  }
  return any;
}

void ContextImpl::handle_hup(Pair& p) {
  if (closing_) {
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
bool ContextImpl::try_drain_for_abort(Pair& p) {
  Deadline dl = Clock::now() + std::chrono::seconds(1);
  std::vector<unsigned char> sink(1 << 16);
  auto read_exact = [&](void* dst, std::size_t len) {
    auto* d = static_cast<unsigned char*>(dst);
    while (len > 0) {
      ssize_t r = ::recv(p.fd.get(), d, len, MSG_DONTWAIT);
      if (r > 0) {
        d += r;
        len -= static_cast<std::size_t>(r);
      } else if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) &&
                 Clock::now() < dl) {
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
    if (h.type == static_cast<std::uint8_t>(MsgType::kBye)) p.bye = true;
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
                               p.bye ? " (it closed its communicator)" : "",
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

// ------------------------------------------------------------------ abort / close

void ContextImpl::abort(const Error& err) noexcept {
  if (broken_.load()) return;
  try {
    error_ = concrete_error(err);
  } catch (...) {
  }
  broken_.store(true, std::memory_order_release);
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
        // first (bounded: at most one segment, 200 ms), or give up and only hang up.
        // Only while the collective is still on the stack (inside wait()): after it unwound, a
        // send may point into a scratch buffer that is gone.
        if (driving_ && !p.sends.empty() && p.sends.front().off > 0) {
          SendOp& op = p.sends.front();
          try {
            const std::size_t end = op.end();
            if (op.off < sizeof(MsgHeader)) {
              net::write_all(p.fd.get(), reinterpret_cast<unsigned char*>(&op.h) + op.off,
                             sizeof(MsgHeader) - op.off,
                             Clock::now() + std::chrono::milliseconds(200), "abort");
              op.off = sizeof(MsgHeader);
            }
            if (op.off < end) {
              net::write_all(p.fd.get(), op.data + (op.off - sizeof(MsgHeader)), end - op.off,
                             Clock::now() + std::chrono::milliseconds(200), "abort");
            }
            op.off = 0;  // the message is complete: a boundary again
            p.sends.pop_front();
          } catch (...) {
          }
        }
        if (!p.sends.empty() && p.sends.front().off > 0) {
          ::shutdown(p.fd.get(), SHUT_WR);
          continue;
        }
        MsgHeader h;
        h.type = static_cast<std::uint8_t>(MsgType::kAbort);
        h.len = payload.size();
        Bytes m(reinterpret_cast<unsigned char*>(&h),
                reinterpret_cast<unsigned char*>(&h) + sizeof h);
        m.insert(m.end(), payload.begin(), payload.end());
        send_abort(p, m, dl);
      }
    }
    // Half-close: the peer reads our ABORT then end-of-stream; we keep reading (close()
    // drains), so our kernel never answers with a reset that would destroy the message.
    ::shutdown(p.fd.get(), SHUT_WR);
  }
}

void ContextImpl::close() noexcept {
  if (closed_) return;
  closed_ = true;
  closing_ = true;
  for (auto& pp : pairs_) {
    if (!pp || !pp->fd.valid()) continue;
    if (!broken_.load()) {
      if (pp->kind == TransportKind::kShm) {
        unsigned char b = kCtlBye;
        (void)::send(pp->fd.get(), &b, 1, MSG_NOSIGNAL | MSG_DONTWAIT);
      } else if (pp->sends.empty()) {
        MsgHeader h;
        h.type = static_cast<std::uint8_t>(MsgType::kBye);
        (void)::send(pp->fd.get(), &h, sizeof h, MSG_NOSIGNAL | MSG_DONTWAIT);
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
      ssize_t r = ::recv(pp->fd.get(), sink, sizeof sink, MSG_DONTWAIT);
      if (r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) break;
      if (r > 0) continue;
      if (Clock::now() >= dl) break;
      pollfd pf{pp->fd.get(), POLLIN | POLLRDHUP, 0};
      ::poll(&pf, 1, net::ms_until(dl, 50));
    }
  }
  pairs_.clear();
  epoll_.reset();
}

}  // namespace

std::unique_ptr<Context> Context::create(std::shared_ptr<Store> store, const ContextOptions& opts) {
  return std::make_unique<ContextImpl>(std::move(store), opts);
}

}  // namespace ringpress

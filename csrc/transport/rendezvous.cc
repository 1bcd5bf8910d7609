// Transport rendezvous: address publication through the Store, the job secret, the mutually
// authenticated connect/accept handshake, shm segment setup and epoll registration.
//
// Contract: after ContextImpl's constructor every other rank has a Pair in kReady, connected by
// one TCP socket (the higher rank connects; full mesh), authenticated by the job secret, and a
// shm::Link for same-host peers when the transport allows it. Nothing secret goes into the store
// except the job secret itself when the caller supplied none (rank 0 draws it).
// Cost: per rank one store set + (P-1) gets, P-1 TCP connections, one 80-byte hello or an 8-byte
// ack per connection, and for each shm peer one segment name + 1-byte ack. Bounded by
// opts.timeout; a connection that never completes its hello is dropped after 10 s on its own.
// Ownership: pairs are created here and handed to pairs_ (the ContextImpl owns them); the
// listener lives only for the accept phase. Runs on the constructing thread; no locks.
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "context_impl.h"
#include "ringpress/fault.h"

namespace ringpress::transport_impl {

using namespace protocol;

namespace {

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

}  // namespace

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
        int err = 0;
        net::Endpoint from;
        Fd c = net::accept_one(listener.get(), &from, &err);
        if (!c.valid()) break;  // none left (or out of fds: the next poll retries)
        Pending pc;
        pc.fd = std::move(c);
        pc.until = std::min(deadline, Clock::now() + std::chrono::seconds(10));
        pc.from = from.str();
        pending.push_back(std::move(pc));
      }
    }
    for (auto& pc : pending) {
      if (!pc.fd.valid()) continue;
      auto* dst = reinterpret_cast<unsigned char*>(&pc.h) + pc.have;
      int err = 0;
      long got = net::recv_some(pc.fd.get(), dst, sizeof(Hello) - pc.have, &err);
      if (got < 0) {
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
    p->ctl_readable = p->kind == TransportKind::kShm;
    set_state(*p, PairState::kReady);
  }
}

}  // namespace ringpress::transport_impl

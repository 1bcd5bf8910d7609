// Transport rendezvous: address publication through the Store (the address: bind_addr, else
// RINGPRESS_SOCKET_IFNAME's interface, else the route to the store host; the listener binds
// exactly that address unless 0.0.0.0 is asked for), the job key, the mutually
// authenticated connect/accept handshake (handshake.h), shm segment setup, the TCP links' record
// layer (secure_channel.h) and epoll registration.
//
// Contract: after ContextImpl's constructor every other rank has a Pair in kReady, connected by
// one TCP socket (the higher rank connects; full mesh) whose far end proved the job key, and a
// shm::Link for same-host peers when the transport allows it, else a SecureChannel. The job key
// never goes into the store when the operator configured one; without one, rank 0 draws a key
// and shares it through the store (the old, weaker mode; one warning per process).
// Cost: per rank one store set + (P-1) gets, P-1 TCP connections, a 48 + 72 + 36-byte handshake
// (three HMAC-SHA256 and two HKDF per connection), and for each shm peer one segment name +
// 1-byte ack. Bounded by opts.timeout; a connection that does not complete its part of the
// handshake is dropped after 10 s on its own, having cost at most 84 bytes of buffer.
// Ownership: pairs are created here and handed to pairs_ (the ContextImpl owns them); the
// listener lives only for the accept phase. Runs on the constructing thread; no locks.
#include <errno.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstring>

#include "context_impl.h"
#include "crypto.h"
#include "handshake.h"
#include "ringpress/env.h"
#include "ringpress/fault.h"

namespace ringpress::transport_impl {

using namespace protocol;

namespace {

void warn_no_key() {
  // Ranks may be threads of one process (tests, embedded use): the first one warns.
  static std::atomic<bool> warned{false};
  if (warned.exchange(true)) return;
  std::fprintf(
      stderr,
      "ringpress: warning: no job key (set RINGPRESS_JOB_KEY or RINGPRESS_JOB_KEY_FILE, the "
      "same on every rank): rank 0 shares a key through the rendezvous store, so any "
      "process that can reach the store can join this job (docs/security.md)\n");
}

}  // namespace

crypto::Key ContextImpl::load_job_key(const ContextOptions& opts, Store& store, bool creator) {
  const crypto::JobKey jk = crypto::configured_job_key(opts.secret);
  if (jk.present) return jk.key;
  warn_no_key();
  std::string material;
  if (creator) {
    material = crypto::random_hex(32);
    store.set("secret", Bytes(material.begin(), material.end()));
  } else {
    Bytes b = store.get("secret", opts.timeout);
    material.assign(b.begin(), b.end());
  }
  RP_ENFORCE(material.size() == 64, TransportError,
             "the job key rank 0 shared through the store "
             "has ",
             material.size(), " characters, not 64 (another job's store, or tampered?)");
  return crypto::job_key_from_material(material);
}

std::string ContextImpl::publish_addr() const {
  // The address others connect to (published) and the one the listener binds: the bind address
  // if one is given (argument or RINGPRESS_BIND_ADDR), else the address of the interface
  // RINGPRESS_SOCKET_IFNAME names, else the one that routes toward the store's host, else the
  // host name's. The listener binds exactly what is published, so a process that can reach
  // this host on another address cannot even open a connection; 0.0.0.0 (every interface)
  // only when asked for.
  std::string publish = opts_.bind_addr;
  if (publish.empty() || publish == "0.0.0.0") {
    const std::string ifname = env::string("RINGPRESS_SOCKET_IFNAME");
    if (!ifname.empty()) {
      publish = net::interface_addr(ifname);
    } else if (!opts_.route_hint.empty()) {
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
  return publish;
}

void ContextImpl::rendezvous(Store& store) {
  const Deadline deadline = Clock::now() + opts_.timeout;
  const int me = opts_.rank;
  const int n = opts_.size;
  const std::string bind = opts_.bind_addr;
  const std::string publish = publish_addr();
  const std::string listen_on = bind.empty() ? publish : bind;
  try {
    // The listener stays open for the context's life: shrink and grow reconnect through it.
    listener_ = net::listen_tcp(listen_on, 0, std::max(n + 64, 1024), opts_.tcp_buffer_bytes);
  } catch (const TransportError& e) {
    RP_THROW(UsageError, "cannot listen on ", listen_on,
             bind.empty() ? " (the address this rank publishes)" : " (the bind address)", ": ",
             e.what(),
             "; choose the address with RINGPRESS_SOCKET_IFNAME or RINGPRESS_BIND_ADDR "
             "(docs/configuration.md)");
  }
  net::set_nonblocking(listener_.get(), true);
  const int port = net::local_endpoint(listener_.get()).port;
  const std::string me_host = opts_.host_id.empty() ? host_identity() : "id:" + opts_.host_id;
  std::string info = publish + ":" + std::to_string(port) + "\n" + me_host;
  store.set("addr/" + std::to_string(me), Bytes(info.begin(), info.end()));
  fault::hit("rendezvous");

  key_ = load_job_key(opts_, store, me == 0);
  job_ = crypto::random_hex(6);

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

  roster_.eps = eps;
  roster_.hosts = hosts;
  roster_.hosts[static_cast<std::size_t>(me)] = me_host;
  roster_.eps[static_cast<std::size_t>(me)] = net::Endpoint{publish, port};
  MeshPlan plan;
  plan.me = me;
  plan.n = n;
  plan.key = key_;
  plan.eps = eps;
  plan.want.assign(static_cast<std::size_t>(n), true);
  plan.deadline = deadline;
  std::vector<bool> dead;
  plan.dead = &dead;
  plan.what = "connect";
  pairs_ = mesh(plan);
  finish_links(deadline);
}

// From connected, authenticated sockets (pairs_, roster_.hosts) to a working context: the
// topology, shared-memory rings for same-host peers, the TCP links' record layer.
void ContextImpl::finish_links(Deadline deadline) {
  const int me = opts_.rank;
  const int n = opts_.size;
  const std::vector<std::string>& hosts = roster_.hosts;
  const std::string& me_host = hosts[static_cast<std::size_t>(me)];

  for (auto& p : pairs_) {
    if (!p) continue;
    net::set_nonblocking(p->fd.get(), true);
    net::set_nodelay(p->fd.get());
  }

  // The topology: host indices in the order of each host's lowest rank (the same on every rank).
  topo_.host.assign(static_cast<std::size_t>(n), -1);
  topo_.hosts = 0;
  for (int q = 0; q < n; ++q) {
    if (topo_.host[static_cast<std::size_t>(q)] >= 0) continue;
    for (int s = q; s < n; ++s) {
      if (hosts[static_cast<std::size_t>(s)] == hosts[static_cast<std::size_t>(q)])
        topo_.host[static_cast<std::size_t>(s)] = topo_.hosts;
    }
    ++topo_.hosts;
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
  // TCP links: every byte from here on goes through the record layer.
  for (auto& p : pairs_) {
    if (!p || p->kind != TransportKind::kTcp) continue;
    const auto& k = p->keys;
    p->chan = p->connector
                  ? std::make_unique<SecureChannel>(p->peer, k.c_to_a, 1, k.a_to_c, 2, encrypt_)
                  : std::make_unique<SecureChannel>(p->peer, k.a_to_c, 2, k.c_to_a, 1, encrypt_);
  }
  for (auto& p : pairs_) {
    if (p) p->keys = handshake::LinkKeys{};
  }
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
    if (opts_.shm_single_copy != "off") p.link->publish_single_copy();
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
    if (opts_.shm_single_copy != "off") {
      p.link->publish_single_copy();
      (void)p.link->probe_single_copy();
    }
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
    if (opts_.shm_single_copy != "off") (void)p.link->probe_single_copy();
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

// Recovery: re-forming a job after a failure (shrink) or to admit new processes (grow / join),
// over fresh connections between the listeners every rank keeps open, without a new rendezvous
// (shrink uses no store at all; grow uses it only to learn who waits to join).
//
// Contract (transport.h has the API): every member that takes part ends in a context with the
// same members in the same order and the same epoch, or raises. Steps:
//   1. Mesh (mesh.cc, tolerant): connect to every rank of the roster; a rank whose listener
//      refuses (its process is gone), that hangs up, or that has not connected by the deadline is
//      marked gone. Handshakes use the epoch's key, HKDF(job key, epoch), so a connection meant
//      for another epoch fails its handshake instead of joining the wrong one.
//   2. Agreement: flooding uniform consensus (Cachin, Guerraoui and Rodrigues, "Reliable and
//      Secure Distributed Programming", flooding uniform consensus with a perfect failure
//      detector): N rounds for a roster of N; in each round every rank sends the union of the
//      "gone" sets it knows to every rank it still hears from, and waits for the same from each
//      of them (or for its connection to fail, which makes it gone to this rank). After round
//      N every rank that finishes holds the same union (some round had no failure), and the ranks
//      outside it form the new context. The failure detector is the connection: a refused
//      connect, end-of-stream or a reset is a process that is gone; a rank silent until the
//      deadline is treated as gone too and its connections are closed, so it cannot take part
//      later (it learns it was left out from the closed connections and raises).
//   3. The new context over the connections to the members (renumbered in roster order): shm
//      rings, the record layer, epoll, as after a rendezvous. A member that failed after the
//      agreement makes the new context broken at once (its first operation raises; shrink it
//      again), so every survivor still holds the same membership.
// Messages of step 2: 16-byte header ("RPA1", round, roster size, reserved), the set as a bitmap
// of ceil(N/8) bytes, and HMAC-SHA256 under a key derived from the link's handshake key for that
// direction, over the header and bitmap (a forged or replayed message fails the MAC or the round
// check, and counts as that connection failing).
// Cost: P-1 connections and handshakes, N rounds of P-1 messages of 48 + N/8 bytes each (about
// N round trips: 4 ranks on one host take a few ms), plus the new context's shm setup.
// Not covered: a network partition (each side may form its own smaller job), a rank that was only
// slow past the deadline (left out; it can join again).
#include <errno.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "context_impl.h"
#include "crypto.h"
#include "ringpress/fault.h"

namespace ringpress {

std::unique_ptr<Context> Context::shrink(std::chrono::milliseconds, std::vector<int>*) {
  RP_THROW(UsageError, "shrink() needs a transport context of its own, not a view of one");
}

std::unique_ptr<Context> Context::grow(Store&, const std::string&, std::chrono::milliseconds,
                                       std::vector<int>*) {
  RP_THROW(UsageError, "grow() needs a transport context of its own, not a view of one");
}

std::unique_ptr<Context> Context::join(std::shared_ptr<Store> store, const ContextOptions& opts) {
  RP_ENFORCE(store != nullptr, UsageError, "join() needs the job's store");
  return transport_impl::ContextImpl::join(*store, opts);
}

namespace transport_impl {

namespace {

constexpr std::uint32_t kAgreeMagic = 0x31415052u;  // "RPA1"
constexpr std::size_t kAgreeHeader = 16;
constexpr int kMaxRoster = 1 << 16;
const char* const kPrefix = "recovery/";  // store keys of grow/join (under the job's prefix)

std::size_t idx(int q) {
  return static_cast<std::size_t>(q);
}

crypto::Key epoch_key(const crypto::Key& job, std::uint64_t epoch) {
  return crypto::hkdf(job, {crypto::Part(&epoch, sizeof epoch)}, "ringpress epoch v1", {});
}

// The agreement's MAC key for one direction of a pair, from the handshake's link key.
crypto::Key agree_key(const crypto::Key& link) {
  return crypto::hkdf(link, {}, "ringpress agree v1", {});
}

std::string bytes_str(const Bytes& b) {
  return std::string(b.begin(), b.end());
}
Bytes str_bytes(const std::string& s) {
  return Bytes(s.begin(), s.end());
}

// Roster records: "addr:port\nhost identity", joined with '\x1e' (host_identity() is printable;
// a RINGPRESS_HOST_ID holding that byte or a newline is refused here).
constexpr char kSep = '\x1e';

std::string encode_roster(const Roster& r) {
  std::string s;
  for (int q = 0; q < r.size(); ++q) {
    if (q) s += kSep;
    const std::string& h = r.hosts[idx(q)];
    RP_ENFORCE(
        h.find(kSep) == std::string::npos && h.find('\n') == std::string::npos && h.size() <= 1024,
        UsageError, "host identity of rank ", q,
        " is not printable (RINGPRESS_HOST_ID: at most 1024 bytes, no control bytes)");
    s += r.eps[idx(q)].str() + "\n" + h;
  }
  return s;
}

Roster decode_roster(const std::string& s, int expect) {
  Roster r;
  std::size_t at = 0;
  while (at <= s.size()) {
    std::size_t end = s.find(kSep, at);
    if (end == std::string::npos) end = s.size();
    const std::string rec = s.substr(at, end - at);
    const std::size_t nl = rec.find('\n');
    RP_ENFORCE(nl != std::string::npos && nl > 0 && rec.size() - nl - 1 <= 1024, TransportError,
               "malformed roster record from the store");
    r.eps.push_back(net::parse_endpoint(rec.substr(0, nl)));
    r.hosts.push_back(rec.substr(nl + 1));
    RP_ENFORCE(r.size() <= kMaxRoster, TransportError, "roster from the store is too large");
    at = end + 1;
  }
  RP_ENFORCE(expect < 0 || r.size() == expect, TransportError, "roster from the store has ",
             r.size(), " records, not ", expect);
  return r;
}

// Flooding uniform consensus on the set of gone ranks (see the file comment). `gone` holds this
// rank's own findings on entry and the decision on return; pairs to ranks that fail are closed.
void agree(std::vector<std::unique_ptr<Pair>>& pairs, int me, std::vector<bool>& gone,
           Deadline deadline) {
  const int n = static_cast<int>(pairs.size());
  const std::size_t nb = (idx(n) + 7) / 8;
  const std::size_t msg_len = kAgreeHeader + nb + crypto::kMacBytes;
  std::vector<bool> hears(idx(n), false);  // connections still good
  std::vector<crypto::Key> tx(idx(n)), rx(idx(n));
  for (int q = 0; q < n; ++q) {
    if (q == me || !pairs[idx(q)] || gone[idx(q)]) continue;
    Pair& p = *pairs[idx(q)];
    hears[idx(q)] = true;
    tx[idx(q)] = agree_key(p.connector ? p.keys.c_to_a : p.keys.a_to_c);
    rx[idx(q)] = agree_key(p.connector ? p.keys.a_to_c : p.keys.c_to_a);
    net::set_nonblocking(p.fd.get(), true);
  }
  auto drop = [&](int q) {
    hears[idx(q)] = false;
    gone[idx(q)] = true;  // this rank no longer hears q: q is gone to it (not yet to the others)
    ::shutdown(pairs[idx(q)]->fd.get(), SHUT_RDWR);
  };
  // The proposal set is the union of the sets received, never this rank's later findings
  // (the algorithm's condition); findings during a round only stop the waiting.
  std::vector<bool> proposal = gone;
  auto header = [&](unsigned char* m, std::uint32_t round) {
    const std::uint32_t magic = kAgreeMagic, nn = static_cast<std::uint32_t>(n), zero = 0;
    std::memcpy(m, &magic, 4);
    std::memcpy(m + 4, &round, 4);
    std::memcpy(m + 8, &nn, 4);
    std::memcpy(m + 12, &zero, 4);
  };
  std::vector<unsigned char> out(msg_len);
  std::vector<std::vector<unsigned char>> in(idx(n), std::vector<unsigned char>(msg_len));
  std::vector<std::size_t> have(idx(n), 0);
  for (std::uint32_t round = 1; round <= static_cast<std::uint32_t>(n); ++round) {
    fault::hit("recovery.round");
    header(out.data(), round);
    std::fill(out.begin() + kAgreeHeader, out.end(), 0);
    for (int q = 0; q < n; ++q) {
      if (proposal[idx(q)])
        out[kAgreeHeader + idx(q) / 8] |= static_cast<unsigned char>(1u << (q % 8));
    }
    for (int q = 0; q < n; ++q) {
      if (!hears[idx(q)]) continue;
      const crypto::Mac mac =
          crypto::mac(tx[idx(q)], "agree", {crypto::Part(out.data(), kAgreeHeader + nb)});
      std::memcpy(out.data() + kAgreeHeader + nb, mac.data(), mac.size());
      try {
        net::write_all(pairs[idx(q)]->fd.get(), out.data(), msg_len, deadline, "agreement");
      } catch (const Error&) {
        drop(q);
      }
    }
    std::vector<bool> got(idx(n), false);
    for (;;) {
      std::vector<pollfd> pfds;
      std::vector<int> who;
      for (int q = 0; q < n; ++q) {
        if (hears[idx(q)] && !got[idx(q)]) {
          pfds.push_back({pairs[idx(q)]->fd.get(), POLLIN, 0});
          who.push_back(q);
        }
      }
      if (who.empty()) break;
      if (Clock::now() >= deadline) {
        for (int q : who) drop(q);
        break;
      }
      const int rc = ::poll(pfds.data(), pfds.size(), net::ms_until(deadline, 100));
      if (rc < 0 && errno != EINTR) RP_THROW(TransportError, "poll(): ", std::strerror(errno));
      for (std::size_t i = 0; i < who.size(); ++i) {
        if (!pfds[i].revents) continue;
        const int q = who[i];
        int err = 0;
        const long r = net::recv_some(pairs[idx(q)]->fd.get(), in[idx(q)].data() + have[idx(q)],
                                      msg_len - have[idx(q)], &err);
        if (r < 0) {
          drop(q);
          continue;
        }
        have[idx(q)] += static_cast<std::size_t>(r);
        if (have[idx(q)] < msg_len) continue;
        have[idx(q)] = 0;
        const unsigned char* m = in[idx(q)].data();
        std::uint32_t magic = 0, rr = 0, nn = 0;
        std::memcpy(&magic, m, 4);
        std::memcpy(&rr, m + 4, 4);
        std::memcpy(&nn, m + 8, 4);
        const crypto::Mac mac =
            crypto::mac(rx[idx(q)], "agree", {crypto::Part(m, kAgreeHeader + nb)});
        if (magic != kAgreeMagic || rr != round || nn != static_cast<std::uint32_t>(n) ||
            !crypto::equal(mac.data(), m + kAgreeHeader + nb, mac.size())) {
          std::fprintf(stderr,
                       "ringpress: rank %d: bad agreement message from rank %d; "
                       "treating that connection as failed\n",
                       me, q);
          drop(q);
          continue;
        }
        got[idx(q)] = true;
        for (int s = 0; s < n; ++s) {
          if (m[kAgreeHeader + idx(s) / 8] & (1u << (s % 8))) proposal[idx(s)] = true;
        }
      }
    }
  }
  // The decision: the union after round N (the same on every rank that gets here). Ranks this
  // rank stopped hearing from but that the others kept are members; the new context starts
  // broken if one of them cannot be reached (reform()).
  const std::vector<bool> heard_gone = gone;
  gone = proposal;
  for (int q = 0; q < n; ++q) {
    if (heard_gone[idx(q)] && !gone[idx(q)] && pairs[idx(q)]) {
      pairs[idx(q)]->peer = -2;  // marks "member, but not reachable from here"
    }
  }
}

}  // namespace

std::unique_ptr<Context> ContextImpl::reform(const ContextOptions& opts, bool encrypt,
                                             const crypto::Key& job_key, const std::string& job,
                                             net::Fd listener, const Roster& roster, int me,
                                             std::uint64_t epoch, const std::vector<int>& old_fd,
                                             Deadline deadline, std::vector<int>* left_out,
                                             const char* what) {
  const int n = roster.size();
  ScopedErrorContext ec(what, me);
  ContextOptions o = opts;
  o.rank = me;
  o.size = n;
  auto ctx = std::make_unique<ContextImpl>(o, encrypt);
  ctx->listener_ = std::move(listener);
  ctx->key_ = job_key;
  ctx->job_ = job;
  MeshPlan plan;
  plan.me = me;
  plan.n = n;
  plan.key = epoch_key(job_key, epoch);
  plan.eps = roster.eps;
  plan.want.assign(idx(n), true);
  plan.deadline = deadline;
  plan.tolerant = true;
  plan.old_fd = old_fd;
  std::vector<bool> gone;
  plan.dead = &gone;
  plan.what = what;
  fault::hit("recovery.mesh");
  std::vector<std::unique_ptr<Pair>> pairs = ctx->mesh(plan);
  gone.resize(idx(n), false);
  fault::hit("recovery.agree");
  agree(pairs, me, gone, deadline);
  if (gone[idx(me)]) {
    RP_THROW_CTX(TransportError, (ErrorContext{me, -1, what}),
                 "the other members left this rank out of the re-formed communicator (they could "
                 "not reach it before the deadline); it can join again");
  }
  std::vector<int> members;
  for (int q = 0; q < n; ++q) {
    if (!gone[idx(q)]) {
      members.push_back(q);
    } else if (left_out) {
      left_out->push_back(q);
    }
  }
  const int m = static_cast<int>(members.size());
  ctx->opts_.size = m;
  ctx->opts_.rank =
      static_cast<int>(std::find(members.begin(), members.end(), me) - members.begin());
  ctx->pairs_.clear();
  ctx->pairs_.resize(idx(m));
  ctx->roster_ = Roster{};
  ctx->epoch_ = epoch;
  ctx->topo_ = Topology::single(m);
  int unreachable = -1;
  for (int i = 0; i < m; ++i) {
    const int q = members[idx(i)];
    ctx->roster_.eps.push_back(roster.eps[idx(q)]);
    ctx->roster_.hosts.push_back(roster.hosts[idx(q)]);
    if (q == me) continue;
    std::unique_ptr<Pair>& p = pairs[idx(q)];
    if (!p || p->peer == -2) {
      if (unreachable < 0) unreachable = i;
      if (!p) continue;
    }
    p->peer = i;
    ctx->pairs_[idx(i)] = std::move(p);
  }
  for (auto& p : pairs) {
    if (p) ::shutdown(p->fd.get(), SHUT_RDWR);  // left out: they learn it from the hang-up
  }
  try {
    if (unreachable >= 0) {
      RP_THROW_CTX(TransportError, (ErrorContext{ctx->opts_.rank, unreachable, what}), "rank ",
                   unreachable, " of the re-formed communicator (epoch ", epoch,
                   ") failed while it was being formed; shrink again");
    }
    for (auto& p : ctx->pairs_) {
      if (!p) continue;
      net::set_nonblocking(p->fd.get(), false);
    }
    ctx->finish_links(deadline);
    for (auto& p : ctx->pairs_) {
      if (!p) continue;
      net::set_nonblocking(p->fd.get(), true);
      net::set_nodelay(p->fd.get());
    }
    ctx->register_epoll();
  } catch (const Error& e) {
    // Broken from the start, the same for everyone: the members that could not finish close
    // their connections, so the others fail too (here or at their first operation).
    ctx->error_ = protocol::concrete_error(e);
    ctx->broken_.store(true, std::memory_order_release);
    for (auto& p : ctx->pairs_) {
      if (p && p->fd.valid()) ::shutdown(p->fd.get(), SHUT_RDWR);
    }
  }
  return ctx;
}

net::Fd ContextImpl::retire() {
  closed_ = true;
  pairs_.clear();  // no BYE, no drain: every peer is re-forming too (or gone)
  epoll_.reset();
  return std::move(listener_);
}

std::unique_ptr<Context> ContextImpl::shrink(std::chrono::milliseconds timeout,
                                             std::vector<int>* left_out) {
  RP_ENFORCE(!closed_, UsageError, "shrink() on a closed transport context");
  const int n = opts_.size;
  ensure_listener(nullptr);
  std::vector<int> old_fd(idx(n), -1);
  for (int q = 0; q < n; ++q) {
    if (pairs_[idx(q)] && pairs_[idx(q)]->fd.valid()) old_fd[idx(q)] = pairs_[idx(q)]->fd.get();
  }
  const Roster roster = roster_;
  auto next = reform(opts_, encrypt_, key_, job_, std::move(listener_), roster, opts_.rank,
                     epoch_ + 1, old_fd, Clock::now() + timeout, left_out, "shrink");
  retire();
  return next;
}

void ContextImpl::ensure_listener(Store* store) {
  if (listener_.valid()) return;
  // A one-rank context never rendezvoused: open what re-forming needs now.
  RP_ENFORCE(opts_.size == 1, InternalError, "a context of ", opts_.size,
             " ranks without a listener");
  const std::string publish = publish_addr();
  listener_ = net::listen_tcp(opts_.bind_addr.empty() ? publish : opts_.bind_addr, 0, 1024,
                              opts_.tcp_buffer_bytes);
  net::set_nonblocking(listener_.get(), true);
  roster_.eps = {net::Endpoint{publish, net::local_endpoint(listener_.get()).port}};
  roster_.hosts = {opts_.host_id.empty() ? host_identity() : "id:" + opts_.host_id};
  if (store) key_ = load_job_key(opts_, *store, true);
  if (job_.empty()) job_ = crypto::random_hex(6);
}

}  // namespace transport_impl

std::string Context::waiting_joiners(Store& store) {
  using namespace transport_impl;
  const std::string pre = kPrefix;
  // Who waits: tickets [next, last) taken by join(); each posts its record after its ticket.
  const std::int64_t last = store.add(pre + "join/tickets", 0);
  if (last == 0) return "";
  const std::int64_t next = store.add(pre + "join/next", 0);
  RP_ENFORCE(next >= 0 && last >= next && last - next <= kMaxRoster, TransportError,
             "join counters in the store make no sense (", next, ", ", last, ")");
  if (next == last) return "";
  std::string tickets;
  Roster joiners;
  for (std::int64_t t = next; t < last; ++t) {
    const std::string key = pre + "join/" + std::to_string(t);
    try {
      const std::string rec = bytes_str(store.get(key, std::chrono::milliseconds(2000)));
      Roster one = decode_roster(rec, 1);
      joiners.eps.push_back(one.eps[0]);
      joiners.hosts.push_back(one.hosts[0]);
      tickets += (tickets.empty() ? "" : ",") + std::to_string(t);
    } catch (const Error&) {
      store.set(pre + "admit/" + std::to_string(t), str_bytes("retry"));
    }
    try {
      (void)store.delete_key(key);  // read once; stores that cannot delete keep it
    } catch (const UsageError&) {
    }
  }
  store.add(pre + "join/next", last - next);
  if (joiners.size() == 0) return "";
  return tickets + "\n" + encode_roster(joiners);
}

namespace transport_impl {

std::unique_ptr<Context> ContextImpl::grow(Store& store, const std::string& blob,
                                           std::chrono::milliseconds timeout,
                                           std::vector<int>* left_out) {
  RP_ENFORCE(!closed_, UsageError, "grow() on a closed transport context");
  check();  // a broken context shrinks first
  if (blob.empty()) return nullptr;
  ScopedErrorContext ec("grow", opts_.rank);
  const Deadline deadline = Clock::now() + timeout;
  ensure_listener(&store);
  const std::string pre = kPrefix;
  const std::size_t nl = blob.find('\n');
  RP_ENFORCE(nl != std::string::npos, TransportError, "malformed list of joiners");
  std::vector<std::int64_t> tickets;
  for (std::size_t at = 0; at < nl;) {
    std::size_t end = blob.find(',', at);
    if (end == std::string::npos || end > nl) end = nl;
    try {
      tickets.push_back(std::stoll(blob.substr(at, end - at)));
    } catch (const std::exception&) {
      RP_THROW(TransportError, "malformed list of joiners");
    }
    at = end + 1;
  }
  RP_ENFORCE(!tickets.empty(), TransportError, "malformed list of joiners");
  const Roster joiners = decode_roster(blob.substr(nl + 1), static_cast<int>(tickets.size()));
  Roster roster = roster_;
  for (int i = 0; i < joiners.size(); ++i) {
    roster.eps.push_back(joiners.eps[idx(i)]);
    roster.hosts.push_back(joiners.hosts[idx(i)]);
  }
  RP_ENFORCE(roster.size() <= kMaxRoster, UsageError, "a job of more than ", kMaxRoster, " ranks");
  const std::uint64_t epoch = epoch_ + 1;
  if (opts_.rank == 0) {
    const std::string all = encode_roster(roster);
    for (std::size_t i = 0; i < tickets.size(); ++i) {
      const std::string adm = std::to_string(epoch) + "\n" + std::to_string(roster.size()) + "\n" +
                              std::to_string(opts_.size + static_cast<int>(i)) + "\n" + all;
      store.set(pre + "admit/" + std::to_string(tickets[i]), str_bytes(adm));
    }
  }
  std::vector<int> old_fd(idx(roster.size()), -2);
  for (int q = 0; q < opts_.size; ++q) {
    old_fd[idx(q)] = pairs_[idx(q)] && pairs_[idx(q)]->fd.valid() ? pairs_[idx(q)]->fd.get() : -1;
  }
  auto next = reform(opts_, encrypt_, key_, job_, std::move(listener_), roster, opts_.rank, epoch,
                     old_fd, deadline, left_out, "grow");
  retire();
  return next;
}

std::unique_ptr<Context> ContextImpl::join(Store& store, const ContextOptions& in) {
  ContextOptions o = normalize(in);
  o.rank = 0;
  o.size = 1;
  ScopedErrorContext ec("join", -1);
  const bool encrypt = o.encrypt == "on";
  ContextImpl self(o, encrypt);
  self.ensure_listener(nullptr);
  const crypto::Key key = load_job_key(o, store, false);
  const std::string pre = kPrefix;
  const std::string rec = encode_roster(self.roster_);
  const Deadline wait_until = Clock::now() + o.timeout;
  for (;;) {
    const std::int64_t t = store.add(pre + "join/tickets", 1) - 1;
    store.set(pre + "join/" + std::to_string(t), str_bytes(rec));
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(wait_until - Clock::now());
    std::string adm;
    try {
      adm = bytes_str(store.get(pre + "admit/" + std::to_string(t),
                                std::max(left, std::chrono::milliseconds(1))));
    } catch (const TimeoutError&) {
      RP_THROW(TimeoutError, "no member admitted this process within ", o.timeout.count(),
               " ms (the members admit joiners when they call grow())");
    }
    if (adm == "retry") continue;
    // "<epoch>\n<size>\n<rank>\n<roster>", from the store: checked like any hostile input.
    std::size_t a = adm.find('\n'), b = a == std::string::npos ? a : adm.find('\n', a + 1),
                c = b == std::string::npos ? b : adm.find('\n', b + 1);
    RP_ENFORCE(c != std::string::npos, TransportError, "malformed admission record in the store");
    std::uint64_t epoch = 0;
    int n = 0, rank = 0;
    try {
      epoch = std::stoull(adm.substr(0, a));
      n = std::stoi(adm.substr(a + 1, b - a - 1));
      rank = std::stoi(adm.substr(b + 1, c - b - 1));
    } catch (const std::exception&) {
      RP_THROW(TransportError, "malformed admission record in the store");
    }
    RP_ENFORCE(n >= 2 && n <= kMaxRoster && rank > 0 && rank < n, TransportError,
               "admission record in the store names rank ", rank, " of ", n);
    const Roster roster = decode_roster(adm.substr(c + 1), n);
    RP_ENFORCE(roster.eps[idx(rank)].port == self.roster_.eps[0].port, TransportError,
               "admission record in the store does not list this process at rank ", rank);
    std::vector<int> old_fd(idx(n), -2);
    old_fd[idx(rank)] = -1;
    return reform(o, encrypt, key, crypto::random_hex(6), std::move(self.listener_), roster, rank,
                  epoch, old_fd, Clock::now() + o.timeout, nullptr, "join");
  }
}

}  // namespace transport_impl
}  // namespace ringpress

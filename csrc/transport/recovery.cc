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
// Grow: rank 0 reads who waits, writes their admission records, and hands the list to the other
// members (a broadcast in the engine); then steps 1-2 run among the members (phase 1) with the
// list in the agreement's messages, so a member that missed the broadcast (a member lost on the
// way: it raised and called shrink) learns it there, and growers and shrinkers decide alike.
// With a list, phase 2: each member dials each joiner (a joiner waits for the members, and so
// never reaches a listener still in phase 1), joiners connect among themselves, and all of them
// agree again (members proposing phase 1's set); step 3 then forms the grown context.
// Messages of step 2: 16-byte header ("RPA1", or "RPA2" in phase 2; round; roster size; length of
// the list of joiners), the set as a bitmap of ceil(N/8) bytes, the list, and HMAC-SHA256 under
// a key derived from the link's handshake key for that direction, over all of it (a forged or
// replayed message fails the MAC or the round check, and counts as that connection failing).
// Cost: P-1 connections and handshakes, N rounds of P-1 messages of 48 + N/8 bytes each (about
// N round trips: 4 ranks on one host take a few ms), plus the new context's shm setup; a grow
// adds the joiners' connections and N + J more rounds.
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

std::string Context::admit_joiners(Store&) {
  RP_THROW(UsageError, "grow() needs a transport context of its own, not a view of one");
}

std::unique_ptr<Context> Context::join(std::shared_ptr<Store> store, const ContextOptions& opts) {
  RP_ENFORCE(store != nullptr, UsageError, "join() needs the job's store");
  return transport_impl::ContextImpl::join(*store, opts);
}

namespace transport_impl {

namespace {

constexpr std::uint32_t kAgreeMagic = 0x31415052u;   // "RPA1": phase 1 (the members)
constexpr std::uint32_t kAgreeMagic2 = 0x32415052u;  // "RPA2": phase 2 of a grow (all)
constexpr std::size_t kAgreeHeader = 16;
constexpr int kMaxRoster = 1 << 16;
constexpr std::uint32_t kMaxJoinList = 16u << 20;  // a list of joiners, in an agreement message
const char* const kPrefix = "recovery/";  // store keys of grow/join (under the job's prefix)

std::size_t idx(int q) {
  return static_cast<std::size_t>(q);
}

// The handshake key of one phase of a re-formation (phase 1 "ringpress epoch v1", phase 2 of a
// grow "ringpress grow v1"): a connection meant for another epoch or phase fails its handshake.
crypto::Key epoch_key(const crypto::Key& job, std::uint64_t epoch, const char* label) {
  return crypto::hkdf(job, {crypto::Part(&epoch, sizeof epoch)}, label, {});
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
// `joiners` (phase 1 of a re-formation, else nullptr): the list of joiners this rank knows of
// ("" if none) on entry, the decided list on return; only rank 0 of the old context ever makes
// one for an epoch, so the union is that list or nothing. `magic` tells the phases apart.
void agree(std::vector<std::unique_ptr<Pair>>& pairs, int me, std::vector<bool>& gone,
           Deadline deadline, std::uint32_t magic, std::string* joiners) {
  const int n = static_cast<int>(pairs.size());
  const std::size_t nb = (idx(n) + 7) / 8;
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
  auto bad = [&](int q, const char* why) {
    std::fprintf(stderr,
                 "ringpress: rank %d: bad agreement message from rank %d (%s); treating that "
                 "connection as failed\n",
                 me, q, why);
    drop(q);
  };
  // The proposal is the union of the values received, never this rank's later findings (the
  // algorithm's condition); findings during a round only stop the waiting.
  std::vector<bool> proposal = gone;
  std::string list = joiners ? *joiners : std::string();
  // Message: "RPA1"/"RPA2", round, roster size, list length (u32 each), the bitmap, the list,
  // HMAC-SHA256 over all of it.
  std::vector<unsigned char> out;
  std::vector<std::vector<unsigned char>> in(idx(n));
  std::vector<std::size_t> have(idx(n), 0);
  for (std::uint32_t round = 1; round <= static_cast<std::uint32_t>(n); ++round) {
    fault::hit("recovery.round");
    const std::uint32_t nn = static_cast<std::uint32_t>(n);
    const std::uint32_t ll = static_cast<std::uint32_t>(list.size());
    out.assign(kAgreeHeader + nb, 0);
    std::memcpy(out.data(), &magic, 4);
    std::memcpy(out.data() + 4, &round, 4);
    std::memcpy(out.data() + 8, &nn, 4);
    std::memcpy(out.data() + 12, &ll, 4);
    for (int q = 0; q < n; ++q) {
      if (proposal[idx(q)])
        out[kAgreeHeader + idx(q) / 8] |= static_cast<unsigned char>(1u << (q % 8));
    }
    out.insert(out.end(), list.begin(), list.end());
    const std::size_t body = out.size();
    out.resize(body + crypto::kMacBytes);
    for (int q = 0; q < n; ++q) {
      if (!hears[idx(q)]) continue;
      const crypto::Mac mac = crypto::mac(tx[idx(q)], "agree", {crypto::Part(out.data(), body)});
      std::memcpy(out.data() + body, mac.data(), mac.size());
      try {
        net::write_all(pairs[idx(q)]->fd.get(), out.data(), out.size(), deadline, "agreement");
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
        std::vector<unsigned char>& m = in[idx(q)];
        // The header first (its length field sizes the rest, checked before anything is
        // allocated for it), then the rest; each read stops at the message's end, so a peer
        // already in the next phase or round stays in the socket.
        std::size_t want = kAgreeHeader;
        if (have[idx(q)] >= kAgreeHeader) {
          std::uint32_t len = 0;
          std::memcpy(&len, m.data() + 12, 4);
          want = kAgreeHeader + nb + len + crypto::kMacBytes;
        }
        m.resize(want);
        int err = 0;
        const long r = net::recv_some(pairs[idx(q)]->fd.get(), m.data() + have[idx(q)],
                                      want - have[idx(q)], &err);
        if (r < 0) {
          drop(q);
          continue;
        }
        have[idx(q)] += static_cast<std::size_t>(r);
        if (have[idx(q)] < want) continue;
        if (want == kAgreeHeader) {
          std::uint32_t mg = 0, rr = 0, mn = 0, len = 0;
          std::memcpy(&mg, m.data(), 4);
          std::memcpy(&rr, m.data() + 4, 4);
          std::memcpy(&mn, m.data() + 8, 4);
          std::memcpy(&len, m.data() + 12, 4);
          if (mg != magic || rr != round || mn != nn) {
            bad(q, "wrong phase, round or size");
          } else if (len > (joiners ? kMaxJoinList : 0)) {
            bad(q, "list of joiners too long");
          }
          continue;  // the rest of it on the next readiness
        }
        have[idx(q)] = 0;
        const std::size_t mbody = want - crypto::kMacBytes;
        const crypto::Mac mac = crypto::mac(rx[idx(q)], "agree", {crypto::Part(m.data(), mbody)});
        if (!crypto::equal(mac.data(), m.data() + mbody, mac.size())) {
          bad(q, "MAC");
          continue;
        }
        const std::string theirs(m.begin() + static_cast<long>(kAgreeHeader + nb),
                                 m.begin() + static_cast<long>(mbody));
        if (!theirs.empty() && !list.empty() && theirs != list) {
          bad(q, "a different list of joiners");
          continue;
        }
        if (list.empty()) list = theirs;
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
  if (joiners) *joiners = list;
  for (int q = 0; q < n; ++q) {
    if (heard_gone[idx(q)] && !gone[idx(q)] && pairs[idx(q)]) {
      pairs[idx(q)]->peer = -2;  // marks "member, but not reachable from here"
    }
  }
}

// A list of joiners as grow() passes it: "<ticket>,<ticket>...\n<roster of the joiners>".
std::pair<std::vector<std::int64_t>, Roster> parse_joiners(const std::string& blob) {
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
    RP_ENFORCE(tickets.size() <= static_cast<std::size_t>(kMaxRoster), TransportError,
               "malformed list of joiners");
    at = end + 1;
  }
  RP_ENFORCE(!tickets.empty(), TransportError, "malformed list of joiners");
  return {tickets, decode_roster(blob.substr(nl + 1), static_cast<int>(tickets.size()))};
}

}  // namespace

std::unique_ptr<Context> ContextImpl::reform(const ContextOptions& opts, bool encrypt,
                                             const crypto::Key& job_key, const std::string& job,
                                             net::Fd listener, const Roster& roster, int me,
                                             std::uint64_t epoch, const std::vector<int>& old_fd,
                                             Deadline deadline, std::vector<int>* left_out,
                                             const char* what, std::string joiners,
                                             int first_joiner) {
  ScopedErrorContext ec(what, me);
  ContextOptions o = opts;
  o.rank = me;
  o.size = roster.size();
  auto ctx = std::make_unique<ContextImpl>(o, encrypt);
  ctx->listener_ = std::move(listener);
  ctx->key_ = job_key;
  ctx->job_ = job;
  std::vector<std::unique_ptr<Pair>> pairs;
  std::vector<bool> gone;
  Roster all = roster;
  if (first_joiner < 0) {
    // Phase 1, among the members: who is gone, and whether a grow admits joiners (every member
    // learns the list here even if the broadcast that carried it failed on its way).
    MeshPlan plan;
    plan.me = me;
    plan.n = roster.size();
    plan.key = epoch_key(job_key, epoch, "ringpress epoch v1");
    plan.eps = roster.eps;
    plan.want.assign(idx(plan.n), true);
    plan.deadline = deadline;
    plan.tolerant = true;
    plan.old_fd = old_fd;
    plan.dead = &gone;
    plan.what = what;
    fault::hit("recovery.mesh");
    pairs = ctx->mesh(plan);
    gone.resize(idx(plan.n), false);
    fault::hit("recovery.agree");
    agree(pairs, me, gone, deadline, kAgreeMagic, &joiners);
    if (gone[idx(me)]) {
      RP_THROW_CTX(TransportError, (ErrorContext{me, -1, what}),
                   "the other members left this rank out of the re-formed communicator (they "
                   "could not reach it before the deadline); it can join again");
    }
    if (!joiners.empty()) {
      // Phase 2 follows: members this rank cannot reach are gone as far as it is concerned.
      first_joiner = plan.n;
      const Roster j = parse_joiners(joiners).second;
      RP_ENFORCE(plan.n + j.size() <= kMaxRoster, UsageError, "a job of more than ", kMaxRoster,
                 " ranks");
      for (int i = 0; i < j.size(); ++i) {
        all.eps.push_back(j.eps[idx(i)]);
        all.hosts.push_back(j.hosts[idx(i)]);
      }
      pairs.resize(idx(all.size()));
      gone.resize(idx(all.size()), false);
      for (int q = 0; q < plan.n; ++q) {
        if (pairs[idx(q)] && pairs[idx(q)]->peer == -2) {
          gone[idx(q)] = true;
          pairs[idx(q)].reset();
        }
      }
    }
  }
  if (first_joiner >= 0) {
    // Phase 2 of a grow: members dial the joiners (a joiner waits for the members instead of
    // reaching a listener that may still be in phase 1), joiners connect among themselves; all
    // agree once more, the members bringing what phase 1 decided.
    const int n = all.size();
    MeshPlan plan;
    plan.me = me;
    plan.n = n;
    plan.key = epoch_key(job_key, epoch, "ringpress grow v1");
    plan.eps = all.eps;
    plan.want.assign(idx(n), false);
    for (int q = 0; q < n; ++q) plan.want[idx(q)] = (q >= first_joiner || me >= first_joiner);
    plan.deadline = deadline;
    plan.tolerant = true;
    plan.old_fd.assign(idx(n), -2);  // no old sockets: probe the listeners of silent ranks
    plan.old_fd[idx(me)] = -1;
    std::vector<bool> dead = gone;
    dead.resize(idx(n), false);
    plan.dead = &dead;
    plan.what = what;
    plan.first_joiner = first_joiner;
    fault::hit("recovery.mesh");
    std::vector<std::unique_ptr<Pair>> fresh = ctx->mesh(plan);
    pairs.resize(idx(n));
    for (int q = 0; q < n; ++q) {
      if (fresh[idx(q)]) pairs[idx(q)] = std::move(fresh[idx(q)]);
    }
    gone = dead;
    fault::hit("recovery.agree");
    agree(pairs, me, gone, deadline, kAgreeMagic2, nullptr);
    if (gone[idx(me)]) {
      RP_THROW_CTX(TransportError, (ErrorContext{me, -1, what}),
                   "the others left this rank out of the grown communicator (they could not "
                   "reach it before the deadline); it can join again");
    }
  }
  const int n = all.size();
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
  for (int i = 0; i < m; ++i) {
    if (first_joiner >= 0 && members[idx(i)] >= first_joiner) ctx->joined_.push_back(i);
  }
  int unreachable = -1;
  for (int i = 0; i < m; ++i) {
    const int q = members[idx(i)];
    ctx->roster_.eps.push_back(all.eps[idx(q)]);
    ctx->roster_.hosts.push_back(all.hosts[idx(q)]);
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
  // A grow that failed on its way (a member lost while the list was handed round) still admits
  // its joiners: the list travels in the agreement, so every survivor makes the same choice.
  auto next = reform(opts_, encrypt_, key_, job_, std::move(listener_), roster, opts_.rank,
                     epoch_ + 1, old_fd, Clock::now() + timeout, left_out, "shrink", joiners_);
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

std::string ContextImpl::admit_joiners(Store& store) {
  RP_ENFORCE(!closed_, UsageError, "grow() on a closed transport context");
  RP_ENFORCE(opts_.rank == 0, InternalError, "admit_joiners() on rank ", opts_.rank);
  check();  // a broken context shrinks first
  ensure_listener(&store);
  const std::string pre = kPrefix;
  // Who waits: tickets [next, last) taken by join(); each posts its record after its ticket.
  const std::int64_t last = store.add(pre + "join/tickets", 0);
  if (last == 0) return "";
  const std::int64_t next = store.add(pre + "join/next", 0);
  RP_ENFORCE(next >= 0 && last >= next && last - next <= kMaxRoster, TransportError,
             "join counters in the store make no sense (", next, ", ", last, ")");
  if (next == last) return "";
  std::string tickets;
  std::vector<std::int64_t> ts;
  Roster joiners;
  for (std::int64_t t = next; t < last; ++t) {
    const std::string key = pre + "join/" + std::to_string(t);
    try {
      const std::string rec = bytes_str(store.get(key, std::chrono::milliseconds(2000)));
      Roster one = decode_roster(rec, 1);
      joiners.eps.push_back(one.eps[0]);
      joiners.hosts.push_back(one.hosts[0]);
      tickets += (tickets.empty() ? "" : ",") + std::to_string(t);
      ts.push_back(t);
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
  RP_ENFORCE(opts_.size + joiners.size() <= kMaxRoster, UsageError, "a job of more than ",
             kMaxRoster, " ranks");
  // Admitted before the members hear of it, so a joiner is waiting for the members' connections
  // by the time any member can dial it (phase 2), whichever member survives to do so.
  Roster all = roster_;
  for (int i = 0; i < joiners.size(); ++i) {
    all.eps.push_back(joiners.eps[idx(i)]);
    all.hosts.push_back(joiners.hosts[idx(i)]);
  }
  const std::string roster = encode_roster(all);
  for (std::size_t i = 0; i < ts.size(); ++i) {
    const std::string adm = std::to_string(epoch_ + 1) + "\n" + std::to_string(all.size()) + "\n" +
                            std::to_string(opts_.size) + "\n" +
                            std::to_string(opts_.size + static_cast<int>(i)) + "\n" + roster;
    store.set(pre + "admit/" + std::to_string(ts[i]), str_bytes(adm));
  }
  joiners_ = tickets + "\n" + encode_roster(joiners);
  return joiners_;
}

std::unique_ptr<Context> ContextImpl::grow(Store& store, const std::string& blob,
                                           std::chrono::milliseconds timeout,
                                           std::vector<int>* left_out) {
  RP_ENFORCE(!closed_, UsageError, "grow() on a closed transport context");
  check();  // a broken context shrinks first
  if (blob.empty()) return nullptr;
  ScopedErrorContext ec("grow", opts_.rank);
  (void)parse_joiners(blob);  // well-formed before anything else (it came from the network)
  ensure_listener(&store);
  joiners_ = blob;
  const int n = opts_.size;
  std::vector<int> old_fd(idx(n), -1);
  for (int q = 0; q < n; ++q) {
    if (pairs_[idx(q)] && pairs_[idx(q)]->fd.valid()) old_fd[idx(q)] = pairs_[idx(q)]->fd.get();
  }
  auto next = reform(opts_, encrypt_, key_, job_, std::move(listener_), roster_, opts_.rank,
                     epoch_ + 1, old_fd, Clock::now() + timeout, left_out, "grow", joiners_);
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
    // "<epoch>\n<size>\n<members>\n<rank>\n<roster>", from the store: checked like any hostile
    // input.
    std::vector<std::size_t> nl;
    for (std::size_t at = adm.find('\n'); at != std::string::npos && nl.size() < 4;
         at = adm.find('\n', at + 1)) {
      nl.push_back(at);
    }
    RP_ENFORCE(nl.size() == 4, TransportError, "malformed admission record in the store");
    std::uint64_t epoch = 0;
    int n = 0, members = 0, rank = 0;
    try {
      epoch = std::stoull(adm.substr(0, nl[0]));
      n = std::stoi(adm.substr(nl[0] + 1, nl[1] - nl[0] - 1));
      members = std::stoi(adm.substr(nl[1] + 1, nl[2] - nl[1] - 1));
      rank = std::stoi(adm.substr(nl[2] + 1, nl[3] - nl[2] - 1));
    } catch (const std::exception&) {
      RP_THROW(TransportError, "malformed admission record in the store");
    }
    RP_ENFORCE(n >= 2 && n <= kMaxRoster && members >= 1 && rank >= members && rank < n,
               TransportError, "admission record in the store names rank ", rank, " of ", n,
               " after ", members, " members");
    const Roster roster = decode_roster(adm.substr(nl[3] + 1), n);
    RP_ENFORCE(roster.eps[idx(rank)].port == self.roster_.eps[0].port, TransportError,
               "admission record in the store does not list this process at rank ", rank);
    return reform(o, encrypt, key, crypto::random_hex(6), std::move(self.listener_), roster, rank,
                  epoch, {}, Clock::now() + o.timeout, nullptr, "join", "", members);
  }
}

}  // namespace transport_impl
}  // namespace ringpress

// Connection mesh: connects this rank to a set of peers whose listener endpoints are known, each
// connection running the mutually authenticated handshake (handshake.h). Used by the rendezvous
// (every rank of a new job), by shrink (the survivors of a failure, recovery.cc) and by grow (the
// members and the ranks joining them).
//
// Contract: the rank connects to every wanted lower rank and accepts every wanted higher rank on
// its listener (one TCP socket per pair, full mesh; in a grow, members dial joiners instead:
// handshake::dials). Strict plans throw on the first failure
// (TimeoutError naming the ranks that did not complete by the deadline; TransportError naming a
// rank that refused us). Tolerant plans (recovery) never throw for a peer: a peer that refuses the
// connection, hangs up during the handshake or has not completed it by the deadline is marked
// dead and left out. A tolerant plan also watches the old context's socket to each peer that has
// not connected: once it hangs up, the peer's listener is probed (connection refused = the
// process is gone), so a dead higher rank costs one round trip, not the deadline.
// Connections that fail the handshake are refused and logged, as in the rendezvous; they never
// make a peer dead (a stranger cannot exclude a rank by claiming its number).
// Cost: P-1 connections and handshakes (three HMAC-SHA256 and two HKDF each); poll() in 100 ms
// slices. A connection that does not finish its part is dropped after 10 s, having cost at most
// 84 bytes of buffer.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "context_impl.h"
#include "handshake.h"

namespace ringpress::transport_impl {

namespace {

// One non-blocking connection attempt: true = something listens there (the probe is closed at
// once), false = refused or unreachable by `until`.
bool listener_alive(const net::Endpoint& ep, Deadline until, int buffer_bytes) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<std::uint16_t>(ep.port));
  try {
    const std::string ip = net::resolve_ipv4(ep.host);
    inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  } catch (const Error&) {
    return false;
  }
  int err = 0;
  net::Fd s =
      net::try_connect(reinterpret_cast<sockaddr*>(&sa), sizeof sa, until, buffer_bytes, &err);
  // Timed out (a host that does not answer): not proof of death; the deadline decides.
  return s.valid() || err == ETIMEDOUT;
}

}  // namespace

std::vector<std::unique_ptr<Pair>> ContextImpl::mesh(const MeshPlan& plan) {
  const int me = plan.me;
  const int n = plan.n;
  const Deadline deadline = plan.deadline;
  const auto idx = [](int q) { return static_cast<std::size_t>(q); };
  std::vector<std::unique_ptr<Pair>> pairs(idx(n));
  std::vector<bool>& dead = *plan.dead;
  dead.resize(idx(n), false);
  auto wanted = [&](int q) { return q != me && plan.want[idx(q)] && !dead[idx(q)]; };
  auto dials = [&](int q) { return handshake::dials(me, q, plan.first_joiner); };
  auto give_up = [&](int q, const std::string& why) {
    if (!plan.tolerant) {
      RP_THROW_CTX(TransportError, (ErrorContext{opts_.rank, q, plan.what}), why);
    }
    dead[idx(q)] = true;
    pairs[idx(q)].reset();
  };

  // Phase 1: connect to every wanted rank we dial (lower ranks) and say hello (does not wait).
  std::vector<handshake::Hello> hellos(idx(n));
  for (int q = 0; q < n; ++q) {
    if (!wanted(q) || !dials(q)) continue;
    ScopedErrorContext pc(plan.what, opts_.rank, q);
    auto p = std::make_unique<Pair>();
    p->peer = q;
    p->connector = true;
    const net::Endpoint& ep = plan.eps[idx(q)];
    p->endpoint = ep.str();
    if (plan.tolerant) {
      // The peer's listener exists since its rendezvous: a refusal means the process is gone.
      try {
        // A host that does not answer for 5 s is gone too (connects are made one by one).
        p->fd = net::connect_tcp_once(
            ep, std::min(deadline, Clock::now() + std::chrono::seconds(5)), opts_.tcp_buffer_bytes);
      } catch (const Error& e) {
        give_up(q, e.what());
        continue;
      }
    } else {
      p->fd = net::connect_tcp(ep, deadline, opts_.tcp_buffer_bytes);
    }
    hellos[idx(q)] = handshake::make_hello(me, q, encrypt_);
    try {
      net::write_all(p->fd.get(), &hellos[idx(q)], sizeof(handshake::Hello), deadline, "handshake");
    } catch (const Error& e) {
      if (!plan.tolerant) throw;  // strict: the error as it was (TimeoutError stays one)
      give_up(q, e.what());
      continue;
    }
    pairs[idx(q)] = std::move(p);
  }

  // Phase 2: accept every wanted higher rank, and finish the handshakes we started. Connections
  // are handled concurrently so one that never speaks, or speaks garbage, delays nobody: it is
  // dropped after its own short deadline. Each side answers as soon as the other's message is
  // complete, so no rank waits for another rank's other connections.
  // Per accepted connection: its Hello, then (after our Reply) its Proof; nothing else is read.
  struct Pending {
    Fd fd;
    handshake::Hello h{};
    handshake::Reply r{};
    handshake::Proof proof{};
    bool replied = false;
    std::size_t have = 0;  // bytes of the message being read (Hello, then Proof)
    Deadline until;
    std::string from;
  };
  std::vector<Pending> pending;
  std::vector<handshake::Reply> replies(idx(n));
  std::vector<std::size_t> reply_have(idx(n), 0);
  // Tolerant plans: when each silent higher rank's listener may be probed next (backing off).
  std::vector<Deadline> probe_at(idx(n), Clock::now());
  std::vector<int> probe_gap_ms(idx(n), 20);
  auto connecting = [&](int q) {  // our connection to rank q still waits for its Reply
    return dials(q) && wanted(q) && pairs[idx(q)] && reply_have[idx(q)] < sizeof(handshake::Reply);
  };
  auto accepting = [&](int q) { return !dials(q) && wanted(q) && !pairs[idx(q)]; };
  auto on_reply = [&](int q) {
    ScopedErrorContext pc(plan.what, opts_.rank, q);
    Pair& p = *pairs[idx(q)];
    const handshake::Hello& h = hellos[idx(q)];
    const handshake::Reply& r = replies[idx(q)];
    const std::string why = handshake::check_reply(plan.key, h, r);
    if (!why.empty()) {
      give_up(q,
              "refused rank " + std::to_string(q) + " at " + plan.eps[idx(q)].str() + ": " + why);
      return;
    }
    const handshake::Proof proof = handshake::make_proof(plan.key, h, r);
    try {
      net::write_all(p.fd.get(), &proof, sizeof proof, deadline, "handshake proof");
    } catch (const Error& e) {
      if (!plan.tolerant) throw;
      give_up(q, e.what());
      return;
    }
    p.keys = handshake::link_keys(plan.key, h, r);
  };
  auto reject = [&](Pending& pc, const std::string& why) {
    // A recovery probe (connected, then closed without a byte) is not worth a line.
    if (!(plan.tolerant && pc.have == 0 && !pc.replied)) {
      std::fprintf(stderr, "ringpress: rank %d rejected a connection from %s: %s\n", opts_.rank,
                   pc.from.c_str(), why.c_str());
      ++rejected_;
    }
    pc.fd.reset();
  };
  for (;;) {
    bool open = false;
    for (int q = 0; q < n; ++q) open = open || connecting(q) || accepting(q);
    if (!open) break;
    if (Clock::now() >= deadline) {
      std::string who;
      int first = -1;
      for (int q = 0; q < n; ++q) {
        if (!(connecting(q) || accepting(q))) continue;
        who += (who.empty() ? "" : ", ") + std::to_string(q);
        if (first < 0) first = q;
        if (plan.tolerant) give_up(q, "silent");
      }
      if (plan.tolerant) break;
      RP_THROW_CTX(TimeoutError, (ErrorContext{opts_.rank, first, plan.what}), "ranks [", who,
                   "] did not complete the connection handshake within ", opts_.timeout.count(),
                   " ms");
    }
    std::vector<pollfd> pfds;
    pfds.push_back({listener_.get(), POLLIN, 0});
    for (auto& pc : pending) pfds.push_back({pc.fd.get(), POLLIN, 0});
    for (int q = 0; q < n; ++q) {
      if (connecting(q)) pfds.push_back({pairs[idx(q)]->fd.get(), POLLIN, 0});
    }
    // Tolerant: the old sockets of silent ranks that dial us (their hang-up starts the probes;
    // -2: no old socket, probe on the back-off schedule alone).
    std::vector<int> watched;
    std::vector<int> unwatched;
    if (plan.tolerant) {
      for (int q = 0; q < n; ++q) {
        if (!accepting(q) || idx(q) >= plan.old_fd.size()) continue;
        if (plan.old_fd[idx(q)] >= 0) {
          pfds.push_back({plan.old_fd[idx(q)], POLLRDHUP, 0});
          watched.push_back(q);
        } else if (plan.old_fd[idx(q)] == -2) {
          unwatched.push_back(q);
        }
      }
    }
    int rc = ::poll(pfds.data(), pfds.size(), net::ms_until(deadline, plan.tolerant ? 20 : 100));
    if (rc < 0 && errno != EINTR) RP_THROW(TransportError, "poll(): ", std::strerror(errno));
    if (pfds[0].revents & POLLIN) {
      for (;;) {
        int err = 0;
        net::Endpoint from;
        Fd c = net::accept_one(listener_.get(), &from, &err);
        if (!c.valid()) break;  // none left (or out of fds: the next poll retries)
        Pending pc;
        pc.fd = std::move(c);
        pc.until = std::min(deadline, Clock::now() + std::chrono::seconds(10));
        pc.from = from.str();
        pending.push_back(std::move(pc));
      }
    }
    const std::size_t first_watched = pfds.size() - watched.size();
    auto probe = [&](int q) {
      if (Clock::now() < probe_at[idx(q)]) return;
      const Deadline until = std::min(deadline, Clock::now() + std::chrono::milliseconds(500));
      if (!listener_alive(plan.eps[idx(q)], until, opts_.tcp_buffer_bytes)) {
        give_up(q, "its listener refuses connections: the process is gone");
        return;
      }
      probe_at[idx(q)] = Clock::now() + std::chrono::milliseconds(probe_gap_ms[idx(q)]);
      probe_gap_ms[idx(q)] = std::min(probe_gap_ms[idx(q)] * 2, 2000);
    };
    for (std::size_t i = 0; i < watched.size(); ++i) {
      if (pfds[first_watched + i].revents & (POLLRDHUP | POLLHUP | POLLERR)) probe(watched[i]);
    }
    for (int q : unwatched) probe(q);
    for (int q = 0; q < n; ++q) {
      if (!connecting(q)) continue;
      std::size_t& have = reply_have[idx(q)];
      int err = 0;
      auto* dst = reinterpret_cast<unsigned char*>(&replies[idx(q)]);
      const long got = net::recv_some(pairs[idx(q)]->fd.get(), dst + have,
                                      sizeof(handshake::Reply) - have, &err);
      if (got < 0) {
        give_up(q, "rank " + std::to_string(q) + " at " + plan.eps[idx(q)].str() +
                       " closed the connection during the handshake (it refused this rank: a "
                       "different job key or RINGPRESS_ENCRYPT? its stderr says why)");
        continue;
      }
      have += static_cast<std::size_t>(got);
      if (have == sizeof(handshake::Reply)) on_reply(q);
    }
    for (auto& pc : pending) {
      if (!pc.fd.valid()) continue;
      auto* msg = pc.replied ? reinterpret_cast<unsigned char*>(&pc.proof)
                             : reinterpret_cast<unsigned char*>(&pc.h);
      const std::size_t want = pc.replied ? sizeof(handshake::Proof) : sizeof(handshake::Hello);
      int err = 0;
      long got = net::recv_some(pc.fd.get(), msg + pc.have, want - pc.have, &err);
      if (got < 0) {
        reject(pc, "closed before completing the handshake");
        continue;
      }
      if (got > 0) pc.have += static_cast<std::size_t>(got);
      if (!pc.replied && pc.have >= 4 && pc.h.magic != handshake::kHelloMagic) {
        reject(pc, "not a ringpress handshake (bad magic)");
        continue;
      }
      if (pc.have < want) {
        if (Clock::now() >= pc.until) reject(pc, "handshake not completed in time");
        continue;
      }
      pc.have = 0;
      if (!pc.replied) {
        std::string why = handshake::check_hello(pc.h, me, n, encrypt_, plan.first_joiner);
        if (!why.empty()) {
          pc.have = 1;  // spoke: worth a line
          reject(pc, why);
          continue;
        }
        pc.r = handshake::make_reply(plan.key, pc.h, me);
        try {
          net::write_all(pc.fd.get(), &pc.r, sizeof pc.r,
                         std::min(pc.until, Clock::now() + std::chrono::seconds(2)), "handshake");
        } catch (const Error&) {
          pc.have = 1;
          reject(pc, "did not take the handshake reply");
          continue;
        }
        pc.replied = true;
        continue;
      }
      std::string why = handshake::check_proof(plan.key, pc.h, pc.r, pc.proof);
      const int q = static_cast<int>(pc.h.from);
      if (why.empty() && !accepting(q)) {
        why = pairs[idx(q)] ? "rank " + std::to_string(q) + " is already connected"
                            : "rank " + std::to_string(q) + " is not expected here";
      }
      if (!why.empty()) {
        reject(pc, why);
        continue;
      }
      auto p = std::make_unique<Pair>();
      p->peer = q;
      p->fd = std::move(pc.fd);
      p->endpoint = pc.from;
      p->keys = handshake::link_keys(plan.key, pc.h, pc.r);
      pairs[idx(q)] = std::move(p);
    }
    pending.erase(std::remove_if(pending.begin(), pending.end(),
                                 [](const Pending& pc) { return !pc.fd.valid(); }),
                  pending.end());
  }
  // Every rank has joined: connections still mid-handshake cannot be one of ours. Say so, as for
  // any refused connection, instead of dropping them without a trace.
  for (auto& pc : pending) reject(pc, "still mid-handshake when every rank had joined");
  return pairs;
}

}  // namespace ringpress::transport_impl

// TCPStoreServer and TCPStore: the rendezvous store over TCP (IPv4).
//
// Protocol, version 1. All integers little-endian. One request in flight per connection: a
// client sends a request and reads its reply before sending the next (the server enforces this by
// not reading a connection's next request until the previous reply has been written).
//
//   handshake   client -> server  8 bytes  "RPSTORE1"
//               server -> client  8 bytes  "RPSTORE1"
//               The server drops a connection whose first bytes differ (checked byte by byte, so
//               garbage is rejected at its first wrong byte). The client rejects a peer that
//               answers anything else (TransportError: not a ringpress store).
//   request     u8  command      1 = SET, 2 = GET, 3 = ADD (anything else: connection dropped)
//               u32 key_length   <= 4096 (kMaxKey)
//               key_length bytes of key (opaque bytes)
//               u64 value_length SET: <= 64 MiB (kMaxValue); GET: 8; ADD: 8
//               value_length bytes of value
//                 SET  the value to store
//                 GET  u64 timeout in ms: the server holds the request until the key exists
//                      (reply OK + value) or the timeout passes (reply TIMEOUT); 0 = just check
//                 ADD  i64 delta: the key's decimal-ASCII value (0 when unset) += delta
//   reply       u8  status       0 = OK, 1 = USAGE_ERROR, 2 = TIMEOUT
//               u64 length       OK: SET 0, GET value size (<= kMaxValue), ADD 8;
//                                USAGE_ERROR: message size (<= 4096); TIMEOUT: 0
//               length bytes     OK: GET the value, ADD the new i64; USAGE_ERROR: UTF-8 message
// A request that breaks these rules (bad magic, unknown command, a length over its cap or not the
// fixed size) closes that connection only; the server logs one line per dropped connection to
// stderr (at most kMaxLogLines per server) and keeps serving everyone else. USAGE_ERROR (add() on a
// non-integer value, int64 overflow) leaves the connection usable.
//
// Server: one background thread polls the listening socket, an eventfd (destructor wake-up) and
// every client socket (all non-blocking). A GET on a missing key parks the connection in
// waiters_[key] with a deadline; SET/ADD of that key answers every parked GET. Memory per
// connection is bounded by one request plus one reply (a connection is not read while its reply is
// unsent or its GET is parked; it is only watched for hang-up then, via POLLRDHUP).
// The server thread owns every client socket; the destructor only writes the eventfd and joins.
//
// Client: one blocking-style connection (non-blocking socket + poll with deadlines), calls
// serialised by Impl::mutex. Timeouts: get() sends its timeout to the server, which answers
// TIMEOUT in time, so the connection stays usable. If the server does not answer within
// timeout + kReplyGrace (hung server, lost network) the client closes the socket, raises
// TimeoutError, and reconnects on the next call. SET/ADD and reply bodies get
// max(connect_timeout, kMinIoTimeout). A lost connection (EOF, reset) or a protocol violation
// raises TransportError naming host:port and is sticky: the client keeps the error and raises it on
// every later call (the server's state is gone with it; reconnecting silently would hide that).
//
// Sockets: both sides use the transport's socket layer (net.h: resolve_tcp, try_listen,
// accept_one, try_connect, send_some/recv_some, send_all/recv_all); this file holds only the
// store's protocol and state.
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include "net.h"
#include "ringpress/error.h"
#include "ringpress/store.h"

namespace ringpress {

namespace store_internal {  // defined in store.cc
std::string add_decimal(const std::string& key, const Bytes* current, std::int64_t delta,
                        Bytes* updated, std::int64_t* result);
std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout);
}  // namespace store_internal

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr char kMagic[8] = {'R', 'P', 'S', 'T', 'O', 'R', 'E', '1'};
constexpr std::uint8_t kCmdSet = 1, kCmdGet = 2, kCmdAdd = 3;
constexpr std::uint8_t kOk = 0, kUsageError = 1, kTimeout = 2;
constexpr std::size_t kMaxKey = 4096;
constexpr std::uint64_t kMaxValue = 64ull << 20;
constexpr std::uint64_t kMaxMessage = 4096;
constexpr std::size_t kRequestHeader = 1 + 4;  // command + key length, then key, then u64 length
constexpr std::size_t kReplyHeader = 1 + 8;
constexpr int kMaxLogLines = 32;
constexpr milliseconds kReplyGrace(1000);     // server answers a GET timeout itself; this is slack
constexpr milliseconds kMinIoTimeout(30000);  // SET/ADD/bodies: a live server answers at once

void put_u32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
void put_u64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::uint8_t>(v >> (8 * i));
}
std::uint32_t get_u32(const std::uint8_t* p) {
  std::uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint64_t get_u64(const std::uint8_t* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

using net::Fd;
using net::Io;
using net::poll_ms;

std::string errno_text(int err) {
  return std::string(std::strerror(err));
}

}  // namespace

// ==================================================================================== server

struct TCPStoreServer::Impl {
  // One client connection. Owned by the server thread (conns_).
  struct Conn {
    Fd fd;
    std::string peer;  // "ip:port", for log lines
    bool handshaken = false;
    std::vector<std::uint8_t> in;   // received bytes not yet consumed
    std::vector<std::uint8_t> out;  // reply being written, from out_pos
    std::size_t out_pos = 0;
    bool waiting = false;  // a GET is parked in waiters_[wait_key]
    std::string wait_key;
    Clock::time_point wait_deadline;
    bool dead = false;  // to be closed at the end of this loop iteration
  };

  std::string where;  // "host:port" as bound, for log lines and errors
  int port = 0;
  Fd listen_fd;
  Fd wake_fd;  // eventfd: the destructor writes it to stop the thread
  std::thread thread;

  // Server thread only from here on.
  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, Conn> conns;
  std::unordered_map<std::string, Bytes> values;
  std::unordered_map<std::string, std::vector<std::uint64_t>> waiters;  // key -> parked GETs
  std::set<std::pair<Clock::time_point, std::uint64_t>> deadlines;      // of parked GETs
  std::vector<std::uint64_t> runnable;  // connections whose buffered input may hold a request
  Clock::time_point accept_paused_until{};
  int log_lines = 0;

  void run();
  void accept_all();
  void on_event(std::uint64_t id, Conn& c, short revents);
  void process(std::uint64_t id, Conn& c);
  void handle(std::uint64_t id, Conn& c, std::uint8_t cmd, std::string key, Bytes value);
  void reply(Conn& c, std::uint8_t status, const std::uint8_t* data, std::size_t n);
  void flush(Conn& c);
  void wake_waiters(const std::string& key, const Bytes& value);
  void unpark(std::uint64_t id, Conn& c);
  void expire_waiters();
  void drop(Conn& c, const std::string& why);
  void log(const std::string& line);
};

void TCPStoreServer::Impl::log(const std::string& line) {
  if (log_lines > kMaxLogLines) return;
  if (log_lines++ == kMaxLogLines) {
    std::fprintf(stderr, "ringpress store server %s: further protocol errors not logged\n",
                 where.c_str());
  } else {
    std::fprintf(stderr, "ringpress store server %s: %s\n", where.c_str(), line.c_str());
  }
}

// Marks a connection for closing; logs protocol violations (why non-empty).
void TCPStoreServer::Impl::drop(Conn& c, const std::string& why) {
  if (c.dead) return;
  if (!why.empty()) log("dropping client " + c.peer + ": " + why);
  c.dead = true;
}

void TCPStoreServer::Impl::reply(Conn& c, std::uint8_t status, const std::uint8_t* data,
                                 std::size_t n) {
  c.out.resize(kReplyHeader + n);
  c.out[0] = status;
  put_u64(c.out.data() + 1, n);
  if (n) std::memcpy(c.out.data() + kReplyHeader, data, n);
  c.out_pos = 0;
  flush(c);
}

// Writes as much of the pending reply as the socket takes. When it is all out the connection may
// read its next request.
void TCPStoreServer::Impl::flush(Conn& c) {
  while (!c.dead && c.out_pos < c.out.size()) {
    iovec iov{c.out.data() + c.out_pos, c.out.size() - c.out_pos};
    int err = 0;
    const long w = net::send_some(c.fd.get(), &iov, 1, &err);
    if (w > 0) {
      c.out_pos += static_cast<std::size_t>(w);
    } else if (w == 0) {
      return;  // POLLOUT continues it
    } else {
      drop(c, "");  // client went away
      return;
    }
  }
  if (c.out.capacity() > (1u << 20)) {
    std::vector<std::uint8_t>().swap(c.out);  // do not keep a large value's buffer per connection
  } else {
    c.out.clear();
  }
  c.out_pos = 0;
}

void TCPStoreServer::Impl::unpark(std::uint64_t id, Conn& c) {
  if (!c.waiting) return;
  deadlines.erase({c.wait_deadline, id});
  auto it = waiters.find(c.wait_key);
  if (it != waiters.end()) {
    auto& v = it->second;
    v.erase(std::remove(v.begin(), v.end(), id), v.end());
    if (v.empty()) waiters.erase(it);
  }
  c.waiting = false;
  c.wait_key.clear();
}

void TCPStoreServer::Impl::wake_waiters(const std::string& key, const Bytes& value) {
  auto it = waiters.find(key);
  if (it == waiters.end()) return;
  std::vector<std::uint64_t> ids = std::move(it->second);
  waiters.erase(it);
  for (std::uint64_t id : ids) {
    auto ci = conns.find(id);
    if (ci == conns.end()) continue;
    Conn& w = ci->second;
    deadlines.erase({w.wait_deadline, id});
    w.waiting = false;
    w.wait_key.clear();
    reply(w, kOk, value.data(), value.size());
    runnable.push_back(id);
  }
}

void TCPStoreServer::Impl::expire_waiters() {
  const auto now = Clock::now();
  while (!deadlines.empty() && deadlines.begin()->first <= now) {
    const std::uint64_t id = deadlines.begin()->second;
    auto ci = conns.find(id);
    if (ci == conns.end()) {  // cannot happen (drop unparks), but never loop forever
      deadlines.erase(deadlines.begin());
      continue;
    }
    unpark(id, ci->second);
    reply(ci->second, kTimeout, nullptr, 0);
    runnable.push_back(id);
  }
}

void TCPStoreServer::Impl::handle(std::uint64_t id, Conn& c, std::uint8_t cmd, std::string key,
                                  Bytes value) {
  switch (cmd) {
    case kCmdSet: {
      auto& slot = values[key];
      slot = std::move(value);
      reply(c, kOk, nullptr, 0);
      wake_waiters(key, slot);
      return;
    }
    case kCmdGet: {
      auto it = values.find(key);
      if (it != values.end()) {
        reply(c, kOk, it->second.data(), it->second.size());
        return;
      }
      const std::uint64_t ms = get_u64(value.data());
      if (ms == 0) {
        reply(c, kTimeout, nullptr, 0);
        return;
      }
      const auto capped = std::min<std::uint64_t>(ms, std::numeric_limits<std::int64_t>::max());
      c.waiting = true;
      c.wait_deadline =
          store_internal::deadline_after(milliseconds(static_cast<std::int64_t>(capped)));
      c.wait_key = key;
      waiters[key].push_back(id);
      deadlines.insert({c.wait_deadline, id});
      return;
    }
    case kCmdAdd: {
      const auto delta = static_cast<std::int64_t>(get_u64(value.data()));
      auto it = values.find(key);
      Bytes updated;
      std::int64_t result = 0;
      const std::string why = store_internal::add_decimal(
          key, it == values.end() ? nullptr : &it->second, delta, &updated, &result);
      if (!why.empty()) {
        const std::size_t n = std::min<std::size_t>(why.size(), kMaxMessage);
        reply(c, kUsageError, reinterpret_cast<const std::uint8_t*>(why.data()), n);
        return;
      }
      auto& slot = values[key];
      slot = std::move(updated);
      std::uint8_t buf[8];
      put_u64(buf, static_cast<std::uint64_t>(result));
      reply(c, kOk, buf, sizeof(buf));
      wake_waiters(key, slot);
      return;
    }
  }
}

// Consumes complete requests from c.in while the connection is free to take one (handshaken, no
// reply pending, no GET parked). Validates every length before trusting it.
void TCPStoreServer::Impl::process(std::uint64_t id, Conn& c) {
  std::size_t pos = 0;
  while (!c.dead && !c.waiting && c.out.empty()) {
    const std::size_t avail = c.in.size() - pos;
    const std::uint8_t* p = c.in.data() + pos;
    if (!c.handshaken) {
      const std::size_t n = std::min(avail, sizeof(kMagic));
      if (std::memcmp(p, kMagic, n) != 0) {
        drop(c, "bad handshake (not a ringpress store client, or protocol version mismatch)");
        break;
      }
      if (n < sizeof(kMagic)) break;
      pos += sizeof(kMagic);
      c.handshaken = true;
      c.out.assign(kMagic, kMagic + sizeof(kMagic));
      c.out_pos = 0;
      flush(c);
      continue;
    }
    if (avail < 1) break;
    const std::uint8_t cmd = p[0];
    if (cmd != kCmdSet && cmd != kCmdGet && cmd != kCmdAdd) {
      drop(c, "unknown command " + std::to_string(cmd));
      break;
    }
    if (avail < kRequestHeader) break;
    const std::uint32_t klen = get_u32(p + 1);
    if (klen > kMaxKey) {
      drop(c, "key length " + std::to_string(klen) + " exceeds " + std::to_string(kMaxKey));
      break;
    }
    if (avail < kRequestHeader + klen + 8) break;
    const std::uint64_t vlen = get_u64(p + kRequestHeader + klen);
    if (cmd == kCmdSet ? vlen > kMaxValue : vlen != 8) {
      drop(c, "value length " + std::to_string(vlen) + " invalid for command " +
                  std::to_string(cmd) +
                  (cmd == kCmdSet ? " (limit " + std::to_string(kMaxValue) + ")" : " (must be 8)"));
      break;
    }
    const std::size_t total = kRequestHeader + klen + 8 + static_cast<std::size_t>(vlen);
    if (avail < total) {
      c.in.reserve(pos + total);  // one allocation for a large value, not log(n) regrowths
      break;
    }
    std::string key(reinterpret_cast<const char*>(p + kRequestHeader), klen);
    const std::uint8_t* v = p + kRequestHeader + klen + 8;
    Bytes value(v, v + vlen);
    pos += total;
    handle(id, c, cmd, std::move(key), std::move(value));
  }
  if (pos > 0) c.in.erase(c.in.begin(), c.in.begin() + static_cast<std::ptrdiff_t>(pos));
  if (c.in.empty() && c.in.capacity() > (1u << 20)) std::vector<std::uint8_t>().swap(c.in);
}

void TCPStoreServer::Impl::on_event(std::uint64_t id, Conn& c, short revents) {
  if (revents & POLLOUT) flush(c);
  const bool reading = !c.waiting && c.out.empty();
  if (!reading) {
    // Not reading this connection now: any hang-up means the client is gone (a parked GET whose
    // client timed out and closed, or one that will never read its reply).
    if (revents & (POLLRDHUP | POLLHUP | POLLERR)) drop(c, "");
    return;
  }
  if (!(revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) && !(revents & POLLOUT)) return;
  // Read what is there, at most 4 MiB per wake-up so one client cannot starve the rest.
  std::size_t budget = 4u << 20;
  while (budget > 0 && !c.dead) {
    // 64 KiB, or straight into the space process() reserved for a large request's remainder.
    const std::size_t spare = c.in.capacity() - c.in.size();
    const std::size_t chunk =
        std::min<std::size_t>(budget, std::max<std::size_t>(spare, 64u << 10));
    const std::size_t old = c.in.size();
    c.in.resize(old + chunk);
    int err = 0;
    const long r = net::recv_some(c.fd.get(), c.in.data() + old, chunk, &err);
    c.in.resize(old + (r > 0 ? static_cast<std::size_t>(r) : 0));
    if (r > 0) {
      budget -= static_cast<std::size_t>(r);
      if (static_cast<std::size_t>(r) < chunk) break;
      continue;
    }
    if (r < 0 && err == 0) {
      drop(c, "");  // client closed (half-closed clients are not supported)
      return;
    }
    if (r < 0) drop(c, "");  // reset or another socket error (r == 0: nothing more to read)
    break;
  }
  process(id, c);
}

void TCPStoreServer::Impl::accept_all() {
  for (;;) {
    int err = 0;
    net::Endpoint from;
    Fd fd = net::accept_one(listen_fd.get(), &from, &err);
    if (!fd) {
      if (err == EAGAIN || err == EWOULDBLOCK) return;
      // Out of fds or memory: the pending connection stays queued and poll would report it again
      // at once, so stop watching the listener for a moment instead of spinning.
      log(std::string("accept failed (") + errno_text(err) + "); pausing accepts for 100 ms");
      accept_paused_until = Clock::now() + milliseconds(100);
      return;
    }
    net::set_nodelay(fd.get());
    Conn c;
    c.fd = std::move(fd);
    c.peer = from.str();
    conns.emplace(next_id++, std::move(c));
  }
}

void TCPStoreServer::Impl::run() {
  std::vector<pollfd> fds;
  std::vector<std::uint64_t> ids;  // ids[i] is the connection of fds[i + 2]
  for (;;) {
    fds.clear();
    ids.clear();
    fds.push_back({wake_fd.get(), POLLIN, 0});
    const bool accepting = Clock::now() >= accept_paused_until;
    fds.push_back({accepting ? listen_fd.get() : -1, POLLIN, 0});
    for (auto& [id, c] : conns) {
      short ev = POLLRDHUP;
      if (!c.out.empty())
        ev |= POLLOUT;
      else if (!c.waiting)
        ev |= POLLIN;
      fds.push_back({c.fd.get(), ev, 0});
      ids.push_back(id);
    }
    Clock::time_point wake = Clock::time_point::max();
    if (!deadlines.empty()) wake = deadlines.begin()->first;
    if (!accepting) wake = std::min(wake, accept_paused_until);
    const int timeout = wake == Clock::time_point::max() ? -1 : poll_ms(wake);
    const int r = ::poll(fds.data(), fds.size(), timeout);
    if (r < 0) {
      if (errno == EINTR) continue;
      log(std::string("poll failed: ") + errno_text(errno));
      std::this_thread::sleep_for(milliseconds(10));
      continue;
    }
    if (fds[0].revents) return;  // destructor: conns (and their sockets) are closed by ~Impl
    if (fds[1].revents) accept_all();
    for (std::size_t i = 0; i < ids.size(); ++i) {
      const short rev = fds[i + 2].revents;
      if (!rev) continue;
      auto it = conns.find(ids[i]);
      Conn& c = it->second;
      try {
        on_event(it->first, c, rev);
      } catch (const std::exception& e) {  // bad_alloc on a huge value: lose that client only
        drop(c, std::string("internal error: ") + e.what());
      }
    }
    expire_waiters();
    // Connections that just sent a reply may already hold their next request.
    while (!runnable.empty()) {
      std::vector<std::uint64_t> now = std::move(runnable);
      runnable.clear();
      for (std::uint64_t id : now) {
        auto it = conns.find(id);
        if (it == conns.end()) continue;
        try {
          process(id, it->second);
        } catch (const std::exception& e) {
          drop(it->second, std::string("internal error: ") + e.what());
        }
      }
    }
    for (auto it = conns.begin(); it != conns.end();) {
      if (it->second.dead) {
        unpark(it->first, it->second);
        it = conns.erase(it);  // closes the socket
      } else {
        ++it;
      }
    }
  }
}

TCPStoreServer::TCPStoreServer(const std::string& host, int port)
    : impl_(std::make_unique<Impl>()) {
  ScopedErrorContext ctx("store.listen");
  const std::string where = host + ":" + std::to_string(port);
  RP_ENFORCE(port >= 0 && port <= 65535, UsageError, "port out of range for store server ", where);
  net::AddrInfoPtr ai;
  const int rc = net::resolve_tcp(host, port, /*passive=*/true, &ai);
  if (rc != 0)
    RP_THROW(TransportError, "cannot resolve store server address ", where, ": ",
             ::gai_strerror(rc));
  int last_err = 0;
  for (addrinfo* a = ai.get(); a != nullptr; a = a->ai_next) {
    const char* step = "";
    Fd fd = net::try_listen(a->ai_addr, a->ai_addrlen, SOMAXCONN, 0, &last_err, &step);
    if (!fd) continue;
    impl_->listen_fd = std::move(fd);
    break;
  }
  if (!impl_->listen_fd) {
    RP_THROW(TransportError, "cannot listen on store server address ", where, ": ",
             errno_text(last_err));
  }
  impl_->port = net::local_endpoint(impl_->listen_fd.get()).port;
  impl_->where = host + ":" + std::to_string(impl_->port);
  impl_->wake_fd.reset(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!impl_->wake_fd)
    RP_THROW(TransportError, "eventfd for store server ", where, ": ", errno_text(errno));
  impl_->thread = std::thread([impl = impl_.get()] { impl->run(); });
}

TCPStoreServer::~TCPStoreServer() {
  if (impl_->thread.joinable()) {
    const std::uint64_t one = 1;
    ssize_t w;
    do {
      w = ::write(impl_->wake_fd.get(), &one, sizeof(one));
    } while (w < 0 && errno == EINTR);
    impl_->thread.join();
  }
  // ~Impl closes client sockets (clients waiting in get() see EOF), the listener and the eventfd.
}

int TCPStoreServer::port() const noexcept {
  return impl_->port;
}

// ==================================================================================== client

struct TCPStore::Impl {
  std::string host;
  int port = 0;
  std::string where;  // "host:port"
  milliseconds connect_timeout{0};

  std::mutex mutex;    // serialises calls; guards everything below
  Fd fd;               // empty: connect on the next call
  std::string broken;  // non-empty: the connection was lost; every call raises this

  milliseconds io_timeout() const { return std::max(connect_timeout, kMinIoTimeout); }
  void connect();
  void ensure_usable();
  [[noreturn]] void fail(const std::string& detail);
  [[noreturn]] void fail_io(Io io, int err, const char* during);
  void send_request(std::uint8_t cmd, const std::string& key, const std::uint8_t* value,
                    std::size_t n, Clock::time_point deadline);
  // Reads a reply header; returns false when the deadline passed (socket then closed).
  bool read_header(Clock::time_point deadline, std::uint8_t* status, std::uint64_t* len);
  Bytes read_body(std::uint64_t len, Clock::time_point deadline);
  [[noreturn]] void raise_status(std::uint8_t status, std::uint64_t len, const char* op);
};

// Transport failure: sticky (see the header comment).
void TCPStore::Impl::fail(const std::string& detail) {
  fd.reset();
  broken = detail;
  RP_THROW(TransportError, detail);
}

void TCPStore::Impl::fail_io(Io io, int err, const char* during) {
  if (io == Io::kTimeout) {
    fd.reset();  // reply state unknown: reconnect on the next call
    RP_THROW(TimeoutError, "store ", where, " did not answer within ", io_timeout().count(),
             " ms (", during, "); will reconnect on the next call");
  }
  if (io == Io::kClosed) {
    fail(detail::str_cat("connection to store ", where, " lost while ", during,
                         err ? " (" + errno_text(err) + ")" : std::string(" (server closed it)")));
  }
  fail(detail::str_cat("socket error on store connection ", where, " while ", during, ": ",
                       errno_text(err)));
}

void TCPStore::Impl::ensure_usable() {
  if (!broken.empty())
    RP_THROW(TransportError, "store client unusable after an earlier failure: ", broken);
  if (!fd) {
    ScopedErrorContext ctx("store.connect");
    connect();
  }
}

// Connects and handshakes, retrying refused/unreachable attempts until connect_timeout.
void TCPStore::Impl::connect() {
  const auto deadline = store_internal::deadline_after(connect_timeout);
  milliseconds backoff(5);
  std::string last = "no attempt made";
  for (;;) {
    net::AddrInfoPtr ai;
    const int rc = net::resolve_tcp(host, port, /*passive=*/false, &ai);
    if (rc != 0 && rc != EAI_AGAIN) {
      RP_THROW(TransportError, "cannot resolve store address ", where, ": ", ::gai_strerror(rc));
    }
    if (rc != 0) last = ::gai_strerror(rc);
    for (addrinfo* a = ai.get(); a != nullptr && !fd; a = a->ai_next) {
      int err = 0;
      Fd s = net::try_connect(a->ai_addr, a->ai_addrlen, deadline, 0, &err);
      if (!s) {
        last = err == ETIMEDOUT && Clock::now() >= deadline ? "connect timed out" : errno_text(err);
        continue;
      }
      // A client can "connect" to itself when nothing listens (net.h); it would then read its
      // own magic as the server's answer.
      if (net::connected_to_itself(s.get())) {
        last = "connected to itself (nothing listening)";
        continue;
      }
      net::set_nodelay(s.get());
      // The handshake gets at least 1 s even when connect_timeout is tiny: the TCP connection is
      // up, so the server is there.
      const auto hs_deadline = std::max(deadline, Clock::now() + milliseconds(1000));
      iovec iov{const_cast<char*>(kMagic), sizeof(kMagic)};
      std::uint8_t answer[sizeof(kMagic)];
      Io io = net::send_all(s.get(), &iov, 1, hs_deadline, &err);
      if (io == Io::kOk) io = net::recv_all(s.get(), answer, sizeof(answer), hs_deadline, &err);
      if (io == Io::kOk) {
        if (std::memcmp(answer, kMagic, sizeof(kMagic)) != 0) {
          RP_THROW(TransportError, "peer at ", where,
                   " is not a ringpress store server (or speaks another protocol version)");
        }
        fd = std::move(s);
        return;
      }
      last = io == Io::kTimeout ? "handshake timed out" : "connection closed during handshake";
    }
    if (Clock::now() >= deadline) {
      RP_THROW(TimeoutError, "could not connect to store ", where, " within ",
               connect_timeout.count(), " ms (last error: ", last, ")");
    }
    std::this_thread::sleep_for(std::min(backoff, milliseconds(poll_ms(deadline))));
    backoff = std::min(backoff * 2, milliseconds(100));
  }
}

void TCPStore::Impl::send_request(std::uint8_t cmd, const std::string& key,
                                  const std::uint8_t* value, std::size_t n,
                                  Clock::time_point deadline) {
  std::uint8_t head[kRequestHeader];
  head[0] = cmd;
  put_u32(head + 1, static_cast<std::uint32_t>(key.size()));
  std::uint8_t vlen[8];
  put_u64(vlen, n);
  iovec iov[4] = {{head, sizeof(head)},
                  {const_cast<char*>(key.data()), key.size()},
                  {vlen, sizeof(vlen)},
                  {const_cast<std::uint8_t*>(value), n}};
  int err = 0;
  const Io io = net::send_all(fd.get(), iov, 4, deadline, &err);
  if (io != Io::kOk) fail_io(io, err, "sending a request");
}

bool TCPStore::Impl::read_header(Clock::time_point deadline, std::uint8_t* status,
                                 std::uint64_t* len) {
  std::uint8_t h[kReplyHeader];
  int err = 0;
  const Io io = net::recv_all(fd.get(), h, sizeof(h), deadline, &err);
  if (io == Io::kTimeout) {
    fd.reset();
    return false;
  }
  if (io != Io::kOk) fail_io(io, err, "waiting for a reply");
  *status = h[0];
  *len = get_u64(h + 1);
  return true;
}

Bytes TCPStore::Impl::read_body(std::uint64_t len, Clock::time_point deadline) {
  Bytes body(static_cast<std::size_t>(len));
  int err = 0;
  const Io io = net::recv_all(fd.get(), body.data(), body.size(), deadline, &err);
  if (io != Io::kOk) fail_io(io, err, "reading a reply");
  return body;
}

// A reply that is not the expected OK: a usage error from the server, or a protocol violation.
void TCPStore::Impl::raise_status(std::uint8_t status, std::uint64_t len, const char* op) {
  if (status == kUsageError && len <= kMaxMessage) {
    const Bytes msg = read_body(len, Clock::now() + io_timeout());
    RP_THROW(UsageError, std::string(msg.begin(), msg.end()), " (store ", where, ")");
  }
  fail(detail::str_cat("protocol violation from store ", where, ": reply status ", int(status),
                       " length ", len, " to ", op));
}

TCPStore::TCPStore(const std::string& host, int port, std::chrono::milliseconds connect_timeout)
    : impl_(std::make_unique<Impl>()) {
  ScopedErrorContext ctx("store.connect");
  impl_->host = host;
  impl_->port = port;
  impl_->where = host + ":" + std::to_string(port);
  impl_->connect_timeout = connect_timeout;
  RP_ENFORCE(port > 0 && port <= 65535, UsageError, "bad store port in ", impl_->where);
  impl_->connect();
}

TCPStore::~TCPStore() = default;

void TCPStore::set(const std::string& key, const Bytes& value) {
  ScopedErrorContext ctx("store.set");
  RP_ENFORCE_LE(key.size(), kMaxKey, UsageError, "store key too long");
  RP_ENFORCE_LE(value.size(), kMaxValue, UsageError, "value for store key '", key, "' too large");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->ensure_usable();
  const auto deadline = Clock::now() + impl_->io_timeout();
  impl_->send_request(kCmdSet, key, value.data(), value.size(), deadline);
  std::uint8_t status = 0;
  std::uint64_t len = 0;
  if (!impl_->read_header(deadline, &status, &len)) impl_->fail_io(Io::kTimeout, 0, "set");
  if (status != kOk || len != 0) impl_->raise_status(status, len, "SET");
}

Bytes TCPStore::get(const std::string& key, std::chrono::milliseconds timeout) {
  ScopedErrorContext ctx("store.get");
  RP_ENFORCE_LE(key.size(), kMaxKey, UsageError, "store key too long");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->ensure_usable();
  const std::int64_t ms = std::max<std::int64_t>(timeout.count(), 0);
  std::uint8_t arg[8];
  put_u64(arg, static_cast<std::uint64_t>(ms));
  impl_->send_request(kCmdGet, key, arg, sizeof(arg), Clock::now() + impl_->io_timeout());
  // The server answers TIMEOUT itself at `timeout`; kReplyGrace covers a hung server.
  const auto deadline =
      store_internal::deadline_after(milliseconds(ms)) + kReplyGrace;  // clamped first
  std::uint8_t status = 0;
  std::uint64_t len = 0;
  if (!impl_->read_header(deadline, &status, &len)) {
    RP_THROW(TimeoutError, "key '", key, "' not set within ", timeout.count(), " ms (store ",
             impl_->where, " did not answer; will reconnect on the next call)");
  }
  if (status == kTimeout && len == 0) {
    RP_THROW(TimeoutError, "key '", key, "' not set within ", timeout.count(), " ms (store ",
             impl_->where, ")");
  }
  if (status != kOk || len > kMaxValue) impl_->raise_status(status, len, "GET");
  return impl_->read_body(len, Clock::now() + impl_->io_timeout());
}

std::int64_t TCPStore::add(const std::string& key, std::int64_t delta) {
  ScopedErrorContext ctx("store.add");
  RP_ENFORCE_LE(key.size(), kMaxKey, UsageError, "store key too long");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->ensure_usable();
  std::uint8_t arg[8];
  put_u64(arg, static_cast<std::uint64_t>(delta));
  const auto deadline = Clock::now() + impl_->io_timeout();
  impl_->send_request(kCmdAdd, key, arg, sizeof(arg), deadline);
  std::uint8_t status = 0;
  std::uint64_t len = 0;
  if (!impl_->read_header(deadline, &status, &len)) impl_->fail_io(Io::kTimeout, 0, "add");
  if (status != kOk || len != 8) impl_->raise_status(status, len, "ADD");
  const Bytes body = impl_->read_body(len, deadline);
  return static_cast<std::int64_t>(get_u64(body.data()));
}

}  // namespace ringpress

// TCPStoreServer and TCPStore: the rendezvous store over TCP (IPv4).
//
// Protocol, version 3 (version 2 authenticated only the connection's start; version 1 had no
// authentication, no DELETE and no server limits). All integers little-endian. One request in
// flight per connection: a client sends a request and reads its reply before sending the next
// (the server enforces this by not reading a connection's next request until the previous reply
// has been written).
//
//   handshake   client -> server  48 bytes  "RPSTORE3", u8 auth, 7 zero bytes, 32-byte nonce_c
//               server -> client  80 bytes  "RPSTORE3", u8 auth, 7 zero bytes, 32-byte nonce_s,
//                                           32-byte server proof
//               client -> server  32 bytes  client proof (only when both sides said auth = 1)
//               auth = 1: the side holds the job key; 0: it has none (its nonce and proof are
//               zero). With K = HKDF-SHA256(job key, label "ringpress store v3 key"):
//                 server proof = HMAC-SHA256(K, "ringpress store v3 server" | nonce_c | nonce_s)
//                 client proof = HMAC-SHA256(K, "ringpress store v3 client" | nonce_c | nonce_s)
//               (crypto.h: each part length-prefixed). Nonces are 32 fresh random bytes per
//               connection, so a recorded handshake is worth nothing on another connection; the key
//               never travels. Until the handshake is complete the server reads only these fixed
//               sizes and allocates nothing per client beyond its connection record.
//               The server drops a connection whose first bytes differ from the magic (checked byte
//               by byte, so garbage is rejected at its first wrong byte), whose auth byte is not
//               0/1 or reserved bytes not zero, that says auth = 0 to a server with a key (it still
//               gets the server's hello, auth = 1 and zero proof, so its TransportError can say
//               that a key is required), whose proof is wrong (compared in constant time), or
//               that does not complete the handshake within handshake_timeout (5 s by default)
//               of being accepted; one log line each. At most max_pending connections (64) may
//               be in their handshake at once: one more closes the one that has waited longest.
//               The client raises TransportError when the answer is not a ringpress store of this
//               version, when a server without a key answers a client with one (it cannot prove
//               the key: refused), when the server requires a key the client lacks, or when the
//               server's proof is wrong (different key, or not the job's store).
//   records     After a keyed handshake (both said auth = 1) every byte of every request and
//               reply below travels in records, each direction its own:
//                 u32 length (1..65536, kMaxRecord) || length bytes of AES-256-GCM ciphertext
//                 || 16-byte tag
//               sealed with the direction's key and nonce (direction id, record number):
//                 key c->s = HKDF-SHA256(K, salt nonce_c | nonce_s, "ringpress store v3 client
//                            to server"), direction id 1
//                 key s->c = HKDF-SHA256(K, salt nonce_c | nonce_s, "ringpress store v3 server
//                            to client"), direction id 2
//               the record number counts that direction's records from 0; the length is the
//               additional data. The server's first record confirms the handshake: an OK reply
//               of length 0 (the client counts the connection as open only once it arrives, so
//               one the server closed while still pending is retried, not a lost request). A record
//               that was altered, replayed (from this or another connection), reordered, dropped or
//               injected fails its tag. The server answers a request record that does not
//               authenticate (or claims a length outside 1..65536) with REFUSED and closes the
//               connection; the client raises TransportError naming the call whose reply does not
//               authenticate. Records are cut anywhere in the stream (a request may span several;
//               the client seals one request per record or more, the server one reply piece per
//               record). A keyless connection (auth = 0 on either side, only where no job key is
//               configured) sends the requests and replies in clear, as in version 2.
//   request     u8  command      1 = SET, 2 = GET, 3 = ADD, 4 = DELETE (else: connection dropped)
//               u32 key_length   <= 4096 (kMaxKey)
//               key_length bytes of key (opaque bytes)
//               u64 value_length SET: <= 64 MiB (kMaxValue); GET: 8; ADD: 8; DELETE: 0
//               value_length bytes of value
//                 SET  the value to store
//                 GET  u64 timeout in ms: the server holds the request until the key exists
//                      (reply OK + value) or the timeout passes (reply TIMEOUT); 0 = just check
//                 ADD  i64 delta: the key's decimal-ASCII value (0 when unset) += delta
//   reply       u8  status       0 = OK, 1 = USAGE_ERROR, 2 = TIMEOUT, 3 = REFUSED (keyed only)
//               u64 length       OK: SET 0, GET value size (<= kMaxValue), ADD 8, DELETE 8;
//                                USAGE_ERROR, REFUSED: message size (<= 4096); TIMEOUT: 0
//               length bytes     OK: GET the value, ADD the new i64, DELETE u64 1 if the key
//                                existed else 0; USAGE_ERROR, REFUSED: UTF-8 message
// A request that breaks these rules (unknown command, a length over its cap or not the fixed
// size) closes that connection only; the server logs one line per dropped connection to stderr (at
// most kMaxLogLines per server) and keeps serving everyone else. USAGE_ERROR (add() on a
// non-integer value, int64 overflow, a value over max_value_bytes, the store over max_total_bytes)
// leaves the connection usable; a refused SET's value bytes are read and dropped, not stored.
//
// Server limits (StoreServerOptions, store.h): at most max_connections clients (the next is
// accepted and closed at once, one log line); a value's bytes are collected as they arrive into a
// buffer that grows with them (never allocated from the claimed length), and that growth is booked
// against max_total_bytes before it is allocated, beside everything held (keys, values, values
// still being sent to GET clients, other SETs' bytes received so far). A SET whose claim is over
// max_value_bytes or cannot fit beside what is stored, or whose bytes stop fitting while they
// arrive, is refused (USAGE_ERROR, its bytes read and dropped). A bare claim books nothing, so
// half-sent headers cost the server a connection record each and cannot crowd out real SETs. A
// connection that does not finish a request it began (or a record) or reading its reply within
// request_timeout is closed; one that does not finish its handshake, within handshake_timeout.
// A keyed connection holds at most one record being received and one being sent besides (64 KiB
// each, not booked: only clients that proved the key get there). A closed connection's buffers and
// bookings are released at once and freed memory is handed back to the system (malloc_trim) when it
// was large.
//
// Server: one background thread polls the listening socket, an eventfd (destructor wake-up) and
// every client socket (all non-blocking). A GET on a missing key parks the connection in
// waiters_[key] with a deadline; SET/ADD of that key answers every parked GET. Values are shared
// (shared_ptr) between the map and the replies that send them, so N clients reading one value
// hold one copy. Memory per connection is bounded by one request plus one reply header (a
// connection is not read while its reply is unsent or its GET is parked; it is only watched for
// hang-up then, via POLLRDHUP). The server thread owns every client socket; the destructor only
// writes the eventfd and joins.
//
// Client: one blocking-style connection (non-blocking socket + poll with deadlines), calls
// serialised by Impl::mutex. Timeouts: get() sends its timeout to the server, which answers
// TIMEOUT in time, so the connection stays usable. If the server does not answer within
// timeout + kReplyGrace (hung server, lost network) the client closes the socket, raises
// TimeoutError, and reconnects on the next call. SET/ADD/DELETE and reply bodies get
// max(connect_timeout, kMinIoTimeout). A lost connection (EOF, reset) or a protocol violation
// raises TransportError naming host:port and is sticky: the client keeps the error and raises it on
// every later call (the server's state is gone with it; reconnecting silently would hide that).
// A server that closes the connection during the handshake (its connection limit) is retried
// until connect_timeout.
//
// Sockets: both sides use the transport's socket layer (net.h: resolve_tcp, try_listen,
// accept_one, try_connect, send_some/recv_some, send_all/recv_all); the request parser is
// store_protocol.{h,cc} (pure, fuzzed); this file holds the store's I/O and state.
#include <malloc.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>
#include <utility>

#include "crypto.h"
#include "net.h"
#include "ringpress/error.h"
#include "ringpress/store.h"
#include "store_protocol.h"

namespace ringpress {

namespace store_internal {  // defined in store.cc
std::string add_decimal(const std::string& key, const Bytes* current, std::int64_t delta,
                        Bytes* updated, std::int64_t* result);
std::chrono::steady_clock::time_point deadline_after(std::chrono::milliseconds timeout);
}  // namespace store_internal

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using namespace store_protocol;  // NOLINT: the protocol's constants and integer helpers

constexpr int kMaxLogLines = 32;
constexpr std::uint64_t kEntryOverhead = 64;    // booked per stored key beside its bytes
constexpr std::uint64_t kTrimAfter = 1u << 20;  // malloc_trim once this much was freed
constexpr milliseconds kReplyGrace(1000);     // server answers a GET timeout itself; this is slack
constexpr milliseconds kMinIoTimeout(30000);  // SET/ADD/bodies: a live server answers at once

using net::Fd;
using net::Io;
using net::poll_ms;

std::string errno_text(int err) {
  return std::string(std::strerror(err));
}

using Value = std::shared_ptr<const Bytes>;

}  // namespace

// ==================================================================================== auth

namespace {

// The store's own key, derived from the job key (so a MAC made here is useless anywhere else).
struct StoreKey {
  bool present = false;
  crypto::Key k{};
};

StoreKey derive_store_key(const Bytes& job_key) {
  StoreKey s;
  if (job_key.empty()) return s;
  RP_ENFORCE(job_key.size() == crypto::kKeyBytes, UsageError, "a store's job key must be ",
             crypto::kKeyBytes, " bytes (ringpress::crypto::Key), got ", job_key.size());
  crypto::Key jk;
  std::memcpy(jk.data(), job_key.data(), jk.size());
  s.k = crypto::hkdf(jk, {}, "ringpress store v3 key", {});
  s.present = true;
  return s;
}

void make_nonce(std::uint8_t* out) {
  static_assert(kNonce == crypto::kNonceBytes, "store nonces are crypto nonces");
  crypto::random_bytes(out, kNonce);
}

void make_proof(const StoreKey& key, bool server_side, const std::uint8_t* nonce_c,
                const std::uint8_t* nonce_s, std::uint8_t* out) {
  static_assert(kProof == crypto::kMacBytes, "store proofs are HMAC-SHA256");
  const crypto::Mac m =
      crypto::mac(key.k, server_side ? "ringpress store v3 server" : "ringpress store v3 client",
                  {crypto::Part(nonce_c, kNonce), crypto::Part(nonce_s, kNonce)});
  std::memcpy(out, m.data(), kProof);
}

bool proofs_equal(const std::uint8_t* a, const std::uint8_t* b) {
  return crypto::equal(a, b, kProof);
}

// One side of a keyed connection's records: a key, AES-256-GCM direction and record number per
// direction. The keys come from the store key and both handshake nonces, so they are fresh for
// every connection and a record recorded on one connection opens on no other.
constexpr std::uint32_t kDirClientToServer = 1, kDirServerToClient = 2;

struct Sealer {
  crypto::Aead tx, rx;
  std::uint64_t tx_seq = 0, rx_seq = 0;
  RecordReader in;  // the server's incoming records (the client reads with recv_all)

  static crypto::Key conn_key(const StoreKey& key, const std::uint8_t* nonce_c,
                              const std::uint8_t* nonce_s, bool to_server) {
    return crypto::hkdf(
        key.k, {crypto::Part(nonce_c, kNonce), crypto::Part(nonce_s, kNonce)},
        to_server ? "ringpress store v3 client to server" : "ringpress store v3 server to client",
        {});
  }
  Sealer(const StoreKey& key, const std::uint8_t* nonce_c, const std::uint8_t* nonce_s, bool server)
      : tx(conn_key(key, nonce_c, nonce_s, !server),
           server ? kDirServerToClient : kDirClientToServer, /*encrypt=*/true),
        rx(conn_key(key, nonce_c, nonce_s, server),
           server ? kDirClientToServer : kDirServerToClient, /*encrypt=*/true) {}

  // Appends one record holding `len` (1..kMaxRecord) plaintext bytes, starting `from` bytes into
  // the concatenation of iov[0..n).
  void seal(const iovec* iov, int n, std::size_t from, std::size_t len,
            std::vector<std::uint8_t>* out) {
    const std::size_t at = out->size();
    out->resize(at + kRecordOverhead + len);
    std::uint8_t* rec = out->data() + at;
    put_u32(rec, static_cast<std::uint32_t>(len));
    tx.seal_begin(tx_seq++, rec, kRecordHeader);
    std::uint8_t* dst = rec + kRecordHeader;
    for (int i = 0; i < n && len > 0; ++i) {
      if (from >= iov[i].iov_len) {
        from -= iov[i].iov_len;
        continue;
      }
      const std::size_t k = std::min(len, iov[i].iov_len - from);
      tx.seal_update(static_cast<const std::uint8_t*>(iov[i].iov_base) + from, dst, k);
      dst += k;
      len -= k;
      from = 0;
    }
    tx.seal_finish(dst);
  }
  // Opens the record `header` (kRecordHeader bytes) || ct (len bytes) || tag in place; false
  // when it does not authenticate as this direction's next record.
  bool open(const std::uint8_t* header, std::uint8_t* ct, std::uint32_t len,
            const std::uint8_t* tag) {
    if (!rx.open(rx_seq, header, kRecordHeader, ct, ct, len, tag)) return false;
    ++rx_seq;
    return true;
  }
};

}  // namespace

// ==================================================================================== server

struct TCPStoreServer::Impl {
  // One client connection. Owned by the server thread (conns).
  struct Conn {
    Fd fd;
    std::string peer;  // "ip:port", for log lines
    enum class Phase { kHello, kProof, kReady } phase = Phase::kHello;
    std::array<std::uint8_t, kClientHello> hello{};  // the client's hello, then its proof
    std::size_t hello_have = 0;
    std::array<std::uint8_t, kNonce> nonce_c{}, nonce_s{};
    RequestParser parser;
    std::uint64_t booked = 0;  // bytes of max_total_bytes held for the SET being received
    std::string refusal;       // USAGE_ERROR text for a SET whose value is being skipped
    Bytes pending;             // bytes read beyond the last complete request (one read at most)
    std::vector<std::uint8_t> out;   // reply header (or whole small reply), from out_pos ...
    Value body;                      // ... then a stored value (GET), shared with the map
    std::size_t out_pos = 0;         // bytes of out + body sent (keyed: sealed into `wire`)
    std::unique_ptr<Sealer> sec;     // keyed connections, once the handshake is complete
    std::vector<std::uint8_t> wire;  // keyed: the sealed record being sent, from wire_pos
    std::size_t wire_pos = 0;
    bool close_after_reply = false;
    bool waiting = false;  // a GET is parked in waiters[wait_key]
    std::string wait_key;
    Clock::time_point wait_deadline;
    // Handshake, request begun, or reply unsent: the connection must progress by then.
    Clock::time_point deadline = Clock::time_point::max();
    Clock::time_point handshake_deadline;  // accept + handshake_timeout (never extended)
    const char* busy_with = "handshake";
    bool dead = false;  // to be closed at the end of this loop iteration
  };

  StoreServerOptions opts;
  StoreKey key;
  std::string where;  // "host:port" as bound, for log lines and errors
  int port = 0;
  Fd listen_fd;
  Fd wake_fd;  // eventfd: the destructor writes it to stop the thread
  std::thread thread;
  std::atomic<std::uint64_t> held_public{0};
  std::atomic<int> conns_public{0};

  // Server thread only from here on. Accounting first: value deleters update it, and members
  // are destroyed in reverse order.
  std::uint64_t stored = 0;  // keys (+ kEntryOverhead each) and every live value buffer
  std::uint64_t booked = 0;  // SETs being received
  std::uint64_t freed_since_trim = 0;
  std::uint64_t next_id = 1;
  std::unordered_map<std::uint64_t, Conn> conns;
  std::set<std::uint64_t> pending;  // connections still in their handshake, oldest first
  std::unordered_map<std::string, Value> values;
  std::unordered_map<std::string, std::vector<std::uint64_t>> waiters;  // key -> parked GETs
  std::set<std::pair<Clock::time_point, std::uint64_t>> deadlines;      // of parked GETs
  std::vector<std::uint64_t> runnable;  // connections whose buffered input may hold a request
  std::vector<std::uint8_t> scratch = std::vector<std::uint8_t>(64u << 10);  // socket reads
  Clock::time_point accept_paused_until{};
  int log_lines = 0;

  ~Impl() {
    // Release replies and values before the accounting they update goes away.
    conns.clear();
    values.clear();
  }

  void run();
  void accept_all();
  void on_event(std::uint64_t id, Conn& c, short revents);
  void read_hello(std::uint64_t id, Conn& c);
  void process(std::uint64_t id, Conn& c);
  void consume(std::uint64_t id, Conn& c, const std::uint8_t* data, std::size_t n);
  void consume_records(std::uint64_t id, Conn& c, const std::uint8_t* data, std::size_t n);
  void refuse(Conn& c, const std::string& why);
  bool evict_oldest_pending(const std::string& why);
  void decide(Conn& c);
  void handle(std::uint64_t id, Conn& c, Request req);
  Value make_value(Bytes bytes);
  void reply(Conn& c, std::uint8_t status, const std::uint8_t* data, std::size_t n);
  void reply_value(Conn& c, Value v);
  void usage_error(Conn& c, const std::string& why);
  void flush(Conn& c);
  void wake_waiters(const std::string& key, const Value& value);
  void unpark(std::uint64_t id, Conn& c);
  void expire_waiters();
  void drop(Conn& c, const std::string& why);
  void release(Conn& c);
  void publish();
  void log(const std::string& line);
  std::string limit_text() const;
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

void TCPStoreServer::Impl::publish() {
  held_public.store(stored + booked, std::memory_order_relaxed);
  conns_public.store(static_cast<int>(conns.size()), std::memory_order_relaxed);
}

std::string TCPStoreServer::Impl::limit_text() const {
  return detail::str_cat(stored + booked, " of ", opts.max_total_bytes, " bytes in use");
}

// Marks a connection for closing; logs protocol violations (why non-empty).
void TCPStoreServer::Impl::drop(Conn& c, const std::string& why) {
  if (c.dead) return;
  if (!why.empty()) log("dropping client " + c.peer + ": " + why);
  c.dead = true;
}

// What a connection holds, given back (it is about to be erased).
void TCPStoreServer::Impl::release(Conn& c) {
  booked -= c.booked;
  c.booked = 0;
  freed_since_trim += c.parser.request().value.capacity() + c.pending.capacity() +
                      c.out.capacity() + c.wire.capacity() + (c.sec ? c.sec->in.capacity() : 0);
  c.parser.reset();
  c.body.reset();  // may free a value (its deleter counts it)
}

Value TCPStoreServer::Impl::make_value(Bytes bytes) {
  if (bytes.capacity() > bytes.size() + 4096) bytes.shrink_to_fit();
  const std::uint64_t n = bytes.capacity();
  stored += n;
  return Value(new Bytes(std::move(bytes)), [this, n](const Bytes* b) {
    stored -= n;
    freed_since_trim += n;
    delete b;
  });
}

void TCPStoreServer::Impl::reply(Conn& c, std::uint8_t status, const std::uint8_t* data,
                                 std::size_t n) {
  publish();  // a client that sees this reply sees the counters it implies
  c.out.resize(kReplyHeader + n);
  c.out[0] = status;
  put_u64(c.out.data() + 1, n);
  if (n) std::memcpy(c.out.data() + kReplyHeader, data, n);
  c.out_pos = 0;
  c.body.reset();
  c.deadline = Clock::now() + opts.request_timeout;
  c.busy_with = "reading its reply";
  flush(c);
}

void TCPStoreServer::Impl::reply_value(Conn& c, Value v) {
  publish();
  c.out.resize(kReplyHeader);
  c.out[0] = kOk;
  put_u64(c.out.data() + 1, v->size());
  c.out_pos = 0;
  c.body = std::move(v);
  c.deadline = Clock::now() + opts.request_timeout;
  c.busy_with = "reading its reply";
  flush(c);
}

void TCPStoreServer::Impl::usage_error(Conn& c, const std::string& why) {
  const std::size_t n = std::min<std::size_t>(why.size(), kMaxMessage);
  reply(c, kUsageError, reinterpret_cast<const std::uint8_t*>(why.data()), n);
}

// Writes as much of the pending reply (header, then the shared value) as the socket takes. When
// it is all out the connection may read its next request.
void TCPStoreServer::Impl::flush(Conn& c) {
  const std::size_t body_n = c.body ? c.body->size() : 0;
  const std::size_t total = c.out.size() + body_n;
  // Keyed: one record at a time is sealed (from the header and the shared value) and sent.
  while (c.sec && !c.dead) {
    if (c.wire_pos < c.wire.size()) {
      iovec v{c.wire.data() + c.wire_pos, c.wire.size() - c.wire_pos};
      int err = 0;
      const long w = net::send_some(c.fd.get(), &v, 1, &err);
      if (w > 0) {
        c.wire_pos += static_cast<std::size_t>(w);
        continue;
      }
      if (w == 0) return;  // POLLOUT continues it
      drop(c, "");         // client went away
      return;
    }
    c.wire.clear();
    c.wire_pos = 0;
    if (c.out_pos == total) break;
    const iovec parts[2] = {{c.out.data(), c.out.size()},
                            {body_n ? const_cast<std::uint8_t*>(c.body->data()) : nullptr, body_n}};
    const std::size_t len = std::min(kMaxRecord, total - c.out_pos);
    c.sec->seal(parts, 2, c.out_pos, len, &c.wire);
    c.out_pos += len;
  }
  while (!c.sec && !c.dead && c.out_pos < total) {
    iovec iov[2];
    int n = 0;
    if (c.out_pos < c.out.size()) iov[n++] = {c.out.data() + c.out_pos, c.out.size() - c.out_pos};
    const std::size_t body_pos = c.out_pos > c.out.size() ? c.out_pos - c.out.size() : 0;
    if (body_n > body_pos)
      iov[n++] = {const_cast<std::uint8_t*>(c.body->data()) + body_pos, body_n - body_pos};
    int err = 0;
    const long w = net::send_some(c.fd.get(), iov, n, &err);
    if (w > 0) {
      c.out_pos += static_cast<std::size_t>(w);
    } else if (w == 0) {
      return;  // POLLOUT continues it
    } else {
      drop(c, "");  // client went away
      return;
    }
  }
  if (c.dead) return;
  c.body.reset();
  if (c.out.capacity() > 8192) {
    std::vector<std::uint8_t>().swap(c.out);  // a long error text: do not keep its buffer
  } else {
    c.out.clear();
  }
  if (c.wire.capacity() > 8192) std::vector<std::uint8_t>().swap(c.wire);
  c.out_pos = 0;
  if (c.close_after_reply) {
    drop(c, "");
    return;
  }
  c.deadline = Clock::time_point::max();
  if (c.phase != Conn::Phase::kReady) c.deadline = c.handshake_deadline;
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

void TCPStoreServer::Impl::wake_waiters(const std::string& key, const Value& value) {
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
    reply_value(w, value);
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

// A SET's header is in: collect its value or skip it (answered with why). Only what is stored
// counts here: a claim books nothing, so half-sent claims cannot crowd out real SETs.
void TCPStoreServer::Impl::decide(Conn& c) {
  const Request& r = c.parser.request();
  const std::uint64_t need = r.value_length + r.key.size() + kEntryOverhead;
  if (r.value_length > opts.max_value_bytes) {
    c.refusal =
        detail::str_cat("value for key '", r.key, "' is ", r.value_length,
                        " bytes; this store takes at most ", opts.max_value_bytes, " per value");
    c.parser.keep_value(false);
  } else if (stored + need > opts.max_total_bytes) {
    c.refusal = detail::str_cat("store full: setting key '", r.key, "' (", r.value_length,
                                " bytes) would exceed its limit (", limit_text(), ")");
    c.parser.keep_value(false);
  } else {
    c.parser.keep_value(true);  // its bytes are booked as they arrive (consume)
  }
}

void TCPStoreServer::Impl::handle(std::uint64_t id, Conn& c, Request req) {
  booked -= c.booked;
  c.booked = 0;
  const std::string& key = req.key;
  switch (req.cmd) {
    case kCmdSet: {
      if (req.discarded) {
        usage_error(c, c.refusal);
        c.refusal.clear();
        return;
      }
      auto it = values.find(key);
      if (it == values.end()) {
        it = values.emplace(key, Value()).first;
        stored += key.size() + kEntryOverhead;
      }
      it->second = make_value(std::move(req.value));  // the old value goes (unless being sent)
      const Value v = it->second;
      reply(c, kOk, nullptr, 0);
      wake_waiters(key, v);
      return;
    }
    case kCmdGet: {
      auto it = values.find(key);
      if (it != values.end()) {
        reply_value(c, it->second);
        return;
      }
      const std::uint64_t ms = get_u64(req.value.data());
      if (ms == 0) {
        reply(c, kTimeout, nullptr, 0);
        return;
      }
      const auto capped = std::min<std::uint64_t>(ms, std::numeric_limits<std::int64_t>::max());
      c.waiting = true;
      c.deadline = Clock::time_point::max();  // parked: its own deadline applies
      c.wait_deadline =
          store_internal::deadline_after(milliseconds(static_cast<std::int64_t>(capped)));
      c.wait_key = key;
      waiters[key].push_back(id);
      deadlines.insert({c.wait_deadline, id});
      return;
    }
    case kCmdAdd: {
      const auto delta = static_cast<std::int64_t>(get_u64(req.value.data()));
      auto it = values.find(key);
      Bytes updated;
      std::int64_t result = 0;
      const std::string why = store_internal::add_decimal(
          key, it == values.end() ? nullptr : it->second.get(), delta, &updated, &result);
      if (!why.empty()) {
        usage_error(c, why);
        return;
      }
      if (it == values.end()) {
        const std::uint64_t need = key.size() + kEntryOverhead + 32;
        if (stored + booked + need > opts.max_total_bytes) {
          usage_error(c, detail::str_cat("store full: add() creating key '", key,
                                         "' would exceed its limit (", limit_text(), ")"));
          return;
        }
        it = values.emplace(key, Value()).first;
        stored += key.size() + kEntryOverhead;
      }
      it->second = make_value(std::move(updated));
      const Value v = it->second;
      std::uint8_t buf[8];
      put_u64(buf, static_cast<std::uint64_t>(result));
      reply(c, kOk, buf, sizeof(buf));
      wake_waiters(key, v);
      return;
    }
    case kCmdDelete: {
      auto it = values.find(key);
      std::uint8_t buf[8];
      put_u64(buf, it == values.end() ? 0 : 1);
      if (it != values.end()) {
        stored -= it->first.size() + kEntryOverhead;
        values.erase(it);  // the value goes (unless being sent)
      }
      reply(c, kOk, buf, sizeof(buf));
      return;
    }
  }
}

// Feeds bytes to the connection's parser and serves complete requests while the connection is
// free to take one (no reply pending, no GET parked); keeps what is left in c.pending.
void TCPStoreServer::Impl::consume(std::uint64_t id, Conn& c, const std::uint8_t* data,
                                   std::size_t n) {
  std::size_t pos = 0;
  for (;;) {
    if (c.dead || c.waiting || !c.out.empty()) break;
    if (c.parser.state() == RequestParser::State::kDecide) {
      decide(c);
      continue;
    }
    if (c.parser.done()) {
      handle(id, c, c.parser.take());
      continue;
    }
    if (pos == n) break;
    if (c.parser.state() == RequestParser::State::kValue && c.parser.request().cmd == kCmdSet) {
      // Book the value buffer's growth before the parser allocates it; skip the value instead
      // when it does not fit beside everything held.
      const std::size_t k =
          static_cast<std::size_t>(std::min<std::uint64_t>(n - pos, c.parser.remaining()));
      const std::uint64_t need =
          c.parser.value_capacity_after(k) - c.parser.request().value.capacity();
      if (need > 0 && stored + booked + need > opts.max_total_bytes) {
        c.refusal = detail::str_cat("store full: setting key '", c.parser.request().key, "' (",
                                    c.parser.request().value_length,
                                    " bytes) would exceed its limit (", limit_text(), ")");
        booked -= c.booked;
        c.booked = 0;
        c.parser.skip_value();
        continue;
      }
      booked += need;
      c.booked += need;
      pos += c.parser.feed(data + pos, k);
      continue;
    }
    const bool fresh = !c.parser.in_progress();
    pos += c.parser.feed(data + pos, n - pos);
    if (fresh && c.parser.in_progress()) {
      c.deadline = Clock::now() + opts.request_timeout;  // a request begun must finish in time
      c.busy_with = "sending its request";
    }
    if (c.parser.failed()) drop(c, c.parser.error());
  }
  if (pos < n && !c.dead) c.pending.insert(c.pending.end(), data + pos, data + n);
}

// Keyed connections: cuts the bytes into records, opens each (it must be this direction's next
// record under this connection's key) and feeds its plaintext to consume(). The first record that
// does not authenticate ends the connection (refuse()); nothing of it reaches the parser.
void TCPStoreServer::Impl::consume_records(std::uint64_t id, Conn& c, const std::uint8_t* data,
                                           std::size_t n) {
  Sealer& s = *c.sec;
  std::size_t pos = 0;
  while (pos < n && !c.dead && !c.close_after_reply) {
    pos += s.in.feed(data + pos, n - pos);
    if (s.in.failed()) {
      refuse(c, detail::str_cat("request record ", s.rx_seq, ": ", s.in.error()));
      return;
    }
    if (!s.in.ready()) {
      if (s.in.in_progress() && c.deadline == Clock::time_point::max()) {
        c.deadline = Clock::now() + opts.request_timeout;  // a record begun must finish in time
        c.busy_with = "sending its request";
      }
      break;
    }
    if (!s.open(s.in.header(), s.in.ciphertext(), s.in.length(), s.in.tag())) {
      refuse(c, detail::str_cat("request record ", s.rx_seq,
                                " failed authentication (altered, replayed, reordered or injected "
                                "on the way, or not sealed with this connection's key)"));
      return;
    }
    consume(id, c, s.in.ciphertext(), s.in.length());  // now plaintext
    s.in.next();
  }
}

// A keyed connection whose bytes do not authenticate: answered REFUSED (sealed: the reply
// direction is intact) and closed, so the client can say which request was refused.
void TCPStoreServer::Impl::refuse(Conn& c, const std::string& why) {
  if (c.dead) return;
  log("refusing client " + c.peer + ": " + why + "; closing the connection");
  if (c.waiting || !c.out.empty()) {  // mid-reply or parked: no room for an answer
    drop(c, "");
    return;
  }
  booked -= c.booked;
  c.booked = 0;
  c.parser.reset();
  Bytes().swap(c.pending);
  c.refusal.clear();
  c.close_after_reply = true;
  const std::string msg = "the store refused this connection's request: " + why;
  reply(c, kRefused, reinterpret_cast<const std::uint8_t*>(msg.data()),
        std::min<std::size_t>(msg.size(), kMaxMessage));
}

// Closes the connection that has waited longest in its handshake (a new one needs its slot).
bool TCPStoreServer::Impl::evict_oldest_pending(const std::string& why) {
  if (pending.empty()) return false;
  const std::uint64_t id = *pending.begin();
  pending.erase(pending.begin());
  auto it = conns.find(id);
  if (it == conns.end()) return true;
  log("closing client " + it->second.peer + " (handshake not finished): " + why);
  release(it->second);
  conns.erase(it);  // closes the socket
  return true;
}

// Serves the bytes a connection sent while it was busy (at most one read's worth).
void TCPStoreServer::Impl::process(std::uint64_t id, Conn& c) {
  if (c.pending.empty() || c.dead || c.waiting || !c.out.empty()) return;
  Bytes p = std::move(c.pending);
  c.pending.clear();
  consume(id, c, p.data(), p.size());
}

// Reads the fixed-size handshake pieces, never more than the piece still missing.
void TCPStoreServer::Impl::read_hello(std::uint64_t id, Conn& c) {
  const bool proof = c.phase == Conn::Phase::kProof;
  const std::size_t want = proof ? kProof : kClientHello;
  while (!c.dead && c.hello_have < want) {
    int err = 0;
    const long r =
        net::recv_some(c.fd.get(), c.hello.data() + c.hello_have, want - c.hello_have, &err);
    if (r == 0) return;  // would block
    if (r < 0) {
      drop(c, err == 0 ? "closed during the handshake" : "socket error during the handshake");
      return;
    }
    c.hello_have += static_cast<std::size_t>(r);
    if (!proof) {
      const std::string why = check_client_hello(c.hello.data(), c.hello_have);
      if (!why.empty()) {
        drop(c, why);
        return;
      }
    }
  }
  if (c.dead) return;
  if (proof) {
    std::uint8_t expect[kProof];
    make_proof(key, /*server_side=*/false, c.nonce_c.data(), c.nonce_s.data(), expect);
    if (!proofs_equal(expect, c.hello.data())) {
      drop(c, "wrong job key (the client's proof does not verify)");
      return;
    }
    c.phase = Conn::Phase::kReady;
    c.deadline = Clock::time_point::max();
    c.hello = {};
    pending.erase(id);
    // From here on every request and reply travels in records under this connection's keys. The
    // first is the confirmation (an OK reply of length 0): until it arrives the client does not
    // count the connection as open, so one closed while pending (max_pending) is retried.
    c.sec = std::make_unique<Sealer>(key, c.nonce_c.data(), c.nonce_s.data(), /*server=*/true);
    reply(c, kOk, nullptr, 0);
    return;
  }
  const std::uint8_t auth = c.hello[8];  // checked by check_client_hello
  std::uint8_t answer[kServerHello] = {};
  std::memcpy(answer, kMagic, sizeof(kMagic));
  answer[8] = key.present ? kAuthKey : kAuthNone;
  if (key.present && auth == kAuthKey) {
    std::memcpy(c.nonce_c.data(), c.hello.data() + 16, kNonce);
    make_nonce(c.nonce_s.data());
    std::memcpy(answer + 16, c.nonce_s.data(), kNonce);
    make_proof(key, /*server_side=*/true, c.nonce_c.data(), c.nonce_s.data(), answer + 48);
    c.phase = Conn::Phase::kProof;
    c.hello_have = 0;
  } else if (key.present) {
    // Tell it a key is required (so its error can say so), then close.
    log("dropping client " + c.peer + ": it has no job key (this store requires one)");
    c.close_after_reply = true;
  } else {
    c.phase = Conn::Phase::kReady;  // a client with a key refuses this answer itself
    pending.erase(id);
  }
  c.out.assign(answer, answer + sizeof(answer));
  c.out_pos = 0;
  flush(c);
}

void TCPStoreServer::Impl::on_event(std::uint64_t id, Conn& c, short revents) {
  if (revents & POLLOUT) flush(c);
  const bool reading = !c.waiting && c.out.empty() && !c.dead;
  if (!reading) {
    // Not reading this connection now: any hang-up means the client is gone (a parked GET whose
    // client timed out and closed, or one that will never read its reply).
    if (revents & (POLLRDHUP | POLLHUP | POLLERR)) drop(c, "");
    return;
  }
  if (!(revents & (POLLIN | POLLRDHUP | POLLHUP | POLLERR)) && !(revents & POLLOUT)) return;
  if (c.phase != Conn::Phase::kReady) {
    read_hello(id, c);
    return;
  }
  process(id, c);
  // Read what is there, at most 4 MiB per wake-up so one client cannot starve the rest.
  std::size_t budget = 4u << 20;
  while (budget > 0 && !c.dead && !c.waiting && c.out.empty()) {
    const std::size_t chunk = std::min(budget, scratch.size());
    int err = 0;
    const long r = net::recv_some(c.fd.get(), scratch.data(), chunk, &err);
    if (r > 0) {
      budget -= static_cast<std::size_t>(r);
      if (c.sec) {
        consume_records(id, c, scratch.data(), static_cast<std::size_t>(r));
      } else {
        consume(id, c, scratch.data(), static_cast<std::size_t>(r));
      }
      if (static_cast<std::size_t>(r) < chunk) break;
      continue;
    }
    if (r < 0) drop(c, "");  // closed (half-closed clients are not supported), reset, error
    break;                   // r == 0: nothing more to read
  }
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
    // Connections still in their handshake have their own small cap: when it is reached (or the
    // total is), the one that has waited longest goes, so strangers that connect and stay silent
    // cannot keep the slots that ranks completing a handshake in a round trip need.
    if (pending.size() >= static_cast<std::size_t>(opts.max_pending)) {
      evict_oldest_pending(detail::str_cat(pending.size(),
                                           " connections in their handshake (limit ",
                                           opts.max_pending, "), a new one arrived"));
    }
    if (conns.size() >= static_cast<std::size_t>(opts.max_connections) &&
        !evict_oldest_pending(detail::str_cat(conns.size(), " connections open (limit ",
                                              opts.max_connections, "), a new one arrived"))) {
      log("refusing connection from " + from.str() + ": " + std::to_string(conns.size()) +
          " connections open (limit " + std::to_string(opts.max_connections) + ")");
      continue;  // closed here
    }
    net::set_nodelay(fd.get());
    Conn c;
    c.fd = std::move(fd);
    c.peer = from.str();
    c.handshake_deadline = Clock::now() + std::min(opts.handshake_timeout, opts.request_timeout);
    c.deadline = c.handshake_deadline;
    pending.insert(next_id);
    conns.emplace(next_id++, std::move(c));
  }
}

void TCPStoreServer::Impl::run() {
  std::vector<pollfd> fds;
  std::vector<std::uint64_t> ids;  // ids[i] is the connection of fds[i + 2]
  for (;;) {
    publish();
    fds.clear();
    ids.clear();
    fds.push_back({wake_fd.get(), POLLIN, 0});
    const bool accepting = Clock::now() >= accept_paused_until;
    fds.push_back({accepting ? listen_fd.get() : -1, POLLIN, 0});
    Clock::time_point wake = Clock::time_point::max();
    for (auto& [id, c] : conns) {
      short ev = POLLRDHUP;
      if (!c.out.empty())
        ev |= POLLOUT;
      else if (!c.waiting)
        ev |= POLLIN;
      fds.push_back({c.fd.get(), ev, 0});
      ids.push_back(id);
      wake = std::min(wake, c.deadline);
    }
    if (!deadlines.empty()) wake = std::min(wake, deadlines.begin()->first);
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
      if (it == conns.end()) continue;  // evicted by accept_all() above
      Conn& c = it->second;
      try {
        on_event(it->first, c, rev);
      } catch (const std::exception& e) {  // bad_alloc: lose that client only
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
    const auto now = Clock::now();
    for (auto it = conns.begin(); it != conns.end();) {
      Conn& c = it->second;
      if (!c.dead && c.deadline <= now) {
        const bool hs = c.phase != Conn::Phase::kReady;
        drop(c, detail::str_cat("did not finish ", c.busy_with, " within ",
                                (hs ? std::min(opts.handshake_timeout, opts.request_timeout)
                                    : opts.request_timeout)
                                    .count(),
                                " ms"));
      }
      if (c.dead) {
        pending.erase(it->first);
        unpark(it->first, c);
        release(c);
        it = conns.erase(it);  // closes the socket
      } else {
        ++it;
      }
    }
    if (freed_since_trim >= kTrimAfter) {
      ::malloc_trim(0);  // hand large freed buffers back (glibc keeps them otherwise)
      freed_since_trim = 0;
    }
  }
}

TCPStoreServer::TCPStoreServer(const std::string& host, int port, StoreServerOptions options)
    : impl_(std::make_unique<Impl>()) {
  ScopedErrorContext ctx("store.listen");
  const std::string where = host + ":" + std::to_string(port);
  RP_ENFORCE(port >= 0 && port <= 65535, UsageError, "port out of range for store server ", where);
  RP_ENFORCE(options.max_connections >= 1, UsageError, "store server ", where,
             ": max_connections must be at least 1, got ", options.max_connections);
  RP_ENFORCE(options.max_value_bytes <= kMaxValue, UsageError, "store server ", where,
             ": max_value_bytes above the protocol's ", kMaxValue);
  RP_ENFORCE(options.request_timeout.count() > 0, UsageError, "store server ", where,
             ": request_timeout must be positive");
  RP_ENFORCE(options.handshake_timeout.count() > 0, UsageError, "store server ", where,
             ": handshake_timeout must be positive");
  RP_ENFORCE(options.max_pending >= 1, UsageError, "store server ", where,
             ": max_pending must be at least 1, got ", options.max_pending);
  impl_->key = derive_store_key(options.key);
  impl_->opts = std::move(options);
  impl_->opts.key.clear();
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

std::uint64_t TCPStoreServer::held_bytes() const noexcept {
  return impl_->held_public.load(std::memory_order_relaxed);
}

int TCPStoreServer::connections() const noexcept {
  return impl_->conns_public.load(std::memory_order_relaxed);
}

// ==================================================================================== client

struct TCPStore::Impl {
  std::string host;
  int port = 0;
  std::string where;  // "host:port"
  milliseconds connect_timeout{0};
  StoreKey key;

  std::mutex mutex;    // serialises calls; guards everything below
  Fd fd;               // empty: connect on the next call
  std::string broken;  // non-empty: the connection was lost; every call raises this
  std::string op;      // the call in progress, for errors: "SET of key 'k'"
  // Keyed connections: the records' keys and numbers, and a reply record's plaintext not yet read.
  std::unique_ptr<Sealer> sec;
  Bytes plain;
  std::size_t plain_off = 0;
  std::vector<std::uint8_t> record;  // one record being received / sent

  milliseconds io_timeout() const { return std::max(connect_timeout, kMinIoTimeout); }
  void disconnect() {
    fd.reset();
    sec.reset();
    Bytes().swap(plain);
    plain_off = 0;
  }
  void connect();
  Io handshake(int s, Clock::time_point deadline, int* err, const std::uint8_t** nonces);
  // Reads n bytes of the reply stream (keyed: opening records; one that does not authenticate
  // raises TransportError naming the call).
  Io recv_plain(std::uint8_t* dst, std::size_t n, Clock::time_point deadline, int* err);
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
  disconnect();
  broken = detail;
  RP_THROW(TransportError, detail);
}

void TCPStore::Impl::fail_io(Io io, int err, const char* during) {
  if (io == Io::kTimeout) {
    disconnect();  // reply state unknown: reconnect on the next call
    RP_THROW(TimeoutError, "store ", where, " did not answer within ", io_timeout().count(),
             " ms (", during, ", ", op, "); will reconnect on the next call");
  }
  if (io == Io::kClosed) {
    fail(detail::str_cat("connection to store ", where, " lost while ", during, " (", op, ")",
                         err ? " (" + errno_text(err) + ")" : std::string(" (server closed it)")));
  }
  fail(detail::str_cat("socket error on store connection ", where, " while ", during, " (", op,
                       "): ", errno_text(err)));
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
      std::uint8_t both[2 * kNonce];  // nonce_c || nonce_s of a keyed handshake
      const std::uint8_t* nonces = both;
      const Io io = handshake(s.get(), hs_deadline, &err, &nonces);
      if (io == Io::kOk && nonces == nullptr) {
        fd = std::move(s);
        return;
      }
      if (io == Io::kOk) {
        // Keyed: the server's first record confirms the handshake (an OK reply of length 0).
        fd = std::move(s);
        sec = std::make_unique<Sealer>(key, nonces, nonces + kNonce, /*server=*/false);
        std::uint8_t h[kReplyHeader];
        const Io cio = recv_plain(h, sizeof(h), hs_deadline, &err);
        if (cio == Io::kOk) {
          if (h[0] != kOk || get_u64(h + 1) != 0)
            fail(detail::str_cat("store ", where, " did not confirm the handshake"));
          return;
        }
        disconnect();
        last = cio == Io::kTimeout ? "handshake timed out"
                                   : "connection closed before the server confirmed the handshake";
        continue;
      }
      // Closed before its answer: e.g. the server is at its connection limit; retried.
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

// The client's side of the handshake (header comment). Io::kOk when the server is accepted; a
// server that is not a store, cannot prove the key or requires one raises TransportError.
// *nonces points to 2 * kNonce bytes: filled with nonce_c || nonce_s when the connection is keyed,
// else set to nullptr.
Io TCPStore::Impl::handshake(int s, Clock::time_point deadline, int* err,
                             const std::uint8_t** nonces) {
  auto* both = const_cast<std::uint8_t*>(*nonces);
  *nonces = nullptr;
  std::uint8_t hello[kClientHello] = {};
  std::memcpy(hello, kMagic, sizeof(kMagic));
  hello[8] = key.present ? kAuthKey : kAuthNone;
  if (key.present) make_nonce(hello + 16);
  iovec iov{hello, sizeof(hello)};
  Io io = net::send_all(s, &iov, 1, deadline, err);
  std::uint8_t answer[kServerHello];
  if (io == Io::kOk) io = net::recv_all(s, answer, sizeof(answer), deadline, err);
  if (io != Io::kOk) return io;
  std::uint8_t auth = kAuthNone;
  if (!check_server_hello(answer, &auth).empty()) {
    RP_THROW(TransportError, "peer at ", where,
             " is not a ringpress store server (or speaks another protocol version)");
  }
  if (auth == kAuthKey && !key.present) {
    RP_THROW(TransportError, "store ", where,
             " requires the job key and this process has none (set RINGPRESS_JOB_KEY or "
             "RINGPRESS_JOB_KEY_FILE to the job's key)");
  }
  if (!key.present) return Io::kOk;
  if (auth != kAuthKey) {
    RP_THROW(TransportError, "store ", where,
             " does not authenticate (it has no job key) while this process has one: refusing "
             "it (not the job's store, or its server was started without the key)");
  }
  std::uint8_t expect[kProof];
  make_proof(key, /*server_side=*/true, hello + 16, answer + 16, expect);
  if (!proofs_equal(expect, answer + 48)) {
    RP_THROW(TransportError, "store ", where,
             " could not prove it knows the job key: refusing it (different RINGPRESS_JOB_KEY "
             "on this rank and the store's, or not the job's store)");
  }
  std::uint8_t proof[kProof];
  make_proof(key, /*server_side=*/false, hello + 16, answer + 16, proof);
  iovec piov{proof, sizeof(proof)};
  io = net::send_all(s, &piov, 1, deadline, err);
  if (io == Io::kOk) {
    std::memcpy(both, hello + 16, kNonce);
    std::memcpy(both + kNonce, answer + 16, kNonce);
    *nonces = both;
  }
  return io;
}

Io TCPStore::Impl::recv_plain(std::uint8_t* dst, std::size_t n, Clock::time_point deadline,
                              int* err) {
  if (!sec) return net::recv_all(fd.get(), dst, n, deadline, err);
  while (n > 0) {
    if (plain_off < plain.size()) {
      const std::size_t k = std::min(n, plain.size() - plain_off);
      std::memcpy(dst, plain.data() + plain_off, k);
      plain_off += k;
      dst += k;
      n -= k;
      continue;
    }
    std::uint8_t head[kRecordHeader];
    Io io = net::recv_all(fd.get(), head, sizeof(head), deadline, err);
    if (io != Io::kOk) return io;
    const std::uint32_t len = get_u32(head);
    if (len == 0 || len > kMaxRecord) {
      fail(detail::str_cat("store ", where, " sent a reply record of ", len, " bytes (allowed 1..",
                           kMaxRecord, ") to ", op,
                           ": altered on the way, or not the job's store"));
    }
    record.resize(len + kRecordTag);
    io = net::recv_all(fd.get(), record.data(), record.size(), deadline, err);
    if (io != Io::kOk) return io;
    if (!sec->open(head, record.data(), len, record.data() + len)) {
      fail(detail::str_cat("reply record ", sec->rx_seq, " from store ", where, " to ", op,
                           " failed authentication (altered, replayed, reordered or injected on "
                           "the way)"));
    }
    plain.assign(record.begin(), record.begin() + len);
    plain_off = 0;
  }
  if (plain_off == plain.size() && plain.capacity() > 8192) Bytes().swap(plain);
  if (record.capacity() > 8192) std::vector<std::uint8_t>().swap(record);
  return Io::kOk;
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
  if (!sec) {
    const Io io = net::send_all(fd.get(), iov, 4, deadline, &err);
    if (io != Io::kOk) fail_io(io, err, "sending a request");
    return;
  }
  // Keyed: the same bytes, sealed in records of at most kMaxRecord.
  const std::size_t total = sizeof(head) + key.size() + sizeof(vlen) + n;
  for (std::size_t at = 0; at < total;) {
    const std::size_t len = std::min(kMaxRecord, total - at);
    record.clear();
    sec->seal(iov, 4, at, len, &record);
    at += len;
    iovec r{record.data(), record.size()};
    const Io io = net::send_all(fd.get(), &r, 1, deadline, &err);
    if (io != Io::kOk) fail_io(io, err, "sending a request");
  }
  if (record.capacity() > 8192) std::vector<std::uint8_t>().swap(record);
}

bool TCPStore::Impl::read_header(Clock::time_point deadline, std::uint8_t* status,
                                 std::uint64_t* len) {
  std::uint8_t h[kReplyHeader];
  int err = 0;
  const Io io = recv_plain(h, sizeof(h), deadline, &err);
  if (io == Io::kTimeout) {
    disconnect();
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
  const Io io = recv_plain(body.data(), body.size(), deadline, &err);
  if (io != Io::kOk) fail_io(io, err, "reading a reply");
  return body;
}

// A reply that is not the expected OK: a usage error from the server, or a protocol violation.
void TCPStore::Impl::raise_status(std::uint8_t status, std::uint64_t len, const char* op) {
  if (status == kUsageError && len <= kMaxMessage) {
    const Bytes msg = read_body(len, Clock::now() + io_timeout());
    RP_THROW(UsageError, std::string(msg.begin(), msg.end()), " (store ", where, ")");
  }
  if (status == kRefused && len <= kMaxMessage && sec) {  // only a keyed server says this
    const Bytes msg = read_body(len, Clock::now() + io_timeout());
    fail(detail::str_cat("store ", where, " refused ", this->op, " and closed the connection (",
                         std::string(msg.begin(), msg.end()),
                         "): the request was altered or replayed on the way"));
  }
  fail(detail::str_cat("protocol violation from store ", where, ": reply status ", int(status),
                       " length ", len, " to ", op, " (", this->op, ")"));
}

TCPStore::TCPStore(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
                   Bytes key)
    : impl_(std::make_unique<Impl>()) {
  ScopedErrorContext ctx("store.connect");
  impl_->key = derive_store_key(key);
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
  impl_->op = "SET of key '" + key + "'";
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
  impl_->op = "GET of key '" + key + "'";
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
  impl_->op = "ADD to key '" + key + "'";
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

bool TCPStore::delete_key(const std::string& key) {
  ScopedErrorContext ctx("store.delete_key");
  RP_ENFORCE_LE(key.size(), kMaxKey, UsageError, "store key too long");
  std::lock_guard<std::mutex> lock(impl_->mutex);
  impl_->op = "DELETE of key '" + key + "'";
  impl_->ensure_usable();
  const auto deadline = Clock::now() + impl_->io_timeout();
  impl_->send_request(kCmdDelete, key, nullptr, 0, deadline);
  std::uint8_t status = 0;
  std::uint64_t len = 0;
  if (!impl_->read_header(deadline, &status, &len)) impl_->fail_io(Io::kTimeout, 0, "delete");
  if (status != kOk || len != 8) impl_->raise_status(status, len, "DELETE");
  const Bytes body = impl_->read_body(len, deadline);
  return get_u64(body.data()) != 0;
}

Bytes store_job_key(const std::string& material, bool use_configured) {
  ScopedErrorContext ctx("store.key");
  crypto::Key k;
  if (!material.empty()) {
    k = crypto::job_key_from_material(material);
  } else if (use_configured) {
    const crypto::JobKey j = crypto::configured_job_key("");
    if (!j.present) return {};
    k = j.key;
  } else {
    return {};
  }
  return Bytes(k.begin(), k.end());
}

}  // namespace ringpress

// The socket layer (internal header): the only place in the transport that creates, connects,
// listens on, accepts, reads or writes a socket through a raw syscall helper. Users: the
// Context's rendezvous and progress loop (rendezvous.cc, progress.cc, failure.cc) and the TCP
// store's server and client (store_tcp.cc).
//
// Two styles, by caller:
// - throwing (listen_tcp, connect_tcp, write_all, read_all, resolve_ipv4, parse_endpoint): raise
//   TransportError/TimeoutError/UsageError with the current error context, naming the endpoint;
// - status-returning (try_connect, try_listen, accept_one, send_some/recv_some, send_all/
//   recv_all, resolve_tcp): report errno, for callers that word their own errors or must keep
//   going (the store server never throws on a client's behalf; the store client's errors are
//   sticky and name the store).
// IPv4 only for now. Cost: each helper is one syscall per attempt plus poll() while it waits;
// nothing allocates except the address helpers.
// Ownership: Fd owns a descriptor and closes it once (never retried on EINTR).
#pragma once

#include <netdb.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>

#include "ringpress/transport.h"

namespace ringpress::net {

// Owns a file descriptor; closes it on destruction.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const noexcept { return fd_; }
  bool valid() const noexcept { return fd_ >= 0; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;  // closes the old one (never retried on EINTR)

 private:
  int fd_ = -1;
};

// ------------------------------------------------------------------ addresses

struct Endpoint {
  std::string host;  // numeric IPv4
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

Endpoint parse_endpoint(const std::string& s);      // "1.2.3.4:5678"
std::string resolve_ipv4(const std::string& host);  // hostname or literal -> dotted quad
// The local address the kernel would use to reach `remote` (UDP connect, no packet sent).
std::string local_addr_toward(const std::string& remote);
// The IPv4 address of the interface `spec` picks (RINGPRESS_SOCKET_IFNAME syntax): a name
// ("eth0"), a comma list tried in order ("ib0,eth0"), or "^lo,docker0" for the first interface
// that is up, has an IPv4 address and is not listed (non-loopback ones first). Names match
// exactly. UsageError naming `spec` and listing the interfaces that exist when none matches.
std::string interface_addr(const std::string& spec);
Endpoint endpoint_of(const sockaddr_in& sa);
Endpoint local_endpoint(int fd);  // raises TransportError if getsockname fails
Endpoint peer_endpoint(int fd);   // {"?", 0} if getpeername fails

// getaddrinfo for IPv4 TCP (every address of `host`; empty host: the wildcard when passive, else
// loopback). Returns 0 or the EAI_* code; *out owns the list.
struct AddrInfoDeleter {
  void operator()(addrinfo* a) const { ::freeaddrinfo(a); }
};
using AddrInfoPtr = std::unique_ptr<addrinfo, AddrInfoDeleter>;
int resolve_tcp(const std::string& host, int port, bool passive, AddrInfoPtr* out);

// ------------------------------------------------------------------ sockets

// One listening socket (non-blocking, SO_REUSEADDR, buffer sizes when buffer_bytes > 0), or an
// invalid Fd with *err = errno and *step = the call that failed ("socket", "bind", "listen").
Fd try_listen(const sockaddr* addr, socklen_t len, int backlog, int buffer_bytes, int* err,
              const char** step);
// Throwing form on bind_host:port (empty or "0.0.0.0": every interface).
Fd listen_tcp(const std::string& bind_host, int port, int backlog, int buffer_bytes);
// Accepts one pending connection as a non-blocking socket, retrying EINTR/ECONNABORTED/EPROTO.
// Invalid Fd with *err = errno when none is left (EAGAIN) or accept failed (EMFILE, ...).
Fd accept_one(int listen_fd, Endpoint* from, int* err);

// One non-blocking connect attempt, waiting until `deadline` for it to complete. Returns the
// connected socket (still non-blocking) or an invalid Fd with *err (ETIMEDOUT when the deadline
// passed).
Fd try_connect(const sockaddr* addr, socklen_t len, Deadline deadline, int buffer_bytes, int* err);
// Connect with retry until the deadline (the listener may not exist yet); returns a blocking
// socket. Each attempt waits at most 5 s, so an address that never answers is retried.
Fd connect_tcp(const Endpoint& ep, Deadline deadline, int buffer_bytes);
// One attempt, for a listener known to exist (recovery): TransportError when refused (nothing
// listens: the process is gone), TimeoutError when nothing answers by the deadline.
Fd connect_tcp_once(const Endpoint& ep, Deadline deadline, int buffer_bytes);
// A client connecting to a free port of its own host can be given that port as its source and
// "connect" to itself (TCP simultaneous open).
bool connected_to_itself(int fd);

void set_nonblocking(int fd, bool on);
void set_nodelay(int fd);

// ------------------------------------------------------------------ I/O

// One attempt, EINTR retried, never blocks, never raises SIGPIPE: the bytes moved (> 0), 0 when
// the socket would block, or -1 with *err = errno (recv_some: *err = 0 at end of stream).
long send_some(int fd, const iovec* iov, int n, int* err);
long recv_some(int fd, void* dst, std::size_t len, int* err);

// Until done or the deadline, polling while the socket would block.
enum class Io { kOk, kTimeout, kClosed, kError };  // kClosed: EOF (*err = 0) or reset/EPIPE
Io wait_io(int fd, short events, Deadline deadline, int* err);
Io send_all(int fd, iovec* iov, int n, Deadline deadline, int* err);  // iov consumed in place
Io recv_all(int fd, void* dst, std::size_t len, Deadline deadline, int* err);
// Throwing forms: TimeoutError "<what>: timed out", TransportError otherwise.
void write_all(int fd, const void* data, std::size_t len, Deadline deadline, const char* what);
void read_all(int fd, void* data, std::size_t len, Deadline deadline, const char* what);

// Milliseconds until deadline, clamped to [0, cap] (rounded down).
int ms_until(Deadline deadline, int cap = 1 << 30);
// Milliseconds until deadline for poll(): rounded up (so a waiter never spins), clamped to int.
int poll_ms(Deadline deadline);

}  // namespace ringpress::net

// Socket helpers shared by the TCP transport and the rendezvous (internal header).
// Every function raises TransportError/TimeoutError with the current error context on failure.
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
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

struct Endpoint {
  std::string host;  // numeric IPv4
  int port = 0;
  std::string str() const { return host + ":" + std::to_string(port); }
};

Endpoint parse_endpoint(const std::string& s);      // "1.2.3.4:5678"
std::string resolve_ipv4(const std::string& host);  // hostname or literal -> dotted quad
// The local address the kernel would use to reach `remote` (UDP connect, no packet sent).
std::string local_addr_toward(const std::string& remote);

Fd listen_tcp(const std::string& bind_host, int port, int backlog, int buffer_bytes);
Endpoint local_endpoint(int fd);
Endpoint peer_endpoint(int fd);
// Blocking connect with retry until the deadline (the listener may not exist yet).
Fd connect_tcp(const Endpoint& ep, Deadline deadline, int buffer_bytes);

void set_nonblocking(int fd, bool on);
void set_nodelay(int fd);
// Blocking-style I/O on a (possibly non-blocking) fd, polling until done or the deadline.
void write_all(int fd, const void* data, std::size_t len, Deadline deadline, const char* what);
void read_all(int fd, void* data, std::size_t len, Deadline deadline, const char* what);

// Milliseconds until deadline, clamped to [0, cap].
int ms_until(Deadline deadline, int cap = 1 << 30);

}  // namespace ringpress::net

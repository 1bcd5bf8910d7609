// Socket helpers (see net.h). IPv4 only for now; every error names the endpoint.
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

namespace ringpress::net {

void Fd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);  // Linux releases the fd even on EINTR: never retry
  fd_ = fd;
}

int ms_until(Deadline deadline, int cap) {
  auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  if (left < 0) return 0;
  if (left > cap) return cap;
  return static_cast<int>(left);
}

Endpoint parse_endpoint(const std::string& s) {
  auto colon = s.rfind(':');
  RP_ENFORCE(colon != std::string::npos && colon > 0, UsageError, "bad endpoint '", s,
             "', expected host:port");
  Endpoint ep;
  ep.host = s.substr(0, colon);
  try {
    ep.port = std::stoi(s.substr(colon + 1));
  } catch (const std::exception&) {
    RP_THROW(UsageError, "bad port in endpoint '", s, "'");
  }
  RP_ENFORCE(ep.port > 0 && ep.port < 65536, UsageError, "port out of range in '", s, "'");
  return ep;
}

std::string resolve_ipv4(const std::string& host) {
  in_addr a{};
  if (inet_pton(AF_INET, host.c_str(), &a) == 1) return host;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  int rc = getaddrinfo(host.c_str(), nullptr, &hints, &res);
  RP_ENFORCE(rc == 0 && res != nullptr, TransportError, "cannot resolve host '", host,
             "': ", gai_strerror(rc));
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(res->ai_addr)->sin_addr, buf, sizeof buf);
  freeaddrinfo(res);
  return buf;
}

std::string local_addr_toward(const std::string& remote) {
  std::string ip = resolve_ipv4(remote);
  Fd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s.valid()) return "127.0.0.1";
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(9);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  if (::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) != 0) return "127.0.0.1";
  sockaddr_in me{};
  socklen_t len = sizeof me;
  if (getsockname(s.get(), reinterpret_cast<sockaddr*>(&me), &len) != 0) return "127.0.0.1";
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &me.sin_addr, buf, sizeof buf);
  return buf;
}

static void set_buffers(int fd, int bytes) {
  if (bytes <= 0) return;  // kernel autotuning
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

Fd listen_tcp(const std::string& bind_host, int port, int backlog, int buffer_bytes) {
  Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  RP_ENFORCE(s.valid(), TransportError, "socket(): ", std::strerror(errno));
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  set_buffers(s.get(),
              buffer_bytes);  // inherited by accepted sockets (window scale is fixed at SYN)
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  std::string ip = bind_host.empty() ? "0.0.0.0" : resolve_ipv4(bind_host);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  RP_ENFORCE(::bind(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0, TransportError,
             "bind(", ip, ":", port, "): ", std::strerror(errno));
  RP_ENFORCE(::listen(s.get(), backlog) == 0, TransportError, "listen(): ", std::strerror(errno));
  return s;
}

static Endpoint endpoint_of(const sockaddr_in& sa) {
  char buf[INET_ADDRSTRLEN];
  inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return Endpoint{buf, ntohs(sa.sin_port)};
}

Endpoint local_endpoint(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  return endpoint_of(sa);
}

Endpoint peer_endpoint(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return Endpoint{"?", 0};
  return endpoint_of(sa);
}

Fd connect_tcp(const Endpoint& ep, Deadline deadline, int buffer_bytes) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(ep.port));
  std::string ip = resolve_ipv4(ep.host);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  int backoff_ms = 1;
  std::string last;
  for (;;) {
    Fd s(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
    RP_ENFORCE(s.valid(), TransportError, "socket(): ", std::strerror(errno));
    set_buffers(s.get(), buffer_bytes);
    // Non-blocking, so an address that never answers (a SYN into the void) cannot hold the
    // caller past its deadline for the kernel's ~2 minutes of SYN retries.
    set_nonblocking(s.get(), true);
    int err = ::connect(s.get(), reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0 ? 0 : errno;
    if (err == EINPROGRESS || err == EINTR) {
      pollfd pf{s.get(), POLLOUT, 0};
      int rc;
      do {
        rc = ::poll(&pf, 1, ms_until(deadline, 5000));
      } while (rc < 0 && errno == EINTR);
      socklen_t len = sizeof err;
      if (rc > 0) {
        if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
      } else {
        err = rc == 0 ? ETIMEDOUT : errno;
      }
    }
    if (err == 0) {
      set_nonblocking(s.get(), false);
      return s;
    }
    last = std::strerror(err);
    if (Clock::now() >= deadline) {
      RP_THROW(TimeoutError, "could not connect to ", ep.str(),
               " before the deadline (last error: ", last, ")");
    }
    std::this_thread::sleep_for(
        std::chrono::milliseconds(std::min(backoff_ms, ms_until(deadline))));
    backoff_ms = std::min(backoff_ms * 2, 100);
  }
}

void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static void wait_fd(int fd, short events, Deadline deadline, const char* what) {
  pollfd p{fd, events, 0};
  for (;;) {
    int rc = ::poll(&p, 1, ms_until(deadline, 1000));
    if (rc > 0) return;
    if (rc < 0 && errno != EINTR)
      RP_THROW(TransportError, what, ": poll(): ", std::strerror(errno));
    if (rc == 0 && Clock::now() >= deadline) RP_THROW(TimeoutError, what, ": timed out");
  }
}

void write_all(int fd, const void* data, std::size_t len, Deadline deadline, const char* what) {
  const char* p = static_cast<const char*>(data);
  while (len > 0) {
    ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<std::size_t>(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      wait_fd(fd, POLLOUT, deadline, what);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      RP_THROW(TransportError, what, ": send(): ", std::strerror(errno));
    }
  }
}

void read_all(int fd, void* data, std::size_t len, Deadline deadline, const char* what) {
  char* p = static_cast<char*>(data);
  while (len > 0) {
    ssize_t n = ::recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= static_cast<std::size_t>(n);
    } else if (n == 0) {
      RP_THROW(TransportError, what, ": connection closed by the other side");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
      wait_fd(fd, POLLIN, deadline, what);
    } else if (errno != EINTR) {
      RP_THROW(TransportError, what, ": recv(): ", std::strerror(errno));
    }
  }
}

}  // namespace ringpress::net

// The socket layer (see net.h). IPv4 only for now; every thrown error names the endpoint.
// Nothing here keeps state: each helper works on the descriptor it is given, and the caller owns
// it (through Fd).
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>
#include <sstream>
#include <thread>
#include <vector>

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

int poll_ms(Deadline deadline) {
  const auto now = Clock::now();
  if (deadline <= now) return 0;
  const auto us = std::chrono::duration_cast<std::chrono::microseconds>(deadline - now).count();
  const long long ms = (us + 999) / 1000;
  return static_cast<int>(std::min<long long>(ms, std::numeric_limits<int>::max()));
}

// ------------------------------------------------------------------ addresses

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

int resolve_tcp(const std::string& host, int port, bool passive, AddrInfoPtr* out) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_protocol = IPPROTO_TCP;
  hints.ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0);
  addrinfo* res = nullptr;
  const std::string service = std::to_string(port);
  const int rc =
      ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &res);
  out->reset(rc == 0 ? res : nullptr);
  return rc;
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

namespace {

struct Iface {
  std::string name;
  std::string addr;  // first IPv4 address, dotted quad
  bool up = false;
  bool loopback = false;
};

std::vector<Iface> ipv4_interfaces() {
  ifaddrs* list = nullptr;
  RP_ENFORCE(::getifaddrs(&list) == 0, TransportError, "getifaddrs(): ", std::strerror(errno));
  std::vector<Iface> out;
  for (ifaddrs* a = list; a != nullptr; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET || a->ifa_name == nullptr)
      continue;
    const std::string name = a->ifa_name;
    if (std::any_of(out.begin(), out.end(), [&](const Iface& i) { return i.name == name; }))
      continue;  // the first address of an interface
    char buf[INET_ADDRSTRLEN] = "?";
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(a->ifa_addr)->sin_addr, buf,
              sizeof buf);
    out.push_back({name, buf, (a->ifa_flags & IFF_UP) != 0, (a->ifa_flags & IFF_LOOPBACK) != 0});
  }
  ::freeifaddrs(list);
  return out;
}

std::vector<std::string> split_names(const std::string& s) {
  std::vector<std::string> names;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    const auto b = item.find_first_not_of(" \t");
    const auto e = item.find_last_not_of(" \t");
    if (b != std::string::npos) names.push_back(item.substr(b, e - b + 1));
  }
  return names;
}

}  // namespace

std::string interface_addr(const std::string& spec) {
  const bool exclude = !spec.empty() && spec[0] == '^';
  const std::vector<std::string> names = split_names(exclude ? spec.substr(1) : spec);
  RP_ENFORCE(exclude || !names.empty(), UsageError, "RINGPRESS_SOCKET_IFNAME='", spec,
             "' names no interface");
  const std::vector<Iface> ifs = ipv4_interfaces();
  auto listed = [&](const std::string& n) {
    return std::find(names.begin(), names.end(), n) != names.end();
  };
  if (exclude) {
    for (bool loopback : {false, true}) {
      for (const Iface& i : ifs) {
        if (i.up && i.loopback == loopback && !listed(i.name)) return i.addr;
      }
    }
  } else {
    for (const std::string& n : names) {
      for (const Iface& i : ifs) {
        if (i.name == n && i.up) return i.addr;
      }
    }
  }
  std::string have;
  for (const Iface& i : ifs) {
    have += (have.empty() ? "" : ", ") + i.name + " (" + i.addr + (i.up ? "" : ", down") + ")";
  }
  RP_THROW(
      UsageError, "RINGPRESS_SOCKET_IFNAME='", spec, "': ",
      exclude ? "every interface is excluded" : "no such interface that is up with an IPv4 address",
      "; interfaces with IPv4 here: ", have.empty() ? "none" : have);
}

Endpoint endpoint_of(const sockaddr_in& sa) {
  char buf[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &sa.sin_addr, buf, sizeof buf);
  return Endpoint{buf, ntohs(sa.sin_port)};
}

Endpoint local_endpoint(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0)
    RP_THROW(TransportError, "getsockname(): ", std::strerror(errno));
  return endpoint_of(sa);
}

Endpoint peer_endpoint(int fd) {
  sockaddr_in sa{};
  socklen_t len = sizeof sa;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&sa), &len) != 0) return Endpoint{"?", 0};
  return endpoint_of(sa);
}

// ------------------------------------------------------------------ sockets

static void set_buffers(int fd, int bytes) {
  if (bytes <= 0) return;  // kernel autotuning
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &bytes, sizeof bytes);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &bytes, sizeof bytes);
}

Fd try_listen(const sockaddr* addr, socklen_t len, int backlog, int buffer_bytes, int* err,
              const char** step) {
  Fd s(::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!s.valid()) {
    *err = errno;
    *step = "socket";
    return Fd();
  }
  int one = 1;
  setsockopt(s.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  set_buffers(s.get(), buffer_bytes);  // inherited by accepted sockets (window scale: at SYN)
  if (::bind(s.get(), addr, len) != 0) {
    *err = errno;
    *step = "bind";
    return Fd();
  }
  if (::listen(s.get(), backlog) != 0) {
    *err = errno;
    *step = "listen";
    return Fd();
  }
  return s;
}

Fd listen_tcp(const std::string& bind_host, int port, int backlog, int buffer_bytes) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(port));
  std::string ip = bind_host.empty() ? "0.0.0.0" : resolve_ipv4(bind_host);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  int err = 0;
  const char* step = "";
  Fd s =
      try_listen(reinterpret_cast<sockaddr*>(&sa), sizeof sa, backlog, buffer_bytes, &err, &step);
  if (!s.valid()) {
    if (std::strcmp(step, "bind") == 0)
      RP_THROW(TransportError, "bind(", ip, ":", port, "): ", std::strerror(err));
    RP_THROW(TransportError, step, "(): ", std::strerror(err));
  }
  return s;
}

Fd accept_one(int listen_fd, Endpoint* from, int* err) {
  for (;;) {
    sockaddr_in addr{};
    socklen_t len = sizeof addr;
    const int fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len,
                             SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      if (from) *from = endpoint_of(addr);
      return Fd(fd);
    }
    if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
    *err = errno;
    return Fd();
  }
}

Fd try_connect(const sockaddr* addr, socklen_t len, Deadline deadline, int buffer_bytes, int* err) {
  // Non-blocking, so an address that never answers (a SYN into the void) cannot hold the caller
  // past its deadline for the kernel's ~2 minutes of SYN retries.
  Fd s(::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  RP_ENFORCE(s.valid(), TransportError, "socket(): ", std::strerror(errno));
  set_buffers(s.get(), buffer_bytes);
  int e = ::connect(s.get(), addr, len) == 0 ? 0 : errno;
  if (e == EINPROGRESS || e == EINTR) {
    int w = 0;
    const Io io = wait_io(s.get(), POLLOUT, deadline, &w);
    socklen_t el = sizeof e;
    if (io == Io::kOk) {
      if (::getsockopt(s.get(), SOL_SOCKET, SO_ERROR, &e, &el) != 0) e = errno;
    } else {
      e = io == Io::kTimeout ? ETIMEDOUT : w;
    }
  }
  *err = e;
  return e == 0 ? std::move(s) : Fd();
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
    int err = 0;
    const Deadline attempt = std::min(deadline, Clock::now() + std::chrono::seconds(5));
    Fd s = try_connect(reinterpret_cast<sockaddr*>(&sa), sizeof sa, attempt, buffer_bytes, &err);
    if (s.valid()) {
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

Fd connect_tcp_once(const Endpoint& ep, Deadline deadline, int buffer_bytes) {
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(static_cast<uint16_t>(ep.port));
  const std::string ip = resolve_ipv4(ep.host);
  inet_pton(AF_INET, ip.c_str(), &sa.sin_addr);
  int err = 0;
  Fd s = try_connect(reinterpret_cast<sockaddr*>(&sa), sizeof sa, deadline, buffer_bytes, &err);
  if (s.valid()) {
    set_nonblocking(s.get(), false);
    return s;
  }
  if (err == ETIMEDOUT) {
    RP_THROW(TimeoutError, "could not connect to ", ep.str(), " before the deadline");
  }
  RP_THROW(TransportError, "could not connect to ", ep.str(), ": ", std::strerror(err));
}

bool connected_to_itself(int fd) {
  sockaddr_in self{}, peer{};
  socklen_t sl = sizeof(self), pl = sizeof(peer);
  return ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &sl) == 0 &&
         ::getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) == 0 &&
         self.sin_port == peer.sin_port && self.sin_addr.s_addr == peer.sin_addr.s_addr;
}

void set_nonblocking(int fd, bool on) {
  int fl = fcntl(fd, F_GETFL, 0);
  fcntl(fd, F_SETFL, on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK));
}

void set_nodelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// ------------------------------------------------------------------ I/O

long send_some(int fd, const iovec* iov, int n, int* err) {
  msghdr mh{};
  mh.msg_iov = const_cast<iovec*>(iov);
  mh.msg_iovlen = static_cast<std::size_t>(n);
  for (;;) {
    ssize_t w = ::sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w >= 0) return static_cast<long>(w);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    *err = errno;
    return -1;
  }
}

long recv_some(int fd, void* dst, std::size_t len, int* err) {
  for (;;) {
    ssize_t r = ::recv(fd, dst, len, MSG_DONTWAIT);
    if (r > 0) return static_cast<long>(r);
    if (r == 0) {
      *err = 0;
      return -1;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    *err = errno;
    return -1;
  }
}

Io wait_io(int fd, short events, Deadline deadline, int* err) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, poll_ms(deadline));
    if (r < 0) {
      if (errno == EINTR) continue;
      *err = errno;
      return Io::kError;
    }
    if (r > 0) return Io::kOk;  // includes POLLERR/POLLHUP: the next send/recv reports them
    if (Clock::now() >= deadline) return Io::kTimeout;
  }
}

static Io classify_errno(int e, int* err) {
  *err = e;
  return (e == ECONNRESET || e == EPIPE || e == ENOTCONN || e == ECONNABORTED) ? Io::kClosed
                                                                               : Io::kError;
}

Io send_all(int fd, iovec* iov, int n, Deadline deadline, int* err) {
  while (n > 0 && iov->iov_len == 0) ++iov, --n;
  while (n > 0) {
    int e = 0;
    const long w = send_some(fd, iov, n, &e);
    if (w < 0) return classify_errno(e, err);
    if (w == 0) {
      const Io s = wait_io(fd, POLLOUT, deadline, err);
      if (s != Io::kOk) return s;
      continue;
    }
    std::size_t left = static_cast<std::size_t>(w);
    while (n > 0 && left >= iov->iov_len) left -= iov->iov_len, ++iov, --n;
    if (n > 0) {
      iov->iov_base = static_cast<std::uint8_t*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return Io::kOk;
}

Io recv_all(int fd, void* dst, std::size_t len, Deadline deadline, int* err) {
  auto* p = static_cast<std::uint8_t*>(dst);
  while (len > 0) {
    int e = 0;
    const long r = recv_some(fd, p, len, &e);
    if (r > 0) {
      p += r;
      len -= static_cast<std::size_t>(r);
      continue;
    }
    if (r < 0) {
      if (e == 0) {
        *err = 0;
        return Io::kClosed;
      }
      return classify_errno(e, err);
    }
    const Io s = wait_io(fd, POLLIN, deadline, err);
    if (s != Io::kOk) return s;
  }
  return Io::kOk;
}

void write_all(int fd, const void* data, std::size_t len, Deadline deadline, const char* what) {
  iovec iov{const_cast<void*>(data), len};
  int err = 0;
  switch (send_all(fd, &iov, 1, deadline, &err)) {
    case Io::kOk: return;
    case Io::kTimeout: RP_THROW(TimeoutError, what, ": timed out");
    default: RP_THROW(TransportError, what, ": send(): ", std::strerror(err));
  }
}

void read_all(int fd, void* data, std::size_t len, Deadline deadline, const char* what) {
  int err = 0;
  switch (recv_all(fd, data, len, deadline, &err)) {
    case Io::kOk: return;
    case Io::kTimeout: RP_THROW(TimeoutError, what, ": timed out");
    case Io::kClosed:
      if (err == 0) RP_THROW(TransportError, what, ": connection closed by the other side");
      [[fallthrough]];
    default: RP_THROW(TransportError, what, ": recv(): ", std::strerror(err));
  }
}

}  // namespace ringpress::net

// Rendezvous stores: HashStore, PrefixStore, TCPStoreServer + TCPStore (protocol in store_tcp.cc).
// Timeouts are short (100-300 ms) so the whole file runs in about two seconds.
#include <arpa/inet.h>
#include <dirent.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "../../csrc/transport/store_protocol.h"
#include "ringpress/error.h"
#include "ringpress/store.h"

using namespace ringpress;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

Bytes B(const std::string& s) {
  return Bytes(s.begin(), s.end());
}
std::string S(const Bytes& b) {
  return std::string(b.begin(), b.end());
}

long elapsed_ms(Clock::time_point t0) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t0).count());
}

bool contains(const std::string& hay, const std::string& needle) {
  return hay.find(needle) != std::string::npos;
}

int count_open_fds() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return -1;
  while (::readdir(d) != nullptr) ++n;
  ::closedir(d);
  return n;
}

// A raw IPv4 TCP connection to 127.0.0.1:port (blocking), for speaking bad protocol on purpose.
struct RawSocket {
  int fd = -1;
  explicit RawSocket(int port) {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0) << std::strerror(errno);
  }
  ~RawSocket() {
    if (fd >= 0) ::close(fd);
  }
  void send_bytes(const std::vector<std::uint8_t>& b) {
    ASSERT_EQ(::send(fd, b.data(), b.size(), MSG_NOSIGNAL), static_cast<ssize_t>(b.size()));
  }
  void send_str(const std::string& s) { send_bytes(B(s)); }
  // Reads exactly n bytes within timeout; returns fewer if the peer closed or time ran out.
  std::vector<std::uint8_t> recv_n(std::size_t n, std::chrono::milliseconds timeout) {
    std::vector<std::uint8_t> out;
    const auto deadline = Clock::now() + timeout;
    while (out.size() < n) {
      pollfd p{fd, POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      std::uint8_t buf[4096];
      const ssize_t r = ::recv(fd, buf, std::min(sizeof(buf), n - out.size()), 0);
      if (r <= 0) break;
      out.insert(out.end(), buf, buf + r);
    }
    return out;
  }
  // True when the peer closes the connection (EOF or reset) within timeout.
  bool closed_by_peer(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      pollfd p{fd, POLLIN, 0};
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
      std::uint8_t buf[256];
      const ssize_t r = ::recv(fd, buf, sizeof(buf), 0);
      if (r == 0 || (r < 0 && errno == ECONNRESET)) return true;
      if (r < 0) return false;
    }
  }
};

std::vector<std::uint8_t> le32(std::uint32_t v) {
  return {std::uint8_t(v), std::uint8_t(v >> 8), std::uint8_t(v >> 16), std::uint8_t(v >> 24)};
}
std::vector<std::uint8_t> le64(std::uint64_t v) {
  std::vector<std::uint8_t> b(8);
  for (int i = 0; i < 8; ++i) b[i] = std::uint8_t(v >> (8 * i));
  return b;
}
std::vector<std::uint8_t> cat(std::initializer_list<std::vector<std::uint8_t>> parts) {
  std::vector<std::uint8_t> out;
  for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
  return out;
}

// std::thread that joins on destruction, so a failing check that unwinds a test body does not
// std::terminate the whole binary.
class JoiningThread {
 public:
  template <typename F>
  explicit JoiningThread(F&& f) : t_(std::forward<F>(f)) {}
  JoiningThread(JoiningThread&&) = default;
  ~JoiningThread() { join(); }
  void join() {
    if (t_.joinable()) t_.join();
  }

 private:
  std::thread t_;
};

// Thread body wrapper: an exception becomes a test failure instead of std::terminate.
std::function<void()> checked(std::function<void()> fn) {
  return [fn = std::move(fn)] {
    try {
      fn();
    } catch (const std::exception& e) {
      ADD_FAILURE() << "thread threw: " << e.what();
    }
  };
}

// The client hello of protocol version 3 without a key (48 bytes), and the server's answer's size.
std::vector<std::uint8_t> hello_v3(std::uint8_t auth = 0) {
  std::vector<std::uint8_t> h(48, 0);
  std::memcpy(h.data(), "RPSTORE3", 8);
  h[8] = auth;
  return h;
}
constexpr std::size_t kServerHello = 80;

void handshake(RawSocket& s) {
  s.send_bytes(hello_v3());
  const auto answer = s.recv_n(kServerHello, 2000ms);
  ASSERT_EQ(answer.size(), kServerHello);
  EXPECT_EQ(S(std::vector<std::uint8_t>(answer.begin(), answer.begin() + 8)), "RPSTORE3");
  EXPECT_EQ(answer[8], 0) << "server without a key answers auth = 0";
}

// A socket bound to a free loopback port but not listening: connecting to it is refused, and no one
// else can take the port while it lives.
struct ReservedPort {
  int fd = -1;
  int port = 0;
  ReservedPort() {
    fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
    socklen_t len = sizeof(a);
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    port = ntohs(a.sin_port);
  }
  ~ReservedPort() { release(); }
  void release() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

}  // namespace

// ------------------------------------------------------------------------------------ HashStore

TEST(HashStore, SetGetOverwrite) {
  HashStore s;
  s.set("a", B("1"));
  EXPECT_EQ(S(s.get("a", 0ms)), "1");
  s.set("a", B("two"));
  EXPECT_EQ(S(s.get("a", 10ms)), "two");
  s.set("empty", Bytes{});
  EXPECT_TRUE(s.get("empty", 0ms).empty());
  const Bytes binary = {0, 255, 0, 7};
  s.set("bin", binary);
  EXPECT_EQ(s.get("bin", 0ms), binary);
  EXPECT_EQ(s.get("bin", std::chrono::milliseconds::max()), binary);
}

TEST(HashStore, GetTimesOutNamingTheKey) {
  HashStore s;
  const auto t0 = Clock::now();
  try {
    s.get("missing-key", 100ms);
    FAIL() << "no exception";
  } catch (const TimeoutError& e) {
    EXPECT_GE(elapsed_ms(t0), 100);
    EXPECT_LT(elapsed_ms(t0), 2000);
    EXPECT_EQ(e.op(), "store.get");
    EXPECT_TRUE(contains(e.what(), "key 'missing-key' not set within 100 ms")) << e.what();
  }
  EXPECT_THROW(s.get("missing-key", 0ms), TimeoutError);
  EXPECT_THROW(s.get("missing-key", -5ms), TimeoutError);
}

TEST(HashStore, WaitThenSetFromAnotherThread) {
  HashStore s;
  JoiningThread setter([&] {
    std::this_thread::sleep_for(50ms);
    s.set("other", B("x"));  // must not wake the waiter for "late"
    s.set("late", B("arrived"));
  });
  const auto t0 = Clock::now();
  EXPECT_EQ(S(s.get("late", 5000ms)), "arrived");
  EXPECT_LT(elapsed_ms(t0), 4000);
  setter.join();
}

TEST(HashStore, AddIsDecimalAndAtomic) {
  HashStore s;
  EXPECT_EQ(s.add("c", 5), 5);
  EXPECT_EQ(s.add("c", -2), 3);
  EXPECT_EQ(S(s.get("c", 0ms)), "3");
  s.set("n", B("-41"));
  EXPECT_EQ(s.add("n", 1), -40);
  s.set("s", B("abc"));
  try {
    s.add("s", 1);
    FAIL() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_EQ(e.op(), "store.add");
    EXPECT_TRUE(contains(e.what(), "'s'")) << e.what();
  }
  EXPECT_EQ(S(s.get("s", 0ms)), "abc");  // unchanged
  s.set("big", B("9223372036854775807"));
  EXPECT_THROW(s.add("big", 1), UsageError);
  s.set("min", B("-9223372036854775808"));
  EXPECT_EQ(s.add("min", 1), -9223372036854775807LL);
  s.set("toolong", B("99999999999999999999"));
  EXPECT_THROW(s.add("toolong", 0), UsageError);

  std::vector<JoiningThread> ts;
  for (int t = 0; t < 8; ++t)
    ts.emplace_back([&] {
      for (int i = 0; i < 100; ++i) s.add("counter", 1);
    });
  for (auto& t : ts) t.join();
  EXPECT_EQ(S(s.get("counter", 0ms)), "800");
}

TEST(PrefixStore, NamespacesAreIsolated) {
  auto base = std::make_shared<HashStore>();
  PrefixStore a("job1", base), b("job2", base);
  a.set("k", B("from-a"));
  b.set("k", B("from-b"));
  EXPECT_EQ(S(a.get("k", 0ms)), "from-a");
  EXPECT_EQ(S(b.get("k", 0ms)), "from-b");
  EXPECT_EQ(S(base->get("job1/k", 0ms)), "from-a");
  EXPECT_THROW(base->get("k", 0ms), TimeoutError);
  EXPECT_EQ(a.add("n", 2), 2);
  EXPECT_EQ(b.add("n", 5), 5);
  EXPECT_THROW(a.get("only-in-b", 0ms), TimeoutError);
  PrefixStore nested("inner", std::make_shared<PrefixStore>("outer", base));
  nested.set("x", B("1"));
  EXPECT_EQ(S(base->get("outer/inner/x", 0ms)), "1");
  EXPECT_THROW(PrefixStore("p", nullptr), UsageError);
}

// ------------------------------------------------------------------------------------ TCPStore

TEST(TCPStore, SetGetAddAcrossClients) {
  TCPStoreServer server("127.0.0.1", 0);
  ASSERT_GT(server.port(), 0);
  TCPStore a("127.0.0.1", server.port(), 2000ms);
  TCPStore b("localhost", server.port(), 2000ms);
  a.set("k", B("v1"));
  EXPECT_EQ(S(b.get("k", 1000ms)), "v1");
  b.set("k", B("v2"));
  EXPECT_EQ(S(a.get("k", 0ms)), "v2");                               // 0 = just check
  EXPECT_EQ(S(a.get("k", std::chrono::milliseconds::max())), "v2");  // no deadline overflow
  a.set("empty", Bytes{});
  EXPECT_TRUE(b.get("empty", 100ms).empty());
  EXPECT_EQ(a.add("n", 10), 10);
  EXPECT_EQ(b.add("n", -3), 7);
  EXPECT_EQ(S(a.get("n", 0ms)), "7");
  b.set("text", B("not a number"));
  try {
    a.add("text", 1);
    FAIL() << "no exception";
  } catch (const UsageError& e) {
    EXPECT_EQ(e.op(), "store.add");
    EXPECT_TRUE(contains(e.what(), "'text'")) << e.what();
  }
  EXPECT_EQ(a.add("n", 1), 8);  // the connection survives a usage error
  EXPECT_THROW(a.set(std::string(5000, 'k'), B("x")), UsageError);
}

TEST(TCPStore, ConcurrentClientsAndSharedClient) {
  TCPStoreServer server("0.0.0.0", 0);
  auto shared = std::make_shared<TCPStore>("127.0.0.1", server.port(), 2000ms);
  std::vector<JoiningThread> ts;
  std::atomic<int> failures{0};
  for (int t = 0; t < 8; ++t) {
    ts.emplace_back([&, t] {
      try {
        // Half the threads share one client (its mutex), half own theirs.
        std::shared_ptr<TCPStore> own;
        if (t % 2) own = std::make_shared<TCPStore>("127.0.0.1", server.port(), 2000ms);
        Store& s = own ? static_cast<Store&>(*own) : *shared;
        for (int i = 0; i < 100; ++i) {
          s.add("counter", 1);
          const std::string key = "t" + std::to_string(t) + "/" + std::to_string(i % 10);
          s.set(key, B(std::to_string(i)));
          if (S(s.get(key, 1000ms)) != std::to_string(i)) failures++;
        }
      } catch (const std::exception& e) {
        ADD_FAILURE() << e.what();
        failures++;
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(shared->add("counter", 0), 800);
}

TEST(TCPStore, GetBlocksUntilAnotherClientSets) {
  TCPStoreServer server("127.0.0.1", 0);
  TCPStore setter("127.0.0.1", server.port(), 2000ms);
  std::vector<JoiningThread> waiters;
  std::atomic<int> ok{0};
  for (int i = 0; i < 4; ++i) {
    waiters.emplace_back(checked([&] {
      TCPStore c("127.0.0.1", server.port(), 2000ms);
      if (S(c.get("ready", 5000ms)) == "go") ok++;
      if (c.add("woken", 1) > 0) ok++;  // the connection is usable after a parked GET
    }));
  }
  std::this_thread::sleep_for(100ms);
  const auto t0 = Clock::now();
  setter.set("ready", B("go"));
  for (auto& t : waiters) t.join();
  EXPECT_EQ(ok.load(), 8);
  EXPECT_LT(elapsed_ms(t0), 3000);
  // add() also wakes a parked GET.
  JoiningThread late(checked([&] {
    std::this_thread::sleep_for(50ms);
    setter.add("count", 3);
  }));
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  EXPECT_EQ(S(c.get("count", 5000ms)), "3");
  late.join();
}

TEST(TCPStore, GetTimeoutKeepsClientUsable) {
  TCPStoreServer server("127.0.0.1", 0);
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  const auto t0 = Clock::now();
  try {
    c.get("never", 200ms);
    FAIL() << "no exception";
  } catch (const TimeoutError& e) {
    const long ms = elapsed_ms(t0);
    EXPECT_GE(ms, 195);
    EXPECT_LT(ms, 900);  // answered by the server at the timeout, not by the client's grace
    EXPECT_EQ(e.op(), "store.get");
    const std::string what = e.what();
    EXPECT_TRUE(contains(what, "key 'never' not set within 200 ms")) << what;
    EXPECT_TRUE(contains(what, "127.0.0.1:" + std::to_string(server.port()))) << what;
  }
  EXPECT_THROW(c.get("never", 0ms), TimeoutError);
  c.set("later", B("fine"));
  EXPECT_EQ(S(c.get("later", 100ms)), "fine");
  // A key set after an earlier GET of it timed out is not delivered to the dead waiter.
  TCPStore other("127.0.0.1", server.port(), 2000ms);
  other.set("never", B("now"));
  EXPECT_EQ(S(c.get("never", 100ms)), "now");
}

// A server that accepts and handshakes but never answers: the client gives up at
// timeout + grace, drops the connection and reconnects on the next call.
TEST(TCPStore, HungServerTimesOutAndClientReconnects) {
  struct Listener {  // declared before the fake server thread: closed after it is joined
    int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    ~Listener() { ::close(fd); }
  } listener;
  const int lfd = listener.fd;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::bind(lfd, reinterpret_cast<sockaddr*>(&a), sizeof(a)), 0);
  ASSERT_EQ(::listen(lfd, 4), 0);
  socklen_t len = sizeof(a);
  ::getsockname(lfd, reinterpret_cast<sockaddr*>(&a), &len);
  const int port = ntohs(a.sin_port);
  std::atomic<int> accepted{0};
  JoiningThread fake([&] {
    auto read_n = [](int fd, std::size_t n) {
      std::vector<std::uint8_t> b(n);
      std::size_t got = 0;
      while (got < n) {
        const ssize_t r = ::recv(fd, b.data() + got, n - got, 0);
        if (r <= 0) return std::vector<std::uint8_t>();
        got += static_cast<std::size_t>(r);
      }
      return b;
    };
    std::vector<std::uint8_t> answer(kServerHello, 0);  // protocol v3, no key
    std::memcpy(answer.data(), "RPSTORE3", 8);
    // Connection 1: handshake, then never answer.
    const int c1 = ::accept(lfd, nullptr, nullptr);
    if (c1 < 0) return;
    accepted++;
    read_n(c1, 48);
    ::send(c1, answer.data(), answer.size(), MSG_NOSIGNAL);
    // Connection 2 (the reconnect): handshake, answer one SET with OK.
    const int c2 = ::accept(lfd, nullptr, nullptr);
    if (c2 >= 0) {
      accepted++;
      read_n(c2, 48);
      ::send(c2, answer.data(), answer.size(), MSG_NOSIGNAL);
      auto head = read_n(c2, 5);
      if (head.size() == 5) {
        const std::uint32_t klen =
            head[1] | head[2] << 8 | head[3] << 16 | std::uint32_t(head[4]) << 24;
        read_n(c2, klen);
        auto vl = read_n(c2, 8);
        std::uint64_t vlen = 0;
        for (int i = 7; i >= 0 && vl.size() == 8; --i) vlen = vlen << 8 | vl[i];
        read_n(c2, vlen);
        const std::uint8_t ok[9] = {0};
        ::send(c2, ok, sizeof(ok), MSG_NOSIGNAL);
      }
      read_n(c2, 1);  // until the client closes
      ::close(c2);
    }
    ::close(c1);
  });
  struct WakeAccept {  // on any exit: a blocked accept() returns (Linux: EINVAL after shutdown)
    int fd;
    ~WakeAccept() { ::shutdown(fd, SHUT_RDWR); }
  } wake{lfd};
  {
    TCPStore c("127.0.0.1", port, 2000ms);
    const auto t0 = Clock::now();
    EXPECT_THROW(c.get("k", 100ms), TimeoutError);
    const long ms = elapsed_ms(t0);
    EXPECT_GE(ms, 100);
    EXPECT_LT(ms, 3000);
    EXPECT_EQ(accepted.load(), 1);
    c.set("k", B("v"));  // reconnects
    EXPECT_EQ(accepted.load(), 2);
  }
}

TEST(TCPStore, ConnectTimesOutWhenNothingListens) {
  ReservedPort reserved;
  const auto t0 = Clock::now();
  try {
    TCPStore c("127.0.0.1", reserved.port, 300ms);
    FAIL() << "connected to nothing";
  } catch (const TimeoutError& e) {
    const long ms = elapsed_ms(t0);
    EXPECT_GE(ms, 295);
    EXPECT_LT(ms, 2000);
    EXPECT_EQ(e.op(), "store.connect");
    EXPECT_TRUE(contains(e.what(), "127.0.0.1:" + std::to_string(reserved.port))) << e.what();
  }
}

TEST(TCPStore, ConnectRetriesUntilServerStarts) {
  ReservedPort reserved;
  const int port = reserved.port;
  std::unique_ptr<TCPStoreServer> server;
  JoiningThread starter(checked([&] {
    std::this_thread::sleep_for(150ms);
    reserved.release();
    server = std::make_unique<TCPStoreServer>("127.0.0.1", port);
  }));
  TCPStore c("127.0.0.1", port, 3000ms);
  starter.join();
  c.set("k", B("v"));
  EXPECT_EQ(S(c.get("k", 100ms)), "v");
}

TEST(TCPStore, ServerDestroyedWhileClientWaits) {
  auto server = std::make_unique<TCPStoreServer>("127.0.0.1", 0);
  const std::string where = "127.0.0.1:" + std::to_string(server->port());
  TCPStore c("127.0.0.1", server->port(), 2000ms);
  JoiningThread killer(checked([&] {
    std::this_thread::sleep_for(100ms);
    server.reset();
  }));
  const auto t0 = Clock::now();
  try {
    c.get("never", 10000ms);
    FAIL() << "no exception";
  } catch (const TransportError& e) {
    EXPECT_LT(elapsed_ms(t0), 3000);
    EXPECT_TRUE(contains(e.what(), where)) << e.what();
  }
  killer.join();
  // Sticky: the client keeps its error instead of talking to whatever listens there next.
  const auto t1 = Clock::now();
  EXPECT_THROW(c.set("k", B("v")), TransportError);
  EXPECT_THROW(c.add("k", 1), TransportError);
  EXPECT_LT(elapsed_ms(t1), 500);
}

TEST(TCPStore, HostileClientsAreDroppedOthersUnaffected) {
  TCPStoreServer server("127.0.0.1", 0);
  TCPStore good("127.0.0.1", server.port(), 2000ms);
  good.set("before", B("1"));
  // A client that parks a GET, to check that drops of other clients do not disturb it.
  JoiningThread parked(checked([&] {
    TCPStore c("127.0.0.1", server.port(), 2000ms);
    EXPECT_EQ(S(c.get("after", 5000ms)), "2");
  }));
  testing::internal::CaptureStderr();
  {
    RawSocket garbage(server.port());
    garbage.send_str("GET / HTTP/1.1\r\n\r\n");
    EXPECT_TRUE(garbage.closed_by_peer(2000ms));
  }
  {
    RawSocket huge_key(server.port());
    handshake(huge_key);
    huge_key.send_bytes(cat({{1}, le32(0xFFFFFFFFu)}));
    EXPECT_TRUE(huge_key.closed_by_peer(2000ms));
  }
  {
    RawSocket huge_value(server.port());
    handshake(huge_value);
    huge_value.send_bytes(cat({{1}, le32(1), B("k"), le64(1ull << 40)}));
    EXPECT_TRUE(huge_value.closed_by_peer(2000ms));
  }
  {
    RawSocket bad_get(server.port());
    handshake(bad_get);
    bad_get.send_bytes(cat({{2}, le32(1), B("k"), le64(3), {1, 2, 3}}));
    EXPECT_TRUE(bad_get.closed_by_peer(2000ms));
  }
  {
    RawSocket bad_cmd(server.port());
    handshake(bad_cmd);
    bad_cmd.send_bytes({0x7f});
    EXPECT_TRUE(bad_cmd.closed_by_peer(2000ms));
  }
  // A client that stalls half-way through a request and one that never handshakes do not block
  // anyone; a well-formed raw request still works on a raw socket.
  RawSocket stalled(server.port());
  handshake(stalled);
  stalled.send_bytes(cat({{1}, le32(3), B("ab")}));
  RawSocket silent(server.port());
  RawSocket raw_ok(server.port());
  handshake(raw_ok);
  raw_ok.send_bytes(cat({{1}, le32(3), B("raw"), le64(2), B("hi")}));
  EXPECT_EQ(raw_ok.recv_n(9, 2000ms), cat({{0}, le64(0)}));
  EXPECT_EQ(S(good.get("raw", 100ms)), "hi");
  good.set("after", B("2"));
  EXPECT_EQ(S(good.get("before", 100ms)), "1");
  parked.join();
  EXPECT_FALSE(stalled.closed_by_peer(50ms));
  const std::string log = testing::internal::GetCapturedStderr();
  int lines = 0;
  for (std::size_t p = log.find("dropping client"); p != std::string::npos;
       p = log.find("dropping client", p + 1))
    ++lines;
  EXPECT_EQ(lines, 5) << log;
  EXPECT_TRUE(contains(log, "bad handshake")) << log;
  EXPECT_TRUE(contains(log, "key length 4294967295")) << log;
}

// A client that parks a GET and then disappears is noticed at once (its socket closed, its waiter
// removed), not when the GET's timeout expires.
TEST(TCPStore, ParkedGetOfVanishedClientIsReleased) {
  TCPStoreServer server("127.0.0.1", 0);
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  const int base = count_open_fds();
  {
    RawSocket raw(server.port());
    handshake(raw);
    raw.send_bytes(cat({{2}, le32(6), B("nobody"), le64(8), le64(60000)}));
    EXPECT_FALSE(raw.closed_by_peer(50ms));  // parked: no reply, not dropped
  }
  const auto deadline = Clock::now() + 2s;
  while (count_open_fds() != base && Clock::now() < deadline) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(count_open_fds(), base) << "server kept the socket of a client that closed";
  c.set("nobody", B("x"));  // wakes no one; must not touch the dropped connection
  EXPECT_EQ(S(c.get("nobody", 100ms)), "x");
}

TEST(TCPStore, LargeValueRoundTrip) {
  TCPStoreServer server("127.0.0.1", 0);
  TCPStore a("127.0.0.1", server.port(), 2000ms);
  TCPStore b("127.0.0.1", server.port(), 2000ms);
  Bytes big(8u << 20);
  std::mt19937 g(7);
  for (auto& x : big) x = static_cast<std::uint8_t>(g());
  JoiningThread reader(
      checked([&] { EXPECT_EQ(b.get("big", 5000ms), big); }));  // parked, then 8 MiB reply
  std::this_thread::sleep_for(20ms);
  a.set("big", big);
  reader.join();
  EXPECT_EQ(a.get("big", 100ms), big);
  EXPECT_THROW(a.set("too-big", Bytes((64u << 20) + 1)), UsageError);
  EXPECT_EQ(a.add("still-ok", 1), 1);
}

TEST(TCPStore, NoFdLeakAfterServerAndClientsAreDestroyed) {
  const int before = count_open_fds();
  ASSERT_GT(before, 0);
  {
    auto server = std::make_unique<TCPStoreServer>("127.0.0.1", 0);
    std::vector<std::unique_ptr<TCPStore>> clients;
    for (int i = 0; i < 4; ++i)
      clients.push_back(std::make_unique<TCPStore>("127.0.0.1", server->port(), 2000ms));
    clients[0]->set("k", B("v"));
    EXPECT_THROW(clients[1]->get("missing", 50ms), TimeoutError);
    EXPECT_EQ(clients[2]->add("n", 1), 1);
    {
      RawSocket garbage(server->port());
      garbage.send_str("XXXXXXXX");
      EXPECT_TRUE(garbage.closed_by_peer(2000ms));
    }
    // A GET parked when the server goes away: its socket must be closed too.
    JoiningThread waiter(
        checked([&] { EXPECT_THROW(clients[3]->get("never", 5000ms), TransportError); }));
    std::this_thread::sleep_for(50ms);
    server.reset();
    waiter.join();
  }
  EXPECT_EQ(count_open_fds(), before);
}

// ------------------------------------------------------------------ server limits (protocol v3)

namespace {

std::vector<std::uint8_t> set_header(const std::string& key, std::uint64_t claimed) {
  return cat({{1}, le32(static_cast<std::uint32_t>(key.size())), B(key), le64(claimed)});
}

template <typename F>
bool eventually(F&& f, std::chrono::milliseconds within) {
  const auto deadline = Clock::now() + within;
  while (!f()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

int count_of(const std::string& hay, const std::string& needle) {
  int n = 0;
  for (std::size_t p = hay.find(needle); p != std::string::npos; p = hay.find(needle, p + 1)) ++n;
  return n;
}

}  // namespace

TEST(StoreParser, ByteByByteEqualsWholeAndLengthsAreChecked) {
  using namespace ringpress::store_protocol;
  const auto req = cat({set_header("key", 5), B("hello")});
  RequestParser whole, bytes;
  whole.keep_value(true);  // not in kDecide: no effect
  EXPECT_EQ(whole.feed(req.data(), req.size()), 1u + 4 + 3 + 8);
  ASSERT_EQ(whole.state(), RequestParser::State::kDecide);
  whole.keep_value(true);
  EXPECT_EQ(whole.feed(req.data() + 16, req.size() - 16), 5u);
  ASSERT_TRUE(whole.done());
  for (std::size_t i = 0; i < req.size(); ++i) {
    EXPECT_EQ(bytes.feed(&req[i], 1), 1u) << i;
    if (bytes.state() == RequestParser::State::kDecide) bytes.keep_value(true);
  }
  ASSERT_TRUE(bytes.done());
  const Request a = whole.take(), b = bytes.take();
  EXPECT_EQ(a.key, "key");
  EXPECT_EQ(S(a.value), "hello");
  EXPECT_EQ(b.key, a.key);
  EXPECT_EQ(b.value, a.value);
  EXPECT_FALSE(whole.in_progress());
  // Claims: 2^64-1 for a SET, a GET argument that is not 8 bytes, a DELETE with a value.
  for (const auto& bad : {set_header("k", ~0ull), cat({{2}, le32(1), B("k"), le64(9)}),
                          cat({{4}, le32(1), B("k"), le64(1)}), cat({{9}})}) {
    RequestParser p;
    p.feed(bad.data(), bad.size());
    EXPECT_TRUE(p.failed());
    EXPECT_FALSE(p.error().empty());
  }
  // A value claimed at 64 MiB: the buffer follows the bytes, not the claim.
  RequestParser big;
  const auto head = set_header("big", 64ull << 20);
  big.feed(head.data(), head.size());
  big.keep_value(true);
  std::vector<std::uint8_t> chunk(1000, 7);
  std::size_t fed = 0;
  for (int i = 0; i < 50; ++i) {
    fed += big.feed(chunk.data(), chunk.size());
    EXPECT_LE(big.request().value.capacity(), 2 * fed + 4096) << fed;
  }
  big.skip_value();
  EXPECT_EQ(big.request().value.capacity(), 0u);
  EXPECT_EQ(big.remaining(), (64ull << 20) - fed);
}

TEST(TCPStoreServer, ConnectionsBeyondTheCapAreClosedAtAccept) {
  StoreServerOptions o;
  o.max_connections = 3;
  TCPStoreServer server("127.0.0.1", 0, o);
  testing::internal::CaptureStderr();
  std::vector<std::unique_ptr<RawSocket>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<RawSocket>(server.port()));
    handshake(*held.back());
  }
  {
    RawSocket extra(server.port());
    EXPECT_TRUE(extra.closed_by_peer(2000ms)) << "connection over the cap was kept";
  }
  EXPECT_EQ(server.connections(), 3);
  held.pop_back();  // a slot frees: a real client gets in (it retries while refused)
  TCPStore c("127.0.0.1", server.port(), 3000ms);
  c.set("k", B("v"));
  EXPECT_EQ(S(c.get("k", 100ms)), "v");
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_GE(count_of(log, "refusing connection"), 1) << log;
  EXPECT_TRUE(contains(log, "(limit 3)")) << log;
}

TEST(TCPStoreServer, UnfinishedHandshakesAndRequestsTimeOut) {
  StoreServerOptions o;
  o.request_timeout = 300ms;
  TCPStoreServer server("127.0.0.1", 0, o);
  TCPStore good("127.0.0.1", server.port(), 2000ms);
  testing::internal::CaptureStderr();
  RawSocket silent(server.port());  // never handshakes
  RawSocket half(server.port());    // half a SET header, then nothing
  handshake(half);
  half.send_bytes(cat({{1}, le32(3), B("ab")}));
  RawSocket idle(server.port());  // handshaken, no request: a legitimate idle client
  handshake(idle);
  RawSocket loris(server.port());  // keeps sending, but the request never completes
  handshake(loris);
  loris.send_bytes(set_header("slow", 1000));
  JoiningThread parked(checked([&] {  // a GET parked beyond the request timeout is not dropped
    TCPStore c("127.0.0.1", server.port(), 2000ms);
    EXPECT_EQ(S(c.get("late", 10000ms)), "ok");
  }));
  const auto t0 = Clock::now();
  bool loris_closed = false;
  while (elapsed_ms(t0) < 3000 && !loris_closed) {
    ::send(loris.fd, "x", 1, MSG_NOSIGNAL);
    loris_closed = loris.closed_by_peer(50ms);
  }
  EXPECT_TRUE(loris_closed) << "a request trickling in was kept past the timeout";
  EXPECT_TRUE(silent.closed_by_peer(3000ms));
  EXPECT_TRUE(half.closed_by_peer(3000ms));
  EXPECT_FALSE(idle.closed_by_peer(100ms)) << "an idle client between requests was dropped";
  good.set("late", B("ok"));  // the parked GET is still there and is answered
  parked.join();
  EXPECT_EQ(S(good.get("late", 100ms)), "ok");
  // The idle raw client still works.
  idle.send_bytes(cat({{2}, le32(4), B("late"), le64(8), le64(0)}));
  EXPECT_EQ(idle.recv_n(9 + 2, 2000ms), cat({{0}, le64(2), B("ok")}));
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(log, "did not finish handshake")) << log;
  EXPECT_GE(count_of(log, "did not finish sending its request"), 2) << log;
}

TEST(TCPStoreServer, ValueAndTotalLimitsAnswerUsageErrorAndDeleteFreesSpace) {
  StoreServerOptions o;
  o.max_value_bytes = 1000;
  o.max_total_bytes = 64 << 10;
  TCPStoreServer server("127.0.0.1", 0, o);
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  try {
    c.set("big", Bytes(1001, 1));
    ADD_FAILURE() << "a value over max_value_bytes was stored";
  } catch (const UsageError& e) {
    EXPECT_TRUE(contains(e.what(), "at most 1000")) << e.what();
  }
  EXPECT_THROW(c.get("big", 0ms), TimeoutError);  // not stored; the connection is usable
  const std::uint64_t base = server.held_bytes();
  int stored = 0;
  std::string why;
  for (; stored < 200; ++stored) {
    try {
      c.set("k" + std::to_string(stored), Bytes(900, 2));
    } catch (const UsageError& e) {
      why = e.what();
      break;
    }
  }
  EXPECT_TRUE(contains(why, "store full")) << why;
  EXPECT_GT(stored, 30);  // 64 KiB / (900 + key + overhead)
  EXPECT_LT(stored, 72);
  EXPECT_LE(server.held_bytes(), 64u << 10);
  EXPECT_EQ(c.get("k0", 100ms), Bytes(900, 2));
  int small = 0;  // fill the rest with empty values, until add() creating a key is refused too
  for (; small < 1000; ++small) {
    try {
      c.set("s" + std::to_string(small), Bytes());
    } catch (const UsageError&) {
      break;
    }
  }
  EXPECT_LT(small, 1000);
  EXPECT_THROW(c.add("new-counter", 1), UsageError);
  // delete_key frees the room; a second delete finds nothing.
  const std::uint64_t full = server.held_bytes();
  EXPECT_TRUE(c.delete_key("k0"));
  EXPECT_FALSE(c.delete_key("k0"));
  EXPECT_THROW(c.get("k0", 0ms), TimeoutError);
  ASSERT_TRUE(eventually([&] { return server.held_bytes() < full; }, 2000ms));
  c.set("again", Bytes(900, 3));
  EXPECT_EQ(c.get("again", 100ms), Bytes(900, 3));
  for (int i = 1; i < stored; ++i) EXPECT_TRUE(c.delete_key("k" + std::to_string(i)));
  for (int i = 0; i < small; ++i) EXPECT_TRUE(c.delete_key("s" + std::to_string(i)));
  EXPECT_TRUE(c.delete_key("again"));
  EXPECT_TRUE(eventually([&] { return server.held_bytes() == base; }, 2000ms))
      << server.held_bytes() << " vs " << base;
}

// Found by fuzz_store: with the store exactly full, a GET's 8-byte argument must still be read
// (only SET values are booked and skipped), and the connection keeps working.
TEST(TCPStoreServer, FullStoreStillServesGetAddAndDelete) {
  StoreServerOptions o;
  o.max_total_bytes = 1 + 64 + 1000;  // key "a" + per-key overhead + its value: exactly full
  TCPStoreServer server("127.0.0.1", 0, o);
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  c.set("a", Bytes(1000, 5));
  // (held_bytes() is published by the server thread right after it answers: poll.)
  EXPECT_TRUE(eventually([&] { return server.held_bytes() == o.max_total_bytes; }, 2000ms))
      << server.held_bytes();
  EXPECT_EQ(c.get("a", 100ms), Bytes(1000, 5));
  EXPECT_THROW(c.get("missing", 0ms), TimeoutError);
  EXPECT_THROW(c.set("b", B("x")), UsageError);
  EXPECT_THROW(c.add("n", 1), UsageError);
  EXPECT_TRUE(c.delete_key("a"));
  EXPECT_EQ(c.add("n", 1), 1);
}

TEST(TCPStoreServer, HugeClaimsHoldNoMemoryAndBlockNoOne) {
  StoreServerOptions o;
  o.max_total_bytes = 128 << 20;  // each claim alone would fit
  TCPStoreServer server("127.0.0.1", 0, o);
  TCPStore c("127.0.0.1", server.port(), 2000ms);
  std::vector<std::unique_ptr<RawSocket>> claims;
  for (int i = 0; i < 64; ++i) {
    claims.push_back(std::make_unique<RawSocket>(server.port()));
    handshake(*claims.back());
    claims.back()->send_bytes(
        cat({set_header("claim" + std::to_string(i), 64ull << 20), Bytes(1000, 9)}));
  }
  c.set("probe", B("x"));
  ASSERT_TRUE(eventually([&] { return server.held_bytes() >= 64u * 1000; }, 2000ms))
      << server.held_bytes();
  // 64 claims of 64 MiB (4 GiB) hold what arrived: about 4 KiB each.
  EXPECT_LE(server.held_bytes(), 64u * 8192 + 4096) << server.held_bytes();
  // Real SETs still fit: claims book nothing.
  c.set("real", Bytes(100000, 1));
  EXPECT_EQ(c.get("real", 100ms).size(), 100000u);
  EXPECT_TRUE(c.delete_key("real"));
  EXPECT_TRUE(c.delete_key("probe"));
  claims.clear();
  EXPECT_TRUE(
      eventually([&] { return server.held_bytes() == 0 && server.connections() == 1; }, 3000ms))
      << server.held_bytes() << " bytes, " << server.connections() << " connections";
}

TEST(Stores, DeleteKey) {
  auto h = std::make_shared<HashStore>();
  h->set("a", B("1"));
  EXPECT_TRUE(h->delete_key("a"));
  EXPECT_FALSE(h->delete_key("a"));
  EXPECT_THROW(h->get("a", 0ms), TimeoutError);
  PrefixStore p("pre", h);
  p.set("b", B("2"));
  EXPECT_TRUE(p.delete_key("b"));
  EXPECT_THROW(h->get("pre/b", 0ms), TimeoutError);
}

TEST(TCPStoreServer, JobKeyAuthentication) {
  const Bytes key = store_job_key(std::string(40, 'k'), false);
  const Bytes wrong = store_job_key(std::string(40, 'w'), false);
  ASSERT_EQ(key.size(), 32u);
  EXPECT_NE(key, wrong);
  EXPECT_THROW(store_job_key("too short", false), UsageError);
  StoreServerOptions o;
  o.key = key;
  TCPStoreServer server("127.0.0.1", 0, o);
  testing::internal::CaptureStderr();
  TCPStore good("127.0.0.1", server.port(), 2000ms, key);
  good.set("k", B("v"));
  EXPECT_EQ(S(good.get("k", 100ms)), "v");
  auto refused = [&](const Bytes& k, const std::string& why) {
    try {
      TCPStore c("127.0.0.1", server.port(), 2000ms, k);
      ADD_FAILURE() << "connected with the wrong key";
    } catch (const TransportError& e) {
      EXPECT_TRUE(contains(e.what(), why)) << e.what();
    }
  };
  refused({}, "requires the job key");
  refused(wrong, "could not prove");
  {
    RawSocket raw(server.port());
    raw.send_bytes(hello_v3(0));
    const auto answer = raw.recv_n(kServerHello, 2000ms);
    ASSERT_EQ(answer.size(), kServerHello);
    EXPECT_EQ(answer[8], 1);  // a key is required
    EXPECT_TRUE(raw.closed_by_peer(2000ms));
  }
  {
    RawSocket raw(server.port());  // claims a key, proves nothing
    auto h = hello_v3(1);
    h[20] = 7;
    raw.send_bytes(h);
    EXPECT_EQ(raw.recv_n(kServerHello, 2000ms).size(), kServerHello);
    raw.send_bytes(Bytes(32, 0));
    raw.send_bytes(cat({{2}, le32(1), B("k"), le64(8), le64(0)}));
    EXPECT_TRUE(raw.recv_n(9, 500ms).empty()) << "an unauthenticated GET was answered";
    EXPECT_TRUE(raw.closed_by_peer(2000ms));
  }
  EXPECT_EQ(S(good.get("k", 100ms)), "v");
  const std::string log = testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(log, "no job key")) << log;
  EXPECT_TRUE(contains(log, "wrong job key")) << log;
  // A client with a key refuses a server without one.
  TCPStoreServer open("127.0.0.1", 0);
  try {
    TCPStore c("127.0.0.1", open.port(), 2000ms, key);
    ADD_FAILURE() << "accepted a server that cannot prove the key";
  } catch (const TransportError& e) {
    EXPECT_TRUE(contains(e.what(), "does not authenticate")) << e.what();
  }
}

// Rendezvous key-value store: how ranks find each other before any transport exists.
//
// Contract
//   set(key, value)        stores bytes under key (overwrites).
//   get(key, timeout)      blocks until key exists, then returns its value; raises TimeoutError
//                          naming the key when it does not appear within timeout.
//   add(key, delta)        atomic integer add (key created as 0); returns the new value.
// Implementations must be safe to call from several threads. Values are opaque bytes.
//
//   HashStore       in-process (tests running ranks as threads)
//   PrefixStore     namespaces another store ("<prefix>/<key>"), so several communicators share one
//   TCPStore        client of TCPStoreServer (standalone scripts, mpi4py jobs: rank 0 hosts it)
// Python supplies further adapters (torch's c10d Store) through a pybind11 trampoline.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace ringpress {

using Bytes = std::vector<std::uint8_t>;

class Store {
 public:
  virtual ~Store() = default;
  virtual void set(const std::string& key, const Bytes& value) = 0;
  virtual Bytes get(const std::string& key, std::chrono::milliseconds timeout) = 0;
  virtual std::int64_t add(const std::string& key, std::int64_t delta) = 0;
};

class HashStore final : public Store {
 public:
  HashStore();
  ~HashStore() override;
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class PrefixStore final : public Store {
 public:
  PrefixStore(std::string prefix, std::shared_ptr<Store> base);
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;

 private:
  std::string prefix_;
  std::shared_ptr<Store> base_;
};

// Serves the store protocol (see store_tcp.cc) on host:port from a background thread until
// destroyed. port 0 picks a free port; port() tells which.
class TCPStoreServer {
 public:
  TCPStoreServer(const std::string& host, int port);
  ~TCPStoreServer();
  TCPStoreServer(const TCPStoreServer&) = delete;
  TCPStoreServer& operator=(const TCPStoreServer&) = delete;
  int port() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Client. Connects (retrying until connect_timeout: the server may start later) and keeps one
// connection; calls are serialised by a mutex. A lost server raises TransportError.
class TCPStore final : public Store {
 public:
  TCPStore(const std::string& host, int port, std::chrono::milliseconds connect_timeout);
  ~TCPStore() override;
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace ringpress

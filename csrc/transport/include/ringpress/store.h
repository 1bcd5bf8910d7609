// Rendezvous key-value store: how ranks find each other before any transport exists.
//
// Contract
//   set(key, value)        stores bytes under key (overwrites).
//   get(key, timeout)      blocks until key exists, then returns its value; raises TimeoutError
//                          naming the key when it does not appear within timeout.
//   add(key, delta)        atomic integer add (key created as 0); returns the new value.
//   delete_key(key)        removes key; true if it existed. Stores that cannot delete raise
//                          UsageError (the default).
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
  virtual bool delete_key(const std::string& key);
};

class HashStore final : public Store {
 public:
  HashStore();
  ~HashStore() override;
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;
  bool delete_key(const std::string& key) override;

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
  bool delete_key(const std::string& key) override;

 private:
  std::string prefix_;
  std::shared_ptr<Store> base_;
};

// Limits of a TCPStoreServer: what one stranger (or a buggy client) can make it hold.
struct StoreServerOptions {
  // Concurrent client connections; one more is accepted and closed at once (one log line).
  int max_connections = 1024;
  // Largest value a SET may store (<= 64 MiB, the protocol's ceiling); a larger one is answered
  // with a usage error after its bytes are skipped, and the connection stays usable.
  std::uint64_t max_value_bytes = 64ull << 20;
  // Every stored key and value, values still being sent to GET clients, and the bytes of SETs
  // received so far (booked as they arrive; nothing is allocated from a claimed length). A SET
  // or ADD beyond it is answered with a usage error.
  std::uint64_t max_total_bytes = 256ull << 20;
  // A connection that does not finish its handshake, a request it began, or reading its reply
  // within this time is closed (one log line). Idle connections between requests, and GETs
  // parked waiting for their key, are not affected.
  std::chrono::milliseconds request_timeout{30000};
  // Connections that have not finished the handshake (strangers included): each is closed
  // handshake_timeout after it was accepted (or request_timeout, if shorter), and at most
  // max_pending are kept: when one more arrives, the one that has waited longest is closed. A
  // rank completes its handshake in one round trip, so silent strangers cannot hold the slots
  // ranks need.
  std::chrono::milliseconds handshake_timeout{5000};
  int max_pending = 64;
  // The job key (32 bytes, from store_job_key() below) or empty: without a key any client may
  // connect; with one, every client must prove it knows the key before anything else is read.
  Bytes key;
};

// Serves the store protocol (see store_tcp.cc) on host:port from a background thread until
// destroyed. port 0 picks a free port; port() tells which. host "" or "0.0.0.0" listens on every
// interface: pass it only when that is what you mean.
class TCPStoreServer {
 public:
  TCPStoreServer(const std::string& host, int port, StoreServerOptions options = {});
  ~TCPStoreServer();
  TCPStoreServer(const TCPStoreServer&) = delete;
  TCPStoreServer& operator=(const TCPStoreServer&) = delete;
  int port() const noexcept;
  // Bytes the server holds for keys and values (incl. values being sent and SETs booked), and
  // the number of open client connections: for tests and diagnostics (approximate while busy).
  std::uint64_t held_bytes() const noexcept;
  int connections() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Client. Connects (retrying until connect_timeout: the server may start later) and keeps one
// connection; calls are serialised by a mutex. A lost server raises TransportError. key: the job
// key (32 bytes, store_job_key()) or empty; with a key the server must prove it knows the key
// (TransportError otherwise) and the client proves it too; without one, a server that requires a
// key refuses it (TransportError).
class TCPStore final : public Store {
 public:
  TCPStore(const std::string& host, int port, std::chrono::milliseconds connect_timeout,
           Bytes key = {});
  ~TCPStore() override;
  void set(const std::string& key, const Bytes& value) override;
  Bytes get(const std::string& key, std::chrono::milliseconds timeout) override;
  std::int64_t add(const std::string& key, std::int64_t delta) override;
  bool delete_key(const std::string& key) override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The job key for a store server or client (StoreServerOptions::key, TCPStore's key): derived
// from `material` (the operator's key text, 32+ characters; UsageError otherwise) when non-empty;
// else, when use_configured, this process's configured key (RINGPRESS_JOB_KEY, or the file
// RINGPRESS_JOB_KEY_FILE names), if any. Empty = no key.
Bytes store_job_key(const std::string& material, bool use_configured);

// The keys a communicator's rendezvous (csrc/transport/rendezvous.cc) writes for `rank` into the
// store it was given (relative to it, e.g. under a PrefixStore): "addr/<rank>", and for rank 0
// "secret" (written only when no job key is configured). Whoever removes a job's rendezvous
// records (ringpress.comm) takes the names from here; tests/python/test_store_hardening.py
// checks that they are exactly what a rendezvous writes.
std::vector<std::string> rendezvous_records(int rank);

}  // namespace ringpress

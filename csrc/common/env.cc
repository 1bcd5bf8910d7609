// The configuration table and the only getenv in the library (env.h).
#include "ringpress/env.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

#include "ringpress/error.h"

namespace ringpress::env {

const std::vector<Var>& table() {
  static const std::vector<Var> t = {
      {"RINGPRESS_TIMEOUT", "seconds", "300", "when a communicator is made",
       "deadline of the rendezvous and of every collective (timeout= in Python)"},
      {"RINGPRESS_TRANSPORT", "auto/tcp/shm", "auto", "when a communicator is made",
       "auto: shared memory between ranks on one host, TCP otherwise"},
      {"RINGPRESS_BIND_ADDR", "string", "", "when a communicator is made",
       "address ranks listen on and publish (0.0.0.0: listen on every interface, publish the "
       "default; default: RINGPRESS_SOCKET_IFNAME's address, else the one routing to "
       "MASTER_ADDR)"},
      {"RINGPRESS_SOCKET_IFNAME", "string", "", "when a communicator is made",
       "interface whose IPv4 address ranks publish and listen on: a name, a comma list tried "
       "in order (ib0,eth0), or ^lo,docker0 to exclude names"},
      {"RINGPRESS_HOST_ID", "string", "", "when a communicator is made",
       "ranks with equal values are one host (shared memory, hierarchical collectives); default: "
       "the machine's identity (host name, boot id, network namespace)"},
      {"RINGPRESS_TOPOLOGY", "auto/flat", "auto", "once per process",
       "auto: allreduce is hierarchical when ranks share hosts, rings visit ranks in host order "
       "(docs/algorithms.md); flat: no hierarchy, ranks in rank order"},
      {"RINGPRESS_SHM_RING_BYTES", "bytes", "2097152", "when a communicator is made",
       "shared-memory ring per direction and pair (a power of two); each pair of ranks on a "
       "host backs 2 rings in /dev/shm at setup"},
      {"RINGPRESS_SHM_SINGLE_COPY", "auto/on/off", "auto", "when a communicator is made",
       "shared-memory messages of 64 KiB or more in a collective of 2.5 MiB or more may be read "
       "straight from the sender's buffer (process_vm_readv) where a probe at setup shows the "
       "ranks may read each other; auto: per collective and size class, the first calls try "
       "both ways and the faster one is kept (machines differ: docs/algorithms.md); on: always "
       "by reference; off: always copied through the ring"},
      {"RINGPRESS_SPIN_US", "auto/microseconds", "auto", "when a communicator is made",
       "busy-poll time after the last progress before a waiting rank sleeps (0: sleep at "
       "once); auto: 200 where this host's ranks have a CPU each and the caller is blocked in "
       "the request (a synchronous call), else 50 (ranks sharing CPUs; an async request beside "
       "a computing caller, such as a DDP bucket's)"},
      {"RINGPRESS_TIMELINE", "string", "", "when a communicator is made",
       "path prefix: each rank writes a Chrome trace to <prefix>.<rank>.json at close"},
      {"RINGPRESS_COMPRESSION", "string", "none", "when a communicator is made",
       "default compression of Communicator.allreduce (none, a wire codec of "
       "ringpress.wire_codecs(), or auto)"},
      {"RINGPRESS_JOB_KEY", "string", "", "when a communicator or store is made",
       "the job key (32+ characters, same on every rank): authenticates every connection and "
       "keys link encryption; never sent or stored (docs/security.md)"},
      {"RINGPRESS_JOB_KEY_FILE", "string", "", "when a communicator or store is made",
       "a file (owner-only, like an ssh key) holding the job key, if RINGPRESS_JOB_KEY is unset"},
      {"RINGPRESS_ENCRYPT", "on/off", "on", "when a communicator is made",
       "with a job key: on = TCP links are encrypted (AES-256-GCM); off = authenticated only"},
      {"RINGPRESS_SEGMENT_BYTES", "bytes", "262144", "once per process",
       "pipeline segment of the ring algorithms"},
      {"RINGPRESS_SMALL_BYTES", "bytes", "65536", "once per process",
       "at or below this size allreduce uses recursive doubling and broadcast the tree; on "
       "several hosts with two or more ranks on some host, allreduce, allgather and "
       "reduce_scatter (their total) go through one leader per host"},
      {"RINGPRESS_HALVING_BYTES", "bytes", "4194304", "once per process",
       "in a power-of-two group of 4+ ranks: allreduce uses recursive halving + doubling above "
       "RINGPRESS_SMALL_BYTES and up to this size, allgather recursive doubling and "
       "reduce_scatter recursive halving up to this total; the pipelined ring above it"},
      {"RINGPRESS_SIMD", "generic/sse2/avx2/avx512", "", "once per process",
       "cap on the SIMD level the kernels dispatch to (default: the best the CPU supports)"},
      {"RINGPRESS_RANK", "int", "", "by Communicator.from_env",
       "this process's rank (before RANK, OMPI_COMM_WORLD_RANK, PMI_RANK)"},
      {"RINGPRESS_WORLD_SIZE", "int", "", "by Communicator.from_env",
       "number of ranks (before WORLD_SIZE, OMPI_COMM_WORLD_SIZE, PMI_SIZE)"},
      {"RINGPRESS_MASTER_ADDR", "string", "", "by Communicator.from_env",
       "host of rank 0's store (before MASTER_ADDR; default 127.0.0.1)"},
      {"RINGPRESS_MASTER_PORT", "int", "", "by Communicator.from_env",
       "port of rank 0's store (before MASTER_PORT)"},
      {"RINGPRESS_FAULT", "string", "", "once per process",
       "fault injection for tests: <point>:<action>[:<n>] (docs/errors.md)"},
  };
  return t;
}

namespace {

struct Retired {
  const char* name;
  const char* instead;
};
constexpr Retired kRetired[] = {
    {"RINGPRESS_TIMEOUT_MS", "RINGPRESS_TIMEOUT (seconds, decimals allowed)"},
};

const Var& find(std::string_view name) {
  for (const Var& v : table()) {
    if (name == v.name) return v;
  }
  throw std::logic_error("ringpress: " + std::string(name) + " is not in the configuration table");
}

std::optional<std::string> lookup(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') return std::nullopt;
  return std::string(v);
}

}  // namespace

std::optional<std::string> raw(std::string_view name) {
  return lookup(find(name).name);
}

std::string string(std::string_view name) {
  const Var& v = find(name);
  auto value = lookup(v.name);
  return value ? *value : std::string(v.default_value);
}

std::uint64_t positive(std::string_view name) {
  const Var& v = find(name);
  const std::string text = string(name);
  if (text.empty()) RP_THROW(UsageError, v.name, " is not set and has no default");
  errno = 0;
  char* end = nullptr;
  const unsigned long long x = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str() || *end != '\0' || x == 0 || text[0] == '-') {
    RP_THROW(UsageError, v.name, " must be a positive integer, got '", text, "'");
  }
  return x;
}

std::chrono::milliseconds seconds(std::string_view name) {
  const Var& v = find(name);
  const std::string text = string(name);
  errno = 0;
  char* end = nullptr;
  const double s = std::strtod(text.c_str(), &end);
  if (errno != 0 || end == text.c_str() || *end != '\0' || !std::isfinite(s) || s <= 0 ||
      s >= 1e9) {
    RP_THROW(UsageError, v.name, " must be positive seconds, got '", text, "'");
  }
  return std::chrono::milliseconds(std::max<long long>(1, static_cast<long long>(s * 1000)));
}

void check_retired() {
  for (const Retired& r : kRetired) {
    if (auto v = lookup(r.name)) {
      RP_THROW(UsageError, r.name, "=", *v, " is no longer read; use ", r.instead);
    }
  }
}

}  // namespace ringpress::env

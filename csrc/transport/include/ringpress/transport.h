// Transports: a Context (this rank's view of the job) holding one Pair per peer, each able to move
// framed messages asynchronously over TCP (any two hosts) or a shared-memory ring (same host).
//
// Contract
//   * Context::create() rendezvouses through a Store: every rank publishes its listening address
//     and host identity, and every pair of ranks connects once (full mesh; the higher rank
//     connects, the lower accepts). Each connection runs a handshake in which both ends prove
//     knowledge of the job key without sending it (handshake.h); one that fails, or that speaks
//     anything else, is dropped and logged, and the job is unaffected. TCP links then carry
//     every byte in authenticated records, encrypted unless RINGPRESS_ENCRYPT=off
//     (secure_channel.h). Peers on the same host (same boot id and network namespace) get a
//     shared-memory ring for data (owner-only, random name), keeping the TCP socket as their
//     control channel (doorbells, aborts, liveness); RINGPRESS_TRANSPORT /
//     ContextOptions::transport overrides (tcp | shm | auto).
//   * Messages: a 32-byte MsgHeader + payload. post_send/post_recv queue operations per pair;
//     each direction of a pair completes strictly in posting order (FIFO matching, no tags to
//     search). The receiver states what it expects (Expect): a header from a different collective,
//     sequence number, dtype, op or element count is a collective mismatch, raised as UsageError
//     naming both sides, on the rank that sees it; it then aborts the job so every rank raises.
//   * Progress is driven by the thread that calls wait() (the engine's thread: one thread per
//     Context, no locks on the data path). wait() spins briefly, then sleeps in epoll on the
//     sockets (shm readers/writers announce that they sleep, and the other side rings a doorbell
//     byte on the control socket).
//   * Failure: a peer whose socket closes (process died) or that sends an ABORT, a send that fails,
//     or a deadline that passes raises TransportError / TimeoutError naming the peer, this rank and
//     the operation. The first error is kept: the Context is then broken, every later call rethrows
//     it, and abort() tells all peers (so they fail fast instead of waiting for their timeout).
//
// Cost: TCP: one AES-256-GCM pass each way and one write/read per 1 MiB / 64 KiB record batch; shm:
// one copy into the ring and one out of it (no syscalls while both sides are awake); a reducing
// receive (Expect::reduce) reduces out of the ring in place of the copy out.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringpress/error.h"
#include "ringpress/store.h"
#include "ringpress/trace.h"

namespace ringpress {

using Deadline = Clock::time_point;

enum class TransportKind : std::uint8_t { kTcp = 0, kShm = 1 };
const char* transport_kind_name(TransportKind kind) noexcept;

// Which collective a message belongs to (carried in every header, for mismatch messages).
enum class CollKind : std::uint8_t {
  kNone = 0,
  kAllreduce = 1,
  kBroadcast = 2,
  kAllgather = 3,
  kReduceScatter = 4,
  kBarrier = 5,
  kAllgatherv = 6,
  kReduce = 7,
  kSendRecv = 8,
  kGather = 9,
  kScatter = 10,
  kAlltoall = 11,
  kAllreduceCoalesced = 12,  // fused allreduce: the header's count is a digest of the split
};
const char* coll_kind_name(CollKind kind) noexcept;

// Every message on a pair starts with this header (little-endian, 32 bytes; docs/wire-format.md).
struct MsgHeader {
  std::uint16_t magic = kMagic;     // "RP"
  std::uint8_t version = kVersion;  // header layout version
  std::uint8_t type = 0;            // MsgType
  std::uint8_t coll = 0;            // CollKind
  std::uint8_t dtype = 0;           // DType code
  std::uint8_t redop = 0;           // ReduceOp code (0 when not a reduction; broadcast: root)
  std::uint8_t codec = 0;           // wire codec id (ringpress/codec.h; 0 = none)
  std::uint32_t seq = 0;            // the request's sequence number (same on every rank)
  std::uint32_t step = 0;           // message index inside the algorithm
  std::uint64_t count = 0;          // elements in the whole collective
  std::uint64_t len = 0;            // payload bytes that follow
  static constexpr std::uint16_t kMagic = 0x5052u;  // 'R','P'
  static constexpr std::uint8_t kVersion = 2;       // 1 was the 'RPMG' layout without this byte
};
static_assert(sizeof(MsgHeader) == 32, "MsgHeader is 32 bytes on the wire");

// Steps from here up belong to the agreement exchange that opens a rooted collective
// (collectives/agree.cc; docs/wire-format.md): step = kAgreeStep + round.
constexpr std::uint32_t kAgreeStep = 0xFFFFFF00u;

// A shm message may go by reference only when its collective moves at least this many bytes
// (below, the ring's in-cache copies win everywhere measured: docs/benchmarks.md).
constexpr std::uint64_t kSingleCopyMinTotal = std::uint64_t{5} << 19;  // 2.5 MiB

// kDataRef: shm only, a data message whose payload the reader copies from the writer's memory
// (a 16-byte descriptor follows the header in the ring; docs/wire-format.md).
enum class MsgType : std::uint8_t { kData = 1, kAbort = 2, kBye = 3, kDataRef = 4 };

// What a receive expects. len_exact=false accepts any length <= capacity (variable payloads).
struct Expect {
  MsgHeader h;  // coll, dtype, redop, seq, step, count compared; len compared per len_exact
  std::size_t capacity = 0;
  bool len_exact = true;
  std::size_t* received = nullptr;  // if set, receives the payload length at completion
  // Reduce instead of store: the payload is combined into the receive's buffer as it arrives,
  // data[i] = data[i] (h.redop) payload[i] for h.dtype elements (ringpress/reduce.h), read
  // straight out of the shared-memory ring, or out of a small per-pair staging buffer over TCP,
  // instead of landing in a scratch buffer that the caller reduces afterwards (one copy fewer).
  // Needs len_exact and a length that is a whole number of elements (post_recv checks).
  bool reduce = false;
};

struct ContextOptions {
  int rank = 0;
  int size = 1;
  // Empty / zero options are unset: the environment, else the default, fills them (env.h).
  std::string transport;  // auto | tcp | shm (RINGPRESS_TRANSPORT, default auto)
  std::chrono::milliseconds timeout{
      0};                  // rendezvous + default op timeout (RINGPRESS_TIMEOUT, 300 s)
  std::string bind_addr;   // listen on and publish (RINGPRESS_BIND_ADDR; "" = choose, see .cc)
  std::string route_hint;  // an address of rank 0 / the store host, to pick bind_addr
  // Job key material (32+ characters, the same on every rank; crypto.h); "" = RINGPRESS_JOB_KEY,
  // else RINGPRESS_JOB_KEY_FILE, else none: rank 0 then draws a key and shares it through the
  // store (anyone who can read the store can join; a warning says so once per process).
  std::string secret;
  std::string encrypt;  // on | off: TCP links encrypted or authenticated only (RINGPRESS_ENCRYPT)
  std::size_t shm_ring_bytes = 0;  // per direction, power of two (RINGPRESS_SHM_RING_BYTES, 2 MiB)
  int tcp_buffer_bytes = 4 << 20;  // SO_SNDBUF/SO_RCVBUF
  // Busy-poll time after the last progress before sleeping in epoll; -1 = automatic: 200 us
  // where this host's ranks have a CPU each and the request's caller is blocked in it (a peer a
  // little behind, e.g. the other rank of a 2 MiB allreduce still copying its last segment, is
  // then met awake instead of after a doorbell and a wake-up), else 50 us (spinning would take
  // the CPU from the peer it waits for, or from this process's own computing caller: an async
  // request such as a DDP bucket's). RINGPRESS_SPIN_US sets it when the option is left at -1.
  int spin_us = -1;
  // "auto": large shm messages may go by reference (single copy, process_vm_readv) where the
  // reader could read this process at setup, and the engine decides per request which way is
  // faster on this machine (set_single_copy); "on": they always do; "off": always through the
  // ring (and no probe at setup). "" = RINGPRESS_SHM_SINGLE_COPY.
  std::string shm_single_copy;
  // Which host this rank is on, as the topology sees it (RINGPRESS_HOST_ID): "" = this machine's
  // identity (host_identity()). Ranks with equal ids are one host: shared memory joins them
  // (transport auto) and hierarchical collectives group them. For tests that play several hosts
  // on one machine, and for containers that share a host under different boot ids.
  std::string host_id;
};

// Which ranks share a host, the same on every rank (every rank reads every rank's host identity
// from the store at rendezvous). Hosts are numbered in the order of their lowest rank.
struct Topology {
  std::vector<int> host;  // per rank: its host index
  int hosts = 1;          // number of hosts
  // Ranks of host h in rank order.
  std::vector<int> ranks_on(int h) const;
  // Every host holds the same number of ranks (hierarchical allreduce's condition).
  bool uniform() const;
  // A single-host topology of n ranks.
  static Topology single(int n);
};

// A ticket names a posted operation: (peer, direction, index in that direction's FIFO).
struct Ticket {
  int peer = -1;
  bool send = false;
  std::uint64_t index = 0;
};

class Context {
 public:
  // Rendezvous and connect every pair; raises TimeoutError naming the missing ranks.
  static std::unique_ptr<Context> create(std::shared_ptr<Store> store, const ContextOptions& opts);
  virtual ~Context() = default;

  virtual int rank() const noexcept = 0;
  virtual int size() const noexcept = 0;
  // The job-wide rank of `peer`, for error messages: a view of a subset of the ranks
  // (collectives/group.h) numbers its peers 0..size()-1.
  virtual int global_rank(int peer) const { return peer; }
  virtual TransportKind kind(int peer) const = 0;
  virtual const ContextOptions& options() const noexcept = 0;
  virtual const Topology& topology() const noexcept = 0;

  // Queue a send of h.len payload bytes from `data` (valid until the ticket completes).
  virtual Ticket post_send(int peer, const MsgHeader& h, const void* data) = 0;
  // Queue a receive into `data` (capacity bytes).
  virtual Ticket post_recv(int peer, const Expect& e, void* data) = 0;
  // Drive progress until the ticket completes (raises on error or when the deadline passes).
  virtual void wait(const Ticket& t, Deadline deadline) = 0;
  // Drive progress until one of the n (>= 1) tickets completes; returns the index of a completed
  // one (the first, if several are). Raises as wait() does; a deadline error names t[0]'s peer.
  // For schedules that run on two groups of pairs at once (hierarchical allreduce).
  virtual std::size_t wait_any(const Ticket* t, std::size_t n, Deadline deadline) = 0;
  virtual bool test(const Ticket& t) = 0;  // non-blocking: one progress pass, then done?
  // Whose thread drives the waits that follow: the caller's own, blocked in this request (a
  // long busy-poll steals from nobody in this process), or the engine's, beside a caller that
  // may be computing (a short one). Only the automatic spin_us reads it (ContextOptions).
  virtual void set_caller_waits(bool caller_waits) noexcept { (void)caller_waits; }
  // Whether the requests that follow may send shm messages by reference (where the pair agreed
  // at setup and the message is large enough); true until set. Either way every rank gets the
  // same bits: the schedule does not change, only how a payload crosses.
  virtual void set_single_copy(bool allowed) noexcept { (void)allowed; }

  // Fail the job: remember `err`, tell every peer (ABORT with the message), shut connections.
  virtual void abort(const Error& err) noexcept = 0;
  // The stored error, rethrown, if the context is broken.
  virtual void check() const = 0;
  virtual bool broken() const noexcept = 0;
  // Orderly shutdown: the caller calls begin_close(), runs a barrier (so no peer still needs our
  // data), then close(): BYE to peers, close sockets and unmap segments. After begin_close() a
  // peer's hang-up is expected, not an error.
  virtual void begin_close() noexcept = 0;
  virtual void close() noexcept = 0;

  // Counters (bytes of payload + headers), for stats and tests.
  virtual std::uint64_t bytes_sent() const noexcept = 0;
  virtual std::uint64_t bytes_received() const noexcept = 0;
  // The part of bytes_sent() that went over TCP links (the network, when hosts differ).
  virtual std::uint64_t tcp_bytes_sent() const noexcept = 0;
  // The part of bytes_received() this rank read straight from shm peers' buffers (single copy).
  virtual std::uint64_t single_copy_bytes() const noexcept = 0;
  // Connections dropped during rendezvous because of a bad handshake (tests, logs).
  virtual int rejected_connections() const noexcept = 0;

  // Recovery (recovery.cc, docs/errors.md "Recovery"). Which membership this context is: 0 from
  // the rendezvous, +1 for each shrink or grow (the same on every member).
  virtual std::uint64_t epoch() const noexcept { return 0; }
  // The ranks of this context that joined when it was formed (grow, or a shrink that admitted a
  // failed grow's joiners); empty otherwise.
  virtual std::vector<int> joined() const { return {}; }
  // Collective of the survivors, callable after a failure (or any time): every member that can
  // still reach the others agrees on who is gone and gets a new context over the rest, ranks
  // renumbered in the old order, epoch + 1; no store is involved. `left_out` receives the old
  // ranks that are not in it. This context is retired (closed at once). Raises TransportError if
  // the others left this rank out. The new context may already be broken when another member
  // failed while it was being formed: shrink it again.
  virtual std::unique_ptr<Context> shrink(std::chrono::milliseconds timeout,
                                          std::vector<int>* left_out);
  // Rank 0 only: who waits in join() on `store` (the store the job rendezvoused through), as a
  // list to hand to the other members for grow(), "" when nobody does. Writes each joiner its
  // admission record, and remembers the list: if the grow then fails on its way (a member lost
  // while the list is handed round), the shrink that follows admits them all the same.
  // Cost: one store round trip when nobody has ever joined, two otherwise.
  virtual std::string admit_joiners(Store& store);
  // Collective of the members, at a point they choose, with the list rank 0 made: admits those
  // joiners. Returns nullptr for an empty list (this context stays as it is), else the new
  // context (joiners take the next ranks; epoch + 1) and retires this one. Members or joiners
  // that fail meanwhile are left out (`left_out`: indices in the grown roster, members first).
  // Every member ends with the same membership even if some never received the list (they
  // shrink instead: the list travels in the agreement).
  virtual std::unique_ptr<Context> grow(Store& store, const std::string& joiners,
                                        std::chrono::milliseconds timeout,
                                        std::vector<int>* left_out);
  // The joining side: waits (up to opts.timeout) until the members call grow(), then connects.
  // opts.rank and opts.size are ignored (they come from the members).
  static std::unique_ptr<Context> join(std::shared_ptr<Store> store, const ContextOptions& opts);
};

// Identity of this host as transports see it (host name + boot id + network namespace): equal ids
// mean a shared-memory ring can join the two ranks. ContextOptions::host_id overrides it.
std::string host_identity();

}  // namespace ringpress

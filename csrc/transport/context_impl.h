// ContextImpl and Pair: the transport context's private declarations (internal header).
//
// The Context is split by job into four files that share this header:
//   context.cc     the ContextImpl class: construction, post/test/wait, close, the Pair state
//                  machine (PairState transitions)
//   rendezvous.cc  address publication, the job secret, connect/accept/handshake, shm setup, epoll
//   progress.cc    the epoll/spin progress loop, header acceptance, byte reads and writes
//   failure.cc     error recording, abort send/receive, hang-up and liveness handling
// The contract is in ringpress/transport.h; the byte layouts in docs/wire-format.md ("Transport
// messages" and "Connection handshake").
//
// Ownership: the ContextImpl owns its Pairs (pairs_[peer], null for itself); a Pair owns its
// socket (also the control channel of a shm pair) and its shm::Link. Posted SendOp/RecvOp point
// into caller buffers that must outlive the operation (transport.h says when).
// Threading: a Context is driven by one thread at a time (the engine's); nothing here locks.
// abort() is called from that thread too; broken() is an atomic read and may be called from any.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "handshake.h"
#include "net.h"
#include "protocol.h"
#include "ringpress/error.h"
#include "ringpress/transport.h"
#include "secure_channel.h"
#include "shm_ring.h"

namespace ringpress::transport_impl {

using net::Fd;

// A shm message sent by reference (single copy): the ring carries the header and this
// descriptor; the reader copies the payload straight from the writer's buffer.
struct RefDesc {
  std::uint64_t addr = 0;    // the payload in the writer's address space
  std::uint64_t number = 0;  // 1, 2, ... per ring: the reader finishes them in order
};
static_assert(sizeof(RefDesc) == 16, "RefDesc is 16 bytes on the wire");

struct SendOp {
  MsgHeader h;
  const unsigned char* data = nullptr;
  std::size_t off = 0;          // bytes of (header + payload, or header + RefDesc) already written
  std::size_t truncate_at = 0;  // fault injection: stop here and exit (0 = never)
  bool by_ref = false;  // complete when the reader has finished ref.number, not when written
  RefDesc ref;
  std::size_t end() const {
    return truncate_at ? truncate_at : sizeof(MsgHeader) + (by_ref ? sizeof(RefDesc) : h.len);
  }
  const unsigned char* body() const {  // what follows the header in the stream
    return by_ref ? reinterpret_cast<const unsigned char*>(&ref) : data;
  }
};

struct RecvOp {
  Expect e;
  unsigned char* data = nullptr;
  std::size_t off = 0;  // payload bytes already read (after the header was accepted)
  bool have_header = false;
  MsgHeader h;
  // A reducing receive (Expect::reduce): the bytes of an element split across two reads wait
  // here until the element is whole (off counts them as read).
  alignas(16) unsigned char partial[16];
  std::size_t partial_len = 0;
  bool by_ref = false;  // the header said kDataRef: a RefDesc follows, then single-copy reads
  RefDesc ref;
  std::size_t ref_have = 0;  // bytes of ref read from the ring
};

// The life of a pair, as this rank sees it. Allowed transitions (set_state() enforces them; any
// other raises InternalError):
//   kConnecting -> kReady     handshake (and shm setup) done, registered with epoll
//   kReady      -> kClosing   begin_close()/close(): a peer's hang-up is now expected
//   kReady      -> kFailed    an error on this pair, or the context aborted
//   kClosing    -> kFailed    the same while closing (a peer left while data was expected)
//   kClosing    -> kClosed    close() finished with the pair
//   kFailed     -> kClosed    close() after a failure
// A failed pair keeps its error and rethrows it on the next call that names it (gloo's habit).
// Rendezvous failures leave no pair behind (the constructor throws), so kConnecting never fails.
enum class PairState : std::uint8_t { kConnecting, kReady, kClosing, kClosed, kFailed };

const char* pair_state_name(PairState s) noexcept;
bool pair_transition_allowed(PairState from, PairState to) noexcept;

struct Pair {
  int peer = -1;
  TransportKind kind = TransportKind::kTcp;
  PairState state = PairState::kConnecting;
  std::exception_ptr error;  // set with kFailed: what failed this pair
  Fd fd;
  std::string endpoint;
  std::unique_ptr<shm::Link> link;
  // TCP pairs: the record layer every byte of the stream goes through (secure_channel.h), made
  // from the handshake's link keys once the pair is known to stay on TCP.
  std::unique_ptr<SecureChannel> chan;
  handshake::LinkKeys keys{};
  bool connector = false;  // this rank connected (C in handshake.h)
  std::deque<SendOp> sends;
  std::uint64_t sends_done = 0;
  std::uint64_t sends_posted = 0;
  std::deque<RecvOp> recvs;
  std::uint64_t recvs_done = 0;
  std::uint64_t recvs_posted = 0;
  // Incoming header being assembled when no receive is posted yet (or for the posted one).
  unsigned char hdr[sizeof(MsgHeader)];
  std::size_t hdr_have = 0;
  // Facts about the peer, independent of our state: they are observed, not chosen.
  bool peer_hung_up = false;   // the socket reported hang-up (EOF, RDHUP, error)
  bool peer_said_bye = false;  // the peer announced an orderly close before hanging up
  // Progress bookkeeping (edge-triggered epoll): shm control bytes may be waiting on the socket.
  bool ctl_readable = false;
  // TCP pairs, and shm pairs reading by reference: where a reducing receive's bytes land before
  // they are reduced (allocated on the first one, kReduceStagingBytes).
  std::vector<unsigned char> staging;
  // Shm single copy: references this side wrote, and references it finished reading.
  std::uint64_t refs_sent = 0;
  std::uint64_t refs_read = 0;
};

// Who is in the job: per rank, the listener endpoint and the host identity (from the rendezvous,
// or from the shrink/grow that made this context). Shrink and grow re-form the job from it.
struct Roster {
  std::vector<net::Endpoint> eps;
  std::vector<std::string> hosts;
  int size() const { return static_cast<int>(eps.size()); }
};

// What mesh() connects (mesh.cc): ranks are the plan's numbering (0 .. n-1).
struct MeshPlan {
  int me = 0;
  int n = 1;
  crypto::Key key{};               // handshake key (the job key, or an epoch's key derived from it)
  std::vector<net::Endpoint> eps;  // per rank: its listener
  std::vector<bool> want;          // per rank: take part (false: known gone)
  Deadline deadline;
  bool tolerant = false;              // a peer that fails is marked dead instead of throwing
  std::vector<int> old_fd;            // tolerant: per rank, the old context's socket (-1: none)
  std::vector<bool>* dead = nullptr;  // out: peers given up (tolerant)
  int first_joiner = 1 << 30;         // grow: members (below) dial joiners (handshake::dials)
  const char* what = "connect";       // the operation named in errors and logs
};

class ContextImpl final : public Context {
 public:
  ContextImpl(std::shared_ptr<Store> store, const ContextOptions& opts);
  // Options with the environment and defaults filled in, checked.
  static ContextOptions normalize(const ContextOptions& opts);
  // An empty context of `opts.size` ranks, filled in by recovery.cc (re-forming a job).
  ContextImpl(const ContextOptions& opts, bool encrypt);
  ~ContextImpl() override { close(); }

  int rank() const noexcept override { return opts_.rank; }
  int size() const noexcept override { return opts_.size; }
  const ContextOptions& options() const noexcept override { return opts_; }
  const Topology& topology() const noexcept override { return topo_; }
  void set_caller_waits(bool caller_waits) noexcept override { caller_waits_ = caller_waits; }
  void set_single_copy(bool allowed) noexcept override { single_copy_allowed_ = allowed; }
  TransportKind kind(int peer) const override {
    RP_ENFORCE(peer >= 0 && peer < opts_.size && peer != opts_.rank, UsageError,
               "no pair for peer ", peer);
    return pairs_[static_cast<std::size_t>(peer)]->kind;
  }

  Ticket post_send(int peer, const MsgHeader& h, const void* data) override;
  Ticket post_recv(int peer, const Expect& e, void* data) override;
  void wait(const Ticket& t, Deadline deadline) override;
  std::size_t wait_any(const Ticket* t, std::size_t n, Deadline deadline) override;
  bool test(const Ticket& t) override;
  void abort(const Error& err) noexcept override;  // failure.cc
  void check() const override {
    if (broken_.load(std::memory_order_acquire)) std::rethrow_exception(error_);
  }
  bool broken() const noexcept override { return broken_.load(std::memory_order_acquire); }
  void begin_close() noexcept override;
  void close() noexcept override;
  std::uint64_t bytes_sent() const noexcept override { return bytes_sent_; }
  std::uint64_t bytes_received() const noexcept override { return bytes_received_; }
  std::uint64_t tcp_bytes_sent() const noexcept override { return tcp_bytes_sent_; }
  std::uint64_t single_copy_bytes() const noexcept override { return single_copy_bytes_; }
  int rejected_connections() const noexcept override { return rejected_; }
  std::uint64_t epoch() const noexcept override { return epoch_; }
  std::vector<int> joined() const override { return joined_; }
  std::unique_ptr<Context> shrink(std::chrono::milliseconds timeout,
                                  std::vector<int>* left_out) override;  // recovery.cc
  std::unique_ptr<Context> grow(Store& store, const std::string& joiners,
                                std::chrono::milliseconds timeout,
                                std::vector<int>* left_out) override;  // recovery.cc
  std::string admit_joiners(Store& store) override;                    // recovery.cc
  // The joining side of grow (Context::join).
  static std::unique_ptr<Context> join(Store& store, const ContextOptions& opts);

 private:
  // context.cc
  Pair& pair(int peer);  // the pair to post on; rethrows a failed pair's error
  bool done(const Ticket& t) {
    Pair& p = *pairs_[static_cast<std::size_t>(t.peer)];
    return t.send ? p.sends_done > t.index : p.recvs_done > t.index;
  }
  ErrorContext ctx(int peer) const {
    return ErrorContext{opts_.rank, peer, current_error_context().op};
  }
  void set_state(Pair& p, PairState to);

  // rendezvous.cc
  void rendezvous(Store& store);
  // The listener address this rank publishes (and binds unless bind_addr says otherwise).
  std::string publish_addr() const;
  // The job key: configured (ContextOptions::secret, RINGPRESS_JOB_KEY[_FILE]), else the one
  // shared through the store (the creator draws it; the weak mode, warned about once).
  static crypto::Key load_job_key(const ContextOptions& opts, Store& store, bool creator);
  void finish_links(Deadline deadline);
  void setup_shm(const std::vector<bool>& same_host, Deadline deadline);
  void register_epoll();

  // mesh.cc
  std::vector<std::unique_ptr<Pair>> mesh(const MeshPlan& plan);

  // recovery.cc
  // Re-forms the job from `roster` (this rank is rank `me` there) under epoch `epoch`: a tolerant
  // mesh, the agreement on who is gone, and a new context over the rest (ranks renumbered in
  // roster order). Members (first_joiner < 0): phase 1 among `roster`, whose agreement also
  // settles `joiners` (the list this rank knows of, or ""); if there is a list, phase 2 adds
  // the joiners. A joiner (first_joiner = the members' count; `roster` = members + joiners): phase
  // 2 only. `old_fd`: this context's sockets, by roster rank, else empty.
  static std::unique_ptr<Context> reform(const ContextOptions& opts, bool encrypt,
                                         const crypto::Key& job_key, const std::string& job,
                                         net::Fd listener, const Roster& roster, int me,
                                         std::uint64_t epoch, const std::vector<int>& old_fd,
                                         Deadline deadline, std::vector<int>* left_out,
                                         const char* what, std::string joiners,
                                         int first_joiner = -1);
  // A one-rank context never rendezvoused: opens its listener (and, given the store, loads the
  // job key as rank 0 would) so it can be re-formed.
  void ensure_listener(Store* store);
  // Hands the listener over and drops every pair at once (no BYE, no drain): the context the
  // job was re-formed from.
  net::Fd retire();

  // progress.cc
  bool progress_all();
  bool progress_pair(Pair& p);
  bool progress_send(Pair& p);
  bool progress_recv(Pair& p);
  bool progress_ctl(Pair& p);
  bool recv_by_ref(Pair& p, RecvOp& op);
  std::size_t stream_write(Pair& p, const iovec* iov, int n);
  std::size_t stream_read(Pair& p, void* dst, std::size_t len);
  // A reducing receive's next bytes, reduced into op.data (Expect::reduce); returns bytes read.
  std::size_t stream_reduce(Pair& p, RecvOp& op);
  // The incoming shm ring's positions make no sense (the peer wrote over them): fail the pair.
  [[noreturn]] void fail_corrupt_rx(Pair& p);
  // A TCP pair's plaintext stream, through its channel: net::send_some/recv_some's contract.
  static long tcp_write(Pair& p, const iovec* iov, int n, int* err);
  static long tcp_read(Pair& p, void* dst, std::size_t len, int* err);
  // Blocking forms for the failure paths (TimeoutError / TransportError like net::read_all).
  static void tcp_read_all(Pair& p, void* dst, std::size_t len, Deadline deadline,
                           const char* what);
  static bool tcp_write_all(Pair& p, const void* src, std::size_t len, Deadline deadline);
  // Writes the rest of a half-written message (and of any sealed ahead of it): true when the
  // stream is at a message boundary again by `deadline`.
  bool finish_partial_sends(Pair& p, Deadline deadline);
  void doorbell(Pair& p);
  void accept_header(Pair& p, RecvOp& op);
  void sleep_until(Deadline deadline);

  // failure.cc
  void handle_hup(Pair& p);
  [[noreturn]] void drain_for_abort(Pair& p);
  // Raises the peer's ABORT if one is readable (reads until `until`; default: 1 s from now).
  bool try_drain_for_abort(Pair& p, Deadline until = Deadline{});
  // Timeout attribution: the peer's ABORT, if it sends one before `until` (else nullptr).
  std::exception_ptr listen_for_abort(Pair& p, Deadline until);
  // A timeout (this rank's deadline, or a peer's abort) names the peer that failed to send.
  void fail_timeout(const Error& err);
  int waiting_on(int except) const;  // a peer this rank waits for (posted, not done), or -1
  int spin_us();                     // wait()'s busy-poll time (transport.h)
  [[noreturn]] void fail_pair(Pair& p, const std::string& what);
  void mark_failed(Pair& p, std::exception_ptr e) noexcept;
  [[noreturn]] void fail(std::exception_ptr e);
  [[noreturn]] static void exit_after_truncate(const Pair& p);

  ContextOptions opts_;
  std::vector<std::unique_ptr<Pair>> pairs_;
  Fd epoll_;
  std::atomic<bool> broken_{false};
  std::exception_ptr error_;
  bool closed_ = false;
  bool driving_ = false;             // inside wait()/test(): posted buffers are still alive
  int spin_cpus_ok_ = -1;            // spin_us(): this host's ranks have a CPU each (-1: not known)
  bool caller_waits_ = false;        // set_caller_waits()
  bool single_copy_allowed_ = true;  // set_single_copy()
  // Since when wait() has slept without anything moving (unset: something moved since the last
  // sleep). Tells a rank blocked on a silent peer from one that has only just arrived (failure.cc).
  Clock::time_point idle_since_{};
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t bytes_received_ = 0;
  std::uint64_t tcp_bytes_sent_ = 0;     // the part of bytes_sent_ that went over TCP links
  std::uint64_t single_copy_bytes_ = 0;  // the part of bytes_received_ read by reference
  int rejected_ = 0;
  Topology topo_;            // from the host identities read at rendezvous (single host for size 1)
  crypto::Key key_{};        // the job key (handshake.h), from the operator or the store
  bool encrypt_ = true;      // TCP links encrypt (else authenticate only)
  std::string job_;          // random id in shm names (reveals nothing of the key)
  Fd listener_;              // kept open: shrink and grow reconnect through it
  Roster roster_;            // every rank's listener and host (rendezvous, shrink or grow)
  std::uint64_t epoch_ = 0;  // 0 from the rendezvous, +1 per shrink or grow
  std::string joiners_;      // the list of a grow this member took part in (admit_joiners, grow)
  std::vector<int> joined_;  // ranks that joined when this context was formed
};

}  // namespace ringpress::transport_impl

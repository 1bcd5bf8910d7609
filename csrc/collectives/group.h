// GroupView: a subset of the job's ranks seen as a Context of its own (internal header), so every
// algorithm written against Context (the rings, recursive doubling, the compressed and sparse
// allreduce) runs unchanged on a host's ranks, on the ranks of one local index across hosts, or
// on all ranks in host order.
//
// Contract: members[i] is the global rank that is rank i of the view; the calling rank must be a
// member, every member must build the view with the same list, and members are distinct. Sends
// and receives go to the parent's pairs (peer i of the view = peer members[i] of the parent), so
// errors name global ranks and a pair's FIFO order is shared with whatever else the collective
// sends on it (phases that use the same pair run one after the other). Failure, abort and close
// are the parent's. Cost: one indirection per post; no copies, no messages.
#pragma once

#include <vector>

#include "ringpress/collectives.h"
#include "ringpress/transport.h"

namespace ringpress {

class GroupView final : public Context {
 public:
  GroupView(Context& parent, std::vector<int> members);

  int rank() const noexcept override { return me_; }
  int size() const noexcept override { return static_cast<int>(members_.size()); }
  int global_rank(int peer) const override { return parent_.global_rank(global(peer)); }
  TransportKind kind(int peer) const override { return parent_.kind(global(peer)); }
  const ContextOptions& options() const noexcept override { return parent_.options(); }
  const Topology& topology() const noexcept override { return topo_; }

  Ticket post_send(int peer, const MsgHeader& h, const void* data) override {
    return parent_.post_send(global(peer), h, data);
  }
  Ticket post_recv(int peer, const Expect& e, void* data) override {
    return parent_.post_recv(global(peer), e, data);
  }
  void wait(const Ticket& t, Deadline deadline) override { parent_.wait(t, deadline); }
  std::size_t wait_any(const Ticket* t, std::size_t n, Deadline deadline) override {
    return parent_.wait_any(t, n, deadline);
  }
  bool test(const Ticket& t) override { return parent_.test(t); }
  void abort(const Error& err) noexcept override { parent_.abort(err); }
  void check() const override { parent_.check(); }
  bool broken() const noexcept override { return parent_.broken(); }
  void begin_close() noexcept override {}  // the parent's connections: not the view's to close
  void close() noexcept override {}
  std::uint64_t bytes_sent() const noexcept override { return parent_.bytes_sent(); }
  std::uint64_t bytes_received() const noexcept override { return parent_.bytes_received(); }
  std::uint64_t tcp_bytes_sent() const noexcept override { return parent_.tcp_bytes_sent(); }
  std::uint64_t single_copy_bytes() const noexcept override { return parent_.single_copy_bytes(); }
  int rejected_connections() const noexcept override { return parent_.rejected_connections(); }

  int global(int peer) const;

 private:
  Context& parent_;
  std::vector<int> members_;
  int me_ = -1;
  Topology topo_;  // the parent's host indices restricted to the members (renumbered)
};

// The job's ranks ordered by host (host index, then rank): a ring in this order crosses between
// hosts once per host instead of up to once per hop (cyclic placement, rank r on host r mod H).
std::vector<int> host_order(const Topology& t);

// RINGPRESS_TOPOLOGY (read once per process): true = auto (hierarchy and host order), false = flat.
bool topology_aware();

// Whether the two-level algorithms apply: topology_aware(), two or more hosts, and some host
// holding two or more ranks (hosts may differ in size).
bool multi_rank_hosts(const Context& ctx);

// Each host's leader (its lowest rank), in host order: the group the two-level small allreduce
// and barrier run their network step on (allreduce_small_hier.cc, barrier_hier.cc).
std::vector<int> host_leaders(const Topology& t);

// The two levels of the hierarchical allreduce (allreduce_hier.cc) as seen by the calling rank:
// its host's ranks (`local`, in rank order; the caller is local[l]) and the ranks of local index
// l on every host (`cross`, in host order). Needs Topology::uniform() (InternalError otherwise).
struct HostLevels {
  std::vector<int> local;
  std::vector<int> cross;
  int l = 0;
};
HostLevels host_levels(const Context& ctx);

// Whether an allreduce with this algorithm request takes the two-level paths (allreduce.cc):
// multi_rank_hosts(), the same number of ranks on every host, and no algorithm forced (kAuto).
// Auto mode models two levels exactly then (auto_select.cc).
bool two_level_allreduce(const Context& ctx, AllreduceAlgo algo);

// The number of chunks the hierarchical allreduce pipelines a request of `bytes` into on H hosts
// of L ranks (allreduce_hier.cc; segment_bytes 0 = default_segment_bytes()); under 2 it runs the
// three phases one after another. Ring-schedule kinds only (plain, lossless, the quantizers).
std::size_t hierarchical_chunks(std::size_t bytes, int L, int H, std::size_t segment_bytes);

// Per-rank blocks (counts, in rank order) regrouped into one bundle per host, hosts in order and
// each host's ranks in rank order: the leaders' layout in the two-level small allgather and
// reduce_scatter. at[r]: element offset of rank r's block in that layout; counts[h] and off[h]:
// host h's bundle; identity: the layout is rank order itself (hosts hold consecutive ranks).
struct HostBundles {
  std::vector<std::size_t> at;
  std::vector<std::size_t> counts;
  std::vector<std::size_t> off;
  bool identity = true;
};
HostBundles host_bundles(const Topology& t, const std::vector<std::size_t>& counts);

// What the leaders' paths put in the headers' count field instead of the total: a digest of the
// whole counts vector and the op (split_digest), so ranks that split the same total differently
// (which host bundles and the per-message lengths need not show) or reduce with another op
// (the leaders' own step sums) disagree in every header they exchange.
std::uint64_t counts_digest(const std::vector<std::size_t>& counts, ReduceOp op);

// Whether allgather / reduce_scatter of `bytes` in all go through one leader per host
// (allgather_small_hier.cc, reduce_scatter_small_hier.cc): multi_rank_hosts() and at most the
// small-message threshold (`small_bytes`, 0 = default_small_bytes()).
bool use_small_leaders(const Context& ctx, std::size_t bytes, std::size_t small_bytes);

// The order in which rings and chains visit ranks: host order when topology_aware(), else rank
// order. `identity` tells whether that is plain rank order (no GroupView needed).
std::vector<int> ring_order(const Context& ctx, bool* identity);

// Whether allgather / reduce_scatter of `bytes` in all take their log2 P algorithms
// (allgather_doubling.cc, reduce_scatter_halving.cc): a power-of-two group of 4+ ranks, at most
// the halving threshold (`halving_bytes`, 0 = default_halving_bytes()), and ranks already in
// ring_order(). Those algorithms run in rank order, so each window of blocks is one message;
// where host order differs, the host-ordered ring crosses between hosts once per host instead.
bool use_doubling(const Context& ctx, std::size_t bytes, std::size_t halving_bytes);

// Runs `fn` with an OpContext whose ranks follow ring_order(): `oc` itself when that is rank
// order, else a GroupView over the same pairs. blocks_off/blocks_len (per-rank blocks, in rank
// order) are permuted alike when given, so block i of the view is its rank i's block.
template <typename Fn>
void in_ring_order(const OpContext& oc, std::vector<std::size_t>* blocks_off,
                   std::vector<std::size_t>* blocks_len, Fn&& fn) {
  bool identity = true;
  std::vector<int> order = ring_order(oc.ctx, &identity);
  if (identity) {
    fn(oc);
    return;
  }
  for (std::vector<std::size_t>* v : {blocks_off, blocks_len}) {
    if (v == nullptr) continue;
    std::vector<std::size_t> p(v->size());
    for (std::size_t i = 0; i < p.size(); ++i) p[i] = (*v)[static_cast<std::size_t>(order[i])];
    *v = std::move(p);
  }
  GroupView view(oc.ctx, std::move(order));
  fn(OpContext{view, oc.seq, oc.deadline, oc.timeline, oc.stages});
}

}  // namespace ringpress

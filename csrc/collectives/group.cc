// GroupView and host order (group.h).
#include "group.h"

#include <algorithm>
#include <string>

#include "ringpress/env.h"

namespace ringpress {

GroupView::GroupView(Context& parent, std::vector<int> members)
    : parent_(parent), members_(std::move(members)) {
  const Topology& pt = parent_.topology();
  std::vector<int> map(static_cast<std::size_t>(pt.hosts), -1);
  topo_.hosts = 0;
  for (std::size_t i = 0; i < members_.size(); ++i) {
    const int g = members_[i];
    RP_ENFORCE(g >= 0 && g < parent_.size(), InternalError, "group member ", g,
               " is not a rank of ", parent_.size());
    if (g == parent_.rank()) me_ = static_cast<int>(i);
    int& h = map[static_cast<std::size_t>(pt.host[static_cast<std::size_t>(g)])];
    if (h < 0) h = topo_.hosts++;
    topo_.host.push_back(h);
  }
  RP_ENFORCE(me_ >= 0, InternalError, "rank ", parent_.rank(), " is not in its own group");
}

int GroupView::global(int peer) const {
  RP_ENFORCE(peer >= 0 && peer < size(), InternalError, "peer ", peer, " outside a group of ",
             size());
  return members_[static_cast<std::size_t>(peer)];
}

bool use_doubling(const Context& ctx, std::size_t bytes, std::size_t halving_bytes) {
  const int P = ctx.size();
  const std::size_t limit = halving_bytes ? halving_bytes : default_halving_bytes();
  if (P < 4 || (P & (P - 1)) != 0 || bytes > limit) return false;
  bool host_ordered = true;
  (void)ring_order(ctx, &host_ordered);
  return host_ordered;
}

bool topology_aware() {
  static const bool v = [] {
    const std::string m = env::string("RINGPRESS_TOPOLOGY");
    RP_ENFORCE(m == "auto" || m == "flat", UsageError,
               "RINGPRESS_TOPOLOGY must be auto or flat, got '", m, "'");
    return m == "auto";
  }();
  return v;
}

bool multi_rank_hosts(const Context& ctx) {
  const Topology& t = ctx.topology();
  return topology_aware() && t.hosts >= 2 && t.hosts < ctx.size();
}

std::vector<int> host_leaders(const Topology& t) {
  std::vector<int> leaders(static_cast<std::size_t>(t.hosts));
  for (int h = 0; h < t.hosts; ++h) leaders[static_cast<std::size_t>(h)] = t.ranks_on(h).front();
  return leaders;
}

HostLevels host_levels(const Context& ctx) {
  const Topology& t = ctx.topology();
  const int me = ctx.rank();
  HostLevels v;
  v.local = t.ranks_on(t.host[static_cast<std::size_t>(me)]);
  while (v.local[static_cast<std::size_t>(v.l)] != me) ++v.l;
  v.cross.resize(static_cast<std::size_t>(t.hosts));
  for (int h = 0; h < t.hosts; ++h) {
    const std::vector<int> on = t.ranks_on(h);
    RP_ENFORCE(on.size() == v.local.size(), InternalError,
               "the two-level collectives need the same number of ranks on every host");
    v.cross[static_cast<std::size_t>(h)] = on[static_cast<std::size_t>(v.l)];
  }
  return v;
}

bool two_level_allreduce(const Context& ctx, AllreduceAlgo algo) {
  return algo == AllreduceAlgo::kAuto && multi_rank_hosts(ctx) && ctx.topology().uniform();
}

HostBundles host_bundles(const Topology& t, const std::vector<std::size_t>& counts) {
  HostBundles b;
  b.at.assign(counts.size(), 0);
  std::size_t pos = 0;
  for (int h = 0; h < t.hosts; ++h) {
    b.off.push_back(pos);
    for (int q : t.ranks_on(h)) {
      const auto i = static_cast<std::size_t>(q);
      b.at[i] = pos;
      pos += counts[i];
    }
    b.counts.push_back(pos - b.off.back());
  }
  std::size_t rank_order = 0;
  for (std::size_t i = 0; i < counts.size(); ++i) {
    b.identity = b.identity && b.at[i] == rank_order;
    rank_order += counts[i];
  }
  return b;
}

std::uint64_t counts_digest(const std::vector<std::size_t>& counts, ReduceOp op) {
  std::vector<std::size_t> v = counts;
  v.push_back(0x100u + static_cast<std::size_t>(op));
  return split_digest(v);
}

bool use_small_leaders(const Context& ctx, std::size_t bytes, std::size_t small_bytes) {
  return multi_rank_hosts(ctx) && bytes <= (small_bytes ? small_bytes : default_small_bytes());
}

std::vector<int> ring_order(const Context& ctx, bool* identity) {
  std::vector<int> order;
  if (topology_aware()) {
    order = host_order(ctx.topology());
  } else {
    order.resize(static_cast<std::size_t>(ctx.size()));
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int>(i);
  }
  *identity = true;
  for (std::size_t i = 0; i < order.size(); ++i) *identity = *identity && order[i] == int(i);
  return order;
}

std::vector<int> host_order(const Topology& t) {
  std::vector<int> order(t.host.size());
  for (std::size_t r = 0; r < order.size(); ++r) order[r] = static_cast<int>(r);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return t.host[static_cast<std::size_t>(a)] < t.host[static_cast<std::size_t>(b)];
  });
  return order;
}

}  // namespace ringpress

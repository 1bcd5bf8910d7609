// GroupView and host order (group.h).
#include "group.h"

#include <algorithm>

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

std::vector<int> host_order(const Topology& t) {
  std::vector<int> order(t.host.size());
  for (std::size_t r = 0; r < order.size(); ++r) order[r] = static_cast<int>(r);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) {
    return t.host[static_cast<std::size_t>(a)] < t.host[static_cast<std::size_t>(b)];
  });
  return order;
}

}  // namespace ringpress

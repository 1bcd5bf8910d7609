// SingleCopyPolicy (ringpress/single_copy_policy.h): try both ways, keep the faster.
#include "ringpress/single_copy_policy.h"

namespace ringpress {

int SingleCopyPolicy::size_class(std::uint64_t bytes) {
  const std::uint64_t units = bytes / kSingleCopyMinTotal;  // >= 1
  return 63 - __builtin_clzll(units);
}

bool SingleCopyPolicy::choose(const char* op, std::uint64_t bytes) {
  if (bytes < kSingleCopyMinTotal) return true;
  const auto it = classes_.find({op, size_class(bytes)});
  if (it == classes_.end()) return true;  // call 0: the warm-up
  const Class& c = it->second;
  if (c.decided >= 0) return c.decided == 1;
  return c.calls % 2 == 0;  // calls 1, 3, 5: the ring; 2, 4, 6: by reference
}

bool SingleCopyPolicy::record(const char* op, std::uint64_t bytes, bool by_reference,
                              std::chrono::nanoseconds took) {
  if (bytes < kSingleCopyMinTotal) return false;
  Class& c = classes_[{op, size_class(bytes)}];
  if (c.decided >= 0) return false;
  if (c.calls++ == 0) return false;  // the warm-up is not timed
  const double per_byte = static_cast<double>(took.count()) / static_cast<double>(bytes);
  double& best = c.best[by_reference ? 1 : 0];
  if (best < 0 || per_byte < best) best = per_byte;
  if (c.calls <= 2 * kTrials) return false;
  c.decided = c.best[1] < c.best[0] ? 1 : 0;
  return true;
}

std::vector<SingleCopyChoice> SingleCopyPolicy::settled() const {
  std::vector<SingleCopyChoice> out;
  for (const auto& [key, c] : classes_) {
    if (c.decided < 0) continue;
    // ns per byte = s per 1e9 bytes
    out.push_back(
        {key.first, kSingleCopyMinTotal << key.second, c.decided == 1, c.best[0], c.best[1]});
  }
  return out;
}

}  // namespace ringpress

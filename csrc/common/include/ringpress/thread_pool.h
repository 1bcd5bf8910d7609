// A small process-wide worker pool for data-parallel loops (codec blocks, reductions).
//
// parallel_for(n, threads, fn) runs fn(i, worker) for i in [0, n) on up to `threads` threads, the
// calling thread included (worker 0), and returns when all are done. threads <= 1 or n <= 1 runs
// inline. The first exception thrown by any fn is rethrown in the caller after the loop drains
// (remaining items are skipped). Jobs from different callers are serialised on the pool (one job
// at a time), so per-worker scratch indexed by `worker` is never shared between concurrent items.
#pragma once

#include <cstddef>
#include <functional>

namespace ringpress {

void parallel_for(std::size_t n, int threads,
                  const std::function<void(std::size_t i, int worker)>& fn);
int hardware_threads() noexcept;

}  // namespace ringpress

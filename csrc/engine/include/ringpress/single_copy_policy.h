// SingleCopyPolicy: whether a large shared-memory request sends its messages by reference
// (single copy, process_vm_readv) or through the ring, learned per (collective, size class) from
// the requests' own times. Used by the engine where RINGPRESS_SHM_SINGLE_COPY=auto (the default).
//
// Why learn it: which way is faster depends on the machine's caches and on what a system call
// and page pinning cost there, not on the message alone. On a 2-core Intel Xeon VM (2 MiB of L2
// per core) a 4-16 MiB allreduce took 0.6-0.9x the ring's time by reference; on a 2-core AMD
// EPYC VM (32 MiB of L3) it took 1.3-1.9x at 3-4 MiB (docs/benchmarks.md).
//
// Contract
//   * choose(op, bytes) before a request, record(...) after it succeeded, on the thread that runs
//     requests (no locks). Requests below kSingleCopyMinTotal (transport.h), which the transport
//     never sends by reference, are not learned.
//   * Per class (op name, floor(log2(bytes / kSingleCopyMinTotal))): call 0 runs by reference
//     untimed (it warms the pages and caches); calls 1..2*kTrials alternate ring, reference,
//     ring, ... (a drift of the machine's load hits both ways); from then on the way with the
//     lower best time per byte is kept.
//   * Every rank keeps its own policy; ranks that submit the same requests try the same way at
//     the same time. Either way every rank gets the same bits (the schedule does not change).
// Cost: one map lookup per request of 2.5 MiB or more; at most kTrials requests per class run
// the slower way.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "ringpress/transport.h"

namespace ringpress {

// What the policy settled for one class (CommStats, stats()["single_copy"]).
struct SingleCopyChoice {
  std::string op;
  std::uint64_t bytes = 0;  // the class: requests of [bytes, 2 * bytes)
  bool by_reference = false;
  double ring_s_per_gb = 0;       // best time per 1e9 bytes through the ring during the trials
  double reference_s_per_gb = 0;  // best time per 1e9 bytes by reference
};

class SingleCopyPolicy {
 public:
  static constexpr int kTrials = 3;

  bool choose(const char* op, std::uint64_t bytes);
  // Returns true when this call settled its class.
  bool record(const char* op, std::uint64_t bytes, bool by_reference,
              std::chrono::nanoseconds took);
  std::vector<SingleCopyChoice> settled() const;

 private:
  struct Class {
    int calls = 0;              // recorded so far (the warm-up included)
    double best[2] = {-1, -1};  // [ring, reference]: ns per byte
    int decided = -1;           // -1: still trying; 0 ring, 1 reference
  };
  static int size_class(std::uint64_t bytes);
  std::map<std::pair<std::string, int>, Class> classes_;
};

}  // namespace ringpress

// Fault injection for the fault-matrix tests (tests/python/test_fault_matrix.py, docs/errors.md).
//
// Off unless the environment variable RINGPRESS_FAULT is set, when it costs one branch per point.
// RINGPRESS_FAULT=<point>:<action>[:<n>] fires <action> on the n-th time (default 1st) this
// process reaches <point>:
//   points   rendezvous, ring.reduce_scatter, ring.allgather, recursive_doubling, broadcast,
//            barrier, send
//   actions  kill     SIGKILL itself (a crashed rank)
//            stop     SIGSTOP itself (a hung rank: alive, silent)
//            exit     _exit(3) (a rank that leaves without closing)
//            garbage  (send) the next message goes out with a corrupt header
//            truncate (send) the next message stops half way, then the process exits
// An unknown point or action raises UsageError when the variable is first read.
#pragma once

namespace ringpress::fault {

enum class Action { kNone = 0, kKill, kStop, kExit, kGarbage, kTruncate };

// Kill/stop/exit happen inside; garbage/truncate are returned for the transport to carry out.
Action hit(const char* point);

}  // namespace ringpress::fault

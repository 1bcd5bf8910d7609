// Fault injection for the fault-matrix tests (tests/python/test_fault_matrix.py, docs/errors.md).
//
// Off unless the environment variable RINGPRESS_FAULT is set, when it costs one branch per point.
// RINGPRESS_FAULT=<point>:<action>[:<n>] fires <action> on the n-th time (default 1st) this
// process reaches <point>:
//   points   rendezvous, ring.reduce_scatter, ring.allgather, recursive_doubling, broadcast,
//            barrier, send, and the compression stages: ring.encode (a compressed ring segment
//            was just encoded), ring.decode (a received one is about to be decoded),
//            sparse.encode (a top-k payload was just encoded), and recovery's steps:
//            recovery.mesh (a shrink/grow/join starts connecting), recovery.agree (connected,
//            the agreement starts), recovery.round (each round of the agreement: :n = round n),
//            grow.list (grow() heard that joiners wait, before the list is handed round),
//            send.ref (a shm message is about to go by reference: single copy, wire-format.md),
//            allgather_leaders, reduce_scatter_leaders (the small allgather / reduce_scatter
//            through one leader per host starts on this rank)
//   actions  kill     SIGKILL itself (a crashed rank)
//            stop     SIGSTOP itself (a hung rank: alive, silent)
//            exit     _exit(3) (a rank that leaves without closing)
//            garbage  (send) the next message goes out with a corrupt header;
//                     (send.ref) this reference goes out with the wrong sequence number
//            truncate (send) the next message stops half way, then the process exits
//            corrupt  (ring.encode, sparse.encode) the payload just encoded has its first 8
//                     bytes inverted, behind a valid header: the receivers' decoders must
//                     reject it (a checksum, a magic, a scale or a length no longer adds up);
//                     (send.ref) this reference names an address the writer has not mapped
// An unknown point or action, or an action the point cannot carry out, raises UsageError when
// the variable is first read.
#pragma once

#include <cstddef>

namespace ringpress::fault {

enum class Action { kNone = 0, kKill, kStop, kExit, kGarbage, kTruncate, kCorrupt };

// Kill/stop/exit happen inside; garbage/truncate/corrupt are returned for the caller to carry out.
Action hit(const char* point);

// For corrupt: invert the first min(8, len) bytes of an encoded payload.
void corrupt(void* payload, std::size_t len);

// For truncate: the caller has sent part of a message; the process now leaves without closing
// (says why on stderr, then _exit(3)), so the peer sees a message cut short.
[[noreturn]] void exit_after_truncate(int peer);

}  // namespace ringpress::fault

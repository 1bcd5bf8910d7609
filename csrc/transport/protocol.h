// The transport's wire protocol as pure functions (internal header): message-header validation and
// abort payload encoding/decoding (the handshake is in handshake.h). What parses bytes from the
// network for the transport lives in these two files, so the fuzz target
// (tests/fuzz/fuzz_transport.cc) can reach it. Layouts: docs/wire-format.md ("Transport messages",
// "Connection handshake").
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include "ringpress/store.h"
#include "ringpress/transport.h"

namespace ringpress::protocol {

constexpr std::uint64_t kMaxAbortBytes = 1 << 16;

// Control bytes on a shm pair's socket.
constexpr unsigned char kCtlDoorbell = 'D';
constexpr unsigned char kCtlAbort = 'A';
constexpr unsigned char kCtlBye = 'B';

std::string describe(const MsgHeader& h);  // "allreduce #3 float32 x1000 sum"

// Check a data header against what the receive expects; raises UsageError (collective or size
// mismatch), InternalError (step out of order) naming rank and peer.
void check_header(const MsgHeader& h, const Expect& e, int rank, int peer);

// Abort payload: u8 kind, i32 origin rank, i32 peer, u32 op length, op, u32 detail length, detail.
Bytes encode_abort(const Error& e, int origin);
// Raise the error a peer's ABORT describes (hostile input: every length is checked; a malformed
// payload raises TransportError instead).
[[noreturn]] void raise_remote_abort(const Bytes& b, int rank, int from);

// An exception_ptr holding the concrete class of `e` (a plain copy would slice to Error).
std::exception_ptr concrete_error(const Error& e);

}  // namespace ringpress::protocol

// The transport's wire protocol as pure functions (internal header): handshake and message-header
// validation, abort payload encoding/decoding. Everything that parses bytes from the network for
// the transport lives here, so the fuzz target (tests/fuzz/fuzz_transport.cc) can reach it.
// Layouts: docs/wire-format.md ("Transport messages", "Connection handshake").
#pragma once

#include <cstdint>
#include <exception>
#include <string>

#include "ringpress/store.h"
#include "ringpress/transport.h"

namespace ringpress::protocol {

constexpr std::uint32_t kHelloMagic = 0x53485052u;  // "RPHS"
constexpr std::uint32_t kAckMagic = 0x41485052u;    // "RPHA"
constexpr std::uint16_t kProtocolVersion = 2;       // 2: message header v2 (codec byte)
constexpr std::size_t kSecretChars = 64;
constexpr std::uint64_t kMaxAbortBytes = 1 << 16;

// Handshake sent by the connecting (higher) rank; 80 bytes.
struct Hello {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t reserved;
  std::uint32_t from;
  std::uint32_t to;
  char secret[kSecretChars];
};
static_assert(sizeof(Hello) == 80, "Hello is 80 bytes");

struct Ack {
  std::uint32_t magic;
  std::uint32_t from;
};

// Control bytes on a shm pair's socket.
constexpr unsigned char kCtlDoorbell = 'D';
constexpr unsigned char kCtlAbort = 'A';
constexpr unsigned char kCtlBye = 'B';

bool secrets_equal(const char* a, const std::string& b);  // constant time
std::string describe(const MsgHeader& h);                 // "allreduce #3 float32 x1000 sum"

// Why a hello must be rejected ("" when it is acceptable) for rank `me` of `n` with `secret`.
std::string check_hello(const Hello& h, const std::string& secret, int me, int n);

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

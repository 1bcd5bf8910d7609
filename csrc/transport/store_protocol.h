// The rendezvous store's request parser as a pure function of the bytes received (internal header).
// store_tcp.cc feeds it whatever a socket delivered; tests/fuzz/fuzz_store.cc feeds it hostile
// bytes. The protocol itself is described at the top of store_tcp.cc.
//
// Contract
//   * feed() consumes bytes up to the end of one request and stops there (kDone), at an error
//     (kError, error() says why; the connection must be closed), or, for a SET, right after its
//     value length (kDecide): the caller then calls keep_value(true) to collect the value or
//     keep_value(false) to skip it (its bytes are consumed and dropped; the request completes with
//     request().discarded set), e.g. when the value is over a size or memory limit. skip_value()
//     does the same part-way through the value.
//   * Memory: nothing is allocated ahead of the bytes received. The key grows with its bytes; the
//     value's buffer grows geometrically with the bytes that arrived, never beyond the claimed
//     length, so its capacity is at most twice the bytes received (plus 4 KiB), whatever the claim.
//   * Lengths are checked as soon as they are complete: key <= kMaxKey, SET value <= kMaxValue,
//     GET/ADD argument exactly 8 bytes, DELETE no value.
//   * RecordReader (keyed connections, protocol version 3): cuts the bytes received into records
//     (u32 length, length bytes of AES-256-GCM ciphertext, 16-byte tag) without opening them.
//     A length outside 1..kMaxRecord is an error as soon as its 4 bytes are in; the buffer grows
//     with the bytes received, never beyond one record (kMaxRecord + kRecordOverhead).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "ringpress/store.h"

namespace ringpress::store_protocol {

constexpr std::uint8_t kCmdSet = 1, kCmdGet = 2, kCmdAdd = 3, kCmdDelete = 4;
// kRefused (version 3): the server could not authenticate the connection's last record and
// closes the connection after this reply (its message says why).
constexpr std::uint8_t kOk = 0, kUsageError = 1, kTimeout = 2, kRefused = 3;
constexpr std::size_t kMaxKey = 4096;
constexpr std::uint64_t kMaxValue = 64ull << 20;  // protocol ceiling of one value
constexpr std::uint64_t kMaxMessage = 4096;       // USAGE_ERROR text
constexpr std::size_t kRequestHeader = 1 + 4;     // command + key length
constexpr std::size_t kReplyHeader = 1 + 8;       // status + length

// Handshake (version 3; version 2 had the same handshake but no records after it): client hello
// = magic, u8 auth, 7 zero bytes, nonce; server hello = the same, then the server's proof; then
// the client's proof when both said auth = 1.
constexpr char kMagic[8] = {'R', 'P', 'S', 'T', 'O', 'R', 'E', '3'};
constexpr std::size_t kNonce = 32, kProof = 32;
constexpr std::size_t kClientHello = 8 + 8 + kNonce;           // 48
constexpr std::size_t kServerHello = 8 + 8 + kNonce + kProof;  // 80
constexpr std::uint8_t kAuthNone = 0, kAuthKey = 1;
// Records of a keyed connection (after the handshake, both directions).
constexpr std::size_t kMaxRecord = 64u << 10;  // plaintext bytes of one record
constexpr std::size_t kRecordHeader = 4;       // u32 length (authenticated as additional data)
constexpr std::size_t kRecordTag = 16;         // AES-256-GCM tag
constexpr std::size_t kRecordOverhead = kRecordHeader + kRecordTag;

// Why the first n bytes of a client hello must be refused, "" while they are acceptable (n <=
// kClientHello; garbage is refused at its first wrong byte).
std::string check_client_hello(const std::uint8_t* h, std::size_t n);
// Why a server hello (kServerHello bytes) must be refused, "" if acceptable; its auth byte then.
std::string check_server_hello(const std::uint8_t* h, std::uint8_t* auth);

void put_u32(std::uint8_t* p, std::uint32_t v);
void put_u64(std::uint8_t* p, std::uint64_t v);
std::uint32_t get_u32(const std::uint8_t* p);
std::uint64_t get_u64(const std::uint8_t* p);

struct Request {
  std::uint8_t cmd = 0;
  std::string key;
  std::uint64_t value_length = 0;  // as claimed (validated)
  Bytes value;                     // SET: the value (empty if discarded); GET/ADD: 8 bytes
  bool discarded = false;          // SET whose value the caller chose not to keep
};

class RequestParser {
 public:
  enum class State { kIdle, kHeader, kKey, kLength, kDecide, kValue, kSkip, kDone, kError };

  // Consumes a prefix of [data, data + n) and returns its length (see the contract above).
  std::size_t feed(const std::uint8_t* data, std::size_t n);
  // In kDecide: collect the SET's value (true) or skip it (false).
  void keep_value(bool keep);
  // In kValue of a SET: drop the value's bytes collected so far and skip the rest (a memory limit
  // hit). No effect otherwise (a GET/ADD argument is 8 bytes and always kept).
  void skip_value();
  // In kValue: the value buffer's capacity once k more value bytes are fed (the caller books it
  // before feeding them).
  std::size_t value_capacity_after(std::size_t k) const;

  State state() const noexcept { return state_; }
  bool done() const noexcept { return state_ == State::kDone; }
  bool failed() const noexcept { return state_ == State::kError; }
  // Some byte of a request has arrived and the request is not complete yet.
  bool in_progress() const noexcept { return state_ != State::kIdle && state_ != State::kDone; }
  const std::string& error() const noexcept { return error_; }
  const Request& request() const noexcept { return req_; }
  // Bytes of the current request's value still to come (kValue, kSkip).
  std::uint64_t remaining() const noexcept { return remaining_; }
  // Hands over the complete request (kDone) and gets ready for the next one (kIdle).
  Request take();
  // Drops everything (buffers released).
  void reset();

 private:
  std::size_t fill(const std::uint8_t* data, std::size_t n, std::size_t want);
  void fail(std::string why);

  State state_ = State::kIdle;
  std::uint8_t head_[8] = {};  // header / key length / value length being assembled
  std::size_t have_ = 0;       // bytes of head_ (or of the key) received
  std::uint32_t key_length_ = 0;
  std::uint64_t remaining_ = 0;
  Request req_;
  std::string error_;
};

// Cuts a keyed connection's bytes into records (contract above). Pure: opening a record is the
// caller's (crypto::Aead), which is what authenticates it.
class RecordReader {
 public:
  // Consumes a prefix of [data, data + n): stops at the end of a record (ready()), at an error
  // (failed()), or when the bytes run out.
  std::size_t feed(const std::uint8_t* data, std::size_t n);
  bool ready() const noexcept { return ready_; }
  bool failed() const noexcept { return !error_.empty(); }
  const std::string& error() const noexcept { return error_; }
  // ready(): the record's plaintext length, its 4 header bytes, ciphertext and tag.
  std::uint32_t length() const noexcept { return length_; }
  const std::uint8_t* header() const noexcept { return buf_.data(); }
  std::uint8_t* ciphertext() noexcept { return buf_.data() + kRecordHeader; }
  const std::uint8_t* tag() const noexcept { return buf_.data() + kRecordHeader + length_; }
  // Part of a record received (not ready yet).
  bool in_progress() const noexcept { return !buf_.empty() && !ready_; }
  // After ready(): gets ready for the next record (a buffer over 4 KiB is released).
  void next();
  std::size_t capacity() const noexcept { return buf_.capacity(); }

 private:
  std::vector<std::uint8_t> buf_;
  std::uint32_t length_ = 0;
  bool ready_ = false;
  std::string error_;
};

}  // namespace ringpress::store_protocol

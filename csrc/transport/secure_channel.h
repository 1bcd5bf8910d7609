// SecureChannel: the record layer of an authenticated (and by default encrypted) TCP link
// (internal header). The transport's plaintext byte stream (message headers and payloads, exactly
// as without it) is cut into records:
//     u32 length (1..kMaxRecord, authenticated)  ||  length bytes of AES-256-GCM ciphertext
//     (or plaintext when encryption is off)  ||  16-byte tag
// Record i of a direction is sealed with that direction's link key (handshake.h) and nonce
// (direction, i): a record that was altered, replayed, dropped, reordered or injected fails its
// tag, and the link fails with a TransportError naming the peer.
//
// Contract
//   * write(iov) is called with the stream's unflushed plaintext from its first byte on (the
//     caller passes the same bytes again until they are reported flushed). It seals what fits
//     in the output buffer (at most kOutBytes) after what is already sealed, writes what the
//     socket takes, and returns how many plaintext bytes are now in the kernel (0 = none yet;
//     -1 = socket error, *err set). So a send counts as done only once its bytes left userspace.
//   * read(dst, len) returns up to len plaintext bytes (0 = none available yet, -1 = end of stream
//     or socket error, *err set, 0 for end of stream), decrypting straight into dst when a whole
//     record fits there. A record that fails authentication or claims a length outside
//     1..kMaxRecord raises TransportError; nothing larger than one record is ever buffered.
// Cost: one AES-256-GCM pass per byte each way (several GB/s per core with AES-NI); a record's
// fixed cost (20 bytes, one GCM set-up) every 64 KiB; one extra copy only for the parts of a
// record that a smaller read does not take (message headers).
#pragma once

#include <sys/uio.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <vector>

#include "crypto.h"

namespace ringpress::transport_impl {

class SecureChannel {
 public:
  static constexpr std::size_t kMaxRecord = 64 << 10;
  static constexpr std::size_t kOverhead = 4 + crypto::kTagBytes;
  static constexpr std::size_t kOutBytes = 1 << 20;

  SecureChannel(int peer, const crypto::Key& tx_key, std::uint32_t tx_dir,
                const crypto::Key& rx_key, std::uint32_t rx_dir, bool encrypt);

  long write(int fd, const iovec* iov, int n, int* err);
  long read(int fd, void* dst, std::size_t len, int* err);
  // Sealed bytes still waiting for the socket.
  bool output_pending() const noexcept { return out_end_ > out_off_; }
  // Plaintext bytes sealed but not yet in the kernel.
  std::size_t plain_pending() const noexcept { return plain_pending_; }
  bool encrypts() const noexcept { return tx_.encrypts(); }

 private:
  long flush(int fd, int* err);  // plaintext bytes whose records are now fully written
  void open_record(std::uint32_t len, const std::uint8_t* rec, std::uint8_t* dst);

  int peer_;
  crypto::Aead tx_;
  crypto::Aead rx_;
  std::uint64_t tx_seq_ = 0;
  std::uint64_t rx_seq_ = 0;
  // Output: sealed records [out_off_, out_end_); per record (its end in out_, its plaintext).
  std::vector<std::uint8_t> out_;
  std::size_t out_off_ = 0;
  std::size_t out_end_ = 0;
  std::deque<std::pair<std::size_t, std::size_t>> records_;
  std::size_t plain_pending_ = 0;
  // Input: ciphertext [in_off_, in_end_); opened plaintext not yet read [plain_off_, plain_end_).
  std::vector<std::uint8_t> in_;
  std::size_t in_off_ = 0;
  std::size_t in_end_ = 0;
  std::vector<std::uint8_t> plain_;
  std::size_t plain_off_ = 0;
  std::size_t plain_end_ = 0;
};

}  // namespace ringpress::transport_impl

// The cryptography ringpress uses, as a thin layer over OpenSSL's libcrypto (internal header).
// Nothing here is a home-made primitive: HMAC-SHA256, HKDF-SHA256 (RFC 5869), AES-256-GCM and the
// random generator are libcrypto's; this file fixes the parameters, the labels and the API the
// transport and the store share. docs/security.md says why libcrypto and these choices.
//
// Contract
//   * JobKey: 32 bytes derived (HKDF) from the operator's key material (RINGPRESS_JOB_KEY or the
//     file RINGPRESS_JOB_KEY_FILE names, or the key= argument). The material itself is never
//     stored, sent or logged; only MACs computed with derived keys leave the process.
//   * Key material must carry at least 128 bits: 32+ characters (e.g. `openssl rand -hex 32`).
//     A key file must be a regular file that only its owner can read or write (like ssh keys).
//   * mac() and hkdf() bind a context label and every part given, each length-prefixed, so no
//     two different inputs produce the same MAC input.
//   * Aead: one direction of one link. Nonces are 96 bits: a 32-bit direction id and the 64-bit
//     record number, so a key never sees a nonce twice; the caller passes the record number it
//     expects, so a replayed, dropped or reordered record fails authentication. seal()/open()
//     may work in place (in == out). With encrypt=false the payload is authenticated (GMAC, as
//     additional data) and travels in clear.
//   * Failures of libcrypto itself raise InternalError; a record that fails authentication is
//     open() returning false (the caller raises TransportError naming the peer).
// Cost: AES-256-GCM with AES-NI + PCLMUL/VPCLMUL runs at several GB/s per core; HMAC and HKDF are
// a few microseconds, paid only at connection set-up.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace ringpress::crypto {

constexpr std::size_t kKeyBytes = 32;
constexpr std::size_t kMacBytes = 32;
constexpr std::size_t kNonceBytes = 32;  // handshake challenges
constexpr std::size_t kTagBytes = 16;    // AES-GCM tag
constexpr std::size_t kMinMaterialChars = 32;

using Key = std::array<std::uint8_t, kKeyBytes>;
using Mac = std::array<std::uint8_t, kMacBytes>;
using Nonce = std::array<std::uint8_t, kNonceBytes>;

// One part of a MAC or HKDF input.
struct Part {
  const void* data;
  std::size_t size;
  Part(const void* d, std::size_t n) : data(d), size(n) {}
  Part(std::string_view s) : data(s.data()), size(s.size()) {}  // NOLINT: implicit on purpose
  template <std::size_t N>
  Part(const std::array<std::uint8_t, N>& a) : data(a.data()), size(N) {}  // NOLINT
};

// Bytes from the operating system's generator (via libcrypto's RAND_bytes).
void random_bytes(void* out, std::size_t n);
Nonce random_nonce();
// Lowercase hex of `n` random bytes (fresh job keys, shm names).
std::string random_hex(std::size_t n);

// Constant-time comparison of two equal-length byte strings.
bool equal(const void* a, const void* b, std::size_t n);

// HMAC-SHA256(key, label || len(part) || part || ...).
Mac mac(const Key& key, std::string_view label, std::initializer_list<Part> parts);
// HKDF-SHA256 with `salt`, info = label || len(part) || part || ...; 32 bytes out.
Key hkdf(const Key& ikm, std::initializer_list<Part> salt, std::string_view label,
         std::initializer_list<Part> info);

// The job key from operator material (UsageError if it carries fewer than kMinMaterialChars).
Key job_key_from_material(std::string_view material);
// The material in a key file (UsageError if unreadable, not a regular file, readable or writable
// by group/others, empty, or larger than 4 KiB); trailing whitespace is dropped.
std::string read_key_file(const std::string& path);
// The job key this process is configured with: key= argument > RINGPRESS_JOB_KEY >
// RINGPRESS_JOB_KEY_FILE; nullopt-like `present=false` when none.
struct JobKey {
  bool present = false;
  Key key{};
};
JobKey configured_job_key(const std::string& material_argument);

// One direction of one link: AES-256-GCM with a 96-bit nonce (direction id, record number).
class Aead {
 public:
  Aead(const Key& key, std::uint32_t direction, bool encrypt);
  ~Aead();
  Aead(const Aead&) = delete;
  Aead& operator=(const Aead&) = delete;

  bool encrypts() const noexcept { return encrypt_; }
  // Seal record `seq`: `aad` (authenticated, not encrypted) and `n` payload bytes from `in`
  // (encrypted to `out`, or authenticated only and copied when in != out if !encrypts()).
  void seal(std::uint64_t seq, const void* aad, std::size_t aad_n, const std::uint8_t* in,
            std::uint8_t* out, std::size_t n, std::uint8_t tag[kTagBytes]);
  // The same as seal(), fed in pieces: begin, update (consecutive payload pieces), finish.
  void seal_begin(std::uint64_t seq, const void* aad, std::size_t aad_n);
  void seal_update(const std::uint8_t* in, std::uint8_t* out, std::size_t n);
  void seal_finish(std::uint8_t tag[kTagBytes]);
  // Open record `seq`; false when the tag does not verify (out then holds garbage).
  bool open(std::uint64_t seq, const void* aad, std::size_t aad_n, const std::uint8_t* in,
            std::uint8_t* out, std::size_t n, const std::uint8_t tag[kTagBytes]);

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
  std::uint32_t direction_;
  bool encrypt_;
};

// "OpenSSL 3.0.19 ..." of the libcrypto in use (build_info).
std::string library_version();

}  // namespace ringpress::crypto

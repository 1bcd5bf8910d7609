// The rank-to-rank connection handshake as pure functions (internal header): message layouts,
// checks and key derivation, so the fuzz target (tests/fuzz/fuzz_transport.cc) reaches all of it.
//
// Three fixed-size messages on a new TCP connection, from the connecting (higher) rank C to the
// accepting (lower) rank A; K is the 32-byte job key (crypto.h):
//   Hello  C -> A  48 B  magic "RPH3", version, flags (bit 0: encrypt), from = C, to = A, nonce_c
//   Reply  A -> C  72 B  magic "RPR3", from = A, nonce_a, mac_a = HMAC(K, "accept", T)
//   Proof  C -> A  36 B  magic "RPP3", mac_c = HMAC(K, "connect", T)
// where T = Hello || Reply's first 40 bytes (everything but the MAC). Each side proves knowledge of
// K over both fresh nonces, so neither a stranger nor a replayed capture gets through; the ranks,
// the job (K) and the encryption flag are bound by the MACs (no downgrade). The key never travels.
// Link keys: HKDF(K, salt = nonce_c || nonce_a, "ringpress link v3", from, to, direction), one per
// direction; see secure_channel.h for the records they protect.
// A acts on nothing but a complete 48-byte Hello and a complete 36-byte Proof: it never reads or
// allocates more than those fixed sizes for a connection that has not proven the key.
#pragma once

#include <cstdint>
#include <string>

#include "crypto.h"

namespace ringpress::handshake {

constexpr std::uint32_t kHelloMagic = 0x33485052u;  // "RPH3"
constexpr std::uint32_t kReplyMagic = 0x33525052u;  // "RPR3"
constexpr std::uint32_t kProofMagic = 0x33505052u;  // "RPP3"
constexpr std::uint16_t kVersion = 3;
constexpr std::uint16_t kFlagEncrypt = 1;

#pragma pack(push, 1)
struct Hello {
  std::uint32_t magic;
  std::uint16_t version;
  std::uint16_t flags;
  std::uint32_t from;
  std::uint32_t to;
  std::uint8_t nonce[crypto::kNonceBytes];
};
struct Reply {
  std::uint32_t magic;
  std::uint32_t from;
  std::uint8_t nonce[crypto::kNonceBytes];
  std::uint8_t mac[crypto::kMacBytes];
};
struct Proof {
  std::uint32_t magic;
  std::uint8_t mac[crypto::kMacBytes];
};
#pragma pack(pop)
static_assert(sizeof(Hello) == 48 && sizeof(Reply) == 72 && sizeof(Proof) == 36, "layouts");

// Which side of the pair (a, b) opens the connection: the higher rank, except in a grow, where
// the members (ranks below `first_joiner`) dial the joiners, so a joiner never reaches a member's
// listener before that member is ready for it (recovery.cc). Without joiners first_joiner = n.
inline bool dials(int a, int b, int first_joiner) {
  const bool a_joins = a >= first_joiner, b_joins = b >= first_joiner;
  return a_joins != b_joins ? b_joins : a > b;
}

Hello make_hello(int from, int to, bool encrypt);
// Why A (rank `me` of `n`, encrypt setting `encrypt`) must refuse this hello ("" = go on).
std::string check_hello(const Hello& h, int me, int n, bool encrypt, int first_joiner);
Reply make_reply(const crypto::Key& k, const Hello& h, int me);
// Why C must refuse A's reply ("" = A proved the key).
std::string check_reply(const crypto::Key& k, const Hello& h, const Reply& r);
Proof make_proof(const crypto::Key& k, const Hello& h, const Reply& r);
// Why A must refuse C's proof ("" = C proved the key).
std::string check_proof(const crypto::Key& k, const Hello& h, const Reply& r, const Proof& p);

// The two link keys of a connection that completed the handshake.
struct LinkKeys {
  crypto::Key c_to_a;
  crypto::Key a_to_c;
};
LinkKeys link_keys(const crypto::Key& k, const Hello& h, const Reply& r);

}  // namespace ringpress::handshake

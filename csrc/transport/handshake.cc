// The connection handshake (contract and layouts in handshake.h).
#include "handshake.h"

#include <cstring>

namespace ringpress::handshake {

namespace {

crypto::Mac transcript_mac(const crypto::Key& k, std::string_view label, const Hello& h,
                           const Reply& r) {
  return crypto::mac(k, label,
                     {crypto::Part(&h, sizeof h), crypto::Part(&r, offsetof(Reply, mac))});
}

}  // namespace

Hello make_hello(int from, int to, bool encrypt) {
  Hello h{};
  h.magic = kHelloMagic;
  h.version = kVersion;
  h.flags = encrypt ? kFlagEncrypt : 0;
  h.from = static_cast<std::uint32_t>(from);
  h.to = static_cast<std::uint32_t>(to);
  crypto::random_bytes(h.nonce, sizeof h.nonce);
  return h;
}

std::string check_hello(const Hello& h, int me, int n, bool encrypt, int first_joiner) {
  if (h.magic != kHelloMagic) return "not a ringpress handshake (bad magic)";
  if (h.version != kVersion) {
    return "handshake version " + std::to_string(h.version) + ", this rank speaks " +
           std::to_string(kVersion) + " (mixed ringpress versions in one job?)";
  }
  if ((h.flags & ~kFlagEncrypt) != 0) return "unknown handshake flags";
  if (h.to != static_cast<std::uint32_t>(me))
    return "addressed to rank " + std::to_string(h.to) + ", not this one";
  if (h.from >= static_cast<std::uint32_t>(n) || h.from == static_cast<std::uint32_t>(me) ||
      !dials(static_cast<int>(h.from), me, first_joiner))
    return "claims to be rank " + std::to_string(h.from) + ", which does not connect here";
  if (((h.flags & kFlagEncrypt) != 0) != encrypt) {
    return std::string("rank ") + std::to_string(h.from) + " has link encryption " +
           ((h.flags & kFlagEncrypt) ? "on" : "off") + ", this rank " + (encrypt ? "on" : "off") +
           " (RINGPRESS_ENCRYPT must be the same on every rank)";
  }
  return "";
}

Reply make_reply(const crypto::Key& k, const Hello& h, int me) {
  Reply r{};
  r.magic = kReplyMagic;
  r.from = static_cast<std::uint32_t>(me);
  crypto::random_bytes(r.nonce, sizeof r.nonce);
  const crypto::Mac m = transcript_mac(k, "ringpress accept v3", h, r);
  std::memcpy(r.mac, m.data(), m.size());
  return r;
}

std::string check_reply(const crypto::Key& k, const Hello& h, const Reply& r) {
  if (r.magic != kReplyMagic) return "not a ringpress handshake reply (bad magic)";
  if (r.from != h.to) return "the reply comes from rank " + std::to_string(r.from);
  const crypto::Mac m = transcript_mac(k, "ringpress accept v3", h, r);
  if (!crypto::equal(m.data(), r.mac, m.size()))
    return "the peer does not hold this job's key (wrong RINGPRESS_JOB_KEY, or not this job)";
  return "";
}

Proof make_proof(const crypto::Key& k, const Hello& h, const Reply& r) {
  Proof p{};
  p.magic = kProofMagic;
  const crypto::Mac m = transcript_mac(k, "ringpress connect v3", h, r);
  std::memcpy(p.mac, m.data(), m.size());
  return p;
}

std::string check_proof(const crypto::Key& k, const Hello& h, const Reply& r, const Proof& p) {
  if (p.magic != kProofMagic) return "not a ringpress handshake proof (bad magic)";
  const crypto::Mac m = transcript_mac(k, "ringpress connect v3", h, r);
  if (!crypto::equal(m.data(), p.mac, m.size()))
    return "wrong job key (the connection does not hold this job's key)";
  return "";
}

LinkKeys link_keys(const crypto::Key& k, const Hello& h, const Reply& r) {
  const std::uint32_t from = h.from, to = h.to;
  auto derive = [&](std::string_view dir) {
    return crypto::hkdf(
        k, {crypto::Part(h.nonce, sizeof h.nonce), crypto::Part(r.nonce, sizeof r.nonce)},
        "ringpress link v3", {crypto::Part(&from, 4), crypto::Part(&to, 4), crypto::Part(dir)});
  };
  return LinkKeys{derive("c->a"), derive("a->c")};
}

}  // namespace ringpress::handshake

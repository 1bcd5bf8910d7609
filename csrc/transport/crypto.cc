// Thin layer over libcrypto (contract in crypto.h).
#include "crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/opensslv.h>
#include <openssl/rand.h>
#include <sys/stat.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>

#include "ringpress/env.h"
#include "ringpress/error.h"

namespace ringpress::crypto {

namespace {

[[noreturn]] void fail(const char* what) {
  const unsigned long e = ERR_get_error();
  char buf[256] = {0};
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  RP_THROW(InternalError, "libcrypto: ", what, " failed", e ? ": " : "", buf);
}

// label || (u64 length || bytes) for each part: an unambiguous encoding of the parts.
std::vector<std::uint8_t> encode(std::string_view label, std::initializer_list<Part> parts) {
  std::size_t total = 8 + label.size();
  for (const Part& p : parts) total += 8 + p.size;
  std::vector<std::uint8_t> out;
  out.reserve(total);
  auto put = [&](const void* d, std::size_t n) {
    std::uint64_t len = n;
    const auto* l = reinterpret_cast<const std::uint8_t*>(&len);
    out.insert(out.end(), l, l + 8);
    const auto* b = static_cast<const std::uint8_t*>(d);
    out.insert(out.end(), b, b + n);
  };
  put(label.data(), label.size());
  for (const Part& p : parts) put(p.data, p.size);
  return out;
}

}  // namespace

void random_bytes(void* out, std::size_t n) {
  auto* p = static_cast<unsigned char*>(out);
  while (n > 0) {
    const int k = static_cast<int>(std::min<std::size_t>(n, 1 << 20));
    if (RAND_bytes(p, k) != 1) fail("RAND_bytes");
    p += k;
    n -= static_cast<std::size_t>(k);
  }
}

Nonce random_nonce() {
  Nonce n;
  random_bytes(n.data(), n.size());
  return n;
}

std::string random_hex(std::size_t n) {
  std::vector<unsigned char> raw(n);
  random_bytes(raw.data(), n);
  static const char* hex = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (unsigned char c : raw) {
    s += hex[c >> 4];
    s += hex[c & 15];
  }
  OPENSSL_cleanse(raw.data(), raw.size());
  return s;
}

bool equal(const void* a, const void* b, std::size_t n) {
  return CRYPTO_memcmp(a, b, n) == 0;
}

Mac mac(const Key& key, std::string_view label, std::initializer_list<Part> parts) {
  std::vector<std::uint8_t> msg = encode(label, parts);
  Mac out{};
  unsigned int len = 0;
  if (HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()), msg.data(), msg.size(),
           out.data(), &len) == nullptr ||
      len != out.size()) {
    fail("HMAC-SHA256");
  }
  return out;
}

Key hkdf(const Key& ikm, std::initializer_list<Part> salt, std::string_view label,
         std::initializer_list<Part> info) {
  std::vector<std::uint8_t> s = encode("salt", salt);
  std::vector<std::uint8_t> i = encode(label, info);
  EVP_KDF* kdf = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
  if (kdf == nullptr) fail("EVP_KDF_fetch(HKDF)");
  EVP_KDF_CTX* ctx = EVP_KDF_CTX_new(kdf);
  EVP_KDF_free(kdf);
  if (ctx == nullptr) fail("EVP_KDF_CTX_new");
  char digest[] = "SHA256";
  OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
                         OSSL_PARAM_construct_octet_string(
                             OSSL_KDF_PARAM_KEY, const_cast<std::uint8_t*>(ikm.data()), ikm.size()),
                         OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, s.data(), s.size()),
                         OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, i.data(), i.size()),
                         OSSL_PARAM_construct_end()};
  Key out{};
  const int ok = EVP_KDF_derive(ctx, out.data(), out.size(), params);
  EVP_KDF_CTX_free(ctx);
  if (ok != 1) fail("HKDF-SHA256");
  return out;
}

Key job_key_from_material(std::string_view material) {
  RP_ENFORCE(material.size() >= kMinMaterialChars, UsageError, "a job key needs at least ",
             kMinMaterialChars, " characters (e.g. `openssl rand -hex 32`), got ", material.size());
  // The material may be any string; a fixed HMAC key turns it into uniform key bytes first.
  Key zero{};
  Mac prk = mac(zero, "ringpress job key material v1", {material});
  Key k;
  std::memcpy(k.data(), prk.data(), k.size());
  return hkdf(k, {}, "ringpress job key v1", {});
}

std::string read_key_file(const std::string& path) {
  struct stat st {};
  RP_ENFORCE(::stat(path.c_str(), &st) == 0, UsageError, "job key file ", path,
             " cannot be read: ", std::strerror(errno));
  RP_ENFORCE(S_ISREG(st.st_mode), UsageError, "job key file ", path, " is not a regular file");
  RP_ENFORCE((st.st_mode & 077) == 0, UsageError, "job key file ", path,
             " is accessible by group or others (mode ", std::oct, (st.st_mode & 0777),
             "); make it owner-only: chmod 600 ", path);
  RP_ENFORCE(st.st_size > 0 && st.st_size <= 4096, UsageError, "job key file ", path, " holds ",
             st.st_size, " bytes (expected 1..4096)");
  std::FILE* f = std::fopen(path.c_str(), "rb");
  RP_ENFORCE(f != nullptr, UsageError, "job key file ", path,
             " cannot be opened: ", std::strerror(errno));
  std::string s(static_cast<std::size_t>(st.st_size), '\0');
  const std::size_t got = std::fread(s.data(), 1, s.size(), f);
  std::fclose(f);
  s.resize(got);
  while (!s.empty() &&
         (s.back() == '\n' || s.back() == '\r' || s.back() == ' ' || s.back() == '\t'))
    s.pop_back();
  RP_ENFORCE(!s.empty(), UsageError, "job key file ", path, " is empty");
  return s;
}

JobKey configured_job_key(const std::string& material_argument) {
  JobKey k;
  std::string material = material_argument;
  if (material.empty()) {
    if (auto v = env::raw("RINGPRESS_JOB_KEY")) {
      material = *v;
    } else if (auto f = env::raw("RINGPRESS_JOB_KEY_FILE")) {
      material = read_key_file(*f);
    }
  }
  if (material.empty()) return k;
  k.key = job_key_from_material(material);
  k.present = true;
  OPENSSL_cleanse(material.data(), material.size());
  return k;
}

// ------------------------------------------------------------------ AEAD

struct Aead::Ctx {
  EVP_CIPHER_CTX* enc = nullptr;
  EVP_CIPHER_CTX* dec = nullptr;
  ~Ctx() {
    EVP_CIPHER_CTX_free(enc);
    EVP_CIPHER_CTX_free(dec);
  }
};

namespace {

void make_iv(std::uint32_t direction, std::uint64_t seq, unsigned char iv[12]) {
  std::memcpy(iv, &direction, 4);
  std::memcpy(iv + 4, &seq, 8);
}

// EVP_*Update takes int lengths: feed `n` bytes in pieces.
template <typename F>
void in_pieces(std::size_t n, F&& f) {
  std::size_t off = 0;
  do {
    const std::size_t k = std::min<std::size_t>(n - off, 1u << 30);
    f(off, static_cast<int>(k));
    off += k;
  } while (off < n);
}

}  // namespace

Aead::Aead(const Key& key, std::uint32_t direction, bool encrypt)
    : ctx_(std::make_unique<Ctx>()), direction_(direction), encrypt_(encrypt) {
  ctx_->enc = EVP_CIPHER_CTX_new();
  ctx_->dec = EVP_CIPHER_CTX_new();
  if (!ctx_->enc || !ctx_->dec) fail("EVP_CIPHER_CTX_new");
  if (EVP_EncryptInit_ex(ctx_->enc, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1 ||
      EVP_DecryptInit_ex(ctx_->dec, EVP_aes_256_gcm(), nullptr, key.data(), nullptr) != 1) {
    fail("AES-256-GCM key set-up");
  }
}

Aead::~Aead() = default;

void Aead::seal_begin(std::uint64_t seq, const void* aad, std::size_t aad_n) {
  unsigned char iv[12];
  make_iv(direction_, seq, iv);
  EVP_CIPHER_CTX* c = ctx_->enc;
  int len = 0;
  if (EVP_EncryptInit_ex(c, nullptr, nullptr, nullptr, iv) != 1) fail("AES-GCM seal init");
  if (aad_n > 0 && EVP_EncryptUpdate(c, nullptr, &len, static_cast<const unsigned char*>(aad),
                                     static_cast<int>(aad_n)) != 1) {
    fail("AES-GCM seal (header)");
  }
}

void Aead::seal_update(const std::uint8_t* in, std::uint8_t* out, std::size_t n) {
  if (n == 0) return;
  EVP_CIPHER_CTX* c = ctx_->enc;
  int len = 0;
  if (encrypt_) {
    in_pieces(n, [&](std::size_t off, int k) {
      if (EVP_EncryptUpdate(c, out + off, &len, in + off, k) != 1) fail("AES-GCM seal");
    });
  } else {
    in_pieces(n, [&](std::size_t off, int k) {
      if (EVP_EncryptUpdate(c, nullptr, &len, in + off, k) != 1) fail("GMAC seal");
    });
    if (out != in) std::memcpy(out, in, n);
  }
}

void Aead::seal_finish(std::uint8_t tag[kTagBytes]) {
  EVP_CIPHER_CTX* c = ctx_->enc;
  int len = 0;
  if (EVP_EncryptFinal_ex(c, nullptr, &len) != 1) fail("AES-GCM seal final");
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, kTagBytes, tag) != 1) fail("AES-GCM tag");
}

void Aead::seal(std::uint64_t seq, const void* aad, std::size_t aad_n, const std::uint8_t* in,
                std::uint8_t* out, std::size_t n, std::uint8_t tag[kTagBytes]) {
  seal_begin(seq, aad, aad_n);
  seal_update(in, out, n);
  seal_finish(tag);
}

bool Aead::open(std::uint64_t seq, const void* aad, std::size_t aad_n, const std::uint8_t* in,
                std::uint8_t* out, std::size_t n, const std::uint8_t tag[kTagBytes]) {
  unsigned char iv[12];
  make_iv(direction_, seq, iv);
  EVP_CIPHER_CTX* c = ctx_->dec;
  int len = 0;
  if (EVP_DecryptInit_ex(c, nullptr, nullptr, nullptr, iv) != 1) fail("AES-GCM open init");
  if (aad_n > 0 && EVP_DecryptUpdate(c, nullptr, &len, static_cast<const unsigned char*>(aad),
                                     static_cast<int>(aad_n)) != 1) {
    fail("AES-GCM open (header)");
  }
  if (n > 0) {
    if (encrypt_) {
      in_pieces(n, [&](std::size_t off, int k) {
        if (EVP_DecryptUpdate(c, out + off, &len, in + off, k) != 1) fail("AES-GCM open");
      });
    } else {
      in_pieces(n, [&](std::size_t off, int k) {
        if (EVP_DecryptUpdate(c, nullptr, &len, in + off, k) != 1) fail("GMAC open");
      });
      if (out != in) std::memcpy(out, in, n);
    }
  }
  if (EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, kTagBytes, const_cast<std::uint8_t*>(tag)) != 1)
    fail("AES-GCM set tag");
  return EVP_DecryptFinal_ex(c, nullptr, &len) == 1;
}

std::string library_version() {
  return OpenSSL_version(OPENSSL_VERSION);
}

}  // namespace ringpress::crypto

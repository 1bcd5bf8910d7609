// The sparse wire codecs' shared payload, decoder and error feedback (contract and cost:
// sparse_payload.h).
#include "sparse_payload.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "ringpress/error.h"
#include "ringpress/quantize.h"

namespace ringpress::wire_codecs {
namespace {
constexpr std::size_t kMaxElements = 0xffffffffu;  // indices are u32
}  // namespace

SparseCodec::SparseCodec(const CodecParams& p) : half_(p.values == "fp16") {}

std::size_t SparseCodec::k_of(double ratio, std::size_t n) {
  return std::min<std::size_t>(n,
                               static_cast<std::size_t>(std::ceil(ratio * static_cast<double>(n))));
}

void SparseCodec::check_values(const CodecParams& p) {
  RP_ENFORCE(p.values == "fp32" || p.values == "fp16", UsageError,
             "sparse values must be 'fp32' or 'fp16', got '", p.values, "'");
}

std::size_t SparseCodec::bound(std::size_t count) const {
  RP_ENFORCE_LE(count, kMaxElements, UsageError,
                "sparse codecs handle at most 2^32 - 1 elements, got ", count);
  const std::size_t m = std::min(count, max_selected(count));
  return 8 + topk::indices_max_encoded_size(m) + m * (half_ ? 2 : 4);
}

void SparseCodec::checked_select(const float* x, std::size_t n, std::uint64_t seed) {
  RP_ENFORCE_LE(n, kMaxElements, UsageError, "sparse codecs handle at most 2^32 - 1 elements, got ",
                n);
  select(x, n, seed, &sv_);
  half_values();
}

void SparseCodec::half_values() {
  if (half_) {
    if (h_.size() < sv_.size()) h_.resize(sv_.size());
    quant::fp32_to_fp16(sv_.values.data(), sv_.size(), h_.data());
  }
}

void SparseCodec::select_accumulate(const float* g, float* r, std::size_t n, std::uint64_t seed,
                                    topk::SparseVector* sv) {
  std::uint32_t bad = 0;  // any sum with an all-ones exponent (NaN, Inf): integer ops vectorize
  for (std::size_t i = 0; i < n; ++i) {
    r[i] += g[i];
    std::uint32_t b;
    std::memcpy(&b, &r[i], 4);
    bad |= static_cast<std::uint32_t>((b & 0x7f800000u) == 0x7f800000u);
  }
  r_nonfinite_ = bad != 0;
  select(r, n, seed, sv);
}

std::size_t SparseCodec::write(std::size_t n, void* out) {
  auto* o = static_cast<unsigned char*>(out);
  const std::size_t k = sv_.size();
  const std::size_t ib =
      topk::encode_indices(sv_.indices.data(), k, n, o + 8, topk::indices_max_encoded_size(k));
  const std::uint64_t ib64 = ib;
  std::memcpy(o, &ib64, 8);
  const std::size_t vb = k * (half_ ? 2 : 4);
  if (k > 0)
    std::memcpy(o + 8 + ib, half_ ? static_cast<const void*>(h_.data()) : sv_.values.data(), vb);
  return 8 + ib + vb;
}

std::size_t SparseCodec::encode(const void* src, std::size_t count, void* out, std::uint64_t seed) {
  checked_select(static_cast<const float*>(src), count, seed);
  return write(count, out);
}

void SparseCodec::decode(const void* in, std::size_t len, void* dst, std::size_t count,
                         bool reduce) {
  auto* dense = static_cast<float*>(dst);
  const auto* p = static_cast<const unsigned char*>(in);
  RP_ENFORCE(len >= 8, WireFormatError, "a sparse payload of ", len, " bytes");
  // Indices are u32: no sparse payload stands for more elements (and count * 4 cannot wrap).
  RP_ENFORCE_LE(count, kMaxElements, WireFormatError,
                "a sparse payload cannot stand for more than 2^32 - 1 elements, asked for ", count);
  std::uint64_t ib = 0;
  std::memcpy(&ib, p, 8);
  RP_ENFORCE(ib <= len - 8, WireFormatError, "a sparse payload with an index block of ", ib,
             " bytes in ", len);
  const std::size_t k = topk::indices_decoded_count(p + 8, ib);
  const std::size_t vsize = half_ ? 2 : 4;
  RP_ENFORCE(k <= count && (len - 8 - ib) == k * vsize, WireFormatError, "a sparse payload with ",
             k, " indices but ", len - 8 - ib, " value bytes (", vsize, " per value, ", count,
             " elements)");
  if (reduce && !half_) {  // one pass: each block of indices decoded, checked, then added
    if (k > 0) topk::decode_indices_add(p + 8, ib, count, p + 8 + ib, dense);
    return;
  }
  if (k > 0) {
    idx_.resize(k);
    val_.resize(k);
    topk::decode_indices(p + 8, ib, count, idx_.data(), k);  // validates every index
    if (half_) {
      if (h_.size() < k) h_.resize(k);
      std::memcpy(h_.data(), p + 8 + ib, k * 2);
      quant::fp16_to_fp32(h_.data(), k, val_.data());
    } else {
      std::memcpy(val_.data(), p + 8 + ib, k * sizeof(float));
    }
  }
  if (reduce) {
    if (k > 0) topk::scatter_add(idx_.data(), val_.data(), k, dense, count);
    return;
  }
  // Plain decode writes the values (a -0.0 stays -0.0; the indices are distinct).
  if (count) std::memset(dense, 0, count * sizeof(float));
  for (std::size_t j = 0; j < k; ++j) dense[idx_[j]] = val_[j];
}

std::size_t SparseCodec::encode_feedback(float* x, float* r, std::size_t count, void* out,
                                         std::uint64_t seed, bool keep) {
  r_nonfinite_ = -1;
  checked_select(x, count, seed);
  const std::size_t bytes = write(count, out);
  const std::size_t k = sv_.size();
  if (r != x && count) std::memcpy(r, x, count * sizeof(float));
  fix_residual(r, count);
  const float* sent = half_ && k > 0 ? val_.data() : sv_.values.data();
  if (keep) {
    if (count) std::memset(x, 0, count * sizeof(float));
    for (std::size_t j = 0; j < k; ++j) x[sv_.indices[j]] = sent[j];
  }
  return bytes;
}

std::size_t SparseCodec::encode_feedback_add(const float* g, float* r, std::size_t count, void* out,
                                             std::uint64_t seed) {
  RP_ENFORCE_LE(count, kMaxElements, UsageError,
                "sparse codecs handle at most 2^32 - 1 elements, got ", count);
  r_nonfinite_ = -1;
  select_accumulate(g, r, count, seed, &sv_);  // r = x' = r + g from here on
  half_values();
  const std::size_t bytes = write(count, out);
  fix_residual(r, count);
  return bytes;
}

void SparseCodec::fix_residual(float* r, std::size_t n) {
  // r = x - decode(out): x where nothing was sent; at a sent entry x - x' (x' = the value as
  // sent; 0 where x' is x bit for bit). sv_.values holds the original x there (r may alias x).
  const std::size_t k = sv_.size();
  const float* sent = sv_.values.data();
  if (half_ && k > 0) {
    val_.resize(k);
    quant::fp16_to_fp32(h_.data(), k, val_.data());
    sent = val_.data();
  }
  constexpr std::size_t kAhead = 32;  // scattered lines of a large r: several misses in flight
  for (std::size_t j = 0; j < k; ++j) {
    if (j + kAhead < k) __builtin_prefetch(r + sv_.indices[j + kAhead], 1);
    const float v = sv_.values[j], d = sent[j];
    // (0 also where the sent value is not finite: an fp16 overflow; codec.h)
    r[sv_.indices[j]] = std::memcmp(&v, &d, sizeof(float)) == 0 ? 0.0f : feedback_residual(v, d);
  }
  // Nor does a non-finite value that was not sent. topk and threshold rank NaN and +-Inf above
  // every number, so one can stay unsent only when what was sent holds a non-finite value too:
  // only then (an overflow step) is r read again, to clear them. Others (randomk) know from the
  // add pass, or look.
  std::uint32_t top = 0;
  for (std::size_t j = 0; j < k; ++j) {
    std::uint32_t b;
    std::memcpy(&b, &sv_.values[j], 4);
    top = std::max(top, b & 0x7fffffffu);
  }
  bool clear = top >= 0x7f800000u;
  if (!clear && !sends_nonfinite_first()) {
    if (r_nonfinite_ >= 0) {
      clear = r_nonfinite_ == 1;
    } else {
      std::uint32_t bad = 0;
      for (std::size_t i = 0; i < n; ++i) {
        std::uint32_t b;
        std::memcpy(&b, &r[i], 4);
        bad |= static_cast<std::uint32_t>((b & 0x7f800000u) == 0x7f800000u);
      }
      clear = bad != 0;
    }
  }
  if (clear) {
    for (std::size_t i = 0; i < n; ++i) r[i] = std::isfinite(r[i]) ? r[i] : 0.0f;
  }
}

}  // namespace ringpress::wire_codecs

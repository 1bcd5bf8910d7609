// Index coding for sparse vectors (delta + per-block bit packing) and scatter-add.
//
// Format (little-endian; ringpress/topk.h): u32 count, then ceil(count / 128) blocks, each
//   u8 width w (0..32) | ceil(m * w / 8) bytes: m deltas of w bits, LSB-first,
// with m = 128 except for the last block; delta_0 = idx_0, delta_i = idx_i - idx_{i-1} - 1.
// Size: 4 + sum over blocks of (1 + ceil(m * w / 8)) bytes; at most 4 + blocks + 4 * count.
// Decoding guarantees: reads only [in, in + len); WireFormatError for len < 4, count > universe,
// a missing width byte, w > 32, missing packed bytes, an index >= universe (which also catches
// 32-bit wrap-around; increase is structural), or bytes left after the last block; UsageError
// when count > out_capacity. On error, out[] may have been partly written.
// Cost: encode and decode are one pass over the indices (a 64-bit bit accumulator).
// scatter_add validates every index (< n) before touching dense, then adds. decode_indices_add
// decodes and adds in the same pass, a checked block of 128 at a time (no index array).
#include <algorithm>
#include <cstring>
#include <limits>

#include "ringpress/error.h"
#include "topk_internal.h"

namespace ringpress::topk {
namespace {

constexpr std::size_t kBlock = 128;
constexpr std::uint64_t kMaxUniverse = std::uint64_t{1} << 32;

void validate_indices(const std::uint32_t* idx, std::size_t count, std::size_t universe) {
  RP_ENFORCE(count == 0 || idx != nullptr, UsageError, "idx is null");
  RP_ENFORCE_LE(std::uint64_t{universe}, kMaxUniverse, UsageError, "indices are uint32");
  RP_ENFORCE_LE(count, universe, UsageError, "more indices than the universe holds");
  if (count == 0) return;
  bool ok = idx[count - 1] < universe;
  for (std::size_t i = 1; i < count; ++i) ok &= idx[i] > idx[i - 1];
  RP_ENFORCE(ok, UsageError, "indices must be strictly ascending and < universe (", universe, ")");
}

// Width of block [b, e): bits of the largest delta.
int block_width(const std::uint32_t* idx, std::size_t b, std::size_t e) {
  std::uint32_t acc = b == 0 ? idx[0] : idx[b] - idx[b - 1] - 1;
  for (std::size_t i = b + 1; i < e; ++i) acc |= idx[i] - idx[i - 1] - 1;
  return acc ? 32 - __builtin_clz(acc) : 0;
}

std::size_t encoded_size_unchecked(const std::uint32_t* idx, std::size_t count) {
  std::size_t size = 4;
  for (std::size_t b = 0; b < count; b += kBlock) {
    const std::size_t e = std::min(count, b + kBlock);
    size += 1 + ((e - b) * static_cast<std::size_t>(block_width(idx, b, e)) + 7) / 8;
  }
  return size;
}

}  // namespace

std::size_t indices_max_encoded_size(std::size_t count) noexcept {
  return 4 + (count + kBlock - 1) / kBlock + 4 * count;
}

std::size_t indices_encoded_size(const std::uint32_t* idx, std::size_t count,
                                 std::size_t universe) {
  ScopedErrorContext ctx("topk.indices_encoded_size");
  validate_indices(idx, count, universe);
  return encoded_size_unchecked(idx, count);
}

std::size_t encode_indices(const std::uint32_t* idx, std::size_t count, std::size_t universe,
                           void* out, std::size_t capacity) {
  ScopedErrorContext ctx("topk.encode_indices");
  validate_indices(idx, count, universe);
  RP_ENFORCE(out != nullptr, UsageError, "out is null");
  const std::size_t need = encoded_size_unchecked(idx, count);
  RP_ENFORCE_LE(need, capacity, UsageError, "output buffer too small");
  auto* p = static_cast<std::uint8_t*>(out);
  const auto c32 = static_cast<std::uint32_t>(count);
  for (int j = 0; j < 4; ++j) p[j] = static_cast<std::uint8_t>(c32 >> (8 * j));
  p += 4;
  for (std::size_t b = 0; b < count; b += kBlock) {
    const std::size_t e = std::min(count, b + kBlock);
    const int w = block_width(idx, b, e);
    *p++ = static_cast<std::uint8_t>(w);
    if (w == 0) continue;
    std::uint64_t acc = 0;
    int bits = 0;
    for (std::size_t i = b; i < e; ++i) {
      const std::uint32_t d = i == 0 ? idx[0] : idx[i] - idx[i - 1] - 1;
      acc |= std::uint64_t{d} << bits;
      bits += w;
      while (bits >= 8) {
        *p++ = static_cast<std::uint8_t>(acc);
        acc >>= 8;
        bits -= 8;
      }
    }
    if (bits > 0) *p++ = static_cast<std::uint8_t>(acc);
  }
  const std::size_t written = static_cast<std::size_t>(p - static_cast<std::uint8_t*>(out));
  RP_ENFORCE_EQ(written, need, InternalError, "encoded size mismatch");
  return written;
}

std::size_t indices_decoded_count(const void* in, std::size_t len) {
  ScopedErrorContext ctx("topk.decode_indices");
  RP_ENFORCE(in != nullptr || len == 0, UsageError, "in is null");
  RP_ENFORCE_GE(len, std::size_t{4}, WireFormatError, "index stream truncated (no count)");
  const auto* p = static_cast<const std::uint8_t*>(in);
  return std::size_t{p[0]} | std::size_t{p[1]} << 8 | std::size_t{p[2]} << 16 |
         std::size_t{p[3]} << 24;
}

namespace {

// Decodes the stream block by block (up to kBlock indices into idx, all checked < universe) and
// hands each block to on_block(idx, first, m) before decoding the next. WireFormatError on any
// malformation, UsageError if the count exceeds capacity; the blocks already handed over stay
// handed over. Returns the count.
template <class OnBlock>
std::size_t decode_blocks(const void* in, std::size_t len, std::size_t universe,
                          std::size_t capacity, OnBlock&& on_block) {
  const std::size_t count = indices_decoded_count(in, len);
  ScopedErrorContext ctx("topk.decode_indices");
  RP_ENFORCE_LE(std::uint64_t{universe}, kMaxUniverse, UsageError, "indices are uint32");
  RP_ENFORCE_LE(count, universe, WireFormatError, "index count exceeds the universe");
  RP_ENFORCE_LE(count, capacity, UsageError, "output too small for the decoded indices");
  const auto* p = static_cast<const std::uint8_t*>(in);
  std::size_t pos = 4;
  std::uint64_t next = 0;  // smallest value the next index may take (prev + 1)
  std::uint32_t idx[kBlock];
  for (std::size_t b = 0; b < count; b += kBlock) {
    const std::size_t m = std::min(count - b, kBlock);
    RP_ENFORCE_LT(pos, len, WireFormatError, "index stream truncated (block width)");
    const unsigned w = p[pos++];
    RP_ENFORCE_LE(w, 32u, WireFormatError, "bad bit width in index block");
    const std::size_t nb = (m * w + 7) / 8;
    RP_ENFORCE_LE(nb, len - pos, WireFormatError, "index stream truncated (packed deltas)");
    const std::uint8_t* q = p + pos;
    const std::uint64_t mask = (std::uint64_t{1} << w) - 1;
    std::uint64_t acc = 0;
    unsigned bits = 0;
    for (std::size_t i = 0; i < m; ++i) {
      while (bits < w) {  // consumes exactly nb bytes over the block
        acc |= std::uint64_t{*q++} << bits;
        bits += 8;
      }
      const std::uint64_t v = next + (acc & mask);
      acc >>= w;
      bits -= w;
      idx[i] = static_cast<std::uint32_t>(v);
      next = v + 1;
    }
    // Values increase within the block, so checking the last one bounds them all.
    RP_ENFORCE_LE(next, std::uint64_t{universe}, WireFormatError, "index out of range (universe ",
                  universe, ")");
    on_block(idx, b, m);
    pos += nb;
  }
  RP_ENFORCE_EQ(pos, len, WireFormatError, "trailing bytes after the index stream");
  return count;
}

}  // namespace

std::size_t decode_indices(const void* in, std::size_t len, std::size_t universe,
                           std::uint32_t* out, std::size_t out_capacity) {
  RP_ENFORCE(out != nullptr || out_capacity == 0, UsageError, "out is null");
  return decode_blocks(in, len, universe, out_capacity,
                       [&](const std::uint32_t* idx, std::size_t b, std::size_t m) {
                         std::memcpy(out + b, idx, m * sizeof(std::uint32_t));
                       });
}

std::size_t decode_indices_add(const void* in, std::size_t len, std::size_t universe,
                               const void* values, float* dense) {
  const auto* v = static_cast<const unsigned char*>(values);
  return decode_blocks(in, len, universe, universe,
                       [&](const std::uint32_t* idx, std::size_t b, std::size_t m) {
                         for (std::size_t i = 0; i < m; ++i) {
                           // scattered lines of a large dense: several misses in flight
                           if (i + 16 < m) __builtin_prefetch(dense + idx[i + 16], 1);
                           float x;
                           std::memcpy(&x, v + (b + i) * sizeof(float), sizeof(float));
                           dense[idx[i]] += x;
                         }
                       });
}

void scatter_add(const std::uint32_t* idx, const float* val, std::size_t count, float* dense,
                 std::size_t n) {
  ScopedErrorContext ctx("topk.scatter_add");
  if (count == 0) return;
  RP_ENFORCE(idx != nullptr && val != nullptr && dense != nullptr, UsageError, "null pointer");
  std::uint32_t mx = 0;
  for (std::size_t i = 0; i < count; ++i) mx = std::max(mx, idx[i]);
  RP_ENFORCE_LT(std::size_t{mx}, n, UsageError, "scatter index out of range");
  constexpr std::size_t kAhead = 32;  // scattered lines of a large dense: misses in flight
  for (std::size_t i = 0; i < count; ++i) {
    if (i + kAhead < count) __builtin_prefetch(dense + idx[i + kAhead], 1);
    dense[idx[i]] += val[i];
  }
}

}  // namespace ringpress::topk

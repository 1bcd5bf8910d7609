// Frame header/table writer and validating parser (docs/wire-format.md, version 1).
// Every byte comes from the network: read with explicit little-endian loads, check every field
// before use, and overflow-check every size computation. No field is trusted to size an
// allocation: a coded block may claim at most kMaxExpansion(codec) x its stored bytes (the most
// an lz4 block or an RFC 8878 zstd frame can expand), so a frame's nbytes is justified by the
// bytes present before any caller allocates its output.
#include <xxhash.h>

#include <cstring>

#include "ringpress/checked.h"
#include "ringpress/error.h"
#include "ringpress/hash.h"
#include "ringpress/wire.h"

namespace ringpress::wire {
namespace {

std::uint16_t ld16(const std::uint8_t* p) {
  return std::uint16_t(p[0] | (p[1] << 8));
}
std::uint32_t ld32(const std::uint8_t* p) {
  return std::uint32_t(p[0]) | (std::uint32_t(p[1]) << 8) | (std::uint32_t(p[2]) << 16) |
         (std::uint32_t(p[3]) << 24);
}
std::uint64_t ld64(const std::uint8_t* p) {
  return ld32(p) | (std::uint64_t(ld32(p + 4)) << 32);
}
void st16(std::uint8_t* p, std::uint16_t v) {
  p[0] = std::uint8_t(v);
  p[1] = std::uint8_t(v >> 8);
}
void st32(std::uint8_t* p, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = std::uint8_t(v >> (8 * i));
}
void st64(std::uint8_t* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = std::uint8_t(v >> (8 * i));
}

std::uint32_t header_check(const std::uint8_t* buf, std::size_t table_bytes) {
  // Header bytes [0, 28) then shape + table, which directly follow the 32-byte header.
  XXH3_state_t* st = XXH3_createState();
  XXH3_64bits_reset(st);
  XXH3_64bits_update(st, buf, 28);
  XXH3_64bits_update(st, buf + kHeaderSize, table_bytes);
  const std::uint64_t h = XXH3_64bits_digest(st);
  XXH3_freeState(st);
  return std::uint32_t(h);
}

}  // namespace

std::uint64_t max_expansion(Codec c) noexcept {
  switch (c) {
    case Codec::kNone: return 1;
    // An lz4 sequence costs >= 3 bytes (token, offset) plus one byte per 255 of match length.
    case Codec::kLz4: return 255;
    // RFC 8878: a block decodes to at most Block_Maximum_Size = 128 KiB and costs >= 4 bytes
    // (3-byte header + 1: an RLE block); the frame header adds >= 6 more.
    case Codec::kZstd: return 32768;
  }
  return 1;
}

const char* codec_name(Codec c) noexcept {
  switch (c) {
    case Codec::kNone: return "none";
    case Codec::kLz4: return "lz4";
    case Codec::kZstd: return "zstd";
  }
  return "unknown";
}

std::uint64_t checksum(const void* data, std::size_t len) noexcept {
  return xxh3_64(data, len);
}

std::uint64_t table_end(int ndim, std::uint64_t nblocks) noexcept {
  return kHeaderSize + 8ull * std::uint64_t(ndim) + kBlockEntrySize * nblocks;
}

void write_header_and_table(std::uint8_t* dst, const FrameInfo& info) {
  std::memset(dst, 0, kHeaderSize);
  std::memcpy(dst, kMagic, 4);
  dst[4] = kVersion;
  dst[5] = 0;
  dst[6] = static_cast<std::uint8_t>(info.dtype);
  dst[7] = static_cast<std::uint8_t>(info.ndim);
  dst[8] = static_cast<std::uint8_t>(info.codec);
  dst[9] = info.codec == Codec::kNone ? 0 : kCodecVersion;
  dst[10] = static_cast<std::uint8_t>(info.level);
  dst[11] = static_cast<std::uint8_t>(info.elemsize);
  st32(dst + 12, info.block_size);
  st64(dst + 16, info.nbytes);
  st32(dst + 24, static_cast<std::uint32_t>(info.blocks.size()));
  std::uint8_t* p = dst + kHeaderSize;
  for (int d = 0; d < info.ndim; ++d, p += 8) st64(p, info.shape[d]);
  for (const BlockEntry& b : info.blocks) {
    st32(p, b.stored_size);
    p[4] = static_cast<std::uint8_t>(b.filter);
    p[5] = static_cast<std::uint8_t>(b.coding);
    st16(p + 6, b.plane_mask);
    st64(p + 8, b.checksum);
    p += kBlockEntrySize;
  }
  const std::size_t table_bytes = std::size_t(p - (dst + kHeaderSize));
  st32(dst + 28, header_check(dst, table_bytes));
}

namespace {

// Checks of the fixed header shared by frame_size() and parse_frame().
void parse_fixed(const std::uint8_t* b, std::size_t len, FrameInfo& info, std::uint64_t& nblocks) {
  RP_ENFORCE_GE(len, kHeaderSize, WireFormatError, "buffer too short for a frame header");
  if (std::memcmp(b, kMagic, 4) != 0) {
    RP_THROW(WireFormatError, "bad magic: not a ringpress frame (first bytes ", int(b[0]), " ",
             int(b[1]), " ", int(b[2]), " ", int(b[3]), ", expected 82 80 90 70 'RPZF')");
  }
  RP_ENFORCE_EQ(b[4], kVersion, WireFormatError, "unsupported frame format version");
  RP_ENFORCE_EQ(b[5], 0, WireFormatError, "reserved header flags must be zero");
  RP_ENFORCE(dtype_valid(b[6]), WireFormatError, "unknown dtype code ", int(b[6]));
  info.dtype = static_cast<DType>(b[6]);
  RP_ENFORCE_LE(b[7], kMaxNdim, WireFormatError, "too many dimensions");
  info.ndim = b[7];
  RP_ENFORCE_LE(b[8], 2, WireFormatError, "unknown codec id");
  info.codec = static_cast<Codec>(b[8]);
  const std::uint8_t want_cv = info.codec == Codec::kNone ? 0 : kCodecVersion;
  RP_ENFORCE_EQ(b[9], want_cv, WireFormatError, "unsupported codec version for ",
                codec_name(info.codec));
  info.level = static_cast<std::int8_t>(b[10]);
  info.elemsize = b[11];
  RP_ENFORCE_EQ(info.elemsize, dtype_size(info.dtype), WireFormatError,
                "element size does not match dtype ", dtype_name(info.dtype));
  info.block_size = ld32(b + 12);
  RP_ENFORCE_GT(info.block_size, 0u, WireFormatError, "block size must be positive");
  RP_ENFORCE_LE(info.block_size, kMaxBlockSize, WireFormatError, "block size too large");
  RP_ENFORCE_EQ(info.block_size % info.elemsize, 0u, WireFormatError,
                "block size must be a multiple of the element size ", info.elemsize);
  info.nbytes = ld64(b + 16);
  RP_ENFORCE_LE(info.nbytes, (1ull << 62), WireFormatError, "decoded size too large");
  nblocks = ld32(b + 24);
  const std::uint64_t want_blocks = (info.nbytes + info.block_size - 1) / info.block_size;
  RP_ENFORCE_EQ(nblocks, want_blocks, WireFormatError,
                "block count does not match nbytes / block size");
}

}  // namespace

std::uint64_t frame_size(const void* buf, std::size_t len) {
  ScopedErrorContext ctx("frame_size");
  const auto* b = static_cast<const std::uint8_t*>(buf);
  FrameInfo info;
  std::uint64_t nblocks = 0;
  parse_fixed(b, len, info, nblocks);
  const std::uint64_t tend = table_end(info.ndim, nblocks);
  RP_ENFORCE_GE(std::uint64_t(len), tend, WireFormatError, "buffer too short for the block table");
  std::uint64_t total = tend;
  const std::uint8_t* p = b + kHeaderSize + 8 * info.ndim;
  for (std::uint64_t i = 0; i < nblocks; ++i, p += kBlockEntrySize) {
    total = checked_add<WireFormatError>(total, std::uint64_t(ld32(p)), "frame size");
  }
  return total;
}

FrameInfo parse_frame(const void* buf, std::size_t len) {
  ScopedErrorContext ctx("decode_frame");
  const auto* b = static_cast<const std::uint8_t*>(buf);
  FrameInfo info;
  std::uint64_t nblocks = 0;
  parse_fixed(b, len, info, nblocks);
  const std::uint64_t tend = table_end(info.ndim, nblocks);
  RP_ENFORCE_GE(std::uint64_t(len), tend, WireFormatError,
                "frame truncated inside its block table");
  RP_ENFORCE_EQ(ld32(b + 28), header_check(b, std::size_t(tend - kHeaderSize)), WireFormatError,
                "header checksum mismatch (corrupt header, shape or block table)");

  // Shape.
  const std::uint8_t* p = b + kHeaderSize;
  unsigned __int128 elems = 1;
  for (int d = 0; d < info.ndim; ++d, p += 8) {
    info.shape[d] = ld64(p);
    RP_ENFORCE_LE(info.shape[d], (1ull << 62), WireFormatError, "dimension ", d, " too large");
    elems *= info.shape[d];
    RP_ENFORCE(elems <= (1ull << 62), WireFormatError, "shape has too many elements");
  }
  if (info.ndim > 0 || info.dtype != DType::kBytes) {
    const unsigned __int128 want = elems * info.elemsize;
    RP_ENFORCE(want == info.nbytes, WireFormatError, "shape x element size (",
               static_cast<std::uint64_t>(want), ") does not match nbytes (", info.nbytes, ")");
  }

  // Block table.
  info.blocks.resize(nblocks);
  std::uint64_t offset = tend;
  for (std::uint64_t i = 0; i < nblocks; ++i, p += kBlockEntrySize) {
    BlockEntry& e = info.blocks[i];
    e.stored_size = ld32(p);
    const std::uint8_t filter = p[4], coding = p[5];
    e.plane_mask = ld16(p + 6);
    e.checksum = ld64(p + 8);
    const std::uint64_t start = i * std::uint64_t(info.block_size);
    e.length = static_cast<std::uint32_t>(
        info.nbytes - start < info.block_size ? info.nbytes - start : info.block_size);
    RP_ENFORCE_LE(filter, 2, WireFormatError, "block ", i, ": unknown filter");
    RP_ENFORCE_LE(coding, 2, WireFormatError, "block ", i, ": unknown coding");
    e.filter = static_cast<Filter>(filter);
    e.coding = static_cast<Coding>(coding);
    switch (e.coding) {
      case Coding::kRaw:
        RP_ENFORCE_EQ(e.stored_size, e.length, WireFormatError, "block ", i, ": raw block size");
        RP_ENFORCE_EQ(e.plane_mask, 0, WireFormatError, "block ", i, ": plane mask on a raw block");
        break;
      case Coding::kWhole:
        RP_ENFORCE(info.codec != Codec::kNone, WireFormatError, "block ", i,
                   ": coded block in a frame with codec none");
        RP_ENFORCE_EQ(e.plane_mask, 0, WireFormatError, "block ", i,
                      ": plane mask on a whole-coded block");
        RP_ENFORCE_GT(e.stored_size, 0u, WireFormatError, "block ", i, ": empty coded block");
        break;
      case Coding::kPlanes:
        RP_ENFORCE(info.codec != Codec::kNone, WireFormatError, "block ", i,
                   ": coded planes in a frame with codec none");
        RP_ENFORCE(e.filter == Filter::kByteShuffle, WireFormatError, "block ", i,
                   ": per-plane coding needs byte shuffle");
        RP_ENFORCE_LE(info.elemsize, 16u, WireFormatError, "block ", i,
                      ": per-plane coding element size");
        RP_ENFORCE_EQ(e.length % info.elemsize, 0u, WireFormatError, "block ", i,
                      ": per-plane block length");
        RP_ENFORCE_EQ(e.plane_mask >> info.elemsize, 0, WireFormatError, "block ", i,
                      ": plane mask bits beyond the element size");
        RP_ENFORCE_GE(e.stored_size, 4 * info.elemsize, WireFormatError, "block ", i,
                      ": per-plane block too small");
        break;
    }
    RP_ENFORCE_LE(std::uint64_t(e.stored_size), std::uint64_t(e.length) + 4 * info.elemsize,
                  WireFormatError, "block ", i, ": stored size larger than allowed");
    if (e.coding != Coding::kRaw) {
      // The claimed length must be reachable from the stored bytes (length <= 2^30 and
      // stored_size < 2^32: the product cannot overflow 64 bits).
      RP_ENFORCE_LE(std::uint64_t(e.length),
                    max_expansion(info.codec) * std::uint64_t(e.stored_size), WireFormatError,
                    "block ", i, ": ", e.stored_size, " stored bytes cannot decode to ", e.length,
                    " bytes (", codec_name(info.codec), " expands at most ",
                    max_expansion(info.codec), "x)");
    }
    e.offset = offset;
    offset = checked_add<WireFormatError>(offset, std::uint64_t(e.stored_size), "frame size");
  }
  info.frame_size = offset;
  RP_ENFORCE_EQ(std::uint64_t(len), info.frame_size, WireFormatError,
                len < info.frame_size ? "frame truncated" : "trailing bytes after the frame");
  return info;
}

}  // namespace ringpress::wire

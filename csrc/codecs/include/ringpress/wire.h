// The ringpress frame (docs/wire-format.md is normative; this is its C++ form).
//
// Contract: parse_frame() validates everything that can be checked without decoding blocks: magic,
// version, reserved bits, dtype, ndim, sizes (overflow-checked), shape vs nbytes, block table
// rules, the header checksum and that the buffer is exactly frame_size bytes. Block checksums and
// codec payloads are checked when a block is decoded. Every violation is a WireFormatError whose
// message names the field, the value found and the value allowed.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringpress/dtype.h"

namespace ringpress::wire {

constexpr std::uint8_t kMagic[4] = {0x52, 0x50, 0x5A, 0x46};  // "RPZF"
constexpr std::uint8_t kVersion = 1;
constexpr std::size_t kHeaderSize = 32;
constexpr std::size_t kBlockEntrySize = 16;
constexpr int kMaxNdim = 8;
constexpr std::uint32_t kMaxBlockSize = 1u << 30;

enum class Codec : std::uint8_t { kNone = 0, kLz4 = 1, kZstd = 2 };
enum class Filter : std::uint8_t { kNone = 0, kByteShuffle = 1, kBitShuffle = 2 };
enum class Coding : std::uint8_t { kRaw = 0, kWhole = 1, kPlanes = 2 };
constexpr std::uint8_t kCodecVersion = 1;

struct BlockEntry {
  std::uint32_t stored_size = 0;
  Filter filter = Filter::kNone;
  Coding coding = Coding::kRaw;
  std::uint16_t plane_mask = 0;
  std::uint64_t checksum = 0;
  // Derived while parsing:
  std::uint64_t offset = 0;  // of the block data from the frame start
  std::uint32_t length = 0;  // decoded block length
};

struct FrameInfo {
  DType dtype = DType::kBytes;
  int ndim = 0;
  std::uint64_t shape[kMaxNdim] = {};
  Codec codec = Codec::kNone;
  std::int8_t level = 0;
  std::uint32_t elemsize = 1;
  std::uint32_t block_size = 0;
  std::uint64_t nbytes = 0;
  std::uint64_t frame_size = 0;
  std::vector<BlockEntry> blocks;
};

const char* codec_name(Codec c) noexcept;
// The most a coded block (coding 1 or 2) of this codec can expand: decoded bytes <=
// max_expansion x stored bytes (lz4 255, zstd 32768 by RFC 8878's 128 KiB block limit). The
// parser refuses a block that claims more, so nbytes is bounded by the frame's own length.
std::uint64_t max_expansion(Codec c) noexcept;

// Size of the header + shape + block table.
std::uint64_t table_end(int ndim, std::uint64_t nblocks) noexcept;

// Reads the fixed header only and returns the frame's total size (needs the block table too, so
// `len` must cover header + shape + table). Throws WireFormatError when it cannot.
std::uint64_t frame_size(const void* buf, std::size_t len);

// Full validation (see contract above). `len` must equal the frame size.
FrameInfo parse_frame(const void* buf, std::size_t len);

// Writers used by the encoder: header + shape + table, with the header checksum.
void write_header_and_table(std::uint8_t* dst, const FrameInfo& info);

std::uint64_t checksum(const void* data, std::size_t len) noexcept;  // XXH3-64, seed 0

}  // namespace ringpress::wire

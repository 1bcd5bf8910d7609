// Lossless stage: blocked shuffle + lz4/zstd with per-block/per-plane choice, in the ringpress
// frame format (docs/wire-format.md).
//
// Contract: decode(encode(x)) == x bit for bit, for every dtype/shape/content. encode never
// produces more than encode_bound() bytes (incompressible blocks are stored raw). decode treats
// the frame as hostile: every failure is a WireFormatError (malformed) or CodecError, never a
// crash, overrun or silently wrong output.
// Cost: encode reads the input once, shuffles each block in a cache-resident scratch and runs the
// codec only on planes predicted to pay (sampled byte entropy / trial compression); decode runs
// the codec on coded planes, copies raw ones and unshuffles. Blocks are independent and spread
// over `threads` workers.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringpress/dtype.h"
#include "ringpress/wire.h"

namespace ringpress {

enum class ShuffleMode : std::uint8_t { kAuto = 0, kNone = 1, kByte = 2, kBit = 3 };

struct LosslessOptions {
  wire::Codec codec = wire::Codec::kZstd;
  int level = 1;  // zstd level (-7..22) or lz4 acceleration (1..65)
  ShuffleMode shuffle = ShuffleMode::kAuto;
  int threads = 1;
  std::uint32_t block_size = 0;  // 0 = default (256 KiB rounded to the element size)
};

ShuffleMode shuffle_mode_from_name(const char* name);  // throws UsageError
wire::Codec codec_from_name(const char* name);         // throws UsageError
// UsageError when the options cannot encode elements of `elemsize` bytes (level range, threads,
// block size).
void check_lossless_options(const LosslessOptions& o, std::size_t elemsize);

std::uint32_t default_block_size(std::size_t elemsize) noexcept;
std::size_t encode_bound(std::size_t nbytes, int ndim, std::uint32_t block_size) noexcept;

// Encodes `nbytes` bytes of `dtype` with `shape` (ndim <= 8; product * dtype size == nbytes, or
// ndim == 0 with dtype kBytes) into dst (capacity dst_cap >= encode_bound). Returns the frame size.
std::size_t lossless_encode(const void* src, std::size_t nbytes, DType dtype,
                            const std::uint64_t* shape, int ndim, const LosslessOptions& opts,
                            void* dst, std::size_t dst_cap);

// Decodes a whole frame into dst (dst_len must equal the frame's nbytes).
void lossless_decode(const void* frame, std::size_t len, void* dst, std::size_t dst_len,
                     int threads = 1);
// The same for a frame already validated by wire::parse_frame (no second parse).
void lossless_decode(const wire::FrameInfo& info, const void* frame, void* dst, std::size_t dst_len,
                     int threads = 1);

}  // namespace ringpress

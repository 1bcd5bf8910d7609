// Byte shuffle and bit shuffle: the filters of the lossless stage.
//
// Layout (the wire format depends on it; docs/wire-format.md):
//   byte shuffle, element size s, nbytes bytes: n = nbytes / s elements.
//     out[b*n + i] = in[i*s + b]   for b < s, i < n          (s byte planes of n bytes)
//     the r = nbytes % s trailing bytes are copied verbatim after the planes.
//   bit shuffle, element size s: n8 = (n / 8) * 8 elements are transposed into 8*s bit planes of
//     n8/8 bytes each; plane p = 8*b + k holds bit k (LSB = 0) of byte b of every element, element
//     i's bit stored in byte i/8 of the plane at bit i%8. The bytes of the remaining
//     nbytes - n8*s bytes are copied verbatim after the planes.
//   unshuffle inverts shuffle exactly. src and dst must not overlap.
// Cost: one read and one write of the buffer; the SIMD kernels run near memory bandwidth.
// Element sizes: any s >= 1 (s = 1 byte shuffle is a copy); SIMD kernels cover s in {1,2,4,8},
// other sizes fall back to the generic kernel.
#pragma once

#include <cstddef>
#include <cstdint>

#include "ringpress/cpu.h"

namespace ringpress {

// Kernel signature: operates on exactly n elements of elemsize bytes (bit kernels: n % 8 == 0).
using ShuffleFn = void (*)(const std::uint8_t* src, std::uint8_t* dst, std::size_t n,
                           std::size_t elemsize);

// Byte unshuffle from planes that need not be contiguous: plane b (n bytes) at planes[b] for
// b < elemsize, n elements into dst; the bytes of byte_unshuffle of the planes laid end to end.
// With stream, the output goes out with non-temporal stores where the level has them (AVX2,
// AVX-512), from the first vector-aligned output address on: for outputs far larger than the
// caches that are not read again at once, it saves the read for ownership of every output line.
using UnshufflePlanesFn = void (*)(const std::uint8_t* const* planes, std::uint8_t* dst,
                                   std::size_t n, std::size_t elemsize, bool stream);

struct ShuffleKernels {
  const char* isa;  // "generic", "sse2", "avx2", "avx512"
  ShuffleFn byte_shuffle;
  ShuffleFn byte_unshuffle;
  ShuffleFn bit_shuffle;
  ShuffleFn bit_unshuffle;
  UnshufflePlanesFn byte_unshuffle_planes;
  // bit_unshuffle's bytes with non-temporal stores where the level has them (AVX2, AVX-512) and a
  // head of 8k elements aligns the output; else the plain kernel. For large outputs, as above.
  ShuffleFn bit_unshuffle_stream;
};

// The table for one level, or nullptr when that level is not built or not supported here.
const ShuffleKernels* shuffle_kernels_for(SimdLevel level) noexcept;
// The table chosen once for this process from simd_level().
const ShuffleKernels& shuffle_kernels();

// Whole-buffer entry points (handle the remainders described above). Throw UsageError for
// elemsize 0 or > 255.
void byte_shuffle(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize);
void byte_unshuffle(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize);
// n elements from elemsize separate planes (ShuffleKernels::byte_unshuffle_planes).
void byte_unshuffle_planes(const std::uint8_t* const* planes, void* dst, std::size_t n,
                           std::size_t elemsize, bool stream);
void bit_shuffle(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize);
void bit_unshuffle(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize);
// bit_unshuffle through ShuffleKernels::bit_unshuffle_stream (the same bytes).
void bit_unshuffle_stream(const void* src, void* dst, std::size_t nbytes, std::size_t elemsize);
// The same with an explicit table (tests compare levels through these).
void byte_shuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                  std::size_t elemsize);
void byte_unshuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                    std::size_t elemsize);
void byte_unshuffle_planes(const ShuffleKernels& k, const std::uint8_t* const* planes, void* dst,
                           std::size_t n, std::size_t elemsize, bool stream);
void bit_shuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                 std::size_t elemsize);
void bit_unshuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                   std::size_t elemsize);
void bit_unshuffle_stream(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                          std::size_t elemsize);

namespace shuffle_isa {
// Defined in csrc/codecs/shuffle/shuffle_<isa>.cc; only referenced when that ISA is built.
extern const ShuffleKernels kGeneric;
extern const ShuffleKernels kSSE2;
extern const ShuffleKernels kAVX2;
extern const ShuffleKernels kAVX512;
// Generic kernels, callable from ISA files for element sizes they do not specialise.
void byte_shuffle_generic(const std::uint8_t*, std::uint8_t*, std::size_t, std::size_t);
void byte_unshuffle_generic(const std::uint8_t*, std::uint8_t*, std::size_t, std::size_t);
void byte_unshuffle_planes_generic(const std::uint8_t* const*, std::uint8_t*, std::size_t,
                                   std::size_t, bool);
void bit_shuffle_generic(const std::uint8_t*, std::uint8_t*, std::size_t, std::size_t);
void bit_unshuffle_generic(const std::uint8_t*, std::uint8_t*, std::size_t, std::size_t);
}  // namespace shuffle_isa

}  // namespace ringpress

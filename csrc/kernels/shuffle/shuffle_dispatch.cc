// Shuffle dispatch: picks the kernel table once per process from simd_level() and implements the
// whole-buffer entry points (remainder handling) on top of the n-element kernels.
#include <cstring>

#include "ringpress/config.h"
#include "ringpress/error.h"
#include "ringpress/shuffle.h"

namespace ringpress {

const ShuffleKernels* shuffle_kernels_for(SimdLevel level) noexcept {
  if (!simd_level_supported(level)) return nullptr;
  switch (level) {
    case SimdLevel::kGeneric: return &shuffle_isa::kGeneric;
#if RINGPRESS_HAVE_SSE2
    case SimdLevel::kSSE2: return &shuffle_isa::kSSE2;
#endif
#if RINGPRESS_HAVE_AVX2
    case SimdLevel::kAVX2: return &shuffle_isa::kAVX2;
#endif
#if RINGPRESS_HAVE_AVX512
    case SimdLevel::kAVX512: return &shuffle_isa::kAVX512;
#endif
    default: return nullptr;
  }
}

const ShuffleKernels& shuffle_kernels() {
  static const ShuffleKernels* chosen = [] {
    const ShuffleKernels* k = shuffle_kernels_for(simd_level());
    return k ? k : &shuffle_isa::kGeneric;
  }();
  return *chosen;
}

namespace {
void check_elemsize(std::size_t s, const char* op) {
  if (s == 0 || s > 255) {
    ScopedErrorContext ctx(op);
    RP_THROW(UsageError, "element size must be in [1, 255], got ", s);
  }
}
}  // namespace

void byte_shuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                  std::size_t s) {
  check_elemsize(s, "byte_shuffle");
  auto in = static_cast<const std::uint8_t*>(src);
  auto out = static_cast<std::uint8_t*>(dst);
  const std::size_t n = nbytes / s;
  if (n) k.byte_shuffle(in, out, n, s);
  if (nbytes > n * s) std::memcpy(out + n * s, in + n * s, nbytes - n * s);
}

void byte_unshuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                    std::size_t s) {
  check_elemsize(s, "byte_unshuffle");
  auto in = static_cast<const std::uint8_t*>(src);
  auto out = static_cast<std::uint8_t*>(dst);
  const std::size_t n = nbytes / s;
  if (n) k.byte_unshuffle(in, out, n, s);
  if (nbytes > n * s) std::memcpy(out + n * s, in + n * s, nbytes - n * s);
}

void byte_unshuffle_planes(const ShuffleKernels& k, const std::uint8_t* const* planes, void* dst,
                           std::size_t n, std::size_t s, bool stream) {
  check_elemsize(s, "byte_unshuffle");
  if (n) k.byte_unshuffle_planes(planes, static_cast<std::uint8_t*>(dst), n, s, stream);
}

void bit_shuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                 std::size_t s) {
  check_elemsize(s, "bit_shuffle");
  auto in = static_cast<const std::uint8_t*>(src);
  auto out = static_cast<std::uint8_t*>(dst);
  const std::size_t n8 = (nbytes / s) / 8 * 8;
  if (n8) k.bit_shuffle(in, out, n8, s);
  if (nbytes > n8 * s) std::memcpy(out + n8 * s, in + n8 * s, nbytes - n8 * s);
}

void bit_unshuffle(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                   std::size_t s) {
  check_elemsize(s, "bit_unshuffle");
  auto in = static_cast<const std::uint8_t*>(src);
  auto out = static_cast<std::uint8_t*>(dst);
  const std::size_t n8 = (nbytes / s) / 8 * 8;
  if (n8) k.bit_unshuffle(in, out, n8, s);
  if (nbytes > n8 * s) std::memcpy(out + n8 * s, in + n8 * s, nbytes - n8 * s);
}

void bit_unshuffle_stream(const ShuffleKernels& k, const void* src, void* dst, std::size_t nbytes,
                          std::size_t s) {
  check_elemsize(s, "bit_unshuffle");
  auto in = static_cast<const std::uint8_t*>(src);
  auto out = static_cast<std::uint8_t*>(dst);
  const std::size_t n8 = (nbytes / s) / 8 * 8;
  if (n8) k.bit_unshuffle_stream(in, out, n8, s);
  if (nbytes > n8 * s) std::memcpy(out + n8 * s, in + n8 * s, nbytes - n8 * s);
}

void byte_shuffle(const void* src, void* dst, std::size_t nbytes, std::size_t s) {
  byte_shuffle(shuffle_kernels(), src, dst, nbytes, s);
}
void byte_unshuffle(const void* src, void* dst, std::size_t nbytes, std::size_t s) {
  byte_unshuffle(shuffle_kernels(), src, dst, nbytes, s);
}
void byte_unshuffle_planes(const std::uint8_t* const* planes, void* dst, std::size_t n,
                           std::size_t s, bool stream) {
  byte_unshuffle_planes(shuffle_kernels(), planes, dst, n, s, stream);
}
void bit_shuffle(const void* src, void* dst, std::size_t nbytes, std::size_t s) {
  bit_shuffle(shuffle_kernels(), src, dst, nbytes, s);
}
void bit_unshuffle(const void* src, void* dst, std::size_t nbytes, std::size_t s) {
  bit_unshuffle(shuffle_kernels(), src, dst, nbytes, s);
}

void bit_unshuffle_stream(const void* src, void* dst, std::size_t nbytes, std::size_t s) {
  bit_unshuffle_stream(shuffle_kernels(), src, dst, nbytes, s);
}

}  // namespace ringpress

// XXH3-64 dispatch (hash.h): the per-ISA copies of hash_isa.cc, else the system library.
#include "ringpress/hash.h"

#include <xxhash.h>

#include "ringpress/config.h"
#include "ringpress/cpu.h"
#include "ringpress/error.h"

namespace ringpress::hash_isa {
namespace avx2 {
std::uint64_t xxh3(const void* data, std::size_t len);
}
namespace avx512 {
std::uint64_t xxh3(const void* data, std::size_t len);
}
}  // namespace ringpress::hash_isa

namespace ringpress {
namespace {

using HashFn = std::uint64_t (*)(const void*, std::size_t);
std::uint64_t xxh3_library(const void* data, std::size_t len) {
  return XXH3_64bits(data, len);
}

struct HashKernel {
  HashFn fn;
  const char* name;
};

HashKernel choose_hash() {
  SimdLevel level = SimdLevel::kGeneric;
  try {
    level = simd_level();
  } catch (const Error&) {  // a bad RINGPRESS_SIMD surfaces elsewhere; hash with the library
  }
#if RINGPRESS_HAVE_AVX512
  if (level == SimdLevel::kAVX512) return {&hash_isa::avx512::xxh3, "avx512"};
#endif
#if RINGPRESS_HAVE_AVX2
  if (level >= SimdLevel::kAVX2) return {&hash_isa::avx2::xxh3, "avx2"};
#endif
  (void)level;
  return {&xxh3_library, "library"};
}

const HashKernel& kernel() {
  static const HashKernel k = choose_hash();
  return k;
}

}  // namespace

std::uint64_t xxh3_64(const void* data, std::size_t len) noexcept {
  return kernel().fn(data, len);
}
const char* hash_kernel_name() noexcept {
  return kernel().name;
}

}  // namespace ringpress

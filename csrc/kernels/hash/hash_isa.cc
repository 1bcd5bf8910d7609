// XXH3-64 compiled for one ISA (built once per ISA by rp_add_isa_copies with RP_ISA_NS set).
//
// Debian's libxxhash is built for baseline x86-64 (SSE2); XXH3's AVX2/AVX-512 paths hash about
// twice as fast. xxhash's header-only mode (XXH_INLINE_ALL) compiles the implementation into this
// translation unit as static functions, with this file's ISA flags, so nothing leaks into generic
// code. XXH3's output does not depend on the vector implementation (the frame checksums are the
// same whichever kernel computed them; tests compare them with the library's and Python's).
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstddef>
#include <cstdint>

namespace ringpress::hash_isa::RP_ISA_NS {
std::uint64_t xxh3(const void* data, std::size_t len) {
  return XXH3_64bits(data, len);
}
}  // namespace ringpress::hash_isa::RP_ISA_NS

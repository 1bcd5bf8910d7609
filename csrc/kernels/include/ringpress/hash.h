// Hash kernel: XXH3-64 (seed 0), compiled per ISA (hash/hash_isa.cc for AVX2 and AVX-512) and
// chosen once from simd_level(); the baseline uses the system libxxhash.
//
// Contract: the value does not depend on the kernel chosen (XXH3 is specified bit-exactly); the
// frame checksums of docs/wire-format.md are this function. Cost: one pass over `len` bytes.
#pragma once

#include <cstddef>
#include <cstdint>

namespace ringpress {

std::uint64_t xxh3_64(const void* data, std::size_t len) noexcept;
const char* hash_kernel_name() noexcept;  // "avx512" | "avx2" | "library"

}  // namespace ringpress

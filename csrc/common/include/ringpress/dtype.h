// Element types, with the codes of the wire format (docs/wire-format.md, "dtype codes").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace ringpress {

enum class DType : std::uint8_t {
  kBytes = 0,
  kU8 = 1,
  kI8 = 2,
  kI16 = 3,
  kU16 = 4,
  kI32 = 5,
  kU32 = 6,
  kI64 = 7,
  kU64 = 8,
  kF16 = 9,
  kBF16 = 10,
  kF32 = 11,
  kF64 = 12,
  kBool = 13,
};
constexpr int kNumDTypes = 14;

bool dtype_valid(std::uint8_t code) noexcept;
std::size_t dtype_size(DType t) noexcept;        // bytes per element (1 for kBytes)
const char* dtype_name(DType t) noexcept;        // "float32", "bfloat16", "bytes", ...
DType dtype_from_name(const std::string& name);  // throws UsageError

}  // namespace ringpress
